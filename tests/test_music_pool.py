"""The training music pool from other renderers (data/music_pool.py: TiMidity + freepats, AVL
drum kits) and its use in dynamic mixing (``music_pool`` / ``p_music_pool``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile as sf

from jrsv_stream import SAMPLE_RATE
from jrsv_stream.data import music_pool as mp
from jrsv_stream.data.dynamic import DynamicMixDataset, activity_targets
from jrsv_stream.data.music import RMS_FLOOR, _window_rms
from jrsv_stream.data.music_render import SOUNDFONT
from jrsv_stream.data.music_samples import MusicError
from tests.prereq import needs
from tests.test_dynamic_mixing import HOP, make_fake_corpus

needs_pool = needs("timidity", "fluidsynth", files=(mp.FREEPATS_CFG, SOUNDFONT, *mp.AVLDRUMS.values()))


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    mp.load_freepats()  # a missing prerequisite fails here with the packages to install
    out = tmp_path_factory.mktemp("music-pool")
    mp.build_music_pool(out, pieces=3, seed=0, workers=1)
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_fake_corpus(tmp_path_factory.mktemp("fake-corpus"))


@needs_pool
def test_pool_pieces_decode_at_16k_and_are_music(pool):
    rows = [json.loads(x) for x in (pool / "manifest.jsonl").read_text().splitlines()]
    doc = json.loads((pool / "summary.json").read_text())
    assert [r["id"] for r in rows] == ["pool-00000", "pool-00001", "pool-00002"] and doc["pieces"] == 3
    fp = mp.load_freepats()
    for r in rows:
        x, rate = sf.read(pool / r["path"], dtype="float32")
        info = sf.info(str(pool / r["path"]))
        assert rate == SAMPLE_RATE and x.ndim == 1 and info.format == "FLAC" and info.subtype == "PCM_16"
        assert len(x) == round(r["duration_s"] * SAMPLE_RATE) and mp.MIN_S <= r["duration_s"] <= mp.MAX_S
        assert np.abs(x).max() == pytest.approx(0.5, abs=1e-3)  # mastered as the corpus's pieces
        assert _window_rms(x.astype(np.float64), SAMPLE_RATE).min() >= 0.9 * RMS_FLOOR  # never silent
        assert r["renderer"].startswith("timidity-freepats")
        assert r["programs"] and all(p["program"] in fp.programs and p["program"] not in mp.NOT_TARGETS
                                     for p in r["programs"])
    assert sum(doc["renderers"].values()) == 3


@needs_pool
def test_pool_is_deterministic_and_prefix_stable(pool, tmp_path):
    # fewer pieces, two worker processes: pieces 0 and 1 are the same bytes
    mp.build_music_pool(tmp_path, pieces=2, seed=0, workers=2)
    for i in range(2):
        name = f"pieces/pool-{i:05d}.flac"
        assert (tmp_path / name).read_bytes() == (pool / name).read_bytes()
    a, b = (mp.plan_piece(s, 0, mp.load_freepats()) for s in (0, 1))
    assert a.meta != b.meta or a.duration_s != b.duration_s  # another seed, another piece


def test_programs_map_to_freepats_within_the_gm_family():
    fp = mp.Freepats(Path("x.cfg"), frozenset({0, 4, 24, 32, 48, 53, 80, 102}), frozenset({36, 38}))
    assert fp.program_for(4) == 4
    assert fp.program_for(3) == 4  # nearest in the piano family
    assert fp.program_for(25) == 24 and fp.program_for(38) == 32
    assert fp.program_for(50) == 48  # not 53 (Voice Oohs)
    assert fp.program_for(100) not in mp.NOT_TARGETS  # family 96-103 has only Echo Voice: nearest elsewhere


@needs_pool
def test_plans_use_only_freepats_programs_and_drums():
    fp = mp.load_freepats()
    kits = set()
    for i in range(12):
        plan = mp.plan_piece(0, i, fp)
        for inst in plan.midi.instruments:
            if inst.is_drum:
                assert inst.program == 0 and {n.pitch for n in inst.notes} <= fp.drum_notes
            else:
                assert inst.program in fp.programs and inst.program not in mp.NOT_TARGETS
        kits.add(plan.avl_kit)
    assert None in kits and kits - {None}  # both freepats-only and AVL-kit pieces


@needs_pool
def test_a_program_freepats_lacks_cannot_fall_back_to_fluidr3(tmp_path):
    fp = mp.load_freepats()
    missing = next(p for p in range(128) if p not in fp.programs)
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=missing)
    inst.notes.append(pretty_midi.Note(100, 60, 0.0, 0.5))
    pm.instruments.append(inst)
    with pytest.raises(MusicError, match="soundfont"):
        mp.render_timidity(pm, SAMPLE_RATE, tmp_path, fp.cfg)


@needs_pool
def test_renders_are_not_fluidr3s(tmp_path):
    fp = mp.load_freepats()
    for program in (0, 33, 48):  # piano, finger bass, string ensemble
        r = mp.program_correlation(program, fp, tmp_path)
        control = mp.program_correlation(program, fp, tmp_path, control=True)
        assert r < 0.6 and control > 0.9, (program, r, control)  # the measure sees FluidR3's samples
    assert mp.fluidr3_correlation(mp.plan_piece(0, 0, fp), fp, tmp_path) < 0.4


@needs_pool
def test_pool_crops_are_deterministic_and_full(pool):
    p = mp.MusicPool(pool)
    a, ida = p.crop(np.random.default_rng(3), 4 * SAMPLE_RATE)
    b, idb = p.crop(np.random.default_rng(3), 4 * SAMPLE_RATE)
    assert a.shape == (4 * SAMPLE_RATE,) and a.dtype == np.float32 and np.array_equal(a, b) and ida == idb
    assert np.sqrt(np.mean(a ** 2)) > RMS_FLOOR / 2
    long, _ = p.crop(np.random.default_rng(4), 25 * SAMPLE_RATE)  # longer than any piece: repeated
    assert long.shape == (25 * SAMPLE_RATE,) and np.abs(long[-SAMPLE_RATE:]).max() > 0


def test_missing_pool_is_a_clear_error(tmp_path, corpus):
    kw = dict(root=corpus, split="train", crop_samples=HOP * 200, hop_samples=HOP)
    with pytest.raises(FileNotFoundError, match="jrsv-stream data music-pool --out"):
        DynamicMixDataset(**kw, music_pool=tmp_path / "none", p_music_pool=0.5)
    with pytest.raises(ValueError, match="data music-pool"):
        DynamicMixDataset(**kw, p_music_pool=0.5)
    with pytest.raises(ValueError, match="p_music_pool"):
        DynamicMixDataset(**kw, music_pool=tmp_path, p_music_pool=1.5)
    DynamicMixDataset(**kw, music_pool=tmp_path / "none", p_music_pool=0.0)  # p = 0: the pool is not read


@needs_pool
def test_music_stem_replaced_at_its_level(corpus, pool):
    kw = dict(root=corpus, split="train", crop_samples=HOP * 200, hop_samples=HOP, batch_size=None, seed=5,
              plan_kwargs={"max_s": 6.0})
    plain = DynamicMixDataset(**kw)
    pooled = DynamicMixDataset(**kw, music_pool=pool, p_music_pool=1.0)
    n_frames, checked = 200, 0
    for i in range(12):
        e0, e1 = plain.example(i), pooled.example(i)
        s0, s1 = e0["stems"].numpy(), e1["stems"].numpy()
        assert np.allclose(s1.sum(0), e1["mixture"].numpy(), atol=1e-5)
        assert e1["meta"]["music_pool"].startswith("pool-")
        assert not np.allclose(s0[2], s1[2])
        assert np.array_equal(e0["activity"].numpy(), e1["activity"].numpy())
        if np.abs(e1["mixture"].numpy()).max() < 0.98:  # (a peak rescale would move every stem)
            checked += 1
            assert np.array_equal(s0[:2], s1[:2])  # the vocals untouched
            a0 = activity_targets(None, s0[2], 0, n_frames, HOP)
            a1 = activity_targets(None, s1[2], 0, n_frames, HOP)
            assert mp._rms(s1[2][np.repeat(a1 > 0, HOP)]) == pytest.approx(
                mp._rms(s0[2][np.repeat(a0 > 0, HOP)]), rel=1e-3)  # the music's level kept: the SNRs too
    assert checked >= 3
    half = DynamicMixDataset(**kw, music_pool=pool, p_music_pool=0.5)
    used = [half.example(i)["meta"]["music_pool"] != "" for i in range(30)]
    assert 0 < sum(used) < 30


@needs_pool
def test_p_zero_is_bit_identical(corpus, pool):
    kw = dict(root=corpus, split="train", crop_samples=HOP * 200, hop_samples=HOP, batch_size=3, seed=5,
              plan_kwargs={"max_s": 6.0})
    plain, off = DynamicMixDataset(**kw), DynamicMixDataset(**kw, music_pool=pool, p_music_pool=0.0)
    for b in range(2):
        x, y = plain.batch(b), off.batch(b)
        for k in ("mixture", "stems", "activity"):
            assert np.array_equal(x[k].numpy(), y[k].numpy())
        assert x["meta"].keys() == y["meta"].keys() and "music_pool" not in y["meta"]


def test_cli_and_config_know_the_pool():
    from jrsv_stream.cli import _cmd_data_music_pool, build_parser
    from jrsv_stream.train.separator import load_train_config

    a = build_parser().parse_args(["data", "music-pool", "--out", "x", "--pieces", "5", "--workers", "1"])
    assert a.fn is _cmd_data_music_pool and (a.pieces, a.seed, a.workers) == (5, 0, 1)
    cfg = load_train_config(Path(__file__).resolve().parents[1] / "configs" / "separator_stft_music_pool.yaml")
    assert (cfg.data.music_pool, cfg.data.p_music_pool) == ("data/music_pool", 0.5)
    assert cfg.data.augment.enabled and cfg.run.init_from == "models/variants/separator_real_aug"
    assert load_train_config(Path(__file__).resolve().parents[1] / "configs" / "separator_stft_real_sung.yaml"
                             ).data.p_music_pool == 0.0
