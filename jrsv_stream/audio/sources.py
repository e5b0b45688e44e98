"""Audio sources: live capture, files, ffmpeg; every source yields 16 kHz mono float32.

A source is an iterator over blocks: ``for block in source: ...`` gives ``(n,)`` float32
arrays at :data:`jrsv_stream.SAMPLE_RATE` (``n`` varies), until the source ends or
:meth:`AudioSource.close` is called. Sources block while waiting for audio, so a server
reads them in a thread.

- :class:`SoundDeviceSource`: a PortAudio input (device by name or index) at the device's
  native rate and channel count; the callback only copies into a preallocated
  :class:`~jrsv_stream.audio.ring_buffer.RingBuffer`; downmixing and resampling
  (torchaudio's sinc kernel, streamed exactly) happen on the reader side.
- :class:`ArraySource` / :class:`FileSource`: audio in memory or a file, paced at real time
  or as fast as possible.
- :class:`FfmpegSource`: anything ffmpeg reads (files, HTTP/HLS/RTMP URLs) decoded to
  16 kHz mono s16le by a subprocess.

Remote broadcasters publish PCM over the websocket protocol instead (clients/broadcast.py,
docs/protocol.md).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import threading
import time
from typing import Iterator

import numpy as np
import torch
import torchaudio.transforms as T

from jrsv_stream import SAMPLE_RATE
from jrsv_stream.audio.ring_buffer import RingBuffer


class SourceError(RuntimeError):
    """A source could not be opened or failed while running."""


class StreamingResampler:
    """Chunk-by-chunk resampling that equals torchaudio's offline ``resample`` exactly.

    Uses the windowed-sinc kernel of :class:`torchaudio.transforms.Resample`; keeps the
    last ``2*width`` input samples (plus a partial block) between calls, so the output lags
    the input by at most ``width + orig/gcd`` input samples; :meth:`flush` emits the tail.

    Shapes: ``process((n,)) -> (m,)`` float32, with the concatenation of all outputs (after
    :meth:`flush`) equal to ``torchaudio.functional.resample(all_input, orig, new)``.
    """

    def __init__(self, orig_rate: int, new_rate: int = SAMPLE_RATE):
        self.orig_rate, self.new_rate = int(orig_rate), int(new_rate)
        self.identity = self.orig_rate == self.new_rate
        g = math.gcd(self.orig_rate, self.new_rate)
        self._orig, self._new = self.orig_rate // g, self.new_rate // g
        if not self.identity:
            r = T.Resample(self.orig_rate, self.new_rate)
            self._kernel = r.kernel.detach().to(torch.float32)  # (new, 1, 2*width + orig)
            self._width = int(r.width)
            self._buf = np.zeros(self._width, dtype=np.float32)  # left zero padding of the offline pad
        self._in_total = 0
        self._out_total = 0

    def _run(self, x: np.ndarray) -> np.ndarray:
        k = self._kernel.shape[-1]
        if len(x) < k:
            self._buf = x
            return np.zeros(0, dtype=np.float32)
        n_blocks = (len(x) - k) // self._orig + 1
        used = (n_blocks - 1) * self._orig + k
        y = torch.nn.functional.conv1d(torch.from_numpy(x[:used])[None, None], self._kernel, stride=self._orig)
        self._buf = x[n_blocks * self._orig:].copy()
        return y[0].transpose(0, 1).reshape(-1).numpy()

    def process(self, x: np.ndarray) -> np.ndarray:
        """Resample the next input block ((n,) float) -> (m,) float32 (m may be 0)."""
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        self._in_total += len(x)
        if self.identity:
            self._out_total += len(x)
            return x
        y = self._run(np.concatenate([self._buf, x]))
        self._out_total += len(y)
        return y

    def flush(self) -> np.ndarray:
        """Emit the remaining output (zero right padding, as the offline function does)."""
        if self.identity:
            return np.zeros(0, dtype=np.float32)
        y = self._run(np.concatenate([self._buf, np.zeros(self._width + self._orig, dtype=np.float32)]))
        target = math.ceil(self._new * self._in_total / self._orig)
        y = y[: max(0, target - self._out_total)]
        self._out_total += len(y)
        return y


class AudioSource:
    """Base class: iterate to get (n,) float32 blocks at 16 kHz mono; close to stop."""

    sample_rate: int = SAMPLE_RATE

    def __init__(self):
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.blocks()

    def blocks(self) -> Iterator[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def overruns(self) -> int:
        """Audio lost before it reached the reader (ring overruns); 0 for pull sources."""
        return 0

    def close(self) -> None:
        self._closed.set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ArraySource(AudioSource):
    """Audio already in memory, in blocks of ``block_ms``, paced at real time or not.

    Args:
        audio: (T,) float32 at 16 kHz.
        realtime: sleep so block ``k`` is yielded at ``start + k*block`` (live playback);
            False yields as fast as the consumer takes them (offline use).
        block_ms: block duration.

    Attributes:
        start_time: ``time.time()`` when iteration started: audio time ``t`` is "live" at
            wall time ``start_time + t`` (the latency benchmark's reference).
    """

    def __init__(self, audio: np.ndarray, realtime: bool = True, block_ms: float = 20.0):
        super().__init__()
        self.audio = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
        self.realtime = realtime
        self.block_samples = max(1, int(round(block_ms * SAMPLE_RATE / 1000)))
        self.start_time: float | None = None

    def blocks(self) -> Iterator[np.ndarray]:
        t0 = time.monotonic()
        self.start_time = time.time()
        for a in range(0, len(self.audio), self.block_samples):
            if self.closed:
                return
            block = self.audio[a:a + self.block_samples]
            if self.realtime:  # like a live input: a block is delivered once it is complete
                delay = t0 + (a + len(block)) / SAMPLE_RATE - time.monotonic()
                if delay > 0 and self._closed.wait(delay):
                    return
            yield block


class FileSource(ArraySource):
    """An audio file (any format soundfile reads; any rate, downmixed, resampled)."""

    def __init__(self, path: str | os.PathLike, realtime: bool = True, block_ms: float = 20.0):
        from jrsv_stream.audio.io import load_audio

        self.path = str(path)
        super().__init__(load_audio(path), realtime=realtime, block_ms=block_ms)


class FfmpegSource(AudioSource):
    """Anything ffmpeg can read (file, http(s), HLS, RTMP...) decoded by a subprocess.

    Args:
        url: input path or URL.
        realtime: pass ``-re`` (read input at its native rate; for files played "live").
            Live URLs are paced by the network anyway.
        block_ms: bytes read per block.
        input_args: extra ffmpeg arguments placed before ``-i`` (e.g. ``["-f", "lavfi"]``).
    """

    def __init__(self, url: str, realtime: bool = False, block_ms: float = 20.0, input_args: list[str] | None = None,
                 ffmpeg: str = "ffmpeg"):
        super().__init__()
        self.url = url
        exe = shutil.which(ffmpeg)
        if exe is None:
            raise SourceError(f"{ffmpeg} not found on PATH (Debian: apt-get install ffmpeg)")
        self.cmd = [exe, "-nostdin", "-hide_banner", "-loglevel", "error", *(["-re"] if realtime else []),
                    *(input_args or []), "-i", url, "-vn", "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "s16le", "pipe:1"]
        self.block_bytes = 2 * max(1, int(round(block_ms * SAMPLE_RATE / 1000)))
        self._proc: subprocess.Popen | None = None

    def blocks(self) -> Iterator[np.ndarray]:
        self._proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        carry = b""
        try:
            while not self.closed:
                data = self._proc.stdout.read1(self.block_bytes) if hasattr(self._proc.stdout, "read1") else self._proc.stdout.read(self.block_bytes)
                if not data:
                    break
                data = carry + data
                cut = len(data) - len(data) % 2
                carry = data[cut:]
                if cut:
                    yield np.frombuffer(data[:cut], dtype="<i2").astype(np.float32) / 32768.0
            if not self.closed:
                rc = self._proc.wait()
                if rc != 0:
                    err = self._proc.stderr.read().decode(errors="replace").strip()
                    raise SourceError(f"ffmpeg exited with {rc} for {self.url!r}: {err[-500:]}")
        finally:
            self._stop_proc()

    def _stop_proc(self) -> None:
        p = self._proc
        if p is not None and p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=2)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def close(self) -> None:
        super().close()
        self._stop_proc()


def parse_device(device: str | int | None) -> str | int | None:
    """``"3"`` -> 3 (index); names (or substrings of names) stay strings; None: default input."""
    if isinstance(device, str) and device.strip().isdigit():
        return int(device)
    return device


class SoundDeviceSource(AudioSource):
    """Live capture from a PortAudio input device.

    The callback copies ``indata`` into a preallocated ring (no allocation, lock, log or
    exception); the reader (the iterator) downmixes to mono and resamples to 16 kHz.

    Args:
        device: name (substring match, as sounddevice does), index, or None for the default.
        sample_rate: capture rate; default the device's native rate.
        channels: capture channels; default ``min(2, max_input_channels)``.
        block_ms: PortAudio block size and reader block.
        ring_s: ring capacity in seconds of capture.

    Attributes:
        overruns / overrun_frames: reader too slow (ring full).
        status_flags: callbacks that reported a PortAudio status (e.g. input overflow).
    """

    def __init__(self, device: str | int | None = None, sample_rate: int | None = None, channels: int | None = None,
                 block_ms: float = 20.0, ring_s: float = 10.0):
        super().__init__()
        import sounddevice as sd

        self._sd = sd
        self.device = parse_device(device)
        try:
            info = sd.query_devices(self.device, "input")
        except (ValueError, sd.PortAudioError) as e:
            raise SourceError(f"no input device {device!r}: {e}") from e
        self.device_name = info["name"]
        self.native_rate = int(sample_rate or round(info["default_samplerate"]))
        max_ch = int(info["max_input_channels"])
        self.channels = int(channels or max(1, min(2, max_ch)))
        if self.channels > max_ch:
            raise SourceError(f"device {self.device_name!r} has {max_ch} input channels, asked for {self.channels}")
        self.block_frames = max(1, int(round(block_ms * self.native_rate / 1000)))
        self.ring = RingBuffer(int(ring_s * self.native_rate), self.channels)
        self.status_flags = 0
        self._resampler = StreamingResampler(self.native_rate, SAMPLE_RATE)
        self._read_buf = np.zeros((self.ring.capacity_frames, self.channels), dtype=np.float32)
        self._stream = None

    def _callback(self, indata, frames, time_info, status) -> None:
        # Real-time thread: copy into the preallocated ring, count; nothing else.
        if status:
            self.status_flags += 1
        self.ring.write(indata)

    @property
    def overruns(self) -> int:
        return self.ring.overrun_frames

    def start(self) -> None:
        if self._stream is not None:
            return
        try:
            self._stream = self._sd.InputStream(device=self.device, samplerate=self.native_rate, channels=self.channels,
                                                dtype="float32", blocksize=self.block_frames, callback=self._callback)
            self._stream.start()
        except self._sd.PortAudioError as e:
            raise SourceError(f"cannot open input device {self.device_name!r}: {e}") from e

    def blocks(self) -> Iterator[np.ndarray]:
        self.start()
        try:
            while not self.closed:
                if not self.ring.wait(self.block_frames, timeout_s=0.05):
                    if self._stream is not None and not self._stream.active:
                        break  # the device stopped (unplugged, or finished)
                    continue
                n = self.ring.read_into(self._read_buf)
                x = self._read_buf[:n]
                mono = x[:, 0].copy() if self.channels == 1 else x.mean(axis=1)
                y = self._resampler.process(mono)
                if len(y):
                    yield y
        finally:
            self._stop_stream()

    def _stop_stream(self) -> None:
        s, self._stream = self._stream, None
        if s is not None:
            try:
                s.stop()
                s.close()
            except self._sd.PortAudioError:
                pass

    def close(self) -> None:
        super().close()


def open_source(spec: str, realtime: bool = True, block_ms: float = 20.0) -> AudioSource:
    """Build a source from a CLI-style spec.

    ``device:NAME_OR_INDEX`` (``device:`` alone: default input), ``ffmpeg:URL``, ``file:PATH``
    or a plain path (files ending in a format soundfile reads use :class:`FileSource`, other
    paths and URLs go through ffmpeg).
    """
    if spec.startswith("device:"):
        return SoundDeviceSource(spec[len("device:"):] or None, block_ms=block_ms)
    if spec.startswith("ffmpeg:"):
        return FfmpegSource(spec[len("ffmpeg:"):], realtime=realtime, block_ms=block_ms)
    if spec.startswith("file:"):
        spec = spec[len("file:"):]
    if os.path.isfile(spec) and spec.lower().endswith((".wav", ".flac", ".ogg", ".aiff", ".aif")):
        return FileSource(spec, realtime=realtime, block_ms=block_ms)
    return FfmpegSource(spec, realtime=realtime, block_ms=block_ms)
