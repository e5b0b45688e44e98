"""LoRA adapters for the block-causal streaming Whisper encoder (candidate (b),
:mod:`jrsv_stream.nn.whisper_blockcausal`), trained on this CPU by self-distillation.

Teacher: the frozen full-context Whisper on the same audio as the shipped finals see it
(the utterance + >= 2 s of silence padded to 15 s, ``encode_segment``). Student: the same
encoder with LoRA on its attention projections, run block-causally (chunk masks) over the
utterance + 1 s of silence (what a stream holds when an endpoint fires). Loss per utterance:

- KL(teacher || student) of Whisper's decoder token distributions under teacher forcing
  of the teacher's greedy transcript (+ <|endoftext|>): the decoder reads the student's
  streamed frames and should predict what it predicts from full context;
- ``--feat-weight`` x the relative squared error of the student's frames against the
  teacher's frames at the same positions.

Training audio: the corpus's train-split clean speech (and ``--singing-frac`` singing)
source utterances (``data/corpus/sources/{speech,singing}/train``). Never the real voices
(held-out test). Encoder and decoder matmuls under bfloat16 autocast (as live), one torch
thread. Resumable: ``--out`` holds ``ckpt.pt`` (adapters, optimizer, step, elapsed time)
and ``adapter.pt`` + ``config.json`` (the best by the valid-split loss); rerunning the same
command continues until ``--minutes`` of training in all.

    .venv/bin/python -m jrsv_stream.train.blockcausal_lora --out runs/blockcausal/r16 --minutes 30
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from jrsv_stream.audio.io import load_audio
from jrsv_stream.nn.whisper_blockcausal import BlockCausalWhisper
from jrsv_stream.nn.whisper_decode import _prompt, encode_segment, greedy_decode, segment_token_limit

SR = 16000


def train_files(corpus: Path, split: str, singing_frac: float, seed: int = 0) -> list[Path]:
    """Speech utterances of ``split`` plus singing ones, ``singing_frac`` of the total."""
    sp = sorted((corpus / "sources" / "speech" / split).glob("*.flac"))
    si = sorted((corpus / "sources" / "singing" / split).glob("*.flac"))
    rng = random.Random(seed)
    n_si = int(round(len(sp) * singing_frac / max(1e-9, 1 - singing_frac))) if singing_frac > 0 else 0
    rng.shuffle(si)
    files = sp + si[:n_si]
    rng.shuffle(files)
    return files


def load_adapted(folder: str | os.PathLike, encoder, chunk_frames: int | None = None,
                 compute_dtype: str = "float32") -> BlockCausalWhisper:
    """A :class:`BlockCausalWhisper` over ``encoder`` with the adapters of ``folder``
    (``config.json`` + ``adapter.pt``), eval mode; ``chunk_frames`` None: the trained chunk."""
    d = Path(folder)
    cfg = json.loads((d / "config.json").read_text())
    bc = BlockCausalWhisper(encoder, chunk_frames or cfg["chunk_frames"], cfg.get("left_chunks", -1),
                            compute_dtype=compute_dtype, lora_rank=cfg["lora_rank"],
                            lora_targets=cfg["lora_targets"], lora_layers=cfg.get("lora_layers"),
                            lora_alpha=cfg.get("lora_alpha"))
    bc.load_lora_state_dict(torch.load(d / "adapter.pt", map_location="cpu", weights_only=True))
    return bc.eval()


class Distiller:
    """Teacher targets and the student's loss for one utterance."""

    def __init__(self, model, student: BlockCausalWhisper, feat_weight: float, tail_s: float = 1.0):
        self.model = model
        self.student = student
        self.feat_weight = feat_weight
        self.tail = int(tail_s * SR)
        self.prompt = _prompt(model, "en", "transcribe")

    @torch.no_grad()
    def teacher(self, audio: torch.Tensor):
        """(teacher frames (1, 750, D), teacher-forced tokens (1, L), teacher log-probs (1, L', V))."""
        with torch.autocast("cpu", dtype=torch.bfloat16):
            full = encode_segment(self.model, audio, 2.0, 15.0).float()
        ids = greedy_decode(self.model, full, max_tokens=segment_token_limit(audio.shape[0] / SR))[0]
        toks = torch.tensor([self.prompt + ids + [self.model.tokenizer.eot]])
        logits = self.model.decoder(toks[:, :-1], full)[:, len(self.prompt) - 1:]
        return full, toks, torch.log_softmax(logits.float(), -1)

    def loss(self, audio: torch.Tensor, targets) -> tuple[torch.Tensor, dict]:
        full, toks, t_lp = targets
        a = F.pad(audio, (0, self.tail))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            feats = self.student(a)  # (1, S, D) float32
            s_logits = self.model.decoder(toks[:, :-1], feats)[:, len(self.prompt) - 1:]
        s_lp = torch.log_softmax(s_logits.float(), -1)
        kl = (t_lp.exp() * (t_lp - s_lp)).sum(-1).mean()
        n = min(feats.shape[1], full.shape[1])
        fe = (feats[:, :n] - full[:, :n]).pow(2).mean() / full[:, :n].pow(2).mean()
        return kl + self.feat_weight * fe, {"kl": float(kl.detach()), "feat": float(fe.detach())}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="run folder (resumable), e.g. runs/blockcausal/r16")
    ap.add_argument("--whisper", default="base")
    ap.add_argument("--corpus", default="data/corpus")
    ap.add_argument("--chunk-frames", type=int, default=16)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32.0)
    ap.add_argument("--targets", default="query,value")
    ap.add_argument("--layers", default="", help="comma-separated encoder blocks (empty: all)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--accum", type=int, default=4, help="utterances per optimizer step")
    ap.add_argument("--feat-weight", type=float, default=1.0)
    ap.add_argument("--singing-frac", type=float, default=0.2)
    ap.add_argument("--minutes", type=float, default=30.0, help="training time budget in all (resumed runs included)")
    ap.add_argument("--valid", type=int, default=12, help="valid-split speech utterances for the kept-best loss")
    ap.add_argument("--eval-every", type=int, default=60, help="optimizer steps between valid losses / checkpoints")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    from jrsv_stream.nn.whisper_weights import load_whisper

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_whisper(args.whisper).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    layers = [int(x) for x in args.layers.split(",") if x] or None
    targets = [t for t in args.targets.split(",") if t]
    student = BlockCausalWhisper(model.encoder, args.chunk_frames, lora_rank=args.rank, lora_targets=targets,
                                 lora_layers=layers, lora_alpha=args.alpha)
    student.train()
    params = student.lora_parameters()
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    cfg = {"whisper": args.whisper, "chunk_frames": args.chunk_frames, "left_chunks": -1, "lora_rank": args.rank,
           "lora_targets": targets, "lora_layers": layers, "lora_alpha": args.alpha,
           "training": {k: v for k, v in vars(args).items()}}
    dist = Distiller(model, student, args.feat_weight)
    corpus = Path(args.corpus)
    files = train_files(corpus, "train", args.singing_frac, args.seed)
    valid = sorted((corpus / "sources" / "speech" / "valid").glob("*.flac"))[: args.valid]
    print(f"{len(files)} train utterances, {len(valid)} valid, {sum(p.numel() for p in params)} LoRA parameters", flush=True)

    state = {"step": 0, "elapsed_s": 0.0, "pos": 0, "best_valid": None, "history": []}
    ck = out / "ckpt.pt"
    if ck.is_file():
        c = torch.load(ck, map_location="cpu", weights_only=False)
        student.load_lora_state_dict(c["lora"])
        opt.load_state_dict(c["opt"])
        state = c["state"]
        print(f"resumed at step {state['step']}, {state['elapsed_s'] / 60:.1f} min trained", flush=True)

    valid_targets = None

    def valid_loss() -> dict:
        nonlocal valid_targets
        student.eval()
        if valid_targets is None:
            valid_targets = [(torch.from_numpy(load_audio(p)), None) for p in valid]
            valid_targets = [(a, dist.teacher(a)) for a, _ in valid_targets]
        tot: dict = {"loss": 0.0, "kl": 0.0, "feat": 0.0}
        with torch.no_grad():
            for a, t in valid_targets:
                l, parts = dist.loss(a, t)
                tot["loss"] += float(l) / len(valid_targets)
                for k, v in parts.items():
                    tot[k] += v / len(valid_targets)
        student.train()
        return {k: round(v, 5) for k, v in tot.items()}

    def save(best: bool) -> None:
        sd = student.lora_state_dict()
        torch.save({"lora": sd, "opt": opt.state_dict(), "state": state}, out / "ckpt.pt.part")
        os.replace(out / "ckpt.pt.part", ck)
        if best:
            torch.save(sd, out / "adapter.pt.part")
            os.replace(out / "adapter.pt.part", out / "adapter.pt")
            (out / "config.json").write_text(json.dumps({**cfg, "state": {k: v for k, v in state.items() if k != "history"}}, indent=1))
        (out / "history.json").write_text(json.dumps(state["history"], indent=1))

    if state["step"] == 0 and state["best_valid"] is None:
        v = valid_loss()
        state["history"].append({"step": 0, "elapsed_min": 0.0, "valid": v})
        state["best_valid"] = v["loss"]
        print(f"step 0 valid {v}", flush=True)
        save(True)

    budget = args.minutes * 60
    t_run = time.time()
    base_elapsed = state["elapsed_s"]
    run_kl = run_fe = 0.0
    n_run = 0
    while state["elapsed_s"] < budget:
        frac = state["elapsed_s"] / budget
        warm = min(1.0, (state["step"] + 1) / 20)
        lr = args.lr * warm * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        for _ in range(args.accum):
            f = files[state["pos"] % len(files)]
            state["pos"] += 1
            a = torch.from_numpy(load_audio(f))
            if a.shape[0] > 20 * SR:
                a = a[: 20 * SR]
            loss, parts = dist.loss(a, dist.teacher(a))
            (loss / args.accum).backward()
            run_kl += parts["kl"]
            run_fe += parts["feat"]
            n_run += 1
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        state["step"] += 1
        state["elapsed_s"] = base_elapsed + time.time() - t_run
        if state["step"] % 10 == 0:
            print(f"step {state['step']} {state['elapsed_s'] / 60:.1f} min lr {lr:.2e} train kl {run_kl / n_run:.4f} "
                  f"feat {run_fe / n_run:.4f}", flush=True)
            run_kl = run_fe = 0.0
            n_run = 0
        last = state["elapsed_s"] >= budget
        if state["step"] % args.eval_every == 0 or last:
            v = valid_loss()
            best = v["loss"] < state["best_valid"]
            if best:
                state["best_valid"] = v["loss"]
            state["history"].append({"step": state["step"], "elapsed_min": round(state["elapsed_s"] / 60, 2), "valid": v,
                                     "best": best})
            print(f"step {state['step']} valid {v}{' (best)' if best else ''}", flush=True)
            save(best)
    print(f"done: {state['step']} steps, {state['elapsed_s'] / 60:.1f} min, best valid loss {state['best_valid']}", flush=True)


if __name__ == "__main__":
    main()
