"""Reading tar archives without trusting them: no path traversal, no links, no device files.

:func:`iter_tar_files` streams the regular files of an archive (a compressed tar is read once,
front to back, never seeked); :func:`safe_extract` writes them under a folder, refusing any
member whose name would land outside it. A truncated or corrupt archive raises
:class:`~unlearnkit.exceptions.DataError` (Python's ``tarfile`` alone silently stops at a
truncation, which would give a partial dataset).
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from unlearnkit.exceptions import DataError

__all__ = [
    "ARCHIVE_SUFFIXES",
    "is_archive",
    "iter_tar_files",
    "peek_member_names",
    "safe_extract",
    "safe_member_path",
]

#: File-name endings read as tar archives.
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")

_BLOCK = 512
_ERRORS = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError)


def is_archive(path: Path) -> bool:
    """Whether ``path`` names a tar archive by its ending."""
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def safe_member_path(name: str) -> tuple[str, ...] | None:
    """The parts of a member's relative path, or ``None`` if it is absolute, climbs out with
    ``..`` or is empty."""
    name = name.replace("\\", "/")
    if name.startswith("/"):
        return None
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if not parts or ".." in parts:
        return None
    return parts


def _corrupt(path: Path, exc: BaseException | str) -> DataError:
    return DataError(f"{str(path)!r} is not a valid tar archive (corrupt or truncated): {exc}")


@contextlib.contextmanager
def _tar_stream(path: Path) -> Iterator[tuple[tarfile.TarFile, Callable[[], None]]]:
    """Open ``path`` as a streamed tar; yields the TarFile and a ``finish()`` that checks the
    archive ended properly (end-of-archive marker, compressed stream complete)."""
    with contextlib.ExitStack() as stack:
        try:
            raw = stack.enter_context(open(path, "rb"))
            magic = raw.read(6)
            raw.seek(0)
            stream = raw
            if magic[:2] == b"\x1f\x8b":
                stream = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
            elif magic[:3] == b"BZh":
                stream = stack.enter_context(bz2.BZ2File(raw))
            elif magic == b"\xfd7zXZ\x00":
                stream = stack.enter_context(lzma.LZMAFile(raw))
            tf = stack.enter_context(tarfile.open(fileobj=stream, mode="r|"))
        except _ERRORS as exc:
            raise _corrupt(path, exc) from None

        def finish() -> None:
            if stream is raw:
                # tarfile stops silently where the data ends; a complete archive has an
                # end-of-archive block after the last member.
                if path.stat().st_size < tf.offset + _BLOCK:
                    raise _corrupt(path, "no end-of-archive marker after the last member")
            else:
                while stream.read(1 << 20):  # reaches the end: checks length and CRC
                    pass

        yield tf, finish


def iter_tar_files(path: str | os.PathLike) -> Iterator[tuple[tuple[str, ...], bytes]]:
    """Yield ``(path parts, bytes)`` for every regular file of a tar archive, in archive order.

    Links, devices and members with unsafe names (absolute, or containing ``..``) are skipped:
    they are never followed or written anywhere.

    Raises:
        DataError: the archive is corrupt or truncated.
    """
    path = Path(path)
    try:
        with _tar_stream(path) as (tf, finish):
            for member in tf:
                if not member.isfile():
                    continue
                rel = safe_member_path(member.name)
                f = tf.extractfile(member) if rel is not None else None
                if rel is None or f is None:
                    continue
                yield rel, f.read()
            finish()
    except _ERRORS as exc:
        raise _corrupt(path, exc) from None


def peek_member_names(path: str | os.PathLike, limit: int = 64) -> list[str]:
    """The names of the first ``limit`` members of a tar archive (cheap: stops reading there).

    Raises:
        DataError: the archive is unreadable.
    """
    path = Path(path)
    names: list[str] = []
    try:
        with _tar_stream(path) as (tf, _):
            for member in tf:
                names.append(member.name)
                if len(names) >= limit:
                    break
    except _ERRORS as exc:
        raise _corrupt(path, exc) from None
    return names


def safe_extract(path: str | os.PathLike, dest: str | os.PathLike) -> list[Path]:
    """Extract the regular files of a tar archive under ``dest``.

    Every target is checked to lie inside ``dest``; links and device files are refused. Files
    are first written to a staging folder and moved into place only once the whole archive has
    been read, so a corrupt archive leaves no partial files behind.

    Returns:
        The paths written.

    Raises:
        DataError: a member would escape ``dest``, is a link or device, or the archive is corrupt.
    """
    path, dest = Path(path), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".extract-"))
    staged: list[tuple[Path, Path]] = []
    try:
        with _tar_stream(path) as (tf, finish):
            for member in tf:
                rel = safe_member_path(member.name)
                if rel is None:
                    raise DataError(
                        f"Refusing to extract {str(path)!r}: member {member.name!r} would be "
                        f"written outside {str(dest)!r}."
                    )
                if member.isdir():
                    continue
                if not member.isfile():
                    raise DataError(
                        f"Refusing to extract {str(path)!r}: member {member.name!r} is a link or "
                        "special file, which a dataset archive should not contain."
                    )
                target = root.joinpath(*rel).resolve()
                if not target.is_relative_to(root):
                    raise DataError(
                        f"Refusing to extract {str(path)!r}: member {member.name!r} resolves to "
                        f"{str(target)!r}, outside {str(root)!r}."
                    )
                src = tf.extractfile(member)
                if src is None:
                    continue
                tmp = staging / str(len(staged))
                with src, open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out)
                staged.append((tmp, target))
            finish()
        for tmp, target in staged:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
    except DataError:
        raise
    except _ERRORS as exc:
        raise _corrupt(path, exc) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [target for _, target in staged]
