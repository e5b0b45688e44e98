"""Melody generation and WORLD re-pitching of TTS speech into singing."""

from __future__ import annotations

import multiprocessing
import subprocess
from pathlib import Path

import numpy as np
import pytest
import pyworld as pw
import soundfile as sf

from jrsv_stream.data.melody import Note, WordNotes, beats_to_seconds, count_syllables, make_melody
from jrsv_stream.data.world_sing import sing_with_world
from tests.prereq import needs, require_tools

LYRICS = "the night is dark and full of stars, I walk alone beneath the silver moon".split()
TEMPO = 100.0
KEY, LOW, HIGH = 60, 55, 72

needs_espeak = needs("espeak-ng")


# --- melody ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "word,allowed",
    [
        ("cat", {1}),
        ("water", {2}),
        ("beautiful", {3}),
        ("little", {2}),
        ("fire", {1, 2}),
        ("the", {1}),
        ("evening", {2, 3}),
        ("stars,", {1}),
        ("alone", {2}),
        ("silver", {2}),
        ("loved", {1}),
        ("wanted", {2}),
        ("places", {2}),
        ("tomorrow", {3}),
        ("I", {1}),
        ("", {1}),
    ],
)
def test_count_syllables(word, allowed):
    assert count_syllables(word) in allowed


def _melody(seed: int, words=LYRICS) -> list[WordNotes]:
    return make_melody(np.random.default_rng(seed), words, [count_syllables(w) for w in words], KEY, LOW, HIGH)


def test_make_melody_structure():
    for seed in range(20):
        mel = _melody(seed)
        assert [wn.word for wn in mel] == LYRICS
        for wn, w in zip(mel, LYRICS):
            assert len(wn.notes) == count_syllables(w)
            assert wn.rest_after_beats >= 0
            for n in wn.notes:
                assert isinstance(n, Note)
                assert LOW <= n.midi <= HIGH
                assert n.beats > 0
        # a rest after the comma, and the line ends on a long note
        assert mel[LYRICS.index("stars,")].rest_after_beats > 0
        assert 1.0 <= mel[-1].notes[-1].beats <= 3.0


def test_make_melody_deterministic_and_varied():
    assert _melody(7) == _melody(7)
    assert len({tuple(n.midi for wn in _melody(s) for n in wn.notes) for s in range(10)}) > 5


def test_make_melody_narrow_range_and_errors():
    mel = make_melody(np.random.default_rng(0), ["la"] * 10, [1] * 10, 62, 64, 65)
    assert all(64 <= n.midi <= 65 for wn in mel for n in wn.notes)
    with pytest.raises(ValueError):
        make_melody(np.random.default_rng(0), ["a", "b"], [1], 60, 55, 72)
    with pytest.raises(ValueError):
        make_melody(np.random.default_rng(0), ["a"], [0], 60, 55, 72)
    assert beats_to_seconds(2.0, 120.0) == pytest.approx(1.0)


# --- WORLD singing --------------------------------------------------------------------------


def _espeak_words(words: list[str], tmp: Path) -> tuple[np.ndarray, int, list[tuple[str, float, float]]]:
    """Speak each word with espeak-ng, trim, concatenate with 30 ms gaps; word timings."""
    parts, timings, t, fs = [], [], 0.0, 0
    for i, w in enumerate(words):
        p = tmp / f"w{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(p), w], check=True, capture_output=True)
        x, fs = sf.read(str(p), dtype="float32")
        nz = np.flatnonzero(np.abs(x) > 1e-3)
        x = x[nz[0] : nz[-1] + 1]
        gap = np.zeros(int(0.03 * fs), dtype=np.float32)
        timings.append((w, t, t + len(x) / fs))
        parts += [x, gap]
        t += (len(x) + len(gap)) / fs
    return np.concatenate(parts), fs, timings


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    require_tools("espeak-ng")
    return _espeak_words(LYRICS, tmp_path_factory.mktemp("espeak"))


@pytest.fixture(scope="module")
def sung(speech):
    x, fs, timings = speech
    mel = _melody(3)
    y, out_t = sing_with_world(x, fs, timings, mel, TEMPO, np.random.default_rng(11))
    return x, fs, timings, mel, y, out_t


