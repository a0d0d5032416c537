"""CF-k: catastrophic forgetting of the last k layers (fine-tune them on D_r, freeze the rest)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from unlearnkit.data.splits import Data
from unlearnkit.methods._layers import (
    OriginalRecipe,
    k_within_depth,
    last_layers,
    train_layers,
    trainable_in,
)
from unlearnkit.methods.base import Request, Search, UnlearningMethod, hp, register_method
from unlearnkit.models.graph import sample_input

__all__ = ["CFk"]


@register_method
@dataclass(frozen=True, kw_only=True)
class CFk(OriginalRecipe, UnlearningMethod):
    """CF-k, catastrophic forgetting of the last k layers (Goel et al. 2022).

    Update rule: freeze every layer but the last ``k``, then train those ``k`` layers, starting
    from the original's weights, with cross-entropy on D_r. A *layer* is a module that holds
    parameters of its own; "the last k" are the nearest the output by data flow, found by one
    forward pass on a retain sample (see :func:`unlearnkit.methods._layers.last_layers`;
    registration order does not matter): for ``cnn`` the four convolutions and two linear
    layers, for ``resnet18`` every convolution, every BatchNorm and ``fc``. Every parameter and
    buffer outside the last ``k`` layers is left bit-for-bit unchanged (those modules run in
    eval mode, so BatchNorm statistics do not move either), and so is every frozen parameter
    (``requires_grad=False``) inside them: only trainable parameters are trained, and last
    ``k`` layers with none are refused. ``k`` larger than the number of layers means every
    layer (with a warning): plain fine-tuning on D_r.

    Defaults: ``k=3``, the official code's default (``--maxL-ftF 3``; the paper sweeps k, 1 to 7
    on ResNet-20 and 10 to 50 on ResNet-110 in its scripts). The training recipe is the
    original's, field by field unless set here, as the official code trains with the retrained
    model's own arguments (optimiser, learning-rate range, schedule, weight decay, momentum);
    its default number of epochs (62) is also the one of its training runs.

    Deliberate differences from the public code: its ``k`` counts only ``Conv2d`` and
    ``Linear`` layers (BatchNorms passed on the way are unfrozen too), ours counts every
    parameterised layer, so that any architecture has a definition; its frozen BatchNorms
    keep updating their running statistics in train mode, ours do not; it restarts the
    learning rate (SGDR) and keeps the best epoch on a validation set, we use the original's
    schedule and return the last epoch.

    On digits (default cnn, class 1) it does not forget: forget accuracy 0.966 at k=3, 0.952
    with every layer trained (the original is at near-zero loss on D_r, so fine-tuning on it
    barely moves the weights); a learning rate large enough to move them (0.5) ruins the
    model instead.

    Paper: Goel, Prabhu, Sanyal, Lim, Torr, Kumaraguru. "Towards Adversarial Evaluations for
    Inexact Machine Unlearning", arXiv 2201.06640, 2022.
    """

    name = "cf-k"
    paper = ("Goel et al. Towards Adversarial Evaluations for Inexact Machine Unlearning, "
             "arXiv 2201.06640, 2022 (CF-k)")
    summary = "fine-tune only the last k layers on the retain set"
    forget_more = "raise k (more final layers retrained) or epochs"
    needs_forget = False

    k: int = hp(3, "number of last parameterised layers to fine-tune", low=1,
               search=Search(1, 7))  # the paper's sweep on ResNet-20

    def search_space_for(self, space: dict[str, Search], model: nn.Module, retain: Data | None,
                         device: torch.device | str | None = None) -> dict[str, Search]:
        """``k`` searched up to the model's depth: a larger ``k`` fine-tunes the same layers."""
        space = super().search_space_for(space, model, retain, device)
        return k_within_depth(space, model, retain, device, below=False)

    def _unlearn(self, model: nn.Module, request: Request) -> nn.Module:
        assert request.retain is not None  # guaranteed by needs_retain
        layers = last_layers(model, self.k, sample_input(request.retain, request.device),
                             method=self.name)
        trainable_in(layers, self.k, method=self.name)
        train_layers(model, layers, request.retain, self.recipe(request), request,
                     desc=f"{self.name}: fine-tune the last {len(layers)} layers")
        return model
