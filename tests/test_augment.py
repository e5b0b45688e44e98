"""Training effects for dynamic mixing (jrsv_stream/data/augment.py): the mixture stays the
sum of the stems, absent sources stay silent, each effect does what it says, and the
dataset is deterministic with effects on and unchanged with them off."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jrsv_stream import SAMPLE_RATE
from jrsv_stream.data.augment import (AugmentConfig, augment_stems, compressor_gain, level_curve, random_eq, reverb,
                                      room_impulse)
from jrsv_stream.data.dynamic import DynamicMixDataset
from tests.test_dynamic_mixing import make_fake_corpus

ALL = AugmentConfig(enabled=True, p_eq=1.0, p_reverb=1.0, p_level=1.0, p_compress=1.0)


def _stems(seed: int = 0, n: int = 2 * SAMPLE_RATE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SAMPLE_RATE
    st = np.zeros((3, n), np.float32)
    st[0] = 0.1 * np.sin(2 * np.pi * 220 * t) * (t % 0.5 < 0.3)  # bursts, like words
    st[2] = 0.05 * rng.standard_normal(n)
    return st


def test_mixture_is_the_sum_and_absent_stems_stay_zero():
    for seed in range(5):
        mix, st = augment_stems(_stems(seed), np.random.default_rng(seed), ALL)
        assert mix.dtype == np.float32 and st.dtype == np.float32
        np.testing.assert_allclose(mix, st.sum(0), atol=1e-6)
        assert not np.any(st[1])  # singing absent in, absent out
        assert np.all(np.isfinite(st)) and 0 < np.abs(mix).max() <= ALL.peak + 1e-6


def test_deterministic_for_the_generator_and_different_across_seeds():
    a = augment_stems(_stems(), np.random.default_rng(7), ALL)[1]
    b = augment_stems(_stems(), np.random.default_rng(7), ALL)[1]
    c = augment_stems(_stems(), np.random.default_rng(8), ALL)[1]
    assert np.array_equal(a, b) and not np.allclose(a, c)


def test_eq_changes_the_spectrum_within_its_range():
    x = np.random.default_rng(0).standard_normal(SAMPLE_RATE).astype(np.float32)
    y = random_eq(x, np.random.default_rng(1), 6.0)
    X, Y = np.abs(np.fft.rfft(x)) + 1e-9, np.abs(np.fft.rfft(y))
    ratio_db = 20 * np.log10(Y[100:] / X[100:])
    assert ratio_db.max() <= 6.0 + 1e-3 and ratio_db.min() >= -6.0 - 1e-3 and ratio_db.std() > 1.0
    np.testing.assert_allclose(random_eq(x, np.random.default_rng(1), 0.0), x, atol=1e-5)


def test_reverb_keeps_energy_and_adds_a_decaying_tail():
    h = room_impulse(np.random.default_rng(0), 0.5)
    assert abs((h ** 2).sum() - 1.0) < 1e-6
    e = np.convolve(h ** 2, np.ones(160), "valid")
    assert e[int(0.05 * SAMPLE_RATE)] > 100 * e[int(0.45 * SAMPLE_RATE)]  # decays ~60 dB over rt60
    x = np.zeros(SAMPLE_RATE, np.float32)
    x[1000:1160] = 1.0  # a 10 ms click
    y = reverb(x, np.random.default_rng(0), 0.5, 0.5)
    assert abs((y ** 2).sum() - (x ** 2).sum()) < 1e-3 * (x ** 2).sum()
    assert np.abs(y[4000:8000]).max() > 1e-3  # the room rings after the click has ended


def test_level_curve_bounds_and_compressor_narrows_the_dynamics():
    g = level_curve(SAMPLE_RATE * 3, np.random.default_rng(0), 6.0, (0.5, 0.5))
    assert g.min() >= 10 ** (-6 / 20) - 1e-6 and g.max() <= 10 ** (6 / 20) + 1e-6 and g.std() > 0.05
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    x = (np.sin(2 * np.pi * 200 * t) * np.where(t < 1.0, 0.05, 0.5)).astype(np.float32)  # quiet then loud
    y = x * compressor_gain(x, np.random.default_rng(0), 6.0)
    ratio_in = np.abs(x[SAMPLE_RATE + 4000:]).max() / np.abs(x[4000:SAMPLE_RATE - 4000]).max()
    ratio_out = np.abs(y[SAMPLE_RATE + 4000:]).max() / np.abs(y[4000:SAMPLE_RATE - 4000]).max()
    assert ratio_out < 0.7 * ratio_in


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_fake_corpus(tmp_path_factory.mktemp("aug-corpus"), seed=5)


def test_dataset_with_effects_off_is_unchanged_and_on_is_deterministic(corpus):
    kw = dict(crop_samples=4000, hop_samples=80, batch_size=3, seed=2)
    plain = DynamicMixDataset(corpus, "train", **kw).batch(0)
    off = DynamicMixDataset(corpus, "train", augment=AugmentConfig(enabled=False), **kw).batch(0)
    assert torch.equal(plain["mixture"], off["mixture"]) and torch.equal(plain["stems"], off["stems"])
    on1 = DynamicMixDataset(corpus, "train", augment=ALL, **kw).batch(0)
    on2 = DynamicMixDataset(corpus, "train", augment=ALL, **kw).batch(0)
    assert torch.equal(on1["stems"], on2["stems"]) and not torch.allclose(on1["stems"], plain["stems"])
    torch.testing.assert_close(on1["mixture"], on1["stems"].sum(1), atol=1e-5, rtol=0)
    assert torch.equal(on1["activity"], plain["activity"])  # labels are the word spans, not the effects
    absent = plain["stems"].abs().amax(-1) == 0
    assert torch.all(on1["stems"].abs().amax(-1)[absent] == 0)
