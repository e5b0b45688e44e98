import numpy as np
import pytest

from jrsv_stream.data.compose import MusicSource, VocalSource, plan_items, render_item

SR = 16000


def _pools(seed=0):
    rng = np.random.default_rng(seed)
    sp = [VocalSource(f"s{i}", (rng.normal(size=int(d * SR)) * 0.1).astype(np.float32), f"speech {i}",
                      [(f"w{i}", 0.1, d / 2), (f"v{i}", d / 2, d - 0.1)], "v:a") for i, d in enumerate(rng.uniform(1.5, 4.0, 12))]
    sg = [VocalSource(f"g{i}", (rng.normal(size=int(d * SR)) * 0.1).astype(np.float32), f"sung {i}",
                      [(f"l{i}", 0.0, d)], "v:b") for i, d in enumerate(rng.uniform(2.0, 5.0, 8))]
    mu = [MusicSource(f"m{i}", (rng.normal(size=16 * SR) * 0.1).astype(np.float32), {"i": i}) for i in range(4)]
    return sp, sg, mu


def _plans(seed, n=60):
    sp, sg, mu = _pools()
    return plan_items(np.random.default_rng(seed), n, "train", [len(s.audio) / SR for s in sp],
                      [len(s.audio) / SR for s in sg], [16.0] * len(mu), id_prefix="t-")


def test_plans_are_deterministic_and_well_formed():
    a, b, c = _plans(1), _plans(1), _plans(2)
    assert a == b and a != c
    sp, sg, _ = _pools()
    assert {p.scenario for p in a} == {"speech", "singing", "both"}
    for p in a:
        assert 4.0 <= p.duration_s <= 15.0
        assert bool(p.speech) == (p.scenario in ("speech", "both"))
        assert bool(p.singing) == (p.scenario in ("singing", "both"))
        for track, pool in (("speech", sp), ("singing", sg)):
            for pl in getattr(p, track):
                assert 0 <= pl.offset_s and pl.offset_s + len(pool[pl.source].audio) / SR <= p.duration_s + 1e-3
        for v in ("speech", "singing"):
            snr = getattr(p, f"{v}_snr_db")
            assert (snr is None) == (not getattr(p, v)) and (snr is None or -5 <= snr <= 5)
        assert 0 <= p.music_offset_s <= 16.0 - p.duration_s


def test_sources_are_used_evenly():
    counts = np.zeros(12)
    for p in _plans(3, n=200):
        for pl in p.speech:
            counts[pl.source] += 1
    assert counts.min() > 0 and counts.max() <= counts.min() + 3


def test_render_places_sources_and_shifts_words():
    sp, sg, mu = _pools()
    plan = next(p for p in _plans(4) if p.scenario == "both")
    item = render_item(plan, sp.__getitem__, sg.__getitem__, mu.__getitem__)
    T = int(round(plan.duration_s * SR))
    assert item.mix.mixture.shape == (T,)
    first = plan.speech[0]
    src = sp[first.source]
    assert item.words["speech"][0] == (src.words[0][0], round(src.words[0][1] + first.offset_s, 4), round(src.words[0][2] + first.offset_s, 4))
    assert item.texts["speech"] == " ".join(sp[pl.source].text for pl in plan.speech)
    # the speech stem is the placed source, scaled: zero before its offset, correlated after
    a = int(round(first.offset_s * SR))
    stem = item.mix.stems["speech"]
    assert np.all(stem[:a] == 0)
    seg = stem[a:a + len(src.audio)]
    assert np.corrcoef(seg, src.audio[:len(seg)])[0, 1] > 0.999
    for v in ("speech", "singing"):
        assert abs(item.mix.snr_db[v] - getattr(plan, f"{v}_snr_db")) < 0.1
    assert item.music_meta["id"] == mu[plan.music].id


def test_plan_errors():
    with pytest.raises(ValueError, match="no music source"):
        plan_items(np.random.default_rng(0), 3, "train", [2.0], [2.0], [3.0], id_prefix="x")
    with pytest.raises(ValueError, match="no scenario"):
        plan_items(np.random.default_rng(0), 3, "train", [], [], [16.0], id_prefix="x")
