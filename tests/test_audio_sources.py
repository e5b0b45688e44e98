"""Audio sources: streaming resampler, file / array pacing, ffmpeg, real sounddevice capture
through an ALSA device that plays a file (tests/tools/alsa-file-device.sh)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio.functional as AF

from jrsv_stream.audio.io import save_audio
from tests.prereq import ALSA_TOOL, require_tools
from jrsv_stream.audio.sources import (ArraySource, FfmpegSource, FileSource, SourceError,
                                       StreamingResampler, open_source, parse_device)

REPO = Path(__file__).resolve().parents[1]


def _test_signal(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """Speech-like test audio: a chirp plus noise bursts (well correlated only with itself)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    x = 0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    x += 0.05 * rng.standard_normal(len(t)) * (np.sin(2 * np.pi * 1.3 * t) > 0)
    return x.astype(np.float32)


def _best_corr(a: np.ndarray, b: np.ndarray, max_lag: int = 2000) -> tuple[float, int]:
    """Max normalized correlation of b against a over lags 0..max_lag (b delayed)."""
    n = min(len(a), len(b) - max_lag)
    best = (-1.0, 0)
    a0 = a[:n] - a[:n].mean()
    for lag in range(0, max_lag + 1, 1):
        b0 = b[lag:lag + n] - b[lag:lag + n].mean()
        c = float(a0 @ b0 / (np.linalg.norm(a0) * np.linalg.norm(b0) + 1e-12))
        if c > best[0]:
            best = (c, lag)
    return best


@pytest.mark.parametrize("orig", [8000, 22050, 44100, 48000, 16000])
def test_streaming_resampler_equals_offline(orig):
    rng = np.random.default_rng(orig)
    x = rng.standard_normal(orig + 123).astype(np.float32)
    r = StreamingResampler(orig)
    outs, a = [], 0
    while a < len(x):
        n = int(rng.integers(1, 2500))
        outs.append(r.process(x[a:a + n]))
        a += n
    outs.append(r.flush())
    y = np.concatenate(outs)
    ref = AF.resample(torch.from_numpy(x), orig, 16000).numpy()
    assert y.shape == ref.shape
    assert np.abs(y - ref).max() < 1e-4


def test_array_source_realtime_pacing_and_fast():
    x = _test_signal(0.5)
    t0 = time.monotonic()
    src = ArraySource(x, realtime=True, block_ms=20)
    blocks = list(src)
    dt = time.monotonic() - t0
    np.testing.assert_array_equal(np.concatenate(blocks), x)
    assert all(len(b) == 320 for b in blocks[:-1])
    assert 0.45 <= dt < 1.0, dt  # paced: each block once complete
    assert src.start_time is not None
    t0 = time.monotonic()
    np.testing.assert_array_equal(np.concatenate(list(ArraySource(x, realtime=False))), x)
    assert time.monotonic() - t0 < 0.2


def test_array_source_close_stops_iteration():
    src = ArraySource(_test_signal(5.0), realtime=True)
    it = iter(src)
    next(it)
    src.close()
    assert list(it) == []


def test_file_source_resamples_and_downmixes(tmp_path):
    import soundfile as sf

    x = _test_signal(1.0)
    stereo = np.stack([x, x], axis=1)
    up = AF.resample(torch.from_numpy(stereo.T.copy()), 16000, 44100).numpy().T
    sf.write(tmp_path / "a.wav", up, 44100, subtype="FLOAT")
    got = np.concatenate(list(FileSource(tmp_path / "a.wav", realtime=False)))
    assert abs(len(got) - len(x)) <= 1
    c, lag = _best_corr(x[:12000], got, 10)
    assert c > 0.99 and lag == 0


def test_ffmpeg_source_decodes_compressed_file(tmp_path):
    require_tools("ffmpeg")
    x = _test_signal(2.0)
    save_audio(tmp_path / "a.wav", x)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(tmp_path / "a.wav"), "-ar", "44100", "-ac", "2",
                    "-c:a", "libvorbis", str(tmp_path / "a.ogg")], check=True)
    src = FfmpegSource(str(tmp_path / "a.ogg"))
    got = np.concatenate(list(src))
    assert abs(len(got) - len(x)) < 2000
    c, _ = _best_corr(x[:16000], got, 1000)
    assert c > 0.95


def test_ffmpeg_source_reports_bad_input(tmp_path):
    require_tools("ffmpeg")
    with pytest.raises(SourceError, match="ffmpeg exited"):
        list(FfmpegSource(str(tmp_path / "missing.wav")))


