"""Calling a user's model: inputs of any form in, logits out.

Every forward pass of the library goes through :func:`forward`, so that a model which takes
keyword arguments and returns a Hugging Face ``ModelOutput`` is used exactly like one that maps
a tensor to a tensor of logits. Nothing here imports ``transformers``: a Hugging Face model is
recognised by what it has (a ``config`` and ``from_pretrained``), not by its class.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from unlearnkit.data.batches import Inputs
from unlearnkit.exceptions import ModelError

__all__ = ["forward", "is_hugging_face", "logits_of"]


def forward(model: nn.Module, x: Inputs) -> torch.Tensor:
    """The logits of ``model`` on the input ``x``: ``model(x)``, ``model(**x)`` for a dict
    input, ``model(*x)`` for a tuple input, read with :func:`logits_of`."""
    if isinstance(x, torch.Tensor):
        out = model(x)
    elif isinstance(x, Mapping):
        out = model(**x)
    else:
        out = model(*x)
    return logits_of(out)


def logits_of(out: Any) -> torch.Tensor:
    """The logits in a model's output: the output itself when it is a tensor, its ``logits``
    (Hugging Face's ``ModelOutput``, or a dict), or the first item of a tuple."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, Mapping) and isinstance(out.get("logits"), torch.Tensor):
        return out["logits"]
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ModelError(
        f"The model returned {type(out).__name__}, which holds no logits: unlearnkit reads a "
        "tensor, an output with a 'logits' field (Hugging Face), or a tuple whose first item "
        "is the logits."
    )


def is_hugging_face(model: nn.Module) -> bool:
    """Whether ``model`` is a Hugging Face ``PreTrainedModel`` (without importing
    transformers)."""
    return hasattr(model, "config") and callable(getattr(model, "from_pretrained", None)) and (
        callable(getattr(model, "post_init", None)))
