"""Per-sample gradients from one batched forward and backward pass, by per-layer hooks.

A forward hook records each parameter-holding module's input, a tensor hook its output
gradient; a *layer rule* then turns ``(input, output gradient)`` into the per-sample gradients
of the module's own parameters, or directly into the sum of their squares (the technique of
Opacus and BackPACK). One rule per layer type (:data:`RULES`):

* ``nn.Linear`` (:func:`linear`): the per-sample gradient is ``outer(g_n, a_n)``, so for 2-D
  inputs the sum of squares is ``(g*g)^T (a*a)``, one matrix product;
* ``nn.Conv2d`` (:func:`conv2d`): a convolution-weight backward with the samples as groups, or
  a batched product of the output gradient and the unfolded input;
* ``BatchNorm`` in eval mode (:func:`batchnorm`), ``LayerNorm`` (:func:`layernorm`),
  ``GroupNorm`` (:func:`groupnorm`): the affine weight's per-sample gradient is
  ``sum(g * x_hat)`` over the positions, the bias's ``sum(g)``;
* any other module that holds parameters (:func:`module_vmap`): ``torch.func.vmap`` of
  ``grad`` of that module alone, given its recorded inputs and output gradient.

A model these rules cannot read (a module whose output is not one batched tensor, a parameter
used outside its module's forward...) raises :class:`Unsupported`, which names the module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unlearnkit.data.batches import Inputs, is_floating, take
from unlearnkit.exceptions import UnlearnkitError
from unlearnkit.importance._common import (
    CHUNK_ELEMENTS,
    CPU_CHUNK_ELEMENTS,
    Importances,
    Names,
    per_sample_chunk,
    sum_into,
)
from unlearnkit.importance.modes import Objective, ce_sum, reduce
from unlearnkit.importance.vmap import fisher_vmap, vmap_grads
from unlearnkit.models.adapters import forward


class Unsupported(Exception):
    """The hooks cannot read this model's per-sample gradients (``module``: the module that
    stopped them, when one did)."""

    def __init__(self, module: nn.Module | None = None) -> None:
        super().__init__()
        self.module = module


#: ``rule(module, input, output_grad, wanted attribute names, per_sample) -> {attr: tensor}``:
#: the per-sample gradients ``(N, *shape)`` with ``per_sample``, else the sums of their squares.
Rule = Callable[..., Importances]


# ---------------------------------------------------------------------------- layer rules
def _flat3(t: torch.Tensor) -> torch.Tensor:
    """``(N, *, D)`` -> ``(N, T, D)``."""
    return t.reshape(t.shape[0], -1, t.shape[-1])


def linear(m: nn.Linear, a: torch.Tensor, g: torch.Tensor, want: set[str], per_sample: bool
           ) -> Importances:
    """``nn.Linear``: ``outer(g_n, a_n)``, summed over any middle (token) dimensions."""
    out: Importances = {}
    if a.ndim == 2 and not per_sample:  # sum_n g_n^2 a_n^2 in one matrix product
        g2 = g * g
        if "weight" in want:
            out["weight"] = g2.t() @ (a * a)
        if "bias" in want:
            out["bias"] = g2.sum(0)
        return out
    a3, g3 = _flat3(a), _flat3(g)
    if "bias" in want:
        b = g3.sum(1)
        out["bias"] = b if per_sample else (b * b).sum(0)
    if "weight" in want:
        n, _, d_in = a3.shape
        chunk = max(1, CHUNK_ELEMENTS // max(g3.shape[-1] * d_in, 1))
        parts = []
        total = None
        for s in range(0, n, chunk):
            w = torch.bmm(g3[s : s + chunk].transpose(1, 2), a3[s : s + chunk])
            if per_sample:
                parts.append(w)
            else:
                sq = (w * w).sum(0)
                total = sq if total is None else total + sq
        out["weight"] = torch.cat(parts) if per_sample else total
    return out


def conv2d(m: nn.Conv2d, a: torch.Tensor, g: torch.Tensor, want: set[str], per_sample: bool
           ) -> Importances:
    """``nn.Conv2d``, in chunks of samples.

    With many output positions, the weight gradients of a chunk of ``c`` samples are one
    convolution-weight backward with ``c * groups`` groups (the samples become groups); with
    few, a batched product of the output gradient and the unfolded input is faster.
    """
    if a.ndim != 4:
        raise Unsupported(m)
    padding: Any = m.padding
    if isinstance(padding, str) or m.padding_mode != "zeros":
        mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
        a = F.pad(a, m._reversed_padding_repeated_twice, mode=mode)
        padding = 0
    n = a.shape[0]
    c_out, groups = m.out_channels, m.groups
    out: Importances = {}
    if "bias" in want:
        b = g.reshape(n, c_out, -1).sum(2)
        out["bias"] = b if per_sample else (b * b).sum(0)
    if "weight" not in want:
        return out
    positions = g.shape[2] * g.shape[3]
    per = m.weight.numel()
    target = (CHUNK_ELEMENTS if a.device.type != "cpu"
              else CPU_CHUNK_ELEMENTS * max(1, torch.get_num_threads() // 2))
    chunk = max(8, target // max(per, 1))
    parts = []
    total = None
    for s in range(0, n, chunk):
        aa, gg = a[s : s + chunk], g[s : s + chunk]
        c = aa.shape[0]
        if positions >= 64:
            w = torch.nn.grad.conv2d_weight(
                aa.reshape(1, -1, *aa.shape[2:]), (c * c_out, *m.weight.shape[1:]),
                gg.reshape(1, -1, *gg.shape[2:]), stride=m.stride, padding=padding,
                dilation=m.dilation, groups=c * groups)
            w = w.view(c, *m.weight.shape)
        else:
            k = m.weight[0].numel()  # (C_in / groups) * kh * kw
            u = F.unfold(aa, m.kernel_size, dilation=m.dilation, padding=padding,
                         stride=m.stride).view(c, groups, k, positions)
            g4 = gg.reshape(c, groups, c_out // groups, positions)
            w = torch.matmul(g4, u.transpose(2, 3)).view(c, *m.weight.shape)
        if per_sample:
            parts.append(w)
        else:
            sq = w.square_().sum(0)
            total = sq if total is None else total + sq
    out["weight"] = torch.cat(parts) if per_sample else total
    return out


def _affine(x_hat: torch.Tensor, g: torch.Tensor, param_ndim: int, channel_first: bool,
            want: set[str], per_sample: bool) -> Importances:
    """Per-sample gradients of ``y = x_hat * w + b`` (w, b per channel or normalised shape)."""
    n = g.shape[0]
    if channel_first:  # (N, C, *): sum over positions
        gw = (g * x_hat).reshape(n, g.shape[1], -1).sum(2) if "weight" in want else None
        gb = g.reshape(n, g.shape[1], -1).sum(2) if "bias" in want else None
    else:  # (N, *, normalised...): sum over the middle dims
        shape = g.shape[g.ndim - param_ndim:]
        gw = (g * x_hat).reshape(n, -1, *shape).sum(1) if "weight" in want else None
        gb = g.reshape(n, -1, *shape).sum(1) if "bias" in want else None
    out: Importances = {}
    for key, v in (("weight", gw), ("bias", gb)):
        if v is not None:
            out[key] = v if per_sample else (v * v).sum(0)
    return out


def batchnorm(m: nn.modules.batchnorm._BatchNorm, a: torch.Tensor, g: torch.Tensor,
              want: set[str], per_sample: bool) -> Importances:
    """BatchNorm in eval mode: an affine map of the input normalised by the running
    statistics."""
    if m.training or m.running_mean is None or a.ndim < 2:
        raise Unsupported(m)
    view = (1, -1) + (1,) * (a.ndim - 2)
    x_hat = (a - m.running_mean.view(view)) / torch.sqrt(m.running_var.view(view) + m.eps)
    return _affine(x_hat, g, 1, True, want, per_sample)


def layernorm(m: nn.LayerNorm, a: torch.Tensor, g: torch.Tensor, want: set[str],
              per_sample: bool) -> Importances:
    """``nn.LayerNorm``: an affine map of the input normalised over its last dimensions."""
    x_hat = F.layer_norm(a, m.normalized_shape, eps=m.eps)
    return _affine(x_hat, g, len(m.normalized_shape), False, want, per_sample)


def groupnorm(m: nn.GroupNorm, a: torch.Tensor, g: torch.Tensor, want: set[str],
              per_sample: bool) -> Importances:
    """``nn.GroupNorm``: an affine map, per channel, of the input normalised per group."""
    x_hat = F.group_norm(a, m.num_groups, eps=m.eps)
    return _affine(x_hat, g, 1, True, want, per_sample)


def module_vmap(m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], g: torch.Tensor,
                want: set[str], per_sample: bool) -> Importances:
    """Any other module: per-sample gradients of its own parameters by torch.func, given its
    recorded inputs (tensors with the samples along dimension 0 are mapped over, others are
    shared) and its output gradient."""
    from torch.func import functional_call, grad, vmap

    n = g.shape[0]
    params = {k: p.detach() for k, p in m.named_parameters(recurse=False) if k in want}
    keys = list(kwargs)
    inputs = (*args, *kwargs.values())
    dims = tuple(0 if isinstance(t, torch.Tensor) and t.ndim and t.shape[0] == n else None
                 for t in inputs)

    def f(ps: Importances, gi: torch.Tensor, *ai: Any) -> torch.Tensor:
        full = [t.unsqueeze(0) if d == 0 else t for t, d in zip(ai, dims, strict=True)]
        out = functional_call(m, ps, tuple(full[: len(args)]),
                              dict(zip(keys, full[len(args):], strict=True)), strict=False)
        if not isinstance(out, torch.Tensor):
            raise Unsupported(m)
        return (out * gi.unsqueeze(0)).sum()

    per = sum(p.numel() for p in params.values())
    chunk = max(1, min(n, CHUNK_ELEMENTS // max(per, 1)))
    parts: list[Importances] = []
    total: Importances = {}
    for s in range(0, n, chunk):
        sl = [t[s : s + chunk] if d == 0 else t for t, d in zip(inputs, dims, strict=True)]
        with torch.no_grad():  # torch.func.grad still differentiates; no outer graph
            grads = vmap(grad(f), in_dims=(None, 0, *dims))(params, g[s : s + chunk], *sl)
        if per_sample:
            parts.append(grads)
        else:
            sum_into(total, {k: (v * v).sum(0) for k, v in grads.items()})
    if per_sample:
        return {k: torch.cat([p[k] for p in parts]) for k in params}
    return total


#: The layer rules, by layer type. A rule applies to an instance of its type whose forward is
#: that type's own (a subclass may compute something else) and that is called with one
#: batched tensor; every other parameter-holding module goes to :func:`module_vmap`.
RULES: tuple[tuple[type[nn.Module], Rule], ...] = (
    (nn.Linear, linear),
    (nn.Conv2d, conv2d),
    (nn.modules.batchnorm._BatchNorm, batchnorm),
    (nn.LayerNorm, layernorm),
    (nn.GroupNorm, groupnorm),
)


def rule_of(m: nn.Module) -> Rule | None:
    """The layer rule of ``m``, or None (then :func:`module_vmap` reads it)."""
    for cls, rule in RULES:
        if isinstance(m, cls) and type(m).forward is cls.forward:
            return rule
    return None


# ---------------------------------------------------------------------------- the pass
class _Record:
    __slots__ = ("args", "grad", "kwargs", "module")

    def __init__(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
                 ) -> None:
        self.module = module
        self.args = args
        self.kwargs = kwargs
        self.grad: torch.Tensor | None = None


def _detach(t: Any) -> Any:
    return t.detach() if isinstance(t, torch.Tensor) else t


def _with_input_grad(x: Inputs) -> tuple[Inputs, list[torch.Tensor]]:
    """``x`` with its floating tensors detached and requiring grad (never integer token ids
    or masks), and the tensors to differentiate with respect to: those inputs when every
    tensor of the input is floating, else none (then the parameters are)."""
    def prepare(t: Any) -> Any:
        if isinstance(t, torch.Tensor) and torch.is_floating_point(t):
            return t.detach().requires_grad_(True)
        return t

    if isinstance(x, torch.Tensor):
        xin: Inputs = prepare(x)
        values = [xin]
    elif isinstance(x, Mapping):
        xin = {k: prepare(v) for k, v in x.items()}
        values = list(xin.values())
    else:
        xin = tuple(prepare(v) for v in x)
        values = list(xin)
    if not is_floating(x):
        return xin, []
    return xin, [v for v in values if isinstance(v, torch.Tensor) and v.requires_grad]


def _apply_rule(rec: _Record, want: set[str], n: int, per_sample: bool) -> Importances:
    """The per-sample gradients (or their squares' sum) of one recorded module call."""
    rule = rule_of(rec.module)
    single = (len(rec.args) == 1 and not rec.kwargs and isinstance(rec.args[0], torch.Tensor)
              and rec.args[0].ndim and rec.args[0].shape[0] == n)
    assert rec.grad is not None
    try:
        if rule is not None and single:
            return rule(rec.module, rec.args[0], rec.grad, want, per_sample)
        return module_vmap(rec.module, rec.args, rec.kwargs, rec.grad, want, per_sample)
    except Unsupported:
        raise
    except Exception as exc:  # a rule that cannot read this call: the hooks cannot
        raise Unsupported(rec.module) from exc


def _linear_abs(rec: _Record, want: set[str]) -> Importances | None:
    """``sum_n |g_n a_n^T|`` of a plain ``nn.Linear`` call on ``(N, D)`` inputs in one matrix
    product: ``|g_n a_n^T| = |g_n| |a_n|^T`` elementwise, so the sum is ``|G|^T |A|`` (as the
    sum of squares is ``(G*G)^T (A*A)``), with no per-sample gradient made. ``None`` for any
    other call."""
    a = rec.args[0] if len(rec.args) == 1 and not rec.kwargs else None
    if (rule_of(rec.module) is not linear or not isinstance(a, torch.Tensor) or a.ndim != 2
            or rec.grad is None or rec.grad.ndim != 2):
        return None
    g = rec.grad.float().abs()
    out: Importances = {}
    if "weight" in want:
        out["weight"] = g.t() @ a.float().abs()
    if "bias" in want:
        out["bias"] = g.sum(0)
    return out


class _PerSampleNeeded(Exception):
    """Raised by :func:`hooked_pass` with ``closed_form_only`` when a module call has no
    closed form for its sum and would make per-sample gradients."""


def _closed_form_abs(model: nn.Module, names: Names) -> bool:
    """Whether every module owning a parameter of ``names`` is a plain ``nn.Linear``, whose
    sum of ``|grad|`` has a closed form (:func:`_linear_abs`)."""
    owners = [m for m in model.modules()
              if any(p in names for p in m.parameters(recurse=False))]
    return bool(owners) and all(rule_of(m) is linear for m in owners)


def hooked_pass(model: nn.Module, names: Names, x: Inputs, y: torch.Tensor, *,
                per_sample: bool, objective: Objective | Sequence[Objective] = ce_sum,
                how: str = "square", closed_form_only: bool = False) -> Importances:
    """One forward and backward; return the sum over samples of the per-sample gradients
    reduced by ``how`` (``"square"`` or ``"abs"``; :func:`~unlearnkit.importance.modes.reduce`),
    or, with ``per_sample``, the per-sample gradients themselves. With ``closed_form_only``,
    raise :class:`_PerSampleNeeded` rather than make per-sample gradients.

    ``objective`` may be a sequence (not with ``per_sample``): the sum over the objectives of
    their reduced per-sample gradients, from one forward pass and one backward per objective
    (the true Fisher's one term per class)."""
    objectives = list(objective) if isinstance(objective, (list, tuple)) else [objective]
    if per_sample and len(objectives) != 1:
        raise ValueError("per-sample gradients are taken of one objective")
    owners: dict[nn.Module, dict[str, str]] = {}  # module -> {attr: full name}
    for m in model.modules():
        own = {k: names[p] for k, p in m.named_parameters(recurse=False) if p in names}
        if own:
            owners[m] = own
    records: list[_Record] = []
    n = len(y)

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
             ) -> None:
        if not isinstance(output, torch.Tensor) or not output.requires_grad:
            raise Unsupported(module)
        rec = _Record(module, tuple(_detach(t) for t in args),
                      {k: _detach(v) for k, v in kwargs.items()})
        records.append(rec)

        def keep(grad: torch.Tensor) -> None:
            rec.grad = grad.detach()

        output.register_hook(keep)

    def backward(k: int) -> None:  # each record's output gradient for objective k
        for rec in records:
            rec.grad = None
        try:
            loss = objectives[k](out, y)
            torch.autograd.grad(loss, leaves or list(names), allow_unused=True,
                                retain_graph=k < len(objectives) - 1)
        except (Unsupported, UnlearnkitError):
            raise
        except Exception as exc:  # e.g. a module that its hooks make fail: vmap may read it
            raise Unsupported from exc

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in owners]
    try:
        xin, leaves = _with_input_grad(x)
        out = forward(model, xin)
    except (Unsupported, UnlearnkitError):
        raise
    except Exception as exc:
        raise Unsupported from exc
    finally:
        for h in handles:
            h.remove()
    backward(0)
    # a parameter reached through several calls or modules: add per-sample grads, then square
    calls: dict[str, int] = {}
    for rec in records:
        for full in owners[rec.module].values():
            calls[full] = calls.get(full, 0) + 1
    missing = set(names.values()) - set(calls)
    if missing:  # a parameter never used inside its own module's forward
        raise Unsupported(next(m for m, own in owners.items() if missing & set(own.values())))
    squares: Importances = {}
    for k in range(len(objectives)):
        if k:
            backward(k)
        grads: Importances = {}
        for rec in records:
            if rec.grad is None or rec.grad.ndim == 0 or rec.grad.shape[0] != n:
                raise Unsupported(rec.module)
            own = owners[rec.module]
            ps = per_sample or any(calls[full] > 1 for full in own.values())
            if not ps and how == "abs":  # only a plain linear layer sums |grad| without them
                sums = _linear_abs(rec, set(own))
                if sums is None:
                    ps = True
                else:
                    sum_into(squares, {own[attr]: v for attr, v in sums.items()})
                    continue
            if ps and closed_form_only:
                raise _PerSampleNeeded
            for attr, v in _apply_rule(rec, set(own), n, ps).items():
                sum_into(grads if ps else squares, {own[attr]: v.float()})
        if per_sample:
            return grads
        for full, g in grads.items():
            sum_into(squares, {full: reduce(g, how)})
    return squares


