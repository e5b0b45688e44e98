"""Tests for the synthetic music source (jrsv_stream.data.music)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp

import numpy as np
import pytest

from jrsv_stream.data import music, music_compose, music_samples, music_styles
from jrsv_stream.data.music import MusicPiece, list_loops, synth_music
from tests.prereq import needs, require_files

SR = 16000
needs_synth = needs("fluidsynth", files=(music.SOUNDFONT,))
VOCAL_WORDS = ("choir", "voice", "aahs", "oohs", "vox")
META_KEYS = {"seed", "tempo_bpm", "key", "meter", "instruments", "drums", "loops", "kind"}


def _min_window_rms(x: np.ndarray, win: int = SR // 2, hop: int = SR // 10) -> float:
    starts = list(range(0, max(len(x) - win, 0) + 1, hop))
    if starts[-1] != max(len(x) - win, 0):
        starts.append(max(len(x) - win, 0))
    return min(float(np.sqrt(np.mean(np.square(x[s: s + win], dtype=np.float64)))) for s in starts)


def _seed_of_kind(kind: str, split: str) -> int:
    return next(s for s in range(10_000) if music._piece_kind(s, split) == kind)


@needs_synth
def test_same_seed_identical_different_seed_differs(tmp_path):
    a = synth_music(7, 3.0, workdir=tmp_path)
    b = synth_music(7, 3.0, workdir=tmp_path)
    c = synth_music(8, 3.0, workdir=tmp_path)
    assert np.array_equal(a.audio, b.audio)
    assert a.meta == b.meta
    assert not np.array_equal(a.audio, c.audio)
    assert list(tmp_path.iterdir()) == []  # temporary render files are removed


@needs_synth
def test_split_changes_the_piece():
    a = synth_music(11, 2.0, "train")
    b = synth_music(11, 2.0, "test")
    assert not np.array_equal(a.audio, b.audio)


@needs_synth
@pytest.mark.parametrize("duration", [0.3, 2.345, 5.0])
def test_exact_length_peak_and_dtype(duration):
    p = synth_music(3, duration)
    assert isinstance(p, MusicPiece)
    assert p.audio.dtype == np.float32 and p.audio.ndim == 1
    assert len(p.audio) == round(duration * SR)
    assert np.all(np.isfinite(p.audio))
    assert abs(float(np.max(np.abs(p.audio))) - 0.5) < 1e-6


@needs_synth
def test_other_sample_rate_length():
    p = synth_music(5, 1.5, sample_rate=22050)
    assert len(p.audio) == round(1.5 * 22050)
    assert abs(float(np.max(np.abs(p.audio))) - 0.5) < 1e-6


@needs_synth
@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("kind", ["midi", "midi+loop", "loop"])
def test_never_silent_and_meta(kind, split):
    if kind != "midi":
        require_files(music.SAMPLES_DIR)
    seed = _seed_of_kind(kind, split)
    p = synth_music(seed, 4.0, split)
    assert _min_window_rms(p.audio) >= 0.01
    meta = json.loads(json.dumps(p.meta))  # JSON-serializable, round-trips
    assert meta == p.meta
    assert META_KEYS <= set(meta)
    assert meta["seed"] == seed and meta["kind"] in ("midi", "midi+loop", "loop")
    assert meta["meter"] in ("4/4", "3/4")
    assert 60 <= meta["tempo_bpm"] <= 180
    assert isinstance(meta["drums"], bool)
    for name in meta["instruments"]:
        assert not any(w in name.lower() for w in VOCAL_WORDS), name
    # recorded samples come from this split only
    assert set(meta["loops"]) <= {p.stem for p in list_loops(split)}
    if meta["kind"] != "midi":
        assert meta["loops"]
    if meta["kind"] == "loop":
        assert meta["instruments"] == []


def test_arrangements_never_use_vocal_programs():
    for seed in range(150):
        song = music_compose._arrange(np.random.default_rng(seed), 8.0)
        for part in song.parts.values():
            assert part["program"] not in music.EXCLUDED_PROGRAMS
            assert part["program"] not in (52, 53, 54)
    for style in music.STYLES.values():
        for pool in ("bass", "comp", "pad", "arp", "lead"):
            assert music_styles._allowed(style[pool]), (pool, style)


@needs(files=(music.SAMPLES_DIR,))
def test_list_loops_splits_disjoint_and_cover_all_usable():
    splits = {s: list_loops(s) for s in ("train", "valid", "test")}
    names = {s: {p.name for p in v} for s, v in splits.items()}
    assert not names["train"] & names["valid"]
    assert not names["train"] & names["test"]
    assert not names["valid"] & names["test"]
    usable = {p.name for p in music.SAMPLES_DIR.iterdir()
              if p.suffix == ".flac" and music_samples._sample_role(p.stem) is not None}
    assert names["train"] | names["valid"] | names["test"] == usable
    total = len(usable)
    assert 0.08 * total <= len(names["test"]) <= 0.25 * total
    assert 0.04 * total <= len(names["valid"]) <= 0.25 * total
    assert list_loops("test") == splits["test"]  # deterministic
    # variants of one recording share a split
    for s, v in names.items():
        if "loop_amen.flac" in v:
            assert "loop_amen_full.flac" in v
    # every split gets rhythmic loops
    for s in splits:
        assert any(music_samples._sample_role(p.stem) == "loop" for p in splits[s]), s


@needs(files=(music.SAMPLES_DIR,))
def test_vocal_like_and_noise_samples_excluded():
    every = {p.stem for s in ("train", "valid", "test") for p in list_loops(s)}
    for stem in ("ambi_choir", "bass_voxy_c", "bass_voxy_hit_c", "misc_burp", "misc_crow",
                 "mehackit_robot1", "glitch_robot1", "ambi_haunted_hum", "vinyl_hiss"):
        assert stem not in every
    assert music_samples._sample_role("loop_new_thing") == "loop"
    assert music_samples._sample_role("loop_choir_pad") is None


def test_list_loops_missing_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(music_samples, "SAMPLES_DIR", tmp_path / "missing")
    assert list_loops("train") == [] and list_loops("test") == []
    with pytest.raises(ValueError):
        list_loops("dev")


@needs_synth
def test_no_samples_folder_gives_midi_only(monkeypatch, tmp_path):
    monkeypatch.setattr(music_samples, "SAMPLES_DIR", tmp_path / "missing")
    p = synth_music(_seed_of_kind("loop", "train"), 2.0)
    assert p.meta["kind"] == "midi" and p.meta["loops"] == []
    assert _min_window_rms(p.audio) >= 0.01


def test_resampler_keeps_passband_removes_alias():
    t = np.arange(44100) / 44100
    low = music_samples._resample_fft(np.sin(2 * np.pi * 1000 * t).astype(np.float32), 16000)
    high = music_samples._resample_fft(np.sin(2 * np.pi * 10000 * t).astype(np.float32), 16000)
    assert len(low) == 16000 and low.dtype == np.float32
    assert abs(float(np.sqrt(np.mean(low[2000:-2000] ** 2))) - 0.7071) < 0.01
    assert float(np.sqrt(np.mean(high[2000:-2000] ** 2))) < 0.01


def _worker(seed):
    p = synth_music(seed, 1.5)
    return hashlib.sha1(p.audio.tobytes()).hexdigest()


@needs_synth
def test_fork_workers_after_parent_used_torch():
    """torchaudio resampling hangs in forked children; the music source must not."""
    import torch
    torch.nn.functional.conv1d(torch.randn(1, 1, 40000), torch.randn(1, 1, 64))  # warm pool
    seed = _seed_of_kind("midi+loop", "train")
    ref = _worker(seed)
    pool = mp.get_context("fork").Pool(1)
    try:
        got = pool.map_async(_worker, [seed]).get(timeout=60)
    finally:
        pool.terminate()
        pool.join()
    assert got == [ref]
