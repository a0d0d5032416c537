"""Per-sample gradients by ``torch.func``: ``vmap`` of ``grad`` over the whole model.

Each sample is its own batch of one inside ``vmap`` (every tensor of the input gets a leading
dimension back); the model is called through ``functional_call`` with the input's form: a
tensor positionally, a dict as keyword arguments (Hugging Face), a tuple positionally. Models
whose forward is not vmap-able (data-dependent control flow, ``nn.GRU``'s fused kernels...)
raise :class:`VmapError`, which names the module that failed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from unlearnkit.data.batches import Inputs, take
from unlearnkit.exceptions import UnlearnkitError, UnsupportedModelError
from unlearnkit.importance._common import CHUNK_ELEMENTS, Importances, Names, module_label
from unlearnkit.importance.modes import Objective, ce_sum, reduce
from unlearnkit.models.adapters import logits_of


class VmapError(UnsupportedModelError):
    """``torch.func.vmap`` cannot compute this model's per-sample gradients."""

    def __init__(self, culprit: str, cause: BaseException) -> None:
        self.culprit, self.cause = culprit, cause
        text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        super().__init__(
            "per-sample gradients by torch.func.vmap",
            f"the model's {culprit} ({type(cause).__name__}: {text[:200]})",
            "Use implementation='loop' (one backward pass per sample), or 'auto', which "
            "picks the fastest implementation that works.")


class ModuleTrace:
    """While active, which modules have been entered and not left: after an exception in the
    forward pass, :attr:`culprit` is the innermost module that raised it."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.stack: list[nn.Module] = []
        self.handles: list[Any] = []

    def __enter__(self) -> ModuleTrace:
        for m in self.model.modules():
            self.handles.append(m.register_forward_pre_hook(self._enter))
            self.handles.append(m.register_forward_hook(self._leave))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def _enter(self, module: nn.Module, args: Any) -> None:
        self.stack.append(module)

    def _leave(self, module: nn.Module, args: Any, output: Any) -> None:
        while self.stack and self.stack.pop() is not module:
            pass

    @property
    def culprit(self) -> str:
        return module_label(self.model, self.stack[-1] if self.stack else None)


def call(model: nn.Module, params: Any, x: Inputs) -> torch.Tensor:
    """The logits of ``functional_call(model, params, ...)`` on the input ``x``."""
    from torch.func import functional_call

    if isinstance(x, torch.Tensor):
        args, kwargs = (x,), {}
    elif isinstance(x, Mapping):
        args, kwargs = (), dict(x)
    else:
        args, kwargs = tuple(x), {}
    return logits_of(functional_call(model, params, args, kwargs, strict=False))


def vmap_chunks(model: nn.Module, names: Names, x: Inputs, y: torch.Tensor,
                objective: Objective) -> Iterator[Importances]:
    """Per-sample gradients ``{name: (chunk, *shape)}`` by ``torch.func``, chunk by chunk."""
    from torch.func import grad, vmap

    params = {k: p.detach() for p, k in names.items()}
    others = {k: p.detach() for k, p in model.named_parameters() if k not in params}
    buffers = dict(model.named_buffers())

    def loss(ps: Importances, xi: Inputs, yi: torch.Tensor) -> torch.Tensor:
        out = call(model, (ps, others, buffers), take(xi, None))  # a batch of one
        return objective(out, yi.unsqueeze(0))

    per_sample = sum(p.numel() for p in params.values())
    n = len(y)
    chunk = max(1, min(n, CHUNK_ELEMENTS // max(per_sample, 1)))
    for s in range(0, n, chunk):
        part = slice(s, s + chunk)
        with ModuleTrace(model) as trace:
            try:
                with torch.no_grad():  # torch.func.grad still differentiates; no outer graph
                    grads = vmap(grad(loss), in_dims=(None, 0, 0))(params, take(x, part),
                                                                  y[part])
            except UnlearnkitError:
                raise
            except Exception as exc:
                raise VmapError(trace.culprit, exc) from exc
        yield grads


def vmap_grads(model: nn.Module, names: Names, x: Inputs, y: torch.Tensor,
               objective: Objective = ce_sum) -> Importances:
    """Per-sample gradients ``{name: (batch, *shape)}``, float32."""
    parts = list(vmap_chunks(model, names, x, y, objective))
    return {k: torch.cat([p[k] for p in parts]).float() for k in names.values()}


def fisher_vmap(model: nn.Module, names: Names, x: Inputs, y: torch.Tensor,
                objective: Objective = ce_sum, how: str = "square") -> Importances:
    """The sum over the samples of the reduced (``how``) per-sample gradients."""
    out = {k: torch.zeros_like(p, dtype=torch.float32) for p, k in names.items()}
    for g in vmap_chunks(model, names, x, y, objective):
        for k, v in g.items():
            out[k] += reduce(v, how)
    return out
