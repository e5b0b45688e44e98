"""The per-stream records of :class:`jrsv_stream.stream.session.StreamSession`: a
:class:`Chunk` of audio, a track's decoding state (``_Track``), a final decoding on the
worker's finals lane (``_PendingFinal``) and the stage timings (``_Timings``)."""

from __future__ import annotations

import collections
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from jrsv_stream.decode.ctc_prefix_beam import PrefixBeamState
from jrsv_stream.decode.endpoint import EndpointState


@dataclass(frozen=True)
class Chunk:
    """A fixed-size slice of the stream: ``audio`` (chunk_samples,) float32, its index,
    ``valid_samples`` (< chunk_samples only for the zero-padded last chunk) and the wall
    time (``time.time()``) at which it was complete."""

    index: int
    audio: np.ndarray
    valid_samples: int
    ready_at: float


@dataclass
class _Track:
    name: str
    beam: PrefixBeamState
    ep: EndpointState
    segment: int = 0  # number of the open segment
    seg_start_frame: int = 0
    partial_text: str | None = None  # last partial sent for the open segment
    enc: list = field(default_factory=list)  # encoder frames of the open segment (rescoring only)
    audio: list = field(default_factory=list)  # track audio of the open segment (final_fn only)
    seg_logp: list = field(default_factory=list)  # gated CTC log-probs of the open segment (confidence, final_fn)
    gate: bool = False
    activity: float = 0.0
    act_sum: float = 0.0  # the segment's own activity, summed over its frames
    other_sum: float = 0.0  # the most active other track's activity over the same frames
    act_frames: int = 0


@dataclass
class _PendingFinal:
    """A closed segment whose final decodes on the worker's finals lane."""

    tr: _Track
    tokens: tuple
    frames: tuple
    future: Future
    ready_at: float
    logp: np.ndarray  # the segment's gated CTC log-probs (F, V)
    reason: str  # why the segment ended (utterance_end)


_PENDING = object()  # _final's answer when the segment's final is decoding on the finals lane


class _Timings:
    def __init__(self, n: int = 500):
        self.d: dict[str, collections.deque[float]] = collections.defaultdict(lambda: collections.deque(maxlen=n))

    def add(self, stage: str, ms: float) -> None:
        self.d[stage].append(ms)

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for k, v in self.d.items():
            a = np.asarray(v, dtype=np.float64)
            out[k] = {f"p{q}": round(float(np.percentile(a, q)), 3) for q in (50, 95, 99)} if len(a) else {}
        return out
