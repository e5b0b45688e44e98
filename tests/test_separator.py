"""Separator models and the causal STFT front end: streaming == offline, causality,
activity outputs, immutable state, declared latency, save/load, strict configs."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from jrsv_stream.nn.frontend import CausalFramer, CausalIstft, CausalStft, OverlapAdd
from jrsv_stream.nn.separator import (ConfigError, ConvTasNetConfig, SeparatorConfig, StftMaskConfig, build_separator,
                                      config_from_dict, count_parameters, load_separator, save_separator)
from tests.streaming_helpers import assert_causal, assert_streaming_matches_offline, run_in_chunks

TINY = {
    "stft_mask": SeparatorConfig("stft_mask", stft_mask=StftMaskConfig(
        window_ms=4.0, hop_ms=1.0, conv_channels=8, conv_layers=2, gru_hidden=8, gru_layers=2, residual_hidden=6)),
    "stft_mask_no_residual": SeparatorConfig("stft_mask", stft_mask=StftMaskConfig(
        window_ms=4.0, hop_ms=2.0, conv_channels=8, conv_layers=1, gru_hidden=8, gru_layers=1, residual_hidden=0)),
    "stft_mask_refine": SeparatorConfig("stft_mask", stft_mask=StftMaskConfig(
        window_ms=4.0, hop_ms=1.0, conv_channels=8, conv_layers=2, gru_hidden=8, gru_layers=2, residual_hidden=6,
        refine_layers=2, refine_hidden=5)),
    "convtasnet": SeparatorConfig("convtasnet", convtasnet=ConvTasNetConfig(
        enc_kernel_ms=2.0, enc_filters=8, bottleneck=6, hidden=8, kernel=3, blocks=3, repeats=2, block_frames=2)),
}


def tiny_model(name: str, dtype=torch.float64):
    torch.manual_seed(0)
    model = build_separator(TINY[name])
    with torch.no_grad():  # refinement layers start as the identity: make them do something here
        for p in getattr(model, "refine_outs", nn.ModuleList()).parameters():
            p.normal_(0.0, 0.5)
    return model.to(dtype).eval()


def _flatten(state) -> list[torch.Tensor]:
    if isinstance(state, torch.Tensor):
        return [state]
    return [t for s in state for t in _flatten(s)]


@pytest.mark.parametrize("name", list(TINY))
def test_streaming_matches_offline(name):
    m = tiny_model(name)
    hop = m.hop_samples
    x = torch.randn(2, hop * 37, dtype=torch.float64) * 0.5
    chunks = [hop, 10 * hop, 7 * hop]
    init = lambda: m.init_state(2, "cpu", torch.float64)  # noqa: E731
    assert_streaming_matches_offline(lambda a: m(a).sources, lambda c, s: _sources_step(m, c, s), init, x, chunks)
    # activity frames concatenate along time too
    with torch.no_grad():
        ref = m(x).activity_logits
        for c in chunks:
            got = run_in_chunks(lambda a, s: _act_step(m, a, s), init(), x, c)
            assert (got - ref).abs().max().item() <= 1e-5


def _sources_step(m, chunk, state):
    out, state = m.step(chunk, state)
    return out.sources, state


def _act_step(m, chunk, state):
    out, state = m.step(chunk, state)
    return out.activity_logits, state


@pytest.mark.parametrize("name", list(TINY))
def test_causal(name):
    m = tiny_model(name)
    hop = m.hop_samples
    x = torch.randn(1, hop * 40, dtype=torch.float64)
    for k in (5, 23):
        t = k * hop
        assert_causal(lambda a: m(a).sources, x, t, lookahead=m.lookahead_samples)
        assert_causal(lambda a: m(a).activity_logits, x, t, lookahead=m.lookahead_samples, out_scale=hop)


@pytest.mark.parametrize("name", list(TINY))
def test_output_delay_is_as_declared(name):
    """A change at input sample t reaches the output by sample t + output_delay (and not
    before t): the latency the model declares is the latency it has."""
    m = tiny_model(name)
    hop, D = m.hop_samples, m.output_delay_samples
    x = torch.randn(1, hop * 30, dtype=torch.float64)
    t = 12 * hop + 3
    x2 = x.clone()
    x2[0, t] += 1.0
    with torch.no_grad():
        d = (m(x2).sources - m(x).sources).abs().amax(dim=(0, 1))
    first = int(torch.nonzero(d > 1e-12)[0])
    assert t - (t % hop) <= first <= t + D


@pytest.mark.parametrize("name", list(TINY))
def test_activity_shapes_and_probabilities(name):
    m = tiny_model(name, torch.float32)
    x = torch.randn(3, m.hop_samples * 9)
    with torch.no_grad():
        out = m(x)
    assert out.sources.shape == (3, 3, m.hop_samples * 9)
    assert out.activity_logits.shape == (3, 2, 9)
    p = out.activity_probs
    assert p.shape == (3, 2, 9) and bool(((p >= 0) & (p <= 1)).all())


@pytest.mark.parametrize("name", list(TINY))
def test_step_does_not_mutate_state_or_input(name):
    m = tiny_model(name)
    hop = m.hop_samples
    state = m.init_state(2, "cpu", torch.float64)
    with torch.no_grad():
        _, state = m.step(torch.randn(2, hop * 3, dtype=torch.float64), state)  # non-zero state
        before = [t.clone() for t in _flatten(state)]
        chunk = torch.randn(2, hop * 2, dtype=torch.float64)
        chunk_before = chunk.clone()
        out1, new_state = m.step(chunk, state)
        assert all(torch.equal(a, b) for a, b in zip(before, _flatten(state)))
        assert torch.equal(chunk, chunk_before)
        out2, _ = m.step(chunk, state)  # the kept state replays identically
    assert torch.equal(out1.sources, out2.sources)
    assert len(_flatten(new_state)) == len(before)


@pytest.mark.parametrize("name", list(TINY))
def test_chunk_must_be_whole_hops(name):
    m = tiny_model(name)
    with pytest.raises(ValueError, match="hop"):
        m(torch.zeros(1, m.hop_samples * 3 + 1, dtype=torch.float64))


def test_default_models_declare_latency_within_budget():
    for arch in ("stft_mask", "convtasnet"):
        m = build_separator(SeparatorConfig(arch))
        assert m.lookahead_samples == 0
        assert m.algorithmic_latency_ms <= 40.0
        assert m.algorithmic_latency_samples == m.output_delay_samples + m.hop_samples
        assert count_parameters(m) < 5_000_000
    stft = build_separator(SeparatorConfig("stft_mask"))
    assert stft.algorithmic_latency_samples == stft.window_samples  # delay (window - hop) + one hop


def test_stft_roundtrip_is_delayed_identity():
    for window, hop in ((64, 16), (512, 256), (320, 160)):
        st, ist = CausalStft(window, hop), CausalIstft(window, hop)
        x = torch.randn(2, hop * 20, dtype=torch.float64)
        y = ist(st(x).unsqueeze(1))[:, 0]
        D = ist.delay_samples
        assert D == window - hop
        assert (y[:, D:] - x[:, :-D]).abs().max().item() < 1e-12
        # streaming, one hop at a time
        s1, s2 = st.init_state(2, dtype=torch.float64), ist.init_state(2, 1, dtype=torch.float64)
        outs = []
        for a in range(0, x.shape[1], hop):
            spec, s1 = st.step(x[:, a:a + hop], s1)
            o, s2 = ist.step(spec.unsqueeze(1), s2)
            outs.append(o[:, 0])
        assert (torch.cat(outs, -1) - y).abs().max().item() < 1e-12
    with pytest.raises(ValueError):
        CausalIstft(48, 16)  # window / hop odd: sqrt-Hann OLA is not the identity


def test_framer_and_overlap_add_streaming():
    fr, ola = CausalFramer(12, 4), OverlapAdd(12, 4)
    x = torch.randn(3, 4 * 11, dtype=torch.float64)
    frames = fr(x)
    assert frames.shape == (3, 11, 12)
    assert torch.equal(frames[:, 0, -4:], x[:, :4]) and not frames[:, 0, :8].any()  # left padding only
    y = ola(frames.unsqueeze(1))
    assert y.shape == (3, 1, 4 * 11)
    # step 3 frames at a time: (B, C, 3, window) in, (B, C, 3 * hop) out, both on dim 2
    got = run_in_chunks(ola.step, ola.init_state(3, 1, dtype=torch.float64), frames.unsqueeze(1), 3, dim=2)
    assert (got - y).abs().max().item() < 1e-12
    with pytest.raises(ValueError, match="multiple"):
        fr(torch.zeros(1, 5))


@pytest.mark.parametrize("name", ["stft_mask", "convtasnet"])
def test_save_load_roundtrip(tmp_path, name):
    m = tiny_model(name, torch.float32)
    save_separator(m, TINY[name], tmp_path / "separator.pt", {"note": "test"})
    m2, cfg, meta = load_separator(tmp_path)
    assert cfg == TINY[name] and meta == {"note": "test"}
    x = torch.randn(1, m.hop_samples * 8)
    with torch.no_grad():
        assert torch.equal(m(x).sources, m2(x).sources)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        load_separator(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError):
        load_separator(tmp_path / "missing")


def test_config_loading_is_strict():
    cfg = config_from_dict(SeparatorConfig, {"arch": "convtasnet", "convtasnet": {"blocks": 4}})
    assert cfg.convtasnet.blocks == 4 and cfg.stft_mask == StftMaskConfig()
    assert config_from_dict(SeparatorConfig, dataclasses.asdict(cfg)) == cfg
    with pytest.raises(ConfigError, match="unknown keys"):
        config_from_dict(SeparatorConfig, {"arch": "stft_mask", "stft_mask": {"hop": 3}})
    with pytest.raises(ConfigError, match="integer"):
        config_from_dict(SeparatorConfig, {"convtasnet": {"blocks": 2.5}})
    with pytest.raises(ConfigError, match="arch"):
        config_from_dict(SeparatorConfig, {"arch": "unet"})
    with pytest.raises(ConfigError, match="whole number of samples"):
        build_separator(SeparatorConfig("stft_mask", stft_mask=StftMaskConfig(window_ms=32.03)))
    with pytest.raises(ConfigError, match="refine_layers"):
        config_from_dict(SeparatorConfig, {"stft_mask": {"refine_layers": -1}})
    with pytest.raises(ConfigError, match="refine_hidden"):
        config_from_dict(SeparatorConfig, {"stft_mask": {"refine_layers": 1, "refine_hidden": 0}})


def test_fast_tcn_ops_equal_the_reference_modules():
    from jrsv_stream.nn.separator import DepthwiseCausalConv1d, FastCumulativeNorm
    from jrsv_stream.nn.streaming import CausalConv1d, CumulativeNorm

    torch.manual_seed(0)
    x = torch.randn(2, 6, 40, dtype=torch.float64)
    ref_norm, fast_norm = CumulativeNorm(6).double(), FastCumulativeNorm(6).double()
    with torch.no_grad():
        ref_norm.gain.normal_()
        ref_norm.bias.normal_()
    fast_norm.load_state_dict(ref_norm.state_dict())
    ref_conv = CausalConv1d(6, 6, 3, dilation=4, groups=6).double()
    fast_conv = DepthwiseCausalConv1d(6, 3, dilation=4).double()
    fast_conv.load_state_dict(ref_conv.state_dict())
    with torch.no_grad():
        for ref, fast in ((ref_norm, fast_norm), (ref_conv, fast_conv)):
            assert (ref(x) - fast(x)).abs().max().item() < 1e-12
            s_ref, s_fast = ref.init_state(2, dtype=torch.float64), fast.init_state(2, dtype=torch.float64)
            for a in range(0, 40, 7):
                y_ref, s_ref = ref.step(x[..., a:a + 7], s_ref)
                y_fast, s_fast = fast.step(x[..., a:a + 7], s_fast)
                assert (y_ref - y_fast).abs().max().item() < 1e-12
                assert all((p - q).abs().max().item() < 1e-9 for p, q in zip(s_ref, s_fast))


@pytest.mark.parametrize("name", ["stft_mask", "stft_mask_refine", "convtasnet"])
def test_streams_batched_together_equal_streams_run_alone(name):
    """Two streams at different positions, stepped as one batch (as the batching worker
    does), give what each gives alone; states split back exactly."""
    from jrsv_stream.nn.separator import cat_states, select_state

    m = tiny_model(name)
    hop = m.hop_samples
    xa, xb = torch.randn(1, hop * 9, dtype=torch.float64), torch.randn(1, hop * 4, dtype=torch.float64)
    with torch.no_grad():
        _, sa = m.step(xa[:, :hop * 5], m.init_state(1, "cpu", torch.float64))  # A is 5 hops in, B at start
        sb = m.init_state(1, "cpu", torch.float64)
        both, s = m.step(torch.cat([xa[:, hop * 5:], xb]), cat_states([sa, sb]))
        alone_a, sa2 = m.step(xa[:, hop * 5:], sa)
        alone_b, sb2 = m.step(xb, sb)
    assert (both.sources[0] - alone_a.sources[0]).abs().max() < 1e-12
    assert (both.sources[1] - alone_b.sources[0]).abs().max() < 1e-12
    for got, want in ((select_state(s, 0), sa2), (select_state(s, 1), sb2)):
        assert all(torch.allclose(p, q, rtol=0.0, atol=1e-12) for p, q in zip(_flatten(got), _flatten(want)))


def test_refinement_layers_grow_a_model_that_starts_as_the_one_it_grew_from():
    """A separator with refinement layers loaded from one without them computes exactly what that
    one did until its (zero-initialised) output projections move; the refine state is carried."""
    base_cfg = TINY["stft_mask"]
    grown_cfg = dataclasses.replace(base_cfg, stft_mask=dataclasses.replace(base_cfg.stft_mask, refine_layers=2,
                                                                            refine_hidden=5))
    base = tiny_model("stft_mask")
    grown = build_separator(grown_cfg).to(torch.float64).eval()
    missing, unexpected = grown.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("refine_") for k in missing)
    torch.manual_seed(1)
    x = torch.randn(2, 160, dtype=torch.float64) * 0.3
    with torch.no_grad():
        assert torch.equal(base(x).sources, grown(x).sources)
        assert torch.equal(base(x).activity_logits, grown(x).activity_logits)
        grown.refine_outs[1].weight.normal_(0.0, 0.5)
        assert not torch.allclose(base(x).sources, grown(x).sources, atol=1e-6)
    state = grown.init_state(2, dtype=torch.float64)
    assert state.refine.shape == (2, 2, 5)
    _, state = grown.step(x, state)
    assert state.refine.abs().sum() > 0
    assert base.init_state(2).refine.shape == (2, 0, 0)
