"""Benchmarks, hardened (issue 11): no store left by a failed benchmark, two benchmarks sharing
one store, configs checked before anything runs, and stores that are not ours refused.

Plans are tiny (an MLP with 16 hidden units, 1-2 epochs, on digits); caches go to a fresh
folder per test (conftest).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time

import pytest

import unlearnkit.bench.run as bench_run
from _cli import run as cli
from unlearnkit.bench import ResultStore, expand, load_config, parse_config, read_rows, run_plan
from unlearnkit.bench.config import MethodGrid
from unlearnkit.bench.store import _HOST, read_artefacts
from unlearnkit.exceptions import DataError, InvalidParameterError

TINY = {
    "dataset": "digits",
    "model": {"arch": "mlp", "kwargs": {"hidden": [16]}},
    "recipe": {"epochs": 1},
    "scenarios": {"classes": [[3]]},
    "methods": {"finetune": {"epochs": [1, 2]}},
    "seeds": [0],
    "relearn": False,
    "mia": False,
    "original": False,
}

BASE_ROW = {"dataset": "digits", "arch": "mlp", "scenario": "class 3", "scenario_kind": "class",
            "method": "finetune", "params": {"epochs": 1}, "seed": 0, "spec": {},
            "metrics": {"forget_acc": 0.5}}


def one_line_error(code: int, out: str, err: str) -> str:
    """The single ``unlearnkit: error:`` line of a refused command (after progress lines)."""
    lines = [x for x in err.splitlines() if x.strip()]
    errors = [x for x in lines if x.startswith("unlearnkit: error: ")]
    assert code == 2 and out == "", (code, out, err)
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert "Traceback" not in err
    return errors[0]


def write_config(tmp_path, text: str | bytes, name: str = "c.yaml"):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def dead_pid() -> int:
    """The pid of a process of this host that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def add_lease(db, run_id: str, *, pid: int, host: str, age: float = 0.0) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("INSERT INTO leases (run_id, token, pid, host, heartbeat) "
                     "VALUES (?, 'someone', ?, ?, ?)", (run_id, pid, host, time.time() - age))
    conn.close()


