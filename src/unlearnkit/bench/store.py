"""The results store: one SQLite row per run, each committed when its run ends.

Table ``runs`` holds one row per run (its spec, status and metrics). Table ``artefacts``
holds, per finished run, a JSON document of what the report draws beyond the metrics (see
:data:`ARTEFACT_KEYS`); it is written in the same transaction as the run's row.

The database is in WAL mode and every row is written in its own transaction, so a benchmark
killed at any moment leaves every finished row intact and no partial one; rerunning it skips
the run_ids already stored (failed runs are retried, and their row replaced).

Several benchmarks can share one store (``unlearnkit bench`` twice on one ``--out``, on one
machine or on several that see the file): each claims a run before running it, in table
``leases`` (the run_id, the owner's pid, host and a random token, and a heartbeat), in a
``BEGIN IMMEDIATE`` transaction, so each run is executed once. The owner refreshes its
heartbeat every :data:`HEARTBEAT_SECONDS` while it runs; a lease is dead, and its run claimed
again, when its heartbeat is older than :data:`LEASE_TIMEOUT` seconds or when its owner ran
on this host and its process no longer exists (a killed benchmark blocks nothing). Hosts that
share a store must agree on the time within the timeout.

A file that is not such a store (no table ``runs``, a column missing, a row whose JSON is
corrupt) is refused with :class:`~unlearnkit.exceptions.DataError`, naming the file and the
problem, and is never modified.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from unlearnkit.compare import jsonable
from unlearnkit.exceptions import DataError, short_repr
from unlearnkit.metrics.verdict import OUTCOMES

__all__ = ["ARTEFACT_KEYS", "CALIBRATION_COLUMN", "FINISHED", "HEARTBEAT_SECONDS",
           "LEASE_TIMEOUT", "METRIC_COLUMNS",
           "RETRAIN_SOURCES", "SPEC_COLUMNS", "TIMING_COLUMNS", "TRIAL_COLUMNS", "VERDICT_COLUMN",
           "ResultStore", "check_store", "read_artefacts", "read_rows", "read_states",
           "read_trials"]

#: The metrics stored as REAL columns (``NULL`` where absent); every metric is also in the
#: ``metrics`` JSON column.
METRIC_COLUMNS: tuple[str, ...] = (
    "retain_acc", "forget_acc", "test_acc", "test_retain_acc", "test_forget_acc",
    "forget_acc_gap", "seconds", "retrain_seconds", "speedup",
    "mia_loss_cv", "mia_entropy", "mia_confidence", "mia_lira",
    "js_divergence", "activation_distance", "zrf", "avg_gap", "anamnesis",
    "forgetting_quality", "competition_score",
    "cka_retrained", "cka_original", "probe_forget_acc",
    "mia_loss_cv_power", "mia_entropy_power", "mia_confidence_power",
    "mia_loss_cv_separation", "mia_entropy_separation", "mia_confidence_separation",
    "verdict_loss_auc",
)

#: How a row's ``seconds`` was measured, beside the metrics (``NULL`` in older stores, in
#: ``skipped`` and ``failed`` rows, and where it does not apply); not in the ``metrics`` JSON:
#:
#: - ``retrain_seconds_source`` (TEXT): where the row's ``retrain_seconds`` (the numerator of
#:   its ``speedup``) comes from, one of :data:`RETRAIN_SOURCES`;
#: - ``cache_hit`` (INTEGER 0/1): whether the timed unlearning call read anything from a
#:   cache (the importance cache); always 0 under the default cold timing;
#: - ``timing`` (JSON): the conditions of the measurement, ``{"process": "worker" | "main" |
#:   "ray", "threads", "device", "mode": "cold" | "warm", "repeats", "cpu_seconds",
#:   "cpu_speedup"}`` (``cpu_*``: the same figures in the process's CPU time; see
#:   ``benchmarks/README.md``, "How times are measured").
TIMING_COLUMNS: tuple[str, ...] = ("retrain_seconds_source", "cache_hit", "timing")

#: The oracle-free verdict of the row's model (TEXT: ``forgotten``, ``partial``, ``not
#: forgotten`` or ``utility lost``; :func:`unlearnkit.evaluation.verdict`), also in the
#: ``metrics`` JSON as ``verdict``; ``NULL`` where the split has no validation set.
VERDICT_COLUMN = "verdict"

#: The calibration of a calibrated row (``calibrate:`` in the config; JSON, ``NULL`` in every
#: other row): ``{"budget" (the fraction of retraining, or null), "budget_seconds",
#: "budget_basis" (where the retraining seconds the budget was derived from come from, one of
#: :data:`RETRAIN_SOURCES`), "max_trials", "trials" (how many ran), "best_trial",
#: "stopped_at" (``{"phase", "epoch"}`` when the chosen model is the best trial's model at the
#: end of that epoch, see :class:`unlearnkit.CalibrationTrial`), "search_seconds",
#: "defaults" (the method's default parameters: the search's first trial),
#: "space"}``. The row's ``params`` are the chosen parameters and its ``seconds`` the whole
#: search's: every trial's cost counts. Its trials are in table ``trials``.
CALIBRATION_COLUMN = "calibration"

#: The columns of table ``trials`` (one row per trial of a calibrated run, in order):
#: ``number`` (0: the method's defaults), ``params`` (JSON: the searched values), ``state``
#: (``complete``, ``pruned``, ``over budget`` or ``failed``), ``value`` (the objective),
#: ``outcome`` (the trial's verdict), ``retained``, ``shortfall``, ``seconds``, ``note`` (why
#: it failed; ``stopped at <phase> epoch k`` when its result is the model at that epoch).
TRIAL_COLUMNS: tuple[str, ...] = ("number", "params", "state", "value", "outcome", "retained",
                                  "shortfall", "seconds", "note")

def _trial_note(trial: Mapping[str, Any]) -> str | None:
    """A trial's ``note``, saying where it stopped when its result is an epoch's model."""
    at = trial.get("stopped_at")
    where = f"stopped at {at['phase']} epoch {at['epoch']}" if at else None
    note = trial.get("note")
    return "; ".join(x for x in (where, note) if x) or None


#: The values of ``retrain_seconds_source``, from the most to the least like for like:
#:
#: - ``retrain-row``: the ``retrain`` run (default hyper-parameters) of the same scenario and
#:   seed, measured by the same benchmark in the same pool, under the same conditions;
#: - ``reference-pool``: the training of the retrained reference, done by the same benchmark
#:   as a task of its pool (same process kind, thread count and device);
#: - ``reference-parent``: the reference trained by the same benchmark in its parent process,
#:   with all its threads (the Ray executor prepares that way): not like for like;
#: - ``cache``: the reference came from the on-disk cache; its seconds were measured when it
#:   was trained, by another benchmark, process, load or day: indicative only.
RETRAIN_SOURCES: tuple[str, ...] = ("retrain-row", "reference-pool", "reference-parent",
                                    "cache")

#: The keys of a run's artefacts document (each optional):
#:
#: - ``curves``: one dict per evaluation during training, ``{"phase", "epoch", "step",
#:   "retain_acc", "forget_acc", "test_acc"}``; epoch 0 of a phase is its start, ``step``
#:   counts epochs across phases (only with ``curves: true`` in the config);
#: - ``per_class``: test accuracy per class, ``{"classes": [...], "forgotten": [...],
#:   "original": [...], "unlearned": [...], "retrained": [...]}``;
#: - ``losses``: per-sample cross-entropy, ``{model: {"forget": [...], "test": [...]}}`` for
#:   the models ``original``, ``unlearned`` and ``retrained``;
#: - ``saliency``: ``{"forget" | "retain": {"index", "label", "image" (C x H x W),
#:   "models": {model: {"pred", "saliency" (H x W), "gradcam" (H x W or null)}}}}``.
ARTEFACT_KEYS: tuple[str, ...] = ("curves", "per_class", "losses", "saliency")

#: What identifies a run, beside its run_id.
SPEC_COLUMNS: tuple[str, ...] = (
    "dataset", "arch", "scenario", "scenario_kind", "method", "params", "seed",
)

#: Statuses of runs that are not run again: ``ok``, and ``skipped`` (the method refuses the
#: scenario). ``failed`` runs are retried.
FINISHED = ("ok", "skipped")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    dataset TEXT NOT NULL,
    arch TEXT NOT NULL,
    scenario TEXT NOT NULL,
    scenario_kind TEXT NOT NULL,
    method TEXT NOT NULL,
    params TEXT NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL,
    {", ".join(f"{c} REAL" for c in METRIC_COLUMNS)},
    retrain_seconds_source TEXT,
    cache_hit INTEGER,
    timing TEXT,
    verdict TEXT,
    calibration TEXT,
    metrics TEXT,
    warnings TEXT,
    spec TEXT NOT NULL,
    started TEXT,
    finished TEXT,
    error TEXT
);
CREATE TABLE IF NOT EXISTS artefacts (
    run_id TEXT PRIMARY KEY,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS trials (
    run_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    params TEXT NOT NULL,
    state TEXT NOT NULL,
    value REAL,
    outcome TEXT,
    retained REAL,
    shortfall REAL,
    seconds REAL,
    note TEXT,
    PRIMARY KEY (run_id, number)
);
CREATE TABLE IF NOT EXISTS leases (
    run_id TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    heartbeat REAL NOT NULL
);
"""
_COLUMNS = ("run_id", *SPEC_COLUMNS, "status", *METRIC_COLUMNS, *TIMING_COLUMNS,
            VERDICT_COLUMN, CALIBRATION_COLUMN, "metrics",
            "warnings", "spec", "started", "finished", "error")
