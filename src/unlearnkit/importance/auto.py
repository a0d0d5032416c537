"""Which implementation computes the per-sample gradients, and the check that chooses it.

Three implementations compute the same numbers: ``"hooks"`` (:mod:`.hooks`, fastest),
``"vmap"`` (:mod:`.vmap`) and ``"loop"`` (:mod:`.loop`, one backward pass per sample).
``"auto"`` tries them in that order on the first mini-batch: each is checked against the loop
on its first two samples, and the first that runs and agrees is used for the whole pass. When
that is not the hooks, an :class:`~unlearnkit.exceptions.ImplementationFallbackWarning` says
which one and why, once per model class and implementation in a process; the choice is also
logged (logger ``"unlearnkit"``, INFO).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from unlearnkit.data.batches import Inputs, take
from unlearnkit.exceptions import ImplementationFallbackWarning, UnlearnkitError
from unlearnkit.importance._common import Importances, Names, module_label
from unlearnkit.importance.hooks import Unsupported, fisher_hooks, hooked_pass, hooks_grads
from unlearnkit.importance.loop import fisher_loop, loop_grads, per_sample_loop
from unlearnkit.importance.modes import Objective
from unlearnkit.importance.vmap import VmapError, fisher_vmap, vmap_grads

#: The implementations of the per-sample modes: ``"auto"`` picks one of the other three.
IMPLEMENTATIONS = ("auto", "hooks", "vmap", "loop")
#: Samples of the first mini-batch on which an implementation is checked against the loop.
CHECK_SAMPLES = 2

#: Sums of reduced per-sample gradients, by implementation:
#: ``f(model, names, x, y, objective, how) -> {name: sum_n reduce(g_n)}``.
FISHER: dict[str, Callable[..., Importances]] = {
    "hooks": fisher_hooks,
    "vmap": fisher_vmap,
    "loop": fisher_loop,
}
#: Per-sample gradients ``{name: (batch, *shape)}``, by implementation:
#: ``f(model, names, x, y, objective)``.
PER_SAMPLE_GRADS: dict[str, Callable[..., Importances]] = {
    "hooks": hooks_grads,
    "vmap": vmap_grads,
    "loop": loop_grads,
}

logger = logging.getLogger("unlearnkit")
#: ``(model class, implementation)`` pairs already announced in this process.
_ANNOUNCED: set[tuple[type, str]] = set()

_MIXED = "a parameter used outside its module's forward, or samples mixed across the batch"
_HINT = f" ({_MIXED})"


@dataclass(frozen=True)
class Problem:
    """Why an implementation cannot be used: a module of the model it cannot read (a label
    such as ``nn.GRU ('gru')``), or, when it ran, that it disagrees with the loop
    (``module=None``); ``cause`` is the error it raised, for the log."""

    module: str | None = None
    cause: str = ""

    def says(self, implementation: str, hint: str = "") -> str:
        if self.module is None:
            return (f"with {implementation} the per-sample gradients differ from the "
                    f"per-sample loop's{hint}")
        return f"the model's {self.module} cannot be read by {implementation}"


_HOOKS, _VMAP = "the per-layer hooks", "torch.func.vmap"


def choose(requested: str, model: nn.Module, names: Names, x: Inputs, y: torch.Tensor,
           objective: Objective, *, stacklevel: int = 2) -> str:
    """The implementation to use for a pass whose first mini-batch is ``(x, y)``.

    ``"auto"``: the first of hooks, vmap, loop that runs and agrees with the loop on the first
    samples (announced when not the hooks). ``"hooks"``: the hooks, or vmap with a warning
    when the hooks run but disagree (a batch the hooks cannot read goes to vmap by itself).
    ``"vmap"`` and ``"loop"`` are used as they are.
    """
    if requested not in ("auto", "hooks"):
        return requested
    xs, ys = take(x, slice(0, CHECK_SAMPLES)), y[:CHECK_SAMPLES]
    loop = per_sample_loop(model, names, xs, ys, objective)
    hooks = _hooks_problem(model, names, xs, ys, objective, loop)
    if requested == "hooks":
        if hooks is not None and hooks.module is None:  # it runs, but disagrees
            warnings.warn(
                f"The per-layer hooks do not reproduce this model's per-sample gradients "
                f"({_MIXED}); using the slower torch.func implementation.",
                ImplementationFallbackWarning, stacklevel=stacklevel + 1)
            return "vmap"
        return "hooks"
    if hooks is None:
        logger.info("per-sample gradients of %s: the per-layer hooks", type(model).__name__)
        return "hooks"
    vmap = _vmap_problem(model, names, xs, ys, objective, loop)
    if vmap is None:
        chosen, why = "vmap", f"{hooks.says(_HOOKS, _HINT)}; using torch.func.vmap (slower)"
    else:
        chosen = "loop"
        if hooks.module is not None and hooks.module == vmap.module:
            why = f"the model's {hooks.module} cannot be read by {_HOOKS} nor by {_VMAP}"
        else:
            why = f"{hooks.says(_HOOKS, _HINT)}, and {vmap.says(_VMAP)}"
        why += "; using the per-sample loop (slower)"
    message = (f"{type(model).__name__}: {why}. Pass implementation={chosen!r} to choose it "
               "yourself.")
    logger.info("per-sample gradients of %s", message + "".join(
        f" [{what}: {p.cause}]" for what, p in (("hooks", hooks), ("vmap", vmap))
        if p is not None and p.cause))
    key = (type(model), chosen)
    if key not in _ANNOUNCED:
        _ANNOUNCED.add(key)
        warnings.warn(message, ImplementationFallbackWarning, stacklevel=stacklevel + 1)
    return chosen


def _hooks_problem(model: nn.Module, names: Names, x: Inputs, y: torch.Tensor,
                   objective: Objective, loop: list[Importances]) -> Problem | None:
    try:
        got = hooked_pass(model, names, x, y, per_sample=True, objective=objective)
    except Unsupported as exc:
        cause = repr(exc.__cause__) if exc.__cause__ is not None else ""
        return Problem(module_label(model, exc.module), cause)
    except UnlearnkitError:
        raise
    except Exception as exc:  # the batched pass fails where single samples do not
        return Problem(module_label(model, None), f"{type(exc).__name__}: {exc}")
    return None if _agree(got, loop, names) else Problem()


def _vmap_problem(model: nn.Module, names: Names, x: Inputs, y: torch.Tensor,
                  objective: Objective, loop: list[Importances]) -> Problem | None:
    try:
        got = vmap_grads(model, names, x, y, objective)
    except VmapError as exc:
        return Problem(exc.culprit, f"{type(exc.cause).__name__}: {exc.cause}")
    except UnlearnkitError:
        raise
    except Exception as exc:  # anything else vmap raised
        return Problem(module_label(model, None), f"{type(exc).__name__}: {exc}")
    return None if _agree(got, loop, names) else Problem()


def _agree(got: Importances, loop: list[Importances], names: Names) -> bool:
    """Whether per-sample gradients match the loop's, to float tolerance."""
    # layer errors are of order one; on an accelerator, TF32 / reduced-precision kernels
    # (cuDNN's default) make the batched and the single-sample paths differ by about 1e-2
    device = next(iter(names)).device
    tol = 1e-4 if device.type == "cpu" else 5e-2
    for name in names.values():
        ref = torch.stack([g[name] for g in loop])
        mine = got.get(name)
        if mine is None or mine.shape != ref.shape:
            return False
        if ref.numel() and float((mine - ref).abs().max()) > tol * float(ref.abs().max()):
            return False
    return True
