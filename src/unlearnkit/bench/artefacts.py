"""What a benchmark run records beyond its metrics, for the report's figures.

:func:`curve_watcher` records accuracy on D_r, D_f and the test set at every epoch of the
method's training phases (through :func:`unlearnkit.training.watch_epochs`); the method
does not know it is watched, and its result is bit-identical. :func:`model_artefacts` records,
for the original, the unlearned and the retrained model: test accuracy per class, per-sample
losses on D_f and on the test set, and saliency maps (:mod:`unlearnkit.saliency`) of one
forget sample and one retain sample. The document's keys are listed at
:data:`unlearnkit.bench.store.ARTEFACT_KEYS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unlearnkit.data.batches import to_device
from unlearnkit.data.splits import Data, Split
from unlearnkit.exceptions import UnlearnkitError
from unlearnkit.models.adapters import forward
from unlearnkit.training import (
    EpochWatcher,
    accuracy,
    eval_mode,
    iter_batches,
    model_device,
    predict,
    resolve_device,
)

__all__ = ["MAX_LOSSES", "curve_watcher", "model_artefacts"]

#: At most this many per-sample losses per set and model (evenly spaced samples beyond it).
MAX_LOSSES = 2000


def _round(values: Any, digits: int = 5) -> list[Any]:
    """Nested lists of floats with ``digits`` significant digits (a smaller JSON document)."""
    arr = np.asarray(values, dtype=np.float64)
    return [float(f"{v:.{digits}g}") for v in arr.ravel()] if arr.ndim <= 1 else [
        _round(row, digits) for row in arr]


def curve_watcher(split: Split, *, device: Any = None) -> tuple[EpochWatcher, list[dict]]:
    """A watcher for :func:`~unlearnkit.training.watch_epochs` and the list it fills with one
    ``{"phase", "epoch", "step", "retain_acc", "forget_acc", "test_acc"}`` per evaluation;
    ``step`` counts epochs across phases."""
    points: list[dict[str, Any]] = []
    state = {"step": 0}

    def watch(phase: str, epoch: int, model: nn.Module) -> None:
        if epoch > 0:
            state["step"] += 1
        point: dict[str, Any] = {"phase": phase, "epoch": epoch, "step": state["step"]}
        with torch.no_grad():
            for name, data in (("retain_acc", split.retain), ("forget_acc", split.forget),
                               ("test_acc", split.test)):
                point[name] = None if data is None else accuracy(model, data, device=device)
        points.append(point)

    return watch, points


def _outputs(model: nn.Module, data: Data | None, device: Any
             ) -> tuple[torch.Tensor, torch.Tensor] | None:
    if data is None:
        return None
    logits, labels = predict(model, data, device=device)
    return (logits, labels) if len(labels) else None


def _per_sample_loss(outputs: tuple[torch.Tensor, torch.Tensor] | None) -> list[float]:
    if outputs is None:
        return []
    loss = F.cross_entropy(*outputs, reduction="none").numpy()
    if len(loss) > MAX_LOSSES:
        loss = loss[np.linspace(0, len(loss) - 1, MAX_LOSSES).round().astype(int)]
    return _round(loss)


def _per_class(outputs: tuple[torch.Tensor, torch.Tensor] | None, num_classes: int
               ) -> list[float | None]:
    if outputs is None:
        return []
    logits, labels = outputs
    right = (logits.argmax(1) == labels).numpy()
    labels_np = labels.numpy()
    out: list[float | None] = []
    for c in range(num_classes):
        mask = labels_np == c
        out.append(float(right[mask].mean()) if mask.any() else None)
    return out


def _first_correct(model: nn.Module, data: Data | None, device: Any
                   ) -> tuple[int, torch.Tensor, int] | None:
    """The first sample of ``data`` that ``model`` classifies right (else the first one)."""
    if data is None:
        return None
    first = None
    offset = 0
    dev = resolve_device(device) if device is not None else model_device(model)
    with torch.no_grad(), eval_mode(model):
        for x, y in iter_batches(data, 256, shuffle=False):
            if first is None and len(y):
                first = (0, x[0], int(y[0]))
            pred = forward(model, to_device(x, dev)).argmax(1).cpu()
            hits = np.flatnonzero((pred == y.cpu()).numpy())
            if len(hits):
                i = int(hits[0])
                return offset + i, x[i], int(y[i])
            offset += len(y)
    return first


def _saliency(models: dict[str, nn.Module], split: Split, device: Any) -> dict[str, Any]:
    from unlearnkit.saliency import saliency_maps

    out: dict[str, Any] = {}
    for which, data in (("forget", split.forget), ("retain", split.retain)):
        picked = _first_correct(models["original"], data, device)
        if picked is None:
            continue
        index, x, label = picked
        entry: dict[str, Any] = {"index": index, "label": label,
                                 "image": _round(x.cpu().numpy(), 4), "models": {}}
        for name, model in models.items():
            maps = saliency_maps(model, x, device=device)
            entry["models"][name] = {
                "pred": int(maps["pred"]),
                "saliency": _round(maps["saliency"], 4),
                "gradcam": None if maps["gradcam"] is None else _round(maps["gradcam"], 4),
            }
        out[which] = entry
    return out


def model_artefacts(
    models: dict[str, nn.Module],
    split: Split,
    *,
    class_names: Sequence[str] | None = None,
    device: Any = None,
    saliency: bool = True,
    cache: Any = None,
) -> dict[str, Any]:
    """``per_class``, ``losses`` and (with ``saliency``) ``saliency`` for ``models`` (keys
    ``original``, ``unlearned``, ``retrained``), as JSON-able lists. ``cache`` (an
    :class:`unlearnkit.evaluation.EvaluationCache`) keeps the outputs of the ``original`` and
    ``retrained`` models for the next run on the same split."""
    num_classes = split.num_classes or (len(class_names) if class_names else 0)
    names = list(class_names) if class_names else [str(c) for c in range(num_classes)]
    forgotten = [names[c] if 0 <= c < len(names) else str(c)
                 for c in (split.forget_classes or ())]
    def outputs(name: str, model: nn.Module, part: str) -> Any:
        data = split.test if part == "test" else split.forget
        if cache is None or name == "unlearned":
            return _outputs(model, data, device)
        return cache.get(f"artefact {part} outputs", model, split,
                         lambda: _outputs(model, data, device))

    test = {k: outputs(k, m, "test") for k, m in models.items()}
    forget = {k: outputs(k, m, "forget") for k, m in models.items()}
    out: dict[str, Any] = {
        "per_class": {"classes": names, "forgotten": forgotten,
                      **{k: _per_class(test[k], num_classes) for k in models}},
        "losses": {k: {"forget": _per_sample_loss(forget[k]), "test": _per_sample_loss(test[k])}
                   for k in models},
    }
    if saliency:
        out["saliency"] = _saliency(models, split, device)
        out["saliency_agreement"] = _agreement(models, split, device)
    return out


def _agreement(models: dict[str, nn.Module], split: Split, device: Any
               ) -> dict[str, float | None] | None:
    """The unlearned model's saliency agreement with the original's (Spearman, see
    :func:`unlearnkit.saliency.saliency_agreement`) on forget and on retain samples."""
    from unlearnkit.saliency import saliency_agreement

    if "original" not in models or "unlearned" not in models:
        return None
    try:
        return {which: saliency_agreement(models["original"], models["unlearned"], data,
                                          device=device)
                for which, data in (("forget", split.forget), ("retain", split.retain))}
    except UnlearnkitError:  # inputs that have no saliency map (token ids)
        return None
