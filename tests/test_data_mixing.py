import numpy as np
import pytest

from jrsv_stream.data.mixing import MixError, active_region, mix_stems, quantize_pcm16, region_snr_db, snr_bucket


def _signals(seed=0, T=16000 * 6):
    rng = np.random.default_rng(seed)
    music = (rng.normal(size=T) * 0.2).astype(np.float32)
    speech = np.zeros(T, np.float32)
    speech[16000:56000] = rng.normal(size=40000) * np.hanning(40000)
    singing = np.zeros(T, np.float32)
    singing[40000:90000] = np.sin(np.arange(50000) * 2 * np.pi * 220 / 16000)
    return speech, singing, music


@pytest.mark.parametrize("target", [-5.0, -2.3, 0.0, 3.7, 5.0])
def test_achieved_snr_within_0p1_db_and_stems_sum_exactly(target):
    speech, singing, music = _signals()
    mix = mix_stems({"speech": speech, "singing": singing}, music, {"speech": target, "singing": -target}, peak=0.7)
    assert abs(mix.snr_db["speech"] - target) < 0.1
    assert abs(mix.snr_db["singing"] + target) < 0.1
    # recomputed independently from the returned stems
    assert abs(region_snr_db(mix.stems["speech"], mix.stems["music"]) - target) < 0.1
    total = mix.stems["speech"].astype(np.float64) + mix.stems["singing"] + mix.stems["music"]
    assert np.max(np.abs(total - mix.mixture)) == 0.0
    assert abs(np.max(np.abs(mix.mixture)) - 0.7) < 1e-3


def test_stems_are_on_the_16bit_grid():
    speech, _, music = _signals(1)
    mix = mix_stems({"speech": speech}, music, {"speech": 0.0})
    for s in mix.stems.values():
        k = s.astype(np.float64) * 32768
        assert np.array_equal(k, np.round(k))


def test_region_snr_ignores_silence_outside_the_vocal():
    speech, _, music = _signals(2)
    r = active_region(speech)
    manual = 10 * np.log10(np.sum(speech[r].astype(np.float64) ** 2) / np.sum(music[r].astype(np.float64) ** 2))
    assert region_snr_db(speech, music) == pytest.approx(manual, abs=1e-9)
    whole = 10 * np.log10(np.sum(speech.astype(np.float64) ** 2) / np.sum(music.astype(np.float64) ** 2))
    assert abs(region_snr_db(speech, music) - whole) > 1.0


def test_quantize_and_bucket():
    assert quantize_pcm16(np.array([1.5, -2.0, 0.25]))[0] == pytest.approx(32767 / 32768)
    assert quantize_pcm16(np.array([-2.0]))[0] == -1.0
    assert [snr_bucket(x) for x in (-4.9, -2.6, -2.4, 2.4, 2.6, 5)] == [-5, -5, 0, 0, 5, 5]


def test_mix_errors():
    speech, _, music = _signals()
    with pytest.raises(MixError, match="shape"):
        mix_stems({"speech": speech[:-1]}, music, {"speech": 0.0})
    with pytest.raises(MixError, match="silent"):
        mix_stems({"speech": np.zeros_like(speech)}, music, {"speech": 0.0})
    quiet = music.copy()
    quiet[: 60000] = 0
    with pytest.raises(MixError, match="music is silent"):
        mix_stems({"speech": speech}, quiet, {"speech": 0.0})
    with pytest.raises(MixError, match="peak"):
        mix_stems({"speech": speech}, music, {"speech": 0.0}, peak=1.5)
    with pytest.raises(MixError, match="no target SNR"):
        mix_stems({"speech": speech}, music, {})
