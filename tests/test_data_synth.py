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


def test_other_settings_in_the_same_folder_are_refused(corpus):
    root, _ = corpus
    with pytest.raises(CorpusConfigError, match="another --out"):
        build_corpus(root, SynthConfig(hours=HOURS, seed=8), workers=1, progress=False)
