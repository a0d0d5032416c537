"""The importance modes, and the objectives whose gradients they reduce.

A per-sample mode (:data:`PER_SAMPLE_MODES`) sums, over samples, a reduction (square or
absolute value) of the per-sample gradient of one or more *objectives*; a batch mode
(:data:`BATCH_MODES`) reduces the gradient of each mini-batch's mean; ``"saliency"`` sums the
signed gradients. The module docstring of :mod:`unlearnkit.importance` defines each mode.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from unlearnkit.data.batches import Inputs, take
from unlearnkit.importance._common import Importances, Names, grads_of
from unlearnkit.models.adapters import forward

#: The importances :func:`~unlearnkit.importance.importances` computes.
MODES = ("fisher", "batch-squared-grad", "true-fisher", "output-norm", "batch-output-norm",
         "saliency")
#: The modes whose value depends on how the data is cut into mini-batches (and their order).
BATCH_MODES = ("batch-squared-grad", "batch-output-norm")
#: The modes that never read the labels.
LABEL_FREE_MODES = ("true-fisher", "output-norm", "batch-output-norm")
#: The modes computed from per-sample gradients.
PER_SAMPLE_MODES = ("fisher", "true-fisher", "output-norm")
#: Default mini-batch size: the public SSD code's for ``batch-squared-grad``; for the Fisher it
#: only trades memory for speed.
DEFAULT_BATCH_SIZE = 64

#: ``objective(outputs, labels) -> sum over the samples of a per-sample scalar``; each sample's
#: term must depend on that sample's output row only (so that per-sample gradients exist).
Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------------- objectives
def ce_sum(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``sum_n CE(f(x_n), y_n)``."""
    return F.cross_entropy(out, y, reduction="sum")


def squared_norm_sum(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``sum_n ||f(x_n)||^2`` (the labels are not read)."""
    return out.float().pow(2).sum()


class WeightedClassCE:
    """``sum_n sqrt(p(c | x_n)) * CE(f(x_n), c)`` with ``p`` detached: its per-sample gradient,
    squared, is ``p(c | x_n) * (d CE(f(x_n), c) / d theta)^2``, one class's term of the true
    Fisher (the labels are not read)."""

    def __init__(self, c: int) -> None:
        self.c = c

    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(out.float(), dim=-1)
        weight = (0.5 * logp[..., self.c]).exp().detach()  # sqrt(p_c)
        return -(weight * logp[..., self.c]).sum()


# ---------------------------------------------------------------------------- per-sample modes
def per_sample_rule(mode: str, model: nn.Module, x: Inputs) -> tuple[list[Objective], str]:
    """The objectives whose per-sample gradients a per-sample mode sums, and how it reduces
    each per-sample gradient (``"square"`` or ``"abs"``)."""
    if mode == "fisher":
        return [ce_sum], "square"
    if mode == "output-norm":
        return [squared_norm_sum], "abs"
    with torch.no_grad():
        classes = forward(model, take(x, slice(0, 1))).shape[-1]
    return [WeightedClassCE(c) for c in range(classes)], "square"


def reduce(v: torch.Tensor, how: str) -> torch.Tensor:
    """Sum over the first (sample) dimension of the squares (``"square"``) or absolute values
    (``"abs"``)."""
    v = v.float()
    return (v * v).sum(0) if how == "square" else v.abs().sum(0)


# ---------------------------------------------------------------------------- other modes
def saliency_sum(model: nn.Module, names: Names, x: Inputs, y: torch.Tensor) -> Importances:
    """``sum_n g_n``: the gradient of the summed cross-entropy of one mini-batch."""
    return grads_of(ce_sum(forward(model, x), y), names)


def batch_squared_grad(model: nn.Module, names: Names, x: Inputs, y: torch.Tensor
                       ) -> Importances:
    """The square of the gradient of the mini-batch's mean cross-entropy."""
    loss = F.cross_entropy(forward(model, x), y)
    return {k: g * g for k, g in grads_of(loss, names).items()}


def batch_output_norm(model: nn.Module, names: Names, x: Inputs, y: torch.Tensor
                      ) -> Importances:
    """The absolute gradient of the mini-batch's mean squared output norm."""
    loss = squared_norm_sum(forward(model, x), y) / len(y)
    return {k: g.abs() for k, g in grads_of(loss, names).items()}


#: The batch modes' rules: ``rule(model, names, x, y) -> importances of one mini-batch``.
BATCH_RULES: dict[str, Callable[..., Importances]] = {
    "batch-squared-grad": batch_squared_grad,
    "batch-output-norm": batch_output_norm,
}
