"""Readers of the real corpora of the JRSV DTSSV benchmark (AISHELL-1 speech, OpenSinger
singing, MUSDB18 accompaniment): lazy records (:class:`VocalRef`, :class:`MusicRef`), the
corpus layouts and splits, MUSDB18 decoding. The layouts are described in
:mod:`jrsv_stream.data.real_corpora`, which builds DTSSV manifests from these records."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

from jrsv_stream import SAMPLE_RATE
from jrsv_stream.audio.io import AudioError, load_audio, resample
from jrsv_stream.data.compose import MusicSource, VocalSource

log = logging.getLogger("jrsv_stream.data.real_corpora")

SPLITS = ("train", "valid", "test")
AISHELL_SPLIT_DIRS = {"train": "train", "valid": "dev", "test": "test"}
AISHELL_TRANSCRIPT = "transcript/aishell_transcript_v0.8.txt"
OPENSINGER_GENDERS = {"ManRaw": "man", "WomanRaw": "woman"}
# Percent of OpenSinger singers held out (stable hash of the voice name).
OPENSINGER_HOLDOUT_PERCENT = {"test": 10, "valid": 5}
MUSDB_MUSIC_STEMS = ("drums", "bass", "other")  # vocals excluded on purpose
MUSDB_STREAMS = {"mixture": 0, "drums": 1, "bass": 2, "other": 3, "vocals": 4}
# The official validation tracks of the MUSDB18 train subset (sigsep musdb, mus.yaml).
MUSDB_VALID_TRACKS = frozenset({
    "Actions - One Minute Smile",
    "Alexander Ross - Goodbye Bolero",
    "ANiMAL - Rockshow",
    "Clara Berry And Wooldog - Waltz For My Victims",
    "Fergessen - Nos Palpitants",
    "James May - On The Line",
    "Johnny Lokke - Promises & Lies",
    "Leaf - Summerghost",
    "Meaxic - Take A Step",
    "Patrick Talbot - A Reason To Leave",
    "Skelpolu - Human Mistakes",
    "Traffic Experiment - Sirens",
    "Triviul - Angelsaint",
    "Young Griffo - Pennies",
})
MUSDB_HASH_VALID_PERCENT = 10

_WS_RE = re.compile(r"\s+")


class CorpusError(ValueError):
    """A corpus root is missing or its tree is not the expected layout."""


# --- records -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class VocalRef:
    """One speech utterance or sung line on disk; :meth:`load` decodes it.

    Attributes:
        id: corpus utterance id (``BAC009S0002W0122``, ``ManRaw/0_<song>_3``).
        path: the audio file.
        text: transcript, characters without spaces.
        voice: speaker / singer (``S0002``, ``man_0``).
        duration_s: from the file header (no decoding).
    """

    id: str
    path: Path
    text: str
    voice: str
    duration_s: float

    def load(self) -> VocalSource:
        """Decode to a 16 kHz mono :class:`VocalSource` (``words`` is ``[]``: unknown)."""
        try:
            audio = load_audio(self.path)
        except AudioError as e:
            raise CorpusError(str(e)) from e
        return VocalSource(id=self.id, audio=audio, text=self.text, words=[], voice=self.voice)


@dataclass(frozen=True)
class MusicRef:
    """One MUSDB18 track on disk; :meth:`load` decodes drums + bass + other.

    Attributes:
        id: ``musdb/<subset>/<track name>``.
        path: the track folder (MUSDB18-HQ) or the ``.stem.mp4`` file (MUSDB18).
        duration_s: from the file headers (no decoding).
        meta: ``{"corpus": "musdb18hq"|"musdb18", "track", "subset"}``.
    """

    id: str
    path: Path
    duration_s: float
    meta: dict = field(default_factory=dict)

    def load(self) -> MusicSource:
        """Decode the accompaniment (drums + bass + other, no vocals) as 16 kHz mono.

        The result has exactly ``round(duration_s * 16000)`` samples (codec padding is
        trimmed, a short decode is zero-padded).
        """
        if self.path.is_dir():
            audio = _decode_musdb_hq(self.path)
        else:
            audio = _decode_musdb_stem_mp4(self.path)
        n = int(round(self.duration_s * SAMPLE_RATE))
        if len(audio) < n:
            audio = np.concatenate([audio, np.zeros(n - len(audio), dtype=np.float32)])
        return MusicSource(id=self.id, audio=np.ascontiguousarray(audio[:n], dtype=np.float32), meta=dict(self.meta))


# --- helpers -----------------------------------------------------------------------------------
def _check_split(split: str, corpus: str) -> str:
    if split == "dev":
        split = "valid"
    if split not in SPLITS:
        raise CorpusError(f"{corpus}: unknown split {split!r}; expected one of {SPLITS}")
    return split


def _check_root(root, corpus: str, expected: str) -> Path:
    if root is None:
        raise CorpusError(f"{corpus}: no root given (expected {expected})")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise CorpusError(f"{corpus} root not found: {root} (expected a folder holding {expected})")
    return root


def _hash_percent(key: str) -> int:
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:4], "big") % 100


def _wav_duration(path: Path, corpus: str) -> float:
    try:
        info = sf.info(str(path))
    except Exception as e:  # LibsndfileError / RuntimeError variants
        raise CorpusError(f"{corpus}: cannot read audio header of {path}: {e}") from e
    if info.samplerate <= 0:
        raise CorpusError(f"{corpus}: {path} has sample rate {info.samplerate}")
    return info.frames / info.samplerate


def _clean_text(raw: str) -> str:
    return _WS_RE.sub("", raw.replace("\ufeff", ""))


# --- AISHELL-1 ---------------------------------------------------------------------------------
def _aishell_base(root: Path) -> Path:
    for cand in (root / "data_aishell", root):
        if (cand / "wav").is_dir() or (cand / "transcript").is_dir():
            return cand
    raise CorpusError(f"AISHELL-1: {root} holds neither data_aishell/ nor wav/ and transcript/ "
                      f"(expected ROOT/data_aishell/wav/{{train,dev,test}}/SPEAKER/*.wav and "
                      f"ROOT/data_aishell/{AISHELL_TRANSCRIPT})")


def read_aishell_transcript(path: str | os.PathLike) -> dict[str, str]:
    """Utterance id -> text without spaces, from ``aishell_transcript_v0.8.txt``."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"AISHELL-1 transcript not found: {path} (expected lines like "
                          f"'BAC009S0002W0122 而 对 楼市 成交 抑制 作用 最 大 的 限 购')")
    out: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise CorpusError(f"AISHELL-1 transcript {path} is not UTF-8 text: {e}") from e
    for n, line in enumerate(lines, 1):
        parts = line.split(maxsplit=1)
        if not parts:
            continue
        text = _clean_text(parts[1]) if len(parts) > 1 else ""
        if not text:
            log.warning("%s:%d: utterance %s has no text; skipped", path, n, parts[0])
            continue
        out[parts[0]] = text
    if not out:
        raise CorpusError(f"AISHELL-1 transcript {path} holds no 'UTTID word word ...' line")
    return out


