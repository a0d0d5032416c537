"""What a model's forward pass does: which layers run, in which order, which one outputs the
logits.

Registration order (:meth:`torch.nn.Module.named_modules`) is not forward order: a model may
register its head before its body, keep a ``cls_token`` on the root module, or run
``nn.MultiheadAttention``'s ``out_proj`` without calling it. These functions run *one* forward
pass, in eval mode and under :func:`torch.no_grad`, on a small sample input, and watch it:

* forward hooks on every module that holds parameters of its own (a *layer*) record what
  each one returns;
* a :class:`~torch.overrides.TorchFunctionMode` records which parameters each torch operation
  reads, so that a layer is placed where its parameters are used, even when its ``forward``
  is bypassed (``nn.TransformerEncoderLayer``'s fast path, ``out_proj``) or when it is a
  container whose own parameters are used before its children run (a ViT's ``cls_token``).

The model's state is untouched (eval mode is restored, no gradient is computed).
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from unlearnkit.data.batches import Inputs
from unlearnkit.data.splits import Data
from unlearnkit.exceptions import ModelError, UnsupportedModelError
from unlearnkit.models.adapters import forward, logits_of

__all__ = ["Layer", "forward_order", "output_module", "sample_input"]

#: ``(qualified name, module)`` as :meth:`torch.nn.Module.named_modules` gives them.
Layer = tuple[str, nn.Module]


def sample_input(data: Data, device: torch.device | str | None = None) -> Inputs:
    """The first two samples of ``data`` (in order), on ``device``: the input of the pass."""
    from unlearnkit.training import iter_batches  # unlearnkit.training imports models

    dev = torch.device(device) if isinstance(device, str) else device
    for x, _ in iter_batches(data, 2, shuffle=False, device=dev):
        return x
    raise ModelError("No data to run the model on: the data set is empty.")


# -------------------------------------------------------------------------- the trace
@dataclass
class _Trace:
    logits: torch.Tensor
    layers: dict[str, nn.Module]
    #: ``{id(parameter): name}`` (a shared parameter under its first name)
    names: dict[int, str] = field(default_factory=dict)
    #: tick of each layer's last finished forward (hooks)
    finished: dict[str, int] = field(default_factory=dict)
    #: the last output of each layer, weakly (a tensor, or the logits in a ModelOutput)
    outputs: dict[str, weakref.ref] = field(default_factory=dict)
    #: tick of each parameter's last use, by parameter name
    used: dict[str, int] = field(default_factory=dict)
    #: ``(output, function name, parameter names)`` of each op that returned a tensor, weakly
    ops: list[tuple[weakref.ref, str, list[str]]] = field(default_factory=list)


class _Watch(TorchFunctionMode):
    """Records, for every torch operation, the parameters among its arguments."""

    def __init__(self, trace: _Trace, names: dict[int, str], clock: Iterator[int]) -> None:
        super().__init__()
        self.trace, self.names, self.clock = trace, names, clock

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        tick = next(self.clock)
        params = [self.names[id(a)] for a in tree_leaves((args, kwargs))
                  if isinstance(a, torch.Tensor) and id(a) in self.names]
        for name in params:
            self.trace.used[name] = tick
        if isinstance(out, torch.Tensor):
            self.trace.ops.append((weakref.ref(out), _func_name(func), params))
        return out


def _func_name(func: Any) -> str:
    """``torch.flatten``, ``Tensor.__truediv__``, ``torch.nn.functional.layer_norm``..."""
    name = getattr(func, "__name__", None) or repr(func)
    qualname = getattr(func, "__qualname__", "") or ""
    module = getattr(func, "__module__", None) or ""
    if qualname.startswith("TensorBase.") or qualname.startswith("Tensor."):
        return f"Tensor.{name}"
    if module == "torch.nn.functional":
        return f"torch.nn.functional.{name}"
    if module.startswith("torch"):
        return f"torch.{name}"
    return name


def _trace(model: nn.Module, x: Inputs) -> _Trace:
    from unlearnkit.training import eval_mode  # unlearnkit.training imports models

    layers = {name: m for name, m in model.named_modules() if _own(m)}
    names = {id(p): n for n, p in model.named_parameters()}
    clock = itertools.count()
    trace = _Trace(logits=torch.empty(0), layers=layers, names=names)

    def hook(name: str):
        def fn(module: nn.Module, args: Any, out: Any) -> None:
            trace.finished[name] = next(clock)
            try:  # the logits of a model are the output tensor of the layer that made them
                t: torch.Tensor | None = logits_of(out)
            except ModelError:
                t = None
            if t is not None:
                trace.outputs[name] = weakref.ref(t)
            else:
                trace.outputs.pop(name, None)
        return fn

    handles = [m.register_forward_hook(hook(name)) for name, m in layers.items()]
    try:
        with torch.no_grad(), eval_mode(model), _Watch(trace, names, clock):
            trace.logits = forward(model, x)
    finally:
        for h in handles:
            h.remove()
    return trace


def _own(module: nn.Module) -> list[nn.Parameter]:
    return list(module.parameters(recurse=False))


def _same(a: torch.Tensor | None, b: torch.Tensor) -> bool:
    """Whether ``a`` is ``b``: the same object, or the same memory with the same shape."""
    if a is None:
        return False
    return a is b or (a.shape == b.shape and a.dtype == b.dtype and a.device == b.device
                      and a.stride() == b.stride() and a.data_ptr() == b.data_ptr())


def _order(trace: _Trace, model: nn.Module) -> list[Layer]:
    registration = {name: i for i, name in enumerate(trace.layers)}
    keys: dict[str, int] = {}
    for name, m in trace.layers.items():
        own = [trace.names[id(p)] for p in m.parameters(recurse=False)]
        ticks = [trace.used[n] for n in own if n in trace.used]
        if ticks:
            keys[name] = max(ticks)
        elif name in trace.finished:
            keys[name] = trace.finished[name]
    ordered = sorted(keys, key=lambda n: (keys[n], registration[n]))
    return [(n, trace.layers[n]) for n in ordered]


# --------------------------------------------------------------------------- the API
def forward_order(model: nn.Module, x: Inputs) -> list[Layer]:
    """The model's layers (modules holding parameters of their own) in data-flow order.

    One forward pass on ``x`` (eval mode, no gradient). Each layer appears once, at the last
    use of its own parameters in that pass (for an ordinary layer, when its forward finishes;
    for a shared layer, at its last call); ties, such as the sub-layers of a fused
    ``nn.TransformerEncoderLayer`` fast path, keep registration order. A layer whose
    parameters the pass never reads (an unused head, a training-only branch) is left out.
    """
    return _order(_trace(model, x), model)


def output_module(model: nn.Module, x: Inputs, *, method: str = "") -> Layer:
    """``(name, module)`` of the layer whose output is the model's logits.

    One forward pass on ``x`` (eval mode, no gradient): the logits (:func:`forward`, a
    Hugging Face ``ModelOutput``'s ``logits`` included) must be the very tensor a layer
    returned (or a view of it with the same shape). When several nested modules return it (a
    model whose ``forward`` ends with ``return self.head(h)`` and holds parameters of its own),
    the innermost is the output layer.

    Raises:
        UnsupportedModelError: when no layer outputs the logits: they are computed from a bare
            ``nn.Parameter`` of a container module, or transformed (scaled, sliced,
            normalised by a parameter-free op) after the last layer.
    """
    trace = _trace(model, x)
    logits = trace.logits
    candidates = [name for name, ref in trace.outputs.items() if _same(ref(), logits)]
    candidates.sort(key=lambda n: trace.finished.get(n, -1))
    for name in candidates[:1]:
        m = trace.layers[name]
        has_child_layers = any(_own(c) for c in m.modules() if c is not m)
        own = {trace.names[id(p)] for p in m.parameters(recurse=False)}
        produced_by = _producer(trace)
        if not has_child_layers or (name and produced_by and set(produced_by[1]) & own):
            return name, m
    raise UnsupportedModelError(
        method or "output_module",
        "a model whose logits are not the output of a layer: " + _why(trace, model),
        "Methods that act on the output layer need the logits to be exactly what one layer "
        "returns: compute them in a module of their own (e.g. an nn.Linear, or a small "
        "nn.Module holding that parameter) and apply any scaling inside it, or use a method "
        "that does not touch the output layer.")


def _producer(trace: _Trace) -> tuple[str, list[str]] | None:
    """``(function name, parameter names)`` of the op that returned the logits."""
    for ref, func, params in reversed(trace.ops):
        if ref() is trace.logits:
            return func, params
    return None


def _why(trace: _Trace, model: nn.Module) -> str:
    produced = _producer(trace)
    order = [n for n, _ in _order(trace, model) if n]
    last = f" after the last layer, {order[-1]!r}" if order else ""
    if produced is None:
        return "they are not produced by any torch operation the pass could see"
    func, params = produced
    if params:
        return (f"they are computed by {func} from the bare parameter"
                f"{'s' if len(params) > 1 else ''} {', '.join(repr(p) for p in params)}, not "
                "returned by a layer")
    return (f"they are computed by {func}{last} (a scaling, slicing or reshaping of its "
            "output)")
