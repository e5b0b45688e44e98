"""Streaming building blocks and the contract every streaming module follows.

Contract (shared/DESIGN.md, principle 1): a streaming module has

- ``forward(x)`` over whole sequences (training, offline);
- ``init_state(batch, device) -> State`` where ``State`` is a NamedTuple of tensors, batch
  first, shapes documented on the class;
- ``step(chunk, state) -> (out, state)`` that never mutates ``chunk`` or ``state`` in
  place, so a state can be kept, copied or rolled back;
- declared sizes in samples or frames: ``chunk_*`` (the step granularity) and
  ``lookahead_*`` (future input an output may depend on; 0 for strictly causal).

Tests prove ``forward == concatenated steps`` for several chunk sizes and causality with
:mod:`tests.streaming_helpers`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class ConvState(NamedTuple):
    """Cache of a causal convolution: the last ``(K-1)*dilation`` input frames.

    cache: (B, C_in, (K-1)*dilation)
    """

    cache: torch.Tensor


class CausalConv1d(nn.Module):
    """1-D convolution that sees only the past: left padding offline, a frame cache in steps.

    Shapes: input (B, C_in, T) -> output (B, C_out, T) (stride 1).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1, groups: int = 1, bias: bool = True):
        super().__init__()
        self.context = (kernel_size - 1) * dilation
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.pad(x, (self.context, 0)))

    def init_state(self, batch: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> ConvState:
        return ConvState(torch.zeros(batch, self.conv.in_channels, self.context, device=device, dtype=dtype))

    def step(self, x: torch.Tensor, state: ConvState) -> tuple[torch.Tensor, ConvState]:
        """x: (B, C_in, T_chunk) -> (B, C_out, T_chunk), new state."""
        full = torch.cat([state.cache, x], dim=-1)
        y = self.conv(full)
        return y, ConvState(full[..., full.shape[-1] - self.context:] if self.context else state.cache)


class CumulativeNorm(nn.Module):
    """Causal layer norm over (channels, time so far): statistics accumulate frame by frame
    (cLN of Conv-TasNet), so no future frame and no whole-track statistic is used.

    Shapes: (B, C, T) -> (B, C, T). State: running sums and count.
    """

    class State(NamedTuple):
        sum: torch.Tensor  # (B, 1)
        sum_sq: torch.Tensor  # (B, 1)
        count: torch.Tensor  # (B, 1)

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.gain = nn.Parameter(torch.ones(1, channels, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1))

    def init_state(self, batch: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> "CumulativeNorm.State":
        z = torch.zeros(batch, 1, device=device, dtype=dtype)
        return CumulativeNorm.State(z, z.clone(), z.clone())

    def _normalize(self, x, s, s2, n):
        """x: (B, C, T); s, s2, n: (B, T) running sums and counts up to each frame."""
        mean = s / n
        var = (s2 / n - mean**2).clamp_min(0.0)
        return (x - mean.unsqueeze(1)) / torch.sqrt(var.unsqueeze(1) + self.eps) * self.gain + self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.step(x, self.init_state(x.shape[0], x.device, x.dtype))
        return y

    def step(self, x: torch.Tensor, state: "CumulativeNorm.State") -> tuple[torch.Tensor, "CumulativeNorm.State"]:
        C = x.shape[1]
        s = state.sum + torch.cumsum(x.sum(1), dim=-1)  # (B, T)
        s2 = state.sum_sq + torch.cumsum((x**2).sum(1), dim=-1)
        n = state.count + C * torch.arange(1, x.shape[-1] + 1, device=x.device, dtype=x.dtype)
        y = self._normalize(x, s, s2, n)
        return y, CumulativeNorm.State(s[:, -1:], s2[:, -1:], n[:, -1:])
