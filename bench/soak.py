"""Soak: the caption server over time, with viewers that come and go and faulty streams.

The server runs as its own process (this script with ``--child``: a :class:`CaptionServer`
as ``jrsv-stream serve`` builds it, plus a test-only fault plan when ``--fault-streams`` is
set); everything is on 127.0.0.1. ``--streams`` publishers send audio (``--audio``, looped;
default the bundled demo) in 20 ms frames at real time, in runs of ``--run-s`` seconds
(``end``, then a new run). Each stream has ``--subscribers`` subscribers: #0 and every odd
one read at once ("steady"), #1 reads with ``--slow-ms`` delay per message ("slow"), the
other even ones ("flaky") disconnect and reconnect at random (mean ``--flaky-mean-s``).
``--fault-streams`` more streams (``fault0``, ...) have a recognizer step that raises on
every chunk from ``--fault-chunk`` on, so each of their runs fails (fatal ``model_error``,
close 1011); they publish again ``--fault-retry-s`` later.

Recorded: every ``--sample-s`` the server process's RSS and open file descriptors
(/proc), its ``/healthz`` (worker queue depth, chunk latency p95 over its recent chunks);
per minute their last / max values. ``finals_lost``: for every subscriber connected over a
whole stream run (from ``stream live`` to ``stream ended``), the finals the run emitted
(the ``finals`` count of ``stream ended``) minus the distinct finals it received.
``partials_dropped``: the subscribers' last ``stats.dropped_partials`` per run, summed.
At the end the server gets SIGTERM (``server_exit_code``).

    .venv/bin/python bench/soak.py --pipeline tiny --chunk-ms 160 --streams 2 --subscribers 5 --minutes 2 \\
        --fault-streams 1 --json bench/results/soak_tiny_2min.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, device_name, git_commit  # noqa: E402
from jrsv_stream.nn.loader import default_pipeline_spec  # noqa: E402

MAX_MINUTES, MAX_STREAMS, MAX_SUBSCRIBERS = 240.0, 16, 16


# ---------------------------------------------------------------------- the server process
def child(a: argparse.Namespace) -> int:
    import logging

    import torch

    from jrsv_stream.serve.server import CaptionServer, ServerConfig, serve_forever
    from jrsv_stream.stream.faults import Fault, FaultPlan
    from jrsv_stream.nn.loader import load_pipeline

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if a.threads:
        torch.set_num_threads(a.threads)
    pipeline = load_pipeline(a.pipeline, int(round(a.chunk_ms * 16)) if a.chunk_ms else None)
    faults = FaultPlan([Fault(f"fault{k}", "recognizer", "raise", from_chunk=a.fault_chunk) for k in range(a.fault_streams)])
    server = CaptionServer(pipeline, ServerConfig(host="127.0.0.1", port=0), faults=faults if a.fault_streams else None)
    asyncio.run(serve_forever(server, on_ready=lambda s: print(f"serving on {s.url} chunk_samples {pipeline.chunk_samples}", flush=True)))
    return 0


def _proc_sample(pid: int) -> tuple[float, int]:
    rss_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    return rss_kb / 1024.0, len(os.listdir(f"/proc/{pid}/fd"))


def _health(port: int) -> dict:
    return json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10))


# ---------------------------------------------------------------------- clients
class Soak:
    def __init__(self, a: argparse.Namespace, base: str, audio: np.ndarray):
        from jrsv_stream.serve.protocol import encode_pcm

        self.a, self.base = a, base
        self.frames = [encode_pcm(audio[i:i + 320]) for i in range(0, len(audio) - 320 + 1, 320)]
        self.deadline = time.monotonic() + 60.0 * a.minutes
        self.healthy = [f"soak{i}" for i in range(a.streams)]
        self.faulty = [f"fault{k}" for k in range(a.fault_streams)]
        self.publishers_done = asyncio.Event()
        self.done_at = 0.0
        self.runs: list[dict] = []  # publisher side: one per stream run
        self.sub_runs: list[dict] = []  # subscriber side: one per (subscriber, run) seen from its live message
        self.reconnects = 0
        self.rng = random.Random(a.seed)

    async def publisher(self, sid: str, offset: int) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        from jrsv_stream.serve.protocol import decode_server_message
        from jrsv_stream.stream.events import Error

        pos = offset
        while time.monotonic() < self.deadline - 2.0:
            run = {"stream": sid, "started": time.time(), "errors": [], "ended": False, "close_code": None}
            self.runs.append(run)
            try:
                async with connect(f"{self.base}/v1/publish/{sid}", proxy=None, open_timeout=30) as ws:
                    await ws.send('{"type": "start"}')
                    decode_server_message(await asyncio.wait_for(ws.recv(), 30))

                    async def read():
                        async for raw in ws:
                            m = decode_server_message(raw)
                            if isinstance(m, Error):
                                run["errors"].append({"code": m.code, "fatal": m.fatal})
                            elif isinstance(m, dict) and m["type"] == "ended":
                                run["ended"] = True

                    reader = asyncio.ensure_future(read())
                    t0 = time.monotonic()
                    stop = min(self.deadline, t0 + self.a.run_s)
                    k = 0
                    try:
                        while time.monotonic() < stop and not reader.done():
                            await ws.send(self.frames[pos % len(self.frames)])
                            pos += 1
                            k += 1
                            await asyncio.sleep(max(0.0, t0 + k * 0.02 - time.monotonic()))
                        if not reader.done():
                            await ws.send('{"type": "end"}')
                    except ConnectionClosed:
                        pass
                    try:
                        await asyncio.wait_for(reader, 120)
                    except ConnectionClosed:
                        pass
                run["close_code"] = ws.close_code
            except Exception as e:  # counted: a publisher that could not run
                run["close_code"] = None
                run["errors"].append({"code": f"client:{type(e).__name__}", "fatal": True})
            run["finished"] = time.time()
            await asyncio.sleep(self.a.fault_retry_s if sid in self.faulty else 0.5)

    async def subscriber(self, sid: str, j: int) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        from jrsv_stream.serve.protocol import decode_server_message
        from jrsv_stream.stream.events import Final, Stats

        kind = _kind(j)
        while not self.publishers_done.is_set():
            cut_at = time.monotonic() + self.rng.expovariate(1.0 / self.a.flaky_mean_s) if kind == "flaky" else None
            run = None
            try:
                async with connect(f"{self.base}/v1/subscribe/{sid}", proxy=None, open_timeout=30, max_queue=None) as ws:
                    while True:
                        left = None if cut_at is None else cut_at - time.monotonic()
                        if left is not None and left <= 0:
                            break
                        try:
                            raw = await asyncio.wait_for(ws.recv(), timeout=min(1.0, left) if left else 1.0)
                        except TimeoutError:
                            if self.publishers_done.is_set() and (run is None or time.monotonic() > self.done_at + 30):
                                return
                            continue
                        if kind == "slow":
                            await asyncio.sleep(self.a.slow_ms / 1000.0)
                        m = decode_server_message(raw)
                        if isinstance(m, dict) and m["type"] == "stream":
                            if m["state"] == "live":
                                run = {"stream": sid, "sub": j, "kind": kind, "finals": set(), "dropped": 0}
                            elif run is not None:
                                run.update(emitted=m["finals"], got=len(run.pop("finals")))
                                self.sub_runs.append(run)
                                run = None
                        elif run is not None and isinstance(m, Final):
                            run["finals"].add(m.segment_id)
                        elif run is not None and isinstance(m, Stats):
                            run["dropped"] = m.dropped_partials
            except (ConnectionClosed, OSError, TimeoutError):
                pass
            if self.publishers_done.is_set():
                return
            self.reconnects += 1
            await asyncio.sleep(self.rng.uniform(0.5, 2.0))


async def monitor(pid: int, port: int, t0: float, samples: list, stop: asyncio.Event, every_s: float) -> None:
    while True:
        try:
            rss, fds = _proc_sample(pid)
            h = await asyncio.to_thread(_health, port)
            samples.append({"t_s": round(time.monotonic() - t0, 1), "rss_mb": round(rss, 1), "fds": fds,
                            "queue_depth": h["worker"]["queue_depth"], "streams": h["streams"], "subscribers": h["subscribers"],
                            "chunk_latency_p95_ms": round(h["worker"]["chunk_latency_ms"]["p95"], 2),
                            "streams_failed": h.get("streams_failed", 0)})
        except (OSError, ValueError):
            pass
        try:
            await asyncio.wait_for(stop.wait(), every_s)
            return
        except TimeoutError:
            pass


def _per_minute(samples: list) -> list[dict]:
    out: dict[int, dict] = {}
    for s in samples:
        m = int(s["t_s"] // 60)
        o = out.setdefault(m, {"minute": m + 1, "rss_mb": 0.0, "fds": 0, "queue_depth_max": 0, "chunk_latency_p95_ms": 0.0})
        o["rss_mb"], o["fds"] = s["rss_mb"], s["fds"]
        o["queue_depth_max"] = max(o["queue_depth_max"], s["queue_depth"])
        o["chunk_latency_p95_ms"] = max(o["chunk_latency_p95_ms"], s["chunk_latency_p95_ms"])
    return [out[k] for k in sorted(out)]


async def run_clients(a: argparse.Namespace, base: str, port: int, pid: int, audio: np.ndarray) -> tuple[Soak, list]:
    soak = Soak(a, base, audio)
    t0 = time.monotonic()
    samples: list = []
    stop_mon = asyncio.Event()
    mon = asyncio.ensure_future(monitor(pid, port, t0, samples, stop_mon, a.sample_s))
    sids = soak.healthy + soak.faulty
    subs = [asyncio.ensure_future(soak.subscriber(sid, j)) for sid in sids for j in range(a.subscribers)]
    await asyncio.sleep(1.0)  # subscribers first: they see every run from its start
    stride = len(soak.frames) // max(1, len(sids))
    pubs = [asyncio.ensure_future(soak.publisher(sid, i * stride)) for i, sid in enumerate(sids)]
    await asyncio.gather(*pubs)
    await asyncio.sleep(2.0)  # the last "stream ended" messages reach the subscribers
    soak.done_at = time.monotonic()
    soak.publishers_done.set()
    await asyncio.gather(*subs)
    stop_mon.set()
    await mon
    return soak, samples


def summarize(a: argparse.Namespace, soak: Soak, samples: list, chunk_samples: int, exit_code: int | None, took_s: float) -> dict:
    complete = [r for r in soak.sub_runs]
    healthy_runs = [r for r in soak.runs if r["stream"] in soak.healthy]
    fault_runs = [r for r in soak.runs if r["stream"] in soak.faulty]

    def failed(r: dict) -> bool:
        return r["close_code"] == 1011 or any(e["fatal"] for e in r["errors"])

    steady0 = [r for r in soak.sub_runs if r["sub"] == 0]
    warm = [s for s in samples if s["t_s"] >= min(10.0, 60.0 * a.minutes / 4)] or samples
    lat = [s["chunk_latency_p95_ms"] for s in warm if s["streams"]]
    per_min = _per_minute(samples)
    out = {
        "bench": "soak", "commit": git_commit(), "device": device_name("cpu"), "pipeline": a.pipeline,
        "chunk_ms": round(1000.0 * chunk_samples / 16000, 1), "chunk_budget_ms": round(1000.0 * chunk_samples / 16000, 1),
        "minutes": a.minutes, "wall_s": round(took_s, 1), "streams": a.streams, "fault_streams": a.fault_streams,
        "subscribers": a.subscribers * (a.streams + a.fault_streams), "subscribers_per_stream": a.subscribers,
        "subscriber_kinds": {k: sum(1 for j in range(a.subscribers) if _kind(j) == k) for k in ("steady", "slow", "flaky")},
        "run_s": a.run_s, "runs": len(healthy_runs), "runs_ended_normally": sum(1 for r in healthy_runs if r["ended"] and r["close_code"] == 1000),
        "finals_emitted": sum(r["emitted"] for r in steady0 if r["stream"] in soak.healthy),
        "finals_lost": sum(max(0, r["emitted"] - r["got"]) for r in complete),
        "finals_lost_healthy": sum(max(0, r["emitted"] - r["got"]) for r in complete if r["stream"] in soak.healthy),
        "subscriber_runs_checked": len(complete), "reconnects": soak.reconnects,
        "partials_dropped": sum(r["dropped"] for r in complete),
        "rss_mb_start": warm[0]["rss_mb"] if warm else None, "rss_mb_end": samples[-1]["rss_mb"] if samples else None,
        "fds_start": warm[0]["fds"] if warm else None, "fds_end": samples[-1]["fds"] if samples else None,
        "chunk_latency_p95_ms": max(lat) if lat else None,
        "queue_depth_max": max((s["queue_depth"] for s in samples), default=None),
        "faults_injected": sum(1 for r in fault_runs if failed(r)),
        "fault_runs": len(fault_runs),
        "streams_failed_by_faults": sorted({r["stream"] for r in soak.runs if failed(r)}),
        "healthy_runs_failed": sum(1 for r in healthy_runs if failed(r)),
        "server_exit_code": exit_code,
        "per_minute": per_min, "samples": samples,
    }
    out["rss_growth_mb"] = round(out["rss_mb_end"] - out["rss_mb_start"], 1) if samples else None
    out["targets"] = {
        "finals_lost == 0": out["finals_lost"] == 0,
        "rss_growth_mb <= 50": out["rss_growth_mb"] is not None and out["rss_growth_mb"] <= 50,
        "chunk_latency_p95_ms < chunk_ms (every minute)": bool(per_min) and all(
            m["chunk_latency_p95_ms"] < out["chunk_ms"] for m in per_min[1:] or per_min),
        "streams_failed_by_faults == the fault streams": out["streams_failed_by_faults"] == soak.faulty,
    }
    return out


def _kind(j: int) -> str:
    return "steady" if (j == 0 or j % 2) and j != 1 else ("slow" if j == 1 else "flaky")


def plot(out: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = out["samples"]
    t = [x["t_s"] / 60.0 for x in s]
    fig, ax = plt.subplots(1, 3, figsize=(14, 3.6))
    ax[0].plot(t, [x["rss_mb"] for x in s], label="RSS (MB)")
    ax0b = ax[0].twinx()
    ax0b.plot(t, [x["fds"] for x in s], color="tab:orange", label="open fds")
    ax[0].set(xlabel="minutes", ylabel="RSS MB", title=f"server memory (growth {out['rss_growth_mb']} MB)")
    ax0b.set_ylabel("open fds")
    ax[1].plot(t, [x["chunk_latency_p95_ms"] for x in s], label="p95 (recent chunks)")
    ax[1].axhline(out["chunk_ms"], color="red", ls="--", label=f"budget {out['chunk_ms']} ms")
    ax[1].set(xlabel="minutes", ylabel="ms", title="chunk latency (submit -> model result)")
    ax[1].legend()
    ax[2].plot(t, [x["queue_depth"] for x in s])
    ax[2].set(xlabel="minutes", ylabel="chunks", title="worker queue depth")
    fig.suptitle(f"soak: {out['streams']}+{out['fault_streams']} faulty streams x {out['subscribers_per_stream']} subscribers, "
                 f"{out['pipeline']}, {out['minutes']} min; finals lost {out['finals_lost']} of {out['finals_emitted']}")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pipeline", default=default_pipeline_spec(), help="'tiny' or a model folder")
    ap.add_argument("--chunk-ms", type=float, default=None, help="audio per model step (default: the pipeline's)")
    ap.add_argument("--streams", type=int, default=4, help="healthy publishers")
    ap.add_argument("--subscribers", type=int, default=5, help="subscribers per stream")
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--run-s", type=float, default=60.0, help="audio seconds per stream run (then 'end' and a new run)")
    ap.add_argument("--slow-ms", type=float, default=40.0, help="delay per message of the slow subscriber")
    ap.add_argument("--flaky-mean-s", type=float, default=20.0, help="mean connected time of a flaky subscriber")
    ap.add_argument("--fault-streams", type=int, default=0, help="extra streams whose recognizer step raises")
    ap.add_argument("--fault-chunk", type=int, default=8, help="chunk of each run from which the fault strikes")
    ap.add_argument("--fault-retry-s", type=float, default=10.0, help="pause before a failed fault stream publishes again")
    ap.add_argument("--audio", default=str(ROOT / "models/demo/demo.flac"), help="audio published (looped)")
    ap.add_argument("--sample-s", type=float, default=10.0, help="seconds between resource samples")
    ap.add_argument("--threads", type=int, default=None, help="server torch CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="output JSON (a PNG is written next to it)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        return child(a)
    if not (0 < a.minutes <= MAX_MINUTES and 1 <= a.streams + a.fault_streams <= MAX_STREAMS and 1 <= a.subscribers <= MAX_SUBSCRIBERS):
        ap.error(f"bounded: minutes in (0, {MAX_MINUTES}], streams <= {MAX_STREAMS}, subscribers <= {MAX_SUBSCRIBERS}")
    if a.json is None:
        ap.error("--json is required")
    from jrsv_stream.audio.io import load_audio

    audio = load_audio(a.audio)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--pipeline", a.pipeline, "--fault-streams", str(a.fault_streams),
           "--fault-chunk", str(a.fault_chunk)] + (["--chunk-ms", str(a.chunk_ms)] if a.chunk_ms else []) \
        + (["--threads", str(a.threads)] if a.threads else [])
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t_start = time.monotonic()
    try:
        line = ""
        while "serving on" not in line:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
        base, chunk_samples = line.split()[2], int(line.split()[4])
        port = int(base.rsplit(":", 1)[1])
        # keep the server's log flowing (a full pipe would block it)
        log_tail: list[str] = []
        drain = __import__("threading").Thread(target=lambda: [log_tail.append(x) for x in proc.stdout], daemon=True)
        drain.start()
        soak, samples = asyncio.run(run_clients(a, base, port, proc.pid, audio))
        proc.send_signal(signal.SIGTERM)
        exit_code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = summarize(a, soak, samples, chunk_samples, exit_code, time.monotonic() - t_start)
    out["server_log_errors"] = [x.strip() for x in log_tail if "Traceback" in x or ("ERROR" in x and "fault" not in x)][:20]
    path = Path(a.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    plot(out, path.with_suffix(".png"))
    keys = ("minutes", "streams", "subscribers", "finals_emitted", "finals_lost", "rss_mb_start", "rss_mb_end", "rss_growth_mb",
            "chunk_latency_p95_ms", "partials_dropped", "faults_injected", "streams_failed_by_faults", "server_exit_code", "targets")
    print(json.dumps({k: out[k] for k in keys}))
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