def load_aishell(root, split: str) -> list[VocalRef]:
    """AISHELL-1 utterances of one split, sorted by id (see module doc for the layout).

    Returns:
        Records; ``ref.load()`` gives the :class:`VocalSource` (16 kHz mono).

    Raises:
        CorpusError: missing root / transcript / split folder, only unextracted
            ``.tar.gz`` files, or no transcribed wav in the split.
    """
    split = _check_split(split, "AISHELL-1")
    base = _aishell_base(_check_root(root, "AISHELL-1", "data_aishell/ (wav/ and transcript/)"))
    transcript = read_aishell_transcript(base / AISHELL_TRANSCRIPT)
    wav_root = base / "wav"
    split_dir = wav_root / AISHELL_SPLIT_DIRS[split]
    if not split_dir.is_dir():
        tars = sorted(wav_root.glob("*.tar.gz")) if wav_root.is_dir() else []
        if tars:
            raise CorpusError(
                f"AISHELL-1: {wav_root} holds {len(tars)} per-speaker .tar.gz archives but no "
                f"{AISHELL_SPLIT_DIRS[split]}/ folder: extract them first, e.g. "
                f"`cd {wav_root} && for f in *.tar.gz; do tar xzf \"$f\"; done`")
        raise CorpusError(f"AISHELL-1: split folder not found: {split_dir} "
                          f"(expected wav/{AISHELL_SPLIT_DIRS[split]}/SPEAKER/BAC009SxxxxWxxxx.wav)")
    refs, untranscribed = [], 0
    for spk in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        for wav in sorted(spk.glob("*.wav")):
            uid = wav.stem
            text = transcript.get(uid)
            if text is None:
                untranscribed += 1
                continue
            refs.append(VocalRef(id=uid, path=wav, text=text, voice=spk.name,
                                 duration_s=_wav_duration(wav, "AISHELL-1")))
    if untranscribed:
        log.warning("AISHELL-1 %s: %d wav files have no transcript line; skipped", split, untranscribed)
    if not refs:
        raise CorpusError(f"AISHELL-1: no transcribed wav under {split_dir} "
                          f"(expected SPEAKER/BAC009SxxxxWxxxx.wav with ids in {base / AISHELL_TRANSCRIPT})")
    return refs


