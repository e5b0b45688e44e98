"""The real-speech pool for separator training (data/real_speech.py) and its use in dynamic
mixing: built from codec2-examples' real recordings (installed by .ci/setup.sh), clips
trimmed and levelled, crops deterministic, the speech stem replaced at the same level with
the mixture still the sum of the stems and the rest of the example unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jrsv_stream import SAMPLE_RATE
from jrsv_stream.data.dynamic import DynamicMixDataset, activity_targets
from jrsv_stream.data.real_speech import TARGET_RMS, RealSpeechPool, build_real_speech, trim_and_level
from tests.test_dynamic_mixing import HOP, make_fake_corpus


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("real-speech")
    doc = build_real_speech(out, ["codec2"])
    assert doc["missing_packages"] == [], "codec2-examples is a test prerequisite (.ci/setup.sh installs it)"
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_fake_corpus(tmp_path_factory.mktemp("fake-corpus"))


def test_pool_holds_levelled_real_talk(pool):
    doc = json.loads((pool / "summary.json").read_text())
    assert doc["sources"]["codec2"]["clips"] >= 10 and doc["seconds"] > 60
    audio = np.load(pool / "pool.npy")
    clips = [json.loads(x) for x in (pool / "clips.jsonl").read_text().splitlines()]
    assert sum(c["length"] for c in clips) == audio.size and audio.dtype == np.int16
    assert not any(c["path"].endswith(("f2400.raw", "m2400.raw")) for c in clips)  # coded outputs left out
    for c in clips:
        x = audio[c["start"]: c["start"] + c["length"]].astype(np.float32) / 32767
        assert abs(np.sqrt(np.mean(x ** 2)) - TARGET_RMS) < 0.1 * TARGET_RMS
        assert np.abs(x[:320]).max() > 1e-3  # leading silence trimmed


def test_trim_and_level_rejects_silence_and_nan():
    assert trim_and_level(np.zeros(16000, np.float32)) is None
    assert trim_and_level(np.full(16000, np.nan, np.float32)) is None
    x = np.concatenate([np.zeros(8000), 0.3 * np.sin(np.arange(8000) * 0.1), np.zeros(8000)]).astype(np.float32)
    y = trim_and_level(x)
    assert y is not None and 7680 <= y.size <= 8320  # the tone alone, to a frame
    assert np.sqrt(np.mean(y ** 2)) == pytest.approx(TARGET_RMS, rel=1e-3)


def test_crops_are_deterministic_and_full(pool):
    p = RealSpeechPool(pool)
    a = p.crop(np.random.default_rng(3), 4 * SAMPLE_RATE)
    b = p.crop(np.random.default_rng(3), 4 * SAMPLE_RATE)
    c = p.crop(np.random.default_rng(4), 4 * SAMPLE_RATE)
    assert a.shape == (4 * SAMPLE_RATE,) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert activity_targets(None, a, 0, a.size // HOP, HOP).mean() > 0.3


def test_missing_pool_is_a_clear_error(tmp_path, corpus):
    with pytest.raises(FileNotFoundError, match="data real-speech"):
        DynamicMixDataset(corpus, "train", HOP * 200, HOP, real_speech=tmp_path, p_real_speech=0.5)
    with pytest.raises(ValueError, match="p_real_speech"):
        DynamicMixDataset(corpus, "train", HOP * 200, HOP, real_speech=tmp_path, p_real_speech=1.5)


def test_speech_stem_replaced_at_its_level(corpus, pool):
    kw = dict(root=corpus, split="train", crop_samples=HOP * 200, hop_samples=HOP, batch_size=None, seed=5,
              plan_kwargs={"max_s": 6.0})
    plain = DynamicMixDataset(**kw)
    real = DynamicMixDataset(**kw, real_speech=pool, p_real_speech=1.0)
    replaced = 0
    for i in range(12):
        e0, e1 = plain.example(i), real.example(i)
        s0, s1 = e0["stems"].numpy(), e1["stems"].numpy()
        assert np.allclose(e1["stems"].sum(0).numpy(), e1["mixture"].numpy(), atol=1e-5)
        if not e0["activity"][0].any():  # no speech in the crop: nothing replaced
            assert not e1["meta"]["speech_real"] and np.array_equal(s0, s1)
            continue
        replaced += 1
        assert e1["meta"]["speech_real"] and e1["meta"]["speech_words"] == []
        assert not np.allclose(s0[0], s1[0])
        if np.abs(e1["mixture"].numpy()).max() < 0.98:  # (a peak rescale would move every stem)
            assert np.array_equal(s0[1:], s1[1:])  # singing and music untouched

            def level(x, a):
                m = np.repeat(a > 0, HOP)
                return np.sqrt(np.mean(x[m] ** 2))

            assert level(s1[0], e1["activity"][0].numpy()) == pytest.approx(
                level(s0[0], e0["activity"][0].numpy()), rel=0.02)
        assert np.array_equal(e0["activity"][1].numpy(), e1["activity"][1].numpy())
    assert replaced >= 4
    half = DynamicMixDataset(**kw, real_speech=pool, p_real_speech=0.5)
    flags = [half.example(i)["meta"]["speech_real"] for i in range(40)]
    assert 0 < sum(flags) < 40


def _pitch_jitter_cents(x: np.ndarray) -> float:
    """Median |frame-to-frame f0 change| in cents over voiced frames (sung notes hold pitch)."""
    import pyworld as pw

    f0, _ = pw.dio(np.ascontiguousarray(x, dtype=np.float64), SAMPLE_RATE, f0_floor=60.0, f0_ceil=600.0,
                   frame_period=10.0)
    v = f0 > 0
    both = v[1:] & v[:-1]
    return float(np.median(np.abs(1200 * np.log2(f0[1:][both] / f0[:-1][both]))))


def test_sung_pool_holds_the_same_voices_singing(pool, tmp_path):
    from jrsv_stream.data.real_speech import build_real_singing

    doc = build_real_singing(pool, tmp_path / "sung", workers=1, max_clips=8)
    assert doc["clips"] >= 6
    sung = RealSpeechPool(tmp_path / "sung")
    talk = RealSpeechPool(pool)
    by_start = {c["start"]: k for k, c in enumerate(talk.clips)}
    jitter = []
    for k, c in enumerate(sung.clips):
        j = by_start[c["sung_from"]]
        y, x = sung.clip(k), talk.clip(j)
        assert c["speaker"] == talk.clips[j]["speaker"]
        assert abs(np.sqrt(np.mean(y ** 2)) - TARGET_RMS) < 0.1 * TARGET_RMS
        jitter.append((_pitch_jitter_cents(y), _pitch_jitter_cents(x)))
    sung_j, talk_j = np.median(jitter, axis=0)
    assert sung_j < 0.7 * talk_j  # held notes (with vibrato), not speech intonation


def test_singing_stem_replaced_too(corpus, pool):
    kw = dict(root=corpus, split="train", crop_samples=HOP * 200, hop_samples=HOP, batch_size=None, seed=5,
              plan_kwargs={"max_s": 6.0})
    plain = DynamicMixDataset(**kw)
    both = DynamicMixDataset(**kw, real_speech=pool, p_real_speech=1.0, real_singing=pool, p_real_singing=1.0)
    seen = 0
    for i in range(12):
        e0, e1 = plain.example(i), both.example(i)
        assert np.allclose(e1["stems"].sum(0).numpy(), e1["mixture"].numpy(), atol=1e-5)
        if e0["activity"][1].any():
            seen += 1
            assert e1["meta"]["singing_real"] and e1["meta"]["singing_words"] == []
            assert not np.allclose(e0["stems"][1].numpy(), e1["stems"][1].numpy())
        else:
            assert not e1["meta"]["singing_real"]
    assert seen >= 3
