"""Losses of the joint trainer (:mod:`jrsv_stream.train.joint`): the recognizer's hybrid
CTC/attention loss on both tracks, the separator's multitask loss and online distillation."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jrsv_stream.nn.asr import ASRModel
from jrsv_stream.nn.attention_decoder import IGNORE_ID
from jrsv_stream.train.asr_data import apply_spec_aug, spec_aug_params
from jrsv_stream.train.joint_config import SINGING, SPEECH, JointTrainConfig
from jrsv_stream.train.joint_data import JointBatch


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
