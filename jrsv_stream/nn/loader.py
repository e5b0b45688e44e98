"""Which pipeline to run and loading it by name: ``"tiny"`` (:class:`jrsv_stream.nn.tiny.TinyPipeline`)
or a model folder (:func:`jrsv_stream.nn.pipeline.load_streaming_pipeline`); the shipped
default (``default_pipeline_spec``). Callers that need a pipeline import it from here, so
the contract (:mod:`jrsv_stream.stream.pipeline_api`) does not know its implementations.
"""

from __future__ import annotations

from jrsv_stream.nn.tiny import TinyPipeline
from jrsv_stream.stream.pipeline_api import StreamingPipeline


def default_pipeline_spec(models_root: str | None = None) -> str:
    """``$JRSV_PIPELINE`` if set, else the shipped default pipeline: ``models/default/``
    (``pipeline.yaml``: the separator -> Whisper-CTC recognizer on both tracks) when its
    recognizer head is there, else ``models/jrsv/`` (the from-scratch baseline), else
    ``"tiny"`` (untrained: plumbing only). ``models_root``: another ``models/`` folder."""
    import os
    from pathlib import Path

    env = os.environ.get("JRSV_PIPELINE")
    if env:
        return env
    shipped = Path(models_root) if models_root else Path(__file__).resolve().parents[2] / "models"
    default = shipped / "default"
    if (default / "pipeline.yaml").is_file() and (shipped / "whisper_ctc" / "ctc_head.pt").is_file():
        return str(default)
    for folder in (shipped / "jrsv", shipped):
        if (folder / "separator" / "separator.pt").is_file() and (folder / "asr" / "asr.pt").is_file():
            return str(folder)
    return "tiny"


def load_pipeline(spec: str = "tiny", chunk_samples: int | None = None) -> StreamingPipeline:
    """``"tiny"`` -> :class:`TinyPipeline`; a model folder -> the trained pipeline.

    The trained pipeline is built by ``jrsv_stream.nn.pipeline.load_streaming_pipeline``
    (provided with the shipped models), which must return an object with this contract.
    """
    if spec == "tiny":
        return TinyPipeline(**({"chunk_samples": chunk_samples} if chunk_samples else {}))
    try:
        from jrsv_stream.nn.pipeline import load_streaming_pipeline  # type: ignore[attr-defined]
    except ImportError as e:
        raise ValueError(f"pipeline {spec!r}: the trained pipeline loader is not available ({e}); use 'tiny'") from e
    kw = {"chunk_samples": chunk_samples} if chunk_samples else {}
    return load_streaming_pipeline(spec, **kw)
