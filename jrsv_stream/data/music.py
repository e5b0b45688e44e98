"""Synthetic backing music (the corpus's music stem): MIDI arrangements + recorded loops.

A piece is an arrangement in a random style (pop, rock, ballad, jazz, electronic, funk,
hip-hop, latin, country, reggae, ambient, orchestral): tempo, key/mode, 4/4 or 3/4, a chord
progression in sections, drums on the GM drum channel, a bass line, a sustained or rhythmic
harmony "bed" that never stops, optional arpeggios and an instrumental lead melody. The
MIDI is rendered with the fluidsynth CLI and the FluidR3 GM soundfont. Real recordings
from Debian's ``sonic-pi-samples`` are layered on top with some probability:

* rhythmic loops (``loop_*``) are tempo-matched (the song takes the loop's tempo, the loop
  is resampled by at most a few per cent) and tiled on the bar grid;
* drum hits (``bd_*``, ``sn_*``, ``drum_*``, ``elec_*``, ``tabla_*``...) are sequenced on the
  song's drum pattern, replacing or doubling the GM kit;
* bass one-shots (``bass_*_c``...) play the bass line, pitch-shifted to each note;
* pitched phrases and ambient textures (``guit_em9``, ``ambi_drone``...) are shifted to
  the chord root / key and tiled or retriggered;
* effects (rolls, swooshes, impacts, scratches) mark section boundaries.

Some pieces use samples only (``kind == "loop"``). Vocal-like material never appears:
no GM choir/voice programs, no ``ambi_choir``, ``bass_voxy``, robot/burp/crow samples.

Everything is deterministic for ``(seed, duration_s, split)``; the only state is a
per-process cache of decoded samples, which is fork-safe. This module never calls torch:
``jrsv_stream.audio.io.resample`` (torchaudio) hangs in a fork-started worker once the
parent has run a torch op with more than one intra-op thread, so samples are decoded
with soundfile and resampled here with numpy (FFT resampling).

The code is split by what it does: :mod:`.music_samples` (recorded samples: roles, splits,
decoding, resampling), :mod:`.music_styles` (music theory and styles),
:mod:`.music_compose` (the MIDI arrangement), :mod:`.music_render` (MIDI rendering and
the sample layers) and this module (the generator: mixing the layers and mastering).
"""

from __future__ import annotations

import math
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pretty_midi

from jrsv_stream import SAMPLE_RATE
from jrsv_stream.data.music_compose import _arrange, _clip_song, _Song
from jrsv_stream.data.music_render import SOUNDFONT, _kit_from_events, _render_midi, _rms, _SampleLayers, _to_midi
from jrsv_stream.data.music_samples import (SAMPLES_DIR, SPLIT_FRACTIONS, SPLITS, MusicError, _load_sample,
                                            _pitch_class, _sample_role, list_loops)
from jrsv_stream.data.music_styles import DRUM_ROLE, EXCLUDED_PROGRAMS, NOTE_NAMES, STYLES, _pick

__all__ = ["EXCLUDED_PROGRAMS", "PEAK", "RMS_FLOOR", "SAMPLES_DIR", "SOUNDFONT", "SPLITS", "SPLIT_FRACTIONS", "STYLES",
           "MusicError", "MusicPiece", "list_loops", "synth_music"]

PEAK = 0.5
#: the generator guarantees this RMS (at peak 0.5) in every 0.5 s window
RMS_FLOOR = 0.02


@dataclass(frozen=True)
class MusicPiece:
    """A generated piece of backing music.

    Attributes:
        audio: (T,) float32 mono at the requested rate, T == round(duration_s * rate),
            peak exactly 0.5, RMS >= ``RMS_FLOOR`` in every 0.5 s window.
        meta: JSON-serializable description: seed, tempo_bpm, key, meter, instruments
            (GM program names), drums, loops (sample file stems), kind, style, split.
    """

    audio: np.ndarray
    meta: dict

# --------------------------------------------------------------------------------------
# The generator
# --------------------------------------------------------------------------------------


def _split_code(split: str) -> int:
    return zlib.crc32(split.encode())


