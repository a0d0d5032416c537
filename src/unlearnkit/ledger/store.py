"""The ledger's database: an append-only, hash-chained list of entries, on SQLite or PostgreSQL.

Two tables, written through SQLAlchemy Core, so that one code path serves a SQLite file (the
default: one file, no server) and a PostgreSQL database that a team shares (a URL such as
``postgresql+psycopg://user@host/db``):

* ``unlearnkit_ledger_entries``: one row per event (``seq`` 1, 2, 3...; ``kind``;
  ``created_at``, UTC ISO 8601; ``payload``, canonical JSON; ``prev_hash``; ``hash``);
* ``unlearnkit_ledger_head``: one row, the last entry's ``seq`` and ``hash`` and the format.

**The chain.** ``hash = sha256(canonical_json({"seq", "kind", "created_at", "prev_hash",
"payload"}))`` in hex, where canonical JSON is Python's ``json.dumps(..., sort_keys=True,
separators=(",", ":"), ensure_ascii=False, allow_nan=False)`` encoded as UTF-8, and
``prev_hash`` is the previous entry's ``hash`` (64 zeros for the first). As in git's commits
and Certificate Transparency's logs (RFC 6962), changing or deleting a past entry breaks
every later link, so :func:`verify_chain` finds it by recomputing, not by trusting. The head
row catches the deletion of the last entries; the head hash itself can be kept elsewhere
(``ledger audit`` prints it) to catch a rewrite of the whole chain.

**Transactions.** Every append happens in one transaction that first locks the head (``SELECT
... FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite, whose WAL journal keeps readers
going), re-reads the entries and checks what it is about to write against them; a process
killed at any point leaves either the whole transaction or nothing.

**One apply at a time.** :meth:`LedgerStore.apply_lock` is held for a whole ``apply``: a
PostgreSQL session advisory lock, or an exclusive ``flock`` on ``<file>.lock`` beside a SQLite
file. Both vanish with the process that holds them, so a killed ``apply`` blocks nothing. A
second ``apply`` waits (``wait``) or is refused with :class:`LedgerBusyError` naming the
holder. (``flock`` needs a local file system: share a ledger through PostgreSQL, not NFS.)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from unlearnkit.exceptions import LedgerBusyError, LedgerError

__all__ = [
    "FORMAT",
    "GENESIS",
    "Entry",
    "LedgerStore",
    "canonical_json",
    "entry_hash",
    "utc_now",
    "verify_chain",
]

#: The format of the ledger's tables and payloads that this code writes.
FORMAT = 1
#: The ``prev_hash`` of the first entry.
GENESIS = "0" * 64

ENTRIES = "unlearnkit_ledger_entries"
HEAD = "unlearnkit_ledger_head"

#: PostgreSQL advisory-lock key space of unlearnkit ledgers (the first of the two int4 keys).
_PG_LOCK_SPACE = 0x554B4C47 & 0x7FFFFFFF


def canonical_json(obj: Any) -> str:
    """The one JSON text of ``obj`` that the chain hashes (sorted keys, no spaces, UTF-8)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def entry_hash(seq: int, kind: str, created_at: str, prev_hash: str, payload: Any) -> str:
    """The hash of one entry (see the module's docstring for the formula)."""
    doc = {"seq": seq, "kind": kind, "created_at": created_at, "prev_hash": prev_hash,
           "payload": payload}
    return hashlib.sha256(canonical_json(doc).encode("utf-8")).hexdigest()