def table_names(db) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return sorted(n for (n,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"))
    finally:
        conn.close()


# ---------------------------------------------------------------------- 1. no empty store
def test_a_config_that_fails_at_load_time_creates_no_store(tmp_path):
    # the loader's own check (sklearn's random_state range), met only when the data loads
    path = write_config(tmp_path, json.dumps(
        {**TINY, "dataset": {"name": "digits", "options": {"split_seed": 2**40}}}))
    db = tmp_path / "r.sqlite"
    line = one_line_error(*cli("bench", path, "--out", db, "--workers", "1"))
    assert "split_seed" in line and "4294967295" in line
    assert not db.exists() and not (tmp_path / "r.sqlite.logs").exists()
    # an unknown class name is only known once the data is read: no store either
    path = write_config(tmp_path, json.dumps({**TINY, "scenarios": {"classes": [["cat"]]}}))
    line = one_line_error(*cli("bench", path, "--out", db, "--workers", "1"))
    assert "'cat'" in line and not db.exists()


def test_a_run_time_failure_before_any_row_removes_the_store_it_created(tmp_path,
                                                                         monkeypatch):
    plan = expand(parse_config(TINY))
    db = tmp_path / "r.sqlite"

    def broken(task):
        raise RuntimeError("the first run broke the benchmark")

    monkeypatch.setattr(bench_run, "execute", broken)
    with pytest.raises(RuntimeError, match="broke"):
        run_plan(plan, db, workers=1)
    assert not db.exists() and not (tmp_path / "r.sqlite.logs").exists()
    assert not list(tmp_path.glob("r.sqlite*"))

    # a store that existed before is never removed: neither an empty one...
    ResultStore(db).close()
    with pytest.raises(RuntimeError, match="broke"):
        run_plan(plan, db, workers=1)
    assert db.is_file() and read_rows(db) == []
    # ... nor one with rows (the failure comes after them: they stay, unchanged)
    monkeypatch.undo()
    first = run_plan(expand(parse_config({**TINY, "methods": {"finetune": {"epochs": 1}}})),
                     db, workers=1)
    assert first["ok"] == 1
    before = read_rows(db)
    monkeypatch.setattr(bench_run, "execute", broken)
    with pytest.raises(RuntimeError, match="broke"):
        run_plan(plan, db, workers=1)
    assert read_rows(db) == before


def test_a_store_deleted_by_its_creator_is_opened_again_by_the_others(tmp_path):
    db = tmp_path / "r.sqlite"
    creator, other = ResultStore(db), ResultStore(db)
    assert creator.created and not other.created
    assert creator.discard()  # no row, no lease of anyone else: deleted
    other.close()  # closing it does not bring the file back
    assert not db.exists() and not list(tmp_path.iterdir())
    creator, other = ResultStore(db), ResultStore(db)
    assert creator.discard() and not db.exists()
    assert other.write({**BASE_ROW, "run_id": "x", "status": "ok"})  # a fresh file
    other.close()
    assert [r["run_id"] for r in read_rows(db)] == ["x"]
    # a store with a row, or another benchmark's lease, is not deleted
    creator, other = ResultStore(tmp_path / "b.sqlite"), ResultStore(tmp_path / "b.sqlite")
    assert other.claim(["y"], 1) == (["y"], {})
    assert not creator.discard() and (tmp_path / "b.sqlite").is_file()
    other.close()


# ---------------------------------------------------------------------- 2. sharing a store
@pytest.mark.slow
def test_two_benchmarks_on_one_store_share_the_runs(tmp_path):
    config = {**TINY, "methods": {"finetune": {"epochs": [1, 2, 3, 4]}}}
    path = write_config(tmp_path, json.dumps(config))
    db = tmp_path / "r.sqlite"
    cmd = [sys.executable, "-m", "unlearnkit", "bench", str(path), "--out", str(db),
           "--workers", "1", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
        assert "Traceback" not in err
    planned = {r.run_id for r in expand(parse_config(config)).runs}
    ids = [r["run_id"] for r in read_rows(db)]
    assert sorted(ids) == sorted(planned)  # every planned run, each exactly once
    results = [json.loads(out) for out, _ in outs]
    assert sum(r["ran"] for r in results) == len(planned)  # executed once, by one of them
    for r in results:
        assert r["ok"] + r["reused"] == len(planned) and r["failed"] == 0
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM leases").fetchone() == (0,)
    conn.close()


def test_leases_of_dead_owners_are_taken_over_and_live_ones_respected(tmp_path):
    db = tmp_path / "r.sqlite"
    ResultStore(db).close()
    add_lease(db, "dead-pid", pid=dead_pid(), host=_HOST)  # fresh heartbeat, process gone
    add_lease(db, "stale", pid=1, host="elsewhere", age=3600)  # no heartbeat for an hour
    add_lease(db, "live-here", pid=os.getppid(), host=_HOST)
    add_lease(db, "live-elsewhere", pid=1, host="elsewhere")
    with ResultStore(db) as store:
        claimed, resolved = store.claim(["dead-pid", "stale", "live-here", "live-elsewhere"], 9)
        assert claimed == ["dead-pid", "stale"] and resolved == {}
        # a finished row: resolved, never claimed; writing it twice never raises
        assert store.write({**BASE_ROW, "run_id": "dead-pid", "status": "ok"})
        assert not store.write({**BASE_ROW, "run_id": "dead-pid", "status": "ok"})
        assert store.claim(["dead-pid"], 1) == ([], {"dead-pid": "ok"})
    conn = sqlite3.connect(db)
    held = dict(conn.execute("SELECT run_id, token FROM leases"))
    conn.close()
    assert held == {"live-here": "someone", "live-elsewhere": "someone"}  # ours released


def test_a_killed_benchmarks_lease_blocks_nothing(tmp_path):
    plan = expand(parse_config(TINY))
    db = tmp_path / "r.sqlite"
    ResultStore(db).close()
    add_lease(db, plan.runs[0].run_id, pid=dead_pid(), host=_HOST)  # SIGKILLed mid-run
    add_lease(db, plan.runs[1].run_id, pid=1, host=socket.gethostname() + "-other", age=600)
    result = run_plan(plan, db, workers=1)
    assert (result["ran"], result["ok"], result["failed"]) == (2, 2, 0)
    assert sorted(r["run_id"] for r in read_rows(db)) == sorted(r.run_id for r in plan.runs)


# ---------------------------------------------------------------------- 3. configs
def test_exponents_without_a_dot_are_floats(tmp_path):
    text = ("dataset: digits\nmodel: mlp\nscenarios: {classes: [[3]]}\n"
            "recipe: {lr: 1E-3}\nmethods: {finetune: {lr: [1e-5, 2e-4]}}\n")
    config = load_config(write_config(tmp_path, text))
    assert config.recipe.lr == 1e-3
    assert config.methods[0].grid == (("lr", (1e-5, 2e-4)),)
    dotted = load_config(write_config(tmp_path, text.replace("1e-5", "1.0e-5")
                                      .replace("2e-4", "2.0e-4").replace("1E-3", "0.001"),
                                      "dotted.yaml"))
    assert [r.run_id for r in expand(config).runs] == [r.run_id for r in expand(dotted).runs]


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (b"dataset: digits\nname: caf\xe9\n", ["line 2, column 10", "not UTF-8", "0xe9"]),
        ("dataset: digits\nmodel: mlp\n  scenarios: x: y\n",
         ["line 3, column 12", "mapping values are not allowed here"]),
        ("dataset: [unclosed\n", ["line 2, column 1", "expected ',' or ']'",
                                  "flow sequence at line 1"]),
        ("dataset: digits\x07\n", ["line 1", "#x0007"]),
    ],
)
def test_unreadable_configs_are_one_line_errors(tmp_path, text, fragments):
    path = write_config(tmp_path, text)
    db = tmp_path / "r.sqlite"
    line = one_line_error(*cli("bench", path, "--out", db))
    assert "'" + str(path) + "'" in line
    for f in fragments:
        assert f in line, line
    assert not db.exists()


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        ({"seeds": [1e20]}, ["'seeds'", "1e+20", "[0, 4294967295]"]),
        ({"seeds": [2**64 - 1]}, ["'seeds'", "18446744073709551615", "[0, 4294967295]"]),
        ({"model": {"arch": "mlp", "kwargs": {"hidden": -4}}}, ["model.kwargs", "'hidden'",
                                                                "-4"]),
        ({"model": {"arch": "cnn", "kwargs": {"hidden": -4}}}, ["model.kwargs", "'hidden'"]),
        ({"methods": {"finetune": {"epochs": [1e300]}}}, ["methods.finetune", "1e+300"]),
        ({"methods": {"finetune": {"epochs": [2**64 - 1]}}},
         ["'methods.finetune.epochs[0]'", "18446744073709551615", "64-bit"]),
        ({"scenarios": {"classes": [[10]]}}, ["scenarios.classes[0]", "class 10", "0-9"]),
        ({"dataset": {"name": "digits", "options": {"split_sed": 1}}},
         ["dataset.options", "'split_sed'", "split_seed"]),
    ],
)
def test_values_that_failed_at_run_time_are_refused_by_the_dry_run(tmp_path, changes,
                                                                   fragments):
    path = write_config(tmp_path, json.dumps({**TINY, **changes}))
    line = one_line_error(*cli("bench", path, "--dry-run", "--out", tmp_path / "r.sqlite"))
    for f in fragments:
        assert f in line, line
    assert "-9223372036854775808" not in line