#: the SQL type of each column added after the first stores (added to older stores on writing)
_ADDED = {**{c: "REAL" for c in METRIC_COLUMNS}, "retrain_seconds_source": "TEXT",
          "cache_hit": "INTEGER", "timing": "TEXT", VERDICT_COLUMN: "TEXT",
          CALIBRATION_COLUMN: "TEXT"}
_TABLES = {"runs": _COLUMNS, "artefacts": ("run_id", "payload"),
           "trials": ("run_id", *TRIAL_COLUMNS),
           "leases": ("run_id", "token", "pid", "host", "heartbeat")}
#: the JSON columns of ``runs`` and the type each holds (``None`` allowed where marked)
_JSON = {"params": (dict, False), "metrics": (dict, True), "warnings": (list, True),
         "spec": (dict, False), "timing": (dict, True),
         CALIBRATION_COLUMN: (dict, True)}

#: How often (seconds) a benchmark refreshes the heartbeat of the runs it holds.
HEARTBEAT_SECONDS = 10.0

#: A lease whose heartbeat is older than this (seconds) is dead: its run is claimed again.
LEASE_TIMEOUT = 60.0

# PRAGMA user_version of a store that its creator is deleting (it failed before any row):
# whoever opened it meanwhile opens the path again
_DISCARDED = 0x756B6463


