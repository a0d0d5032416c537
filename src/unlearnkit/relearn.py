"""Relearning time and the Anamnesis index (AIN) of Chundawat et al. (IEEE TIFS 2023).

:func:`relearn_steps` fine-tunes a copy of a model on some data and counts the optimiser steps
until its accuracy on other data reaches a target; :func:`anamnesis` compares that count for an
unlearned and a retrained model (:func:`unlearnkit.metrics.anamnesis.anamnesis_index`).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from unlearnkit.data.splits import Data, Split
from unlearnkit.exceptions import InvalidParameterError, ModelError
from unlearnkit.metrics.anamnesis import anamnesis_index
from unlearnkit.training import (
    _check_float,
    _check_int,
    accuracy,
    cross_entropy,
    data_size,
    fused,
    iter_batches,
    model_device,
    resolve_device,
    seeded,
    set_train,
)

__all__ = ["anamnesis", "relearn_steps"]


def _check_common(lr: object, batch_size: object, max_epochs: object) -> None:
    _check_float("lr", lr, 0.0, strict_low=True)
    _check_int("batch_size", batch_size, 1)
    _check_int("max_epochs", max_epochs, 1)


def _check_data(name: str, data: Data) -> None:
    try:
        n = data_size(data)
    except TypeError as exc:
        raise InvalidParameterError(
            f"The {name!r} parameter must be a dataset or DataLoader with a length. Got "
            f"{type(data).__name__} instead."
        ) from exc
    if n == 0:
        raise InvalidParameterError(f"The {name!r} parameter is empty: it holds no samples.")


def relearn_steps(
    model: nn.Module,
    relearn_data: Data,
    eval_data: Data,
    target_acc: float,
    *,
    lr: float = 1e-3,
    batch_size: int = 32,
    max_epochs: int = 40,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> int | None:
    """Optimiser steps a copy of ``model`` needs to reach ``target_acc`` on ``eval_data``.

    The relearning time ``rt`` of Chundawat et al., "Zero-Shot Machine Unlearning" (IEEE TIFS
    2023): a deep copy of ``model`` is fine-tuned with Adam (learning rate ``lr``, no weight
    decay) and cross-entropy over shuffled mini-batches of ``relearn_data``; after every step
    its accuracy on ``eval_data`` is measured (in eval mode; the steps run in train mode), and
    the number of steps taken so far is returned as soon as it is ``>= target_acc``. The count
    starts at 1, as in the public code: a step is always taken before the first check, so a
    model that already meets the target returns 1, never 0.

    ``model`` itself is left untouched (weights, buffers, train/eval flags), and so is the
    caller's global RNG. On the CPU the same ``seed`` gives the same count.

    Each check is a full pass over ``eval_data``: the cost grows as steps x ``len(eval_data)``.

    Args:
        model: the network to relearn from (not modified).
        relearn_data: the data it is fine-tuned on (normally the forget set D_f).
        eval_data: the data its accuracy is checked on after each step (normally D_f too).
        target_acc: accuracy to reach, in ``[0, 1]``.
        lr: Adam's learning rate.
        batch_size: mini-batch size (a DataLoader is re-batched with it and the seeded order).
        max_epochs: at most this many passes over ``relearn_data``.
        seed: seeds the shuffling and any randomness in the model (dropout).
        device: where to run; defaults to the device of ``model``'s parameters.

    Returns:
        The number of steps (``>= 1``) after which the accuracy first reached ``target_acc``,
        or ``None`` if it never did within ``max_epochs`` epochs.

    Raises:
        InvalidParameterError: ``lr <= 0``, ``batch_size < 1``, ``max_epochs < 1``,
            ``target_acc`` outside ``[0, 1]``, or empty ``relearn_data`` / ``eval_data``.
        ModelError: the loss became non-finite, or the model has no trainable parameter.
    """
    _check_common(lr, batch_size, max_epochs)
    _check_float("target_acc", target_acc, 0.0, high=1.0)
    _check_data("relearn_data", relearn_data)
    _check_data("eval_data", eval_data)
    dev = resolve_device(device) if device is not None else model_device(model)
    work = copy.deepcopy(model).to(dev)
    params = [p for p in work.parameters() if p.requires_grad]
    if not params:
        raise ModelError("Cannot relearn: the model has no trainable parameter.")
    optimizer = fused(torch.optim.Adam, params, lr=lr)
    steps = 0
    with seeded(seed, dev):
        gen = torch.Generator().manual_seed(seed)
        for _ in range(max_epochs):
            for x, y in iter_batches(
                relearn_data, batch_size, shuffle=True, generator=gen, device=dev
            ):
                set_train(work)
                optimizer.zero_grad(set_to_none=True)
                loss = cross_entropy(work, x, y)
                if not torch.isfinite(loss):
                    raise ModelError(
                        f"The loss became {loss.item()} while relearning at step {steps + 1}:"
                        " lower the learning rate."
                    )
                loss.backward()
                optimizer.step()
                steps += 1
                if accuracy(work, eval_data, device=dev) >= target_acc:
                    return steps
    return None


def anamnesis(
    unlearned: nn.Module,
    original: nn.Module,
    retrained: nn.Module,
    split: Split,
    *,
    error_range: float = 0.05,
    lr: float = 1e-3,
    batch_size: int = 32,
    max_epochs: int = 40,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> float:
    """The Anamnesis index (AIN) of ``unlearned`` for the forget request ``split``.

    Chundawat et al., "Zero-Shot Machine Unlearning" (IEEE TIFS 2023): the target is
    ``(1 - error_range) * accuracy(original, split.forget)``; the unlearned and the retrained
    model are each relearned on ``split.forget`` with :func:`relearn_steps` (same ``seed``, so
    the same mini-batches in the same order), checked on ``split.forget`` after every step,
    and::

        AIN = relearn_steps(unlearned) / relearn_steps(retrained)

    AIN near 1: the unlearned model is as slow to relearn the forgotten data as a model that
    never saw it (good); AIN << 1: it relearns much faster, so the information is still there;
    ``inf``: it never relearned within the budget; ``nan``: the retrained model never did
    (raise ``max_epochs`` or ``lr``). See
    :func:`unlearnkit.metrics.anamnesis.anamnesis_index`.

    The count starts at 1, as in the public code (a step is taken before the first check), so
    the ratio is always defined unless the retrained model never recovers.

    The index is mostly informative for class unlearning. For a random-subset forget request
    the retrained model generalises to the forget samples, so it often meets the target
    already at its first step, and then no unlearned model can score below 1.

    None of the three models is modified.

    Args:
        unlearned: the model to judge.
        original: the fully trained model; it sets the target accuracy.
        retrained: the reference trained without ``split.forget``.
        split: the forget request.
        error_range: relative tolerance on the original's forget accuracy, in ``[0, 1]``.
        lr: Adam's learning rate for relearning.
        batch_size: relearning mini-batch size.
        max_epochs: relearning budget in epochs over ``split.forget``.
        seed: seeds the relearning of both models.
        device: where to run; defaults to each model's device.

    Returns:
        The index (see above).

    Raises:
        InvalidParameterError: a bad argument (see :func:`relearn_steps`), ``error_range``
            outside ``[0, 1]``, ``split`` not a Split, or an empty forget set.
    """
    if not isinstance(split, Split):
        raise InvalidParameterError(
            f"The 'split' parameter must be a unlearnkit Split. Got {type(split).__name__} "
            "instead."
        )
    _check_float("error_range", error_range, 0.0, high=1.0)
    _check_common(lr, batch_size, max_epochs)
    _check_data("split.forget", split.forget)
    acc = accuracy(original, split.forget, device=device)
    if math.isnan(acc):
        raise InvalidParameterError("The 'split.forget' parameter is empty: it holds no samples.")
    target = min(max((1.0 - error_range) * acc, 0.0), 1.0)
    kwargs = {"lr": lr, "batch_size": batch_size, "max_epochs": max_epochs, "seed": seed,
              "device": device}
    unlearned_steps = relearn_steps(unlearned, split.forget, split.forget, target, **kwargs)
    retrained_steps = relearn_steps(retrained, split.forget, split.forget, target, **kwargs)
    return anamnesis_index(unlearned_steps, retrained_steps)
