"""Reading tar archives without trusting them: no path traversal, no links, no device files,
no member or header larger than a bound, no more than :data:`MAX_MEMBERS` members.

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
    "MAX_HEADER_BYTES",
    "MAX_MEMBERS",
    "MAX_MEMBER_BYTES",
    "is_archive",
    "iter_tar_files",
    "peek_member_names",
    "safe_extract",
    "safe_member_path",
]

#: File-name endings read as tar archives.
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")

#: The largest member :func:`iter_tar_files` reads into memory unless told otherwise (64 MiB:
#: far above any image of a dataset). A larger selected member is refused, never read.
MAX_MEMBER_BYTES = 64 * 2**20
#: The most members (files, folders, links...) an archive may hold: about three times ImageNet's
#: training set. Reading stops with an error there, so that a small archive of millions of empty
#: members cannot keep the reader busy for hours.
MAX_MEMBERS = 4_000_000
#: The largest GNU long-name or pax extended header accepted (tarfile reads one whole).
MAX_HEADER_BYTES = 1 * 2**20

_BLOCK = 512
# ValueError: tarfile's GNU sparse and pax parsers raise it on malformed numbers.
_ERRORS = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError, ValueError)


class _BoundedTarInfo(tarfile.TarInfo):
    """A TarInfo that refuses oversized GNU long-name and pax headers, which tarfile would
    otherwise read whole into memory."""

    def _check_header_size(self) -> None:
        if self.size > MAX_HEADER_BYTES:
            raise tarfile.ReadError(
                f"a long-name or pax header claims {self.size} bytes (at most "
                f"{MAX_HEADER_BYTES} are accepted)"
            )

    def _proc_gnulong(self, tarfile):  # tarfile's private hook
        self._check_header_size()
        return super()._proc_gnulong(tarfile)

    def _proc_pax(self, tarfile):  # tarfile's private hook
        self._check_header_size()
        return super()._proc_pax(tarfile)


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
            tf = stack.enter_context(
                tarfile.open(fileobj=stream, mode="r|", tarinfo=_BoundedTarInfo)
            )
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


def _members(tf: tarfile.TarFile, path: Path) -> Iterator[tarfile.TarInfo]:
    """The members of a streamed tar, one at a time: tarfile's own iteration keeps every header
    it has read (hundreds of bytes each), which this does not; at most :data:`MAX_MEMBERS`."""
    count = 0
    while (member := tf.next()) is not None:
        tf.members.clear()
        count += 1
        if count > MAX_MEMBERS:
            raise DataError(
                f"{str(path)!r} holds more than {MAX_MEMBERS} members, more than a dataset archive "
                "should: it is corrupt or crafted."
            )
        yield member


def iter_tar_files(
    path: str | os.PathLike,
    select: Callable[[tuple[str, ...]], bool] | None = None,
    *,
    max_member_bytes: int = MAX_MEMBER_BYTES,
) -> Iterator[tuple[tuple[str, ...], bytes]]:
    """Yield ``(path parts, bytes)`` for the regular files of a tar archive, in archive order.

    Links, devices and members with unsafe names (absolute, or containing ``..``) are skipped:
    they are never followed or written anywhere. So are the members that ``select`` (given the
    path parts) rejects: they are skipped by their header, never read into memory.

    Args:
        path: the archive.
        select: which members to read, by their path parts (default: every regular file).
        max_member_bytes: the largest member read (default :data:`MAX_MEMBER_BYTES`); a larger
            selected member is refused before any of it is read.

    Raises:
        DataError: the archive is corrupt or truncated, holds more than :data:`MAX_MEMBERS`
            members, or a selected member is larger than ``max_member_bytes``.
    """
    path = Path(path)
    try:
        with _tar_stream(path) as (tf, finish):
            for member in _members(tf, path):
                if not member.isfile():
                    continue
                rel = safe_member_path(member.name)
                if rel is None or (select is not None and not select(rel)):
                    continue
                if member.size > max_member_bytes:
                    raise DataError(
                        f"{str(path)!r}: member {member.name!r} claims {member.size} bytes, more "
                        f"than the {max_member_bytes} bytes accepted for one file of a dataset "
                        "archive; refusing to read it (the archive is corrupt or crafted)."
                    )
                f = tf.extractfile(member)
                if f is None:
                    continue
                yield rel, f.read()
            finish()
    except DataError:
        raise
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
            for member in _members(tf, path):
                names.append(member.name)
                if len(names) >= limit:
                    break
    except DataError:
        raise
    except _ERRORS as exc:
        raise _corrupt(path, exc) from None
    return names


def safe_extract(
    path: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    max_member_bytes: int | None = None,
) -> list[Path]:
    """Extract the regular files of a tar archive under ``dest``.

    Every target is checked to lie inside ``dest``; links and device files are refused. Files
    are first written to a staging folder and moved into place only once the whole archive has
    been read, so a corrupt archive leaves no partial files behind. With ``max_member_bytes``,
    a larger member is refused before any of it is written.

    Returns:
        The paths written.

    Raises:
        DataError: a member would escape ``dest``, is a link or device, is larger than
            ``max_member_bytes``, or the archive is corrupt.
    """
    path, dest = Path(path), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".extract-"))
    staged: list[tuple[Path, Path]] = []
    try:
        with _tar_stream(path) as (tf, finish):
            for member in _members(tf, path):
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
                if max_member_bytes is not None and member.size > max_member_bytes:
                    raise DataError(
                        f"Refusing to extract {str(path)!r}: member {member.name!r} claims "
                        f"{member.size} bytes, more than the {max_member_bytes} bytes accepted "
                        "for one file of this archive (it is corrupt or crafted)."
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
