"""Boundary Expanding: train D_f into an extra shadow class, then cut the shadow class off."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unlearnkit.exceptions import ModelError
from unlearnkit.methods._layers import (
    ForgetFineTuning,
    find_head,
    model_outputs,
    narrow_head,
    widen_head,
)
from unlearnkit.methods.base import Request, UnlearningMethod, register_method
from unlearnkit.models.adapters import forward
from unlearnkit.models.graph import sample_input
from unlearnkit.training import fit

__all__ = ["BoundaryExpand"]


@register_method
@dataclass(frozen=True, kw_only=True)
class BoundaryExpand(ForgetFineTuning, UnlearningMethod):
    """Boundary Expanding (Chen et al., CVPR 2023).

    Update rule: widen the classifier head by one *shadow* output unit (its weight row drawn
    with ``xavier_normal_``, its bias 0; the C existing rows copied unchanged); fine-tune every
    weight of the widened model with cross-entropy on D_f, every sample labelled as the shadow
    class C, for ``epochs`` epochs; then delete the shadow unit. The forget samples' features
    move into the shadow class's region, which disappears with it, so they fall to the
    remaining classes. The result has the original's architecture and C outputs: the head
    keeps its first C rows as trained; every other weight is fine-tuned too (as in the
    official code, which trains its whole widened network); with ``epochs=0`` the result is
    the original, bit for bit. D_r is not used.

    The head is found generically, by data flow: the layer whose output is the logits, found
    by one forward pass on a forget sample (:func:`unlearnkit.methods._layers.find_head`;
    for a Hugging Face model, its classifier). A model whose logits are not the output of an
    ``nn.Linear`` layer is refused with an
    :class:`~unlearnkit.exceptions.UnsupportedModelError`, and one whose output does not widen
    with its head with a :class:`ModelError`.

    Defaults are the official code's: SGD, lr 1e-5, momentum 0.9, no weight decay, 10 epochs,
    batch size 64.

    Deliberate differences from the public code: it rebuilds the network as ``features`` +
    a new head (its AllCNN's attributes); we widen the head in place, whatever the
    architecture. Like the public code, every layer is fine-tuned in train mode, so
    BatchNorm statistics move towards D_f's.

    Designed for class unlearning. For a random subset it runs with a warning: the rule needs
    no class structure, but it pushes every forget sample out of its class, whereas the
    retrained model still classifies most of a random forget set correctly.

    On digits (default cnn, class 1) the paper's defaults leave the class known (forget
    accuracy 1.0); ``lr=1e-3`` forgets it (forget 0, other classes' test accuracy 0.898),
    ``lr=1e-4`` half-way (0.144).

    Paper: Chen, Gao, Liu, Peng, Zhou. "Boundary Unlearning: Rapid Forgetting of Deep Networks
    via Shifting the Decision Boundary", CVPR 2023.
    """

    name = "boundary-expand"
    paper = ("Chen et al. Boundary Unlearning: Rapid Forgetting of Deep Networks via Shifting "
             "the Decision Boundary, CVPR 2023 (Boundary Expanding)")
    summary = "train the forget set into an extra shadow class, then remove that class"
    forget_more = "raise lr or epochs"
    needs_retain = False
    scenarios = ("class",)
    other_scenarios = "warn"

    def _unlearn(self, model: nn.Module, request: Request) -> nn.Module:
        assert request.forget is not None  # guaranteed by needs_forget
        classes = model_outputs(model, request.forget, device=request.device, method=self.name)
        head_name, head = find_head(model, sample_input(request.forget, request.device),
                                    method=self.name)
        widen_head(head)
        try:
            widened = model_outputs(model, request.forget, device=request.device,
                                    method=self.name)
        except RuntimeError:  # a layer after the head expects exactly `classes` inputs
            widened = None
        if widened != classes + 1:
            narrow_head(head, classes)
            raise ModelError(
                f"{self.name}: widening the nn.Linear whose output is the logits "
                f"({head_name or 'the model'!r}, {classes} outputs) does not widen the model's "
                "output (a later operation keeps only the first outputs, or needs exactly "
                f"{classes}), so it is not the classifier head. The head must be the layer "
                "that outputs the logits.")

        def to_shadow(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(forward(net, x), torch.full_like(y, classes))

        fit(model, request.forget, self.forget_recipe(), seed=request.seed,
            device=request.device, loss_fn=to_shadow, progress=request.progress,
            desc=f"{self.name}: fine-tune the forget set into a shadow class")
        narrow_head(head, classes)
        return model
