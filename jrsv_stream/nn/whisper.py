"""Whisper in PyTorch: log-mel front end, encoder, decoder with an explicit key/value cache.

Module and parameter names follow openai-whisper's ``whisper/model.py``
(``encoder.blocks.0.attn.query.weight``, ``decoder.token_embedding.weight``, ...), so an
openai checkpoint loads with the identity mapping; CTranslate2 files are mapped in
:mod:`jrsv_stream.nn.whisper_weights`.

Shapes and units: audio at 16 kHz; mel frames every 10 ms, (B, n_mels, T) with T even and
T <= 3000; audio features every 20 ms, (B, T // 2, n_audio_state); tokens (B, L) -> logits
(B, L, n_vocab).

Decoder cache (:class:`DecoderCache`, a ``dict``; a plain ``{}`` works too): created empty
by the caller, passed to :meth:`WhisperDecoder.forward` and **mutated in place** (the
forward returns logits only). Entries: ``"self.{i}"`` -> (k, v) of layer i's self-attention
over all tokens fed so far, each (B, n_head, L, d_head); ``"cross.{i}"`` -> (k, v) of the
audio features, (B, n_head, S, d_head), computed on the first call and reused after (the
caller must use a fresh cache for new audio). :func:`cache_reorder` selects / repeats rows
(beam search); once the cross entries exist, ``xa`` may be ``None``.

Boolean attention masks follow ``scaled_dot_product_attention``: True = may attend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DecoderCache", "HOP", "N_FFT", "N_FRAMES", "N_SAMPLES", "SAMPLE_RATE", "WhisperDecoder",
    "WhisperDims", "WhisperEncoder", "WhisperModel", "cache_length", "cache_reorder", "cache_truncate",
    "faster_whisper_mel", "log10_mel", "log_mel", "mel_filters", "normalize_log_mel",
    "pad_or_trim", "repeat_features",
]

SAMPLE_RATE = 16000
N_FFT = 400
HOP = HOP_LENGTH = 160
N_FRAMES = 3000  # mel frames in Whisper's 30 s window
N_SAMPLES = N_FRAMES * HOP  # 480000


@dataclass(frozen=True)
class WhisperDims:
    """Model sizes (field names as openai-whisper's ``ModelDimensions``)."""

    n_mels: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int


class LayerNorm(nn.LayerNorm):
    """LayerNorm (eps 1e-5) computed in float32 whatever the parameter dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


class MultiHeadAttention(nn.Module):
    """Whisper attention: query/value/out with bias, key without."""

    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        if n_state % n_head:
            raise ValueError(f"n_state {n_state} not divisible by n_head {n_head}")
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, H, T, D / H)."""
        B, T, D = x.shape
        return x.view(B, T, self.n_head, D // self.n_head).transpose(1, 2)

    def merge_out(self, o: torch.Tensor) -> torch.Tensor:
        """(B, H, T, Dh) -> out projection of (B, T, H * Dh)."""
        B, H, T, Dh = o.shape
        return self.out(o.transpose(1, 2).reshape(B, T, H * Dh))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask=None,
               causal: bool = False) -> torch.Tensor:
        """Projected q (B, Tq, D), k/v (B, Tk, D) -> (B, Tq, D) after the out projection."""
        o = F.scaled_dot_product_attention(self.split(q), self.split(k), self.split(v), attn_mask=mask,
                                           is_causal=causal and mask is None and q.shape[1] > 1)
        return self.merge_out(o)

    def forward(self, x: torch.Tensor, xa: torch.Tensor | None = None, mask=None) -> torch.Tensor:
        """Self-attention (``xa`` None) or cross-attention over ``xa``, no cache."""
        src = x if xa is None else xa
        return self.attend(self.query(x), self.key(src), self.value(src), mask)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: x + attn(ln(x)) [+ cross_attn(ln(x), xa)] + mlp(ln(x))."""

    def __init__(self, n_state: int, n_head: int, cross_attention: bool = False):
        super().__init__()
        self.attn = MultiHeadAttention(n_state, n_head)
        self.attn_ln = LayerNorm(n_state)
        self.cross_attn = MultiHeadAttention(n_state, n_head) if cross_attention else None
        self.cross_attn_ln = LayerNorm(n_state) if cross_attention else None
        self.mlp = nn.Sequential(nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state))
        self.mlp_ln = LayerNorm(n_state)

    def forward(self, x: torch.Tensor, xa: torch.Tensor | None = None, mask=None,
                cache: dict | None = None, layer: int = 0) -> torch.Tensor:
        a = self.attn
        h = self.attn_ln(x)
        q, k, v = a.split(a.query(h)), a.split(a.key(h)), a.split(a.value(h))
        if cache is not None:
            key = f"self.{layer}"
            if key in cache:
                pk, pv = cache[key]
                k, v = torch.cat([pk, k], 2), torch.cat([pv, v], 2)
            cache[key] = (k, v)
        x = x + a.merge_out(F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
        if self.cross_attn is not None:
            c = self.cross_attn
            key = f"cross.{layer}"
            if cache is not None and key in cache:
                ck, cv = cache[key]
            else:
                if xa is None:
                    raise ValueError("xa is None and the cache holds no cross-attention keys/values")
                ck, cv = c.split(c.key(xa)), c.split(c.value(xa))
                if cache is not None:
                    cache[key] = (ck, cv)
            h = self.cross_attn_ln(x)
            if ck.shape[0] == 1 < h.shape[0]:  # one utterance's keys shared by its beams
                ck, cv = ck.expand(h.shape[0], -1, -1, -1), cv.expand(h.shape[0], -1, -1, -1)
            x = x + c.merge_out(F.scaled_dot_product_attention(c.split(c.query(h)), ck, cv))
        return x + self.mlp(self.mlp_ln(x))


class WhisperEncoder(nn.Module):
    """conv1 (k3, p1) + GELU, conv2 (k3, s2, p1) + GELU, + positional embedding, pre-LN
    blocks, ln_post."""

    def __init__(self, dims: WhisperDims):
        super().__init__()
        d = dims.n_audio_state
        self.conv1 = nn.Conv1d(dims.n_mels, d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", _sinusoids(dims.n_audio_ctx, d))
        self.blocks = nn.ModuleList(ResidualAttentionBlock(d, dims.n_audio_head) for _ in range(dims.n_audio_layer))
        self.ln_post = LayerNorm(d)

    def forward(self, mel: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """mel (B, n_mels, T), T even, T // 2 <= n_audio_ctx -> (B, T // 2, n_audio_state).

        ``attn_mask``: None, or a (T // 2, T // 2) float mask (added to the attention
        logits) or bool mask (True = may attend), used by every self-attention (e.g. a
        block-causal mask for streaming)."""
        T = mel.shape[-1]
        ctx = self.positional_embedding.shape[0]
        if mel.dim() != 3 or T % 2 or T // 2 > ctx or T == 0:
            raise ValueError(f"mel must be (B, n_mels, T) with T even and 0 < T <= {2 * ctx}, got {tuple(mel.shape)}")
        if attn_mask is not None and tuple(attn_mask.shape[-2:]) != (T // 2, T // 2):
            raise ValueError(f"attn_mask must be ({T // 2}, {T // 2}), got {tuple(attn_mask.shape)}")
        w = self.conv1.weight
        x = F.gelu(self.conv1(mel.to(w.dtype)))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        x = x + self.positional_embedding[: x.shape[1]].to(x.dtype)
        if attn_mask is not None and attn_mask.dtype != torch.bool:
            attn_mask = attn_mask.to(x.dtype)
        for block in self.blocks:
            x = block(x, mask=attn_mask)
        return self.ln_post(x)


class DecoderCache(dict):
    """The decoder's key/value cache: a plain ``dict`` (see the module docstring) with
    helpers. Mutated in place by :meth:`WhisperDecoder.forward`."""

    @property
    def length(self) -> int:
        """Number of tokens whose keys/values are cached."""
        return cache_length(self)

    def reorder(self, idx: torch.Tensor) -> "DecoderCache":
        return cache_reorder(self, idx)


def cache_length(cache: dict | None) -> int:
    """Tokens held by ``cache`` (0 for None / empty)."""
    if not cache or "self.0" not in cache:
        return 0
    return int(cache["self.0"][0].shape[2])


def cache_reorder(cache: dict, idx: torch.Tensor | list[int], cross: bool = True) -> dict:
    """Keep / repeat batch rows ``idx`` of every cached tensor (beam search), **in place**;
    returns the same ``cache``. ``idx`` (B',) of row indices, repeats allowed.
    ``cross=False``: the cross-attention keys/values are left as they are (one utterance's
    beams: a single row that every beam shares, broadcast in the attention), which saves
    copying (beams, audio frames, width) per layer at every step."""
    if not cache:
        return cache
    any_t = next(iter(cache.values()))[0]
    idx = torch.as_tensor(idx, dtype=torch.long, device=any_t.device)
    for key, (k, v) in list(cache.items()):
        if cross or not key.startswith("cross."):
            cache[key] = (k.index_select(0, idx), v.index_select(0, idx))
    return cache


def cache_truncate(cache: dict, length: int) -> dict:
    """Keep the first ``length`` tokens of the self-attention keys/values, **in place**
    (speculative decoding: the draft's tokens past the first rejected one); returns ``cache``."""
    for key, (k, v) in list(cache.items()):
        if key.startswith("self."):
            cache[key] = (k[:, :, :length], v[:, :, :length])
    return cache


def repeat_features(xa: torch.Tensor, n: int) -> torch.Tensor:
    """(B, S, D) -> (B * n, S, D), each row repeated ``n`` times consecutively (beams)."""
    return xa.repeat_interleave(n, dim=0)


class WhisperDecoder(nn.Module):
    """Token embedding (tied output), learned positions, blocks with causal self-attention,
    cross-attention and MLP, final ln."""

    def __init__(self, dims: WhisperDims):
        super().__init__()
        d = dims.n_text_state
        self.token_embedding = nn.Embedding(dims.n_vocab, d)
        self.positional_embedding = nn.Parameter(torch.zeros(dims.n_text_ctx, d))
        self.blocks = nn.ModuleList(
            ResidualAttentionBlock(d, dims.n_text_head, cross_attention=True) for _ in range(dims.n_text_layer))
        self.ln = LayerNorm(d)

    def forward(self, tokens: torch.Tensor, xa: torch.Tensor | None, cache: dict | None = None,
                offset: int = 0) -> torch.Tensor:
        """tokens (B, L), xa (B, S, n_audio_state) -> logits (B, L, n_vocab).

        Without ``cache``: the L tokens sit at positions ``offset .. offset + L - 1`` and see
        each other causally. With ``cache`` (a dict, mutated in place): ``tokens`` are the
        new tokens after the cached ones; their positions start at the cache length
        (``offset`` may be left 0 or must equal it)."""
        L = tokens.shape[1]
        past = cache_length(cache)
        if past:
            if offset not in (0, past):
                raise ValueError(f"offset {offset} != cached length {past}")
            offset = past
        if offset + L > self.positional_embedding.shape[0]:
            raise ValueError(f"{offset + L} tokens exceed the text context {self.positional_embedding.shape[0]}")
        x = self.token_embedding(tokens) + self.positional_embedding[offset: offset + L]
        mask = None
        if L > 1:
            Lk = past + L
            mask = torch.ones(L, Lk, dtype=torch.bool, device=x.device).tril(Lk - L)
        for i, block in enumerate(self.blocks):
            x = block(x, xa, mask, cache, i)
        x = self.ln(x)
        out = getattr(self, "output", None)  # an int8 copy of the tied projection (whisper_int8.py)
        if out is not None:
            return out(x)
        return F.linear(x, self.token_embedding.weight.to(x.dtype))


class WhisperModel(nn.Module):
    """Encoder + decoder (+ ``tokenizer``, a :class:`~jrsv_stream.nn.whisper_tokenizer.WhisperTokenizer`
    or None). ``name``: e.g. "tiny.en"."""

    def __init__(self, dims: WhisperDims, tokenizer=None, name: str = "whisper"):
        super().__init__()
        self.dims = dims
        self.encoder = WhisperEncoder(dims)
        self.decoder = WhisperDecoder(dims)
        self.tokenizer = tokenizer
        self.name = name

    @property
    def is_multilingual(self) -> bool:
        return self.dims.n_vocab >= 51865

    def embed_audio(self, mel: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder(mel, attn_mask)

    def logits(self, tokens: torch.Tensor, audio_features: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        return self.decoder(tokens, audio_features, cache)

    def forward(self, mel: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.decoder(tokens, self.encoder(mel))


def _sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's encoder positions: [sin | cos] with geometric timescales (the loaded
    weights overwrite this buffer)."""
    half = channels // 2
    inc = math.log(max_timescale) / (half - 1)
    inv = torch.exp(-inc * torch.arange(half, dtype=torch.float32))
    t = torch.arange(length, dtype=torch.float32)[:, None] * inv[None]
    return torch.cat([t.sin(), t.cos()], dim=1)


# ---------------------------------------------------------------------- front end
_FILTERS: dict = {}
_WINDOWS: dict = {}


def mel_filters(n_mels: int = 80, device=None) -> torch.Tensor:
    """Slaney-scale, Slaney-normalized triangular mel filters over 0-8 kHz (librosa's
    default, Whisper's): (N_FFT // 2 + 1, n_mels) = (201, n_mels), float32."""
    key = (n_mels, str(device))
    if key not in _FILTERS:
        import torchaudio.functional as AF

        _FILTERS[key] = AF.melscale_fbanks(N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, n_mels, SAMPLE_RATE,
                                           norm="slaney", mel_scale="slaney").to(device)
    return _FILTERS[key]


def _hann(device) -> torch.Tensor:
    key = str(device)
    if key not in _WINDOWS:
        _WINDOWS[key] = torch.hann_window(N_FFT, periodic=True, device=device)
    return _WINDOWS[key]


def log10_mel(audio: torch.Tensor, n_mels: int = 80) -> torch.Tensor:
    """Raw log10 mel power: audio (N,) or (B, N) at 16 kHz -> (B, n_mels, N // 160).

    STFT n_fft 400, hop 160, periodic Hann, center=True (reflect pad 200), last frame
    dropped, power spectrum, Slaney mel, log10(max(mel, 1e-10)); computed in float32."""
    a = torch.as_tensor(audio)
    a = (a if a.dim() == 2 else a[None]).float()
    if a.dim() != 2 or a.shape[-1] <= N_FFT // 2:
        raise ValueError(f"audio must be (N,) or (B, N) with N > {N_FFT // 2}, got {tuple(audio.shape)}")
    st = torch.stft(a, N_FFT, HOP, window=_hann(a.device), center=True, pad_mode="reflect", return_complex=True)
    power = st[..., :-1].abs().pow(2)  # (B, 201, N // 160)
    mel = torch.matmul(mel_filters(n_mels, a.device).T, power)
    return mel.clamp_min(1e-10).log10()


def normalize_log_mel(logmel: torch.Tensor, ref_max=None) -> torch.Tensor:
    """Whisper's floor and scaling: ``(max(x, ref_max - 8) + 4) / 4``.

    ``ref_max``: None -> the maximum of each batch row (Whisper's whole-input maximum), or a
    float / (B,) tensor chosen by the caller (e.g. a running maximum for streaming).
    Values above ``ref_max`` are left as they are."""
    if ref_max is None:
        ref = logmel.amax(dim=(-2, -1))
    else:
        ref = torch.as_tensor(ref_max, dtype=logmel.dtype, device=logmel.device)
        if ref.dim() == 0:
            ref = ref.expand(logmel.shape[0])
    return (torch.maximum(logmel, ref.reshape(-1, 1, 1) - 8.0) + 4.0) / 4.0


def log_mel(audio: torch.Tensor, n_mels: int = 80) -> torch.Tensor:
    """Whisper's log-mel: (N,) or (B, N) at 16 kHz -> (B, n_mels, N // 160), floored at
    (max over the whole input - 8) and scaled (x + 4) / 4."""
    return normalize_log_mel(log10_mel(audio, n_mels))


def pad_or_trim(x, length: int = N_SAMPLES, axis: int = -1):
    """Zero-pad or cut ``axis`` of a tensor / array to ``length``: N_SAMPLES (480000) for
    audio (the default), N_FRAMES (3000) for a mel."""
    n = x.shape[axis]
    if isinstance(x, np.ndarray):
        if n > length:
            return np.take(x, np.arange(length), axis=axis)
        widths = [(0, 0)] * x.ndim
        widths[axis] = (0, length - n)
        return np.pad(x, widths) if n < length else x
    if n > length:
        return x.narrow(axis, 0, length)
    if n < length:
        ax = axis % x.dim()
        pad = [0, 0] * (x.dim() - 1 - ax) + [0, length - n]
        return F.pad(x, pad)
    return x


def faster_whisper_mel(audio: torch.Tensor, n_mels: int = 80, n_frames: int = N_FRAMES) -> torch.Tensor:
    """The 30 s encoder input exactly as faster-whisper builds it for a clip of at most 30 s:
    log-mel of the audio followed by 160 zero samples (normalized over all its frames),
    the N // 160 content frames kept, then *zero*-padded (in the normalized domain) to
    ``n_frames``. (openai-whisper instead pads the audio with 30 s of zeros before the
    log-mel: ``log_mel(pad_or_trim(audio))``.)  (N,) or (B, N) -> (B, n_mels, n_frames)."""
    a = torch.as_tensor(audio)
    a = a if a.dim() == 2 else a[None]
    n = a.shape[-1] // HOP
    mel = log_mel(F.pad(a.float(), (0, HOP)), n_mels)[..., :n]
    return pad_or_trim(mel, n_frames)
