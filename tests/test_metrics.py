"""SI-SDR, SI-SDRi, AUROC and F1 against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from jrsv_stream.eval.metrics import activity_scores, auroc, f1_score, si_sdr, si_sdr_improvement
from jrsv_stream.train import losses


def test_si_sdr_hand_computed():
    ref = np.array([1.0, -1.0, 1.0, -1.0])  # zero mean
    noise = np.array([1.0, 1.0, -1.0, -1.0])  # zero mean, orthogonal to ref
    # est = 2 ref + 0.5 noise: target = 2 ref (|.|^2 = 16), residual 0.5 noise (|.|^2 = 1)
    assert si_sdr(2 * ref + 0.5 * noise, ref) == pytest.approx(10 * math.log10(16.0), abs=1e-6)
    # scale invariance, and offsets removed by the zero-mean step
    assert si_sdr(-3 * ref + 7.0, ref) > 70
    assert si_sdr(ref + noise, ref) == pytest.approx(0.0, abs=1e-6)


def test_si_sdr_batched_matches_loop():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((2, 3, 100))
    est = ref + 0.3 * rng.standard_normal((2, 3, 100))
    batched = si_sdr(est, ref)
    assert batched.shape == (2, 3)
    assert batched[1, 2] == pytest.approx(float(si_sdr(est[1, 2], ref[1, 2])))


def test_si_sdr_improvement_hand_computed():
    ref = np.array([1.0, -1.0, 1.0, -1.0])
    noise = np.array([1.0, 1.0, -1.0, -1.0])
    mix = ref + noise  # 0 dB
    est = ref + 0.1 * noise  # 20 dB
    assert si_sdr_improvement(est, ref, mix) == pytest.approx(20.0, abs=1e-5)
    # a mixture broadcast over several sources
    refs = np.stack([ref, noise])
    got = si_sdr_improvement(np.stack([est, noise + 0.1 * ref]), refs, mix)
    np.testing.assert_allclose(got, [20.0, 20.0], atol=1e-5)


def test_torch_si_sdr_matches_numpy():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((4, 200))
    est = ref + rng.standard_normal((4, 200))
    np.testing.assert_allclose(losses.si_sdr(torch.from_numpy(est), torch.from_numpy(ref)).numpy(), si_sdr(est, ref),
                               atol=1e-9)


def test_auroc_hand_computed():
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)  # 3 of 4 pairs ordered
    assert auroc([0.9, 0.8, 0.1], [1, 1, 0]) == 1.0
    assert auroc([0.1, 0.2], [1, 0]) == 0.0
    assert auroc([0.5, 0.5, 0.5], [1, 0, 1]) == 0.5  # ties count one half
    assert auroc([0.2, 0.5, 0.5, 0.9], [0, 1, 0, 1]) == pytest.approx((1 + 0.5 + 1 + 1) / 4)
    assert math.isnan(auroc([0.1, 0.2], [1, 1]))
    with pytest.raises(ValueError):
        auroc([0.1], [1, 0])


def test_f1_hand_computed():
    # tp = 2, fp = 1, fn = 1 -> 2*2 / (4 + 1 + 1)
    assert f1_score([1, 1, 1, 0, 0], [1, 1, 0, 1, 0]) == pytest.approx(4 / 6)
    assert f1_score([0, 0], [0, 0]) == 1.0
    assert f1_score([1, 0], [0, 0]) == 0.0
    assert f1_score([True, False], [True, False]) == 1.0


def test_activity_scores_threshold():
    s = activity_scores(np.array([0.2, 0.6, 0.4, 0.9]), np.array([0, 1, 1, 1]))
    assert s["auroc"] == 1.0
    assert s["f1"] == pytest.approx(2 * 2 / (2 * 2 + 0 + 1))


def test_separation_loss_present_and_absent():
    torch.manual_seed(0)
    mix = torch.randn(2, 400)
    ref = torch.stack([mix * 0.5, torch.zeros_like(mix), mix * 0.5], dim=1)  # source 1 absent
    est = ref + 0.01 * torch.randn_like(ref)
    loss, sdr, present = losses.separation_loss(est, ref, mix)
    assert present.tolist() == [[True, False, True]] * 2
    assert torch.isnan(sdr[:, 1]).all() and (sdr[:, [0, 2]] > 30).all()
    # absent source: 10 log10(|est|^2 / |mix|^2 + 1e-3), near the -30 dB floor here
    silence = 10 * torch.log10(est[:, 1].pow(2).sum(-1) / (mix.pow(2).sum(-1) + 1e-8) + 1e-3)
    expect = torch.stack([-sdr[:, 0], silence, -sdr[:, 2]], 1).mean()
    assert loss.item() == pytest.approx(expect.item(), rel=1e-5)


def test_multitask_loss_weights_and_delay_alignment():
    torch.manual_seed(0)
    D, T = 5, 100
    stems = torch.randn(1, 3, T)
    mix = stems.sum(1)
    sources = torch.zeros(1, 3, T)
    sources[..., D:] = stems[..., :T - D]  # perfect separation, delayed by D
    logits = torch.full((1, 2, 4), 20.0)
    act = torch.ones(1, 2, 4)
    t = losses.multitask_loss(sources, logits, stems, mix, act, D, alpha=0.75)
    assert t.sep.item() < -60 and t.act.item() < 1e-6
    assert t.total.item() == pytest.approx(0.75 * t.sep.item() + 0.25 * t.act.item())