def test_open_source_specs(tmp_path):
    save_audio(tmp_path / "a.wav", _test_signal(0.2))
    assert isinstance(open_source(str(tmp_path / "a.wav")), FileSource)
    assert isinstance(open_source("file:" + str(tmp_path / "a.wav")), FileSource)
    assert isinstance(open_source("ffmpeg:http://example.invalid/x.m3u8"), FfmpegSource)
    assert parse_device("3") == 3 and parse_device("USB Mic") == "USB Mic" and parse_device(None) is None


CAPTURE_SCRIPT = r"""
import json, sys, numpy as np
from jrsv_stream.audio.sources import SoundDeviceSource
dev = sys.argv[1]; rate = int(sys.argv[2]) if sys.argv[2] != "native" else None; ch = int(sys.argv[3])
src = SoundDeviceSource(dev if dev != "none" else None, sample_rate=rate, channels=ch, ring_s=6.0)
got, n = [], 0
for b in src:
    got.append(b); n += len(b)
    if n >= 16000 * 4:
        break
src.close()
np.save(sys.argv[4], np.concatenate(got))
print(json.dumps({"rate": src.native_rate, "channels": src.channels, "overrun_frames": src.overruns, "name": src.device_name}))
"""


def _alsa_env(wav: Path) -> dict:
    require_tools("sox")
    out = subprocess.run(["bash", str(ALSA_TOOL), str(wav), "16000"], check=True, capture_output=True, text=True).stdout
    env = dict(os.environ)
    for part in out.strip().removeprefix("export ").split():
        k, v = part.split("=", 1)
        env[k] = v.strip("'")
    return env


def _locate_windows(ref: np.ndarray, got: np.ndarray, win: int = 800) -> list[tuple[float, int]]:
    """For each window of ``got`` (silent ones skipped), the best normalized correlation
    with any position of ``ref`` and that position (FFT cross-correlation)."""
    n = 1 << int(np.ceil(np.log2(len(ref) + win)))
    R = np.fft.rfft(ref, n)
    csum = np.concatenate([[0.0], np.cumsum(ref.astype(np.float64) ** 2)])
    ref_norm = np.sqrt(np.maximum(csum[win:] - csum[:-win], 1e-12))  # norm of ref[p:p+win]
    out = []
    for a in range(0, len(got) - win, win):
        w = got[a:a + win].astype(np.float64)
        if np.sqrt((w ** 2).mean()) < 0.02:
            continue
        c = np.fft.irfft(R * np.conj(np.fft.rfft(w, n)), n)[: len(ref) - win + 1]
        c = c / (ref_norm[: len(c)] * np.linalg.norm(w))
        p = int(np.argmax(c))
        out.append((float(c[p]), p))
    return out


@pytest.mark.parametrize("device,rate,channels", [("default", "native", 2), ("jrsv_capture", "16000", 1), ("none", "48000", 1)])
def test_sounddevice_capture_through_alsa_file_device(tmp_path, device, rate, channels):
    """Real PortAudio capture (device by name / index / default, native or forced rate,
    stereo downmix, resampling to 16 kHz) carries the file's audio.

    The ALSA file device has no clock and PortAudio skips whole periods of it (its input
    overflow handling), so the capture is the file with gaps: every captured window must
    be found in the file (windows inside one period: correlation > 0.95), in file order.
    """
    x = _test_signal(3.0, seed=1)
    save_audio(tmp_path / "in.wav", x)
    env = _alsa_env(tmp_path / "in.wav")
    r = subprocess.run([sys.executable, "-c", CAPTURE_SCRIPT, device, rate, str(channels), str(tmp_path / "got.npy")],
                       env=env, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout.strip().splitlines()[-1])
    got = np.load(tmp_path / "got.npy")
    assert info["channels"] == channels
    if rate != "native":
        assert info["rate"] == int(rate)
    thr = 0.95 if info["rate"] == 16000 else 0.85  # ALSA's plug resamples linearly to other rates
    c0, lag0 = _best_corr(x[:600], got, 200)
    assert c0 > thr and lag0 < 100, (c0, lag0)  # the first period arrives intact and in time
    found = _locate_windows(x, got[: len(x)], win=320)
    corr = np.array([c for c, _ in found])
    pos = np.array([p for _, p in found])
    end = np.nonzero(pos >= len(x) - 4000)[0]  # after the file's end the device repeats / zeros
    corr, pos = (corr[: end[0]], pos[: end[0]]) if len(end) else (corr, pos)
    assert len(corr) >= 20, found
    # windows that straddle a skipped period match only partly; most lie inside one period
    assert (corr > thr).mean() > 0.6, corr
    good = pos[corr > thr]
    assert (np.diff(good) > 0).all(), good  # pieces of the file, in file order
