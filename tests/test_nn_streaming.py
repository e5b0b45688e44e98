import pytest
import torch

from jrsv_stream.nn.streaming import CausalConv1d, CumulativeNorm
from tests.streaming_helpers import assert_causal, assert_streaming_matches_offline


@pytest.mark.parametrize("k,d", [(3, 1), (5, 4), (1, 1)])
def test_causal_conv_streaming_equals_offline(k, d):
    torch.manual_seed(0)
    m = CausalConv1d(4, 6, k, dilation=d).double()
    x = torch.randn(2, 4, 53, dtype=torch.float64)
    assert_streaming_matches_offline(m, m.step, lambda: m.init_state(2, dtype=torch.float64), x, [1, 10, 7], atol=1e-12)
    assert_causal(m, x, t=30)


def test_cumulative_norm_streaming_equals_offline_and_is_causal():
    torch.manual_seed(0)
    m = CumulativeNorm(4).double()
    with torch.no_grad():
        m.gain.mul_(1.5)
        m.bias.add_(0.1)
    x = torch.randn(3, 4, 41, dtype=torch.float64) * 2 + 1
    assert_streaming_matches_offline(m, m.step, lambda: m.init_state(3, dtype=torch.float64), x, [1, 10, 7], atol=1e-10)
    assert_causal(m, x, t=20)
    # statistics up to frame t: frame 0 normalized with its own channels only
    y = m(x)
    x0 = x[:, :, 0]
    ref = (x0 - x0.mean(1, keepdim=True)) / torch.sqrt(x0.var(1, unbiased=False, keepdim=True) + 1e-5) * 1.5 + 0.1
    assert torch.allclose(y[:, :, 0], ref, atol=1e-8)
