"""TinyPipeline: a real, small, randomly initialised causal model that implements the
:class:`jrsv_stream.stream.pipeline_api.StreamingPipeline` contract (framing -> causal
conv stack -> per-track CTC heads and activity); tests and benchmarks use it as a
stand-in for the trained separator + recognizer pipeline. Its captions are random
characters: numbers measured with it are plumbing only.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from jrsv_stream import SAMPLE_RATE
from jrsv_stream.nn.streaming import CausalConv1d, ConvState
from jrsv_stream.stream.pipeline_api import TRACKS, CharTokenizer, PipelineOutput


class TinyState(NamedTuple):
    """State of :class:`TinyPipeline`.

    convs: one :class:`ConvState` per conv layer, cache (B, C, (K-1)*dilation).
    mean: (B, C) running (exponential) mean of the conv features, removed before the heads.
    """

    convs: tuple[ConvState, ...]
    mean: torch.Tensor


class TinyPipeline(nn.Module):
    """Small random causal model implementing :class:`StreamingPipeline`.

    Non-overlapping frames of ``frame_shift_samples`` -> linear projection + log energy ->
    a stack of :class:`CausalConv1d` (dilations 1, 2, 4, ...) -> minus a causal running
    mean, normalized per frame -> per track a CTC head over
    :class:`CharTokenizer` (blank-biased, so output is sparse like a real CTC model) and an
    activity head driven by the frame energy (silence -> inactive).

    Strictly causal; algorithmic latency = one chunk (a frame is output once its chunk is
    complete). Shapes: ``forward((B, T)) -> PipelineOutput`` with ``F = T // frame_shift``.
    """

    def __init__(self, chunk_samples: int = 5120, frame_shift_samples: int = 640, channels: int = 64,
                 layers: int = 3, kernel_size: int = 3, blank_bias: float = 6.0, seed: int = 0):
        super().__init__()
        if chunk_samples % frame_shift_samples:
            raise ValueError(f"chunk_samples {chunk_samples} must be a multiple of frame_shift_samples {frame_shift_samples}")
        self.sample_rate = SAMPLE_RATE
        self.chunk_samples = int(chunk_samples)
        self.frame_shift_samples = int(frame_shift_samples)
        self.frame_shift_s = frame_shift_samples / SAMPLE_RATE
        self.algorithmic_latency_ms = 1000.0 * chunk_samples / SAMPLE_RATE
        self.tracks = TRACKS
        self.tokenizer = CharTokenizer()
        self.rescore_fn = None
        self.channels = int(channels)
        self.ema = 0.9
        g = torch.Generator().manual_seed(seed)
        self.proj = nn.Linear(frame_shift_samples, channels)
        self.convs = nn.ModuleList(CausalConv1d(channels + 1 if i == 0 else channels, channels, kernel_size, dilation=2**i)
                                   for i in range(layers))
        self.heads = nn.ModuleDict({t: nn.Conv1d(channels, self.tokenizer.vocab_size, 1) for t in self.tracks})
        self.act_heads = nn.ModuleDict({t: nn.Conv1d(channels, 1, 1) for t in self.tracks})
        with torch.no_grad():
            for p in self.parameters():  # deterministic init independent of the global RNG
                fan_in = p[0].numel() if p.ndim > 1 else 16
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / fan_in) ** 0.5)
            for h in self.heads.values():
                h.weight.mul_(3.0)
                h.bias[self.tokenizer.blank_id] += blank_bias
                h.bias[1] += 2.5  # word boundaries every few letters
            for h in self.act_heads.values():
                h.weight.mul_(0.05)
                h.bias.zero_()
        self.eval()

    def init_state(self, batch: int, device: torch.device | str = "cpu") -> TinyState:
        return TinyState(tuple(c.init_state(batch, device) for c in self.convs),
                         torch.zeros(batch, self.channels, device=device))

    def _center(self, h: torch.Tensor, mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Remove a causal running mean per channel and normalize per frame, so random
        weights give frame-dependent (varied) outputs. h (B, C, F), mean (B, C)."""
        out = []
        for t in range(h.shape[-1]):
            mean = self.ema * mean + (1.0 - self.ema) * h[:, :, t]
            out.append(h[:, :, t] - mean)
        hc = torch.stack(out, dim=-1)
        return hc / (hc.pow(2).mean(1, keepdim=True).sqrt() + 1e-3), mean

    def _frames(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T = audio.shape
        fr = audio[:, : T - T % self.frame_shift_samples].reshape(B, -1, self.frame_shift_samples)  # (B, F, hop)
        energy_db = 10.0 * torch.log10(fr.pow(2).mean(-1) + 1e-10)  # (B, F)
        shape = fr / (fr.pow(2).mean(-1, keepdim=True).sqrt() + 1e-3)  # level-free waveform shape
        x = torch.cat([self.proj(shape), (energy_db / 20.0).unsqueeze(-1)], dim=-1)  # (B, F, C+1)
        return x.transpose(1, 2), energy_db

    def _heads(self, h: torch.Tensor, energy_db: torch.Tensor) -> PipelineOutput:
        logp = {t: self.heads[t](h).transpose(1, 2).log_softmax(-1) for t in self.tracks}
        gate = (energy_db + 45.0) / 3.0  # ~0 below -50 dBFS, ~1 above -40 dBFS
        act = {t: torch.sigmoid(gate + self.act_heads[t](h)[:, 0]) for t in self.tracks}
        return PipelineOutput(logp, act)

    def forward(self, audio: torch.Tensor) -> PipelineOutput:
        """audio (B, T) -> PipelineOutput with (B, T // hop, V) log-probs and (B, F) activity."""
        x, e = self._frames(audio)
        for c in self.convs:
            x = torch.relu(c(x))
        x, _ = self._center(x, torch.zeros(x.shape[0], self.channels, device=x.device, dtype=x.dtype))
        return self._heads(x, e)

    def step(self, audio: torch.Tensor, state: TinyState) -> tuple[PipelineOutput, TinyState]:
        """audio (B, chunk_samples) -> (PipelineOutput with F = chunk/hop frames, new state)."""
        if audio.ndim != 2 or audio.shape[1] != self.chunk_samples:
            raise ValueError(f"expected audio (B, {self.chunk_samples}), got {tuple(audio.shape)}")
        x, e = self._frames(audio)
        new = []
        for c, s in zip(self.convs, state.convs):
            x, s2 = c.step(x, s)
            x = torch.relu(x)
            new.append(s2)
        x, mean = self._center(x, state.mean)
        return self._heads(x, e), TinyState(tuple(new), mean)
