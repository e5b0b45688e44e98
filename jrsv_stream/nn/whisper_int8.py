"""Whisper's decoder with int8 weights, for the finals and hypotheses on a CPU.

A decoder step reads every weight of the decoder once for one token: on a CPU it is bound by
memory, not arithmetic. Whisper base's decoder is 22 M weights in its blocks and 26.6 M in
the output projection (tied to the token embedding, 51,865 x 512): 195 MB in float32 per
token, ~16 ms a step on this 2-core CPU, which made the decoder, not the encoder, the bulk
of a hypothesis (README "An int8 decoder for the finals and hypotheses"). Here every linear
layer of the blocks and the output projection become PyTorch's dynamically quantized
``Linear`` (int8 weights, one scale per output channel; activations quantized per call,
int32 accumulation, float output): 49 MB, ~4.4 ms a step. The token embedding lookup,
positions, norms and attention stay float32.

The quantized model shares the encoder, embeddings and tokenizer with the float model it is
made from (nothing else is copied); the float model is unchanged (adapters merge into it).
Measured on 40 real voices over music (greedy): WER 33.4 % float32, 32.8 % int8 (11 texts
differ, none by more than a word or two on intelligible items).

PyTorch's eager dynamic quantization (``torch.ao.quantization.quantize_dynamic``) is
deprecated in favour of torchao, yet present and tested in the pinned torch 2.11; where it is
missing, :func:`int8_decoder_model` raises :class:`RuntimeError` naming the setting that
turns it off (``final.decoder_dtype: float32``).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from jrsv_stream.nn.whisper import WhisperDecoder, WhisperModel


def _quantize(module: nn.Module) -> nn.Module:
    try:
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError as e:  # pragma: no cover - a torch without eager quantization
        raise RuntimeError("this torch has no torch.ao.quantization.quantize_dynamic: set final.decoder_dtype: "
                           "float32 in the recognizer's config.yaml (or install torch==2.11.0)") from e
    if "fbgemm" not in torch.backends.quantized.supported_engines and "x86" not in torch.backends.quantized.supported_engines:
        raise RuntimeError(f"no int8 CPU engine in this torch ({torch.backends.quantized.supported_engines}): "
                           "set final.decoder_dtype: float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return quantize_dynamic(module, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=False)


@torch.no_grad()
def int8_decoder_model(wm: WhisperModel) -> WhisperModel:
    """A model that decodes with an int8 copy of ``wm``'s decoder (CPU only); its encoder,
    embeddings, norms and tokenizer are ``wm``'s own."""
    if next(wm.parameters()).device.type != "cpu":
        raise ValueError("the int8 decoder runs on the CPU only (on a GPU keep final.decoder_dtype: float32)")
    d = wm.decoder
    dec = WhisperDecoder.__new__(WhisperDecoder)
    nn.Module.__init__(dec)
    dec.token_embedding = d.token_embedding
    dec.positional_embedding = d.positional_embedding
    dec.ln = d.ln
    dec.blocks = _quantize(d.blocks)
    proj = nn.Linear(d.token_embedding.weight.shape[1], d.token_embedding.weight.shape[0], bias=False)
    proj.weight.data = d.token_embedding.weight.detach().float().clone()
    dec.output = _quantize(nn.Sequential(proj))
    m = WhisperModel.__new__(WhisperModel)
    nn.Module.__init__(m)
    m.dims, m.tokenizer, m.name = wm.dims, wm.tokenizer, wm.name + "+int8_decoder"
    m.encoder, m.decoder = wm.encoder, dec
    return m.eval()
