"""EU-k: exact unlearning of the last k layers (re-initialise them, train them on D_r)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from unlearnkit.data.splits import Data
from unlearnkit.methods._layers import (
    Layer,
    OriginalRecipe,
    k_within_depth,
    last_layers,
    train_layers,
    trainable_in,
)
from unlearnkit.methods.base import Request, Search, UnlearningMethod, hp, register_method
from unlearnkit.models.fresh import reinitialise_layers
from unlearnkit.models.graph import forward_order, sample_input

__all__ = ["EUk", "reinitialise"]


def reinitialise(model: nn.Module, layers: list[Layer], *, method: str = "eu-k") -> None:
    """Re-initialise the trainable parameters of ``layers`` in place, each layer with its own
    ``reset_parameters()`` (or ``_reset_parameters()``: torch's default initialisation, under
    the current torch seed); BatchNorm statistics are reset with it. Frozen parameters, and a
    layer whose parameters are all frozen (statistics included), are kept bit for bit; a
    trainable parameter no initialiser draws is drawn from ``trunc_normal_(std=0.02)``, with a
    warning (see :func:`unlearnkit.models.fresh.reinitialise_layers`)."""
    reinitialise_layers(model, layers, method=method)


@register_method
@dataclass(frozen=True, kw_only=True)
class EUk(OriginalRecipe, UnlearningMethod):
    """EU-k, exact unlearning of the last k layers (Goel et al. 2022).

    Update rule: re-initialise the last ``k`` layers (each layer's ``reset_parameters()``,
    seeded by the request's seed), freeze every other layer, and train the ``k`` layers from
    scratch with cross-entropy on D_r. The first layers are taken as a generic feature
    extractor; only what the last ``k`` layers knew about D_f is removed exactly. A *layer* is
    a module that holds parameters of its own; "the last k" are the nearest the output by data
    flow, found by one forward pass on a retain sample (see
    :func:`unlearnkit.methods._layers.last_layers`). Every parameter and buffer outside the
    last ``k`` layers is left bit-for-bit unchanged (those modules run in eval mode), and so
    is every frozen parameter (``requires_grad=False``) inside them: only trainable
    parameters are re-initialised and trained (see :func:`reinitialise`), and last ``k``
    layers with none are refused. ``k`` as large as the number of layers, or larger, means
    every layer: a retraining from scratch, at about its cost, with a warning (the default
    ``k=3`` is one on a three-layer MLP). ``k=0`` is refused (nothing would be unlearned).

    Defaults: ``k=3``, the official code's default (``--maxL-rf 3``; the paper sweeps k, 1 to 7
    on ResNet-20 and 10 to 50 on ResNet-110 in its scripts). The training recipe is the
    original's, field by field unless set here, epochs included, as the official code trains
    the re-initialised layers with the retrained model's arguments for as many epochs (62) as
    its training runs.

    Deliberate differences from the public code: its ``k`` counts only ``Conv2d`` and
    ``Linear`` layers (it unfreezes, without re-initialising, the BatchNorms passed on the
    way), ours counts every parameterised layer and re-initialises all ``k``; its frozen
    BatchNorms keep updating their running statistics, ours do not; it re-initialises with
    ``kaiming_normal_`` weights and zero biases, we use each layer's ``reset_parameters()`` (the
    initialisation the built-in architectures were trained from); it keeps the best epoch on
    a validation set, we return the last epoch. (Some toolkits' EU-k "re-initialise" by copying
    the original's own weights back, a no-op; ours does re-initialise.)

    Paper: Goel, Prabhu, Sanyal, Lim, Torr, Kumaraguru. "Towards Adversarial Evaluations for
    Inexact Machine Unlearning", arXiv 2201.06640, 2022.
    """

    name = "eu-k"
    paper = ("Goel et al. Towards Adversarial Evaluations for Inexact Machine Unlearning, "
             "arXiv 2201.06640, 2022 (EU-k)")
    summary = "re-initialise the last k layers and train only them on the retain set"
    forget_more = "raise k (more final layers re-initialised and retrained)"
    needs_forget = False

    k: int = hp(3, "number of last parameterised layers to re-initialise and retrain", low=1,
               search=Search(1, 7))  # the paper's sweep on ResNet-20

    def search_space_for(self, space: dict[str, Search], model: nn.Module, retain: Data | None,
                         device: torch.device | str | None = None) -> dict[str, Search]:
        """``k`` searched below the model's depth: ``k`` equal to it (or above) re-initialises
        every layer, a retraining from scratch (the ``retrain`` method, at its cost)."""
        space = super().search_space_for(space, model, retain, device)
        return k_within_depth(space, model, retain, device, below=True)

    def _unlearn(self, model: nn.Module, request: Request) -> nn.Module:
        assert request.retain is not None  # guaranteed by needs_retain
        x = sample_input(request.retain, request.device)
        every = forward_order(model, x)
        if every and self.k >= len(every):
            # k at the model's depth or beyond: every layer, a retraining from scratch
            warnings.warn(
                f"eu-k: k={self.k} re-initialises every parameterised layer of this model "
                f"({len(every)}): a retraining from scratch, at about its cost; lower k to keep "
                "the first layers as the feature extractor.", UserWarning, stacklevel=3)
        layers = last_layers(model, min(self.k, len(every)) or self.k, x, method=self.name)
        trainable_in(layers, self.k, method=self.name)
        reinitialise(model, layers, method=self.name)
        train_layers(model, layers, request.retain, self.recipe(request), request,
                     desc=f"{self.name}: retrain the last {len(layers)} layers")
        return model
