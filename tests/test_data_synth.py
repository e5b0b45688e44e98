"""End-to-end corpus build: a tiny corpus, its invariants, determinism and resume."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jrsv_stream.data.manifest import read_manifest
from jrsv_stream.data.mixing import region_snr_db
from jrsv_stream.data.synth import CorpusConfigError, SynthConfig, build_corpus

HOURS = 0.02


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    stats = build_corpus(root, SynthConfig(hours=HOURS, seed=7), workers=2, progress=False)
    return root, stats


def _digest(root: Path) -> dict[str, str]:
    """sha1 of every manifest and audio file, by relative path."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and (p.suffix in (".flac", ".jsonl") or p.name == "item.json"):
            out[str(p.relative_to(root))] = hashlib.sha1(p.read_bytes()).hexdigest()
    return out


def test_manifests_are_valid_and_stems_sum_to_mixture(corpus):
    root, stats = corpus
    n = 0
    for split in ("train", "valid", "test"):
        items = read_manifest(root / f"{split}.jsonl")
        assert items, split
        for it in items:
            mix, sr = sf.read(root / it.mixture, dtype="float64")
            assert sr == 16000 and it.sample_rate == 16000
            assert abs(len(mix) / sr - it.extra["duration_s"]) < 1e-3 and 4.0 <= it.extra["duration_s"] <= 15.0
            stems = {k: sf.read(root / getattr(it, k), dtype="float64")[0] for k in ("speech", "singing", "music") if getattr(it, k)}
            assert "music" in stems
            assert np.max(np.abs(sum(stems.values()) - mix)) < 1e-4
            for v in ("speech", "singing"):
                present = getattr(it, v) is not None
                assert present == (it.extra["scenario"] in (v, "both"))
                assert (getattr(it, f"{v}_text") is not None) == present
                if present:
                    snr = region_snr_db(stems[v], stems["music"])
                    assert abs(snr - it.extra[f"{v}_snr_db"]) < 0.1 and -5.1 <= snr <= 5.1
                    words = getattr(it, f"{v}_words")
                    assert [w for w, _, _ in words] == getattr(it, f"{v}_text").split()
                    assert all(0 <= s <= e <= it.extra["duration_s"] + 1e-3 for _, s, e in words)
            n += 1
    assert n == sum(s["items"] for s in stats["splits"].values())
    assert stats["total_hours"] == pytest.approx(HOURS, rel=0.5)


def test_test_split_uses_only_unseen_voices(corpus):
    root, stats = corpus
    assert stats["test_voices_seen_in_train"] == {"speech": [], "singing": []}
    src = [json.loads(line) for line in (root / "sources" / "speech.jsonl").read_text().splitlines()]
    from jrsv_stream.data.tts import voices_for_split

    train_voices = {v.id for v in voices_for_split("train")}
    assert all(s["voice"] not in train_voices for s in src if s["split"] == "test")
    train_text = {s["text"] for s in src if s["split"] == "train"}
    assert not train_text & {s["text"] for s in src if s["split"] == "test"}


def test_interrupted_build_resumes_to_identical_corpus(corpus, tmp_path):
    """Kill a build part-way (SIGKILL, no clean-up), resume it: every manifest and audio
    file is byte-identical to the uninterrupted build with the same seed."""
    root, _ = corpus
    out = tmp_path / "resumed"
    cmd = [sys.executable, "-m", "jrsv_stream.cli", "data", "synth", "--out", str(out), "--hours", str(HOURS),
           "--seed", "7", "--workers", "2", "--quiet"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("sources/*/*/*.json"))) < 4:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "train.jsonl").exists(), "the build finished before it could be interrupted"
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert _digest(out) == _digest(root)


