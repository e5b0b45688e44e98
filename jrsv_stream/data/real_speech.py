"""A pool of **real human speech for separator training** (no transcripts needed):
``jrsv-stream data real-speech --out data/real_speech``.

The separator learned its speech class from TTS voices only, and on real talk it is
often unsure which track a voice belongs on (real voices it rates partly "singing", see
the README's voice rescue). Separation needs no transcript, and Debian ships real
recorded talk that none of the test sets use:

=============== ======================================= ====================================
source          package (licence)                       what
=============== ======================================= ====================================
asterisk-fr     asterisk-core-sounds-fr-g722            the fr-CA IVR prompts (voice "June")
                (CC-BY-SA-3.0)                          (G.722, 16 kHz)
asterisk-it     asterisk-core-sounds-it-g722            Carlo's it-IT IVR prompts (male)
asterisk-ru     asterisk-core-sounds-ru-g722            ru-RU IVR prompts
klettres        klettres-data (GPL-2+ / GFDL)           letters and syllables spoken in ~25
                                                        languages, many speakers
ktuberling      ktuberling-data (GPL-2+)                object names spoken in ~15 languages
codec2          codec2-examples (LGPL-2.1)              the codec's English speech samples
                                                        (8 kHz, and one 16 kHz)
=============== ======================================= ====================================

Left out on purpose: every voice of the real-voices test set and of the out-of-domain set
(pocketsphinx-testdata, alsa-utils' speaker-test voice, and Allison Smith's prompts in
*any* language: ``en`` and ``es_MX`` are the same speaker), so those sets stay unseen.
Codec2's coded outputs (``f2400``, ``m2400``, ``*_700d*``) and its test tones are skipped.

Output: ``pool.npy`` (all clips, int16, 16 kHz, leading/trailing silence trimmed at
-40 dB re the clip's peak frame, each scaled to the same RMS) and ``clips.jsonl`` (one
line per clip: ``start``, ``length`` (samples into ``pool.npy``), ``source``, ``speaker``,
``path``), ``summary.json`` (seconds per source). Deterministic: sources and files in
sorted order. Missing packages are skipped with a note in the summary; none at all is
an error naming them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from jrsv_stream import SAMPLE_RATE
from jrsv_stream.data.real_voices import CorpusError, decode_voice

ASTERISK = Path("/usr/share/asterisk/sounds")
ASTERISK_VOICES = {"asterisk-fr": "fr_CA_f_June", "asterisk-it": "it_IT_m_Carlo", "asterisk-ru": "ru_RU_f_IvrvoiceRU"}
KLETTRES = Path("/usr/share/klettres")
KTUBERLING = Path("/usr/share/ktuberling/sounds")
CODEC2 = Path("/usr/share/codec2/raw")
# codec2's uncoded speech (8 kHz 16-bit raw, and one 16 kHz wav); not its coded outputs or tones
CODEC2_SPEECH = ("big_dog", "cq_ref", "cross", "forig", "g3plx", "hts", "hts1", "hts2", "kristoff",
                 "mmt1", "morig", "ve9qrp", "vk5qi")
PACKAGES = {"asterisk-fr": "asterisk-core-sounds-fr-g722", "asterisk-it": "asterisk-core-sounds-it-g722",
            "asterisk-ru": "asterisk-core-sounds-ru-g722", "klettres": "klettres-data",
            "ktuberling": "ktuberling-data", "codec2": "codec2-examples"}
TARGET_RMS = 0.05
MIN_S, MAX_S = 0.25, 20.0


def _files(source: str) -> list[tuple[Path, str, str]]:
    """(path, fmt, speaker) of one source's recordings, sorted; [] when not installed."""
    if source in ASTERISK_VOICES:
        root = ASTERISK / ASTERISK_VOICES[source]
        return [(p, "g722", ASTERISK_VOICES[source]) for p in sorted(root.rglob("*.g722"))
                if "silence" not in p.parts] if root.is_dir() else []
    if source == "klettres":  # <lang>/{alpha,syllab}/*.ogg: speakers differ by language
        return [(p, "file", f"klettres-{p.relative_to(KLETTRES).parts[0]}")
                for p in sorted(KLETTRES.rglob("*.ogg"))] if KLETTRES.is_dir() else []
    if source == "ktuberling":
        return [(p, "file", f"ktuberling-{p.relative_to(KTUBERLING).parts[0]}")
                for p in sorted(KTUBERLING.rglob("*")) if p.suffix in (".ogg", ".wav")] if KTUBERLING.is_dir() else []
    if source == "codec2":
        out = [(CODEC2 / f"{n}.raw", "raw8k", f"codec2-{n}") for n in CODEC2_SPEECH if (CODEC2 / f"{n}.raw").is_file()]
        if (CODEC2 / "speech_orig_16k.wav").is_file():
            out.append((CODEC2 / "speech_orig_16k.wav", "file", "codec2-speech_orig"))
        return out
    raise ValueError(f"unknown real-speech source {source!r} (known: {', '.join(PACKAGES)})")


