"""Fisher forgetting: Gaussian noise on every weight, scaled by the inverse Fisher of D_r."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from unlearnkit.data.batches import Inputs
from unlearnkit.importance import IMPLEMENTATIONS, cached_importances
from unlearnkit.methods._relabel import num_outputs
from unlearnkit.methods.base import Request, Search, UnlearningMethod, hp, register_method
from unlearnkit.models.graph import output_module, sample_input
from unlearnkit.training import iter_batches

__all__ = ["FisherForgetting", "fisher_noise", "output_layer"]

Importances = dict[str, torch.Tensor]

#: Batch size of the Fisher pass (it changes speed and memory, never the Fisher).
FISHER_BATCH_SIZE = 256
#: Golatkar et al.'s constants: ``1 / (F + EPS)``, clamped at ``MAX_VAR`` (``MAX_VAR_OUTPUT``
#: for the output layer), variance ``FORGOTTEN_VAR`` on a forgotten class's output row, and
#: the variance of the output layer and of every one-dimensional parameter times ``BOOST``.
EPS = 1e-8
MAX_VAR = 1e3
MAX_VAR_OUTPUT = 1e2
FORGOTTEN_VAR = 1e-4
BOOST = 10.0


def fisher_noise(
    params: dict[str, torch.Tensor],
    fisher: Importances,
    *,
    alpha: float,
    output: Collection[str] = (),
    forget_classes: Sequence[int] = (),
) -> tuple[Importances, Importances]:
    """The mean and standard deviation of Fisher forgetting's weight distribution.

    For each parameter ``p`` with diagonal Fisher ``F`` (Golatkar et al.'s ``get_mean_var``):

    1. ``var = alpha * min(1 / (F + 1e-8), c)``, with ``c = 1e2`` for the output layer's
       parameters and ``1e3`` for the others;
    2. for a parameter of two or more dimensions, ``var`` is averaged over dimension 1 (the
       inputs of a linear layer, the input channels of a convolution) and broadcast back;
    3. ``mean = p``, except that in the output layer the rows of the forgotten classes get
       ``mean = 0`` and ``var = 1e-4`` (class unlearning only: ``forget_classes``);
    4. the output layer's variance and every one-dimensional parameter's are multiplied by 10.

    Args:
        params: ``{name: parameter}``.
        fisher: ``{name: diagonal Fisher}``, same names and shapes.
        alpha: the noise scale (Golatkar et al.: 1e-6).
        output: names of the output layer's parameters (those whose first dimension is the
            class), see :func:`output_layer`.
        forget_classes: the classes to forget, or empty for a random subset.

    Returns:
        ``({name: mean}, {name: std})``, float32.
    """
    means, stds = {}, {}
    rows = torch.as_tensor(list(forget_classes), dtype=torch.long)
    for name, p in params.items():
        is_output = name in output
        f = fisher[name].detach().float().to(p.device)
        var = alpha * (1.0 / (f + EPS)).clamp(max=MAX_VAR_OUTPUT if is_output else MAX_VAR)
        if p.ndim > 1:
            var = var.mean(dim=1, keepdim=True).expand_as(p).clone()
        mean = p.detach().float().clone()
        if is_output and len(rows):
            idx = rows.to(p.device)
            mean[idx] = 0.0
            var[idx] = FORGOTTEN_VAR
        if is_output or p.ndim == 1:
            var = var * BOOST
        means[name], stds[name] = mean, var.sqrt()
    return means, stds


@torch.no_grad()
def output_layer(model: nn.Module, num_classes: int, x: Inputs | None = None) -> list[str]:
    """The names of the output layer's trainable parameters whose first dimension is
    ``num_classes`` (its weight rows and biases, one per class).

    The output layer is the layer whose output is the logits, found by one forward pass on
    the sample input ``x`` (:func:`unlearnkit.models.graph.output_module`), whatever order the
    model registers its modules in. Without ``x`` (a model known to register its output layer
    last), it is the module that owns the model's last trainable parameter.
    """
    if x is not None:
        _, module = output_module(model, x, method="fisher-forgetting")
        names = {id(p): n for n, p in model.named_parameters()}  # a tied one: its first name
        return [names[id(p)] for p in module.parameters(recurse=False)
                if p.requires_grad and p.ndim >= 1 and p.shape[0] == num_classes]
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        return []
    last = named[-1][0]
    prefix = last.rsplit(".", 1)[0] + "." if "." in last else ""
    return [n for n, p in named
            if n.startswith(prefix) and "." not in n[len(prefix):]
            and p.ndim >= 1 and p.shape[0] == num_classes]


@register_method
@dataclass(frozen=True, kw_only=True)
class FisherForgetting(UnlearningMethod):
    """Fisher forgetting (Golatkar, Achille, Soatto, CVPR 2020, "Eternal Sunshine").

    Update rule: with ``F_r`` the diagonal Fisher information of the original model on D_r
    under its own predictive distribution (``1/N sum_n sum_c p(c|x_n) (d CE(x_n, c)/d theta)^2``,
    :mod:`unlearnkit.importance` mode ``"true-fisher"``, as the authors' ``hessian()`` computes
    it with batches of one), every weight is resampled as
    ``theta <- mean + std * N(0, 1)`` with the mean and standard deviation of
    :func:`fisher_noise`: ``std^2 = alpha * min(1 / (F_r + 1e-8), 1e3)`` averaged over each
    weight tensor's second dimension (1e2 for the output layer; times 10 for the output layer and
    every 1-D parameter); for class unlearning, the forgotten classes' rows of the output layer
    are set to mean 0 and variance 1e-3 (the authors' class-specific correction). Noise where
    the retain set's Fisher is small (parameters that D_r does not pin down) destroys what only
    D_f had taught. No gradient step. ``F_r`` is cached on disk.

    Defaults: ``alpha=1e-6``, the value of the authors' notebook (``Forgetting.ipynb``, "Fisher
    Noise in Weights") and of the SSD authors' ``FisherForgetting`` baseline, which copies it.

    Where this implementation deliberately differs from the public code
    (github.com/AdityaGolatkar/SelectiveForgetting, ``Forgetting.ipynb``):

    * **Formula of the paper vs of the code.** The paper motivates noise of covariance
      proportional to ``F^{-1/2}`` (std ``F^{-1/4}``); the authors' code, which every
      benchmark reuses, draws variance ``alpha / F`` with the clamps above. We follow the code.
    * **The output layer** is found by data flow, as the layer whose output is the logits (one
      forward pass on a retain sample: :func:`output_layer`; its parameters whose first
      dimension is the number of classes), not as "every parameter whose first dimension
      equals the number of classes", which also catches a hidden layer that happens to have
      that many units, nor as the owner of the last registered parameter, which is not the
      output layer of a model that registers its head first.
    * The Fisher is computed in batches with per-layer hooks (or, where those cannot read the
      model, torch.func's vmap or a per-sample loop: ``implementation``) instead of one
      backward per sample and class (same numbers); only parameters that require grad are
      perturbed; the noise comes from a generator seeded by ``seed``, on the CPU (same draws
      on every device).

    Paper: Golatkar, Achille, Soatto. "Eternal Sunshine of the Spotless Net: Selective
    Forgetting in Deep Networks", CVPR 2020.
    """

    name = "fisher-forgetting"
    paper = ("Golatkar, Achille, Soatto. Eternal Sunshine of the Spotless Net: Selective "
             "Forgetting in Deep Networks, CVPR 2020")
    summary = "resample every weight with Gaussian noise of variance alpha / Fisher(retain)"
    forget_more = "raise alpha (more noise where the retain set's Fisher is small)"

    alpha: float = hp(1e-6, "noise scale: variance alpha * min(1 / F_r, 1e3)", low=0.0,
                      low_open=True, search=Search(1e-8, 1e-4, log=True))
    class_correction: bool = hp(True, "class unlearning: zero the forgotten classes' output "
                                "rows (variance 1e-4 before the output layer's x10)")
    implementation: str = hp("auto", "per-sample gradients: auto (hooks, else torch.func vmap, "
                             "else a per-sample loop), hooks, vmap or loop",
                             choices=IMPLEMENTATIONS)

    def distribution(self, model: nn.Module, request: Request) -> tuple[Importances, Importances]:
        """``(mean, std)`` of the weights this method draws for the request."""
        assert request.retain is not None
        fisher = cached_importances(model, request.retain, mode="true-fisher",
                                    batch_size=FISHER_BATCH_SIZE, device=request.device,
                                    progress=request.progress,
                                    implementation=self.implementation)
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        data = request.retain if request.retain is not None else request.forget
        classes = num_outputs(model, data, request.device, request.original_info)
        forget_classes: list[int] = []
        if request.scenario == "class" and self.class_correction and request.forget is not None:
            labels = torch.cat([y.cpu() for _, y in iter_batches(request.forget, 1024,
                                                                   shuffle=False)])
            forget_classes = sorted(int(c) for c in labels.unique() if 0 <= int(c) < classes)
        return fisher_noise(params, fisher, alpha=self.alpha,
                            output=output_layer(model, classes,
                                                sample_input(request.retain, request.device)),
                            forget_classes=forget_classes)

    @torch.no_grad()
    def _unlearn(self, model: nn.Module, request: Request) -> nn.Module:
        means, stds = self.distribution(model, request)
        gen = torch.Generator().manual_seed(request.seed)
        for name, p in model.named_parameters():
            if name not in means:
                continue
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.device)
            p.copy_((means[name] + stds[name] * noise).to(p.dtype))
        return model
