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
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, NamedTuple  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import yaml  # noqa: E402
from torch import nn  # noqa: E402

from jrsv_stream import SAMPLE_RATE  # noqa: E402
from jrsv_stream.config import ConfigError, config_from_dict  # noqa: E402
from jrsv_stream.decode.ngram_lm import LM_FILE  # noqa: E402
from jrsv_stream.nn.asr import ASRModel  # noqa: E402
from jrsv_stream.nn.pipeline import CALIBRATION_FILE, separator_track_gain  # noqa: E402
from jrsv_stream.nn.attention_decoder import IGNORE_ID  # noqa: E402
from jrsv_stream.train.asr import ChunkConfig, ctc_greedy, sample_chunk  # noqa: E402
from jrsv_stream.train.asr_data import (SpecAugConfig, apply_spec_aug, make_batches, make_loader,  # noqa: E402
                                        spec_aug_params)
from jrsv_stream.train.common import (EXIT_CODES, StopFlag, add_train_args, append_jsonl, bf16_autocast_ok, budget_spent,  # noqa: E402
                                      list_step_checkpoints, load_step_checkpoint, lr_lambda, pick_device,
                                      prune_checkpoints, rng_state, save_atomic, set_rng_state)

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


# --- data -----------------------------------------------------------------------------------------
class JointBatch(NamedTuple):
    """One collated batch of whole manifest items (CPU tensors), zero padded to T.

    mixture: (B, T); stems: (B, 3, T) speech/singing/music (zeros when absent);
    activity: (B, 2, T // hop) 0/1 speech/singing; lens: (B,) samples of each item (its
    length rounded up to the hop); tokens: per recognizer track (speech, singing), B
    token lists each (empty when the text is absent); texts: same, the reference strings
    (None when absent); ids: B item ids; audio_s: seconds of mixture audio.
    """

    mixture: torch.Tensor
    stems: torch.Tensor
    activity: torch.Tensor
    lens: torch.Tensor
    tokens: tuple[list[list[int]], list[list[int]]]
    texts: tuple[list[str | None], list[str | None]]
    ids: list[str]
    audio_s: float


