"""RingBuffer: wrap-around, overrun accounting, no allocation on the writer side, SPSC threads."""

from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest

from jrsv_stream.audio.ring_buffer import RingBuffer


def test_write_read_wraps_around_in_order():
    rb = RingBuffer(10, channels=2)
    x = np.arange(14, dtype=np.float32).reshape(7, 2)
    assert rb.write(x) == 7
    np.testing.assert_array_equal(rb.read(5), x[:5])
    y = np.arange(100, 116, dtype=np.float32).reshape(8, 2)
    assert rb.write(y) == 8  # wraps: 2 left + 8 new = 10 = capacity
    assert rb.available == 10 and rb.free == 0
    np.testing.assert_array_equal(rb.read(), np.concatenate([x[5:], y]))
    assert rb.overruns == 0 and rb.available == 0


def test_mono_1d_input_and_read_into():
    rb = RingBuffer(8)
    rb.write(np.array([1, 2, 3], dtype=np.float32))
    out = np.zeros((5, 1), dtype=np.float32)
    assert rb.read_into(out) == 3
    np.testing.assert_array_equal(out[:3, 0], [1, 2, 3])
    assert rb.read_into(out) == 0


def test_overrun_drops_newest_and_counts():
    rb = RingBuffer(6)
    assert rb.write(np.arange(4, dtype=np.float32)) == 4
    assert rb.write(np.arange(10, 15, dtype=np.float32)) == 2  # only 2 fit
    assert rb.overruns == 1 and rb.overrun_frames == 3
    assert rb.write(np.ones(3, dtype=np.float32)) == 0  # full
    assert rb.overruns == 2 and rb.overrun_frames == 6
    np.testing.assert_array_equal(rb.read()[:, 0], [0, 1, 2, 3, 10, 11])  # oldest kept, contiguous


def test_writer_allocates_no_audio_sized_memory():
    rb = RingBuffer(48000, channels=2)
    block = np.random.default_rng(0).standard_normal((960, 2)).astype(np.float32)  # 7.5 kB per block
    out = np.zeros((48000, 2), dtype=np.float32)
    buf_id = id(rb._buf)
    rb.write(block)  # warm up
    rb.read_into(out)
    tracemalloc.start()
    for _ in range(200):
        rb.write(block)
        rb.read_into(out)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 4096, f"writer/reader allocated {peak} bytes"  # a copied block alone would be 7680
    assert id(rb._buf) == buf_id


def test_concurrent_single_writer_single_reader_exact_sequence():
    rb = RingBuffer(4096)
    n_total = 200_000
    got = []

    def writer():
        pos = 0
        while pos < n_total:
            n = min(257, n_total - pos)
            blk = np.arange(pos, pos + n, dtype=np.float32)
            w = rb.write(blk) if rb.free >= n else 0
            pos += w

    t = threading.Thread(target=writer)
    t.start()
    out = np.zeros((1000, 1), dtype=np.float32)
    count = 0
    while count < n_total:
        k = rb.read_into(out)
        if k:
            got.append(out[:k, 0].copy())
            count += k
    t.join()
    seq = np.concatenate(got)
    np.testing.assert_array_equal(seq, np.arange(n_total, dtype=np.float32))
    assert rb.overruns == 0


def test_wait_times_out_and_succeeds():
    rb = RingBuffer(100)
    assert not rb.wait(10, timeout_s=0.02)
    rb.write(np.zeros(10, dtype=np.float32))
    assert rb.wait(10, timeout_s=0.02)


def test_bad_capacity():
    with pytest.raises(ValueError):
        RingBuffer(0)
