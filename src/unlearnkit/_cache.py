"""Where unlearnkit keeps what it can recompute: importances, decoded images, model pools."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["cache_root", "hash_model", "hash_tensors"]


def cache_root() -> Path:
    """``$UNLEARNKIT_CACHE`` if set, else ``~/.cache/unlearnkit``."""
    env = os.environ.get("UNLEARNKIT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "unlearnkit"


def hash_tensors(*tensors: Any, h: hashlib._Hash | None = None) -> str:
    """SHA-256 over the shapes, dtypes and bytes of ``tensors``; a dict or tuple of tensors (a
    model input, see :mod:`unlearnkit.data.batches`) counts its keys and each tensor."""
    h = h or hashlib.sha256()
    for t in tensors:
        if isinstance(t, Mapping):
            for k in sorted(t):
                h.update(f"<{k}>".encode())
                hash_tensors(t[k], h=h)
            continue
        if isinstance(t, (tuple, list)):
            h.update(f"<tuple {len(t)}>".encode())
            hash_tensors(*t, h=h)
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}{t.dtype}".encode())
        # flattened first: a 0-d tensor (BatchNorm's num_batches_tracked) cannot be viewed
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def hash_model(model: nn.Module) -> str:
    """SHA-256 over a model's state dict (names, shapes, values)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        hash_tensors(t, h=h)
    return h.hexdigest()
