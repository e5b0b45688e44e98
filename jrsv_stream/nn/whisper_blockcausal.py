"""Block-causal streaming form of the pretrained Whisper encoder (candidate (b) of the
real-voices issue): key/value caches instead of re-encoding a window.

Every step takes one chunk of ``C`` encoder frames (``C * 320`` samples at 16 kHz; 320 ms =
16 frames) and emits its ``C`` frames. A frame attends to every frame of its own chunk and
of the earlier chunks (all of them, or the last ``left_chunks`` chunks), through per-layer
key/value caches held in an explicit :class:`BlockCausalState`. Frames keep Whisper's
absolute sinusoidal positions (frame t of the stream at position t), so Whisper's own
decoder can read the streamed frames as it reads a full-context encoding.

Front end, causal and exact in steps:

- log-mel frames are *not* centred: mel frame g covers audio samples ``[160 g - 400,
  160 g)`` (Hann, n_fft 400, Slaney mel, log10, floor 1e-10), i.e. Whisper's framing with
  the audio delayed by 200 samples (12.5 ms); audio before the stream start is digital
  silence (zeros), also for the conv's left context (no zero padding in the conv);
- encoder frame t (conv1 k3 + conv2 k3 stride 2) reads mel frames 2t - 2 .. 2t + 2, so it
  depends on audio up to sample ``320 (t + 1)``, the end of its own 20 ms frame: no
  lookahead beyond the chunk;
- normalization (Whisper floors at the *whole input's* maximum - 8): the **running maximum**
  of the raw log10 mel over the stream so far, including the current chunk (initial value
  -10 = digital silence), floors and scales every mel frame the chunk's convs read
  (``(max(x, ref - 8) + 4) / 4``). So a chunk's frames depend on the loudest audio so far, not
  on later audio.

Positions beyond Whisper's context (1500 frames = 30 s): **reset policy**. A stream is
cut into segments of ``chunks_per_segment = max_frames // C`` chunks; at a segment start the
key/value caches are emptied and the position returns to 0 (the front end's context and
running maximum carry on). So frames never attend across a segment boundary and every
position is < ``max_frames``. In the product a reset would naturally fall on an endpoint
(the finals decode a segment from position 0); here it is a fixed period.

Offline (:meth:`BlockCausalWhisper.forward`) computes exactly what the steps compute, in one
call with a block mask (float32: equal to 1e-4, tested).

Units and shapes: audio (B, N) float at 16 kHz, N a multiple of the chunk's samples in
steps; encoder frames every 20 ms, (B, T, n_audio_state). Algorithmic latency: one chunk
(:attr:`BlockCausalWhisper.algorithmic_latency_ms`).

Adaptation: optional LoRA (:class:`LoRALinear`) on the encoder's attention projections,
trained with the block masks by self-distillation (``jrsv_stream.train.blockcausal_lora``);
the LoRA weights alone are saved (:meth:`BlockCausalWhisper.lora_state_dict`).
"""

from __future__ import annotations

import contextlib
import copy
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from jrsv_stream.nn.whisper import N_FFT, HOP, WhisperEncoder, mel_filters

__all__ = ["BlockCausalState", "BlockCausalWhisper", "LoRALinear", "FRAME_SAMPLES", "SILENCE_LOG_MEL",
           "apply_lora", "block_causal_mask"]

FRAME_SAMPLES = 320  # one encoder frame: 20 ms at 16 kHz
TAIL_SAMPLES = N_FFT - HOP  # 240 past samples the next chunk's first mel frame reads
MEL_CTX = 3  # past mel frames the next chunk's convs read (mel 2Ck - 2 .. 2Ck)
SILENCE_LOG_MEL = -10.0  # log10 of the 1e-10 floor: digital silence


