"""Layer surgery shared by cf-k, eu-k and the two Boundary Unlearning methods.

* :func:`parameterised_layers` / :func:`last_layers`: what "the last k layers" of any model are;
* :func:`train_layers`: train some layers on some data, leaving every other module's state
  (parameters and buffers) bit-for-bit as it was;
* :func:`find_head`, :func:`widen_head`, :func:`narrow_head`: the classifier head, and adding /
  removing a shadow output unit;
* :class:`OriginalRecipe` and :class:`ForgetFineTuning`: the hyper-parameters of those methods'
  training phases.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unlearnkit.data.splits import Data
from unlearnkit.exceptions import ModelError
from unlearnkit.methods._finetuning import OPTIMIZERS
from unlearnkit.methods.base import Request, hp
from unlearnkit.models.adapters import forward
from unlearnkit.training import Recipe, eval_mode, fit, iter_batches

__all__ = [
    "ForgetFineTuning",
    "Layer",
    "OriginalRecipe",
    "find_head",
    "last_layers",
    "model_outputs",
    "narrow_head",
    "parameterised_layers",
    "train_layers",
    "widen_head",
]

#: ``(qualified name, module)`` as :meth:`torch.nn.Module.named_modules` gives them.
Layer = tuple[str, nn.Module]


# ------------------------------------------------------------------------------ layers
def _own_parameters(module: nn.Module) -> list[nn.Parameter]:
    return list(module.parameters(recurse=False))


def parameterised_layers(model: nn.Module) -> list[Layer]:
    """The model's *layers*: every module that holds parameters of its own, in module order.

    Module order is :meth:`~torch.nn.Module.named_modules` order (registration order, depth
    first), which for the built-in architectures and for most models is the forward order. For
    the usual torch layers (``Linear``, ``Conv2d``, ``BatchNorm2d``, ``LayerNorm``, ``Embedding``)
    a layer is simply a module with parameters and no parameterised children; containers
    (``Sequential``, residual blocks) are never layers, parameter-free modules (``ReLU``,
    pooling, ``Dropout``) neither. "Own parameters" rather than "no parameterised children" so
    that a module such as ``nn.MultiheadAttention``, which holds ``in_proj_weight`` itself and
    ``out_proj`` as a child, still has every parameter in exactly one layer.

    Unlike Goel et al.'s code, which counts only ``Conv2d`` and ``Linear`` layers and unfreezes
    the ``BatchNorm2d`` layers it passes on the way, normalisation layers count here like any
    other layer.
    """
    return [(name, m) for name, m in model.named_modules() if _own_parameters(m)]


def last_layers(model: nn.Module, k: int, *, method: str = "") -> list[Layer]:
    """The last ``k`` layers of :func:`parameterised_layers`, in module order.

    ``k`` larger than the number of layers means every layer (with a warning).
    """
    layers = parameterised_layers(model)
    if not layers:
        raise ModelError(f"{method or 'This method'}: the model has no parameters.")
    if k > len(layers):
        warnings.warn(
            f"{method or 'last_layers'}: k={k} but the model has only {len(layers)} "
            f"parameterised layers; all {len(layers)} are used.", UserWarning, stacklevel=4)
    return layers[-k:] if k > 0 else []


def train_layers(
    model: nn.Module,
    layers: Sequence[Layer],
    data: Data,
    recipe: Recipe,
    request: Request,
    *,
    desc: str,
) -> None:
    """Train the parameters of ``layers`` on ``data`` with cross-entropy; freeze the rest.

    Every other module that holds parameters or buffers runs in eval mode, so that its state
    (weights, BatchNorm running statistics) is left bit-for-bit unchanged; parameter-free
    modules such as ``Dropout`` keep their training behaviour. Each parameter's
    ``requires_grad`` flag is restored afterwards.
    """
    trained_modules = {id(m) for _, m in layers}
    trainable = [p for _, m in layers for p in _own_parameters(m)]
    trainable_ids = {id(p) for p in trainable}
    stateful = [m for m in model.modules()
                if id(m) not in trained_modules
                and (_own_parameters(m) or list(m.buffers(recurse=False)))]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(id(p) in trainable_ids)

    def loss_fn(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        for m in stateful:  # fit() has put the whole model in train mode
            m.training = False
        return F.cross_entropy(forward(net, x), y)

    try:
        fit(model, data, recipe, seed=request.seed, device=request.device, loss_fn=loss_fn,
            params=trainable, progress=request.progress, desc=desc)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
            p.grad = None


# ------------------------------------------------------------------------- the head
@torch.no_grad()
def model_outputs(model: nn.Module, data: Data, *, device: torch.device,
                  method: str = "") -> int:
    """The number of outputs (classes) of ``model``, from one forward pass on ``data``."""
    for x, _ in iter_batches(data, 8, shuffle=False, device=device):
        with eval_mode(model):
            out = forward(model, x)
        if out.ndim != 2:
            raise ModelError(
                f"{method}: the model must output logits shaped (batch, classes); got shape "
                f"{tuple(out.shape)}.")
        return int(out.shape[1])
    raise ModelError(f"{method}: no data to run the model on.")


def find_head(model: nn.Module, num_classes: int, *, method: str = "") -> tuple[str, nn.Linear]:
    """The classifier head: the last ``nn.Linear`` in module order with ``num_classes`` outputs.

    Raises:
        ModelError: when the model has no such layer.
    """
    found: tuple[str, nn.Linear] | None = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and m.out_features == num_classes:
            found = (name, m)
    if found is None:
        linears = [f"{n or '(the model)'}: {m.out_features}" for n, m in model.named_modules()
                   if isinstance(m, nn.Linear)]
        raise ModelError(
            f"{method}: cannot find the classifier head, an nn.Linear layer with "
            f"out_features == {num_classes} (the model's number of outputs). Linear layers "
            f"found: {', '.join(linears) or 'none'}.")
    return found


@torch.no_grad()
def widen_head(head: nn.Linear, extra: int = 1) -> None:
    """Add ``extra`` output units to ``head``, in place, after the existing ones.

    The existing rows are copied bit-for-bit; the new weight rows are drawn with
    ``xavier_normal_`` (as a fresh head of the wider shape would be) and the new biases are 0,
    as Boundary Unlearning's code initialises its widened head. The module object stays the
    same, so hooks, subclasses and its place in the model are untouched.
    """
    old_w = head.weight
    new_w = torch.empty(head.out_features + extra, head.in_features, dtype=old_w.dtype,
                        device=old_w.device)
    nn.init.xavier_normal_(new_w)
    new_w[: head.out_features] = old_w
    head.weight = nn.Parameter(new_w, requires_grad=old_w.requires_grad)
    if head.bias is not None:
        old_b = head.bias
        new_b = torch.zeros(head.out_features + extra, dtype=old_b.dtype, device=old_b.device)
        new_b[: head.out_features] = old_b
        head.bias = nn.Parameter(new_b, requires_grad=old_b.requires_grad)
    head.out_features += extra


@torch.no_grad()
def narrow_head(head: nn.Linear, out_features: int) -> None:
    """Keep only the first ``out_features`` output units of ``head``, in place."""
    head.weight = nn.Parameter(head.weight[:out_features].clone(),
                               requires_grad=head.weight.requires_grad)
    if head.bias is not None:
        head.bias = nn.Parameter(head.bias[:out_features].clone(),
                                 requires_grad=head.bias.requires_grad)
    head.out_features = out_features


# --------------------------------------------------------------- hyper-parameters
@dataclass(frozen=True, kw_only=True)
class OriginalRecipe:
    """Mixin: the training recipe, each field ``None`` by default meaning the original's.

    The original's recipe is the one recorded in its metadata (as ``retrain`` reads it); for a
    model without one, the fields left at ``None`` take :class:`~unlearnkit.training.Recipe`'s
    defaults, with a warning. ``momentum`` is always the original's.
    """

    epochs: int | None = hp(None, "epochs (None: the original's)", low=0, type=int)
    lr: float | None = hp(None, "learning rate (None: the original's)", low=0.0, low_open=True,
                          type=float)
    optimizer: str | None = hp(None, "optimiser (None: the original's)", choices=OPTIMIZERS,
                               type=str)
    weight_decay: float | None = hp(None, "weight decay (None: the original's)", low=0.0,
                                    type=float)
    batch_size: int | None = hp(None, "batch size (None: the original's)", low=1, type=int)
    schedule: str | None = hp(None, "learning-rate schedule (None: the original's)",
                              choices=("constant", "cosine", "step"), type=str)

    def recipe(self, request: Request) -> Recipe:
        """The original's recipe with this method's non-``None`` fields applied."""
        info = request.original_info
        original = Recipe.from_dict(info.recipe) if info is not None and info.recipe else None
        fields = ("epochs", "lr", "optimizer", "weight_decay", "batch_size", "schedule")
        changes = {k: getattr(self, k) for k in fields if getattr(self, k) is not None}
        if original is None and len(changes) < len(fields):
            name = getattr(self, "name", type(self).__name__)
            missing = ", ".join(k for k in fields if k not in changes)
            warnings.warn(
                f"The original model records no training recipe; {name!r} takes {missing} from "
                "unlearnkit's default Recipe().", UserWarning, stacklevel=4)
        return (original or Recipe()).replace(**changes)


@dataclass(frozen=True, kw_only=True)
class ForgetFineTuning:
    """Mixin: Boundary Unlearning's fine-tuning on the forget set.

    Defaults are the official code's (``boundary_unlearning.py``): SGD, lr 1e-5, momentum 0.9,
    no weight decay, 10 epochs, batch size 64 (``main.py``), constant learning rate.
    """

    epochs: int = hp(10, "fine-tuning epochs on the forget set", low=0)
    lr: float = hp(1e-5, "fine-tuning learning rate", low=0.0, low_open=True)
    optimizer: str = hp("sgd", "fine-tuning optimiser", choices=OPTIMIZERS)
    momentum: float = hp(0.9, "SGD momentum (ignored by Adam)", low=0.0, high=1.0)
    weight_decay: float = hp(0.0, "fine-tuning weight decay", low=0.0)
    batch_size: int = hp(64, "fine-tuning batch size", low=1)

    def forget_recipe(self) -> Recipe:
        return Recipe(epochs=self.epochs, lr=self.lr, optimizer=self.optimizer,
                      momentum=self.momentum, weight_decay=self.weight_decay,
                      batch_size=self.batch_size, schedule="constant")
