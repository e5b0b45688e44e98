"""Real-time factor of the recognizer's streaming path (features + encoder ``step`` + CTC
log-softmax), per stream and per track, and the cost of attention rescoring.

    .venv/bin/python bench/asr_rtf.py                                   # models/asr if present, else a random model of configs/asr_small.yaml
    .venv/bin/python bench/asr_rtf.py --model models/asr --json bench/results/asr_rtf.json
    .venv/bin/python bench/asr_rtf.py --device cuda --threads 0 --batches 1 16 64

For every chunk size (encoder frames of 40 ms: 4/8/16 = 160/320/640 ms), left context and
batch size B, B streams of ``--seconds`` of audio go through :meth:`ASRModel.step` chunk by
chunk after a warm-up; ``rtf_per_stream = wall time / (B * audio seconds)`` and
``rtf_batch = wall time / audio seconds``. The best of ``--repeats`` runs is kept (the
machine may be shared); per-chunk compute latency p50/p95/p99 is reported. Rescoring: one
batched :meth:`ASRModel.score` call for ``--nbest`` hypotheses of 20 tokens on 5 s of
encoder output. Writes JSON (device, commit, config, results) and a PNG next to it.
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
from jrsv_stream.nn.asr import ASRModel, dataclass_to_dict  # noqa: E402


def _load(model_dir: Path | None, config: Path) -> tuple[ASRModel, str]:
    if model_dir is not None and (model_dir / "asr.pt").is_file():
        return ASRModel.from_pretrained(model_dir), str(model_dir)
    from jrsv_stream.train.asr import load_config

    cfg = load_config(config)
    torch.manual_seed(0)
    return ASRModel(cfg.model).eval(), f"random init of {config}"


@torch.inference_mode()
def measure(model: ASRModel, batch: int, chunk_frames: int, left_chunks: int, seconds: float, dev: torch.device,
            repeats: int) -> dict:
    chunk = model.chunk_samples(chunk_frames)
    n_chunks = max(1, int(seconds * SAMPLE_RATE) // chunk)
    audio = torch.randn(batch, n_chunks * chunk, device=dev) * 0.1
    tracks = torch.arange(batch, device=dev) % 2  # both tracks in one batch (shared model)
    best_wall, best_lat = float("inf"), None
    for _ in range(repeats):
        st = model.init_state(batch, dev, tracks)
        for i in range(2):  # warm-up
            _, _, st = model.step(audio[:, i * chunk:(i + 1) * chunk], st, left_chunks)
        st = model.init_state(batch, dev, tracks)
        lat = []
        for i in range(n_chunks):
            t0 = time.perf_counter()
            logp, _, st = model.step(audio[:, i * chunk:(i + 1) * chunk], st, left_chunks)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            else:
                logp.cpu()
            lat.append(time.perf_counter() - t0)
        wall = float(np.sum(lat))
        if wall < best_wall:
            best_wall, best_lat = wall, np.asarray(lat)
    audio_s = n_chunks * chunk / SAMPLE_RATE
    return {"batch": batch, "chunk_frames": chunk_frames, "chunk_ms": chunk * 1000 // SAMPLE_RATE,
            "left_chunks": left_chunks, "audio_s": audio_s, "wall_s": best_wall,
            "rtf_batch": best_wall / audio_s, "rtf_per_stream": best_wall / (batch * audio_s),
            "chunk_latency_ms": {f"p{q}": float(np.percentile(best_lat, q) * 1000) for q in (50, 95, 99)}}


@torch.inference_mode()
def measure_rescoring(model: ASRModel, nbest: int, dev: torch.device, repeats: int) -> dict:
    wav = torch.randn(1, 5 * SAMPLE_RATE, device=dev) * 0.1
    enc, lens = model.encode(wav, torch.tensor([wav.shape[1]], device=dev))
    rng = np.random.default_rng(0)
    hyps = [[int(t) for t in rng.integers(3, model.vocab_size, 20)] for _ in range(nbest)]
    model.score(enc, lens, hyps)
    times = []
    for _ in range(max(3, repeats)):
        t0 = time.perf_counter()
        model.score(enc, lens, hyps)
        times.append(time.perf_counter() - t0)
    return {"nbest": nbest, "tokens": 20, "enc_frames": int(lens[0]), "ms": float(np.min(times) * 1000)}


def plot(results: list[dict], title: str, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for (left, batch) in sorted({(r["left_chunks"], r["batch"]) for r in results}):
        rs = sorted((r for r in results if r["left_chunks"] == left and r["batch"] == batch), key=lambda r: r["chunk_ms"])
        lab = f"B={batch}, left={'all' if left < 0 else left}"
        axes[0].plot([r["chunk_ms"] for r in rs], [r["rtf_per_stream"] for r in rs], "o-", label=lab)
        axes[1].plot([r["chunk_ms"] for r in rs], [r["chunk_latency_ms"]["p95"] for r in rs], "o-", label=lab)
    axes[0].axhline(0.1, color="red", ls="--", lw=1, label="RTF 0.1")
    axes[0].set(xlabel="chunk (ms)", ylabel="RTF per stream", xscale="log", yscale="log", title="real-time factor")
    axes[1].set(xlabel="chunk (ms)", ylabel="p95 compute per chunk (ms)", xscale="log", yscale="log", title="chunk latency")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=ROOT / "models" / "asr", help="model folder (random init if absent)")
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "asr_small.yaml", help="config for a random model")
    p.add_argument("--chunks", type=int, nargs="+", default=[4, 8, 16], help="chunk sizes in 40 ms frames")
    p.add_argument("--left-chunks", type=int, nargs="+", default=[-1], help="left context in chunks (-1 = all)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4], help="streams per step")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--nbest", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch default)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "asr_rtf.json")
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    model, source = _load(a.model, a.config)
    model = model.to(dev).eval()
    results = []
    for left in a.left_chunks:
        for batch in a.batches:
            for c in a.chunks:
                r = measure(model, batch, c, left, a.seconds, dev, a.repeats)
                results.append(r)
                print(f"left {left:>3} B {batch:>3} chunk {r['chunk_ms']:>4} ms: RTF/stream {r['rtf_per_stream']:.4f} "
                      f"(batch {r['rtf_batch']:.4f}), chunk p50 {r['chunk_latency_ms']['p50']:.1f} ms "
                      f"p95 {r['chunk_latency_ms']['p95']:.1f} ms", flush=True)
    resc = measure_rescoring(model, a.nbest, dev, a.repeats)
    print(f"rescoring {resc['nbest']} x {resc['tokens']} tokens on {resc['enc_frames']} frames: {resc['ms']:.1f} ms")
    out = {
        "benchmark": "asr_rtf", "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": git_commit(),
        "device": {"type": dev.type, "name": device_name(dev), "threads": torch.get_num_threads(),
                   "torch": torch.__version__},
        "model": {"source": source, "n_params": model.n_params(), "config": dataclass_to_dict(model.cfg)},
        "settings": {"seconds": a.seconds, "repeats": a.repeats},
        "results": results, "rescoring": resc,
    }
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(out, indent=1) + "\n")
    png = a.json.with_suffix(".png")
    plot(results, f"ASR streaming RTF, {model.n_params() / 1e6:.2f} M params, {device_name(dev)}, "
                  f"{torch.get_num_threads()} thread(s), {out['commit'][:12]}", png)
    print(f"wrote {a.json} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
