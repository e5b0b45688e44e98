"""Track adapters for Whisper's decoder (the finals of one caption track).

Whisper base reads the synthetic singing voices it is given at ~80 % WER even offline on
clean stems: its decoder has never heard sung, stretched, re-pitched syllables. A low-rank
adapter (LoRA) on the decoder, trained here on sung lines with the encoder frozen
(:mod:`jrsv_stream.train.final_adapter`), is merged into a *copy* of the decoder's blocks
that only that track's finals use: the speech track keeps Whisper's own decoder, so real
talk cannot get worse for it.

File format (``final_adapter_<track>.pt``, a plain ``torch.save`` dict): ``lora`` (name ->
float32 tensor, ``blocks.<i>.<target>.lora_a`` / ``.lora_b``), ``rank``, ``alpha``,
``targets``, ``whisper`` (the model name it was trained on: base), ``n_text_state``,
``info`` (training facts).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from jrsv_stream.nn.whisper import WhisperDecoder, WhisperModel
from jrsv_stream.nn.whisper_blockcausal import LoRALinear

# target name -> (attribute path inside a decoder block). Cross-attention keys / values are
# left alone: they are the encoder side (computed once per segment, frozen in training).
TARGETS = {
    "query": ("attn", "query"), "key": ("attn", "key"), "value": ("attn", "value"), "out": ("attn", "out"),
    "cross_query": ("cross_attn", "query"), "cross_out": ("cross_attn", "out"),
    "fc1": ("mlp", "0"), "fc2": ("mlp", "2"),
}
DEFAULT_TARGETS = ("query", "value", "out", "cross_query", "cross_out", "fc1", "fc2")
ADAPTER_PREFIX = "final_adapter_"


def _get(parent: nn.Module, attr: str) -> nn.Module:
    return parent[int(attr)] if attr.isdigit() else getattr(parent, attr)


def _set(parent: nn.Module, attr: str, mod: nn.Module) -> None:
    if attr.isdigit():
        parent[int(attr)] = mod
    else:
        setattr(parent, attr, mod)


def apply_decoder_lora(decoder: WhisperDecoder, rank: int, targets: Sequence[str] = DEFAULT_TARGETS,
                       alpha: float | None = None) -> list[str]:
    """Wrap ``decoder.blocks[i].<target>`` in :class:`LoRALinear` **in place** (every
    block); the rest of the decoder is frozen. Returns the wrapped names."""
    bad = [t for t in targets if t not in TARGETS]
    if bad:
        raise ValueError(f"unknown decoder LoRA targets {bad} (known: {sorted(TARGETS)})")
    for p in decoder.parameters():
        p.requires_grad_(False)
    names = []
    for i, blk in enumerate(decoder.blocks):
        for t in targets:
            sub, attr = TARGETS[t]
            parent = getattr(blk, sub)
            mod = _get(parent, attr)
            if not isinstance(mod, LoRALinear):
                _set(parent, attr, LoRALinear(mod, rank, alpha))
            names.append(f"blocks.{i}.{t}")
    return names


def lora_state(decoder: WhisperDecoder) -> dict[str, torch.Tensor]:
    """The adapters of a decoder wrapped by :func:`apply_decoder_lora`, keyed
    ``blocks.<i>.<target>.lora_a|lora_b`` (float32, CPU)."""
    out = {}
    for i, blk in enumerate(decoder.blocks):
        for t, (sub, attr) in TARGETS.items():
            parent = getattr(blk, sub, None)
            mod = None if parent is None else _get(parent, attr)
            if isinstance(mod, LoRALinear):
                out[f"blocks.{i}.{t}.lora_a"] = mod.lora_a.detach().float().cpu().clone()
                out[f"blocks.{i}.{t}.lora_b"] = mod.lora_b.detach().float().cpu().clone()
    return out


def save_adapter(path: str | os.PathLike, decoder: WhisperDecoder, rank: int, alpha: float, targets: Sequence[str],
                 whisper: str, info: dict | None = None) -> Path:
    p = Path(path)
    doc = {"lora": lora_state(decoder), "rank": int(rank), "alpha": float(alpha), "targets": list(targets),
           "whisper": whisper, "n_text_state": int(decoder.ln.weight.shape[0]), "info": dict(info or {})}
    torch.save(doc, p.with_name(p.name + ".part"))
    os.replace(p.with_name(p.name + ".part"), p)
    return p


def load_adapter(path: str | os.PathLike) -> dict:
    """Read and check an adapter file.

    Raises:
        ValueError: unreadable, or not an adapter (missing fields, non-finite weights)."""
    p = Path(path)
    try:
        doc = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot read decoder adapter {p}: {type(e).__name__}: {e}") from e
    need = {"lora", "rank", "alpha", "targets", "whisper", "n_text_state"}
    if not isinstance(doc, dict) or not need <= set(doc):
        raise ValueError(f"{p}: not a decoder adapter (needs {sorted(need)})")
    if not doc["lora"] or any(not torch.is_tensor(v) or not torch.isfinite(v).all() for v in doc["lora"].values()):
        raise ValueError(f"{p}: empty or non-finite adapter weights")
    return doc


def adapted_model(wm: WhisperModel, adapter: dict) -> WhisperModel:
    """A Whisper model whose decoder blocks are a copy of ``wm``'s with the adapter merged
    into their weights (W + alpha / r * B A): no cost per token. The encoder, token and
    position embeddings, final norm and tokenizer are ``wm``'s own (shared, not copied).

    Raises:
        ValueError: the adapter does not fit this model (width, layers or targets)."""
    d = wm.decoder
    if adapter["n_text_state"] != d.ln.weight.shape[0]:
        raise ValueError(f"decoder adapter for width {adapter['n_text_state']} (Whisper {adapter['whisper']}), "
                         f"this model has {d.ln.weight.shape[0]} ({wm.name})")
    dec = WhisperDecoder.__new__(WhisperDecoder)
    nn.Module.__init__(dec)
    dec.token_embedding = d.token_embedding
    dec.positional_embedding = d.positional_embedding
    dec.blocks = copy.deepcopy(d.blocks)
    dec.ln = d.ln
    scale = float(adapter["alpha"]) / int(adapter["rank"])
    lora = adapter["lora"]
    want = {f"blocks.{i}.{t}.lora_{x}" for i in range(len(dec.blocks)) for t in adapter["targets"] for x in "ab"}
    if set(lora) != want:
        raise ValueError(f"decoder adapter does not match this model: missing {sorted(want - set(lora))[:3]}, "
                         f"unexpected {sorted(set(lora) - want)[:3]}")
    with torch.no_grad():
        for i, blk in enumerate(dec.blocks):
            for t in adapter["targets"]:
                sub, attr = TARGETS[t]
                lin = _get(getattr(blk, sub), attr)
                delta = lora[f"blocks.{i}.{t}.lora_b"] @ lora[f"blocks.{i}.{t}.lora_a"] * scale
                lin.weight.add_(delta.to(lin.weight.dtype, copy=False).to(lin.weight.device))
    for p in dec.blocks.parameters():
        p.requires_grad_(False)
    m = WhisperModel.__new__(WhisperModel)
    nn.Module.__init__(m)
    m.dims, m.tokenizer, m.name = wm.dims, wm.tokenizer, f"{wm.name}+adapter"
    m.encoder = wm.encoder
    m.decoder = dec
    return m.eval()
