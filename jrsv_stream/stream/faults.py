"""Fault injection for reliability tests and the soak bench (test-only; off in production).

A :class:`FaultPlan` names streams and the step of theirs that goes wrong. It is passed
explicitly to :class:`~jrsv_stream.stream.worker.BatchWorker` (``faults=``) or
:class:`~jrsv_stream.serve.server.CaptionServer` (``faults=``); nothing else creates one:
the CLI never does, and there is no environment variable, so a production server has
``faults=None`` and every check below is skipped.

Stages (where the fault strikes, for the chunks of that stream only):

- ``separator``: at the entry of the batched model step (before separation);
- ``recognizer``: at the exit of the batched model step (after the recognizer's log-probs);
- ``decoder``: in the stream's own decoding of a chunk (prefix beam + endpoint), which the
  server runs per stream on its decode threads.

Kinds: ``raise`` (an :class:`InjectedFault` exception) or ``stall`` (sleeps ``stall_s``:
a step far past its budget). A model-stage stall holds the whole batched step (one model
owner steps every stream together), so the isolated stall is a ``decoder`` stall; the
plan refuses a model-stage stall rather than pretend it is isolated.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

STAGES = ("separator", "recognizer", "decoder")
KINDS = ("raise", "stall")


class InjectedFault(RuntimeError):
    """The exception a ``raise`` fault throws."""


@dataclass(frozen=True)
class Fault:
    """One stream's fault.

    Attributes:
        stream_id: the stream it strikes (its session name in the worker).
        stage: one of :data:`STAGES`.
        kind: one of :data:`KINDS`.
        from_chunk: chunk index (of the stream's current session) from which it strikes.
        count: how many chunks it strikes (None: every chunk from ``from_chunk`` on).
        stall_s: sleep of a ``stall`` fault.
    """

    stream_id: str
    stage: str
    kind: str = "raise"
    from_chunk: int = 0
    count: int | None = None
    stall_s: float = 2.0

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"fault stage must be one of {STAGES}, got {self.stage!r}")
        if self.kind not in KINDS:
            raise ValueError(f"fault kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "stall" and self.stage != "decoder":
            raise ValueError("a stall can only be injected at the 'decoder' stage (a model-stage stall holds every stream's batch)")

    def strikes(self, chunk_index: int) -> bool:
        return chunk_index >= self.from_chunk and (self.count is None or chunk_index < self.from_chunk + self.count)


class FaultPlan:
    """The faults of a test run; thread-safe; counts what fired (``fired``: stream -> n)."""

    def __init__(self, faults: list[Fault] | tuple[Fault, ...] = ()):
        self.faults = tuple(faults)
        self.fired: dict[str, int] = {}
        self._lock = threading.Lock()

    def check(self, stream_id: str, stage: str, chunk_index: int) -> None:
        """Raise or stall if a fault of ``stream_id`` at ``stage`` strikes this chunk."""
        for f in self.faults:
            if f.stream_id == stream_id and f.stage == stage and f.strikes(chunk_index):
                with self._lock:
                    self.fired[stream_id] = self.fired.get(stream_id, 0) + 1
                if f.kind == "raise":
                    raise InjectedFault(f"injected {stage} fault on stream {stream_id!r} at chunk {chunk_index}")
                time.sleep(f.stall_s)

    @property
    def total_fired(self) -> int:
        with self._lock:
            return sum(self.fired.values())
