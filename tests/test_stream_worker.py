"""BatchWorker: batched steps equal per-stream steps, streams join and leave at any time,
bad input and failing or non-finite streams are isolated from the others."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from jrsv_stream.nn.tiny import TinyPipeline
from jrsv_stream.stream.state_pool import PoolFull, StatePool
from jrsv_stream.stream.worker import BatchWorker, NonFiniteOutput, QueueFull, WorkerStopped

torch.set_num_threads(1)
CHUNK = 1280


def _audio(seed: int, n_chunks: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(CHUNK * n_chunks)).astype(np.float32)


def _reference(p: TinyPipeline, audio: np.ndarray) -> torch.Tensor:
    """The stream run alone, chunk by chunk: (F, V) speech log-probs."""
    s = p.init_state(1)
    outs = []
    with torch.no_grad():
        for a in range(0, len(audio), CHUNK):
            o, s = p.step(torch.from_numpy(audio[a:a + CHUNK])[None], s)
            outs.append(o.logp["speech"][0])
    return torch.cat(outs)


class FlakyPipeline(TinyPipeline):
    """Raises on any chunk whose first sample is 7.0; returns NaN rows when it is 5.0."""

    def step(self, audio, state):
        if bool((audio[:, 0] == 7.0).any()):
            raise RuntimeError("boom")
        out, s = super().step(audio, state)
        bad = audio[:, 0] == 5.0
        if bool(bad.any()):
            out.logp["speech"][bad] = float("nan")
        return out, s


def test_concurrent_streams_are_batched_and_equal_their_solo_runs():
    p = TinyPipeline(chunk_samples=CHUNK)
    n_streams, n_chunks = 6, 8
    audios = [_audio(i, n_chunks) for i in range(n_streams)]
    with BatchWorker(p, max_batch=8, max_wait_ms=20, max_streams=8) as w:
        handles = [w.open_stream(f"s{i}") for i in range(n_streams)]
        futs = [[h.submit(a[k * CHUNK:(k + 1) * CHUNK]) for k in range(n_chunks)] for h, a in zip(handles, audios)]
        results = [[f.result(10) for f in fs] for fs in futs]
        stats = w.stats()
    assert stats["mean_batch"] > 1.5, stats  # chunks of different streams shared steps
    assert max(r.batch_size for rs in results for r in rs) > 1
    for a, rs in zip(audios, results):
        assert [r.chunk_index for r in rs] == list(range(n_chunks))
        got = torch.cat([r.logp["speech"] for r in rs])
        assert torch.allclose(got, _reference(p, a), atol=1e-5)


def test_streams_join_and_leave_at_any_time_and_slots_are_reset():
    p = TinyPipeline(chunk_samples=CHUNK)
    a, b = _audio(1, 6), _audio(2, 6)
    with BatchWorker(p, max_batch=4, max_wait_ms=5, max_streams=2) as w:
        h1 = w.open_stream("one")
        for k in range(3):
            h1.submit(a[k * CHUNK:(k + 1) * CHUNK]).result(10)
        h2 = w.open_stream("two")  # joins mid-way
        with pytest.raises(PoolFull):
            w.open_stream("three")
        h1.close()  # leaves mid-way
        got = [h2.submit(b[k * CHUNK:(k + 1) * CHUNK]).result(10).logp["speech"] for k in range(6)]
        assert torch.allclose(torch.cat(got), _reference(p, b), atol=1e-5)
        time.sleep(0.05)
        h3 = w.open_stream("three")  # reuses h1's slot: it must start from a fresh state
        got3 = [h3.submit(a[k * CHUNK:(k + 1) * CHUNK]).result(10).logp["speech"] for k in range(6)]
        assert torch.allclose(torch.cat(got3), _reference(p, a), atol=1e-5)
        with pytest.raises(ValueError, match="closed"):
            h1.submit(a[:CHUNK])


class SlowPipeline(TinyPipeline):
    def step(self, audio, state):
        time.sleep(0.4)
        return super().step(audio, state)


def test_a_joiner_waits_for_a_slot_freed_behind_the_step_in_flight():
    """A stream that leaves while its chunk is being stepped frees its slot after the step;
    a stream joining at that moment (one reconnecting, the next item of an eval) gets that
    slot instead of PoolFull, and starts from a fresh state."""
    p = SlowPipeline(chunk_samples=CHUNK)
    a, b = _audio(1, 2), _audio(2, 2)
    with BatchWorker(p, max_batch=1, max_wait_ms=0, max_streams=1) as w:
        h1 = w.open_stream("one")
        fut = h1.submit(a[:CHUNK])
        time.sleep(0.15)  # the step of h1's chunk is in flight
        h1.close()
        assert w.pool.in_use == 1  # release deferred behind the step
        t0 = time.monotonic()
        h2 = w.open_stream("two")  # before the fix: PoolFull
        assert time.monotonic() - t0 > 0.05 and fut.result(10).chunk_index == 0  # waited; h1's chunk still answered
        got = [h2.submit(b[k * CHUNK:(k + 1) * CHUNK]).result(10).logp["speech"] for k in range(2)]
        assert torch.allclose(torch.cat(got), _reference(p, b), atol=1e-5)
        with pytest.raises(PoolFull):  # an open stream's slot is never waited for
            w.open_stream("three", release_wait_s=1.0)


def test_bad_input_is_refused_at_submit_and_does_not_reach_the_batch():
    p = TinyPipeline(chunk_samples=CHUNK)
    with BatchWorker(p) as w:
        h = w.open_stream("x")
        bad = np.zeros(CHUNK, dtype=np.float32)
        bad[10] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            h.submit(bad)
        with pytest.raises(ValueError, match="shape"):
            h.submit(np.zeros(CHUNK + 1, dtype=np.float32))
        with pytest.raises(ValueError, match="dtype"):
            h.submit(np.zeros(CHUNK, dtype=np.float64))
        assert w.queue_depth == 0
        assert h.submit(np.zeros(CHUNK, dtype=np.float32)).result(10).chunk_index == 0


def test_one_streams_exception_or_nan_output_never_affects_the_others():
    p = FlakyPipeline(chunk_samples=CHUNK)
    n_chunks = 6
    good = [_audio(i, n_chunks) for i in range(3)]
    poison = _audio(9, n_chunks)
    poison[2 * CHUNK] = 7.0  # chunk 2 raises
    poison[4 * CHUNK] = 5.0  # chunk 4 gives NaN
    with BatchWorker(p, max_batch=8, max_wait_ms=30, max_streams=8) as w:
        hs = [w.open_stream(f"g{i}") for i in range(3)]
        hp = w.open_stream("poison")
        fg = [[h.submit(a[k * CHUNK:(k + 1) * CHUNK]) for k in range(n_chunks)] for h, a in zip(hs, good)]
        fp = [hp.submit(poison[k * CHUNK:(k + 1) * CHUNK]) for k in range(n_chunks)]
        for a, fs in zip(good, fg):
            got = torch.cat([f.result(10).logp["speech"] for f in fs])
            assert torch.allclose(got, _reference(TinyPipeline(chunk_samples=CHUNK), a), atol=1e-5)
        with pytest.raises(RuntimeError, match="boom"):
            fp[2].result(10)
        with pytest.raises(NonFiniteOutput):
            fp[4].result(10)
        assert fp[5].result(10).chunk_index == 5  # the poisoned stream itself goes on
        assert w.stats()["failed_chunks"] == 2


def test_queue_bounds_and_stop():
    p = TinyPipeline(chunk_samples=CHUNK)
    w = BatchWorker(p, max_pending_per_stream=2, max_wait_ms=1)
    h = w.open_stream("x")
    with pytest.raises(WorkerStopped):
        h.submit(np.zeros(CHUNK, dtype=np.float32))
    w.start()
    gate = threading.Event()
    w.call(gate.wait, 5)  # occupy the worker thread
    time.sleep(0.05)
    h.submit(np.zeros(CHUNK, dtype=np.float32))
    h.submit(np.zeros(CHUNK, dtype=np.float32))
    with pytest.raises(QueueFull):
        h.submit(np.zeros(CHUNK, dtype=np.float32))
    gate.set()
    w.stop()
    assert not w.running


def test_call_runs_on_the_worker_thread():
    with BatchWorker(TinyPipeline(chunk_samples=CHUNK)) as w:
        assert w.call(threading.current_thread).result(5).name == "jrsv-batch-worker"
        with pytest.raises(ZeroDivisionError):
            w.call(lambda: 1 / 0).result(5)


def test_state_pool_acquire_release():
    pool = StatePool(TinyPipeline(chunk_samples=CHUNK), 2)
    a, b = pool.acquire(), pool.acquire()
    assert {a, b} == {0, 1} and pool.in_use == 2
    with pytest.raises(PoolFull):
        pool.acquire()
    pool.release(a)
    with pytest.raises(ValueError):
        pool.release(a)
    assert pool.acquire() == a


class StagedPipeline(TinyPipeline):
    def step(self, audio, state):
        out = super().step(audio, state)
        self.last_stage_ms = {"separator": 1.5, "encoder": 2.5}
        return out


def test_pipeline_stage_times_reach_the_results():
    with BatchWorker(StagedPipeline(chunk_samples=CHUNK)) as w:
        r = w.open_stream("x").submit(np.zeros(CHUNK, dtype=np.float32)).result(10)
    assert r.stage_ms == {"separator": 1.5, "encoder": 2.5} and r.compute_ms > 0
