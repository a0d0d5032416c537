"""Checkpoints: a ``.safetensors`` file whose metadata holds the model's :class:`ModelInfo`.

Nothing is unpickled: tensors are read by safetensors, the metadata is JSON. A model built from
a registered architecture is rebuilt from the file alone; a user's own module is loaded by
passing a template instance.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from unlearnkit.exceptions import CheckpointError, InvalidParameterError
from unlearnkit.models.info import (
    ModelInfo,
    check_finite,
    check_finite_tensors,
    get_info,
    set_info,
)

__all__ = ["atomic_write", "load_checkpoint", "read_checkpoint_info", "save_checkpoint"]

META_KEY = "unlearnkit"


def atomic_write(path: str | os.PathLike, write: callable) -> Path:  # type: ignore[valid-type]
    """Call ``write(tmp_path)`` then rename the temporary file to ``path``.

    Either the complete file appears at ``path`` or nothing does.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def save_checkpoint(
    model: nn.Module, path: str | os.PathLike, *, info: ModelInfo | None = None
) -> Path:
    """Save ``model``'s weights and provenance to ``path`` (``.safetensors``), atomically."""
    info = info or get_info(model) or ModelInfo()
    check_finite(model, "The model to save")
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {META_KEY: json.dumps(info.to_dict(), sort_keys=True)}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def _open(path: Path):
    if not path.is_file():
        raise CheckpointError(f"Checkpoint not found: {str(path)!r}.")
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(
            f"{str(path)!r} is not a valid safetensors checkpoint (corrupt or truncated): {exc}"
        ) from None


def read_checkpoint_info(path: str | os.PathLike) -> ModelInfo | None:
    """The :class:`ModelInfo` stored in a checkpoint, or ``None`` if it has none."""
    with _open(Path(path)) as f:
        meta = f.metadata() or {}
    raw = meta.get(META_KEY)
    if raw is None:
        return None
    try:
        return ModelInfo.from_dict(json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{str(path)!r} has unreadable unlearnkit metadata: {exc}") from None


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module | None = None,
    device: str | torch.device = "cpu",
    allow_nonfinite: bool = False,
) -> nn.Module:
    """Load a checkpoint into a new model (rebuilt from its metadata) or into ``model``.

    Args:
        path: the ``.safetensors`` file.
        model: a template of the user's own architecture; its weights are replaced in place.
            Without it, the architecture recorded in the file is built.
        device: where to put the loaded model.
        allow_nonfinite: accept weights holding NaN or inf (refused by default).

    Raises:
        CheckpointError: missing, corrupt, or not matching the architecture.
        ModelError: non-finite weights.
    """
    from unlearnkit.models.registry import MODELS, build_model

    p = Path(path)
    info = read_checkpoint_info(p)
    try:
        with _open(p) as f:
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{str(p)!r} is corrupt: its tensors cannot be read: {exc}") from None
    if model is None:
        if info is None or info.arch is None:
            raise CheckpointError(
                f"{str(p)!r} does not record a registered architecture; pass the model to load "
                "it into: load_checkpoint(path, model=MyNet())."
            )
        if info.arch not in MODELS:
            raise CheckpointError(
                f"{str(p)!r} was saved from architecture {info.arch!r}, which is not registered "
                f"here. Registered: {', '.join(MODELS.names())}."
            )
        if info.num_classes is None or info.input_shape is None:
            raise CheckpointError(f"{str(p)!r} lacks num_classes or input_shape in its metadata.")
        try:
            model = build_model(
                info.arch, num_classes=info.num_classes, input_shape=info.input_shape,
                **info.arch_kwargs,
            )
        except (InvalidParameterError, TypeError) as exc:
            raise CheckpointError(
                f"{str(p)!r} records arguments for {info.arch!r} that cannot build it: {exc}"
            ) from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if wrong:
            parts.append(f"shape mismatch {wrong[:5]}")
        raise CheckpointError(
            f"{str(p)!r} does not match the model's architecture: {'; '.join(parts)}."
        )
    if not allow_nonfinite:  # checked before loading: a refused load leaves ``model`` as it was
        check_finite_tensors(state.items(), f"The checkpoint {str(p)!r}")
    model.load_state_dict(state, strict=True)
    if info is not None:
        set_info(model, info)
    return model.to(device)
