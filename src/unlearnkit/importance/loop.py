"""The reference implementation: one forward and backward pass per sample.

The slowest, and the one that works for every model that works at all: the hooks and vmap
implementations are checked against it, and ``implementation="auto"`` falls back to it.
"""

from __future__ import annotations

import torch
from torch import nn

from unlearnkit.data.batches import Inputs, take
from unlearnkit.exceptions import ModelError, UnlearnkitError
from unlearnkit.importance._common import Importances, Names, add, grads_of
from unlearnkit.importance.modes import Objective, ce_sum, reduce
from unlearnkit.models.adapters import forward


def per_sample_loop(model: nn.Module, names: Names, x: Inputs, y: torch.Tensor,
                    objective: Objective = ce_sum) -> list[Importances]:
    """The gradients of ``objective`` on each sample alone, one backward pass each."""
    out = []
    for i in range(len(y)):
        try:
            loss = objective(forward(model, take(x, slice(i, i + 1))), y[i : i + 1])
            out.append(grads_of(loss, names))
        except UnlearnkitError:
            raise
        except Exception as exc:
            raise ModelError(
                f"Cannot take the gradient of the model's loss on a single sample "
                f"({type(exc).__name__}: {exc}). Per-sample gradients need a model that "
                "accepts a batch of one.") from exc
    return out


def loop_grads(model: nn.Module, names: Names, x: Inputs, y: torch.Tensor,
               objective: Objective = ce_sum) -> Importances:
    """Per-sample gradients ``{name: (batch, *shape)}``."""
    loop = per_sample_loop(model, names, x, y, objective)
    return {k: torch.stack([g[k] for g in loop]) for k in names.values()}


def fisher_loop(model: nn.Module, names: Names, x: Inputs, y: torch.Tensor,
                objective: Objective = ce_sum, how: str = "square") -> Importances:
    """The sum over the samples of the reduced (``how``) per-sample gradients."""
    out = {k: torch.zeros_like(p, dtype=torch.float32) for p, k in names.items()}
    for g in per_sample_loop(model, names, x, y, objective):
        add(out, {k: reduce(v.unsqueeze(0), how) for k, v in g.items()})
    return out
