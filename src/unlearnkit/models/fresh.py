"""Freshly initialised models and layers: what "retrain from scratch" starts from.

:func:`fresh_copy` is the random model of ``retrain``, of the random teachers of ``teacher``
and ``bad-teacher`` and of the ``zrf`` metric; :func:`reinitialise_layers` is ``eu-k``'s
re-initialisation of the last k layers. Both follow the same rules:

* every *trainable* parameter (``requires_grad=True``) is drawn anew, by its own module's
  initialiser (``reset_parameters()``, or ``_reset_parameters()`` for
  ``nn.MultiheadAttention`` and ``nn.Transformer``), children before their parent, as at
  construction;
* a trainable parameter that no initialiser draws (a bare ``nn.Parameter`` such as a ViT's
  ``cls_token``, or a custom layer without ``reset_parameters()``) is drawn from
  ``trunc_normal_(std=0.02)``, the ViT / BERT convention, with one warning naming them;
* *frozen* parameters (``requires_grad=False``) are kept bit for bit, and so are the running
  statistics of normalisation layers whose parameters are all frozen: a frozen pretrained
  backbone is not trained on the data, so retraining means re-initialising and training the
  rest.

A Hugging Face model is rebuilt from its config (``type(model)(model.config)``), which applies
Hugging Face's own initialisation, and its frozen parameters are copied over.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from unlearnkit.models.adapters import is_hugging_face
from unlearnkit.models.info import ModelInfo, get_info, set_info

__all__ = ["FALLBACK_INIT", "fresh_copy", "reinitialise_layers"]

#: How a trainable parameter that no initialiser draws is drawn (ViT / BERT's convention).
FALLBACK_INIT = "trunc_normal_(std=0.02)"

#: ``(qualified name, module)`` as :meth:`torch.nn.Module.named_modules` gives them.
Layer = tuple[str, nn.Module]


# ----------------------------------------------------------------------------- the model
def fresh_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every trainable parameter newly initialised (under the current
    torch seed), and its frozen parameters kept.

    * A Hugging Face model is rebuilt with ``type(model)(model.config)`` (Hugging Face's own
      initialisation); its frozen parameters and every ``requires_grad`` flag are copied over.
    * Any other model is deep-copied, then each module's ``reset_parameters()`` (or
      ``_reset_parameters()``, as ``nn.MultiheadAttention`` and ``nn.Transformer`` have) is
      called, children before parents; normalisation layers' running statistics are reset,
      except where the layer's parameters are all frozen.
    * Frozen parameters (``requires_grad=False``) are kept bit for bit.
    * A trainable parameter that no initialiser draws (a bare ``nn.Parameter``, a layer without
      ``reset_parameters()``), or, for a Hugging Face model, that came out bit-equal to the
      original's, is drawn from ``trunc_normal_(std=0.02)``, with one ``UserWarning`` naming
      them. To initialise a model your own way, give ``retrain`` a ``model_factory``.

    So every trainable tensor is re-drawn: for a trained model, each differs from the
    original's. (A parameter that an initialiser sets to a constant, such as a LayerNorm's
    weight of ones, equals the original's only if the original never moved it from there.)
    The copy keeps the original's :class:`ModelInfo` minus its history.
    """
    new = _hugging_face_copy(model) if is_hugging_face(model) else None
    if new is None:
        new = copy.deepcopy(model)
        redrawn = _reinitialise(new, None)
    else:
        redrawn = _redraw_unchanged(new, model)
    if redrawn:
        _warn_fallback(
            "fresh_copy", redrawn,
            "If your model initialises them otherwise, give 'retrain' a model_factory= that "
            "builds a fresh model your own way.")
    info = get_info(model)
    if info is not None:
        set_info(new, ModelInfo(arch=info.arch, arch_kwargs=info.arch_kwargs,
                                num_classes=info.num_classes, input_shape=info.input_shape,
                                dataset=info.dataset, recipe=info.recipe))
    return new


