"""Causal STFT / iSTFT with explicit overlap-add state, and a generic streaming overlap-add.

Framing convention (shared by the STFT and the Conv-TasNet encoder/decoder): the input is
left-padded with ``window - hop`` zeros, so a chunk of ``n * hop`` new samples yields
exactly ``n`` frames, and frame ``k`` ends at input sample ``(k + 1) * hop - 1``: it is
available as soon as its last hop has arrived (``center=False``, no future samples).

Synthesis overlap-adds every frame over ``window`` samples. An output sample is final
once no later frame touches it, i.e. ``window - hop`` samples after the newest input
sample: the **output delay** ``delay_samples = window - hop``. Both ``forward`` and the
chunked ``step`` return ``T`` samples for ``T`` input samples, where output sample ``t``
is the reconstruction of input sample ``t - delay_samples`` (the first ``delay_samples``
outputs belong to the left padding). With the hop-sized buffering of a chunk, the
algorithmic latency of STFT processing is ``delay + hop = window`` samples.

Windows: periodic sqrt-Hann for analysis and synthesis; the synthesis window is scaled by
``2 * hop / window`` so that analysis followed by synthesis is the identity (delayed by
``delay_samples``) whenever ``window / hop`` is an even integer >= 2.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


def _check_chunk(x: torch.Tensor, hop: int, name: str) -> None:
    if x.dim() < 1 or x.shape[-1] % hop != 0:
        raise ValueError(f"{name}: the time axis ({x.shape[-1] if x.dim() else 'scalar'} samples) must be a multiple of hop={hop}")


class FramerState(NamedTuple):
    """Input history of a :class:`CausalFramer`.

    tail: (B, window - hop) the last input samples (zeros at the start of a stream).
    """

    tail: torch.Tensor


class CausalFramer(nn.Module):
    """Cut a signal into overlapping frames, causally (left padding offline, a sample
    cache in steps).

    Shapes: (B, T) with ``T % hop == 0`` -> (B, T // hop, window).
    """

    def __init__(self, window: int, hop: int):
        super().__init__()
        if hop <= 0 or window < hop:
            raise ValueError(f"need 0 < hop <= window, got window={window}, hop={hop}")
        self.window, self.hop = window, hop
        self.context = window - hop

    def init_state(self, batch: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> FramerState:
        return FramerState(torch.zeros(batch, self.context, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.step(x, self.init_state(x.shape[0], x.device, x.dtype))[0]

    def step(self, x: torch.Tensor, state: FramerState) -> tuple[torch.Tensor, FramerState]:
        """x: (B, n * hop) -> frames (B, n, window), new state."""
        _check_chunk(x, self.hop, "CausalFramer")
        full = torch.cat([state.tail, x], dim=-1)
        frames = full.unfold(-1, self.window, self.hop)  # (B, n, window)
        return frames, FramerState(full[:, full.shape[-1] - self.context:])


class OverlapAddState(NamedTuple):
    """Pending overlap-add sums of an :class:`OverlapAdd`.

    pending: (B, C, window - hop) contributions of past frames to samples not yet final.
    """

    pending: torch.Tensor


class OverlapAdd(nn.Module):
    """Streaming overlap-add of frames into a signal; emits ``hop`` final samples per frame.

    Shapes: frames (B, C, n, window) -> (B, C, n * hop). Output sample ``t`` (counting
    from the stream start) receives every frame that covers padded position ``t``; it is
    emitted once the frame starting after it has been added (see the module docstring).
    """

    def __init__(self, window: int, hop: int):
        super().__init__()
        if hop <= 0 or window < hop:
            raise ValueError(f"need 0 < hop <= window, got window={window}, hop={hop}")
        self.window, self.hop = window, hop
        self.context = window - hop

    def init_state(self, batch: int, channels: int, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32) -> OverlapAddState:
        return OverlapAddState(torch.zeros(batch, channels, self.context, device=device, dtype=dtype))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        B, C = frames.shape[:2]
        return self.step(frames, self.init_state(B, C, frames.device, frames.dtype))[0]

    def step(self, frames: torch.Tensor, state: OverlapAddState) -> tuple[torch.Tensor, OverlapAddState]:
        """frames: (B, C, n, window) -> samples (B, C, n * hop), new state."""
        B, C, n, W = frames.shape
        if W != self.window:
            raise ValueError(f"OverlapAdd: frames have {W} samples, expected {self.window}")
        length = (n - 1) * self.hop + W
        if n == 0:
            return frames.new_zeros(B, C, 0), state
        # fold does the overlap-add: (B*C, W, n) -> (B*C, 1, 1, length)
        y = nn.functional.fold(frames.reshape(B * C, n, W).transpose(1, 2), output_size=(1, length),
                               kernel_size=(1, W), stride=(1, self.hop)).reshape(B, C, length)
        if self.context:
            y = torch.cat([y[..., :self.context] + state.pending, y[..., self.context:]], dim=-1)
        out = y[..., :n * self.hop]
        return out, OverlapAddState(y[..., n * self.hop:])


class StftState(NamedTuple):
    """framer: input history (B, window - hop)."""

    framer: FramerState


class IstftState(NamedTuple):
    """ola: pending overlap-add sums (B, C, window - hop) per output channel."""

    ola: OverlapAddState


def sqrt_hann(window: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Periodic sqrt-Hann window (window,). Kept in float64 as a buffer and cast at use, so
    float64 runs (tests) stay exact and float32 runs lose nothing."""
    return torch.hann_window(window, periodic=True, dtype=torch.float64).sqrt().to(dtype)


class CausalStft(nn.Module):
    """Causal STFT: (B, n * hop) -> complex (B, n, window // 2 + 1), sqrt-Hann analysis."""

    def __init__(self, window: int, hop: int):
        super().__init__()
        self.framer = CausalFramer(window, hop)
        self.window, self.hop = window, hop
        self.n_bins = window // 2 + 1
        self.register_buffer("win", sqrt_hann(window), persistent=False)

    def init_state(self, batch: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> StftState:
        return StftState(self.framer.init_state(batch, device, dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.step(x, self.init_state(x.shape[0], x.device, x.dtype))[0]

    def step(self, x: torch.Tensor, state: StftState) -> tuple[torch.Tensor, StftState]:
        frames, fs = self.framer.step(x, state.framer)
        spec = torch.fft.rfft(frames * self.win.to(frames.dtype), dim=-1)
        return spec, StftState(fs)


class CausalIstft(nn.Module):
    """Streaming inverse of :class:`CausalStft`: complex (B, C, n, window // 2 + 1) ->
    (B, C, n * hop), delayed by ``delay_samples = window - hop`` (module docstring)."""

    def __init__(self, window: int, hop: int):
        super().__init__()
        if window % hop != 0 or (window // hop) % 2 != 0:
            raise ValueError(f"window / hop must be an even integer for sqrt-Hann overlap-add, got {window}/{hop}")
        self.ola = OverlapAdd(window, hop)
        self.window, self.hop = window, hop
        self.delay_samples = window - hop
        self.register_buffer("win", sqrt_hann(window) * (2.0 * hop / window), persistent=False)

    def init_state(self, batch: int, channels: int, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32) -> IstftState:
        return IstftState(self.ola.init_state(batch, channels, device, dtype))

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        B, C = spec.shape[:2]
        return self.step(spec, self.init_state(B, C, spec.device, spec.real.dtype))[0]

    def step(self, spec: torch.Tensor, state: IstftState) -> tuple[torch.Tensor, IstftState]:
        frames = torch.fft.irfft(spec, n=self.window, dim=-1)
        y, os_ = self.ola.step(frames * self.win.to(frames.dtype), state.ola)
        return y, IstftState(os_)
