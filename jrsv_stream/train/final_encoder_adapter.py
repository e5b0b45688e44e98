"""An encoder adapter for the speech track's Whisper finals, trained without transcripts.

Why: offline, Whisper base on real voices over test music at 0 dB reads the separated speech
at 29 % WER and the clean voice at 6 %; with the music merely 6 dB quieter than the voice
(no separator artifacts) it reads 14 %. The separator's output is not too loud in music, it
is *distorted* (speech removed where the music dominated a bin), and Whisper's encoder has
never heard that. So the finals' encoder is taught to hear it: a low-rank adapter (LoRA) on
the encoder's self-attention and MLP, trained by **feature distillation** (teacher-student
learning for robust ASR): the adapted encoder hearing what the speech finals decode
(``speech_mix`` x the mixture + the rest x the separated speech, at the separator's
calibrated level) should give the features the frozen encoder gives for the clean voice
alone. No transcript is needed, so the untranscribed real talk of ``jrsv-stream data
real-speech`` (other speakers and languages than any test set) is the training voice,
beside the corpus's TTS talk. The decoder is untouched.

    python -m jrsv_stream.train.final_encoder_adapter prepare --out data/encoder_distill
    python -m jrsv_stream.train.final_encoder_adapter train --data data/encoder_distill \\
        --out models/whisper_ctc/final_encoder_adapter_speech.pt

``prepare`` draws crops from :class:`jrsv_stream.data.dynamic.DynamicMixDataset` (speech
only or speech + singing, music at ``--snr`` dB, real talk for the speech stem with
probability ``--p-real``), and with probability ``--p-clean`` the voice alone, no music (what
clean talk gives the finals after the separator); separates each through the separator's
streaming path, keeps what the finals hear and the clean voice (float16) and the teacher's
features of the clean voice, encoded exactly as a live final encodes (2 s of silence after
it, padded to 15 s, bf16 autocast). Deterministic from ``--seed``; shards are not in git.

``train`` fits the adapter (MSE to the teacher's features over the whole 15 s window; with
probability ``--p-identity`` a row hears the clean voice itself, so clean talk keeps its
features), keeps the step with the lowest valid MSE and writes the adapter file
:func:`jrsv_stream.nn.whisper_adapter.load_adapter` reads (``part: "encoder"``). Resumable
(``--out``.ckpt).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from jrsv_stream.nn.whisper_adapter import ENCODER_TARGETS, apply_encoder_lora, save_adapter

SHARD = 200
SR = 16000


def _encode(wm, audio: torch.Tensor, grad: bool = False) -> torch.Tensor:
    """(B, T) audio -> (B, S, D) float32 encoder features, each row encoded as a live final
    (:func:`jrsv_stream.nn.whisper_decode.segment_mel`: its own log-mel, 2 s of silence,
    padded to 15 s), the encoder under bf16 autocast."""
    from jrsv_stream.nn.whisper_decode import segment_mel

    mel = torch.cat([segment_mel(wm, row, 2.0, 15.0) for row in audio])
    with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=torch.bfloat16):
        return wm.encoder(mel).float()


@torch.no_grad()
def prepare(a: argparse.Namespace) -> None:
    from jrsv_stream.data.dynamic import DynamicMixDataset
    from jrsv_stream.nn.pipeline import separator_track_gain
    from jrsv_stream.nn.separator import load_separator
    from jrsv_stream.nn.whisper_weights import load_whisper
    from jrsv_stream.separate import separate_stream

    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    wm = load_whisper(a.whisper).eval()
    sep, _, _ = load_separator(a.separator)
    gain = separator_track_gain(a.separator)
    crop = int(a.crop_s * SR) // sep.hop_samples * sep.hop_samples
    (out / "info.json").write_text(json.dumps({k: v for k, v in vars(a).items() if k != "func"}, indent=1))
    for split, n_items, seed in (("valid", a.n_valid, a.seed + 1), ("train", a.n_train, a.seed)):
        ds = DynamicMixDataset(a.corpus, split, crop, sep.hop_samples, batch_size=None, seed=seed,
                               plan_kwargs={"scenario_weights": {"speech": 0.6, "both": 0.4},
                                            "snr_range_db": tuple(a.snr)},
                               real_speech=a.real_speech, p_real_speech=a.p_real)
        rng = random.Random(seed)
        it = iter(ds)
        for s0 in range(0, n_items, SHARD):
            path = out / f"{split}-{s0 // SHARD:04d}.pt"
            k = min(SHARD, n_items - s0)
            if path.is_file():  # resume: draw (and drop) the shard's examples so the rest stay the same
                for _ in range(k):
                    next(it), rng.random()
                continue
            t0 = time.time()
            heard, clean, kinds = [], [], []
            for _ in range(k):
                ex = next(it)
                voice = ex["stems"][0].numpy()
                mix = voice if rng.random() < a.p_clean else ex["mixture"].numpy()
                srcs = separate_stream(sep, mix)[0] * gain
                heard.append(torch.from_numpy(a.speech_mix * mix + (1.0 - a.speech_mix) * srcs[0]))
                clean.append(torch.from_numpy(voice.copy()))
                kinds.append(("clean" if mix is voice else ex["meta"]["scenario"])
                             + ("_real" if ex["meta"].get("speech_real") else ""))
            clean_t = torch.stack(clean)
            feats = torch.cat([_encode(wm, clean_t[i:i + 8]) for i in range(0, k, 8)])
            torch.save({"heard": torch.stack(heard).half(), "clean": clean_t.half(), "teacher": feats.half(),
                        "kinds": kinds}, path.with_suffix(".part"))
            path.with_suffix(".part").replace(path)
            print(f"{path.name}: {k} crops in {time.time() - t0:.0f} s", flush=True)


def _load(data: list[str], split: str) -> dict:
    shards = sorted(p for d in data for p in Path(d).glob(f"{split}-*.pt"))
    if not shards:
        raise FileNotFoundError(f"no {split} shards under {data}: run `prepare` first")
    docs = [torch.load(p, weights_only=True) for p in shards]
    return {k: torch.cat([d[k] for d in docs]) for k in ("heard", "clean", "teacher")} | \
        {"kinds": [x for d in docs for x in d["kinds"]]}


def train(a: argparse.Namespace) -> None:
    from jrsv_stream.nn.whisper_weights import load_whisper

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    tr, va = _load(a.data, "train"), _load(a.data, "valid")
    wm = load_whisper(a.whisper).eval()
    for p in wm.parameters():
        p.requires_grad_(False)
    targets = tuple(a.targets)
    apply_encoder_lora(wm.encoder, a.rank, targets, a.alpha)
    params = [p for p in wm.encoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / a.steps)))))
    ckpt = Path(str(a.out) + ".ckpt")
    step, best, hist = 0, float("inf"), []
    if ckpt.is_file():
        st = torch.load(ckpt, weights_only=False)
        wm.encoder.load_state_dict(st["encoder"], strict=False)
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
        step, best, hist = st["step"], st["best"], st["hist"]
        print(f"resumed at step {step}", flush=True)

    def valid() -> dict:
        wm.encoder.eval()
        tot = {}
        with torch.no_grad():
            for i in range(0, len(va["kinds"]), 8):
                f = _encode(wm, va["heard"][i:i + 8].float())
                err = (f - va["teacher"][i:i + 8].float()).pow(2).mean(dim=(1, 2))
                for k, e in zip(va["kinds"][i:i + 8], err.tolist()):
                    tot.setdefault(k, []).append(e)
        wm.encoder.train()
        out = {k: float(np.mean(v)) for k, v in sorted(tot.items())}
        out["all"] = float(np.mean([e for v in tot.values() for e in v]))
        return out

    if step == 0:
        v0 = valid()
        hist.append({"step": 0, **{f"valid_{k}": round(x, 5) for k, x in v0.items()}})
        print(json.dumps(hist[-1]), flush=True)
    rng = np.random.default_rng(a.seed + step)
    n = len(tr["kinds"])
    t0 = time.time()
    wm.encoder.train()
    while step < a.steps:
        idx = rng.choice(n, a.batch, replace=False)
        ident = rng.random(a.batch) < a.p_identity
        x = torch.where(torch.from_numpy(ident)[:, None], tr["clean"][idx], tr["heard"][idx]).float()
        f = _encode(wm, x, grad=True)
        loss = (f - tr["teacher"][idx].float()).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        step += 1
        if step % 10 == 0:
            print(f"step {step} loss {loss.item():.4f} lr {sched.get_last_lr()[0]:.2e} "
                  f"{(time.time() - t0) / 10:.2f} s/step", flush=True)
            t0 = time.time()
        if step % a.valid_every == 0 or step == a.steps:
            v = valid()
            hist.append({"step": step, **{f"valid_{k}": round(x, 5) for k, x in v.items()}})
            print(json.dumps(hist[-1]), flush=True)
            if v["all"] < best:
                best = v["all"]
                save_adapter(a.out, wm.encoder, a.rank, a.alpha, targets, a.whisper, part="encoder",
                             info={"steps": step, "valid_mse": round(v["all"], 5), "valid_mse_before": hist[0]["valid_all"],
                                   "train_crops": n, "data": [str(d) for d in a.data], "lr": a.lr, "batch": a.batch,
                                   "p_identity": a.p_identity, "history": hist})
            lora = {k: v for k, v in wm.encoder.state_dict().items() if "lora_" in k}
            torch.save({"encoder": lora, "opt": opt.state_dict(), "sched": sched.state_dict(), "step": step,
                        "best": best, "hist": hist}, str(ckpt) + ".part")
            os.replace(str(ckpt) + ".part", ckpt)
    print(f"best valid MSE {best:.5f} (before: {hist[0]['valid_all']:.5f}) -> {a.out}", flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="separated crops + the teacher's features of their clean voice")
    p.add_argument("--out", required=True)
    p.add_argument("--corpus", default="data/corpus")
    p.add_argument("--real-speech", default="data/real_speech")
    p.add_argument("--p-real", type=float, default=0.6, help="probability of real talk for the speech stem")
    p.add_argument("--p-clean", type=float, default=0.15, help="probability of the voice alone (no music)")
    p.add_argument("--separator", default="models/separator_real")
    p.add_argument("--speech-mix", type=float, default=0.5, help="the pipeline's speech_final_mix")
    p.add_argument("--snr", type=float, nargs=2, default=(-5.0, 10.0), metavar=("LO", "HI"))
    p.add_argument("--crop-s", type=float, default=8.0)
    p.add_argument("--n-train", type=int, default=3000)
    p.add_argument("--n-valid", type=int, default=96)
    p.add_argument("--whisper", default="base")
    p.add_argument("--seed", type=int, default=31)
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=prepare)
    t = sub.add_parser("train", help="fit the encoder adapter by feature distillation")
    t.add_argument("--data", nargs="+", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--whisper", default="base")
    t.add_argument("--rank", type=int, default=16)
    t.add_argument("--alpha", type=float, default=32.0)
    t.add_argument("--targets", nargs="+", default=list(ENCODER_TARGETS))
    t.add_argument("--lr", type=float, default=5e-4)
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--steps", type=int, default=1000)
    t.add_argument("--p-identity", type=float, default=0.15)
    t.add_argument("--valid-every", type=int, default=100)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=2)
    t.set_defaults(func=train)
    a = ap.parse_args(argv)
    a.func(a)


if __name__ == "__main__":
    main()
