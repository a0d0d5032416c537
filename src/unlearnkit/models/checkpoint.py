"""Checkpoints: a ``.safetensors`` file whose metadata holds the model's :class:`ModelInfo`.

Nothing is unpickled: tensors are read by safetensors, the metadata is JSON. A model built from
a registered architecture is rebuilt from the file alone; a user's own module is loaded by
passing a template instance.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
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

__all__ = [
    "atomic_write",
    "check_output_path",
    "load_checkpoint",
    "read_checkpoint_info",
    "save_checkpoint",
]

META_KEY = "unlearnkit"

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def check_output_path(path: str | os.PathLike) -> os.stat_result | None:
    """Refuse to write over anything but a regular file: return the existing file's stat, or
    ``None`` for a new path.

    A directory, a symbolic link (even to a regular file: replacing it would turn the link
    itself into a file), a FIFO, a device or a socket is refused with a one-line
    :class:`InvalidParameterError` naming the path and what it is.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError:  # e.g. a parent that is a file, or no permission: the writer says so
        return None
    if stat.S_ISREG(st.st_mode):
        return st
    kind = next((what for test, what in _KINDS if test(st.st_mode)), "not a regular file")
    if stat.S_ISLNK(st.st_mode):
        with contextlib.suppress(OSError):
            kind += f" (to {os.readlink(path)!r})"
    raise InvalidParameterError(
        f"Refusing to write {os.fspath(path)!r}: it is {kind}, not a regular file. Give the "
        "path of a regular file (it is replaced) or of a new one."
    )


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask would race other threads)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: callable) -> Path:  # type: ignore[valid-type]
    """Call ``write(tmp_path)`` then rename the temporary file to ``path``.

    Either the complete file appears at ``path`` or nothing does. ``path`` must be a new path
    or a regular file (see :func:`check_output_path`; checked before ``write`` and again just
    before the rename). The file gets the permissions ``open()`` would give it
    (``0o666 & ~umask``), or those of the regular file it replaces.
    """
    target = Path(path)
    check_output_path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        old = check_output_path(target)
        if old is not None:
            new = os.stat(tmp)
            if (new.st_uid, new.st_gid) != (old.st_uid, old.st_gid):
                # keep the owner too where allowed (root replacing a user's file)
                with contextlib.suppress(OSError):
                    os.chown(tmp, old.st_uid, old.st_gid)
        # mkstemp makes 0600: give what open() would, or keep the replaced file's bits
        os.chmod(tmp, 0o666 & ~_umask() if old is None else stat.S_IMODE(old.st_mode) & 0o777)
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
    except (ValueError, TypeError, RecursionError) as exc:  # RecursionError: nested too deep
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
    from unlearnkit.models.registry import MODELS, build_model, meta_model

    p = Path(path)
    info = read_checkpoint_info(p)
    try:
        with _open(p) as f:  # the header's shapes: nothing is read or allocated yet
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
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
        args = {"num_classes": info.num_classes, "input_shape": info.input_shape,
                **info.arch_kwargs}
        try:
            # First on the meta device (shapes, no memory): a small file whose metadata asks
            # for a huge model is refused before anything is allocated.
            skeleton = meta_model(info.arch, **args)
            if skeleton is not None:
                _check_shapes(p, shapes, skeleton)
            model = build_model(info.arch, **args)
        except CheckpointError:
            raise
        except (InvalidParameterError, TypeError, ValueError, RuntimeError, OverflowError) as exc:
            raise CheckpointError(
                f"{str(p)!r} records arguments for {info.arch!r} that cannot build it: {exc}"
            ) from None
    _check_shapes(p, shapes, model)
    try:
        with _open(p) as f:
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{str(p)!r} is corrupt: its tensors cannot be read: {exc}") from None
    if not allow_nonfinite:  # checked before loading: a refused load leaves ``model`` as it was
        check_finite_tensors(state.items(), f"The checkpoint {str(p)!r}")
    model.load_state_dict(state, strict=True)
    if info is not None:
        set_info(model, info)
    return model.to(device)


def _check_shapes(p: Path, shapes: dict[str, tuple[int, ...]], model: nn.Module) -> None:
    """Raise :class:`CheckpointError` unless the file's tensors (names and shapes, from its
    header) are exactly ``model``'s state dict."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = sorted(
        f"{k}: file {shapes[k]} vs model {expected[k]}"
        for k in set(shapes) & set(expected)
        if shapes[k] != expected[k]
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
