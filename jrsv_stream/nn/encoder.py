"""Chunked streaming conformer encoder (WeNet U2 style) with explicit caches.

Pipeline: features (B, T, F) at 10 ms -> causal conv2d subsampling x4 (40 ms frames) ->
+ track embedding -> conformer blocks (macaron FF, chunk-limited self-attention with a
learned relative position bias, causal depthwise convolution, FF, LayerNorm).

Streaming rules (what makes ``forward`` with a chunk mask equal chained ``step``):

- **Subsampling** left-pads 3 feature frames, so output frame ``i`` depends on feature
  frames ``4i-3 .. 4i+3`` only: ``T`` features give ``T // 4`` frames, and ``4c`` new
  features always give ``c`` frames (cache: the 3..6 features not consumed yet).
- **Attention**: in ``forward`` frame ``t`` of chunk ``k = t // chunk_frames`` attends to
  chunks ``max(0, k - left_chunks) .. k`` (all earlier chunks when ``left_chunks < 0``;
  everything when ``chunk_frames`` is None). In ``step`` one call is one chunk: it attends
  to the K/V cache (the last ``left_chunks * chunk`` frames) and to itself. Positions enter
  only as a per-head bias on the clipped distance ``j - i``, so a stream can run for hours
  with no absolute position drifting out of range.
- **Convolution** is causal (left padding offline, a ``K-1`` frame cache in steps) and its
  norm is a per-frame LayerNorm (no batch statistics).

The algorithmic latency is the chunk: an output frame never depends on audio after the end
of its chunk (``lookahead`` = 0 beyond the chunk).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from jrsv_stream.nn.streaming import CausalConv1d, ConvState

SUBSAMPLING = 4
SUBSAMPLING_CONTEXT = 3  # feature frames of left padding / minimum cache in the subsampling


@dataclass(frozen=True)
class ConformerConfig:
    """Encoder hyper-parameters (frames are 40 ms encoder frames unless named otherwise).

    ``type`` picks the encoder (:func:`build_encoder`): ``conformer`` (chunked attention,
    the fields below up to ``att_dropout``) or ``lstm`` (:class:`LSTMEncoder`: ``subsampling``
    conv2d or frame stacking, the track embedding, then ``lstm_layers`` unidirectional LSTM
    layers of ``lstm_hidden`` units, projected to ``d_model`` when the two differ).
    """

    type: str = "conformer"
    input_dim: int = 80
    d_model: int = 144
    n_heads: int = 4
    ff_dim: int = 576
    n_layers: int = 8
    conv_kernel: int = 15
    subsampling_channels: int = 64
    max_rel_frames: int = 64  # relative position bias shared beyond this distance
    n_tracks: int = 2  # learned track embeddings (0 = none)
    dropout: float = 0.1
    att_dropout: float = 0.0
    lstm_layers: int = 4
    lstm_hidden: int = 384
    subsampling: str = "conv2d"  # conv2d (CausalSubsampling) | stack (StackSubsampling)


class EncoderState(NamedTuple):
    """Streaming state of :class:`ConformerEncoder` (B = streams, L = layers).

    sub_cache: (B, T_sub, F) feature frames not consumed by the subsampling (conv2d:
        3 <= T_sub <= 6, 3 when steps get multiples of 4 features; stack: 0 <= T_sub < 4).
    att_cache: (B, L, H, T_cache, 2 * d_k) keys and values of past frames, per layer.
    cache_mask: (B, T_cache) bool, True where ``att_cache`` holds a real frame (False for
        the initial empty slots, or left padding when streams of different ages are batched).
    cnn_cache: (B, L, d_model, conv_kernel - 1) inputs of the causal depthwise convolutions.
    offset: (B,) long, encoder frames emitted so far.
    """

    sub_cache: torch.Tensor
    att_cache: torch.Tensor
    cache_mask: torch.Tensor
    cnn_cache: torch.Tensor
    offset: torch.Tensor


def chunk_attention_mask(n_frames: int, chunk_frames: int | None, left_chunks: int = -1,
                         device: torch.device | str = "cpu") -> torch.Tensor:
    """Allowed (query, key) pairs for chunked attention.

    Returns:
        (T, T) bool, ``mask[i, j]`` True when frame ``i`` may attend to frame ``j``.
    """
    if chunk_frames is None or chunk_frames <= 0:
        return torch.ones(n_frames, n_frames, dtype=torch.bool, device=device)
    c = torch.arange(n_frames, device=device) // chunk_frames
    mask = c[None, :] <= c[:, None]
    if left_chunks >= 0:
        mask &= c[None, :] >= c[:, None] - left_chunks
    return mask


def relative_distances(n_frames: int, cache_frames: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(T, T_cache + T) long: key position minus query position, keys = cache then the new frames."""
    return (torch.arange(-cache_frames, n_frames, device=device)[None, :]
            - torch.arange(n_frames, device=device)[:, None])