def _decode(path: Path, fmt: str) -> np.ndarray:
    if fmt == "raw8k":
        import torch
        import torchaudio.functional as AF

        data = path.read_bytes()
        x = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
        return AF.resample(torch.from_numpy(x), 8000, SAMPLE_RATE).numpy()
    return decode_voice(path, fmt)


def trim_and_level(x: np.ndarray, floor_db: float = -40.0, frame: int = 320) -> np.ndarray | None:
    """The clip without leading/trailing frames under ``floor_db`` re its loudest frame,
    scaled to TARGET_RMS over what is left; None if silent, too short or non-finite."""
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    if x.size < frame or not np.isfinite(x).all():
        return None
    n = x.size // frame
    e = 10 * np.log10(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    on = np.flatnonzero(e > e.max() + floor_db) if e.max() > -80 else np.array([], dtype=int)
    if on.size == 0:
        return None
    y = x[on[0] * frame: (on[-1] + 1) * frame][: int(MAX_S * SAMPLE_RATE)]
    if y.size < MIN_S * SAMPLE_RATE:
        return None
    rms = float(np.sqrt(np.mean(y ** 2)))
    return None if rms < 1e-4 else y * (TARGET_RMS / rms)


def _write_pool(out: Path, items: list[tuple[dict, np.ndarray]]) -> list[dict]:
    """Write clips (``(meta, float audio)``) end to end as ``pool.npy`` (int16) and one
    ``clips.jsonl`` row each (``start``, ``length`` in samples, then ``meta``); returns the rows."""
    chunks, rows, pos = [], [], 0
    for meta, y in items:
        q = np.clip(np.round(y * 32767), -32768, 32767).astype(np.int16)
        chunks.append(q)
        rows.append({"start": pos, "length": int(q.size), **meta})
        pos += q.size
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "pool.npy.part.npy", np.concatenate(chunks))
    os.replace(out / "pool.npy.part.npy", out / "pool.npy")
    (out / "clips.jsonl").write_text("".join(json.dumps(c) + "\n" for c in rows))
    return rows


def _seconds(rows: list[dict], source: str) -> float:
    return round(sum(c["length"] for c in rows if c["source"] == source) / SAMPLE_RATE, 1)


def build_real_speech(out: str | os.PathLike, sources: list[str] | None = None) -> dict:
    """Write the pool (see the module doc); returns the summary."""
    out = Path(out)
    items, missing, found = [], [], []
    for source in sources or list(PACKAGES):
        files = _files(source)
        if not files:
            missing.append(PACKAGES[source])
            continue
        found.append(source)
        for path, fmt, speaker in files:
            try:
                y = trim_and_level(_decode(path, fmt))
            except CorpusError:
                continue
            if y is not None:
                items.append(({"source": source, "speaker": speaker, "path": str(path)}, y))
    if not items:
        raise CorpusError("no real speech found: apt-get install " + " ".join(PACKAGES.values()))
    rows = _write_pool(out, items)
    summary = {s: {"package": PACKAGES[s], "clips": sum(c["source"] == s for c in rows), "seconds": _seconds(rows, s),
                   "speakers": len({c["speaker"] for c in rows if c["source"] == s})} for s in found}
    doc = {"sample_rate": SAMPLE_RATE, "clips": len(rows),
           "seconds": round(sum(c["length"] for c in rows) / SAMPLE_RATE, 1),
           "sources": summary, "missing_packages": missing}
    (out / "summary.json").write_text(json.dumps(doc, indent=1))
    return doc


