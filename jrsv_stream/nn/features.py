"""Streaming 80-dim log-mel features with a fixed global normalization.

Framing is *causal*: the waveform is left-padded with ``win - hop`` zeros, so feature frame
``k`` covers samples ``[k*hop - (win - hop), (k+1)*hop)`` and ends exactly where its hop
ends. ``N`` samples give ``N // hop`` frames, a 320 ms chunk (5120 samples) gives exactly
32 frames, and chunked extraction (with a cache of the samples not yet framed) equals
offline extraction frame for frame. Nothing is normalized per utterance: the mean and
inverse standard deviation are buffers computed once on training data
(:meth:`LogMel.set_normalization`) and saved with the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torchaudio
from torch import nn

from jrsv_stream import SAMPLE_RATE


@dataclass(frozen=True)
class FeatureConfig:
    """Log-mel settings (times in ms, rates in Hz)."""

    sample_rate: int = SAMPLE_RATE
    n_mels: int = 80
    win_ms: float = 25.0
    hop_ms: float = 10.0
    f_min_hz: float = 20.0
    f_max_hz: float = 7600.0

    @property
    def win_samples(self) -> int:
        return int(round(self.sample_rate * self.win_ms / 1000))

    @property
    def hop_samples(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))


class FeatureState(NamedTuple):
    """Samples not framed yet: the last ``win - hop`` samples of the past plus the
    remainder of the last chunk that did not fill a hop.

    cache: (B, win - hop + r) with 0 <= r < hop (float, same dtype as the audio)
    """

    cache: torch.Tensor


class LogMel(nn.Module):
    """Waveform (B, N) -> normalized log-mel (B, N // hop, n_mels).

    ``chunk_samples``: any size works in :meth:`step`; a multiple of ``hop`` gives
    ``chunk / hop`` frames per step. ``lookahead_samples`` = 0 (causal framing).
    """

    lookahead_samples = 0

    def __init__(self, cfg: FeatureConfig = FeatureConfig()):
        super().__init__()
        self.cfg = cfg
        self.win, self.hop = cfg.win_samples, cfg.hop_samples
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=cfg.sample_rate, n_fft=self.win, win_length=self.win, hop_length=self.hop,
            f_min=cfg.f_min_hz, f_max=cfg.f_max_hz, n_mels=cfg.n_mels, center=False, power=2.0)
        # Fixed global normalization (log-mel units): identity until set from training data.
        self.register_buffer("mean", torch.zeros(cfg.n_mels))
        self.register_buffer("istd", torch.ones(cfg.n_mels))

    @property
    def pad_samples(self) -> int:
        return self.win - self.hop

    def raw(self, framed: torch.Tensor) -> torch.Tensor:
        """Un-normalized log-mel of already padded audio: (B, P + N) -> (B, T, n_mels)."""
        if framed.shape[-1] < self.win:
            return framed.new_zeros(framed.shape[0], 0, self.cfg.n_mels)
        return self.log_mel(self.mel.spectrogram(framed))

    def log_mel(self, power_spec: torch.Tensor) -> torch.Tensor:
        """Un-normalized log-mel of a power spectrogram (B, n_fft // 2 + 1, T) -> (B, T, n_mels)
        (training augmentations that act on the spectrum go through here)."""
        return torch.log(self.mel.mel_scale(power_spec).clamp_min(1e-10)).transpose(1, 2)

    def normalize(self, logmel: torch.Tensor) -> torch.Tensor:
        return (logmel - self.mean) * self.istd

    def forward(self, wav: torch.Tensor, wav_lens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Offline features.

        Args:
            wav: (B, N) float audio in [-1, 1] at ``cfg.sample_rate``.
            wav_lens: (B,) valid samples per row, or None.

        Returns:
            feats (B, N // hop, n_mels) and feat_lens (B,) = wav_lens // hop (None if
            wav_lens is None). Frames past a row's length hold garbage from padding.
        """
        x = nn.functional.pad(wav, (self.pad_samples, 0))
        feats = self.normalize(self.raw(x))
        return feats, (None if wav_lens is None else torch.div(wav_lens, self.hop, rounding_mode="floor"))

    def init_state(self, batch: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> FeatureState:
        return FeatureState(torch.zeros(batch, self.pad_samples, device=device, dtype=dtype))

    def step(self, wav_chunk: torch.Tensor, state: FeatureState) -> tuple[torch.Tensor, FeatureState]:
        """wav_chunk: (B, S) -> feats (B, F, n_mels), F = frames completed by this chunk."""
        full = torch.cat([state.cache, wav_chunk], dim=-1)
        n_frames = max(0, (full.shape[-1] - self.win) // self.hop + 1)
        feats = self.normalize(self.raw(full[:, : (n_frames - 1) * self.hop + self.win] if n_frames else full[:, :0]))
        return feats, FeatureState(full[:, n_frames * self.hop:])

    @torch.no_grad()
    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor, floor: float = 1e-3) -> None:
        """Store global statistics (n_mels,) of the *raw* log-mel (see :meth:`raw`)."""
        self.mean.copy_(mean.to(self.mean))
        self.istd.copy_(1.0 / std.to(self.istd).clamp_min(floor))
