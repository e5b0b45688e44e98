"""Validation and model folders of the joint trainer (:mod:`jrsv_stream.train.joint`):
per-track WER/CER and separator SI-SDRi, loading the initial models, saving and exporting
the pipeline folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from jrsv_stream.decode.ngram_lm import LM_FILE
from jrsv_stream.nn.asr import ASRModel
from jrsv_stream.nn.pipeline import CALIBRATION_FILE, separator_track_gain
from jrsv_stream.train.asr import ctc_greedy
from jrsv_stream.train.joint_config import CAPTION_TRACKS, SINGING, SPEECH, JointTrainConfig
from jrsv_stream.train.joint_data import collate_items
from jrsv_stream.train.joint_losses import JointModels


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
    from jrsv_stream.eval.scoring import ErrorCounts, count_errors
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
