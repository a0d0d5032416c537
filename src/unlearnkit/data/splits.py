"""Forget requests: which training samples to forget, and the data every method sees.

Three builders, one result type:

* :func:`split_by_class` - forget every training sample of one or more classes;
* :func:`split_random` - forget a seeded random fraction or count of the training set;
* :func:`split_indices` - forget the training samples at explicit indices (a GDPR request).

:meth:`Split.from_data` wraps a user's own forget / retain / test datasets or DataLoaders.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from torch.utils.data import DataLoader, Subset
from torch.utils.data import Dataset as TorchDataset

from unlearnkit.data.batches import samples
from unlearnkit.data.containers import ArrayDataset, DataBundle
from unlearnkit.exceptions import InvalidSplitError

__all__ = [
    "Data",
    "Scenario",
    "Split",
    "read_indices",
    "split_by_class",
    "split_indices",
    "split_random",
]

#: Anything the training loop can iterate: our tensors, a torch Dataset, or a DataLoader.
Data = ArrayDataset | TorchDataset | DataLoader
#: ``"class"``: whole classes are forgotten; ``"random"``: a set of samples is.
Scenario = Literal["class", "random"]


@dataclass(frozen=True)
class Split:
    """The data of one forget request.

    Attributes:
        scenario: ``"class"`` or ``"random"`` (any set of samples, random or listed).
        forget: D_f, the samples to forget.
        retain: D_r, the training set minus D_f.
        test: held-out data, never trained on.
        forget_indices: sorted indices of D_f in the training set (``None`` for user data).
        forget_classes: the forgotten classes (class scenario only).
        test_retain: test samples of the retained classes (class scenario only).
        test_forget: test samples of the forgotten classes (class scenario only).
        num_classes: number of classes of the model's output.
        description: JSON-able record of how the split was made (stored in checkpoints).
    """

    scenario: Scenario
    forget: Data
    retain: Data
    test: Data | None
    forget_indices: np.ndarray | None = None
    forget_classes: tuple[int, ...] | None = None
    test_retain: Data | None = None
    test_forget: Data | None = None
    num_classes: int | None = None
    description: dict = field(default_factory=dict)

    @classmethod
    def from_data(
        cls,
        *,
        forget: Data,
        retain: Data,
        test: Data | None = None,
        scenario: Scenario = "random",
        forget_classes: Iterable[int] | None = None,
        num_classes: int | None = None,
    ) -> Split:
        """A split over the user's own datasets or DataLoaders.

        With ``forget_classes`` the scenario is ``"class"``, and the test data of the retained
        and of the forgotten classes are derived from ``test``.

        Batches of any form are read by the default rule (``(x, y)``, ``{"x", "y"}``, Hugging
        Face's ``labels``); wrap a DataLoader in :class:`~unlearnkit.data.batches.Batches` to
        say which parts are the input and the target.
        """
        if scenario not in ("class", "random"):
            raise InvalidSplitError(
                f"The 'scenario' parameter must be 'class' or 'random'. Got {scenario!r} instead."
            )
        classes = tuple(sorted(int(c) for c in forget_classes)) if forget_classes else None
        if classes is not None:
            scenario = "class"
        test_retain = test_forget = None
        if classes is not None and isinstance(test, ArrayDataset):
            test_retain = test.of_classes(classes, keep=False)
            test_forget = test.of_classes(classes, keep=True)
        elif classes is not None and test is not None:
            test_retain, test_forget = _by_class(test, classes)
        desc = {"scenario": scenario, "source": "user data"}
        if classes is not None:
            desc["classes"] = list(classes)
        return cls(
            scenario=scenario,
            forget=forget,
            retain=retain,
            test=test,
            forget_classes=classes,
            test_retain=test_retain,
            test_forget=test_forget,
            num_classes=num_classes,
            description=desc,
        )

    def __repr__(self) -> str:
        def size(d: Data | None) -> str:
            try:
                return str(len(d))  # type: ignore[arg-type]
            except TypeError:
                return "?"

        extra = f", forget_classes={list(self.forget_classes)}" if self.forget_classes else ""
        return (
            f"Split(scenario={self.scenario!r}, forget={size(self.forget)}, "
            f"retain={size(self.retain)}, test={size(self.test)}{extra})"
        )


def _by_class(data: Data, classes: tuple[int, ...]) -> tuple[Subset, Subset]:
    """The samples of ``data`` whose label is not / is in ``classes``, in order."""
    from unlearnkit.training import iter_batches

    labels = np.concatenate([y.cpu().numpy() for _, y in iter_batches(data, 1024,
                                                                       shuffle=False)])
    chosen = np.isin(labels, classes)
    ds = samples(data)
    return (Subset(ds, np.flatnonzero(~chosen).tolist()),
            Subset(ds, np.flatnonzero(chosen).tolist()))


def _class_index(ds: DataBundle, c: int | str) -> int:
    if isinstance(c, str) and not c.lstrip("-").isdigit():
        if c in ds.class_names:
            return ds.class_names.index(c)
        raise InvalidSplitError(
            f"Unknown class {c!r} for dataset {ds.name!r}. Valid classes: "
            f"{', '.join(ds.class_names)} (or their numbers 0-{ds.num_classes - 1})."
        )
    k = int(c)
    if not 0 <= k < ds.num_classes:
        raise InvalidSplitError(
            f"Unknown class {k} for dataset {ds.name!r}: classes are numbered "
            f"0-{ds.num_classes - 1}."
        )
    return k


def _build(ds: DataBundle, forget_idx: np.ndarray, scenario: Scenario, desc: dict,
           classes: tuple[int, ...] | None = None) -> Split:
    n = len(ds.train)
    if len(forget_idx) == 0:
        raise InvalidSplitError("The forget set is empty: there is nothing to forget.")
    if len(forget_idx) >= n:
        raise InvalidSplitError(
            f"The forget set holds all {n} training samples: nothing would be retained. "
            "Forget a strict subset of the training set."
        )
    mask = np.ones(n, dtype=bool)
    mask[forget_idx] = False
    retain_idx = np.flatnonzero(mask)
    test_retain = test_forget = None
    if classes is not None:
        test_retain = ds.test.of_classes(classes, keep=False)
        test_forget = ds.test.of_classes(classes, keep=True)
    desc = {"dataset": ds.name, **desc, "n_forget": len(forget_idx),
            "forget_sha256": hashlib.sha256(forget_idx.astype("<i8").tobytes()).hexdigest()}
    return Split(
        scenario=scenario,
        forget=ds.train.subset(forget_idx),
        retain=ds.train.subset(retain_idx),
        test=ds.test,
        forget_indices=forget_idx,
        forget_classes=classes,
        test_retain=test_retain,
        test_forget=test_forget,
        num_classes=ds.num_classes,
        description=desc,
    )


def split_by_class(ds: DataBundle, classes: int | str | Sequence[int | str]) -> Split:
    """Forget every training sample of ``classes`` (numbers or class names)."""
    if isinstance(classes, (int, str, np.integer)):
        classes = [classes]
    ks = [_class_index(ds, c) for c in classes]
    if not ks:
        raise InvalidSplitError("No class to forget was given.")
    if len(set(ks)) != len(ks):
        raise InvalidSplitError(f"Duplicate classes in the forget request: {ks}.")
    chosen = tuple(sorted(ks))
    if len(chosen) >= ds.num_classes:
        raise InvalidSplitError(
            f"Forgetting all {ds.num_classes} classes of {ds.name!r} leaves nothing to retain."
        )
    idx = np.flatnonzero(np.isin(ds.train.y.numpy(), chosen)).astype(np.int64)
    if len(idx) == 0:
        raise InvalidSplitError(
            f"Classes {list(chosen)} have no training samples in {ds.name!r}: nothing to forget."
        )
    return _build(ds, idx, "class", {"scenario": "class", "classes": list(chosen)}, chosen)


def split_random(
    ds: DataBundle, *, fraction: float | None = None, count: int | None = None, seed: int = 0
) -> Split:
    """Forget a seeded random ``fraction`` (in (0, 1)) or ``count`` of the training set."""
    n = len(ds.train)
    if (fraction is None) == (count is None):
        raise InvalidSplitError("Give exactly one of 'fraction' and 'count'.")
    if fraction is not None:
        if not 0.0 < float(fraction) < 1.0:
            raise InvalidSplitError(
                f"The 'fraction' parameter must be a float in the range (0, 1). Got {fraction!r} "
                "instead."
            )
        k = round(float(fraction) * n)
    else:
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)):
            raise InvalidSplitError(f"The 'count' parameter must be an int. Got {count!r} instead.")
        k = int(count)
        if not 0 < k < n:
            raise InvalidSplitError(
                f"The 'count' parameter must be an int in the range [1, {n - 1}] for "
                f"{ds.name!r} ({n} training samples). Got {count} instead."
            )
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, size=k, replace=False)).astype(np.int64)
    desc = {"scenario": "random", "seed": int(seed)}
    desc["fraction" if fraction is not None else "count"] = fraction if fraction is not None else k
    return _build(ds, idx, "random", desc)


def split_indices(ds: DataBundle, indices: Iterable[int] | np.ndarray) -> Split:
    """Forget the training samples at ``indices`` (0-based positions in ``ds.train``)."""
    raw = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices)
    if raw.size and not np.issubdtype(raw.dtype, np.integer):
        if np.issubdtype(raw.dtype, np.floating) and np.all(raw == np.round(raw)):
            raw = raw.astype(np.int64)
        else:
            raise InvalidSplitError(f"Forget indices must be integers; got dtype {raw.dtype}.")
    idx = raw.astype(np.int64).ravel()
    n = len(ds.train)
    bad = idx[(idx < 0) | (idx >= n)]
    if bad.size:
        raise InvalidSplitError(
            f"Forget indices out of range for {ds.name!r} ({n} training samples, valid 0-{n - 1}):"
            f" {bad[:10].tolist()}{' ...' if bad.size > 10 else ''}."
        )
    uniq, counts = np.unique(idx, return_counts=True)
    if (counts > 1).any():
        raise InvalidSplitError(
            f"Duplicate forget indices: {uniq[counts > 1][:10].tolist()}. Each sample is listed "
            "once."
        )
    return _build(ds, uniq, "random", {"scenario": "random", "source": "indices"})


def read_indices(path: str | os.PathLike) -> np.ndarray:
    """Read forget indices from a text file (whitespace or comma separated, ``#`` comments),
    a ``.npy`` file, or a JSON list."""
    p = Path(path)
    if not p.is_file():
        raise InvalidSplitError(f"Forget-indices file not found: {str(p)!r}.")
    try:
        if p.suffix == ".npy":
            return np.load(p, allow_pickle=False)
        text = p.read_text()
        if p.suffix == ".json":
            import json

            return np.asarray(json.loads(text))
        tokens = []
        for line in text.splitlines():
            line = line.split("#", 1)[0]
            tokens.extend(t for t in line.replace(",", " ").split() if t)
        return np.asarray([int(t) for t in tokens], dtype=np.int64)
    except (ValueError, OSError) as exc:
        raise InvalidSplitError(f"Could not read forget indices from {str(p)!r}: {exc}") from exc
