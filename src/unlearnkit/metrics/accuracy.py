"""Accuracy metrics: pure functions of logits and labels."""

from __future__ import annotations

import math

import torch

__all__ = ["accuracy_from_logits", "speedup"]


def accuracy_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose arg-max equals the label; ``nan`` for no rows."""
    if len(labels) == 0:
        return float("nan")
    return float((logits.argmax(dim=1) == labels).float().mean())


def speedup(seconds: float | None, retrain_seconds: float | None) -> float | None:
    """``retrain_seconds / seconds``: how many times faster than retraining (None if unknown)."""
    if seconds is None or retrain_seconds is None or not math.isfinite(seconds):
        return None
    if seconds <= 0:
        return math.inf
    return retrain_seconds / seconds
