"""Voice augmentation of the clean-ASR training (VTLP + random EQ on the spectrum)."""

import dataclasses

import numpy as np
import pytest
import torch
import torchaudio

from jrsv_stream.audio.io import save_audio
from jrsv_stream.nn.features import FeatureConfig, LogMel
from jrsv_stream.train.asr_data import (ASRDataConfig, ASRDataset, Utterance, VoiceAugConfig, voice_aug_params,
                                        voice_features, warp_spectrum)

SR = 16000


def _tone(hz: float, n: int = SR) -> torch.Tensor:
    return 0.3 * torch.sin(2 * torch.pi * hz * torch.arange(n) / SR)


def _mel_bin_of(hz: float, cfg: FeatureConfig = FeatureConfig()) -> int:
    """The mel bin whose filter weighs the STFT bin nearest ``hz`` the most."""
    n_freqs = cfg.win_samples // 2 + 1
    fb = torchaudio.functional.melscale_fbanks(n_freqs, cfg.f_min_hz, cfg.f_max_hz, cfg.n_mels, SR)
    return int(fb[int(round(hz / (SR / 2) * (n_freqs - 1)))].argmax())


def test_identity_row_gives_the_model_features_exactly():
    f = LogMel()
    wav = torch.stack([_tone(440.0), _tone(2000.0)])
    lens = torch.tensor([SR, SR // 2])
    ident = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0]] * 2)
    a, la = voice_features(f, wav, lens, ident)
    b, lb = f(wav, lens)
    assert torch.equal(a, b) and torch.equal(la, lb)
    # and both are torchaudio's MelSpectrogram, logged (the spectrum path changes nothing)
    ref = torch.log(f.mel(torch.nn.functional.pad(wav, (f.pad_samples, 0))).clamp_min(1e-10)).transpose(1, 2)
    assert torch.allclose(b, f.normalize(ref), atol=1e-6)


@pytest.mark.parametrize("alpha", [0.88, 0.95, 1.06, 1.12])
def test_warp_moves_a_tone_to_alpha_times_its_frequency(alpha):
    f = LogMel()
    for hz in (700.0, 1500.0):
        feats, _ = voice_features(f, _tone(hz)[None], torch.tensor([SR]), torch.tensor([[alpha, 0, 0, 0, 0]]))
        peak = int(feats[0].mean(0).argmax())
        assert abs(peak - _mel_bin_of(alpha * hz)) <= 1
        assert peak != _mel_bin_of(hz)  # the warp is large enough to move it


def test_warp_spectrum_is_monotone_and_keeps_dc_and_nyquist():
    K, T = 201, 3
    spec = torch.arange(K, dtype=torch.float32)[None, :, None].expand(4, K, T).contiguous()  # value = bin index
    out = warp_spectrum(spec, torch.tensor([0.85, 1.0, 1.1, 1.2]))
    src = out[:, :, 0]  # linear interpolation of "bin index" gives the source position read
    assert torch.allclose(src[1], spec[1, :, 0])  # alpha 1: identity
    assert torch.all(src[:, 0] == 0) and torch.allclose(src[:, -1], torch.full((4,), K - 1.0))
    assert torch.all(torch.diff(src, dim=1) > 0)
    assert src[0, 50] == pytest.approx(50 / 0.85, rel=1e-5) and src[3, 50] == pytest.approx(50 / 1.2, rel=1e-5)


def test_eq_adds_the_cosine_curve_in_decibels():
    f = LogMel()
    wav = (0.1 * torch.randn(1, SR, generator=torch.Generator().manual_seed(0)))
    coef = torch.tensor([[1.0, 3.0, -2.0, 0.5, 0.0]])
    a, _ = voice_features(f, wav, torch.tensor([SR]), coef)
    b, _ = f(wav, torch.tensor([SR]))
    diff_db = (a - b) / f.istd * 10.0 / np.log(10.0)  # back to un-normalized dB of power
    m = torch.arange(80, dtype=torch.float32)
    want = sum(c * torch.cos(torch.pi * j * m / 79) for j, c in enumerate([3.0, -2.0, 0.5, 0.0], start=1))
    assert torch.allclose(diff_db, want.expand_as(diff_db), atol=1e-3)


def test_params_respect_prob_ranges_and_seed():
    cfg = VoiceAugConfig(prob=1.0, vtlp=(0.9, 1.1), eq_db=6.0, eq_terms=4)
    p = voice_aug_params(500, cfg, np.random.default_rng(3))
    assert p.shape == (500, 5)
    assert p[:, 0].min() >= 0.9 and p[:, 0].max() <= 1.1 and p[:, 0].std() > 0.03
    assert p[:, 1:].abs().sum(1).max() <= 6.0 + 1e-5
    assert torch.equal(p, voice_aug_params(500, cfg, np.random.default_rng(3)))
    half = voice_aug_params(2000, dataclasses.replace(cfg, prob=0.5), np.random.default_rng(4))
    untouched = (half[:, 0] == 1.0) & (half[:, 1:] == 0).all(1)
    assert 0.45 < untouched.float().mean() < 0.55
    assert torch.all(voice_aug_params(50, dataclasses.replace(cfg, prob=0.0), np.random.default_rng(0))
                     == torch.tensor([1.0, 0, 0, 0, 0]))


@pytest.mark.parametrize("kw", [{"prob": 1.5}, {"prob": -0.1}, {"vtlp": (1.1, 0.9)}, {"vtlp": (0.0, 1.0)},
                                {"eq_db": -1.0}, {"eq_terms": -2}])
def test_bad_settings_are_refused_with_the_key_named(kw):
    with pytest.raises(ValueError, match="data.voice_aug"):
        VoiceAugConfig(**kw)


def test_dataset_draws_voice_params_last_and_only_when_training(tmp_path):
    x = (0.1 * np.random.default_rng(0).standard_normal(SR)).astype(np.float32)
    save_audio(tmp_path / "u.flac", x)
    utts = [Utterance(f"u{i}", str(tmp_path / "u.flac"), "a b", 0, 1.0) for i in range(3)]
    off = ASRDataConfig()
    on = dataclasses.replace(off, voice_aug=VoiceAugConfig(prob=1.0))
    b_off = ASRDataset(utts, [[1]] * 3, [[0, 1, 2]], off, augment=True, seed=7)[0]
    b_on = ASRDataset(utts, [[1]] * 3, [[0, 1, 2]], on, augment=True, seed=7)[0]
    assert b_off.voice is None and b_on.voice is not None and b_on.voice.shape == (3, 5)
    assert torch.all(b_on.voice[:, 0] != 1.0)
    # every other random choice (speed, gain, SpecAugment) is the same with it on or off
    assert torch.equal(b_off.wav, b_on.wav) and torch.equal(b_off.spec_aug, b_on.spec_aug)
    assert ASRDataset(utts, [[1]] * 3, [[0, 1, 2]], on, augment=False)[0].voice is None
