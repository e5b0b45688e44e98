"""Train the voice-type head (:mod:`jrsv_stream.nn.voice_type`): p(singing) per encoder frame.

Data: the live streaming features of the corpus's clean train-split speech (label 0) and
singing (label 1), from the same cache the CTC heads train on
(:func:`jrsv_stream.train.whisper_ctc.load_cached`; extracted when missing). Frames are
weighted by the shipped CTC head's non-blank probability plus a floor, so the silences
inside utterances (neither talk nor singing) count little. Feature dropout as
augmentation. A few minutes on this CPU.

Report (JSON): utterance accuracy (non-blank-weighted mean p(singing) > 0.5) and mean
p(singing) on the corpus valid / test split and on every real recording (all talk), per
real source.

    .venv/bin/python -m jrsv_stream.train.voice_type --asr models/whisper_ctc \\
        --json bench/results/voice_type_train.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from jrsv_stream.nn.voice_type import VOICE_TYPE_FILE, VoiceTypeHead, save_voice_type
from jrsv_stream.nn.whisper_ctc import WhisperCTC
from jrsv_stream.train.whisper_ctc import corpus_items, load_cached


def nonblank(model: WhisperCTC, x: torch.Tensor, track: int) -> torch.Tensor:
    with torch.no_grad():
        return 1.0 - model.ctc_logp(x.float()[None], torch.tensor([track]))[0, :, 0].exp()


def utterance_p(head: VoiceTypeHead, x: torch.Tensor, w: torch.Tensor) -> float:
    with torch.no_grad():
        return float((head(x) * (w + 1e-3)).sum() / (w + 1e-3).sum())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="data/corpus")
    ap.add_argument("--asr", default="models/whisper_ctc", help="Whisper-CTC folder (written: voice_type.pt)")
    ap.add_argument("--out", default=None, help="write voice_type.pt here instead of --asr")
    ap.add_argument("--chunk-ms", type=int, default=320)
    ap.add_argument("--cache", default="data/whisper_feats")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = WhisperCTC.from_pretrained(a.asr)
    cfg = model.cfg
    cache = Path(a.cache) / f"{cfg.whisper}_w{cfg.window_s}_c{a.chunk_ms}_bf16_x2"
    corpus, L, cs = Path(a.corpus), cfg.lookahead_chunks, a.chunk_ms * 16
    t0 = time.time()
    data = {s: load_cached(model, cache, s, corpus_items(corpus, s), L, cs) for s in ("train", "valid", "test")}
    from jrsv_stream.data.real_voices import real_voice_items

    rv = real_voice_items()
    data["real"] = load_cached(model, cache, "real", [(v.id, v.load, v.text, 0) for v in rv], L, cs)
    weights = {s: [nonblank(model, x, t) for x, _, t in d] for s, d in data.items()}
    print(f"features in {time.time() - t0:.0f} s", flush=True)

    X = torch.cat([x.float() for x, _, _ in data["train"]])
    y = torch.cat([torch.full((len(x),), float(t)) for x, _, t in data["train"]])
    W = torch.cat(weights["train"]) + 0.05
    head = VoiceTypeHead(X.shape[1], a.hidden)
    head.mean.copy_(X.mean(0))
    head.std.copy_(X.std(0) + 1e-3)
    opt = torch.optim.AdamW(head.net.parameters(), 1e-3, weight_decay=1e-2)
    t1 = time.time()
    for ep in range(a.epochs):
        perm, tot = torch.randperm(len(X)), 0.0
        for i in range(0, len(perm), 2048):
            b = perm[i:i + 2048]
            xn = F.dropout((X[b] - head.mean) / head.std, 0.2)
            loss = (F.binary_cross_entropy_with_logits(head.net(xn)[:, 0], y[b], reduction="none") * W[b]).sum() / W[b].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(b)
        print(f"epoch {ep}: loss {tot / len(X):.4f}", flush=True)
    head.eval()

    def report(items, ws, labels) -> dict:
        ps = [utterance_p(head, x.float(), w) for (x, _, _), w in zip(items, ws)]
        acc = sum((p > 0.5) == bool(lab) for p, lab in zip(ps, labels)) / max(1, len(ps))
        return {"n": len(ps), "utterance_accuracy": round(acc, 4), "mean_p_singing": round(sum(ps) / max(1, len(ps)), 4)}

    res = {"asr": a.asr, "train_frames": len(X), "train_utterances": len(data["train"]), "epochs": a.epochs,
           "train_s": round(time.time() - t1, 1), "hidden": a.hidden, "eval": {}}
    for s in ("valid", "test"):
        for track, kind in ((0, "speech"), (1, "singing")):
            idx = [i for i, (_, _, t) in enumerate(data[s]) if t == track]
            res["eval"][f"corpus_{s}_{kind}"] = report([data[s][i] for i in idx], [weights[s][i] for i in idx], [track] * len(idx))
    res["eval"]["real_all_talk"] = report(data["real"], weights["real"], [0] * len(data["real"]))
    for src in sorted({v.source for v in rv}):
        idx = [i for i, v in enumerate(rv) if v.source == src]
        res["eval"][f"real_{src}"] = report([data["real"][i] for i in idx], [weights["real"][i] for i in idx], [0] * len(idx))
    print(json.dumps(res["eval"]), flush=True)
    out = Path(a.out or a.asr) / VOICE_TYPE_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    save_voice_type(head, out, {k: v for k, v in res.items() if k != "asr"})
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
