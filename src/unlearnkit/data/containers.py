"""In-memory datasets: the tensors every loader produces and every split slices."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from unlearnkit.data import batches
from unlearnkit.data.batches import (
    Inputs,
    concat,
    describe,
    first_tensor,
    num_samples,
    samples,
    take,
)
from unlearnkit.exceptions import DataError, InvalidParameterError

__all__ = ["ArrayDataset", "DataBundle", "join"]


class ArrayDataset(Dataset):
    """Samples and integer labels held in memory.

    ``x`` is the model's input for every sample (see :mod:`unlearnkit.data.batches`): a tensor
    shaped ``(N, C, H, W)`` for images, ``(N, D)`` for vectors or ``(N, T)`` for token ids, or
    a dict (keyword arguments) or tuple of such tensors. It keeps its dtype: float32 images,
    float64 features and int64 token ids all stay what they are. ``y`` is int64 of shape
    ``(N,)``. Indexing gives ``(x[i], y[i])`` like :class:`torch.utils.data.TensorDataset`, and
    the training loop slices the tensors directly, which is much faster than a DataLoader over
    single items.
    """

    def __init__(self, x: Inputs | np.ndarray, y: torch.Tensor | np.ndarray) -> None:
        if isinstance(x, np.ndarray):
            x = torch.as_tensor(x)
        y = torch.as_tensor(y)
        for t in batches._tensors(x) if not isinstance(x, torch.Tensor) else [x]:
            if t.ndim < 1 or len(t) != len(y):
                raise DataError(
                    f"Inputs must hold one row per label: got {describe(x)} and "
                    f"{len(y) if y.ndim else 0} labels.")
        if isinstance(x, torch.Tensor) and x.ndim < 2:
            raise DataError(f"Samples must have a batch dimension; got shape {tuple(x.shape)}.")
        if y.ndim != 1 or (y.is_floating_point() and not bool((y == y.round()).all())):
            raise DataError(
                f"Labels must be one integer per sample: got {num_samples(x)} samples and "
                f"labels of shape {tuple(y.shape)}."
            )
        self.x: Inputs = x
        self.y = y.to(torch.int64)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[Inputs, torch.Tensor]:
        return take(self.x, index), self.y[index]

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> ArrayDataset:
        """The samples at ``indices``, in that order (a copy)."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return ArrayDataset(take(self.x, idx), self.y[idx])

    def of_classes(self, classes: Sequence[int], *, keep: bool = True) -> ArrayDataset:
        """The samples whose label is (``keep=True``) or is not (``keep=False``) in ``classes``."""
        mask = torch.isin(self.y, torch.as_tensor(list(classes), dtype=torch.int64))
        if not keep:
            mask = ~mask
        return ArrayDataset(take(self.x, mask), self.y[mask])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one sample (of the first tensor, for a dict or tuple input)."""
        return tuple(first_tensor(self.x).shape[1:])

    def __repr__(self) -> str:
        return f"ArrayDataset(n={len(self)}, sample_shape={self.sample_shape})"


@dataclass(frozen=True)
class DataBundle:
    """A loaded dataset: its training and test sets, and what its labels mean."""

    name: str
    train: ArrayDataset
    test: ArrayDataset
    class_names: tuple[str, ...]
    #: Loader options that rebuild this exact bundle (recorded in checkpoints).
    options: dict = field(default_factory=dict)

    def per_class(self, train: int | None = None, test: int | None = None) -> DataBundle:
        """A smaller bundle: the first ``train`` training and ``test`` test samples of every
        class, in their original order (``None`` keeps a part whole). Deterministic, so a
        benchmark on a subset is reproducible; the options record the subset.

        >>> import torch
        >>> b = DataBundle("toy", ArrayDataset(torch.zeros(6, 2), torch.tensor([0, 1, 0, 1, 0, 1])),
        ...                ArrayDataset(torch.zeros(2, 2), torch.tensor([0, 1])), ("a", "b"))
        >>> b.per_class(train=2).train.y.tolist()
        [0, 1, 0, 1]
        """
        def first(data: ArrayDataset, n: int | None, part: str) -> ArrayDataset:
            if n is None:
                return data
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise InvalidParameterError(
                    f"The number of {part} samples per class must be a positive int. "
                    f"Got {n!r} instead.")
            y = data.y.numpy()
            keep = np.sort(np.concatenate([np.flatnonzero(y == c)[:n]
                                           for c in range(self.num_classes)]))
            return ArrayDataset(take(data.x, torch.as_tensor(keep)), data.y[keep])

        return DataBundle(self.name, first(self.train, train, "training"),
                          first(self.test, test, "test"), self.class_names,
                          {**self.options, "train_per_class": train, "test_per_class": test})

    def __post_init__(self) -> None:
        if self.train.sample_shape != self.test.sample_shape:
            raise DataError(
                f"Dataset {self.name!r}: train samples have shape {self.train.sample_shape} "
                f"but test samples {self.test.sample_shape}."
            )
        for part, data in (("train", self.train), ("test", self.test)):
            if len(data) and (int(data.y.min()) < 0 or int(data.y.max()) >= self.num_classes):
                raise DataError(
                    f"Dataset {self.name!r}: {part} labels must lie in [0, {self.num_classes}); "
                    f"got [{int(data.y.min())}, {int(data.y.max())}]."
                )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.train.sample_shape

    def __repr__(self) -> str:
        return (
            f"DataBundle(name={self.name!r}, train={len(self.train)}, test={len(self.test)}, "
            f"num_classes={self.num_classes}, input_shape={self.input_shape})"
        )


def join(*parts: Dataset | DataLoader) -> Dataset:
    """The samples of ``parts`` one after the other: an :class:`ArrayDataset` when every part
    is one, else a ``ConcatDataset`` of their ``(input, target)`` samples (see
    :func:`~unlearnkit.data.batches.samples`), whatever each part's batches look like."""
    if not parts:
        raise InvalidParameterError("Nothing to join: no data was given.")
    if all(isinstance(p, ArrayDataset) for p in parts):
        return ArrayDataset(concat([p.x for p in parts]), torch.cat([p.y for p in parts]))
    return ConcatDataset([samples(p) for p in parts])
