"""Streaming Whisper encoder candidates (issue 15, part 2), measured side by side.

- **WER of Whisper's own greedy decoder** (final text of whole utterances) over
  (i) full-context features (``encode_segment``: the utterance + >= 2 s of silence padded to
  15 s, what the shipped finals decode: the reference), (ii) candidate (b)'s block-causal
  features (``jrsv_stream.nn.whisper_blockcausal``, the whole utterance streamed, then decoded
  once) at several chunk sizes, either padded to the same 15 s by streaming silence
  (``pad15``) or as cached at an endpoint, the utterance + 1 s of streamed silence
  (``tail1``), optionally with LoRA adapters (``--lora``), and (iii) candidate (a)'s
  concatenated window frames (``WhisperCTC.encode_stream``; the decoder cannot read their
  re-started positions: shown on a few items).
  Sets: real voices (``data/real_voices/test_clean.jsonl``: every non-Asterisk item + an even
  spread of the Asterisk prompts) and corpus test clean speech stems (an even spread).
- **CPU cost per stream**: ms of compute per 320 ms chunk, batch 1, 1 thread, float32 and
  bfloat16 autocast, for (a) (``WhisperCTC.step``: 2.56 s window, one-chunk lookahead, as
  shipped) and (b) (``BlockCausalWhisper.step`` at several stream positions), and one final:
  Whisper's decoder over cached (b) features vs re-encoding the segment padded to 15 s.

    .venv/bin/python bench/whisper_stream.py --json bench/results/whisper_stream.json

Writes the JSON (with the command line) and a PNG beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import ROOT, device_name, git_commit  # noqa: E402
from jrsv_stream.audio.io import load_audio  # noqa: E402
from jrsv_stream.eval.scoring import ErrorCounts, count_errors, normalize_text  # noqa: E402
from jrsv_stream.nn.whisper_blockcausal import BlockCausalWhisper  # noqa: E402
from jrsv_stream.nn.whisper_decode import encode_segment, greedy_decode, segment_token_limit  # noqa: E402

SR = 16000


# ---------------------------------------------------------------------- items
def spread(rows: list, k: int) -> list:
    """``k`` rows evenly spread over ``rows`` (all when fewer)."""
    if k >= len(rows):
        return list(rows)
    return [rows[round(i * (len(rows) - 1) / max(1, k - 1))] for i in range(k)]


def real_items(n: int, manifest: Path = ROOT / "data/real_voices/test_clean.jsonl") -> list[dict]:
    """Every non-Asterisk real recording, then an even spread of the Asterisk ones, ``n`` in all."""
    rows = [json.loads(x) for x in manifest.read_text().splitlines() if x.strip()]
    other = [r for r in rows if r["source"] != "asterisk"]
    ast = [r for r in rows if r["source"] == "asterisk"]
    pick = other[:n] + spread(ast, max(0, n - len(other)))
    return [{"id": r["id"], "path": str(manifest.parent / r["speech"]), "text": r["speech_text"], "source": r["source"]}
            for r in pick]


def corpus_items(n: int, manifest: Path = ROOT / "data/corpus/test.jsonl") -> list[dict]:
    """An even spread of the corpus test items' clean speech stems."""
    rows = [json.loads(x) for x in manifest.read_text().splitlines() if x.strip()]
    rows = [r for r in rows if r.get("speech")]
    return [{"id": r["id"], "path": str(manifest.parent / r["speech"]), "text": r["speech_text"], "source": "corpus"}
            for r in spread(rows, n)]


# ---------------------------------------------------------------------- features
def pad15_samples(n: int, min_pad_s: float = 2.0, pad_to_s: float = 15.0) -> int:
    """The length ``encode_segment`` gives a segment of ``n`` samples (multiple of 320)."""
    total = min(30.0, max(n / SR + min_pad_s, pad_to_s))
    return int(total * SR) // 320 * 320