# --- OpenSinger --------------------------------------------------------------------------------
def opensinger_split_of(voice: str) -> str:
    """Split of an OpenSinger singer (``man_<id>`` / ``woman_<id>``), by stable hash."""
    h = _hash_percent(f"opensinger:{voice}")
    if h < OPENSINGER_HOLDOUT_PERCENT["test"]:
        return "test"
    if h < OPENSINGER_HOLDOUT_PERCENT["test"] + OPENSINGER_HOLDOUT_PERCENT["valid"]:
        return "valid"
    return "train"


def load_opensinger(root, split: str) -> list[VocalRef]:
    """OpenSinger lines of the singers held in ``split``, sorted by id.

    Returns:
        Records; ``ref.load()`` gives the :class:`VocalSource` (resampled to 16 kHz mono).

    Raises:
        CorpusError: missing root, no ManRaw/WomanRaw, a song folder not named
            ``<Singer>_<Song>``, a wav without its ``.txt``, or no line in the split.
    """
    split = _check_split(split, "OpenSinger")
    root = _check_root(root, "OpenSinger", "ManRaw/ and WomanRaw/")
    if not any((root / g).is_dir() for g in OPENSINGER_GENDERS) and (root / "OpenSinger").is_dir():
        root = root / "OpenSinger"
    genders = [g for g in OPENSINGER_GENDERS if (root / g).is_dir()]
    if not genders:
        raise CorpusError(f"OpenSinger: {root} holds neither ManRaw/ nor WomanRaw/ "
                          f"(expected ROOT/{{ManRaw,WomanRaw}}/<Singer>_<Song>/<Singer>_<Song>_<n>.wav + .txt)")
    refs, singers, empty = [], set(), 0
    for g in genders:
        for song in sorted(p for p in (root / g).iterdir() if p.is_dir()):
            singer, sep, _ = song.name.partition("_")
            if not sep or not singer:
                raise CorpusError(f"OpenSinger: song folder {song} is not named <SingerID>_<SongName>")
            voice = f"{OPENSINGER_GENDERS[g]}_{singer}"
            singers.add(voice)
            if opensinger_split_of(voice) != split:
                continue
            for wav in sorted(song.glob("*.wav")):
                txt = wav.with_suffix(".txt")
                if not txt.is_file():
                    raise CorpusError(f"OpenSinger: lyric file missing for {wav}: expected {txt}")
                try:
                    text = _clean_text(txt.read_text(encoding="utf-8-sig"))
                except UnicodeDecodeError as e:
                    raise CorpusError(f"OpenSinger: {txt} is not UTF-8 text: {e}") from e
                if not text:
                    empty += 1
                    continue
                refs.append(VocalRef(id=f"{g}/{wav.stem}", path=wav, text=text, voice=voice,
                                     duration_s=_wav_duration(wav, "OpenSinger")))
    if empty:
        log.warning("OpenSinger %s: %d lines have an empty .txt; skipped", split, empty)
    if not refs:
        raise CorpusError(f"OpenSinger: no line for split {split!r} under {root} ({len(singers)} singers found; "
                          f"singers are held out by a stable hash, see opensinger_split_of)")
    return refs


