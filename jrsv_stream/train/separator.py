"""Train the MTASS separator: ``jrsv-stream train separator --config configs/separator_stft.yaml``.

- Data: dynamic mixing from the corpus's cached train sources
  (:class:`jrsv_stream.data.dynamic.DynamicMixDataset`), batch ``b`` fixed by the seed, so
  a resumed run sees exactly the batches it would have seen.
- Loss: ``alpha * L_sep + (1 - alpha) * L_act`` (:mod:`jrsv_stream.train.losses`).
- Adam, linear warm-up then cosine decay to ``lr_min``, gradient clipping; non-finite
  losses skip the step (counted in the log).
- Validation every ``valid_every`` steps on the fixed valid manifest: SI-SDRi per source
  (present sources only), activity AUROC/F1; the best model (mean SI-SDRi over the three
  sources) is exported to ``export_dir`` as ``separator.pt`` + ``config.yaml``.
- Checkpoints ``runs/<name>/ckpt-<step>.pt`` every ``ckpt_every`` steps and on exit
  (end, ``--max-minutes``, SIGTERM, first Ctrl-C; a second Ctrl-C quits at once); the
  same command resumes from the latest (data stream, optimizer, RNG included).
  ``runs/<name>/log.jsonl`` holds the training and validation records.

Paths in the config are relative to the working directory (run from the repository root).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from jrsv_stream import SAMPLE_RATE
from jrsv_stream.data.augment import AugmentConfig
from jrsv_stream.eval.separation import score_separation_item, summarize_separation
from jrsv_stream.nn.separator import (ConfigError, SeparatorConfig, build_separator, config_from_dict, count_parameters,
                                      load_separator, save_separator)
from jrsv_stream.train.recognizer_loss import RecognizerLossConfig
from jrsv_stream.train.common import (StopFlag, add_train_args, list_step_checkpoints, pick_device, prune_checkpoints,
                                     save_atomic)

CKPT_FORMAT = 1


# --- config ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataConfig:
    """corpus: corpus folder (sources + manifests); valid_manifest: default
    ``<corpus>/valid.jsonl``; crop_s: training crop (rounded to the model hop);
    valid_items / valid_max_s: cap the validation cost (None: all items, whole);
    augment: training effects on the stems (EQ, reverb, level automation, compression, level),
    see :mod:`jrsv_stream.data.augment` (off unless ``augment.enabled``);
    real_speech / p_real_speech: a real-speech pool (``jrsv-stream data real-speech``) whose
    talk replaces an example's speech stem with that probability (0: never); real_singing /
    p_real_singing: the same talk sung (``jrsv-stream data real-speech --sung``), for the
    singing stem; music_pool / p_music_pool: a music pool (``jrsv-stream data music-pool``:
    the corpus's composer through other renderers than FluidR3 and the out-of-domain set's
    soundfonts) whose pieces replace an example's music stem with that probability, at the
    replaced stem's level (0: never); p_no_music: the share of examples whose music is
    silenced (the voices alone, as from a clean microphone; 0: never)."""

    corpus: str = "data/corpus"
    train_split: str = "train"
    valid_manifest: str | None = None
    crop_s: float = 4.0
    batch_size: int = 8
    num_workers: int = 1
    seed: int = 0
    valid_items: int | None = 64
    valid_max_s: float | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    real_speech: str | None = None
    p_real_speech: float = 0.0
    real_singing: str | None = None
    p_real_singing: float = 0.0
    music_pool: str | None = None
    p_music_pool: float = 0.0
    p_no_music: float = 0.0


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-3
    lr_min: float = 1e-4
    warmup_steps: int = 200
    weight_decay: float = 0.0
    grad_clip: float = 5.0
    max_steps: int = 10000
    max_minutes: float | None = None
    alpha: float = 0.9
    presence_db: float = -30.0
    # > -inf: the speech output's target keeps the example's music this many dB down where
    # the example has speech (speech_target(): a separator that leaves some music but does not
    # cut into the voice; Whisper reads a voice with its music 12 dB down at its clean WER)
    speech_keep_music_db: float = float("-inf")


def speech_target(stems: torch.Tensor, keep_music_db: float) -> torch.Tensor:
    """``stems`` (B, 3, T) with ``10 ** (keep_music_db / 20)`` x the music added to the
    speech stem of the examples that have speech (others unchanged); -inf: ``stems`` itself."""
    if keep_music_db == float("-inf"):
        return stems
    has = (stems[:, 0].abs().amax(dim=-1) > 0).to(stems.dtype)[:, None]
    out = stems.clone()
    out[:, 0] = stems[:, 0] + has * 10 ** (keep_music_db / 20) * stems[:, 2]
    return out


@dataclass(frozen=True)
class RunConfig:
    runs_dir: str = "runs"
    export_dir: str = "models/separator"
    device: str = "auto"
    threads: int = 0  # torch CPU threads (0: leave torch's default)
    log_every: int = 20
    ckpt_every: int = 250
    valid_every: int = 500
    keep_checkpoints: int = 3
    # warm start of a NEW run (no checkpoint to resume) from a separator model folder or
    # separator.pt of the same model config: weights only, fresh optimizer and schedule
    init_from: str = ""
    # which weights are exported to export_dir: "si_sdri" (the best valid mean SI-SDRi) or
    # "last" (the final weights; for recognizer-loss runs, whose aim is not SI-SDR alone)
    select: str = "si_sdri"


@dataclass(frozen=True)
class TrainSeparatorConfig:
    name: str
    model: SeparatorConfig = field(default_factory=SeparatorConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    # recognition losses through the Whisper-CTC recognizer (joint fine-tuning, frozen-
    # separator head adaptation, distillation): jrsv_stream.train.recognizer_loss
    recognizer: RecognizerLossConfig = field(default_factory=RecognizerLossConfig)


def load_train_config(path: str | os.PathLike) -> TrainSeparatorConfig:
    """Read a YAML training config strictly (unknown keys are errors)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config not found: {path}")
    try:
        d = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    try:
        return config_from_dict(TrainSeparatorConfig, d)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


