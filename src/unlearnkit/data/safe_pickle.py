"""Unpickling dataset files without running their code or letting them claim unbounded memory.

CIFAR's "python version" is a set of pickles. A pickle can name any importable callable and
have it called while loading (``os.system`` included), so they are read with
:class:`RestrictedUnpickler`, which admits only the numpy array reconstructors and a few inert
built-in types; any other global raises :class:`~unlearnkit.exceptions.DataError` before
anything is called.

The admitted constructors can still allocate in proportion to an argument (``bytearray(N)``,
an array of a given shape), and a pickle can call them many times on the same memoized object.
So every call, and every array or dtype state set by the ``BUILD`` opcode, is charged against
a budget of :data:`MAX_SIZE_FACTOR` times the pickle's own size (at least
:data:`MIN_SIZE_BUDGET`), before anything is allocated; a pickle that would exceed it is refused
with a :class:`~unlearnkit.exceptions.DataError`. Object arrays, structured dtypes and dtype
states that disagree with their type code are refused too (numpy would crash on some of them).

The unpickler is Python's own pure-Python one, with these opcodes checked: the C unpickler
cannot be hooked at ``BUILD``, and it sizes its memo table from the index a ``LONG_BINPUT``
names (a 9-byte pickle takes 4 GB there).
"""

from __future__ import annotations

import io
import math
import operator
import os
import pickle
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from unlearnkit.exceptions import DataError

__all__ = [
    "ALLOWED_GLOBALS",
    "MAX_SIZE_FACTOR",
    "MIN_SIZE_BUDGET",
    "RestrictedUnpickler",
    "safe_load",
    "safe_loads",
]

#: What the constructors a pickle calls may allocate in all, as a multiple of the pickle's size.
MAX_SIZE_FACTOR = 8
#: The budget of a small pickle (bytes): a few-byte file may still build a megabyte.
MIN_SIZE_BUDGET = 1 << 20

# Bytes charged per element of a container built by calling list(), set(), dict()...: the slot
# plus, when iterating a string, bytes or an array, the new element object.
_SLOT = 8
_HASHED_SLOT = 64
_NEW_ITEM = 128
_SMALL = 64  # a number, a bool, a dtype
_MAX_DIMS = 64


def _numpy_core() -> Any:
    """``numpy._core`` (numpy 2) or ``numpy.core`` (numpy 1.x)."""
    core = getattr(np, "_core", None)
    return core if core is not None and hasattr(core, "multiarray") else np.core


_core = _numpy_core()
_reconstruct = _core.multiarray._reconstruct
_scalar = _core.multiarray.scalar
_frombuffer = _core.numeric._frombuffer

#: ``(module, name)`` pairs a dataset pickle may reference, and what each resolves to.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
for _pkg in ("numpy.core", "numpy._core"):  # pickles name the module of the numpy that wrote them
    ALLOWED_GLOBALS[(f"{_pkg}.multiarray", "_reconstruct")] = _reconstruct
    ALLOWED_GLOBALS[(f"{_pkg}.multiarray", "scalar")] = _scalar
    ALLOWED_GLOBALS[(f"{_pkg}.numeric", "_frombuffer")] = _frombuffer

_LATIN1 = ("latin1", "latin-1", "iso-8859-1")


def _codecs_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode``, which Python 3 protocol-2 pickles use for ``bytes``; text codecs only."""
    if encoding.lower().replace("_", "-") not in (*_LATIN1, "utf-8"):
        raise DataError(f"Refusing to unpickle _codecs.encode with codec {encoding!r}.")
    return text.encode(encoding)


ALLOWED_GLOBALS[("_codecs", "encode")] = _codecs_encode
# Inert containers and scalars (Python 2 pickles say __builtin__, which is read as builtins).
for _type in (list, dict, tuple, set, frozenset, bytes, bytearray, str, int, float, complex, bool):
    ALLOWED_GLOBALS[("builtins", _type.__name__)] = _type


class _Marker:
    """What ``numpy.ndarray`` resolves to: an argument of ``_reconstruct``, never callable (a
    direct ``ndarray(shape)`` call would allocate unchecked)."""

    def __repr__(self) -> str:
        return "numpy.ndarray"


_NDARRAY = _Marker()


class _Guarded:
    """An admitted callable as the unpickler hands it out: the call goes through a checker that
    charges what it will build to the unpickler's budget first."""

    __slots__ = ("call", "name", "owner")

    def __init__(self, owner: RestrictedUnpickler, name: str, call: Callable[..., Any]) -> None:
        self.owner, self.name, self.call = owner, name, call

    def __call__(self, *args: Any) -> Any:
        return self.call(*args)

    def __repr__(self) -> str:
        return self.name


