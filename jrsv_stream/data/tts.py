"""Offline speech synthesis with word timings: espeak-ng, flite and Festival.

Every engine returns 16 kHz mono audio and ``[(word, start_s, end_s)]`` for each
transcript word:

- espeak-ng runs in-process through its C library (ctypes) with word events giving each
  word's start sample; a word ends where its energy stops before the next word starts.
- flite runs as a CLI with ``-psdur`` (segment end times); segments are assigned to words
  by each word's phone count, read from flite itself on the isolated words.
- Festival runs one batch script per call that synthesizes all requests, saves each wave
  and prints every word's first-segment start and ``word_end``.

A request whose engine output cannot be aligned to its words (rare: an engine expands or
merges a word) returns None; callers draw another request.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from jrsv_stream import SAMPLE_RATE
from jrsv_stream.audio.io import resample
from jrsv_stream.data.manifest import Word

# --- voices -------------------------------------------------------------------------
ESPEAK_BASES = ("en-us", "en", "en-gb-x-rp", "en-gb-x-gbclan", "en-us-nyc", "en-gb-scotland", "en-029", "en-gb-x-gbcwmd")
ESPEAK_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6",
    "Alex", "Andy", "annie", "belinda", "benjamin", "caleb", "david", "ed", "edward",
    "grandma", "grandpa", "iven", "iven2", "john", "linda", "max", "michel", "norbert",
    "paul", "pedro", "quincy", "robert", "steph", "steph2", "travis", "victor", "zac",
)
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
FESTIVAL_VOICES = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")

# Held out of training entirely: the test split uses only these (see README, DATA).
HELDOUT_ESPEAK_BASES = ("en-gb-scotland", "en-029")
HELDOUT_ESPEAK_VARIANTS = ("f4", "m6", "klatt3", "annie", "grandpa", "steph2")
HELDOUT_FLITE = ("rms",)
HELDOUT_FESTIVAL = ("ked_diphone",)


@dataclass(frozen=True)
class Voice:
    """A synthesizer voice: ``engine`` in {espeak, flite, festival} and its name
    (espeak: ``base+variant``)."""

    engine: str
    name: str

    @property
    def id(self) -> str:
        return f"{self.engine}:{self.name}"

    @property
    def heldout(self) -> bool:
        if self.engine == "espeak":
            base, _, variant = self.name.partition("+")
            return base in HELDOUT_ESPEAK_BASES or variant in HELDOUT_ESPEAK_VARIANTS
        if self.engine == "flite":
            return self.name in HELDOUT_FLITE
        return self.name in HELDOUT_FESTIVAL


def all_voices() -> list[Voice]:
    """Every voice the engines here offer (variants present in espeak-ng's data only)."""
    variants_dir = _espeak_data_dir() / "voices" / "!v"
    variants = [v for v in ESPEAK_VARIANTS if (variants_dir / v).is_file()] if variants_dir.is_dir() else []
    voices = [Voice("espeak", f"{b}+{v}") for b in ESPEAK_BASES for v in variants]
    voices += [Voice("flite", v) for v in FLITE_VOICES]
    voices += [Voice("festival", v) for v in FESTIVAL_VOICES]
    return voices


def voices_for_split(split: str) -> list[Voice]:
    """Training and validation use seen voices; test uses held-out voices only."""
    vs = all_voices()
    return [v for v in vs if v.heldout] if split == "test" else [v for v in vs if not v.heldout]


@dataclass(frozen=True)
class TtsRequest:
    """One utterance to synthesize.

    Attributes:
        spoken: text read by the engine; its words (punctuation stripped) must be ``words``.
        words: transcript words, in order.
        voice: the voice.
        speed: speaking-rate factor (1 = engine default; > 1 faster).
        pitch: relative pitch in [-1, 1] (engines that support it).
    """

    spoken: str
    words: tuple[str, ...]
    voice: Voice
    speed: float = 1.0
    pitch: float = 0.0


@dataclass(frozen=True)
class Utterance:
    audio: np.ndarray  # (T,) float32 at 16 kHz
    words: list[Word]
    voice: str
    params: dict = field(default_factory=dict)


def synthesize(requests: list[TtsRequest], workdir: str | os.PathLike | None = None) -> list[Utterance | None]:
    """Synthesize a batch (engines batched where it pays: one Festival process per call)."""
    out: list[Utterance | None] = [None] * len(requests)
    tmp = Path(tempfile.mkdtemp(prefix="tts-", dir=workdir))
    try:
        fest = [(i, r) for i, r in enumerate(requests) if r.voice.engine == "festival"]
        for i, u in zip([i for i, _ in fest], _festival_batch([r for _, r in fest], tmp)):
            out[i] = u
        flite = [(i, r) for i, r in enumerate(requests) if r.voice.engine == "flite"]
        phones = _flite_word_phones({w for _, r in flite for w in r.words}, tmp) if flite else {}
        for i, r in flite:
            out[i] = _flite_one(r, phones, tmp / f"f{i}.wav")
        for i, r in enumerate(requests):
            if r.voice.engine == "espeak":
                out[i] = _espeak_one(r)
            elif r.voice.engine not in ("festival", "flite"):
                raise ValueError(f"unknown TTS engine {r.voice.engine!r}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# --- shared helpers -------------------------------------------------------------------
def _word_ends_from_energy(audio: np.ndarray, sr: int, starts: list[float], total_s: float) -> list[float]:
    """End of each word: the last 10 ms frame above -35 dB (re. the loudest frame) before
    the next word's start (or the end of the audio)."""
    hop = sr // 100
    n = len(audio) // hop
    if n == 0:
        return [total_s] * len(starts)
    frames = audio[: n * hop].reshape(n, hop).astype(np.float64)
    db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    active = db > db.max() - 35.0
    ends = []
    for k, s in enumerate(starts):
        nxt = starts[k + 1] if k + 1 < len(starts) else total_s
        f0, f1 = int(s * 100), max(int(s * 100) + 1, int(round(nxt * 100)))
        idx = np.flatnonzero(active[f0:min(f1, n)])
        end = (f0 + idx[-1] + 1) / 100.0 if idx.size else min(nxt, s + 0.05)
        ends.append(float(min(max(end, s + 0.02), nxt if k + 1 < len(starts) else total_s)))
    return ends


def _finish(audio: np.ndarray, sr: int, words: list[Word], r: TtsRequest, params: dict) -> Utterance | None:
    audio = resample(audio.astype(np.float32), sr, SAMPLE_RATE)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak < 1e-4 or not np.all(np.isfinite(audio)):
        return None
    audio = (audio * (0.5 / peak)).astype(np.float32)
    dur = len(audio) / SAMPLE_RATE
    words = [(w, round(min(s, dur), 4), round(min(e, dur), 4)) for w, s, e in words]
    return Utterance(audio=audio, words=words, voice=r.voice.id, params=params)


# --- espeak-ng (in-process) -------------------------------------------------------------
class _EspeakEvent(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
        ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8),
    ]


_ESPEAK_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_EspeakEvent))
_espeak: dict = {}  # per process: lib, rate, callback, buffers


