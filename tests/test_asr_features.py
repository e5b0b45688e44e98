import pytest
import torch

from jrsv_stream.nn.features import FeatureConfig, LogMel
from tests.streaming_helpers import run_in_chunks


def _logmel(dtype=torch.float64) -> LogMel:
    m = LogMel(FeatureConfig()).to(dtype)
    m.set_normalization(torch.full((80,), -3.0), torch.full((80,), 2.0))
    return m


@pytest.mark.parametrize("chunk", [160, 5120, 1234, 7, 400])
def test_chunked_features_equal_offline(chunk):
    torch.manual_seed(0)
    m = _logmel()
    x = torch.randn(2, 16000 + 77, dtype=torch.float64) * 0.1
    ref, lens = m(x, torch.tensor([x.shape[1], 9000]))
    assert ref.shape == (2, x.shape[1] // 160, 80)
    assert lens.tolist() == [x.shape[1] // 160, 9000 // 160]
    with torch.no_grad():
        got = run_in_chunks(m.step, m.init_state(2, dtype=torch.float64), x, chunk, dim=1)
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() <= 1e-9


def test_a_320ms_chunk_gives_32_frames_and_keeps_a_fixed_cache():
    m = _logmel(torch.float32)
    st = m.init_state(1)
    for _ in range(3):
        y, st = m.step(torch.randn(1, 5120) * 0.1, st)
        assert y.shape == (1, 32, 80)
        assert st.cache.shape == (1, 240)


def test_features_are_causal():
    torch.manual_seed(1)
    m = _logmel()
    x = torch.randn(1, 8000, dtype=torch.float64) * 0.1
    t = 4000  # samples; frame k ends at (k + 1) * 160, so frames < 25 see only x[:4000]
    x2 = x.clone()
    x2[:, t:] = torch.randn(1, 8000 - t, dtype=torch.float64)
    a, _ = m(x)
    b, _ = m(x2)
    assert torch.equal(a[:, : t // 160], b[:, : t // 160])
    assert not torch.allclose(a[:, t // 160:], b[:, t // 160:])


def test_global_normalization_is_fixed_not_per_utterance():
    m = _logmel()
    x = torch.randn(1, 3200, dtype=torch.float64) * 0.1
    raw = m.raw(torch.nn.functional.pad(x, (m.pad_samples, 0)))
    y, _ = m(x)
    assert torch.allclose(y, (raw + 3.0) / 2.0)
    # scaling the input only shifts the log-mel: no per-utterance statistic absorbs it
    y2, _ = m(x * 10)
    assert torch.allclose(y2 - y, torch.full_like(y, torch.log(torch.tensor(100.0)).item() / 2.0), atol=1e-6)
