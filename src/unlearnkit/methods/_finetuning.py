"""Hyper-parameters shared by every method that ends with fine-tuning on the retain set."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from unlearnkit.data.splits import Data
from unlearnkit.methods.base import Request, Search, hp
from unlearnkit.training import Recipe, fit

OPTIMIZERS = ("sgd", "adam", "adamw")

#: The largest learning rate a search draws for Adam: its steps move every weight by about
#: the learning rate whatever the gradient's scale, so that 1e-2 and above wreck a trained
#: model in a few steps (amnesiac, bad-teacher and SCRUB declare no more); SGD keeps its range.
ADAM_LR_HIGH = 1e-2


def lr_for_optimizer(space: dict[str, Search], key: str, optimizer: str | None
                     ) -> dict[str, Search]:
    """``space`` with ``key``'s range capped at :data:`ADAM_LR_HIGH` when ``optimizer`` is
    Adam or AdamW (unchanged otherwise, or when the range lies below the cap)."""
    s = space.get(key)
    if (s is None or s.low is None or s.high is None or optimizer not in ("adam", "adamw")
            or s.high <= ADAM_LR_HIGH or s.low >= ADAM_LR_HIGH):
        return space
    return {**space, key: Search(s.low, ADAM_LR_HIGH, log=s.log)}


@dataclass(frozen=True, kw_only=True)
class FineTuning:
    """Mixin: ``epochs``, ``lr``, ``weight_decay``, ``optimizer``, ``momentum``, ``batch_size``.

    Defaults are the founding report's fine-tuning phase (lr 1e-5, weight decay 0.01, 5 epochs);
    a method redeclares a field to change its default.
    """

    epochs: int = hp(5, "fine-tuning epochs on the retain set", low=0, search=Search(1, 10))
    # the report's 1e-5 forgets slowly: searched upwards from it
    lr: float = hp(1e-5, "fine-tuning learning rate", low=0.0, low_open=True,
                   search=Search(1e-5, 1e-1, log=True))
    weight_decay: float = hp(0.01, "fine-tuning weight decay", low=0.0)
    optimizer: str = hp("adam", "fine-tuning optimiser", choices=OPTIMIZERS)
    momentum: float = hp(0.9, "SGD momentum (ignored by Adam)", low=0.0, high=1.0)
    batch_size: int = hp(64, "fine-tuning batch size", low=1)

    def search_space_for(self, space: dict[str, Search], model: nn.Module, retain: Data | None,
                         device: torch.device | str | None = None) -> dict[str, Search]:
        """``lr`` searched up to :data:`ADAM_LR_HIGH` under Adam (the default)."""
        space = super().search_space_for(space, model, retain, device)  # type: ignore[misc]
        return lr_for_optimizer(space, "lr", self.optimizer)

    def finetune_recipe(self) -> Recipe:
        return Recipe(epochs=self.epochs, lr=self.lr, weight_decay=self.weight_decay,
                      optimizer=self.optimizer, momentum=self.momentum,
                      batch_size=self.batch_size, schedule="constant")

    def finetune(self, model: nn.Module, request: Request, *, desc: str = "fine-tune") -> None:
        """Fine-tune ``model`` in place on the retain set with this method's recipe."""
        if self.epochs == 0:
            return
        assert request.retain is not None  # guaranteed by needs_retain
        fit(model, request.retain, self.finetune_recipe(), seed=request.seed,
            device=request.device, progress=request.progress, desc=f"{self.name}: {desc}")
