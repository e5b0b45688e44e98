"""Separation and activity metrics (numpy): SI-SDR, SI-SDRi, AUROC, F1.

SI-SDR (Le Roux et al., 2019), zero-mean variant as in asteroid and the papers' tables:
``s_t = <s', s> s / |s|^2``, ``SI-SDR = 10 log10(|s_t|^2 / |s_t - s'|^2)`` with ``s'``
the estimate and ``s`` the reference, both made zero-mean.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-8


def si_sdr(estimate: np.ndarray, reference: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Scale-invariant SDR in dB over the last axis.

    Args:
        estimate: (..., T).
        reference: (..., T), same shape (broadcastable).

    Returns:
        (...) SI-SDR in dB. A silent reference gives ``-inf``-like values (about -80 dB);
        callers skip absent sources rather than score them.
    """
    est = np.asarray(estimate, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    est = est - est.mean(axis=-1, keepdims=True)
    ref = ref - ref.mean(axis=-1, keepdims=True)
    scale = (est * ref).sum(-1, keepdims=True) / ((ref**2).sum(-1, keepdims=True) + eps)
    target = scale * ref
    noise = est - target
    return 10.0 * np.log10(((target**2).sum(-1) + eps) / ((noise**2).sum(-1) + eps))


def si_sdr_improvement(estimate: np.ndarray, reference: np.ndarray, mixture: np.ndarray, eps: float = EPS) -> np.ndarray:
    """SI-SDRi in dB: ``si_sdr(estimate, reference) - si_sdr(mixture, reference)``.

    Args:
        estimate, reference: (..., T); mixture: (T,) or (..., T), broadcast against them.
    """
    mixture = np.broadcast_to(np.asarray(mixture, dtype=np.float64), np.shape(reference))
    return si_sdr(estimate, reference, eps) - si_sdr(mixture, reference, eps)


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (probability that a random positive scores higher than a
    random negative, ties counting one half): the Mann-Whitney U statistic.

    Args:
        scores: (N,) real scores; labels: (N,) in {0, 1}.

    Returns:
        AUROC in [0, 1], or NaN when only one class is present.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and labels {y.shape} differ in shape")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # average ranks over ties (1-based)
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], len(s)]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def f1_score(predictions: np.ndarray, labels: np.ndarray) -> float:
    """F1 of binary predictions against labels (both (N,) of {0, 1} or bool).

    Returns 1.0 when there are no positives in either (nothing to find, nothing claimed),
    0.0 when exactly one side has positives.
    """
    p = np.asarray(predictions).ravel().astype(bool)
    y = np.asarray(labels).ravel().astype(bool)
    if p.shape != y.shape:
        raise ValueError(f"predictions {p.shape} and labels {y.shape} differ in shape")
    tp = int((p & y).sum())
    fp = int((p & ~y).sum())
    fn = int((~p & y).sum())
    if tp + fp + fn == 0:
        return 1.0
    return 2.0 * tp / (2.0 * tp + fp + fn)


def activity_scores(probs: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """AUROC and F1 (at ``threshold``) of activity probabilities against 0/1 labels."""
    probs = np.asarray(probs, dtype=np.float64).ravel()
    return {"auroc": auroc(probs, labels), "f1": f1_score(probs >= threshold, labels)}
