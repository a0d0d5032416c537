"""Influence unlearning (IU): one Newton step with a WoodFisher inverse-Hessian approximation."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Subset

from unlearnkit._cache import hash_model
from unlearnkit.data.containers import ArrayDataset
from unlearnkit.data.splits import Data
from unlearnkit.importance import (
    IMPLEMENTATIONS,
    flatten,
    importance_sums,
    per_sample_gradient_matrix,
    unflatten,
)
from unlearnkit.importance.cache import one_off, shared
from unlearnkit.methods.base import Request, Search, UnlearningMethod, hp, register_method
from unlearnkit.training import data_size

__all__ = ["Influence", "woodfisher_gram", "woodfisher_ihvp"]

#: Batch size of the gradient passes (it changes speed and memory, never the result).
GRAD_BATCH_SIZE = 128
#: Most per-sample gradient entries held in memory at once (float32: 1 GiB).
MAX_GRAD_ELEMENTS = 1 << 28


def woodfisher_ihvp(grads: torch.Tensor, v: torch.Tensor, *, damping: float = 1.0,
                    gram: torch.Tensor | None = None) -> torch.Tensor:
    """``(damping * I + 1/m * G^T G)^{-1} v``: the WoodFisher inverse-Hessian-vector product.

    WoodFisher (Singh & Alistarh, NeurIPS 2020) approximates the Hessian by the dampened
    empirical Fisher of ``m`` per-sample gradients (the rows of ``G``) and inverts it by ``m``
    Sherman-Morrison updates, starting from ``F_0^{-1} = I / damping``:

    ``F_k^{-1} = F_{k-1}^{-1} - u_k u_k^T / (m + g_k^T u_k)``, ``u_k = F_{k-1}^{-1} g_k``.

    After all ``m`` updates the recursion has computed exactly the inverse above; this function
    computes the same vector in closed form (the Woodbury identity),
    ``(v - G^T (m * damping * I + G G^T)^{-1} G v) / damping``, with an ``m x m`` solve in
    float64 instead of ``m`` sequential rank-one updates.

    Args:
        grads: ``(m, P)`` per-sample gradients.
        v: ``(P,)`` the vector to multiply.
        damping: ``lambda > 0``, added to the diagonal.
        gram: ``G G^T`` in float64 (:func:`woodfisher_gram`), when already computed: it does
            not depend on ``damping``, and is most of the cost (``m^2 P``).

    Returns:
        ``(P,)`` in ``v``'s dtype.
    """
    m = grads.shape[0]
    if m == 0:
        return v / damping
    work = grads.to(v.dtype)
    system = (woodfisher_gram(work) if gram is None else gram).clone()
    system.diagonal().add_(m * damping)
    rhs = (work @ v).double()
    w = torch.linalg.solve(system, rhs)
    return (v - work.T @ w.to(v.dtype)) / damping


def woodfisher_gram(grads: torch.Tensor) -> torch.Tensor:
    """``G G^T`` of the ``(m, P)`` per-sample gradients, in float64."""
    return (grads @ grads.T).double()


def _subset(data: Data, indices: torch.Tensor) -> Data:
    if isinstance(data, ArrayDataset):
        return data.subset(indices)
    from torch.utils.data import DataLoader

    base = data.dataset if isinstance(data, DataLoader) else data
    return Subset(base, indices.tolist())  # type: ignore[arg-type]


@register_method
@dataclass(frozen=True, kw_only=True)
class Influence(UnlearningMethod):
    """Influence unlearning, "IU" (Izzo et al. 2021; Jia et al. 2023, WoodFisher variant).

    Update rule: one Newton step that removes D_f's contribution to the optimum,

    ``theta <- theta + alpha * F^{-1} (n_f / n) * (mean_f g - mean_r g)``,

    where ``g`` are per-sample gradients of the cross-entropy at the original weights
    (``mean_f g = grad L_f``, the forget loss's mean gradient; subtracting ``mean_r g`` corrects
    for an original that is not exactly at a stationary point: there ``n_f mean_f g =
    -n_r mean_r g`` and the vector is ``-grad L_r``, so the step is Newton's on the retain loss),
    ``n = n_f + n_r``, and ``F^{-1}`` the WoodFisher inverse of the dampened empirical Fisher of
    ``m = min(samples, n_r)`` retain samples, ``(damping * I + 1/m sum_k g_k g_k^T)^{-1}``
    (:func:`woodfisher_ihvp`). The gradients of D_f and D_r are exact means over all samples
    (:func:`~unlearnkit.importance.importance_sums`, mode ``"saliency"``); the WoodFisher
    samples are per-sample gradients (:func:`~unlearnkit.importance.per_sample_gradients`, by
    per-layer hooks, or where those cannot read the model by torch.func's vmap or one backward
    pass per sample: ``implementation``).

    Defaults are those of the public code of Jia et al. ("Model Sparsity Can Simplify Machine
    Unlearning", github.com/OPTML-Group/Unlearn-Sparse, ``unlearn/Wfisher.py``, reused by
    SalUn as "IU"): ``alpha=0.2`` (``--alpha`` default and README command), ``samples=1000``
    (their ``N``) and ``damping=1`` (their recursion starts from ``F_0^{-1} = I``).

    Where this implementation deliberately differs from that code:

    * **The recursion.** Their ``woodfisher()`` keeps one vector ``o_vec`` (the first sample's
      gradient, rescaled) in place of ``F_{k-1}^{-1} g_k``, so every correction it makes to the
      step is along the first sample's gradient: it is not the WoodFisher inverse. We compute
      the exact WoodFisher inverse of the same dampened Fisher (Woodbury's closed form of the
      Sherman-Morrison recursion).
    * **The Fisher's normalisation** is the mean over the ``m`` samples used; theirs divides by
      ``N = 1000`` whatever the number of samples (1002 of them, or all of D_r when fewer).
    * **Which retain samples.** Theirs are the first 1002 of the retain loader in dataset order;
      ours ``samples`` drawn without replacement by the seed (all of D_r when it has no more),
      so that a retain set sorted by class does not bias the Fisher.
    * Per-sample and mean gradients are computed in batches (exactly); theirs sum batch means.
      With more than 1 GiB of per-sample gradients (large models), ``samples`` is lowered, with
      a warning.

    On digits (default cnn) the paper's ``alpha=0.2`` leaves both class 1 and a random 10 %
    known (forget accuracy 1.0); ``alpha=50`` halves class 1 (0.466, test 0.928),
    ``alpha=500`` ruins the model, and no setting we tried forgets cleanly.

    Paper: Izzo, Smart, Chaudhuri, Zou. "Approximate Data Deletion from Machine Learning
    Models", AISTATS 2021; Jia, Liu, Ram, Yao, Liu, Liu, Sharma, Liu. "Model Sparsity Can
    Simplify Machine Unlearning", NeurIPS 2023 (IU with WoodFisher, Singh & Alistarh 2020).
    """

    name = "influence"
    paper = ("Izzo et al., Approximate Data Deletion from Machine Learning Models, AISTATS 2021; "
             "Jia et al., Model Sparsity Can Simplify Machine Unlearning, NeurIPS 2023 (IU)")
    summary = "one Newton step removing D_f's gradient, WoodFisher inverse Hessian on D_r"
    forget_more = "raise alpha (a larger Newton step)"

    # up to 100: the default leaves digits known, 50 half-forgets, 500 ruins
    alpha: float = hp(0.2, "scale of the Newton step", low=0.0, low_open=True,
                      search=Search(1e-2, 1e2, log=True))
    samples: int = hp(1000, "retain samples in the WoodFisher approximation", low=1)
    damping: float = hp(1.0, "WoodFisher dampening lambda: F = lambda I + mean g g^T",
                        low=0.0, low_open=True, search=Search(0.1, 10.0, log=True))
    implementation: str = hp("auto", "per-sample gradients: auto (hooks, else torch.func vmap, "
                             "else a per-sample loop), hooks, vmap or loop",
                             choices=IMPLEMENTATIONS)

    def step(self, model: nn.Module, request: Request) -> torch.Tensor:
        """The flat update ``alpha * F^{-1} v`` (``flatten`` layout) for the request.

        Within a calibration's search (:func:`~unlearnkit.importance.cache.shared`), ``v``,
        the WoodFisher gradients and their Gram matrix, which depend on neither ``alpha`` nor
        ``damping``, are computed by the first trial and reused by the others."""
        assert request.forget is not None and request.retain is not None
        memo = shared()
        key = (("influence", hash_model(model), id(request.forget), id(request.retain),
                self.samples, self.implementation, request.seed, str(request.device))
               if memo is not None else None)
        if memo is not None and key in memo:
            v, grads, gram = memo[key]
        else:
            with one_off():
                kw = {"mode": "saliency", "batch_size": GRAD_BATCH_SIZE,
                      "device": request.device, "progress": request.progress}
                sum_f, n_f = importance_sums(model, request.forget, **kw)
                sum_r, n_r = importance_sums(model, request.retain, **kw)
                n = n_f + n_r
                v = flatten(sum_f, model) / n - flatten(sum_r, model) * (n_f / (n * n_r))
                grads = self._woodfisher_samples(model, request, n_r, v.numel()).to(v.dtype)
                gram = woodfisher_gram(grads)
            if memo is not None:
                memo[key] = (v, grads, gram)
        return self.alpha * woodfisher_ihvp(grads, v, damping=self.damping, gram=gram)

    def _woodfisher_samples(self, model: nn.Module, request: Request, n_r: int,
                            dim: int) -> torch.Tensor:
        assert request.retain is not None
        m = min(self.samples, n_r)
        cap = max(1, MAX_GRAD_ELEMENTS // max(dim, 1))
        if m > cap:
            warnings.warn(
                f"influence: {m} per-sample gradients of {dim} entries would take "
                f"{m * dim * 4 / 2**30:.1f} GiB; using {cap} samples.", UserWarning,
                stacklevel=4)
            m = cap
        data = request.retain
        if m < data_size(data):
            gen = torch.Generator().manual_seed(request.seed)
            idx = torch.randperm(data_size(data), generator=gen)[:m].sort().values
            data = _subset(data, idx)
        return per_sample_gradient_matrix(model, data, batch_size=GRAD_BATCH_SIZE,
                                          device=request.device,
                                          implementation=self.implementation)

    @torch.no_grad()
    def _unlearn(self, model: nn.Module, request: Request) -> nn.Module:
        delta = unflatten(self.step(model, request), model)
        for name, p in model.named_parameters():
            if name in delta:
                p.add_(delta[name].to(p.dtype))
        return model

