"""Unpickling dataset files without running their code.

CIFAR's "python version" is a set of pickles. A pickle can name any importable callable and
have it called while loading (``os.system`` included), so they are read with
:class:`RestrictedUnpickler`, which admits only the numpy array reconstructors and a few inert
built-in types; any other global raises :class:`~unlearnkit.exceptions.DataError` before
anything is called.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from unlearnkit.exceptions import DataError

__all__ = ["ALLOWED_GLOBALS", "RestrictedUnpickler", "safe_load", "safe_loads"]


def _numpy_core() -> Any:
    """``numpy._core`` (numpy 2) or ``numpy.core`` (numpy 1.x)."""
    core = getattr(np, "_core", None)
    return core if core is not None and hasattr(core, "multiarray") else np.core


_core = _numpy_core()

#: ``(module, name)`` pairs a dataset pickle may reference, and what each resolves to.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
for _pkg in ("numpy.core", "numpy._core"):  # pickles name the module of the numpy that wrote them
    ALLOWED_GLOBALS[(f"{_pkg}.multiarray", "_reconstruct")] = _core.multiarray._reconstruct
    ALLOWED_GLOBALS[(f"{_pkg}.multiarray", "scalar")] = _core.multiarray.scalar
    ALLOWED_GLOBALS[(f"{_pkg}.numeric", "_frombuffer")] = _core.numeric._frombuffer


def _codecs_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode``, which Python 3 protocol-2 pickles use for ``bytes``; text codecs only."""
    if encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1", "utf-8"):
        raise DataError(f"Refusing to unpickle _codecs.encode with codec {encoding!r}.")
    return text.encode(encoding)


ALLOWED_GLOBALS[("_codecs", "encode")] = _codecs_encode
# Inert containers and scalars (Python 2 pickles say __builtin__, which pickle maps to builtins).
for _type in (list, dict, tuple, set, frozenset, bytes, bytearray, str, int, float, complex, bool):
    ALLOWED_GLOBALS[("builtins", _type.__name__)] = _type


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS` and refuses everything else."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(
                f"Refusing to unpickle the global {module}.{name}: a dataset file may only "
                "reference numpy arrays and plain built-in types. The file is corrupt or was "
                "crafted to run code; do not open it with pickle."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise DataError("Refusing to unpickle a persistent reference: not a dataset file.")


def safe_loads(data: bytes, *, encoding: str = "latin1", where: str = "pickle data") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`.

    Args:
        data: the pickle's bytes.
        encoding: how Python 2 ``str`` objects are decoded (``"latin1"`` keeps numpy arrays of
            Python 2 pickles intact; ``"bytes"`` leaves them as bytes).
        where: a name for the source, used in error messages.

    Raises:
        DataError: a forbidden global, or data that is not a valid pickle.
    """
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()
    except DataError:
        raise
    except Exception as exc:  # a corrupt pickle raises many types (EOFError, ValueError, ...)
        raise DataError(f"Could not unpickle {where}: {type(exc).__name__}: {exc}") from None


def safe_load(path: str | os.PathLike, *, encoding: str = "latin1") -> Any:
    """Unpickle the file at ``path`` with :class:`RestrictedUnpickler` (see :func:`safe_loads`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"Could not read {str(path)!r}: {exc}") from None
    return safe_loads(data, encoding=encoding, where=repr(str(path)))