def reinitialise_layers(model: nn.Module, layers: Sequence[Layer], *, method: str = "") -> None:
    """Re-initialise the trainable parameters that ``layers`` own, in place (``eu-k``).

    Each layer's own initialiser draws them (``reset_parameters()`` or
    ``_reset_parameters()``; BatchNorm statistics are reset with it); a layer whose own
    parameters are all frozen is left alone, statistics included, and frozen parameters are
    kept bit for bit. Parameters outside ``layers`` are restored if an initialiser touched
    them (``nn.MultiheadAttention``'s also sets its ``out_proj`` bias). A trainable parameter
    that no initialiser draws is drawn from ``trunc_normal_(std=0.02)``, with a warning.
    """
    redrawn = _reinitialise(model, list(layers))
    if redrawn:
        _warn_fallback(
            method or "reinitialise_layers", redrawn,
            "Give the layer a reset_parameters() method to initialise them your own way.")


# ------------------------------------------------------------------------ the machinery
def _post_order(module: nn.Module, prefix: str = "") -> Iterator[Layer]:
    """``(name, module)`` with every module after its children (as construction runs)."""
    seen: set[int] = set()

    def visit(m: nn.Module, name: str) -> Iterator[Layer]:
        if id(m) in seen:
            return
        seen.add(id(m))
        for child_name, child in m.named_children():
            yield from visit(child, f"{name}.{child_name}" if name else child_name)
        yield name, m

    yield from visit(module, prefix)


def _frozen_scopes(model: nn.Module) -> dict[int, bool]:
    """``{id(module): frozen}``: whether each module belongs to a frozen part of the model.

    A module with parameters of its own is frozen when they all are; one without (a
    parameter-free BatchNorm, an activation, a container) takes the answer of the nearest
    module, itself or an ancestor, that holds any parameters. A model without parameters has
    no frozen part.
    """
    has_any: dict[int, bool] = {}
    has_trainable: dict[int, bool] = {}
    for _, m in _post_order(model):
        own = list(m.parameters(recurse=False))
        children = list(m.children())
        has_any[id(m)] = bool(own) or any(has_any.get(id(c), False) for c in children)
        has_trainable[id(m)] = any(p.requires_grad for p in own) or any(
            has_trainable.get(id(c), False) for c in children)
    out: dict[int, bool] = {}

    def visit(m: nn.Module, inherited: bool) -> None:
        if id(m) in out:
            return
        own = list(m.parameters(recurse=False))
        if own:
            frozen = not any(p.requires_grad for p in own)
        elif has_any[id(m)]:
            frozen = not has_trainable[id(m)]
        else:
            frozen = inherited
        out[id(m)] = frozen
        scope = not has_trainable[id(m)] if has_any[id(m)] else inherited
        for child in m.children():
            visit(child, scope)

    visit(model, False)
    return out


def _call_initialiser(module: nn.Module) -> bool:
    for attr in ("reset_parameters", "_reset_parameters"):
        fn = getattr(module, attr, None)
        if callable(fn):
            fn()
            return True
    return False


@torch.no_grad()
def _reinitialise(model: nn.Module, layers: list[Layer] | None) -> list[str]:
    """Re-initialise in place the trainable parameters of ``layers`` (``None``: the whole
    model); return the names of those that no initialiser drew (drawn by the fallback)."""
    names = {id(p): n for n, p in model.named_parameters()}
    frozen = _frozen_scopes(model)
    if layers is None:
        modules = [m for _, m in _post_order(model) if not frozen[id(m)]]
        targets = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        keep_stats = [m for m in model.modules()
                      if frozen[id(m)] and callable(getattr(m, "reset_running_stats", None))]
        reset_stats = [m for m in model.modules()
                       if not frozen[id(m)] and callable(getattr(m, "reset_running_stats", None))]
    else:
        chosen = {id(m) for _, m in layers}
        modules = [m for _, m in _post_order(model) if id(m) in chosen and not frozen[id(m)]]
        targets = [(names[id(p)], p) for m in modules for p in m.parameters(recurse=False)
                   if p.requires_grad]
        keep_stats = [m for _, m in layers if frozen[id(m)]]
        reset_stats = []
    target_ids = {id(p) for _, p in targets}
    # what an initialiser may touch but must not change: frozen parameters, and parameters of
    # sub-modules outside the chosen layers
    touched = {id(p): p for m in modules for p in m.parameters()}
    kept = [(p, p.detach().clone()) for p in touched.values() if id(p) not in target_ids]
    kept += [(b, b.detach().clone()) for m in keep_stats for b in m.buffers(recurse=False)]
    # a sentinel shows which entries no initialiser drew
    for _, p in targets:
        p.fill_(float("nan"))
    for m in modules:
        _call_initialiser(m)
    for t, value in kept:
        t.copy_(value)
    for m in reset_stats:
        m.reset_running_stats()
    redrawn = []
    for name, p in targets:
        mask = torch.isnan(torch.view_as_real(p) if p.is_complex() else p)
        if bool(mask.any()):
            redrawn.append(name)
            _fallback_draw(p, mask)
    return redrawn


