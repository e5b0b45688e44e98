"""Calibrate the separator's output level for the recognizer.

The separator is trained with the scale-invariant SI-SDR, so the level of what it outputs
is arbitrary (the shipped model's vocals come out ~26 dB below the true stems), while the
recognizer, trained on clean vocals at their natural level with a fixed feature
normalization, needs that level back. The gain is a constant (its spread over items is
~1.5 dB, inside the recognizer's +-6 dB gain augmentation), so it is measured once on valid
items and stored beside the separator; :class:`jrsv_stream.nn.pipeline.JRSVPipeline`
applies it to both vocal tracks.

    python -m jrsv_stream.eval.calibrate --separator models/separator --manifest data/corpus/valid.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

VOCALS = (("speech", 0), ("singing", 1))


def calibrate_separator(separator_dir: str | Path, manifest: str | Path, max_items: int = 80) -> dict:
    """Mean over active vocal stems of ``20 log10(rms(true) / rms(separated))`` (dB);
    writes ``separator_dir/calibration.json`` and returns it."""
    from jrsv_stream.audio.io import load_audio
    from jrsv_stream.data.manifest import read_manifest
    from jrsv_stream.nn.pipeline import CALIBRATION_FILE
    from jrsv_stream.nn.separator import load_separator

    t0 = time.time()
    sep, _, _ = load_separator(separator_dir, "cpu")
    root = Path(manifest).parent
    per: dict[str, list[float]] = {name: [] for name, _ in VOCALS}
    items = read_manifest(manifest)[:max_items]
    for item in items:
        d = item.to_json()
        mix = load_audio(root / d["mixture"])
        mix = mix[: len(mix) // sep.hop_samples * sep.hop_samples]
        with torch.no_grad():
            out = sep(torch.from_numpy(mix)[None]).sources[0].numpy()
        for name, idx in VOCALS:
            if not d.get(f"{name}_text"):
                continue
            true = load_audio(root / d[name])[: len(mix)]
            est = out[idx, : len(true)]
            r_true, r_est = float(np.sqrt(np.mean(true ** 2))), float(np.sqrt(np.mean(est ** 2)))
            if r_true > 1e-5 and r_est > 1e-9:
                per[name].append(20.0 * np.log10(r_true / r_est))
    values = [v for vs in per.values() for v in vs]
    if not values:
        raise ValueError(f"{manifest}: no item with an active vocal stem to calibrate on")
    res = {"output_gain_db": round(float(np.mean(values)), 3),
           "per_track_db": {k: {"mean": round(float(np.mean(v)), 3), "std": round(float(np.std(v)), 3), "n": len(v)}
                            for k, v in per.items() if v},
           "manifest": str(manifest), "items": len(items),
           "seconds": round(time.time() - t0, 1)}
    out_path = Path(separator_dir) / CALIBRATION_FILE
    tmp = out_path.with_name(out_path.name + ".part")
    tmp.write_text(json.dumps(res, indent=1))
    tmp.replace(out_path)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--separator", default="models/separator")
    ap.add_argument("--manifest", default="data/corpus/valid.jsonl")
    ap.add_argument("--max-items", type=int, default=80)
    a = ap.parse_args(argv)
    print(json.dumps(calibrate_separator(a.separator, a.manifest, a.max_items), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
