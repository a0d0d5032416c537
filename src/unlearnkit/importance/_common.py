"""What every part of :mod:`unlearnkit.importance` shares: the result type, the trainable
parameters, gradient sums, chunk sizes and how a module is named in messages."""

from __future__ import annotations

import torch
from torch import nn

Importances = dict[str, torch.Tensor]
#: ``{parameter: name}`` of the parameters that are weighed (see :func:`trainable`).
Names = dict[nn.Parameter, str]

#: Largest per-chunk tensor (elements) that the hooks and vmap paths materialise.
CHUNK_ELEMENTS = 1 << 24
#: Per-sample convolution gradients per chunk on a CPU, per two threads: small enough to stay
#: in cache (measured best on 1 and 2 threads; more threads want larger chunks).
CPU_CHUNK_ELEMENTS = 1 << 18


def trainable(model: nn.Module) -> Names:
    """``{parameter: name}`` for every parameter that requires grad (shared ones once)."""
    return {p: name for name, p in model.named_parameters() if p.requires_grad}


def add(into: Importances, more: Importances) -> None:
    """``into[k] += more[k]`` in place, for keys already in ``into``."""
    for k, v in more.items():
        into[k] += v


def sum_into(into: Importances, more: Importances) -> None:
    """``into[k] = into[k] + more[k]``, creating the keys that ``into`` lacks."""
    for k, v in more.items():
        into[k] = into[k] + v if k in into else v


def grads_of(loss: torch.Tensor, names: Names) -> Importances:
    """The gradient of ``loss`` with respect to each parameter (zeros where unused), float32."""
    params = list(names)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return {names[p]: (g.detach().float() if g is not None else torch.zeros_like(p).float())
            for p, g in zip(params, grads, strict=True)}


def per_sample_chunk(names: Names) -> int:
    """Samples per chunk when per-sample gradients are materialised."""
    return max(1, CHUNK_ELEMENTS // max(sum(p.numel() for p in names), 1))


def module_label(model: nn.Module, module: nn.Module | None) -> str:
    """How a message names one of ``model``'s modules: ``nn.GRU ('encoder.gru')``, or the
    class name of a module that is not torch's."""
    if module is None:
        return "forward pass"
    cls = type(module)
    label = ("nn." if cls.__module__.startswith("torch.nn") else "") + cls.__name__
    path = next((n for n, m in model.named_modules() if m is module), "")
    return f"{label} ({path!r})" if path else label
