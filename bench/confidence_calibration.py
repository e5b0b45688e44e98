"""How word confidence (the 4th element of ``words`` in partials and finals) relates to word
correctness: reliability diagrams, expected calibration error (ECE) and Brier score, on the
corpus test split (mixtures: speech and lyrics tracks) and the real-voice set (clean
recordings, speech track), through the live streaming path (``StreamSession``).

A hypothesis word is correct when the WER alignment (jiwer, normalized words) of the
track's finals, in order, against the item's transcript marks it equal. Finals: the
emitted confidence and its two parts, the Whisper decoder's and the CTC posterior's
(:mod:`jrsv_stream.decode.confidence`); partials: the last partial of each segment (CTC).

    .venv/bin/python bench/confidence_calibration.py --pipeline models/default --per-set 40 \
        --json bench/results/confidence_calibration.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import device_name, git_commit  # noqa: E402

BINS = 10


def _rows(path: Path, n: int) -> list[dict]:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return rows if len(rows) <= n else [rows[int(i * len(rows) / n)] for i in range(n)]


def _correct(ref: str, hyp_words: list[str]) -> list[bool]:
    """Per hypothesis word: aligned equal to a reference word (words normalized; a word
    without letters is left out of the alignment and counted correct)."""
    import jiwer

    from jrsv_stream.decode.hybrid import normalize_text, normalize_word

    norm = [normalize_word(w).replace(" ", "") for w in hyp_words]
    keep = [i for i, w in enumerate(norm) if w]
    out = [True] * len(hyp_words)
    ref = normalize_text(ref or "")
    if not keep:
        return out
    for i in keep:
        out[i] = False
    if not ref:
        return out
    al = jiwer.process_words(ref, " ".join(norm[i] for i in keep)).alignments[0]
    for ch in al:
        if ch.type == "equal":
            for k in range(ch.hyp_start_idx, ch.hyp_end_idx):
                out[keep[k]] = True
    return out


def reliability(conf: list[float], ok: list[bool]) -> dict:
    c, y = np.asarray(conf, dtype=np.float64), np.asarray(ok, dtype=np.float64)
    bins = []
    ece = 0.0
    for b in range(BINS):
        lo, hi = b / BINS, (b + 1) / BINS
        m = (c >= lo) & ((c < hi) if b < BINS - 1 else (c <= hi))
        if m.any():
            bins.append({"lo": lo, "hi": hi, "n": int(m.sum()), "mean_conf": round(float(c[m].mean()), 4),
                         "accuracy": round(float(y[m].mean()), 4)})
            ece += m.sum() / len(c) * abs(c[m].mean() - y[m].mean())
    return {"words": int(len(c)), "accuracy": round(float(y.mean()), 4) if len(c) else None,
            "mean_conf": round(float(c.mean()), 4) if len(c) else None, "ece": round(float(ece), 4),
            "brier": round(float(((c - y) ** 2).mean()), 4) if len(c) else None,
            "acc_conf_ge_0.5": round(float(y[c >= 0.5].mean()), 4) if (c >= 0.5).any() else None,
            "acc_conf_lt_0.5": round(float(y[c < 0.5].mean()), 4) if (c < 0.5).any() else None, "bins": bins}


def run_set(worker, pipeline, rows: list[dict], root: Path, tracks: tuple[str, ...]) -> dict[str, dict]:
    from jrsv_stream.audio.io import load_audio
    from jrsv_stream.stream.events import Final, Partial
    from jrsv_stream.stream.session import StreamSession

    captured: list = []
    inner = pipeline.final_fn

    def spy(track, *args):
        res = inner(track, *args)
        captured.append((track, res))
        return res

    pipeline.final_fn = spy
    acc: dict[str, tuple[list, list]] = {k: ([], []) for k in ("final", "final_decoder", "final_ctc", "partial")}
    try:
        for r in rows:
            captured.clear()
            audio = load_audio(root / r["mixture"])
            s = StreamSession(worker, "bench")
            ev = [e for a in range(0, len(audio), 16000 * 5) for e in s.process(audio[a:a + 16000 * 5])] + s.finish()
            s.close()
            for track, key in (("speech", "speech_text"), ("lyrics", "singing_text")):
                if track not in tracks or not r.get(key):
                    continue
                fin = [e for e in ev if isinstance(e, Final) and e.track == track and e.text]
                words = [w for f in fin for w in f.words]
                ok = _correct(r[key], [w[0] for w in words])
                acc["final"][0].extend(w[3] for w in words)
                acc["final"][1].extend(ok)
                parts = [p for t, res in captured if t == track and res is not None and res.text for p in res.conf_parts]
                if len(parts) == len(words):  # every final came from the final decoder
                    for (dec, ctc), y in zip(parts, ok):
                        if dec is not None:
                            acc["final_decoder"][0].append(dec)
                            acc["final_decoder"][1].append(y)
                        acc["final_ctc"][0].append(ctc)
                        acc["final_ctc"][1].append(y)
                last: dict[str, Partial] = {}
                for e in ev:
                    if isinstance(e, Partial) and e.track == track:
                        last[e.segment_id] = e
                pw = [w for p in last.values() for w in p.words]
                acc["partial"][0].extend(w[3] for w in pw)
                acc["partial"][1].extend(_correct(r[key], [w[0] for w in pw]))
    finally:
        pipeline.final_fn = inner
    return {k: reliability(c, y) for k, (c, y) in acc.items()}


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(results)
    fig, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 5), squeeze=False)
    for ax, name in zip(axes[0], sets):
        ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfect calibration")
        for kind, style in (("final", "o-"), ("final_decoder", "s--"), ("final_ctc", "^--"), ("partial", "d-")):
            r = results[name][kind]
            if r["bins"]:
                ax.plot([b["mean_conf"] for b in r["bins"]], [b["accuracy"] for b in r["bins"]], style,
                        label=f"{kind} (n={r['words']}, ECE {r['ece']:.3f})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("word confidence (bin mean)")
        ax.set_ylabel("fraction of words correct")
        ax.set_title(name)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pipeline", default="models/default")
    ap.add_argument("--corpus", default="data/corpus", help="corpus folder (test.jsonl)")
    ap.add_argument("--real", default="data/real_voices", help="real-voice folder (test_clean.jsonl)")
    ap.add_argument("--per-set", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default="bench/results/confidence_calibration.json")
    a = ap.parse_args(argv)

    from jrsv_stream.nn.pipeline import load_streaming_pipeline
    from jrsv_stream.stream.worker import BatchWorker

    torch.set_num_threads(a.threads)
    t0 = time.time()
    p = load_streaming_pipeline(a.pipeline)
    sets = {"corpus_test": (Path(a.corpus), "test.jsonl", ("speech", "lyrics")),
            "real_voices_clean": (Path(a.real), "test_clean.jsonl", ("speech",))}
    results = {}
    with BatchWorker(p, max_wait_ms=1) as w:
        for name, (root, manifest, tracks) in sets.items():
            rows = _rows(root / manifest, a.per_set)
            results[name] = run_set(w, p, rows, root, tracks)
            results[name]["items"] = len(rows)
            print(name, json.dumps({k: {m: v[m] for m in ("words", "accuracy", "ece", "brier", "acc_conf_ge_0.5", "acc_conf_lt_0.5")}
                                    for k, v in results[name].items() if isinstance(v, dict)}), flush=True)
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"bench": "confidence_calibration", "commit": git_commit(), "device": device_name("cpu"),
           "config": {"pipeline": a.pipeline, "per_set": a.per_set, "bins": BINS, "threads": a.threads},
           "wall_s": round(time.time() - t0, 1), "results": results}
    out.write_text(json.dumps(doc, indent=1))
    plot({k: {m: v for m, v in r.items() if m != "items"} for k, r in results.items()}, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')} in {doc['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
