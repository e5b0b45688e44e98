"""BatchWorker: the one owner of the model; batches chunks of all live streams.

Streams join with :meth:`BatchWorker.open_stream` (a slot in the :class:`StatePool`) and
submit fixed-size chunks; each submit returns a :class:`concurrent.futures.Future` that
resolves to that stream's :class:`StepResult`. The worker thread waits for the first
pending chunk, then at most ``max_wait_ms`` for up to ``max_batch`` streams to have one,
runs one batched ``pipeline.step`` on the gathered states, scatters the new states back
and resolves the futures. A stream's chunks are stepped strictly in order (at most one
chunk per stream in a batch).

Isolation: a chunk with the wrong shape/dtype or NaN/Inf samples is refused at submit
(ValueError, nothing queued). If a batched step raises, each chunk of the batch is retried
alone, so only the offending stream gets the exception; rows with non-finite outputs get
:class:`NonFiniteOutput` and their slot is reset. Other streams never notice.

Fault injection (tests and the soak bench only): ``faults=`` takes a
:class:`~jrsv_stream.stream.faults.FaultPlan` that makes named streams' steps raise at the
entry (``separator``) or exit (``recognizer``) of the batched step; None (the default, and
what the CLI uses) skips it.

Network-free: no asyncio here (the server wraps the futures).
"""

from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from jrsv_stream.stream.faults import FaultPlan
from jrsv_stream.stream.pipeline_api import StreamingPipeline, gather_state
from jrsv_stream.stream.state_pool import PoolFull, StatePool


class QueueFull(RuntimeError):
    """The worker's bounded queue (total or per stream) is full: back off and retry."""


class NonFiniteOutput(RuntimeError):
    """The model produced NaN/Inf for this stream's chunk; its state was reset."""


class WorkerStopped(RuntimeError):
    """The worker is not running (stopped or never started)."""


@dataclass(frozen=True)
class StepResult:
    """One stream's share of a batched step (CPU tensors, copied once per batch).

    logp: track -> (F, V) log-probs.  activity: track -> (F,).  encoder_out: track -> (F, D)
    or None.  track_audio: track -> (chunk_samples,) (or (chunk_samples, K))
    audio the recognizer heard, or None.
    queued_ms: submit -> batch start.  compute_ms: the batched step's wall time.
    """

    chunk_index: int
    logp: dict[str, torch.Tensor]
    activity: dict[str, torch.Tensor]
    encoder_out: dict[str, torch.Tensor] | None
    queued_ms: float
    compute_ms: float
    batch_size: int
    stage_ms: dict[str, float] | None = None  # the pipeline's own per-stage times for the batch, if it reports them
    track_audio: dict[str, torch.Tensor] | None = None
    # the newest chunk's provisional log-probs / audio (a recognizer with lookahead; see
    # PipelineOutput.ahead_logp), or None
    ahead_logp: dict[str, torch.Tensor] | None = None
    ahead_audio: dict[str, torch.Tensor] | None = None


@dataclass
class _Item:
    handle: "StreamHandle"
    audio: torch.Tensor  # (chunk_samples,) float32, CPU
    chunk_index: int
    future: Future
    submitted: float  # time.monotonic()


class StreamHandle:
    """A stream's membership in the worker: its slot and its ordered chunk queue."""

    def __init__(self, worker: "BatchWorker", name: str, slot: int):
        self.worker = worker
        self.name = name
        self.slot = slot
        self.closed = False
        self.chunks_submitted = 0
        self.pending: collections.deque[_Item] = collections.deque()

    def submit(self, chunk: np.ndarray | torch.Tensor) -> Future:
        return self.worker.submit(self, chunk)

    def close(self) -> None:
        self.worker.close_stream(self)

    def __repr__(self) -> str:
        return f"StreamHandle({self.name!r}, slot={self.slot}, closed={self.closed})"


