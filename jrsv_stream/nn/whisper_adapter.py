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

**Encoder adapters** (``final_encoder_adapter_<track>.pt``, the same format with ``part:
"encoder"``): LoRA on the *encoder's* blocks, trained without transcripts by feature
distillation (:mod:`jrsv_stream.train.final_encoder_adapter`): the adapted encoder hearing
what a track's finals decode (the speech track: 0.5 x the mixture + 0.5 x the separated
speech) is taught to give the features the frozen encoder gives for the clean voice. Merged
into a copy of the encoder blocks that only that track's finals use.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from jrsv_stream.nn.whisper import WhisperDecoder, WhisperEncoder, WhisperModel
from jrsv_stream.nn.whisper_blockcausal import LoRALinear

# target name -> (attribute path inside a decoder block). Cross-attention keys / values are
# left alone: they are the encoder side (computed once per segment, frozen in training).
TARGETS = {
    "query": ("attn", "query"), "key": ("attn", "key"), "value": ("attn", "value"), "out": ("attn", "out"),
    "cross_query": ("cross_attn", "query"), "cross_out": ("cross_attn", "out"),
    "fc1": ("mlp", "0"), "fc2": ("mlp", "2"),
}
DEFAULT_TARGETS = ("query", "value", "out", "cross_query", "cross_out", "fc1", "fc2")
ENCODER_TARGETS = ("query", "key", "value", "out", "fc1", "fc2")  # self-attention + MLP (no cross-attention)
ADAPTER_PREFIX = "final_adapter_"
ENCODER_ADAPTER_PREFIX = "final_encoder_adapter_"


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
    return _apply_lora(decoder, rank, targets, alpha, TARGETS)


def apply_encoder_lora(encoder: WhisperEncoder, rank: int, targets: Sequence[str] = ENCODER_TARGETS,
                       alpha: float | None = None) -> list[str]:
    """:func:`apply_decoder_lora` for the encoder's blocks (self-attention and MLP only)."""
    return _apply_lora(encoder, rank, targets, alpha, {t: TARGETS[t] for t in ENCODER_TARGETS})


def _apply_lora(module: nn.Module, rank: int, targets: Sequence[str], alpha: float | None,
                known: dict[str, tuple[str, str]]) -> list[str]:
    bad = [t for t in targets if t not in known]
    if bad:
        raise ValueError(f"unknown LoRA targets {bad} for this module (known: {sorted(known)})")
    for p in module.parameters():
        p.requires_grad_(False)
    names = []
    for i, blk in enumerate(module.blocks):
        for t in targets:
            sub, attr = TARGETS[t]
            parent = getattr(blk, sub)
            mod = _get(parent, attr)
            if not isinstance(mod, LoRALinear):
                _set(parent, attr, LoRALinear(mod, rank, alpha))
            names.append(f"blocks.{i}.{t}")
    return names


def lora_state(decoder: nn.Module) -> dict[str, torch.Tensor]:
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


def save_adapter(path: str | os.PathLike, decoder: nn.Module, rank: int, alpha: float, targets: Sequence[str],
                 whisper: str, info: dict | None = None, part: str = "decoder") -> Path:
    """Write an adapter file. ``decoder``: the wrapped decoder, or the wrapped encoder with
    ``part="encoder"`` (its width is stored as ``n_text_state`` too: base has 512 for both)."""
    if part not in ("decoder", "encoder"):
        raise ValueError(f"adapter part must be 'decoder' or 'encoder', got {part!r}")
    p = Path(path)
    width = decoder.ln.weight.shape[0] if part == "decoder" else decoder.ln_post.weight.shape[0]
    doc = {"lora": lora_state(decoder), "rank": int(rank), "alpha": float(alpha), "targets": list(targets),
           "whisper": whisper, "n_text_state": int(width), "part": part, "info": dict(info or {})}
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
    doc.setdefault("part", "decoder")  # files written before encoder adapters existed
    if doc["part"] not in ("decoder", "encoder"):
        raise ValueError(f"{p}: adapter part {doc['part']!r} is neither 'decoder' nor 'encoder'")
    return doc