# --- MUSDB18 / MUSDB18-HQ -----------------------------------------------------------------------
def musdb_valid_tracks(train_names: Sequence[str]) -> set[str]:
    """Which train-subset tracks form the valid split (official list, else stable hash)."""
    names = set(train_names)
    official = names & MUSDB_VALID_TRACKS
    if official:
        return official
    return {n for n in names if _hash_percent(f"musdb:{n}") < MUSDB_HASH_VALID_PERCENT}


def _ffprobe_streams(path: Path) -> list[dict]:
    if shutil.which("ffprobe") is None:
        raise CorpusError(f"MUSDB18: ffprobe (ffmpeg) is needed to read {path}: apt-get install ffmpeg")
    cmd = ["ffprobe", "-v", "error", "-select_streams", "a", "-show_entries",
           "stream=index,channels,sample_rate,duration:format=duration", "-of", "json", str(path)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise CorpusError(f"MUSDB18: ffprobe cannot read {path}: {r.stderr.strip()}")
    d = json.loads(r.stdout or "{}")
    streams = d.get("streams", [])
    fmt_dur = d.get("format", {}).get("duration")
    for s in streams:
        if s.get("duration") in (None, "N/A"):
            s["duration"] = fmt_dur
    return streams


def _stem_mp4_duration(path: Path) -> float:
    streams = _ffprobe_streams(path)
    if len(streams) < 5:
        raise CorpusError(f"MUSDB18: {path} has {len(streams)} audio streams; a .stem.mp4 needs 5 "
                          f"(mixture, drums, bass, other, vocals)")
    try:
        return min(float(streams[MUSDB_STREAMS[s]]["duration"]) for s in MUSDB_MUSIC_STEMS)
    except (TypeError, ValueError) as e:
        raise CorpusError(f"MUSDB18: no duration for the streams of {path}") from e


def _decode_musdb_stem_mp4(path: Path) -> np.ndarray:
    """drums + bass + other of a .stem.mp4 at 16 kHz mono (channel mean, like load_audio)."""
    if shutil.which("ffmpeg") is None:
        raise CorpusError(f"MUSDB18: ffmpeg is needed to decode {path}: apt-get install ffmpeg")
    streams = _ffprobe_streams(path)
    if len(streams) < 5:
        raise CorpusError(f"MUSDB18: {path} has {len(streams)} audio streams; a .stem.mp4 needs 5")
    parts = []
    for stem in MUSDB_MUSIC_STEMS:
        n = MUSDB_STREAMS[stem]
        ch = int(streams[n].get("channels") or 1)
        pan = "pan=mono|c0=" + "+".join(f"{1.0 / ch:.10g}*c{i}" for i in range(ch))
        cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", f"0:a:{n}", "-af", pan,
               "-ar", str(SAMPLE_RATE), "-f", "f32le", "-acodec", "pcm_f32le", "-"]
        r = subprocess.run(cmd, capture_output=True)
        if r.returncode != 0:
            raise CorpusError(f"MUSDB18: ffmpeg cannot decode stream {n} ({stem}) of {path}: "
                              f"{r.stderr.decode(errors='replace').strip()}")
        parts.append(np.frombuffer(r.stdout, dtype="<f4"))
    n = min(len(p) for p in parts)
    out = np.sum([p[:n].astype(np.float64) for p in parts], axis=0).astype(np.float32)
    if not np.all(np.isfinite(out)):
        raise CorpusError(f"MUSDB18: {path} decodes to NaN or Inf samples")
    return out