def _piece_kind(seed: int, split: str, have_loops: bool = True) -> str:
    """First draw of a piece: "midi", "midi+loop" or "loop" (cheap; used by tests)."""
    if not have_loops:
        return "midi"
    u = np.random.default_rng([int(seed) & 0xFFFFFFFFFFFF, _split_code(split), 0]).random()
    return "midi" if u < 0.45 else "midi+loop" if u < 0.9 else "loop"


def _window_rms(x: np.ndarray, sr: int, win_s: float = 0.5, hop_s: float = 0.125) -> np.ndarray:
    win, hop = int(win_s * sr), int(hop_s * sr)
    if len(x) <= win:
        return np.array([_rms(x)])
    c = np.concatenate([[0.0], np.cumsum(np.square(x, dtype=np.float64))])
    starts = np.arange(0, len(x) - win + 1, hop)
    if starts[-1] != len(x) - win:
        starts = np.append(starts, len(x) - win)
    return np.sqrt((c[starts + win] - c[starts]) / win)


def _master(x: np.ndarray, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Peak to 0.5 after optional soft saturation; lift any window below the RMS floor."""
    x = np.asarray(x, dtype=np.float64)
    peak = float(np.max(np.abs(x)))
    if peak <= 0:
        return x.astype(np.float32)
    x = x / peak
    if rng.random() < 0.75:
        # bus limiter, as in mastered mixes: put the 99.9th percentile of |x| at ``level``
        # and bend everything above the knee smoothly under 1 (rare transients get tamed)
        level = float(rng.uniform(0.6, 0.95))
        q = float(np.partition(np.abs(x), int(0.999 * (len(x) - 1)))[int(0.999 * (len(x) - 1))])
        if q > 0:
            x = x * (level / q)
            knee = 0.6
            a = np.abs(x)
            over = a > knee
            a[over] = knee + (1 - knee) * np.tanh((a[over] - knee) / (1 - knee))
            x = np.sign(x) * a
    x = PEAK * x / float(np.max(np.abs(x)))
    for _ in range(4):
        w = _window_rms(x, sr)
        if w.min() >= RMS_FLOOR * 1.05:
            break
        # smooth gain curve lifting quiet stretches (at most +18 dB)
        hop = int(0.125 * sr)
        need = np.clip(RMS_FLOOR * 1.3 / np.maximum(w, 1e-9), 1.0, 8.0)
        centers = np.minimum(np.arange(len(w)) * hop + int(0.25 * sr), len(x) - 1)
        g = np.interp(np.arange(len(x)), centers, need)
        x = x * g
        x = PEAK * x / float(np.max(np.abs(x)))
    return x.astype(np.float32)


def synth_music(seed: int, duration_s: float, split: str = "train",
                workdir: str | Path | None = None, sample_rate: int = SAMPLE_RATE,
                soundfont: str | Path | None = None) -> MusicPiece:
    """Generate ``duration_s`` seconds of backing music; deterministic for (seed, duration, split).

    Args:
        seed: any integer.
        duration_s: length in seconds (T = round(duration_s * sample_rate)).
        split: "train", "valid" or "test": which recorded samples may be used (disjoint).
        workdir: where the temporary MIDI/WAV go (a temp dir inside it, removed after).
        sample_rate: output rate (render and samples are produced at this rate).
        soundfont: the GM soundfont (.sf2 / .sf3) fluidsynth renders the MIDI with; default
            :data:`SOUNDFONT` (FluidR3 GM, the corpus's). The composition and every random
            draw are the same whatever the soundfont: only the instrument recordings change.
            ``meta`` does not name it (the caller knows what it passed).

    Raises:
        MusicError: fluidsynth or the soundfont is missing, or rendering failed.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    sr = int(sample_rate)
    n_out = int(round(duration_s * sr))
    if n_out <= 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    pool = list_loops(split)
    kind = _piece_kind(seed, split, have_loops=bool(pool))
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFFFFFF, _split_code(split), 1])
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="music_", dir=workdir) as tmp:
        for attempt_kind in (kind, "midi+loop", "midi"):
            if attempt_kind != "midi" and not pool:
                continue
            audio, meta = _generate(rng, attempt_kind, duration_s, n_out, sr, pool, Path(tmp), soundfont)
            if _window_rms(audio, sr).min() >= RMS_FLOOR:
                break
    meta.update(seed=int(seed), split=split)
    return MusicPiece(audio=audio, meta=meta)