def decode(model, feats: torch.Tensor, dur_s: float) -> str:
    ids = greedy_decode(model, feats, max_tokens=segment_token_limit(dur_s))[0]
    return model.tokenizer.decode(ids).strip()


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    n = min(a.shape[1], b.shape[1])
    return float((a[:, :n] - b[:, :n]).norm() / b[:, :n].norm())


def feature_sets(model, bcs: dict, audio: torch.Tensor, want_a, a_model) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """name -> (features (1, S, D) to decode, full-context features to compare or None)."""
    n = audio.shape[0]
    L = pad15_samples(n)
    out = {}
    full = encode_segment(model, audio, 2.0, 15.0)
    out["full"] = (full, None)
    a15 = F.pad(audio, (0, L - n))
    a1 = F.pad(audio, (0, SR))
    for name, bc in bcs.items():
        out[f"{name}_pad15"] = (bc(a15), full)
        out[f"{name}_tail1"] = (bc(a1), None)
    if want_a:
        out["a_concat_tail1"] = (a_model.encode_stream(a1, 5120)[None], None)
        out["a_concat_pad15"] = (a_model.encode_stream(a15, 5120)[None], full)
    return out


@torch.no_grad()
def run_wer(model, bcs: dict, sets: dict[str, list[dict]], a_items: int, a_model, log=print) -> dict:
    res: dict = {}
    for set_name, items in sets.items():
        counts: dict[str, ErrorCounts] = {}
        dist: dict[str, list[float]] = {}
        rows = []
        t0 = time.time()
        for k, it in enumerate(items):
            audio = torch.from_numpy(load_audio(it["path"]))
            dur = audio.shape[0] / SR
            row = {"id": it["id"], "ref": normalize_text(it["text"]), "dur_s": round(dur, 2), "hyp": {}}
            for name, (feats, full) in feature_sets(model, bcs, audio, k < a_items, a_model).items():
                hyp = normalize_text(decode(model, feats, dur))
                row["hyp"][name] = hyp
                counts.setdefault(name, ErrorCounts())
                counts[name] += count_errors(row["ref"], hyp)
                if full is not None:
                    dist.setdefault(name, []).append(rel_l2(feats, full))
            rows.append(row)
            log(f"[{set_name} {k + 1}/{len(items)} {time.time() - t0:.0f}s] " + "  ".join(
                f"{n}={100 * c.word_errors / max(1, c.ref_words):.1f}" for n, c in counts.items()))
        res[set_name] = {"n_items": len(items), "audio_s": round(sum(r["dur_s"] for r in rows), 1),
                         "wer": {n: c.to_json() for n, c in counts.items()},
                         "feature_rel_l2_vs_full": {n: round(float(np.mean(v)), 4) for n, v in dist.items()},
                         "items": rows}
    return res


# ---------------------------------------------------------------------- CPU cost
def _median_ms(fn, reps: int) -> float:
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(1000 * (time.perf_counter() - t))
    return float(np.median(ts))


