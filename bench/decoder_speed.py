"""Decoder CPU time per 40 ms frame per stream: CTC prefix beam search (+ endpointing).

Target (issue 4): <= 1 ms of decoder CPU time per frame per stream at beam 10.

Input: real CTC log-probs (``--logp FILE.npy``, (T, V) log-softmax output of the encoder)
or, by default, synthetic peaky posteriors like a trained CTC model's: mostly blank
frames, a token spike every ~3 frames (40 ms frames: ~8 tokens/s), each spike shared with
a competitor token (ambiguity), vocabulary 500, the rest of the mass spread at random.

The decoder runs as in the server: chunks of ``--chunk-frames`` (8 = 320 ms) per step,
``prefix_beam_step`` then ``endpoint_step`` (restart of both at an endpoint). CPU time of
each chunk is taken with ``time.thread_time`` (robust on a busy machine) and divided by
the chunk's frames. Writes JSON (``--json``) and a PNG plot next to it.

    .venv/bin/python bench/decoder_speed.py --json bench/results/decoder_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import device_name, git_commit  # noqa: E402
from jrsv_stream.decode.ctc_prefix_beam import PrefixBeamConfig, best, init_state, prefix_beam_step  # noqa: E402
from jrsv_stream.decode.endpoint import EndpointConfig, blank_frames, endpoint_step, init_endpoint_state  # noqa: E402

FRAME_SHIFT_MS = 40.0


def synth_peaky_logp(num_frames: int, vocab: int, seed: int = 0, period: int = 3,
                     ambiguity: float = 0.35) -> np.ndarray:
    """(T, V) float32 log-probs shaped like a trained CTC model's output.

    Blank frames: blank p ~ 0.95-0.9999. Every ``period`` frames (jittered) a spike: the
    token gets most of the mass and a competitor ``ambiguity`` times as much; now and
    then a spike is spread over two frames. 0.5 s pauses every ~4 s.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, size=(num_frames, vocab))
    x[:, 0] = rng.uniform(9.0, 15.0, size=num_frames)
    t = 1
    while t < num_frames:
        if rng.random() < 1 / 30:  # a pause (~4 s between pauses at one spike per 3 frames)
            t += int(500 / FRAME_SHIFT_MS)
            continue
        tok, comp = rng.choice(np.arange(1, vocab), size=2, replace=False)
        peak = rng.uniform(10.0, 14.0)
        x[t, 0] = rng.uniform(5.0, 10.0)
        x[t, tok] = peak
        x[t, comp] = peak + np.log(ambiguity * rng.uniform(0.3, 1.0))
        if rng.random() < 0.2 and t + 1 < num_frames:  # a spike over two frames
            x[t + 1, tok] = peak - 1.0
            x[t + 1, 0] = peak - 0.5
        t += max(1, period + int(rng.integers(-1, 2)))
    x -= x.max(axis=1, keepdims=True)
    return (x - np.log(np.exp(x).sum(axis=1, keepdims=True))).astype(np.float32)


def run(logp: np.ndarray, cfg: PrefixBeamConfig, ep_cfg: EndpointConfig, chunk_frames: int, repeats: int):
    """Decode ``logp`` ``repeats`` times; per-chunk CPU ms per frame and endpoint count."""
    per_frame_ms, segments, tokens = [], 0, 0
    for _ in range(repeats):
        state, ep = init_state(cfg), init_endpoint_state(ep_cfg)
        for a in range(0, logp.shape[0], chunk_frames):
            chunk = logp[a:a + chunk_frames]
            t0 = time.thread_time_ns()
            state = prefix_beam_step(state, chunk, cfg)
            ep, ended = endpoint_step(ep, blank_frames(chunk, cfg.blank_id), None, ep_cfg)
            if ended:
                # The final would be rescored here (not timed: it is the attention decoder's).
                tokens += len(best(state, cfg).tokens)
                segments += 1
                state, ep = init_state(cfg, state.num_frames), init_endpoint_state(ep_cfg)
            dt = time.thread_time_ns() - t0
            per_frame_ms.append(dt / 1e6 / chunk.shape[0])
        tokens += len(best(state, cfg).tokens)
    return np.array(per_frame_ms), segments, tokens


