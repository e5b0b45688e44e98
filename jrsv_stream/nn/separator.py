"""Causal multi-task separator (MTASS): mono 16 kHz -> speech, singing, music + activity.

Two streaming architectures behind one interface (selected by ``SeparatorConfig.arch``):

- ``stft_mask`` (MTASS seed, made causal): causal STFT (sqrt-Hann, ``center=False``) ->
  per-frame log-power features -> causal dilated convolutions -> unidirectional GRU ->
  three complex ratio masks (stage 1), then a light **residual-compensation** stage (the
  MTASS seed's second stage): a small GRU sees the three estimates and the residual
  ``R = X - sum_i S_i`` and adds ``M'_i * R`` to each source. iSTFT with overlap-add state.
- ``convtasnet`` (Woo et al. seed): learned 2-4 ms encoder -> TCN of ``CausalConv1d`` +
  ``CumulativeNorm`` blocks -> three sigmoid masks -> linear decoder + overlap-add state.

Both heads also predict per-frame activity logits for speech and singing (Stoller et al.
seed: ``L = a * L_sep + (1 - a) * L_act``, see :mod:`jrsv_stream.train.losses`).

Streaming contract (:mod:`jrsv_stream.nn.streaming`): ``forward(wav)`` is one ``step`` from
the initial state, so offline and streaming run the same code; ``step`` takes chunks of
``n * hop_samples`` and never mutates its input or state.

Timing. ``sources[..., t]`` estimates the source at input sample ``t -
output_delay_samples`` (overlap-add delay, ``window - hop`` of the synthesis); activity
frame ``k`` describes input samples ``[k * hop, (k + 1) * hop)`` and depends on no later
input. The algorithmic latency (from an input sample to the emission of its separated
output, chunk buffering included) is ``output_delay + hop + lookahead``; for the STFT model
that is exactly the analysis window.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from jrsv_stream import SAMPLE_RATE
from jrsv_stream.config import ConfigError, config_from_dict  # noqa: F401 (re-exported)
from jrsv_stream.nn.frontend import (CausalFramer, CausalIstft, CausalStft, FramerState, IstftState, OverlapAdd,
                                     OverlapAddState, StftState)
from jrsv_stream.nn.streaming import CausalConv1d, ConvState, CumulativeNorm

SOURCES = ("speech", "singing", "music")
ACTIVITY = ("speech", "singing")
ARCHS = ("stft_mask", "convtasnet")
FORMAT_VERSION = 1


# --- configs ---------------------------------------------------------------------------------
# ConfigError and config_from_dict live in jrsv_stream.config (shared by all configs).


@dataclass(frozen=True)
class StftMaskConfig:
    """Complex-mask network over a causal STFT, with residual compensation.

    window_ms / hop_ms: STFT window and hop (window / hop must be an even integer).
    conv_channels, conv_layers, conv_kernel: causal dilated convolutions (dilation 2^i).
    gru_hidden, gru_layers: unidirectional GRU of stage 1.
    residual_hidden: GRU size of the residual-compensation stage (0 disables the stage).
    mask_limit: bound of each mask component (``limit * tanh``).
    refine_layers, refine_hidden: residual GRU layers stacked on the stage-1 GRU
        (``g <- g + W_k GRU_k(g)``, ``W_k`` zero at initialisation, so a separator grown from
        one without them starts out computing exactly what it did: warm start of a deeper
        model, see ``TrainRunConfig.init_from``). 0 layers: none (every model before session 24).
    """

    window_ms: float = 32.0
    hop_ms: float = 16.0
    conv_channels: int = 128
    conv_layers: int = 2
    conv_kernel: int = 3
    gru_hidden: int = 192
    gru_layers: int = 2
    residual_hidden: int = 64
    mask_limit: float = 1.25
    refine_layers: int = 0
    refine_hidden: int = 256


@dataclass(frozen=True)
class ConvTasNetConfig:
    """Causal Conv-TasNet (Luo & Mesgarani), cLN variant.

    enc_kernel_ms: encoder window L (2-4 ms); the encoder stride is L / 2.
    enc_filters (N), bottleneck (B), hidden (H), kernel (P), blocks (X), repeats (R): the
    usual Conv-TasNet sizes. block_frames: encoder frames per hop (the step granularity
    and the activity frame rate: hop = block_frames * L / 2).
    """

    enc_kernel_ms: float = 4.0
    enc_filters: int = 128
    bottleneck: int = 64
    hidden: int = 128
    kernel: int = 3
    blocks: int = 8
    repeats: int = 1
    block_frames: int = 5


@dataclass(frozen=True)
class SeparatorConfig:
    arch: str = "stft_mask"
    stft_mask: StftMaskConfig = field(default_factory=StftMaskConfig)
    convtasnet: ConvTasNetConfig = field(default_factory=ConvTasNetConfig)

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ConfigError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        sm = self.stft_mask
        if sm.refine_layers < 0 or (sm.refine_layers and sm.refine_hidden <= 0):
            raise ConfigError(f"stft_mask.refine_layers must be >= 0 and refine_hidden > 0, "
                              f"got {sm.refine_layers} / {sm.refine_hidden}")


def _ms_to_samples(ms: float, what: str) -> int:
    n = ms * SAMPLE_RATE / 1000.0
    if abs(n - round(n)) > 1e-6:
        raise ConfigError(f"{what} = {ms} ms is not a whole number of samples at {SAMPLE_RATE} Hz")
    return int(round(n))


# --- outputs and common interface -----------------------------------------------------------------
class SeparatorOutput(NamedTuple):
    """sources: (B, 3, T) speech, singing, music (delayed by ``output_delay_samples``);
    activity_logits: (B, 2, T // hop) speech, singing (pre-sigmoid)."""

    sources: torch.Tensor
    activity_logits: torch.Tensor

    @property
    def activity_probs(self) -> torch.Tensor:
        """(B, 2, F) activity probabilities in [0, 1]."""
        return torch.sigmoid(self.activity_logits)


class ChannelNorm(nn.Module):
    """Layer norm over channels of each frame (causal: no statistic across time). (B, C, T)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class _SeparatorBase(nn.Module):
    """Declared sizes and the offline wrapper shared by both architectures."""

    hop_samples: int
    window_samples: int
    lookahead_samples: int = 0
    output_delay_samples: int

    @property
    def algorithmic_latency_samples(self) -> int:
        return self.output_delay_samples + self.hop_samples + self.lookahead_samples

    @property
    def algorithmic_latency_ms(self) -> float:
        return 1000.0 * self.algorithmic_latency_samples / SAMPLE_RATE

    def _check(self, wav: torch.Tensor) -> None:
        if wav.dim() != 2:
            raise ValueError(f"expected (B, T) audio, got shape {tuple(wav.shape)}")
        if wav.shape[-1] % self.hop_samples:
            raise ValueError(f"chunk of {wav.shape[-1]} samples is not a multiple of hop_samples={self.hop_samples}")

    def forward(self, wav: torch.Tensor) -> SeparatorOutput:
        """wav: (B, T), T a multiple of ``hop_samples`` -> SeparatorOutput (whole sequence)."""
        return self.step(wav, self.init_state(wav.shape[0], wav.device, wav.dtype))[0]

    def describe(self) -> dict:
        return {"hop_samples": self.hop_samples, "window_samples": self.window_samples,
                "lookahead_samples": self.lookahead_samples, "output_delay_samples": self.output_delay_samples,
                "algorithmic_latency_ms": self.algorithmic_latency_ms,
                "parameters": sum(p.numel() for p in self.parameters())}


# --- (A) complex masks over a causal STFT + residual compensation -----------------------------------
class StftMaskState(NamedTuple):
    """Stream state of :class:`StftMaskSeparator`.

    stft: input history (B, window - hop).
    conv: one ConvState per causal conv layer, cache (B, C, (K-1) * 2^i).
    gru: (B, gru_layers, gru_hidden) stage-1 GRU state.
    res_gru: (B, 1, residual_hidden) residual-stage GRU state ((B, 1, 0) when disabled).
    istft: pending overlap-add sums (B, 3, window - hop).
    refine: (B, refine_layers, refine_hidden) states of the refinement GRUs ((B, 0, 0) without).
    """

    stft: StftState
    conv: tuple[ConvState, ...]
    gru: torch.Tensor
    res_gru: torch.Tensor
    istft: IstftState
    refine: torch.Tensor


def _log_power(spec: torch.Tensor) -> torch.Tensor:
    return torch.log(spec.real**2 + spec.imag**2 + 1e-8)


class StftMaskSeparator(_SeparatorBase):
    """(A) in the module docstring. Shapes: wav (B, n * hop) -> sources (B, 3, n * hop),
    activity logits (B, 2, n)."""

    def __init__(self, cfg: StftMaskConfig):
        super().__init__()
        self.cfg = cfg
        self.window_samples = _ms_to_samples(cfg.window_ms, "window_ms")
        self.hop_samples = _ms_to_samples(cfg.hop_ms, "hop_ms")
        self.stft = CausalStft(self.window_samples, self.hop_samples)
        self.istft = CausalIstft(self.window_samples, self.hop_samples)
        self.output_delay_samples = self.istft.delay_samples
        F, C, G = self.stft.n_bins, cfg.conv_channels, cfg.gru_hidden
        self.n_bins = F
        self.in_proj = nn.Linear(F, C)
        self.in_norm = nn.LayerNorm(C)
        self.in_act = nn.PReLU(C)
        self.convs = nn.ModuleList(CausalConv1d(C, C, cfg.conv_kernel, dilation=2**i) for i in range(cfg.conv_layers))
        self.conv_acts = nn.ModuleList(nn.PReLU(C) for _ in range(cfg.conv_layers))
        self.conv_norms = nn.ModuleList(ChannelNorm(C) for _ in range(cfg.conv_layers))
        self.gru = nn.GRU(C, G, num_layers=cfg.gru_layers, batch_first=True)
        H = cfg.refine_hidden
        self.refine_grus = nn.ModuleList(nn.GRU(G, H, batch_first=True) for _ in range(cfg.refine_layers))
        self.refine_outs = nn.ModuleList(nn.Linear(H, G) for _ in range(cfg.refine_layers))
        with torch.no_grad():  # each refinement layer starts as the identity
            for lin in self.refine_outs:
                lin.weight.zero_()
                lin.bias.zero_()
        self.mask_head = nn.Linear(G, len(SOURCES) * 2 * F)
        self.act_head = nn.Linear(G, len(ACTIVITY))
        # Start from masks ~1/3 (real): each source estimate is a third of the mixture.
        with torch.no_grad():
            self.mask_head.weight.mul_(0.1)
            b = self.mask_head.bias.view(len(SOURCES), 2, F)
            b.zero_()
            b[:, 0] = math.atanh(1.0 / 3.0 / cfg.mask_limit)
        R = cfg.residual_hidden
        if R > 0:
            self.res_in = nn.Linear((len(SOURCES) + 1) * F, R)
            self.res_norm = nn.LayerNorm(R)
            self.res_act = nn.PReLU(R)
            self.res_gru = nn.GRU(R, R, batch_first=True)
            self.res_head = nn.Linear(R, len(SOURCES) * 2 * F)
            with torch.no_grad():  # start with no correction
                self.res_head.weight.mul_(0.01)
                self.res_head.bias.zero_()

    def init_state(self, batch: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> StftMaskState:
        return StftMaskState(
            stft=self.stft.init_state(batch, device, dtype),
            conv=tuple(c.init_state(batch, device, dtype) for c in self.convs),
            gru=torch.zeros(batch, self.cfg.gru_layers, self.cfg.gru_hidden, device=device, dtype=dtype),
            res_gru=torch.zeros(batch, 1, max(self.cfg.residual_hidden, 0), device=device, dtype=dtype),
            istft=self.istft.init_state(batch, len(SOURCES), device, dtype),
            refine=torch.zeros(batch, self.cfg.refine_layers, self.cfg.refine_hidden if self.cfg.refine_layers else 0,
                               device=device, dtype=dtype),
        )

    def _masks(self, z: torch.Tensor) -> torch.Tensor:
        """(B, n, 3*2*F) -> complex masks (B, 3, n, F) bounded by mask_limit per component."""
        B, n, _ = z.shape
        m = self.cfg.mask_limit * torch.tanh(z.view(B, n, len(SOURCES), 2, self.n_bins))
        return torch.complex(m[..., 0, :], m[..., 1, :]).transpose(1, 2)

    def step(self, chunk: torch.Tensor, state: StftMaskState) -> tuple[SeparatorOutput, StftMaskState]:
        """chunk: (B, n * hop) -> (SeparatorOutput with sources (B, 3, n * hop) and
        activity logits (B, 2, n), new state)."""
        self._check(chunk)
        spec, stft_state = self.stft.step(chunk, state.stft)  # (B, n, F) complex
        h = self.in_act(self.in_norm(self.in_proj(_log_power(spec))).transpose(1, 2))  # (B, C, n)
        conv_states = []
        for conv, act, norm, cs in zip(self.convs, self.conv_acts, self.conv_norms, state.conv):
            y, cs = conv.step(h, cs)
            h = h + norm(act(y))
            conv_states.append(cs)
        g, gru_state = self.gru(h.transpose(1, 2), state.gru.transpose(0, 1).contiguous())  # (B, n, G)
        refine_states = []
        for k, (gru_k, out_k) in enumerate(zip(self.refine_grus, self.refine_outs)):
            r_k, s_k = gru_k(g, state.refine[:, k:k + 1].transpose(0, 1).contiguous())
            g = g + out_k(r_k)
            refine_states.append(s_k.transpose(0, 1))
        refine_state = torch.cat(refine_states, dim=1) if refine_states else state.refine
        est = self._masks(self.mask_head(g)) * spec.unsqueeze(1)  # (B, 3, n, F)
        res_state = state.res_gru
        if self.cfg.residual_hidden > 0:
            resid = spec - est.sum(1)  # (B, n, F)
            feats = torch.cat([_log_power(est).transpose(1, 2).flatten(2), _log_power(resid)], dim=-1)
            r = self.res_act(self.res_norm(self.res_in(feats)).transpose(1, 2)).transpose(1, 2)
            r, res_h = self.res_gru(r, state.res_gru.transpose(0, 1).contiguous())
            est = est + self._masks(self.res_head(r)) * resid.unsqueeze(1)
            res_state = res_h.transpose(0, 1)
        wav, istft_state = self.istft.step(est, state.istft)
        act = self.act_head(g).transpose(1, 2)  # (B, 2, n)
        return SeparatorOutput(wav, act), StftMaskState(stft_state, tuple(conv_states), gru_state.transpose(0, 1),
                                                        res_state, istft_state, refine_state)


# --- (B) causal Conv-TasNet ---------------------------------------------------------------------
class Pointwise(nn.Module):
    """1x1 convolution as a batched matmul (cheaper than ``Conv1d`` for the small chunks
    of streaming). (B, C_in, T) -> (B, C_out, T)."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__()
        conv = nn.Conv1d(in_channels, out_channels, 1, bias=bias)  # same initialisation as Conv1d
        self.weight = nn.Parameter(conv.weight.detach()[:, :, 0].clone())
        self.bias = nn.Parameter(conv.bias.detach()[:, None].clone()) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.matmul(self.weight, x)
        return y + self.bias if self.bias is not None else y


class DepthwiseCausalConv1d(CausalConv1d):
    """:class:`CausalConv1d` with ``groups == channels``, computed as ``K`` shifted
    multiply-adds: the same parameters, state and results, but 2-3x cheaper than the
    grouped convolution kernel on the small chunks of streaming. (B, C, T) -> (B, C, T)."""

    def __init__(self, channels: int, kernel_size: int, dilation: int = 1):
        super().__init__(channels, channels, kernel_size, dilation=dilation, groups=channels)
        self.kernel_size, self.dilation = kernel_size, dilation

    def _shifted_sum(self, full: torch.Tensor, T: int) -> torch.Tensor:
        w = self.conv.weight[:, 0, :, None]  # (C, K, 1)
        y = self.conv.bias[:, None] + w[:, 0] * full[..., :T]
        for k in range(1, self.kernel_size):
            a = k * self.dilation
            y = y + w[:, k] * full[..., a:a + T]
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._shifted_sum(nn.functional.pad(x, (self.context, 0)), x.shape[-1])

    def step(self, x: torch.Tensor, state: ConvState) -> tuple[torch.Tensor, ConvState]:
        full = torch.cat([state.cache, x], dim=-1)
        y = self._shifted_sum(full, x.shape[-1])
        return y, ConvState(full[..., full.shape[-1] - self.context:] if self.context else state.cache)


class FastCumulativeNorm(CumulativeNorm):
    """:class:`CumulativeNorm` (same parameters, state and results) with fewer tensor ops
    per step, which is what a small streaming chunk pays for."""

    def step(self, x: torch.Tensor, state: CumulativeNorm.State) -> tuple[torch.Tensor, CumulativeNorm.State]:
        C, T = x.shape[1], x.shape[-1]
        s = torch.cumsum(x.sum(1), dim=-1) + state.sum  # (B, T)
        s2 = torch.cumsum(x.square().sum(1), dim=-1) + state.sum_sq
        n = torch.arange(C, C * T + 1, C, device=x.device, dtype=x.dtype) + state.count
        mean = s / n
        inv = torch.rsqrt((s2 / n - mean.square()).clamp_min(0.0) + self.eps)
        y = torch.addcmul(self.bias, (x - mean.unsqueeze(1)) * inv.unsqueeze(1), self.gain)
        return y, CumulativeNorm.State(s[:, -1:], s2[:, -1:], n[:, -1:])


class TcnBlockState(NamedTuple):
    """norm1, norm2: CumulativeNorm running sums (B, 1) each; conv: depthwise cache (B, H, (P-1)*d)."""

    norm1: CumulativeNorm.State
    conv: ConvState
    norm2: CumulativeNorm.State


class TcnBlock(nn.Module):
    """1x1 conv -> PReLU -> cLN -> causal depthwise conv -> PReLU -> cLN -> residual + skip."""

    def __init__(self, bottleneck: int, hidden: int, kernel: int, dilation: int):
        super().__init__()
        self.inp = Pointwise(bottleneck, hidden)
        self.act1, self.norm1 = nn.PReLU(), FastCumulativeNorm(hidden)
        self.dconv = DepthwiseCausalConv1d(hidden, kernel, dilation=dilation)
        self.act2, self.norm2 = nn.PReLU(), FastCumulativeNorm(hidden)
        self.res_skip = Pointwise(hidden, 2 * bottleneck)

    def init_state(self, batch: int, device, dtype) -> TcnBlockState:
        return TcnBlockState(self.norm1.init_state(batch, device, dtype), self.dconv.init_state(batch, device, dtype),
                             self.norm2.init_state(batch, device, dtype))

    def step(self, x: torch.Tensor, state: TcnBlockState) -> tuple[torch.Tensor, torch.Tensor, TcnBlockState]:
        """x: (B, Bn, n) -> residual output (B, Bn, n), skip (B, Bn, n), new state."""
        h, n1 = self.norm1.step(self.act1(self.inp(x)), state.norm1)
        h, cs = self.dconv.step(h, state.conv)
        h, n2 = self.norm2.step(self.act2(h), state.norm2)
        res, skip = self.res_skip(h).chunk(2, dim=1)
        return x + res, skip, TcnBlockState(n1, cs, n2)


class ConvTasNetState(NamedTuple):
    """Stream state of :class:`ConvTasNetSeparator`.

    framer: input history (B, L - L/2).
    in_norm: CumulativeNorm sums over the encoder output, (B, 1) each.
    blocks: one TcnBlockState per TCN block.
    ola: decoder overlap-add pending sums (B, 3, L - L/2).
    """

    framer: FramerState
    in_norm: CumulativeNorm.State
    blocks: tuple[TcnBlockState, ...]
    ola: OverlapAddState


class ConvTasNetSeparator(_SeparatorBase):
    """(B) in the module docstring. Shapes: wav (B, n * hop) -> sources (B, 3, n * hop),
    activity logits (B, 2, n) where hop = block_frames * stride."""

    def __init__(self, cfg: ConvTasNetConfig):
        super().__init__()
        self.cfg = cfg
        L = _ms_to_samples(cfg.enc_kernel_ms, "enc_kernel_ms")
        if L % 2:
            raise ConfigError(f"encoder window must be an even number of samples, got {L}")
        S = L // 2
        self.window_samples, self.stride_samples = L, S
        self.hop_samples = cfg.block_frames * S
        self.output_delay_samples = L - S
        N, Bn = cfg.enc_filters, cfg.bottleneck
        self.framer = CausalFramer(L, S)
        self.encoder = nn.Linear(L, N, bias=False)
        self.in_norm = FastCumulativeNorm(N)
        self.in_proj = Pointwise(N, Bn)
        self.blocks = nn.ModuleList(TcnBlock(Bn, cfg.hidden, cfg.kernel, 2**x)
                                    for _ in range(cfg.repeats) for x in range(cfg.blocks))
        self.out_act = nn.PReLU()
        self.mask_head = Pointwise(Bn, len(SOURCES) * N)
        self.act_head = Pointwise(Bn, len(ACTIVITY))
        self.decoder = nn.Linear(N, L, bias=False)
        self.ola = OverlapAdd(L, S)

    def init_state(self, batch: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> ConvTasNetState:
        return ConvTasNetState(
            framer=self.framer.init_state(batch, device, dtype),
            in_norm=self.in_norm.init_state(batch, device, dtype),
            blocks=tuple(b.init_state(batch, device, dtype) for b in self.blocks),
            ola=self.ola.init_state(batch, len(SOURCES), device, dtype),
        )

    def step(self, chunk: torch.Tensor, state: ConvTasNetState) -> tuple[SeparatorOutput, ConvTasNetState]:
        """chunk: (B, n * hop) -> (SeparatorOutput with sources (B, 3, n * hop) and
        activity logits (B, 2, n), new state)."""
        self._check(chunk)
        B = chunk.shape[0]
        frames, fs = self.framer.step(chunk, state.framer)  # (B, m, L), m = n * block_frames
        w = torch.relu(self.encoder(frames)).transpose(1, 2)  # (B, N, m)
        h, ns = self.in_norm.step(w, state.in_norm)
        h = self.in_proj(h)
        skip_sum = torch.zeros_like(h)
        block_states = []
        for blk, bs in zip(self.blocks, state.blocks):
            h, skip, bs = blk.step(h, bs)
            skip_sum = skip_sum + skip
            block_states.append(bs)
        y = self.out_act(skip_sum)
        m = w.shape[-1]
        masks = torch.sigmoid(self.mask_head(y)).view(B, len(SOURCES), -1, m)  # (B, 3, N, m)
        dec = self.decoder((masks * w.unsqueeze(1)).transpose(2, 3))  # (B, 3, m, L)
        wav, os_ = self.ola.step(dec, state.ola)
        act = self.act_head(y)  # (B, 2, m)
        act = act.view(B, len(ACTIVITY), m // self.cfg.block_frames, self.cfg.block_frames).mean(-1)
        return SeparatorOutput(wav, act), ConvTasNetState(fs, ns, tuple(block_states), os_)


# --- state helpers (for batching many streams) ----------------------------------------------------
def map_state(fn, state):
    """Apply ``fn`` to every tensor of a (nested NamedTuple / tuple) state, keeping its types."""
    if isinstance(state, torch.Tensor):
        return fn(state)
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(*(map_state(fn, s) for s in state))
    if isinstance(state, tuple):
        return tuple(map_state(fn, s) for s in state)
    raise TypeError(f"not a state: {type(state).__name__}")


def cat_states(states: list):
    """Concatenate same-model states along the batch axis (every state tensor is batch first)."""
    first = states[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(states, dim=0)
    parts = [cat_states([s[i] for s in states]) for i in range(len(first))]
    return type(first)(*parts) if hasattr(first, "_fields") else tuple(parts)


def select_state(state, index: torch.Tensor | slice | int):
    """Rows ``index`` of every state tensor (``int`` keeps the batch axis)."""
    if isinstance(index, int):
        index = slice(index, index + 1)
    return map_state(lambda t: t[index], state)


# --- building, saving, loading ------------------------------------------------------------------
Separator = StftMaskSeparator | ConvTasNetSeparator


def build_separator(cfg: SeparatorConfig) -> Separator:
    """A randomly initialised separator for the config."""
    if cfg.arch == "stft_mask":
        return StftMaskSeparator(cfg.stft_mask)
    return ConvTasNetSeparator(cfg.convtasnet)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_separator(model: Separator, cfg: SeparatorConfig, path: str | Path, meta: dict | None = None) -> None:
    """Write ``{"format", "config", "state_dict" (float32, CPU), "meta"}`` atomically."""
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().cpu()
          for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".part")
    torch.save({"format": FORMAT_VERSION, "config": asdict(cfg), "state_dict": sd, "meta": meta or {}}, tmp)
    os.replace(tmp, path)


def load_separator(path: str | Path, device: torch.device | str = "cpu") -> tuple[Separator, SeparatorConfig, dict]:
    """Load a separator from a ``separator.pt`` file or a model folder holding one.

    Returns:
        (model in eval mode on ``device``, its config, the saved ``meta`` dict).

    Raises:
        FileNotFoundError: no such file; ValueError: the file is not a separator checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "separator.pt"
    if not path.is_file():
        raise FileNotFoundError(f"separator model not found: {path}")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot read separator model {path}: {e}") from e
    if not isinstance(ck, dict) or ck.get("format") != FORMAT_VERSION or "state_dict" not in ck:
        raise ValueError(f"{path} is not a separator model of format {FORMAT_VERSION}")
    cfg = config_from_dict(SeparatorConfig, ck["config"], "model")
    model = build_separator(cfg)
    model.load_state_dict(ck["state_dict"])
    return model.to(device).eval(), cfg, ck.get("meta", {})
