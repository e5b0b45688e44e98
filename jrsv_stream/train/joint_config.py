"""Configuration of the joint trainer (:mod:`jrsv_stream.train.joint`): one config type for
every row of the baseline / joint-training table; ``separator.mode`` and ``distill`` choose
the row."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from jrsv_stream.config import ConfigError, config_from_dict
from jrsv_stream.train.asr import ChunkConfig
from jrsv_stream.train.asr_data import SpecAugConfig

CKPT_VERSION = 1
SEPARATOR_MODES = ("none", "frozen", "train")
ABSENT_TRACK_MODES = ("train", "skip")
CAPTION_TRACKS = ("speech", "lyrics")  # recognizer track 0 / 1 (manifest speech_text / singing_text)
SPEECH, SINGING = 0, 1


# --- config ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JointDataConfig:
    """Manifests and batching.

    batch_seconds: padded mixture seconds per batch (the recognizer sees twice that: two
    tracks); max_item_s: longer training items are left out; valid_items: first N valid
    items (0 = all); absent_tracks: ``train`` (an absent source's track learns an empty
    target) or ``skip`` (its row is dropped).
    """

    train_manifest: str = "data/corpus/train.jsonl"
    valid_manifest: str = "data/corpus/valid.jsonl"
    batch_seconds: float = 60.0
    max_batch: int = 16
    max_item_s: float = 16.0
    valid_items: int = 64
    valid_batch_seconds: float = 120.0
    num_workers: int = 1
    absent_tracks: str = "train"


@dataclass(frozen=True)
class SeparatorSection:
    """mode: ``none`` (mixture on both tracks) | ``frozen`` | ``train``; init: separator
    folder or file (null with mode none); stage1_steps: with mode train, steps with the
    separator still frozen (two-stage curriculum); alpha / presence_db: its multitask loss."""

    mode: str = "frozen"
    init: str | None = "models/separator"
    stage1_steps: int = 0
    alpha: float = 0.9
    presence_db: float = -30.0


@dataclass(frozen=True)
class RecognizerSection:
    """init: trained clean-ASR folder (config.yaml, asr.pt, tokenizer.model); spec_aug:
    SpecAugment on the student's features (null = off)."""

    init: str = "models/asr"
    spec_aug: SpecAugConfig | None = None


@dataclass(frozen=True)
class DistillConfig:
    """Online distillation from a frozen clean-ASR teacher on the clean stems.

    teacher: model folder (null = ``asr.init``); temperature: softmax temperature T;
    ctc_weight: c in ``c * KL_ctc + (1 - c) * KL_att`` (null = the recognizer's ctc_weight).
    """

    enabled: bool = False
    teacher: str | None = None
    temperature: float = 1.0
    ctc_weight: float | None = None


@dataclass(frozen=True)
class LossConfig:
    asr_weight: float = 1.0  # 2 in Woo et al.'s joint fine-tuning (L = L_sep + 2 L_asr)
    sep_weight: float = 1.0
    distill_weight: float = 1.0


@dataclass(frozen=True)
class JointOptimConfig:
    lr: float = 5e-4  # recognizer peak lr
    sep_lr: float = 1e-4  # separator peak lr (mode train)
    warmup_steps: int = 50
    schedule: str = "noam"  # noam | cosine (cosine needs train.max_steps or cosine_steps)
    cosine_steps: int = 0
    min_lr_ratio: float = 0.1
    weight_decay: float = 1e-6
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = 5.0


@dataclass(frozen=True)
class JointLoopConfig:
    max_steps: int = 0  # 0 = no limit
    max_epochs: int = 1000
    max_minutes: float = 0.0  # total wall time over all resumes; 0 = no limit
    log_every_steps: int = 10
    valid_every_steps: int = 100  # 0 = only at the end
    ckpt_every_steps: int = 25
    keep_checkpoints: int = 2
    valid_chunk_frames: int = 8  # 40 ms frames: 8 = 320 ms chunks; 0 = full context
    valid_left_chunks: int = -1
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # bf16 autocast of the recognizer on CUDA and bf16-capable CPUs
    threads: int = 0  # torch CPU threads (0 = torch default)
    progress: bool = True


