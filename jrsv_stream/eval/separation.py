"""Separation scoring of one item and its summary over items: SI-SDR(i) per present source
by SNR bucket, activity AUROC/F1 (shared by the separator trainer's validation, the joint
trainer and the system evaluation)."""

from __future__ import annotations

import math

import numpy as np

from jrsv_stream.nn.separator import ACTIVITY, SOURCES


def score_separation_item(estimates: np.ndarray, activity_probs: np.ndarray, ex: dict, n_samples: int) -> dict:
    """Separation scores of one item (shared by the separator trainer's
    :func:`jrsv_stream.train.separator.validate` and the system evaluation).

    Args:
        estimates: (3, >= n_samples) speech, singing, music estimates already aligned with
            the input (the separator's output delay removed).
        activity_probs: (2, F) speech / singing probabilities, F = the item's frames.
        ex: a :class:`jrsv_stream.data.dynamic.ManifestDataset` item (``stems``,
            ``mixture``, ``activity``, ``meta``).
        n_samples: samples scored (from the start).

    Returns:
        A dict: ``id``, ``scenario``; ``si_sdri`` and ``si_sdr``: {source: dB} for the
        present, non-silent sources; ``snr_bucket``: {source: "-5" | "0" | "5"} for the scored
        sources with a finite SNR (music: the mean SNR of the item's vocals);
        ``activity_probs`` and ``activity_labels``: {vocal: (F,)}.
    """
    from jrsv_stream.data.mixing import snr_bucket
    from jrsv_stream.eval.metrics import si_sdr, si_sdr_improvement

    est = np.asarray(estimates, dtype=np.float64)[:, :n_samples]
    ref = ex["stems"][:, :n_samples].double().numpy()
    mix = ex["mixture"][:n_samples].double().numpy()
    snrs = {v: ex["meta"][f"{v}_snr_db"] for v in ACTIVITY}
    vocal_snrs = [x for x in snrs.values() if math.isfinite(x)]
    snrs["music"] = float(np.mean(vocal_snrs)) if vocal_snrs else float("nan")
    out: dict = {"id": ex["meta"]["id"], "scenario": ex["meta"].get("scenario"), "si_sdri": {}, "si_sdr": {},
                 "snr_bucket": {}, "activity_probs": {}, "activity_labels": {}}
    for j, s in enumerate(SOURCES):
        if ex["meta"]["present"][j] and np.any(ref[j]):
            out["si_sdri"][s] = float(si_sdr_improvement(est[j], ref[j], mix))
            out["si_sdr"][s] = float(si_sdr(est[j], ref[j]))
            if math.isfinite(snrs[s]):
                out["snr_bucket"][s] = str(snr_bucket(snrs[s]))
    n_frames = activity_probs.shape[-1]
    for j, v in enumerate(ACTIVITY):
        out["activity_probs"][v] = activity_probs[j]
        out["activity_labels"][v] = ex["activity"][j, :n_frames].numpy()
    return out


def summarize_separation(scores: list[dict], items: int | None = None) -> dict:
    """Means over items of :func:`score_separation_item` results (the dict
    :func:`jrsv_stream.train.separator.validate` returns; ``items`` defaults to ``len(scores)``)."""
    from jrsv_stream.eval.metrics import activity_scores

    sdri = {s: [x["si_sdri"][s] for x in scores if s in x["si_sdri"]] for s in SOURCES}
    sdr = {s: [x["si_sdr"][s] for x in scores if s in x["si_sdr"]] for s in SOURCES}
    by_snr: dict[str, dict[str, list[float]]] = {s: {} for s in SOURCES}
    for x in scores:
        for s, b in x["snr_bucket"].items():
            by_snr[s].setdefault(b, []).append(x["si_sdri"][s])
    means = {s: float(np.mean(v)) if v else float("nan") for s, v in sdri.items()}
    finite = [m for m in means.values() if math.isfinite(m)]
    act = {v: activity_scores(np.concatenate([x["activity_probs"][v] for x in scores]),
                              np.concatenate([x["activity_labels"][v] for x in scores])) if scores else {}
           for v in ACTIVITY}
    return {"si_sdri": means, "si_sdri_mean": float(np.mean(finite)) if finite else float("nan"),
            "si_sdr": {s: float(np.mean(v)) if v else float("nan") for s, v in sdr.items()},
            "si_sdri_by_snr": {s: {b: float(np.mean(v)) for b, v in sorted(d.items())} for s, d in by_snr.items()},
            "counts_by_snr": {s: {b: len(v) for b, v in sorted(d.items())} for s, d in by_snr.items()},
            "activity": act, "items": len(scores) if items is None else items}
