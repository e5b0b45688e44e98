"""``separate_file``: streaming path over any rate / channels, outputs aligned with the
input, streaming output equal to the offline forward."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import soundfile as sf
import torch

from jrsv_stream import SAMPLE_RATE
from jrsv_stream.audio.io import load_audio
from jrsv_stream.nn.separator import save_separator
from jrsv_stream.separate import main, separate_file, separate_stream
from tests.test_separator import TINY, tiny_model


@pytest.fixture(params=["stft_mask", "convtasnet"])
def model_dir(tmp_path, request):
    m = tiny_model(request.param, torch.float32)
    save_separator(m, TINY[request.param], tmp_path / "model" / "separator.pt")
    return tmp_path / "model"


def _stereo_file(path, rate=44100, seconds=1.3):
    t = np.arange(int(rate * seconds)) / rate
    x = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.random.default_rng(0).standard_normal(len(t))], 1)
    sf.write(str(path), x.astype(np.float32), rate, subtype="PCM_16")
    return path


def test_separate_file_outputs(tmp_path, model_dir):
    src = _stereo_file(tmp_path / "in.wav")
    res = separate_file(src, tmp_path / "out", model_dir)
    T = len(load_audio(src))  # 16 kHz mono after downmix + resampling
    assert abs(T - round(1.3 * SAMPLE_RATE)) <= 1
    for name in ("speech", "singing", "music"):
        info = sf.info(res["outputs"][name])
        assert info.samplerate == SAMPLE_RATE and info.channels == 1 and info.frames == T
    with open(res["outputs"]["activity"]) as f:
        rows = list(csv.reader(f))
    hop = res["hop_samples"]
    assert rows[0] == ["time_s", "speech_prob", "singing_prob"]
    assert len(rows) - 1 == -(-T // hop)
    vals = np.array(rows[1:], dtype=np.float64)
    np.testing.assert_allclose(vals[:, 0], np.arange(len(vals)) * hop / SAMPLE_RATE, atol=1e-4)
    assert ((vals[:, 1:] >= 0) & (vals[:, 1:] <= 1)).all()
    assert main([str(src), "--out-dir", str(tmp_path / "cli"), "--model", str(model_dir), "--chunk-ms", "50"]) == 0
    assert (tmp_path / "cli" / "music.wav").is_file()


def test_streaming_output_equals_offline_forward(tmp_path, model_dir):
    from jrsv_stream.nn.separator import load_separator

    model, _, _ = load_separator(model_dir)
    hop, D = model.hop_samples, model.output_delay_samples
    audio = (0.3 * np.random.default_rng(1).standard_normal(hop * 50 + 7)).astype(np.float32)
    T = len(audio)
    streamed, probs = separate_stream(model, audio, chunk_samples=hop)
    other, _ = separate_stream(model, audio, chunk_samples=7 * hop)
    n = -(-(T + D) // hop) * hop
    x = np.zeros(n, dtype=np.float32)
    x[:T] = audio
    with torch.no_grad():
        ref = model(torch.from_numpy(x)[None])
    offline = ref.sources[0, :, D:D + T].numpy()
    assert streamed.shape == (3, T) and probs.shape == (2, -(-T // hop))
    assert np.abs(streamed - offline).max() <= 1e-5
    assert np.abs(other - offline).max() <= 1e-5
    assert np.abs(probs - ref.activity_probs[0, :, :probs.shape[1]].numpy()).max() <= 1e-5
