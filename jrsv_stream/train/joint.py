"""Train the JRSV system end to end: ``jrsv-stream train joint --config configs/joint_*.yaml``.

One trainer for every row of the baseline / joint-training table (issue 6); the config's
``separator.mode`` and ``distill`` section choose the row:

============================  ==================  =========================================
row                           separator.mode      recognizer hears (track 0 / track 1)
============================  ==================  =========================================
mixture ASR (Woo et al.)      ``none``            the mixture / the mixture
cascade fine-tuned            ``frozen``          separated speech / separated singing
joint fine-tuning             ``train``           same, gradients flow into the separator
online distillation (JRSV)    ``train`` + distill same; teacher on the clean stems
============================  ==================  =========================================

- Data: whole items of the corpus manifests (``data.train_manifest``; 4-15 s, so the texts
  stay exact) through :class:`jrsv_stream.data.dynamic.ManifestDataset`, length-bucketed
  batches of at most ``data.batch_seconds`` padded seconds
  (:func:`jrsv_stream.train.asr_data.make_batches`), the plan fixed by ``(seed, epoch)``.
- Recognizer: initialised from a trained clean-ASR folder (``asr.init``, its
  ``tokenizer.model`` is the tokenizer). The two tracks go through it as one batch of 2B
  rows with track ids (0 speech, 1 singing) and targets ``speech_text`` /
  ``singing_text``; a track whose text is absent gets an EMPTY target ("say nothing", or
  the row is dropped with ``data.absent_tracks: skip``). Loss: the hybrid CTC/attention
  loss of :meth:`ASRModel.loss` with dynamic chunk training
  (:func:`jrsv_stream.train.asr.sample_chunk`); SpecAugment only when ``asr.spec_aug`` is set.
- Separator (``separator.init``): ``frozen`` runs without gradients (eval mode);
  ``train`` adds ``loss.sep_weight * L_sep`` with L_sep the separator's own multitask loss
  (:func:`jrsv_stream.train.losses.multitask_loss`: SI-SDR per present source + activity
  BCE), on each item's own length; its parameters have their own peak lr
  (``optim.sep_lr``). ``separator.stage1_steps`` keeps it frozen for the first steps
  (the JRSV two-stage curriculum: stage 1 only the recognizer learns, stage 2 both).
  The recognizer hears the separator's output exactly as the live pipeline does (delayed
  by ``output_delay_samples``).
- Online distillation (``distill.enabled``): a frozen teacher (``distill.teacher``,
  default ``asr.init``) hears the CLEAN stems (speech stem on track 0, singing stem on
  track 1, delayed like the separator's output so frames line up) with the same chunk
  mask; rows whose source is absent are not distilled (the teacher would hear silence
  it never learned; the empty target covers them). The student adds ``loss.distill_weight *
  (c * KL_ctc + (1 - c) * KL_att)``, KL(teacher || student) of the temperature-``T``
  softened CTC posteriors (per frame) and of the teacher-forced attention-decoder
  posteriors (per reference token + <eos>), times ``T^2``, summed over frames/tokens and
  averaged over rows like the hybrid loss; ``c`` = ``distill.ctc_weight`` (default: the
  recognizer's ``ctc_weight``).
- Total: ``asr_weight * L_asr + sep_weight * L_sep + distill_weight * L_kd``. Adam (one
  group per model), warm-up + noam/cosine (:func:`jrsv_stream.train.common.lr_lambda`)
  on both groups, gradient clipping per model; a non-finite loss skips the step.
- Validation every ``train.valid_every_steps`` on ``data.valid_manifest`` (first
  ``data.valid_items`` items, whole): greedy-CTC WER/CER per caption track (``speech``,
  ``lyrics``) at ``train.valid_chunk_frames`` (8 = 320 ms chunks), counted as
  ``jrsv-stream eval`` does (words on a track whose source is absent are insertions,
  also reported as ``hallucinated_words``), plus the separator's SI-SDRi per source.
  The best (lowest mean WER over the two tracks) is kept in ``runs/<name>/best/``.
- Checkpoints ``runs/<name>/checkpoints/step-XXXXXXXX.pt`` every
  ``train.ckpt_every_steps`` and when stopped (SIGTERM, first Ctrl-C, ``max_minutes``):
  recognizer, separator, optimizer, scheduler, step, epoch position, RNG. Running the same
  command again resumes; ``train.max_minutes`` counts over all resumes.
- Export (when training ends): ``export_dir`` becomes a pipeline folder:
  ``separator/`` (:func:`save_separator` format; absent for ``separator.mode: none``),
  ``asr/`` (:meth:`ASRModel.save_pretrained` + tokenizer), ``README.md`` (how to score it)
  and ``train_summary.json`` (config, steps, minutes, best valid metrics)::

      jrsv-stream eval data/corpus/test.jsonl --pipeline EXPORT_DIR          # with a separator
      jrsv-stream eval data/corpus/test.jsonl --separator none --asr EXPORT_DIR/asr

Paths in the config are relative to the working directory (run from the repository root).
"""