class RealSpeechPool:
    """The pool, memory-mapped: ``crop(rng, n)`` -> speech (n,) float32: from a random
    point of the pool (so sources weigh by their seconds), that clip's speaker's clips laid
    end to end with random pauses (0.1-0.8 s), one person talking in phrases."""

    def __init__(self, root: str | os.PathLike):
        root = Path(root)
        if not (root / "pool.npy").is_file() or not (root / "clips.jsonl").is_file():
            raise FileNotFoundError(f"{root}: no real-speech pool (jrsv-stream data real-speech --out {root})")
        self.audio = np.load(root / "pool.npy", mmap_mode="r")
        self.clips = [json.loads(x) for x in (root / "clips.jsonl").read_text().splitlines() if x.strip()]
        by: dict[str, list[int]] = {}
        for i, c in enumerate(self.clips):
            by.setdefault(c["speaker"], []).append(i)
        self.by_speaker = by
        self.ends = np.cumsum([c["length"] for c in self.clips])

    def clip(self, k: int) -> np.ndarray:
        """Clip ``k`` as float32."""
        c = self.clips[k]
        return np.asarray(self.audio[c["start"]: c["start"] + c["length"]], dtype=np.float32) / 32767.0

    def crop(self, rng: np.random.Generator, n: int) -> np.ndarray:
        k = int(np.searchsorted(self.ends, rng.integers(int(self.ends[-1])), side="right"))
        spk = self.by_speaker[self.clips[k]["speaker"]]
        parts, total = [], 0
        j = spk.index(k)
        first = True
        while total < n + SAMPLE_RATE:
            x = self.clip(spk[j % len(spk)])
            if first:  # start inside the first clip or in a pause before it
                lead = int(rng.integers(-int(0.8 * SAMPLE_RATE), max(1, x.size // 2)))
                x = x[lead:] if lead > 0 else np.concatenate([np.zeros(-lead, np.float32), x])
                first = False
            gap = np.zeros(int(rng.uniform(0.1, 0.8) * SAMPLE_RATE), np.float32)
            parts += [x, gap]
            total += x.size + gap.size
            j += 1 + int(rng.integers(0, 3))
        return np.concatenate(parts)[:n]


# --- the same voices sung (WORLD) -------------------------------------------------------------
SUNG_MIN_S = 1.0  # clips shorter than this are single letters or words: not sung
WORDS_PER_S = 2.5  # pseudo-words per second of talk: the cut points the melody's notes take


def _sing_clip(args: tuple[int, np.ndarray, int]) -> np.ndarray | None:
    """One clip of talk sung onto a random melody (as the out-of-domain set sings its real
    voices, :mod:`jrsv_stream.data.ood`), with pseudo-words in place of a transcript:
    the clip cut into ~WORDS_PER_S spans at energy minima, one syllable each."""
    from jrsv_stream.data.melody import make_melody
    from jrsv_stream.data.ood import HIGH_F0_HZ, TEMPO_BPM, _median_f0, energy_word_spans
    from jrsv_stream.data.world_sing import sing_with_world

    k, x, seed = args
    rng = np.random.default_rng([seed, 19, k])
    words = ["la"] * max(1, int(round(x.size / SAMPLE_RATE * WORDS_PER_S)))
    low, high = (57, 74) if _median_f0(x) > HIGH_F0_HZ else (45, 62)
    try:
        mel = make_melody(rng, words, [1] * len(words), int(rng.integers(0, 12)), low, high)
        spans = energy_word_spans(x, words)
        audio, _ = sing_with_world(x, SAMPLE_RATE, spans, mel, float(rng.uniform(*TEMPO_BPM)), rng)
    except (ValueError, IndexError):
        return None
    return trim_and_level(audio)


def build_real_singing(pool: str | os.PathLike, out: str | os.PathLike, seed: int = 0, workers: int = 2,
                       max_clips: int | None = None) -> dict:
    """The pool's talk (clips >= SUNG_MIN_S) sung with WORLD onto random melodies, written in
    the pool format (``pool.npy``, ``clips.jsonl``, ``summary.json``) to ``out``: real voice
    timbre on the singing track, so the separator cannot take a real voice for talk by its
    timbre alone. Deterministic in ``seed``."""
    from multiprocessing import Pool

    src = RealSpeechPool(pool)
    keep = [i for i, c in enumerate(src.clips) if c["length"] >= SUNG_MIN_S * SAMPLE_RATE]
    if max_clips is not None:
        keep = keep[:: max(1, len(keep) // max_clips)][:max_clips]
    jobs = [(i, src.clip(i), seed) for i in keep]
    with Pool(workers) as p:
        sung = p.map(_sing_clip, jobs, chunksize=8)
    items = [({**{k: v for k, v in src.clips[i].items() if k not in ("start", "length")},
               "sung_from": src.clips[i]["start"]}, y) for i, y in zip(keep, sung) if y is not None]
    if not items:
        raise CorpusError(f"{pool}: no clip could be sung")
    out = Path(out)
    rows = _write_pool(out, items)
    doc = {"sample_rate": SAMPLE_RATE, "sung_from": str(pool), "seed": seed, "clips": len(rows),
           "seconds": round(sum(c["length"] for c in rows) / SAMPLE_RATE, 1),
           "sources": {s: _seconds(rows, s) for s in sorted({c["source"] for c in rows})}}
    (out / "summary.json").write_text(json.dumps(doc, indent=1))
    return doc
