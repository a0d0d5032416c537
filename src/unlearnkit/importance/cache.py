"""The on-disk cache of importances: safetensors files under ``cache_root() / "importance"``.

A file's key (:func:`importance_cache_key`) is the model's weights, the data, the mode and, for
the batch modes only, the batch size; never the implementation, since they all agree. For the
other modes, whose value depends neither on the order of the samples nor on their labels when
the mode does not read them, the data key does not either, so that the same training set
reached through another split hits the cache. Only an :class:`ArrayDataset` is hashed; its
input may be a tensor, a dict or a tuple of tensors of any dtype (token ids included).

:func:`cache_use` watches the lookups made inside a block (whether any hit) and can make
every read miss, so that a timed call pays the cold cost (the benchmark's default: a cache
hit would make a method's time depend on which runs came before it).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from unlearnkit._cache import cache_root, hash_model, hash_tensors
from unlearnkit.data.batches import Inputs, take, to_device
from unlearnkit.data.containers import ArrayDataset
from unlearnkit.data.splits import Data
from unlearnkit.importance._common import Importances, trainable
from unlearnkit.importance.modes import BATCH_MODES, DEFAULT_BATCH_SIZE, LABEL_FREE_MODES
from unlearnkit.models.checkpoint import atomic_write
from unlearnkit.training import model_device

CACHE_FORMAT = 1


@dataclass
class CacheUse:
    """What the importance cache did inside a :func:`cache_use` block: ``lookups`` (reads
    tried), ``hits`` (reads that returned stored importances), whether reads of what was
    stored before the block were allowed (``read``), and the keys stored inside it
    (``written``: those are read even with ``read=False``, so that a calibration's trials
    share one importance pass and still pay its cold cost once)."""

    read: bool = True
    lookups: int = 0
    hits: int = 0
    written: set[str] = field(default_factory=set)

    @property
    def hit(self) -> bool:
        """Whether any lookup in the block was served from the cache."""
        return self.hits > 0


_USES: contextvars.ContextVar[tuple[CacheUse, ...]] = contextvars.ContextVar(
    "unlearnkit_importance_cache_uses", default=())


@contextlib.contextmanager
def cache_use(*, read: bool = True) -> Iterator[CacheUse]:
    """Record the importance-cache lookups made inside the block; with ``read=False`` every
    read of an entry stored before the block misses (the importances are computed afresh, and
    still written), so that the block pays the cold cost whatever the cache holds; what the
    block itself stored is read back.

    >>> with cache_use(read=False) as use:
    ...     pass
    >>> use.hit, use.lookups
    (False, 0)
    """
    use = CacheUse(read=read)
    token = _USES.set((*_USES.get(), use))
    try:
        yield use
    finally:
        _USES.reset(token)


class SharedMemo(dict):  # type: ignore[type-arg]
    """The memo of :func:`shared_between_trials`: a dict, and ``seconds``, the time spent
    computing what the search's later trials read back rather than compute (:func:`one_off`):
    what a trial will cost once the first has paid for it is its time less that."""

    seconds: float = 0.0


_SHARED: contextvars.ContextVar[SharedMemo | None] = contextvars.ContextVar(
    "unlearnkit_shared_between_trials", default=None)


@contextlib.contextmanager
def shared_between_trials() -> Iterator[SharedMemo]:
    """Inside the block (a calibration's search), :func:`shared` is a dict in memory where a
    method keeps what it computes from the original model and the data alone, whatever its
    searched values (influence's WoodFisher gradients and their Gram matrix), so that one
    search computes it once, like the importances the on-disk cache shares. Emptied at the
    block's end; outside any block :func:`shared` is ``None`` and nothing is kept.

    >>> with shared_between_trials() as memo:
    ...     shared() is memo
    True
    >>> shared() is None
    True
    """
    memo = SharedMemo()
    token = _SHARED.set(memo)
    try:
        yield memo
    finally:
        _SHARED.reset(token)
        memo.clear()


@contextlib.contextmanager
def one_off(kept: bool = True) -> Iterator[None]:
    """Count the block's wall-clock in the enclosing search's ``seconds``
    (:class:`SharedMemo`): a computation whose result is kept (``kept``: in :func:`shared`'s
    memo or the on-disk cache) for the search's later trials. Nothing outside a search."""
    start = time.perf_counter()
    try:
        yield
    finally:
        memo = _SHARED.get()
        if memo is not None and kept:
            memo.seconds += time.perf_counter() - start


def shared() -> SharedMemo | None:
    """The memo of the enclosing :func:`shared_between_trials` block, or ``None``. A key must
    name everything the value depends on: the model's weights (:func:`hash_model`), the data
    (the objects themselves live as long as the search: ``id`` is enough) and every
    hyper-parameter that changes it."""
    return _SHARED.get()


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
        "format": CACHE_FORMAT,
        "model": hash_model(model),
        "data": hash_data(data, ordered=mode in BATCH_MODES),
        "mode": mode,
        "batch_size": batch_size if mode in BATCH_MODES else None,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def cache_path(key: str) -> Path:
    return cache_root() / "importance" / f"{key}.safetensors"


def load_cached_importances(
    key: str, model: nn.Module, *, device: torch.device | None = None
) -> Importances | None:
    """The importances stored under ``key``, or ``None`` when absent, unreadable, or not
    matching ``model``'s trainable parameters (the caller then recomputes and overwrites), or
    when an enclosing :func:`cache_use` forbids reads."""
    uses = _USES.get()
    for use in uses:
        use.lookups += 1
    if any(not use.read and key not in use.written for use in uses):
        return None
    out = _load(key, model, device=device)
    if out is not None:
        for use in uses:
            use.hits += 1
    return out


def _load(key: str, model: nn.Module, *, device: torch.device | None) -> Importances | None:
    path = cache_path(key)
    if not path.is_file():
        return None
    expected = {name: p.shape for p, name in trainable(model).items()}
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
    for use in _USES.get():
        use.written.add(key)
    return atomic_write(cache_path(key), lambda tmp: save_file(tensors, tmp))


# ---------------------------------------------------------------------------- data hashing
def _named_tensors(x: Inputs) -> tuple[str, list[tuple[str, torch.Tensor]]]:
    """The input's form and its tensors, named (a dict's sorted by key), on the CPU."""
    if isinstance(x, torch.Tensor):
        form, items = "tensor", [("", x)]
    elif isinstance(x, Mapping):
        form, items = "dict", [(str(k), x[k]) for k in sorted(x)]
    else:
        form, items = "tuple", [(str(i), t) for i, t in enumerate(x)]
    return form, [(k, t.detach().cpu().contiguous()) for k, t in items
                  if isinstance(t, torch.Tensor)]


def _hash_ordered(x: Inputs, y: torch.Tensor) -> str:
    form, items = _named_tensors(x)
    if form == "tensor":  # the key of a tensor input, as before dict inputs existed
        return hash_tensors(items[0][1], y)
    h = hashlib.sha256(form.encode())
    for key, t in items:
        h.update(key.encode())
        hash_tensors(t, h=h)
    return hash_tensors(y, h=h)


def _row_bytes(t: torch.Tensor) -> np.ndarray:
    """``(N, bytes)``: each sample's bytes (any dtype)."""
    flat = t.reshape(len(t), -1)
    return flat.view(torch.uint8).numpy() if flat.shape[1] else np.zeros((len(t), 0), np.uint8)


def hash_data(data: ArrayDataset, *, ordered: bool) -> str:
    """SHA-256 of the samples and labels; with ``ordered=False``, of their multiset."""
    x, y = data.x, data.y.detach().cpu().contiguous()
    if ordered:
        return _hash_ordered(x, y)
    _, items = _named_tensors(x)
    rows = np.concatenate([_row_bytes(t) for _, t in items]
                          + [y.reshape(-1, 1).view(torch.uint8).numpy()], axis=1)
    rows = np.ascontiguousarray(rows)
    keys = rows.view(np.dtype((np.void, rows.shape[1]))).ravel()
    order = torch.from_numpy(np.argsort(keys, kind="stable"))
    return "multiset:" + _hash_ordered(take(to_device(x, "cpu"), order), y[order])