def _note_targets(t: np.ndarray, out_t, mel) -> np.ndarray:
    """Target MIDI pitch at times ``t`` (0 outside notes)."""
    tgt = np.zeros_like(t)
    for (_, s, _), wn in zip(out_t, mel):
        c = s
        for n in wn.notes:
            d = beats_to_seconds(n.beats, TEMPO)
            tgt[(t >= c) & (t < c + d)] = n.midi
            c += d
    return tgt


@needs_espeak
def test_sung_pitch_follows_melody(sung):
    _, fs, _, mel, y, out_t = sung
    assert y.dtype == np.float32 and y.ndim == 1
    assert np.all(np.isfinite(y))
    assert np.max(np.abs(y)) == pytest.approx(0.5, abs=1e-3)
    y64 = y.astype(np.float64)
    f0, t = pw.dio(y64, fs, f0_floor=60.0, f0_ceil=700.0, frame_period=5.0)
    f0 = pw.stonemask(y64, f0, t, fs)
    tgt = _note_targets(t, out_t, mel)
    voiced = f0 > 0
    assert voiced.sum() > 0.3 * len(f0)  # it is sung, mostly voiced
    assert np.mean(tgt[voiced] > 0) > 0.97  # voiced frames fall inside the sung words
    m = voiced & (tgt > 0)
    err = np.abs(12.0 * np.log2(f0[m] / 440.0) + 69.0 - tgt[m])
    assert np.mean(err < 0.5) >= 0.8


@needs_espeak
def test_sung_word_timings(sung):
    _, fs, _, mel, y, out_t = sung
    dur = len(y) / fs
    assert [w for w, _, _ in out_t] == LYRICS
    prev_end = 0.0
    for (w, s, e), wn in zip(out_t, mel):
        assert prev_end <= s < e <= dur
        expected = beats_to_seconds(sum(n.beats for n in wn.notes), TEMPO)
        assert abs((e - s) - expected) <= 0.06
        prev_end = e
    # rests are silent, and each rest lasts its beats
    for (_, _, e), (s_next, _), wn in zip(out_t, [(s, e) for _, s, e in out_t[1:]], mel):
        gap = s_next - e
        assert abs(gap - beats_to_seconds(wn.rest_after_beats, TEMPO)) <= 0.01
        if gap > 0.05:
            seg = y[int((e + 0.02) * fs) : int((s_next - 0.01) * fs)]
            assert np.max(np.abs(seg)) < 1e-3


@needs_espeak
def test_sung_deterministic(sung):
    x, fs, timings, mel, y, out_t = sung
    y2, out_t2 = sing_with_world(x, fs, timings, mel, TEMPO, np.random.default_rng(11))
    assert np.array_equal(y, y2)
    assert out_t == out_t2
    y3, _ = sing_with_world(x, fs, timings, mel, TEMPO, np.random.default_rng(12))
    assert not np.array_equal(y, y3)


def _sing_job(args):
    x, fs, timings, mel = args
    return sing_with_world(x, fs, timings, mel, TEMPO, np.random.default_rng(5))


@needs_espeak
def test_sing_in_forked_worker(speech):
    x, fs, timings = speech
    k = 3  # first three words only: keep it short
    x = x[: int(timings[k - 1][2] * fs) + 1]
    job = (x, fs, timings[:k], _melody(1)[:k])
    with multiprocessing.get_context("fork").Pool(1) as pool:
        y_child, t_child = pool.map(_sing_job, [job])[0]
    y, t = _sing_job(job)
    assert np.array_equal(y, y_child)
    assert t == t_child


def test_sing_rejects_mismatched_counts():
    x = np.zeros(22050, dtype=np.float32)
    mel = [WordNotes("la", (Note(60, 1.0),), 0.0)]
    with pytest.raises(ValueError):
        sing_with_world(x, 22050, [("la", 0.0, 0.5), ("la", 0.5, 1.0)], mel, TEMPO, np.random.default_rng(0))