def test_plan_size_is_refused_before_the_grid_is_built(tmp_path, monkeypatch):
    values = [round(0.001 * i, 3) for i in range(1, 1001)]
    big = {**TINY, "methods": {"ssd": {"alpha": values, "lambd": values}}}

    def built(self):
        raise AssertionError("the grid was materialised")

    with monkeypatch.context() as m:
        m.setattr(MethodGrid, "points", built)
        with pytest.raises(InvalidParameterError) as info:
            parse_config(big)
    message = str(info.value)
    assert "1,000,000 runs" in message and "10,000" in message
    assert "max_runs" in message and "--max-runs" in message

    small = {**TINY, "methods": {"finetune": {"epochs": [1, 2, 3]}}, "seeds": [0, 1]}  # 6
    with pytest.raises(InvalidParameterError, match="6 runs"):
        parse_config({**small, "max_runs": 5})
    assert len(expand(parse_config({**small, "max_runs": 6}))) == 6
    path = write_config(tmp_path, json.dumps({**small, "max_runs": 5}))
    line = one_line_error(*cli("bench", path, "--dry-run", "--out", tmp_path / "r.sqlite"))
    assert "limit of 5" in line
    code, out, err = cli("bench", path, "--dry-run", "--max-runs", "6", "--json",
                         "--out", tmp_path / "r.sqlite")
    assert code == 0, err
    assert json.loads(out)["total"] == 6
    assert "--max-runs" in one_line_error(*cli("bench", path, "--max-runs", "0"))