def _fallback_draw(p: torch.Tensor, mask: torch.Tensor | None = None) -> None:
    """Draw ``p`` (its entries under ``mask``) from ``trunc_normal_(std=0.02)``, in place."""
    target = torch.view_as_real(p) if p.is_complex() else p
    draw = torch.empty(target.shape, dtype=torch.float32, device=target.device)
    nn.init.trunc_normal_(draw, std=0.02)
    draw = draw.to(target.dtype)
    if mask is None:
        target.copy_(draw)
    else:
        target.copy_(torch.where(mask, draw, target))


def _warn_fallback(who: str, names: list[str], instead: str) -> None:
    shown = ", ".join(repr(n) for n in names[:10])
    more = f" and {len(names) - 10} more" if len(names) > 10 else ""
    warnings.warn(
        f"{who}: no initialiser (reset_parameters() or _reset_parameters()) re-draws the "
        f"trainable parameter{'s' if len(names) > 1 else ''} {shown}{more}; "
        f"{'they were' if len(names) > 1 else 'it was'} drawn from {FALLBACK_INIT}, the "
        f"ViT / BERT convention for such parameters. {instead}",
        UserWarning, stacklevel=3)


# ------------------------------------------------------------------------- Hugging Face
def _hugging_face_copy(model: nn.Module) -> nn.Module | None:
    """``type(model)(config)`` with ``model``'s frozen parameters, flags, dtype, device and
    train / eval flags; ``None`` when the rebuilt model's parameters do not match."""
    try:
        new = type(model)(copy.deepcopy(model.config))
    except Exception:  # a constructor that needs more than the config: deep copy and reset
        return None
    old = dict(model.named_parameters())
    params = dict(new.named_parameters())
    if list(params) != list(old) or any(params[n].shape != old[n].shape for n in old):
        return None
    if old:
        first = next(iter(old.values()))
        dtypes = {p.dtype for p in old.values() if p.is_floating_point()}
        new.to(device=first.device, dtype=dtypes.pop() if len(dtypes) == 1 else None)
    with torch.no_grad():
        for name, p in new.named_parameters():
            o = old[name]
            if p.dtype != o.dtype or p.device != o.device:
                p.data = p.data.to(device=o.device, dtype=o.dtype)
            p.requires_grad_(o.requires_grad)
            if not o.requires_grad:
                p.copy_(o)
    modules = list(model.modules())
    new_modules = list(new.modules())
    if len(modules) == len(new_modules):
        for a, b in zip(new_modules, modules, strict=True):
            a.training = b.training
    else:
        new.train(model.training)
    return new


@torch.no_grad()
def _redraw_unchanged(new: nn.Module, original: nn.Module) -> list[str]:
    """Re-draw each trainable parameter of ``new`` still bit-equal to ``original``'s, unless
    it is constant (an initialiser's ones or zeros that the original never moved from)."""
    old = dict(original.named_parameters())
    redrawn = []
    for name, p in new.named_parameters():
        o = old.get(name)
        if not p.requires_grad or o is None or not torch.equal(p, o.to(p.device)):
            continue
        flat = p.detach().reshape(-1)
        if flat.numel() == 0 or bool((flat == flat[0]).all()):
            continue
        redrawn.append(name)
        _fallback_draw(p)
    return redrawn
