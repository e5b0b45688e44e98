"""Train the streaming CTC/attention recognizer: ``jrsv-stream train asr --config C``.

One command, resumable: the run lives in ``<runs_dir>/<name>/`` (``config.yaml`` copy,
``tokenizer.model``, ``checkpoints/step-XXXXXXXX.pt``, ``best/`` model folder,
``log.jsonl``); running the same command again resumes from the latest checkpoint (model,
optimizer, scheduler, step, epoch position, RNG). A checkpoint is written every
``train.ckpt_every_steps`` steps and when the run is stopped by SIGTERM or Ctrl-C (the step
in flight finishes first; a second Ctrl-C aborts at once). When training ends (max steps,
epochs or minutes) the best model by validation WER is exported to ``export_dir``
(``config.yaml``, ``asr.pt``, ``tokenizer.model``).

Loss: ``ctc_weight * CTC + (1 - ctc_weight) * attention CE`` (label smoothing), with dynamic
chunk training: each batch draws full context (``chunk.full_prob``) or a chunk of 1..25
encoder frames, and optionally a limited left context, so one model serves any chunk size.

Relative paths in the config (corpus, runs_dir, export_dir) are relative to the current
directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

# Passive OpenMP waiting: with 2 busy cores, spinning torch threads collapse throughput
# (measured 7 vs 23 audio s/s with 2 threads next to other jobs). Only effective when this
# module is imported before torch (python -m jrsv_stream.train.asr; the CLI's lazy imports).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from jrsv_stream.nn.asr import ASRModel, ASRModelConfig, ConfigError, dataclass_from_dict
from jrsv_stream.train.asr_data import (ASRDataConfig, ASRDataset, Batch, Utterance, apply_spec_aug, make_batches,
                                        make_loader, read_utterances, voice_features)
from jrsv_stream.train.common import (EXIT_CODES, StopFlag, add_train_args, append_jsonl, bf16_autocast_ok, budget_spent,
                                      list_step_checkpoints, load_step_checkpoint, lr_lambda, pick_device,
                                      prune_checkpoints, rng_state, save_atomic, set_rng_state)

CKPT_VERSION = 1
MAX_MODEL_MB = 25.0


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 2e-3  # peak learning rate
    warmup_steps: int = 600
    schedule: str = "noam"  # noam: warmup then lr * sqrt(warmup / step); cosine: warmup then cosine to min_lr_ratio
    cosine_steps: int = 0  # cosine: steps of the decay (0 = train.max_steps)
    min_lr_ratio: float = 0.05
    weight_decay: float = 1e-6
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = 5.0
    accum_grad: int = 1


@dataclass(frozen=True)
class ChunkConfig:
    """Dynamic chunk training (WeNet U2): per batch, full context or a random chunk."""

    full_prob: float = 0.5
    max_chunk_frames: int = 25
    limited_left_prob: float = 0.25  # chance of a limited left context when chunked
    min_left_chunks: int = 2
    max_left_chunks: int = 16


@dataclass(frozen=True)
class LoopConfig:
    max_steps: int = 0  # 0 = no limit
    max_epochs: int = 1000
    max_minutes: float = 0.0  # total training wall time over all resumes; 0 = no limit
    log_every_steps: int = 10
    valid_every_steps: int = 500
    ckpt_every_steps: int = 200
    keep_checkpoints: int = 3
    valid_chunk_frames: tuple[int, ...] = (0, 8)  # 0 = full context
    select_chunk_frames: int = 8  # the best model minimizes the mean WER over tracks at this chunk
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # bf16 autocast on CUDA and on CPUs with native bf16 (train.common.bf16_autocast_ok)
    threads: int = 0  # torch CPU threads (0 = torch default)
    progress: bool = True
    init_from: str = ""  # warm start of a NEW run from a model folder (config.yaml, asr.pt, tokenizer.model)


@dataclass(frozen=True)
class ASRTrainConfig:
    name: str = "asr"
    runs_dir: str = "runs"
    export_dir: str = "models/asr"
    seed: int = 0
    data: ASRDataConfig = field(default_factory=ASRDataConfig)
    model: ASRModelConfig = field(default_factory=ASRModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    chunk: ChunkConfig = field(default_factory=ChunkConfig)
    train: LoopConfig = field(default_factory=LoopConfig)


def load_config(path: str | os.PathLike) -> ASRTrainConfig:
    """Read a training config YAML strictly (unknown keys are errors)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config not found: {p}")
    cfg = dataclass_from_dict(ASRTrainConfig, yaml.safe_load(p.read_text()) or {})
    cfg.data.track_names()  # validates tracks/track
    if cfg.optim.schedule not in ("noam", "cosine"):
        raise ConfigError(f"optim.schedule must be 'noam' or 'cosine', got {cfg.optim.schedule!r}")
    if cfg.train.select_chunk_frames not in cfg.train.valid_chunk_frames:
        raise ConfigError("train.select_chunk_frames must be one of train.valid_chunk_frames")
    return cfg


