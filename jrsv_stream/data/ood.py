"""A held-out **out-of-domain** separation test set, built only from sources the separator's
training never sees: ``jrsv-stream data ood --out data/ood [--seed 0] [--items 180]``.

Training (``jrsv-stream data synth`` and dynamic mixing over it) hears espeak-ng / flite /
Festival TTS voices, Festival diphone and WORLD-re-pitched *TTS* singing, and music
rendered by fluidsynth with the FluidR3 GM soundfont plus the train split of Debian's
``sonic-pi-samples``. This set uses none of those voices or instrument recordings:

========= ============================================================================
source    what
========= ============================================================================
speech    real human recordings with their transcripts, every one
          :func:`jrsv_stream.data.real_voices.real_voice_items` finds installed
          (pocketsphinx-testdata: LibriVox, cards, goforward, TIDIGITS; alsa-utils'
          speaker-test voice; Asterisk's Allison Smith prompts). Leading and trailing
          silence trimmed (-40 dB), each utterance scaled to the same RMS. No word
          timings (``speech_words`` null: evaluations fall back to stem energy).
singing   the *same kind* of real recordings sung: re-pitched and re-timed with WORLD
          (:func:`jrsv_stream.data.world_sing.sing_with_world`) onto a melody of
          :func:`jrsv_stream.data.melody.make_melody`; text = the transcript. The word
          timings WORLD needs come without any model: the utterance's active span is cut
          into as many contiguous spans as it has words, at frame-energy minima near the
          cut points that syllable counts predict (:func:`energy_word_spans`). A span may
          hold the edge of a neighbouring word, so a note may start a little early or
          late in the word, but every frame is sung once and in order: the sung audio
          holds the whole transcript. Pitch range from the speaker's median f0 (above
          160 Hz: A3-D5, else A2-D4); tempo 80-150 bpm as the corpus. ``singing_words``
          null. The recordings are split between speech and singing by a stable hash of
          their id (half each), so no utterance is both spoken and sung in the set.
          If the PyPI package ``stempeg`` is installed (``[data]`` extra), its bundled
          6 s MUSDB18 excerpt ("The Easton Ellises - Falcon 69": real vocals over real
          drums + bass + other) adds one real sung item per SNR (``singing_text`` null: no
          lyrics are shipped; ``test_transcribed.jsonl`` leaves them out).
music     the corpus's own composer (:func:`jrsv_stream.data.music.synth_music`,
          ``split="test"``) rendered with **other soundfonts**, taking turns by piece:
          TimGM6mb (Debian ``timgm6mb-soundfont``, GPL-2,
          ``/usr/share/sounds/sf2/TimGM6mb.sf2``), csound's GM bank (Debian
          ``csound-soundfont``, public domain, ``/usr/share/sounds/sf2/sf_GMbank.sf2``)
          and the OPL-3 FM bank (Debian ``opl3-soundfont``, recordings of an OPL3 FM
          chip, ``/usr/share/sounds/sf2/OPL-3_FM_128M.sf2``). Not MuseScore General
          (``musescore-general-soundfont-small``): it is built on FluidR3 Mono, and
          only ~25 of its 128 melodic presets (mostly synths) have other samples; its
          renders of corpus MIDI correlate 0.57-0.99 (median ~0.9) with FluidR3's, so it
          is not out of domain. TimGM6mb and the csound bank share many presets with each
          other (render correlation up to 1.0) but hardly any with FluidR3 (-0.3-0.6);
          OPL-3 shares none with any of them (|r| < 0.2). Recorded sample layers come
          only from the **test** split of sonic-pi-samples (never in training; the
          corpus's test split uses them too); sample-only ("loop") pieces are not
          drawn, so every piece has soundfont instruments. Two pieces in three then go
          through a synthetic reverb (exponentially decaying filtered noise, RT60
          0.4-1.8 s, 10-35 % wet energy, 5-30 ms pre-delay); the rest stay dry.
          ``music_meta`` names the soundfont and the effect.
========= ============================================================================

Mixing is the corpus's (:func:`jrsv_stream.data.compose.render_item` /
:func:`~jrsv_stream.data.compose.write_item`, region SNR of
:func:`jrsv_stream.data.mixing.mix_stems`, stems exact on the 16-bit grid), so the
figures compare with the corpus test split. Scenarios ``speech`` (speech + music),
``singing`` (singing + music) and ``both`` (speech + singing + music, one or two
utterances each, overlapping or not) take turns (item ``i`` has scenario ``i % 3``); each
vocal's SNR against the music is -5, 0 or +5 dB, balanced within each scenario (and in
``both`` over the 9 speech x singing pairs). Items last 6-20 s; the three items of a group
(one per scenario) take disjoint consecutive stretches of one music piece.

Output (``OUT/``): ``test.jsonl`` (every item, :class:`~jrsv_stream.data.manifest.ManifestItem`
lines; ``extra`` as the corpus writes it plus the sources of each item and
``speech_segments`` / ``singing_segments``: ``[recording id, start_s, end_s]`` of each placed
recording, an utterance-level activity reference),
``test_transcribed.jsonl`` (items whose every vocal has a transcript),
``mixtures/<id>/{mixture,speech,singing,music}.flac`` (16 kHz, 16-bit) and ``summary.json``.
Deterministic for ``(seed, items, installed sources)``: the same seed rebuilds the same
bytes. The default set (180 items + the 3 stempeg items, 0.57 h) builds in about 90 s on
two cores (measured).

Limits, as they are: the real voices are few. Of the 305 recordings in the pools (all
installed sources; spoken recordings <= 15 s, sung lines <= 14 s), 285 are Allison Smith's Asterisk
prompts, so the speech and singing figures are mostly one professional female voice; the
other sources (LibriVox, cards, TIDIGITS, goforward, alsa) add 20 recordings. The sung
vocals are WORLD re-syntheses of speech (a real voice's timbre, a synthetic melody), not
real singing; only the stempeg excerpt is a real singer.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from jrsv_stream import SAMPLE_RATE
from jrsv_stream.data.compose import (SCENARIOS, ItemPlan, MusicSource, Placement, RenderedItem, SourceCycle, VocalSource,
                                      _fill, render_item, write_item)
from jrsv_stream.data.manifest import ManifestItem, write_manifest
from jrsv_stream.data.melody import WordNotes, beats_to_seconds, count_syllables, make_melody
from jrsv_stream.data.mixing import SNR_BUCKETS_DB, mix_stems
from jrsv_stream.data.real_corpora import CorpusError
from jrsv_stream.data.real_voices import SOURCES as VOICE_SOURCES
from jrsv_stream.data.real_voices import RealVoice, real_voice_items


FORMAT = "jrsv-ood-1"
DEFAULT_ITEMS = 180
MIN_S, MAX_S = 6.0, 20.0
SPEECH_MAX_S = 15.0  # longer recordings (a few Asterisk prompts) are left out
SUNG_MAX_S = 14.0  # sung lines longer than this are left out of the singing pool
SPEECH_RMS = 0.1
TRIM_DB = 40.0
TEMPO_BPM = (80.0, 150.0)
HIGH_F0_HZ = 160.0
SPLIT = "ood"
REVERB_P = 2.0 / 3.0


@dataclass(frozen=True)
class Soundfont:
    name: str
    paths: tuple[Path, ...]  # first existing one is used
    package: str
    licence: str

    def path(self) -> Path | None:
        return next((p for p in self.paths if p.is_file()), None)


SOUNDFONTS = (
    Soundfont("timgm6mb", (Path("/usr/share/sounds/sf2/TimGM6mb.sf2"),), "timgm6mb-soundfont", "GPL-2"),
    Soundfont("csound-gmbank", (Path("/usr/share/sounds/sf2/sf_GMbank.sf2"), Path("/usr/share/samples/sf_GMbank.sf2")),
              "csound-soundfont", "public domain"),
    Soundfont("opl3-fm", (Path("/usr/share/sounds/sf2/OPL-3_FM_128M.sf2"),), "opl3-soundfont", "CC-BY-SA-4.0"),
)

STEMPEG_FILE = "The Easton Ellises - Falcon 69.stem.mp4"


def _rng(seed: int, *keys) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF] + [zlib.crc32(k.encode()) if isinstance(k, str) else int(k)
                                                             for k in keys])


def resolve_soundfonts(paths: dict[str, str | os.PathLike] | None = None) -> list[tuple[Soundfont, Path]]:
    """The OOD soundfonts with their files (``paths`` overrides a name's file).

    Raises:
        CorpusError: a soundfont file is missing; the message names its Debian package.
    """
    out = []
    for sf_ in SOUNDFONTS:
        p = Path(paths[sf_.name]) if paths and sf_.name in paths else sf_.path()
        if p is None or not p.is_file():
            raise CorpusError(f"soundfont {sf_.name} not found ({p or sf_.paths[0]}): "
                              f"apt-get install {sf_.package}")
        out.append((sf_, p))
    return out


# --- word spans without a model ---------------------------------------------------------------
def energy_word_spans(x: np.ndarray, words: Sequence[str], sr: int = SAMPLE_RATE,
                      hop_s: float = 0.005) -> list[tuple[str, float, float]]:
    """Contiguous ``(word, start_s, end_s)`` spans covering the active part of ``x``.

    The active part runs from the first to the last 5 ms frame within ``TRIM_DB`` of the
    loudest frame. It is cut into ``len(words)`` spans: the ``k``-th cut is placed at the
    minimum of the (3-frame smoothed) log energy within +-35 % of a mean word span around
    the point where the cumulative syllable count of the words before it puts it. No model:
    spans are approximate (a span may hold a neighbouring word's edge).
    """
    if not words:
        raise ValueError("no words")
    x = np.asarray(x, dtype=np.float64)
    hop = int(round(hop_s * sr))
    n = max(1, len(x) // hop)
    e = np.square(x[: n * hop]).reshape(n, hop).mean(axis=1) if len(x) >= hop else np.array([np.mean(x * x)])
    log_e = np.log(e + 1e-12)
    active = np.flatnonzero(log_e >= log_e.max() - TRIM_DB * np.log(10) / 10)
    a, b = int(active[0]), int(active[-1]) + 1
    m = b - a
    syl = np.array([count_syllables(w) for w in words], dtype=np.float64)
    k_words = len(words)
    if m < k_words:  # degenerate: as many equal spans as words over the whole signal
        a, b, m = 0, n, n
    seg = log_e[a:b]
    sm = np.convolve(seg, np.ones(3) / 3.0, mode="same") if m >= 3 else seg
    cum = np.cumsum(syl) / syl.sum()
    span = m / k_words
    cuts = [0]
    for k in range(1, k_words):
        nominal = cum[k - 1] * m
        lo = max(cuts[-1] + 1, int(np.ceil(nominal - 0.35 * span)))
        hi = min(m - (k_words - k), int(np.floor(nominal + 0.35 * span)))
        c = int(np.clip(round(nominal), cuts[-1] + 1, m - (k_words - k))) if hi < lo else lo + int(np.argmin(sm[lo:hi + 1]))
        cuts.append(c)
    cuts.append(m)
    return [(w, (a + cuts[i]) * hop_s, (a + cuts[i + 1]) * hop_s) for i, w in enumerate(words)]


def _trim(x: np.ndarray, sr: int = SAMPLE_RATE, margin_s: float = 0.05) -> np.ndarray:
    hop = int(0.005 * sr)
    n = len(x) // hop
    if n < 2:
        return x
    e = np.square(x[: n * hop].astype(np.float64)).reshape(n, hop).mean(axis=1)
    if e.max() <= 0:
        return x
    keep = np.flatnonzero(e >= e.max() * 10 ** (-TRIM_DB / 10))
    m = int(margin_s * sr)
    return x[max(0, keep[0] * hop - m): min(len(x), (keep[-1] + 1) * hop + m)]


def _edge_trim(x: np.ndarray, db: float = 60.0) -> np.ndarray:
    """Cut to the first and last sample within ``db`` of the peak: the stem's active region
    (:func:`jrsv_stream.data.mixing.active_region`) then starts on audible signal that
    survives 16-bit quantization, so the mixed region SNR is the planned one."""
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak == 0.0:
        return x
    nz = np.flatnonzero(np.abs(x) >= peak * 10 ** (-db / 20))
    return x[int(nz[0]): int(nz[-1]) + 1]


def _median_f0(x: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    import pyworld as pw

    f0, _ = pw.dio(np.ascontiguousarray(x, dtype=np.float64), sr, f0_floor=60.0, f0_ceil=500.0, frame_period=10.0)
    v = f0[f0 > 0]
    return float(np.median(v)) if v.size else 0.0


# --- vocal pools ------------------------------------------------------------------------------
def _is_singing_utterance(voice_id: str) -> bool:
    """Stable half of the real recordings (by id) is sung, the other half spoken."""
    return zlib.crc32(f"ood-role:{voice_id}".encode()) % 2 == 1


@dataclass
class _Sung:
    voice: RealVoice
    speech: np.ndarray
    tempo: float
    melody: list[WordNotes]
    key_midi: int
    f0: float
    seconds: float


class _VocalPools:
    """Speech and singing pools over the real recordings (singing synthesized lazily)."""

    def __init__(self, voices: list[RealVoice], seed: int):
        self.seed = seed
        self.speech: list[tuple[RealVoice, np.ndarray]] = []
        self.singing: list[_Sung] = []
        self.skipped: dict[str, int] = {}
        for v in voices:
            x = _edge_trim(_trim(v.load()))
            r = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0
            if r == 0.0:
                self.skipped["silent"] = self.skipped.get("silent", 0) + 1
                continue
            x = (x * (SPEECH_RMS / r)).astype(np.float32)
            if _is_singing_utterance(v.id):
                sung = self._plan_sung(v, x)
                if sung.seconds <= SUNG_MAX_S:
                    self.singing.append(sung)
                else:
                    self.skipped["sung too long"] = self.skipped.get("sung too long", 0) + 1
            elif len(x) / SAMPLE_RATE <= SPEECH_MAX_S:
                self.speech.append((v, x))
            else:
                self.skipped["speech too long"] = self.skipped.get("speech too long", 0) + 1
        self._cache: dict[int, VocalSource] = {}

    def _plan_sung(self, v: RealVoice, x: np.ndarray) -> _Sung:
        from jrsv_stream.data.world_sing import LEAD_S, TAIL_S

        rng = _rng(self.seed, "sing", v.id)
        words = v.text.split()
        f0 = _median_f0(x)
        low, high = (57, 74) if f0 > HIGH_F0_HZ else (45, 62)
        key = int(rng.integers(0, 12))
        tempo = float(rng.uniform(*TEMPO_BPM))
        mel = make_melody(rng, words, [count_syllables(w) for w in words], key, low, high)
        beats = sum(sum(n.beats for n in wn.notes) + wn.rest_after_beats for wn in mel)
        return _Sung(v, x, tempo, mel, key, f0, beats_to_seconds(beats, tempo) + LEAD_S + TAIL_S + 0.01)

    def speech_source(self, k: int) -> VocalSource:
        v, x = self.speech[k]
        return VocalSource(id=v.id, audio=x, text=v.text, words=[], voice=f"real:{v.source}")

    def singing_source(self, k: int) -> VocalSource:
        if k not in self._cache:
            from jrsv_stream.data.world_sing import sing_with_world

            s = self.singing[k]
            spans = energy_word_spans(s.speech, s.voice.text.split())
            audio, _timings = sing_with_world(s.speech, SAMPLE_RATE, spans, s.melody, s.tempo,
                                              _rng(self.seed, "world", s.voice.id))
            audio = _edge_trim(audio)
            r = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
            audio = (audio * (SPEECH_RMS / r)).astype(np.float32) if r > 0 else audio
            self._cache[k] = VocalSource(id=s.voice.id, audio=audio, text=s.voice.text, words=[],
                                         voice=f"world:real:{s.voice.source}")
        return self._cache[k]

    def durations(self, kind: str) -> list[float]:
        if kind == "speech":
            return [len(x) / SAMPLE_RATE for _, x in self.speech]
        return [s.seconds for s in self.singing]


# --- music ------------------------------------------------------------------------------------
def _reverb(x: np.ndarray, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> tuple[np.ndarray, dict]:
    """Synthetic room: exponentially decaying low-passed noise IR, FFT convolution."""
    rt60 = float(rng.uniform(0.4, 1.8))
    wet = float(rng.uniform(0.10, 0.35))  # wet share of the output energy
    pre = float(rng.uniform(0.005, 0.03))
    damp = float(rng.uniform(0.2, 0.7))  # one-pole low-pass coefficient of the tail
    n = int(rt60 * sr)
    t = np.arange(n) / sr
    noise = rng.standard_normal(n)
    lp = np.empty(n)
    acc = 0.0
    for i in range(n):  # one-pole low pass (n <= 29k samples)
        acc = (1.0 - damp) * noise[i] + damp * acc
        lp[i] = acc
    ir = np.concatenate([np.zeros(int(pre * sr)), lp * np.exp(-6.9078 * t / rt60)])
    size = 1 << int(np.ceil(np.log2(len(x) + len(ir))))
    tail = np.fft.irfft(np.fft.rfft(x.astype(np.float64), size) * np.fft.rfft(ir, size), size)[: len(x)]
    dry_e, tail_e = float(np.sum(np.square(x, dtype=np.float64))), float(np.sum(tail * tail))
    y = np.sqrt(1.0 - wet) * x + (np.sqrt(wet * dry_e / tail_e) * tail if tail_e > 0 else 0.0)
    y = y / max(float(np.max(np.abs(y))), 1e-9) * 0.5
    return y.astype(np.float32), {"effect": "reverb", "rt60_s": round(rt60, 3), "wet": round(wet, 3),
                                  "predelay_s": round(pre, 4), "damping": round(damp, 3)}


def _music_piece(seed: int, group: int, duration_s: float, fonts: list[tuple[Soundfont, Path]],
                 workdir: Path) -> MusicSource:
    from jrsv_stream.data.music import _piece_kind, synth_music

    rng = _rng(seed, "music", group)
    font, font_path = fonts[group % len(fonts)]
    while True:  # sample-only pieces would not use the soundfont
        mseed = int(rng.integers(2**31))
        if _piece_kind(mseed, "test") != "loop":
            break
    piece = synth_music(mseed, duration_s, split="test", workdir=workdir, soundfont=font_path)
    audio, fx = piece.audio, {"effect": None}
    if rng.random() < REVERB_P:
        audio, fx = _reverb(audio, rng)
    meta = {**piece.meta, "soundfont": font.name, "soundfont_file": str(font_path),
            "soundfont_package": font.package, "effects": fx}
    return MusicSource(id=f"ood-music-{group:04d}", audio=audio, meta=meta)


# --- planning ---------------------------------------------------------------------------------
def _snrs(i: int) -> tuple[float, float]:
    """(speech, singing) SNR of item ``i``: balanced per scenario, all 9 pairs in ``both``."""
    g = i // 3
    return SNR_BUCKETS_DB[g % 3], SNR_BUCKETS_DB[(g + g // 3) % 3]


def _plan(rng: np.random.Generator, i: int, scenario: str, cycles: dict, durs: dict) -> tuple[float, dict]:
    duration = float(rng.uniform(MIN_S, MAX_S))
    tracks: dict[str, list[Placement]] = {"speech": [], "singing": []}
    for v in ("speech", "singing"):
        if scenario not in (v, "both"):
            continue
        placed: list[Placement] = []
        for attempt in range(20):
            if scenario == "both":
                start = float(rng.uniform(0.0, duration * 0.4))
                placed = _fill(rng, cycles[v], durs[v], duration, start, int(rng.integers(1, 3)), (0.3, 2.5))
            else:
                placed = _fill(rng, cycles[v], durs[v], duration, float(rng.uniform(0.2, 1.0)), 8, (0.2, 1.2))
            if placed:
                break
            duration = min(MAX_S, duration + 1.5)
            if attempt >= 3:
                cycles[v].next()
        if not placed:
            raise CorpusError(f"no {v} source fits in {MAX_S} s")
        tracks[v] = placed
    end = max(p.offset_s + durs[v][p.source] for v in tracks for p in tracks[v])
    duration = float(np.clip(end + rng.uniform(0.3, 1.5), MIN_S, duration))
    return round(max(duration, end + 0.05), 4), tracks


def _stempeg_path() -> Path | None:
    spec = importlib.util.find_spec("stempeg")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "data" / STEMPEG_FILE
    return p if p.is_file() else None


def _decode_stream(path: Path, n: int) -> np.ndarray:
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", f"0:a:{n}", "-ac", "1", "-ar",
           str(SAMPLE_RATE), "-f", "f32le", "-acodec", "pcm_f32le", "-"]
    r = subprocess.run(cmd, capture_output=True)
    if r.returncode != 0 or not r.stdout:
        raise CorpusError(f"ffmpeg cannot decode stream {n} of {path}: {r.stderr.decode(errors='replace').strip()}")
    return np.frombuffer(r.stdout, dtype="<f4").astype(np.float64)


def _stempeg_items(path: Path) -> list[RenderedItem]:
    """The stempeg MUSDB18 excerpt: its vocals over its drums + bass + other, one item per SNR."""
    if shutil.which("ffmpeg") is None:
        raise CorpusError(f"ffmpeg is needed to decode {path}: apt-get install ffmpeg")
    streams = [_decode_stream(path, k) for k in (1, 2, 3, 4)]  # drums, bass, other, vocals
    n = min(len(s) for s in streams)
    music, vocals = np.sum([s[:n] for s in streams[:3]], axis=0), streams[3][:n]
    out = []
    for snr in SNR_BUCKETS_DB:
        plan = ItemPlan(id=f"ood-musdb-falcon69-snr{snr:+g}", split=SPLIT, scenario="singing",
                        duration_s=round(n / SAMPLE_RATE, 4), speech=(), singing=(Placement(0, 0.0),), music=0,
                        music_offset_s=0.0, speech_snr_db=None, singing_snr_db=snr, peak=0.8)
        mix = mix_stems({"singing": vocals}, music, {"singing": snr}, peak=plan.peak)
        out.append(RenderedItem(plan=plan, mix=mix, texts={"speech": None, "singing": None},
                                words={"speech": None, "singing": None}, voices={"speech": [], "singing": ["real:musdb"]},
                                music_meta={"id": "musdb-falcon69", "source": "stempeg", "track": STEMPEG_FILE,
                                            "stems": "drums+bass+other (real recordings)"}))
    return out


# --- the builder ------------------------------------------------------------------------------
def _prepare_out(out_dir: Path) -> None:
    summary = out_dir / "summary.json"
    if (out_dir / "mixtures").exists():
        try:
            kind = json.loads(summary.read_text()).get("format")
        except (OSError, ValueError):
            kind = None
        if kind != FORMAT:
            raise CorpusError(f"{out_dir} holds mixtures/ but no OOD summary.json: not an OOD set; "
                              f"choose another --out or remove it")
        shutil.rmtree(out_dir / "mixtures")
    out_dir.mkdir(parents=True, exist_ok=True)


def build_ood(out_dir, seed: int = 0, n_items: int = DEFAULT_ITEMS, sources: Sequence[str] | None = None,
              roots: dict[str, str | os.PathLike] | None = None,
              soundfonts: dict[str, str | os.PathLike] | None = None, stempeg: bool | None = None,
              progress: bool = False) -> dict:
    """Build the out-of-domain test set (see the module doc) into ``out_dir``.

    Args:
        out_dir: output folder; a previous OOD build there is replaced.
        seed: every random draw (plans, melodies, music, effects).
        n_items: items from the real-voice pools (a multiple of 9 balances scenarios x SNRs;
            of 27, also x soundfonts).
        sources, roots: real-voice sources and their folders (:func:`real_voice_items`).
        soundfonts: soundfont name (``timgm6mb``, ``csound-gmbank``, ``opl3-fm``) -> file override.
        stempeg: add the stempeg MUSDB18 excerpt (None: when ``stempeg`` is installed; True:
            required).
        progress: log one line per group of items.

    Returns:
        The summary (also ``out_dir/summary.json``).

    Raises:
        CorpusError: a soundfont or real-voice source is missing (names the package), or the
            pools are too small.
    """
    t0 = time.time()
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    out_dir = Path(out_dir)
    fonts = resolve_soundfonts(soundfonts)
    st_path = _stempeg_path() if stempeg is not False else None
    if stempeg and st_path is None:
        raise CorpusError("stempeg's example stems not found: pip install stempeg==0.2.6 (or .[data])")
    missing: dict[str, str] = {}
    voices = real_voice_items(sources, roots=roots, missing=missing)
    pools = _VocalPools(voices, seed)
    if not pools.speech or not pools.singing:
        raise CorpusError(f"too few real recordings: {len(pools.speech)} for speech, {len(pools.singing)} for singing")
    _prepare_out(out_dir)
    durs = {"speech": pools.durations("speech"), "singing": pools.durations("singing")}
    plan_rng = _rng(seed, "plan")
    cycles = {v: SourceCycle(len(durs[v]), _rng(seed, "cycle", v)) for v in durs}

    plans: list[ItemPlan] = []
    for i in range(n_items):
        scenario = SCENARIOS[i % 3]
        duration, tracks = _plan(plan_rng, i, scenario, cycles, durs)
        sp_snr, si_snr = _snrs(i)
        plans.append(ItemPlan(
            id=f"ood-{i:04d}-{scenario}", split=SPLIT, scenario=scenario, duration_s=duration,
            speech=tuple(tracks["speech"]), singing=tuple(tracks["singing"]), music=i // 3, music_offset_s=0.0,
            speech_snr_db=sp_snr if tracks["speech"] else None, singing_snr_db=si_snr if tracks["singing"] else None,
            peak=round(float(plan_rng.uniform(0.3, 0.9)), 3)))
    # groups of three items share a music piece, each on its own stretch of it
    gap = 0.5
    groups: dict[int, list[int]] = {}
    for k, p in enumerate(plans):
        groups.setdefault(p.music, []).append(k)
    items: list[ManifestItem] = []
    with tempfile.TemporaryDirectory(prefix="ood_", dir=out_dir) as tmp:
        for g, members in groups.items():
            offsets, t = [], 0.0
            for k in members:
                offsets.append(round(t, 4))
                t += plans[k].duration_s + gap
            music = _music_piece(seed, g, t + 0.5, fonts, Path(tmp))
            for k, off in zip(members, offsets):
                p = plans[k]
                plan = replace(p, music_offset_s=off)
                r = render_item(plan, pools.speech_source, pools.singing_source, lambda _m: music)
                items.append(_with_sources(write_item(r, out_dir, f"mixtures/{p.id}"), plan, pools))
            if progress:
                print(f"ood: music group {g + 1}/{len(groups)} done ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    if st_path is not None:
        for r in _stempeg_items(st_path):
            it = write_item(r, out_dir, f"mixtures/{r.plan.id}")
            items.append(replace(it, extra={**it.extra, "singing_text_known": False,
                                            "singing_sources": ["stempeg:" + STEMPEG_FILE],
                                            "source_package": "stempeg (PyPI, MIT): its MUSDB18 excerpt"}))
    write_manifest(out_dir / "test.jsonl", items)
    write_manifest(out_dir / "test_transcribed.jsonl", [i for i in items if i.extra.get("singing_text_known", True)])
    summary = _summary(items, pools, voices, fonts, missing, seed, n_items, st_path, time.time() - t0)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return summary


def _with_sources(it: ManifestItem, plan: ItemPlan, pools: _VocalPools) -> ManifestItem:
    extra = dict(it.extra)
    extra["speech_sources"] = [pools.speech[pl.source][0].id for pl in plan.speech]
    extra["singing_sources"] = [pools.singing[pl.source].voice.id for pl in plan.singing]
    extra["singing_melodies"] = [{"id": pools.singing[pl.source].voice.id, "tempo_bpm": round(pools.singing[pl.source].tempo, 3),
                                  "key_midi": pools.singing[pl.source].key_midi,
                                  "speaker_f0_hz": round(pools.singing[pl.source].f0, 1)} for pl in plan.singing]
    # where each recording sits in the item (utterance-level activity, no word timings)
    extra["speech_segments"] = [[pools.speech[pl.source][0].id, pl.offset_s,
                                 round(min(plan.duration_s, pl.offset_s + len(pools.speech[pl.source][1]) / SAMPLE_RATE), 4)]
                                for pl in plan.speech]
    extra["singing_segments"] = [[pools.singing[pl.source].voice.id, pl.offset_s,
                                  round(min(plan.duration_s, pl.offset_s + len(pools.singing_source(pl.source).audio) / SAMPLE_RATE), 4)]
                                 for pl in plan.singing]
    extra["music_offset_s"] = plan.music_offset_s
    return replace(it, extra=extra)


def _summary(items, pools, voices, fonts, missing, seed, n_items, st_path, seconds) -> dict:
    counts: dict[str, dict[str, int]] = {}
    for it in items:
        sc = it.extra["scenario"]
        for v in ("speech", "singing"):
            b = it.extra.get(f"{v}_snr_bucket")
            if b is not None:
                key = f"{v}_{b:+d}"
                counts.setdefault(sc, {})[key] = counts.setdefault(sc, {}).get(key, 0) + 1
    per_source: dict[str, dict] = {}
    for v, x in pools.speech:
        s = per_source.setdefault(v.source, {"package": VOICE_SOURCES[v.source].package, "speech_utterances": 0,
                                             "singing_utterances": 0, "speech_seconds": 0.0})
        s["speech_utterances"] += 1
        s["speech_seconds"] = round(s["speech_seconds"] + len(x) / SAMPLE_RATE, 3)
    for s_ in pools.singing:
        s = per_source.setdefault(s_.voice.source, {"package": VOICE_SOURCES[s_.voice.source].package,
                                                    "speech_utterances": 0, "singing_utterances": 0, "speech_seconds": 0.0})
        s["singing_utterances"] += 1
    used = {v: set() for v in ("speech", "singing")}
    for it in items:
        for v in used:
            used[v].update(it.extra.get(f"{v}_sources", []))
    total_s = sum(it.extra["duration_s"] for it in items)
    fonts_used: dict[str, int] = {}
    reverb = 0
    for it in items:
        m = it.extra.get("music_meta") or {}
        if "soundfont" in m:
            fonts_used[m["soundfont"]] = fonts_used.get(m["soundfont"], 0) + 1
            reverb += bool(m.get("effects", {}).get("effect"))
    return {
        "format": FORMAT, "seed": seed, "n_items_requested": n_items, "items": len(items),
        "total_seconds": round(total_s, 3), "total_hours": round(total_s / 3600, 4),
        "items_by_scenario": {sc: sum(it.extra["scenario"] == sc for it in items) for sc in SCENARIOS},
        "snr_buckets_by_scenario": counts,
        "voice_sources": per_source, "missing_voice_sources": missing, "pool_skipped": pools.skipped,
        "utterances_used": {v: len(s) for v, s in used.items()},
        "soundfonts": {f.name: {"file": str(p), "package": f.package, "licence": f.licence,
                                "items": fonts_used.get(f.name, 0)} for f, p in fonts},
        "items_with_reverb": reverb,
        "sample_layers": "sonic-pi-samples, test split only",
        "stempeg": str(st_path) if st_path else None,
        "manifests": {"all": "test.jsonl", "transcribed": "test_transcribed.jsonl"},
        "build_seconds": round(seconds, 1),
    }


def format_summary(summary: dict, out_dir) -> str:
    """Plain-text lines of a :func:`build_ood` summary (the command's output)."""
    lines = [f"{summary['items']} items, {summary['total_seconds']:.1f} s ({summary['total_hours']:.3f} h) in {out_dir} "
             f"built in {summary['build_seconds']:.0f} s"]
    for sc, n in summary["items_by_scenario"].items():
        b = summary["snr_buckets_by_scenario"].get(sc, {})
        lines.append(f"  {sc:8s} {n:4d} items  SNR buckets: " + ", ".join(f"{k} {v}" for k, v in sorted(b.items())))
    for name, s in summary["voice_sources"].items():
        lines.append(f"  voices {name:10s} speech {s['speech_utterances']:4d}  sung {s['singing_utterances']:4d}  ({s['package']})")
    for name, f in summary["soundfonts"].items():
        lines.append(f"  soundfont {name}: {f['items']} items ({f['file']}, {f['package']})")
    lines.append(f"  reverb on {summary['items_with_reverb']} items; stempeg excerpt: {summary['stempeg'] or 'not installed'}")
    for name, why in summary["missing_voice_sources"].items():
        lines.append(f"  skipped voice source {name}: {why}")
    return "\n".join(lines)
