"""Fine-tuning on the retain set: the baseline."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from unlearnkit.methods._finetuning import FineTuning
from unlearnkit.methods.base import Request, UnlearningMethod, register_method


@register_method
@dataclass(frozen=True, kw_only=True)
class FineTune(FineTuning, UnlearningMethod):
    """Continue training the original on the retain set only, relying on catastrophic forgetting.

    Update rule: ``epochs`` epochs of minimising cross-entropy on D_r. Defaults are the founding
    report's (Adam, lr 1e-5, weight decay 0.01, 5 epochs). It is the baseline every other method
    must beat: with such a small learning rate it forgets little.

    Paper: Golatkar, Achille, Soatto. "Eternal Sunshine of the Spotless Net", CVPR 2020
    (fine-tuning baseline); Warnecke et al. 2023.
    """

    name = "finetune"
    paper = "Golatkar et al., Eternal Sunshine of the Spotless Net, CVPR 2020 (baseline)"
    summary = "fine-tune the original on the retain set only"
    forget_more = "raise lr (the report's 1e-5 forgets slowly) or epochs"
    needs_forget = False

    def _unlearn(self, model: nn.Module, request: Request) -> nn.Module:
        self.finetune(model, request)
        return model