def _espeak_data_dir() -> Path:
    for p in ("/usr/lib/x86_64-linux-gnu/espeak-ng-data", "/usr/lib/aarch64-linux-gnu/espeak-ng-data", "/usr/share/espeak-ng-data"):
        if Path(p).is_dir():
            return Path(p)
    return Path("/usr/share/espeak-ng-data")


def _espeak_lib() -> dict:
    pid = os.getpid()
    if _espeak.get("pid") == pid:
        return _espeak
    try:
        lib = ctypes.CDLL("libespeak-ng.so.1")
    except OSError as e:
        raise RuntimeError("libespeak-ng not found: apt-get install espeak-ng") from e
    rate = lib.espeak_Initialize(2, 0, None, 0)  # AUDIO_OUTPUT_SYNCHRONOUS
    if rate <= 0:
        raise RuntimeError("espeak_Initialize failed")
    state = {"pid": pid, "lib": lib, "rate": rate, "chunks": [], "events": []}

    def cb(wav, n, ev):
        if n > 0:
            state["chunks"].append(np.ctypeslib.as_array(wav, (n,)).copy())
        i = 0
        while ev[i].type != 0:  # espeakEVENT_LIST_TERMINATED
            if ev[i].type == 1:  # espeakEVENT_WORD
                state["events"].append((ev[i].text_position, ev[i].sample))
            i += 1
        return 0

    state["cb"] = _ESPEAK_CB(cb)  # keep a reference: the C library calls it later
    lib.espeak_SetSynthCallback(state["cb"])
    _espeak.clear()
    _espeak.update(state)
    return _espeak


