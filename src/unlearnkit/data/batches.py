"""Batches as every method sees them: a model input and an integer target.

A user's DataLoader may yield ``(x, y)`` tuples, ``{"x": ..., "y": ...}`` dicts, Hugging Face's
``{"input_ids": ..., "attention_mask": ..., "labels": ...}``, ``(id, x, y)`` tuples or anything
else. :class:`Batches` says which part is the input and which the target; :func:`unpack`
applies that rule (or the default one) to one batch.

The input of a batch (:data:`Inputs`) is what the model is called with:

* a tensor ``x``: ``model(x)``;
* a dict of tensors: ``model(**x)`` (Hugging Face models);
* a tuple of tensors: ``model(*x)``.

Every tensor of an input has the samples along its first dimension, and the helpers below
(:func:`num_samples`, :func:`take`, :func:`concat`, :func:`to_device`) treat the three forms
alike, so that code which slices, concatenates or moves inputs never needs to know which it
holds. Integer inputs (token ids) keep their dtype everywhere.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Union

import torch
from torch.utils.data import (
    DataLoader,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    default_collate,
)
from torch.utils.data import Dataset as TorchDataset

from unlearnkit.exceptions import DataError, InvalidParameterError

__all__ = [
    "Batches",
    "Inputs",
    "concat",
    "default_unpack",
    "first_tensor",
    "is_floating",
    "loader_batches",
    "num_samples",
    "own_batch_size",
    "samples",
    "take",
    "to_device",
    "unpack",
]

#: What a model is called with: a tensor, a dict of tensors (keyword arguments) or a tuple
#: of tensors (positional arguments), each with the samples along the first dimension.
Inputs = Union[torch.Tensor, Mapping[str, torch.Tensor], tuple[torch.Tensor, ...]]  # noqa: UP007

#: ``unpack(batch) -> (inputs, target)``.
Unpack = Callable[[Any], tuple[Any, Any]]

#: Keys that the default rule reads as the target of a dict batch, in this order.
TARGET_KEYS = ("y", "labels", "label", "target", "targets")
#: Keys that the default rule reads as the whole input of a dict batch, in this order; when
#: none is present, every key but the target is the input (Hugging Face's convention).
INPUT_KEYS = ("x", "image", "pixel_values")


# ------------------------------------------------------------------- inputs as one value
def _map(x: Inputs, fn: Callable[[torch.Tensor], torch.Tensor]) -> Inputs:
    if isinstance(x, torch.Tensor):
        return fn(x)
    if isinstance(x, Mapping):
        return {k: fn(v) if isinstance(v, torch.Tensor) else v for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return tuple(fn(v) if isinstance(v, torch.Tensor) else v for v in x)
    raise DataError(
        f"A model input must be a tensor, a dict of tensors or a tuple of tensors; got "
        f"{type(x).__name__}."
    )


def _tensors(x: Inputs) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    values = x.values() if isinstance(x, Mapping) else x
    return [v for v in values if isinstance(v, torch.Tensor)]


def first_tensor(x: Inputs) -> torch.Tensor:
    """The input's tensor, or the first tensor of a dict or tuple input."""
    ts = _tensors(x)
    if not ts:
        raise DataError("A model input holds no tensor.")
    return ts[0]


def num_samples(x: Inputs) -> int:
    """The number of samples in an input (its first tensor's first dimension)."""
    t = first_tensor(x)
    return int(t.shape[0]) if t.ndim else 1


def take(x: Inputs, index: Any) -> Inputs:
    """The samples of ``x`` at ``index`` (an int, a slice, an index tensor or a mask)."""
    return _map(x, lambda t: t[index])


