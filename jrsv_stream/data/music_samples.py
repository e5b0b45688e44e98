"""Recorded samples for the music stem (Debian's ``sonic-pi-samples``): roles, families and
their train/valid/test split, decoding with soundfile and FFT resampling with numpy (never
torch: see :mod:`jrsv_stream.data.music`), pitch classes and loop tempi."""

from __future__ import annotations

import hashlib
import math
import os
import re
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLES_DIR = Path(os.environ.get("JRSV_SONIC_PI_SAMPLES", "/usr/share/sonic-pi/samples"))
SPLIT_FRACTIONS = {"test": 0.15, "valid": 0.10}
SPLITS = ("train", "valid", "test")


class MusicError(RuntimeError):
    """The music generator cannot run (fluidsynth or the soundfont missing, render failed)."""


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