def _speech_end_sample(audio: np.ndarray, sr: int) -> int:
    """Sample after the last 10 ms frame above -35 dB re. the loudest frame."""
    ends = _word_ends_from_energy(audio, sr, [0.0], len(audio) / sr)
    return int(round(ends[0] * sr))


def _fill_missing_starts(found: list[int | None], n_chars: list[int], end_sample: int) -> list[int] | None:
    """Interpolate the start of words without an event (by character count) between the
    known starts around them; None if the known starts are not increasing."""
    known = [i for i, s in enumerate(found) if s is not None]
    if any(found[a] >= found[b] for a, b in zip(known, known[1:])):
        return None
    out = list(found)
    bounds = known + [len(found)]
    for a, b in zip(bounds, bounds[1:]):
        if b - a <= 1:
            continue
        t0 = found[a]
        t1 = found[b] if b < len(found) else max(end_sample, t0 + 1)
        chars = n_chars[a:b]
        cum = np.cumsum([0] + chars)
        for j in range(a + 1, b):
            out[j] = int(t0 + (t1 - t0) * cum[j - a] / cum[-1])
    if any(x >= y for x, y in zip(out, out[1:])):
        return None
    return out


def _espeak_synth_isolated(r: TtsRequest, wpm: int, pitch: int) -> tuple[np.ndarray, list[tuple[int, int]]] | None:
    """Synthesize in a forked child of a process whose espeak-ng was initialized but never
    used: espeak-ng carries waveform-generator state from one utterance to the next (the
    same request sounds different after other requests, seen here), which would make the
    corpus depend on worker scheduling. Every request thus starts from the same state.

    Returns (int16 samples, [(text_position, sample)] word events), or None on failure.
    """
    import pickle

    st = _espeak_lib()
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: synthesize, send the result, exit without running Python clean-up
        code = 1
        try:
            os.close(rfd)
            lib = st["lib"]
            if lib.espeak_SetVoiceByName(r.voice.name.encode()) == 0:
                lib.espeak_SetParameter(1, wpm, 0)  # espeakRATE
                lib.espeak_SetParameter(3, pitch, 0)  # espeakPITCH
                lib.espeak_SetParameter(4, 50, 0)  # espeakRANGE
                text = r.spoken.encode("utf-8")
                ok = lib.espeak_Synth(text, len(text) + 1, 0, 0, 0, 0, None, None) == 0 and st["chunks"]
                payload = pickle.dumps((np.concatenate(st["chunks"]), list(st["events"])) if ok else None)
                with os.fdopen(wfd, "wb") as f:
                    f.write(payload)
                code = 0
            else:
                code = 3
        finally:
            os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 3:
        raise RuntimeError(f"espeak-ng has no voice {r.voice.name!r}")
    if os.waitstatus_to_exitcode(status) != 0 or not data:
        return None
    return pickle.loads(data)


def _espeak_one(r: TtsRequest) -> Utterance | None:
    wpm = int(round(165 * r.speed))
    pitch = int(np.clip(50 + 35 * r.pitch, 0, 99))
    res = _espeak_synth_isolated(r, wpm, pitch)
    if res is None:
        return None
    samples, events = res
    # Map word events to the words of the spoken text by character position (1-based).
    # espeak sometimes emits an extra event inside a word, and sometimes none for an
    # unstressed function word it joins to its neighbour ("in the", "to be"): such a word
    # gets a start interpolated by character count between its neighbours' starts.
    spans, pos = [], 0
    for tok in r.spoken.split():
        spans.append((pos + 1, pos + len(tok)))
        pos += len(tok) + 1
    if len(spans) != len(r.words):
        return None
    found: list[int | None] = []
    for a, b in spans:
        inside = [smp for tp, smp in events if a <= tp <= b]
        found.append(min(inside) if inside else None)
    if found[0] is None:
        found[0] = 0
    sr = _espeak_lib()["rate"]
    audio = samples.astype(np.float32) / 32768.0
    starts_samples = _fill_missing_starts(found, [b - a + 1 for a, b in spans], _speech_end_sample(audio, sr))
    if starts_samples is None:
        return None
    starts = [s / sr for s in starts_samples]
    ends = _word_ends_from_energy(audio, sr, starts, len(audio) / sr)
    words = [(w, s, e) for w, s, e in zip(r.words, starts, ends)]
    return _finish(audio, sr, words, r, {"wpm": wpm, "pitch": pitch})


