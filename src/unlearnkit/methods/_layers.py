"""Layer surgery shared by cf-k, eu-k and the two Boundary Unlearning methods.

* :func:`parameterised_layers` / :func:`last_layers`: what "the last k layers" of any model are
  (by data flow: :func:`unlearnkit.models.graph.forward_order`);
* :func:`train_layers`: train the trainable parameters of some layers on some data, leaving
  every other module's state (parameters and buffers), and every frozen parameter,
  bit-for-bit as it was;
* :func:`find_head`, :func:`widen_head`, :func:`narrow_head`: the classifier head (the layer
  whose output is the logits: :func:`unlearnkit.models.graph.output_module`), and adding /
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

from unlearnkit.data.batches import Inputs
from unlearnkit.data.splits import Data
from unlearnkit.exceptions import ModelError, UnsupportedModelError
from unlearnkit.methods._finetuning import OPTIMIZERS, lr_for_optimizer
from unlearnkit.methods.base import Request, Search, hp
from unlearnkit.models.adapters import forward
from unlearnkit.models.graph import forward_order, output_module, sample_input
from unlearnkit.models.info import get_info
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
    "trainable_in",
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
    first), which is not always the forward order (a model may register its head first):
    :func:`last_layers` orders the layers by data flow instead. For
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


def last_layers(model: nn.Module, k: int, x: Inputs, *, method: str = "") -> list[Layer]:
    """The last ``k`` layers of the model by data flow, in forward order.

    The layers (modules holding parameters of their own) are ordered by one forward pass on
    the sample input ``x`` (:func:`unlearnkit.models.graph.forward_order`): the last ``k`` are
    the ones nearest the output, whatever order the model registers them in. Layers that the
    pass does not use are not counted. ``k`` larger than the number of layers means every
    layer (with a warning).
    """
    layers = forward_order(model, x)
    if not layers:
        raise ModelError(f"{method or 'This method'}: the model has no parameters.")
    if k > len(layers):
        warnings.warn(
            f"{method or 'last_layers'}: k={k} but the model has only {len(layers)} "
            f"parameterised layers; all {len(layers)} are used.", UserWarning, stacklevel=4)
    return layers[-k:] if k > 0 else []


def trainable_in(layers: Sequence[Layer], k: int, *, method: str) -> list[nn.Parameter]:
    """The trainable parameters (``requires_grad=True``) that ``layers`` own.

    Raises:
        UnsupportedModelError: when they have none (the last ``k`` layers are all frozen).
    """
    params = [p for _, m in layers for p in _own_parameters(m) if p.requires_grad]
    if not params:
        names = ", ".join(repr(n or "(the model)") for n, _ in layers)
        raise UnsupportedModelError(
            method, f"a model whose last {k} layers ({names}) have no trainable parameter "
            "(every requires_grad is False)",
            "Frozen parameters are never changed: unfreeze those layers, or choose a 'k' that "
            "reaches a trainable layer.")
    return params


def train_layers(
    model: nn.Module,
    layers: Sequence[Layer],
    data: Data,
    recipe: Recipe,
    request: Request,
    *,
    desc: str,
) -> None:
    """Train the trainable parameters of ``layers`` on ``data`` with cross-entropy; freeze the
    rest.

    Only parameters that require grad are trained: a frozen parameter inside ``layers`` stays
    frozen. Every module outside ``layers`` that holds parameters or buffers, and every layer
    whose own parameters are all frozen, runs in eval mode, so that its state (weights,
    BatchNorm running statistics) is left bit-for-bit unchanged; parameter-free modules such
    as ``Dropout`` keep their training behaviour. Each parameter's ``requires_grad`` flag is
    restored afterwards.
    """
    trainable = [p for _, m in layers for p in _own_parameters(m) if p.requires_grad]
    trainable_ids = {id(p) for p in trainable}
    trained_modules = {id(m) for _, m in layers
                       if any(id(p) in trainable_ids for p in _own_parameters(m))}
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


def find_head(model: nn.Module, x: Inputs, *, method: str = "") -> tuple[str, nn.Linear]:
    """The classifier head: the layer whose output is the logits, which must be an
    ``nn.Linear``.

    Found by one forward pass on the sample input ``x``
    (:func:`unlearnkit.models.graph.output_module`), so it does not depend on the order in
    which the model registers its layers; for a Hugging Face model it is the classifier whose
    output is the ``logits`` of the ``ModelOutput``.

    Raises:
        UnsupportedModelError: when the logits are not the output of a layer, or when that
            layer is not an ``nn.Linear`` (it could not be widened).
    """
    name, head = output_module(model, x, method=method)
    if not isinstance(head, nn.Linear):
        raise UnsupportedModelError(
            method or "find_head",
            f"a classifier head that is not an nn.Linear (the logits are the output of "
            f"{name or '(the model)'!r}, a {type(head).__name__})",
            "It widens the head by one output unit, which needs an nn.Linear layer whose "
            "output is the logits. Use a method that does not change the head's shape.")
    return name, head


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


def k_within_depth(space: dict[str, Search], model: nn.Module, retain: Data | None,
                   device: torch.device | str | None, *, below: bool) -> dict[str, Search]:
    """``space`` with ``k``'s range cut at the model's depth (its parameterised layers, by one
    forward pass on a retain sample), or below it (``below=True``): the values above it are
    all the same configuration, the whole model. One value left: a one-choice search; none
    (a model too shallow for ``below``): ``space`` as it was."""
    s = space.get("k")
    if s is None or s.high is None or s.low is None or retain is None or len(retain) == 0:
        return space
    depth = len(forward_order(model, sample_input(retain, device)))
    high = min(int(s.high), depth - 1 if below else depth)
    if high < int(s.low) or high == int(s.high):
        return space
    return {**space, "k": (Search(int(s.low), high, log=s.log) if high > int(s.low)
                           else Search(choices=(high,)))}


# --------------------------------------------------------------- hyper-parameters
@dataclass(frozen=True, kw_only=True)
class OriginalRecipe:
    """Mixin: the training recipe, each field ``None`` by default meaning the original's.

    The original's recipe is the one recorded in its metadata (as ``retrain`` reads it); for a
    model without one, the fields left at ``None`` take :class:`~unlearnkit.training.Recipe`'s
    defaults, with a warning. ``momentum`` is always the original's.
    """

    # the original's epochs (the default) cost about a retraining: searched over a few
    epochs: int | None = hp(None, "epochs (None: the original's)", low=0, type=int,
                            search=Search(1, 10))
    lr: float | None = hp(None, "learning rate (None: the original's)", low=0.0, low_open=True,
                          type=float, search=Search(1e-4, 1e-1, log=True))
    optimizer: str | None = hp(None, "optimiser (None: the original's)", choices=OPTIMIZERS,
                               type=str)
    weight_decay: float | None = hp(None, "weight decay (None: the original's)", low=0.0,
                                    type=float)
    batch_size: int | None = hp(None, "batch size (None: the original's)", low=1, type=int)
    schedule: str | None = hp(None, "learning-rate schedule (None: the original's)",
                              choices=("constant", "cosine", "step"), type=str)

    def search_space_for(self, space: dict[str, Search], model: nn.Module, retain: Data | None,
                         device: torch.device | str | None = None) -> dict[str, Search]:
        """``lr`` searched up to :data:`~unlearnkit.methods._finetuning.ADAM_LR_HIGH` when the
        optimiser (this method's, else the original's recorded one) is Adam."""
        space = super().search_space_for(space, model, retain, device)  # type: ignore[misc]
        info = get_info(model)
        recorded = (info.recipe or {}).get("optimizer") if info is not None else None
        return lr_for_optimizer(space, "lr", self.optimizer or recorded or Recipe().optimizer)

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

    epochs: int = hp(10, "fine-tuning epochs on the forget set", low=0, search=Search(1, 10))
    # the paper's 1e-5 leaves a digits class known; 1e-4 to 1e-3 forget it
    lr: float = hp(1e-5, "fine-tuning learning rate", low=0.0, low_open=True,
                   search=Search(1e-5, 1e-2, log=True))
    optimizer: str = hp("sgd", "fine-tuning optimiser", choices=OPTIMIZERS)
    momentum: float = hp(0.9, "SGD momentum (ignored by Adam)", low=0.0, high=1.0)
    weight_decay: float = hp(0.0, "fine-tuning weight decay", low=0.0)
    batch_size: int = hp(64, "fine-tuning batch size", low=1)

    def forget_recipe(self) -> Recipe:
        return Recipe(epochs=self.epochs, lr=self.lr, optimizer=self.optimizer,
                      momentum=self.momentum, weight_decay=self.weight_decay,
                      batch_size=self.batch_size, schedule="constant")
