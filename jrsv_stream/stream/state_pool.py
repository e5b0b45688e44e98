"""Preallocated per-stream state slots for the batching worker.

The pool holds one pipeline state with ``B = capacity`` (allocated once, on the model's
device); a stream owns one row (a slot) from join to leave. A batched step gathers the
rows of the streams in the batch, runs the model, and scatters the new rows back.
Only the worker thread touches the tensors; acquire/release are cheap and thread-safe.
"""

from __future__ import annotations

import threading
from typing import Any

import torch

from jrsv_stream.stream.pipeline_api import StreamingPipeline, gather_state, scatter_state


class PoolFull(RuntimeError):
    """No free slot: the server is at its maximum number of streams."""


class StatePool:
    """``capacity`` state slots of ``pipeline`` on ``device``.

    Args:
        pipeline: provides ``init_state(batch, device)``.
        capacity: maximum concurrent streams.
        device: where the states live (the model's device).
    """

    def __init__(self, pipeline: StreamingPipeline, capacity: int, device: torch.device | str = "cpu"):
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = int(capacity)
        self.device = torch.device(device)
        self._pipeline = pipeline
        self.state = pipeline.init_state(self.capacity, self.device)
        self._fresh = pipeline.init_state(1, self.device)  # the initial row, copied into reset slots
        self._free = list(range(self.capacity - 1, -1, -1))
        self._lock = threading.Lock()

    @property
    def in_use(self) -> int:
        with self._lock:
            return self.capacity - len(self._free)

    def acquire(self) -> int:
        """Take a free slot (its state is reset by :meth:`reset` before its first step).

        Raises:
            PoolFull: every slot is taken.
        """
        with self._lock:
            if not self._free:
                raise PoolFull(f"all {self.capacity} stream slots are in use")
            return self._free.pop()

    def release(self, slot: int) -> None:
        with self._lock:
            if slot in self._free or not 0 <= slot < self.capacity:
                raise ValueError(f"slot {slot} is not in use")
            self._free.append(slot)

    def reset(self, slots: list[int]) -> None:
        """Set ``slots`` to the pipeline's initial state (worker thread only)."""
        if not slots:
            return
        idx = torch.tensor(slots, dtype=torch.long, device=self.device)
        fresh = gather_state(self._fresh, torch.zeros(len(slots), dtype=torch.long, device=self.device))
        scatter_state(self.state, idx, fresh)

    def gather(self, slots: list[int]) -> Any:
        """The batch state of ``slots`` (worker thread only)."""
        return gather_state(self.state, torch.tensor(slots, dtype=torch.long, device=self.device))

    def scatter(self, slots: list[int], state: Any) -> None:
        """Write a batch state back into ``slots`` (worker thread only)."""
        scatter_state(self.state, torch.tensor(slots, dtype=torch.long, device=self.device), state)