# --- flite (CLI) -------------------------------------------------------------------------
def _flite_word_phones(words: set[str], tmp: Path) -> dict[str, int]:
    """Phone count of each word as flite pronounces it in isolation."""
    ordered = sorted(words)
    if not ordered:
        return {}
    text = ". ".join(ordered) + "."
    res = subprocess.run(["flite", "-voice", "slt", "-ps", "-t", text, "none"], capture_output=True, text=True, check=True)
    groups = [g.split() for g in re.split(r"\bpau\b", res.stdout)]
    groups = [g for g in groups if g]
    if len(groups) != len(ordered):
        return {}
    return {w: len(g) for w, g in zip(ordered, groups)}


def _flite_one(r: TtsRequest, phones: dict[str, int], wav: Path) -> Utterance | None:
    if any(w not in phones for w in r.words):
        return None
    stretch = round(1.0 / r.speed, 3)
    f0 = 110 if r.voice.name in ("kal", "kal16", "awb", "rms") else 170
    f0 = int(round(f0 * 2 ** (r.pitch * 0.4)))
    cmd = ["flite", "-voice", r.voice.name, "-psdur", "--setf", f"duration_stretch={stretch}",
           "--setf", f"int_f0_target_mean={f0}", "-t", r.spoken, "-o", str(wav)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0 or not wav.is_file():
        return None
    segs = [(p, float(t)) for p, t in (tok.rsplit(":", 1) for tok in res.stdout.split() if ":" in tok)]
    bounds = []  # (start_s, end_s) for each non-pause segment
    prev = 0.0
    for p, t in segs:
        if p != "pau":
            bounds.append((prev, t))
        prev = t
    if len(bounds) != sum(phones[w] for w in r.words):
        return None
    words, k = [], 0
    for w in r.words:
        n = phones[w]
        words.append((w, bounds[k][0], bounds[k + n - 1][1]))
        k += n
    audio, sr = sf.read(str(wav), dtype="float32")
    return _finish(audio, sr, words, r, {"duration_stretch": stretch, "f0_mean": f0})


# --- Festival (one batch script) -----------------------------------------------------------
_FESTIVAL_PRELUDE = """
(define (jrsv_dump utt name)
  (utt.save.wave utt name 'riff)
  (format t "UTT %s\\n" name)
  (mapcar (lambda (w) (format t "W %s %s %s\\n" (item.name w)
      (item.feat w "R:SylStructure.daughter1.daughter1.segment_start") (item.feat w "word_end")))
    (utt.relation.items utt 'Word))
  t)
"""


def _scheme_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def run_festival(script_body: str, tmp: Path) -> dict[str, list[tuple[str, float, float]]]:
    """Run Festival on a script that calls ``(jrsv_dump utt "file.wav")``; return each
    dumped file's ``[(word, start_s, end_s)]`` as Festival reports them."""
    script = tmp / "batch.scm"
    script.write_text(_FESTIVAL_PRELUDE + script_body)
    res = subprocess.run(["festival", "-b", str(script)], capture_output=True, text=True, cwd=tmp)
    out: dict[str, list] = {}
    cur = None
    for line in res.stdout.splitlines():
        if line.startswith("UTT "):
            cur = line[4:].strip()
            out[cur] = []
        elif line.startswith("W ") and cur is not None:
            parts = line.split()
            if len(parts) == 4:
                out[cur].append((parts[1], float(parts[2]), float(parts[3])))
    return out


def _festival_batch(reqs: list[TtsRequest], tmp: Path) -> list[Utterance | None]:
    if not reqs:
        return []
    body = []
    for i, r in enumerate(reqs):
        body.append(f"(unwind-protect (begin (voice_{r.voice.name}) "
                    f"(Parameter.set 'Duration_Stretch {1.0 / r.speed:.3f}) "
                    f"(jrsv_dump (SynthText {_scheme_str(r.spoken)}) \"s{i}.wav\")) nil)")
    dumped = run_festival("\n".join(body) + "\n", tmp)
    out: list[Utterance | None] = []
    for i, r in enumerate(reqs):
        fw = dumped.get(f"s{i}.wav")
        wav = tmp / f"s{i}.wav"
        if fw is None or len(fw) != len(r.words) or not wav.is_file():
            out.append(None)
            continue
        audio, sr = sf.read(str(wav), dtype="float32")
        words = [(w, s, e) for w, (_, s, e) in zip(r.words, fw)]
        out.append(_finish(audio, sr, words, r, {"duration_stretch": round(1.0 / r.speed, 3)}))
    return out