def dump_config(cfg: TrainSeparatorConfig) -> str:
    import yaml

    return yaml.safe_dump(json.loads(json.dumps(asdict(cfg))), sort_keys=False)


# --- checkpoints ----------------------------------------------------------------------------------
class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not belong to this run."""


def list_checkpoints(run_dir: Path) -> list[Path]:
    """``run_dir/ckpt-<step>.pt``, oldest first."""
    return list_step_checkpoints(run_dir, "ckpt-")


def save_checkpoint(run_dir: Path, step: int, model, opt, extra: dict, keep: int) -> Path:
    rng = {"torch": torch.get_rng_state()}  # torch only: the file must load with weights_only=True
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    path = save_atomic({"format": CKPT_FORMAT, "step": step, "model": model.state_dict(), "optim": opt.state_dict(),
                        "rng": rng, **extra}, run_dir / f"ckpt-{step:08d}.pt")
    if keep > 0:
        prune_checkpoints(run_dir, "ckpt-", keep)
    return path


def load_checkpoint(path: Path) -> dict:
    """Read a training checkpoint; a corrupt or foreign file is a :class:`CheckpointError`."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({type(e).__name__}: {e}); "
                              f"delete it to resume from an earlier one, or start fresh with --no-resume") from e
    if not isinstance(ck, dict) or ck.get("format") != CKPT_FORMAT or not {"step", "model", "optim"} <= set(ck):
        raise CheckpointError(f"{path} is not a separator training checkpoint (format {CKPT_FORMAT})")
    return ck


