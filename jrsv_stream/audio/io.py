"""Audio file I/O: read any file soundfile reads, downmix, resample to 16 kHz.

Corpus files are written as 16-bit PCM (WAV or FLAC by extension) so that values read
back are exactly ``k / 32768``; see :func:`jrsv_stream.data.mixing.quantize_pcm16`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from jrsv_stream import SAMPLE_RATE


class AudioError(ValueError):
    """An audio file is missing, unreadable or holds invalid samples."""


def resample(x: np.ndarray, orig_rate: int, new_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a mono float signal with torchaudio's windowed-sinc resampler.

    Args:
        x: (T,) float array.
        orig_rate: its sample rate in Hz.
        new_rate: target rate in Hz.

    Returns:
        (T * new_rate / orig_rate,) float32 array.
    """
    if orig_rate == new_rate:
        return np.asarray(x, dtype=np.float32)
    y = AF.resample(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), orig_rate, new_rate)
    return y.numpy()


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file as mono float32 at ``sample_rate``.

    Multi-channel input is averaged to mono; any input rate is resampled.

    Raises:
        AudioError: the file is missing, unreadable, or has NaN/Inf samples.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    try:
        x, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError variants
        raise AudioError(f"cannot read audio file {path}: {e}") from e
    x = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]
    if not np.all(np.isfinite(x)):
        raise AudioError(f"audio file {path} contains NaN or Inf samples")
    return resample(x, rate, sample_rate)


def save_audio(path: str | os.PathLike, x: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write mono audio as 16-bit PCM (format from the extension: .wav or .flac).

    The file is written to a temporary name and renamed, so an interrupted write never
    leaves a truncated file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    fmt = "FLAC" if path.suffix.lower() == ".flac" else "WAV"
    sf.write(str(tmp), np.asarray(x, dtype=np.float32), sample_rate, subtype="PCM_16", format=fmt)
    os.replace(tmp, path)
