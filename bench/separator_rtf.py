"""Real-time factor of the separator's streaming path (chunked ``step``), per stream.

    .venv/bin/python bench/separator_rtf.py                                 # both configs, CPU, 1 thread
    .venv/bin/python bench/separator_rtf.py --model models/separator        # a trained model
    .venv/bin/python bench/separator_rtf.py --device cuda --threads 0       # GPU when lent

For every model, chunk size and batch size B, B streams of ``--seconds`` of audio go
through ``step`` chunk by chunk (after a warm-up); ``rtf_per_stream = wall time / (B *
audio seconds)`` and ``rtf_batch = wall time / audio seconds`` (must stay < 1 for B live
streams). The best of ``--repeats`` runs is kept (the machine may be shared), and
``cpu_rtf_per_stream`` uses this process's CPU time instead of wall time (with one thread
it is the cost on one core, less sensitive to other load on a shared machine); per-chunk
compute latency p50/p95 (wall) is reported for every batch size. Writes JSON (device, commit, configs,
results) and a PNG next to it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import device_name, git_commit  # noqa: E402
from jrsv_stream import SAMPLE_RATE  # noqa: E402
from jrsv_stream.nn.separator import build_separator, count_parameters, load_separator  # noqa: E402
from jrsv_stream.train.separator import load_train_config  # noqa: E402


@torch.inference_mode()
def measure(model, batch: int, chunk: int, seconds: float, dev: torch.device, repeats: int) -> dict:
    n_chunks = max(1, int(seconds * SAMPLE_RATE) // chunk)
    x = torch.randn(batch, n_chunks * chunk, device=dev) * 0.1
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    state = model.init_state(batch, dev)
    for a in range(0, min(10, n_chunks) * chunk, chunk):  # warm-up
        _, state = model.step(x[:, a:a + chunk], state)
    best, best_cpu, lat = float("inf"), float("inf"), []
    for _ in range(repeats):
        state = model.init_state(batch, dev)
        per = []
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        for a in range(0, n_chunks * chunk, chunk):
            t1 = time.perf_counter()
            _, state = model.step(x[:, a:a + chunk], state)
            sync()
            per.append(time.perf_counter() - t1)
        el, cpu = time.perf_counter() - t0, time.process_time() - c0
        best_cpu = min(best_cpu, cpu)
        if el < best:
            best, lat = el, per
    audio_s = n_chunks * chunk / SAMPLE_RATE
    return {"rtf_per_stream": best / (audio_s * batch), "rtf_batch": best / audio_s, "audio_s": audio_s,
            "cpu_rtf_per_stream": best_cpu / (audio_s * batch),
            "chunk_compute_ms_p50": 1000 * float(np.percentile(lat, 50)),
            "chunk_compute_ms_p95": 1000 * float(np.percentile(lat, 95))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="*", default=["configs/separator_stft.yaml", "configs/separator_convtasnet.yaml"],
                   help="training configs whose model is measured (random weights: cost does not depend on them)")
    p.add_argument("--model", action="append", default=[], help="trained model folder(s) to measure as well")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--chunk-ms", type=float, nargs="+", default=[0.0, 40.0],
                   help="chunk sizes; 0 means one hop; others are rounded up to whole hops")
    p.add_argument("--seconds", type=float, default=8.0, help="audio per stream and measurement")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch default)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--out", default="bench/results/separator_rtf.json")
    a = p.parse_args(argv)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    models = []
    for c in a.configs:
        cfg = load_train_config(ROOT / c if not Path(c).is_absolute() else c)
        models.append((c, cfg.model, build_separator(cfg.model)))
    for d in a.model:
        m, cfg, _ = load_separator(d)
        models.append((d, cfg, m))
    results = []
    for name, mcfg, model in models:
        model = model.to(dev).eval()
        hop = model.hop_samples
        for cms in a.chunk_ms:
            chunk = hop if cms <= 0 else -(-int(round(cms * SAMPLE_RATE / 1000)) // hop) * hop
            for b in a.batches:
                r = measure(model, b, chunk, a.seconds, dev, a.repeats)
                row = {"model": name, "arch": mcfg.arch, "parameters": count_parameters(model),
                       "algorithmic_latency_ms": model.algorithmic_latency_ms, "hop_ms": 1000 * hop / SAMPLE_RATE,
                       "chunk_ms": 1000 * chunk / SAMPLE_RATE, "batch": b, **{k: round(v, 5) for k, v in r.items()}}
                results.append(row)
                print(json.dumps(row), flush=True)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"bench": "separator_rtf", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "device": device_name(dev), "device_type": dev.type, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "commit": git_commit(), "seconds_per_stream": a.seconds, "repeats": a.repeats,
              "configs": {name: __import__("dataclasses").asdict(mcfg) for name, mcfg, _ in models},
              "results": results}
    out.write_text(json.dumps(report, indent=1))
    _plot(report, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    keys = sorted({(r["model"], r["chunk_ms"]) for r in report["results"]})
    for model, chunk in keys:
        rows = sorted((r for r in report["results"] if r["model"] == model and r["chunk_ms"] == chunk),
                      key=lambda r: r["batch"])
        lab = f"{Path(model).stem} ({rows[0]['arch']}, {rows[0]['parameters'] / 1e6:.2f} M), chunk {chunk:g} ms"
        ax.plot([r["batch"] for r in rows], [r["rtf_per_stream"] for r in rows], marker="o", label=lab)
    ax.axhline(0.1, color="gray", ls="--", lw=1, label="target RTF 0.1")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("streams per batch")
    ax.set_ylabel("RTF per stream (wall clock, best run)")
    ax.set_title(f"separator streaming RTF, {report['device']} ({report['threads']} thread(s))", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
