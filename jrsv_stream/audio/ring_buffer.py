"""Preallocated single-producer / single-consumer audio ring buffer.

The writer is typically a PortAudio callback thread: :meth:`RingBuffer.write` never
allocates a buffer, takes a lock, logs or raises on a full ring. When the reader falls
behind, the frames that do not fit are dropped (the oldest unread audio is kept, so what
the reader gets is always contiguous up to a counted gap) and the overrun counters grow.

Lock-freedom rests on two monotonically increasing integer positions: only the writer
advances ``_write_pos`` (after copying the frames in), only the reader advances
``_read_pos`` (after copying the frames out). Python int stores are atomic under the GIL,
so each side sees a consistent (possibly slightly stale) view of the other.
"""

from __future__ import annotations

import time

import numpy as np


class RingBuffer:
    """Fixed-capacity float32 ring of ``(frames, channels)`` audio.

    Args:
        capacity_frames: frames the ring holds (e.g. 10 s at the device rate).
        channels: interleaved channels per frame (downmixing happens on the reader side).

    Attributes:
        overruns: write calls that could not store all their frames.
        overrun_frames: frames dropped because the ring was full.
    """

    def __init__(self, capacity_frames: int, channels: int = 1):
        if capacity_frames <= 0 or channels <= 0:
            raise ValueError(f"capacity_frames and channels must be positive, got {capacity_frames}, {channels}")
        self.capacity_frames = int(capacity_frames)
        self.channels = int(channels)
        self._buf = np.zeros((self.capacity_frames, self.channels), dtype=np.float32)
        self._write_pos = 0  # total frames ever written (writer only)
        self._read_pos = 0  # total frames ever read (reader only)
        self.overruns = 0
        self.overrun_frames = 0

    # ------------------------------------------------------------------ writer side
    def write(self, frames: np.ndarray) -> int:
        """Copy ``frames`` ((n, channels) or (n,) when mono) into the ring; no allocation.

        Returns:
            the number of frames stored (less than n on overrun; the rest is dropped and
            counted).
        """
        n = frames.shape[0]
        free = self.capacity_frames - (self._write_pos - self._read_pos)
        if n > free:
            self.overruns += 1
            self.overrun_frames += n - free
            n = free
        if n <= 0:
            return 0
        w = self._write_pos % self.capacity_frames
        first = min(n, self.capacity_frames - w)
        if frames.ndim == 1:
            self._buf[w:w + first, 0] = frames[:first]
            if n > first:
                self._buf[:n - first, 0] = frames[first:n]
        else:
            self._buf[w:w + first] = frames[:first]
            if n > first:
                self._buf[:n - first] = frames[first:n]
        self._write_pos += n  # publish only after the copy
        return n

    # ------------------------------------------------------------------ reader side
    @property
    def available(self) -> int:
        """Frames ready to read."""
        return self._write_pos - self._read_pos

    @property
    def free(self) -> int:
        """Frames that can be written before an overrun."""
        return self.capacity_frames - self.available

    def read_into(self, out: np.ndarray) -> int:
        """Copy up to ``len(out)`` frames into ``out`` ((n, channels)); returns frames read."""
        n = min(out.shape[0], self.available)
        if n <= 0:
            return 0
        r = self._read_pos % self.capacity_frames
        first = min(n, self.capacity_frames - r)
        out[:first] = self._buf[r:r + first]
        if n > first:
            out[first:n] = self._buf[:n - first]
        self._read_pos += n  # release only after the copy
        return n

    def read(self, max_frames: int | None = None) -> np.ndarray:
        """Read up to ``max_frames`` (default: all available) frames as a new (n, channels) array."""
        n = self.available if max_frames is None else min(max_frames, self.available)
        out = np.empty((max(n, 0), self.channels), dtype=np.float32)
        got = self.read_into(out)
        return out[:got]

    def wait(self, min_frames: int, timeout_s: float, poll_s: float = 0.005) -> bool:
        """Poll until ``min_frames`` are available or ``timeout_s`` passes (the writer
        cannot signal: a callback must not touch locks). Returns whether they are."""
        deadline = time.monotonic() + timeout_s
        while self.available < min_frames:
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll_s)
        return True