def _merge(blocks: nn.ModuleList, adapter: dict, part: str, width: int, model_name: str) -> nn.ModuleList:
    """A copy of ``blocks`` (the ``part`` side of a model of width ``width``) with the
    adapter merged into their weights (W + alpha / r * B A)."""
    other = "encoder" if part == "decoder" else "decoder"
    if adapter.get("part", "decoder") != part:
        raise ValueError(f"adapted_model: the {part} adapter given is {'an' if other == 'encoder' else 'a'} {other} adapter")
    if adapter["n_text_state"] != width:
        raise ValueError(f"{part} adapter for width {adapter['n_text_state']} (Whisper {adapter['whisper']}), "
                         f"this model has {width} ({model_name})")
    out = copy.deepcopy(blocks)
    scale = float(adapter["alpha"]) / int(adapter["rank"])
    lora = adapter["lora"]
    want = {f"blocks.{i}.{t}.lora_{x}" for i in range(len(out)) for t in adapter["targets"] for x in "ab"}
    if set(lora) != want:
        raise ValueError(f"{part} adapter does not match this model: missing {sorted(want - set(lora))[:3]}, "
                         f"unexpected {sorted(set(lora) - want)[:3]}")
    with torch.no_grad():
        for i, blk in enumerate(out):
            for t in adapter["targets"]:
                sub, attr = TARGETS[t]
                lin = _get(getattr(blk, sub), attr)
                delta = lora[f"blocks.{i}.{t}.lora_b"] @ lora[f"blocks.{i}.{t}.lora_a"] * scale
                lin.weight.add_(delta.to(lin.weight.dtype, copy=False).to(lin.weight.device))
    for p in out.parameters():
        p.requires_grad_(False)
    return out


def adapted_model(wm: WhisperModel, adapter: dict | None, encoder_adapter: dict | None = None) -> WhisperModel:
    """A Whisper model whose decoder blocks (``adapter``) and / or encoder blocks
    (``encoder_adapter``, ``part: "encoder"``) are a copy of ``wm``'s with the adapter merged
    into their weights (W + alpha / r * B A): no cost per token. Everything else (the other
    side, embeddings, norms, convolutions, tokenizer) is ``wm``'s own (shared, not copied).

    Raises:
        ValueError: an adapter does not fit this model (width, layers or targets) or is of
            the wrong part."""
    d = wm.decoder
    m = WhisperModel.__new__(WhisperModel)
    nn.Module.__init__(m)
    m.dims, m.tokenizer = wm.dims, wm.tokenizer
    m.name = wm.name + ("+adapter" if adapter is not None else "") + ("+encoder_adapter" if encoder_adapter is not None else "")
    m.encoder, m.decoder = wm.encoder, wm.decoder
    if adapter is not None:
        dec = WhisperDecoder.__new__(WhisperDecoder)
        nn.Module.__init__(dec)
        dec.token_embedding = d.token_embedding
        dec.positional_embedding = d.positional_embedding
        dec.blocks = _merge(d.blocks, adapter, "decoder", d.ln.weight.shape[0], wm.name)
        dec.ln = d.ln
        m.decoder = dec
    if encoder_adapter is not None:
        e = wm.encoder
        enc = WhisperEncoder.__new__(WhisperEncoder)
        nn.Module.__init__(enc)
        enc.conv1, enc.conv2, enc.ln_post = e.conv1, e.conv2, e.ln_post
        enc.register_buffer("positional_embedding", e.positional_embedding)
        enc.blocks = _merge(e.blocks, encoder_adapter, "encoder", e.ln_post.weight.shape[0], wm.name)
        m.encoder = enc
    return m.eval()
