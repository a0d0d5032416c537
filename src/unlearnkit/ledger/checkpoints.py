"""Where a ledger keeps its model versions: a folder of safetensors files named by their digest.

Each version's checkpoint is the file ``<sha256>.safetensors``, where ``<sha256>`` is the
SHA-256 of the file's bytes, which the ledger's entry records. A file is written to a
temporary name, flushed to disk and renamed: a reader sees the whole file or none. An
``apply`` killed after its file is written and before its entry is committed leaves an
*orphan*, a file no entry names: harmless (the next ``apply`` writes its own), and listed by
``ledger audit``. Nothing is ever unpickled: the files are safetensors.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

from torch import nn

from unlearnkit.exceptions import LedgerError
from unlearnkit.models.checkpoint import META_KEY
from unlearnkit.models.info import ModelInfo, check_finite, get_info

__all__ = ["CheckpointFolder", "checkpoint_bytes", "sha256_file"]

SUFFIX = ".safetensors"


def checkpoint_bytes(model: nn.Module) -> bytes:
    """``model`` as the bytes of a unlearnkit checkpoint (weights and provenance; the same
    format as :func:`unlearnkit.save_checkpoint`)."""
    from safetensors.torch import save

    info = get_info(model) or ModelInfo()
    check_finite(model, "The model to save")
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    return save(tensors, metadata={META_KEY: json.dumps(info.to_dict(), sort_keys=True)})


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class CheckpointFolder:
    """A folder of checkpoints named by their SHA-256 (see the module).

    Args:
        location: a folder path, or a ``file://`` URL of one (created when missing).

    Raises:
        LedgerError: another kind of URL, or a path that is not a folder.
    """

    def __init__(self, location: str | os.PathLike) -> None:
        text = os.fspath(location)
        if "://" in text:
            scheme, _, rest = text.partition("://")
            if scheme != "file":
                raise LedgerError(
                    f"The checkpoint location {text!r} is a {scheme!r} URL; ledgers keep their "
                    "checkpoints in a folder (a path or a file:// URL): mount the storage and "
                    "give its path.")
            text = rest
        self.root = Path(text).expanduser().resolve()
        if self.root.exists() and not self.root.is_dir():
            raise LedgerError(f"The checkpoint location {str(self.root)!r} is not a folder.")

    def path(self, digest: str) -> Path:
        """The file of the checkpoint whose SHA-256 is ``digest``."""
        return self.root / f"{digest}{SUFFIX}"

    def put(self, data: bytes) -> str:
        """Store ``data`` (a checkpoint's bytes) under its digest; return the digest."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if target.is_file() and sha256_file(target) == digest:
            return digest
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{digest[:16]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o444)  # a version's file is never rewritten
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        with contextlib.suppress(OSError):  # the rename itself reaches the disk
            dfd = os.open(self.root, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        return digest

    def check(self, digest: str) -> str | None:
        """``None`` if the file of ``digest`` is there and its bytes hash to ``digest``, else
        what is wrong (missing, or the digest the file has now)."""
        p = self.path(digest)
        if not p.is_file():
            return f"its checkpoint {p.name} is missing from {str(self.root)!r}"
        actual = sha256_file(p)
        if actual != digest:
            return (f"its checkpoint {p.name} was changed on disk: its SHA-256 is now "
                    f"{actual[:16]}..., the ledger recorded {digest[:16]}...")
        return None

    def files(self) -> list[str]:
        """The names of every file in the folder (checkpoints and leftover temporary files)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_file())
