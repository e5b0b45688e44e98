"""The CTC head trainer's data (``jrsv_stream.train.whisper_ctc``): the separated tracks it
trains on are what the live pipeline hears (the shipped separator's streaming path at its
calibrated gain), one item per voice with a text, on the right track; clean stems likewise."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf
import torch

from jrsv_stream.nn.pipeline import separator_track_gain
from jrsv_stream.nn.separator import load_separator
from jrsv_stream.separate import separate_stream
from jrsv_stream.train.whisper_ctc import manifest_rows, separated_items, stem_items

SEPARATOR = "models/separator_real"


def _manifest(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i, (speech, singing) in enumerate((("hello there", None), ("say it", "la la la"), (None, None))):
        d = tmp_path / f"m{i}"
        d.mkdir()
        x = (0.1 * rng.standard_normal(16000)).astype(np.float32)
        sf.write(d / "mixture.flac", x, 16000)
        sf.write(d / "speech.flac", 0.5 * x, 16000)
        rows.append({"id": f"m{i}", "mixture": f"m{i}/mixture.flac", "speech": f"m{i}/speech.flac" if speech else None,
                     "singing": f"m{i}/speech.flac" if singing else None, "speech_text": speech, "singing_text": singing})
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_separated_items_are_the_pipelines_tracks_one_per_voice_with_a_text(tmp_path):
    torch.set_num_threads(1)
    _manifest(tmp_path)
    rows = manifest_rows(tmp_path / "test.jsonl")
    items = separated_items(tmp_path, rows, SEPARATOR)
    assert [(k, t, tr) for k, _, t, tr in items] == [("sep_m0_0", "hello there", 0), ("sep_m1_0", "say it", 0),
                                                     ("sep_m1_1", "la la la", 1)]
    sep = load_separator(SEPARATOR)[0].eval()
    gain = separator_track_gain(SEPARATOR)
    assert gain != 1.0  # the shipped separator is calibrated: the gain must be applied
    with torch.no_grad():
        srcs = separate_stream(sep, sf.read(tmp_path / "m1/mixture.flac", dtype="float32")[0])[0]
    np.testing.assert_allclose(items[1][1](), srcs[0] * gain, atol=1e-6)
    np.testing.assert_allclose(items[2][1](), srcs[1] * gain, atol=1e-6)
    assert not np.allclose(items[1][1](), items[2][1]())
    # a seeded draw of n rows: the same rows every time, n of them
    assert [r["id"] for r in manifest_rows(tmp_path / "test.jsonl", 2, seed=3)] == \
        [r["id"] for r in manifest_rows(tmp_path / "test.jsonl", 2, seed=3)]
    assert len(manifest_rows(tmp_path / "test.jsonl", 2)) == 2


def test_stem_items_are_the_clean_voices(tmp_path):
    _manifest(tmp_path)
    items = stem_items(tmp_path, manifest_rows(tmp_path / "test.jsonl"))
    assert [(k, t, tr) for k, _, t, tr in items] == [("stem_m0_0", "hello there", 0), ("stem_m1_0", "say it", 0),
                                                     ("stem_m1_1", "la la la", 1)]
    np.testing.assert_allclose(items[0][1](), sf.read(tmp_path / "m0/speech.flac", dtype="float32")[0], atol=1e-6)