from __future__ import annotations

import os


# Passive OpenMP waiting (see jrsv_stream.train.asr): only effective when imported before torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from jrsv_stream import SAMPLE_RATE  # noqa: E402
from jrsv_stream.config import ConfigError  # noqa: E402
from jrsv_stream.train.asr import sample_chunk  # noqa: E402
from jrsv_stream.train.asr_data import make_batches, make_loader  # noqa: E402
from jrsv_stream.train.common import (EXIT_CODES, StopFlag, add_train_args, append_jsonl, bf16_autocast_ok, budget_spent,  # noqa: E402
                                      list_step_checkpoints, load_step_checkpoint, lr_lambda, pick_device,
                                      prune_checkpoints, rng_state, save_atomic, set_rng_state)
# the trainer's parts, split by what they do (re-exported: tests and callers import them from here)
from jrsv_stream.train.joint_config import (ABSENT_TRACK_MODES, CAPTION_TRACKS, CKPT_VERSION, SEPARATOR_MODES,  # noqa: E402
                                            SINGING, SPEECH, DistillConfig, JointDataConfig, JointLoopConfig,
                                            JointOptimConfig, JointTrainConfig, LossConfig, RecognizerSection,
                                            SeparatorSection, config_from_raw, load_config)
from jrsv_stream.train.joint_data import JointBatch, JointDataset, collate_items, item_durations, item_texts  # noqa: E402
from jrsv_stream.train.joint_losses import JointModels, compute_losses, hybrid_outputs, kl_divergence  # noqa: E402
from jrsv_stream.train.joint_models import (_hop, _plain, _set_trainable, export_pipeline, load_models,  # noqa: E402
                                            save_pipeline, validate)

__all__ = ["ABSENT_TRACK_MODES", "CAPTION_TRACKS", "CKPT_VERSION", "SEPARATOR_MODES", "SINGING", "SPEECH", "DistillConfig",
           "JointBatch", "JointDataConfig", "JointDataset", "JointLoopConfig", "JointModels", "JointOptimConfig",
           "JointTrainConfig", "LossConfig", "RecognizerSection", "SeparatorSection", "add_cli", "collate_items",
           "compute_losses", "config_from_raw", "export_pipeline", "hybrid_outputs", "item_durations", "item_texts",
           "kl_divergence", "list_checkpoints", "load_checkpoint", "load_config", "load_models", "main",
           "save_pipeline", "train_joint", "validate"]


# --- training -------------------------------------------------------------------------------------
def _setup_key(cfg: JointTrainConfig) -> dict:
    """What a checkpoint must agree on with the config to be resumed."""
    return {"separator.mode": cfg.separator.mode, "separator.init": cfg.separator.init, "asr.init": cfg.asr.init,
            "distill.enabled": cfg.distill.enabled}


def list_checkpoints(run_dir: Path) -> list[Path]:
    """``run_dir/checkpoints/step-XXXXXXXX.pt``, oldest first."""
    return list_step_checkpoints(Path(run_dir) / "checkpoints", "step-")


def load_checkpoint(path: Path) -> dict:
    """Read a joint checkpoint; a corrupt or foreign file is a RuntimeError saying what to do."""
    return load_step_checkpoint(path, {"version", "step", "epoch", "batch_in_epoch", "asr", "separator", "optimizer",
                                       "scheduler", "rng", "setup"}, CKPT_VERSION)


