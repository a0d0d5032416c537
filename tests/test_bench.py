"""Benchmarks: config validation, plan expansion, the SQLite store, resuming, workers.

Plans are tiny (an MLP with 16 hidden units, 2 epochs, on digits). The caches go to a fresh
folder per test (conftest), so each test trains its own original and references (< 1 s).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from _cli import run as cli
from unlearnkit.bench import (
    METRIC_COLUMNS,
    PRESETS,
    ResultStore,
    expand,
    load_config,
    parse_config,
    preset,
    read_rows,
    run_plan,
)
from unlearnkit.exceptions import InvalidParameterError
from unlearnkit.methods.base import METHODS
from unlearnkit.metrics.verdict import OUTCOMES

TINY = {
    "dataset": "digits",
    "model": {"arch": "mlp", "kwargs": {"hidden": [16]}},
    "recipe": {"epochs": 2},
    "scenarios": {"classes": [[3]]},
    "methods": {"finetune": {"epochs": [1, 2]}},
    "seeds": [0],
    "relearn": False,
    "mia": False,
    "original": False,  # the 'original' rows have tests of their own
}

TIMING = ("seconds", "speedup")


def cfg(**changes):
    return parse_config({**TINY, **changes})


def without_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING}


# ---------------------------------------------------------------------- config and plan
def test_grid_expansion_counts_and_contents():
    config = cfg(
        scenarios={"classes": [[3], [1, 7]], "random": [0.1]},
        methods={"finetune": {"epochs": [1, 2], "lr": 1e-3}, "ssd": {"alpha": [1, 10]},
                 "unsir": None},
        seeds=[0, 1],
    )
    plan = expand(config)
    # 3 scenarios x (2 finetune + 2 ssd + 1 unsir) x 2 seeds
    assert len(plan) == 3 * 5 * 2
    assert len({r.run_id for r in plan.runs}) == len(plan)
    ft = [r for r in plan.runs if r.method == "finetune"]
    assert sorted({r.params["epochs"] for r in ft}) == [1, 2]
    assert {r.params["lr"] for r in ft} == {1e-3}
    assert sorted({r.params["alpha"] for r in plan.runs if r.method == "ssd"}) == [1.0, 10.0]
    # full parameters: defaults are filled in (so {} and explicit defaults are one run)
    assert set(ft[0].params) == set(METHODS.get("finetune")().params())
    assert {r.scenario.label for r in plan.runs} == {"class 3", "classes 1,7", "random 10%"}
    assert plan.seeds == (0, 1)
    # unsir refuses random unlearning: planned, marked, and it needs no reference of its own
    refused = [r for r in plan.runs if r.refused]
    assert {(r.method, r.scenario.kind) for r in refused} == {("unsir", "random")}
    assert len(plan.references) == 3 * 2
    assert [r.method_seed for r in plan.runs if r.method == "ssd"][:2] == [0, 1]


def test_run_id_is_stable_and_sensitive():
    base = expand(cfg()).runs[0]
    assert expand(cfg()).runs[0].run_id == base.run_id
    # an explicit default is the same run
    default_lr = METHODS.get("finetune")().lr
    same = expand(cfg(methods={"finetune": {"epochs": 1, "lr": default_lr}})).runs[0]
    assert same.run_id == base.run_id
    ints = expand(cfg(methods={"ssd": {"alpha": 5}})).runs[0]
    floats = expand(cfg(methods={"ssd": {"alpha": 5.0}})).runs[0]
    assert ints.run_id == floats.run_id and ints.params["alpha"] == 5.0
    changed = [
        cfg(seeds=[1]),
        cfg(methods={"finetune": {"epochs": 1, "lr": 0.5}}),
        cfg(recipe={"epochs": 3}),
        cfg(model={"arch": "mlp", "kwargs": {"hidden": [17]}}),
        cfg(scenarios={"classes": [[4]]}),
        cfg(relearn=True),
    ]
    ids = {expand(c).runs[0].run_id for c in changed}
    assert base.run_id not in ids and len(ids) == len(changed)


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        ({"sedes": [0]}, ["'sedes'", "seeds"]),
        ({"dataset": "digitz"}, ["dataset", "'digitz'"]),
        ({"model": {"arch": "mlp", "kwargs": {"hiddn": [3]}}}, ["model.kwargs", "'hiddn'"]),
        ({"recipe": {"epochs": -1}}, ["recipe", "epochs"]),
        ({"seeds": []}, ["'seeds'", "non-empty"]),
        ({"seeds": [0, "a"]}, ["'seeds'"]),
        ({"scenarios": {"random": [1.5]}}, ["scenarios.random[0]"]),
        ({"scenarios": {"classes": [[]]}}, ["scenarios.classes[0]"]),
        ({"scenarios": {"clases": [[3]]}}, ["'clases'"]),
        ({"methods": {"finetun": {}}}, ["methods.finetun", "finetune"]),
        ({"methods": {"finetune": {"epoch": [1]}}}, ["methods.finetune", "'epoch'", "epochs"]),
        ({"methods": {"ssd": {"alpha": ["x"]}}}, ["methods.ssd", "'alpha'"]),
        ({"methods": {"ssd": {"alpha": []}}}, ["methods.ssd.alpha", "non-empty"]),
        ({"methods": {}}, ["'methods'"]),
        ({"relearn": "yes"}, ["'relearn'"]),
    ],
)
def test_config_errors_name_the_key(changes, fragments):
    with pytest.raises(InvalidParameterError) as info:
        cfg(**changes)
    for f in fragments:
        assert f in str(info.value), str(info.value)


def test_missing_key_and_yaml_file(tmp_path):
    with pytest.raises(InvalidParameterError, match="'scenarios'"):
        parse_config({k: v for k, v in TINY.items() if k != "scenarios"})
    path = tmp_path / "mine.yaml"
    path.write_text("dataset: digits\nmodel: mlp\nscenarios: {random: [0.2]}\n"
                    "methods: [finetune, ssd]\nseeds: [3]\n")
    config = load_config(path)
    assert config.name == "mine" and config.seeds == (3,)
    assert [m.name for m in config.methods] == ["finetune", "ssd"]
    path.write_text("dataset: [unclosed\n")
    with pytest.raises(InvalidParameterError, match="not valid YAML"):
        load_config(path)


def test_presets():
    assert set(PRESETS) >= {"quick", "compare"}
    quick, compare = preset("quick"), preset("compare")
    assert quick.dataset == "digits" and quick.arch == "cnn" and quick.seeds == (0,)
    assert [s.label for s in quick.scenarios] == ["class 3", "random 10%"]
    assert compare.seeds == (0, 1, 2)
    for config in (quick, compare):
        assert [m.name for m in config.methods] == METHODS.names()
        assert all(m.grid == () for m in config.methods)
    assert len(expand(compare)) == 3 * len(expand(quick))
    with pytest.raises(InvalidParameterError, match="quick"):
        preset("quik")


# ---------------------------------------------------------------------- store and runs
def test_store_schema(tmp_path):
    db = tmp_path / "r.sqlite"
    ResultStore(db).close()
    conn = sqlite3.connect(db)
    cols = {name: kind for _, name, kind, *_ in conn.execute("PRAGMA table_info(runs)")}
    pk = [name for _, name, _, _, _, is_pk in conn.execute("PRAGMA table_info(runs)") if is_pk]
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    conn.close()
    assert pk == ["run_id"] and mode == "wal"
    for c in ("dataset", "arch", "scenario", "scenario_kind", "method", "params", "seed",
              "status", "metrics", "started", "finished", "error"):
        assert c in cols
    for c in ("retain_acc", "forget_acc", "test_acc", "test_retain_acc", "test_forget_acc",
              "seconds", "retrain_seconds", "speedup", "mia_loss_cv", "js_divergence",
              "activation_distance", "zrf", "avg_gap", "anamnesis", "forgetting_quality",
              "competition_score"):
        assert c in METRIC_COLUMNS and cols[c] == "REAL"


def test_run_stores_rows_and_resume_skips_finished(tmp_path):
    db = tmp_path / "r.sqlite"
    plan = expand(cfg(methods={"finetune": {"epochs": 1}, "unsir": {}},
                      scenarios={"classes": [[3]], "random": [0.1]}))
    first = run_plan(plan, db, workers=1)
    assert (first["total"], first["ran"], first["ok"], first["skipped"]) == (4, 3, 3, 1)
    rows = {r["run_id"]: r for r in read_rows(db)}
    assert set(rows) == {r.run_id for r in plan.runs}
    ok = [r for r in rows.values() if r["status"] == "ok"]
    for r in ok:
        assert r["forget_acc"] == r["metrics"]["forget_acc"]
        assert r["retrain_seconds"] > 0 and r["js_divergence"] is not None
        assert r["mia_loss_cv"] is None and r["anamnesis"] is None  # mia, relearn off
        assert r["started"] <= r["finished"]
        assert (tmp_path / "r.sqlite.logs" / f"{r['run_id']}.log").is_file()
        # the oracle-free verdict, in its column and in the metrics
        assert r["verdict"] in OUTCOMES and r["verdict"] == r["metrics"]["verdict"]
    class_ft = next(r for r in ok if r["scenario"] == "class 3" and r["method"] == "finetune")
    assert class_ft["test_forget_acc"] is not None and class_ft["params"]["epochs"] == 1
    skipped = next(r for r in rows.values() if r["status"] == "skipped")
    assert skipped["method"] == "unsir" and "class" in skipped["error"]

    again = run_plan(plan, db, workers=1)
    assert (again["ran"], again["reused"]) == (0, 4)
    assert {r["run_id"]: r for r in read_rows(db)} == rows

    # a lost row is run again; a failed one is retried and replaced, never duplicated
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("DELETE FROM runs WHERE run_id = ?", (class_ft["run_id"],))
        conn.execute("UPDATE runs SET status = 'failed', forget_acc = NULL WHERE run_id = ?",
                     (ok[-1]["run_id"],) if ok[-1] is not class_ft else (ok[0]["run_id"],))
    conn.close()
    third = run_plan(plan, db, workers=1)
    assert (third["ran"], third["reused"]) == (2, 2)
    final = {r["run_id"]: r for r in read_rows(db)}
    assert len(read_rows(db)) == 4 and set(final) == set(rows)
    for rid, r in final.items():
        assert r["status"] == rows[rid]["status"]
        assert without_timing(r["metrics"]) == without_timing(rows[rid]["metrics"])


@pytest.mark.slow
def test_workers_two_and_one_give_the_same_rows(tmp_path):
    plan = expand(cfg(mia=True, scenarios={"random": [0.1]}))
    one = run_plan(plan, tmp_path / "one.sqlite", workers=1)
    two = run_plan(plan, tmp_path / "two.sqlite", workers=2)
    assert one["ok"] == two["ok"] == 2
    a = {r["run_id"]: r for r in read_rows(tmp_path / "one.sqlite")}
    b = {r["run_id"]: r for r in read_rows(tmp_path / "two.sqlite")}
    assert set(a) == set(b) == {r.run_id for r in plan.runs}
    for rid in a:
        assert a[rid]["mia_loss_cv"] is not None
        assert without_timing(a[rid]["metrics"]) == without_timing(b[rid]["metrics"])
        for c in METRIC_COLUMNS:
            if c not in TIMING:
                assert a[rid][c] == b[rid][c], c


# ---------------------------------------------------------------------- the command line
def test_dry_run_trains_nothing(tmp_path, monkeypatch):
    import unlearnkit.api
    import unlearnkit.training

    path = tmp_path / "tiny.yaml"
    path.write_text(json.dumps(TINY))  # JSON is YAML
    db = tmp_path / "r.sqlite"

    def boom(*args, **kwargs):
        raise AssertionError("the dry run trained something")

    with monkeypatch.context() as m:
        m.setattr(unlearnkit.api, "train_model", boom)
        m.setattr(unlearnkit.training, "fit", boom)
        code, out, err = cli("bench", path, "--out", db, "--dry-run", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["dry_run"] and (res["total"], res["to_run"], res["done"]) == (2, 2, 0)
    assert [o["cached"] for o in res["originals"]] == [False]
    assert [r["cached"] for r in res["references"]] == [False]
    assert not db.exists()

    code, out, err = cli("bench", path, "--out", db, "--workers", "1", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert (res["ok"], res["failed"]) == (2, 0)

    with monkeypatch.context() as m:
        m.setattr(unlearnkit.api, "train_model", boom)
        m.setattr(unlearnkit.training, "fit", boom)
        code, out, err = cli("bench", path, "--out", db, "--dry-run")
    assert code == 0, err
    assert "0 to run, 2 already" in out and out.count("cached (reused)") == 2

    code, out, err = cli("bench", path, "--out", db)  # nothing left: skipped, text summary
    assert code == 0 and "0 done, 2 skipped" in out and str(db) in out


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        ((), "CONFIG.yaml file or --preset"),
        (("--preset", "nope"), "Unknown preset 'nope'"),
        (("--preset", "quick", "--workers", "0"), "--workers"),
    ],
)
def test_cli_errors_are_one_line(argv, fragment):
    code, out, err = cli("bench", *argv)
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("unlearnkit: error: ")
    assert fragment in lines[0] and out == ""


def test_cli_bad_config_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps({**TINY, "methods": {"finetune": {"epoch": [1]}}}))
    code, _, err = cli("bench", path, "--dry-run")
    assert code == 2 and "methods.finetune" in err and "'epoch'" in err


@pytest.mark.slow
def test_sigkill_mid_run_resumes_without_losing_or_duplicating_rows(tmp_path):
    config = {**TINY, "methods": {"finetune": {"epochs": [1, 2, 3, 4, 5, 6]}}}
    path = tmp_path / "kill.yaml"
    path.write_text(json.dumps(config))
    db = tmp_path / "r.sqlite"
    cmd = [sys.executable, "-m", "unlearnkit", "bench", str(path), "--out", str(db),
           "--workers", "1", "--json"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        n = 0
        while n < 1 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
            with contextlib.suppress(sqlite3.Error):
                n = len(read_rows(db))
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    proc.stderr.close()
    before = {r["run_id"]: r for r in read_rows(db)}
    assert 1 <= len(before) < 6, "the kill did not land mid-run"

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    res = json.loads(done.stdout)
    assert (res["reused"], res["ok"], res["failed"]) == (len(before), 6 - len(before), 0)
    rows = read_rows(db)
    ids = [r["run_id"] for r in rows]
    assert len(ids) == len(set(ids)) == 6
    assert set(ids) == {r.run_id for r in expand(parse_config(config)).runs}
    after = {r["run_id"]: r for r in rows}
    for rid, row in before.items():
        assert after[rid] == row  # the first process's rows, unchanged
    assert all(r["status"] == "ok" for r in rows)
    assert sorted(r["params"]["epochs"] for r in rows) == list(range(1, 7))