# ---------------------------------------------------------------------------- implementations
def fisher_hooks(model: nn.Module, names: Names, x: Inputs, y: torch.Tensor,
                 objective: Objective | Sequence[Objective] = ce_sum, how: str = "square"
                 ) -> Importances:
    """The sum over the samples of the reduced (``how``) per-sample gradients; by torch.func
    for a batch that the hooks cannot read. ``objective`` may be a sequence: the sum over the
    objectives (squares: from one forward pass, :func:`hooked_pass`)."""
    if isinstance(objective, (list, tuple)) and how != "square":
        out: Importances = {}
        for o in objective:
            sum_into(out, fisher_hooks(model, names, x, y, o, how))
        return out
    try:
        if how == "square":
            return hooked_pass(model, names, x, y, per_sample=False, objective=objective)
        out: Importances = {}
        # in chunks: the layers without a closed form make per-sample gradients
        chunk = per_sample_chunk(names)
        if len(y) > chunk and _closed_form_abs(model, names):
            # plain linear layers only: the whole batch at once, with no per-sample gradient
            # (an MLP's batch of 64 was 8 chunks of 8, each adding full-size sums: 3.45x
            # slower, benchmarks/output_norm.py)
            try:
                return hooked_pass(model, names, x, y, per_sample=False, objective=objective,
                                   how=how, closed_form_only=True)
            except _PerSampleNeeded:  # a layer called twice: its per-sample grads are added
                pass
        for s in range(0, len(y), chunk):
            part = slice(s, s + chunk)
            sum_into(out, hooked_pass(model, names, take(x, part), y[part], per_sample=False,
                                      objective=objective, how=how))
        return out
    except Unsupported:
        if isinstance(objective, (list, tuple)):
            out = {}
            for o in objective:
                sum_into(out, fisher_vmap(model, names, x, y, o, how))
            return out
        return fisher_vmap(model, names, x, y, objective, how)


def hooks_grads(model: nn.Module, names: Names, x: Inputs, y: torch.Tensor,
                objective: Objective = ce_sum) -> Importances:
    """Per-sample gradients ``{name: (batch, *shape)}`` by the hooks (by torch.func for a
    batch that the hooks cannot read)."""
    chunk = per_sample_chunk(names)
    try:
        parts = [hooked_pass(model, names, take(x, slice(s, s + chunk)), y[s : s + chunk],
                             per_sample=True, objective=objective)
                 for s in range(0, len(y), chunk)]
    except Unsupported:
        return vmap_grads(model, names, x, y, objective)
    if len(parts) == 1:  # one chunk: no copy
        return parts[0]
    return {k: torch.cat([p[k] for p in parts]) for k in names.values()}
