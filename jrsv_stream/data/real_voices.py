"""Every real human recording with a transcript that the installed packages ship, as an
evaluation set: ``jrsv-stream data real-voices --corpus data/corpus --out data/real_voices``.

Sources (each skipped, with a note in the summary, when its package is not installed):

========== ================================= ============ =====================================
name       package (licence)                 audio        what
========== ================================= ============ =====================================
librivox   pocketsphinx-testdata (BSD-2;     16 kHz wav   5 LibriVox utterances (Sense and
           LibriVox recordings: public                    Sensibility), ``librivox/transcription``
           domain)
cards      pocketsphinx-testdata (BSD-2)     16 kHz wav   5 playing-card phrases,
                                                          ``cards/cards.transcription``
goforward  pocketsphinx-testdata (BSD-2)     raw 16 kHz   ``goforward.raw``: "go forward ten
                                             s16le        meters" (the sentence pocketsphinx's own
                                                          tests decode it to)
tidigits   pocketsphinx-testdata (BSD-2)     raw 16 kHz   ``tidigits/*.raw``: digit strings; the
                                             s16le        text is the TIDIGITS file name
                                                          (``dhd.2934z`` = two nine three four
                                                          zero), as in ``tidigits.lsn``
alsa       alsa-utils (GPL-2+)               48 kHz wav   ``/usr/share/sounds/alsa``: the 8
                                                          speaker-test channel names spoken by a
                                                          woman ("Front Left"; added 2005, who
                                                          recorded it is undocumented); Noise.wav
                                                          skipped
asterisk   asterisk-core-sounds-en +         G.722 16 kHz Allison Smith's IVR prompts (one
           asterisk-core-sounds-en-g722      (or 8 kHz    professional voice), transcripts in
           (CC-BY-SA-3.0)                    wav)         ``core-sounds-en.txt.gz``
========== ================================= ============ =====================================

Not included, although real and on some machines: pocketsphinx-testdata's ``numbers.raw``
and ``something.raw`` (no transcript shipped), codec2-examples' speech samples and
linphone's ``hello*.wav`` (no transcript shipped), ktuberling/klettres (single words or
letters), the pocketsphinx ``*.mfc`` files (features, not audio).

Transcripts are normalized to what the recognizer must output: lowercase words ``[a-z']``
(apostrophes kept), numbers spelled out ("press 1" -> "press one"), ``#`` -> "pound",
``*`` -> "star", notes in brackets ("[ascending tones]", "(simple tone sound plays)",
"<beep ascending>") dropped. A few typos of the Asterisk transcript file are corrected
(:data:`ASTERISK_TEXT_FIXES`; every multi-word prompt was checked against a Whisper
transcription of its recording, which agrees up to recognition errors) and prompts that
are beeps or notes are left out (:data:`ASTERISK_SKIP`). The original-cased text, where
the source has one, is kept as the display text. Utterances with fewer than ``min_words``
words (single letters, digits, words) are left out.

The built set (``OUT/test.jsonl``, ``OUT/mixtures/<id>/{mixture,speech,music}.flac``,
16 kHz, 16-bit) holds, for each utterance, one **clean** item (``extra.condition =
"clean"``, ``music`` null, mixture = speech, ``speech_snr_db`` / ``speech_snr_bucket``
null) and one item per SNR over a test-split music piece of a built corpus
(``extra.condition = "snr-5"`` ...; region SNR as in :mod:`jrsv_stream.data.mixing`).
Every item has 0.5 s of silence / music before and after the utterance. A clean item's
mixture *is* its speech stem, so its speech SI-SDRi is meaningless (around -90 dB with
``jrsv-stream eval``'s eps-regularized metric): ``OUT/test_mixed.jsonl`` holds the SNR items only (for
separation figures) and ``OUT/test_clean.jsonl`` the clean items only (WER on clean
speech). Ids say source, utterance number and condition: ``librivox-00-clean``,
``librivox-00-snr-5``, ``asterisk-123-snr+5``. Music piece and offset of an item come from
a generator seeded by ``(seed, item id)``, so a build is deterministic and an item does
not change when another source is installed or removed.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import shutil
import subprocess
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import soundfile as sf

from jrsv_stream import SAMPLE_RATE
from jrsv_stream.audio.io import AudioError, load_audio
from jrsv_stream.data.manifest import ManifestItem, write_manifest
from jrsv_stream.data.mixing import MixError, mix_stems, quantize_pcm16, snr_bucket
from jrsv_stream.data.real_corpora import CorpusError
from jrsv_stream.decode.numbers import number_words  # noqa: F401 (part of this module's API)

log = logging.getLogger(__name__)

POCKETSPHINX_DATA = Path("/usr/share/pocketsphinx/test/data")
ALSA_SOUNDS = Path("/usr/share/sounds/alsa")
ASTERISK_SOUNDS = (Path("/usr/share/asterisk/sounds/en_US_f_Allison"), Path("/usr/share/asterisk/sounds/en"))
ASTERISK_TRANSCRIPT = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")

PAD_S = 0.5  # silence / music before and after each utterance
PEAK = 0.8  # peak of every mixture (clean items too), as mix_stems normalizes
MIN_WORDS = 2
MUSIC_ATTEMPTS = 4  # music silent under the speech: draw another piece
_MUSIC_CACHE = 16

# The sentence pocketsphinx's own tests decode goforward.raw to.
GOFORWARD_TEXT = "go forward ten meters"
TIDIGITS_WORDS = {"z": "zero", "o": "oh", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five",
                  "6": "six", "7": "seven", "8": "eight", "9": "nine"}
ALSA_SKIP = frozenset({"Noise"})
# Asterisk prompts left out: no speech, or a transcript that is a note about the audio
# rather than its words. Folders: silence/ (silence), the rest by prompt name.
ASTERISK_SKIP_DIRS = frozenset({"silence"})
ASTERISK_SKIP = {
    "spy-h323": "transcript 'H.323' does not say how it is read",
    "spy-iax2": "transcript is a note ('does not say 2')",
    "confbridge-join": "a beep", "confbridge-leave": "a beep",
}
# Transcript typos and spellings of core-sounds-en.txt (regex -> replacement, case kept
# from the replacement): the recording says the word; applied to the display text too.
ASTERISK_TEXT_FIXES = {
    r"\bumute\b": "unmute", r"\bexclaimation\b": "exclamation", r"\bDe-activated\b": "Deactivated",
    r"\bre-record\b": "rerecord", r"\bUn-indentified\b": "Unidentified", r"\bwitheld\b": "withheld",
    r"\bmail box\b": "mailbox", r"\bthru\b": "through",
}
# How a written form is read out (normalized text only).
ASTERISK_SPOKEN = {r"\bwww\.asterisk\.org\b": "w w w dot asterisk dot org"}


# --- text ----------------------------------------------------------------------------------------
_NOTE_RE = re.compile(r"\[[^\]]*\]|\([^)]*\)|<[^>]*>")
_DIGIT_LETTER_RE = re.compile(r"(?<=[0-9])(?=[A-Za-z])|(?<=[A-Za-z])(?=[0-9])")
_NUMBER_RE = re.compile(r"\d+")
_NON_WORD_RE = re.compile(r"[^a-z' ]+")


def display_text(raw: str) -> str:
    """A transcript as shown to a person: bracketed notes dropped, spaces collapsed."""
    return " ".join(_NOTE_RE.sub(" ", raw.replace("\u2019", "'")).split())


def normalize_transcript(raw: str) -> str:
    """Lowercase words ``[a-z']`` as spoken: numbers in words, ``#`` "pound", ``*`` "star",
    notes in brackets or parentheses dropped, other punctuation removed (apostrophes inside
    words kept). ``"Press 1, or #."`` -> ``"press one or pound"``."""
    t = display_text(raw).replace("#", " pound ").replace("*", " star ")
    t = _DIGIT_LETTER_RE.sub(" ", t)
    t = _NUMBER_RE.sub(lambda m: f" {number_words(int(m.group()))} ", t)
    t = _NON_WORD_RE.sub(" ", t.lower())
    return " ".join(w.strip("'") for w in t.split() if w.strip("'"))


# --- recordings ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RealVoice:
    """One real recording with its transcript.

    Attributes:
        id: ``<source>-<nn>`` (number in the source's sorted order).
        source: source name (``librivox``, ``cards``, ...; see the module doc).
        utterance: the recording's own name (file stem, prompt name).
        path: the audio file.
        text: normalized transcript (lowercase words, what the recognizer must output).
        display: the source's original-cased transcript, or None where it has none.
        fmt: how to decode ``path``: ``file`` (soundfile), ``raw16k`` (headerless 16 kHz
            16-bit little-endian mono), ``g722`` (ffmpeg).
    """

    id: str
    source: str
    utterance: str
    path: Path
    text: str
    display: str | None = None
    fmt: str = "file"

    def load(self) -> np.ndarray:
        """The recording as 16 kHz mono float32."""
        return decode_voice(self.path, self.fmt)


@dataclass(frozen=True)
class VoiceSource:
    """A provider of real recordings: ``find(root)`` lists them (raises CorpusError when the
    package is missing)."""

    name: str
    package: str
    licence: str
    default_root: Path | tuple[Path, ...]
    find: Callable[[Path], list[tuple[str, Path, str, str | None, str]]] = field(repr=False)


def decode_voice(path: str | os.PathLike, fmt: str = "file") -> np.ndarray:
    """Decode a recording (see :attr:`RealVoice.fmt`) to 16 kHz mono float32.

    Raises:
        CorpusError: unreadable file, unknown format, or no ffmpeg for G.722.
    """
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"recording not found: {path}")
    if fmt == "file":
        try:
            return load_audio(path)
        except AudioError as e:
            raise CorpusError(str(e)) from e
    if fmt == "raw16k":
        data = path.read_bytes()
        return (np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0)
    if fmt == "g722":
        if shutil.which("ffmpeg") is None:
            raise CorpusError(f"ffmpeg is needed to decode {path}: apt-get install ffmpeg")
        cmd = ["ffmpeg", "-nostdin", "-v", "error", "-f", "g722", "-i", str(path), "-ac", "1",
               "-ar", str(SAMPLE_RATE), "-f", "s16le", "-acodec", "pcm_s16le", "-"]
        r = subprocess.run(cmd, capture_output=True)
        if r.returncode != 0 or not r.stdout:
            raise CorpusError(f"ffmpeg cannot decode {path}: {r.stderr.decode(errors='replace').strip()}")
        return np.frombuffer(r.stdout, dtype="<i2").astype(np.float32) / 32768.0
    raise CorpusError(f"unknown recording format {fmt!r} for {path}")


def _read_sphinx_transcription(path: Path) -> list[tuple[str, str]]:
    """(utterance id, text) of a Sphinx ``<s> words </s> (uttid)`` transcription file."""
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = re.match(r"\s*(?:<s>)?(.*?)(?:</s>)?\s*\(([^()\s]+)\)\s*$", line)
        if m and m.group(1).strip():
            out.append((m.group(2), m.group(1).strip()))
    return out


def _find_sphinx_folder(root: Path, transcription: str, package: str) -> list:
    tr = root / transcription
    if not tr.is_file():
        raise CorpusError(f"{tr} not found (apt-get install {package})")
    out = []
    for utt, text in _read_sphinx_transcription(tr):
        wav = root / f"{utt}.wav"
        if wav.is_file():
            out.append((utt, wav, text, None, "file"))
        else:
            log.warning("%s: utterance %s has no %s; skipped", tr, utt, wav.name)
    if not out:
        raise CorpusError(f"{tr} lists no utterance with a wav file beside it")
    return out


def _find_librivox(root: Path) -> list:
    return _find_sphinx_folder(root, "transcription", "pocketsphinx-testdata")


def _find_cards(root: Path) -> list:
    return _find_sphinx_folder(root, "cards.transcription", "pocketsphinx-testdata")


def _find_goforward(root: Path) -> list:
    raw = root / "goforward.raw"
    if not raw.is_file():
        raise CorpusError(f"{raw} not found (apt-get install pocketsphinx-testdata)")
    return [("goforward", raw, GOFORWARD_TEXT, None, "raw16k")]


def tidigits_text(name: str) -> str | None:
    """Words of a TIDIGITS utterance name (``man.ah.2934za`` / ``dhd.2934z``): the digits
    of the last dot-separated field (z zero, o oh), a trailing ``a``/``b`` take letter
    dropped; None if the name is not a digit string."""
    field_ = name.rsplit(".", 1)[-1]
    if len(field_) > 1 and field_[-1] in "ab":
        field_ = field_[:-1]
    if not field_ or any(c not in TIDIGITS_WORDS for c in field_):
        return None
    return " ".join(TIDIGITS_WORDS[c] for c in field_)


def _find_tidigits(root: Path) -> list:
    if not root.is_dir():
        raise CorpusError(f"{root} not found (apt-get install pocketsphinx-testdata)")
    out = []
    for raw in sorted(root.glob("*.raw")):
        text = tidigits_text(raw.stem)
        if text is not None:
            out.append((raw.stem, raw, text, None, "raw16k"))
    if not out:
        raise CorpusError(f"{root} holds no TIDIGITS-named .raw file")
    return out


def _find_alsa(root: Path) -> list:
    wavs = sorted(p for p in root.glob("*.wav") if p.stem not in ALSA_SKIP) if root.is_dir() else []
    if not wavs:
        raise CorpusError(f"no speaker-test sample in {root} (apt-get install alsa-utils)")
    return [(p.stem, p, p.stem.replace("_", " ").lower(), p.stem.replace("_", " "), "file") for p in wavs]


def read_asterisk_transcripts(path: str | os.PathLike = ASTERISK_TRANSCRIPT) -> dict[str, str]:
    """Prompt name (``vm-options``, ``digits/5``) -> transcript, from ``core-sounds-en.txt``
    (gzipped or plain)."""
    path = Path(path)
    if not path.is_file():
        plain = path.with_suffix("") if path.suffix == ".gz" else path
        if not plain.is_file():
            raise CorpusError(f"{path} not found (apt-get install asterisk-core-sounds-en)")
        path = plain
    data = path.read_bytes()
    text = (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data).decode("utf-8", errors="replace")
    out = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        name, sep, rest = line.partition(":")
        if sep and name.strip() and " " not in name.strip():
            out[name.strip()] = rest.strip()
    if not out:
        raise CorpusError(f"{path} holds no 'name: transcript' line")
    return out


def _asterisk_text(raw: str, spoken: bool = False) -> str:
    t = raw
    for wrong, right in {**ASTERISK_TEXT_FIXES, **(ASTERISK_SPOKEN if spoken else {})}.items():
        t = re.sub(wrong, right, t, flags=re.IGNORECASE)
    return t


def _find_asterisk(root: Path, transcript: Path | None = None) -> list:
    if not root.is_dir():
        raise CorpusError(f"{root} not found (apt-get install asterisk-core-sounds-en asterisk-core-sounds-en-g722)")
    transcripts = read_asterisk_transcripts(transcript or _asterisk_transcript_for(root))
    out = []
    for name, raw in sorted(transcripts.items()):
        if name in ASTERISK_SKIP or name.split("/", 1)[0] in ASTERISK_SKIP_DIRS:
            continue
        for ext, fmt in ((".g722", "g722"), (".wav", "file")):
            p = root / f"{name}{ext}"
            if p.is_file():
                break
        else:
            continue
        out.append((name, p, _asterisk_text(raw, spoken=True), display_text(_asterisk_text(raw)), fmt))
    if not out:
        raise CorpusError(f"{root} holds no .g722 or .wav prompt listed in the transcript file "
                          f"(apt-get install asterisk-core-sounds-en-g722)")
    return out


def _asterisk_transcript_for(root: Path) -> Path:
    local = root / "core-sounds-en.txt"
    return local if local.is_file() else ASTERISK_TRANSCRIPT


SOURCES: dict[str, VoiceSource] = {s.name: s for s in (
    VoiceSource("librivox", "pocketsphinx-testdata", "BSD-2 (LibriVox recordings: public domain)",
                POCKETSPHINX_DATA / "librivox", _find_librivox),
    VoiceSource("cards", "pocketsphinx-testdata", "BSD-2", POCKETSPHINX_DATA / "cards", _find_cards),
    VoiceSource("goforward", "pocketsphinx-testdata", "BSD-2", POCKETSPHINX_DATA, _find_goforward),
    VoiceSource("tidigits", "pocketsphinx-testdata", "BSD-2", POCKETSPHINX_DATA / "tidigits", _find_tidigits),
    VoiceSource("alsa", "alsa-utils", "GPL-2+", ALSA_SOUNDS, _find_alsa),
    VoiceSource("asterisk", "asterisk-core-sounds-en + asterisk-core-sounds-en-g722", "CC-BY-SA-3.0 (Allison Smith)",
                ASTERISK_SOUNDS, _find_asterisk),
)}


def _resolve_root(src: VoiceSource, roots: dict | None) -> Path:
    if roots and src.name in roots:
        return Path(roots[src.name])
    if isinstance(src.default_root, tuple):
        return next((r for r in src.default_root if r.is_dir()), src.default_root[0])
    return src.default_root


def real_voice_items(sources: Sequence[str] | None = None, min_words: int = MIN_WORDS,
                     roots: dict[str, str | os.PathLike] | None = None,
                     missing: dict[str, str] | None = None) -> list[RealVoice]:
    """The clean real recordings of the installed sources, in source order then sorted.

    ``(v.id, v.load(), v.text, v.display)`` is what an evaluation script needs.

    Args:
        sources: names from :data:`SOURCES` (default: all; a missing package is then
            skipped and noted in ``missing``, while a named source must be installed).
        min_words: utterances with fewer normalized words are left out.
        roots: source name -> folder, overriding the installed location (tests, copies).
        missing: filled with source name -> why it was skipped.

    Raises:
        CorpusError: an explicitly named source is unknown or not installed, or no
            source is installed.
    """
    names = list(SOURCES) if sources is None else list(dict.fromkeys(sources))
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise CorpusError(f"unknown real-voice source(s) {unknown}; known: {list(SOURCES)}")
    out: list[RealVoice] = []
    for name in names:
        src = SOURCES[name]
        try:
            found = src.find(_resolve_root(src, roots))
        except CorpusError as e:
            if sources is not None:
                raise
            log.warning("real voices: source %s skipped: %s", name, e)
            if missing is not None:
                missing[name] = str(e)
            continue
        kept = []
        for utt, path, raw, display, fmt in found:
            text = normalize_transcript(raw)
            if len(text.split()) >= max(1, min_words):
                kept.append((utt, path, text, display, fmt))
        width = max(2, len(str(len(kept) - 1)))
        out += [RealVoice(id=f"{name}-{k:0{width}d}", source=name, utterance=utt, path=path, text=text,
                          display=display, fmt=fmt) for k, (utt, path, text, display, fmt) in enumerate(kept)]
    if not out:
        raise CorpusError("no real-voice source is installed (apt-get install pocketsphinx-testdata "
                          "asterisk-core-sounds-en asterisk-core-sounds-en-g722 alsa-utils)")
    return out


# --- the evaluation set ------------------------------------------------------------------------
def condition_name(snr_db: float | None) -> str:
    """``clean`` or ``snr-5`` / ``snr+0`` / ``snr+2.5``."""
    return "clean" if snr_db is None else f"snr{float(snr_db):+g}"


def _test_music(corpus_root: Path) -> list[dict]:
    index = corpus_root / "sources" / "music.jsonl"
    if not index.is_file():
        raise CorpusError(f"{index} not found: build the corpus first (jrsv-stream data synth --out {corpus_root} ...)")
    rows = [json.loads(line) for line in index.read_text(encoding="utf-8").splitlines() if line.strip()]
    music = [d for d in rows if d.get("split") == "test"]
    if not music:
        raise CorpusError(f"{index} has no test-split music")
    return music


class _MusicPool:
    def __init__(self, corpus_root: Path, rows: list[dict]):
        self.root, self.rows = corpus_root / "sources" / "music" / "test", rows
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __call__(self, k: int) -> np.ndarray:
        if k not in self._cache:
            try:
                self._cache[k] = load_audio(self.root / self.rows[k]["audio"])
            except AudioError as e:
                raise CorpusError(str(e)) from e
            while len(self._cache) > _MUSIC_CACHE:
                self._cache.popitem(last=False)
        self._cache.move_to_end(k)
        return self._cache[k]


def _music_bed(rng: np.random.Generator, pool: _MusicPool, n: int) -> tuple[int, int, np.ndarray]:
    k = int(rng.integers(len(pool.rows)))
    piece = pool(k)
    if len(piece) == 0:
        raise CorpusError(f"test music piece {pool.rows[k].get('id')} is empty")
    offset = int(rng.integers(len(piece)))
    reps = -(-(offset + n) // len(piece))
    return k, offset, np.tile(piece, reps)[offset: offset + n]


def _write_stems(out_dir: Path, rel: Path, stems: dict[str, np.ndarray]) -> None:
    (out_dir / rel).mkdir(parents=True, exist_ok=True)
    for name, x in stems.items():
        tmp = out_dir / rel / f"{name}.flac.part"
        sf.write(str(tmp), x, SAMPLE_RATE, subtype="PCM_16", format="FLAC")
        os.replace(tmp, out_dir / rel / f"{name}.flac")


def build_real_voices(corpus_root, out_dir, snrs_db: Sequence[float] = (-5.0, 0.0, 5.0), seed: int = 0,
                      sources: Sequence[str] | None = None, min_words: int = MIN_WORDS,
                      roots: dict[str, str | os.PathLike] | None = None) -> dict:
    """Build the real-voice evaluation set (see the module doc) into ``out_dir``.

    Args:
        corpus_root: a built corpus whose test-split music is mixed under the speech.
        out_dir: output folder (``test.jsonl``, ``test_clean.jsonl``, ``test_mixed.jsonl``,
            ``summary.json``, ``mixtures/<id>/``); files of a previous build are overwritten.
        snrs_db: speech-to-music region SNRs, one mixed item per utterance each.
        seed: music draws (per item, so ids are stable across installed sources).
        sources, min_words, roots: as :func:`real_voice_items`.

    Returns:
        The summary (also written to ``out_dir/summary.json``).

    Raises:
        CorpusError: the corpus music index is missing or has no test music, or no source
            is installed (or a named one is not).
    """
    corpus_root, out_dir = Path(corpus_root), Path(out_dir)
    snrs = [float(s) for s in snrs_db]
    if len({condition_name(s) for s in snrs}) != len(snrs):
        raise ValueError(f"repeated SNR in {snrs_db}")
    pool = _MusicPool(corpus_root, _test_music(corpus_root)) if snrs else None
    missing: dict[str, str] = {}
    voices = real_voice_items(sources, min_words=min_words, roots=roots, missing=missing)
    pad = int(round(PAD_S * SAMPLE_RATE))
    items: list[ManifestItem] = []
    per_source: dict[str, dict] = {}
    for v in voices:
        speech = v.load()
        if not np.any(speech):
            raise CorpusError(f"{v.path} is silent")
        n = len(speech) + 2 * pad
        vocal = np.zeros(n, dtype=np.float64)
        vocal[pad: pad + len(speech)] = speech
        src = SOURCES[v.source]
        s = per_source.setdefault(v.source, {"package": src.package, "licence": src.licence, "utterances": 0,
                                             "speech_seconds": 0.0, "items": {}})
        s["utterances"] += 1
        s["speech_seconds"] += len(speech) / SAMPLE_RATE
        base = {"scenario": "speech", "source": v.source, "utterance": v.utterance, "source_file": str(v.path),
                "source_package": src.package, "source_licence": src.licence,
                "singing_snr_db": None, "singing_snr_bucket": None}
        if v.display is not None:
            base["speech_text_display"] = v.display
        for snr in [None] + snrs:
            cond = condition_name(snr)
            item_id = f"{v.id}-{cond}"
            rel = Path("mixtures") / item_id
            extra = {**base, "condition": cond, "target_snr_db": snr}
            if snr is None:
                clean = quantize_pcm16(vocal * (PEAK / float(np.max(np.abs(vocal)))))
                _write_stems(out_dir, rel, {"mixture": clean, "speech": clean})
                extra.update(speech_snr_db=None, speech_snr_bucket=None, music_source=None)
                music_rel = None
            else:
                rng = np.random.default_rng([seed, zlib.crc32(item_id.encode("utf-8"))])
                for attempt in range(MUSIC_ATTEMPTS):
                    k, offset, bed = _music_bed(rng, pool, n)
                    try:
                        mix = mix_stems({"speech": vocal}, bed, {"speech": snr}, peak=PEAK)
                        break
                    except MixError:
                        if attempt == MUSIC_ATTEMPTS - 1:
                            raise CorpusError(f"{item_id}: the corpus test music is silent under the speech "
                                              f"({MUSIC_ATTEMPTS} draws)") from None
                _write_stems(out_dir, rel, {"mixture": mix.mixture, "speech": mix.stems["speech"],
                                            "music": mix.stems["music"]})
                got = mix.snr_db["speech"]
                extra.update(speech_snr_db=round(got, 3), speech_snr_bucket=snr_bucket(got),
                             music_source=pool.rows[k].get("id", pool.rows[k]["audio"]),
                             music_offset_s=round(offset / SAMPLE_RATE, 4))
                music_rel = str(rel / "music.flac")
            items.append(ManifestItem(
                id=item_id, mixture=str(rel / "mixture.flac"), speech=str(rel / "speech.flac"), singing=None,
                music=music_rel, speech_text=v.text, singing_text=None, sample_rate=SAMPLE_RATE, extra=extra))
            s["items"][cond] = s["items"].get(cond, 0) + 1
    write_manifest(out_dir / "test.jsonl", items)
    write_manifest(out_dir / "test_clean.jsonl", [i for i in items if i.extra["condition"] == "clean"])
    write_manifest(out_dir / "test_mixed.jsonl", [i for i in items if i.extra["condition"] != "clean"])
    conditions = [condition_name(None)] + [condition_name(x) for x in snrs]
    seconds = sum(sf.info(str(out_dir / i.mixture)).duration for i in items)
    summary = {
        "corpus": str(corpus_root), "seed": seed, "snrs_db": snrs, "min_words": min_words,
        "conditions": conditions, "items": len(items), "utterances": len(voices),
        "speech_seconds": round(sum(s["speech_seconds"] for s in per_source.values()), 3),
        "total_seconds": round(seconds, 3),
        "sources": {k: {**v, "speech_seconds": round(v["speech_seconds"], 3)} for k, v in per_source.items()},
        "missing_sources": missing,
        "manifests": {"all": "test.jsonl", "clean": "test_clean.jsonl", "mixed": "test_mixed.jsonl"},
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return summary


def format_summary(summary: dict, out_dir) -> str:
    """A plain-text table of a :func:`build_real_voices` summary (the command's output)."""
    conds = summary["conditions"]
    rows = [["source", "utts", "speech s", *conds, "package"]]
    for name, s in summary["sources"].items():
        rows.append([name, str(s["utterances"]), f"{s['speech_seconds']:.1f}", *(str(s["items"].get(c, 0)) for c in conds),
                     s["package"]])
    rows.append(["total", str(summary["utterances"]), f"{summary['speech_seconds']:.1f}",
                 *(str(sum(s["items"].get(c, 0) for s in summary["sources"].values())) for c in conds), ""])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.append(f"{summary['items']} items, {summary['total_seconds']:.1f} s of mixtures "
                 f"({summary['total_seconds'] / 3600:.3f} h) in {out_dir}: test.jsonl (all), "
                 f"test_clean.jsonl, test_mixed.jsonl (use it for SI-SDRi), summary.json")
    for name, why in summary["missing_sources"].items():
        lines.append(f"skipped source {name}: {why}")
    return "\n".join(lines)