def collate_items(exs: list[dict], tokens: list[tuple[list[int], list[int]]],
                  texts: list[tuple[str | None, str | None]], hop_samples: int) -> JointBatch:
    """Pad :class:`ManifestDataset` items (each already a multiple of ``hop_samples``)."""
    T = max(e["mixture"].shape[-1] for e in exs)
    B = len(exs)
    mix, stems = torch.zeros(B, T), torch.zeros(B, 3, T)
    act = torch.zeros(B, 2, T // hop_samples)
    lens = []
    for i, e in enumerate(exs):
        n = e["mixture"].shape[-1]
        mix[i, :n], stems[i, :, :n] = e["mixture"], e["stems"]
        act[i, :, : e["activity"].shape[-1]] = e["activity"]
        lens.append(n)
    return JointBatch(mix, stems, act, torch.tensor(lens, dtype=torch.long),
                      ([list(t[0]) for t in tokens], [list(t[1]) for t in tokens]),
                      ([t[0] for t in texts], [t[1] for t in texts]), [e["meta"]["id"] for e in exs],
                      float(sum(e["length"] for e in exs)) / SAMPLE_RATE)


class JointDataset(torch.utils.data.Dataset):
    """Item ``i`` is the :class:`JointBatch` of ``plan[i]`` (indices into ``items``)."""

    def __init__(self, items, tokens: list[tuple[list[int], list[int]]], texts: list[tuple[str | None, str | None]],
                 plan: list[list[int]]):
        self.items, self.tokens, self.texts, self.plan = items, tokens, texts, plan

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> JointBatch:
        idx = self.plan[i]
        return collate_items([self.items[k] for k in idx], [self.tokens[k] for k in idx], [self.texts[k] for k in idx],
                             self.items.hop_samples)


def item_durations(items) -> list[float]:
    """Seconds per manifest item: the manifest's ``duration_s`` when present, else the
    mixture file's header."""
    import soundfile as sf

    out = []
    for it in items.items:
        d = it.extra.get("duration_s")
        if not isinstance(d, (int, float)):
            d = sf.info(str(it.path("mixture", items.root))).duration
        out.append(float(d))
    return out


def item_texts(items) -> list[tuple[str | None, str | None]]:
    """(speech_text, singing_text) per item; empty strings count as absent (None)."""
    return [(it.speech_text or None, it.singing_text or None) for it in items.items]


# --- losses ---------------------------------------------------------------------------------------
def hybrid_outputs(model: ASRModel, feats: torch.Tensor, feat_lens: torch.Tensor, ys: list[list[int]],
                   tracks: torch.Tensor, chunk_frames: int | None = None, left_chunks: int = -1,
                   decoder: bool = True) -> dict[str, torch.Tensor]:
    """:meth:`ASRModel.loss` (same values) plus the posteriors distillation needs.

    Args:
        model: the recognizer.
        feats: (N, T, n_mels) normalized features; feat_lens: (N,).
        ys: N token lists (may be empty: the target is then blank / <eos> only).
        tracks: (N,) long track ids.
        chunk_frames, left_chunks: the dynamic chunk mask.
        decoder: also run the attention decoder when ``ctc_weight`` is 1.

    Returns:
        ``loss``, ``ctc``, ``att``, ``acc`` (scalars, as :meth:`ASRModel.loss`),
        ``ctc_logp`` (N, T', V) float32, ``enc_lens`` (N,), and when the decoder ran
        ``dec_logits`` (N, U + 1, V) float32 teacher-forced on ``[sos] + y`` and
        ``dec_valid`` (N, U + 1) bool (the ``y + [eos]`` positions).
    """
    enc_out, enc_lens = model.encoder(feats, feat_lens, chunk_frames, left_chunks, tracks)
    logp = model.ctc_logp(enc_out)
    targets = torch.tensor([t for y in ys for t in y], dtype=torch.long)
    y_lens = torch.tensor([len(y) for y in ys], dtype=torch.long)
    ctc = F.ctc_loss(logp.transpose(0, 1), targets.to(logp.device), enc_lens, y_lens.to(logp.device),
                     blank=model.blank_id, reduction="sum", zero_infinity=True) / len(ys)
    out = {"ctc": ctc, "ctc_logp": logp, "enc_lens": enc_lens}
    w = model.cfg.ctc_weight
    if w < 1.0 or decoder:
        ys_in, ys_out, ys_lens = model.decoder.make_io(ys, enc_out.device)
        logits = model.decoder(enc_out, enc_lens, ys_in, ys_lens).float()
        valid = ys_out != IGNORE_ID
        ce = F.cross_entropy(logits.transpose(1, 2), ys_out, ignore_index=IGNORE_ID,
                             label_smoothing=model.cfg.label_smoothing, reduction="sum") / len(ys)
        acc = ((logits.argmax(-1) == ys_out) & valid).sum() / valid.sum().clamp_min(1)
        out.update(dec_logits=logits, dec_valid=valid)
    if w < 1.0:
        att = ce
    else:
        att, acc = torch.zeros_like(ctc), torch.zeros_like(ctc)
    out.update(loss=w * ctc + (1 - w) * att, att=att, acc=acc)
    return out


def kl_divergence(student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor,
                  temperature: float = 1.0) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` summed over the valid
    positions, averaged over rows.

    Args:
        student, teacher: (N, L, V) logits or log-probabilities (same frame/token grid).
        valid: (N, L) bool.
        temperature: T.

    Returns:
        A scalar; exactly 0 when ``student`` equals ``teacher``.
    """
    lt = torch.log_softmax(teacher.float() / temperature, dim=-1)
    ls = torch.log_softmax(student.float() / temperature, dim=-1)
    kl = (lt.exp() * (lt - ls)).sum(-1)
    kl = torch.where(valid, kl, torch.zeros_like(kl))
    return kl.sum() * temperature**2 / student.shape[0]


class JointModels(NamedTuple):
    """asr: the student recognizer; separator: None with mode none; teacher: frozen
    clean-ASR model, or None without distillation; track_gain: the separator's calibrated
    output gain (``calibration.json``), applied to the separated tracks as in the live pipeline."""

    asr: ASRModel
    separator: nn.Module | None
    teacher: ASRModel | None
    track_gain: float = 1.0


def _delay(x: torch.Tensor, n: int) -> torch.Tensor:
    """(..., T) -> the same delayed by n samples (zeros first), length kept."""
    return F.pad(x, (n, 0))[..., : x.shape[-1]] if n else x


def compute_losses(models: JointModels, batch: JointBatch, cfg: JointTrainConfig, chunk_frames: int | None,
                   left_chunks: int, separator_trains: bool, device: torch.device, use_amp: bool = False,
                   spec_aug_rng: np.random.Generator | None = None,
                   teacher_hears: str = "stems") -> dict[str, torch.Tensor]:
    """All loss terms of one batch (see the module docstring).

    Args:
        models: recognizer, separator, teacher.
        batch: a :class:`JointBatch`.
        cfg: the training config (loss weights, separator loss, absent tracks, spec_aug).
        chunk_frames, left_chunks: the dynamic chunk mask of this batch (teacher included).
        separator_trains: gradients into the separator and its loss added.
        device: where the models are.
        use_amp: bf16 autocast of the recognizer (CUDA).
        spec_aug_rng: draws SpecAugment masks when ``cfg.asr.spec_aug`` is set.
        teacher_hears: ``stems`` (the clean stems, training) or ``student_input`` (the
            student's own input: with equal weights the KL term is then exactly 0).

    Returns:
        ``total`` and the terms ``asr``, ``ctc``, ``att``, ``acc``, ``sep``, ``si_sdr``
        (mean over present sources, NaN when not computed), ``kd``, ``kd_ctc``, ``kd_att``,
        ``rows`` (recognizer rows used): scalar tensors.
    """
    from jrsv_stream.train.losses import multitask_loss

    asr, sep, teacher = models.asr, models.separator, models.teacher
    mix, stems, lens = batch.mixture.to(device), batch.stems.to(device), batch.lens.to(device)
    B = mix.shape[0]
    zero = mix.new_zeros(())
    out: dict[str, torch.Tensor] = {"sep": zero, "si_sdr": zero + float("nan"), "kd": zero, "kd_ctc": zero,
                                    "kd_att": zero}
    delay = 0
    if sep is None:
        tracks_audio = torch.cat([mix, mix], 0)
    else:
        with torch.set_grad_enabled(separator_trains and torch.is_grad_enabled()):
            sep_out = sep(mix)
        delay = sep.output_delay_samples
        tracks_audio = torch.cat([sep_out.sources[:, SPEECH], sep_out.sources[:, SINGING]], 0) * models.track_gain
        if separator_trains:
            act = batch.activity.to(device)
            hop = sep.hop_samples
            terms = [multitask_loss(sep_out.sources[i:i + 1, :, :n], sep_out.activity_logits[i:i + 1, :, :n // hop],
                                    stems[i:i + 1, :, :n], mix[i:i + 1, :n], act[i:i + 1, :, :n // hop], delay,
                                    cfg.separator.alpha, cfg.separator.presence_db)
                     for i, n in enumerate(batch.lens.tolist())]
            out["sep"] = torch.stack([t.total for t in terms]).mean()
            sdr = torch.cat([t.si_sdr for t in terms])
            out["si_sdr"] = torch.nanmean(sdr) if bool(torch.isfinite(sdr).any()) else zero + float("nan")
    ys = batch.tokens[SPEECH] + batch.tokens[SINGING]
    tracks = torch.tensor([SPEECH] * B + [SINGING] * B, dtype=torch.long, device=device)
    wav_lens = torch.cat([lens, lens])
    rows = list(range(2 * B))
    if cfg.data.absent_tracks == "skip":
        texts = batch.texts[SPEECH] + batch.texts[SINGING]
        rows = [r for r in rows if texts[r]]
    out["rows"] = zero + len(rows)
    if not rows:
        out.update(asr=zero, ctc=zero, att=zero, acc=zero, total=cfg.loss.sep_weight * out["sep"])
        return out
    if len(rows) < 2 * B:
        idx = torch.tensor(rows, device=device)
        tracks_audio, tracks, wav_lens, ys = tracks_audio[idx], tracks[idx], wav_lens[idx], [ys[r] for r in rows]
    with torch.set_grad_enabled(torch.is_grad_enabled() and (separator_trains and sep is not None)):
        feats, feat_lens = asr.features(tracks_audio, wav_lens)
    if cfg.asr.spec_aug is not None and spec_aug_rng is not None:
        n_frames = feat_lens.tolist()
        feats = apply_spec_aug(feats, spec_aug_params(n_frames, cfg.asr.spec_aug, feats.shape[-1], spec_aug_rng))
    distill = teacher is not None
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
        st = hybrid_outputs(asr, feats, feat_lens, ys, tracks, chunk_frames, left_chunks, decoder=distill)
    out.update(asr=st["loss"], ctc=st["ctc"], att=st["att"], acc=st["acc"])
    total = cfg.loss.asr_weight * st["loss"]
    if separator_trains and sep is not None:
        total = total + cfg.loss.sep_weight * out["sep"]
    if distill:
        with torch.no_grad():
            if teacher_hears == "stems":
                t_audio = _delay(torch.cat([stems[:, SPEECH], stems[:, SINGING]], 0), delay)
                if len(rows) < 2 * B:
                    t_audio = t_audio[torch.tensor(rows, device=device)]
            elif teacher_hears == "student_input":
                t_audio = tracks_audio.detach()
            else:
                raise ValueError(f"teacher_hears must be 'stems' or 'student_input', got {teacher_hears!r}")
            t_feats, t_lens = teacher.features(t_audio, wav_lens)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                te = hybrid_outputs(teacher, t_feats, t_lens, ys, tracks, chunk_frames, left_chunks, decoder=True)
        T = cfg.distill.temperature
        # rows without a reference (absent source) are not distilled: the teacher then hears a
        # silent stem, which it never learned to transcribe; the student's own empty target
        # already teaches it to say nothing there
        has_ref = torch.tensor([len(y) > 0 for y in ys], device=device)[:, None]
        frame_valid = torch.arange(st["ctc_logp"].shape[1], device=device)[None, :] < st["enc_lens"][:, None]
        out["kd_ctc"] = kl_divergence(st["ctc_logp"], te["ctc_logp"], frame_valid & has_ref, T)
        out["kd_att"] = kl_divergence(st["dec_logits"], te["dec_logits"], st["dec_valid"] & has_ref, T)
        c = asr.cfg.ctc_weight if cfg.distill.ctc_weight is None else cfg.distill.ctc_weight
        out["kd"] = c * out["kd_ctc"] + (1 - c) * out["kd_att"]
        total = total + cfg.loss.distill_weight * out["kd"]
    out["total"] = total
    return out


# --- validation -----------------------------------------------------------------------------------
@torch.no_grad()
def validate(models: JointModels, examples: list[dict], texts: list[tuple[str | None, str | None]],
             plan: list[list[int]], tokenizer, chunk_frames: int, left_chunks: int, device: torch.device) -> dict:
    """Greedy-CTC WER/CER per caption track at ``chunk_frames`` and separator SI-SDRi.

    Args:
        models: recognizer and separator (the teacher is not used).
        examples: :class:`ManifestDataset` items (whole); texts: (speech, singing) per item.
        plan: batches of example indices.
        tokenizer: the recognizer's tokenizer.
        chunk_frames: encoder chunk (0 = full context); left_chunks: < 0 = all.
        device: where the models are.

    Returns:
        ``{"speech": {...}, "lyrics": {...}`` (``ErrorCounts.to_json``: ``wer``/``cer`` in
        percent or None, ``hallucinated_words``, counts), ``"wer_mean"`` (mean over the
        tracks with references; the selection metric), ``"separation"``
        (:func:`jrsv_stream.eval.separation.summarize_separation`, None without separator),
        ``"items"``}.
    """
    from jrsv_stream.eval.system_eval import ErrorCounts, count_errors
    from jrsv_stream.eval.separation import score_separation_item, summarize_separation

    asr, sep = models.asr, models.separator
    was = asr.training, (sep.training if sep is not None else False)
    asr.eval()
    if sep is not None:
        sep.eval()
    counts = {t: ErrorCounts() for t in CAPTION_TRACKS}
    scores = []
    for idx in plan:
        exs = [examples[k] for k in idx]
        b = collate_items(exs, [([], [])] * len(exs), [texts[k] for k in idx], _hop(sep, asr))
        mix, lens = b.mixture.to(device), b.lens.to(device)
        B = mix.shape[0]
        if sep is None:
            audio = torch.cat([mix, mix], 0)
        else:
            so = sep(mix)
            audio = torch.cat([so.sources[:, SPEECH], so.sources[:, SINGING]], 0) * models.track_gain
            D, hop = sep.output_delay_samples, sep.hop_samples
            for i, ex in enumerate(exs):
                n = ex["length"] - D
                probs = so.activity_probs[i, :, : -(-ex["length"] // hop)].cpu().numpy()
                scores.append(score_separation_item(so.sources[i, :, D:D + n].cpu().numpy(), probs, ex, n))
        tracks = torch.tensor([SPEECH] * B + [SINGING] * B, device=device)
        enc, enc_lens = asr.encode(audio, torch.cat([lens, lens]), tracks, chunk_frames or None, left_chunks)
        hyps = [tokenizer.decode(h) for h in ctc_greedy(asr.ctc_logp(enc), enc_lens)]
        for tr, name in enumerate(CAPTION_TRACKS):
            for i in range(B):
                counts[name] += count_errors(b.texts[tr][i], hyps[tr * B + i])
    asr.train(was[0])
    if sep is not None:
        sep.train(was[1])
    res: dict[str, Any] = {t: counts[t].to_json() for t in CAPTION_TRACKS}
    wers = [res[t]["wer"] for t in CAPTION_TRACKS if res[t]["wer"] is not None]
    res["wer_mean"] = float(np.mean(wers)) if wers else float("inf")
    res["separation"] = _plain(summarize_separation(scores)) if sep is not None else None
    res["items"] = len(examples)
    return res


def _hop(sep: nn.Module | None, asr: ASRModel) -> int:
    return sep.hop_samples if sep is not None else asr.frame_samples


def _plain(x: Any) -> Any:
    """JSON-safe plain Python values (numpy scalars -> float), for YAML/torch metadata."""
    return json.loads(json.dumps(x, default=float))


# --- model folders --------------------------------------------------------------------------------
def load_models(cfg: JointTrainConfig, device: torch.device) -> tuple[JointModels, Any, dict]:
    """The recognizer (train mode), separator (per ``separator.mode``) and teacher, plus the
    tokenizer and ``{"separator_config": SeparatorConfig | None, "tokenizer_path": Path}``.

    Raises:
        FileNotFoundError: a model folder or the tokenizer is missing.
    """
    from jrsv_stream.decode.tokenizer import Tokenizer
    from jrsv_stream.nn.separator import load_separator

    asr_dir = Path(cfg.asr.init)
    tok_path = asr_dir / "tokenizer.model"
    if not tok_path.is_file():
        raise FileNotFoundError(f"{tok_path} not found: asr.init must be a trained recognizer folder "
                                f"(config.yaml, asr.pt, tokenizer.model), e.g. models/asr")
    asr = ASRModel.from_pretrained(asr_dir, device).train()
    tokenizer = Tokenizer(tok_path)
    if tokenizer.vocab_size != asr.vocab_size:
        raise ValueError(f"{tok_path} has {tokenizer.vocab_size} ids but the model {asr.vocab_size}")
    if asr.encoder.track_embed is None:
        raise ValueError(f"{asr_dir} was trained on one track (no track embedding); the joint trainer needs a shared "
                         f"two-track recognizer (data.tracks: shared)")
    sep, sep_cfg, gain = None, None, 1.0
    if cfg.separator.mode != "none":
        sep, sep_cfg, _ = load_separator(cfg.separator.init, device)
        gain = separator_track_gain(cfg.separator.init)  # the recognizer hears the calibrated level
        _set_trainable(sep, False)
    teacher = None
    if cfg.distill.enabled:
        teacher = ASRModel.from_pretrained(cfg.distill.teacher or asr_dir, device)
        _set_trainable(teacher, False)
        if teacher.vocab_size != asr.vocab_size:
            raise ValueError(f"teacher {cfg.distill.teacher} has vocabulary {teacher.vocab_size}, "
                             f"student {asr.vocab_size}")
    return JointModels(asr, sep, teacher, gain), tokenizer, {"separator_config": sep_cfg, "tokenizer_path": tok_path}


def _set_trainable(m: nn.Module, on: bool) -> None:
    m.train(on)
    for p in m.parameters():
        p.requires_grad_(on)


def save_pipeline(out: Path, models: JointModels, info: dict, cfg: JointTrainConfig, meta: dict) -> Path:
    """Write ``out/asr/`` (with the initial recognizer's ``lm.npz`` when it has one) and
    (with a separator) ``out/separator/`` as a pipeline folder, through ``out.part`` and
    renames (a crash leaves the previous folder or the new one)."""
    from jrsv_stream.nn.separator import save_separator

    out = Path(out)
    tmp = out.with_name(out.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    meta = _plain(meta)
    models.asr.save_pretrained(tmp / "asr", info["tokenizer_path"], extra=meta)
    lm = Path(cfg.asr.init) / LM_FILE
    if lm.is_file():  # same tokenizer, so the clean-ASR model's LM (and its tuned weights) serves here too
        shutil.copyfile(lm, tmp / "asr" / LM_FILE)
    if models.separator is not None:
        save_separator(models.separator, info["separator_config"], tmp / "separator" / "separator.pt", meta)
        src = Path(cfg.separator.init)
        src_cfg = src / "config.yaml" if src.is_dir() else src.parent / "config.yaml"
        if src_cfg.is_file():  # the architecture's training config, as in the shipped folder
            shutil.copyfile(src_cfg, tmp / "separator" / "config.yaml")
        if (src_cfg.parent / CALIBRATION_FILE).is_file():  # the level the recognizer was tuned to
            shutil.copyfile(src_cfg.parent / CALIBRATION_FILE, tmp / "separator" / CALIBRATION_FILE)
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def export_pipeline(best_dir: Path, cfg: JointTrainConfig, summary: dict) -> Path:
    """Copy ``best_dir`` (a pipeline folder) into ``cfg.export_path`` file by file
    (atomically), add ``README.md`` and ``train_summary.json``."""
    best_dir, dst = Path(best_dir), cfg.export_path
    if not (best_dir / "asr" / "asr.pt").is_file():
        raise FileNotFoundError(f"no best model in {best_dir}: train first")
    dst.mkdir(parents=True, exist_ok=True)
    if cfg.separator.mode == "none" and (dst / "separator" / "separator.pt").is_file():
        shutil.rmtree(dst / "separator")  # a stale separator would silently join this recognizer in --pipeline
    for src in sorted(p for p in best_dir.rglob("*") if p.is_file()):
        target = dst / src.relative_to(best_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target.with_name(target.name + ".part"))
        os.replace(target.with_name(target.name + ".part"), target)
    mode = cfg.separator.mode
    row = {"none": "mixture ASR: the recognizer hears the mixture on both tracks (no separator)",
           "frozen": "cascade fine-tuned: the original separator, the recognizer fine-tuned on its outputs",
           "train": "joint fine-tuning: separator and recognizer trained together"}[mode]
    if cfg.distill.enabled:
        row += f", with online distillation from a clean-ASR teacher (stage 1: {cfg.separator.stage1_steps} steps)"
    score = (f"jrsv-stream eval data/corpus/test.jsonl --separator none --asr {dst}/asr" if mode == "none" else
             f"jrsv-stream eval data/corpus/test.jsonl --pipeline {dst}")
    (dst / "README.md").write_text(
        f"# {cfg.name}\n\n{row}.\n\n"
        + ("There is no `separator/` folder: this recognizer is meant to hear the mixture.\n\n"
           if mode == "none" else "")
        + f"Trained with `jrsv-stream train joint --config {summary.get('config_path', f'configs/{cfg.name}.yaml')}` "
          f"({summary.get('step')} steps, {summary.get('minutes', 0):.1f} min; "
          f"best step {summary.get('best_step')}).\n\n"
        f"Score it:\n\n    {score} --json runs/eval/{cfg.name}.json --label {cfg.name}\n\n"
        "`train_summary.json` holds the config and the best validation metrics.\n")
    tmp = dst / "train_summary.json.part"
    tmp.write_text(json.dumps(_plain(summary), indent=1))
    os.replace(tmp, dst / "train_summary.json")
    return dst


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
