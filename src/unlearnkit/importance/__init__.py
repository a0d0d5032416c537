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

The package's parts:

* :mod:`.modes`: the modes, their objectives and the batch modes' rules;
* :mod:`.hooks`: the per-sample modes in one batched forward and backward pass per mini-batch
  (a backward per class for ``"true-fisher"``), without a Python loop over samples, by
  per-layer hooks that turn each layer's input and output gradient into per-sample gradients,
  or directly into the sum of their squares (the technique of Opacus and BackPACK): one rule
  per layer type (``nn.Linear``, ``nn.Conv2d``, BatchNorm in eval mode, ``LayerNorm``,
  ``GroupNorm``), and ``torch.func`` on any other module that holds parameters;
* :mod:`.vmap`: ``torch.func.vmap`` of ``grad`` over the whole model;
* :mod:`.loop`: one backward pass per sample, the reference;
* :mod:`.auto`: which of the three a pass uses (``implementation=``);
* :mod:`.cache`: the on-disk cache (:func:`cached_importances` reads and writes it);
* :mod:`.select`: :func:`top_fraction`, the one rule for which parameters to keep (the global
  top ``fraction`` of all entries by a score: Fisher masking's ``F_f - F_r``, SalUn's
  saliency).

The three implementations compute the same numbers. ``implementation="auto"`` (the default)
checks the hooks against the loop on the first samples of each call and uses them when they
agree; else torch.func's vmap, checked the same way; else the loop. When it does not use the
hooks it says so once per model class (an
:class:`~unlearnkit.exceptions.ImplementationFallbackWarning`: a model whose layers the hooks
cannot read, such as an ``nn.GRU``, a parameter used outside its module's forward, a forward
that vmap cannot batch). ``"hooks"``, ``"vmap"`` and ``"loop"`` ask for one; the hooks still
fall back to vmap, with a warning, where they cannot read the model. Every implementation
takes the inputs a model may take (:mod:`unlearnkit.data.batches`): tensors of any dtype
(integer token ids included), dicts of tensors (Hugging Face models, called ``model(**x)``) and
tuples. :func:`per_sample_gradients` gives the per-sample gradients themselves, flattened,
batch by batch.

:func:`cached_importances` stores results as safetensors under
``cache_root() / "importance"``, keyed by the model's weights, the data, the mode and (for the
batch modes only) the batch size.
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from unlearnkit.data.splits import Data
from unlearnkit.exceptions import DataError, InvalidParameterError, ModelError
from unlearnkit.importance._common import Importances, add, per_sample_chunk, trainable
from unlearnkit.importance.auto import FISHER, IMPLEMENTATIONS, PER_SAMPLE_GRADS, choose
from unlearnkit.importance.cache import (
    importance_cache_key,
    load_cached_importances,
    one_off,
    save_cached_importances,
)
from unlearnkit.importance.modes import (
    BATCH_MODES,
    BATCH_RULES,
    DEFAULT_BATCH_SIZE,
    LABEL_FREE_MODES,
    MODES,
    PER_SAMPLE_MODES,
    ce_sum,
    per_sample_rule,
    saliency_sum,
)
from unlearnkit.importance.select import top_fraction
from unlearnkit.training import (
    data_size,
    eval_mode,
    flushing_denormals,
    iter_batches,
    model_device,
    resolve_device,
)

__all__ = [
    "BATCH_MODES",
    "DEFAULT_BATCH_SIZE",
    "IMPLEMENTATIONS",
    "LABEL_FREE_MODES",
    "MODES",
    "cached_importances",
    "flatten",
    "from_sums",
    "importance_cache_key",
    "importance_sums",
    "importances",
    "load_cached_importances",
    "per_sample_gradient_matrix",
    "per_sample_gradients",
    "save_cached_importances",
    "top_fraction",
    "unflatten",
]

