"""Tune the LM fusion weight and token bonus of a whole pipeline on its own outputs.

The recognizer's ``lm.npz`` carries a weight and a per-token bonus tuned on clean valid
stems (``jrsv-stream train lm``). A pipeline decodes separated tracks, whose posteriors are
flatter and noisier, so its best fusion point can differ. This runs ``jrsv-stream eval``'s
streaming path (:func:`jrsv_stream.eval.system_eval.evaluate_system`) over a grid of
(weight, bonus) on a validation manifest, scores each point by the mean CER of the two
tracks, writes JSON and a heat-map plot, and with ``--save`` stores the best point in the
pipeline's ``asr/lm.npz``.

    .venv/bin/python bench/fusion_grid.py --pipeline models/jrsv --manifest data/corpus/valid.jsonl \
        --max-items 96 --weights 0.5 0.8 1.1 --bonuses 2.5 3.5 4.5 --json bench/results/fusion_grid_jrsv.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import device_name, git_commit  # noqa: E402


def _score(res: dict) -> dict:
    t = res["tracks"]
    row = {f"{k}_{m}": t[k][m] for k in ("speech", "lyrics") for m in ("wer", "cer")}
    row["mean_cer"] = round((row["speech_cer"] + row["lyrics_cer"]) / 2, 3)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pipeline", default="models/jrsv", help="folder holding separator/ and asr/ (asr/lm.npz needed)")
    p.add_argument("--manifest", default="data/corpus/valid.jsonl", help="tuning data (never the test split)")
    p.add_argument("--max-items", type=int, default=96)
    p.add_argument("--chunk-ms", type=float, default=320.0)
    p.add_argument("--weights", type=float, nargs="+", default=[0.5, 0.8, 1.1])
    p.add_argument("--bonuses", type=float, nargs="+", default=[2.5, 3.5, 4.5])
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's choice)")
    p.add_argument("--json", default="bench/results/fusion_grid.json")
    p.add_argument("--save", action="store_true", help="write the best point into PIPELINE/asr/lm.npz")
    a = p.parse_args(argv)
    if "test" in Path(a.manifest).name:
        p.error("tune on a validation manifest, not the test split")

    from jrsv_stream.decode.ngram_lm import TokenNgramLM
    from jrsv_stream.eval.system_eval import SystemEvalConfig, evaluate_system

    lm_path = Path(a.pipeline) / "asr" / "lm.npz"
    if not lm_path.is_file():
        p.error(f"{lm_path} not found: nothing to tune")
    stored = TokenNgramLM.load(lm_path)
    rows = []
    t0 = time.perf_counter()
    for w in a.weights:
        for b in a.bonuses:
            cfg = SystemEvalConfig(pipeline=a.pipeline, chunk_ms=a.chunk_ms, max_items=a.max_items, threads=a.threads,
                                   lm_weight=w, lm_bonus=b, label=f"w{w}_b{b}",
                                   score_separation=False)
            res = evaluate_system(a.manifest, cfg)
            if res["failed_items"]:
                raise RuntimeError(f"items failed at weight {w} bonus {b}: {res['failed_items'][:3]}")
            rows.append({"weight": w, "token_bonus": b, **_score(res)})
            print(json.dumps(rows[-1]), flush=True)
    best = min(rows, key=lambda r: r["mean_cer"])
    out = {"pipeline": a.pipeline, "manifest": a.manifest, "max_items": a.max_items, "chunk_ms": a.chunk_ms,
           "stored": {"weight": stored.weight, "token_bonus": stored.token_bonus}, "grid": rows, "best": best,
           "seconds": round(time.perf_counter() - t0, 1), "commit": git_commit(), "device": device_name("cpu")}
    path = Path(a.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    _plot(rows, a.weights, a.bonuses, path.with_suffix(".png"), a.pipeline)
    print(f"best: weight {best['weight']} bonus {best['token_bonus']}: mean CER {best['mean_cer']} "
          f"(speech {best['speech_cer']}, lyrics {best['lyrics_cer']}); stored: {stored.weight} / {stored.token_bonus}")
    if a.save:
        stored.weight, stored.token_bonus = float(best["weight"]), float(best["token_bonus"])
        stored.save(lm_path)
        print(f"saved into {lm_path}")
    return 0


def _plot(rows: list[dict], weights: list[float], bonuses: list[float], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    grid = np.array([[next(r["mean_cer"] for r in rows if r["weight"] == w and r["token_bonus"] == b)
                      for b in bonuses] for w in weights])
    fig, ax = plt.subplots(figsize=(5, 4))
    im = ax.imshow(grid, cmap="viridis_r")
    ax.set_xticks(range(len(bonuses)), [str(b) for b in bonuses])
    ax.set_yticks(range(len(weights)), [str(w) for w in weights])
    ax.set_xlabel("token bonus")
    ax.set_ylabel("LM weight")
    for i in range(len(weights)):
        for j in range(len(bonuses)):
            ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", color="w")
    fig.colorbar(im, label="mean CER % (speech, lyrics)")
    ax.set_title(f"LM fusion grid: {title}")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
