"""Parameter importances (diagonal Fishers, sensitivities, saliency), with an on-disk cache.

One function, :func:`importances`, computes every per-parameter importance that a method of this
package needs; each published variant has its own explicit ``mode`` (DESIGN.md: a published
variant gets its own name, never a silent switch). For every parameter ``theta_j``, with
``g_n = d CE(f(x_n), y_n) / d theta`` the per-sample gradient of the cross-entropy at the true
label:

``"fisher"``
    The diagonal of the *empirical* Fisher information, ``I_j = 1/N * sum_n g_nj^2``: the mean
    over samples of the per-sample squared gradient. It does not depend on the batch size.
    (SSD, Fisher masking, and the WoodFisher of influence unlearning.)
``"batch-squared-grad"``
    What the public code of Selective Synaptic Dampening (Foster et al. 2024) computes: the square
    of the gradient of each mini-batch's *mean* loss, averaged over the mini-batches,
    ``1/B * sum_b (1/|b| * sum_{n in b} g_n)^2``. Cross terms between the samples of a batch do
    not cancel, so it depends on the batch size (with batches of one it is the Fisher above).
``"true-fisher"``
    The diagonal of the Fisher information under the model's *own* predictive distribution
    (Kunstner et al. 2019 call it "the Fisher", as opposed to the empirical Fisher above):
    ``I_j = 1/N * sum_n sum_c p(c | x_n) * (d CE(f(x_n), c) / d theta_j)^2``. It does not read
    the labels. This is what Golatkar et al.'s Fisher forgetting computes (their ``hessian()``,
    with batches of one). Costs one pass per class.
``"output-norm"``
    The label-free sensitivity of Memory Aware Synapses (Aljundi et al. 2018), which Loss-Free
    SSD (Foster et al. 2024) uses in place of the Fisher: the mean over samples of the absolute
    per-sample gradient of the squared L2 norm of the output,
    ``I_j = 1/N * sum_n |d ||f(x_n)||^2 / d theta_j|``. It does not read the labels and does
    not depend on the batch size.
``"batch-output-norm"``
    What the public LF-SSD code (the README of github.com/if-loops/selective-synaptic-dampening)
    computes: the absolute gradient of each mini-batch's *mean* squared output norm, averaged
    over the mini-batches, ``1/B * sum_b |d (1/|b| * sum_{n in b} ||f(x_n)||^2) / d theta|``.
    Label-free; depends on the batch size (with batches of one it is ``"output-norm"``).
``"saliency"``
    SalUn's weight saliency (Fan et al. 2024): the absolute value of the gradient of the *mean*
    loss over the whole data, ``I_j = |1/N * sum_n g_nj|``, accumulated exactly over the
    mini-batches (it does not depend on the batch size). :func:`importance_sums` returns the
    signed sum ``sum_n g_n``, which is also the gradient that influence unlearning needs.

The per-sample modes are computed in one batched forward and backward pass per mini-batch (per
class for ``"true-fisher"``), without a Python loop over samples, by per-layer hooks that turn
each layer's input and output gradient into per-sample gradients, or directly into the sum of
their squares (the technique of Opacus and BackPACK):

* ``nn.Linear``: the per-sample gradient is ``outer(g_n, a_n)``, so for 2-D inputs the sum of
  squares is ``(g*g)^T (a*a)``, one matrix product, never materialising per-sample gradients;
* ``nn.Conv2d``: the input is unfolded into patches ``U_n``; the per-sample gradient is
  ``G_n U_n^T`` (a batched matrix product, in chunks), squared and summed;
* ``BatchNorm`` (eval mode, running statistics), ``LayerNorm``, ``GroupNorm``: the per-sample
  gradient of the affine weight is ``sum(g * x_hat)`` over the positions, of the bias ``sum(g)``;
* any other module that holds parameters: ``torch.func.vmap`` of ``grad`` of that module alone
  (``functional_call``), given its recorded input and output gradient.

Two reference implementations compute the same numbers: ``"vmap"`` (``torch.func`` over the whole
model) and ``"loop"`` (one backward pass per sample). Pass ``implementation=`` to choose; the
hooks implementation checks itself against the loop on the first samples of each call and falls
back to ``"vmap"``, with a warning, for a model whose layers it cannot read (a parameter used
outside its module's forward, samples mixed across the batch...). :func:`per_sample_gradients`
gives the per-sample gradients themselves, flattened, batch by batch.

Which parameters to keep is one shared rule, :func:`top_fraction`: the global top ``fraction``
of all entries by a score (Fisher masking's ``F_f - F_r``, SalUn's saliency).

:func:`cached_importances` stores results as safetensors under
``cache_root() / "importance"``, keyed by the model's weights, the data, the mode and (for the
batch modes only) the batch size.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from unlearnkit._cache import cache_root, hash_model, hash_tensors
from unlearnkit.data.containers import ArrayDataset
from unlearnkit.data.splits import Data
from unlearnkit.exceptions import InvalidParameterError, ModelError
from unlearnkit.models.checkpoint import atomic_write
from unlearnkit.training import data_size, eval_mode, iter_batches, model_device, resolve_device

__all__ = [
    "BATCH_MODES",
    "IMPLEMENTATIONS",
    "LABEL_FREE_MODES",
    "MODES",
    "cached_importances",
    "from_sums",
    "importance_cache_key",
    "importance_sums",
    "importances",
    "load_cached_importances",
    "per_sample_gradients",
    "save_cached_importances",
    "top_fraction",
]

#: The importances :func:`importances` computes.
MODES = ("fisher", "batch-squared-grad", "true-fisher", "output-norm", "batch-output-norm",
         "saliency")
#: The modes whose value depends on how the data is cut into mini-batches (and their order).
BATCH_MODES = ("batch-squared-grad", "batch-output-norm")
#: The modes that never read the labels.
LABEL_FREE_MODES = ("true-fisher", "output-norm", "batch-output-norm")
#: The interchangeable implementations of ``mode="fisher"``.
IMPLEMENTATIONS = ("hooks", "vmap", "loop")
#: Default mini-batch size: the public SSD code's for ``batch-squared-grad``; for the Fisher it
#: only trades memory for speed.
DEFAULT_BATCH_SIZE = 64

_CACHE_FORMAT = 1
#: Largest per-chunk tensor (elements) that the hooks and vmap paths materialise.
_CHUNK_ELEMENTS = 1 << 24
#: Per-sample convolution gradients per chunk on a CPU, per two threads: small enough to stay
#: in cache (measured best on 1 and 2 threads; more threads want larger chunks).
_CPU_CHUNK_ELEMENTS = 1 << 18

Importances = dict[str, torch.Tensor]


# ============================================================================ public API
def importances(
    model: nn.Module,
    data: Data,
    *,
    mode: str = "fisher",
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | torch.device | None = None,
    progress: bool = False,
    implementation: str = "hooks",
) -> Importances:
    """Per-parameter importances of ``model`` on ``data``, computed in eval mode.

    Args:
        model: the network; it is not modified (its train/eval flags are restored, no
            ``.grad`` is written, and it is copied if ``device`` is not where it lives).
        data: an ArrayDataset, a torch Dataset or a DataLoader yielding ``(x, y)``.
        mode: one of :data:`MODES` (see the module docstring): ``"fisher"`` (mean per-sample
            squared gradient), ``"batch-squared-grad"`` (squared gradient of each batch's mean
            loss, averaged over batches: it depends on ``batch_size``), ``"true-fisher"``,
            ``"output-norm"``, ``"batch-output-norm"`` or ``"saliency"``.
        batch_size: mini-batch size (a DataLoader's own batch size wins).
        device: where to compute (default: where the model is).
        progress: show a progress bar over batches on stderr.
        implementation: for the per-sample modes (``"fisher"``, ``"true-fisher"``,
            ``"output-norm"``): ``"hooks"`` (default, fastest), ``"vmap"`` or ``"loop"``; they
            agree to float tolerance. Ignored by the other modes.

    Returns:
        ``{name: tensor shaped like the parameter}`` for every parameter that requires grad,
        float32, non-negative, on the computation device.
    """
    total, count = importance_sums(model, data, mode=mode, batch_size=batch_size, device=device,
                                   progress=progress, implementation=implementation)
    return from_sums(total, count, mode=mode)


def from_sums(total: Importances, count: int, *, mode: str) -> Importances:
    """The importances from the sums and count of :func:`importance_sums`: ``total / count``,
    and for ``"saliency"`` the absolute value of that mean gradient."""
    if mode == "saliency":
        return {k: (v / count).abs() for k, v in total.items()}
    return {k: v / count for k, v in total.items()}


def importance_sums(
    model: nn.Module,
    data: Data,
    *,
    mode: str = "fisher",
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | torch.device | None = None,
    progress: bool = False,
    implementation: str = "hooks",
) -> tuple[Importances, int]:
    """The un-normalised sums behind :func:`importances`, and what they are averaged over.

    For the per-sample modes the sum over samples of the per-sample terms and the number of
    samples; for the batch modes (:data:`BATCH_MODES`) the sum over batches and the number of
    batches; for ``"saliency"`` the *signed* sum of the per-sample gradients ``sum_n g_n`` and
    the number of samples (:func:`from_sums` takes the absolute value of the mean). Sums over
    two disjoint data sets add up, which gives the importance of their union without a pass
    over it (for the batch modes, of the union cut into the same batches).
    """
    _check_args(mode, batch_size, implementation)
    n = data_size(data)
    if n == 0:
        raise InvalidParameterError("Cannot compute importances: the data is empty.")
    dev = resolve_device(device) if device is not None else model_device(model)
    work = model if model_device(model) == dev else _copy_to(model, dev)
    names = _trainable(work)
    if not names:
        raise ModelError("The model has no parameter that requires grad: nothing to weigh.")
    if mode in _PER_SAMPLE_MODES:
        _check_per_sample(work)
    sums = {name: torch.zeros_like(p, dtype=torch.float32) for p, name in names.items()}
    count = 0
    batches = iter_batches(data, batch_size, shuffle=False, device=dev)
    total_batches = _num_batches(data, batch_size)
    bar = tqdm(batches, total=total_batches, desc=f"importance ({mode})", disable=not progress,
               file=sys.stderr, leave=False)
    impl = implementation
    with eval_mode(work), torch.enable_grad():
        for i, (x, y) in enumerate(bar):
            if mode in _BATCH_RULES:
                _add(sums, _BATCH_RULES[mode](work, names, x, y))
                count += 1
                continue
            if mode == "saliency":
                _add(sums, _grads_of(_ce_sum(work(x), y), names))
                count += len(x)
                continue
            objectives, reduce = _per_sample_rule(mode, work, x)
            if impl == "hooks" and i == 0 and not _hooks_agree_with_loop(
                    work, names, x, y, objectives[0]):
                warnings.warn(
                    "The per-layer hooks do not reproduce this model's per-sample "
                    "gradients (a parameter used outside its module's forward, or samples "
                    "mixed across the batch); using the slower torch.func implementation.",
                    UserWarning, stacklevel=3)
                impl = "vmap"
            for objective in objectives:
                _add(sums, _FISHER[impl](work, names, x, y, objective, reduce))
            count += len(x)
    return sums, count


def per_sample_gradients(
    model: nn.Module,
    data: Data,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | torch.device | None = None,
    implementation: str = "hooks",
) -> Iterator[torch.Tensor]:
    """Yield, mini-batch by mini-batch, the per-sample gradients of the cross-entropy at the
    true label, flattened: a float32 ``(batch, P)`` tensor on the computation device whose
    columns are the trainable parameters in :meth:`~torch.nn.Module.named_parameters` order
    (each flattened row-major), as :func:`flatten` lays them out. Computed in eval mode, with
    the same implementations (and the same self-check) as the per-sample modes."""
    _check_args("fisher", batch_size, implementation)
    dev = resolve_device(device) if device is not None else model_device(model)
    work = model if model_device(model) == dev else _copy_to(model, dev)
    names = _trainable(work)
    if not names:
        raise ModelError("The model has no parameter that requires grad: no gradient to take.")
    _check_per_sample(work)
    order = list(names.values())
    impl = implementation
    for i, (x, y) in enumerate(iter_batches(data, batch_size, shuffle=False, device=dev)):
        # modes are set per batch, never held across a yield (the caller's state in between)
        with eval_mode(work), torch.enable_grad():
            if impl == "hooks" and i == 0 and not _hooks_agree_with_loop(work, names, x, y,
                                                                          _ce_sum):
                warnings.warn(
                    "The per-layer hooks do not reproduce this model's per-sample gradients; "
                    "using the slower torch.func implementation.", UserWarning, stacklevel=2)
                impl = "vmap"
            grads = _PER_SAMPLE_GRADS[impl](work, names, x, y, _ce_sum)
            flat = torch.cat([grads[k].reshape(len(x), -1).float() for k in order], dim=1)
        yield flat


def flatten(tensors: Importances, model: nn.Module) -> torch.Tensor:
    """Concatenate ``{name: tensor}`` into one vector in the order of ``model``'s trainable
    parameters (the layout of :func:`per_sample_gradients`)."""
    return torch.cat([tensors[k].reshape(-1).float() for k in _trainable(model).values()])


def unflatten(vector: torch.Tensor, model: nn.Module) -> Importances:
    """The inverse of :func:`flatten`: ``{name: tensor shaped like the parameter}``."""
    out, start = {}, 0
    for p, name in _trainable(model).items():
        out[name] = vector[start : start + p.numel()].view(p.shape)
        start += p.numel()
    if start != vector.numel():
        raise InvalidParameterError(
            f"A vector of {vector.numel()} entries does not match the model's {start} "
            "trainable parameter entries.")
    return out


def top_fraction(scores: Importances, fraction: float) -> Importances:
    """The global top-``fraction`` rule: which entries of all the tensors score highest.

    Every entry of every tensor is ranked by its score, globally over all tensors (not per
    tensor); the ``round(fraction * total)`` highest are selected. Ties are broken
    deterministically in favour of the entry that comes first in the dict's order (then in
    row-major order within a tensor). Fisher masking (scores ``F_f - F_r``) and SalUn's mask
    (scores ``|grad L_f|``) both use it.

    Args:
        scores: ``{name: tensor}``.
        fraction: in [0, 1], the fraction of all entries to select.

    Returns:
        ``{name: bool tensor}`` shaped like the scores, True where selected; exactly
        ``round(fraction * total)`` entries are True.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (
            0.0 <= fraction <= 1.0):
        raise InvalidParameterError(
            f"The 'fraction' parameter must be a float in the range [0, 1]. Got {fraction!r} "
            "instead.")
    names = list(scores)
    flat_scores = torch.cat([scores[n].double().reshape(-1).cpu() for n in names]) if names else (
        torch.zeros(0, dtype=torch.float64))
    total = flat_scores.numel()
    k = round(fraction * total)
    flat = torch.zeros(total, dtype=torch.bool)
    if k:
        order = torch.sort(flat_scores, descending=True, stable=True).indices
        flat[order[:k]] = True
    out, start = {}, 0
    for n in names:
        size = scores[n].numel()
        out[n] = flat[start : start + size].view(scores[n].shape).to(scores[n].device)
        start += size
    return out


