"""Train a decoder adapter for one caption track's Whisper finals (the lyrics track;
``--track speech`` for the speech track's, an experiment: see the README).

    python -m jrsv_stream.train.final_adapter prepare --out data/adapter_feats/corpus --sources data/corpus/sources/singing.jsonl
    python -m jrsv_stream.train.final_adapter prepare --out data/adapter_feats/vocals --sources data/vocals_sing/sources/singing.jsonl
    python -m jrsv_stream.train.final_adapter train --feats data/adapter_feats/corpus data/adapter_feats/vocals \
        --out models/whisper_ctc/final_adapter_singing.pt

``prepare`` encodes every train-split sung line exactly as a live final does
(:func:`jrsv_stream.nn.whisper_decode.encode_segment`: 2 s of silence after it, padded to
15 s, the encoder under bf16 autocast) in two versions: the clean stem, and the separated
singing track (the line mixed with a random train-split music source at -5..+5 dB, through
the shipped separator's streaming path at its calibrated level: what the lyrics track
hears; for ``--track speech``: 0.5 x that mixture + 0.5 x the separated speech, what the
speech finals decode). Valid-split lines are encoded the same way for model selection. Features are
cached as float16 shards (not in git; deterministic from ``--seed``).

``train`` fits LoRA adapters on Whisper's decoder (encoder frozen, cross-attention keys and
values untouched) by teacher forcing on ``<|startoftranscript|><|en|><|transcribe|>
<|notimestamps|> Line text<|endoftext|>`` (speech: the sentence as written, with its case
and punctuation), selects the step with the lowest greedy WER on
the valid lines, and writes the adapter file :func:`jrsv_stream.nn.whisper_adapter.load_adapter`
reads.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch

from jrsv_stream.nn.whisper_adapter import DEFAULT_TARGETS, apply_decoder_lora, save_adapter

SHARD = 256


def line_text(text: str) -> str:
    """The target as a final shows a sung line: first letter capitalized, no final period."""
    t = " ".join(text.split())
    return t[:1].upper() + t[1:]


def speech_texts() -> dict[str, str]:
    """Source text (lowercase words) -> the sentence as written (case, punctuation): the
    speech track's finals keep Whisper's casing and punctuation."""
    from jrsv_stream.data.text import load_sentences

    out = {}
    for sents in load_sentences().values():
        for s in sents:
            out.setdefault(" ".join(s.words), s.spoken)
    return out


def target_text(text: str, track: str, written: dict[str, str] | None = None) -> str:
    if track == "singing":
        return line_text(text)
    t = (written or {}).get(" ".join(text.split()))
    return t if t else line_text(text) + "."


def _read_sources(paths: list[str], split: str) -> list[tuple[Path, str]]:
    out = []
    for p in paths:
        base = Path(p).parent / Path(p).stem
        for line in open(p):
            r = json.loads(line)
            if r.get("split") == split and r.get("text"):
                out.append((base / r["split"] / r["audio"], r["text"]))
    return out


def _music_files(corpus: Path) -> list[Path]:
    rows = [json.loads(x) for x in open(corpus / "sources" / "music.jsonl")]
    return [corpus / "sources" / "music" / r["split"] / r["audio"] for r in rows if r.get("split") == "train"]


def _mix(vocal: np.ndarray, music: np.ndarray, snr_db: float, rng: random.Random) -> np.ndarray:
    from jrsv_stream.data.mixing import active_region

    if len(music) < len(vocal):
        music = np.tile(music, math.ceil(len(vocal) / max(1, len(music))))
    o = rng.randrange(0, len(music) - len(vocal) + 1)
    m = music[o:o + len(vocal)].astype(np.float32)
    r = active_region(vocal)
    pv = float(np.mean(vocal[r] ** 2)) + 1e-12
    pm = float(np.mean(m[r] ** 2)) + 1e-12
    m = m * math.sqrt(pv / (pm * 10 ** (snr_db / 10)))
    x = vocal + m
    peak = float(np.abs(x).max())
    return (x * (0.9 / peak) if peak > 0.9 else x).astype(np.float32)


@torch.no_grad()
def prepare(a: argparse.Namespace) -> None:
    from jrsv_stream.audio.io import load_audio
    from jrsv_stream.nn.pipeline import separator_track_gain
    from jrsv_stream.nn.separator import load_separator
    from jrsv_stream.nn.whisper_decode import encode_segment
    from jrsv_stream.nn.whisper_weights import load_whisper
    from jrsv_stream.separate import separate_stream

    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    wm = load_whisper(a.whisper).eval()
    sep, _, _ = load_separator(a.separator)
    gain = separator_track_gain(a.separator)
    music = _music_files(Path(a.corpus))
    rng = random.Random(a.seed)
    for split in ("valid", "train"):
        items = _read_sources(a.sources, split)
        if a.limit:
            items = items[: a.limit]
        rng.shuffle(items)
        for s0 in range(0, len(items), SHARD):
            path = out / f"{split}-{s0 // SHARD:04d}.pt"
            if path.is_file():
                continue
            feats, texts, kinds, skipped = [], [], [], 0
            t0 = time.time()
            for wav, text in items[s0:s0 + SHARD]:
                x = load_audio(str(wav))
                mus = load_audio(str(music[rng.randrange(len(music))]))
                sep_in = _mix(x, mus, rng.uniform(-5.0, 5.0), rng)
                srcs = separate_stream(sep, sep_in)[0] * gain
                if a.track == "singing":  # the lyrics track: the separated singing voice
                    heard = srcs[1]
                else:  # the speech track's finals: speech_final_mix x mixture + the rest x separated speech
                    heard = a.speech_mix * sep_in + (1.0 - a.speech_mix) * srcs[0]
                for kind, audio in (("clean", x), ("separated", heard)):
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        f = encode_segment(wm, torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)), 2.0, 15.0)
                    if f.shape[1] != 750:  # over 13 s: longer than the 15 s window the batch stacks
                        skipped += 1
                        continue
                    feats.append(f[0].to(torch.float16))
                    texts.append(text)
                    kinds.append(kind)
            torch.save({"feats": torch.stack(feats), "texts": texts, "kinds": kinds}, path.with_suffix(".part"))
            path.with_suffix(".part").replace(path)
            print(f"{path.name}: {len(texts)} features in {time.time() - t0:.0f} s ({skipped} over 13 s skipped)",
                  flush=True)


def _load(feats_dirs: list[str], split: str) -> tuple[torch.Tensor, list[str], list[str]]:
    fs, ts, ks = [], [], []
    for p in sorted(q for d in feats_dirs for q in Path(d).glob(f"{split}-*.pt")):
        d = torch.load(p, weights_only=True)
        fs.append(d["feats"])
        ts += d["texts"]
        ks += d["kinds"]
    if not fs:
        raise FileNotFoundError(f"no {split} features in {feats_dirs}: run prepare first")
    return torch.cat(fs), ts, ks


@torch.no_grad()
def greedy_wer(wm, feats: torch.Tensor, texts: list[str], batch: int = 16) -> float:
    from jrsv_stream.eval.scoring import count_errors
    from jrsv_stream.nn.whisper_decode import greedy_decode

    err = n = 0
    for i in range(0, len(texts), batch):
        ids = greedy_decode(wm, feats[i:i + batch].float(), max_tokens=64)
        for t, ref in zip(ids, texts[i:i + batch]):
            c = count_errors(ref, wm.tokenizer.decode(t))
            err += c.word_errors
            n += c.ref_words
    return 100.0 * err / max(1, n)


def train(a: argparse.Namespace) -> None:
    from jrsv_stream.nn.whisper_weights import load_whisper

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    tf, tt, tk = _load(a.feats, "train")
    vf, vt, vk = _load(a.feats, "valid")
    wm = load_whisper(a.whisper).eval()
    tok = wm.tokenizer
    prompt = tok.sot_sequence("en", "transcribe", timestamps=False)
    written = speech_texts() if a.track == "speech" else None
    seqs = [prompt + tok.encode(" " + target_text(t, a.track, written)) + [tok.eot] for t in tt]
    for p in wm.parameters():
        p.requires_grad_(False)
    names = apply_decoder_lora(wm.decoder, a.rank, a.targets, a.alpha)
    params = [p for n, p in wm.decoder.named_parameters() if ".lora_" in n]
    print(f"LoRA on {len(names)} linears, {sum(p.numel() for p in params) / 1e6:.2f} M parameters; "
          f"{len(seqs)} train / {len(vt)} valid features", flush=True)
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / a.warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / a.steps))))
    history = []

    def valid() -> dict:
        wm.eval()
        r = {}
        for kind in ("clean", "separated"):
            idx = [i for i, k in enumerate(vk) if k == kind]
            r[kind] = round(greedy_wer(wm, vf[idx], [vt[i] for i in idx]), 2)
        return r

    base = valid()
    print(f"step 0 valid greedy WER {base}", flush=True)
    best = (sum(base.values()), 0)
    history.append({"step": 0, "valid_wer": base})
    g = torch.Generator().manual_seed(a.seed)
    order = torch.randperm(len(seqs), generator=g).tolist()
    pos, t0, out = 0, time.time(), Path(a.out)
    for step in range(1, a.steps + 1):
        wm.decoder.train()
        if pos + a.batch > len(order):
            order, pos = torch.randperm(len(seqs), generator=g).tolist(), 0
        idx = order[pos:pos + a.batch]
        pos += a.batch
        L = max(len(seqs[i]) for i in idx)
        toks = torch.full((len(idx), L), tok.eot, dtype=torch.long)
        tgt = torch.full((len(idx), L), -100, dtype=torch.long)
        for r, i in enumerate(idx):
            s = seqs[i]
            toks[r, :len(s)] = torch.tensor(s)
            tgt[r, len(prompt) - 1:len(s) - 1] = torch.tensor(s[len(prompt):])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = wm.decoder(toks[:, :-1], tf[idx].float())
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tgt[:, :-1].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 25 == 0:
            print(f"step {step} loss {loss.item():.3f} ({time.time() - t0:.0f} s)", flush=True)
        if step % a.valid_every == 0 or step == a.steps:
            v = valid()
            history.append({"step": step, "valid_wer": v, "loss": round(loss.item(), 4), "s": round(time.time() - t0, 1)})
            print(f"step {step} valid greedy WER {v}", flush=True)
            if sum(v.values()) < best[0]:
                best = (sum(v.values()), step)
                save_adapter(out, wm.decoder, a.rank, a.alpha, a.targets, a.whisper,
                             {"step": step, "valid_greedy_wer": v, "valid_greedy_wer_before": base,
                              "train_features": len(seqs), "batch": a.batch, "lr": a.lr, "seed": a.seed,
                              "train_s": round(time.time() - t0, 1)})
    Path(str(out) + ".json").write_text(json.dumps({"best_step": best[1], "history": history}, indent=1))
    print(f"best step {best[1]}: {out}", flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--out", required=True)
    p.add_argument("--sources", nargs="+", required=True, help="sources/<track>.jsonl files (corpus layout)")
    p.add_argument("--corpus", default="data/corpus", help="its train music mixes the separated version")
    p.add_argument("--separator", default="models/separator")
    p.add_argument("--whisper", default="base")
    p.add_argument("--track", choices=("singing", "speech"), default="singing")
    p.add_argument("--speech-mix", type=float, default=0.5, help="speech: the mixture's share of the heard audio")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(fn=prepare)
    t = sub.add_parser("train")
    t.add_argument("--feats", nargs="+", required=True, help="folders written by prepare")
    t.add_argument("--out", required=True)
    t.add_argument("--whisper", default="base")
    t.add_argument("--track", choices=("singing", "speech"), default="singing")
    t.add_argument("--rank", type=int, default=8)
    t.add_argument("--alpha", type=float, default=16.0)
    t.add_argument("--targets", nargs="+", default=list(DEFAULT_TARGETS))
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--warmup", type=int, default=30)
    t.add_argument("--steps", type=int, default=600)
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--valid-every", type=int, default=100)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=2)
    t.set_defaults(fn=train)
    a = ap.parse_args(argv)
    a.fn(a)


if __name__ == "__main__":
    main()
