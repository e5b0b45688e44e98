"""Corpus statistics: hours per split and scenario, voices, SNR histograms, disk use."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from jrsv_stream.data.manifest import read_manifest
from jrsv_stream.data.mixing import SNR_BUCKETS_DB

SNR_BINS_DB = np.arange(-5.0, 5.0 + 1e-9, 1.0)


def _du_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def corpus_stats(root: str | Path) -> dict:
    """Statistics of the manifests ``root/{train,valid,test}.jsonl`` that exist."""
    root = Path(root)
    out: dict = {"splits": {}}
    total_s = 0.0
    voices_by_split: dict[str, dict[str, set]] = {}
    for split in ("train", "valid", "test"):
        path = root / f"{split}.jsonl"
        if not path.is_file():
            continue
        items = read_manifest(path)
        hours = Counter()
        snr = {"speech": [], "singing": []}
        voices = {"speech": set(), "singing": set()}
        words = {"speech": 0, "singing": 0}
        for it in items:
            d = float(it.extra.get("duration_s", 0.0))
            hours[it.extra.get("scenario", "unknown")] += d / 3600
            total_s += d
            for v in ("speech", "singing"):
                if it.extra.get(f"{v}_snr_db") is not None:
                    snr[v].append(float(it.extra[f"{v}_snr_db"]))
                voices[v].update(it.extra.get(f"{v}_voices", []))
                words[v] += len(getattr(it, f"{v}_words") or [])
        voices_by_split[split] = voices
        out["splits"][split] = {
            "items": len(items),
            "hours": round(sum(hours.values()), 4),
            "hours_per_scenario": {k: round(v, 4) for k, v in sorted(hours.items())},
            "words": words,
            "voices": {v: len(s) for v, s in voices.items()},
            "snr_histogram": {v: np.histogram(x, bins=SNR_BINS_DB)[0].tolist() for v, x in snr.items()},
            "snr_buckets": {v: {str(int(b)): int(sum(1 for s in x if min(SNR_BUCKETS_DB, key=lambda c: abs(c - s)) == b))
                                for b in SNR_BUCKETS_DB} for v, x in snr.items()},
        }
    out["snr_histogram_bins_db"] = SNR_BINS_DB.tolist()
    out["total_hours"] = round(total_s / 3600, 4)
    if "train" in voices_by_split and "test" in voices_by_split:
        out["test_voices_seen_in_train"] = {
            v: sorted(voices_by_split["test"][v] & voices_by_split["train"][v]) for v in ("speech", "singing")}
        out["test_voices"] = {v: sorted(voices_by_split["test"][v]) for v in ("speech", "singing")}
    mix_b, src_b = _du_bytes(root / "mixtures"), _du_bytes(root / "sources")
    out["disk_mb"] = {"mixtures": round(mix_b / 2**20, 1), "sources": round(src_b / 2**20, 1)}
    if total_s > 0:
        out["disk_mb_per_hour"] = round((mix_b + src_b) / 2**20 / (total_s / 3600), 1)
    return out
