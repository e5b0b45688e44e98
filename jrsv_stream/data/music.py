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
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pretty_midi
import soundfile as sf

from jrsv_stream import SAMPLE_RATE

SAMPLES_DIR = Path(os.environ.get("JRSV_SONIC_PI_SAMPLES", "/usr/share/sonic-pi/samples"))
SOUNDFONT = Path(os.environ.get("JRSV_SOUNDFONT", "/usr/share/sounds/sf2/FluidR3_GM.sf2"))
PEAK = 0.5
#: the generator guarantees this RMS (at peak 0.5) in every 0.5 s window
RMS_FLOOR = 0.02
SPLIT_FRACTIONS = {"test": 0.15, "valid": 0.10}
SPLITS = ("train", "valid", "test")

#: GM programs that sound like a human voice (or are sound effects): never used
EXCLUDED_PROGRAMS = frozenset({52, 53, 54, 78, 85, 91, 94, *range(120, 128)})


class MusicError(RuntimeError):
    """The music generator cannot run (fluidsynth or the soundfont missing, render failed)."""


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
# Recorded samples (sonic-pi-samples): roles, splits, loading
# --------------------------------------------------------------------------------------

_ROLE_NAMES = {
    "loop": "loop_amen loop_amen_full loop_breakbeat loop_compus loop_electric "
    "loop_garzul loop_industrial loop_mehackit1 loop_mehackit2 loop_mika loop_perc1 "
    "loop_perc2 loop_safari loop_tabla loop_weirdo",
    "texture": "ambi_drone ambi_glass_hum ambi_glass_rub ambi_soft_buzz loop_drone_g_97",
    "phrase": "ambi_piano guit_em9 guit_e_fifths guit_e_slide guit_harmonics perc_bell "
    "perc_bell2 elec_chime",
    "bass": "bass_drop_c bass_hard_c bass_thick_c bass_trance_c bass_woodsy_c bass_dnb_f "
    "bass_hit_c glitch_bass_g",
    "kick": "bd_808 bd_ada bd_boom bd_fat bd_gas bd_haus bd_klub bd_mehackit bd_pure bd_sone "
    "bd_tek bd_zome bd_zum drum_bass_hard drum_bass_soft drum_heavy_kick elec_soft_kick "
    "elec_hollow_kick",
    "snare": "sn_dolf sn_dub sn_generic sn_zome drum_snare_hard drum_snare_soft elec_snare "
    "elec_lo_snare elec_mid_snare elec_hi_snare elec_filt_snare perc_snap perc_snap2",
    "hat": "drum_cymbal_closed drum_cymbal_pedal elec_tick elec_cymbal perc_swash",
    "crash": "drum_cymbal_hard drum_cymbal_open drum_cymbal_soft drum_splash_hard "
    "drum_splash_soft",
    "tom": "drum_tom_hi_hard drum_tom_hi_soft drum_tom_mid_hard drum_tom_mid_soft "
    "drum_tom_lo_hard drum_tom_lo_soft elec_fuzz_tom",
    "perc": "drum_cowbell elec_wood elec_triangle elec_bell elec_ping elec_plip elec_pop "
    "elec_twip elec_beep elec_blip elec_blip2 elec_blup elec_bong elec_flip elec_twang "
    "glitch_perc1 glitch_perc2 glitch_perc3 glitch_perc4 glitch_perc5 tabla_dhec tabla_ghe1 "
    "tabla_ghe2 tabla_ghe3 tabla_ghe4 tabla_ghe5 tabla_ghe6 tabla_ghe7 tabla_ghe8 tabla_ke1 "
    "tabla_ke2 tabla_ke3 tabla_na tabla_na_o tabla_na_s tabla_re tabla_tas1 tabla_tas2 "
    "tabla_tas3 tabla_te1 tabla_te2 tabla_te_m tabla_te_ne tabla_tun1 tabla_tun2 tabla_tun3",
    "fx_rise": "ambi_swoosh ambi_dark_woosh drum_roll misc_cineboom vinyl_rewind",
    "fx_hit": "perc_impact1 perc_impact2 perc_swoosh vinyl_backspin vinyl_scratch "
    "ambi_lunar_land",
}
_ROLE_OF = {stem: role for role, names in _ROLE_NAMES.items() for stem in names.split()}
#: deliberately unused: vocal-like, or noise rather than music (steam, a 3D printer...)
_EXCLUDED = frozenset(
    "ambi_choir ambi_haunted_hum bass_voxy_c bass_voxy_hit_c misc_burp misc_crow perc_door "
    "perc_till vinyl_hiss ambi_sauna loop_3d_printer".split())
_EXCLUDED_PREFIXES = ("mehackit_phone", "mehackit_robot", "glitch_robot")
_PREFIX_ROLES = (("loop_", "loop"), ("bd_", "kick"), ("sn_", "snare"))
_VOCAL_LIKE = re.compile(r"choir|vox|voice|vocal|robot|burp|crow|haunted")
#: split strata: samples are split within each group so every split gets some of each
_STRATUM = {"texture": "tonal", "phrase": "tonal", "hat": "cymbal", "crash": "cymbal",
            "fx_rise": "fx", "fx_hit": "fx"}
#: pitch class of pitched samples whose root is known from the name
_ROOT_PC = {"bass_drop_c": 0, "bass_hard_c": 0, "bass_thick_c": 0, "bass_trance_c": 0,
            "bass_woodsy_c": 0, "bass_hit_c": 0, "bass_dnb_f": 5, "glitch_bass_g": 7,
            "loop_drone_g_97": 7, "guit_em9": 4, "guit_e_fifths": 4, "guit_e_slide": 4}


def _sample_role(stem: str) -> str | None:
    """Role of a sample file stem, or None if it is not used as music."""
    if stem in _ROLE_OF:
        return _ROLE_OF[stem]
    if stem in _EXCLUDED or stem.startswith(_EXCLUDED_PREFIXES) or _VOCAL_LIKE.search(stem):
        return None
    for prefix, role in _PREFIX_ROLES:
        if stem.startswith(prefix):
            return role
    return None


def _family(stem: str) -> str:
    """Variants of one recording share a family (and thus a split): loop_amen_full ->
    loop_amen, tabla_ghe3 -> tabla_ghe, drum_tom_hi_soft -> drum_tom_hi."""
    return re.sub(r"(_full|_hard|_soft|_?\d+)$", "", stem)


def _stable_unit(text: str) -> float:
    """A stable hash of ``text`` in [0, 1) (independent of PYTHONHASHSEED)."""
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "big") / 2.0**64


def _usable_samples(folder: Path | None = None) -> dict[str, Path]:
    folder = SAMPLES_DIR if folder is None else Path(folder)
    if not folder.is_dir():
        return {}
    out = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in (".flac", ".wav", ".ogg") and _sample_role(p.stem) is not None:
            out[p.stem] = p
    return out