def concat(parts: Sequence[Inputs]) -> Inputs:
    """Concatenate inputs of one form along the sample dimension."""
    if not parts:
        raise DataError("Nothing to concatenate: no input was given.")
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat([_as_tensor(p) for p in parts])
    if isinstance(first, Mapping):
        keys = list(first)
        for p in parts:
            if not isinstance(p, Mapping) or list(p) != keys:
                raise DataError("Cannot concatenate inputs with different keys.")
        return {k: torch.cat([p[k] for p in parts]) for k in keys}
    return tuple(torch.cat([p[i] for p in parts]) for i in range(len(first)))


def _as_tensor(p: Inputs) -> torch.Tensor:
    if not isinstance(p, torch.Tensor):
        raise DataError("Cannot concatenate a tensor input with a dict or tuple input.")
    return p


def to_device(x: Inputs, device: torch.device | str | None) -> Inputs:
    """``x`` with every tensor on ``device`` (unchanged when ``device`` is None)."""
    if device is None:
        return x
    return _map(x, lambda t: t.to(device))


def is_floating(x: Inputs) -> bool:
    """Whether every tensor of the input is floating-point (images, features), as opposed to
    integer token ids or masks."""
    return all(torch.is_floating_point(t) for t in _tensors(x))


def describe(x: Inputs) -> str:
    """A short description of an input's form, for error messages."""
    if isinstance(x, torch.Tensor):
        return f"a {str(x.dtype).replace('torch.', '')} tensor shaped {tuple(x.shape)}"
    if isinstance(x, Mapping):
        return f"a dict with keys {sorted(x)}"
    return f"a tuple of {len(x)} tensors"


# ------------------------------------------------------------------------ unpacking
def default_unpack(batch: Any) -> tuple[Inputs, torch.Tensor]:
    """The default rule: ``(x, y)`` tuples; dicts with ``"x"``/``"y"``; Hugging Face dicts,
    whose target is ``"labels"`` and whose other keys are the model's keyword arguments."""
    if isinstance(batch, Mapping):
        target = next((k for k in TARGET_KEYS if k in batch), None)
        if target is None:
            raise DataError(
                f"A dict batch with keys {sorted(batch)} has no target under any of "
                f"{list(TARGET_KEYS)}. Say which key is the target (and which the input): "
                "uk.Batches(loader, input=..., target='...')."
            )
        key = next((k for k in INPUT_KEYS if k in batch), None)
        if key is not None:
            return batch[key], batch[target]
        rest = {k: v for k, v in batch.items() if k != target}
        if not rest:
            raise DataError(f"A dict batch with keys {sorted(batch)} holds no input.")
        return rest, batch[target]
    if isinstance(batch, (tuple, list)):
        if len(batch) == 2:
            return batch[0], batch[1]
        raise DataError(
            f"A batch is a sequence of {len(batch)} items; the default reads only (input, "
            "target) pairs. Say which positions are the input and the target, e.g. "
            "uk.Batches(loader, input=1, target=2) for (id, x, y) batches."
        )
    raise DataError(
        f"A batch is {type(batch).__name__}; it must be an (input, target) pair or a dict. Say "
        "how to read it: uk.Batches(loader, unpack=lambda batch: (inputs, target))."
    )


def _field_getter(spec: Any, what: str) -> Callable[[Any], Any]:
    def pick(batch: Any, key: Any) -> Any:
        try:
            return batch[key]
        except (KeyError, IndexError, TypeError):
            form = (f"keys {sorted(batch)}" if isinstance(batch, Mapping)
                    else f"{len(batch)} items" if isinstance(batch, (tuple, list))
                    else type(batch).__name__)
            raise DataError(f"The batch has no {what} {key!r}: it has {form}.") from None

    if isinstance(spec, (str, int)) and not isinstance(spec, bool):
        return lambda batch: pick(batch, spec)
    if isinstance(spec, Sequence) and spec and all(
            isinstance(k, str) for k in spec):
        return lambda batch: {k: pick(batch, k) for k in spec}
    if isinstance(spec, Sequence) and spec and all(
            isinstance(k, int) and not isinstance(k, bool) for k in spec):
        return lambda batch: tuple(pick(batch, k) for k in spec)
    raise InvalidParameterError(
        f"The {what!r} parameter of Batches must be a key (str), a position (int) or a "
        f"non-empty list of either. Got {spec!r} instead."
    )


