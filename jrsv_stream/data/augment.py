"""Training-time effects for dynamic mixing: what a live broadcast does to voices and music
that the synthetic corpus does not (issue 16: a separator that generalizes).

Each effect is applied to the **stems** of a training crop, and the mixture is rebuilt as
their sum, so the separation targets stay exactly what is in the mixture:

- ``eq``: a smooth random equalizer per stem (gains drawn at log-spaced frequencies,
  interpolated in log frequency, applied in the FFT domain), like a different microphone,
  instrument or mixing desk;
- ``reverb``: a synthetic room per stem (exponentially decaying noise, RT60 drawn in a
  range, a pre-delay, wet/dry mix); the target is the reverberant stem, as heard;
- ``level``: slow level automation per stem (piecewise-linear gain in dB), so the
  vocal-to-music ratio moves within an item as it does when a streamer leans back or
  turns the music up;
- ``compress``: a broadcast compressor on the mix (one gain curve computed from the mixture,
  applied to every stem: a linear, time-varying gain, so the stems still sum to the mix);
- ``gain``: the mix normalised to ``peak``, then a random level ``gain_db`` below it (one
  factor for all stems).

Everything is drawn from the caller's generator: an example is deterministic for its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jrsv_stream import SAMPLE_RATE


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities (per stem for eq/reverb/level, per crop for compress) and ranges.

    ``enabled`` False (the default) leaves the crops exactly as the corpus renders them.
    """

    enabled: bool = False
    p_eq: float = 0.5
    eq_db: float = 8.0            # peak +- gain of the random EQ curve
    p_reverb: float = 0.3
    rt60_s: tuple[float, ...] = (0.2, 1.0)
    wet: tuple[float, ...] = (0.1, 0.5)   # wet share of the reverberant stem's energy
    p_level: float = 0.4
    level_db: float = 6.0         # +- range of the automation points
    level_step_s: tuple[float, ...] = (0.5, 2.0)
    p_compress: float = 0.3
    ratio: tuple[float, ...] = (2.0, 6.0)
    gain_db: tuple[float, ...] = (-18.0, 0.0)
    peak: float = 0.9


def _uniform(rng: np.random.Generator, lo_hi: tuple[float, ...]) -> float:
    lo, hi = float(lo_hi[0]), float(lo_hi[-1])
    return float(rng.uniform(lo, hi)) if hi > lo else lo