def train_joint(config_path: str | os.PathLike, resume: bool = True, device: str | None = None,
                max_minutes: float | None = None, export_only: bool = False) -> dict:
    """Train (or resume) the joint system a config describes, then export the best.

    Args:
        config_path: YAML file (:class:`JointTrainConfig`).
        resume: continue from the run's latest checkpoint; False starts over (deletes the
            run's checkpoints, log and best model).
        device: overrides ``train.device`` (auto | cpu | cuda).
        max_minutes: overrides ``train.max_minutes`` (total over resumes).
        export_only: copy ``runs/<name>/best`` to the export folder and return.

    Returns:
        ``{"status": "finished" | "interrupted" | "sigterm" | "exported", "step", "epoch",
        "best_metric", "best_step", "run_dir", "export_dir", "steps_this_run", "minutes",
        "audio_s_per_s"}``.

    Raises:
        ConfigError: bad config, or a checkpoint made with another setup.
        RuntimeError: a corrupt checkpoint. FileNotFoundError: missing model folders or
        manifests.
    """
    from jrsv_stream.data.dynamic import ManifestDataset

    cfg = load_config(config_path)
    raw_cfg = yaml.safe_load(Path(config_path).read_text())
    run_dir = Path(cfg.runs_dir) / cfg.name
    best_dir = run_dir / "best"
    if export_only:
        summ = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
        return {"status": "exported", "export_dir": str(export_pipeline(best_dir, cfg, {**summ, "config": raw_cfg}))}
    lc = cfg.train
    if lc.threads > 0:
        torch.set_num_threads(lc.threads)
    dev = pick_device(device or lc.device)
    limit_s = 60.0 * (max_minutes if max_minutes is not None else lc.max_minutes)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        for p in list_checkpoints(run_dir):
            p.unlink()
        (run_dir / "log.jsonl").unlink(missing_ok=True)
        shutil.rmtree(best_dir, ignore_errors=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(raw_cfg, sort_keys=False))
    log_path = run_dir / "log.jsonl"

    torch.manual_seed(cfg.seed)
    models, tokenizer, info = load_models(cfg, dev)
    asr, sep = models.asr, models.separator
    hop = _hop(sep, asr)

    # data: whole items, texts tokenized once
    train_items = ManifestDataset(cfg.data.train_manifest, hop)
    durs = item_durations(train_items)
    keep = [i for i, d in enumerate(durs) if d <= cfg.data.max_item_s]
    train_items.items = [train_items.items[i] for i in keep]
    durs = [durs[i] for i in keep]
    if not train_items.items:
        raise ValueError(f"{cfg.data.train_manifest}: no items of at most {cfg.data.max_item_s} s")
    train_texts = item_texts(train_items)
    train_tokens = [tuple(tokenizer.encode(t) if t else [] for t in tt) for tt in train_texts]
    valid_items = ManifestDataset(cfg.data.valid_manifest, hop, max_items=cfg.data.valid_items or None)
    valid_examples = [valid_items[i] for i in range(len(valid_items))]
    valid_texts = item_texts(valid_items)
    valid_plan = make_batches([e["length"] / SAMPLE_RATE for e in valid_examples], cfg.data.valid_batch_seconds,
                              cfg.data.max_batch)

    # optimizer: recognizer group (+ separator group in mode train)
    sep_trainable = cfg.separator.mode == "train"
    groups = [{"params": list(asr.parameters()), "lr": cfg.optim.lr}]
    if sep_trainable:
        groups.append({"params": list(sep.parameters()), "lr": cfg.optim.sep_lr})
    opt = torch.optim.Adam(groups, lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay,
                           fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.optim, lc.max_steps))
    step = epoch = batch_in_epoch = 0
    elapsed_s = audio_total_s = 0.0
    best: dict[str, Any] = {"metric": float("inf"), "step": -1, "valid": None}
    ckpts = list_checkpoints(run_dir) if resume else []
    con = _console()
    if ckpts:
        ck = load_checkpoint(ckpts[-1])
        if ck["setup"] != _setup_key(cfg):
            raise ConfigError(f"{ckpts[-1]} was made with another setup {ck['setup']} (config: {_setup_key(cfg)}); "
                              f"use another name or --no-resume")
        asr.load_state_dict(ck["asr"])
        if sep is not None and ck["separator"] is not None:
            sep.load_state_dict(ck["separator"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        step, epoch, batch_in_epoch = ck["step"], ck["epoch"], ck["batch_in_epoch"]
        elapsed_s, audio_total_s = ck.get("elapsed_s", 0.0), ck.get("audio_s", 0.0)
        best = ck.get("best", best)
        set_rng_state(ck["rng"])
        con.print(f"resumed {ckpts[-1]} (step {step}, epoch {epoch}, batch {batch_in_epoch})")
    use_amp = bf16_autocast_ok(lc.amp, dev)

    def log(rec: dict) -> None:
        append_jsonl(log_path, rec)

    def save_ckpt() -> Path:
        path = run_dir / "checkpoints" / f"step-{step:08d}.pt"
        save_atomic({"version": CKPT_VERSION, "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
                     "elapsed_s": elapsed_s, "audio_s": audio_total_s, "best": best, "setup": _setup_key(cfg),
                     "asr": asr.state_dict(), "separator": sep.state_dict() if sep is not None else None,
                     "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": rng_state(),
                     "config": raw_cfg}, path)
        prune_checkpoints(run_dir / "checkpoints", "step-", lc.keep_checkpoints)
        return path

    def run_validation() -> dict:
        nonlocal best
        tv = time.monotonic()
        m = validate(models, valid_examples, valid_texts, valid_plan, tokenizer, lc.valid_chunk_frames,
                     lc.valid_left_chunks, dev)
        if m["wer_mean"] < best["metric"] or not (best_dir / "asr" / "asr.pt").is_file():
            best = {"metric": m["wer_mean"], "step": step, "valid": _plain(m)}
            save_pipeline(best_dir, models, info, cfg, {"name": cfg.name, "step": step, "valid": m,
                                                        "separator_mode": cfg.separator.mode,
                                                        "distill": cfg.distill.enabled})
        log({"kind": "valid", "step": step, **m, "best_step": best["step"], "seconds": round(time.monotonic() - tv, 1)})
        sepm = m["separation"]
        con.print(f"step {step} valid: WER speech {m['speech']['wer']} lyrics {m['lyrics']['wer']} "
                  f"(hallucinated {m['speech']['hallucinated_words']}/{m['lyrics']['hallucinated_words']} words)"
                  + (f", SI-SDRi {sepm['si_sdri_mean']:.2f} dB" if sepm else "") + f"; best step {best['step']}")
        return m

    n_rows = sum(len(tt[0]) > 0 for tt in train_tokens) + sum(len(tt[1]) > 0 for tt in train_tokens)
    con.print(f"[bold]train joint[/] {run_dir}: separator {cfg.separator.mode}"
              + (f" (stage 1: {cfg.separator.stage1_steps} steps)" if sep_trainable else "")
              + (", distillation" if cfg.distill.enabled else "")
              + f"; {len(train_items)} train items ({sum(durs) / 3600:.2f} h, {n_rows} non-empty targets), "
                f"{len(valid_examples)} valid, device {dev}")

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    status: str | None = None
    last_valid_step = -1
    run_t0, run_audio0, steps_t0 = time.monotonic(), audio_total_s, step
    stage_on: bool | None = None
    with StopFlag() as stop, Progress(TextColumn(f"[bold]{cfg.name}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=con,
                                      disable=not lc.progress) as prog:
        task = prog.add_task("train", total=lc.max_steps or None, completed=step, info="")
        t_last = time.monotonic()
        if budget_spent(step, elapsed_s, lc.max_steps, limit_s):
            status = "done"  # a resumed run already at its limit takes no further step
        try:
            while epoch < lc.max_epochs and status is None:
                plan = make_batches(durs, cfg.data.batch_seconds, cfg.data.max_batch,
                                    np.random.default_rng([cfg.seed, epoch]))
                if batch_in_epoch >= len(plan):
                    epoch, batch_in_epoch = epoch + 1, 0
                    continue
                ds = JointDataset(train_items, train_tokens, train_texts, plan[batch_in_epoch:])
                for batch in make_loader(ds, cfg.data.num_workers):
                    trains = sep_trainable and step >= cfg.separator.stage1_steps
                    if trains != stage_on:
                        if sep_trainable:
                            _set_trainable(sep, trains)
                        stage_on = trains
                    rng = np.random.default_rng([cfg.seed, epoch, batch_in_epoch, 1])
                    chunk, left = sample_chunk(cfg.chunk, rng)
                    out = compute_losses(models, batch, cfg, chunk, left, trains, dev, use_amp,
                                         np.random.default_rng([cfg.seed, epoch, batch_in_epoch, 2]))
                    loss = out["total"]
                    opt.zero_grad(set_to_none=True)
                    gn_asr = gn_sep = float("nan")
                    if torch.isfinite(loss) and loss.requires_grad:
                        loss.backward()
                        gn_asr = float(torch.nn.utils.clip_grad_norm_(asr.parameters(), cfg.optim.grad_clip))
                        if trains:
                            gn_sep = float(torch.nn.utils.clip_grad_norm_(sep.parameters(), cfg.optim.grad_clip))
                        if math.isfinite(gn_asr) and (not trains or math.isfinite(gn_sep)):
                            opt.step()
                        else:
                            log({"kind": "skip", "step": step, "reason": "non-finite gradient"})
                    else:
                        log({"kind": "skip", "step": step, "reason": "non-finite loss"})
                    opt.zero_grad(set_to_none=True)
                    sched.step()
                    step += 1
                    batch_in_epoch += 1
                    audio_total_s += batch.audio_s
                    now = time.monotonic()
                    elapsed_s += now - t_last
                    t_last = now
                    speed = (audio_total_s - run_audio0) / max(1e-9, now - run_t0)
                    rec = {k: float(v.detach()) for k, v in out.items()}
                    prog.update(task, completed=step, info=(
                        f"ep {epoch} loss {rec['total']:.2f} asr {rec['asr']:.2f} "
                        + (f"sep {rec['sep']:.2f} " if trains else "")
                        + (f"kd {rec['kd']:.2f} " if models.teacher is not None else "")
                        + f"lr {sched.get_last_lr()[0]:.1e} {speed:.1f} audio-s/s"))
                    if step % lc.log_every_steps == 0:
                        log({"kind": "train", "step": step, "epoch": epoch, **rec, "stage": 2 if trains else 1,
                             "lr": sched.get_last_lr()[0], "sep_lr": sched.get_last_lr()[-1] if sep_trainable else None,
                             "grad_norm_asr": gn_asr, "grad_norm_sep": gn_sep, "chunk": chunk, "left": left,
                             "audio_s_per_s": speed, "elapsed_s": elapsed_s})
                    if lc.valid_every_steps and step % lc.valid_every_steps == 0:
                        run_validation()
                        last_valid_step = step
                        t_last = time.monotonic()  # validation time counts towards the budget below
                        elapsed_s += t_last - now
                    if stop.reason:
                        status = stop.reason
                    elif budget_spent(step, elapsed_s, lc.max_steps, limit_s):
                        status = "done"
                    if status is not None or step % lc.ckpt_every_steps == 0:
                        save_ckpt()
                    if status is not None:
                        break
                else:
                    epoch, batch_in_epoch = epoch + 1, 0
        except KeyboardInterrupt:
            save_ckpt()
            raise
        except Exception:
            if not stop.reason:  # e.g. the data worker killed by the same process-group signal
                raise
            save_ckpt()
            status = stop.reason
    status = "finished" if status in (None, "done") else status
    minutes = elapsed_s / 60.0
    summary = {"status": status, "step": step, "epoch": epoch, "best_metric": best["metric"], "best_step": best["step"],
               "run_dir": str(run_dir), "export_dir": None, "steps_this_run": step - steps_t0, "minutes": minutes,
               "audio_s_per_s": (audio_total_s - run_audio0) / max(1e-9, time.monotonic() - run_t0)}
    if status == "finished":
        if last_valid_step != step:
            run_validation()
            save_ckpt()  # the best record changed
        summary.update(best_metric=best["metric"], best_step=best["step"])
        full = {**summary, "name": cfg.name, "config_path": str(config_path), "config": raw_cfg,
                "best_valid": best["valid"], "separator_mode": cfg.separator.mode, "distill": cfg.distill.enabled}
        (run_dir / "summary.json").write_text(json.dumps(_plain(full), indent=1))
        summary["export_dir"] = str(export_pipeline(best_dir, cfg, full))
    log({"kind": "end", **summary})
    con.print(f"{status}: step {step}, best mean WER {best['metric']:.2f} % at step {best['step']}"
              + (f"; exported to {summary['export_dir']}" if summary["export_dir"] else
                 "; run the same command again to resume"))
    return summary


def _console():
    from rich.console import Console

    return Console(stderr=True)


# --- command line ---------------------------------------------------------------------------------
def _cmd(a: argparse.Namespace) -> int:
    s = train_joint(a.config, resume=not a.no_resume, device=a.device, max_minutes=a.max_minutes,
                    export_only=a.export_only)
    return EXIT_CODES[s["status"]]


def _add_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_train_args(p, "joint training config YAML (configs/joint_*.yaml)", "copy the run's best pipeline to export_dir and exit")
    p.set_defaults(fn=_cmd)
    return p


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register ``joint`` on the ``train`` command's subparsers (``jrsv-stream train joint``).
    The handler returns the exit code: 0 done, 130 Ctrl-C, 143 SIGTERM."""
    return _add_args(subparsers.add_parser(
        "joint", help="fine-tune separator + recognizer: mixture ASR, cascade, joint, distillation (resumable)"))


def main(argv: list[str] | None = None) -> int:
    args = _add_args(argparse.ArgumentParser(prog="python -m jrsv_stream.train.joint",
                                             description="Joint separator + recognizer training (resumable).")
                     ).parse_args(argv)
    from jrsv_stream.runner import run_handler

    return run_handler(args, "train joint")


if __name__ == "__main__":
    sys.exit(main())
