"""The stochastic teacher: distil towards a random network on D_f, then rebuild on D_r."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unlearnkit.methods._finetuning import OPTIMIZERS, FineTuning
from unlearnkit.methods.base import Request, Search, UnlearningMethod, hp, register_method
from unlearnkit.models.adapters import forward
from unlearnkit.models.registry import fresh_copy
from unlearnkit.training import Recipe, eval_mode, fit


def kl_to(target_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """``KL(p_target || p_student)``, summed over classes and averaged over the batch."""
    return F.kl_div(
        F.log_softmax(student_logits, dim=1),
        F.log_softmax(target_logits, dim=1),
        reduction="batchmean",
        log_target=True,
    )


@register_method
@dataclass(frozen=True, kw_only=True)
class StochasticTeacher(FineTuning, UnlearningMethod):
    """Stochastic-teacher unlearning (Zhang et al. 2023).

    Update rule, in two phases:

    1. *Forgetting.* A randomly initialised network of the same architecture is the teacher T.
       The student S starts from the original and minimises ``KL(p_T || p_S)`` on D_f for
       ``forget_epochs`` epochs at ``forget_lr``, so that its outputs on the forget set become
       those of a network that never learned anything.
    2. *Reconstruction.* S is trained on D_r with ``CE(S(x), y) + alpha * KL(p_O || p_S)``,
       O the original model, for ``epochs`` epochs at ``lr``.

    Defaults: forget lr 1e-6, 15 forgetting epochs and alpha 0.5 (founding report);
    reconstruction as the report's fine-tuning (Adam, lr 1e-5, weight decay 0.01, 5 epochs).
    Designed for class unlearning; asked for a random subset it runs with a warning, since
    pushing individual samples towards a random network's outputs has no guarantee there.

    Paper: Zhang et al., "Machine Unlearning by Reversing the Continual Learning" /
    stochastic-teacher network, 2023.
    """

    name = "teacher"
    paper = "Zhang et al. 2023, stochastic teacher network for machine unlearning"
    summary = "distil towards a random teacher on forget, rebuild with CE + KL to the original"
    forget_more = "raise forget_lr (the report's 1e-6 barely moves the model) or forget_epochs"
    scenarios = ("class",)
    other_scenarios = "warn"

    forget_epochs: int = hp(15, "forgetting epochs (KL to the random teacher on D_f)", low=0,
                            search=Search(1, 15))
    # the report's 1e-6 barely moves the model: searched upwards from it
    forget_lr: float = hp(1e-6, "forgetting learning rate", low=0.0, low_open=True,
                          search=Search(1e-6, 1e-2, log=True))
    forget_optimizer: str = hp("adam", "forgetting optimiser", choices=OPTIMIZERS)
    alpha: float = hp(0.5, "weight of KL(original || student) during reconstruction", low=0.0)

    def _unlearn(self, model: nn.Module, request: Request) -> nn.Module:
        teacher = fresh_copy(model).to(request.device)
        original = copy.deepcopy(model)
        for frozen in (teacher, original):
            frozen.requires_grad_(False)
            frozen.eval()

        def to_teacher(student: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                t = forward(teacher, x)
            return kl_to(t, forward(student, x))

        forget_recipe = Recipe(epochs=self.forget_epochs, lr=self.forget_lr,
                               optimizer=self.forget_optimizer, momentum=self.momentum,
                               weight_decay=0.0, batch_size=self.batch_size, schedule="constant")
        assert request.forget is not None
        fit(model, request.forget, forget_recipe, seed=request.seed, device=request.device,
            loss_fn=to_teacher, progress=request.progress, desc="teacher: forget")

        def rebuild(student: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            with torch.no_grad(), eval_mode(original):
                o = forward(original, x)
            out = forward(student, x)
            return F.cross_entropy(out, y) + self.alpha * kl_to(o, out)

        if self.epochs > 0:
            assert request.retain is not None
            fit(model, request.retain, self.finetune_recipe(), seed=request.seed + 1,
                device=request.device, loss_fn=rebuild, progress=request.progress,
                desc="teacher: rebuild")
        return model