# --- validation -----------------------------------------------------------------------------------
@torch.no_grad()
def validate(model, dataset, device: torch.device) -> dict:
    """SI-SDRi per source (present sources) and activity AUROC/F1 over a ManifestDataset.

    SNR buckets (-5/0/+5 dB, nearest): speech and singing use their own region SNR;
    music uses the mean SNR of the item's vocals (music is the "noise" of both).

    Returns:
        ``{"si_sdri": {source: mean dB}, "si_sdri_mean": mean over sources, "si_sdr":
        {source: mean dB}, "si_sdri_by_snr": {source: {bucket: mean dB}}, "counts_by_snr":
        {source: {bucket: n}}, "activity": {vocal: {"auroc", "f1"}}, "items": n}``.
    """
    was_training = model.training
    model.eval()
    D = model.output_delay_samples
    scores = []
    for ex in dataset:
        out = model(ex["mixture"][None].to(device))
        n = ex["length"] - D
        n_frames = -(-ex["length"] // model.hop_samples)
        scores.append(score_separation_item(out.sources[0, :, D:D + n].cpu().numpy(),
                                            out.activity_probs[0, :, :n_frames].cpu().numpy(), ex, n))
    model.train(was_training)
    return summarize_separation(scores, len(dataset))


def evaluate_separator(model_path: str | os.PathLike, manifest: str | os.PathLike, device: str = "cpu",
                       max_items: int | None = None) -> dict:
    """Metrics of a saved separator on a manifest (e.g. the corpus test split, for the model
    card): :func:`validate` over whole items, plus the model's latency and size.

    ``forward`` is used for speed; it equals the streaming ``step`` path (tests/test_separator.py).
    """
    from jrsv_stream.data.dynamic import ManifestDataset
    from jrsv_stream.nn.separator import load_separator

    dev = pick_device(device)
    model, cfg, meta = load_separator(model_path, dev)
    res = validate(model, ManifestDataset(manifest, model.hop_samples, max_items=max_items), dev)
    return {"manifest": str(manifest), "model": str(model_path), "arch": cfg.arch, **model.describe(),
            "trained_steps": meta.get("step"), **res}


# --- training -------------------------------------------------------------------------------------
def _worker_init(worker_id: int) -> None:
    """Data workers ignore SIGTERM and Ctrl-C: only the main process stops, checkpoints,
    then shuts the workers down. A worker killed by a process-group signal would otherwise
    abort the main process mid-step."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


def lr_at(step: int, o: OptimConfig) -> float:
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    t = min(1.0, (step - o.warmup_steps) / max(1, o.max_steps - o.warmup_steps))
    return o.lr_min + 0.5 * (o.lr - o.lr_min) * (1.0 + math.cos(math.pi * t))


def _active_model_config(m: SeparatorConfig) -> dict:
    """The part of the model config that shapes the weights: arch + that arch's section (an STFT
    model without refinement layers leaves their fields out, as checkpoints from before them do)."""
    sec = asdict(getattr(m, m.arch))
    if m.arch == "stft_mask" and not sec.get("refine_layers"):
        sec.pop("refine_layers", None)
        sec.pop("refine_hidden", None)
    return {"arch": m.arch, m.arch: sec}


def _grown_from(init_cfg: SeparatorConfig, cfg: SeparatorConfig) -> bool:
    """True when ``cfg`` is ``init_cfg`` with refinement layers added (an STFT model without them)."""
    if cfg.arch != "stft_mask" or init_cfg.arch != "stft_mask" or init_cfg.stft_mask.refine_layers:
        return False
    without = dataclasses.replace(cfg, stft_mask=dataclasses.replace(cfg.stft_mask, refine_layers=0))
    return _active_model_config(init_cfg) == _active_model_config(without)


def _export_best(model, cfg: TrainSeparatorConfig, metrics: dict, step: int, run_dir: Path, rec=None) -> None:
    meta = {"step": step, "name": cfg.name, "valid": metrics, "parameters": count_parameters(model),
            **{k: v for k, v in model.describe().items() if k != "parameters"}}
    save_separator(model, cfg.model, run_dir / "best.pt", meta)
    out = Path(cfg.run.export_dir)
    save_separator(model, cfg.model, out / "separator.pt", meta)
    tmp = out / "config.yaml.part"
    tmp.write_text(dump_config(cfg))
    os.replace(tmp, out / "config.yaml")
    _calibrate_export(out, Path(cfg.data.corpus) / "valid.jsonl")
    if rec is not None and rec.cfg.train_head:  # the adapted head: a whole recognizer folder beside the separator
        _export_head(rec, Path(rec.cfg.asr), out / "asr", step)


def _calibrate_export(out: Path, manifest: Path) -> None:
    """The exported separator's output level for the recognizer (``calibration.json``, see
    :mod:`jrsv_stream.eval.calibrate`): without it the pipeline would feed the recognizer
    tracks ~26 dB below their natural level. A stale one is removed when it cannot be made."""
    from jrsv_stream.eval.calibrate import calibrate_separator
    from jrsv_stream.nn.pipeline import CALIBRATION_FILE

    try:
        calibrate_separator(out, manifest, max_items=40)
    except (FileNotFoundError, ValueError) as e:
        (out / CALIBRATION_FILE).unlink(missing_ok=True)
        print(f"warning: {out} not calibrated ({e}); the pipeline will use it at 0 dB", file=sys.stderr)


def _export_head(rec, src: Path, dst: Path, step: int) -> None:
    """``dst`` = the recognizer folder ``src`` with the adapted ``ctc_head.pt``."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.name not in ("ctc_head.pt", "MODEL_CARD.md"):
            shutil.copyfile(f, dst / f.name)
    save_atomic(rec.model.heads.state_dict(), dst / "ctc_head.pt")
    (dst / "ADAPTED.md").write_text(f"CTC head of {src} adapted on separated tracks (step {step}); "
                                    f"the rest of the folder is {src}'s.\n")


