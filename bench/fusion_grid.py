"""Tune the LM fusion weight and token bonus of a whole pipeline on its own outputs.

The recognizer's ``lm.npz`` carries a weight and a per-token bonus tuned on clean valid
stems (``jrsv-stream train lm``). A pipeline decodes separated tracks, whose posteriors are
flatter and noisier, so its best fusion point can differ. This runs ``jrsv-stream eval``'s
streaming path (:func:`jrsv_stream.eval.system_eval.evaluate_system`) over a grid of
(weight, bonus) on a validation manifest, scores each point by the mean of CER and WER over
the two tracks (``--criterion cer``: CER alone, which favours points that emit more
characters at the cost of whole words), writes JSON and a heat-map plot, and with ``--save`` stores the best point in the
pipeline's ``asr/lm_fusion.json`` (read by :func:`jrsv_stream.decode.ngram_lm.load_model_lm`
over the point stored in ``lm.npz``).

    .venv/bin/python bench/fusion_grid.py --pipeline models/jrsv --manifest data/corpus/valid.jsonl \
        --max-items 96 --weights 0.5 0.8 1.1 --bonuses 2.5 3.5 4.5 --json bench/results/fusion_grid_jrsv.json
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import device_name, git_commit  # noqa: E402


class ReplayPipeline:
    """Runs a pipeline once and replays its outputs: only decoding depends on the fusion
    point, so every grid point after the first costs the decoder alone.

    The first pass records each step's outputs in call order; :meth:`rewind` switches to
    replaying them. The eval runs one stream at a time (``streams=1``), so the calls come
    in the same order every pass; each replayed step checks that its input audio is the
    recorded one. Everything else (tokenizer, LM, attention rescoring) is the pipeline's.
    """

    def __init__(self, inner):
        self.inner = inner
        self.tape: list[tuple[bytes, object]] = []
        self.pos: int | None = None  # None: recording

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def to(self, device):
        self.inner.to(device)
        return self

    def eval(self):
        self.inner.eval()
        return self

    def init_state(self, batch, device="cpu"):
        return self.inner.init_state(batch, device)

    def rewind(self) -> None:
        if self.pos is not None and self.pos != len(self.tape):
            raise RuntimeError(f"replay used {self.pos} of {len(self.tape)} recorded steps")
        self.pos = 0

    def step(self, audio, state):
        key = hashlib.blake2b(audio.detach().cpu().numpy().tobytes(), digest_size=16).digest()
        if self.pos is None:
            out, new_state = self.inner.step(audio, state)
            self.tape.append((key, out))
            return out, new_state
        if self.pos >= len(self.tape) or self.tape[self.pos][0] != key:
            raise RuntimeError(f"replay step {self.pos}: input differs from the recorded pass")
        out = self.tape[self.pos][1]
        self.pos += 1
        return out, state


def _score(res: dict) -> dict:
    t = res["tracks"]
    row = {f"{k}_{m}": t[k][m] for k in ("speech", "lyrics") for m in ("wer", "cer")}
    row["mean_cer"] = round((row["speech_cer"] + row["lyrics_cer"]) / 2, 3)
    row["mean_wer"] = round((row["speech_wer"] + row["lyrics_wer"]) / 2, 3)
    return row


CRITERIA = {  # lower is better
    "cer+wer": lambda r: (r["mean_cer"] + r["mean_wer"]) / 2,
    "cer": lambda r: r["mean_cer"],
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pipeline", default="models/jrsv", help="folder holding separator/ and asr/ (asr/lm.npz needed)")
    p.add_argument("--separator", default=None, help="separator folder or 'none' (default: PIPELINE/separator)")
    p.add_argument("--asr", default=None, help="recognizer folder (default: PIPELINE/asr)")
    p.add_argument("--manifest", default="data/corpus/valid.jsonl", help="tuning data (never the test split)")
    p.add_argument("--max-items", type=int, default=96)
    p.add_argument("--chunk-ms", type=float, default=320.0)
    p.add_argument("--weights", type=float, nargs="+", default=[0.5, 0.8, 1.1])
    p.add_argument("--bonuses", type=float, nargs="+", default=[2.5, 3.5, 4.5])
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's choice)")
    p.add_argument("--criterion", choices=sorted(CRITERIA), default="cer+wer",
                   help="what the best point minimizes (default: mean of CER and WER over both tracks)")
    p.add_argument("--json", default="bench/results/fusion_grid.json")
    p.add_argument("--from-json", nargs="+", help="no sweep: pick the best of these earlier outputs' grids (same pipeline "
                                                   "and manifest) and, with --save, store it")
    p.add_argument("--save", action="store_true", help="write the best point into the recognizer folder's lm_fusion.json")
    a = p.parse_args(argv)
    if "test" in Path(a.manifest).name:
        p.error("tune on a validation manifest, not the test split")

    from jrsv_stream.decode.ngram_lm import FUSION_FILE, TokenNgramLM
    from jrsv_stream.eval.system_eval import SystemEvalConfig, build_pipeline, evaluate_system

    lm_path = Path(a.asr or Path(a.pipeline) / "asr") / "lm.npz"
    if not lm_path.is_file():
        p.error(f"{lm_path} not found: nothing to tune")
    stored = TokenNgramLM.load(lm_path)  # the point in lm.npz itself (lm_fusion.json may override it)
    if a.from_json:
        grids = [json.loads(Path(f).read_text()) for f in a.from_json]
        if len({(g["pipeline"], g["manifest"], g["max_items"], g["chunk_ms"]) for g in grids}) != 1:
            p.error("--from-json files come from different pipelines, manifests, item counts or chunk sizes")
        rows = [r for g in grids for r in g["grid"]]
        best = min(rows, key=CRITERIA[a.criterion])
        print(f"best of {len(rows)} points by {a.criterion}: weight {best['weight']} bonus {best['token_bonus']}: "
              f"mean CER {best['mean_cer']}, mean WER {best['mean_wer']}")
        if a.save:
            save_fusion(lm_path.parent / FUSION_FILE, best, {**grids[0], "grid": rows}, a.criterion)
        return 0
    rows = []
    t0 = time.perf_counter()
    base = SystemEvalConfig(pipeline=a.pipeline, separator=a.separator, asr=a.asr, chunk_ms=a.chunk_ms,
                            max_items=a.max_items, threads=a.threads, streams=1, score_separation=False)
    pipeline, _ = build_pipeline(base)
    replay = ReplayPipeline(pipeline)
    for w in a.weights:
        for b in a.bonuses:
            pipeline.lm.weight, pipeline.lm.token_bonus = w, b
            res = evaluate_system(a.manifest, dataclasses.replace(base, label=f"w{w}_b{b}"), pipeline=replay)
            if res["failed_items"]:
                raise RuntimeError(f"items failed at weight {w} bonus {b}: {res['failed_items'][:3]}")
            replay.rewind()  # the first point recorded the network's outputs; the others replay them
            rows.append({"weight": w, "token_bonus": b, **_score(res)})
            print(json.dumps(rows[-1]), flush=True)
    best = min(rows, key=CRITERIA[a.criterion])
    out = {"criterion": a.criterion, "pipeline": a.pipeline, "separator": base.separator_path, "asr": base.asr_path,
           "manifest": a.manifest, "max_items": a.max_items, "chunk_ms": a.chunk_ms,
           "stored": {"weight": stored.weight, "token_bonus": stored.token_bonus}, "grid": rows, "best": best,
           "seconds": round(time.perf_counter() - t0, 1), "commit": git_commit(), "device": device_name("cpu")}
    path = Path(a.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    _plot(rows, a.weights, a.bonuses, path.with_suffix(".png"), a.pipeline)
    print(f"best by {a.criterion}: weight {best['weight']} bonus {best['token_bonus']}: mean CER {best['mean_cer']} "
          f"(speech {best['speech_cer']}, lyrics {best['lyrics_cer']}); stored: {stored.weight} / {stored.token_bonus}")
    if a.save:
        save_fusion(lm_path.parent / FUSION_FILE, best, out, a.criterion)
        print(f"saved into {lm_path.parent / FUSION_FILE}")
    return 0


def save_fusion(path: Path, best: dict, grid: dict, criterion: str) -> None:
    """The fusion point a pipeline decodes with, and where it came from."""
    path.write_text(json.dumps({
        "weight": best["weight"], "token_bonus": best["token_bonus"],
        "tuned_on": {"manifest": grid["manifest"], "max_items": grid["max_items"], "chunk_ms": grid["chunk_ms"],
                     "mean_cer": best["mean_cer"], "mean_wer": best["mean_wer"], "criterion": criterion},
        "lm_npz_point": grid["stored"]}, indent=1) + "\n")


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
