"""Retraining from scratch on the retain set: the exact reference."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from unlearnkit.exceptions import InvalidParameterError, ModelError
from unlearnkit.methods.base import (
    Request,
    UnlearningMethod,
    hp,
    qualified_name,
    register_method,
)
from unlearnkit.models.registry import fresh_copy
from unlearnkit.training import Recipe, fit

#: The hyper-parameters that are fields of the training :class:`Recipe`.
RECIPE_FIELDS = ("epochs", "lr", "optimizer", "weight_decay", "batch_size", "schedule")


@register_method
@dataclass(frozen=True, kw_only=True)
class Retrain(UnlearningMethod):
    """Train a freshly initialised copy of the architecture on D_r with the original's recipe.

    Exact unlearning: the result never saw D_f. Every approximate method is judged against it.
    Each recipe field left at ``None`` is taken from the original's recorded recipe (the
    checkpoint's metadata); a model without one falls back to :class:`Recipe`'s defaults, with
    a warning.

    The fresh model is :func:`~unlearnkit.models.fresh_copy` of the original: every trainable
    parameter re-drawn by its layer's initialiser (Hugging Face models: rebuilt from their
    config), frozen parameters (``requires_grad=False``, e.g. a pretrained backbone) kept bit
    for bit, since they were never trained on D. Two hyper-parameters hand either step to your
    own code:

    * ``model_factory``: a callable ``() -> nn.Module`` that builds the fresh model your own
      way (your initialisation, your pretrained weights). It is called under the request's
      seed; its model must have the original's parameter names and shapes (else a
      :class:`~unlearnkit.exceptions.ModelError`) and must be a new object, not the original.
    * ``train_fn``: a callable ``(model, retain_data, *, seed, device) -> None`` that trains
      the fresh model in place on D_r (your training loop, your augmentation). The recipe
      fields then do not apply and must stay ``None``.

    Both are Python objects, so they cannot be given on the command line; a model's
    provenance (``ModelInfo.method["params"]``, saved in checkpoints) records each by its
    qualified name, ``"module:qualname"``. ``uk.retrain(model, split, model_factory=...,
    train_fn=...)`` passes them through.

    Paper: the gold standard of every unlearning paper; e.g. Bourtoule et al., Machine
    Unlearning, IEEE S&P 2021.
    """

    name = "retrain"
    paper = "exact reference; Bourtoule et al., Machine Unlearning, IEEE S&P 2021"
    summary = "train from scratch on the retain set with the original's recipe"
    keep_utility = ("train longer: the retrained model falls short of the original on the "
                    "retained data (give the original's epochs and learning rate)")
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
    #: callable ``() -> nn.Module``; ``hp()`` returns a plain field, so RUF009 does not apply
    model_factory: Callable[[], nn.Module] | None = hp(  # noqa: RUF009
        None, "callable () -> nn.Module building the fresh model (None: fresh_copy of the "
        "original)", type=object)
    #: callable ``(model, retain_data, *, seed, device) -> None`` training ``model`` in place
    train_fn: Callable[..., None] | None = hp(  # noqa: RUF009
        None, "callable (model, retain_data, *, seed, device) training it in place (None: "
        "unlearnkit's fit with the recipe)", type=object)

    def _check(self) -> None:
        for key in ("model_factory", "train_fn"):
            value = getattr(self, key)
            if value is not None and not callable(value):
                raise InvalidParameterError(
                    f"The {key!r} parameter of 'retrain' must be a callable (a Python function "
                    f"or class; it cannot be given on the command line). Got {value!r} instead.")
        if self.train_fn is not None:
            set_ = [k for k in RECIPE_FIELDS if getattr(self, k) is not None]
            if set_:
                raise InvalidParameterError(
                    f"'retrain' got train_fn and the recipe parameter(s) {', '.join(set_)}, "
                    "which only unlearnkit's own training uses. Leave them at None, or drop "
                    "train_fn.")

    def recipe(self, original: Recipe | None) -> Recipe:
        base = original or Recipe()
        changes = {k: getattr(self, k) for k in RECIPE_FIELDS if getattr(self, k) is not None}
        return base.replace(**changes)

    def fresh_model(self, model: nn.Module) -> nn.Module:
        """The model to train: ``model_factory()``, checked against ``model``, or
        :func:`~unlearnkit.models.fresh_copy` of ``model``."""
        if self.model_factory is None:
            return fresh_copy(model)
        name = qualified_name(self.model_factory)
        fresh = self.model_factory()
        if not isinstance(fresh, nn.Module):
            raise ModelError(
                f"retrain: model_factory {name} must return a torch.nn.Module. Got "
                f"{type(fresh).__name__}.")
        if fresh is model:
            raise ModelError(f"retrain: model_factory {name} returned the model itself; it must "
                             "build a new one.")
        want = {n: tuple(p.shape) for n, p in model.named_parameters()}
        got = {n: tuple(p.shape) for n, p in fresh.named_parameters()}
        if got != want:
            missing = [n for n in want if n not in got]
            extra = [n for n in got if n not in want]
            shapes = [f"{n}: {got[n]} instead of {want[n]}" for n in want
                      if n in got and got[n] != want[n]]
            parts = [f"missing {', '.join(missing[:5])}" if missing else "",
                     f"unexpected {', '.join(extra[:5])}" if extra else "",
                     f"shapes {'; '.join(shapes[:5])}" if shapes else ""]
            raise ModelError(
                f"retrain: model_factory {name} built a model whose parameters differ from the "
                f"original's ({'; '.join(p for p in parts if p)}). It must build the original's "
                "architecture.")
        return fresh

    def _unlearn(self, model: nn.Module, request: Request) -> nn.Module:
        original: Recipe | None = None
        if self.train_fn is None:
            info = request.original_info
            original = (Recipe.from_dict(info.recipe) if info is not None and info.recipe
                        else None)
            if original is None:
                warnings.warn(
                    "The original model records no training recipe; 'retrain' uses "
                    "unlearnkit's default Recipe() unless its parameters say otherwise.",
                    UserWarning, stacklevel=4)
        fresh = self.fresh_model(model).to(request.device)
        assert request.retain is not None
        if self.train_fn is not None:
            self.train_fn(fresh, request.retain, seed=request.seed, device=request.device)
        else:
            fit(fresh, request.retain, self.recipe(original), seed=request.seed,
                device=request.device, progress=request.progress, desc="retrain")
        return fresh
