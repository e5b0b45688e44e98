"""End-to-end caption latency through a real websocket on loopback.

A caption server runs in-process (its own thread and event loop, as ``jrsv-stream serve``);
for each corpus item with word timings, a subscriber connects, then the broadcaster client
publishes the item's mixture in 20 ms frames paced at real time (audio time ``t`` is live
at wall time ``start + t``, like a microphone). Every message the subscriber receives is
stamped on arrival.

Per reference word (``speech_words`` -> track speech, ``singing_words`` -> lyrics) with
end time ``e`` in the audio:

- partial latency = arrival of the first caption event (partial or final) of the track
  that contains the word, minus the wall time the word ended (``start + e``);
- final latency = the same for the first ``final`` containing it.

"Contains the word" (``--match``): ``text``: a caption word equal to the reference word
(case-folded) whose end is within ``--tolerance-s`` of ``e`` (for trained models);
``time``: the event has decoded past ``e`` (``audio_time_s >= e``) and one of its words
overlaps the reference word's span; the word counts as shown from the earliest event of the
same segment from which that caption word, spelled as in this event, stayed on screen over
the span without a break (a partial is sent only when its text changes, so a word recognized
before its end, e.g. during a held sung note, was already on screen: its latency is
negative). ``auto``: time for tiny (random text: this measures the plumbing, not
recognition), else text. Words never matched count as missed (``word_coverage``).

Also reported: the pipeline's algorithmic latency, and per-stage compute per chunk
(p50/p95/p99 of the server's own ``stats`` events: receive, queue, model, decode, send).

    .venv/bin/python bench/latency.py --pipeline tiny --manifest CORPUS/test.jsonl --json bench/results/latency_tiny_cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import git_commit, parse_overrides  # noqa: E402
from bench.throughput import device_info, pct  # noqa: E402
from clients.broadcast import broadcast  # noqa: E402
from jrsv_stream.audio.io import load_audio  # noqa: E402
from jrsv_stream.audio.sources import ArraySource  # noqa: E402
from jrsv_stream.data.manifest import read_manifest  # noqa: E402
from jrsv_stream.serve.protocol import decode_server_message, stream_url  # noqa: E402
from jrsv_stream.nn.loader import default_pipeline_spec  # noqa: E402
from jrsv_stream.serve.server import ServerConfig, ServerThread  # noqa: E402
from jrsv_stream.stream.events import Final, Partial, Stats  # noqa: E402
from jrsv_stream.nn.loader import load_pipeline  # noqa: E402

STAGES = ("receive", "queue", "model", "decode", "send")


def _norm(w: str) -> str:
    return "".join(c for c in w.lower() if c.isalnum() or c == "'")


def _words_over(ev, s: float, e: float) -> set[str]:
    """The caption words of ``ev`` whose times overlap [s, e]."""
    return {w[0] for w in ev.words if w[1] < e + 1e-6 and w[2] > s - 1e-6}


def _contains(ev, word: str, s: float, e: float, mode: str, tol: float) -> bool:
    if mode == "text":
        return any(_norm(w[0]) == _norm(word) and abs(w[2] - e) <= tol for w in ev.words)
    return ev.audio_time_s >= e - 1e-6 and bool(_words_over(ev, s, e))


def _shown_since(evs: list, k: int, s: float, e: float) -> float:
    """Arrival time from which the caption word matched by ``evs[k]`` was on screen, as it
    reads in ``evs[k]``, without a break: walk back over the earlier events of the same
    segment (each replaced the one before it; partials are sent only when the text changes)
    while they show the same word over [s, e]."""
    t, seg = evs[k][0], evs[k][1].segment_id
    shown = _words_over(evs[k][1], s, e)
    for tj, mj in reversed(evs[:k]):
        if mj.segment_id != seg:
            continue
        if not shown & _words_over(mj, s, e):
            break
        t = tj
    return t


async def run_item(server_url: str, sid: str, audio: np.ndarray) -> tuple[list, float]:
    """Publish ``audio`` at real time; return (received [(t_recv, msg)], wall time of audio time 0)."""
    from websockets.asyncio.client import connect

    received = []
    async with connect(stream_url(server_url, "subscribe", sid), proxy=None, max_size=None) as sub:
        hello = decode_server_message(await sub.recv())
        assert hello["type"] == "hello"

        async def listen():
            async for m in sub:
                msg = decode_server_message(m)
                received.append((time.time(), msg))
                if isinstance(msg, dict) and msg.get("type") == "stream" and msg.get("state") == "ended":
                    return

        lt = asyncio.ensure_future(listen())
        src = ArraySource(audio, realtime=True, block_ms=20)
        res = await broadcast(stream_url(server_url, "publish", sid), src)
        await asyncio.wait_for(lt, 60)
    return received, src.start_time or res.start_time


def measure(items, received_by_item, mode: str, tol: float) -> dict:
    """Per-word latencies (ms): ``partial`` (word on screen, see the module doc), ``final``,
    ``partial_after_end`` (the first event that both matches and was sent after the audio
    passed the word's end: an upper bound that ignores a word already on screen), and
    ``partial_by_track``."""
    partial_ms, after_ms, final_ms, n_words, n_partial, n_final = [], [], [], 0, 0, 0
    by_track: dict[str, list[float]] = {}
    per_word = []  # one row per reference word: where its latencies come from
    for (item, refs), (received, t0) in zip(items, received_by_item):
        caps = [(t, m) for t, m in received if isinstance(m, (Partial, Final))]
        for track, words in refs.items():
            evs = [(t, m) for t, m in caps if m.track == track]
            for w, s, e in words:
                n_words += 1
                word_end_wall = t0 + e
                k = next((j for j, (_, m) in enumerate(evs) if _contains(m, w, s, e, mode, tol)), None)
                f = next((t for t, m in evs if isinstance(m, Final) and _contains(m, w, s, e, mode, tol)), None)
                if k is not None:
                    p = _shown_since(evs, k, s, e) if mode == "time" else evs[k][0]
                    n_partial += 1
                    partial_ms.append(1000 * (p - word_end_wall))
                    after_ms.append(1000 * (evs[k][0] - word_end_wall))
                    by_track.setdefault(track, []).append(partial_ms[-1])
                if f is not None:
                    n_final += 1
                    final_ms.append(1000 * (f - word_end_wall))
                per_word.append({"item": getattr(item, "id", None), "track": track, "word": w, "end_s": round(e, 3),
                                 "partial_ms": round(partial_ms[-1], 1) if k is not None else None,
                                 "first_shown_by": type(evs[k][1]).__name__ if k is not None else None,
                                 "final_ms": round(final_ms[-1], 1) if f is not None else None})
    return {"partial": partial_ms, "partial_after_end": after_ms, "partial_by_track": by_track, "final": final_ms,
            "n_words": n_words, "n_partial": n_partial, "n_final": n_final, "per_word": per_word}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pipeline", default=default_pipeline_spec(), help="'tiny' or a model folder")
    ap.add_argument("--manifest", required=True, help="corpus manifest with speech_words / singing_words")
    ap.add_argument("--items", type=int, default=4, help="items to play (each in real time)")
    ap.add_argument("--json", required=True, help="output JSON (a PNG is written next to it)")
    ap.add_argument("--match", choices=("auto", "text", "time"), default="auto")
    ap.add_argument("--tolerance-s", type=float, default=1.0, help="text match: caption word end within this of the reference")
    ap.add_argument("--chunk-ms", type=float, default=None)
    ap.add_argument("--trailing-silence-s", type=float, default=None,
                    help="endpoint after this much trailing blank (default: the pipeline's rule 2)")
    ap.add_argument("--endpoint", nargs="*", default=[], metavar="FIELD=SECONDS",
                    help="EndpointConfig fields to replace in the pipeline's rules, e.g. pause_trailing_silence_s=0.32")
    ap.add_argument("--session", nargs="*", default=[], metavar="FIELD=VALUE",
                    help="SessionConfig fields to replace, e.g. commit_every_s=0.64 (incremental finals)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    mode = a.match if a.match != "auto" else ("time" if a.pipeline == "tiny" else "text")
    root = Path(a.manifest).parent
    items = []
    for it in read_manifest(a.manifest):
        refs = {t: [tuple(w) for w in (getattr(it, k) or [])] for t, k in (("speech", "speech_words"), ("lyrics", "singing_words"))}
        if any(refs.values()):
            items.append((it, refs))
        if len(items) >= a.items:
            break
    if not items:
        raise SystemExit(f"no item with word timings in {a.manifest}")
    pipeline = load_pipeline(a.pipeline, int(round(a.chunk_ms * 16)) if a.chunk_ms else None)
    import dataclasses

    from jrsv_stream.stream.session import SessionConfig, session_commit_every_s, session_endpoint

    over = parse_overrides(a.endpoint, "--endpoint")
    if a.trailing_silence_s is not None:  # the endpoint's trailing blank after decoded tokens (rule 2)
        over["rule2_trailing_silence_s"] = a.trailing_silence_s
    endpoint = dataclasses.replace(session_endpoint(SessionConfig(), pipeline), **over)  # the pipeline's rules, replaced
    session = parse_overrides(a.session, "--session")
    scfg = SessionConfig(endpoint=endpoint, **session)
    st = ServerThread(pipeline, ServerConfig(host="127.0.0.1", port=0), scfg).start()
    received_by_item = []
    audio_s = 0.0
    try:
        for k, (it, _) in enumerate(items):
            audio = load_audio(root / it.mixture)
            audio_s += len(audio) / 16000
            received_by_item.append(asyncio.run(run_item(st.url, f"item{k}", audio)))
            print(f"{it.id}: {len(audio) / 16000:.1f} s, {len(received_by_item[-1][0])} messages", flush=True)
    finally:
        device = st.server.worker.device
        st.stop()
    m = measure(items, received_by_item, mode, a.tolerance_s)
    stage = {}
    names = list(STAGES)
    for rcv, _ in received_by_item:  # plus the pipeline's own stages (separator, encoder, ...) if it reports them
        last = next((msg for _, msg in reversed(rcv) if isinstance(msg, Stats)), None)
        names += [k for k in (last.stage_ms if last else {}) if k not in names]
    for s in names:  # the last stats of each item covers all its chunks; average its percentiles over items
        vals = [next((msg.stage_ms[s] for _, msg in reversed(rcv) if isinstance(msg, Stats) and s in msg.stage_ms), None)
                for rcv, _ in received_by_item]
        vals = [v for v in vals if v]
        if vals:
            stage[s] = {q: round(float(np.mean([v[q] for v in vals])), 3) for q in ("p50", "p95", "p99")}
    out = {"benchmark": "latency", "pipeline": a.pipeline, "plumbing_only": a.pipeline == "tiny",
           "commit": git_commit(), **device_info(device),
           "config": {"manifest": str(a.manifest), "items": len(items), "audio_s": round(audio_s, 1), "match": mode,
                      "tolerance_s": a.tolerance_s, "frame_ms": 20, "trailing_silence_s": endpoint.rule2_trailing_silence_s,
                      "endpoint": dataclasses.asdict(endpoint), "session": session,
                      "commit_every_s": session_commit_every_s(scfg, pipeline),
                      "transport": "websocket on 127.0.0.1, real-time pacing"},
           "algorithmic_latency_ms": pipeline.algorithmic_latency_ms,
           "partial_latency_ms": {**pct(m["partial"]), "n": m["n_partial"]},
           "final_latency_ms": {**pct(m["final"]), "n": m["n_final"]},
           "partial_after_end_latency_ms": {**pct(m["partial_after_end"]), "n": m["n_partial"]},
           "partial_latency_ms_by_track": {t: {**pct(v), "n": len(v)} for t, v in m["partial_by_track"].items()},
           "reference_words": m["n_words"],
           "word_coverage": {"partial": round(m["n_partial"] / max(1, m["n_words"]), 3),
                             "final": round(m["n_final"] / max(1, m["n_words"]), 3)},
           "stage_ms": stage, "per_word": m["per_word"], "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    path = Path(a.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    plot(out, m, path.with_suffix(".png"))
    print(json.dumps({k: out[k] for k in ("algorithmic_latency_ms", "partial_latency_ms", "final_latency_ms", "word_coverage")}))
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return 0


def plot(out: dict, m: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    for key, label in (("partial", "partial on screen"), ("partial_after_end", "first partial sent after it"), ("final", "final")):
        xs = np.sort(np.asarray(m[key]))
        if len(xs):
            ax1.plot(xs, np.arange(1, len(xs) + 1) / len(xs), label=f"word end -> {label} (n={len(xs)})")
    ax1.axvline(out["algorithmic_latency_ms"], color="red", lw=1, label="algorithmic latency")
    ax1.set_xlabel("caption latency (ms)")
    ax1.set_ylabel("fraction of words")
    ax1.legend(fontsize=7)
    st = out["stage_ms"]
    names = [s for s in st]
    x = np.arange(len(names))
    for i, q in enumerate(("p50", "p95", "p99")):
        ax2.bar(x + (i - 1) * 0.27, [st[s][q] for s in names], 0.27, label=q)
    ax2.set_xticks(x, names)
    ax2.set_ylabel("ms per chunk")
    ax2.set_title("per-stage compute", fontsize=8)
    ax2.legend(fontsize=7)
    tag = " (plumbing only: random tiny model)" if out.get("plumbing_only") else ""
    fig.suptitle(f"end-to-end latency on {out.get('gpu', out['device'])}{tag}", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
