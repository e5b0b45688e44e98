"""Evaluation: separation and activity metrics (:mod:`jrsv_stream.eval.metrics`)."""

from jrsv_stream.eval.metrics import activity_scores, auroc, f1_score, si_sdr, si_sdr_improvement

__all__ = ["activity_scores", "auroc", "f1_score", "si_sdr", "si_sdr_improvement"]
