"""The Python API in a few verbs: train a model, make it forget, evaluate it."""

from __future__ import annotations

import time
import warnings
from typing import Any

import torch
from torch import nn

from unlearnkit.data.containers import DataBundle
from unlearnkit.data.splits import Split
from unlearnkit.exceptions import ForgetVerdictWarning, InvalidParameterError
from unlearnkit.methods.base import UnlearningMethod, get_method
from unlearnkit.models.info import get_info, set_info
from unlearnkit.models.registry import build_model
from unlearnkit.training import (
    Recipe,
    fit,
    flushing_denormals,
    resolve_device,
    seeded,
    warm_up,
)

__all__ = ["DEFAULT_RECIPES", "default_recipe", "retrain", "train_model", "unlearn"]

#: Recipes that train each built-in architecture well on a CPU; others use Recipe().
DEFAULT_RECIPES: dict[str, Recipe] = {
    "mlp": Recipe(epochs=30, lr=0.05, batch_size=64),
    "cnn": Recipe(epochs=30, lr=0.05, batch_size=64),
    "resnet18": Recipe(epochs=30, lr=0.1, batch_size=128),
}


def default_recipe(arch: str) -> Recipe:
    return DEFAULT_RECIPES.get(arch, Recipe())


@flushing_denormals
def train_model(
    data: DataBundle,
    *,
    arch: str = "cnn",
    recipe: Recipe | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
    **arch_kwargs: Any,
) -> nn.Module:
    """Build ``arch`` for ``data`` and train it on ``data.train``.

    The model carries its provenance (architecture, dataset, recipe, seed, seconds), which
    :func:`unlearnkit.save_checkpoint` stores and the ``retrain`` method reads.
    """
    recipe = recipe or default_recipe(arch)
    dev = resolve_device(device)
    warm_up(dev)  # torch's one-time costs are not the training's
    start = time.perf_counter()
    with seeded(seed, dev):
        model = build_model(arch, num_classes=data.num_classes, input_shape=data.input_shape,
                            **arch_kwargs)
    fit(model, data.train, recipe, seed=seed, device=dev, progress=progress,
        desc=f"train {arch} on {data.name}")
    seconds = time.perf_counter() - start
    info = get_info(model)
    assert info is not None
    return set_info(
        model,
        info.replace(dataset={"name": data.name, "options": dict(data.options)},
                     recipe=recipe.to_dict(), seconds=seconds, seed=seed),
    )


@flushing_denormals
def unlearn(
    model: nn.Module,
    split: Split,
    method: str | UnlearningMethod = "finetune",
    *,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
    verdict: bool = True,
    **params: Any,
) -> nn.Module:
    """Return a copy of ``model`` that has forgotten ``split.forget``.

    Args:
        model: the original model (left untouched).
        split: the forget request (:func:`split_by_class`, :func:`split_random`,
            :func:`split_indices` or :meth:`Split.from_data`).
        method: a registered name (``unlearnkit methods`` lists them) or a method instance.
        seed: seeds the method's randomness.
        verdict: judge the result without the retrained model
            (:func:`unlearnkit.evaluation.verdict`: D_f against the split's validation set,
            retained accuracy against ``model``'s) when the split has a validation set;
            ``uk.get_info(result).verdict`` holds it (a dict; ``"outcome"`` is one of
            ``forgotten``, ``partial``, ``not forgotten``, ``utility lost``). A ``not
            forgotten`` or ``utility lost`` outcome also warns (:class:`ForgetVerdictWarning`).

    The result's ``seconds`` (:func:`unlearnkit.get_info`) is the method's wall-clock, less the
    time spent in the epoch watchers of :func:`~unlearnkit.training.watch_epochs` (per-epoch
    evaluations are instrumentation, not the method's cost).
    """
    if not isinstance(split, Split):
        raise InvalidParameterError(
            f"The 'split' parameter must be a unlearnkit Split. Got {type(split).__name__}; "
            "build one with split_by_class, split_random, split_indices or Split.from_data."
        )
    m = get_method(method, **params)
    out = m.unlearn(model, forget=split.forget, retain=split.retain, test=split.test,
                    scenario=split.scenario, seed=seed, device=device, progress=progress)
    info = get_info(out)
    if info is not None and split.description:
        info = info.replace(split=dict(split.description))
        set_info(out, info)
    if verdict and split.validation is not None and info is not None:
        from unlearnkit.evaluation import verdict as judge

        v = judge(out, split, model, hint=m.forget_more, utility_hint=m.keep_utility,
                  device=device)
        set_info(out, info.replace(verdict=v.to_dict()))
        if v.outcome in ("not forgotten", "utility lost"):
            warnings.warn(f"{m.name}: {v.summary()}. Try: {v.hint}.", ForgetVerdictWarning,
                          stacklevel=2)
    return out


def retrain(
    model: nn.Module,
    split: Split,
    *,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
    **recipe_changes: Any,
) -> nn.Module:
    """The exact reference: ``model``'s architecture trained from scratch on ``split.retain``.

    ``**recipe_changes`` are the ``retrain`` method's hyper-parameters: recipe fields
    (``epochs``, ``lr``...; ``None`` takes the original's), ``model_factory`` (a callable
    ``() -> nn.Module`` building the fresh model your own way; default: the original's
    trainable parameters re-initialised, frozen ones kept) and ``train_fn`` (a callable
    ``(model, retain_data, *, seed, device) -> None`` training it in place; default:
    unlearnkit's ``fit`` with the recipe). See :class:`unlearnkit.methods.retrain.Retrain`.
    """
    return unlearn(model, split, "retrain", seed=seed, device=device, progress=progress,
                   **recipe_changes)
