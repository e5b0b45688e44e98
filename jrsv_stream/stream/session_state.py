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
    # incremental finals (SessionConfig.commit_every_s): words of the utterance already sent
    # in Finals (display words, Whisper's prefix), and from which segment frame on the
    # utterance is still open (the end of the last committed word)
    committed: list = field(default_factory=list)
    cut_frame: int = 0
    last_final: object = None  # the last committed Final (its utterance_end, if nothing follows)
    # the latest Whisper hypothesis of the open part: words (display, start / end frame
    # relative to the segment, confidence) beyond the committed ones, over the first
    # hyp_frames frames of the segment; None: no hypothesis to agree with
    hyp: tuple | None = None
    hyp_frames: int = 0  # (with the newest chunk's provisional frames it heard)
    hyp_future: Future | None = None  # a hypothesis decoding on the finals lane
    hyp_submitted: int = 0  # segment frames the pending (or last) hypothesis covers
    hyp_heard: int = 0  # the same with the newest chunk's provisional frames it also heard
    hyp_pause: bool = False  # the pending hypothesis was asked at a pause (SessionConfig.commit_pause_s)
    pause_at: int = -1  # segment frame where the speech before the last pause hypothesis ended
    # the newest chunk's provisional CTC log-probs (F', V) and audio, beyond the segment's
    # frames (a recognizer with lookahead, PipelineOutput.ahead_logp): hypotheses hear them
    ahead: tuple | None = None


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
    offset: int = 0  # segment frame the final's words count from (after the committed words)


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
