"""The architecture registry and model helpers."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from unlearnkit.exceptions import InvalidParameterError
from unlearnkit.models.architectures import ARCHITECTURES
from unlearnkit.models.fresh import fresh_copy
from unlearnkit.models.info import ModelInfo, set_info
from unlearnkit.registry import Registry, did_you_mean

__all__ = ["MODELS", "build_model", "fresh_copy", "register_model"]

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
for _name, _cls in ARCHITECTURES.items():
    MODELS.register(_name, _cls)


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register ``factory(*, input_shape, num_classes, **kwargs) -> nn.Module`` under ``name``."""
    return MODELS.decorator(name)


def model_options(name: str) -> list[str]:
    params = inspect.signature(MODELS.get(name)).parameters
    return [p for p in params if p not in ("self", "input_shape", "num_classes")]


def build_model(
    name: str, *, num_classes: int, input_shape: Sequence[int], **kwargs: Any
) -> nn.Module:
    """Build a registered architecture; the model carries its :class:`ModelInfo`."""
    factory = MODELS.get(name)
    valid = model_options(name)
    for key in kwargs:
        if key not in valid:
            raise InvalidParameterError(
                f"Model {name!r} has no argument {key!r}.{did_you_mean(key, valid)} "
                f"Valid arguments: {', '.join(valid) or '(none)'}."
            )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise InvalidParameterError(
            f"The 'num_classes' parameter must be an int >= 2. Got {num_classes!r} instead."
        )
    model = factory(input_shape=tuple(input_shape), num_classes=num_classes, **kwargs)
    return set_info(
        model,
        ModelInfo(
            arch=name,
            arch_kwargs=dict(kwargs),
            num_classes=num_classes,
            input_shape=tuple(int(s) for s in input_shape),
        ),
    )