# --- helpers -------------------------------------------------------------------------------------
def sample_chunk(cfg: ChunkConfig, rng: np.random.Generator) -> tuple[int | None, int]:
    """(chunk_frames or None for full context, left_chunks or -1 for all)."""
    if rng.random() < cfg.full_prob:
        return None, -1
    chunk = int(rng.integers(1, cfg.max_chunk_frames + 1))
    if rng.random() < cfg.limited_left_prob:
        return chunk, int(rng.integers(cfg.min_left_chunks, cfg.max_left_chunks + 1))
    return chunk, -1


def ctc_greedy(logp: torch.Tensor, lens: torch.Tensor, blank: int = 0) -> list[list[int]]:
    """Best path: argmax, collapse repeats, drop blanks. logp (B, T, V) -> B token lists."""
    best = logp.argmax(-1).cpu().numpy()
    out = []
    for row, n in zip(best, lens.cpu().tolist()):
        r = row[:n]
        keep = np.ones(len(r), dtype=bool)
        keep[1:] = r[1:] != r[:-1]
        out.append([int(t) for t in r[keep] if t != blank])
    return out


def get_tokenizer_api():
    """(Tokenizer class, train_tokenizer) from :mod:`jrsv_stream.decode.tokenizer`."""
    from jrsv_stream.decode.tokenizer import Tokenizer, train_tokenizer
    return Tokenizer, train_tokenizer


