"""Fetch dataset files from their public address, verify their checksum, never leave half a file.

A dataset declares its files as :class:`Resource` objects (a file name and its published md5 or
sha256) and the base URLs they are published under. :func:`ensure_files` finds them in the data
root or, when the caller allows it, downloads the missing ones.

The base URL can be replaced, for an offline mirror or a test server:

* the loader option ``mirror="https://host/path/"`` (or ``"file:///srv/mirror/mnist/"``) is the
  folder that holds the dataset's files directly;
* the environment variable ``UNLEARNKIT_MIRROR`` is a folder holding one sub-folder per dataset
  name (``$UNLEARNKIT_MIRROR/mnist/train-images-idx3-ubyte.gz``, ``.../cifar10/...``).

``http``, ``https`` and ``file`` URLs are supported.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from unlearnkit.exceptions import DataError, DownloadError

__all__ = [
    "MIRROR_ENV",
    "Resource",
    "download_file",
    "ensure_files",
    "file_digest",
    "missing_files_error",
    "resolve_urls",
]

#: Environment variable naming a mirror root with one sub-folder per dataset.
MIRROR_ENV = "UNLEARNKIT_MIRROR"

_CHUNK = 1 << 20


class _ChecksumMismatch(DownloadError):
    """A download whose bytes differ from the published checksum (no other mirror is tried)."""


@dataclass(frozen=True)
class Resource:
    """One published file: its name and its checksum as the publisher states it.

    Attributes:
        filename: the file name, both in the URL and in the data root.
        md5: the published md5 hex digest, if the publisher gives md5.
        sha256: the published sha256 hex digest, if the publisher gives sha256.
    """

    filename: str
    md5: str | None = None
    sha256: str | None = None

    def __post_init__(self) -> None:
        if (self.md5 is None) == (self.sha256 is None):
            raise ValueError(f"Resource {self.filename!r} needs exactly one of md5 and sha256.")

    @property
    def algorithm(self) -> str:
        return "md5" if self.md5 is not None else "sha256"

    @property
    def digest(self) -> str:
        return (self.md5 or self.sha256 or "").lower()


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes (``algorithm``: ``"md5"`` or ``"sha256"``)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _join(base: str, filename: str) -> str:
    return base.rstrip("/") + "/" + filename


def resolve_urls(
    dataset: str, filename: str, default_bases: Sequence[str], mirror: str | None = None
) -> list[str]:
    """The URLs to try, in order, for ``filename`` of ``dataset``.

    Args:
        dataset: the registry name, used as the sub-folder of ``$UNLEARNKIT_MIRROR``.
        filename: the file's name.
        default_bases: the publisher's base URLs, tried in order.
        mirror: a base URL that replaces them (the loader option ``mirror``).

    Returns:
        ``[mirror/filename]`` if ``mirror`` is given, else ``[$UNLEARNKIT_MIRROR/dataset/filename]``
        if that variable is set, else one URL per default base.
    """
    if mirror:
        return [_join(str(mirror), filename)]
    env = os.environ.get(MIRROR_ENV)
    if env:
        return [_join(_join(env, dataset), filename)]
    return [_join(base, filename) for base in default_bases]


def download_file(
    url: str,
    dest: str | os.PathLike,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest``, verifying its checksum.

    The bytes go to a temporary file beside ``dest``, which is renamed to ``dest`` only once the
    checksum matches: ``dest`` is either the complete, verified file or absent.

    Args:
        url: an ``http://``, ``https://`` or ``file://`` URL.
        dest: where the file goes; its folder is created if needed.
        md5: the expected md5 hex digest.
        sha256: the expected sha256 hex digest (give one of ``md5`` and ``sha256``).
        timeout: seconds to wait for the server.
        progress: show a progress bar on stderr.

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        DownloadError: the URL could not be read, or its checksum did not match.
    """
    if (md5 is None) == (sha256 is None):
        raise ValueError("download_file needs exactly one of md5 and sha256.")
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https", "file"):
        raise DownloadError(
            f"Cannot download {url!r}: the scheme must be http, https or file; got {scheme!r}."
        )
    algorithm, expected = ("md5", md5) if md5 is not None else ("sha256", sha256)
    expected = str(expected).lower()
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    h = hashlib.new(algorithm)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=timeout)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                raise DownloadError(f"Could not download {url}: {exc}") from None
            with response:
                length = response.headers.get("Content-Length") if response.headers else None
                total = int(length) if length and length.isdigit() else None
                with tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=dest.name,
                    file=sys.stderr,
                    disable=not progress,
                    leave=False,
                ) as bar:
                    try:
                        for chunk in iter(lambda: response.read(_CHUNK), b""):
                            out.write(chunk)
                            h.update(chunk)
                            bar.update(len(chunk))
                    except (urllib.error.URLError, OSError) as exc:
                        raise DownloadError(f"Download of {url} broke off: {exc}") from None
        got = h.hexdigest()
        if got != expected:
            raise _ChecksumMismatch(
                f"Checksum mismatch for {url}: expected {algorithm} {expected}, got {got}. "
                "The file was deleted; the server or mirror may hold a different or corrupt copy."
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def missing_files_error(
    dataset: str, root: Path, missing: Sequence[str], hint: str = ""
) -> DataError:
    """The error for dataset files that are absent and may not be downloaded."""
    return DataError(
        f"Dataset {dataset!r}: missing {', '.join(missing)} in {str(root)!r}.{hint} "
        "Pass download=True (CLI: --download) to fetch them from the public address, "
        "or place the files there yourself."
    )


def ensure_files(
    dataset: str,
    root: Path,
    resources: Sequence[Resource],
    *,
    default_bases: Sequence[str],
    download: bool,
    mirror: str | None = None,
    progress: bool = True,
    hint: str = "",
) -> list[Path]:
    """Make sure every resource is in ``root``, downloading the missing ones if allowed.

    Args:
        dataset: the registry name (for messages and the ``$UNLEARNKIT_MIRROR`` sub-folder).
        root: the folder that holds (or will hold) the files.
        resources: the files and their checksums.
        default_bases: the publisher's base URLs, tried in order until one answers.
        download: fetch missing files; if false, missing files raise :class:`DataError`.
        mirror: a base URL that replaces ``default_bases``.
        progress: show progress bars on stderr.
        hint: a sentence added to the missing-files message (other accepted layouts).

    Returns:
        The paths of the resources, in the order given.

    Raises:
        DataError: files are missing and ``download`` is false.
        DownloadError: a download failed or a checksum did not match.
    """
    paths = [root / r.filename for r in resources]
    missing = [r for r, p in zip(resources, paths, strict=True) if not p.is_file()]
    if not missing:
        return paths
    if not download:
        raise missing_files_error(dataset, root, [r.filename for r in missing], hint)
    for res in missing:
        errors = []
        for url in resolve_urls(dataset, res.filename, default_bases, mirror):
            try:
                download_file(
                    url, root / res.filename, md5=res.md5, sha256=res.sha256, progress=progress
                )
                break
            except _ChecksumMismatch:
                raise
            except DownloadError as exc:
                errors.append(str(exc))
        else:
            raise DownloadError(
                f"Dataset {dataset!r}: could not download {res.filename}. "
                + " ".join(errors)
                + f" Set the loader option mirror=... or ${MIRROR_ENV} to a reachable copy, or "
                f"place the file in {str(root)!r} yourself."
            )
    return paths
