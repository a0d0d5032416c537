"""Forget requests: which training samples to forget, and the data every method sees.

Three builders, one result type:

* :func:`split_by_class` - forget every training sample of one or more classes;
* :func:`split_random` - forget a seeded random fraction or count of the training set;
* :func:`split_indices` - forget the training samples at explicit indices (a GDPR request).

:meth:`Split.from_data` wraps a user's own forget / retain / test datasets or DataLoaders.
"""

from __future__ import annotations

import array
import hashlib
import math
import numbers
import os
import re
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
    "INDEX_FILE_BYTES_PER_SAMPLE",
    "INDEX_FILE_SLACK",
    "VALIDATION_FRACTION",
    "Data",
    "Scenario",
    "Split",
    "read_indices",
    "split_by_class",
    "split_indices",
    "split_random",
    "validation_indices",
]

#: The share of the test set that the split builders hold out as the validation set of the
#: verdict (stratified by class, seeded, the same for every request on a dataset): half, so
#: that the verdict's bands and the test figures rest on as many samples each.
VALIDATION_FRACTION = 0.5

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
        test: held-out data, never trained on: what the final test figures are measured on.
        validation: held out from the test data (never in the test figures): the unseen data
            that the oracle-free verdict compares D_f with (``None``: no verdict).
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
    validation: Data | None = None

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
        validation: Data | float | None = VALIDATION_FRACTION,
    ) -> Split:
        """A split over the user's own datasets or DataLoaders.

        ``validation`` is the verdict's unseen data: a dataset of its own, or a fraction of
        ``test`` to hold out (stratified, seeded; :data:`VALIDATION_FRACTION` by default), or
        ``None`` / 0 for none (``test`` is then used whole, and there is no verdict).

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
        validation_data: Data | None = None
        if isinstance(validation, bool):
            if validation:
                raise InvalidSplitError(
                    "The 'validation' parameter is a fraction of the test set, a dataset, or "
                    "None; got True. Give e.g. validation=0.5.")
        elif isinstance(validation, (numbers.Real, np.floating, np.integer)):
            fraction = _check_fraction(validation)
            if test is not None and fraction:
                validation_data, test = _hold_out(test, fraction)
        elif validation is not None:
            validation_data = validation
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
            validation=validation_data,
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
            f"retain={size(self.retain)}, test={size(self.test)}, "
            f"validation={size(self.validation)}{extra})"
        )


def _labels(data: Data) -> np.ndarray:
    if isinstance(data, ArrayDataset):
        return data.y.numpy()
    from unlearnkit.training import iter_batches

    return np.concatenate([y.cpu().numpy() for _, y in iter_batches(data, 1024,
                                                                     shuffle=False)])


def _check_fraction(fraction: object) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (numbers.Real, np.floating,
                                                               np.integer)):
        raise InvalidSplitError(
            f"The 'validation' fraction must be a float in the range [0, 1). Got {fraction!r} "
            "instead.")
    value = float(fraction)  # type: ignore[arg-type]
    if not 0.0 <= value < 1.0:
        raise InvalidSplitError(
            f"The 'validation' fraction must be a float in the range [0, 1). Got {fraction!r} "
            "instead.")
    return value


def validation_indices(labels: np.ndarray, fraction: float = VALIDATION_FRACTION,
                       seed: int = 0) -> np.ndarray:
    """The sorted positions of the validation set within a test set with ``labels``: a seeded
    ``fraction`` of every class (rounded; a class of one sample stays in the test set), so
    that both parts keep the test set's class balance.

    >>> validation_indices(np.array([0, 0, 1, 1, 1, 1]), 0.5).tolist()
    [0, 2, 4]
    """
    fraction = _check_fraction(fraction)
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = min(round(fraction * len(members)), len(members) - 1)
        if k > 0:
            chosen.append(rng.permutation(members)[:k])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def _hold_out(test: Data, fraction: float) -> tuple[Data | None, Data]:
    """``(validation, rest of test)``: :func:`validation_indices` of ``test``."""
    labels = _labels(test)
    chosen = validation_indices(labels, fraction)
    if not len(chosen):
        return None, test
    keep = np.ones(len(labels), dtype=bool)
    keep[chosen] = False
    rest = np.flatnonzero(keep)
    if isinstance(test, ArrayDataset):
        return test.subset(chosen), test.subset(rest)
    ds = samples(test)
    return Subset(ds, chosen.tolist()), Subset(ds, rest.tolist())


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
           classes: tuple[int, ...] | None = None,
           validation: float = VALIDATION_FRACTION) -> Split:
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
    validation = _check_fraction(validation)
    held, test = _hold_out(ds.test, validation) if validation else (None, ds.test)
    assert isinstance(test, ArrayDataset)
    test_retain = test_forget = None
    if classes is not None:
        test_retain = test.of_classes(classes, keep=False)
        test_forget = test.of_classes(classes, keep=True)
    if validation:
        desc = {**desc, "validation": float(validation)}
    desc = {"dataset": ds.name, **desc, "n_forget": len(forget_idx),
            "forget_sha256": hashlib.sha256(forget_idx.astype("<i8").tobytes()).hexdigest()}
    return Split(
        scenario=scenario,
        forget=ds.train.subset(forget_idx),
        retain=ds.train.subset(retain_idx),
        test=test,
        forget_indices=forget_idx,
        forget_classes=classes,
        test_retain=test_retain,
        test_forget=test_forget,
        num_classes=ds.num_classes,
        description=desc,
        validation=held,
    )


def split_by_class(ds: DataBundle, classes: int | str | Sequence[int | str], *,
                   validation: float = VALIDATION_FRACTION) -> Split:
    """Forget every training sample of ``classes`` (numbers or class names).

    ``validation``: the share of ``ds.test`` held out as the verdict's validation set
    (:func:`validation_indices`; 0: none, the test set whole). The same for every builder.
    """
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
    return _build(ds, idx, "class", {"scenario": "class", "classes": list(chosen)}, chosen,
                  validation)


def split_random(
    ds: DataBundle, *, fraction: float | None = None, count: int | None = None, seed: int = 0,
    validation: float = VALIDATION_FRACTION,
) -> Split:
    """Forget a seeded random ``fraction`` (in (0, 1)) or ``count`` of the training set
    (``validation`` as in :func:`split_by_class`)."""
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
    return _build(ds, idx, "random", desc, validation=validation)


def split_indices(ds: DataBundle, indices: Iterable[int] | np.ndarray, *,
                  validation: float = VALIDATION_FRACTION) -> Split:
    """Forget the training samples at ``indices`` (0-based positions in ``ds.train``;
    ``validation`` as in :func:`split_by_class`)."""
    raw = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices)
    n = len(ds.train)
    if raw.size > n:
        raise InvalidSplitError(
            f"{raw.size} forget indices for {ds.name!r}, which has {n} training samples: some are "
            f"repeated or out of range (valid 0-{n - 1}, each listed once)."
        )
    idx = _as_indices(raw, n, f"Forget indices out of range for {ds.name!r} ({n} training "
                              f"samples, valid 0-{n - 1}):")
    uniq, counts = np.unique(idx, return_counts=True)
    if (counts > 1).any():
        raise InvalidSplitError(
            f"Duplicate forget indices: {uniq[counts > 1][:10].tolist()}. Each sample is listed "
            "once."
        )
    # a sample request: methods treat it as random samples (``scenario == "random"``); its
    # description names it ``indices`` and keeps the indices, so that a checkpoint's record of
    # the request rebuilds it (`unlearnkit evaluate` without the file)
    return _build(ds, uniq, "random", {"scenario": "indices", "source": "indices",
                                       "indices": uniq.tolist()}, validation=validation)


_INT64_MAX = np.iinfo(np.int64).max


def _show(value: object, limit: int = 24) -> str:
    """A value for a message: quoted if a string, cut to ``limit`` characters if longer."""
    text = str(value)
    cut = f"{text[: limit - 4]}..." if len(text) > limit else text
    shown = repr(cut) if isinstance(value, str) else cut
    return f"{shown} ({len(text)} characters)" if len(text) > limit else shown


def _as_indices(
    raw: np.ndarray, n: int | None, out_of_range: str, context: str = ""
) -> np.ndarray:
    """``raw`` as a flat int64 array of indices in ``[0, n)`` (``[0, 2**63)`` if ``n`` is None).

    Values are compared in their own type, so a uint64 or a float beyond int64 is reported as
    itself, never as the integer it would wrap to.

    Raises:
        InvalidSplitError: not whole numbers (the message names the value and the dtype), or
            out of range (``out_of_range`` followed by up to ten offending values).
    """
    raw = raw.ravel()
    top = _INT64_MAX if n is None else n - 1
    kind = raw.dtype.kind
    if raw.size and kind == "O":
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
                   for v in raw):
            bad = next(v for v in raw if not isinstance(v, (int, np.integer))
                       or isinstance(v, (bool, np.bool_)))
            raise InvalidSplitError(
                f"{context}Forget indices must be integers; got {_show(bad)} (dtype object)."
            )
        values = [int(v) for v in raw]
        bad_values = [v for v in values if not 0 <= v <= top]
        if bad_values:
            shown = ", ".join(_show(v) for v in bad_values[:10])
            more = " ..." if len(bad_values) > 10 else ""
            raise InvalidSplitError(f"{out_of_range} [{shown}]{more}.")
        return np.asarray(values, dtype=np.int64)
    if raw.size and kind == "f":
        whole = np.isfinite(raw) & (raw == np.round(raw))
        if not whole.all():
            raise InvalidSplitError(
                f"{context}Forget indices must be integers; got {_show(raw[~whole][0].item())} "
                f"(dtype {raw.dtype})."
            )
    elif raw.size and kind not in "iu":
        raise InvalidSplitError(
            f"{context}Forget indices must be integers; got dtype {raw.dtype}."
        )
    if not raw.size:
        return np.zeros(0, dtype=np.int64)
    outside = (raw < 0) | (raw > top)
    if outside.any():
        bad = raw[outside]
        shown = ", ".join(_show(int(v) if kind in "iu" or abs(v) < 2**63 else float(v))
                          for v in bad[:10].tolist())
        raise InvalidSplitError(f"{out_of_range} [{shown}]{' ...' if bad.size > 10 else ''}.")
    return raw.astype(np.int64)


#: Bytes a forget-indices file may take per training sample when :func:`read_indices` knows the
#: training set's size (an index, a separator and a comment), above :data:`INDEX_FILE_SLACK`.
INDEX_FILE_BYTES_PER_SAMPLE = 64
#: Bytes a forget-indices file may always take, whatever the training set's size.
INDEX_FILE_SLACK = 1 << 20

_CHUNK = 1 << 20
_MAX_TOKEN = 64
_COMMENT = re.compile(r"#[^\n]*")
_TOKEN = re.compile(r"[^\s,]+")
_TRAILING_TOKEN = re.compile(r"[^\s,]*\Z")


def read_indices(path: str | os.PathLike, num_samples: int | None = None) -> np.ndarray:
    """Read forget indices from a text file (whitespace or comma separated, ``#`` comments),
    a ``.npy`` file, or a JSON list.

    Indices are whole numbers; in a text file they are written with the ASCII digits 0-9 only
    (no sign, no decimal point). A UTF-8 byte-order mark and Windows line endings are fine. A
    text file is read in chunks, so a huge file takes memory for its indices only.

    Args:
        path: the file.
        num_samples: the size of the training set, if known: indices must then be below it, and
            the file may hold at most that many indices and
            ``INDEX_FILE_BYTES_PER_SAMPLE * num_samples + INDEX_FILE_SLACK`` bytes.

    Returns:
        The indices, int64, in file order.

    Raises:
        InvalidSplitError: a missing, unreadable, empty or oversized file, or a value that is not
            a valid index (the message names the file, the value and what is valid).
    """
    p = Path(path)
    if not p.is_file():
        raise InvalidSplitError(f"Forget-indices file not found: {str(p)!r}.")
    if num_samples is not None:
        if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) \
                or num_samples < 1:
            raise InvalidSplitError(
                f"The 'num_samples' parameter must be a positive int. Got {num_samples!r} instead."
            )
        num_samples = int(num_samples)
    where = f"Could not read forget indices from {str(p)!r}"
    try:
        size = p.stat().st_size
        if num_samples is not None:
            limit = INDEX_FILE_BYTES_PER_SAMPLE * num_samples + INDEX_FILE_SLACK
            if size > limit:
                raise InvalidSplitError(
                    f"{where}: the file is {size} bytes, more than a list of indices into "
                    f"{num_samples} training samples takes (at most {limit} bytes)."
                )
        suffix = p.suffix.lower()
        if suffix == ".npy":
            idx = _read_npy(p, num_samples, where)
        elif suffix == ".json":
            idx = _read_json(p, num_samples, where)
        else:
            idx = _read_text(p, num_samples, where)
    except InvalidSplitError:
        raise
    except UnicodeDecodeError as exc:
        raise InvalidSplitError(
            f"{where}: not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r} at position "
            f"{exc.start}). Write one index per line, a JSON list, or a .npy array."
        ) from None
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidSplitError(f"{where}: {' '.join(str(exc).split())}") from None
    if idx.size == 0:
        raise InvalidSplitError(f"{where}: the file holds no index, so there is nothing to forget.")
    return idx


def _valid(num_samples: int | None) -> str:
    if num_samples is None:
        return "whole numbers from 0 to the training set's size minus 1"
    return f"whole numbers 0-{num_samples - 1}, for {num_samples} training samples"


def _too_many(where: str, num_samples: int) -> InvalidSplitError:
    return InvalidSplitError(
        f"{where}: the file lists more than {num_samples} indices, the size of the training set "
        "(each sample is listed at most once)."
    )


def _checked(values: np.ndarray, num_samples: int | None, where: str) -> np.ndarray:
    if num_samples is not None and values.size > num_samples:
        raise _too_many(where, num_samples)
    return _as_indices(values, num_samples,
                       f"{where}: not valid indices (valid: {_valid(num_samples)}):", f"{where}: ")


def _read_npy(p: Path, num_samples: int | None, where: str) -> np.ndarray:
    values = np.load(p, allow_pickle=False)
    if values.dtype.kind not in "iuf":
        raise InvalidSplitError(
            f"{where}: the array has dtype {values.dtype}; forget indices are integers."
        )
    return _checked(values, num_samples, where)


class _LongLiteral(Exception):
    """A JSON number too long to be an index (raised before ``int()`` parses it)."""


def _json_int(literal: str) -> int:
    if len(literal) > 24:
        raise _LongLiteral(literal)
    return int(literal)


def _read_json(p: Path, num_samples: int | None, where: str) -> np.ndarray:
    import json

    text = p.read_text(encoding="utf-8-sig")
    example = "such as [3, 17, 42]"
    if not text.strip().startswith("["):
        raise InvalidSplitError(
            f"{where}: expected a JSON list of indices {example}; got {_show(text.strip(), 16)}."
        )
    if text.count("[") != 1 or "{" in text:  # also keeps json's recursion shallow
        raise InvalidSplitError(
            f"{where}: expected a flat JSON list of indices {example}; the file nests lists or "
            "objects."
        )
    try:
        values = json.loads(text, parse_int=_json_int)
    except _LongLiteral as exc:
        raise InvalidSplitError(
            f"{where}: {_show(exc.args[0])} is not a valid index (valid: {_valid(num_samples)})."
        ) from None
    if not isinstance(values, list):
        raise InvalidSplitError(f"{where}: expected a JSON list of indices {example}.")
    if num_samples is not None and len(values) > num_samples:
        raise _too_many(where, num_samples)
    ints = []
    for v in values:
        if isinstance(v, float) and math.isfinite(v) and v.is_integer() and abs(v) < 2**63:
            v = int(v)  # 3.0 is read as 3; -0.0 as 0
        if isinstance(v, bool) or not isinstance(v, int):
            shown = _show(v) if isinstance(v, float) else _show(json.dumps(v))
            raise InvalidSplitError(
                f"{where}: {shown} is not a valid index (valid: {_valid(num_samples)})."
            )
        ints.append(v)
    return _checked(np.asarray(ints, dtype=object), num_samples, where)


def _read_text(p: Path, num_samples: int | None, where: str) -> np.ndarray:
    found = array.array("q")  # grows in place: no second copy of the indices at the end
    count = 0
    line = 1
    carry = ""
    skipping = False  # inside a comment whose line has not ended yet
    with open(p, encoding="utf-8-sig", newline="") as f:
        while True:
            chunk = f.read(_CHUNK)
            final = not chunk
            if skipping and not final:
                newline = chunk.find("\n")
                if newline < 0:
                    continue
                chunk, skipping = chunk[newline:], False
            text = carry + chunk
            if final:
                body, carry = text, ""
            else:
                cut = text.rfind("\n") + 1
                body, carry = text[:cut], text[cut:]
                hash_at = carry.find("#")
                if hash_at >= 0:  # the rest of this line is a comment
                    body, carry, skipping = body + carry[:hash_at], "", True
                else:  # keep only a possibly cut token for the next chunk
                    start = _TRAILING_TOKEN.search(carry).start()
                    body, carry = body + carry[:start], carry[start:]
                    if carry.startswith("00"):  # leading zeros are fine, however many
                        carry = "0" + carry.lstrip("0")
                    if len(carry) > _MAX_TOKEN:
                        raise InvalidSplitError(
                            f"{where}: line {line + body.count(chr(10))}: a value starting "
                            f"{carry[:16]!r} runs over {_MAX_TOKEN} characters; it is not an "
                            f"index (valid: {_valid(num_samples)})."
                        )
            values = _parse_tokens(_COMMENT.sub("", body), line, num_samples, where)
            count += values.size
            if num_samples is not None and count > num_samples:
                raise _too_many(where, num_samples)
            found.frombytes(values.tobytes())
            line += body.count("\n")
            if final:
                break
    return np.frombuffer(found, dtype=np.int64) if found else np.zeros(0, dtype=np.int64)


def _too_large(token: str) -> bool:
    """Whether a token of ASCII digits is beyond int64 (leading zeros allowed)."""
    digits = token.lstrip("0")
    return len(digits) > 19 or (len(digits) == 19 and int(digits) > _INT64_MAX)


def _parse_tokens(text: str, line: int, num_samples: int | None, where: str) -> np.ndarray:
    """The indices written in ``text`` (comments removed), which starts at line ``line``."""
    tokens = text.replace(",", " ").split()
    if not tokens:
        return np.zeros(0, dtype=np.int64)
    joined = "".join(tokens)
    long = max(map(len, tokens)) > 18
    if not (joined.isascii() and joined.isdigit()) or (long and any(map(_too_large, tokens))):
        for match in _TOKEN.finditer(text):
            token = match.group()
            if not (token.isascii() and token.isdigit()):
                what = "is not an index"
                if token[0] in "+-" and token[1:].isascii() and token[1:].isdigit():
                    what = "has a sign"
            elif _too_large(token):
                what = "is too large"
            else:
                continue
            at = line + text.count("\n", 0, match.start())
            raise InvalidSplitError(
                f"{where}: line {at}: {_show(token)} {what} (valid: {_valid(num_samples)}, "
                "written with the digits 0-9)."
            )
    if long:  # int() refuses strings of over 4300 digits, leading zeros included
        tokens = [t.lstrip("0") or "0" for t in tokens]
    values = np.fromiter(map(int, tokens), dtype=np.int64, count=len(tokens))
    if num_samples is not None and (values >= num_samples).any():
        bad = values[values >= num_samples][0]
        match = next(m for m in _TOKEN.finditer(text)
                     if m.group().isdigit() and int(m.group().lstrip("0") or "0") == bad)
        at = line + text.count("\n", 0, match.start())
        raise InvalidSplitError(
            f"{where}: line {at}: {bad} is out of range (valid: {_valid(num_samples)})."
        )
    return values