def utc_now() -> str:
    """Now, in UTC, ISO 8601 with microseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Entry:
    """One row of the chain, as stored (``payload`` parsed; ``None`` if it is not JSON)."""

    seq: int
    kind: str
    created_at: str
    payload: Any
    prev_hash: str
    hash: str
    raw: str

    def label(self) -> str:
        """``entry 7 (request req-3, 2025-01-02T...)``: how messages name an entry."""
        p = self.payload if isinstance(self.payload, dict) else {}
        what = {"request": p.get("request"), "apply": _version_label(p),
                "retrain": _version_label(p), "refused": p.get("attempt") and
                f"attempted v{p.get('attempt')}"}.get(self.kind)
        inner = f"{self.kind} {what}" if what else self.kind
        return f"entry {self.seq} ({inner}, {self.created_at})"


def _version_label(p: dict) -> str | None:
    return f"v{p['version']}" if isinstance(p.get("version"), int) else None


def verify_chain(entries: list[Entry], head: tuple[int, str] | None) -> list[str]:
    """Every break of the chain, one sentence each naming the entry; ``[]`` when intact.

    Checks that ``seq`` runs 1, 2, 3... without a gap, that each ``hash`` is the hash of its
    entry's content, that each ``prev_hash`` is the previous entry's ``hash``, and that the
    head row names the last entry.
    """
    problems: list[str] = []
    prev = GENESIS
    expected = 1
    for e in entries:
        if e.seq != expected:
            if e.seq > expected:
                gone = (f"entry {expected}" if e.seq == expected + 1
                        else f"entries {expected} to {e.seq - 1}")
                problems.append(f"{gone} missing: the chain jumps from entry {expected - 1} to "
                                f"entry {e.seq} (deleted)")
            else:
                problems.append(f"entry {e.seq} is out of order (expected {expected})")
        if e.payload is None and e.raw != "null":
            problems.append(f"{e.label()}: its payload is not valid JSON (edited by hand)")
        else:
            recomputed = entry_hash(e.seq, e.kind, e.created_at, e.prev_hash, e.payload)
            if recomputed != e.hash:
                problems.append(f"{e.label()}: its content does not match its hash: it was "
                                "changed after it was written")
        if e.prev_hash != prev and e.seq == expected:
            problems.append(f"{e.label()}: its prev_hash does not match the hash of entry "
                            f"{e.seq - 1}: entry {e.seq - 1} was changed or replaced")
        prev = e.hash
        expected = e.seq + 1
    if head is not None:
        last = (entries[-1].seq, entries[-1].hash) if entries else (0, GENESIS)
        if head[0] != last[0]:
            problems.append(f"the head records entry {head[0]} as the last, but the last entry "
                            f"is {last[0]}: entries after {last[0]} were deleted"
                            if head[0] > last[0] else
                            f"the head records entry {head[0]} as the last, but entries up to "
                            f"{last[0]} exist: entries were added outside the ledger")
        elif head[1] != last[1]:
            problems.append(f"the head's hash does not match entry {last[0]}'s: the last entry "
                            "or the head was changed")
    return problems


def _host() -> str:
    return socket.gethostname()


class LedgerStore:
    """The database behind a ledger (see the module's docstring).

    Args:
        url: a SQLAlchemy URL (``sqlite:///path``, ``postgresql+psycopg://...``), or a path
            of a SQLite file. ``postgresql://`` URLs use the psycopg (3) driver.

    Raises:
        LedgerError: an unusable URL, a missing driver, a server that cannot be reached, or a
            file that is not a SQLite database.
    """

    def __init__(self, url: str | os.PathLike) -> None:
        import sqlalchemy as sa
        from sqlalchemy import event
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError

        text = os.fspath(url)
        if "://" not in text:
            if not text.strip():
                raise LedgerError("The ledger's address is empty: give a file path or a URL.")
            text = f"sqlite:///{Path(text).expanduser().resolve()}"
        try:
            u = make_url(text)
        except ArgumentError as exc:
            raise LedgerError(f"The ledger's address {text!r} is not a database URL: "
                              f"{exc}.") from None
        if u.drivername == "postgresql":
            u = u.set(drivername="postgresql+psycopg")
        self.url = u
        #: the URL as messages show it (password hidden)
        self.display = u.render_as_string(hide_password=True)
        self.backend = u.get_backend_name()
        if self.backend not in ("sqlite", "postgresql"):
            raise LedgerError(f"The ledger's address {self.display!r} names a "
                              f"{self.backend!r} database; ledgers live in SQLite or "
                              "PostgreSQL.")
        self.path: Path | None = None
        if self.backend == "sqlite":
            if not u.database or u.database == ":memory:" or u.query.get("mode") == "memory":
                raise LedgerError("A ledger must outlive its process: give a SQLite file, not an "
                                  "in-memory database.")
            self.path = Path(u.database)
            if self.path.is_dir():
                raise LedgerError(f"The ledger's file {str(self.path)!r} is a directory.")
        try:
            if self.backend == "sqlite":
                # no pool: a connection per transaction, closed after it (cheap for a file),
                # so that no process keeps the file open between two operations
                engine = sa.create_engine(u, connect_args={"timeout": 60},
                                          poolclass=sa.pool.NullPool)

                @event.listens_for(engine, "connect")
                def _on_connect(dbapi_conn: Any, _record: Any) -> None:
                    dbapi_conn.isolation_level = None  # BEGIN is ours (see _on_begin)
                    cur = dbapi_conn.cursor()
                    cur.execute("PRAGMA busy_timeout = 60000")
                    cur.execute("PRAGMA synchronous = FULL")
                    cur.close()

                @event.listens_for(engine, "begin")
                def _on_begin(conn: Any) -> None:
                    write = conn.get_execution_options().get("ledger_write")
                    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
            else:
                engine = sa.create_engine(u, pool_pre_ping=True)
        except NoSuchModuleError as exc:
            raise LedgerError(f"No SQLAlchemy driver for {self.display!r}: {exc}.") from None
        except ModuleNotFoundError as exc:
            raise LedgerError(
                f"The ledger at {self.display!r} needs the Python module {exc.name!r}: pip "
                "install 'unlearnkit[postgres]' (psycopg) for PostgreSQL.") from None
        self.engine = engine
        md = sa.MetaData()
        self.entries_t = sa.Table(
            ENTRIES, md,
            sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("kind", sa.String(32), nullable=False),
            sa.Column("created_at", sa.String(40), nullable=False),
            sa.Column("payload", sa.Text, nullable=False),
            sa.Column("prev_hash", sa.String(64), nullable=False),
            sa.Column("hash", sa.String(64), nullable=False, unique=True),
        )
        self.head_t = sa.Table(
            HEAD, md,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("seq", sa.Integer, nullable=False),
            sa.Column("hash", sa.String(64), nullable=False),
            sa.Column("format", sa.Integer, nullable=False),
        )
        self.metadata = md

    def close(self) -> None:
        """Close the database connections this store holds (it can still be used after)."""
        self.engine.dispose()

    # ------------------------------------------------------------------ errors
    @contextlib.contextmanager
    def _db_errors(self) -> Iterator[None]:
        """Database errors as one-line :class:`LedgerError` s naming the ledger."""
        from sqlalchemy import exc as sa_exc

        try:
            yield
        except sa_exc.OperationalError as exc:
            first = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            if "not a database" in first or "file is encrypted" in first:
                raise LedgerError(f"{self.display!r} is not a SQLite database.") from None
            raise LedgerError(f"Cannot use the ledger at {self.display!r}: {first}") from None
        except sa_exc.DatabaseError as exc:
            first = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            if "not a database" in first:
                raise LedgerError(f"{self.display!r} is not a SQLite database.") from None
            raise LedgerError(f"The ledger at {self.display!r} refused the operation: "
                              f"{first}") from None

    def _connect(self, write: bool = False) -> Any:
        conn = self.engine.connect()
        return conn.execution_options(ledger_write=True) if write else conn

    # ------------------------------------------------------------------ reading
    def _tables(self, conn: Any) -> set[str]:
        import sqlalchemy as sa

        return set(sa.inspect(conn).get_table_names())

    def exists(self) -> bool:
        """Whether a ledger is stored at this address."""
        if self.path is not None and not self.path.exists():
            return False
        with self._db_errors(), self._connect() as conn, conn.begin():
            return HEAD in self._tables(conn)

    def _read(self, conn: Any) -> tuple[list[Entry], tuple[int, str] | None]:
        import sqlalchemy as sa

        rows = conn.execute(sa.select(self.entries_t).order_by(self.entries_t.c.seq)).all()
        head = conn.execute(sa.select(self.head_t.c.seq, self.head_t.c.hash, self.head_t.c.format)
                            ).all()
        entries = []
        for r in rows:
            try:
                payload = json.loads(r.payload)
            except (TypeError, ValueError, RecursionError):
                payload = None
            entries.append(Entry(int(r.seq), str(r.kind), str(r.created_at), payload,
                                 str(r.prev_hash), str(r.hash), str(r.payload)))
        if len(head) > 1:
            raise LedgerError(f"The ledger at {self.display!r} has {len(head)} head rows; it "
                              "was edited by hand.")
        if head and head[0].format > FORMAT:
            raise LedgerError(f"The ledger at {self.display!r} has format {head[0].format}, "
                              f"written by a newer unlearnkit (this one reads {FORMAT}).")
        return entries, ((int(head[0].seq), str(head[0].hash)) if head else None)

    def read(self) -> tuple[list[Entry], tuple[int, str] | None]:
        """All entries in order, and the head row's ``(seq, hash)``.

        Raises:
            LedgerError: no ledger at this address.
        """
        if self.path is not None and not self.path.exists():
            raise self._missing()
        with self._db_errors(), self._connect() as conn, conn.begin():
            if HEAD not in self._tables(conn):
                raise self._missing()
            return self._read(conn)

    def _missing(self) -> LedgerError:
        return LedgerError(f"No ledger at {self.display!r}: create one with `unlearnkit ledger "
                           "init` (or unlearnkit.Ledger.create).")

    # ------------------------------------------------------------------ writing
    def create(self, kind: str, payload: dict[str, Any]) -> Entry:
        """Create the tables and the first entry, in one transaction.

        Raises:
            LedgerError: a ledger is already there, or a SQLite file that holds other tables.
        """
        import sqlalchemy as sa
        from sqlalchemy import exc as sa_exc

        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._db_errors(), self._connect(write=True) as conn, conn.begin():
                tables = self._tables(conn)
                if HEAD in tables or ENTRIES in tables:
                    raise LedgerError(f"A ledger already exists at {self.display!r}.")
                if self.path is not None and tables:
                    raise LedgerError(
                        f"{str(self.path)!r} is a SQLite database that holds other tables "
                        f"({', '.join(sorted(tables)[:5])}); give a new file for the ledger.")
                self.metadata.create_all(conn)
                entry = self._insert(conn, [], kind, payload)
                conn.execute(sa.insert(self.head_t).values(id=1, seq=entry.seq, hash=entry.hash,
                                                           format=FORMAT))
        except sa_exc.IntegrityError:  # another process created it meanwhile
            raise LedgerError(f"A ledger already exists at {self.display!r}.") from None
        if self.backend == "sqlite":  # readers never wait for a writer (outside a transaction)
            with self._db_errors():
                raw = self.engine.raw_connection()
                try:
                    raw.cursor().execute("PRAGMA journal_mode = WAL")
                finally:
                    raw.close()
        return entry

    def _insert(self, conn: Any, entries: list[Entry], kind: str, payload: dict[str, Any]
                ) -> Entry:
        import sqlalchemy as sa

        seq = entries[-1].seq + 1 if entries else 1
        prev = entries[-1].hash if entries else GENESIS
        created = utc_now()
        if self.backend == "postgresql":  # one clock for every host that shares the ledger
            stamp = conn.execute(sa.text("SELECT clock_timestamp()")).scalar()
            created = stamp.astimezone(timezone.utc).isoformat(timespec="microseconds")
        raw = canonical_json(payload)
        parsed = json.loads(raw)
        h = entry_hash(seq, kind, created, prev, parsed)
        conn.execute(sa.insert(self.entries_t).values(
            seq=seq, kind=kind, created_at=created, payload=raw, prev_hash=prev, hash=h))
        return Entry(seq, kind, created, parsed, prev, h, raw)

    def append(self, build: Callable[[list[Entry]], list[tuple[str, dict[str, Any]]]],
               *, before_commit: Callable[[], None] | None = None) -> list[Entry]:
        """Append the entries that ``build`` makes from the current chain, in one transaction.

        ``build`` is called with every entry, read after the head is locked, so that what it
        checks (a request still pending, the version it extends still the last) holds when
        its entries are written; it raises to write nothing. ``before_commit`` runs after the
        rows are written, before the commit (a test's fault-injection point).

        Raises:
            LedgerError: no ledger here, or the chain is broken (run ``ledger audit``).
        """
        import sqlalchemy as sa

        if self.path is not None and not self.path.exists():
            raise self._missing()
        with self._db_errors(), self._connect(write=True) as conn:
            with conn.begin():
                if HEAD not in self._tables(conn):
                    raise self._missing()
                locked = conn.execute(sa.select(self.head_t.c.seq, self.head_t.c.hash)
                                      .where(self.head_t.c.id == 1).with_for_update()).all()
                entries, head = self._read(conn)
                last = entries[-1] if entries else None
                if not locked or last is None or head != (last.seq, last.hash) or (
                        entry_hash(last.seq, last.kind, last.created_at, last.prev_hash,
                                   last.payload) != last.hash):
                    raise LedgerError(
                        f"The ledger at {self.display!r} is damaged (its last entry or its head "
                        "does not check out); run `unlearnkit ledger audit` to see where. "
                        "Nothing was written.")
                new: list[Entry] = []
                for kind, payload in build(entries):
                    e = self._insert(conn, entries + new, kind, payload)
                    new.append(e)
                if new:
                    conn.execute(sa.update(self.head_t).where(self.head_t.c.id == 1)
                                 .values(seq=new[-1].seq, hash=new[-1].hash))
                if before_commit is not None:
                    before_commit()
            return new

    # ------------------------------------------------------------------ the apply lock
    @contextlib.contextmanager
    def apply_lock(self, ledger_id: str, wait: float | None = None) -> Iterator[None]:
        """Hold the ledger's apply lock for the ``with`` block.

        Args:
            ledger_id: the ledger's id (PostgreSQL: which advisory lock).
            wait: seconds to wait for another holder (``None`` or 0: refuse at once;
                ``math.inf``: wait as long as it takes).

        Raises:
            LedgerBusyError: another process holds it (and did not let go within ``wait``).
        """
        deadline = time.monotonic() + (wait or 0.0)
        me = f"ledger apply, pid {os.getpid()} on {_host()}, since {utc_now()[11:19]} UTC"
        if self.backend == "sqlite":
            import fcntl

            assert self.path is not None
            lock_path = Path(f"{self.path}.lock")
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            holder = _read_holder(lock_path)
                            raise self._busy(holder, wait) from None
                        time.sleep(min(0.2, max(deadline - time.monotonic(), 0.01)))
                os.ftruncate(fd, 0)
                os.pwrite(fd, me.encode(), 0)
                try:
                    yield
                finally:
                    os.ftruncate(fd, 0)
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
            return
        import sqlalchemy as sa

        key = int(ledger_id[:8], 16) & 0x7FFFFFFF
        with self._db_errors():
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            with self._db_errors():
                conn.execute(sa.text("SELECT set_config('application_name', :v, false)"),
                             {"v": me[:63]})
                while not conn.execute(sa.text("SELECT pg_try_advisory_lock(:a, :b)"),
                                       {"a": _PG_LOCK_SPACE, "b": key}).scalar():
                    if time.monotonic() >= deadline:
                        holder = conn.execute(sa.text(
                            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a "
                            "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted AND "
                            "l.classid = CAST(:a AS oid) AND l.objid = CAST(:b AS oid) AND "
                            "l.objsubid = 2"), {"a": _PG_LOCK_SPACE, "b": key}).scalar()
                        raise self._busy(holder, wait)
                    time.sleep(min(0.2, max(deadline - time.monotonic(), 0.01)))
            try:
                yield
            finally:
                with contextlib.suppress(Exception):  # a lost connection released it anyway
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:a, :b)"),
                                 {"a": _PG_LOCK_SPACE, "b": key})
        finally:
            conn.close()

    def _busy(self, holder: str | None, wait: float | None) -> LedgerBusyError:
        who = f" ({holder})" if holder else ""
        waited = (f" for {wait:g} s" if wait and math.isfinite(wait) else "")
        return LedgerBusyError(
            f"Another apply is running on the ledger at {self.display!r}{who}; it was not "
            f"released{waited}. Run again when it ends, or pass --wait SECONDS.")


def _read_holder(path: Path) -> str | None:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        text = path.read_text().strip()
        return text or None
    return None