def cached_importances(
    model: nn.Module,
    data: Data,
    *,
    mode: str = "fisher",
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | torch.device | None = None,
    progress: bool = False,
    implementation: str = "hooks",
    cache: bool = True,
) -> Importances:
    """:func:`importances`, read from and written to the on-disk cache.

    The key is the model's weights (:func:`~unlearnkit._cache.hash_model`), the data's tensors,
    the mode and, for the batch modes only, the batch size. For the other modes, whose value
    does not depend on the order of the samples, the data key does not either, so that the
    same training set reached through another split hits the cache. Data that is not an
    :class:`ArrayDataset` is never cached. Files are written atomically.
    """
    _check_args(mode, batch_size, implementation)
    key = importance_cache_key(model, data, mode=mode, batch_size=batch_size) if cache else None
    dev = resolve_device(device) if device is not None else model_device(model)
    if key is not None:
        hit = load_cached_importances(key, model, device=dev)
        if hit is not None:
            return hit
    out = importances(model, data, mode=mode, batch_size=batch_size, device=dev,
                      progress=progress, implementation=implementation)
    if key is not None:
        save_cached_importances(key, out)
    return out


def importance_cache_key(
    model: nn.Module, data: Data, *, mode: str, batch_size: int = DEFAULT_BATCH_SIZE
) -> str | None:
    """The cache key of ``(model, data, mode, batch size)``, or ``None`` if ``data`` is not an
    :class:`ArrayDataset` (only those are hashed)."""
    if not isinstance(data, ArrayDataset):
        return None
    if mode in LABEL_FREE_MODES:  # the labels are not read: relabelled data hits the cache
        data = ArrayDataset(data.x, torch.zeros_like(data.y))
    spec = {
        "format": _CACHE_FORMAT,
        "model": hash_model(model),
        "data": _hash_data(data, ordered=mode in BATCH_MODES),
        "mode": mode,
        "batch_size": batch_size if mode in BATCH_MODES else None,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _cache_path(key: str) -> Path:
    return cache_root() / "importance" / f"{key}.safetensors"


def load_cached_importances(
    key: str, model: nn.Module, *, device: torch.device | None = None
) -> Importances | None:
    """The importances stored under ``key``, or ``None`` when absent, unreadable, or not
    matching ``model``'s trainable parameters (the caller then recomputes and overwrites)."""
    path = _cache_path(key)
    if not path.is_file():
        return None
    expected = {name: p.shape for p, name in _trainable(model).items()}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            out = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception:  # a corrupt or truncated file is a cache miss
        return None
    if set(out) != set(expected) or any(out[k].shape != expected[k] for k in out):
        return None
    dev = device if device is not None else model_device(model)
    return {k: v.to(dev) for k, v in out.items()}


def save_cached_importances(key: str, imps: Importances) -> Path:
    """Store ``imps`` under ``key``, atomically."""
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in imps.items()}
    return atomic_write(_cache_path(key), lambda tmp: save_file(tensors, tmp))