class Batches(TorchDataset):
    """A DataLoader (or a Dataset) with the rule that reads its batches.

    Args:
        data: a DataLoader, or a map-style Dataset whose items are collated by torch's
            default collate function.
        input: which part of a batch is the model's input: a key of a dict batch, a position
            in a tuple batch, or a list of keys (the model is called with those keyword
            arguments) or positions (positional arguments).
        target: the key or position of the integer class labels.
        unpack: instead of ``input`` and ``target``, a function ``batch -> (input, target)``.

    Without any of them the default rule applies (:func:`default_unpack`).

    >>> import torch
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> ids, x, y = torch.arange(4), torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    >>> data = Batches(DataLoader(TensorDataset(ids, x, y), batch_size=2), input=1, target=2)
    >>> inputs, target = next(loader_batches(data, 4, shuffle=False))
    >>> torch.equal(inputs, x), target.tolist()
    (True, [0, 1, 0, 1])
    """

    def __init__(self, data: DataLoader | TorchDataset, *, input: Any = None,
                 target: Any = None, unpack: Unpack | None = None) -> None:
        if isinstance(data, Batches):
            raise InvalidParameterError("The data is already a Batches; do not wrap it twice.")
        if not isinstance(data, (DataLoader, TorchDataset)):
            raise InvalidParameterError(
                f"Batches needs a torch DataLoader or Dataset. Got {type(data).__name__}."
            )
        if unpack is not None and (input is not None or target is not None):
            raise InvalidParameterError("Give either 'unpack' or 'input' and 'target', not both.")
        if unpack is not None and not callable(unpack):
            raise InvalidParameterError(
                f"The 'unpack' parameter must be callable. Got {type(unpack).__name__}.")
        if (input is None) != (target is None):
            raise InvalidParameterError("Give both 'input' and 'target' (or 'unpack').")
        self.data = data
        self.input = input
        self.target = target
        if unpack is not None:
            self._unpack: Unpack = unpack
        elif input is not None:
            get_x, get_y = _field_getter(input, "input"), _field_getter(target, "target")
            self._unpack = lambda batch: (get_x(batch), get_y(batch))
        else:
            self._unpack = default_unpack

    def unpack(self, batch: Any) -> tuple[Inputs, torch.Tensor]:
        return self._unpack(batch)

    def __len__(self) -> int:
        ds = self.data.dataset if isinstance(self.data, DataLoader) else self.data
        return len(ds)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        ds = self.data.dataset if isinstance(self.data, DataLoader) else self.data
        return ds[index]

    def __repr__(self) -> str:
        how = (f"input={self.input!r}, target={self.target!r}" if self.input is not None
               else "unpack=default" if self._unpack is default_unpack else "unpack=<function>")
        return f"Batches({type(self.data).__name__}, n={len(self)}, {how})"


def unpack(batch: Any, rule: Unpack = default_unpack) -> tuple[Inputs, torch.Tensor]:
    """``(inputs, target)`` of one batch, checked: the target is one integer label per
    sample."""
    try:
        x, y = rule(batch)
    except (DataError, InvalidParameterError):
        raise
    except Exception as exc:
        raise DataError(f"Could not read a batch into (input, target): {exc}") from exc
    _map(x, lambda t: t)  # raises DataError for an input that is not tensors
    if not isinstance(y, torch.Tensor):
        y = torch.as_tensor(y)
    if y.ndim != 1 or y.is_floating_point() or y.dtype == torch.bool:
        raise DataError(
            f"The target of a batch must be one integer class label per sample; got a "
            f"{str(y.dtype).replace('torch.', '')} tensor shaped {tuple(y.shape)}. Say which "
            "part of the batch is the target: uk.Batches(loader, input=..., target=...)."
        )
    n = num_samples(x)
    if n != len(y):
        raise DataError(
            f"A batch holds {n} inputs but {len(y)} targets; check which parts are the input "
            "and the target."
        )
    return x, y