def plot(per_frame_ms: np.ndarray, target_ms: float, title: str, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(np.arange(len(per_frame_ms)), per_frame_ms, lw=0.6)
    a.axhline(target_ms, color="r", ls="--", label=f"target {target_ms} ms")
    a.set_xlabel("chunk")
    a.set_ylabel("CPU ms per frame")
    a.set_yscale("log")
    a.legend()
    b.hist(per_frame_ms, bins=60)
    b.axvline(target_ms, color="r", ls="--")
    for q, ls in ((50, "-"), (95, ":")):
        v = np.percentile(per_frame_ms, q)
        b.axvline(v, color="k", ls=ls, label=f"p{q} {v:.3f} ms")
    b.set_xlabel("CPU ms per frame (per chunk)")
    b.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--logp", type=Path, help="(T, V) .npy of real CTC log-probs (default: synthetic)")
    p.add_argument("--seconds", type=float, default=120.0, help="synthetic audio length")
    p.add_argument("--vocab", type=int, default=500, help="synthetic vocabulary size")
    p.add_argument("--beam", type=int, default=10)
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--prune-threshold", type=float, default=10.0)
    p.add_argument("--blank-skip-prob", type=float, default=0.999, help="<= 0 disables blank skipping")
    p.add_argument("--hotwords", type=int, default=0, help="random 2-4 token hotwords for biasing")
    p.add_argument("--lm", type=Path, help="token n-gram LM (e.g. models/asr/lm.npz) fused at its tuned weights; "
                                          "synthetic input then uses the LM's vocabulary")
    p.add_argument("--chunk-frames", type=int, default=8, help="frames per step (8 = 320 ms)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target-ms", type=float, default=1.0)
    p.add_argument("--json", type=Path, help="write results here (+ .png next to it)")
    args = p.parse_args(argv)

    lm = None
    if args.lm is not None:
        from jrsv_stream.decode.ngram_lm import TokenNgramLM

        lm = TokenNgramLM.load(args.lm)
        args.vocab = lm.vocab_size
    if args.logp is not None:
        logp = np.load(args.logp)
        if logp.ndim != 2:
            p.error(f"{args.logp}: expected (T, V) log-probs, got shape {logp.shape}")
        source = str(args.logp)
    else:
        logp = synth_peaky_logp(int(round(args.seconds * 1000 / FRAME_SHIFT_MS)), args.vocab, args.seed)
        source = f"synthetic peaky (vocab {args.vocab}, spike every ~3 frames, seed {args.seed})"
    rng = np.random.default_rng(args.seed + 1)
    hotwords = tuple(tuple(int(t) for t in rng.integers(1, logp.shape[1], size=int(rng.integers(2, 5))))
                     for _ in range(args.hotwords))
    cfg = PrefixBeamConfig(beam=args.beam, nbest=min(10, args.beam), top_k=args.top_k,
                           prune_threshold=args.prune_threshold,
                           blank_skip_prob=args.blank_skip_prob if args.blank_skip_prob > 0 else None,
                           hotwords=hotwords, lm=lm)
    if lm is not None and logp.shape[1] != lm.vocab_size:
        p.error(f"log-probs have {logp.shape[1]} tokens, the LM {lm.vocab_size}")
    ep_cfg = EndpointConfig(frame_shift_ms=FRAME_SHIFT_MS)

    wall0 = time.perf_counter()
    per_frame_ms, segments, tokens = run(logp, cfg, ep_cfg, args.chunk_frames, args.repeats)
    wall_s = time.perf_counter() - wall0
    total_frames = logp.shape[0] * args.repeats
    mean_ms = float(per_frame_ms.mean())
    cpu_s = float((per_frame_ms * np.array([min(args.chunk_frames, logp.shape[0] - a)
                                             for a in range(0, logp.shape[0], args.chunk_frames)] * args.repeats)
                   ).sum() / 1e3)
    blank_frac = float((logp.argmax(axis=1) == 0).mean())
    result = {
        "benchmark": "decoder_speed",
        "device": {"cpu": device_name(), "machine": platform.machine(), "python": platform.python_version(),
                   "numpy": np.__version__, "cpus": os.cpu_count()},
        "git_commit": git_commit(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "input": {"source": source, "frames": int(logp.shape[0]), "vocab": int(logp.shape[1]),
                  "frame_shift_ms": FRAME_SHIFT_MS, "argmax_blank_fraction": round(blank_frac, 4)},
        "config": {"prefix_beam": {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name not in ("hotwords", "lm")},
                   "num_hotwords": len(hotwords), "endpoint": asdict(ep_cfg),
                   "lm": None if lm is None else {"path": str(args.lm), "order": lm.order, "weight": lm.weight,
                                                  "token_bonus": lm.token_bonus},
                   "chunk_frames": args.chunk_frames, "repeats": args.repeats},
        "per_frame_ms": {"p50": float(np.percentile(per_frame_ms, 50)), "p95": float(np.percentile(per_frame_ms, 95)),
                         "p99": float(np.percentile(per_frame_ms, 99)), "max": float(per_frame_ms.max()),
                         "mean": mean_ms},
        "cpu_ms_per_frame_overall": cpu_s * 1e3 / total_frames,
        "frames_per_s": total_frames / cpu_s if cpu_s > 0 else float("inf"),
        "realtime_streams_per_core": FRAME_SHIFT_MS / (cpu_s * 1e3 / total_frames) if cpu_s > 0 else float("inf"),
        "wall_s": wall_s,
        "segments_per_repeat": segments / args.repeats,
        "tokens_per_repeat": tokens / args.repeats,
        "target_ms": args.target_ms,
        "meets_target": bool(np.percentile(per_frame_ms, 95) <= args.target_ms),
    }
    print(json.dumps({k: result[k] for k in ("per_frame_ms", "cpu_ms_per_frame_overall", "frames_per_s",
                                             "realtime_streams_per_core", "meets_target")}, indent=1))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        png = args.json.with_suffix(".png")
        plot(per_frame_ms, args.target_ms,
             f"decoder CPU time per 40 ms frame, beam {cfg.beam}, chunk {args.chunk_frames} frames, "
             f"{result['input']['frames']} frames x{args.repeats}\n"
             f"{result['device']['cpu']}  {result['git_commit'][:12]}",
             png)
        print(f"wrote {args.json} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
