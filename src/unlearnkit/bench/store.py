"""The results store: one SQLite row per run, each committed when its run ends.

Table ``runs`` holds one row per run (its spec, status and metrics). Table ``artefacts``
holds, per finished run, a JSON document of what the report draws beyond the metrics (see
:data:`ARTEFACT_KEYS`); it is written in the same transaction as the run's row.

The database is in WAL mode and every row is written in its own transaction by one writer
(the benchmark's parent process), so a benchmark killed at any moment leaves every finished
row intact and no partial one; rerunning it skips the run_ids already stored (failed runs
are retried, and their row replaced).
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from unlearnkit.compare import jsonable

__all__ = ["ARTEFACT_KEYS", "FINISHED", "METRIC_COLUMNS", "SPEC_COLUMNS", "ResultStore",
           "read_artefacts", "read_rows"]

#: The metrics stored as REAL columns (``NULL`` where absent); every metric is also in the
#: ``metrics`` JSON column.
METRIC_COLUMNS: tuple[str, ...] = (
    "retain_acc", "forget_acc", "test_acc", "test_retain_acc", "test_forget_acc",
    "forget_acc_gap", "seconds", "retrain_seconds", "speedup",
    "mia_loss_cv", "mia_entropy", "mia_confidence", "mia_lira",
    "js_divergence", "activation_distance", "zrf", "avg_gap", "anamnesis",
    "forgetting_quality", "competition_score",
)

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
"""
_COLUMNS = ("run_id", *SPEC_COLUMNS, "status", *METRIC_COLUMNS, "metrics", "warnings", "spec",
            "started", "finished", "error")


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
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)

    def finished_ids(self) -> set[str]:
        """The run_ids that are not run again (status in :data:`FINISHED`)."""
        marks = ",".join("?" * len(FINISHED))
        cur = self._conn.execute(f"SELECT run_id FROM runs WHERE status IN ({marks})", FINISHED)
        return {r[0] for r in cur}

    def write(self, row: Mapping[str, Any]) -> None:
        """Store one run's row and its ``artefacts`` (if any), in one transaction (replacing a
        failed attempt)."""
        metrics = dict(row.get("metrics") or {})
        values = {
            "run_id": row["run_id"],
            **{k: row[k] for k in ("dataset", "arch", "scenario", "scenario_kind", "method",
                                   "seed", "status")},
            "params": json.dumps(jsonable(row["params"]), sort_keys=True),
            **{c: _real(metrics.get(c)) for c in METRIC_COLUMNS},
            "metrics": json.dumps(jsonable(metrics), sort_keys=True, allow_nan=False),
            "warnings": json.dumps(list(row.get("warnings") or ())),
            "spec": json.dumps(jsonable(row["spec"]), sort_keys=True),
            "started": row.get("started"),
            "finished": row.get("finished"),
            "error": row.get("error"),
        }
        sql = (f"INSERT INTO runs ({', '.join(_COLUMNS)}) "
               f"VALUES ({', '.join('?' * len(_COLUMNS))})")
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM runs WHERE run_id = ? AND status = 'failed'",
                         (values["run_id"],))
            conn.execute(sql, [values[c] for c in _COLUMNS])
            conn.execute("DELETE FROM artefacts WHERE run_id = ?", (values["run_id"],))
            if row.get("artefacts"):
                conn.execute("INSERT INTO artefacts (run_id, payload) VALUES (?, ?)",
                             (values["run_id"], json.dumps(jsonable(row["artefacts"]),
                                                           allow_nan=False)))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def rows(self) -> list[dict[str, Any]]:
        """Every stored row, as dicts (``params``, ``metrics``, ``warnings``, ``spec`` parsed)."""
        return _rows(self._conn)

    def artefacts(self) -> dict[str, dict[str, Any]]:
        """Every stored artefacts document, by run_id."""
        return _artefacts(self._conn)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _rows(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    cur = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM runs ORDER BY rowid")
    out = []
    for values in cur:
        row = dict(zip(_COLUMNS, values, strict=True))
        for key in ("params", "metrics", "warnings", "spec"):
            row[key] = json.loads(row[key]) if row[key] is not None else None
        out.append(row)
    return out


def _artefacts(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='artefacts'").fetchone()
    if not found:  # a database from before artefacts existed
        return {}
    return {rid: json.loads(payload)
            for rid, payload in conn.execute("SELECT run_id, payload FROM artefacts")}


def _read_only(path: str | os.PathLike, read: Any, empty: Any) -> Any:
    """``read(conn)`` on a read-only connection to ``path``; ``empty`` if there is no file."""
    p = Path(path)
    if not p.is_file():
        return empty
    conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return read(conn)
    finally:
        conn.close()


def read_artefacts(path: str | os.PathLike, run_ids: Iterable[str] | None = None
                   ) -> dict[str, dict[str, Any]]:
    """The artefacts documents of an existing results database, by run_id (read-only)."""
    out = _read_only(path, _artefacts, {})
    if run_ids is not None:
        wanted = set(run_ids)
        out = {k: v for k, v in out.items() if k in wanted}
    return out


def read_rows(path: str | os.PathLike, run_ids: Iterable[str] | None = None
              ) -> list[dict[str, Any]]:
    """The rows of an existing results database, read-only (all, or those of ``run_ids``)."""
    rows = _read_only(path, _rows, [])
    if run_ids is not None:
        wanted = set(run_ids)
        rows = [r for r in rows if r["run_id"] in wanted]
    return rows
