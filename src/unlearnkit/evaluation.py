"""Model-level evaluation of an unlearned model against a split (and the retrained model)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from unlearnkit.data.splits import Data, Split
from unlearnkit.metrics.accuracy import accuracy_from_logits, speedup
from unlearnkit.models.info import check_finite, get_info
from unlearnkit.training import predict

__all__ = ["evaluate"]


def _acc(model: nn.Module, data: Data | None, device: torch.device | str | None) -> float | None:
    if data is None:
        return None
    logits, labels = predict(model, data, device=device)
    return accuracy_from_logits(logits, labels)


def evaluate(
    model: nn.Module,
    split: Split,
    *,
    retrained: nn.Module | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Every metric the inputs allow, keyed by DESIGN.md's names.

    Returns ``retain_acc``, ``forget_acc``, ``test_acc``; for class unlearning also
    ``test_retain_acc`` and ``test_forget_acc``; ``seconds`` when the model records how long its
    unlearning took; with ``retrained``, ``retrain_seconds`` and ``speedup``.
    """
    check_finite(model, "The model to evaluate")
    out: dict[str, Any] = {
        "retain_acc": _acc(model, split.retain, device),
        "forget_acc": _acc(model, split.forget, device),
        "test_acc": _acc(model, split.test, device),
    }
    if split.scenario == "class":
        out["test_retain_acc"] = _acc(model, split.test_retain, device)
        out["test_forget_acc"] = _acc(model, split.test_forget, device)
    info = get_info(model)
    # only an unlearned model has an unlearning step to time (an original records training)
    out["seconds"] = info.seconds if info is not None and info.method is not None else None
    if retrained is not None:
        rinfo = get_info(retrained)
        out["retrain_seconds"] = rinfo.seconds if rinfo is not None else None
        out["speedup"] = speedup(out["seconds"], out["retrain_seconds"])
    return {k: v for k, v in out.items() if v is not None or k == "seconds"}