def _decode_musdb_hq(track: Path) -> np.ndarray:
    """drums + bass + other of a MUSDB18-HQ track folder at 16 kHz mono (channel mean)."""
    total, rate = None, None
    for stem in MUSDB_MUSIC_STEMS:
        p = track / f"{stem}.wav"
        try:
            x, sr = sf.read(str(p), dtype="float32", always_2d=True)
        except Exception as e:
            raise CorpusError(f"MUSDB18-HQ: cannot read {p}: {e}") from e
        if rate is not None and sr != rate:
            raise CorpusError(f"MUSDB18-HQ: {p} is at {sr} Hz, the other stems at {rate} Hz")
        x = x.mean(axis=1)
        if total is None:
            total, rate = x, sr
        else:
            n = min(len(total), len(x))
            total = total[:n] + x[:n]
    if not np.all(np.isfinite(total)):
        raise CorpusError(f"MUSDB18-HQ: {track} holds NaN or Inf samples")
    return resample(total, rate, SAMPLE_RATE)


def load_musdb(root, split: str) -> list[MusicRef]:
    """MUSDB18-HQ track folders and/or MUSDB18 ``.stem.mp4`` files of one split, by name.

    Where a track exists in both forms, the HQ folder is used.

    Returns:
        Records; ``ref.load()`` gives the :class:`MusicSource` (drums + bass + other,
        16 kHz mono; the vocals stem is never read).

    Raises:
        CorpusError: missing root or subset folder, a track folder missing a stem file, a
            ``.stem.mp4`` with fewer than 5 audio streams, or no track in the split.
    """
    split = _check_split(split, "MUSDB18")
    root = _check_root(root, "MUSDB18", "train/ and test/")
    subset = "test" if split == "test" else "train"
    sub = root / subset
    if not sub.is_dir():
        raise CorpusError(f"MUSDB18: subset folder not found: {sub} (expected ROOT/{subset}/<Track>/"
                          f"{{mixture,drums,bass,other,vocals}}.wav or ROOT/{subset}/<Track>.stem.mp4)")
    tracks: dict[str, Path] = {}
    for p in sorted(sub.iterdir()):
        if p.is_dir():
            missing = [f"{s}.wav" for s in MUSDB_MUSIC_STEMS if not (p / f"{s}.wav").is_file()]
            if missing:
                raise CorpusError(f"MUSDB18-HQ: track folder {p} lacks {missing} "
                                  f"(expected mixture, drums, bass, other, vocals .wav)")
            tracks[p.name] = p
        elif p.is_file() and p.name.endswith(".stem.mp4"):
            tracks.setdefault(p.name[: -len(".stem.mp4")], p)
    if not tracks:
        raise CorpusError(f"MUSDB18: no track in {sub} (expected <Track>/{{drums,bass,other,...}}.wav "
                          f"folders (MUSDB18-HQ) or <Track>.stem.mp4 files (MUSDB18))")
    names = sorted(tracks)
    if subset == "train":
        valid = musdb_valid_tracks(names)
        names = [n for n in names if (n in valid) == (split == "valid")]
    refs = []
    for name in names:
        p = tracks[name]
        if p.is_dir():
            dur = min(_wav_duration(p / f"{s}.wav", "MUSDB18-HQ") for s in MUSDB_MUSIC_STEMS)
            corpus = "musdb18hq"
        else:
            dur, corpus = _stem_mp4_duration(p), "musdb18"
        refs.append(MusicRef(id=f"musdb/{subset}/{name}", path=p, duration_s=dur,
                             meta={"corpus": corpus, "track": name, "subset": subset}))
    if not refs:
        raise CorpusError(f"MUSDB18: no track of {sub} falls in split {split!r} "
                          f"({len(tracks)} tracks; valid = official validation list, else a stable hash)")
    return refs