@dataclass(frozen=True)
class JointTrainConfig:
    name: str
    runs_dir: str = "runs"
    export_dir: str | None = None  # default models/variants/<name>
    seed: int = 0
    separator: SeparatorSection = field(default_factory=SeparatorSection)
    asr: RecognizerSection = field(default_factory=RecognizerSection)
    distill: DistillConfig = field(default_factory=DistillConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: JointOptimConfig = field(default_factory=JointOptimConfig)
    chunk: ChunkConfig = field(default_factory=ChunkConfig)
    data: JointDataConfig = field(default_factory=JointDataConfig)
    train: JointLoopConfig = field(default_factory=JointLoopConfig)

    @property
    def export_path(self) -> Path:
        return Path(self.export_dir or f"models/variants/{self.name}")


def config_from_raw(d: Any, where: str = "") -> JointTrainConfig:
    """Build and check a :class:`JointTrainConfig` from a dict (strict: unknown keys, wrong
    types and bad values are :class:`ConfigError` naming the field)."""
    pre = f"{where}: " if where else ""
    try:
        cfg = config_from_dict(JointTrainConfig, d)
    except ConfigError as e:
        raise ConfigError(f"{pre}{e}") from e

    def bad(key: str, msg: str) -> ConfigError:
        return ConfigError(f"{pre}{key}: {msg}")

    s = cfg.separator
    if s.mode not in SEPARATOR_MODES:
        raise bad("separator.mode", f"must be one of {list(SEPARATOR_MODES)}, got {s.mode!r}")
    if s.mode == "none" and s.init is not None:
        raise bad("separator.init", "must be null with separator.mode none (the recognizer hears the mixture)")
    if s.mode != "none" and not s.init:
        raise bad("separator.init", f"a separator folder is needed with separator.mode {s.mode}")
    if s.stage1_steps < 0:
        raise bad("separator.stage1_steps", f"must be >= 0, got {s.stage1_steps}")
    if not 0.0 <= s.alpha <= 1.0:
        raise bad("separator.alpha", f"must be in [0, 1], got {s.alpha}")
    if cfg.data.absent_tracks not in ABSENT_TRACK_MODES:
        raise bad("data.absent_tracks", f"must be one of {list(ABSENT_TRACK_MODES)}, got {cfg.data.absent_tracks!r}")
    for key in ("batch_seconds", "max_item_s", "valid_batch_seconds"):
        if getattr(cfg.data, key) <= 0:
            raise bad(f"data.{key}", "must be > 0")
    if cfg.data.max_batch < 1:
        raise bad("data.max_batch", "must be >= 1")
    if cfg.distill.temperature <= 0:
        raise bad("distill.temperature", f"must be > 0, got {cfg.distill.temperature}")
    if cfg.distill.ctc_weight is not None and not 0.0 <= cfg.distill.ctc_weight <= 1.0:
        raise bad("distill.ctc_weight", f"must be in [0, 1], got {cfg.distill.ctc_weight}")
    for key in ("asr_weight", "sep_weight", "distill_weight"):
        if getattr(cfg.loss, key) < 0:
            raise bad(f"loss.{key}", "must be >= 0")
    if cfg.optim.schedule not in ("noam", "cosine"):
        raise bad("optim.schedule", f"must be 'noam' or 'cosine', got {cfg.optim.schedule!r}")
    if cfg.optim.schedule == "cosine" and not (cfg.optim.cosine_steps or cfg.train.max_steps):
        raise bad("optim.schedule", "cosine needs optim.cosine_steps or train.max_steps")
    if cfg.train.device not in ("auto", "cpu", "cuda"):
        raise bad("train.device", f"must be auto, cpu or cuda, got {cfg.train.device!r}")
    if cfg.train.valid_chunk_frames < 0:
        raise bad("train.valid_chunk_frames", "must be >= 0 (0 = full context)")
    return cfg


def load_config(path: str | os.PathLike) -> JointTrainConfig:
    """Read a joint training config YAML strictly (errors name the file and the field)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config not found: {p}")
    try:
        d = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML: {e}") from e
    return config_from_raw(d, str(p))