# ============================================================================ helpers
def _check_args(mode: str, batch_size: int, implementation: str) -> None:
    if mode not in MODES:
        raise InvalidParameterError(
            f"The 'mode' parameter must be one of {list(MODES)}. Got {mode!r} instead.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidParameterError(
            f"The 'batch_size' parameter must be an int in the range [1, inf). Got "
            f"{batch_size!r} instead.")
    if implementation not in IMPLEMENTATIONS:
        raise InvalidParameterError(
            f"The 'implementation' parameter must be one of {list(IMPLEMENTATIONS)}. Got "
            f"{implementation!r} instead.")


def _copy_to(model: nn.Module, device: torch.device) -> nn.Module:
    import copy

    return copy.deepcopy(model).to(device)


def _trainable(model: nn.Module) -> dict[nn.Parameter, str]:
    """``{parameter: name}`` for every parameter that requires grad (shared ones once)."""
    return {p: name for name, p in model.named_parameters() if p.requires_grad}


def _num_batches(data: Data, batch_size: int) -> int | None:
    try:
        from torch.utils.data import DataLoader

        if isinstance(data, DataLoader):
            return len(data)
        return math.ceil(data_size(data) / batch_size)
    except TypeError:
        return None


def _add(into: Importances, more: Importances) -> None:
    for k, v in more.items():
        into[k] += v


