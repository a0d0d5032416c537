"""The IDX file format of MNIST and Fashion-MNIST, parsed with numpy.

An IDX file is a 4-byte magic number ``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian
uint32 dimensions, then the values in C order. MNIST images are type ``0x08`` (uint8) with three
dimensions ``(N, 28, 28)``; labels are uint8 with one dimension ``(N,)``. Files may be gzipped.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from unlearnkit.exceptions import DataError

__all__ = ["read_idx", "write_idx"]

#: IDX type codes and the big-endian numpy dtypes they stand for.
_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder(">") if dt.itemsize > 1 else dt: code for code, dt in _TYPES.items()}


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        if head == b"\x1f\x8b":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"Could not read IDX file {str(path)!r}: {exc}") from None


def read_idx(
    path: str | os.PathLike, *, ndim: int | None = None, dtype: np.dtype | None = None
) -> np.ndarray:
    """Read an IDX file (gzipped or not) into an array of its native shape.

    Args:
        path: the file.
        ndim: the number of dimensions the caller expects (checked if given).
        dtype: the value type the caller expects (checked if given).

    Returns:
        The values, in native byte order.

    Raises:
        DataError: bad magic number, unexpected type or dimensions, or a size that does not match
            the header (truncated or padded file).
    """
    path = Path(path)
    raw = _read_bytes(path)
    where = f"IDX file {str(path)!r}"
    if len(raw) < 4:
        raise DataError(f"{where} is too short ({len(raw)} bytes) to hold an IDX header.")
    zero, code, nd = raw[0:2], raw[2], raw[3]
    if zero != b"\x00\x00" or code not in _TYPES:
        raise DataError(
            f"{where} has magic number 0x{raw[:4].hex()}, expected 0x0000TTNN with type TT in "
            f"{{{', '.join(f'{c:02x}' for c in _TYPES)}}}: not an IDX file, or corrupt."
        )
    value_type = _TYPES[code]
    if ndim is not None and nd != ndim:
        raise DataError(f"{where} has {nd} dimensions, expected {ndim}.")
    if dtype is not None and value_type != np.dtype(dtype):
        raise DataError(f"{where} holds {value_type} values, expected {np.dtype(dtype)}.")
    header = 4 + 4 * nd
    if len(raw) < header:
        raise DataError(f"{where} is truncated inside its header ({len(raw)} bytes).")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=nd, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * value_type.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{where}: the header announces shape {shape} ({expected} bytes of data) but the file "
            f"holds {len(raw) - header} bytes after the header: truncated or corrupt."
        )
    data = np.frombuffer(raw, dtype=value_type, offset=header).reshape(shape)
    return data.astype(value_type.newbyteorder("="), copy=True)


def write_idx(path: str | os.PathLike, array: np.ndarray, *, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file (gzipped if ``compress``, default: if the name ends .gz).

    Useful for tests and for exporting data in MNIST's format.
    """
    path = Path(path)
    arr = np.asarray(array)
    dt = arr.dtype.newbyteorder(">") if arr.dtype.itemsize > 1 else arr.dtype
    if dt not in _CODES:
        raise DataError(f"IDX cannot store values of dtype {arr.dtype}.")
    header = bytes([0, 0, _CODES[dt], arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes()
    payload = header + arr.astype(dt).tobytes()
    if compress is None:
        compress = path.name.endswith(".gz")
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path