def random_eq(x: np.ndarray, rng: np.random.Generator, max_db: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Smooth random EQ: gains in [-max_db, max_db] at 8 log-spaced points, zero-phase."""
    n = len(x)
    if n == 0:
        return x
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    knots = np.geomspace(60.0, sr / 2, 8)
    gains_db = rng.uniform(-max_db, max_db, size=len(knots))
    curve_db = np.interp(np.log(np.maximum(freqs, 1.0)), np.log(knots), gains_db)
    return np.fft.irfft(np.fft.rfft(x) * 10.0 ** (curve_db / 20.0), n=n).astype(np.float32)


def room_impulse(rng: np.random.Generator, rt60_s: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """A synthetic room: direct path, a 2-20 ms pre-delay, then noise decaying 60 dB in rt60."""
    n_tail = max(1, int(rt60_s * sr))
    pre = int(rng.uniform(0.002, 0.02) * sr)
    t = np.arange(n_tail) / sr
    tail = rng.standard_normal(n_tail) * 10.0 ** (-3.0 * t / rt60_s)
    # high frequencies die sooner in real rooms: a one-pole lowpass on the tail
    tail = _one_pole(tail, float(rng.uniform(0.2, 0.7)))
    h = np.zeros(pre + n_tail)
    h[pre:] = tail
    return h / (np.sqrt((h ** 2).sum()) + 1e-12)


def _one_pole(x: np.ndarray, a: float) -> np.ndarray:
    """The lowpass y[n] = (1 - a) x[n] + a y[n-1], applied in the FFT domain (circular; the
    tail it smooths is noise, so the wrap-around does not matter)."""
    w = np.exp(-2j * np.pi * np.fft.rfftfreq(len(x)))
    return np.fft.irfft(np.fft.rfft(x) * (1.0 - a) / (1.0 - a * w), n=len(x))


def _fftconvolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    n = len(x) + len(h) - 1
    nfft = 1 << (n - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(h, nfft), nfft)[:n]


def reverb(x: np.ndarray, rng: np.random.Generator, rt60_s: float, wet: float) -> np.ndarray:
    """Mix the dry stem with its convolution by a synthetic room (same length, same energy)."""
    e_dry = float((x.astype(np.float64) ** 2).sum())
    if e_dry <= 0:
        return x
    h = room_impulse(rng, rt60_s)
    w = _fftconvolve(x.astype(np.float64), h)[:len(x)]
    w *= np.sqrt(e_dry / ((w ** 2).sum() + 1e-12))
    y = np.sqrt(1.0 - wet) * x + np.sqrt(wet) * w
    return (y * np.sqrt(e_dry / ((y ** 2).sum() + 1e-12))).astype(np.float32)


def level_curve(n: int, rng: np.random.Generator, max_db: float, step_s: tuple[float, ...],
                sr: int = SAMPLE_RATE) -> np.ndarray:
    """Piecewise-linear gain (linear scale) with points every ``step_s`` seconds, +-max_db."""
    step = max(1, int(_uniform(rng, step_s) * sr))
    pts = np.arange(0, n + step, step)
    db = rng.uniform(-max_db, max_db, size=len(pts))
    return (10.0 ** (np.interp(np.arange(n), pts, db) / 20.0)).astype(np.float32)


def compressor_gain(mix: np.ndarray, rng: np.random.Generator, ratio: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Gain curve of a feed-forward compressor on ``mix``: threshold at the mix's RMS level
    minus 0-10 dB, attack ~5 ms, release ~100 ms (on the frame envelope), make-up to keep the RMS."""
    hop = sr // 100  # 10 ms envelope frames
    n = len(mix)
    nf = -(-n // hop)
    x = np.pad(mix.astype(np.float64), (0, nf * hop - n))
    env_db = 10.0 * np.log10((x.reshape(nf, hop) ** 2).mean(1) + 1e-10)
    rms_db = 10.0 * np.log10((x ** 2).mean() + 1e-10)
    thr = rms_db - float(rng.uniform(0.0, 10.0))
    over = np.maximum(env_db - thr, 0.0)
    target = -over * (1.0 - 1.0 / ratio)
    g = np.empty(nf)
    prev = 0.0
    att, rel = 0.6, 0.1  # per 10 ms frame: fast down, slow up
    for i in range(nf):
        c = att if target[i] < prev else rel
        prev = prev + c * (target[i] - prev)
        g[i] = prev
    gain = 10.0 ** (np.interp(np.arange(nf * hop), np.arange(nf) * hop + hop / 2, g)[:n] / 20.0)
    y = mix * gain
    makeup = np.sqrt(((mix.astype(np.float64) ** 2).mean() + 1e-12) / ((y.astype(np.float64) ** 2).mean() + 1e-12))
    return (gain * makeup).astype(np.float32)


def augment_stems(stems: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> tuple[np.ndarray, np.ndarray]:
    """Apply the configured effects to a crop's stems.

    Args:
        stems: (S, T) float32 stems (rows of zeros are absent sources and stay zero).
        rng: the example's generator.
        cfg: which effects, how likely, how strong.

    Returns:
        ``(mixture (T,), stems (S, T))`` with ``mixture == stems.sum(0)`` (float32).
    """
    out = np.array(stems, dtype=np.float32, copy=True)
    for j in range(out.shape[0]):
        s = out[j]
        if not np.any(s):
            continue
        if rng.random() < cfg.p_eq:
            s = random_eq(s, rng, cfg.eq_db)
        if rng.random() < cfg.p_reverb:
            s = reverb(s, rng, _uniform(rng, cfg.rt60_s), _uniform(rng, cfg.wet))
        if rng.random() < cfg.p_level:
            s = s * level_curve(len(s), rng, cfg.level_db, cfg.level_step_s)
        out[j] = s
    mix = out.sum(0)
    if rng.random() < cfg.p_compress and np.any(mix):
        g = compressor_gain(mix, rng, _uniform(rng, cfg.ratio))
        out *= g[None, :]
    top = float(np.abs(out.sum(0)).max()) if out.size else 0.0
    if top > 0:  # the mix to peak ``peak``, then a random level below it
        out *= np.float32(cfg.peak / top * 10.0 ** (min(0.0, _uniform(rng, cfg.gain_db)) / 20.0))
    return out.sum(0).astype(np.float32), out
