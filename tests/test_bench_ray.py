"""Benchmarks on Ray (``--executor ray``): the same rows as the process pool, resuming, the
checkpoints and logs shipped to and from the workers, lost tasks as failed rows, and the error
without Ray.

One local Ray instance (2 CPUs) serves the whole module: starting Ray and warming its workers
takes most of this file's time. Plans are tiny (an MLP with 16 hidden units on digits).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys

import pytest

from _cli import run as cli
from unlearnkit.bench import expand, log_dir, parse_config, read_rows, run_plan
from unlearnkit.bench import ray_executor as rx
from unlearnkit.bench.run import _prepare, _row
from unlearnkit.exceptions import InvalidParameterError

TINY = {
    "dataset": "digits",
    "model": {"arch": "mlp", "kwargs": {"hidden": [16]}},
    "recipe": {"epochs": 2},
    "scenarios": {"classes": [[3]]},
    "methods": {"finetune": {"epochs": [1, 2]}},
    "seeds": [0],
    "relearn": False,
    "mia": False,
}

TIMING = ("seconds", "speedup", "retrain_seconds")


def without_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING}


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    if ray.is_initialized():  # pragma: no cover - another module left one running
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level="WARNING")
    yield ray
    ray.shutdown()


# ---------------------------------------------------------------------- without Ray
def test_missing_ray_is_a_one_line_error_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(InvalidParameterError, match=r"pip install 'unlearnkit\[ray\]'"):
        rx.run_tasks_ray([], lambda row, k: None)
    with pytest.raises(InvalidParameterError, match=r"unlearnkit\[ray\]"):
        rx.require_ray()
    path = tmp_path / "tiny.yaml"
    path.write_text(json.dumps(TINY))
    code, out, err = cli("bench", path, "--out", tmp_path / "r.sqlite", "--executor", "ray")
    errors = [x for x in err.splitlines() if x.startswith("unlearnkit: error:")]
    assert code != 0 and out == ""
    assert len(errors) == 1 and err.rstrip().endswith(errors[0])
    assert "--executor ray" in errors[0] and "unlearnkit[ray]" in errors[0]
    assert not any(r["status"] == "ok" for r in read_rows(tmp_path / "r.sqlite"))


def test_bad_arguments():
    pytest.importorskip("ray")
    with pytest.raises(InvalidParameterError, match="'workers'"):
        rx.run_tasks_ray([], lambda row, k: None, workers=0)
    with pytest.raises(InvalidParameterError, match="'gpus_per_task'"):
        rx.run_tasks_ray([], lambda row, k: None, gpus_per_task=-1)


class _FakeRay:
    """Stands in for the ``ray`` module: records how it is connected, shut down, cancelled."""

    def __init__(self, initialized=False, refuse=False):
        self.initialized, self.refuse, self.calls = initialized, refuse, []

    def is_initialized(self):
        return self.initialized

    def init(self, **kwargs):
        self.calls.append(("init", kwargs))
        if self.refuse:
            raise ConnectionError("Could not find any running Ray instance.")
        self.initialized = True

    def shutdown(self):
        self.calls.append(("shutdown",))
        self.initialized = False

    def put(self, data):
        return data

    def remote(self, **options):
        self.calls.append(("remote", options))

        class Remote:
            def remote(self, task, original, reference, env):
                return ("ref", task["run"])

        def wrap(fn):
            assert fn is rx._remote_execute
            return Remote()

        return wrap

    def wait(self, refs, num_returns):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        return {"run_id": ref[1], "status": "ok"}, f"log of {ref[1]}\n"

    def cancel(self, ref, force=False):
        self.calls.append(("cancel", ref[1]))


def _fake_tasks(tmp_path, n):
    return [{"run": f"r{i}", "original": str(tmp_path / "o"), "reference": str(tmp_path / "r"),
             "log": str(tmp_path / "logs" / f"r{i}.log"), "device": None} for i in range(n)]


def test_connecting_and_shutting_down(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    fake = _FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    rows = []
    rx.run_tasks_ray(_fake_tasks(tmp_path, 3), lambda row, k: rows.append((k, row["run_id"])),
                     workers=3)
    assert rows == [(1, "r0"), (2, "r1"), (3, "r2")]
    assert (tmp_path / "logs" / "r1.log").read_text() == "log of r1\n"
    init, remote, shutdown = fake.calls
    assert init == ("init", {"num_cpus": 3, "include_dashboard": False, "log_to_driver": False,
                             "logging_level": logging.WARNING})
    assert remote[1]["num_cpus"] == 1 and remote[1]["num_gpus"] == 0
    assert shutdown == ("shutdown",) and not fake.initialized

    # a cluster: its address, no local resources; closed at the end
    monkeypatch.setitem(sys.modules, "ray", fake := _FakeRay())
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    rx.run_tasks_ray(_fake_tasks(tmp_path, 1), lambda row, k: None, workers=3)
    assert fake.calls[0] == ("init", {"address": "10.0.0.1:6379", "log_to_driver": False,
                                      "logging_level": logging.WARNING})
    assert fake.calls[-1] == ("shutdown",)
    monkeypatch.setitem(sys.modules, "ray", fake := _FakeRay(refuse=True))
    with pytest.raises(InvalidParameterError, match="Cannot connect to the Ray cluster at 'auto'"):
        rx.run_tasks_ray(_fake_tasks(tmp_path, 1), lambda row, k: None, address="auto")

    # Ray already initialised here: used as it is, never shut down; Ctrl-C cancels the rest
    monkeypatch.setitem(sys.modules, "ray", fake := _FakeRay(initialized=True))

    def interrupt(row, k):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rx.run_tasks_ray(_fake_tasks(tmp_path, 3), interrupt, address="auto")
    assert [c[0] for c in fake.calls] == ["remote", "cancel", "cancel"]
    assert {c[1] for c in fake.calls[1:]} == {"r1", "r2"} and fake.initialized

    # connected to a cluster here: the tasks are cancelled, then the connection closed
    monkeypatch.setitem(sys.modules, "ray", fake := _FakeRay())
    with pytest.raises(KeyboardInterrupt):
        rx.run_tasks_ray(_fake_tasks(tmp_path, 2), interrupt)
    assert fake.calls[-1] == ("shutdown",) and ("cancel", "r1") in fake.calls

    # a local instance started here: its shutdown stops the workers, with no cancel that
    # could race with a task finishing (which aborts the driver inside Ray 2.60)
    monkeypatch.setitem(sys.modules, "ray", fake := _FakeRay())
    monkeypatch.delenv("RAY_ADDRESS")
    with pytest.raises(KeyboardInterrupt):
        rx.run_tasks_ray(_fake_tasks(tmp_path, 2), interrupt)
    assert fake.calls[-1] == ("shutdown",)
    assert not [c for c in fake.calls if c[0] == "cancel"]


# ---------------------------------------------------------------------- with Ray
def test_ray_gives_the_process_rows_and_resumes(tmp_path, ray_local):
    plan = expand(parse_config(TINY))
    one_db, ray_db = tmp_path / "one.sqlite", tmp_path / "ray.sqlite"
    one = run_plan(plan, one_db, workers=1)
    lines: list[str] = []
    res = run_plan(plan, ray_db, executor="ray", log=lines.append)
    n = len(plan.runs)
    assert n >= 2 and (one["ok"], res["ok"], res["ran"], res["failed"]) == (n, n, n, 0)
    a = {r["run_id"]: r for r in read_rows(one_db)}
    b = {r["run_id"]: r for r in read_rows(ray_db)}
    assert set(a) == set(b) == {r.run_id for r in plan.runs}
    for rid, row in b.items():
        assert row["status"] == "ok" and row["error"] is None
        assert row["metrics"]["forget_acc"] is not None
        assert without_timing(row["metrics"]) == without_timing(a[rid]["metrics"])
        assert row["params"] == a[rid]["params"] and row["started"] <= row["finished"]
        log = log_dir(ray_db) / f"{rid}.log"
        text = log.read_text()
        assert f"run {rid}:" in text and "forget_acc =" in text and "ok in" in text
    assert sum(x.startswith("[") and x.endswith(": ok") for x in lines) == n

    again = run_plan(plan, ray_db, executor="ray")  # finished runs are not run again
    assert (again["ran"], again["reused"], again["ok"]) == (0, n, 0)
    assert {r["run_id"]: r for r in read_rows(ray_db)} == b


def test_cli_executor_ray(tmp_path, ray_local):
    path = tmp_path / "tiny.yaml"
    config = {**TINY, "methods": {"finetune": {"epochs": 1}, "ssd": {}}}
    path.write_text(json.dumps(config))
    plan = expand(parse_config(config))
    n = len(plan.runs)
    db = tmp_path / "r.sqlite"
    code, out, err = cli("bench", path, "--out", db, "--executor", "ray", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert (res["total"], res["ok"], res["failed"]) == (n, n, 0)
    rows = read_rows(db)
    assert sorted(r["run_id"] for r in rows) == sorted(r.run_id for r in plan.runs)
    assert {"finetune", "ssd"} <= {r["method"] for r in rows}
    for r in rows:
        assert (log_dir(db) / f"{r['run_id']}.log").stat().st_size > 0
    code, out, err = cli("bench", path, "--out", db, "--executor", "ray", "--json")
    assert code == 0, err
    assert (json.loads(out)["ran"], json.loads(out)["reused"]) == (0, n)


def test_the_data_folder_reaches_the_workers(tmp_path, ray_local):
    # conftest points UNLEARNKIT_DATA at a folder made for this test, after Ray started: the
    # workers see it only if it is forwarded with the task
    run = next(r for r in expand(parse_config(TINY)).runs if r.method == "finetune")
    run = dataclasses.replace(run, dataset="mnist", dataset_options={})
    rows = []
    rx.run_tasks_ray([{"run": run, "original": str(tmp_path / "o.safetensors"),
                       "reference": str(tmp_path / "r.safetensors"),
                       "log": str(tmp_path / "run.log"), "device": None}],
                     lambda row, k: rows.append(row))
    [row] = rows
    assert row["status"] == "failed" and "mnist" in row["error"]
    assert os.path.join(os.environ["UNLEARNKIT_DATA"], "mnist") in row["error"]
    assert "DataError" in (tmp_path / "run.log").read_text()


class _Unpicklable:
    """Fine to pickle here; unpickling it on the worker raises (a task Ray cannot run)."""

    def __reduce__(self):
        return (int, ("not a number",))


class _WorkerKiller:
    """Unpickling it on the worker kills the worker process (a lost task)."""

    def __reduce__(self):
        return (os._exit, (3,))


def test_shipped_checkpoints_and_lost_tasks(tmp_path, ray_local, monkeypatch):
    plan = expand(parse_config(TINY))
    runs = [r for r in plan.runs if r.method == "finetune"]
    assert len(runs) == 2
    paths = _prepare(plan, runs, device=None, progress=False, say=lambda m: None)
    # copies that the workers never see: deleted as soon as the parent has read them
    own = tmp_path / "ckpt"
    own.mkdir()
    original = shutil.copy(paths[runs[0].seed], own / "original.safetensors")
    reference = shutil.copy(paths[(runs[0].scenario, runs[0].seed)], own / "ref.safetensors")
    read = rx._read

    def read_then_delete(path):
        data = read(path)
        if path.startswith(str(own)):
            os.unlink(path)
        return data

    monkeypatch.setattr(rx, "_read", read_then_delete)
    logs = tmp_path / "logs"

    def task(run, **changes):
        return {"run": run, "original": str(original), "reference": str(reference),
                "log": str(logs / "sub" / f"{run.run_id}.log"), "device": None, **changes}

    def tweaked(run, value):  # the same run, with a parameter that breaks it on the worker
        return dataclasses.replace(run, params={**run.params, "x": value})

    good = task(runs[0])
    missing = task(runs[1], reference=str(tmp_path / "nowhere.safetensors"))
    unrunnable = task(tweaked(runs[0], _Unpicklable()), log=str(logs / "unrunnable.log"))
    killed = task(tweaked(runs[1], _WorkerKiller()), log=str(logs / "killed.log"))
    rows, ks = {}, []

    def on_row(row, k):  # tweaked runs share their run_id: known by their parameter
        ks.append(k)
        x = row["params"].get("x")
        rows[type(x).__name__ if x is not None else row["run_id"]] = row

    tasks = [good, missing, unrunnable, killed]
    rx.run_tasks_ray(tasks, on_row, workers=2)
    assert ray_local.is_initialized()  # not started here, so not shut down here
    assert not os.path.exists(original) and not os.path.exists(reference)
    assert sorted(ks) == ks == [1, 2, 3, 4]
    expected = set(_row(runs[0], "ok"))

    ok = rows[runs[0].run_id]
    assert ok["status"] == "ok" and ok["metrics"]["forget_acc"] is not None
    assert "ok in" in (logs / "sub" / f"{runs[0].run_id}.log").read_text()

    gone = rows[runs[1].run_id]  # execute's own failure, through Ray unchanged
    assert gone["status"] == "failed" and "nowhere.safetensors" in gone["error"]
    assert "CheckpointError" in (logs / "sub" / f"{runs[1].run_id}.log").read_text()

    for name, log in (("_Unpicklable", "unrunnable.log"), ("_WorkerKiller", "killed.log")):
        row = rows[name]
        assert set(row) == expected, name
        assert row["status"] == "failed" and row["error"].startswith("Ray task failed: "), name
        assert "\n" not in row["error"] and row["metrics"] == {} and row["finished"], name
        assert row["run_id"] == (runs[0] if name == "_Unpicklable" else runs[1]).run_id
        assert row["error"] in (logs / log).read_text()
    assert "not a number" in rows["_Unpicklable"]["error"]
    assert "WorkerCrashedError" in rows["_WorkerKiller"]["error"]