def own_batch_size(data: Any) -> int | None:
    """The batch size of a DataLoader (or of the DataLoader inside a :class:`Batches`), else
    ``None``."""
    if isinstance(data, Batches):
        data = data.data
    return data.batch_size if isinstance(data, DataLoader) else None


_WARNED: set[int] = set()


def loader_batches(
    data: DataLoader | TorchDataset,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[Inputs, torch.Tensor]]:
    """Unpacked ``(inputs, target)`` batches of a DataLoader, a Dataset or :class:`Batches`.

    A DataLoader over a map-style dataset is re-batched with ``batch_size`` and ``shuffle``
    (keeping its ``collate_fn`` and workers), so that a method's own batch size and seeded
    order hold. A DataLoader with its own sampler, or over an iterable dataset, is iterated
    as it is, with a warning (once per loader) that its batching wins.
    """
    rule: Unpack = default_unpack
    if isinstance(data, Batches):
        rule = data.unpack
        data = data.data
    if isinstance(data, DataLoader):
        loader = _rebatch(data, batch_size, shuffle, generator)
    else:
        loader = DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=generator)
    for batch in loader:
        yield unpack(batch, rule)


def _rebatch(loader: DataLoader, batch_size: int, shuffle: bool,
             generator: torch.Generator | None) -> DataLoader:
    default_sampler = type(loader.sampler) in (SequentialSampler, RandomSampler)
    if (isinstance(loader.dataset, IterableDataset) or not default_sampler
            or loader.batch_size is None):
        if id(loader) not in _WARNED:
            _WARNED.add(id(loader))
            warnings.warn(
                f"This DataLoader has its own sampler or an iterable dataset, so its own "
                f"batches are used, not the method's batch size {batch_size} and seeded order. "
                "Pass a map-style Dataset (or a plain DataLoader) to let the method batch it.",
                UserWarning, stacklevel=4)
        return loader
    if loader.batch_size == batch_size and not shuffle and isinstance(
            loader.sampler, SequentialSampler):
        return loader
    return DataLoader(
        loader.dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
        collate_fn=loader.collate_fn, num_workers=loader.num_workers,
        pin_memory=loader.pin_memory, timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        persistent_workers=loader.persistent_workers if loader.num_workers else False,
    )


class _Unpacked(TorchDataset):
    """The samples of a dataset as ``(input, target)`` pairs: each item is collated alone,
    unpacked by the rule, and taken back out of its batch of one."""

    def __init__(self, dataset: TorchDataset, collate: Callable[[list], Any],
                 rule: Unpack) -> None:
        self.dataset, self.collate, self.rule = dataset, collate, rule

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Inputs, torch.Tensor]:
        x, y = unpack(self.collate([self.dataset[index]]), self.rule)
        return take(x, 0), y[0]


def samples(data: DataLoader | TorchDataset) -> TorchDataset:
    """``data`` as a map-style dataset whose items are ``(input, target)`` pairs, one sample
    each, whatever its batches look like: what code that picks, relabels or mixes samples
    (``Subset``, ``ConcatDataset``) needs. An :class:`~unlearnkit.data.containers.ArrayDataset`
    is returned as it is."""
    from unlearnkit.data.containers import ArrayDataset

    rule: Unpack = default_unpack
    if isinstance(data, Batches):
        rule, data = data.unpack, data.data
    collate: Callable[[list], Any] = default_collate
    if isinstance(data, DataLoader):
        collate = data.collate_fn
        data = data.dataset
    if isinstance(data, ArrayDataset):
        return data
    if isinstance(data, IterableDataset):
        raise DataError("This method picks samples by index, which an iterable dataset cannot "
                        "do: pass a map-style Dataset.")
    return _Unpacked(data, collate, rule)