def _percentiles(xs, qs=(50, 95, 99)) -> dict[str, float]:
    if not xs:
        return {f"p{q}": 0.0 for q in qs}
    a = np.asarray(xs, dtype=np.float64)
    return {f"p{q}": float(np.percentile(a, q)) for q in qs}


class BatchWorker:
    """Owns ``pipeline`` on ``device`` (CUDA if present, else CPU) and batches its steps.

    Args:
        pipeline: the :class:`StreamingPipeline` (moved to ``device`` if it has ``.to``).
        max_batch: most streams in one step.
        max_wait_ms: after the first chunk is ready, how long to wait for more.
        max_streams: slot pool capacity.
        max_queue_chunks: total chunks waiting (all streams) before submit raises QueueFull.
        max_pending_per_stream: chunks one stream may have waiting.
        device: override the device choice.
        max_pending_finals: finals queued or running on the finals lane before
            :meth:`call_final` refuses more (see there).
        faults: test-only :class:`~jrsv_stream.stream.faults.FaultPlan` (None: off).
    """

    def __init__(self, pipeline: StreamingPipeline, max_batch: int = 32, max_wait_ms: float = 10.0, max_streams: int = 64,
                 max_queue_chunks: int | None = None, max_pending_per_stream: int = 16,
                 device: torch.device | str | None = None, max_pending_finals: int = 8, faults: FaultPlan | None = None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if hasattr(pipeline, "to"):
            pipeline = pipeline.to(self.device)
        if hasattr(pipeline, "eval"):
            pipeline.eval()
        self.pipeline = pipeline
        self.faults = faults
        self.chunk_samples = int(pipeline.chunk_samples)
        self.max_batch = int(max_batch)
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue_chunks = int(max_queue_chunks or max(64, 4 * max_streams))
        self.max_pending_per_stream = int(max_pending_per_stream)
        self.pool = StatePool(pipeline, max_streams, self.device)
        self._cond = threading.Condition()
        self._streams: dict[int, StreamHandle] = {}  # slot -> handle (open, or closed and not yet released)
        self._to_reset: list[int] = []
        self._to_release: list[int] = []
        self._inflight: set[int] = set()  # slots of the batch being stepped
        self._calls: collections.deque[tuple[Callable, tuple, Future]] = collections.deque()
        self._finals: ThreadPoolExecutor | None = None  # the finals lane (see call_final)
        self.max_pending_finals = int(max_pending_finals)
        self._finals_waiting = 0
        self.finals_refused = 0
        self._queued = 0
        self._running = False
        self._thread: threading.Thread | None = None
        # statistics (worker thread writes, anyone reads)
        self.batches = 0
        self.chunks = 0
        self.failed_chunks = 0
        self._compute_ms: collections.deque[float] = collections.deque(maxlen=2000)
        self._chunk_latency_ms: collections.deque[float] = collections.deque(maxlen=2000)
        self._batch_sizes: collections.deque[int] = collections.deque(maxlen=2000)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "BatchWorker":
        with self._cond:
            if self._running:
                return self
            self._running = True
        self._thread = threading.Thread(target=self._loop, name="jrsv-batch-worker", daemon=True)
        self._thread.start()
        self._finals = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jrsv-finals")
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Finish the chunks already queued, then stop the thread."""
        with self._cond:
            self._running = False
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        if self._finals is not None:
            self._finals.shutdown(wait=True, cancel_futures=False)
            self._finals = None
        with self._cond:  # anything left (stop timed out or raced) fails clearly
            for h in self._streams.values():
                while h.pending:
                    it = h.pending.popleft()
                    if not it.future.done():
                        it.future.set_exception(WorkerStopped("worker stopped"))
            self._queued = 0

    def __enter__(self) -> "BatchWorker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._running

    # ------------------------------------------------------------------ streams
    def open_stream(self, name: str = "", release_wait_s: float = 5.0) -> StreamHandle:
        """Join: take a slot.

        A stream that left while its last chunk was being stepped frees its slot only after
        that step; when every slot is taken but such releases are pending, the joiner waits
        for them (at most ``release_wait_s``) instead of being refused.

        Raises:
            :class:`~jrsv_stream.stream.state_pool.PoolFull`: every slot belongs to an open
            stream (or the pending releases did not come in time).
        """
        deadline = time.monotonic() + release_wait_s
        with self._cond:
            while True:
                try:
                    slot = self.pool.acquire()
                    break
                except PoolFull:
                    left = deadline - time.monotonic()
                    if not (self._running and self._to_release) or left <= 0:
                        raise
                    self._cond.wait(left)
            h = StreamHandle(self, name, slot)
            self._streams[slot] = h
            self._to_reset.append(slot)
            if not self._running:
                self._apply_resets_releases()
        return h

    def close_stream(self, h: StreamHandle) -> None:
        """Leave: cancel waiting chunks; the slot is freed after any step in flight."""
        with self._cond:
            if h.closed:
                return
            h.closed = True
            while h.pending:
                it = h.pending.popleft()
                self._queued -= 1
                it.future.cancel()
            if not self._running or h.slot not in self._inflight:
                self._streams.pop(h.slot, None)  # free now: a new stream may take the slot at once
                self.pool.release(h.slot)  # (its state is reset on the worker thread before reuse)
            else:
                self._to_release.append(h.slot)
            self._cond.notify_all()

    def submit(self, h: StreamHandle, chunk: np.ndarray | torch.Tensor) -> Future:
        """Queue one chunk ((chunk_samples,) float32, finite) of stream ``h``.

        Raises:
            ValueError: wrong shape or dtype, NaN/Inf samples, or a closed stream.
            QueueFull: the total or per-stream queue is full.
            WorkerStopped: the worker is not running.
        """
        x = torch.as_tensor(chunk)
        if x.dtype != torch.float32:
            raise ValueError(f"chunk dtype must be float32, got {x.dtype}")
        if x.shape != (self.chunk_samples,):
            raise ValueError(f"chunk shape must be ({self.chunk_samples},), got {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("chunk contains NaN or Inf samples")
        fut: Future = Future()
        with self._cond:
            if not self._running:
                raise WorkerStopped("the batch worker is not running")
            if h.closed:
                raise ValueError(f"stream {h.name!r} is closed")
            if self._queued >= self.max_queue_chunks:
                raise QueueFull(f"worker queue full ({self._queued} chunks)")
            if len(h.pending) >= self.max_pending_per_stream:
                raise QueueFull(f"stream {h.name!r} has {len(h.pending)} chunks waiting")
            h.pending.append(_Item(h, x.clone(), h.chunks_submitted, fut, time.monotonic()))
            h.chunks_submitted += 1
            self._queued += 1
            self._cond.notify_all()
        return fut

    def call(self, fn: Callable, *args: Any) -> Future:
        """Run ``fn(*args)`` on the worker thread between batches (e.g. rescoring with the
        model the worker owns); returns a Future of its result."""
        fut: Future = Future()
        with self._cond:
            if not self._running:
                raise WorkerStopped("the batch worker is not running")
            self._calls.append((fn, args, fut))
            self._cond.notify_all()
        return fut

    def call_final(self, fn: Callable, *args: Any) -> Future:
        """Run ``fn(*args)`` on the worker's finals lane: one thread beside the batching
        thread, for endpoint finals that take far longer than a chunk step (Whisper's
        decoder over a segment), so live partials of every stream keep flowing while a
        final decodes. Finals run one at a time, in submission order.

        Raises:
            WorkerStopped: not running. QueueFull: ``max_pending_finals`` finals are
                already waiting (the lane cannot keep up: the caller keeps its CTC final
                rather than let every stream's finals fall further behind).
        """
        with self._cond:
            if not self._running or self._finals is None:
                raise WorkerStopped("the batch worker is not running")
            if self._finals_waiting >= self.max_pending_finals:
                self.finals_refused += 1
                raise QueueFull(f"{self._finals_waiting} finals already waiting on the finals lane")
            self._finals_waiting += 1
            fut = self._finals.submit(fn, *args)
        fut.add_done_callback(self._final_done)
        return fut

    def _final_done(self, _fut: Future) -> None:
        with self._cond:
            self._finals_waiting -= 1

    @property
    def finals_waiting(self) -> int:
        """Calls queued or running on the finals lane."""
        return self._finals_waiting

    # ------------------------------------------------------------------ statistics
    @property
    def queue_depth(self) -> int:
        return self._queued

    @property
    def streams(self) -> int:
        return sum(1 for h in list(self._streams.values()) if not h.closed)

    def stats(self) -> dict:
        return {
            "device": str(self.device), "streams": self.streams, "queue_depth": self._queued,
            "batches": self.batches, "chunks": self.chunks, "failed_chunks": self.failed_chunks,
            "finals_refused": self.finals_refused,
            "mean_batch": float(np.mean(self._batch_sizes)) if self._batch_sizes else 0.0,
            "compute_ms": _percentiles(list(self._compute_ms)),
            "chunk_latency_ms": _percentiles(list(self._chunk_latency_ms)),
        }

    # ------------------------------------------------------------------ worker thread
    def _apply_resets_releases(self) -> None:
        """Caller holds the lock. Resets new slots, frees slots of closed streams."""
        if self._to_reset:
            self.pool.reset(self._to_reset)
            self._to_reset = []
        for slot in self._to_release:
            h = self._streams.pop(slot, None)
            if h is not None:
                self.pool.release(slot)
        self._to_release = []

    def _ready(self) -> list[StreamHandle]:
        return [h for h in self._streams.values() if h.pending and not h.closed]

    def _take_batch(self) -> tuple[list[_Item], list[tuple[Callable, tuple, Future]]] | None:
        with self._cond:
            while self._running and not self._calls and not self._ready():
                self._apply_resets_releases()  # free slots of streams that left while idle
                self._cond.wait(0.5)
            ready = self._ready()
            if not ready and not self._calls:
                return None  # stopping with nothing left
            if ready and len(ready) < self.max_batch:
                first = min(h.pending[0].submitted for h in ready)
                while self._running:
                    left = first + self.max_wait_s - time.monotonic()
                    ready = self._ready()
                    # no point waiting when every open stream already has a chunk here
                    if len(ready) >= min(self.max_batch, self.streams) or left <= 0:
                        break
                    self._cond.wait(left)
                ready = self._ready()
            ready.sort(key=lambda h: h.pending[0].submitted)
            items = [h.pending.popleft() for h in ready[: self.max_batch]]
            self._queued -= len(items)
            self._inflight = {it.handle.slot for it in items}
            calls = list(self._calls)
            self._calls.clear()
            self._apply_resets_releases()
            return items, calls

    def _loop(self) -> None:
        with torch.no_grad():
            while True:
                got = self._take_batch()
                if got is None:
                    break
                items, calls = got
                for fn, args, fut in calls:
                    if fut.set_running_or_notify_cancel():
                        try:
                            fut.set_result(fn(*args))
                        except Exception as e:  # the caller gets it; the worker goes on
                            fut.set_exception(e)
                if items:
                    self._run_batch(items)
                with self._cond:
                    self._inflight = set()
                    self._apply_resets_releases()
                    self._cond.notify_all()  # joiners waiting for a deferred release

    def _step(self, items: list[_Item]):
        slots = [it.handle.slot for it in items]
        audio = torch.stack([it.audio for it in items]).to(self.device, non_blocking=True)
        state = self.pool.gather(slots)
        if self.faults is not None:
            for it in items:
                self.faults.check(it.handle.name, "separator", it.chunk_index)
        out, new_state = self.pipeline.step(audio, state)
        if self.faults is not None:
            for it in items:
                self.faults.check(it.handle.name, "recognizer", it.chunk_index)
        stage = getattr(self.pipeline, "last_stage_ms", None)  # optional: e.g. {"separator": .., "encoder": ..}
        return out, new_state, (dict(stage) if stage else None)

    def _run_batch(self, items: list[_Item]) -> None:
        items = [it for it in items if it.future.set_running_or_notify_cancel()]
        if not items:
            return
        t0 = time.monotonic()
        try:
            out, new_state, stage = self._step(items)
            groups = [(items, out, new_state, stage)]
        except Exception as e:
            if len(items) == 1:
                self._fail(items[0], e)
                return
            groups = []
            for it in items:  # isolate the offending stream(s)
                try:
                    o, s, st = self._step([it])
                    groups.append(([it], o, s, st))
                except Exception as e2:
                    self._fail(it, e2)
        for group, o, s, st in groups:
            self._deliver(group, o, s, t0, st)

    def _fail(self, it: _Item, e: BaseException) -> None:
        self.failed_chunks += 1
        it.future.set_exception(RuntimeError(f"model step failed for stream {it.handle.name!r}: {type(e).__name__}: {e}"))

    def _deliver(self, items: list[_Item], out, new_state, t0: float, stage: dict | None = None) -> None:
        tracks = list(out.logp)
        logp = {t: out.logp[t].float().cpu() for t in tracks}  # one copy per batch
        act = {t: out.activity[t].float().cpu() for t in tracks}
        enc = {t: v.float().cpu() for t, v in out.encoder_out.items()} if out.encoder_out else None
        ta = getattr(out, "track_audio", None)
        ta = {t: v.float().cpu() for t, v in ta.items()} if ta else None
        al, aa = getattr(out, "ahead_logp", None), getattr(out, "ahead_audio", None)
        al = {t: v.float().cpu() for t, v in al.items()} if al else None
        aa = {t: v.float().cpu() for t, v in aa.items()} if aa else None
        ok = torch.ones(len(items), dtype=torch.bool)
        for t in tracks:
            ok &= torch.isfinite(logp[t]).flatten(1).all(1) & torch.isfinite(act[t]).flatten(1).all(1)
        good = [i for i in range(len(items)) if ok[i]]
        bad = {i for i in range(len(items)) if not ok[i]}
        with self._cond:
            if good:
                idx = torch.tensor(good, dtype=torch.long)
                rows = new_state if len(good) == len(items) else gather_state(new_state, idx.to(self.device))
                self.pool.scatter([items[i].handle.slot for i in good], rows)
            if bad:
                self.pool.reset([items[i].handle.slot for i in sorted(bad)])
        t1 = time.monotonic()
        compute_ms = 1000.0 * (t1 - t0)
        self.batches += 1
        self.chunks += len(items)
        self._compute_ms.append(compute_ms)
        self._batch_sizes.append(len(items))
        for i, it in enumerate(items):
            if i in bad:
                self.failed_chunks += 1
                it.future.set_exception(NonFiniteOutput(f"model output for stream {it.handle.name!r} has NaN/Inf; state reset"))
                continue
            self._chunk_latency_ms.append(1000.0 * (t1 - it.submitted))
            it.future.set_result(StepResult(
                chunk_index=it.chunk_index,
                logp={t: logp[t][i] for t in tracks},
                activity={t: act[t][i] for t in tracks},
                encoder_out={t: enc[t][i] for t in enc} if enc else None,
                queued_ms=1000.0 * (t0 - it.submitted), compute_ms=compute_ms, batch_size=len(items), stage_ms=stage,
                track_audio={t: ta[t][i] for t in ta} if ta else None,
                ahead_logp={t: al[t][i] for t in al} if al else None,
                ahead_audio={t: aa[t][i] for t in aa} if aa else None))
