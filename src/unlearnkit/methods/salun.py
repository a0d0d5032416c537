"""SalUn: random-label unlearning restricted to the weights most salient for the forget loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unlearnkit.data.batches import concat, to_device
from unlearnkit.data.containers import ArrayDataset
from unlearnkit.importance import importances, top_fraction
from unlearnkit.methods._relabel import as_tensors, num_outputs, random_other_labels
from unlearnkit.methods.base import Request, Search, UnlearningMethod, hp, register_method
from unlearnkit.models.adapters import forward
from unlearnkit.training import Recipe, fit

__all__ = ["SalUn", "saliency_mask"]

Importances = dict[str, torch.Tensor]

#: Batch size of the saliency pass (it changes speed and memory, never the saliency).
SALIENCY_BATCH_SIZE = 256


def saliency_mask(saliency: Importances, threshold: float) -> Importances:
    """SalUn's weight-saliency mask: the top ``threshold`` fraction of all parameter entries by
    saliency ``|grad_theta L_f|``, ranked globally over the whole network
    (:func:`unlearnkit.importance.top_fraction`, the rule Fisher masking shares)."""
    return top_fraction(saliency, threshold)


@register_method
@dataclass(frozen=True, kw_only=True)
class SalUn(UnlearningMethod):
    """SalUn, saliency unlearning (Fan, Liu, Zhang, Wong, Wei, Liu, ICLR 2024), RL variant.

    Update rule: (1) weight saliency ``s = |grad_theta L_f(theta_o)|``, the absolute gradient of
    the mean cross-entropy over D_f at the original weights (:mod:`unlearnkit.importance` mode
    ``"saliency"``); the mask ``m`` selects the top ``threshold`` fraction of all parameter
    entries by ``s``, ranked globally (:func:`saliency_mask`). (2) ``epochs`` epochs of SGD
    (momentum, weight decay) on D_f relabelled to random *other* classes (fresh labels at every
    step) together with D_r at its true labels, shuffled together, updating only the masked
    entries: the gradients of the others are zeroed, and they are restored bit-for-bit at the
    end (their values never move; buffers such as BatchNorm statistics do, as in the paper's
    code).

    Defaults: the authors' README command for ResNet-18 on CIFAR-10 (github.com/OPTML-Group/
    Unlearn-Saliency, ``Classification``): ``threshold=0.5`` (``mask/with_0.5.pt``), 10
    epochs, lr 0.013, and their ``arg_parser.py`` defaults: SGD, momentum 0.9, weight decay
    5e-4, batch size 256 (their step schedule's milestones, epochs 91 and 136, are never
    reached in 10 epochs: the rate is constant).

    Where this implementation deliberately differs from the public code:

    * **Random labels** are drawn among the *other* classes, as the paper writes
      (``y' != y``); the code draws uniformly among all classes (``torch.randint``), so about
      one forget sample in ``C`` keeps its true label.
    * **One shuffled pass over D_f + D_r per epoch**, the code's CIFAR-100/TinyImageNet branch
      (``ConcatDataset``); its CIFAR-10 branch passes over D_f then over D_r, in separate
      batches. Weight decay is added to the loss (identical to SGD's coupled decay) so that it
      acts on the masked entries only.
    * **The saliency** is the gradient of the mean loss over all of D_f, computed exactly over
      the batches; the code sums the batch means (the last, smaller batch weighs more).
    * The mask selects ``round(threshold * total)`` entries (the code: ``int(...)``), ties
      broken by position.

    Paper: Fan, Liu, Zhang, Wong, Wei, Liu. "SalUn: Empowering Machine Unlearning via Gradient-
    based Weight Saliency in Both Image Classification and Generation", ICLR 2024.
    """

    name = "salun"
    paper = ("Fan et al., SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency "
             "in Both Image Classification and Generation, ICLR 2024")
    summary = ("random-label unlearning (forget relabelled + retain) on the weights most salient "
               "for the forget loss only")
    forget_more = "raise lr or epochs, or threshold (a larger share of the weights updated)"

    threshold: float = hp(0.5, "fraction of all weights updated: the top by |grad L_f|",
                          low=0.0, high=1.0, search=Search(0.05, 1.0))
    epochs: int = hp(10, "epochs over forget (random labels) + retain", low=0,
                     search=Search(1, 10))
    lr: float = hp(0.013, "SGD learning rate", low=0.0, low_open=True,
                   search=Search(1e-4, 1e-1, log=True))
    momentum: float = hp(0.9, "SGD momentum", low=0.0, high=1.0)
    weight_decay: float = hp(5e-4, "weight decay (on the masked weights)", low=0.0)
    batch_size: int = hp(256, "batch size", low=1)

    def mask(self, model: nn.Module, request: Request) -> Importances:
        """The saliency mask of ``model`` for the request's forget set."""
        assert request.forget is not None
        saliency = importances(model, request.forget, mode="saliency",
                               batch_size=SALIENCY_BATCH_SIZE, device=request.device,
                               progress=request.progress)
        return saliency_mask(saliency, self.threshold)

    def _unlearn(self, model: nn.Module, request: Request) -> nn.Module:
        assert request.forget is not None and request.retain is not None
        mask = self.mask(model, request)
        if self.epochs == 0 or not any(bool(m.any()) for m in mask.values()):
            return model
        classes = num_outputs(model, request.forget, request.device, request.original_info)
        x_f, y_f = as_tensors(request.forget)
        x_r, y_r = as_tensors(request.retain)
        # forget samples are marked by a negative label, -(y + 1), and relabelled per batch
        data = ArrayDataset(concat([to_device(x_f, "cpu"), to_device(x_r, "cpu")]),
                            torch.cat([-(y_f.cpu().long() + 1), y_r.cpu().long()]))
        gen = torch.Generator().manual_seed(request.seed)
        params = dict(model.named_parameters())
        masked = {n: m.to(params[n].device) for n, m in mask.items() if bool(m.any())}
        original = {n: params[n].detach().clone() for n in mask}
        decay = self.weight_decay

        def loss_fn(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            is_forget = y < 0
            true = torch.where(is_forget, -y - 1, y)
            target = torch.where(is_forget, random_other_labels(true, classes, gen), true)
            loss = F.cross_entropy(forward(net, x), target)
            if decay:
                loss = loss + 0.5 * decay * sum((params[n] ** 2).sum() for n in masked)
            return loss

        handles = [params[n].register_hook(lambda g, m=m: torch.where(m, g, torch.zeros_like(g)))
                   for n, m in masked.items()]
        recipe = Recipe(epochs=self.epochs, lr=self.lr, optimizer="sgd", momentum=self.momentum,
                        weight_decay=0.0, batch_size=self.batch_size, schedule="constant")
        try:
            fit(model, data, recipe, seed=request.seed, device=request.device, loss_fn=loss_fn,
                params=[params[n] for n in masked], progress=request.progress,
                desc=f"{self.name}: random labels on the salient weights")
        finally:
            for h in handles:
                h.remove()
        with torch.no_grad():
            for n, p in params.items():
                if n in mask:
                    p.copy_(torch.where(mask[n].to(p.device), p, original[n]))
        return model
