"""Throughput: concurrent live streams vs chunk latency and real-time factor.

For each number of streams N (``--streams 1,2,4,...``), N StreamSessions share one
BatchWorker (the server's path without the network): every stream delivers one chunk per
chunk duration (real-time pacing, streams offset evenly within a chunk like independent
broadcasters), each chunk goes through batched ``pipeline.step`` and the stream's decoder
(prefix beam + endpoint + rescoring, in ``--decode-threads`` threads as in the server).

Chunk latency = time from the chunk being complete to its events being ready (queue wait
+ batched model step + decoding). A level is real time when the p95 chunk latency is under
the chunk duration (no backlog builds up); ``max_realtime_streams`` is the largest such N
(levels stop after the first level that is not real time).

Writes JSON (device, commit, config, per level figures) and a PNG next to it.

    .venv/bin/python bench/throughput.py --pipeline tiny --json bench/results/throughput_tiny_cpu.json

``--pipeline tiny`` measures the serving plumbing with a small random model (captions are
random letters); pass a model folder for the shipped models.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import git_commit, parse_overrides  # noqa: E402
from jrsv_stream.nn.loader import default_pipeline_spec, load_pipeline  # noqa: E402
from jrsv_stream.stream.session import SessionConfig, StreamSession, session_commit_every_s  # noqa: E402
from jrsv_stream.stream.worker import BatchWorker, QueueFull  # noqa: E402


def device_info(device: torch.device) -> dict:
    d = {"device": str(device), "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
         "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        d["gpu"] = torch.cuda.get_device_name(device)
    return d


def stream_audio(seconds: float, seed: int, manifest: str | None) -> np.ndarray:
    """Audio of one stream: a corpus mixture (looped) or speech-like bursts of noise."""
    n = int(seconds * 16000)
    if manifest:
        from jrsv_stream.audio.io import load_audio
        from jrsv_stream.data.manifest import read_manifest

        items = read_manifest(manifest)
        x = load_audio(Path(manifest).parent / items[seed % len(items)].mixture)
        return np.resize(x, n).astype(np.float32)
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    on = np.sin(2 * np.pi * (0.3 + 0.05 * (seed % 7)) * t + seed) > -0.4  # ~65 % active, pauses for endpoints
    return (0.2 * rng.standard_normal(n) * on).astype(np.float32)


def pct(xs, qs=(50, 95, 99)) -> dict:
    a = np.asarray(xs, dtype=np.float64)
    return {f"p{q}": round(float(np.percentile(a, q)), 3) for q in qs} if len(a) else {f"p{q}": None for q in qs}


async def run_level(worker: BatchWorker, n_streams: int, seconds: float, manifest: str | None, pool, session_config) -> dict:
    chunk = worker.chunk_samples
    chunk_s = chunk / 16000
    sessions = [StreamSession(worker, f"s{i}", session_config) for i in range(n_streams)]
    audios = [stream_audio(seconds, i, manifest) for i in range(n_streams)]
    lat_ms: list[float] = []
    decode_ms: list[float] = []
    loop = asyncio.get_running_loop()
    t0 = time.monotonic() + 0.2
    n_events = 0

    async def one(i: int):
        nonlocal n_events
        s = sessions[i]
        offset = chunk_s * i / n_streams
        chunks = [c for a in range(0, len(audios[i]), 80000) for c in s.feed(audios[i][a:a + 80000])]
        for k, c in enumerate(chunks):
            ready = t0 + offset + (k + 1) * chunk_s  # the chunk is complete in real time
            delay = ready - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            while True:
                try:
                    fut = s.submit(c)
                    break
                except QueueFull:
                    await asyncio.sleep(0.002)
            res = await asyncio.wrap_future(fut)
            d0 = time.perf_counter()
            ev = await loop.run_in_executor(pool, s.on_result, c, res)
            decode_ms.append(1000 * (time.perf_counter() - d0))
            n_events += len(ev)
            lat_ms.append(1000 * (time.monotonic() - ready))

    w0 = worker.stats()
    await asyncio.gather(*(one(i) for i in range(n_streams)))
    w1 = worker.stats()
    for s in sessions:
        s.close()
    audio_s = n_streams * len(audios[0]) / 16000
    wall = time.monotonic() - t0
    batches = w1["batches"] - w0["batches"]
    chunks_done = w1["chunks"] - w0["chunks"]
    return {"streams": n_streams, "chunk_latency_ms": pct(lat_ms), "decode_ms": pct(decode_ms),
            "model_step_ms": w1["compute_ms"], "mean_batch": round(chunks_done / max(1, batches), 2),
            "audio_s": round(audio_s, 1), "wall_s": round(wall, 2), "events": n_events,
            "realtime": bool(np.percentile(lat_ms, 95) < 1000 * chunk_s)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pipeline", default=default_pipeline_spec(), help="'tiny' or a model folder")
    ap.add_argument("--json", required=True, help="output JSON (a PNG is written next to it)")
    ap.add_argument("--streams", default="1,2,4,8,16,32,64,128,256,512", help="levels of concurrent streams")
    ap.add_argument("--seconds", type=float, default=8.0, help="audio per stream per level (real time)")
    ap.add_argument("--chunk-ms", type=float, default=None, help="chunk size (default: the pipeline's)")
    ap.add_argument("--max-batch", type=int, default=256)
    ap.add_argument("--max-wait-ms", type=float, default=10.0)
    ap.add_argument("--decode-threads", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--manifest", default=None, help="use these corpus mixtures as stream audio (default: synthetic)")
    ap.add_argument("--keep-going", action="store_true", help="run all levels even after one is not real time")
    ap.add_argument("--session", nargs="*", default=[], metavar="FIELD=VALUE",
                    help="SessionConfig fields to replace, e.g. commit_every_s=0 (incremental finals off)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    levels = [int(x) for x in a.streams.split(",")]
    session = parse_overrides(a.session, "--session")
    scfg = SessionConfig(**session)
    pipeline = load_pipeline(a.pipeline, int(round(a.chunk_ms * 16)) if a.chunk_ms else None)
    worker = BatchWorker(pipeline, max_batch=a.max_batch, max_wait_ms=a.max_wait_ms, max_streams=max(2, *levels))  # the warm-up runs 2 streams
    worker.start()
    pool = concurrent.futures.ThreadPoolExecutor(a.decode_threads)
    chunk_ms = 1000 * worker.chunk_samples / 16000
    results = []
    try:
        # warm up (allocator, kernels)
        asyncio.run(run_level(worker, 2, 2 * chunk_ms / 1000, a.manifest, pool, scfg))
        for n in levels:
            r = asyncio.run(run_level(worker, n, a.seconds, a.manifest, pool, scfg))
            results.append(r)
            print(f"{n:5d} streams: chunk latency p50 {r['chunk_latency_ms']['p50']:8.1f} ms  p95 {r['chunk_latency_ms']['p95']:8.1f} ms"
                  f"  model step p50 {r['model_step_ms']['p50']:7.1f} ms  batch {r['mean_batch']:6.1f}"
                  f"  {'real time' if r['realtime'] else 'NOT real time'}", flush=True)
            if not r["realtime"] and not a.keep_going:
                break
    finally:
        worker.stop()
        pool.shutdown()
    ok = [r["streams"] for r in results if r["realtime"]]
    out = {"benchmark": "throughput", "pipeline": a.pipeline, "plumbing_only": a.pipeline == "tiny",
           "commit": git_commit(), **device_info(worker.device),
           "config": {"chunk_ms": chunk_ms, "seconds_per_level": a.seconds, "max_batch": a.max_batch,
                      "max_wait_ms": a.max_wait_ms, "decode_threads": a.decode_threads,
                      "audio": a.manifest or "synthetic noise bursts (65 % active)",
                      "algorithmic_latency_ms": worker.pipeline.algorithmic_latency_ms,
                      "session": session, "commit_every_s": session_commit_every_s(scfg, worker.pipeline)},
           "chunk_ms": chunk_ms, "max_realtime_streams": max(ok) if ok else 0, "levels": results,
           "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    path = Path(a.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    plot(out, path.with_suffix(".png"))
    print(f"max_realtime_streams = {out['max_realtime_streams']} ({out['device']}); wrote {path} and {path.with_suffix('.png')}")
    return 0


def plot(out: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lv = out["levels"]
    n = [r["streams"] for r in lv]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for q, style in (("p50", "o-"), ("p95", "s-"), ("p99", "^--")):
        ax.plot(n, [r["chunk_latency_ms"][q] for r in lv], style, label=f"chunk latency {q}")
    ax.plot(n, [r["model_step_ms"]["p50"] for r in lv], "x:", label="batched model step p50")
    ax.axhline(out["chunk_ms"], color="red", lw=1, label=f"chunk duration ({out['chunk_ms']:.0f} ms)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("ms")
    tag = " (plumbing only: random tiny model)" if out.get("plumbing_only") else ""
    ax.set_title(f"throughput on {out.get('gpu', out['device'])}: max real-time streams {out['max_realtime_streams']}{tag}", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