def compute_cmvn(model: ASRModel, utts: list[Utterance], n_utts: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Global mean/std (n_mels,) of raw log-mel over up to ``n_utts`` training utterances."""
    from jrsv_stream.audio.io import load_audio

    rng = np.random.default_rng([seed, 4242])
    pick = rng.permutation(len(utts))[: max(1, n_utts)]
    s = s2 = None
    n = 0
    with torch.no_grad():
        for k in pick:
            x = torch.from_numpy(load_audio(utts[k].path)).unsqueeze(0)
            f = model.features.raw(torch.nn.functional.pad(x, (model.features.pad_samples, 0)))[0].double()
            s = f.sum(0) if s is None else s + f.sum(0)
            s2 = (f**2).sum(0) if s2 is None else s2 + (f**2).sum(0)
            n += f.shape[0]
    mean = s / n
    std = (s2 / n - mean**2).clamp_min(1e-8).sqrt()
    return mean.float(), std.float()


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints of a run, oldest first."""
    return list_step_checkpoints(run_dir / "checkpoints", "step-")


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint; a corrupt or incomplete file raises a RuntimeError saying what to do."""
    return load_step_checkpoint(path, {"version", "step", "epoch", "batch_in_epoch", "model", "optimizer", "scheduler",
                                       "rng"}, CKPT_VERSION)


# --- evaluation ----------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: ASRModel, batches: list[Batch], tokenizer, chunk_frames_list: tuple[int, ...],
             device: torch.device) -> dict:
    """Greedy-CTC WER/CER per track and chunk size, plus the full-context loss.

    Returns:
        ``{"loss": float, "<track>/wer@<c>": float, "<track>/cer@<c>": float, ...}`` where
        ``c`` is the chunk in frames (``full`` for full context).
    """
    import jiwer

    from jrsv_stream.nn.asr import TRACKS

    was_training = model.training
    model.eval()
    names = {v: k for k, v in TRACKS.items()}
    out: dict[str, float] = {}
    loss_sum, n_utt = 0.0, 0
    for c in chunk_frames_list:
        refs: dict[int, list[str]] = {}
        hyps: dict[int, list[str]] = {}
        for b in batches:
            wav, lens, tracks = b.wav.to(device), b.wav_lens.to(device), b.tracks.to(device)
            feats, feat_lens = model.features(wav, lens)
            enc, enc_lens = model.encoder(feats, feat_lens, c or None, -1, tracks)
            if c == chunk_frames_list[0]:
                out_l = model.loss(feats, feat_lens, b.tokens, tracks, c or None, -1)
                loss_sum += float(out_l["loss"]) * len(b.tokens)
                n_utt += len(b.tokens)
            for tr, ref, ids in zip(b.tracks.tolist(), b.texts, ctc_greedy(model.ctc_logp(enc), enc_lens)):
                refs.setdefault(tr, []).append(ref)
                hyps.setdefault(tr, []).append(tokenizer.decode(ids))
        tag = "full" if not c else str(c)
        for tr in sorted(refs):
            out[f"{names[tr]}/wer@{tag}"] = float(jiwer.wer(refs[tr], hyps[tr]))
            out[f"{names[tr]}/cer@{tag}"] = float(jiwer.cer(refs[tr], hyps[tr]))
    out["loss"] = loss_sum / max(1, n_utt)
    model.train(was_training)
    return out


def selection_metric(metrics: dict, chunk_frames: int) -> float:
    tag = "full" if not chunk_frames else str(chunk_frames)
    vals = [v for k, v in metrics.items() if k.endswith(f"/wer@{tag}")]
    return float(np.mean(vals)) if vals else float("inf")


# --- training ------------------------------------------------------------------------------------
def _prepare_run(cfg: ASRTrainConfig, raw_cfg: dict, run_dir: Path, resume: bool) -> None:
    """Create the run folder; refuse to resume a run made with another model/tokenizer config."""
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = run_dir / "config.yaml"
    if not resume:
        for p in list_checkpoints(run_dir):
            p.unlink()
        for p in (run_dir / "tokenizer.model", run_dir / "tokenizer.vocab", run_dir / "log.jsonl"):
            p.unlink(missing_ok=True)
        shutil.rmtree(run_dir / "best", ignore_errors=True)
    elif saved.is_file() and list_checkpoints(run_dir):
        old = yaml.safe_load(saved.read_text()) or {}
        frozen = lambda d: (d.get("model"), {k: (d.get("data") or {}).get(k) for k in ("vocab_size", "tokenizer_type", "tracks", "track")})  # noqa: E731
        if frozen(old) != frozen(raw_cfg):
            raise ConfigError(f"{run_dir} was started with a different model/tokenizer config ({saved}); "
                              f"use another `name` or --no-resume to start over")
    saved.write_text(yaml.safe_dump(raw_cfg, sort_keys=False))


def _model_config(cfg: ASRTrainConfig, tokenizer, init_dir: Path | None = None) -> ASRModelConfig:
    """The model of a run. A shared model has a track embedding (2 tracks); a single-track
    model has none, except when it is warm-started from a shared model: it keeps the
    embedding (trained on its one track, a fixed bias) so the init weights load unchanged."""
    n_tracks = 2 if cfg.data.tracks == "shared" else 0
    if init_dir is not None and n_tracks == 0:
        doc = yaml.safe_load((init_dir / "config.yaml").read_text()) or {}
        n_tracks = int(((doc.get("model") or {}).get("encoder") or {}).get("n_tracks", 0))
    enc = dataclasses.replace(cfg.model.encoder, n_tracks=n_tracks)
    return dataclasses.replace(cfg.model, vocab_size=tokenizer.vocab_size, sos_eos_id=tokenizer.eos_id, encoder=enc)


def export_best(run_dir: Path, export_dir: Path) -> Path:
    """Copy ``run_dir/best`` (config.yaml, asr.pt, tokenizer.model) to ``export_dir``."""
    best = run_dir / "best"
    if not (best / "asr.pt").is_file():
        raise FileNotFoundError(f"no best model in {best}: train first")
    export_dir.mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "asr.pt", "tokenizer.model"):
        shutil.copyfile(best / name, export_dir / (name + ".part"))
        os.replace(export_dir / (name + ".part"), export_dir / name)
    size_mb = (export_dir / "asr.pt").stat().st_size / 2**20
    if size_mb > MAX_MODEL_MB:
        print(f"warning: {export_dir / 'asr.pt'} is {size_mb:.1f} MB (> {MAX_MODEL_MB} MB)", file=sys.stderr)
    return export_dir


def train_asr(config_path: str | os.PathLike, resume: bool = True, device: str | None = None,
              max_minutes: float | None = None, export_only: bool = False, init_from: str | None = None) -> dict:
    """Train (or resume training) the recognizer described by a config file.

    Args:
        config_path: YAML file (:class:`ASRTrainConfig`).
        resume: continue from the run's latest checkpoint; False starts over (deletes the
            run's checkpoints, tokenizer and best model).
        device: overrides ``train.device`` (auto | cpu | cuda).
        max_minutes: overrides ``train.max_minutes`` (total training time over resumes).
        export_only: only copy the run's best model to ``export_dir``.
        init_from: overrides ``train.init_from``: a run that starts (no checkpoint to resume)
            takes its weights, feature normalization and tokenizer from this model folder.

    Returns:
        Summary: ``{"status": "finished" | "interrupted" | "sigterm", "step", "epoch",
        "best_metric", "run_dir", "export_dir", "audio_s_per_s", "n_params"}``.

    Raises:
        ConfigError: bad config, or resuming a run made with another model config.
        RuntimeError: a corrupt checkpoint (the message names the file and what to do).
        FileNotFoundError: missing corpus index.
    """
    raw_cfg = yaml.safe_load(Path(config_path).read_text()) if Path(config_path).is_file() else None
    cfg = load_config(config_path)
    run_dir = Path(cfg.runs_dir) / cfg.name
    if export_only:
        return {"status": "exported", "export_dir": str(export_best(run_dir, Path(cfg.export_dir)))}
    lc = cfg.train
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    dev = pick_device(device or lc.device)
    limit_s = 60.0 * (max_minutes if max_minutes is not None else lc.max_minutes)
    _prepare_run(cfg, raw_cfg, run_dir, resume)
    log_path = run_dir / "log.jsonl"

    def log(rec: dict) -> None:
        append_jsonl(log_path, rec)

    # data + tokenizer
    tracks = cfg.data.track_names()
    train_utts = read_utterances(cfg.data.corpus, "train", tracks, cfg.data.max_utt_s)
    for extra in cfg.data.extra_corpora:
        train_utts += read_utterances(extra, "train", tracks, cfg.data.max_utt_s)
    valid_all = read_utterances(cfg.data.corpus, "valid", tracks, cfg.data.max_utt_s)
    if not train_utts or not valid_all:
        raise ValueError(f"{cfg.data.corpus}: no train or valid utterances for tracks {list(tracks)}")
    Tokenizer, train_tokenizer = get_tokenizer_api()
    tok_path = run_dir / "tokenizer.model"
    init_dir = Path(init_from or lc.init_from) if (init_from or lc.init_from) else None
    ckpts = list_checkpoints(run_dir) if resume else []
    if init_dir is not None and not ckpts:
        if not (init_dir / "asr.pt").is_file() or not (init_dir / "tokenizer.model").is_file():
            raise FileNotFoundError(f"init_from {init_dir}: expected a model folder with asr.pt and tokenizer.model")
        shutil.copyfile(init_dir / "tokenizer.model", tok_path)
    if not tok_path.is_file():
        train_tokenizer([u.text for u in train_utts], run_dir / "tokenizer", cfg.data.vocab_size,
                        model_type=cfg.data.tokenizer_type)
    tokenizer = Tokenizer(tok_path)
    train_tokens = [tokenizer.encode(u.text) for u in train_utts]
    keep = [i for i, t in enumerate(train_tokens) if t]
    train_utts, train_tokens = [train_utts[i] for i in keep], [train_tokens[i] for i in keep]
    # per-word tokens for the word-crop curriculum (only words whose tokens rebuild the utterance's)
    train_word_tokens = None
    if cfg.data.word_crop.prob > 0:
        train_word_tokens = [[tokenizer.encode(w) for w, _, _ in u.words] for u in train_utts]
        train_utts = [u if [t for w in wt for t in w] == tt else u._replace(words=())
                      for u, wt, tt in zip(train_utts, train_word_tokens, train_tokens)]
    vrng = np.random.default_rng([cfg.seed, 777])
    per_track = max(1, cfg.data.valid_utts // len(tracks))
    valid_utts = []
    for tr in sorted({u.track for u in valid_all}):
        us = [u for u in valid_all if u.track == tr]
        valid_utts += [us[i] for i in sorted(vrng.permutation(len(us))[:per_track])]
    valid_tokens = [tokenizer.encode(u.text) or [tokenizer.unk_id] for u in valid_utts]
    vplan = make_batches([u.duration_s for u in valid_utts], cfg.data.batch_seconds, cfg.data.max_batch)
    vds = ASRDataset(valid_utts, valid_tokens, vplan, cfg.data, augment=False, n_mels=cfg.model.features.n_mels)
    valid_batches = [vds[i] for i in range(len(vds))]

    # model + optimizer
    torch.manual_seed(cfg.seed)
    model = ASRModel(_model_config(cfg, tokenizer, init_dir)).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay,
                           fused=True)  # fused: 4x faster steps than the default on CPU too
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.optim, lc.max_steps))
    step = epoch = batch_in_epoch = 0
    elapsed_s = audio_total_s = 0.0
    best = {"metric": float("inf"), "step": -1}
    if ckpts:
        ck = load_checkpoint(ckpts[-1])
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        step, epoch, batch_in_epoch = ck["step"], ck["epoch"], ck["batch_in_epoch"]
        elapsed_s, audio_total_s = ck.get("elapsed_s", 0.0), ck.get("audio_s", 0.0)
        best = ck.get("best", best)
        set_rng_state(ck["rng"])
        print(f"resumed {ckpts[-1]} (step {step}, epoch {epoch}, batch {batch_in_epoch})", file=sys.stderr)
    elif init_dir is not None:
        try:
            model.load_state_dict(ASRModel.from_pretrained(init_dir).state_dict())
        except RuntimeError as e:
            raise ConfigError(f"init_from {init_dir}: its model does not match this config's model ({e})") from e
        print(f"warm start from {init_dir}", file=sys.stderr)
    else:
        mean, std = compute_cmvn(model, train_utts, cfg.data.cmvn_utts, cfg.seed)
        model.features.set_normalization(mean, std)
    n_params = model.n_params()
    use_amp = bf16_autocast_ok(lc.amp, dev)

    def save_ckpt() -> Path:
        path = run_dir / "checkpoints" / f"step-{step:08d}.pt"
        save_atomic({"version": CKPT_VERSION, "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
                     "elapsed_s": elapsed_s, "audio_s": audio_total_s, "best": best,
                     "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                     "rng": rng_state(), "config": raw_cfg}, path)
        prune_checkpoints(run_dir / "checkpoints", "step-", lc.keep_checkpoints)
        return path

    def validate() -> dict:
        nonlocal best
        m = evaluate(model, valid_batches, tokenizer, lc.valid_chunk_frames, dev)
        sel = selection_metric(m, lc.select_chunk_frames)
        improved = sel < best["metric"]
        if improved or not (run_dir / "best" / "asr.pt").is_file():
            best = {"metric": sel, "step": step}
            model.save_pretrained(run_dir / "best", tok_path, extra={"step": step, "valid": m, "n_params": n_params})
        log({"kind": "valid", "step": step, **m, "selection": sel, "best": best})
        return m

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    con = Console(stderr=True)
    con.print(f"[bold]train asr[/] {run_dir}: {len(train_utts)} train utts "
              f"({sum(u.duration_s for u in train_utts) / 3600:.2f} h), {len(valid_utts)} valid, "
              f"vocab {tokenizer.vocab_size}, {n_params / 1e6:.2f} M params, device {dev}")
    total = lc.max_steps or None
    status: str | None = None  # set when the loop must stop: done | interrupted | sigterm
    last_valid_step = -1
    valid_s = 0.0
    run_t0, run_audio0, steps_t0 = time.monotonic(), audio_total_s, step
    micro = 0
    model.train()
    with StopFlag() as stop, Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                                       TimeElapsedColumn(), console=con, disable=not lc.progress) as prog:
        task = prog.add_task("train", total=total, completed=step, info="")
        t_last = time.monotonic()
        if budget_spent(step, elapsed_s, lc.max_steps, limit_s):
            status = "done"  # a resumed run already at its limit takes no further step
        try:
            while epoch < lc.max_epochs and status is None:
                plan = make_batches([u.duration_s for u in train_utts], cfg.data.batch_seconds, cfg.data.max_batch,
                                    np.random.default_rng([cfg.seed, epoch]))
                if batch_in_epoch >= len(plan):
                    epoch, batch_in_epoch = epoch + 1, 0
                    continue
                ds = ASRDataset(train_utts, train_tokens, plan[batch_in_epoch:], cfg.data, augment=True, seed=cfg.seed,
                                epoch=epoch, first_batch=batch_in_epoch, n_mels=cfg.model.features.n_mels,
                                word_tokens=train_word_tokens)
                done = False
                for batch in make_loader(ds, cfg.data.num_workers):
                    crng = np.random.default_rng([cfg.seed, epoch, batch_in_epoch, 1])
                    chunk, left = sample_chunk(cfg.chunk, crng)
                    wav, lens, trk = batch.wav.to(dev), batch.wav_lens.to(dev), batch.tracks.to(dev)
                    with torch.no_grad():
                        if batch.voice is not None:
                            feats, feat_lens = voice_features(model.features, wav, lens, batch.voice)
                        else:
                            feats, feat_lens = model.features(wav, lens)
                        feats = apply_spec_aug(feats, batch.spec_aug)
                    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
                        out = model.loss(feats, feat_lens, batch.tokens, trk, chunk, left)
                    loss = out["loss"]
                    if torch.isfinite(loss):
                        (loss / cfg.optim.accum_grad).backward()
                    else:
                        log({"kind": "skip", "step": step, "reason": "non-finite loss"})
                    micro += 1
                    batch_in_epoch += 1
                    audio_total_s += batch.audio_s
                    if micro % cfg.optim.accum_grad:
                        continue
                    gn = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                    if torch.isfinite(gn):
                        opt.step()
                    opt.zero_grad(set_to_none=True)
                    sched.step()
                    step += 1
                    now = time.monotonic()
                    elapsed_s += now - t_last
                    t_last = now
                    speed = (audio_total_s - run_audio0) / max(1e-9, now - run_t0 - valid_s)
                    info = (f"ep {epoch} loss {loss.item():.2f} ctc {out['ctc'].item():.2f} att {out['att'].item():.2f} "
                            f"acc {out['acc'].item():.2f} lr {sched.get_last_lr()[0]:.2e} {speed:.1f} audio-s/s")
                    prog.update(task, completed=step, info=info)
                    if step % lc.log_every_steps == 0:
                        log({"kind": "train", "step": step, "epoch": epoch, "loss": loss.item(), "ctc": out["ctc"].item(),
                             "att": out["att"].item(), "acc": out["acc"].item(), "lr": sched.get_last_lr()[0],
                             "grad_norm": float(gn), "chunk": chunk, "left": left, "audio_s_per_s": speed,
                             "elapsed_s": elapsed_s})
                    if lc.valid_every_steps and step % lc.valid_every_steps == 0:
                        tv = time.monotonic()
                        m = validate()
                        valid_s += time.monotonic() - tv
                        last_valid_step = step
                        con.print(f"step {step} valid " + " ".join(f"{k} {v:.3f}" for k, v in m.items()))
                    if stop.reason:
                        status = stop.reason
                    elif budget_spent(step, elapsed_s, lc.max_steps, limit_s):
                        status = "done"
                    if status is not None or step % lc.ckpt_every_steps == 0:
                        save_ckpt()
                    if status is not None:
                        done = True
                        break
                if done:
                    break
                epoch, batch_in_epoch = epoch + 1, 0
        except KeyboardInterrupt:
            save_ckpt()
            raise
        except Exception:
            if stop.reason:  # e.g. a data worker killed by the same signal
                save_ckpt()
                status = stop.reason
            else:
                raise
    status = "finished" if status in (None, "done") else status  # None: max_epochs reached
    train_s = time.monotonic() - run_t0 - valid_s
    if status == "finished":
        if last_valid_step != step:
            m = validate()
            con.print(f"step {step} valid " + " ".join(f"{k} {v:.3f}" for k, v in m.items()))
        save_ckpt()
        export_best(run_dir, Path(cfg.export_dir))
    speed = (audio_total_s - run_audio0) / max(1e-9, train_s)
    summary = {"status": status, "step": step, "epoch": epoch, "best_metric": best["metric"], "best_step": best["step"],
               "run_dir": str(run_dir), "export_dir": cfg.export_dir if status == "finished" else None,
               "audio_s_per_s": speed, "steps_this_run": step - steps_t0, "n_params": n_params}
    log({"kind": "end", **summary})
    con.print(f"{status}: step {step}, best selection WER {best['metric']:.3f} at step {best['step']}, "
              f"{speed:.1f} audio s per wall s" + (f"; exported to {cfg.export_dir}" if status == "finished" else
                                                  "; run the same command again to resume"))
    return summary


# --- command line --------------------------------------------------------------------------------
def _cmd(a: argparse.Namespace) -> int:
    s = train_asr(a.config, resume=not a.no_resume, device=a.device, max_minutes=a.max_minutes, export_only=a.export_only,
                  init_from=a.init_from)
    return EXIT_CODES[s["status"]]


def _add_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_train_args(p, "training config YAML (e.g. configs/asr_small.yaml)", "copy the run's best model to export_dir and exit")
    p.add_argument("--init-from", default=None, help="warm start a new run from this model folder (overrides train.init_from)")
    p.set_defaults(fn=_cmd)
    return p


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register ``asr`` on a ``train`` sub-command's subparsers (``jrsv-stream train asr``).
    The handler (``args.fn(args)``) returns the exit code: 0 done, 130 Ctrl-C, 143 SIGTERM."""
    return _add_args(subparsers.add_parser("asr", help="train the streaming CTC/attention recognizer (resumable)"))


def main(argv: list[str] | None = None) -> int:
    args = _add_args(argparse.ArgumentParser(prog="python -m jrsv_stream.train.asr",
                                             description="Train the streaming CTC/attention recognizer (resumable).")
                     ).parse_args(argv)
    from jrsv_stream.runner import run_handler

    return run_handler(args, "train asr")


if __name__ == "__main__":
    sys.exit(main())