def _host() -> str:
    """This host, as leases name it: the hostname, and on Linux the PID namespace (two
    containers with one hostname do not see each other's processes)."""
    name = socket.gethostname()
    with contextlib.suppress(OSError):
        name += f"/pidns:{os.stat('/proc/self/ns/pid').st_ino}"
    return name


_HOST = _host()


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host exists (a zombie does not)."""
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT: trust the heartbeat only
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[:1] not in (["Z"], ["X"])


def _store_error(path: str | os.PathLike, problem: str) -> DataError:
    return DataError(f"{str(path)!r} is not an unlearnkit results store: {problem}.")


def _check_schema(conn: sqlite3.Connection, path: str | os.PathLike) -> bool:
    """Whether ``conn`` holds a results store (``False``: an empty database); raises
    :class:`DataError` for any other database or a store that lacks a column."""
    tables = {name for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "runs" not in tables:
        if tables:
            raise _store_error(path, "it has no table 'runs' (it holds "
                                     f"{', '.join(map(repr, sorted(tables)))})")
        return False
    for table, columns in _TABLES.items():
        if table not in tables:
            continue  # an older store: created when it is opened for writing
        have = _columns(conn, table)
        for column in columns:
            # a column added by a later unlearnkit: NULL when read, added on writing
            if column not in have and not (table == "runs" and column in _ADDED):
                raise _store_error(path, f"table {table!r} lacks column {column!r}")
    return True


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _add_metric_columns(conn: sqlite3.Connection) -> None:
    """Give a store from an older unlearnkit the metric (and timing) columns it lacks (NULL in
    old rows)."""
    have = _columns(conn, "runs")
    for column, kind in _ADDED.items():
        if column not in have:
            conn.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")


def _real(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


class ResultStore:
    """A benchmark's SQLite results (created if missing).

    >>> import tempfile, os
    >>> store = ResultStore(os.path.join(tempfile.mkdtemp(), "results.sqlite"))
    >>> store.finished_ids()
    set()

    Args:
        path: the SQLite file.
        lease_timeout: seconds after which a lease without a heartbeat is dead.
        heartbeat: seconds between two heartbeats of the leases this store holds.

    Raises:
        DataError: ``path`` is another SQLite database, or not one, or a store that lacks a
            column (the file is left as it is).
    """

    def __init__(self, path: str | os.PathLike, *, lease_timeout: float = LEASE_TIMEOUT,
                 heartbeat: float = HEARTBEAT_SECONDS) -> None:
        self.path = Path(path)
        self.lease_timeout = float(lease_timeout)
        self.heartbeat = float(heartbeat)
        #: this store's owner token in table ``leases``
        self.token = secrets.token_hex(8)
        #: whether this store created the file (only then may :meth:`discard` delete it)
        self.created = False
        self._conn: sqlite3.Connection | None = None
        self._beat: tuple[threading.Thread, threading.Event] | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open()

    # ------------------------------------------------------------------ opening
    def _open(self) -> None:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            pass
        else:
            os.close(fd)
            self.created = True
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        try:
            for attempt in range(50):  # another process may be creating the store
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or attempt == 49:
                        raise
                    time.sleep(0.1)
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                _check_schema(conn, self.path)
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                _add_metric_columns(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise _store_error(self.path, str(exc)) from None
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise DataError(f"The results store {str(self.path)!r} is closed.")
        return self._conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on an error); if the store's
        creator is deleting the file meanwhile, the path is opened again first."""
        for _ in range(200):
            self.conn.execute("BEGIN IMMEDIATE")
            if self.conn.execute("PRAGMA user_version").fetchone()[0] != _DISCARDED:
                break
            self.conn.execute("ROLLBACK")
            self.conn.close()
            self._conn = None
            time.sleep(0.05)
            self._open()
        else:
            raise DataError(f"The results store {str(self.path)!r} is being deleted by "
                            "another process; run the benchmark again.")
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------ rows
    def finished_ids(self) -> set[str]:
        """The run_ids that are not run again (status in :data:`FINISHED`)."""
        marks = ",".join("?" * len(FINISHED))
        cur = self.conn.execute(f"SELECT run_id FROM runs WHERE status IN ({marks})", FINISHED)
        return {r[0] for r in cur}

    def write(self, row: Mapping[str, Any]) -> bool:
        """Store one run's row and its ``artefacts`` (if any), in one transaction (replacing a
        failed attempt), and release this store's lease on the run. Returns ``False``, and
        writes nothing, if the store already holds a finished row of the run (another
        benchmark's, whose lease this one outlived)."""
        metrics = dict(row.get("metrics") or {})
        values = {
            "run_id": row["run_id"],
            **{k: row[k] for k in ("dataset", "arch", "scenario", "scenario_kind", "method",
                                   "seed", "status")},
            "params": json.dumps(jsonable(row["params"]), sort_keys=True),
            **{c: _real(metrics.get(c)) for c in METRIC_COLUMNS},
            "retrain_seconds_source": row.get("retrain_seconds_source"),
            "cache_hit": None if row.get("cache_hit") is None else int(bool(row["cache_hit"])),
            "timing": (json.dumps(jsonable(row["timing"]), sort_keys=True)
                       if row.get("timing") is not None else None),
            VERDICT_COLUMN: (metrics.get("verdict")
                             if isinstance(metrics.get("verdict"), str) else None),
            CALIBRATION_COLUMN: (json.dumps(jsonable(row[CALIBRATION_COLUMN]), sort_keys=True,
                                            allow_nan=False)
                                 if row.get(CALIBRATION_COLUMN) is not None else None),
            "metrics": json.dumps(jsonable(metrics), sort_keys=True, allow_nan=False),
            "warnings": json.dumps(list(row.get("warnings") or ())),
            "spec": json.dumps(jsonable(row["spec"]), sort_keys=True),
            "started": row.get("started"),
            "finished": row.get("finished"),
            "error": row.get("error"),
        }
        artefacts = (json.dumps(jsonable(row["artefacts"]), allow_nan=False)
                     if row.get("artefacts") else None)
        trials = [(values["run_id"], int(t["number"]),
                   json.dumps(jsonable(t.get("params") or {}), sort_keys=True),
                   str(t["state"]), _real(t.get("value")), t.get("outcome"),
                   _real(t.get("retained")), _real(t.get("shortfall")),
                   _real(t.get("seconds")), _trial_note(t)) for t in row.get("trials") or ()]
        sql = (f"INSERT INTO runs ({', '.join(_COLUMNS)}) "
               f"VALUES ({', '.join('?' * len(_COLUMNS))})")
        rid = values["run_id"]
        with self._transaction() as conn:
            conn.execute("DELETE FROM leases WHERE run_id = ? AND token = ?", (rid, self.token))
            if conn.execute("SELECT 1 FROM runs WHERE run_id = ? AND status != 'failed'",
                            (rid,)).fetchone():
                return False
            conn.execute("DELETE FROM runs WHERE run_id = ?", (rid,))
            conn.execute(sql, [values[c] for c in _COLUMNS])
            conn.execute("DELETE FROM artefacts WHERE run_id = ?", (rid,))
            if artefacts is not None:
                conn.execute("INSERT INTO artefacts (run_id, payload) VALUES (?, ?)",
                             (rid, artefacts))
            conn.execute("DELETE FROM trials WHERE run_id = ?", (rid,))
            if trials:
                conn.executemany(
                    f"INSERT INTO trials (run_id, {', '.join(TRIAL_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * (len(TRIAL_COLUMNS) + 1))})", trials)
        return True

    def amend_timing(self, run_id: str, changes: Mapping[str, Any],
                     retrain_seconds_source: str, *,
                     timing: Mapping[str, Any] | None = None) -> bool:
        """Replace the timing metrics ``changes`` (``retrain_seconds``, ``speedup``) of the
        finished row ``run_id``, in its columns and its ``metrics`` JSON, its
        ``retrain_seconds_source`` and (if given) its ``timing``; whether the row was there
        (status ``ok``) to amend."""
        bad = set(changes) - {"retrain_seconds", "speedup"}
        if bad:
            raise ValueError(f"amend_timing changes only retrain_seconds and speedup, not {bad}")
        with self._transaction() as conn:
            found = conn.execute("SELECT metrics FROM runs WHERE run_id = ? AND status = 'ok'",
                                 (run_id,)).fetchone()
            if found is None:
                return False
            metrics = json.loads(found[0] or "{}")
            for key, value in changes.items():
                if value is None:
                    metrics.pop(key, None)
                else:
                    metrics[key] = value
            columns: dict[str, Any] = {k: _real(v) for k, v in changes.items()}
            columns["retrain_seconds_source"] = retrain_seconds_source
            columns["metrics"] = json.dumps(jsonable(metrics), sort_keys=True, allow_nan=False)
            if timing is not None:
                columns["timing"] = json.dumps(jsonable(timing), sort_keys=True)
            conn.execute(f"UPDATE runs SET {', '.join(f'{k} = ?' for k in columns)} "
                         "WHERE run_id = ?", [*columns.values(), run_id])
        return True

    def rows(self) -> list[dict[str, Any]]:
        """Every stored row, as dicts (``params``, ``metrics``, ``warnings``, ``spec`` parsed)."""
        return list(_rows(self.conn, self.path))

    def artefacts(self) -> dict[str, dict[str, Any]]:
        """Every stored artefacts document, by run_id."""
        return _artefacts(self.conn, self.path)

    def trials(self) -> dict[str, list[dict[str, Any]]]:
        """Every calibrated run's trials, by run_id (see :data:`TRIAL_COLUMNS`)."""
        return _trials(self.conn, self.path)

    # ------------------------------------------------------------------ leases
    def _alive(self, pid: int, host: str, heartbeat: float, now: float) -> bool:
        if now - heartbeat > self.lease_timeout:
            return False
        return host != _HOST or _pid_alive(pid)

    def claim(self, run_ids: Sequence[str], n: int,
              retry: Mapping[str, Any] | None = None) -> tuple[list[str], dict[str, str]]:
        """Claim up to ``n`` of ``run_ids``, in order, in one transaction.

        A run is claimed if no live lease holds it and the store holds no row of it, or the
        failed row that ``retry`` maps it to (``read_states``' value when the benchmark
        started: a failed run is retried once per benchmark, not once per process).

        Returns:
            ``(claimed, resolved)``: the run_ids now leased to this store, and the run_ids
            that another benchmark ran meanwhile, with the status of their row.
        """
        retry = retry or {}
        claimed: list[str] = []
        resolved: dict[str, str] = {}
        now = time.time()
        with self._transaction() as conn:
            states = {rid: state for rid, *state in conn.execute(
                "SELECT run_id, status, started, finished FROM runs")}
            leases = {rid: rest for rid, *rest in conn.execute(
                "SELECT run_id, token, pid, host, heartbeat FROM leases")}
            for rid in run_ids:
                if len(claimed) >= n:
                    break
                state = states.get(rid)
                if state is not None and tuple(state) != tuple(retry.get(rid) or ()):
                    resolved[rid] = state[0]
                    continue
                lease = leases.get(rid)
                if lease is not None and lease[0] != self.token and self._alive(*lease[1:], now):
                    continue
                conn.execute("INSERT OR REPLACE INTO leases (run_id, token, pid, host, "
                             "heartbeat) VALUES (?, ?, ?, ?, ?)",
                             (rid, self.token, os.getpid(), _HOST, now))
                claimed.append(rid)
        if claimed:
            self._start_heartbeat()
        return claimed, resolved

    def release(self, run_ids: Iterable[str] | None = None) -> None:
        """Give up this store's leases (on ``run_ids``, or all)."""
        conn = self._conn
        if conn is None:
            return
        conn.execute("BEGIN IMMEDIATE")  # not _transaction: a deleted store stays deleted
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] != _DISCARDED:
                if run_ids is None:
                    conn.execute("DELETE FROM leases WHERE token = ?", (self.token,))
                else:
                    conn.executemany("DELETE FROM leases WHERE run_id = ? AND token = ?",
                                     [(rid, self.token) for rid in run_ids])
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    def _start_heartbeat(self) -> None:
        if self._beat is not None:
            return
        stop = threading.Event()
        uri = f"{self.path.resolve().as_uri()}?mode=rw"
        token, every = self.token, self.heartbeat

        def beat() -> None:
            while not stop.wait(every):
                with contextlib.suppress(sqlite3.Error):  # busy or gone: the next beat
                    conn = sqlite3.connect(uri, uri=True, timeout=every)
                    try:
                        with conn:
                            conn.execute("UPDATE leases SET heartbeat = ? WHERE token = ?",
                                         (time.time(), token))
                    finally:
                        conn.close()

        thread = threading.Thread(target=beat, name="unlearnkit-lease-heartbeat", daemon=True)
        thread.start()
        self._beat = (thread, stop)

    def _stop_heartbeat(self) -> None:
        if self._beat is not None:
            thread, stop = self._beat
            stop.set()
            thread.join()
            self._beat = None

    # ------------------------------------------------------------------ closing
    def discard(self) -> bool:
        """Delete the store if this object created it and it holds no row and no other
        benchmark's lease (a benchmark that failed before it stored anything leaves no empty
        file behind); whether it did. The store is closed either way."""
        if self._conn is None:
            return False
        self._stop_heartbeat()
        deleted = False
        if self.created:
            with self._transaction() as conn:
                used = (conn.execute("SELECT 1 FROM runs LIMIT 1").fetchone()
                        or conn.execute("SELECT 1 FROM artefacts LIMIT 1").fetchone()
                        or conn.execute("SELECT 1 FROM leases WHERE token != ? LIMIT 1",
                                        (self.token,)).fetchone())
                if not used:  # whoever opens it from now on opens the path again
                    conn.execute("DELETE FROM leases")
                    conn.execute(f"PRAGMA user_version = {_DISCARDED}")
                    deleted = True
        if not deleted:
            self.close()
            return False
        self.conn.close()
        self._conn = None
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        return True

    def close(self) -> None:
        """Release this store's leases and close it."""
        self._stop_heartbeat()
        if self._conn is None:
            return
        with contextlib.suppress(sqlite3.Error):
            self.release()
        self._conn.close()
        self._conn = None

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parse(path: str | os.PathLike, rowid: int, run_id: Any, key: str, text: Any) -> Any:
    kind, nullable = _JSON[key]
    if text is None and nullable:
        return None
    try:
        value = json.loads(text)
    except (TypeError, ValueError) as exc:
        why = getattr(exc, "msg", None) or str(exc)
        raise _store_error(path, f"row {rowid} (run {run_id!r}) holds corrupt {key} JSON "
                                 f"({why})") from None
    if not isinstance(value, kind) and not (value is None and nullable):
        raise _store_error(path, f"row {rowid} (run {run_id!r}) holds {key} JSON that is not "
                                 f"a {'mapping' if kind is dict else 'list'}")
    return value


