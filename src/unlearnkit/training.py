"""The one training and evaluation loop.

Original training, retraining and every fine-tuning phase of every method go through
:func:`fit`; every accuracy and every prediction goes through :func:`predict`.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import functools
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from unlearnkit.data.batches import Inputs, loader_batches, own_batch_size, take, to_device
from unlearnkit.data.containers import ArrayDataset
from unlearnkit.data.splits import Data
from unlearnkit.exceptions import InvalidParameterError, ModelError, short_repr
from unlearnkit.models.adapters import forward

__all__ = [
    "MAX_COUNT",
    "LossFn",
    "Recipe",
    "TimeLimitReached",
    "accuracy",
    "eval_mode",
    "fit",
    "flush_denormals",
    "iter_batches",
    "make_optimizer",
    "predict",
    "resolve_device",
    "seeded",
    "set_train",
    "time_limit",
    "train_mode",
    "warm_up",
    "watch_epochs",
    "watcher_seconds",
]

#: ``loss_fn(model, x, y) -> scalar loss`` for one mini-batch.
LossFn = Callable[[nn.Module, Any, torch.Tensor], torch.Tensor]

#: ``watcher(phase, epoch, model)``: see :func:`watch_epochs`.
EpochWatcher = Callable[[str, int, nn.Module], None]
_WATCHERS: contextvars.ContextVar[tuple[EpochWatcher, ...]] = contextvars.ContextVar(
    "unlearnkit_epoch_watchers", default=())
#: wall-clock and CPU seconds spent inside epoch watchers by this process (watcher_seconds)
_WATCHED = [0.0, 0.0]

#: The largest value an integer count (epochs, batch size, steps, samples) may take, in a
#: :class:`Recipe` and in every method's int hyper-parameter without its own upper bound: a
#: billion epochs or steps never ends, and a larger int would overflow torch's C integers.
MAX_COUNT = 10**9

_OPTIMIZERS = ("sgd", "adam", "adamw")
_SCHEDULES = ("constant", "cosine", "step")
#: Data augmentation of a :class:`Recipe`: ``"flip-crop"`` is the standard CIFAR one (a random
#: horizontal flip, then a random crop of the image zero-padded by 4 pixels a side).
_AUGMENTS = ("none", "flip-crop")


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """How to train: optimiser, learning rate and its schedule, regularisation, batches, epochs.

    ``schedule="step"`` multiplies the learning rate by 0.1 at 50 % and 75 % of the epochs.
    ``augment="flip-crop"`` flips each image batch at random and crops it from a 4-pixel
    zero padding (images shaped (N, C, H, W) only), seeded like the shuffling.
    ``epochs`` and ``batch_size`` are at most :data:`MAX_COUNT`; floats must be finite.
    """

    epochs: int = 30
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    schedule: str = "cosine"
    augment: str = "none"

    def __post_init__(self) -> None:
        _check_int("epochs", self.epochs, 0)
        _check_int("batch_size", self.batch_size, 1)
        _check_float("lr", self.lr, 0.0, strict_low=True)
        _check_float("momentum", self.momentum, 0.0, high=1.0)
        _check_float("weight_decay", self.weight_decay, 0.0)
        if self.optimizer not in _OPTIMIZERS:
            raise InvalidParameterError(
                f"The 'optimizer' parameter must be one of {_OPTIMIZERS}. Got {self.optimizer!r}"
                " instead."
            )
        if self.schedule not in _SCHEDULES:
            raise InvalidParameterError(
                f"The 'schedule' parameter must be one of {_SCHEDULES}. Got {self.schedule!r}"
                " instead."
            )
        if self.augment not in _AUGMENTS:
            raise InvalidParameterError(
                f"The 'augment' parameter must be one of {_AUGMENTS}. Got "
                f"{short_repr(self.augment)} instead."
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InvalidParameterError(
                f"Unknown recipe fields {sorted(unknown)}; valid fields: {sorted(known)}."
            )
        return cls(**d)

    def replace(self, **changes: Any) -> Recipe:
        return replace(self, **changes)


def _check_int(name: str, value: object, low: int, high: int = MAX_COUNT) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidParameterError(
            f"The {name!r} parameter must be an int in the range [{low}, {high}]. Got "
            f"{short_repr(value)} instead."
        )


def _check_float(
    name: str, value: object, low: float, *, high: float = math.inf, strict_low: bool = False
) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if strict_low else value >= low) and value <= high
    if not ok:
        lo = "(" if strict_low else "["
        raise InvalidParameterError(
            f"The {name!r} parameter must be a float in the range {lo}{low}, {high}]. Got "
            f"{value!r} instead."
        )


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The given device, or the best available one: CUDA, then Apple MPS, then the CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


_WARM: set[str] = set()


def warm_up(device: str | torch.device | None = None, *, model: nn.Module | None = None,
            data: Data | None = None) -> None:
    """Pay torch's one-time costs before anything is timed (once per device and process).

    The first optimiser built in a process imports ``torch._dynamo`` (seconds on a CPU), and the
    first use of a GPU creates its context and libraries: both would otherwise be counted in the
    wall-clock of the first method (or the first training) that a process runs.

    With ``model`` and ``data``, also a forward and backward pass and a step of SGD and of
    Adam on a copy of ``model``, on a few samples of ``data`` (the first pass of a process
    through an architecture selects kernels and grows the allocator). The model and the
    random state are left as they were; a model this cannot warm is left cold, silently.
    """
    dev = resolve_device(device)
    if str(dev) not in _WARM:
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        if dev.type != "cpu":
            x = torch.ones(8, 8, device=dev, requires_grad=True)
            (x @ x).sum().backward()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
        _WARM.add(str(dev))
    if model is not None and data is not None:
        _warm_model(model, data, dev)


def _warm_model(model: nn.Module, data: Data, device: torch.device) -> None:
    devices = [device.index or 0] if device.type == "cuda" else []
    try:
        x, y = next(iter_batches(data, 8, shuffle=False, device=device))
        work = copy.deepcopy(model).to(device)
        with torch.random.fork_rng(devices=devices):
            params = [p for p in work.parameters() if p.requires_grad]
            for opt in (fused(torch.optim.SGD, params, lr=0.0),
                        fused(torch.optim.Adam, params, lr=0.0)):
                set_train(work)
                opt.zero_grad(set_to_none=True)
                cross_entropy(work, x, y).backward()
                opt.step()
            with torch.no_grad(), eval_mode(work):
                forward(work, x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except Exception:  # warming is best effort: the timed call reports its own errors
        return


def _flushing_denormals() -> bool:
    """Whether this thread flushes denormal floats to zero now (there is no getter: a denormal
    doubled stays one unless it is flushed)."""
    return float((torch.tensor([1e-39], dtype=torch.float32) * 2.0).item()) == 0.0


@contextlib.contextmanager
def flush_denormals() -> Iterator[None]:
    """Flush denormal floats (below 1.2e-38 in float32) to zero on the CPU inside the block,
    in this thread, and give the caller's mode back after.

    On x86 an arithmetic operation on a denormal takes up to a hundred times longer, and
    training makes them: fine-tuning the CIFAR-10 MLP with Adam and weight decay left 110,000
    weights denormal by its third epoch, which took 96 s against 5 s for the first, and made
    every later forward pass 110 times slower (``benchmarks/denormals.py``). Flushed, they are
    zeros, as their values all but are. Every training loop, prediction, importance pass and
    method of unlearnkit runs inside one (a no-op where the CPU cannot flush, or where the
    caller already does: ``torch.set_flush_denormal(True)``). Only the calling thread's mode is
    set: with several torch threads the others keep theirs."""
    if _flushing_denormals() or not torch.set_flush_denormal(True):
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def flushing_denormals(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate ``fn`` to run inside :func:`flush_denormals`."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with flush_denormals():
            return fn(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Run a block under ``torch.manual_seed(seed)``, restoring the caller's RNG state after."""
    devices = [device.index or 0] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def _mode(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    flags = [(m, m.training) for m in model.modules()]
    if training:
        set_train(model)
    else:
        model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


def eval_mode(model: nn.Module) -> contextlib.AbstractContextManager[nn.Module]:
    """Put ``model`` in eval mode for a block, then restore each module's own flag."""
    return _mode(model, False)


def train_mode(model: nn.Module) -> contextlib.AbstractContextManager[nn.Module]:
    """Put ``model`` in train mode for a block (:func:`set_train`: frozen BatchNorm layers stay
    in eval mode), then restore each module's own flag."""
    return _mode(model, True)


def iter_batches(
    data: Data,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    device: torch.device | None = None,
) -> Iterator[tuple[Inputs, torch.Tensor]]:
    """Yield ``(inputs, y)`` mini-batches on ``device``.

    An :class:`ArrayDataset` is sliced directly. A DataLoader is re-batched with
    ``batch_size`` and the seeded order (see :func:`~unlearnkit.data.batches.loader_batches`);
    any other torch Dataset is wrapped in a DataLoader. Batches are read by the default rule
    (``(x, y)``, ``{"x", "y"}``, Hugging Face's ``labels``) or by the rule of a
    :class:`~unlearnkit.data.batches.Batches`. Inputs keep their dtype.
    """
    if isinstance(data, ArrayDataset):
        n = len(data)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        x, y = data.x, data.y
        if device is not None and device.type != "cpu" and y.device != device:
            x, y = to_device(x, device), y.to(device)
            order = order.to(device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            yield take(x, idx), y[idx]
        return
    for x, y in loader_batches(data, batch_size, shuffle=shuffle, generator=generator):
        yield to_device(x, device), (y.to(device) if device is not None else y)


def data_size(data: Data) -> int:
    """Number of samples in ``data`` (a DataLoader counts its dataset's samples)."""
    if isinstance(data, DataLoader):
        return len(data.dataset)  # type: ignore[arg-type]
    return len(data)  # type: ignore[arg-type]


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def fused(cls: type[torch.optim.Optimizer], params: list[nn.Parameter],
          **kwargs: Any) -> torch.optim.Optimizer:
    """``cls(params, fused=True, **kwargs)``: the step in one kernel rather than a pass over
    every parameter per operation. On a CPU the step is memory-bound, and fused makes it about
    6x faster for SGD and Adam (benchmarks/README.md, "Fused optimiser steps"); the update is
    the same rule. Where fused kernels do not exist (a device or a dtype without them), the
    default implementation."""
    params = list(params)
    if (params and all(p.is_floating_point() for p in params)
            and len({p.device.type for p in params}) == 1
            and params[0].device.type in _FUSED_DEVICES):
        with contextlib.suppress(RuntimeError, ValueError, TypeError):
            return cls(params, fused=True, **kwargs)
    return cls(params, **kwargs)


#: The devices with fused SGD and Adam(W) kernels (torch checks floating dtypes only at the
#: first step, so :func:`fused` checks them itself).
_FUSED_DEVICES = ("cpu", "cuda", "mps", "xpu")


def make_optimizer(params: list[nn.Parameter], recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return fused(torch.optim.SGD, params, lr=recipe.lr, momentum=recipe.momentum,
                     weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adam":
        return fused(torch.optim.Adam, params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return fused(torch.optim.AdamW, params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def flip_crop(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """A random horizontal flip and a random ``pad``-pixel shifted crop of each image of the
    batch ``x`` (N, C, H, W), drawn from ``generator`` (on the CPU) and applied on ``x``'s
    device; the uncovered border is zero."""
    n, c, h, w = x.shape
    flip = torch.rand(n, generator=generator) < 0.5
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dev = x.device
    flip, dy, dx = flip.to(dev), dy.to(dev), dx.to(dev)
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    padded = nn.functional.pad(x, (pad, pad, pad, pad))
    rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, None, :]
    return padded[torch.arange(n, device=dev)[:, None, None, None],
                  torch.arange(c, device=dev)[None, :, None, None], rows, cols]


def _lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))
    if schedule == "step":
        return 0.1 ** (int(epoch >= 0.5 * epochs) + int(epoch >= 0.75 * epochs))
    return 1.0


@contextlib.contextmanager
def watch_epochs(watcher: EpochWatcher) -> Iterator[None]:
    """Call ``watcher(phase, epoch, model)`` during every :func:`fit` inside the block: with
    ``epoch=0`` before the first epoch, then after each epoch (1-based). ``phase`` is the fit's
    ``desc`` (a method's phases are named, e.g. ``"teacher: forget"``).

    This is how the benchmark records accuracy per epoch without any method knowing. The time
    spent in watchers is counted apart (:func:`watcher_seconds`) and left out of the
    ``seconds`` that :func:`unlearnkit.unlearn` records. The watcher must leave the model as
    it found it: evaluate under :func:`eval_mode` and ``torch.no_grad()`` (as :func:`accuracy`
    does), and draw no random numbers, so that the training run is bit-identical with and
    without a watcher.

    >>> seen = []
    >>> with watch_epochs(lambda phase, epoch, model: seen.append((phase, epoch))):
    ...     _ = fit(nn.Linear(2, 2), ArrayDataset(torch.zeros(4, 2), torch.zeros(4).long()),
    ...             Recipe(epochs=2), desc="demo")
    >>> seen
    [('demo', 0), ('demo', 1), ('demo', 2)]
    """
    token = _WATCHERS.set((*_WATCHERS.get(), watcher))
    try:
        yield
    finally:
        _WATCHERS.reset(token)


class TimeLimitReached(Exception):
    """Raised by :func:`fit` inside :func:`time_limit` after the first optimiser step that ends
    past the limit. Not an :class:`~unlearnkit.exceptions.UnlearnkitError`: the caller that
    set the limit catches it (calibration, whose trials must not run past their share of the
    budget by a whole epoch)."""


_LIMIT: contextvars.ContextVar[float] = contextvars.ContextVar("unlearnkit_time_limit",
                                                               default=math.inf)


@contextlib.contextmanager
def time_limit(until: float) -> Iterator[None]:
    """Inside the block, :func:`fit` stops with :class:`TimeLimitReached` after the first
    optimiser step that ends past ``until`` (a :func:`time.perf_counter` reading); nested
    limits: the earliest holds."""
    token = _LIMIT.set(min(_LIMIT.get(), until))
    try:
        yield
    finally:
        _LIMIT.reset(token)


def watcher_seconds(*, cpu: bool = False) -> float:
    """Wall-clock seconds (``cpu=True``: the process's CPU seconds) this process has spent so
    far inside the watchers of :func:`watch_epochs` (a running total: take the difference
    around a call).

    The watchers are instrumentation, not the work being timed: ``UnlearningMethod.unlearn``
    subtracts the time spent in them from the ``seconds`` it records, so that recording
    curves does not make a method look slower. On a GPU the queued work is waited for before
    the watchers' clock starts, so that training kernels are not counted as watching.
    """
    return _WATCHED[1 if cpu else 0]


def epoch_end(phase: str, epoch: int, model: nn.Module) -> None:
    """Tell the watchers of :func:`watch_epochs` that ``epoch`` of ``phase`` ended (``epoch=0``:
    before the first). :func:`fit` does this itself; a method with its own epoch loop calls it,
    so that curves and calibration's pruning see its epochs too."""
    _notify(phase, epoch, model)


def _notify(phase: str, epoch: int, model: nn.Module) -> None:
    watchers = _WATCHERS.get()
    if not watchers:
        return
    dev = model_device(model)
    if dev.type == "cuda":  # the training's queued kernels are not the watchers' time
        torch.cuda.synchronize(dev)
    start, cpu = time.perf_counter(), time.process_time()
    try:
        for watcher in watchers:
            watcher(phase, epoch, model)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
    finally:
        _WATCHED[0] += time.perf_counter() - start
        _WATCHED[1] += time.process_time() - cpu


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The default loss: mean cross-entropy of the model's logits on ``x`` against ``y``."""
    return nn.functional.cross_entropy(forward(model, x), y)


def frozen_norms(model: nn.Module) -> list[nn.Module]:
    """The BatchNorm layers whose affine parameters are all frozen (``requires_grad=False``):
    :func:`fit` keeps them in eval mode, so that a frozen backbone's running statistics do not
    drift while the rest of the model trains."""
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and any(True for _ in m.parameters(recurse=False))
            and not any(p.requires_grad for p in m.parameters(recurse=False))]


def set_train(model: nn.Module) -> nn.Module:
    """``model.train()``, except for the BatchNorm layers whose parameters are all frozen
    (:func:`frozen_norms`): a frozen layer's running statistics stay frozen too."""
    model.train()
    for m in frozen_norms(model):
        m.training = False
    return model


@flushing_denormals
def fit(
    model: nn.Module,
    data: Data,
    recipe: Recipe,
    *,
    seed: int = 0,
    device: str | torch.device | None = None,
    loss_fn: LossFn | None = None,
    params: list[nn.Parameter] | None = None,
    progress: bool = False,
    desc: str = "train",
    on_epoch: Callable[[int, nn.Module], None] | None = None,
) -> list[float]:
    """Train ``model`` in place on ``data`` with ``recipe``; return the mean loss per epoch.

    Args:
        model: the network; it is moved to ``device`` and left in train mode's prior state.
            It trains in train mode, except BatchNorm layers whose parameters are all frozen
            (:func:`frozen_norms`), whose running statistics stay as they are.
        data: an ArrayDataset, a torch Dataset or a DataLoader yielding ``(x, y)``.
        recipe: optimiser, learning rate, schedule, batch size, epochs.
        seed: seeds the shuffling and any randomness in the model (dropout); on the CPU the
            same seed gives bit-identical weights. The caller's global RNG is left untouched.
        loss_fn: ``loss_fn(model, x, y)``; defaults to cross-entropy.
        params: train only these parameters (default: all that require grad).
        progress: show a progress bar over epochs on stderr.
        on_epoch: called as ``on_epoch(epoch, model)`` after each epoch (1-based), e.g. to
            record accuracy per epoch.
    """
    dev = resolve_device(device) if device is not None else model_device(model)
    model.to(dev)
    loss_fn = loss_fn or cross_entropy
    trainable = params if params is not None else [p for p in model.parameters() if p.requires_grad]
    history: list[float] = []
    if recipe.epochs == 0 or not trainable:
        return history
    if data_size(data) == 0:
        raise InvalidParameterError(f"Cannot {desc}: the training data is empty.")
    optimizer = make_optimizer(trainable, recipe)
    flags = [(m, m.training) for m in model.modules()]
    set_train(model)
    try:
        with seeded(seed, dev):
            gen = torch.Generator().manual_seed(seed)
            bar = tqdm(
                range(recipe.epochs), desc=desc, disable=not progress, file=sys.stderr,
                leave=False,
            )
            _notify(desc, 0, model)
            limit = _LIMIT.get()
            for epoch in bar:
                for group in optimizer.param_groups:
                    group["lr"] = recipe.lr * _lr_factor(recipe.schedule, epoch, recipe.epochs)
                total, count = 0.0, 0
                for x, y in iter_batches(
                    data, recipe.batch_size, shuffle=True, generator=gen, device=dev
                ):
                    if recipe.augment == "flip-crop":
                        x = _augmentable(x, desc)
                        x = flip_crop(x, gen)
                    optimizer.zero_grad(set_to_none=True)
                    loss = loss_fn(model, x, y)
                    if not torch.isfinite(loss):
                        raise ModelError(
                            f"The loss became {loss.item()} during {desc!r} at epoch {epoch + 1}:"
                            " lower the learning rate."
                        )
                    loss.backward()
                    optimizer.step()
                    if limit < math.inf and time.perf_counter() > limit:
                        raise TimeLimitReached
                    total += float(loss.detach()) * len(y)
                    count += len(y)
                history.append(total / max(count, 1))
                bar.set_postfix(loss=f"{history[-1]:.4f}")
                if on_epoch is not None:
                    on_epoch(epoch + 1, model)
                _notify(desc, epoch + 1, model)
    finally:
        for m, flag in flags:
            m.training = flag
    return history


def _augmentable(x: Any, desc: str) -> torch.Tensor:
    if not (isinstance(x, torch.Tensor) and x.dim() == 4 and x.is_floating_point()):
        what = (f"a {x.dtype} tensor shaped {tuple(x.shape)}" if isinstance(x, torch.Tensor)
                else type(x).__name__)
        raise InvalidParameterError(
            f"Cannot {desc} with augment='flip-crop': it needs floating-point image batches "
            f"shaped (N, C, H, W); got {what}. Use augment='none'.")
    return x


@flushing_denormals
@torch.no_grad()
def predict(
    model: nn.Module,
    data: Data,
    *,
    device: str | torch.device | None = None,
    batch_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32, on the CPU) and labels of ``model`` over ``data``, in eval mode, in
    the data's order (a shuffling DataLoader is read in order, so that two models' outputs
    line up sample by sample).

    ``batch_size`` defaults to a DataLoader's own batch size (the user's choice for their
    memory), else 1024.
    """
    dev = resolve_device(device) if device is not None else model_device(model)
    if batch_size is None:
        batch_size = own_batch_size(data) or 1024
    outs, labels = [], []
    with eval_mode(model):
        for x, y in iter_batches(data, batch_size, shuffle=False, device=dev):
            outs.append(forward(model, x).float().cpu())
            labels.append(y.cpu())
    if not outs:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.int64)
    return torch.cat(outs), torch.cat(labels)


def accuracy(model: nn.Module, data: Data, *, device: str | torch.device | None = None) -> float:
    """Fraction of ``data`` that ``model`` classifies correctly (``nan`` for empty data)."""
    logits, labels = predict(model, data, device=device)
    if len(labels) == 0:
        return float("nan")
    return float((logits.argmax(1) == labels).float().mean())
