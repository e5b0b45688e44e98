"""Dynamic mixing dataset and the fixed-manifest dataset, on a tiny generated corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from jrsv_stream import SAMPLE_RATE
from jrsv_stream.audio.io import save_audio
from jrsv_stream.data.compose import plan_items, render_item, write_item
from jrsv_stream.data.dynamic import DynamicMixDataset, ManifestDataset, activity_targets
from jrsv_stream.data.manifest import write_manifest
from jrsv_stream.data.synth import SourceStore, read_source_index

HOP = 160


def _vocal(rng: np.random.Generator, kind: str, n_words: int) -> tuple[np.ndarray, list]:
    """Words of 0.2-0.4 s separated by 0.1-0.2 s of silence: buzzy tones (singing) or
    modulated noise (speech)."""
    pieces, words, t = [], [], 0.0
    for w in range(n_words):
        d = float(rng.uniform(0.2, 0.4))
        n = int(d * SAMPLE_RATE)
        tt = np.arange(n) / SAMPLE_RATE
        if kind == "singing":
            f0 = float(rng.uniform(150, 400))
            x = sum(np.sin(2 * np.pi * f0 * h * tt) / h for h in range(1, 6))
        else:
            x = rng.standard_normal(n) * (1 + np.sin(2 * np.pi * 4 * tt))
        x = 0.3 * x * np.hanning(n) / (np.abs(x).max() + 1e-9)
        gap = int(rng.uniform(0.1, 0.2) * SAMPLE_RATE)
        pieces += [x, np.zeros(gap)]
        words.append([f"w{w}", round(t, 4), round(t + n / SAMPLE_RATE, 4)])
        t += (n + gap) / SAMPLE_RATE
    return np.concatenate(pieces).astype(np.float32), words


def make_fake_corpus(root: Path, seed: int = 0, n_vocal: int = 5, n_music: int = 2, music_s: float = 16.0,
                     manifest_items: int = 2) -> Path:
    """A corpus in the synth layout (``sources/<kind>/<split>/``, ``sources/<kind>.jsonl``)
    with train and valid sources, and ``valid.jsonl`` with ``manifest_items`` items."""
    rng = np.random.default_rng(seed)
    for kind in ("speech", "singing", "music"):
        rows = []
        for split in ("train", "valid"):
            d = root / "sources" / kind / split
            d.mkdir(parents=True, exist_ok=True)
            for k in range(n_music if kind == "music" else n_vocal):
                sid = f"{kind}-{split}-{k:06d}"
                if kind == "music":
                    t = np.arange(int(music_s * SAMPLE_RATE)) / SAMPLE_RATE
                    audio = (0.2 * np.sin(2 * np.pi * rng.uniform(60, 120) * t) + 0.05 * rng.standard_normal(len(t))
                             ).astype(np.float32)
                    meta = {"meta": {"kind": "fake"}}
                else:
                    audio, words = _vocal(rng, kind, int(rng.integers(3, 7)))
                    meta = {"text": " ".join(w[0] for w in words), "words": words, "voice": f"fake-{kind}-{k % 2}"}
                save_audio(d / f"{sid}.flac", audio, SAMPLE_RATE)
                rows.append({"id": sid, "audio": f"{sid}.flac", "duration_s": round(len(audio) / SAMPLE_RATE, 4),
                             "split": split, "kind": kind, **meta})
        (root / "sources" / f"{kind}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    stores = {k: SourceStore(root, k, read_source_index(root, k, "valid")) for k in ("speech", "singing", "music")}
    plans = plan_items(np.random.default_rng(seed + 1), manifest_items, "valid", stores["speech"].durations(),
                       stores["singing"].durations(), stores["music"].durations(), id_prefix="valid-", max_s=6.0, min_s=4.0)
    items = [write_item(render_item(p, stores["speech"], stores["singing"], stores["music"]), root, f"mixtures/valid/{p.id}")
             for p in plans]
    write_manifest(root / "valid.jsonl", items)
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_fake_corpus(tmp_path_factory.mktemp("fake-corpus"))


def _ds(corpus, **kw):
    args = dict(root=corpus, split="train", crop_samples=HOP * 200, hop_samples=HOP, batch_size=3, seed=5,
                plan_kwargs={"max_s": 6.0})
    args.update(kw)
    return DynamicMixDataset(**args)


def test_batches_have_shapes_and_mixture_is_sum_of_stems(corpus):
    b = _ds(corpus).batch(0)
    assert b["mixture"].shape == (3, HOP * 200) and b["mixture"].dtype == torch.float32
    assert b["stems"].shape == (3, 3, HOP * 200)
    assert b["activity"].shape == (3, 2, 200)
    assert torch.allclose(b["stems"].sum(1), b["mixture"], atol=1e-6)
    assert set(b["activity"].unique().tolist()) <= {0.0, 1.0}
    assert len(b["meta"]["id"]) == 3 and set(b["meta"]["scenario"]) <= {"speech", "singing", "both"}


def test_absent_stems_are_zero_and_inactive(corpus):
    ds = _ds(corpus, batch_size=None)
    seen = set()
    for i in range(12):
        ex = ds.example(i)
        sc = ex["meta"]["scenario"]
        seen.add(sc)
        for j, v in enumerate(("speech", "singing")):
            if sc not in (v, "both"):
                assert not ex["stems"][j].any() and not ex["activity"][j].any()
                assert np.isnan(ex["meta"][f"{v}_snr_db"])
    assert {"speech", "singing"} <= seen


def test_activity_follows_word_spans_where_stems_sound(corpus):
    # the fake vocals are silent between words, so word-span frames hold all their energy
    ds = _ds(corpus, batch_size=None)
    checked = 0
    for i in range(6):
        ex = ds.example(i)
        for j in range(2):
            energy = ex["stems"][j].double().view(-1, HOP).pow(2).sum(1)
            act = ex["activity"][j].bool()
            if energy.sum() == 0:
                continue
            checked += 1
            assert act.any()
            assert energy[act].sum() >= 0.999 * energy.sum()
            assert not (energy[~act] > energy.max() * 1e-2).any()
    assert checked >= 3


def test_deterministic_and_same_for_any_num_workers(corpus):
    ref = list(_ds(corpus, num_batches=4))
    again = list(_ds(corpus, num_batches=4))
    workers = list(DataLoader(_ds(corpus, num_batches=4), batch_size=None, num_workers=2))
    assert len(ref) == len(workers) == 4
    for a, b, c in zip(ref, again, workers):
        assert torch.equal(a["mixture"], b["mixture"]) and torch.equal(a["mixture"], c["mixture"])
        assert torch.equal(a["activity"], c["activity"]) and a["meta"]["id"] == c["meta"]["id"]
    other = _ds(corpus, seed=6).batch(0)
    assert not torch.equal(other["mixture"], ref[0]["mixture"])


def test_start_batch_resumes_the_same_stream(corpus):
    ref = list(_ds(corpus, num_batches=3))
    resumed = list(_ds(corpus, start_batch=2, num_batches=1))
    assert torch.equal(resumed[0]["mixture"], ref[2]["mixture"])


def test_crop_must_be_whole_hops(corpus):
    with pytest.raises(ValueError, match="multiple"):
        _ds(corpus, crop_samples=HOP * 10 + 1)


def test_activity_targets_from_words_and_energy():
    words = [("a", 0.01, 0.03), ("b", 0.05, 0.051)]  # samples 160-480, 800-816
    act = activity_targets(words, None, 0, 8, HOP)
    np.testing.assert_array_equal(act, [0, 1, 1, 0, 0, 1, 0, 0])
    act = activity_targets(words, None, 160, 4, HOP)  # crop starts one frame later
    np.testing.assert_array_equal(act, [1, 1, 0, 0])
    stem = np.zeros(HOP * 6, dtype=np.float32)
    stem[HOP * 2:HOP * 3] = 1.0
    stem[HOP * 4:HOP * 5] = 0.01  # -40 dB below the loudest frame: inactive at -30 dB
    np.testing.assert_array_equal(activity_targets(None, stem, 0, 6, HOP), [0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(activity_targets(None, stem, 0, 6, HOP, energy_db=-50), [0, 0, 1, 0, 1, 0])
    np.testing.assert_array_equal(activity_targets(None, None, 0, 3, HOP), [0, 0, 0])


def test_manifest_dataset(corpus):
    ds = ManifestDataset(corpus / "valid.jsonl", HOP)
    assert len(ds) == 2
    ex = ds[0]
    T = ex["mixture"].shape[0]
    assert T % HOP == 0 and ex["length"] <= T < ex["length"] + HOP
    assert ex["stems"].shape == (3, T) and ex["activity"].shape == (2, T // HOP)
    assert torch.allclose(ex["stems"].sum(0), ex["mixture"], atol=1e-6)
    for j in range(3):
        assert ex["meta"]["present"][j] == bool(ex["stems"][j].any())
    short = ManifestDataset(corpus / "valid.jsonl", HOP, max_seconds=1.0, max_items=1)
    assert len(short) == 1 and short[0]["mixture"].shape[0] == SAMPLE_RATE


def test_no_music_examples_are_their_vocals_alone(corpus):
    """``p_no_music``: the music stem silenced, the mixture the vocals' sum, the vocals and their
    activity untouched; drawn apart from the rest (other examples unchanged), also with effects."""
    from jrsv_stream.data.augment import AugmentConfig

    kw = dict(root=corpus, split="train", crop_samples=HOP * 200, hop_samples=HOP, batch_size=None, seed=5)
    plain, dry = DynamicMixDataset(**kw), DynamicMixDataset(**kw, p_no_music=1.0)
    for i in range(6):
        e0, e1 = plain.example(i), dry.example(i)
        s0, s1 = e0["stems"].numpy(), e1["stems"].numpy()
        assert e1["meta"]["no_music"] and np.abs(s0[2]).max() > 0 and not s1[2].any()
        assert np.array_equal(s0[:2], s1[:2]) and np.array_equal(e0["activity"].numpy(), e1["activity"].numpy())
        assert np.allclose(e1["mixture"].numpy(), s1[:2].sum(0), atol=1e-6)
    half = DynamicMixDataset(**kw, p_no_music=0.5)
    flags = [half.example(i)["meta"]["no_music"] for i in range(30)]
    assert 0 < sum(flags) < 30
    for i in range(30):  # the kept examples are the plain ones, bit for bit
        if not flags[i]:
            assert np.array_equal(half.example(i)["mixture"].numpy(), plain.example(i)["mixture"].numpy())
    fx = DynamicMixDataset(**kw, p_no_music=1.0, augment=AugmentConfig(enabled=True, p_reverb=1.0, p_compress=1.0,
                                                                       p_level=1.0, p_eq=1.0))
    for i in range(4):
        e = fx.example(i)
        assert np.isfinite(e["stems"].numpy()).all() and not e["stems"][2].any()
    with pytest.raises(ValueError, match="p_no_music"):
        DynamicMixDataset(**kw, p_no_music=-0.1)