def _check_per_sample(model: nn.Module) -> None:
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is None:
            raise ModelError(
                f"Module {name!r} ({type(m).__name__}) has no running statistics, so in eval "
                "mode it normalises with the statistics of the batch: per-sample gradients, "
                "hence the Fisher, are not defined. Use mode='batch-squared-grad', or give it "
                "track_running_stats=True.")


def _hash_data(data: ArrayDataset, *, ordered: bool) -> str:
    """SHA-256 of the samples and labels; with ``ordered=False``, of their multiset."""
    x, y = data.x.detach().cpu().contiguous(), data.y.detach().cpu().contiguous()
    if ordered:
        return hash_tensors(x, y)
    rows = np.concatenate([x.reshape(len(x), -1).view(torch.uint8).numpy(),
                           y.reshape(-1, 1).view(torch.uint8).numpy()], axis=1)
    rows = np.ascontiguousarray(rows)
    keys = rows.view(np.dtype((np.void, rows.shape[1]))).ravel()
    order = torch.from_numpy(np.argsort(keys, kind="stable"))
    return "multiset:" + hash_tensors(x[order], y[order])


def _grads_of(loss: torch.Tensor, names: dict[nn.Parameter, str]) -> Importances:
    params = list(names)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return {names[p]: (g.detach().float() if g is not None else torch.zeros_like(p).float())
            for p, g in zip(params, grads, strict=True)}


