"""Small transformer attention decoder of the CTC/attention hybrid, used to rescore n-best
lists at endpoints (it sees the whole utterance's encoder output, so it is not streaming).

Token ids are the tokenizer's ids ``0 .. vocab_size - 1`` (:mod:`jrsv_stream.decode.tokenizer`:
0 = CTC blank, never a target; 1 = <unk>; 2 = <sos/eos>, one id for both as in WeNet). The
decoder has ``vocab_size`` outputs, like the CTC head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

IGNORE_ID = -1


@dataclass(frozen=True)
class DecoderConfig:
    d_model: int = 144
    n_heads: int = 4
    ff_dim: int = 576
    n_layers: int = 3
    dropout: float = 0.1
    max_tokens: int = 512  # longest hypothesis (+ <sos>) the positional table covers


def sinusoid_table(n: int, d: int) -> torch.Tensor:
    """(n, d) sinusoidal position table."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(n, d)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: d // 2])
    return pe


class _MHA(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.h, self.d_k = n_heads, d_model // n_heads
        self.q, self.kv, self.out = nn.Linear(d_model, d_model), nn.Linear(d_model, 2 * d_model), nn.Linear(d_model, d_model)
        self.p = dropout

    def forward(self, x: torch.Tensor, mem: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, U, D), mem: (B, T, D), mask: (B, U, T) bool (True = attend)."""
        B, U, _ = x.shape
        q = self.q(x).view(B, U, self.h, self.d_k).transpose(1, 2)
        k, v = self.kv(mem).view(B, mem.shape[1], 2, self.h, self.d_k).permute(2, 0, 3, 1, 4)
        y = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask.unsqueeze(1),
                                                       dropout_p=self.p if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, U, self.h * self.d_k))


class _DecoderLayer(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        d = cfg.d_model
        self.self_att, self.src_att = _MHA(d, cfg.n_heads, cfg.dropout), _MHA(d, cfg.n_heads, cfg.dropout)
        self.ff = nn.Sequential(nn.Linear(d, cfg.ff_dim), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.ff_dim, d))
        self.n1, self.n2, self.n3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, self_mask, mem, mem_mask):
        h = self.n1(x)
        x = x + self.drop(self.self_att(h, h, self_mask))
        x = x + self.drop(self.src_att(self.n2(x), mem, mem_mask))
        return x + self.drop(self.ff(self.n3(x)))


class AttentionDecoder(nn.Module):
    """Pre-norm transformer decoder: (encoder output, token prefix) -> next-token logits.

    Args:
        vocab_size: tokenizer size (blank 0 included).
        enc_dim: encoder output size.
        cfg: layer sizes.
        sos_eos_id: the tokenizer's <sos/eos> id (2 for :func:`~jrsv_stream.decode.tokenizer.train_tokenizer`).
    """

    def __init__(self, vocab_size: int, enc_dim: int, cfg: DecoderConfig = DecoderConfig(), sos_eos_id: int = 2):
        super().__init__()
        if not 0 < sos_eos_id < vocab_size:
            raise ValueError(f"sos_eos_id {sos_eos_id} must be in [1, vocab_size={vocab_size})")
        self.cfg, self.vocab_size = cfg, vocab_size
        self.sos_id = self.eos_id = sos_eos_id
        d = cfg.d_model
        self.embed = nn.Embedding(vocab_size, d)
        self.register_buffer("pos", sinusoid_table(cfg.max_tokens + 1, d), persistent=False)
        self.enc_proj = nn.Linear(enc_dim, d) if enc_dim != d else nn.Identity()
        self.layers = nn.ModuleList(_DecoderLayer(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, vocab_size)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, enc_out: torch.Tensor, enc_lens: torch.Tensor, ys_in: torch.Tensor, ys_in_lens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits.

        Args:
            enc_out: (B, T, enc_dim); enc_lens: (B,) valid frames (>= 1).
            ys_in: (B, U) long, ``[sos, y1, ..., yn]`` padded with any id; ys_in_lens: (B,).

        Returns:
            (B, U, vocab_size) logits; row ``u`` predicts token ``u + 1`` (or <eos>).
        """
        B, U = ys_in.shape
        if U > self.pos.shape[0]:
            raise ValueError(f"hypothesis of {U} tokens exceeds the decoder's max_tokens={self.cfg.max_tokens}")
        dev = ys_in.device
        x = self.drop(self.embed(ys_in) * math.sqrt(self.cfg.d_model) + self.pos[:U].to(enc_out.dtype))
        ar = torch.arange(U, device=dev)
        self_mask = (ar[None, :] <= ar[:, None])[None] & (ar[None, :] < ys_in_lens[:, None])[:, None, :]  # (B, U, U)
        mem = self.enc_proj(enc_out)
        mem_mask = (torch.arange(enc_out.shape[1], device=dev)[None, :] < enc_lens[:, None])[:, None, :].expand(B, U, -1)
        for layer in self.layers:
            x = layer(x, self_mask, mem, mem_mask)
        return self.out(self.norm(x))

    def make_io(self, ys: list[list[int]], device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher-forcing tensors: ys_in (B, U+1) = [sos]+y, ys_out (B, U+1) = y+[eos]
        padded with ``IGNORE_ID``, and lens (B,) = len(y) + 1."""
        lens = [len(y) + 1 for y in ys]
        U = max(lens)
        ys_in = torch.full((len(ys), U), self.eos_id, dtype=torch.long)
        ys_out = torch.full((len(ys), U), IGNORE_ID, dtype=torch.long)
        for i, y in enumerate(ys):
            ys_in[i, 0] = self.sos_id
            ys_in[i, 1: len(y) + 1] = torch.tensor(y, dtype=torch.long)
            ys_out[i, : len(y)] = torch.tensor(y, dtype=torch.long)
            ys_out[i, len(y)] = self.eos_id
        return ys_in.to(device), ys_out.to(device), torch.tensor(lens, dtype=torch.long, device=device)

    def loss(self, enc_out: torch.Tensor, enc_lens: torch.Tensor, ys: list[list[int]], smoothing: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
        """Label-smoothed cross entropy summed over tokens (incl. <eos>), averaged over the
        batch; also returns the token accuracy (scalar tensors)."""
        ys_in, ys_out, lens = self.make_io(ys, enc_out.device)
        logits = self(enc_out, enc_lens, ys_in, lens).float()
        ce = nn.functional.cross_entropy(logits.transpose(1, 2), ys_out, ignore_index=IGNORE_ID,
                                         label_smoothing=smoothing, reduction="sum")
        valid = ys_out != IGNORE_ID
        acc = ((logits.argmax(-1) == ys_out) & valid).sum() / valid.sum().clamp_min(1)
        return ce / len(ys), acc

    @torch.no_grad()
    def score(self, enc_out: torch.Tensor, enc_lens: torch.Tensor, hyps: list[list[int]]) -> np.ndarray:
        """Log-probability of each hypothesis, ``sum_u log p(y_u | y_<u, enc) + log p(<eos> | y, enc)``,
        all hypotheses in one batched call.

        Args:
            enc_out: (1, T, enc_dim) one utterance shared by all hypotheses, or (N, T, enc_dim)
                one row per hypothesis.
            enc_lens: (1,) or (N,) valid frames.
            hyps: N token-id lists (no blank, no <sos/eos>; may be empty).

        Returns:
            (N,) float64 array of log-probabilities.
        """
        n = len(hyps)
        if n == 0:
            return np.zeros(0, dtype=np.float64)
        if enc_out.shape[0] == 1 and n > 1:
            enc_out, enc_lens = enc_out.expand(n, -1, -1), enc_lens.expand(n)
        elif enc_out.shape[0] != n:
            raise ValueError(f"enc_out has {enc_out.shape[0]} rows for {n} hypotheses (need 1 or {n})")
        ys_in, ys_out, lens = self.make_io(hyps, enc_out.device)
        logp = torch.log_softmax(self(enc_out, enc_lens, ys_in, lens).double(), dim=-1)
        tok = logp.gather(-1, ys_out.clamp_min(0).unsqueeze(-1)).squeeze(-1) * (ys_out != IGNORE_ID)
        return tok.sum(-1).cpu().numpy()