def test_yaml_aliases_cannot_blow_up_a_config(tmp_path):
    lines = ["  - &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]  # 10**9 values once expanded
    lines += [f"  - &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = write_config(tmp_path, "dataset: digits\nmodel: mlp\nscenarios: {classes: [[3]]}\n"
                        "methods: [finetune]\nname:\n" + "\n".join(lines) + "\n")
    with pytest.raises(InvalidParameterError, match="aliases"):
        load_config(path)
    path = write_config(tmp_path, json.dumps(TINY)[:-1] + ', "name": &n [*n]}')
    with pytest.raises(InvalidParameterError, match="contains itself"):
        load_config(path)


# ---------------------------------------------------------------------- 4. foreign stores
def crafted_store(db) -> None:
    with ResultStore(db) as store:
        for rid in ("a", "b"):
            store.write({**BASE_ROW, "run_id": rid, "status": "ok", "artefacts": {"curves": []}})


def no_training(monkeypatch):
    import unlearnkit.api
    import unlearnkit.training

    def boom(*args, **kwargs):
        raise AssertionError("a bad store was found after training started")

    monkeypatch.setattr(unlearnkit.api, "train_model", boom)
    monkeypatch.setattr(unlearnkit.training, "fit", boom)


def test_a_store_lacking_a_column_is_refused_and_left_alone(tmp_path, monkeypatch):
    db = tmp_path / "old.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, status TEXT)")
    conn.commit()
    conn.close()
    path = write_config(tmp_path, json.dumps(TINY))
    no_training(monkeypatch)
    for argv in (("bench", path, "--out", db), ("bench", path, "--out", db, "--dry-run"),
                 ("report", db, "--out", tmp_path / "rep")):
        line = one_line_error(*cli(*argv))
        assert f"'{db}' is not an unlearnkit results store" in line
        assert "table 'runs' lacks column 'dataset'" in line
    assert table_names(db) == ["runs"] and not (tmp_path / "rep").exists()
    with pytest.raises(DataError, match="lacks column"):
        ResultStore(db)


def test_a_store_from_before_a_metric_column_existed_is_read_and_migrated(tmp_path):
    """A metric column added by a later unlearnkit reads as NULL in an older store, and is
    added when the store is opened for writing: old results stay usable."""
    from unlearnkit.bench.store import METRIC_COLUMNS, read_rows

    db = tmp_path / "older.sqlite"
    crafted_store(db)
    newest = METRIC_COLUMNS[-1]
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(f"ALTER TABLE runs DROP COLUMN {newest}")
    conn.close()
    rows = read_rows(db)
    assert [r["run_id"] for r in rows] == ["a", "b"] and all(r[newest] is None for r in rows)
    with ResultStore(db) as store:
        assert store.finished_ids() == {"a", "b"}
    conn = sqlite3.connect(db)
    assert newest in {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
    conn.close()


def test_corrupt_json_in_a_store_is_refused_naming_the_row(tmp_path, monkeypatch):
    db = tmp_path / "r.sqlite"
    crafted_store(db)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE runs SET metrics = '{bad' WHERE run_id = 'b'")
        conn.execute("UPDATE artefacts SET payload = '[1,' WHERE run_id = 'a'")
    conn.close()
    path = write_config(tmp_path, json.dumps(TINY))
    no_training(monkeypatch)
    for argv in (("bench", path, "--out", db), ("report", db, "--out", tmp_path / "rep")):
        line = one_line_error(*cli(*argv))
        assert f"'{db}'" in line and "row 2 (run 'b') holds corrupt metrics JSON" in line
    with pytest.raises(DataError, match=r"artefacts of run 'a'.*corrupt JSON"):
        read_artefacts(db)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE runs SET metrics = '[1, 2]' WHERE run_id = 'b'")
    conn.close()
    with pytest.raises(DataError, match=r"row 2 .* metrics JSON that is not a mapping"):
        read_rows(db)


def test_a_file_that_is_no_database_is_refused_and_left_alone(tmp_path, monkeypatch):
    db = tmp_path / "notes.sqlite"
    db.write_bytes(b"my notes, not a database\n" * 100)
    path = write_config(tmp_path, json.dumps(TINY))
    no_training(monkeypatch)
    line = one_line_error(*cli("bench", path, "--out", db))
    assert f"'{db}' is not an unlearnkit results store" in line
    assert db.read_bytes() == b"my notes, not a database\n" * 100
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE mine (x)")
    conn.commit()
    conn.close()
    line = one_line_error(*cli("bench", path, "--out", other))
    assert "has no table 'runs'" in line and table_names(other) == ["mine"]
