"""Rendering of a music-stem piece: the arrangement to MIDI and through the fluidsynth CLI
(FluidR3 GM soundfont by default; :func:`_render_midi` takes another one, e.g. the
out-of-domain set's TimGM6mb / csound GM / OPL-3 FM banks), and the recorded-sample layers (loops,
kits, bass one-shots, phrases, effects) on top of it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pretty_midi

from jrsv_stream.data.music_compose import _Song
from jrsv_stream.data.music_samples import (MusicError, _load_sample, _loop_beats, _pitch_class, _read_mono, _sample_at,
                                            _sample_role, _shift_to)
from jrsv_stream.data.music_styles import DRUM_ROLE, _pick

SOUNDFONT = Path(os.environ.get("JRSV_SOUNDFONT", "/usr/share/sounds/sf2/FluidR3_GM.sf2"))


def _to_midi(song: _Song, rng: np.random.Generator, end_s: float) -> pretty_midi.PrettyMIDI:
    """MIDI for ``song``; a no-op event at ``end_s`` makes fluidsynth render that long."""
    pm = pretty_midi.PrettyMIDI(resolution=960, initial_tempo=song.bpm)
    pm.time_signature_changes.append(pretty_midi.TimeSignature(song.beats_per_bar, 4, 0.0))
    reverb, chorus = int(rng.integers(10, 90)), int(rng.integers(0, 50))
    for name, part in song.parts.items():
        inst = pretty_midi.Instrument(program=part["program"], name=name)
        cc = [(7, part["volume"]), (10, int(rng.integers(24, 104))), (91, reverb),
              (93, chorus if name != "bass" else 0)]  # volume, pan, reverb, chorus
        inst.control_changes += [pretty_midi.ControlChange(n, v, 0.0) for n, v in cc]
        for t0, t1, p, v in part["notes"]:
            if t1 > t0 and 0 <= p <= 127:
                inst.notes.append(pretty_midi.Note(int(v), int(p), float(t0), float(t1)))
        inst.control_changes.append(pretty_midi.ControlChange(7, part["volume"], end_s))
        pm.instruments.append(inst)
    if song.drum_events:
        kit = pretty_midi.Instrument(program=song.drum_kit or 0, is_drum=True, name="drums")
        kit.control_changes += [pretty_midi.ControlChange(7, int(rng.integers(95, 120)), 0.0),
                                pretty_midi.ControlChange(91, reverb // 2, 0.0)]
        for t, note, v in song.drum_events:
            kit.notes.append(pretty_midi.Note(int(v), int(note), float(t), float(t) + 0.1))
        pm.instruments.append(kit)
    return pm


def _render_midi(pm: pretty_midi.PrettyMIDI, n_samples: int, sr: int, tmp: Path,
                 soundfont: str | os.PathLike | None = None, dry: bool = False) -> np.ndarray:
    """Render with the fluidsynth CLI; (n_samples,) float32 mono (zero-padded).

    ``soundfont``: an .sf2 / .sf3 file (default :data:`SOUNDFONT`, FluidR3 GM); ``dry``:
    fluidsynth's reverb and chorus off."""
    exe = shutil.which("fluidsynth")
    font = SOUNDFONT if soundfont is None else Path(soundfont)
    if exe is None or not font.is_file():
        package = "fluid-soundfont-gm" if font == SOUNDFONT else "the package that ships it"
        raise MusicError(f"music synthesis needs the fluidsynth CLI and {font} "
                         f"(Debian: apt-get install fluidsynth; {font.name}: {package})")
    mid, wav = tmp / "song.mid", tmp / "song.wav"
    pm.write(str(mid))
    # dynamic sample loading: only the presets used are read from the 141 MB soundfont;
    # 64 voices: old release tails are stolen first, halving the cost of harp/mallet parts
    cmd = [exe, "-ni", "-q", "-g", "0.6", "-r", str(sr), "-O", "float", "-T", "wav",
           "-o", "synth.dynamic-sample-loading=1", "-o", "synth.polyphony=64",
           *(["-R", "0", "-C", "0"] if dry else []), "-F", str(wav), str(font), str(mid)]
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL)
    if res.returncode != 0 or not wav.is_file():
        raise MusicError(f"fluidsynth failed ({res.returncode}): {res.stderr.decode()[-500:]}")
    x, rate = _read_mono(wav)
    if rate != sr:
        raise MusicError(f"fluidsynth wrote {rate} Hz, asked for {sr} Hz")
    out = np.zeros(n_samples, dtype=np.float32)
    n = min(n_samples, len(x))
    out[:n] = x[:n]
    return out


# --------------------------------------------------------------------------------------
# Sample layers
# --------------------------------------------------------------------------------------


def _add(out: np.ndarray, x: np.ndarray, start: int, gain: float, cut: int | None = None,
         fade: int = 64) -> None:
    """Overlap-add ``gain * x`` at ``start``; optionally cut to ``cut`` samples with a fade."""
    if cut is not None and cut < len(x):
        x = x[: max(cut, 1)].copy()
        f = min(fade, len(x))
        x[-f:] *= np.linspace(1.0, 0.0, f, dtype=np.float32)
    a, b = max(start, 0), min(start + len(x), len(out))
    if b > a:
        out[a:b] += gain * x[a - start: b - start]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


