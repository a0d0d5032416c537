"""Gradient ascent: climb the cross-entropy of the forget set."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unlearnkit.methods._finetuning import OPTIMIZERS
from unlearnkit.methods.base import Request, Search, UnlearningMethod, hp, register_method
from unlearnkit.models.adapters import forward
from unlearnkit.training import Recipe, fit

__all__ = ["GradientAscent", "ascent_loss"]


def ascent_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The loss that gradient ascent *descends*: ``-CE(model(x), y)``."""
    return -F.cross_entropy(forward(model, x), y)


@register_method
@dataclass(frozen=True, kw_only=True)
class GradientAscent(UnlearningMethod):
    """Gradient ascent on the forget set (GA, "NegGrad").

    Update rule: for ``epochs`` passes over shuffled mini-batches of D_f,
    ``theta <- theta + lr * grad CE(f_theta(x_f), y_f)`` (an optimiser step on ``-CE``), with
    the optimiser's momentum and weight decay. It uses no retain data, so nothing holds the rest
    of the model in place: the larger the step budget, the more the retain and test accuracy
    fall with the forget accuracy.

    Defaults: the official code of Jia et al. 2023 (OPTML-Group/Unlearn-Sparse, README command
    for GA, and SalUn's ``unlearn/GA.py``): SGD, lr 1e-4, momentum 0.9, weight decay 5e-4,
    5 epochs, batch size 256, constant learning rate (their step schedule only starts at epoch
    91). No safeguard: neither paper nor code stops early on a forget-accuracy or loss
    threshold. On digits (default cnn, class 1, 146 samples: one step per epoch) the defaults
    change nothing (forget accuracy 1.0, retraining 0): the confident original's gradient is
    tiny. Ascent is a cliff there: lr 0.05 still nothing, lr 0.1 forget 0.30 / test 0.92,
    lr 0.2 destroys the model (test 0.10), and lr 1e-3 with batches of 16 for 20 epochs
    diverges to NaN.

    Deliberate differences from that code: none in the rule; batches are drawn by our seeded
    loop rather than a DataLoader.

    Paper: Thudi, Deza, Chandrasekaran, Papernot. "Unrolling SGD: Understanding Factors
    Influencing Machine Unlearning", EuroS&P 2022; Graves, Nagisetty, Ganesh. "Amnesiac Machine
    Learning", AAAI 2021. Defaults from Jia et al., "Model Sparsity Can Simplify Machine
    Unlearning", NeurIPS 2023.
    """

    name = "gradient-ascent"
    paper = ("Thudi et al., Unrolling SGD, EuroS&P 2022; Graves et al., Amnesiac Machine "
             "Learning, AAAI 2021 (defaults: Jia et al., NeurIPS 2023 code)")
    summary = "gradient ascent on the forget set's cross-entropy (no retain data)"
    forget_more = "raise lr or epochs"
    needs_retain = False

    epochs: int = hp(5, "passes over the forget set (Unlearn-Sparse GA: 5)", low=0,
                     search=Search(1, 10))
    # the default changes nothing on digits; the cliff is near 0.1 there
    lr: float = hp(1e-4, "learning rate (Unlearn-Sparse GA: 1e-4)", low=0.0, low_open=True,
                   search=Search(1e-5, 1e-1, log=True))
    optimizer: str = hp("sgd", "optimiser (Unlearn-Sparse: sgd)", choices=OPTIMIZERS)
    momentum: float = hp(0.9, "SGD momentum (Unlearn-Sparse: 0.9; ignored by Adam)", low=0.0,
                         high=1.0)
    weight_decay: float = hp(5e-4, "weight decay (Unlearn-Sparse: 5e-4)", low=0.0)
    batch_size: int = hp(256, "batch size (Unlearn-Sparse: 256)", low=1)

    def _unlearn(self, model: nn.Module, request: Request) -> nn.Module:
        assert request.forget is not None  # guaranteed by needs_forget
        recipe = Recipe(epochs=self.epochs, lr=self.lr, optimizer=self.optimizer,
                        momentum=self.momentum, weight_decay=self.weight_decay,
                        batch_size=self.batch_size, schedule="constant")
        fit(model, request.forget, recipe, seed=request.seed, device=request.device,
            loss_fn=ascent_loss, progress=request.progress, desc=f"{self.name}: ascend")
        return model