def train_separator(config_path: str, resume: bool = True, device: str | None = None, max_minutes: float | None = None,
                    progress: bool = True) -> dict:
    """Train (or resume) a separator as the config says.

    Args:
        config_path: YAML file for :class:`TrainSeparatorConfig`.
        resume: continue from the latest checkpoint in ``runs/<name>/`` when there is one.
        device: ``auto``/``cpu``/``cuda`` (default: the config's ``run.device``).
        max_minutes: wall-clock budget of this invocation (default: the config's).
        progress: show a rich progress bar.

    Returns:
        ``{"step", "stopped" (max_steps | max_minutes | sigterm | sigint), "best" (valid metrics of the best model or None),
        "run_dir", "export_dir"}``.

    Raises:
        ConfigError / CheckpointError (ValueError): bad config or unreadable checkpoint.
    """
    cfg = load_train_config(config_path)
    o, r, dc = cfg.optim, cfg.run, cfg.data
    dev = pick_device(device or r.device)
    if r.threads > 0:
        torch.set_num_threads(r.threads)
    budget_min = max_minutes if max_minutes is not None else o.max_minutes
    torch.manual_seed(dc.seed)
    model = build_separator(cfg.model).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    run_dir = Path(r.runs_dir) / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    step, best, best_step, skipped, elapsed_before = 0, -math.inf, None, 0, 0.0
    ckpts = list_checkpoints(run_dir) if resume else []
    if ckpts:
        ck = load_checkpoint(ckpts[-1])
        have, want = ck.get("model_config"), _active_model_config(cfg.model)
        if have != want:
            diff = {k: (have.get(k) if isinstance(have, dict) else None, v) for k, v in want.items()
                    if not isinstance(have, dict) or have.get(k) != v}
            raise CheckpointError(f"{ckpts[-1]} was trained with another model config (checkpoint, config): {diff}; "
                                  f"use another name or --no-resume")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optim"])
        step, best, best_step = ck["step"], ck.get("best", -math.inf), ck.get("best_step")
        skipped, elapsed_before = ck.get("skipped", 0), ck.get("elapsed_s", 0.0)
        torch.set_rng_state(ck["rng"]["torch"])
        if dev.type == "cuda" and "cuda" in ck["rng"]:
            torch.cuda.set_rng_state_all(ck["rng"]["cuda"])
    elif r.init_from:
        init_path = Path(r.init_from)
        src = init_path / "separator.pt" if init_path.is_dir() else init_path
        if not src.is_file():
            raise FileNotFoundError(f"run.init_from {r.init_from}: no separator.pt there")
        init_model, init_cfg, _ = load_separator(src)
        if _active_model_config(init_cfg) == _active_model_config(cfg.model):
            model.load_state_dict(init_model.state_dict())
            print(f"warm start from {src} (weights only)", file=sys.stderr)
        elif _grown_from(init_cfg, cfg.model):
            # a deeper model grown from a shallower one: its refinement layers start as the identity
            missing, unexpected = model.load_state_dict(init_model.state_dict(), strict=False)
            if unexpected or any(not k.startswith("refine_") for k in missing):
                raise CheckpointError(f"run.init_from {src}: cannot grow this model from it "
                                      f"(missing {missing}, unexpected {unexpected})")
            print(f"warm start from {src}, {cfg.model.stft_mask.refine_layers} refinement layers added "
                  f"(identity at start)", file=sys.stderr)
        else:
            raise CheckpointError(f"run.init_from {src}: its model config differs from this config's model")
    rc = cfg.recognizer
    rec, opt_head = None, None
    if r.select not in ("si_sdri", "last"):
        raise ConfigError(f"run.select must be 'si_sdri' or 'last', got {r.select!r}")
    if rc.enabled:
        from jrsv_stream.train.recognizer_loss import RecognizerLoss

        from jrsv_stream.nn.pipeline import separator_track_gain

        gain_db = 20.0 * math.log10(separator_track_gain(r.init_from)) if r.init_from else 0.0
        rec = RecognizerLoss(rc, gain_db=gain_db).to(dev)
        print(f"recognizer loss: separated tracks at {rec.gain:.1f}x "
              f"({20 * math.log10(rec.gain):+.1f} dB)", file=sys.stderr)
        if rc.train_head:
            opt_head = torch.optim.Adam(rec.head_parameters(), lr=rc.head_lr)
            if ckpts and "head" in ck:
                rec.model.heads.load_state_dict(ck["head"])
                opt_head.load_state_dict(ck["head_optim"])
        rec.model.heads.train(rc.train_head)
    (run_dir / "config.yaml").write_text(dump_config(cfg))

    from torch.utils.data import DataLoader

    from jrsv_stream.data.dynamic import DynamicMixDataset, ManifestDataset
    from jrsv_stream.train.losses import multitask_loss

    hop = model.hop_samples
    crop = max(1, int(round(dc.crop_s * SAMPLE_RATE / hop))) * hop
    train_ds = DynamicMixDataset(dc.corpus, dc.train_split, crop, hop, batch_size=dc.batch_size, seed=dc.seed,
                                 start_batch=step, augment=dc.augment, real_speech=dc.real_speech,
                                 p_real_speech=dc.p_real_speech, real_singing=dc.real_singing,
                                 p_real_singing=dc.p_real_singing, music_pool=dc.music_pool,
                                 p_music_pool=dc.p_music_pool, p_no_music=dc.p_no_music)
    loader = DataLoader(train_ds, batch_size=None, num_workers=dc.num_workers, pin_memory=dev.type == "cuda",
                        prefetch_factor=4 if dc.num_workers > 0 else None, persistent_workers=False,
                        worker_init_fn=_worker_init if dc.num_workers > 0 else None)
    valid_path = Path(dc.valid_manifest) if dc.valid_manifest else Path(dc.corpus) / "valid.jsonl"
    valid_ds = ManifestDataset(valid_path, hop, max_seconds=dc.valid_max_s, max_items=dc.valid_items)

    log_f = open(run_dir / "log.jsonl", "a", encoding="utf-8")

    def log(rec: dict) -> None:
        log_f.write(json.dumps(rec) + "\n")
        log_f.flush()

    def checkpoint() -> Path:
        extra = {"best": best, "best_step": best_step, "skipped": skipped, "model_config": _active_model_config(cfg.model),
                 "elapsed_s": elapsed_before + time.time() - t0}
        if opt_head is not None:
            extra.update(head=rec.model.heads.state_dict(), head_optim=opt_head.state_dict())
        return save_checkpoint(run_dir, step, model, opt, extra, r.keep_checkpoints)

    def run_validation(final: bool = False) -> dict:
        nonlocal best, best_step
        tv = time.time()
        m = validate(model, valid_ds, dev)
        improved = math.isfinite(m["si_sdri_mean"]) and m["si_sdri_mean"] > best
        if improved:
            best, best_step = m["si_sdri_mean"], step
        if improved if r.select == "si_sdri" else final:
            _export_best(model, cfg, m, step, run_dir, rec)
        log({"step": step, "valid": m, "best": improved, "seconds": round(time.time() - tv, 1)})
        return m

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(TextColumn(f"[bold]{cfg.name}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), TextColumn("{task.fields[info]}"), disable=not progress)
    t0 = time.time()
    stopped, last_valid_step = "max_steps", None
    avg: dict[str, float] = {}
    model.train()
    with StopFlag(sigint_reason="sigint") as stop, bar:
        task = bar.add_task("train", total=o.max_steps, completed=step, info="")
        try:
            it = iter(loader)
            while step < o.max_steps:
                if stop.flag:
                    stopped = stop.reason
                    break
                if budget_min is not None and time.time() - t0 > budget_min * 60:
                    stopped = "max_minutes"
                    break
                batch = next(it)
                mix, stems, act = (batch[k].to(dev, non_blocking=True) for k in ("mixture", "stems", "activity"))
                lr = lr_at(step, o)
                for g in opt.param_groups:
                    g["lr"] = lr
                with torch.set_grad_enabled(not rc.freeze_separator):
                    out = model(mix)
                    terms = multitask_loss(out.sources, out.activity_logits, speech_target(stems, o.speech_keep_music_db),
                                           mix, act, model.output_delay_samples, o.alpha, o.presence_db)
                total = terms.total if not rc.freeze_separator else None
                rterms = None
                if rec is not None:
                    if opt_head is not None:
                        for g in opt_head.param_groups:
                            g["lr"] = rc.head_lr * lr / o.lr
                    rterms = rec(out.sources, stems, mix, batch["meta"], model.output_delay_samples)
                    total = rterms["total"] if total is None else total + rterms["total"]
                opt.zero_grad(set_to_none=True)
                if opt_head is not None:
                    opt_head.zero_grad(set_to_none=True)
                if not torch.isfinite(total) or not total.requires_grad:
                    skipped += 1
                    step += 1
                    continue
                total.backward()
                gnorm = torch.tensor(0.0)
                if not rc.freeze_separator:
                    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
                    if torch.isfinite(gnorm):
                        opt.step()
                    else:
                        skipped += 1
                if opt_head is not None:
                    hnorm = torch.nn.utils.clip_grad_norm_(rec.head_parameters(), o.grad_clip)
                    if torch.isfinite(hnorm):
                        opt_head.step()
                step += 1
                sdr = terms.si_sdr
                rec_log = {"loss": float(total.item()), "sep": terms.sep.item(), "act": terms.act.item(),
                           "si_sdr": float(torch.nanmean(sdr).item()) if terms.present.any() else float("nan"),
                           "gnorm": float(gnorm)}
                if rterms is not None:
                    rec_log.update({f"rec_{k}": rterms[k] for k in ("ctc", "kd", "feat")})
                for k, v in rec_log.items():
                    if math.isfinite(v):
                        avg[k] = v if k not in avg else 0.95 * avg[k] + 0.05 * v
                bar.update(task, completed=step, info=f"loss {avg.get('loss', 0):.3f} sep {avg.get('sep', 0):.2f} "
                                                      f"act {avg.get('act', 0):.3f} lr {lr:.2e} best {best:.2f}")
                if step % r.log_every == 0:
                    log({"step": step, "lr": lr, **{k: round(v, 4) for k, v in rec_log.items() if math.isfinite(v)},
                         "skipped": skipped,
                         "elapsed_s": round(elapsed_before + time.time() - t0, 1)})
                if step % r.ckpt_every == 0:
                    checkpoint()
                if step % r.valid_every == 0:
                    run_validation()
                    last_valid_step = step
        except KeyboardInterrupt:  # second Ctrl-C: the weights may be mid-update, keep the last checkpoint
            log({"step": step, "stopped": "keyboard_interrupt"})
            log_f.close()
            raise
        if stopped in ("max_steps", "max_minutes") and step > 0 and last_valid_step != step:
            run_validation(final=True)  # the final weights compete for export too (select: last: are exported)
        elif r.select == "last" and step > 0 and stopped in ("max_steps", "max_minutes"):
            run_validation(final=True)
        checkpoint()
    log({"step": step, "stopped": stopped, "elapsed_s": round(elapsed_before + time.time() - t0, 1)})
    log_f.close()
    best_metrics = None
    if (run_dir / "best.pt").is_file():
        best_metrics = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)["meta"].get("valid")
    return {"step": step, "stopped": stopped, "best": best_metrics, "best_step": best_step, "run_dir": str(run_dir),
            "export_dir": r.export_dir}


# --- command line ---------------------------------------------------------------------------------
def _cmd(a: argparse.Namespace) -> int:
    res = train_separator(a.config, resume=not a.no_resume, device=a.device, max_minutes=a.max_minutes)
    print(json.dumps(res, indent=1))
    if res["stopped"] in ("sigint", "sigterm"):
        print(f"stopped ({res['stopped']}) at step {res['step']} with a checkpoint: run the same command again to resume",
              file=sys.stderr)
        return 130 if res["stopped"] == "sigint" else 143
    return 0


def add_cli(train_subparsers) -> None:
    """Register ``separator`` under the ``train`` command's subparsers, e.g. in cli.py::

        train = sub.add_parser("train", help="train models").add_subparsers(dest="train_cmd", required=True)
        add_cli(train)
    """
    s = train_subparsers.add_parser("separator", help="train the causal MTASS separator (resumes from runs/<name>/)")
    add_train_args(s, "YAML config (configs/separator_*.yaml)")
    s.set_defaults(fn=_cmd)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jrsv_stream.train.separator")
    sub = p.add_subparsers(dest="cmd")
    add_cli(sub)
    args = p.parse_args(["separator", *(sys.argv[1:] if argv is None else argv)])
    from jrsv_stream.runner import run_handler

    return run_handler(args, "train separator")


if __name__ == "__main__":
    sys.exit(main())
