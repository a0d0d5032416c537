"""Metrics: pure functions of model outputs, named as in DESIGN.md."""

from unlearnkit.metrics.accuracy import accuracy_from_logits, speedup
from unlearnkit.metrics.competition import (
    competition_score,
    epsilons,
    forgetting_quality,
    logit_scaled_confidence,
)

__all__ = [
    "accuracy_from_logits",
    "competition_score",
    "epsilons",
    "forgetting_quality",
    "logit_scaled_confidence",
    "speedup",
]
