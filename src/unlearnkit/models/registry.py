"""The architecture registry and model helpers."""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from unlearnkit.exceptions import InvalidParameterError, UnlearnkitError, short_repr
from unlearnkit.models.architectures import ARCHITECTURES, MAX_WIDTH
from unlearnkit.models.fresh import fresh_copy
from unlearnkit.models.info import ModelInfo, set_info
from unlearnkit.registry import Registry, did_you_mean

__all__ = ["MAX_PARAMETERS", "MODELS", "build_model", "fresh_copy", "register_model"]

#: The most parameters (and buffer entries) :func:`build_model` builds: 10**9, 4 GB of float32.
#: The size is measured on the ``meta`` device, before any memory is allocated; raise it
#: (``unlearnkit.models.registry.MAX_PARAMETERS = ...``) to build a larger registered model.
MAX_PARAMETERS = 10**9

#: The most input values one sample may have.
MAX_INPUT_SIZE = 2**31

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
    """Build a registered architecture; the model carries its :class:`ModelInfo`.

    Its arguments are checked first: sizes must be positive ints, and the model is built on
    the ``meta`` device (no memory) to check that it has at most :data:`MAX_PARAMETERS`
    parameters before it is built for real.
    """
    shape = _check_arguments(name, num_classes, input_shape, kwargs)
    meta_model(name, num_classes=num_classes, input_shape=shape, **kwargs)
    model = MODELS.get(name)(input_shape=shape, num_classes=num_classes, **kwargs)
    return set_info(
        model,
        ModelInfo(arch=name, arch_kwargs=dict(kwargs), num_classes=num_classes,
                  input_shape=shape),
    )


def meta_model(
    name: str, *, num_classes: int, input_shape: Sequence[int], **kwargs: Any
) -> nn.Module | None:
    """The architecture ``name`` built on the ``meta`` device: its parameters have shapes but
    no memory. Raises :class:`InvalidParameterError` for bad arguments or a model of more than
    :data:`MAX_PARAMETERS` parameters; ``None`` for a user's factory that cannot be built on
    the meta device (its size is then not checked).
    """
    shape = _check_arguments(name, num_classes, input_shape, kwargs)
    factory = MODELS.get(name)
    try:
        with torch.device("meta"):
            model = factory(input_shape=shape, num_classes=num_classes, **kwargs)
    except UnlearnkitError:
        raise
    except Exception:
        if name in ARCHITECTURES and MODELS.get(name) is ARCHITECTURES[name]:
            raise
        return None  # a user's factory doing what the meta device cannot (e.g. reading data)
    if not isinstance(model, nn.Module):
        return None
    size = sum(t.numel() for t in (*model.parameters(), *model.buffers()))
    if size > MAX_PARAMETERS:
        raise InvalidParameterError(
            f"Model {name!r} with arguments {kwargs or '(defaults)'} would have {size:,} "
            f"parameters ({size * 4 / 2**30:.1f} GiB as float32), more than the limit of "
            f"{MAX_PARAMETERS:,} (unlearnkit.models.registry.MAX_PARAMETERS)."
        )
    return model


def _check_arguments(
    name: str, num_classes: object, input_shape: object, kwargs: dict[str, Any]
) -> tuple[int, ...]:
    """Check the names and sizes of ``build_model``'s arguments; the input shape as a tuple."""
    MODELS.get(name)
    valid = model_options(name)
    for key in kwargs:
        if key not in valid:
            raise InvalidParameterError(
                f"Model {name!r} has no argument {key!r}.{did_you_mean(key, valid)} "
                f"Valid arguments: {', '.join(valid) or '(none)'}."
            )
    if (isinstance(num_classes, bool) or not isinstance(num_classes, int)
            or not 2 <= num_classes <= MAX_WIDTH):
        big = isinstance(num_classes, int) and num_classes > 2
        most = f" and at most {MAX_WIDTH}" if big else ""
        raise InvalidParameterError(
            f"The 'num_classes' parameter must be an int >= 2{most}. Got {short_repr(num_classes)} "
            "instead."
        )
    dims = list(input_shape) if isinstance(input_shape, Sequence) and not isinstance(
        input_shape, str) else None
    if (not dims or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool)
                            and d >= 1 for d in dims)
            or math.prod(int(d) for d in dims) > MAX_INPUT_SIZE):
        raise InvalidParameterError(
            "The 'input_shape' parameter must be a non-empty list of positive ints (of at most "
            f"{MAX_INPUT_SIZE} values in all). Got {short_repr(input_shape)} instead."
        )
    return tuple(int(d) for d in dims)
