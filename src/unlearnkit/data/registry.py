"""The dataset registry: every dataset is found by name through :func:`load_dataset`."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from unlearnkit.data.containers import DataBundle
from unlearnkit.exceptions import InvalidParameterError
from unlearnkit.registry import Registry, did_you_mean

__all__ = ["DATASETS", "DatasetSpec", "default_data_root", "load_dataset", "register_dataset"]


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its loader and what the CLI's ``datasets`` command shows."""

    name: str
    loader: Callable[..., DataBundle]
    description: str
    num_classes: int | None
    input_shape: tuple[int, ...] | None
    needs_root: bool
    formats: tuple[str, ...] = ()

    def options(self) -> list[str]:
        """Keyword options the loader accepts besides ``root`` and ``download``."""
        params = inspect.signature(self.loader).parameters
        return [p for p in params if p not in ("root", "download")]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "needs_data_root": self.needs_root,
            "formats": list(self.formats),
            "options": self.options(),
        }


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(
    name: str,
    *,
    description: str,
    num_classes: int | None,
    input_shape: tuple[int, ...] | None,
    needs_root: bool,
    formats: tuple[str, ...] = (),
) -> Callable[[Callable[..., DataBundle]], Callable[..., DataBundle]]:
    """Register ``loader(root, download, **options) -> DataBundle`` under ``name``."""

    def wrap(loader: Callable[..., DataBundle]) -> Callable[..., DataBundle]:
        DATASETS.register(
            name,
            DatasetSpec(name, loader, description, num_classes, input_shape, needs_root, formats),
        )
        return loader

    return wrap


def default_data_root() -> Path:
    """``$UNLEARNKIT_DATA`` if set, else ``~/.cache/unlearnkit/data``."""
    env = os.environ.get("UNLEARNKIT_DATA")
    return Path(env) if env else Path.home() / ".cache" / "unlearnkit" / "data"


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    download: bool = False,
    **options: object,
) -> DataBundle:
    """Load a registered dataset by name.

    Args:
        name: a registered name (``unlearnkit datasets`` lists them), e.g. ``"digits"``.
        root: the folder (or, for image-folder datasets, the archive) holding the files.
            Defaults to ``$UNLEARNKIT_DATA`` or ``~/.cache/unlearnkit/data``.
        download: fetch missing files from their public address (checksums verified).
        **options: loader-specific options (``unlearnkit datasets`` lists them).

    Returns:
        A :class:`DataBundle` with ``.train``, ``.test``, ``.num_classes`` and ``.class_names``.
    """
    spec = DATASETS.get(name)
    valid = spec.options()
    for key in options:
        if key not in valid:
            raise InvalidParameterError(
                f"Dataset {name!r} has no option {key!r}.{did_you_mean(key, valid)} "
                f"Valid options: {', '.join(valid) or '(none)'}."
            )
    root_path = Path(root).expanduser() if root is not None else None
    if spec.needs_root and root_path is None:
        root_path = default_data_root() / name
    return spec.loader(root=root_path, download=download, **options)
