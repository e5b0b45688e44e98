"""Mixing vocals over music at a target SNR, with 16-bit-exact stems.

SNR definition (used by the synthetic corpus, the real-corpus loaders and the tests):
the energy ratio of a vocal stem to the music stem over the vocal's *active region*,
the span from its first to its last non-zero sample. This measures how loud the voice
is against the music while it sounds, whatever the gaps around it.

Stems are scaled, quantized to the 16-bit grid (``k / 32768``), and the mixture is their
exact sum, so files written as PCM_16 sum to the mixture with zero error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PCM16 = 32768.0
SNR_BUCKETS_DB = (-5.0, 0.0, 5.0)


class MixError(ValueError):
    """Stems cannot be mixed as asked (length mismatch, silent reference, ...)."""


def quantize_pcm16(x: np.ndarray) -> np.ndarray:
    """Round to the nearest 16-bit PCM value, as float32 ``k / 32768``."""
    return (np.clip(np.round(np.asarray(x, dtype=np.float64) * PCM16), -PCM16, PCM16 - 1) / PCM16).astype(np.float32)


def active_region(x: np.ndarray) -> slice:
    """Span from the first to the last non-zero sample (empty slice if all zero)."""
    nz = np.flatnonzero(x)
    if nz.size == 0:
        return slice(0, 0)
    return slice(int(nz[0]), int(nz[-1]) + 1)


def region_snr_db(vocal: np.ndarray, music: np.ndarray) -> float:
    """SNR of ``vocal`` against ``music`` over the vocal's active region, in dB."""
    r = active_region(vocal)
    pv = float(np.sum(np.asarray(vocal[r], dtype=np.float64) ** 2))
    pm = float(np.sum(np.asarray(music[r], dtype=np.float64) ** 2))
    if pv == 0.0:
        raise MixError("vocal stem is silent")
    if pm == 0.0:
        return float("inf")
    return 10.0 * np.log10(pv / pm)


def snr_bucket(snr_db: float) -> int:
    """Nearest of the papers' -5/0/+5 dB buckets."""
    return int(min(SNR_BUCKETS_DB, key=lambda b: abs(b - snr_db)))


@dataclass(frozen=True)
class Mix:
    """Result of :func:`mix_stems`.

    Attributes:
        mixture: (T,) float32, exactly ``sum(stems.values())``.
        stems: name -> (T,) float32 on the 16-bit grid (only the stems that were given).
        snr_db: vocal name -> achieved region SNR against music, measured after quantizing.
        gain: the global gain applied to every stem to reach the peak target.
    """

    mixture: np.ndarray
    stems: dict[str, np.ndarray]
    snr_db: dict[str, float]
    gain: float


def mix_stems(
    vocals: dict[str, np.ndarray],
    music: np.ndarray,
    snr_db: dict[str, float],
    peak: float = 0.8,
) -> Mix:
    """Scale each vocal to its target SNR against ``music``, then normalize and quantize.

    Args:
        vocals: name (``speech``/``singing``) -> (T,) vocal stem, zero outside its segments.
        music: (T,) music stem (must not be silent where a vocal is active).
        snr_db: name -> target SNR in dB (region SNR, see module doc).
        peak: absolute peak of the mixture after normalization, in (0, 1).

    Returns:
        A :class:`Mix`; achieved SNRs are within a few thousandths of a dB of the targets
        for ordinary levels (quantization is the only error).

    Raises:
        MixError: lengths differ, a vocal is silent, music is silent under a vocal, or
            ``peak`` is out of range.
    """
    if not 0.0 < peak < 1.0:
        raise MixError(f"peak must be in (0, 1), got {peak}")
    music = np.asarray(music, dtype=np.float64)
    T = music.shape[0]
    scaled: dict[str, np.ndarray] = {}
    for name, v in vocals.items():
        v = np.asarray(v, dtype=np.float64)
        if v.shape != (T,):
            raise MixError(f"{name} has shape {v.shape}, music has ({T},)")
        if name not in snr_db:
            raise MixError(f"no target SNR for {name}")
        cur = region_snr_db(v, music)
        if not np.isfinite(cur):
            raise MixError(f"music is silent where {name} is active")
        scaled[name] = v * 10.0 ** ((snr_db[name] - cur) / 20.0)
    total = music + sum(scaled.values(), np.zeros(T))
    top = float(np.max(np.abs(total))) if T else 0.0
    if top == 0.0:
        raise MixError("mixture is silent")
    gain = peak / top
    stems = {name: quantize_pcm16(v * gain) for name, v in scaled.items()}
    stems["music"] = quantize_pcm16(music * gain)
    mixture = np.sum([s.astype(np.float64) for s in stems.values()], axis=0).astype(np.float32)
    achieved = {name: region_snr_db(stems[name], stems["music"]) for name in vocals}
    return Mix(mixture=mixture, stems=stems, snr_db=achieved, gain=gain)
