"""Helpers of the ledger's tests (not a test): a tiny version 0, a ledger on it, a database
edited by hand, and ``unlearnkit`` run in a subprocess (to kill it or race it)."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import unlearnkit as uk
from unlearnkit.ledger import Ledger

#: fast steps: finetune for one epoch (the default's learning rate and optimiser)
FAST = {"epochs": 1}
ENTRIES = "unlearnkit_ledger_entries"


def tiny_checkpoint(model, folder: Path) -> Path:
    """``model`` saved as ``folder/original.safetensors`` (version 0 of the test ledgers)."""
    path = folder / "original.safetensors"
    if not path.exists():
        uk.save_checkpoint(model, path)
    return path


def make_ledger(url: str | os.PathLike, checkpoint: Path, **kw) -> Ledger:
    kw.setdefault("params", FAST)
    tag = hashlib.sha256(str(url).encode()).hexdigest()[:12]
    kw.setdefault("checkpoints", Path(checkpoint).parent / f"checkpoints-{tag}")
    return Ledger.create(url, checkpoint=checkpoint, **kw)


def sql(db: Path, statement: str, *args) -> None:
    """Run one statement on a SQLite ledger, as a person with the file would."""
    conn = sqlite3.connect(db)
    try:
        conn.execute(statement, args)
        conn.commit()
    finally:
        conn.close()


def db_bytes(db: Path) -> bytes:
    """Every byte a SQLite ledger keeps on disk: the file and its write-ahead log."""
    return b"".join(Path(f"{db}{suffix}").read_bytes() for suffix in ("", "-wal")
                    if Path(f"{db}{suffix}").exists())


def copy_db(src: Path, dst: Path) -> None:
    """A consistent copy of a SQLite ledger (its write-ahead log included)."""
    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    try:
        a.backup(b)
    finally:
        a.close()
        b.close()


def cli(*argv: str | os.PathLike, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m unlearnkit ARGV`` in a subprocess."""
    return subprocess.run([sys.executable, "-m", "unlearnkit", *map(str, argv)],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def start(*argv: str | os.PathLike, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python -m unlearnkit ARGV`` started in the background."""
    return subprocess.Popen([sys.executable, "-m", "unlearnkit", *map(str, argv)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