class _SampleLayers:
    """Builds the recorded-sample layers of one piece on the song's timeline."""

    def __init__(self, rng: np.random.Generator, pool: list[Path], n: int, sr: int):
        self.rng, self.sr, self.n = rng, sr, n
        self.by_role: dict[str, list[Path]] = {}
        for p in pool:
            self.by_role.setdefault(_sample_role(p.stem), []).append(p)
        self.used: list[str] = []

    def has(self, role: str) -> bool:
        return bool(self.by_role.get(role))

    def pick(self, role: str) -> Path:
        p = _pick(self.rng, self.by_role[role])
        if p.stem not in self.used:
            self.used.append(p.stem)
        return p

    def loop_tempo(self, path: Path, lo: float = 70.0, hi: float = 160.0):
        """(bpm, ratio, n_beats) for a rhythmic loop: its native tempo nudged by <= 8 %."""
        x = _load_sample(path, self.sr)
        n_beats, native = _loop_beats(len(x) / self.sr)
        ratio = float(np.clip(self.rng.uniform(0.92, 1.08), lo / native, hi / native))
        k = int(round(ratio * 160))
        return native * k / 160.0, k / 160.0, n_beats

    def loop(self, path: Path, bpm: float, bar_s: float, origin_s: float = 0.0) -> np.ndarray:
        """Tile a rhythmic loop phase-locked to the bar grid at tempo ``bpm``."""
        out = np.zeros(self.n, dtype=np.float32)
        x0 = _load_sample(path, self.sr)
        n_beats, native = _loop_beats(len(x0) / self.sr)
        while bpm / native > 1.42:  # the loop spans twice as many beats of this song
            n_beats, native = n_beats * 2, native * 2
        while bpm / native < 0.7:
            n_beats, native = n_beats / 2, native / 2
        ratio = bpm / native
        y = _sample_at(path, self.sr, ratio=ratio)
        period = n_beats * 60.0 / bpm
        # start on a bar line (loops of 2 beats in 3/4 simply run across bar lines)
        k, t = 0, origin_s
        while t < self.n / self.sr:
            _add(out, y, int(round(t * self.sr)), 1.0, cut=int(round(period * self.sr)) + 32,
                 fade=32)
            k += 1
            t = origin_s + k * period
        return out

    def texture(self, path: Path, tonic: int) -> np.ndarray:
        """Tile an ambient texture, shifted to the key, with 0.1-0.3 s crossfades."""
        out = np.zeros(self.n, dtype=np.float32)
        y = _sample_at(path, self.sr, _shift_to(_pitch_class(path, self.sr), tonic))
        xf = max(int(min(0.3 * self.sr, len(y) // 4)), 1)
        ramp = np.linspace(0.0, 1.0, xf, dtype=np.float32)
        seg = y.copy()
        seg[:xf] *= ramp
        seg[-xf:] *= ramp[::-1]
        hop = max(len(y) - xf, 1)
        start = -int(self.rng.integers(0, hop))
        while start < self.n:
            _add(out, seg, start, 1.0)
            start += hop
        return out

    def retrigger(self, path: Path, events, root_pc: int | None, cut: bool = True,
                  fade_s: float = 0.03) -> np.ndarray:
        """One-shots at (time_s, length_s or None, target pitch class or None, gain)."""
        out = np.zeros(self.n, dtype=np.float32)
        fade = max(int(fade_s * self.sr), 8)
        for t, length, pc, g in events:
            shift = _shift_to(root_pc, pc) if (root_pc is not None and pc is not None) else 0
            y = _sample_at(path, self.sr, shift)
            c = int(length * self.sr) if (cut and length is not None) else None
            _add(out, y, int(round(t * self.sr)), g, cut=c, fade=fade)
        return out


def _kit_from_events(layers: _SampleLayers, song: _Song, roles: list[str]):
    """Sequence recorded drum hits on the song's drum events for ``roles``."""
    out = np.zeros(layers.n, dtype=np.float32)
    for role in roles:
        path = layers.pick(role)
        ev = [(t, None, None, (v / 110.0) ** 1.5) for t, note, v in song.drum_events
              if DRUM_ROLE.get(note, "perc") == role]
        if role == "hat":  # a closed hat must choke: cut at the next hit
            ev = [(t, (ev[i + 1][0] - t) if i + 1 < len(ev) else None, None, g)
                  for i, (t, _, _, g) in enumerate(ev)]
        x = layers.retrigger(path, ev, None, cut=(role == "hat"), fade_s=0.01)
        r = _rms(x)
        if r > 0:
            out += x / r * {"kick": 1.0, "snare": 0.8, "hat": 0.35, "crash": 0.4,
                            "tom": 0.5}.get(role, 0.4)
    return out
