"""What a model knows about itself: architecture, data, recipe, cost.

Every model that unlearnkit builds, trains, unlearns or loads carries a :class:`ModelInfo` in its
``unlearnkit_info`` attribute; checkpoints store it as JSON metadata, so that a model can be
rebuilt from the file alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch
from torch import nn

from unlearnkit.exceptions import CheckpointError, ModelError

__all__ = ["INFO_ATTR", "ModelInfo", "check_finite", "check_finite_tensors", "get_info", "set_info"]

INFO_ATTR = "unlearnkit_info"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelInfo:
    """Provenance of a model.

    Attributes:
        arch: registered architecture name, or ``None`` for a user's own module.
        arch_kwargs: the architecture's constructor arguments.
        num_classes: size of the output layer.
        input_shape: shape of one sample, e.g. ``(1, 8, 8)``.
        dataset: ``{"name": ..., "options": {...}}`` of the data it was trained on.
        split: for a retrained or unlearned model, how the forget request was made.
        recipe: the training recipe (``Recipe.to_dict()``) of the original training.
        seconds: wall-clock seconds that producing this model took (training or unlearning).
        method: for an unlearned model, ``{"name", "params", "seed"}``.
        seed: the training seed.
        verdict: for an unlearned model, the oracle-free verdict on its request
            (:meth:`unlearnkit.metrics.verdict.Verdict.to_dict`).
    """

    arch: str | None = None
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    num_classes: int | None = None
    input_shape: tuple[int, ...] | None = None
    dataset: dict[str, Any] | None = None
    split: dict[str, Any] | None = None
    recipe: dict[str, Any] | None = None
    seconds: float | None = None
    method: dict[str, Any] | None = None
    seed: int | None = None
    verdict: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        # Hold the JSON-able fields in their JSON form (tuples as lists), so that the info of a
        # model equals the info of the same model saved and loaded again.
        for name in ("arch_kwargs", "dataset", "split", "recipe", "method", "verdict"):
            object.__setattr__(self, name, _json_form(getattr(self, name)))
        if self.input_shape is not None:
            object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))

    def replace(self, **changes: Any) -> ModelInfo:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape) if self.input_shape is not None else None
        d["format_version"] = FORMAT_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelInfo:
        """The info a dict (a checkpoint's JSON metadata) records, its types checked: a value
        of the wrong JSON type raises :class:`CheckpointError` naming the key and the type."""
        if not isinstance(d, dict):
            raise CheckpointError(
                f"the metadata must be a JSON object; got {_json_type(d)}."
            )
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        for key, ok, expected in _CHECKS:
            value = kwargs.get(key)
            if value is not None and not ok(value):
                raise CheckpointError(
                    f"the metadata key {key!r} must be {expected}; got {_json_type(value)} "
                    f"{_short(value)}."
                )
        if kwargs.get("arch_kwargs", ...) is None:
            kwargs["arch_kwargs"] = {}
        if kwargs.get("input_shape") is not None:
            kwargs["input_shape"] = tuple(kwargs["input_shape"])
        return cls(**kwargs)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _has(d: dict[str, Any], key: str, ok: Callable[[Any], bool]) -> bool:
    return d.get(key) is None or ok(d[key])


#: (key, check, what it must be) for every field of a checkpoint's metadata.
_CHECKS: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("arch", lambda v: isinstance(v, str), "a string"),
    ("arch_kwargs", lambda v: isinstance(v, dict), "a JSON object"),
    ("num_classes", lambda v: _is_int(v) and v >= 1, "a positive int"),
    ("input_shape", lambda v: isinstance(v, list) and all(_is_int(s) and s >= 1 for s in v),
     "a list of positive ints"),
    ("dataset", lambda v: isinstance(v, dict) and _has(v, "name", lambda n: isinstance(n, str))
     and _has(v, "options", lambda o: isinstance(o, dict)),
     'a JSON object {"name": string, "options": object}'),
    ("split", lambda v: isinstance(v, dict), "a JSON object"),
    ("recipe", lambda v: isinstance(v, dict), "a JSON object"),
    ("seconds", lambda v: _is_number(v) and math.isfinite(v) and v >= 0,
     "a finite number >= 0"),
    ("method", lambda v: isinstance(v, dict) and isinstance(v.get("name"), str)
     and _has(v, "params", lambda o: isinstance(o, dict)) and _has(v, "seed", _is_int),
     'a JSON object {"name": string, "params": object, "seed": int}'),
    ("seed", _is_int, "an int"),
    ("verdict", lambda v: isinstance(v, dict) and isinstance(v.get("outcome"), str),
     'a JSON object {"outcome": string, ...}'),
)


def _json_type(value: Any) -> str:
    for kind, name in ((bool, "a boolean"), (dict, "an object"), (list, "a list"),
                       (str, "a string"), (int, "an int"), (float, "a number")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__


def _short(value: Any, limit: int = 60) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = "..."
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def _json_form(value: Any) -> Any:
    """``value`` with every tuple turned into a list, as a JSON round trip would."""
    if isinstance(value, dict):
        return {k: _json_form(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_form(v) for v in value]
    return value


def get_info(model: nn.Module) -> ModelInfo | None:
    """The :class:`ModelInfo` a model carries, or ``None`` for a plain user module."""
    info = getattr(model, INFO_ATTR, None)
    return info if isinstance(info, ModelInfo) else None


def set_info(model: nn.Module, info: ModelInfo) -> nn.Module:
    """Attach ``info`` to ``model`` (a plain attribute; it travels with ``copy.deepcopy``)."""
    object.__setattr__(model, INFO_ATTR, info)
    return model


def check_finite(model: nn.Module, what: str = "The model") -> None:
    """Raise :class:`ModelError` naming the first parameter or buffer holding NaN or inf."""
    check_finite_tensors(list(model.named_parameters()) + list(model.named_buffers()), what)


def check_finite_tensors(named: Iterable[tuple[str, torch.Tensor]], what: str) -> None:
    """:func:`check_finite` over ``(name, tensor)`` pairs, e.g. a state dict's items."""
    for name, t in named:
        if torch.is_floating_point(t) and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise ModelError(
                f"{what} has non-finite values (NaN or inf) in {name!r} ({bad} of {t.numel()} "
                "entries). It cannot be used; retrain it or load an intact checkpoint."
            )
