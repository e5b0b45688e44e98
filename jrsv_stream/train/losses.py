"""Multi-task separator loss: ``L = a * L_sep + (1 - a) * L_act`` (Stoller et al. seed).

- ``L_sep``: mean over (item, source) of negative SI-SDR for sources **present** in the
  crop; a source is absent when its reference energy is below ``presence_db`` (default
  -30 dB) relative to the mixture, where SI-SDR is undefined. An absent source is instead
  pushed towards silence with ``10 log10(|est|^2 / |mix|^2 + tau)`` (floor ``10 log10 tau``
  = -30 dB for the default ``tau``; Wisdom et al.'s MixIT uses the same thresholded form).
- ``L_act``: binary cross-entropy of the speech/singing activity logits per frame.

Model outputs are delayed by ``delay_samples`` (the overlap-add delay, see
:mod:`jrsv_stream.nn.frontend`); the loss compares ``est[..., delay:]`` with
``ref[..., :T - delay]`` so targets need no shifting in the data pipeline.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.nn import functional as F

EPS = 1e-8


def si_sdr(estimate: torch.Tensor, reference: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Zero-mean SI-SDR in dB over the last axis. (..., T), (..., T) -> (...)."""
    est = estimate - estimate.mean(-1, keepdim=True)
    ref = reference - reference.mean(-1, keepdim=True)
    scale = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + eps)
    target = scale * ref
    noise = est - target
    return 10.0 * torch.log10((target.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps))


class LossTerms(NamedTuple):
    """total: scalar; sep, act: scalars; si_sdr: (B, 3) per-source SI-SDR of the aligned
    crop (NaN where absent); present: (B, 3) bool."""

    total: torch.Tensor
    sep: torch.Tensor
    act: torch.Tensor
    si_sdr: torch.Tensor
    present: torch.Tensor


def align(sources: torch.Tensor, stems: torch.Tensor, mixture: torch.Tensor, delay_samples: int
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Drop the overlap-add delay: (B, 3, T), (B, 3, T), (B, T) -> same with T - delay."""
    T = sources.shape[-1]
    return sources[..., delay_samples:], stems[..., :T - delay_samples], mixture[..., :T - delay_samples]


def separation_loss(est: torch.Tensor, ref: torch.Tensor, mixture: torch.Tensor, presence_db: float = -30.0,
                    tau: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Aligned est/ref (B, S, T), mixture (B, T) -> (loss scalar, SI-SDR (B, S) with NaN
    where absent, present (B, S))."""
    mix_e = mixture.pow(2).sum(-1, keepdim=True) + EPS  # (B, 1)
    ref_e = ref.pow(2).sum(-1)  # (B, S)
    present = ref_e > mix_e * 10.0 ** (presence_db / 10.0)
    sdr = si_sdr(est, ref)
    silence = 10.0 * torch.log10(est.pow(2).sum(-1) / mix_e + tau)
    per = torch.where(present, -sdr, silence)
    return per.mean(), torch.where(present, sdr, torch.full_like(sdr, float("nan"))).detach(), present


def activity_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BCE with logits, mean over (B, 2, F)."""
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))


def multitask_loss(sources: torch.Tensor, activity_logits: torch.Tensor, stems: torch.Tensor, mixture: torch.Tensor,
                   activity: torch.Tensor, delay_samples: int, alpha: float = 0.9, presence_db: float = -30.0) -> LossTerms:
    """``alpha * L_sep + (1 - alpha) * L_act``.

    Args:
        sources: (B, 3, T) model output (delayed by ``delay_samples``).
        activity_logits: (B, 2, F) model output.
        stems: (B, 3, T) reference speech/singing/music (zeros when absent).
        mixture: (B, T) model input.
        activity: (B, 2, F) 0/1 targets.
        delay_samples: the model's ``output_delay_samples``.
        alpha: weight of the separation term.
    """
    est, ref, mix = align(sources, stems, mixture, delay_samples)
    sep, sdr, present = separation_loss(est, ref, mix, presence_db)
    act = activity_loss(activity_logits, activity)
    return LossTerms(alpha * sep + (1.0 - alpha) * act, sep, act, sdr, present)