def _buffer_size(obj: Any) -> int | None:
    try:
        with memoryview(obj) as view:
            return view.nbytes
    except TypeError:
        return None


def _index(obj: Any) -> int | None:
    """``obj`` as an integer the way ``bytes(obj)`` reads it, or ``None``."""
    if not hasattr(type(obj), "__index__"):
        return None
    try:
        return operator.index(obj)
    except TypeError:  # e.g. an array of more than one element
        return None


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


class RestrictedUnpickler(pickle._Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS` and bounds what they build.

    Args:
        file: a binary file to read the pickle from.
        where: a name for the source, used in error messages.
        size: the pickle's size in bytes, which sets the budget (default: the file's size).
        **kwargs: ``encoding``, ``errors``, ``fix_imports`` as for :class:`pickle.Unpickler`.
    """

    def __init__(self, file: Any, *, where: str = "pickle data", size: int | None = None,
                 **kwargs: Any) -> None:
        kwargs.pop("buffers", None)  # out-of-band buffers are never accepted
        super().__init__(file, **kwargs)
        if size is None:
            size = _file_size(file)
        self._where = where
        self._size = size
        self._budget = max(MAX_SIZE_FACTOR * size, MIN_SIZE_BUDGET)
        self._spent = 0
        self._guards: dict[tuple[str, str], Any] = {}
        read = self._file_read

        def strict_read(n: int = -1) -> bytes:
            data = read(n)
            if n is not None and n > 0 and len(data) < n:
                raise pickle.UnpicklingError("pickle data was truncated")
            return data

        self._file_read = strict_read

    # ------------------------------------------------------------------ refusals and budget
    def _refuse(self, why: str) -> DataError:
        return DataError(
            f"Refusing to unpickle {self._where}: {why}. The file is corrupt or was crafted; a "
            "dataset file holds only numpy arrays and plain built-in values."
        )

    def _charge(self, nbytes: int, what: str) -> None:
        if nbytes > self._budget - self._spent:
            raise DataError(
                f"Refusing to unpickle {self._where}: {what} would take {nbytes} bytes, more than "
                f"a {self._size}-byte pickle may build ({MAX_SIZE_FACTOR}x its size, at least "
                f"{MIN_SIZE_BUDGET} bytes, {self._budget} in all). The file is corrupt or was "
                "crafted."
            )
        self._spent += nbytes

    def find_class(self, module: str, name: str) -> Any:
        if module == "__builtin__":
            module = "builtins"
        key = (module, name)
        if key not in ALLOWED_GLOBALS:
            raise DataError(
                f"Refusing to unpickle the global {module}.{name} in {self._where}: a dataset "
                "file may only "
                "reference numpy arrays and plain built-in types. The file is corrupt or was "
                "crafted to run code; do not open it with pickle."
            )
        if key == ("numpy", "ndarray"):
            return _NDARRAY
        if key not in self._guards:
            target = ALLOWED_GLOBALS[key]
            checker = self._checkers().get(target)
            if checker is None:  # pragma: no cover - every admitted callable has a checker
                raise self._refuse(f"{module}.{name} has no size check")
            self._guards[key] = _Guarded(self, f"{module}.{name}", checker)
        return self._guards[key]

    def persistent_load(self, pid: Any) -> Any:
        raise DataError("Refusing to unpickle a persistent reference: not a dataset file.")

    # ------------------------------------------------------------------ checked constructors
    def _checkers(self) -> dict[Any, Callable[..., Any]]:
        return {
            np.dtype: self._new_dtype,
            _reconstruct: self._new_array,
            _scalar: self._new_scalar,
            _frombuffer: self._new_frombuffer,
            _codecs_encode: self._new_encoded,
            bytes: lambda *a: self._new_bytes(bytes, *a),
            bytearray: lambda *a: self._new_bytes(bytearray, *a),
            str: self._new_str,
            int: self._new_int,
            float: lambda *a: self._new_small(float, *a),
            complex: lambda *a: self._new_small(complex, *a),
            bool: lambda *a: self._new_small(bool, *a),
            list: lambda *a: self._new_container(list, _SLOT, *a),
            tuple: lambda *a: self._new_container(tuple, _SLOT, *a),
            set: lambda *a: self._new_container(set, _HASHED_SLOT, *a),
            frozenset: lambda *a: self._new_container(frozenset, _HASHED_SLOT, *a),
            dict: lambda *a: self._new_container(dict, _HASHED_SLOT, *a),
        }

    def _dtype(self, value: Any) -> np.dtype:
        """``value`` (a dtype or a type code) as a plain dtype: no objects, no fields, no
        sub-array, and a state that agrees with its type code."""
        if isinstance(value, (str, bytes)) and len(value) <= 64:
            try:
                value = np.dtype(value)
            except TypeError as exc:
                raise self._refuse(f"unknown array type code {value!r} ({exc})") from None
        if not isinstance(value, np.dtype):
            raise self._refuse(f"an array type is a {type(value).__name__}, not a numpy dtype")
        if value.hasobject or value.fields is not None or value.subdtype is not None:
            raise self._refuse(
                f"the dtype {value!r} holds Python objects, fields or a sub-array, which dataset "
                "arrays do not"
            )
        try:
            canonical = np.dtype(value.str)
        except TypeError:  # e.g. a flexible type whose state set a negative size
            canonical = None
        if (canonical is None or canonical != value or canonical.itemsize != value.itemsize
                or canonical.flags != value.flags or canonical.alignment != value.alignment):
            raise self._refuse(f"the dtype state of {value.str!r} disagrees with its type code")
        return value

    def _nbytes(self, shape: Any, dtype: np.dtype) -> tuple[tuple[int, ...], int]:
        if _is_int(shape):
            shape = (shape,)
        if (not isinstance(shape, (tuple, list)) or len(shape) > _MAX_DIMS
                or not all(_is_int(d) and d >= 0 for d in shape)):
            raise self._refuse(f"an array shape is {shape!r}, not a tuple of sizes")
        dims = tuple(int(d) for d in shape)
        return dims, math.prod(dims) * dtype.itemsize

    def _new_dtype(self, obj: Any, align: Any = False, copy: Any = True) -> np.dtype:
        if not isinstance(obj, (str, bytes)) or len(obj) > 64:
            raise self._refuse(f"numpy.dtype is given a {type(obj).__name__}, not a type code")
        self._charge(_SMALL, "a dtype")
        # Always a copy: BUILD then sets the state of this dtype, never of numpy's shared one.
        return self._dtype(np.dtype(obj, bool(align), True))

    def _new_array(self, subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        if subtype is not _NDARRAY:
            raise self._refuse(f"_reconstruct builds a {subtype!r}, not a numpy.ndarray")
        dt = self._dtype(dtype)
        dims, nbytes = self._nbytes(shape, dt)
        self._charge(nbytes, f"a numpy array of shape {dims} and dtype {dt}")
        return _reconstruct(np.ndarray, dims, dt)

    def _new_scalar(self, dtype: Any, data: Any = None) -> Any:
        dt = self._dtype(dtype)
        if not isinstance(data, (bytes, str)) or len(data) != dt.itemsize:
            raise self._refuse(f"a numpy {dt} scalar is not given its {dt.itemsize} bytes")
        self._charge(2 * dt.itemsize + _SMALL, f"a numpy {dt} scalar")
        return _scalar(dt, data)

    def _new_frombuffer(self, buf: Any, dtype: Any, shape: Any, order: Any = "C") -> np.ndarray:
        dt = self._dtype(dtype)
        dims, nbytes = self._nbytes(shape, dt)
        if _buffer_size(buf) != nbytes:
            raise self._refuse(f"an array of shape {dims} and dtype {dt} is not given its "
                               f"{nbytes} bytes")
        self._charge(nbytes, f"a numpy array of shape {dims} and dtype {dt}")
        return _frombuffer(buf, dt, dims, order)

    def _new_encoded(self, text: Any, encoding: Any = "utf-8") -> bytes:
        if not isinstance(text, str) or not isinstance(encoding, str):
            raise self._refuse("_codecs.encode is not given a string and a codec name")
        latin = encoding.lower().replace("_", "-") in _LATIN1
        self._charge(len(text) if latin or text.isascii() else 4 * len(text), "encoded text")
        return _codecs_encode(text, encoding)

    def _new_bytes(self, kind: type, *args: Any) -> Any:
        name = kind.__name__
        if args:
            x = args[0]
            if isinstance(x, str):
                nbytes = 4 * len(x)
            elif (size := _index(x)) is not None:
                nbytes = size  # bytes(N): N zero bytes
            elif (size := _buffer_size(x)) is not None:
                nbytes = size
            elif isinstance(x, (list, tuple, set, frozenset, dict)):
                nbytes = len(x)
            else:
                raise self._refuse(f"{name}() is given a {type(x).__name__}")
            self._charge(max(nbytes, 0), f"{name}()")
        return kind(*args)

    def _new_str(self, *args: Any) -> str:
        if args:
            x = args[0]
            if isinstance(x, str):
                nbytes = 0
            elif len(args) > 1 and (size := _buffer_size(x)) is not None:
                nbytes = 4 * size  # decoding: at most 4 bytes a character
            elif isinstance(x, (bytes, bytearray)):
                nbytes = 4 * len(x) + _SMALL  # repr
            elif isinstance(x, (bool, float, complex)):
                nbytes = _SMALL
            elif isinstance(x, int):
                nbytes = x.bit_length() // 3 + _SMALL
            else:  # the repr of a container can be exponential in the pickle's size
                raise self._refuse(f"str() of a {type(x).__name__}")
            self._charge(nbytes, "str()")
        return str(*args)

    def _new_int(self, *args: Any) -> int:
        x = args[0] if args else 0
        self._charge(len(x) if isinstance(x, (str, bytes, bytearray)) else _SMALL, "int()")
        return int(*args)

    def _new_small(self, kind: type, *args: Any) -> Any:
        if any(isinstance(a, (str, bytes, bytearray)) for a in args):
            self._charge(sum(len(a) for a in args if isinstance(a, (str, bytes, bytearray))),
                         f"{kind.__name__}()")
        self._charge(_SMALL, f"{kind.__name__}()")
        return kind(*args)

    def _new_container(self, kind: type, per_slot: int, *args: Any) -> Any:
        if args:
            x = args[0]
            try:
                n = len(x)
            except TypeError:
                raise self._refuse(f"{kind.__name__}() is given a {type(x).__name__}") from None
            new_items = isinstance(x, (str, bytes, bytearray, np.ndarray))
            self._charge(n * (per_slot + (_NEW_ITEM if new_items else 0)),
                         f"{kind.__name__}() of {n} items")
        return kind(*args)

    # ------------------------------------------------------------------ checked opcodes
    dispatch = dict(pickle._Unpickler.dispatch)

    def _load_reduce(self) -> None:
        stack = self.stack
        args = stack.pop()
        func = stack[-1]
        if not (isinstance(func, _Guarded) and func.owner is self):
            raise self._refuse(f"it calls {func!r}, which is not an admitted constructor")
        if type(args) is not tuple:
            raise self._refuse(f"the arguments of {func!r} are a {type(args).__name__}")
        stack[-1] = func(*args)

    dispatch[pickle.REDUCE[0]] = _load_reduce

    def _refuse_opcode(self) -> None:
        raise self._refuse(
            "it instantiates a class through INST, OBJ, NEWOBJ or NEWOBJ_EX, which dataset "
            "pickles never do"
        )

    dispatch.update(dict.fromkeys(
        (pickle.INST[0], pickle.OBJ[0], pickle.NEWOBJ[0], pickle.NEWOBJ_EX[0]), _refuse_opcode
    ))

    def _load_bytearray8(self) -> None:
        (n,) = struct.unpack("<Q", self.read(8))
        if n > self._size:
            raise self._refuse(f"a bytearray claims {n} bytes, more than the whole pickle holds")
        self.append(bytearray(self.read(n)))

    dispatch[pickle.BYTEARRAY8[0]] = _load_bytearray8

    def _target(self, kind: type, opcode: str) -> Any:
        target = self.stack[-1]
        if type(target) is not kind:
            raise self._refuse(f"{opcode} is applied to a {type(target).__name__}, not a "
                               f"{kind.__name__}")
        return target

    def _load_append(self) -> None:
        value = self.stack.pop()
        self._target(list, "APPEND").append(value)

    def _load_appends(self) -> None:
        items = self.pop_mark()
        self._target(list, "APPENDS").extend(items)

    def _load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self._target(dict, "SETITEM")[key] = value

    def _load_setitems(self) -> None:
        items = self.pop_mark()
        target = self._target(dict, "SETITEMS")
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]

    def _load_additems(self) -> None:
        items = self.pop_mark()
        self._target(set, "ADDITEMS").update(items)

    dispatch[pickle.APPEND[0]] = _load_append
    dispatch[pickle.APPENDS[0]] = _load_appends
    dispatch[pickle.SETITEM[0]] = _load_setitem
    dispatch[pickle.SETITEMS[0]] = _load_setitems
    dispatch[pickle.ADDITEMS[0]] = _load_additems

    def _load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if type(inst) is np.ndarray:
            self._set_array_state(inst, state)
        elif isinstance(inst, np.dtype):
            self._set_dtype_state(inst, state)
        else:
            raise self._refuse(f"it sets the state of a {type(inst).__name__}")

    dispatch[pickle.BUILD[0]] = _load_build

    def _set_array_state(self, array: np.ndarray, state: Any) -> None:
        if type(state) is not tuple or len(state) not in (4, 5):
            raise self._refuse("an array state is not numpy's (shape, dtype, order, data)")
        shape, dtype, _fortran, raw = state[-4:]
        dt = self._dtype(dtype)
        dims, nbytes = self._nbytes(shape, dt)
        if not isinstance(raw, (bytes, str)) or len(raw) != nbytes:
            got = f"{len(raw)} bytes" if isinstance(raw, (bytes, str)) else type(raw).__name__
            raise self._refuse(
                f"an array of shape {dims} and dtype {dt} needs {nbytes} bytes of data, got {got}"
            )
        self._charge(nbytes, f"a numpy array of shape {dims} and dtype {dt}")
        array.__setstate__(state)

    def _set_dtype_state(self, dtype: np.dtype, state: Any) -> None:
        # numpy's layouts: (3, order, subarray, names, fields, elsize, alignment, flags) and
        # version 4 with metadata; only plain types (no sub-array, names or fields) are read.
        if (type(state) is not tuple or len(state) not in (8, 9) or state[0] not in (3, 4)
                or any(part is not None for part in state[2:5])):
            raise self._refuse("a dtype state is not that of a plain numpy type")
        self._charge(_SMALL, "a dtype")
        dtype.__setstate__(state)
        self._dtype(dtype)


def _file_size(file: Any) -> int:
    """The size of a BytesIO or of a real file, or 0 if unknown (the minimum budget applies)."""
    if isinstance(file, io.BytesIO):
        return file.getbuffer().nbytes
    try:
        return os.fstat(file.fileno()).st_size
    except (AttributeError, OSError, ValueError):
        return 0


def safe_loads(data: bytes, *, encoding: str = "latin1", where: str = "pickle data") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`.

    Args:
        data: the pickle's bytes.
        encoding: how Python 2 ``str`` objects are decoded (``"latin1"`` keeps numpy arrays of
            Python 2 pickles intact; ``"bytes"`` leaves them as bytes).
        where: a name for the source, used in error messages.

    Raises:
        DataError: a forbidden global or opcode, a constructor or array beyond the size budget,
            or data that is not a valid pickle.
    """
    try:
        unpickler = RestrictedUnpickler(io.BytesIO(data), where=where, size=len(data),
                                        encoding=encoding)
        return unpickler.load()
    except DataError:
        raise
    except Exception as exc:  # a corrupt pickle raises many types (EOFError, ValueError, ...)
        message = " ".join(str(exc).split())  # one line
        raise DataError(f"Could not unpickle {where}: {type(exc).__name__}: {message}") from None


def safe_load(path: str | os.PathLike, *, encoding: str = "latin1") -> Any:
    """Unpickle the file at ``path`` with :class:`RestrictedUnpickler` (see :func:`safe_loads`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"Could not read {str(path)!r}: {exc}") from None
    return safe_loads(data, encoding=encoding, where=repr(str(path)))