def test_one_split_alone_is_the_whole_builds_split(corpus, tmp_path):
    """``splits=("test",)`` (``data synth --splits test``, an evaluation machine) builds only
    the test split: the same sources, mixtures and manifest, byte for byte, as the whole
    build's, and nothing of the other splits."""
    root, _ = corpus
    out = tmp_path / "test_only"
    build_corpus(out, SynthConfig(hours=HOURS, seed=7), workers=2, progress=False, splits=("test",))
    want = {k: v for k, v in _digest(root).items() if "/test/" in k or k == "test.jsonl"}
    got = _digest(out)
    for kind in ("speech", "singing", "music"):  # its source indexes: the whole build's test rows
        got.pop(f"sources/{kind}.jsonl")
        rows = [json.loads(x) for x in (root / "sources" / f"{kind}.jsonl").read_text().splitlines()]
        own = [json.loads(x) for x in (out / "sources" / f"{kind}.jsonl").read_text().splitlines()]
        assert own == [r for r in rows if r["split"] == "test"] and own
    assert want and got == want
    assert not (out / "train.jsonl").exists() and not (out / "sources" / "speech" / "train").exists()
    with pytest.raises(ValueError, match="splits"):
        build_corpus(out, SynthConfig(hours=HOURS, seed=7), workers=1, progress=False, splits=("dev",))


def test_other_settings_in_the_same_folder_are_refused(corpus):
    root, _ = corpus
    with pytest.raises(CorpusConfigError, match="another --out"):
        build_corpus(root, SynthConfig(hours=HOURS, seed=8), workers=1, progress=False)


def test_extra_vocals_are_train_split_only_deterministic_and_feed_the_recognizer(corpus, tmp_path):
    from jrsv_stream.data.synth import VOCALS_FIRST_INDEX, build_vocal_sources
    from jrsv_stream.data.text import load_lyric_lines, load_sentences
    from jrsv_stream.data.singing import singers_for_split
    from jrsv_stream.data.tts import voices_for_split
    from jrsv_stream.train.asr_data import read_utterances

    hours = {"speech": 0.004, "singing": 0.004}
    res = build_vocal_sources(tmp_path / "v", hours, seed=3, workers=2, progress=False)
    assert res["hours"]["speech"] > 0.002 and res["hours"]["singing"] > 0.002
    rows = {k: [json.loads(x) for x in (tmp_path / "v" / "sources" / f"{k}.jsonl").read_text().splitlines()]
            for k in ("speech", "singing")}
    assert len(rows["speech"]) == 5 and len(rows["singing"]) + res["failed"]["singing"] == 4
    # train split only: train texts and train voices, ids that never collide with a corpus's
    train_text = {" ".join(s.words) for s in load_sentences()["train"]}
    train_lines = {" ".join(x.words) for x in load_lyric_lines()["train"]}
    train_voices = {v.id for v in voices_for_split("train")}
    for r in rows["speech"]:
        assert r["split"] == "train" and r["text"] in train_text and r["voice"] in train_voices
        assert int(r["id"].rsplit("-", 1)[1]) >= VOCALS_FIRST_INDEX
    for r in rows["singing"]:
        assert r["split"] == "train" and r["voice"] in set(singers_for_split("train"))
        words = r["text"].split()
        # one or two lyric lines of the train split
        assert any(" ".join(words[:i]) in train_lines and (i == len(words) or " ".join(words[i:]) in train_lines)
                   for i in range(1, len(words) + 1))
    # the same settings rebuild the same audio (here through the command line, `jrsv-stream
    # data vocals`); other seeds in the same folder are refused
    from jrsv_stream.cli import main

    assert main(["data", "vocals", "--out", str(tmp_path / "w"), "--speech-hours", "0.004", "--singing-hours", "0.004",
                 "--seed", "3", "--workers", "1", "--quiet"]) == 0
    assert _digest(tmp_path / "v") == _digest(tmp_path / "w")
    with pytest.raises(CorpusConfigError, match="another --out"):
        build_vocal_sources(tmp_path / "v", hours, seed=4, workers=1, progress=False)
    # a recognizer config lists the folder under data.extra_corpora: its utterances load
    utts = read_utterances(tmp_path / "v", "train", ("speech", "singing"))
    assert len(utts) == len(rows["speech"]) + len(rows["singing"])
    assert all(Path(u.path).is_file() for u in utts)