class BlockCausalState(NamedTuple):
    """Explicit state of a batch of streams stepped in lockstep.

    tail: (B, 240) the last audio samples (zeros before the stream start).
    mel_ctx: (B, n_mels, 3) raw log10 mel of the last three mel frames.
    ref_max: (B,) running maximum of the raw log10 mel (the normalization's reference).
    keys / values: (n_layer, B, S, n_audio_state) projected keys / values of the cached
    frames (S = frames of the earlier chunks of the current segment, at most
    ``left_chunks * C``).
    pos: () long, the position of the next frame within the current segment.
    """

    tail: torch.Tensor
    mel_ctx: torch.Tensor
    ref_max: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor
    pos: torch.Tensor


class LoRALinear(nn.Module):
    """``base(x) + (alpha / r) * x A^T B^T`` with the base Linear frozen; A (r, in) small
    random, B (out, r) zero (starts as the base)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None):
        super().__init__()
        if rank <= 0:
            raise ValueError(f"LoRA rank must be > 0, got {rank}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.rank = rank
        self.scale = float(alpha if alpha is not None else rank) / rank
        self.lora_a = nn.Parameter(torch.randn(rank, base.in_features) / base.in_features ** 0.5)
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        return y + F.linear(F.linear(x, self.lora_a.to(x.dtype)), self.lora_b.to(x.dtype)) * self.scale


def apply_lora(encoder: WhisperEncoder, rank: int, targets: Sequence[str] = ("query", "value"),
               layers: Sequence[int] | None = None, alpha: float | None = None) -> list[str]:
    """Replace ``encoder.blocks[i].attn.<target>`` (``query`` / ``key`` / ``value`` /
    ``out``) and ``mlp.0`` / ``mlp.2`` (targets ``fc1`` / ``fc2``) by :class:`LoRALinear`
    **in place**, for the blocks ``layers`` (None: all). Returns the names replaced."""
    names = []
    idx = range(len(encoder.blocks)) if layers is None else list(layers)
    for i in idx:
        blk = encoder.blocks[i]
        for t in targets:
            if t in ("query", "key", "value", "out"):
                parent, attr = blk.attn, t
            elif t in ("fc1", "fc2"):
                parent, attr = blk.mlp, "0" if t == "fc1" else "2"
            else:
                raise ValueError(f"unknown LoRA target {t!r} (query, key, value, out, fc1, fc2)")
            mod = getattr(parent, attr) if attr.isalpha() else parent[int(attr)]
            if isinstance(mod, LoRALinear):
                continue
            new = LoRALinear(mod, rank, alpha)
            if attr.isalpha():
                setattr(parent, attr, new)
            else:
                parent[int(attr)] = new
            names.append(f"blocks.{i}.{t}")
    return names


def block_causal_mask(n_frames: int, chunk: int, left_chunks: int = -1, chunks_per_segment: int = 0,
                      device=None) -> torch.Tensor:
    """(n_frames, n_frames) bool, True = query frame may attend to key frame: key chunk <=
    query chunk, within ``left_chunks`` earlier chunks (-1: all) and in the same segment of
    ``chunks_per_segment`` chunks (0: one segment)."""
    c = torch.arange(n_frames, device=device) // chunk
    cq, ck = c[:, None], c[None, :]
    m = ck <= cq
    if left_chunks >= 0:
        m &= cq - ck <= left_chunks
    if chunks_per_segment > 0:
        m &= (cq // chunks_per_segment) == (ck // chunks_per_segment)
    return m


class BlockCausalWhisper(nn.Module):
    """Whisper's encoder run block-causally with key/value caches (see the module docstring).

    Args:
        encoder: a loaded :class:`jrsv_stream.nn.whisper.WhisperEncoder` (e.g.
            ``load_whisper("base").encoder``). Used as is (frozen) without LoRA; with
            ``lora_rank`` > 0 a deep copy gets the adapters (the given encoder, e.g. the
            full-context teacher, is left unchanged).
        chunk_frames: C, encoder frames per step (16 = 320 ms).
        left_chunks: earlier chunks a frame may attend to (-1: every chunk of the segment).
        max_frames: positions per segment (None: the encoder's context, 1500 = 30 s).
        compute_dtype: "float32" or "bfloat16" (autocast of the encoder's matmuls).
        lora_rank, lora_targets, lora_layers, lora_alpha: see :func:`apply_lora` (rank 0: none).
    """

    frame_samples = FRAME_SAMPLES
    lookahead_samples = 0

    def __init__(self, encoder: WhisperEncoder, chunk_frames: int = 16, left_chunks: int = -1,
                 max_frames: int | None = None, compute_dtype: str = "float32", lora_rank: int = 0,
                 lora_targets: Sequence[str] = ("query", "value"), lora_layers: Sequence[int] | None = None,
                 lora_alpha: float | None = None):
        super().__init__()
        ctx = encoder.positional_embedding.shape[0]
        max_frames = ctx if max_frames is None else int(max_frames)
        if chunk_frames < 1 or chunk_frames > max_frames:
            raise ValueError(f"chunk_frames must be in [1, {max_frames}], got {chunk_frames}")
        if not 1 <= max_frames <= ctx:
            raise ValueError(f"max_frames must be in [1, {ctx}], got {max_frames}")
        if left_chunks < -1:
            raise ValueError(f"left_chunks must be -1 (unbounded) or >= 0, got {left_chunks}")
        if compute_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"compute_dtype must be 'float32' or 'bfloat16', got {compute_dtype!r}")
        if lora_rank > 0:
            encoder = copy.deepcopy(encoder)
        for p in encoder.parameters():
            p.requires_grad_(False)
        self.lora_names = apply_lora(encoder, lora_rank, lora_targets, lora_layers, lora_alpha) if lora_rank > 0 else []
        self.lora_config = {"rank": lora_rank, "targets": list(lora_targets),
                            "layers": None if lora_layers is None else list(lora_layers), "alpha": lora_alpha}
        self.encoder = encoder
        self.chunk_frames = int(chunk_frames)
        self.left_chunks = int(left_chunks)
        self.max_frames = max_frames
        self.chunks_per_segment = max_frames // self.chunk_frames
        self.compute_dtype = compute_dtype
        self.n_mels = encoder.conv1.in_channels
        self.d_model = encoder.conv1.out_channels
        self.n_layer = len(encoder.blocks)
        self.register_buffer("mel_fb", mel_filters(self.n_mels).clone(), persistent=False)
        self.register_buffer("window_fn", torch.hann_window(N_FFT), persistent=False)

    # ------------------------------------------------------------------ properties
    @property
    def chunk_samples(self) -> int:
        """Audio samples per step (C * 320)."""
        return self.chunk_frames * FRAME_SAMPLES

    @property
    def algorithmic_latency_ms(self) -> float:
        """A chunk's frames are out once its last sample is in: one chunk (C * 20 ms)."""
        return self.chunk_frames * FRAME_SAMPLES / 16.0

    # ------------------------------------------------------------------ front end
    def raw_mel(self, audio: torch.Tensor) -> torch.Tensor:
        """Un-centred log10 mel: audio (B, N) -> (B, n_mels, (N - 400) // 160 + 1), frame m
        over samples [160 m, 160 m + 400)."""
        frames = audio.float().unfold(-1, N_FFT, HOP)  # (B, F, 400)
        spec = torch.fft.rfft(frames * self.window_fn, dim=-1).abs().pow(2)
        return torch.clamp(spec @ self.mel_fb, min=1e-10).log10().transpose(1, 2)

    @staticmethod
    def _normalize(mel: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """Whisper's floor and scaling with a per-row (or per-window) reference: mel (N, M, F), ref (N,)."""
        return (torch.maximum(mel, ref.reshape(-1, 1, 1) - 8.0) + 4.0) / 4.0

    def _conv(self, mel_windows: torch.Tensor) -> torch.Tensor:
        """Normalized mel windows (N, n_mels, 2C + 3) -> conv front end (N, C, D), no padding."""
        e = self.encoder
        x = F.gelu(F.conv1d(mel_windows.to(e.conv1.weight.dtype), e.conv1.weight, e.conv1.bias))
        x = F.gelu(F.conv1d(x, e.conv2.weight, e.conv2.bias, stride=2))
        return x.transpose(1, 2)

    def _autocast(self, device: torch.device):
        if self.compute_dtype == "float32":
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=torch.bfloat16)

    # ------------------------------------------------------------------ streaming
    def init_state(self, batch: int, device: torch.device | str = "cpu") -> BlockCausalState:
        """State before the first chunk: silence before the stream, empty caches, position 0."""
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        z = torch.zeros(self.n_layer, batch, 0, self.d_model, device=device)
        return BlockCausalState(
            tail=torch.zeros(batch, TAIL_SAMPLES, device=device),
            mel_ctx=torch.full((batch, self.n_mels, MEL_CTX), SILENCE_LOG_MEL, device=device),
            ref_max=torch.full((batch,), SILENCE_LOG_MEL, device=device),
            keys=z, values=z.clone(), pos=torch.zeros((), dtype=torch.long, device=device))

    def step(self, chunk_audio: torch.Tensor, state: BlockCausalState) -> tuple[torch.Tensor, BlockCausalState]:
        """One chunk: chunk_audio (B, C * 320) at 16 kHz -> (frames (B, C, D) float32, new state).

        Raises:
            ValueError: wrong shape, batch not matching the state, non-finite samples.
        """
        B = state.tail.shape[0]
        if chunk_audio.dim() != 2 or chunk_audio.shape != (B, self.chunk_samples):
            raise ValueError(f"chunk_audio must be ({B}, {self.chunk_samples}) (batch of the state, "
                             f"{self.chunk_frames} frames x {FRAME_SAMPLES} samples), got {tuple(chunk_audio.shape)}")
        if not torch.isfinite(chunk_audio).all():
            raise ValueError("chunk_audio holds NaN or Inf samples")
        C = self.chunk_frames
        keys, values, pos = state.keys, state.values, state.pos
        if int(pos) + C > self.chunks_per_segment * C:  # reset policy: a new segment
            keys, values = keys[:, :, :0], values[:, :, :0]
            pos = torch.zeros_like(pos)
        buf = torch.cat([state.tail, chunk_audio.to(state.tail)], dim=1)  # (B, 240 + C*320)
        mel_new = self.raw_mel(buf)  # (B, M, 2C): mel frames 2Ck+1 .. 2C(k+1)
        ref = torch.maximum(state.ref_max, mel_new.amax(dim=(1, 2)))
        mel_all = torch.cat([state.mel_ctx, mel_new], dim=2)  # (B, M, 2C + 3)
        p0 = int(pos)
        new_k, new_v = [], []
        with self._autocast(buf.device):
            x = self._conv(self._normalize(mel_all, ref))
            x = x + self.encoder.positional_embedding[p0: p0 + C].to(x.dtype)
            for i, blk in enumerate(self.encoder.blocks):
                a = blk.attn
                h = blk.attn_ln(x)
                q, k, v = a.query(h), a.key(h), a.value(h)
                K = torch.cat([keys[i].to(k.dtype), k], dim=1)
                V = torch.cat([values[i].to(v.dtype), v], dim=1)
                x = x + a.attend(q, K, V)
                x = x + blk.mlp(blk.mlp_ln(x))
                keep = K.shape[1] if self.left_chunks < 0 else self.left_chunks * C
                new_k.append(K[:, K.shape[1] - keep:] if keep else K[:, :0])
                new_v.append(V[:, V.shape[1] - keep:] if keep else V[:, :0])
            out = self.encoder.ln_post(x).float()
        st = BlockCausalState(buf[:, -TAIL_SAMPLES:], mel_all[..., -MEL_CTX:], ref,
                              torch.stack(new_k).float(), torch.stack(new_v).float(), pos + C)
        return out, st

    def stream(self, audio: torch.Tensor, state: BlockCausalState | None = None
               ) -> tuple[torch.Tensor, BlockCausalState]:
        """Step through audio (B, N) chunk by chunk (the last chunk zero-padded): frames
        (B, ceil(N / chunk) * C, D) and the final state."""
        audio = self._check_audio(audio)
        st = self.init_state(audio.shape[0], audio.device) if state is None else state
        outs = []
        for i in range(0, audio.shape[1], self.chunk_samples):
            x = audio[:, i: i + self.chunk_samples]
            x = F.pad(x, (0, self.chunk_samples - x.shape[1]))
            y, st = self.step(x, st)
            outs.append(y)
        return torch.cat(outs, 1), st

    # ------------------------------------------------------------------ offline
    def _check_audio(self, audio: torch.Tensor) -> torch.Tensor:
        audio = torch.as_tensor(audio)
        if audio.dim() == 1:
            audio = audio[None]
        if audio.dim() != 2 or audio.shape[1] == 0:
            raise ValueError(f"audio must be (N,) or (B, N) with N > 0, got {tuple(audio.shape)}")
        if not torch.isfinite(audio).all():
            raise ValueError("audio holds NaN or Inf samples")
        return audio.float()

    def mel_windows(self, audio: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The normalized mel window each step's convs read, for a whole stream: audio (B, N)
        -> ((B * n_chunks, n_mels, 2C + 3), n_chunks); the audio zero-padded to whole chunks."""
        audio = self._check_audio(audio)
        B, N = audio.shape
        C = self.chunk_frames
        n_chunks = -(-N // self.chunk_samples)
        a = F.pad(audio, (N_FFT, n_chunks * self.chunk_samples - N))  # 400 zeros: mel g covers [160g - 400, 160g)
        mel = self.raw_mel(a)  # (B, M, 2C n + 1): g = 0 .. 2C n
        mel = torch.cat([torch.full_like(mel[..., :2], SILENCE_LOG_MEL), mel], dim=2)  # g = -2 ..
        chunk_max = mel[..., 3:].reshape(B, self.n_mels, n_chunks, 2 * C).amax(dim=(1, 3))  # (B, n)
        ref = torch.cummax(torch.clamp(chunk_max, min=SILENCE_LOG_MEL), dim=1).values
        idx = (torch.arange(n_chunks) * 2 * C)[:, None] + torch.arange(2 * C + MEL_CTX)[None]  # (n, 2C + 3)
        win = mel[:, :, idx].permute(0, 2, 1, 3).reshape(B * n_chunks, self.n_mels, 2 * C + MEL_CTX)
        return self._normalize(win, ref.reshape(-1)), n_chunks

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """Offline = the steps, in one call with a block mask: audio (N,) or (B, N) at 16 kHz
        -> frames (B, ceil(N / chunk) * C, D) float32."""
        audio = self._check_audio(audio)
        B = audio.shape[0]
        C = self.chunk_frames
        win, n_chunks = self.mel_windows(audio)
        T = n_chunks * C
        seg_frames = self.chunks_per_segment * C
        pos = torch.arange(T, device=audio.device) % seg_frames
        mask = block_causal_mask(T, C, self.left_chunks, self.chunks_per_segment, audio.device)
        with self._autocast(audio.device):
            x = self._conv(win).reshape(B, T, self.d_model)
            x = x + self.encoder.positional_embedding[pos].to(x.dtype)
            for blk in self.encoder.blocks:
                x = blk(x, mask=mask)
            return self.encoder.ln_post(x).float()

    # ------------------------------------------------------------------ LoRA files
    def lora_state_dict(self) -> dict[str, torch.Tensor]:
        """The adapters only (``...lora_a`` / ``...lora_b``), float32 on the CPU."""
        return {k: v.detach().float().cpu() for k, v in self.encoder.state_dict().items() if ".lora_" in k}

    def load_lora_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        """Load adapters saved by :meth:`lora_state_dict` (the same LoRA layout).

        Raises:
            ValueError: missing or unexpected adapter tensors."""
        own = {k for k in self.encoder.state_dict() if ".lora_" in k}
        if set(sd) != own:
            raise ValueError(f"LoRA weights do not match this model: missing {sorted(own - set(sd))[:4]}, "
                             f"unexpected {sorted(set(sd) - own)[:4]}")
        self.encoder.load_state_dict(sd, strict=False)

    def lora_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.encoder.named_parameters() if ".lora_" in n]
