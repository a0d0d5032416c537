"""Stable sample identity: which training sample a request names, and what the ledger keeps.

A deletion request names samples by **ids** that do not change when the data is reloaded,
reordered or loses other samples:

* **image folders** (``imagefolder``, or any dataset read from a tree): the file's path relative
  to the dataset's root, ``train/<class>/<file>`` (the same for a folder and for a ``.tar.gz`` of
  it);
* **the built-in sets** (``digits``, ``mnist``, ``cifar10``...): the sample's index in the
  training set as unlearnkit loads it with the ledger's recorded options, written in decimal
  (``"0"`` .. ``"N-1"``). These sets never lose samples, so an index is stable;
* **your own data**: an id column that you supply, one id per training sample in the training
  set's order (an id file for the command line, a sequence in Python).

**What the ledger stores.** Not the ids: for each request, the SHA-256 of its id set
(:func:`id_set_digest`, which anyone holding the list can recompute), and for each sample a
salted hash (:func:`sample_hashes`: SHA-256 of the ledger's random salt and the id, cut to 128
bits), which is how later steps find the sample again. The ids themselves are stored only when
the user asks for it (``keep_ids``). The hashes are pseudonyms, not anonymity: whoever holds
the ledger (and so its salt) can test a guessed id.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from unlearnkit._files import read_small_text
from unlearnkit.exceptions import LedgerError

__all__ = [
    "HASH_CHARS",
    "id_set_digest",
    "image_tree_ids",
    "index_ids",
    "read_ids",
    "sample_hashes",
    "train_digest",
]

#: Hex characters kept of each sample's salted SHA-256 (128 bits: no collision in practice).
HASH_CHARS = 32

#: The largest id file read (bytes): a request names samples, not a dataset.
MAX_ID_FILE_BYTES = 256 << 20


def _check_id(value: object, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise LedgerError(f"{where}: an id must be a string or an int; got {value!r}.")
    text = str(value)
    if not text or text != text.strip() or "\n" in text or "\r" in text:
        raise LedgerError(f"{where}: the id {text!r} is empty or has surrounding white space or "
                          "a line break.")
    return text


def read_ids(path: str | os.PathLike) -> tuple[list[str], list[int]]:
    """The ids listed in a file, and the line of each (for messages).

    A text file holds one id per line (surrounding white space stripped; blank lines and lines
    starting with ``#`` skipped); a ``.json`` file holds a flat list of strings or ints (line
    numbers are then the list's 1-based positions).

    Raises:
        LedgerError: no such file, not UTF-8, not a flat JSON list, no id at all, or an id
            listed twice (both lines named).
    """
    p = Path(path)
    where = f"The id file {str(p)!r}"
    text = read_small_text(p, where=where, limit=MAX_ID_FILE_BYTES,
                           holds="accepted for a request's ids", error=LedgerError)
    ids: list[str] = []
    lines: list[int] = []
    if p.suffix.lower() == ".json":
        try:
            values = json.loads(text)
        except ValueError as exc:
            raise LedgerError(f"{where} is not valid JSON: {exc}.") from None
        if not isinstance(values, list):
            raise LedgerError(f"{where} must hold a JSON list of ids; got a "
                              f"{type(values).__name__}.")
        for i, v in enumerate(values, 1):
            ids.append(_check_id(v, f"{where}, item {i}"))
            lines.append(i)
    else:
        for i, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            ids.append(line)
            lines.append(i)
    if not ids:
        raise LedgerError(f"{where} lists no id: nothing to erase.")
    first: dict[str, int] = {}
    for sid, line in zip(ids, lines, strict=True):
        if sid in first:
            raise LedgerError(f"{where}: the id {sid!r} is listed twice (lines {first[sid]} and "
                              f"{line}); list each sample once.")
        first[sid] = line
    return ids, lines


def sample_hashes(salt: str, ids: Iterable[str]) -> list[str]:
    """The salted hash of each id: ``sha256(salt + "\\0" + id)`` in hex, cut to
    :data:`HASH_CHARS` characters (UTF-8 throughout).

    >>> sample_hashes("00", ["7"]) == sample_hashes("00", ["7"]) != sample_hashes("01", ["7"])
    True
    """
    prefix = salt.encode() + b"\0"
    return [hashlib.sha256(prefix + i.encode("utf-8")).hexdigest()[:HASH_CHARS] for i in ids]


def id_set_digest(ids: Iterable[str]) -> str:
    """SHA-256 of a request's id set: the sorted ids, one per line, UTF-8 (``printf '%s\\n'
    ids | LC_ALL=C sort | sha256sum`` gives the same for ASCII ids).

    >>> id_set_digest(["b", "a"]) == id_set_digest(["a", "b"])
    True
    """
    text = "".join(f"{i}\n" for i in sorted(ids))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def train_digest(hashes: Iterable[str]) -> str:
    """SHA-256 of a training set's sample hashes, sorted: what the ledger checks the data
    against (order-free, so a reordered copy of the same samples passes)."""
    return hashlib.sha256("\n".join(sorted(hashes)).encode()).hexdigest()


def index_ids(n: int) -> list[str]:
    """The ids of a built-in dataset's ``n`` training samples: their indices, in decimal."""
    return [str(i) for i in range(n)]


def check_id_column(ids: Sequence[object], n: int, where: str) -> list[str]:
    """A user's id column as strings, checked: one per training sample, each unique.

    Raises:
        LedgerError: a wrong length, an empty or non-string id, or a duplicate.
    """
    if isinstance(ids, (str, bytes)):
        raise LedgerError(f"{where} must be a sequence of ids, one per training sample; got a "
                          "single string.")
    out = [_check_id(v, f"{where}, row {i}") for i, v in enumerate(ids)]
    if len(out) != n:
        raise LedgerError(f"{where} holds {len(out)} ids but the training set has {n} samples: "
                          "give one id per training sample, in the training set's order.")
    seen: dict[str, int] = {}
    for i, sid in enumerate(out):
        if sid in seen:
            raise LedgerError(f"{where}: the id {sid!r} appears twice (rows {seen[sid]} and {i}); "
                              "ids must identify one sample each.")
        seen[sid] = i
    return out


def image_tree_ids(root: str | os.PathLike) -> list[str]:
    """The ids of an image tree's training samples, in the order the ``imagefolder`` loader
    reads them: ``train/<class>/<path under the class folder>``, classes sorted, files sorted
    within a class. Reads the folder listing or the archive's headers, not the images.

    Raises:
        DataError: the tree is missing or malformed (as the loader says).
    """
    from unlearnkit.data import archives
    from unlearnkit.data import imagefolder as imf

    source = Path(root)
    names: dict[str, list[str]] = {}
    if source.is_file():
        try:
            with archives._tar_stream(source) as (tf, _):
                for member in archives._members(tf, source):
                    if not member.isfile():
                        continue
                    parts = archives.safe_member_path(member.name)
                    if parts is None or not imf._is_tree_image(parts):
                        continue
                    hit = imf._split_position(parts)
                    if hit is not None and parts[hit] == "train":
                        names.setdefault(parts[hit + 1], []).append("/".join(parts[hit + 2:]))
        except archives._ERRORS as exc:
            raise archives._corrupt(source, exc) from None
        classes = sorted(names)
    else:
        declared = imf._class_folders(source)
        classes = declared["train"]
        for split, cls, rel, _ in imf._folder_files(source, {"train": classes, "test": []}):
            if split == "train":
                names.setdefault(cls, []).append(rel)
    return [f"train/{cls}/{rel}" for cls in classes for rel in sorted(names.get(cls, []))]
