"""Metrics: pure functions of model outputs, named as in DESIGN.md."""

from unlearnkit.metrics.accuracy import accuracy_from_logits, speedup

__all__ = ["accuracy_from_logits", "speedup"]