def _rows(conn: sqlite3.Connection, path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    if not _check_schema(conn, path):
        return
    have = _columns(conn, "runs")
    select = ", ".join(c if c in have else f"NULL AS {c}" for c in _COLUMNS)
    cur = conn.execute(f"SELECT rowid, {select} FROM runs ORDER BY rowid")
    for rowid, *values in cur:
        row = dict(zip(_COLUMNS, values, strict=True))
        for key in _JSON:
            row[key] = _parse(path, rowid, row["run_id"], key, row[key])
        _check_types(path, rowid, row)
        yield row


def _check_types(path: str | os.PathLike, rowid: int, row: dict[str, Any]) -> None:
    """Every plain column holds what the store writes there: text, an integer seed, numbers
    (or NULL) in the metric columns."""
    def bad(key: str, what: str) -> DataError:
        return _store_error(path, f"row {rowid} (run {row['run_id']!r}) holds "
                                  f"{type(row[key]).__name__} {short_repr(row[key])} in column "
                                  f"{key!r}, which holds {what}")

    for key in ("run_id", *(c for c in SPEC_COLUMNS if c != "seed" and c not in _JSON),
                "status"):
        if not isinstance(row[key], str):
            raise bad(key, "text")
    if isinstance(row["seed"], bool) or not isinstance(row["seed"], int):
        raise bad("seed", "an integer")
    for key in METRIC_COLUMNS:
        if row[key] is not None and (isinstance(row[key], bool)
                                     or not isinstance(row[key], (int, float))):
            raise bad(key, "a number or NULL")
    if row["retrain_seconds_source"] is not None and not isinstance(
            row["retrain_seconds_source"], str):
        raise bad("retrain_seconds_source", "text or NULL")
    if row["cache_hit"] is not None and row["cache_hit"] not in (0, 1):
        raise bad("cache_hit", "0, 1 or NULL")
    if row[VERDICT_COLUMN] is not None and row[VERDICT_COLUMN] not in OUTCOMES:
        raise bad(VERDICT_COLUMN, f"one of {', '.join(OUTCOMES)} or NULL")


def _artefacts(conn: sqlite3.Connection, path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    if not _check_schema(conn, path):
        return {}
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='artefacts'").fetchone()
    if not found:  # a database from before artefacts existed
        return {}
    out = {}
    for rowid, rid, payload in conn.execute("SELECT rowid, run_id, payload FROM artefacts"):
        try:
            value = json.loads(payload)
        except (TypeError, ValueError) as exc:
            why = getattr(exc, "msg", None) or str(exc)
            raise _store_error(path, f"the artefacts of run {rid!r} (artefacts row {rowid}) "
                                     f"hold corrupt JSON ({why})") from None
        if not isinstance(value, dict):
            raise _store_error(path, f"the artefacts of run {rid!r} (artefacts row {rowid}) "
                                     "are not a JSON mapping")
        out[rid] = value
    return out


def _trials(conn: sqlite3.Connection, path: str | os.PathLike
            ) -> dict[str, list[dict[str, Any]]]:
    if not _check_schema(conn, path):
        return {}
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='trials'").fetchone()
    if not found:  # a store from before calibration
        return {}
    out: dict[str, list[dict[str, Any]]] = {}
    cur = conn.execute(f"SELECT rowid, run_id, {', '.join(TRIAL_COLUMNS)} FROM trials "
                       "ORDER BY run_id, number")
    for rowid, rid, *values in cur:
        trial = dict(zip(TRIAL_COLUMNS, values, strict=True))
        try:
            params = json.loads(trial["params"])
        except (TypeError, ValueError):
            params = None
        if not isinstance(params, dict):
            raise _store_error(path, f"trial {trial['number']!r} of run {rid!r} (trials row "
                                     f"{rowid}) holds parameters that are not a JSON mapping")
        trial["params"] = params
        out.setdefault(rid, []).append(trial)
    return out


def read_trials(path: str | os.PathLike, run_ids: Iterable[str] | None = None
                ) -> dict[str, list[dict[str, Any]]]:
    """The trials of the calibrated runs of an existing results database, by run_id, in order
    (read-only; ``{}`` if there is no file or no calibrated run)."""
    out = _read_only(path, lambda conn: _trials(conn, path), {})
    if run_ids is not None:
        wanted = set(run_ids)
        out = {k: v for k, v in out.items() if k in wanted}
    return out


def _read_only(path: str | os.PathLike, read: Callable[[sqlite3.Connection], Any],
               empty: Any) -> Any:
    """``read(conn)`` on a read-only connection to ``path``; ``empty`` if there is no file.
    :class:`DataError` if the file is not a results store."""
    p = Path(path)
    if not p.is_file():
        return empty
    try:
        conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return read(conn)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise _store_error(p, str(exc)) from None


def read_artefacts(path: str | os.PathLike, run_ids: Iterable[str] | None = None
                   ) -> dict[str, dict[str, Any]]:
    """The artefacts documents of an existing results database, by run_id (read-only)."""
    out = _read_only(path, lambda conn: _artefacts(conn, path), {})
    if run_ids is not None:
        wanted = set(run_ids)
        out = {k: v for k, v in out.items() if k in wanted}
    return out


def read_rows(path: str | os.PathLike, run_ids: Iterable[str] | None = None
              ) -> list[dict[str, Any]]:
    """The rows of an existing results database, read-only (all, or those of ``run_ids``).

    Raises:
        DataError: the file is not a results store, lacks a column, or a row's JSON is
            corrupt (the message names the file, the row and the problem).
    """
    wanted = set(run_ids) if run_ids is not None else None
    return _read_only(path, lambda conn: [r for r in _rows(conn, path)
                                          if wanted is None or r["run_id"] in wanted], [])


def read_states(path: str | os.PathLike) -> dict[str, tuple[str, str | None, str | None]]:
    """``{run_id: (status, started, finished)}`` of an existing results database (read-only;
    ``{}`` if there is no file), after :func:`check_store`."""
    def read(conn: sqlite3.Connection) -> dict[str, tuple[str, str | None, str | None]]:
        if not _check_schema(conn, path):
            return {}
        return {rid: (status, started, finished) for rid, status, started, finished in
                conn.execute("SELECT run_id, status, started, finished FROM runs")}

    check_store(path)
    return _read_only(path, read, {})


def check_store(path: str | os.PathLike) -> None:
    """Read every row of an existing results database (without keeping them):
    :class:`DataError` naming the file and the problem if it is not a results store, lacks
    a column, or holds corrupt JSON. Nothing if there is no file."""
    def read(conn: sqlite3.Connection) -> None:
        for _ in _rows(conn, path):
            pass

    _read_only(path, read, None)