# ============================================================================ public API
@flushing_denormals
def importances(
    model: nn.Module,
    data: Data,
    *,
    mode: str = "fisher",
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | torch.device | None = None,
    progress: bool = False,
    implementation: str = "auto",
) -> Importances:
    """Per-parameter importances of ``model`` on ``data``, computed in eval mode.

    Args:
        model: the network; it is not modified (its train/eval flags are restored, no
            ``.grad`` is written, and it is copied if ``device`` is not where it lives).
        data: an ArrayDataset, a torch Dataset or a DataLoader yielding ``(x, y)`` (the input
            may be a tensor, a dict or a tuple of tensors, see :mod:`unlearnkit.data.batches`).
        mode: one of :data:`MODES` (see the module docstring): ``"fisher"`` (mean per-sample
            squared gradient), ``"batch-squared-grad"`` (squared gradient of each batch's mean
            loss, averaged over batches: it depends on ``batch_size``), ``"true-fisher"``,
            ``"output-norm"``, ``"batch-output-norm"`` or ``"saliency"``.
        batch_size: mini-batch size (a DataLoader is re-batched with it, see
            :func:`~unlearnkit.data.batches.loader_batches`).
        device: where to compute (default: where the model is).
        progress: show a progress bar over batches on stderr.
        implementation: for the per-sample modes (``"fisher"``, ``"true-fisher"``,
            ``"output-norm"``): ``"auto"`` (default: the per-layer hooks, else torch.func's
            vmap, else a per-sample loop, whichever first reproduces the loop on the first
            samples), ``"hooks"`` (fastest), ``"vmap"`` or ``"loop"``; they agree to float
            tolerance. Ignored by the other modes.

    Returns:
        ``{name: tensor shaped like the parameter}`` for every parameter that requires grad,
        float32, non-negative, on the computation device.

    Raises:
        UnsupportedModelError: ``implementation="vmap"`` on a model that torch.func cannot
            batch.
        ModelError: a model that has no trainable parameter, that normalises with the
            statistics of the batch (per-sample modes), or that fails on a single sample.
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


@flushing_denormals
def importance_sums(
    model: nn.Module,
    data: Data,
    *,
    mode: str = "fisher",
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | torch.device | None = None,
    progress: bool = False,
    implementation: str = "auto",
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
    work = model if model_device(model) == dev else copy.deepcopy(model).to(dev)
    names = trainable(work)
    if not names:
        raise ModelError("The model has no parameter that requires grad: nothing to weigh.")
    if mode in PER_SAMPLE_MODES:
        _check_per_sample(work)
    sums = {name: torch.zeros_like(p, dtype=torch.float32) for p, name in names.items()}
    count = 0
    batches = iter_batches(data, batch_size, shuffle=False, device=dev)
    bar = tqdm(batches, total=_num_batches(data, batch_size), desc=f"importance ({mode})",
               disable=not progress, file=sys.stderr, leave=False)
    impl = implementation
    with eval_mode(work), torch.enable_grad():
        for i, (x, y) in enumerate(bar):
            if mode in BATCH_RULES:
                add(sums, BATCH_RULES[mode](work, names, x, y))
                count += 1
                continue
            if mode == "saliency":
                add(sums, saliency_sum(work, names, x, y))
                count += len(y)
                continue
            objectives, how = per_sample_rule(mode, work, x)
            if i == 0:
                impl = choose(implementation, work, names, x, y, objectives[0], stacklevel=3)
            if impl == "hooks" and len(objectives) > 1:
                # the true Fisher's one term per class, from one forward pass
                add(sums, FISHER[impl](work, names, x, y, objectives, how))
            else:
                for objective in objectives:
                    add(sums, FISHER[impl](work, names, x, y, objective, how))
            count += len(y)
    return sums, count


def per_sample_gradients(
    model: nn.Module,
    data: Data,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | torch.device | None = None,
    implementation: str = "auto",
) -> Iterator[torch.Tensor]:
    """Yield, mini-batch by mini-batch, the per-sample gradients of the cross-entropy at the
    true label, flattened: a float32 ``(batch, P)`` tensor on the computation device whose
    columns are the trainable parameters in :meth:`~torch.nn.Module.named_parameters` order
    (each flattened row-major), as :func:`flatten` lays them out. Computed in eval mode, with
    the same implementations (and the same choice among them) as the per-sample modes."""
    for n, blocks in _per_sample_blocks(model, data, batch_size=batch_size, device=device,
                                        implementation=implementation):
        yield torch.cat([g.reshape(n, -1).float() for g in blocks], dim=1)


def per_sample_gradient_matrix(
    model: nn.Module,
    data: Data,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | torch.device | None = None,
    implementation: str = "auto",
) -> torch.Tensor:
    """All of :func:`per_sample_gradients` as one ``(N, P)`` float32 matrix, written in place
    block by block: no batch's flattened copy and no final concatenation, which for a large
    model (1,000 samples of a 1.7M-parameter MLP are 6.8 GB) cost more than the gradients."""
    out: torch.Tensor | None = None
    row = 0
    # batches no larger than the chunks in which the implementations make per-sample
    # gradients anyway: each is then written here once, never concatenated from chunks
    batch_size = min(batch_size, per_sample_chunk(trainable(model)))
    for n, blocks in _per_sample_blocks(model, data, batch_size=batch_size, device=device,
                                        implementation=implementation):
        if out is None:
            width = sum(g[0].numel() for g in blocks)
            out = torch.empty(data_size(data), width, dtype=torch.float32,
                              device=blocks[0].device)
        if row + n > len(out):  # a loader that yields more than its length says
            out = torch.cat([out, out.new_empty(row + n - len(out), out.shape[1])])
        col = 0
        for g in blocks:
            k = g[0].numel()
            out[row : row + n, col : col + k] = g.reshape(n, k)
            col += k
        row += n
    if out is None:
        raise DataError("No sample to take a per-sample gradient of: the data is empty.")
    return out if row == len(out) else out[:row]


def _per_sample_blocks(
    model: nn.Module,
    data: Data,
    *,
    batch_size: int,
    device: str | torch.device | None,
    implementation: str,
) -> Iterator[tuple[int, list[torch.Tensor]]]:
    """Per batch, its size and the per-sample gradients of each trainable parameter
    (``(batch, *shape)``, in :func:`flatten`'s order)."""
    _check_args("fisher", batch_size, implementation)
    dev = resolve_device(device) if device is not None else model_device(model)
    work = model if model_device(model) == dev else copy.deepcopy(model).to(dev)
    names = trainable(work)
    if not names:
        raise ModelError("The model has no parameter that requires grad: no gradient to take.")
    _check_per_sample(work)
    order = list(names.values())
    impl = implementation
    for i, (x, y) in enumerate(iter_batches(data, batch_size, shuffle=False, device=dev)):
        # modes are set per batch, never held across a yield (the caller's state in between)
        with eval_mode(work), torch.enable_grad():
            if i == 0:
                impl = choose(implementation, work, names, x, y, ce_sum, stacklevel=3)
            grads = PER_SAMPLE_GRADS[impl](work, names, x, y, ce_sum)
        yield len(y), [grads[k] for k in order]


def flatten(tensors: Importances, model: nn.Module) -> torch.Tensor:
    """Concatenate ``{name: tensor}`` into one vector in the order of ``model``'s trainable
    parameters (the layout of :func:`per_sample_gradients`)."""
    return torch.cat([tensors[k].reshape(-1).float() for k in trainable(model).values()])


def unflatten(vector: torch.Tensor, model: nn.Module) -> Importances:
    """The inverse of :func:`flatten`: ``{name: tensor shaped like the parameter}``."""
    out, start = {}, 0
    for p, name in trainable(model).items():
        out[name] = vector[start : start + p.numel()].view(p.shape)
        start += p.numel()
    if start != vector.numel():
        raise InvalidParameterError(
            f"A vector of {vector.numel()} entries does not match the model's {start} "
            "trainable parameter entries.")
    return out


def cached_importances(
    model: nn.Module,
    data: Data,
    *,
    mode: str = "fisher",
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | torch.device | None = None,
    progress: bool = False,
    implementation: str = "auto",
    cache: bool = True,
) -> Importances:
    """:func:`importances`, read from and written to the on-disk cache.

    The key is the model's weights (:func:`~unlearnkit._cache.hash_model`), the data's tensors,
    the mode and, for the batch modes only, the batch size; not the implementation (they
    agree). For the other modes, whose value does not depend on the order of the samples, the
    data key does not either, so that the same training set reached through another split hits
    the cache. Data that is not an :class:`~unlearnkit.data.containers.ArrayDataset` is never
    cached. Files are written atomically.
    """
    _check_args(mode, batch_size, implementation)
    key = importance_cache_key(model, data, mode=mode, batch_size=batch_size) if cache else None
    dev = resolve_device(device) if device is not None else model_device(model)
    if key is not None:
        hit = load_cached_importances(key, model, device=dev)
        if hit is not None:
            return hit
    with one_off(kept=key is not None):  # a search's later trials read it back
        out = importances(model, data, mode=mode, batch_size=batch_size, device=dev,
                          progress=progress, implementation=implementation)
    if key is not None:
        save_cached_importances(key, out)
    return out


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


def _num_batches(data: Data, batch_size: int) -> int | None:
    try:
        from torch.utils.data import DataLoader

        if isinstance(data, DataLoader):
            return len(data)
        return math.ceil(data_size(data) / batch_size)
    except TypeError:
        return None


def _check_per_sample(model: nn.Module) -> None:
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is None:
            raise ModelError(
                f"Module {name!r} ({type(m).__name__}) has no running statistics, so in eval "
                "mode it normalises with the statistics of the batch: per-sample gradients, "
                "hence the Fisher, are not defined. Use mode='batch-squared-grad', or give it "
                "track_running_stats=True.")
