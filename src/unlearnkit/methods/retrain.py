"""Retraining from scratch on the retain set: the exact reference."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from torch import nn

from unlearnkit.methods.base import Request, UnlearningMethod, hp, register_method
from unlearnkit.models.registry import fresh_copy
from unlearnkit.training import Recipe, fit


@register_method
@dataclass(frozen=True, kw_only=True)
class Retrain(UnlearningMethod):
    """Train a freshly initialised copy of the architecture on D_r with the original's recipe.

    Exact unlearning: the result never saw D_f. Every approximate method is judged against it.
    Each recipe field left at ``None`` is taken from the original's recorded recipe (the
    checkpoint's metadata); a model without one falls back to :class:`Recipe`'s defaults, with
    a warning.

    Paper: the gold standard of every unlearning paper; e.g. Bourtoule et al., Machine
    Unlearning, IEEE S&P 2021.
    """

    name = "retrain"
    paper = "exact reference; Bourtoule et al., Machine Unlearning, IEEE S&P 2021"
    summary = "train from scratch on the retain set with the original's recipe"
    needs_forget = False

    epochs: int | None = hp(None, "epochs (None: the original's)", low=0, type=int)
    lr: float | None = hp(None, "learning rate (None: the original's)", low=0.0, low_open=True,
                          type=float)
    optimizer: str | None = hp(None, "optimiser (None: the original's)",
                               choices=("sgd", "adam", "adamw"), type=str)
    weight_decay: float | None = hp(None, "weight decay (None: the original's)", low=0.0,
                                    type=float)
    batch_size: int | None = hp(None, "batch size (None: the original's)", low=1, type=int)
    schedule: str | None = hp(None, "learning-rate schedule (None: the original's)",
                              choices=("constant", "cosine", "step"), type=str)

    def recipe(self, original: Recipe | None) -> Recipe:
        base = original or Recipe()
        changes = {k: v for k, v in self.params().items() if v is not None}
        return base.replace(**changes)

    def _unlearn(self, model: nn.Module, request: Request) -> nn.Module:
        info = request.original_info
        original = Recipe.from_dict(info.recipe) if info is not None and info.recipe else None
        if original is None:
            warnings.warn(
                "The original model records no training recipe; 'retrain' uses unlearnkit's "
                "default Recipe() unless its parameters say otherwise.", UserWarning, stacklevel=4)
        fresh = fresh_copy(model).to(request.device)
        assert request.retain is not None
        fit(fresh, request.retain, self.recipe(original), seed=request.seed,
            device=request.device, progress=request.progress, desc="retrain")
        return fresh
