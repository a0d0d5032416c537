"""Reading a small file a user names (an id list, a calibration history): its size checked
before a byte is read, every failure one line that names the file."""

from __future__ import annotations

import os
from pathlib import Path


def read_small_text(path: str | os.PathLike, *, where: str, limit: int, holds: str,
                    error: type[Exception]) -> str:
    """The UTF-8 text of the file at ``path``.

    Args:
        where: the file as messages name it, e.g. ``"The id file 'ids.txt'"``.
        limit: the most bytes accepted.
        holds: what ``limit`` bytes are for, ending the message of a file too large (``"more
            than the 1024 accepted for a request's ids"``).
        error: the exception raised, with one line.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise error(f"{where} does not exist.") from None
    except OSError as exc:
        raise error(f"{where} cannot be read: {exc.strerror}.") from None
    if not p.is_file():
        raise error(f"{where} is not a regular file.")
    if size > limit:
        raise error(f"{where} holds {size} bytes, more than the {limit} {holds}.")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{where} is not UTF-8 text: {exc.reason} at byte {exc.start}.") from None
    except OSError as exc:
        raise error(f"{where} cannot be read: {exc.strerror}.") from None