# ---------------------------------------------------------------------------- objectives
#: ``objective(outputs, labels) -> sum over the samples of a per-sample scalar``; each sample's
#: term must depend on that sample's output row only (so that per-sample gradients exist).
Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _ce_sum(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``sum_n CE(f(x_n), y_n)``."""
    return F.cross_entropy(out, y, reduction="sum")


def _squared_norm_sum(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``sum_n ||f(x_n)||^2`` (the labels are not read)."""
    return out.float().pow(2).sum()


class _WeightedClassCE:
    """``sum_n sqrt(p(c | x_n)) * CE(f(x_n), c)`` with ``p`` detached: its per-sample gradient,
    squared, is ``p(c | x_n) * (d CE(f(x_n), c) / d theta)^2``, one class's term of the true
    Fisher (the labels are not read)."""

    def __init__(self, c: int) -> None:
        self.c = c

    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(out.float(), dim=-1)
        weight = (0.5 * logp[..., self.c]).exp().detach()  # sqrt(p_c)
        return -(weight * logp[..., self.c]).sum()


#: The modes computed from per-sample gradients.
_PER_SAMPLE_MODES = ("fisher", "true-fisher", "output-norm")


def _per_sample_rule(mode: str, model: nn.Module, x: torch.Tensor
                     ) -> tuple[list[Objective], str]:
    """The objectives whose per-sample gradients a per-sample mode sums, and how it reduces
    each per-sample gradient (``"square"`` or ``"abs"``)."""
    if mode == "fisher":
        return [_ce_sum], "square"
    if mode == "output-norm":
        return [_squared_norm_sum], "abs"
    with torch.no_grad():
        classes = model(x[:1]).shape[-1]
    return [_WeightedClassCE(c) for c in range(classes)], "square"


def _reduce(v: torch.Tensor, reduce: str) -> torch.Tensor:
    """Sum over the first (sample) dimension of the squares or absolute values."""
    v = v.float()
    return (v * v).sum(0) if reduce == "square" else v.abs().sum(0)


def _batch_squared_grad(model: nn.Module, names: dict[nn.Parameter, str], x: torch.Tensor,
                        y: torch.Tensor) -> Importances:
    loss = F.cross_entropy(model(x), y)
    return {k: g * g for k, g in _grads_of(loss, names).items()}


def _batch_output_norm(model: nn.Module, names: dict[nn.Parameter, str], x: torch.Tensor,
                       y: torch.Tensor) -> Importances:
    loss = _squared_norm_sum(model(x), y) / len(x)
    return {k: g.abs() for k, g in _grads_of(loss, names).items()}


_BATCH_RULES: dict[str, Callable[..., Importances]] = {
    "batch-squared-grad": _batch_squared_grad,
    "batch-output-norm": _batch_output_norm,
}


# ---------------------------------------------------------------------------- loop
def _per_sample_loop(model: nn.Module, names: dict[nn.Parameter, str], x: torch.Tensor,
                     y: torch.Tensor, objective: Objective = _ce_sum) -> list[Importances]:
    return [_grads_of(objective(model(x[i : i + 1]), y[i : i + 1]), names)
            for i in range(len(x))]


def _loop_grads(model: nn.Module, names: dict[nn.Parameter, str], x: torch.Tensor,
                y: torch.Tensor, objective: Objective = _ce_sum) -> Importances:
    loop = _per_sample_loop(model, names, x, y, objective)
    return {k: torch.stack([g[k] for g in loop]) for k in names.values()}


def _fisher_loop(model: nn.Module, names: dict[nn.Parameter, str], x: torch.Tensor,
                 y: torch.Tensor, objective: Objective = _ce_sum, reduce: str = "square"
                 ) -> Importances:
    out = {k: torch.zeros_like(p, dtype=torch.float32) for p, k in names.items()}
    for g in _per_sample_loop(model, names, x, y, objective):
        _add(out, {k: _reduce(v.unsqueeze(0), reduce) for k, v in g.items()})
    return out


# ---------------------------------------------------------------------------- vmap
def _vmap_chunks(model: nn.Module, names: dict[nn.Parameter, str], x: torch.Tensor,
                 y: torch.Tensor, objective: Objective) -> Iterator[Importances]:
    """Per-sample gradients by ``torch.func``, in chunks of samples."""
    from torch.func import functional_call, grad, vmap

    params = {k: p.detach() for p, k in names.items()}
    others = {k: p.detach() for k, p in model.named_parameters() if k not in params}
    buffers = dict(model.named_buffers())

    def loss(ps: Importances, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, (ps, others, buffers), (xi.unsqueeze(0),), strict=False)
        return objective(out, yi.unsqueeze(0))

    per_sample = sum(p.numel() for p in params.values())
    chunk = max(1, min(len(x), _CHUNK_ELEMENTS // max(per_sample, 1)))
    for s in range(0, len(x), chunk):
        with torch.no_grad():  # torch.func.grad still differentiates; no outer graph
            yield vmap(grad(loss), in_dims=(None, 0, 0))(params, x[s : s + chunk],
                                                        y[s : s + chunk])


def _vmap_grads(model: nn.Module, names: dict[nn.Parameter, str], x: torch.Tensor,
                y: torch.Tensor, objective: Objective = _ce_sum) -> Importances:
    parts = list(_vmap_chunks(model, names, x, y, objective))
    return {k: torch.cat([p[k] for p in parts]).float() for k in names.values()}


def _fisher_vmap(model: nn.Module, names: dict[nn.Parameter, str], x: torch.Tensor,
                 y: torch.Tensor, objective: Objective = _ce_sum, reduce: str = "square"
                 ) -> Importances:
    out = {k: torch.zeros_like(p, dtype=torch.float32) for p, k in names.items()}
    for g in _vmap_chunks(model, names, x, y, objective):
        _add(out, {k: _reduce(v, reduce) for k, v in g.items()})
    return out


# ---------------------------------------------------------------------------- hooks
class _Unsupported(Exception):
    """The hooks cannot read this model's per-sample gradients; use vmap."""


def _is(module: nn.Module, cls: type[nn.Module]) -> bool:
    """An instance of ``cls`` whose forward is ``cls``'s own (a subclass may compute otherwise)."""
    return isinstance(module, cls) and type(module).forward is cls.forward


def _flat3(t: torch.Tensor) -> torch.Tensor:
    """``(N, *, D)`` -> ``(N, T, D)``."""
    return t.reshape(t.shape[0], -1, t.shape[-1])


def _linear(m: nn.Module, a: torch.Tensor, g: torch.Tensor, want: set[str], per_sample: bool
            ) -> Importances:
    out: Importances = {}
    if a.ndim == 2 and not per_sample:  # sum_n g_n^2 a_n^2 in one matrix product
        g2 = g * g
        if "weight" in want:
            out["weight"] = g2.t() @ (a * a)
        if "bias" in want:
            out["bias"] = g2.sum(0)
        return out
    a3, g3 = _flat3(a), _flat3(g)
    if "bias" in want:
        b = g3.sum(1)
        out["bias"] = b if per_sample else (b * b).sum(0)
    if "weight" in want:
        n, _, d_in = a3.shape
        chunk = max(1, _CHUNK_ELEMENTS // max(g3.shape[-1] * d_in, 1))
        parts = []
        total = None
        for s in range(0, n, chunk):
            w = torch.bmm(g3[s : s + chunk].transpose(1, 2), a3[s : s + chunk])
            if per_sample:
                parts.append(w)
            else:
                sq = (w * w).sum(0)
                total = sq if total is None else total + sq
        out["weight"] = torch.cat(parts) if per_sample else total
    return out


def _conv2d(m: nn.Conv2d, a: torch.Tensor, g: torch.Tensor, want: set[str], per_sample: bool
            ) -> Importances:
    """Per-sample gradients of a 2-D convolution, in chunks of samples.

    With many output positions, the weight gradients of a chunk of ``c`` samples are one
    convolution-weight backward with ``c * groups`` groups (the samples become groups); with
    few, a batched product of the output gradient and the unfolded input is faster.
    """
    if a.ndim != 4:
        raise _Unsupported
    padding: Any = m.padding
    if isinstance(padding, str) or m.padding_mode != "zeros":
        mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
        a = F.pad(a, m._reversed_padding_repeated_twice, mode=mode)
        padding = 0
    n = a.shape[0]
    c_out, groups = m.out_channels, m.groups
    out: Importances = {}
    if "bias" in want:
        b = g.reshape(n, c_out, -1).sum(2)
        out["bias"] = b if per_sample else (b * b).sum(0)
    if "weight" not in want:
        return out
    positions = g.shape[2] * g.shape[3]
    per = m.weight.numel()
    target = (_CHUNK_ELEMENTS if a.device.type != "cpu"
              else _CPU_CHUNK_ELEMENTS * max(1, torch.get_num_threads() // 2))
    chunk = max(8, target // max(per, 1))
    parts = []
    total = None
    for s in range(0, n, chunk):
        aa, gg = a[s : s + chunk], g[s : s + chunk]
        c = aa.shape[0]
        if positions >= 64:
            w = torch.nn.grad.conv2d_weight(
                aa.reshape(1, -1, *aa.shape[2:]), (c * c_out, *m.weight.shape[1:]),
                gg.reshape(1, -1, *gg.shape[2:]), stride=m.stride, padding=padding,
                dilation=m.dilation, groups=c * groups)
            w = w.view(c, *m.weight.shape)
        else:
            k = m.weight[0].numel()  # (C_in / groups) * kh * kw
            u = F.unfold(aa, m.kernel_size, dilation=m.dilation, padding=padding,
                         stride=m.stride).view(c, groups, k, positions)
            g4 = gg.reshape(c, groups, c_out // groups, positions)
            w = torch.matmul(g4, u.transpose(2, 3)).view(c, *m.weight.shape)
        if per_sample:
            parts.append(w)
        else:
            sq = w.square_().sum(0)
            total = sq if total is None else total + sq
    out["weight"] = torch.cat(parts) if per_sample else total
    return out


def _affine(x_hat: torch.Tensor, g: torch.Tensor, param_ndim: int, channel_first: bool,
            want: set[str], per_sample: bool) -> Importances:
    """Per-sample gradients of ``y = x_hat * w + b`` (w, b per channel or normalised shape)."""
    n = g.shape[0]
    if channel_first:  # (N, C, *): sum over positions
        gw = (g * x_hat).reshape(n, g.shape[1], -1).sum(2) if "weight" in want else None
        gb = g.reshape(n, g.shape[1], -1).sum(2) if "bias" in want else None
    else:  # (N, *, normalised...): sum over the middle dims
        shape = g.shape[g.ndim - param_ndim:]
        gw = (g * x_hat).reshape(n, -1, *shape).sum(1) if "weight" in want else None
        gb = g.reshape(n, -1, *shape).sum(1) if "bias" in want else None
    out: Importances = {}
    for key, v in (("weight", gw), ("bias", gb)):
        if v is not None:
            out[key] = v if per_sample else (v * v).sum(0)
    return out


def _batchnorm(m: nn.modules.batchnorm._BatchNorm, a: torch.Tensor, g: torch.Tensor,
               want: set[str], per_sample: bool) -> Importances:
    if m.training or m.running_mean is None or a.ndim < 2:
        raise _Unsupported
    view = (1, -1) + (1,) * (a.ndim - 2)
    x_hat = (a - m.running_mean.view(view)) / torch.sqrt(m.running_var.view(view) + m.eps)
    return _affine(x_hat, g, 1, True, want, per_sample)


def _layernorm(m: nn.LayerNorm, a: torch.Tensor, g: torch.Tensor, want: set[str],
               per_sample: bool) -> Importances:
    x_hat = F.layer_norm(a, m.normalized_shape, eps=m.eps)
    return _affine(x_hat, g, len(m.normalized_shape), False, want, per_sample)


def _groupnorm(m: nn.GroupNorm, a: torch.Tensor, g: torch.Tensor, want: set[str],
               per_sample: bool) -> Importances:
    x_hat = F.group_norm(a, m.num_groups, eps=m.eps)
    return _affine(x_hat, g, 1, True, want, per_sample)


def _module_vmap(m: nn.Module, args: tuple[Any, ...], g: torch.Tensor, want: set[str],
                 per_sample: bool) -> Importances:
    """Per-sample gradients of one module's own parameters by torch.func, given its input."""
    from torch.func import functional_call, grad, vmap

    n = g.shape[0]
    params = {k: p.detach() for k, p in m.named_parameters(recurse=False) if k in want}
    dims = tuple(0 if isinstance(t, torch.Tensor) and t.ndim and t.shape[0] == n else None
                 for t in args)

    def f(ps: Importances, gi: torch.Tensor, *ai: Any) -> torch.Tensor:
        full = tuple(t.unsqueeze(0) if d == 0 else t for t, d in zip(ai, dims, strict=True))
        out = functional_call(m, ps, full, strict=False)
        if not isinstance(out, torch.Tensor):
            raise _Unsupported
        return (out * gi.unsqueeze(0)).sum()

    per = sum(p.numel() for p in params.values())
    chunk = max(1, min(n, _CHUNK_ELEMENTS // max(per, 1)))
    parts: list[Importances] = []
    total: Importances = {}
    for s in range(0, n, chunk):
        sl = [t[s : s + chunk] if d == 0 else t for t, d in zip(args, dims, strict=True)]
        with torch.no_grad():  # torch.func.grad still differentiates; no outer graph
            grads = vmap(grad(f), in_dims=(None, 0, *dims))(params, g[s : s + chunk], *sl)
        if per_sample:
            parts.append(grads)
        else:
            _sum_into(total, {k: (v * v).sum(0) for k, v in grads.items()})
    if per_sample:
        return {k: torch.cat([p[k] for p in parts]) for k in params}
    return total


def _sum_into(into: Importances, more: Importances) -> None:
    for k, v in more.items():
        into[k] = into[k] + v if k in into else v


_Handler = Callable[..., Importances]


def _handler(m: nn.Module) -> tuple[_Handler, bool]:
    """The per-sample rule of a module, and whether it takes the module's single input."""
    if _is(m, nn.Linear):
        return _linear, True
    if _is(m, nn.Conv2d):
        return _conv2d, True
    if isinstance(m, nn.modules.batchnorm._BatchNorm) and type(m).forward is (
            nn.modules.batchnorm._BatchNorm.forward):
        return _batchnorm, True
    if _is(m, nn.LayerNorm):
        return _layernorm, True
    if _is(m, nn.GroupNorm):
        return _groupnorm, True
    return _module_vmap, False


class _Record:
    __slots__ = ("args", "grad", "module")

    def __init__(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self.module = module
        self.args = args
        self.grad: torch.Tensor | None = None


def _hooked_pass(model: nn.Module, names: dict[nn.Parameter, str], x: torch.Tensor,
                 y: torch.Tensor, *, per_sample: bool, objective: Objective = _ce_sum
                 ) -> Importances:
    """One forward and backward; return the sum over samples of squared per-sample gradients
    (or, with ``per_sample``, the per-sample gradients themselves)."""
    owners: dict[nn.Module, dict[str, str]] = {}  # module -> {attr: full name}
    for m in model.modules():
        own = {k: names[p] for k, p in m.named_parameters(recurse=False) if p in names}
        if own:
            owners[m] = own
    records: list[_Record] = []
    n = len(y)

    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if not isinstance(output, torch.Tensor) or not output.requires_grad:
            raise _Unsupported
        rec = _Record(module, tuple(t.detach() if isinstance(t, torch.Tensor) else t
                                    for t in args))
        records.append(rec)

        def keep(grad: torch.Tensor) -> None:
            rec.grad = grad.detach()

        output.register_hook(keep)

    handles = [m.register_forward_hook(hook) for m in owners]
    try:
        xin = x.detach().requires_grad_(True) if torch.is_floating_point(x) else x
        loss = objective(model(xin), y)
        targets = [xin] if xin.requires_grad else list(names)
        torch.autograd.grad(loss, targets, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    # a parameter reached through several calls or modules: add per-sample grads, then square
    calls: dict[str, int] = {}
    for rec in records:
        for full in owners[rec.module].values():
            calls[full] = calls.get(full, 0) + 1
    if set(calls) != set(names.values()):
        raise _Unsupported
    squares: Importances = {}
    grads: Importances = {}
    for rec in records:
        if rec.grad is None or rec.grad.shape[0] != n:
            raise _Unsupported
        handler, single = _handler(rec.module)
        own = owners[rec.module]
        ps = per_sample or any(calls[full] > 1 for full in own.values())
        if single:
            if len(rec.args) != 1 or not isinstance(rec.args[0], torch.Tensor) or (
                    rec.args[0].shape[0] != n):
                raise _Unsupported
            res = handler(rec.module, rec.args[0], rec.grad, set(own), ps)
        else:
            res = handler(rec.module, rec.args, rec.grad, set(own), ps)
        for attr, v in res.items():
            full = own[attr]
            v = v.float()
            if ps:
                _sum_into(grads, {full: v})
            else:
                _sum_into(squares, {full: v})
    if per_sample:
        return grads
    for full, g in grads.items():
        _sum_into(squares, {full: (g * g).sum(0)})
    return squares


def _fisher_hooks(model: nn.Module, names: dict[nn.Parameter, str], x: torch.Tensor,
                  y: torch.Tensor, objective: Objective = _ce_sum, reduce: str = "square"
                  ) -> Importances:
    try:
        if reduce == "square":
            return _hooked_pass(model, names, x, y, per_sample=False, objective=objective)
        out: Importances = {}
        chunk = _per_sample_chunk(names)
        for s in range(0, len(x), chunk):
            grads = _hooked_pass(model, names, x[s : s + chunk], y[s : s + chunk],
                                 per_sample=True, objective=objective)
            _sum_into(out, {k: _reduce(v, reduce) for k, v in grads.items()})
        return out
    except _Unsupported:
        return _fisher_vmap(model, names, x, y, objective, reduce)


def _per_sample_chunk(names: dict[nn.Parameter, str]) -> int:
    """Samples per chunk when per-sample gradients are materialised."""
    return max(1, _CHUNK_ELEMENTS // max(sum(p.numel() for p in names), 1))


def _hooks_grads(model: nn.Module, names: dict[nn.Parameter, str], x: torch.Tensor,
                 y: torch.Tensor, objective: Objective = _ce_sum) -> Importances:
    """Per-sample gradients by the hooks (by torch.func where the hooks cannot read them)."""
    chunk = _per_sample_chunk(names)
    try:
        parts = [_hooked_pass(model, names, x[s : s + chunk], y[s : s + chunk],
                              per_sample=True, objective=objective)
                 for s in range(0, len(x), chunk)]
    except _Unsupported:
        return _vmap_grads(model, names, x, y, objective)
    return {k: torch.cat([p[k] for p in parts]) for k in names.values()}


def _hooks_agree_with_loop(model: nn.Module, names: dict[nn.Parameter, str], x: torch.Tensor,
                           y: torch.Tensor, objective: Objective = _ce_sum, samples: int = 2
                           ) -> bool:
    """Check the hooks' per-sample gradients against a per-sample loop on a few samples."""
    xs, ys = x[:samples], y[:samples]
    try:
        hooked = _hooked_pass(model, names, xs, ys, per_sample=True, objective=objective)
    except _Unsupported:
        return True  # _fisher_hooks falls back to vmap by itself
    loop = _per_sample_loop(model, names, xs, ys, objective)
    # layer errors are of order one; on an accelerator, TF32 / reduced-precision kernels
    # (cuDNN's default) make the batched and the single-sample paths differ by about 1e-2
    tol = 1e-4 if x.device.type == "cpu" else 5e-2
    for name in names.values():
        ref = torch.stack([g[name] for g in loop])
        got = hooked.get(name)
        if got is None or got.shape != ref.shape:
            return False
        if ref.numel() and float((got - ref).abs().max()) > tol * float(ref.abs().max()):
            return False
    return True


#: Sums of reduced per-sample gradients, by implementation.
_FISHER: dict[str, Callable[..., Importances]] = {
    "hooks": _fisher_hooks,
    "vmap": _fisher_vmap,
    "loop": _fisher_loop,
}
#: Per-sample gradients ``{name: (batch, *shape)}``, by implementation.
_PER_SAMPLE_GRADS: dict[str, Callable[..., Importances]] = {
    "hooks": _hooks_grads,
    "vmap": _vmap_grads,
    "loop": _loop_grads,
}