def _split_of_families(stems: list[str]) -> dict[str, str]:
    """family -> split. Families are ranked by a stable hash inside each stratum; the
    first ~15 % go to test, the next ~10 % to valid, the rest to train."""
    strata: dict[str, set[str]] = {}
    for s in stems:
        role = _sample_role(s)
        strata.setdefault(_STRATUM.get(role, role), set()).add(_family(s))
    out = {}
    for group, fams in strata.items():
        ranked = sorted(fams, key=lambda f: (_stable_unit("jrsv-music:" + f), f))
        n = len(ranked)
        n_test = max(1, round(SPLIT_FRACTIONS["test"] * n)) if n >= 3 else 0
        n_valid = max(1, round(SPLIT_FRACTIONS["valid"] * n)) if n >= 4 else 0
        for i, f in enumerate(ranked):
            out[f] = "test" if i < n_test else "valid" if i < n_test + n_valid else "train"
    return out


def list_loops(split: str) -> list[Path]:
    """Sonic-pi samples usable as music for ``split`` ("train", "valid" or "test").

    Loops, drum/percussion hits, bass one-shots, pitched phrases, ambient textures and
    effects; vocal-like and non-musical samples are left out. The split is fixed by a
    stable hash of each file's family name (variants such as ``loop_amen`` and
    ``loop_amen_full`` share a split), stratified by role: test gets ~15 %, valid ~10 %.
    Returns [] if the samples folder is missing.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    usable = _usable_samples()
    fam_split = _split_of_families(list(usable))
    return [p for s, p in usable.items() if fam_split[_family(s)] == split]


_RAW_CACHE: dict[str, tuple[np.ndarray, int]] = {}
_SAMPLE_CACHE: dict[tuple, np.ndarray] = {}
_PC_CACHE: dict[tuple, int] = {}


def _read_mono(path: Path) -> tuple[np.ndarray, int]:
    """(mono float32 samples, rate) read with soundfile (no torch; see module doc)."""
    try:
        x, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError variants
        raise MusicError(f"cannot read audio file {path}: {e}") from e
    x = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]
    if not np.all(np.isfinite(x)):
        raise MusicError(f"audio file {path} contains NaN or Inf samples")
    return np.ascontiguousarray(x, dtype=np.float32), int(rate)


def _fast_len(n: int) -> int:
    """Smallest 7-smooth integer >= n (a fast FFT size)."""
    while True:
        m = n
        for f in (2, 3, 5, 7):
            while m % f == 0:
                m //= f
        if m == 1:
            return n
        n += 1


def _resample_fft(x: np.ndarray, n_out: int) -> np.ndarray:
    """Band-limited resampling of ``x`` to ``n_out`` samples (rate ratio n_out/len(x)).

    FFT method with zero padding (no wrap-around) and a raised-cosine roll-off over the
    top 8 % of the kept band (less ringing than a brick wall). Deterministic, torch-free.
    """
    n = len(x)
    if n_out == n or n == 0:
        return np.asarray(x, dtype=np.float32)
    ratio = n_out / n
    n_in = _fast_len(n + max(256, n // 8))
    m = max(int(round(n_in * ratio)), 2)
    for _ in range(64):  # prefer an output length the FFT also handles fast
        if _fast_len(m) == m:
            break
        n_in = _fast_len(n_in + 1)
        m = max(int(round(n_in * ratio)), 2)
    pad = n_in - n
    spec = np.fft.rfft(np.concatenate([np.asarray(x, np.float64), np.zeros(pad)]))
    keep = min(len(spec), m // 2 + 1)
    out_spec = np.zeros(m // 2 + 1, dtype=np.complex128)
    out_spec[:keep] = spec[:keep]
    band = min(len(spec), m // 2 + 1)  # the lower of the two Nyquists, in bins
    w = max(int(0.08 * band), 1)
    lo = max(band - w, 0)
    out_spec[lo:band] *= 0.5 * (1 + np.cos(np.linspace(0.0, np.pi, band - lo)))
    y = np.fft.irfft(out_spec, m) * (m / n_in)
    return y[:n_out].astype(np.float32)


def _raw_sample(path: Path) -> tuple[np.ndarray, int]:
    key = str(path)
    if key not in _RAW_CACHE:
        x, rate = _read_mono(path)
        peak = float(np.max(np.abs(x))) if x.size else 0.0
        x = x / peak if peak > 0 else x
        x.setflags(write=False)
        _RAW_CACHE[key] = (x, rate)
    return _RAW_CACHE[key]


def _sample_at(path: Path, sr: int, semitones: float = 0.0, ratio: float | None = None):
    """Sample (peak 1) at rate ``sr``, played ``ratio`` times faster (or shifted by
    ``semitones``); the speed is quantized to k/160 (0.1 semitone). Cached per process."""
    r = 2.0 ** (semitones / 12.0) if ratio is None else ratio
    k = int(round(r * 160))
    key = (str(path), sr, k)
    y = _SAMPLE_CACHE.get(key)
    if y is None:
        x, rate = _raw_sample(path)
        y = _resample_fft(x, int(round(len(x) * sr / rate * 160 / k)))
        y.setflags(write=False)
        _SAMPLE_CACHE[key] = y
    return y


def _load_sample(path: Path, sr: int) -> np.ndarray:
    """Sample (peak 1) at rate ``sr``, unshifted."""
    return _sample_at(path, sr, ratio=1.0)


def _pitch_class(path: Path, sr: int) -> int:
    """Root pitch class of a pitched sample: from its name, else the strongest chroma bin."""
    if path.stem in _ROOT_PC:
        return _ROOT_PC[path.stem]
    key = (str(path), sr)
    if key not in _PC_CACHE:
        x = _load_sample(path, sr)[: 1 << 16]
        n = 1 << int(math.ceil(math.log2(max(len(x), 1024))))
        mag = np.abs(np.fft.rfft(x * np.hanning(len(x)), n)) ** 2
        f = np.fft.rfftfreq(n, 1.0 / sr)
        band = (f > 60) & (f < 2000)
        midi = 69 + 12 * np.log2(f[band] / 440.0)
        chroma = np.bincount(np.round(midi).astype(int) % 12, weights=mag[band], minlength=12)
        _PC_CACHE[key] = int(np.argmax(chroma))
    return _PC_CACHE[key]


def _shift_to(pc_from: int, pc_to: int) -> int:
    """Smallest semitone shift (-6..5) taking pitch class pc_from to pc_to."""
    return (pc_to - pc_from + 6) % 12 - 6


def _loop_beats(n_seconds: float) -> tuple[int, float]:
    """Beats in a loop and its native tempo: the power of two putting it in 80-160 BPM."""
    for n in (1, 2, 4, 8, 16, 32, 64):
        bpm = 60.0 * n / n_seconds
        if 80.0 <= bpm < 160.0:
            return n, bpm
    return 4, 240.0 / n_seconds


# --------------------------------------------------------------------------------------
# Music theory and styles
# --------------------------------------------------------------------------------------

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MODES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10),
         "dorian": (0, 2, 3, 5, 7, 9, 10), "mixolydian": (0, 2, 4, 5, 7, 9, 10)}
PROGRESSIONS = {  # scale degrees, 0-based
    "major": [[0, 4, 5, 3], [0, 5, 3, 4], [5, 3, 0, 4], [0, 3, 4, 3], [0, 3, 0, 4], [1, 4, 0, 0],
              [0, 5, 1, 4], [0, 2, 3, 4], [3, 0, 4, 5], [0, 4, 5, 2, 3, 0, 3, 4], [0, 3, 5, 4],
              [0, 0, 3, 4], [3, 4, 2, 5], [0, 1, 3, 4]],
    "minor": [[0, 5, 2, 6], [0, 3, 4, 0], [0, 6, 5, 6], [0, 5, 3, 4], [0, 3, 6, 2], [0, 2, 6, 3],
              [0, 6, 5, 4], [0, 3, 0, 4], [5, 6, 0, 0], [0, 0, 5, 6], [3, 4, 0, 0]],
    "dorian": [[0, 3], [0, 6, 3, 0], [0, 1, 0, 6], [0, 3, 0, 6], [0, 0, 3, 3]],
    "mixolydian": [[0, 6, 3, 0], [0, 6, 0, 3], [0, 3, 6, 0], [0, 0, 6, 3]],
}
BLUES = [0, 0, 0, 0, 3, 3, 0, 0, 4, 3, 0, 4]

# Drum patterns, one character per grid step: '.' rest, 'o' ghost, 'x' hit, 'X' accent.
# Voices: K kick, S snare, R rim/side stick, C clap, H closed hat, O open hat, P pedal hat,
# Y ride. 16 steps = 4/4 in 16ths, 12 steps = 4/4 in triplet 8ths ("T") or 3/4 in 16ths.
DRUM_NOTES = {"K": (36, 35), "S": (38, 40), "R": (37,), "C": (39,), "H": (42,), "O": (46,),
              "P": (44,), "Y": (51, 59)}
PATTERNS_44 = {
    "rock": {"K": "x.......x.x.....", "S": "....X.......X...", "H": "x.x.x.x.x.x.x.x."},
    "rock2": {"K": "x......xx.x.....", "S": "....X.......X...", "H": "x.x.x.x.x.x.x.x."},
    "pop16": {"K": "x.....x...x.....", "S": "....X.......X...", "H": "xoxoxoxoxoxoxoxo"},
    "halftime": {"K": "x.........x.....", "S": "........X.......", "H": "x.x.x.x.x.x.x.x."},
    "four_floor": {"K": "X...X...X...X...", "C": "....x.......x...", "O": "..x...x...x...x.",
                   "H": "x.x.x.x.x.x.x.x."},
    "disco": {"K": "X...X...X...X...", "S": "....X.......X...", "O": "..x...x...x...x.",
              "H": "xox.xox.xox.xox."},
    "boombap": {"K": "x......x..x.....", "S": "....X.......X...", "H": "x.x.x.x.x.x.x.xo"},
    "trap": {"K": "x......x..x...x.", "C": "........X.......", "H": "xxxxxxxxxxxxxxxx"},
    "funk": {"K": "x..x......x..x..", "S": "....X..o.o..X..o", "H": "xxxxxxxxxxxxxxxx"},
    "breakbeat": {"K": "x.........xx....", "S": "....X..o.o..X...", "H": "x.x.x.x.x.x.x.x."},
    "bossa": {"K": "x..xx..xx..xx..x", "R": "x..x..x...x..x..", "H": "xoxoxoxoxoxoxoxo"},
    "reggae": {"K": "........X.......", "R": "........X.......", "H": "x.x.x.x.x.x.x.x."},
    "train": {"K": "x.......x.......", "S": "ooooXoooooooXooo", "H": "....x.......x..."},
    "ballad": {"K": "x.........x.....", "R": "....x.......x...", "H": "x...x...x...x..."},
    "shuffle": {"K": "x.....x.....", "S": "...X.....X..", "H": "x.xx.xx.xx.x", "T": ""},
    "jazz": {"Y": "x..x.xx..x.x", "P": "...x.....x..", "K": "o.....o.....", "T": ""},
    "slow68": {"K": "x.....x.....", "S": "......X.....", "H": "xxxxxxxxxxxx", "T": ""},
}
PATTERNS_34 = {
    "waltz": {"K": "x...........", "S": "....x...x...", "H": "x.x.x.x.x.x."},
    "waltz_rock": {"K": "x.......x...", "S": "....X.......", "H": "x.x.x.x.x.x."},
    "jazz_waltz": {"Y": "x...x.xx..x.", "P": "....x...x...", "K": "o..........."},
    "ballad34": {"K": "x...........", "R": "....x...x...", "H": "x...x...x..."},
}
AUX_PERC = [  # (GM note, 16-step pattern)
    (54, "....x.......x..."), (54, "x.x.x.x.x.x.x.x."), (70, "xxxxxxxxxxxxxxxx"),
    (69, "x.x.x.x.x.x.x.x."), (56, "x...x...x...x..."), (63, "..x..xx...x..x.x"),
    (62, "x..x..x...x..x.."), (64, "......x.......x."), (60, "x.x..x.xx.x..x.x"),
    (75, "x..x..x...x.x..."), (76, "..x...x...x...x."), (81, "x...............")]
TOMS = (50, 48, 47, 45, 43, 41)
CRASHES = (49, 57)
DRUM_ROLE = {35: "kick", 36: "kick", 38: "snare", 40: "snare", 37: "snare", 39: "snare",
             42: "hat", 44: "hat", 46: "hat", 51: "hat", 59: "hat", 49: "crash", 57: "crash",
             41: "tom", 43: "tom", 45: "tom", 47: "tom", 48: "tom", 50: "tom"}

STYLES = {  # w: weight; m34: P(3/4); sev: P(7th chords); program pools per part
    "pop": dict(w=3.0, tempo=(80, 132), m34=0.1, drum_p=0.9,
                drums=["pop16", "rock", "halftime", "four_floor", "ballad"],
                kits=[0, 8, 16, 24], bass=[33, 34, 38, 35, 36],
                bass_pat=["eighths", "quarters", "syncop", "root5", "octave"],
                comp=[0, 1, 2, 4, 5, 24, 25, 27, 28],
                pad=[48, 49, 50, 51, 88, 89, 90, 92, 95, 16],
                arp=[0, 4, 5, 8, 9, 10, 11, 12, 25, 27, 46, 80, 81, 87, 98, 99, 100],
                lead=[73, 65, 66, 80, 81, 22, 56, 40, 71, 11], sev=0.2,
                modes={"major": 0.6, "minor": 0.3, "mixolydian": 0.05, "dorian": 0.05}),
    "rock": dict(w=2.0, tempo=(96, 160), m34=0.05, drum_p=0.97,
                 drums=["rock", "rock2", "halftime", "breakbeat"], kits=[0, 16, 8],
                 bass=[33, 34, 36], bass_pat=["eighths", "quarters", "octave"],
                 comp=[29, 30, 27, 25, 18, 16], pad=[48, 18, 19, 61, 50], arp=[27, 25, 26],
                 lead=[29, 30, 27, 81, 80, 65, 66], sev=0.05, power=0.6,
                 modes={"major": 0.4, "minor": 0.4, "mixolydian": 0.1, "dorian": 0.1}),
    "ballad": dict(w=2.0, tempo=(70, 96), m34=0.25, drum_p=0.7,
                   drums=["ballad", "halftime", "slow68"], kits=[0, 40, 8, 32],
                   bass=[32, 33, 35], bass_pat=["whole", "root5", "quarters"],
                   comp=[0, 1, 4, 24, 25, 46], pad=[48, 49, 89, 50, 44, 92, 16, 19],
                   arp=[0, 46, 24, 25, 8, 11, 45, 107], lead=[73, 40, 71, 68, 65, 75, 42, 60],
                   sev=0.3, modes={"major": 0.6, "minor": 0.4}),
    "jazz": dict(w=1.0, tempo=(90, 160), m34=0.2, drum_p=0.95, drums=["jazz", "shuffle"],
                 drums34=["jazz_waltz"], kits=[32, 40, 0], bass=[32, 33], bass_pat=["walking"],
                 comp=[0, 26, 4, 2, 11], pad=[16, 61, 48, 17], arp=[0, 26, 11],
                 lead=[65, 66, 56, 59, 73, 71, 64, 67, 11, 57], sev=0.9,
                 modes={"major": 0.6, "dorian": 0.4}),
    "electronic": dict(w=2.0, tempo=(110, 140), m34=0.0, drum_p=0.97,
                       drums=["four_floor", "disco", "breakbeat", "pop16", "trap"],
                       kits=[24, 25], bass=[38, 39, 87, 33, 81],
                       bass_pat=["octave", "syncop", "eighths", "kick"],
                       comp=[4, 5, 81, 90, 62, 63, 80],
                       pad=[88, 89, 90, 92, 93, 95, 50, 51, 99, 100],
                       arp=[80, 81, 87, 98, 99, 100, 8, 9, 10, 4, 5, 83],
                       lead=[80, 81, 82, 83, 84, 86, 87], sev=0.15,
                       modes={"minor": 0.6, "major": 0.25, "dorian": 0.15}),
    "funk": dict(w=1.0, tempo=(90, 118), m34=0.0, drum_p=1.0,
                 drums=["funk", "boombap", "pop16"], kits=[0, 24, 25, 8], bass=[36, 37, 33, 38],
                 bass_pat=["syncop", "kick", "octave"], comp=[7, 28, 27, 4, 16, 17],
                 pad=[61, 62, 16, 48], arp=[7, 27, 4], lead=[65, 66, 56, 61, 80, 22], sev=0.6,
                 swing=(0.0, 0.4), modes={"dorian": 0.4, "mixolydian": 0.3, "minor": 0.3}),
    "hiphop": dict(w=1.0, tempo=(70, 98), m34=0.0, drum_p=1.0,
                   drums=["boombap", "halftime", "trap"], kits=[25, 24, 0, 8],
                   bass=[38, 33, 39, 32], bass_pat=["kick", "whole", "syncop"],
                   comp=[4, 5, 0, 11, 12], pad=[89, 90, 48, 50, 92], arp=[4, 11, 12, 0, 46, 98],
                   lead=[73, 65, 80, 11, 22], sev=0.5, swing=(0.2, 0.7),
                   modes={"minor": 0.6, "dorian": 0.2, "major": 0.2}),
    "latin": dict(w=1.0, tempo=(100, 140), m34=0.0, drum_p=0.95, drums=["bossa"],
                  kits=[0, 32, 40], bass=[32, 33, 35], bass_pat=["root5", "syncop"],
                  comp=[24, 0, 26, 4], pad=[48, 21, 16], arp=[24, 46, 12],
                  lead=[73, 65, 56, 71, 21, 22], sev=0.6,
                  modes={"major": 0.5, "minor": 0.3, "dorian": 0.2}),
    "country": dict(w=1.0, tempo=(80, 140), m34=0.35, drum_p=0.85,
                    drums=["train", "rock", "ballad"], kits=[0, 40, 8], bass=[32, 33, 34],
                    bass_pat=["root5", "quarters"], comp=[25, 24, 105, 21, 0],
                    pad=[48, 21, 19, 20], arp=[25, 24, 105, 46, 15, 107],
                    lead=[40, 110, 22, 21, 73, 105, 27], sev=0.05,
                    modes={"major": 0.8, "mixolydian": 0.2}),
    "reggae": dict(w=0.5, tempo=(70, 96), m34=0.0, drum_p=1.0, drums=["reggae"], kits=[0, 8],
                   bass=[33, 32, 38], bass_pat=["syncop", "root5"], comp=[27, 16, 18, 0, 4],
                   pad=[16, 17], arp=[27, 4], lead=[56, 65, 73, 80], sev=0.2, skank=True,
                   modes={"major": 0.5, "minor": 0.5}),
    "ambient": dict(w=1.0, tempo=(70, 110), m34=0.15, drum_p=0.4, drums=["ballad", "halftime"],
                    kits=[48, 0, 40, 24], bass=[32, 43, 38, 39], bass_pat=["whole"],
                    comp=[0, 46, 11, 4], pad=[48, 49, 50, 51, 88, 89, 92, 93, 95, 99, 44],
                    arp=[8, 9, 10, 11, 12, 14, 46, 98, 108, 0, 45, 96],
                    lead=[73, 75, 40, 42, 60, 68, 71, 79], sev=0.2,
                    modes={"major": 0.4, "minor": 0.4, "dorian": 0.2}),
    "orchestral": dict(w=0.5, tempo=(70, 132), m34=0.3, drum_p=0.35,
                       drums=["ballad", "halftime"], kits=[48], bass=[43, 42, 58, 32],
                       bass_pat=["whole", "root5"], comp=[48, 45, 46],
                       pad=[48, 49, 61, 60, 19, 44], arp=[45, 46, 8, 13],
                       lead=[40, 73, 71, 68, 56, 60, 42], sev=0.1,
                       modes={"major": 0.5, "minor": 0.5}),
}
COMP_RHYTHMS_44 = ["x...x...x...x...", "..x...x...x...x.", "x.....x.........", "x..x..x...x..x..",
                   "x.x.x.x.x.x.x.x.", "x.......x.......", "x..x..x.x..x..x.", "x...x..x..x.x..."]
COMP_RHYTHMS_34 = ["x...x...x...", "x...........", "....x...x...", "x.x.x.x.x.x."]
LEAD_RANGE = {73: (67, 93), 72: (74, 98), 74: (65, 89), 75: (62, 86), 79: (65, 86), 71: (52, 80),
              68: (60, 84), 64: (58, 84), 65: (53, 79), 66: (46, 72), 67: (40, 64), 56: (56, 80),
              59: (56, 80), 57: (42, 67), 60: (45, 72), 40: (58, 88), 42: (40, 67), 22: (60, 84),
              21: (55, 81), 11: (53, 84), 12: (52, 84), 29: (52, 79), 30: (52, 79), 27: (52, 79),
              105: (50, 79), 110: (58, 88), 61: (52, 76)}


def _weighted(rng: np.random.Generator, table: dict):
    keys = list(table)
    w = np.array([table[k] for k in keys], dtype=float)
    return keys[int(rng.choice(len(keys), p=w / w.sum()))]


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _allowed(progs) -> list[int]:
    return [p for p in progs if p not in EXCLUDED_PROGRAMS]


# --------------------------------------------------------------------------------------
# Arrangement (notes in seconds, before rendering)
# --------------------------------------------------------------------------------------


@dataclass
class _Song:
    bpm: float
    beats_per_bar: int
    tonic: int
    mode: str
    style: str
    chords: list  # (start_beat, dur_beats, root_pc, pcs)
    sections: list  # (start_bar, n_bars, label)
    n_bars: int
    swing: float
    parts: dict  # name -> dict(program, notes=[(t0, t1, pitch, vel)], ...)
    drum_events: list  # (time_s, gm_note, velocity)
    drum_kit: int | None

    @property
    def spb(self) -> float:
        return 60.0 / self.bpm

    @property
    def bar_s(self) -> float:
        return self.beats_per_bar * self.spb


class _Arranger:
    """Writes the notes of one song. Times are in beats until ``_t`` converts them."""

    def __init__(self, rng: np.random.Generator, style_name: str, bpm: float | None,
                 total_s: float, meter_34: bool | None = None):
        self.rng = rng
        st = self.st = STYLES[style_name]
        self.style_name = style_name
        self.bpm = float(bpm) if bpm is not None else float(rng.uniform(*st["tempo"]))
        self.bpm = float(np.clip(self.bpm, 60.0, 180.0))
        if meter_34 is None:
            meter_34 = bool(rng.random() < st["m34"])
        self.bpb = 3 if meter_34 else 4
        self.mode = _weighted(rng, st["modes"])
        self.tonic = int(rng.integers(12))
        self.spb = 60.0 / self.bpm
        self.n_bars = int(math.ceil(total_s / (self.bpb * self.spb))) + 1
        lo, hi = st.get("swing", (0.0, 0.0))
        self.swing = float(rng.uniform(lo, hi)) if hi > 0 and rng.random() < 0.7 else 0.0
        self.jitter = float(rng.uniform(0.0, 0.012))
        self.sections = self._sections()
        self.chords = self._chords()
        self.parts: dict[str, dict] = {}
        self.drum_events: list = []
        self.drum_kit: int | None = None

    # --- time -------------------------------------------------------------------------
    def _t(self, beat: float, humanize: bool = True, jitter_scale: float = 1.0) -> float:
        """Seconds for a beat position, with swing and a little timing noise."""
        b = math.floor(beat)
        f = beat - b
        if self.swing > 0:  # delay the off-beat 8th by up to a triplet
            d = self.swing / 6.0
            f = f * (0.5 + d) / 0.5 if f < 0.5 else 0.5 + d + (f - 0.5) * (0.5 - d) / 0.5
        t = (b + f) * self.spb
        if humanize and self.jitter > 0:
            t += float(self.rng.normal(0.0, self.jitter * jitter_scale))
        return max(t, 0.0)

    def _vel(self, base: float, spread: float = 8.0) -> int:
        return int(np.clip(round(base + self.rng.normal(0, spread / 2)), 1, 127))

    # --- form and harmony -----------------------------------------------------------
    def _sections(self):
        rng, out, bar = self.rng, [], 0
        sec_len = int(_pick(rng, [4, 8, 8])) if self.bpm < 130 else int(_pick(rng, [8, 8, 16]))
        labels = _pick(rng, ["AABB", "ABAB", "AAB", "ABAC", "ABCB"])
        i = 0
        while bar < self.n_bars:
            out.append((bar, sec_len, labels[i % len(labels)]))
            bar += sec_len
            i += 1
        return out

    def _chord(self, degree: int, seventh: bool, blues: bool = False):
        scale = MODES[self.mode]
        pcs = [(self.tonic + scale[(degree + 2 * i) % 7]) % 12 for i in range(4 if seventh else 3)]
        if self.mode == "minor" and degree == 4 and self.rng.random() < 0.5:
            pcs[1] = (pcs[1] + 1) % 12  # harmonic-minor dominant
        if blues:
            r = (self.tonic + (0, 0, 0, 5, 7)[degree]) % 12
            pcs = [r, (r + 4) % 12, (r + 7) % 12, (r + 10) % 12]
        return pcs[0], pcs

    def _chords(self):
        rng, st = self.rng, self.st
        blues = (self.mode in ("major", "mixolydian") and rng.random() < 0.2
                 and self.style_name in ("rock", "jazz", "funk", "country"))
        progs = {lab: (BLUES if blues else _pick(rng, PROGRESSIONS[self.mode])) for lab in "ABC"}
        rhythm = 1.0 if blues else float(_pick(rng, [1.0, 1.0, 1.0, 0.5, 2.0]))
        chord_beats = self.bpb * rhythm
        sev = st["sev"]
        out = []
        for start_bar, n_bars, lab in self.sections:
            prog = progs[lab]
            beat, end = start_bar * self.bpb, (start_bar + n_bars) * self.bpb
            i = 0
            while beat < end - 1e-9:
                dur = min(chord_beats, end - beat)
                seventh = rng.random() < sev
                root, pcs = self._chord(prog[i % len(prog)], seventh, blues)
                out.append((beat, dur, root, pcs))
                beat += dur
                i += 1
        return out

    def _section_at(self, beat: float):
        bar = int(beat // self.bpb)
        for s in self.sections:
            if s[0] <= bar < s[0] + s[1]:
                return s
        return self.sections[-1]

    def _voicing(self, pcs, center: int, prev, n: int | None = None, power: bool = False):
        if power:
            root = pcs[0]
            lo = center - 7 + ((root - (center - 7)) % 12)
            return [lo, lo + 7, lo + 12]
        pcs = list(pcs) if n is None else list(pcs)[:n]
        best, best_score = None, None
        for inv in range(len(pcs)):
            rot = pcs[inv:] + pcs[:inv]
            for lo in range(center - 9, center + 3):
                if lo % 12 != rot[0]:
                    continue
                notes = [lo]
                for pc in rot[1:]:
                    nxt = notes[-1] + 1 + ((pc - notes[-1] - 1) % 12)
                    notes.append(nxt)
                if prev:
                    score = sum(abs(a - b) for a, b in zip(sorted(prev), notes))
                    score += abs(len(prev) - len(notes)) * 3
                else:
                    score = abs(np.mean(notes) - center)
                score += float(self.rng.random()) * 0.5
                if best_score is None or score < best_score:
                    best, best_score = notes, score
        return best

    # --- parts ------------------------------------------------------------------------
    def add_part(self, name: str, program: int, notes: list, volume: int, **cc):
        self.parts[name] = dict(program=int(program), notes=notes, volume=int(volume), **cc)

    def active(self, prob: float):
        """Per-section on/off flags (section label -> bool), at least one section on."""
        labels = sorted({s[2] for s in self.sections})
        flags = {lab: bool(self.rng.random() < prob) for lab in labels}
        if not any(flags.values()):
            flags[_pick(self.rng, labels)] = True
        return flags

    def bed_pad(self, program: int, center: int):
        notes, prev = [], None
        n_voices = 4 if self.rng.random() < 0.5 else 3
        vel = self.rng.uniform(55, 90)
        for beat, dur, root, pcs in self.chords:
            voic = self._voicing(pcs, center, prev, n=n_voices)
            prev = voic
            t0, t1 = self._t(beat, jitter_scale=0.5), self._t(beat + dur) + 0.08
            for p in voic:
                notes.append((t0, t1, p, self._vel(vel)))
        return notes

    def comp(self, program: int, center: int, flags=None, power=False):
        rng = self.rng
        rhythms = COMP_RHYTHMS_34 if self.bpb == 3 else COMP_RHYTHMS_44
        if self.st.get("skank") and self.bpb == 4:
            rhythm = "..x...x...x...x."
        else:
            rhythm = _pick(rng, rhythms)
        steps = len(rhythm)
        step_beats = self.bpb / steps
        hits = [i for i, c in enumerate(rhythm) if c != "."]
        legato = float(rng.uniform(0.5, 0.95))
        strum = program in range(24, 32) or program in (105, 106, 107)
        vel = rng.uniform(60, 95)
        notes, prev = [], None
        for beat, dur, root, pcs in self.chords:
            if flags is not None and not flags[self._section_at(beat)[2]]:
                continue
            voic = self._voicing(pcs, center, prev, power=power)
            prev = voic
            bar0 = math.floor(beat / self.bpb) * self.bpb
            for bar in np.arange(bar0, beat + dur, self.bpb):
                for k, h in enumerate(hits):
                    b = bar + h * step_beats
                    if b < beat - 1e-9 or b >= beat + dur - 1e-9:
                        continue
                    nxt = bar + (hits[k + 1] * step_beats if k + 1 < len(hits) else self.bpb)
                    length = max((min(nxt, beat + dur) - b) * legato, 0.2)
                    t0 = self._t(b)
                    t1 = t0 + length * self.spb
                    accent = 10 if h == 0 else 0
                    order = voic if (not strum or k % 2 == 0) else voic[::-1]
                    for j, p in enumerate(order):
                        d = j * float(rng.uniform(0.008, 0.02)) if strum else 0.0
                        notes.append((t0 + d, t1, p, self._vel(vel + accent)))
        return notes

    def arp(self, program: int, center: int, flags=None):
        rng = self.rng
        shape = _pick(rng, ["up", "down", "updown", "alberti", "random"])
        rate = float(_pick(rng, [0.5, 0.5, 0.25] if self.bpm < 120 else [0.5, 0.5, 1.0]))
        span = int(_pick(rng, [1, 2]))
        legato = float(rng.uniform(0.6, 1.2))
        vel = rng.uniform(55, 90)
        notes, prev = [], None
        for beat, dur, root, pcs in self.chords:
            if flags is not None and not flags[self._section_at(beat)[2]]:
                continue
            voic = self._voicing(pcs, center, prev)
            prev = voic
            tones = sorted(voic + ([p + 12 for p in voic] if span == 2 else []))
            if shape == "down":
                seq = tones[::-1]
            elif shape == "updown":
                seq = tones + tones[-2:0:-1]
            elif shape == "alberti":
                seq = [tones[0], tones[2 % len(tones)], tones[1], tones[2 % len(tones)]]
            elif shape == "random":
                seq = list(rng.permutation(tones))
            else:
                seq = tones
            n = int(round(dur / rate))
            for i in range(n):
                b = beat + i * rate
                t0 = self._t(b)
                accent = 12 if (i * rate) % 1.0 == 0 else 0
                notes.append((t0, t0 + rate * legato * self.spb, int(seq[i % len(seq)]),
                              self._vel(vel + accent)))
        return notes

    def bass(self, program: int, pattern: str, kick_steps=None):
        rng = self.rng
        vel = rng.uniform(80, 105)
        notes = []
        legato = float(rng.uniform(0.6, 0.95))
        chords = self.chords
        scale = MODES[self.mode]

        def low(pc):
            return 28 + (pc - 28) % 12  # E1..D#2

        for ci, (beat, dur, root, pcs) in enumerate(chords):
            r = low(root)
            fifth = low((root + 7) % 12)
            fifth = fifth if fifth > r else fifth + 12
            nxt_root = low(chords[ci + 1][2]) if ci + 1 < len(chords) else r
            events = []  # (beat offset, length, pitch)
            if pattern == "whole":
                events = [(0.0, dur, r)]
            elif pattern == "quarters":
                events = [(float(i), 1.0, r) for i in range(int(dur))]
            elif pattern == "eighths":
                events = [(i * 0.5, 0.5, r) for i in range(int(dur * 2))]
            elif pattern == "octave":
                events = [(i * 0.5, 0.5, r + 12 * (i % 2)) for i in range(int(dur * 2))]
            elif pattern == "root5":
                if self.bpb == 3:
                    events = [(float(i), 1.0, r if i % 3 == 0 else fifth) for i in range(int(dur))]
                else:
                    events = [(float(i), 2.0, r if i % 4 == 0 else fifth)
                              for i in range(0, int(dur), 2)]
            elif pattern == "walking":
                n = max(int(dur), 1)
                cur = r
                for i in range(n):
                    if i == 0:
                        p = r
                    elif i == n - 1:
                        p = nxt_root + int(_pick(rng, [-1, 1, -2, 2]))
                    else:
                        cand = [low(pc) for pc in pcs] + [low(pc) + 12 for pc in pcs]
                        cand += [low((self.tonic + s) % 12) for s in scale]
                        cand = [c for c in cand if abs(c - cur) <= 7] or [r]
                        p = int(_pick(rng, cand))
                    cur = p
                    events.append((float(i), 1.0, p))
            elif pattern in ("syncop", "kick"):
                steps = kick_steps if (pattern == "kick" and kick_steps) else None
                if steps is None:
                    grid = "x..x..x...x..x.." if self.bpb == 4 else "x..x..x....."
                    steps = [i for i, c in enumerate(grid) if c != "."]
                n_steps = 16 if self.bpb == 4 else 12
                sb = self.bpb / n_steps
                bar0 = math.floor(beat / self.bpb) * self.bpb
                for bar in np.arange(bar0, beat + dur, self.bpb):
                    for k, s in enumerate(steps):
                        b = bar + s * sb
                        if beat - 1e-9 <= b < beat + dur - 1e-9:
                            nxt = steps[k + 1] * sb if k + 1 < len(steps) else self.bpb
                            p = r if (k == 0 or rng.random() < 0.7) else _pick(rng, [fifth, r + 12])
                            events.append((b - beat, nxt - s * sb, p))
            for off, length, p in events:
                if off >= dur - 1e-9:
                    continue
                length = min(length, dur - off)
                t0 = self._t(beat + off)
                notes.append((t0, t0 + max(length * legato, 0.2) * self.spb, int(p),
                              self._vel(vel + (8 if off == 0 else 0))))
        return notes

    def lead(self, program: int, flags):
        rng = self.rng
        lo, hi = LEAD_RANGE.get(program, (60, 84))
        scale = MODES[self.mode]
        pitches = [p for p in range(lo, hi + 1) if (p - self.tonic) % 12 in scale]
        idx = len(pitches) // 2
        vel = rng.uniform(75, 105)
        cells = [[1.0], [0.5, 0.5], [0.75, 0.25], [1.5, 0.5], [2.0], [0.5, 1.0, 0.5],
                 [0.25, 0.25, 0.5], [1.0, 1.0], [3.0, 1.0]]
        legato = float(rng.uniform(0.75, 1.0))
        notes = []
        phrase_bars = int(_pick(rng, [2, 4]))
        chord_at = {}
        for beat, dur, root, pcs in self.chords:
            chord_at[int(beat)] = pcs
        beat = 0.0
        total = self.n_bars * self.bpb
        while beat < total:
            sec = self._section_at(beat)
            end = beat + phrase_bars * self.bpb
            if not flags[sec[2]] or rng.random() < 0.2:
                beat = end
                continue
            b = beat + float(_pick(rng, [0.0, 0.0, 0.5, 1.0]))
            stop = end - float(_pick(rng, [1.0, 2.0, 1.5]))
            while b < stop:
                for d in _pick(rng, cells):
                    if b >= stop:
                        break
                    if rng.random() < 0.1:  # short rest
                        b += d
                        continue
                    step = int(rng.choice([-2, -1, -1, 0, 1, 1, 2, 3, -3, 4, -4],))
                    idx = int(np.clip(idx + step, 0, len(pitches) - 1))
                    p = pitches[idx]
                    if abs(b - round(b)) < 1e-9 and rng.random() < 0.7:  # chord tone on the beat
                        cur = None
                        for cb in sorted(chord_at):
                            if cb <= b:
                                cur = chord_at[cb]
                        if cur:
                            cands = [q for q in pitches if q % 12 in cur]
                            if cands:
                                p = min(cands, key=lambda q: abs(q - p))
                                idx = pitches.index(p)
                    dd = min(d, stop - b + 1.0)
                    t0 = self._t(b)
                    notes.append((t0, t0 + dd * legato * self.spb, int(p),
                                  self._vel(vel + (6 if b % 1 == 0 else 0))))
                    b += d
            beat = end
        return notes

    def drums(self, pattern_name: str, kit: int):
        rng = self.rng
        table = PATTERNS_34 if self.bpb == 3 else PATTERNS_44
        pat = dict(table[pattern_name])
        triplet = "T" in pat
        pat.pop("T", None)
        steps = len(next(iter(pat.values())))
        sb = self.bpb / steps
        voices = {v: int(_pick(rng, DRUM_NOTES[v])) for v in pat}
        levels = {"o": 40.0, "x": 88.0, "X": 112.0}
        hat_to_ride = rng.random() < 0.3
        aux = AUX_PERC[int(rng.integers(len(AUX_PERC)))] if rng.random() < 0.35 else None
        aux_sec = self.active(0.7) if aux else None
        fills = rng.random() < 0.7
        crash_p = 0.8
        ev = []
        kick_steps = [i for i, c in enumerate(pat.get("K", "")) if c in "xX"]
        dropped = self.active(0.9) if rng.random() < 0.3 else None  # breakdown sections
        for sec_i, (start_bar, n_bars, lab) in enumerate(self.sections):
            if dropped is not None and not dropped[lab]:
                continue
            sec_pat = dict(pat)
            if lab != "A" and hat_to_ride and "H" in sec_pat:
                sec_pat["Y"] = sec_pat.pop("H")
                voices.setdefault("Y", 51)
            # a little per-section variation: an extra kick or ghost snare
            if "K" in sec_pat and rng.random() < 0.4:
                k = list(sec_pat["K"])
                k[int(rng.integers(steps))] = "x"
                sec_pat["K"] = "".join(k)
            for bar in range(start_bar, min(start_bar + n_bars, self.n_bars)):
                bar_beat = bar * self.bpb
                is_fill = fills and bar == start_bar + n_bars - 1 and n_bars >= 4
                fill_from = steps - (steps // 4 if rng.random() < 0.6 else steps // 2)
                for v, s in sec_pat.items():
                    for i, c in enumerate(s):
                        if c == "." or (is_fill and i >= fill_from and v != "K"):
                            continue
                        vel = levels[c] + (6 if i == 0 else 0)
                        ev.append((self._t(bar_beat + i * sb, jitter_scale=0.4), voices[v],
                                   self._vel(vel, 10)))
                if is_fill:
                    tom_seq = list(TOMS) if rng.random() < 0.6 else [38]
                    fill_step = max(1, steps // 16) if not triplet else 1
                    for j, i in enumerate(range(fill_from, steps, fill_step)):
                        note = tom_seq[min(j * len(tom_seq) // max(steps - fill_from, 1),
                                           len(tom_seq) - 1)]
                        ev.append((self._t(bar_beat + i * sb, jitter_scale=0.4), note,
                                   self._vel(70 + 40 * j / max(steps - fill_from, 1), 8)))
                if bar == start_bar and rng.random() < crash_p:
                    ev.append((self._t(bar_beat, jitter_scale=0.4), int(_pick(rng, CRASHES)),
                               self._vel(100, 10)))
                if aux and aux_sec[lab]:
                    note, a = aux
                    a = a[: 12] if self.bpb == 3 else a
                    asb = self.bpb / len(a)
                    for i, c in enumerate(a):
                        if c != ".":
                            ev.append((self._t(bar_beat + i * asb, jitter_scale=0.4), note,
                                       self._vel(70, 12)))
        self.drum_events = sorted(ev)
        self.drum_kit = int(kit)
        kick_16 = None
        if not triplet and kick_steps and steps in (12, 16):
            kick_16 = kick_steps
        return kick_16

    def song(self) -> _Song:
        return _Song(bpm=self.bpm, beats_per_bar=self.bpb, tonic=self.tonic, mode=self.mode,
                     style=self.style_name, chords=self.chords, sections=self.sections,
                     n_bars=self.n_bars, swing=self.swing, parts=self.parts,
                     drum_events=self.drum_events, drum_kit=self.drum_kit)


def _arrange(rng: np.random.Generator, total_s: float, bpm: float | None = None,
             drums: bool | None = None, want_bass: bool = True) -> _Song:
    """A full arrangement for ``total_s`` seconds of music."""
    styles = list(STYLES)
    w = np.array([STYLES[s]["w"] for s in styles])
    style = styles[int(rng.choice(len(styles), p=w / w.sum()))]
    st = STYLES[style]
    ar = _Arranger(rng, style, bpm, total_s, meter_34=False if bpm is not None else None)

    # drums
    use_drums = bool(rng.random() < st["drum_p"]) if drums is None else drums
    kick_steps = None
    if use_drums:
        if ar.bpb == 3:
            name = _pick(rng, st.get("drums34", list(PATTERNS_34)))
        else:
            name = _pick(rng, st["drums"])
        kick_steps = ar.drums(name, int(_pick(rng, st["kits"])))

    # bass
    if want_bass and rng.random() < 0.92:
        prog = int(_pick(rng, _allowed(st["bass"])))
        pattern = _pick(rng, st["bass_pat"])
        ar.add_part("bass", prog, ar.bass(prog, pattern, kick_steps),
                    volume=int(rng.integers(90, 115)))

    # harmony bed: a sustained pad and/or a rhythmic comp; the bed never stops
    has_pad = rng.random() < 0.75
    has_comp = rng.random() < 0.75 or not has_pad
    center = int(rng.integers(55, 66))
    if has_pad:
        prog = int(_pick(rng, _allowed(st["pad"])))
        ar.add_part("pad", prog, ar.bed_pad(prog, center), volume=int(rng.integers(70, 105)))
    if has_comp:
        prog = int(_pick(rng, _allowed(st["comp"])))
        power = prog in (29, 30) and rng.random() < st.get("power", 0.0)
        flags = None if not has_pad else ar.active(0.75)
        ar.add_part("comp", prog, ar.comp(prog, center + int(rng.integers(-3, 6)), flags, power),
                    volume=int(rng.integers(80, 112)))
    if rng.random() < 0.45:
        prog = int(_pick(rng, _allowed(st["arp"])))
        ar.add_part("arp", prog, ar.arp(prog, int(rng.integers(62, 74)), ar.active(0.65)),
                    volume=int(rng.integers(65, 100)))
    if rng.random() < 0.4:
        prog = int(_pick(rng, _allowed(st["lead"])))
        ar.add_part("lead", prog, ar.lead(prog, ar.active(0.7)), volume=int(rng.integers(85, 115)))
    return ar.song()


def _clip_song(song: _Song, end_s: float) -> _Song:
    """Drop notes starting after ``end_s`` (sections may run past the needed length)."""
    parts = {name: {**part, "notes": [(t0, min(t1, end_s + 1.0), p, v)
                                      for t0, t1, p, v in part["notes"] if t0 < end_s]}
             for name, part in song.parts.items()}
    drums = [e for e in song.drum_events if e[0] < end_s]
    chords = [c for c in song.chords if c[0] * song.spb < end_s]
    return _Song(**{**song.__dict__, "parts": parts, "drum_events": drums, "chords": chords})


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


def _render_midi(pm: pretty_midi.PrettyMIDI, n_samples: int, sr: int, tmp: Path) -> np.ndarray:
    """Render with the fluidsynth CLI; (n_samples,) float32 mono (zero-padded)."""
    exe = shutil.which("fluidsynth")
    if exe is None or not SOUNDFONT.is_file():
        raise MusicError(f"music synthesis needs the fluidsynth CLI and {SOUNDFONT} "
                         "(Debian: apt-get install fluidsynth fluid-soundfont-gm)")
    mid, wav = tmp / "song.mid", tmp / "song.wav"
    pm.write(str(mid))
    # dynamic sample loading: only the presets used are read from the 141 MB soundfont;
    # 64 voices: old release tails are stolen first, halving the cost of harp/mallet parts
    cmd = [exe, "-ni", "-q", "-g", "0.6", "-r", str(sr), "-O", "float", "-T", "wav",
           "-o", "synth.dynamic-sample-loading=1", "-o", "synth.polyphony=64",
           "-F", str(wav), str(SOUNDFONT), str(mid)]
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
                workdir: str | Path | None = None, sample_rate: int = SAMPLE_RATE) -> MusicPiece:
    """Generate ``duration_s`` seconds of backing music; deterministic for (seed, duration, split).

    Args:
        seed: any integer.
        duration_s: length in seconds (T = round(duration_s * sample_rate)).
        split: "train", "valid" or "test": which recorded samples may be used (disjoint).
        workdir: where the temporary MIDI/WAV go (a temp dir inside it, removed after).
        sample_rate: output rate (render and samples are produced at this rate).

    Raises:
        MusicError: fluidsynth or the GM soundfont is missing, or rendering failed.
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
            audio, meta = _generate(rng, attempt_kind, duration_s, n_out, sr, pool, Path(tmp))
            if _window_rms(audio, sr).min() >= RMS_FLOOR:
                break
    meta.update(seed=int(seed), split=split)
    return MusicPiece(audio=audio, meta=meta)


def _generate(rng, kind, duration_s, n_out, sr, pool, tmp):
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
                            tmp)
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