def _generate(rng, kind, duration_s, n_out, sr, pool, tmp, soundfont=None):
    """One attempt at a piece of ``kind``; returns (audio, meta)."""
    layers_rng = np.random.default_rng(rng.integers(1 << 62))
    layers = _SampleLayers(layers_rng, pool, 0, sr)

    # Tempo: a rhythmic loop sets the song's tempo.
    rhythm_loop = None
    bpm = None
    want_loop = kind == "loop" or (kind == "midi+loop" and rng.random() < 0.55)
    if want_loop and layers.has("loop"):
        rhythm_loop = layers.pick("loop")
        bpm, _, _ = layers.loop_tempo(rhythm_loop)

    # The arrangement covers duration + 1 s + 1 bar; the piece starts ``off`` (a quarter
    # to a whole bar) into it, inside the music rather than in the render's attack.
    total_s = duration_s + 1.0
    midi_drums = None  # the style decides
    if kind == "loop":
        midi_drums = True  # its events can drive recorded hits
    elif rhythm_loop is not None:
        midi_drums = bool(rng.random() < 0.5)
    song = _arrange(rng, total_s, bpm=bpm, drums=midi_drums)
    off_s = float(rng.uniform(0.25, 1.0)) * song.bar_s
    total_n = int(math.ceil((off_s + duration_s) * sr)) + 1
    song = _clip_song(song, off_s + duration_s + 0.05)
    layers.n = total_n

    mix = np.zeros(total_n, dtype=np.float32)
    ref = 0.0
    instruments: list[str] = []
    drums_used = False

    # Sample decisions first (they may replace MIDI parts).
    kit_roles: list[str] = []
    kit_p = (0.4 if rhythm_loop is not None else 0.9) if kind == "loop" else 0.45
    if kind != "midi" and song.drum_events and rng.random() < kit_p:
        kit_roles = [r for r in ("kick", "snare", "hat", "crash", "tom", "perc")
                     if layers.has(r) and any(DRUM_ROLE.get(n, "perc") == r
                                              for _, n, _ in song.drum_events)
                     and rng.random() < (0.85 if r in ("kick", "snare") else 0.5)]
    replace_kit = bool(kit_roles) and (kind == "loop" or rng.random() < 0.6)
    bass_sample = None
    if kind != "midi" and "bass" in song.parts and layers.has("bass") and rng.random() < (
            0.7 if kind == "loop" else 0.3):
        bass_sample = layers.pick("bass")
    tonal = None
    if kind != "midi" and rng.random() < (0.8 if kind == "loop" else 0.4):
        roles = [r for r in ("texture", "phrase") if layers.has(r)]
        if roles:
            tonal = layers.pick(_pick(rng, roles))
    use_fx = kind != "midi" and layers.has("fx_rise") and rng.random() < 0.3
    use_fx_hit = kind != "midi" and layers.has("fx_hit") and rng.random() < 0.3
    if kind != "midi" and not (rhythm_loop or kit_roles or bass_sample or tonal or use_fx
                               or use_fx_hit):
        # a "midi+loop" piece always has at least one recorded layer
        kit_roles = [r for r in ("kick", "snare") if layers.has(r) and any(
            DRUM_ROLE.get(n) == r for _, n, _ in song.drum_events)]
        if not kit_roles:
            roles = [r for r in ("texture", "phrase") if layers.has(r)]
            tonal = layers.pick(_pick(rng, roles)) if roles else None

    # MIDI part
    if kind != "loop":
        parts = dict(song.parts)
        if bass_sample is not None:
            parts.pop("bass", None)
        render_song = song
        if replace_kit:
            kept = [e for e in song.drum_events if DRUM_ROLE.get(e[1], "perc") not in kit_roles]
            render_song = _Song(**{**song.__dict__, "drum_events": kept, "parts": parts})
        else:
            render_song = _Song(**{**song.__dict__, "parts": parts})
        midi = _render_midi(_to_midi(render_song, rng, end_s=total_n / sr + 0.05), total_n, sr,
                            tmp, soundfont)
        mix += midi
        ref = _rms(midi[int(off_s * sr):])
        instruments = [pretty_midi.program_to_instrument_name(p["program"])
                       for p in parts.values()]
        drums_used = bool(render_song.drum_events)

    # Sample parts, each scaled relative to the MIDI level (or a nominal level)
    ref = ref if ref > 0 else 0.1

    def layer(x: np.ndarray, db_lo: float, db_hi: float):
        r = _rms(x[int(off_s * sr):])
        if r > 0:
            mix[:] += x * (ref / r) * 10 ** (rng.uniform(db_lo, db_hi) / 20)

    loop_only = kind == "loop"
    if rhythm_loop is not None:
        layer(layers.loop(rhythm_loop, song.bpm, song.bar_s), *((-4.0, 2.0) if loop_only
                                                                else (-9.0, -1.0)))
        drums_used = True
        if rng.random() < 0.3 and len(layers.by_role.get("loop", [])) > 1:
            second = layers.pick("loop")
            layer(layers.loop(second, song.bpm, song.bar_s), -12.0, -4.0)
    if kit_roles:
        kit = _kit_from_events(layers, song, kit_roles)
        layer(kit, *((-3.0, 1.0) if (replace_kit or loop_only) else (-10.0, -4.0)))
        drums_used = True
    if bass_sample is not None:
        root = _pitch_class(bass_sample, sr)
        ev = [(t0, t1 - t0, p % 12, (v / 100.0)) for t0, t1, p, v in song.parts["bass"]["notes"]]
        layer(layers.retrigger(bass_sample, ev, root, fade_s=0.02), -5.0, 0.0)
    if tonal is not None:
        if _sample_role(tonal.stem) == "texture":
            x = layers.texture(tonal, song.tonic)
        else:
            every = int(_pick(rng, [1, 2])) if song.chords[0][1] < 2 * song.beats_per_bar else 1
            ev = [(beat * song.spb, None, root, 1.0)
                  for i, (beat, dur, root, pcs) in enumerate(song.chords) if i % every == 0]
            ev = [(t, (ev[i + 1][0] - t) if i + 1 < len(ev) else None, pc, g)
                  for i, (t, _, pc, g) in enumerate(ev)]
            x = layers.retrigger(tonal, ev, _pitch_class(tonal, sr), fade_s=0.08)
        layer(x, *((-4.0, 0.0) if loop_only else (-16.0, -6.0)))
    if use_fx or use_fx_hit:
        ev_rise, ev_hit = [], []
        for start_bar, _, _ in song.sections[1:]:
            t = start_bar * song.bar_s
            ev_hit.append((t, None, None, 1.0))
            ev_rise.append(t)
        if use_fx:
            p = layers.pick("fx_rise")
            length = len(_load_sample(p, sr)) / sr
            layer(layers.retrigger(p, [(t - length, None, None, 1.0) for t in ev_rise], None,
                                   cut=False), -14.0, -6.0)
        if use_fx_hit:
            layer(layers.retrigger(layers.pick("fx_hit"), ev_hit, None, cut=False), -14.0, -6.0)

    audio = _master(mix[int(round(off_s * sr)): int(round(off_s * sr)) + n_out], rng, sr)
    if len(audio) < n_out:
        audio = np.concatenate([audio, np.zeros(n_out - len(audio), np.float32)])
    meta = {
        "tempo_bpm": round(float(song.bpm), 3),
        "key": f"{NOTE_NAMES[song.tonic]} {song.mode}",
        "meter": f"{song.beats_per_bar}/4",
        "instruments": instruments,
        "drums": bool(drums_used),
        "loops": list(layers.used),
        "kind": kind,
        "style": song.style,
    }
    return audio, meta
