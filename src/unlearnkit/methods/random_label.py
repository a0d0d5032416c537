"""Random labels: train on D_f under random wrong labels, alternating with D_r."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from unlearnkit.exceptions import ModelError
from unlearnkit.methods._finetuning import OPTIMIZERS
from unlearnkit.methods._relabel import random_other_labels
from unlearnkit.methods.base import Request, Search, UnlearningMethod, hp, register_method
from unlearnkit.models.adapters import forward
from unlearnkit.training import Recipe, epoch_end, iter_batches, make_optimizer, set_train

__all__ = ["RandomLabel"]


@register_method
@dataclass(frozen=True, kw_only=True)
class RandomLabel(UnlearningMethod):
    """Random-label unlearning (RL), as in the code of SalUn and Unlearn-Sparse.

    Update rule: each epoch is one pass over shuffled mini-batches of D_f, each batch trained
    with cross-entropy against labels drawn afresh uniformly from the classes *other* than the
    true one (see :func:`~unlearnkit.methods._relabel.random_other_labels`), followed by one
    pass over shuffled mini-batches of D_r with their true labels; one optimiser runs through
    both passes and all epochs.

    Defaults: SalUn's ``Classification/unlearn/RL.py`` (its CIFAR-10 branch, which alternates
    the two passes) with its argument defaults: SGD, lr 0.01, momentum 0.9, weight decay 5e-4,
    10 epochs, batch size 256, constant learning rate (its README runs SalUn, RL restricted to
    a saliency mask, at lr 0.1). On digits (default cnn) the defaults forget class 1 completely
    (forget and test-forget accuracy 0, test accuracy 0.86 against retraining's 0.88).

    Deliberate differences from that code: it draws the random label uniformly from *all*
    classes (``randint(0, C)``), so a forget sample keeps its true label with probability 1/C;
    we always draw a wrong one, as the amnesiac code does. Its CIFAR-100
    branch instead trains on the shuffled union of D_r and relabelled D_f: that variant is
    close to our ``amnesiac`` method.

    Paper: Golatkar, Achille, Soatto. "Eternal Sunshine of the Spotless Net", CVPR 2020 (random
    labels); Fan, Liu, Zhang, Wong, Wei, Liu. "SalUn: Empowering Machine Unlearning via
    Gradient-based Weight Saliency", ICLR 2024 (the RL baseline and its code).
    """

    name = "random-label"
    paper = ("Golatkar et al., Eternal Sunshine of the Spotless Net, CVPR 2020; Fan et al., "
             "SalUn, ICLR 2024 (RL baseline)")
    summary = "alternate a pass on D_f with random wrong labels and a pass on D_r"
    forget_more = "raise lr or epochs"

    epochs: int = hp(10, "epochs, each a pass over D_f then one over D_r (SalUn: 10)", low=0,
                     search=Search(1, 10))
    lr: float = hp(0.01, "learning rate (SalUn/Unlearn-Sparse default: 0.01)", low=0.0,
                   low_open=True, search=Search(1e-4, 1e-1, log=True))
    optimizer: str = hp("sgd", "optimiser (SalUn: sgd)", choices=OPTIMIZERS)
    momentum: float = hp(0.9, "SGD momentum (SalUn: 0.9; ignored by Adam)", low=0.0, high=1.0)
    weight_decay: float = hp(5e-4, "weight decay (SalUn: 5e-4)", low=0.0)
    batch_size: int = hp(256, "batch size of both passes (SalUn: 256)", low=1)

    def _unlearn(self, model: nn.Module, request: Request) -> nn.Module:
        forget, retain = request.forget, request.retain
        assert forget is not None and retain is not None  # guaranteed by needs_*
        if self.epochs == 0:
            return model
        dev = request.device
        recipe = Recipe(epochs=self.epochs, lr=self.lr, optimizer=self.optimizer,
                        momentum=self.momentum, weight_decay=self.weight_decay,
                        batch_size=self.batch_size, schedule="constant")
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = make_optimizer(trainable, recipe)
        # one generator, as in training.fit, for the shuffling and the random labels
        gen = torch.Generator().manual_seed(request.seed)

        def step(x: torch.Tensor, y: torch.Tensor, *, relabel: bool, epoch: int) -> None:
            optimizer.zero_grad(set_to_none=True)
            out = forward(model, x)
            target = random_other_labels(y, out.shape[-1], gen) if relabel else y
            loss = F.cross_entropy(out, target)
            if not torch.isfinite(loss):
                raise ModelError(
                    f"The loss became {loss.item()} during {self.name!r} at epoch {epoch + 1}: "
                    "lower the learning rate.")
            loss.backward()
            optimizer.step()

        flags = [(m, m.training) for m in model.modules()]
        set_train(model)
        try:
            bar = tqdm(range(self.epochs), desc=f"{self.name}: forget, retain",
                       disable=not request.progress, file=sys.stderr, leave=False)
            epoch_end(self.name, 0, model)
            for epoch in bar:
                for relabel, data in ((True, forget), (False, retain)):
                    for x, y in iter_batches(data, self.batch_size, shuffle=True, generator=gen,
                                             device=dev):
                        step(x, y, relabel=relabel, epoch=epoch)
                epoch_end(self.name, epoch + 1, model)
        finally:
            for m, flag in flags:
                m.training = flag
        return model