def make_track_embedding(n_tracks: int, d_model: int) -> nn.Embedding | None:
    """Learned per-track vectors (0 speech, 1 singing) added to the encoder input; None when
    ``n_tracks`` is 0 (a single-track model)."""
    if n_tracks <= 0:
        return None
    emb = nn.Embedding(n_tracks, d_model)
    nn.init.normal_(emb.weight, std=0.1)
    return emb


def add_track_embedding(x: torch.Tensor, emb: nn.Embedding | None, tracks: torch.Tensor | None) -> torch.Tensor:
    """x: (B, T, D) + the embedding of each row's track ((B,) long; None = track 0)."""
    if emb is None:
        return x
    t = torch.zeros(x.shape[0], dtype=torch.long, device=x.device) if tracks is None else tracks
    return x + emb(t).unsqueeze(1)


class CausalSubsampling(nn.Module):
    """Two conv2d (kernel 3, stride 2) over (time, freq) with 3 frames of causal left padding.

    (B, T, F) -> (B, T // 4, d_model).
    """

    def __init__(self, input_dim: int, channels: int, d_model: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, channels, 3, 2), nn.ReLU(), nn.Conv2d(channels, channels, 3, 2), nn.ReLU())
        f_out = ((input_dim - 1) // 2 - 1) // 2
        self.out = nn.Linear(channels * f_out, d_model)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 4n + 3, F) with the causal context first -> (B, n, d_model)."""
        n = (x.shape[1] - SUBSAMPLING_CONTEXT) // SUBSAMPLING
        if n <= 0:
            return x.new_zeros(x.shape[0], 0, self.out.out_features)
        y = self.conv(x[:, : SUBSAMPLING * n + SUBSAMPLING_CONTEXT].unsqueeze(1))  # (B, C, n, f)
        B, C, T, f = y.shape
        return self.out(y.transpose(1, 2).reshape(B, T, C * f))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self._encode(nn.functional.pad(feats, (0, 0, SUBSAMPLING_CONTEXT, 0)))

    def step(self, feats: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats: (B, T, F), cache: (B, T_sub, F) -> (B, n, d_model), new cache."""
        full = torch.cat([cache, feats], dim=1)
        n = max(0, (full.shape[1] - SUBSAMPLING_CONTEXT) // SUBSAMPLING)
        return self._encode(full), full[:, SUBSAMPLING * n:]


class FeedForward(nn.Module):
    def __init__(self, d_model: int, ff_dim: int):
        super().__init__()
        # no dropout on the wide hidden layer: on CPU it costs more than it regularizes here
        # (the residual dropout of the block remains)
        self.net = nn.Sequential(nn.Linear(d_model, ff_dim), nn.SiLU(), nn.Linear(ff_dim, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class RelBiasAttention(nn.Module):
    """Multi-head self-attention with a learned per-head bias on the clipped distance j - i."""

    def __init__(self, d_model: int, n_heads: int, max_rel_frames: int, dropout: float):
        super().__init__()
        assert d_model % n_heads == 0, "d_model must be divisible by n_heads"
        self.h, self.d_k, self.max_rel = n_heads, d_model // n_heads, max_rel_frames
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.rel_bias = nn.Parameter(torch.zeros(n_heads, 2 * max_rel_frames + 1))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, rel: torch.Tensor,
                kv_cache: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Attend from the frames of ``x`` to ``[kv_cache, x]``.

        Args:
            x: (B, T, D) queries (and new keys/values).
            mask: (B, T, T_cache + T) bool, True = may attend.
            rel: (T, T_cache + T) long distances ``j - i`` (see :func:`relative_distances`).
            kv_cache: (B, H, T_cache, 2 * d_k) keys and values of the frames just before ``x``.

        Returns:
            (B, T, D) output and the (B, H, T, 2 * d_k) keys/values of ``x``.
        """
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.h, self.d_k).permute(2, 0, 3, 1, 4)  # each (B, H, T, d_k)
        new_kv = torch.cat([k, v], dim=-1)
        if kv_cache is not None and kv_cache.shape[2] > 0:
            ck, cv = kv_cache.split(self.d_k, dim=-1)
            k, v = torch.cat([ck, k], dim=2), torch.cat([cv, v], dim=2)
        bias = self.rel_bias[:, rel.clamp(-self.max_rel, self.max_rel) + self.max_rel]  # (H, T, T_cache + T)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.d_k) + bias
        m = mask.unsqueeze(1)
        att = torch.softmax(scores.masked_fill(~m, float("-inf")), dim=-1).masked_fill(~m, 0.0)  # rows with no key -> 0
        y = torch.matmul(self.dropout(att), v).transpose(1, 2).reshape(B, T, self.h * self.d_k)
        return self.out(y), new_kv


class ConvModule(nn.Module):
    """Pointwise conv + GLU, causal depthwise conv, LayerNorm, SiLU, pointwise conv."""

    def __init__(self, d_model: int, kernel: int, dropout: float):
        super().__init__()
        self.pw1 = nn.Linear(d_model, 2 * d_model)
        self.dw = CausalConv1d(d_model, d_model, kernel, groups=d_model)
        self.norm = nn.LayerNorm(d_model)
        self.pw2 = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cache: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, T, D), cache: (B, D, K-1) or None (offline: zero left padding)."""
        h = nn.functional.glu(self.pw1(x), dim=-1).transpose(1, 2)  # (B, D, T)
        if cache is None:
            h, new_cache = self.dw(h), None
        else:
            h, st = self.dw.step(h, ConvState(cache))
            new_cache = st.cache
        h = nn.functional.silu(self.norm(h.transpose(1, 2)))
        return self.pw2(self.dropout(h)), new_cache


class ConformerBlock(nn.Module):
    def __init__(self, cfg: ConformerConfig):
        super().__init__()
        d = cfg.d_model
        self.ff1, self.ff2 = FeedForward(d, cfg.ff_dim), FeedForward(d, cfg.ff_dim)
        self.att = RelBiasAttention(d, cfg.n_heads, cfg.max_rel_frames, cfg.att_dropout)
        self.conv = ConvModule(d, cfg.conv_kernel, cfg.dropout)
        self.norm_ff1, self.norm_att, self.norm_conv, self.norm_ff2, self.norm_out = (nn.LayerNorm(d) for _ in range(5))
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, rel: torch.Tensor, kv_cache: torch.Tensor | None = None,
                cnn_cache: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """x: (B, T, D); mask: (B, T, T_cache + T); rel: (T, T_cache + T) distances;
        returns (y, new K/V (B, H, T, 2 d_k), new conv cache)."""
        x = x + 0.5 * self.dropout(self.ff1(self.norm_ff1(x)))
        a, new_kv = self.att(self.norm_att(x), mask, rel, kv_cache)
        x = x + self.dropout(a)
        c, new_cnn = self.conv(self.norm_conv(x), cnn_cache)
        x = x + self.dropout(c)
        x = x + 0.5 * self.dropout(self.ff2(self.norm_ff2(x)))
        return self.norm_out(x), new_kv, new_cnn


class ConformerEncoder(nn.Module):
    """Streaming conformer: (B, T, F) features at 10 ms -> (B, T // 4, d_model) at 40 ms.

    ``frame_ms`` = 40; one ``step`` is one chunk of ``4 * chunk_frames`` feature frames;
    ``lookahead_frames`` = 0 beyond the chunk.
    """

    subsampling = SUBSAMPLING
    lookahead_frames = 0

    def __init__(self, cfg: ConformerConfig = ConformerConfig()):
        super().__init__()
        self.cfg = cfg
        self.embed, self._sub_context = make_subsampling(cfg)
        self.track_embed = make_track_embedding(cfg.n_tracks, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(ConformerBlock(cfg) for _ in range(cfg.n_layers))

    @property
    def output_dim(self) -> int:
        return self.cfg.d_model

    def _input(self, x: torch.Tensor, tracks: torch.Tensor | None) -> torch.Tensor:
        return self.dropout(add_track_embedding(x, self.track_embed, tracks))

    def forward(self, feats: torch.Tensor, feat_lens: torch.Tensor, chunk_frames: int | None = None,
                left_chunks: int = -1, tracks: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Whole sequences with a chunk mask (training, offline decoding).

        Args:
            feats: (B, T, F) normalized features.
            feat_lens: (B,) valid feature frames.
            chunk_frames: attention chunk in encoder frames; None = full context.
            left_chunks: chunks of left context; < 0 = all.
            tracks: (B,) long track ids (0 speech, 1 singing); None = 0.

        Returns:
            enc_out (B, T // 4, d_model) and enc_lens (B,) = feat_lens // 4.
        """
        x = self._input(self.embed(feats), tracks)
        T = x.shape[1]
        lens = torch.div(feat_lens, SUBSAMPLING, rounding_mode="floor")
        valid = torch.arange(T, device=x.device)[None, :] < lens[:, None]  # (B, T)
        mask = chunk_attention_mask(T, chunk_frames, left_chunks, x.device)[None] & valid[:, None, :]
        rel = relative_distances(T, 0, x.device)
        for layer in self.layers:
            x, _, _ = layer(x, mask, rel)
        return x, lens

    def init_state(self, batch: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                   cache_frames: int = 0) -> EncoderState:
        """Empty state; ``cache_frames`` > 0 preallocates that many (masked) K/V slots."""
        c = self.cfg
        d_k = c.d_model // c.n_heads
        return EncoderState(
            sub_cache=torch.zeros(batch, self._sub_context, c.input_dim, device=device, dtype=dtype),
            att_cache=torch.zeros(batch, c.n_layers, c.n_heads, cache_frames, 2 * d_k, device=device, dtype=dtype),
            cache_mask=torch.zeros(batch, cache_frames, dtype=torch.bool, device=device),
            cnn_cache=torch.zeros(batch, c.n_layers, c.d_model, c.conv_kernel - 1, device=device, dtype=dtype),
            offset=torch.zeros(batch, dtype=torch.long, device=device),
        )

    def step(self, feat_chunk: torch.Tensor, state: EncoderState, left_chunks: int = -1,
             tracks: torch.Tensor | None = None) -> tuple[torch.Tensor, EncoderState]:
        """Encode one chunk.

        Args:
            feat_chunk: (B, 4 * c, F) features of one chunk of ``c`` encoder frames (the
                last chunk of a stream may be shorter).
            state: from :meth:`init_state` or the previous step (not modified).
            left_chunks: K/V cache kept after this step = ``left_chunks * c`` frames (< 0: all).
            tracks: (B,) long track ids; None = 0.

        Returns:
            enc_out (B, c, d_model) and the new state.
        """
        x, sub_cache = self.embed.step(feat_chunk, state.sub_cache)
        T = x.shape[1]
        if T == 0:
            return x, state._replace(sub_cache=sub_cache)
        x = self._input(x, tracks)
        B = x.shape[0]
        key_valid = torch.cat([state.cache_mask, torch.ones(B, T, dtype=torch.bool, device=x.device)], dim=1)
        mask = key_valid[:, None, :].expand(B, T, key_valid.shape[1])
        rel = relative_distances(T, state.att_cache.shape[3], x.device)
        new_kv, new_cnn = [], []
        for i, layer in enumerate(self.layers):
            x, kv, cnn = layer(x, mask, rel, state.att_cache[:, i], state.cnn_cache[:, i])
            new_kv.append(kv)
            new_cnn.append(cnn)
        att = torch.cat([state.att_cache, torch.stack(new_kv, dim=1)], dim=3)
        if left_chunks >= 0:
            start = max(0, att.shape[3] - left_chunks * T)
            att, key_valid = att[:, :, :, start:], key_valid[:, start:]
        return x, EncoderState(sub_cache, att, key_valid, torch.stack(new_cnn, dim=1), state.offset + T)


class StackSubsampling(nn.Module):
    """Frame stacking: features ``4i .. 4i+3`` concatenated -> linear -> ReLU.

    (B, T, F) -> (B, T // 4, d_model). Output frame ``i`` depends on feature frames
    ``4i .. 4i+3`` only (no left context); ``step`` keeps the ``T mod 4`` features not
    consumed yet (none when chunks are multiples of 4 features, as in the live path).
    """

    def __init__(self, input_dim: int, d_model: int):
        super().__init__()
        self.out = nn.Linear(SUBSAMPLING * input_dim, d_model)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        B, T, F = x.shape
        n = T // SUBSAMPLING
        return torch.relu(self.out(x[:, : SUBSAMPLING * n].reshape(B, n, SUBSAMPLING * F)))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self._encode(feats)

    def step(self, feats: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats: (B, T, F), cache: (B, T_sub < 4, F) -> (B, n, d_model), new cache."""
        full = torch.cat([cache, feats], dim=1)
        n = full.shape[1] // SUBSAMPLING
        return self._encode(full), full[:, SUBSAMPLING * n:]


def make_subsampling(cfg: "ConformerConfig") -> tuple[nn.Module, int]:
    """The front end ``cfg.subsampling`` names and its initial ``sub_cache`` length in feature
    frames: conv2d (:class:`CausalSubsampling`, 3) or frame stacking (:class:`StackSubsampling`, 0)."""
    if cfg.subsampling == "conv2d":
        return CausalSubsampling(cfg.input_dim, cfg.subsampling_channels, cfg.d_model), SUBSAMPLING_CONTEXT
    if cfg.subsampling == "stack":
        return StackSubsampling(cfg.input_dim, cfg.d_model), 0
    raise ValueError(f"encoder.subsampling must be conv2d or stack, got {cfg.subsampling!r}")


class LSTMEncoderState(NamedTuple):
    """Streaming state of :class:`LSTMEncoder` (B = streams, L = LSTM layers, H = hidden).

    sub_cache: (B, T_sub, F) feature frames not consumed by the subsampling (conv2d: as in
        :class:`EncoderState`; stack: 0 <= T_sub < 4, 0 in the live path).
    h, c: (B, L, H) LSTM hidden and cell states after the last emitted frame.
    offset: (B,) long, encoder frames emitted so far.
    """

    sub_cache: torch.Tensor
    h: torch.Tensor
    c: torch.Tensor
    offset: torch.Tensor


class LSTMEncoder(nn.Module):
    """Causal recurrent encoder: (B, T, F) features at 10 ms -> (B, T // 4, d_model) at 40 ms.

    Causal subsampling (``subsampling``: conv2d as the conformer, or frame stacking) + track
    embedding -> unidirectional LSTM -> linear projection + LayerNorm (none when
    ``lstm_hidden == d_model``: the LSTM output is the encoder output). Every output frame
    depends on past input only, so ``chunk_frames``/``left_chunks`` do not change its output
    (they are accepted for the common encoder interface): streaming equals full context for
    every chunk size, and a chunk of ``c`` frames only sets the latency. ``lookahead_frames`` = 0.
    """

    subsampling = SUBSAMPLING
    lookahead_frames = 0

    def __init__(self, cfg: ConformerConfig):
        super().__init__()
        self.cfg = cfg
        self.embed, self._sub_context = make_subsampling(cfg)
        self.track_embed = make_track_embedding(cfg.n_tracks, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.lstm = nn.LSTM(cfg.d_model, cfg.lstm_hidden, cfg.lstm_layers, batch_first=True,
                            dropout=cfg.dropout if cfg.lstm_layers > 1 else 0.0)
        if cfg.lstm_hidden != cfg.d_model:
            self.proj: nn.Module = nn.Sequential(nn.Linear(cfg.lstm_hidden, cfg.d_model), nn.LayerNorm(cfg.d_model))
        else:
            self.proj = nn.Identity()

    @property
    def output_dim(self) -> int:
        return self.cfg.d_model

    def _input(self, x: torch.Tensor, tracks: torch.Tensor | None) -> torch.Tensor:
        return self.dropout(add_track_embedding(x, self.track_embed, tracks))

    def _run(self, x: torch.Tensor, h: torch.Tensor | None, c: torch.Tensor | None):
        hc = None if h is None else (h.transpose(0, 1).contiguous(), c.transpose(0, 1).contiguous())
        y, (h1, c1) = self.lstm(x, hc)
        return self.proj(self.dropout(y)), h1.transpose(0, 1), c1.transpose(0, 1)

    def forward(self, feats: torch.Tensor, feat_lens: torch.Tensor, chunk_frames: int | None = None,
                left_chunks: int = -1, tracks: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Whole sequences: enc_out (B, T // 4, d_model), enc_lens (B,) = feat_lens // 4.
        Frames past a row's length hold garbage (they never affect valid frames)."""
        y, _, _ = self._run(self._input(self.embed(feats), tracks), None, None)
        return y, torch.div(feat_lens, SUBSAMPLING, rounding_mode="floor")

    def init_state(self, batch: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                   cache_frames: int = 0) -> LSTMEncoderState:
        """Zero state (``cache_frames`` is ignored: a recurrent encoder keeps no frame cache)."""
        c = self.cfg
        z = torch.zeros(batch, c.lstm_layers, c.lstm_hidden, device=device, dtype=dtype)
        return LSTMEncoderState(torch.zeros(batch, self._sub_context, c.input_dim, device=device, dtype=dtype),
                                z, z.clone(), torch.zeros(batch, dtype=torch.long, device=device))

    def step(self, feat_chunk: torch.Tensor, state: LSTMEncoderState, left_chunks: int = -1,
             tracks: torch.Tensor | None = None) -> tuple[torch.Tensor, LSTMEncoderState]:
        """feat_chunk: (B, 4 * c, F) -> enc_out (B, c, d_model) and the new state (not in place)."""
        x, sub_cache = self.embed.step(feat_chunk, state.sub_cache)
        if x.shape[1] == 0:
            return x, state._replace(sub_cache=sub_cache)
        y, h, c = self._run(self._input(x, tracks), state.h.to(x.dtype), state.c.to(x.dtype))
        return y, LSTMEncoderState(sub_cache, h, c, state.offset + x.shape[1])


ENCODER_TYPES = ("conformer", "lstm")


def build_encoder(cfg: ConformerConfig) -> nn.Module:
    """The encoder ``cfg.type`` names (both share the streaming interface of :class:`ConformerEncoder`)."""
    if cfg.type == "conformer":
        return ConformerEncoder(cfg)
    if cfg.type == "lstm":
        return LSTMEncoder(cfg)
    raise ValueError(f"encoder.type must be one of {list(ENCODER_TYPES)}, got {cfg.type!r}")