@torch.no_grad()
def run_cost(model, a_ctc_cls, reps: int, positions_s=(2.56, 10.24, 20.48), log=print, lora: dict | None = None) -> dict:
    """ms per 320 ms chunk, batch 1, one thread (``lora``: name -> adapted 320 ms
    :class:`BlockCausalWhisper`, timed unmerged in float32 at 10.24 s)."""
    from jrsv_stream.nn.whisper_ctc import WhisperCTCConfig

    torch.manual_seed(0)
    audio = torch.randn(1, 31 * SR) * 0.05
    chunk = 5120
    out: dict = {"a": {}, "b": {}, "final": {}}
    for dt in ("float32", "bfloat16"):
        m = a_ctc_cls(WhisperCTCConfig(whisper="base", window_s=2.56, lookahead_chunks=1, compute_dtype=dt), whisper=model).eval()
        st = m.init_state(1)
        for i in range(3):
            _, _, st = m.step(audio[:, i * chunk:(i + 1) * chunk], st)
        x = audio[:, 3 * chunk:4 * chunk]
        out["a"][dt] = round(_median_ms(lambda: m.step(x, st), reps), 1)
        log(f"(a) {dt}: {out['a'][dt]} ms/chunk")
        for left, tag in ((-1, "unbounded"), (8, "left 2.56 s")):
            bc = BlockCausalWhisper(model.encoder, 16, left_chunks=left, compute_dtype=dt).eval()
            per_pos = {}
            for p in positions_s:
                n_before = int(round(p * SR / chunk))
                if left >= 0 and per_pos:  # bounded: the cost stops growing once the window is full
                    break
                _, st = bc.stream(audio[:, : n_before * chunk])
                x = audio[:, n_before * chunk:(n_before + 1) * chunk]
                per_pos[f"{p:g}s"] = round(_median_ms(lambda: bc.step(x, st), reps), 1)
            out["b"][f"{dt} {tag}"] = per_pos
            log(f"(b) {dt} {tag}: {per_pos} ms/chunk")
    for name, bc in (lora or {}).items():
        if bc.chunk_frames != 16:
            continue
        n_before = int(round(10.24 * SR / chunk))
        _, st = bc.stream(audio[:, : n_before * chunk])
        x = audio[:, n_before * chunk:(n_before + 1) * chunk]
        out["b"][f"float32 unbounded {name} (LoRA unmerged)"] = {"10.24s": round(_median_ms(lambda: bc.step(x, st), reps), 1)}
        log(f"(b) {name}: {out['b']}")
    # one final of a ~4 s segment: decode cached (b) features vs re-encode padded to 15 s
    seg = audio[0, : 4 * SR]
    bc = BlockCausalWhisper(model.encoder, 16).eval()
    cached = bc(F.pad(seg, (0, SR)))
    fin = out["final"]
    feats15 = encode_segment(model, seg, 2.0, 15.0)

    def forced(feats, n=24):  # the prompt, then n single-token decoder steps: equal work for both inputs
        from jrsv_stream.nn.whisper import DecoderCache
        from jrsv_stream.nn.whisper_decode import _prompt

        c = DecoderCache()
        model.decoder(torch.tensor([_prompt(model, "en", "transcribe")]), feats, c)
        for _ in range(n):
            model.decoder(torch.tensor([[440]]), None, c)

    fin["decode_only_cached_b_ms"] = round(_median_ms(lambda: forced(cached), max(3, reps // 4)), 1)
    fin["decode_only_15s_ms"] = round(_median_ms(lambda: forced(feats15), max(3, reps // 4)), 1)
    fin["encode_15s_float32_ms"] = round(_median_ms(lambda: encode_segment(model, seg, 2.0, 15.0), 3), 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fin["encode_15s_bfloat16_ms"] = round(_median_ms(lambda: encode_segment(model, seg, 2.0, 15.0), 3), 1)
    fin["note"] = ("a 4 s segment: decoder = the SOT prompt + 24 forced single-token steps (float32) over the cached (b) "
                   "frames (4 s + 1 s streamed silence, 256 frames) or over the segment re-encoded padded to 15 s "
                   "(750 frames); the shipped final = encode_15s_bfloat16 + decode_only_15s")
    log(f"final: {fin}")
    return out


# ---------------------------------------------------------------------- plot
def plot(doc: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    ax = axes[0]
    sets = list(doc["wer"])
    names = [n for n in doc["wer"][sets[0]]["wer"]] if sets else []
    w = 0.8 / max(1, len(sets))
    for j, s in enumerate(sets):
        vals = [doc["wer"][s]["wer"].get(n, {}).get("wer") or 0 for n in names]
        ax.bar(np.arange(len(names)) + j * w, [min(v, 150) for v in vals], w, label=s)
    ax.set_xticks(np.arange(len(names)) + w * (len(sets) - 1) / 2)
    ax.set_xticklabels(names, rotation=40, ha="right", fontsize=7)
    ax.set_ylabel("WER % (Whisper base greedy, capped at 150)")
    ax.legend(fontsize=7)
    ax.set_title("final-text WER by encoder features")
    ax = axes[1]
    c = doc.get("cost")
    if c:
        labels, vals = [], []
        for dt, v in c["a"].items():
            labels.append(f"(a) {dt}")
            vals.append(v)
        for k, per in c["b"].items():
            for p, v in per.items():
                labels.append(f"(b) {k} @{p}")
                vals.append(v)
        ax.barh(labels, vals)
        ax.set_xlabel("ms per 320 ms chunk, 1 thread, batch 1")
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title("CPU cost per stream")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--whisper", default="base")
    ap.add_argument("--chunks", default="16,32,64", help="chunk sizes of (b) in encoder frames (20 ms each)")
    ap.add_argument("--real", type=int, default=40, help="real-voice items (0: skip)")
    ap.add_argument("--corpus", type=int, default=20, help="corpus clean speech stems (0: skip)")
    ap.add_argument("--a-items", type=int, default=8, help="items per set on which (a)'s concatenated frames are decoded")
    ap.add_argument("--lora", action="append", default=[],
                    help="a LoRA folder (adapter.pt + config) of jrsv_stream.train.blockcausal_lora: adds its rows")
    ap.add_argument("--lora-chunks", default="", help="also run the --lora adapters at these chunk sizes (frames)")
    ap.add_argument("--no-zero-shot", action="store_true", help="only the --lora rows (and full context)")
    ap.add_argument("--cost", action="store_true", help="also measure CPU cost per chunk and per final")
    ap.add_argument("--reps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="bench/results/whisper_stream.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from jrsv_stream.nn.whisper_ctc import WhisperCTC, WhisperCTCConfig
    from jrsv_stream.nn.whisper_weights import load_whisper

    model = load_whisper(args.whisper).eval()
    bcs = {}
    if not args.no_zero_shot:
        for c in (int(x) for x in args.chunks.split(",") if x):
            bcs[f"b{c * 20}ms"] = BlockCausalWhisper(model.encoder, c).eval()
    for d in args.lora:
        from jrsv_stream.train.blockcausal_lora import load_adapted

        for c in [None] + [int(x) for x in args.lora_chunks.split(",") if x]:
            bc = load_adapted(d, model.encoder, c)
            bcs[f"b{bc.chunk_frames * 20}ms_lora_{Path(d).name}"] = bc
    a_model = WhisperCTC(WhisperCTCConfig(whisper=args.whisper, window_s=2.56, lookahead_chunks=1,
                                          compute_dtype="float32"), whisper=model).eval()
    sets = {}
    if args.real:
        sets["real_clean"] = real_items(args.real)
    if args.corpus:
        sets["corpus_speech"] = corpus_items(args.corpus)
    t0 = time.time()
    doc = {"command": " ".join([".venv/bin/python"] + [sys.argv[0]] + sys.argv[1:]) if argv is None else str(argv),
           "commit": git_commit(), "device": device_name(), "threads": args.threads, "whisper": args.whisper,
           "decoder": "Whisper greedy (jrsv_stream.nn.whisper_decode.greedy_decode), float32",
           "rows": {"full": "encode_segment: utterance + >= 2 s silence, padded to 15 s, full attention (the shipped finals' input; float32)",
                    "bXms_pad15": "(b) block-causal, chunk X ms, the same 15 s streamed (silence streamed after the utterance)",
                    "bXms_tail1": "(b) cached at an endpoint: the utterance + 1 s of streamed silence, decoded as is",
                    "a_concat_*": "(a)'s window frames (2.56 s windows, 1-chunk lookahead) concatenated, decoded (first --a-items items per set)"},
           "wer": run_wer(model, bcs, sets, args.a_items, a_model)}
    doc["wer_seconds"] = round(time.time() - t0, 1)
    if args.cost:
        doc["cost"] = run_cost(model, WhisperCTC, args.reps, lora={n: b for n, b in bcs.items() if "lora" in n})
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    plot(doc, out.with_suffix(".png"))
    print(json.dumps({s: {n: v["wer"] for n, v in r["wer"].items()} for s, r in doc["wer"].items()}, indent=1))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
