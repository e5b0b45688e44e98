"""Separator quality on a manifest (the model card's numbers): SI-SDRi per source overall and
per SNR bucket (+5/0/-5 dB), activity AUROC/F1, latency and size.

    .venv/bin/python bench/separator_eval.py --model models/separator --manifest data/corpus/test.jsonl \
        --json bench/results/separator_eval.json

``--sets real_p5 real_0 real_m5 [--per-set 30]``: instead of a manifest, the real-voices
eval's items (``bench/real_voices_eval.py``: real talk over corpus test music, the same
items its WER figures use), scored against the real speech and music stems.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import device_name, git_commit  # noqa: E402
from jrsv_stream.train.separator import evaluate_separator  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/separator")
    ap.add_argument("--manifest", default="data/corpus/test.jsonl")
    ap.add_argument("--max-items", type=int, default=None)
    ap.add_argument("--sets", nargs="+", default=None, help="real-voices eval sets instead of --manifest "
                                                          "(real_clean is not a mixture: real_p5 real_0 real_m5)")
    ap.add_argument("--per-set", type=int, default=30)
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    manifest = a.manifest
    if a.sets:
        import tempfile

        from bench.real_voices_eval import set_manifest

        tmp = Path(tempfile.mkdtemp(prefix="sep-eval-"))
        rows = [set_manifest(s, Path("data/real_voices"), Path("data/corpus"), a.per_set, tmp).read_text()
                for s in a.sets]
        manifest = tmp / "sets.jsonl"
        manifest.write_text("".join(rows))
    res = evaluate_separator(a.model, manifest, "cpu", a.max_items)
    if a.sets:
        res["sets"], res["per_set"] = a.sets, a.per_set
    res = {"benchmark": "separator_eval", "device": device_name("cpu"), "commit": git_commit(), **res}
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=1, default=float))
    print(json.dumps(res, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
