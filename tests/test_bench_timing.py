"""Times measured like for like (issue 12): where the benchmark's originals and references are
trained, what each speed-up is computed against, the clock paused around curve evaluations,
cache hits, and `forget --retrained` / `--time-retrain`.

No assertion here depends on how fast anything runs: the clock is either faked or compared
with itself (a ratio is checked as the ratio of the stored numbers).
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import time

import pytest
import torch

import unlearnkit as uk
from _cli import assert_one_error_line
from _cli import run as cli
from unlearnkit.bench import ResultStore, expand, parse_config, read_rows, run_plan
from unlearnkit.bench.run import MAX_REPEATS, REPEAT_BELOW, _timed
from unlearnkit.bench.store import RETRAIN_SOURCES, TIMING_COLUMNS
from unlearnkit.exceptions import InvalidParameterError
from unlearnkit.importance.cache import cache_use
from unlearnkit.training import watch_epochs, watcher_seconds

TINY = {
    "dataset": "digits",
    "model": {"arch": "mlp", "kwargs": {"hidden": [16]}},
    "recipe": {"epochs": 3},
    "scenarios": {"classes": [[3]]},
    "methods": {"retrain": {}, "finetune": {"epochs": 1}},
    "seeds": [0],
    "relearn": False,
    "mia": False,
}


def cfg(**changes):
    return parse_config({**TINY, **changes})


def by_method(db) -> dict[str, dict]:
    return {r["method"]: r for r in read_rows(db)}


def check_ratio(row: dict) -> None:
    """speedup = retrain_seconds / seconds, in the columns and in the metrics JSON alike."""
    assert row["speedup"] == pytest.approx(row["retrain_seconds"] / row["seconds"])
    assert row["metrics"]["speedup"] == row["speedup"]
    assert row["metrics"]["retrain_seconds"] == row["retrain_seconds"]


# ---------------------------------------------------------------------- where models are trained
@pytest.mark.slow
def test_references_are_trained_in_the_pool_and_every_speedup_is_like_for_like(tmp_path):
    prev = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        first = run_plan(expand(cfg()), tmp_path / "one.sqlite", workers=2)
    finally:
        torch.set_num_threads(prev)
    assert first["ok"] == 3  # original, retrain, finetune
    prepared = {p["kind"]: p for p in first["prepared"]}
    assert set(prepared) == {"original", "reference"}
    for p in prepared.values():  # trained as tasks of the pool, one thread each
        assert (p["process"], p["threads"], p["cached"]) == ("worker", 1, False)
    rows = by_method(tmp_path / "one.sqlite")
    for r in rows.values():
        assert set(TIMING_COLUMNS) <= set(r) and "retrain_seconds_source" not in r["metrics"]
    retrain, finetune, original = rows["retrain"], rows["finetune"], rows["original"]
    for r in (retrain, finetune):  # measured in a worker, one thread, cold
        t = r["timing"]
        assert (t["process"], t["threads"], t["device"], t["mode"]) == ("worker", 1, "cpu",
                                                                        "cold")
        assert 1 <= t["repeats"] <= MAX_REPEATS and t["cpu_seconds"] > 0
        assert r["cache_hit"] == 0
        check_ratio(r)
    assert finetune["timing"]["cpu_speedup"] == pytest.approx(
        retrain["timing"]["cpu_seconds"] / finetune["timing"]["cpu_seconds"])
    # the retrain row against the reference's training in the pool: an independent check
    assert retrain["retrain_seconds_source"] == "reference-pool"
    assert retrain["retrain_seconds"] == prepared["reference"]["seconds"]
    assert retrain["retrain_seconds"] != retrain["seconds"]
    # every other row against the retrain row of its scenario and seed
    assert finetune["retrain_seconds_source"] == "retrain-row"
    assert finetune["retrain_seconds"] == retrain["seconds"]
    assert original["retrain_seconds_source"] == "retrain-row"
    assert original["speedup"] is None and original["timing"] is None
    assert original["cache_hit"] is None

    # the same plan in another store: the reference is cached now, the retrain row re-measured
    again = run_plan(expand(cfg()), tmp_path / "two.sqlite", workers=1)
    assert {p["kind"]: p["cached"] for p in again["prepared"]} == {"original": True,
                                                                    "reference": True}
    rows2 = by_method(tmp_path / "two.sqlite")
    assert rows2["retrain"]["retrain_seconds_source"] == "cache"
    assert rows2["retrain"]["retrain_seconds"] == prepared["reference"]["seconds"]
    assert rows2["finetune"]["retrain_seconds_source"] == "retrain-row"
    assert rows2["finetune"]["retrain_seconds"] == rows2["retrain"]["seconds"]
    assert rows2["finetune"]["timing"]["process"] == "main"
    for r in (rows2["retrain"], rows2["finetune"]):
        check_ratio(r)

    # without a retrain run, against the cached reference, and the row says so
    third = tmp_path / "three.sqlite"
    run_plan(expand(cfg(methods={"finetune": {"epochs": 1}})), third, workers=1)
    ft = by_method(third)["finetune"]
    assert ft["retrain_seconds_source"] == "cache"
    assert ft["retrain_seconds"] == prepared["reference"]["seconds"]
    check_ratio(ft)
    assert {r["retrain_seconds_source"] for r in read_rows(third)} <= set(RETRAIN_SOURCES)


def test_one_worker_runs_everything_here_with_one_thread_and_restores_the_threads(tmp_path):
    prev = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        result = run_plan(expand(cfg(methods={"finetune": {"epochs": 1}})),
                          tmp_path / "r.sqlite", workers=1)
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(prev)
    assert [(p["kind"], p["process"], p["threads"]) for p in result["prepared"]] == [
        ("original", "main", 1), ("reference", "main", 1)]
    ft = by_method(tmp_path / "r.sqlite")["finetune"]
    assert ft["timing"]["threads"] == 1 and ft["timing"]["process"] == "main"
    assert ft["retrain_seconds_source"] == "reference-pool"
    assert ft["retrain_seconds"] == result["prepared"][1]["seconds"]
    check_ratio(ft)


@pytest.mark.slow
def test_rows_stored_before_the_retrain_row_are_measured_against_it(tmp_path):
    """With two workers a fast run may finish before the retrain run of its scenario: its row
    is amended once the retrain row is stored. Whatever the order, every row ends up against
    the retrain row."""
    plan = expand(cfg(recipe={"epochs": 20}, scenarios={"classes": [[3]], "random": [0.1]},
                      methods={"retrain": {}, "finetune": {"epochs": 1, "lr": [0.01, 0.02]}}))
    run_plan(plan, tmp_path / "r.sqlite", workers=2)
    rows = read_rows(tmp_path / "r.sqlite")
    retrain = {r["scenario"]: r for r in rows if r["method"] == "retrain"}
    for r in rows:
        if r["method"] == "retrain":
            assert r["retrain_seconds_source"] == "reference-pool"
        else:
            assert r["retrain_seconds_source"] == "retrain-row", r["method"]
            assert r["retrain_seconds"] == retrain[r["scenario"]]["seconds"]
        if r["method"] != "original":
            check_ratio(r)



def test_a_resumed_benchmark_times_its_new_rows_against_the_stored_retrain_row(tmp_path):
    """Interrupted after its retrain row, a benchmark resumed in the same store measures the
    rest against that row, not against the cached reference's time (measured elsewhere)."""
    db = tmp_path / "r.sqlite"
    run_plan(expand(cfg(methods={"retrain": {}})), db, workers=1)
    stored = by_method(db)["retrain"]
    assert stored["seconds"] != stored["retrain_seconds"]  # re-measured: not the cache's time
    run_plan(expand(cfg()), db, workers=1)  # the same benchmark with finetune, resumed
    rows = by_method(db)
    assert rows["retrain"]["seconds"] == stored["seconds"]  # reused, not run again
    ft = rows["finetune"]
    assert ft["retrain_seconds_source"] == "retrain-row"
    assert ft["retrain_seconds"] == stored["seconds"]
    check_ratio(ft)

def test_amending_a_row_changes_its_columns_and_its_metrics_json(tmp_path):
    db = tmp_path / "r.sqlite"
    row = {"run_id": "a", "dataset": "digits", "arch": "mlp", "scenario": "class 3",
           "scenario_kind": "class", "method": "finetune", "params": {}, "seed": 0,
           "status": "ok", "spec": {}, "metrics": {"seconds": 2.0, "retrain_seconds": 4.0,
                                                   "speedup": 2.0},
           "retrain_seconds_source": "cache", "cache_hit": False,
           "timing": {"process": "worker", "threads": 1}}
    with ResultStore(db) as store:
        assert store.write(row)
        assert store.write({**row, "run_id": "b", "status": "failed", "metrics": {}})
        assert store.amend_timing("a", {"retrain_seconds": 8.0, "speedup": 4.0}, "retrain-row")
        assert not store.amend_timing("b", {"retrain_seconds": 8.0}, "retrain-row")
        with pytest.raises(ValueError, match="only retrain_seconds and speedup"):
            store.amend_timing("a", {"seconds": 1.0}, "retrain-row")
    rows = {r["run_id"]: r for r in read_rows(db)}
    a = rows["a"]
    assert (a["retrain_seconds"], a["speedup"], a["retrain_seconds_source"]) == (
        8.0, 4.0, "retrain-row")
    assert a["metrics"] == {"seconds": 2.0, "retrain_seconds": 8.0, "speedup": 4.0}
    assert a["cache_hit"] == 0 and a["timing"] == {"process": "worker", "threads": 1}
    assert rows["b"]["retrain_seconds_source"] == "cache"  # a failed row is left alone


def test_a_store_from_before_the_timing_columns_is_read_and_migrated(tmp_path):
    db = tmp_path / "old.sqlite"
    with ResultStore(db) as store:
        store.write({"run_id": "a", "dataset": "digits", "arch": "mlp", "scenario": "class 3",
                     "scenario_kind": "class", "method": "finetune", "params": {}, "seed": 0,
                     "status": "ok", "spec": {}, "metrics": {"seconds": 1.0}})
    conn = sqlite3.connect(db)
    with conn:
        for column in TIMING_COLUMNS:
            conn.execute(f"ALTER TABLE runs DROP COLUMN {column}")
    conn.close()
    (row,) = read_rows(db)
    assert all(row[c] is None for c in TIMING_COLUMNS) and row["seconds"] == 1.0
    ResultStore(db).close()
    conn = sqlite3.connect(db)
    have = {r[1]: r[2] for r in conn.execute("PRAGMA table_info(runs)")}
    conn.close()
    assert (have["retrain_seconds_source"], have["cache_hit"], have["timing"]) == (
        "TEXT", "INTEGER", "TEXT")


# ---------------------------------------------------------------------- the clock and curves
def test_time_spent_in_epoch_watchers_is_not_counted(monkeypatch, digits, mlp_model):
    """A fake clock that only moves while the watcher runs: without the pause the method
    would be charged 100 s per watcher call."""
    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    calls = []

    def slow_watcher(phase, epoch, model):
        calls.append((phase, epoch))
        clock[0] += 100.0

    split = uk.split_by_class(digits, [3])
    before = watcher_seconds()
    with watch_epochs(slow_watcher):
        out = uk.unlearn(mlp_model, split, "finetune", epochs=2)
    assert len(calls) == 3  # epoch 0, 1 and 2
    assert watcher_seconds() - before == pytest.approx(300.0)
    assert uk.get_info(out).seconds == pytest.approx(0.0)
    # without watchers nothing is subtracted
    clock[0] = 0.0
    out = uk.unlearn(mlp_model, split, "finetune", epochs=2)
    assert uk.get_info(out).seconds == 0.0


def test_bench_curves_are_paused_out_of_the_row_seconds(tmp_path, monkeypatch):
    """With ``curves: true`` the per-epoch evaluations run inside the timed call; made slow
    here (50 ms each), they are still left out of the row's seconds: the stored seconds fit
    in the call's own wall-clock less the time spent watching."""
    from unlearnkit.bench import run as bench_run

    real_watcher, real_unlearn = bench_run.curve_watcher, bench_run.unlearn
    seen = []

    def slow_curve_watcher(*args, **kwargs):
        watch, curve = real_watcher(*args, **kwargs)

        def slow(phase, epoch, model):
            time.sleep(0.05)
            watch(phase, epoch, model)

        return slow, curve

    def spy(*args, **kwargs):
        if args[2] != "finetune":  # the reference's training, timed by the same helper
            return real_unlearn(*args, **kwargs)
        before, start = watcher_seconds(), time.perf_counter()
        out = real_unlearn(*args, **kwargs)
        seen.append({"elapsed": time.perf_counter() - start,
                     "watched": watcher_seconds() - before, "seconds": uk.get_info(out).seconds})
        return out

    monkeypatch.setattr(bench_run, "curve_watcher", slow_curve_watcher)
    monkeypatch.setattr(bench_run, "unlearn", spy)
    db = tmp_path / "r.sqlite"
    run_plan(expand(cfg(curves=True, original=False, methods={"finetune": {"epochs": 2}})), db,
             workers=1)
    (row,) = read_rows(db)
    assert seen[0]["watched"] >= 0.15  # 3 evaluations (epochs 0, 1, 2), 50 ms each at least
    assert all(call["watched"] == 0 for call in seen[1:])  # repeats are not watched
    for call in seen:
        assert call["seconds"] <= call["elapsed"] - call["watched"]
    assert row["seconds"] == pytest.approx(statistics.median(c["seconds"] for c in seen))
    assert row["timing"]["repeats"] == len(seen)
    curves = json.loads(sqlite3.connect(db).execute(
        "SELECT payload FROM artefacts WHERE run_id = ?", (row["run_id"],)).fetchone()[0])
    assert len(curves["curves"]) == 3  # ... and the curves were recorded


@pytest.mark.slow
def test_ray_labels_its_references_honestly(tmp_path):
    """Ray prepares in the parent, with all its threads: a reference trained there is
    ``reference-parent``; the runs themselves are timed on Ray's one-CPU workers."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():  # pragma: no cover - another module left one running
        ray.shutdown()
    db = tmp_path / "r.sqlite"
    run_plan(expand(cfg(methods={"finetune": {"epochs": 1}}, original=False)), db, workers=2,
             executor="ray")
    (row,) = read_rows(db)
    assert row["retrain_seconds_source"] == "reference-parent"
    assert (row["timing"]["process"], row["timing"]["threads"]) == ("ray", 1)
    check_ratio(row)


def test_short_calls_are_repeated_and_their_median_reported():
    """A call's seconds are what it records (a list here): short ones are made again until
    they add up to REPEAT_BELOW (or MAX_REPEATS calls), and the median is reported; the
    first call's model is returned."""
    assert REPEAT_BELOW == 3.0 and MAX_REPEATS == 5

    def calls(*seconds):
        made = []

        def call():
            model = torch.nn.Linear(2, 2)
            uk.models.info.set_info(model, uk.ModelInfo(seconds=seconds[len(made)]))
            made.append(model)
            return model

        return call, made

    call, made = calls(0.9, 0.3, 1.5, 0.6, 27.0)
    model, measured = _timed(call, read_cache=False)
    assert len(made) == 4 and model is made[0]  # 0.9 + 0.3 + 1.5 < 3 <= ... + 0.6
    assert uk.get_info(model).seconds == pytest.approx(0.75)  # median of the four
    assert measured["repeats"] == 4 and measured["cache_hit"] is False
    call, made = calls(0.01, 0.01, 0.01, 0.01, 0.01, 0.01)
    model, measured = _timed(call, read_cache=False)
    assert len(made) == measured["repeats"] == MAX_REPEATS
    call, made = calls(6.0, 0.1)
    model, measured = _timed(call, read_cache=False)
    assert len(made) == measured["repeats"] == 1 and uk.get_info(model).seconds == 6.0


# ---------------------------------------------------------------------- caches
def test_cache_use_records_hits_and_cold_reads_miss(digits, mlp_model):
    split = uk.split_by_class(digits, [3])
    with cache_use() as first:
        uk.unlearn(mlp_model, split, "ssd")
    assert first.lookups >= 1 and not first.hit  # a fresh cache (conftest)
    with cache_use() as warm:
        uk.unlearn(mlp_model, split, "ssd")
    assert warm.hit
    with cache_use(read=False) as cold:
        uk.unlearn(mlp_model, split, "ssd")
    assert cold.lookups >= 1 and not cold.hit and cold.hits == 0


def test_bench_rows_record_cache_hits_and_time_cold_by_default(tmp_path):
    ssd = {"methods": {"ssd": {}}, "original": False}
    cold = expand(cfg(**ssd))
    warm = expand(cfg(**ssd, timing="warm"))
    assert cold.runs[0].run_id != warm.runs[0].run_id  # the timing is part of the run
    assert cold.runs[0].spec()["record"] == {"curves": False}  # earlier stores' ids kept
    run_plan(cold, tmp_path / "c1.sqlite", workers=1)
    run_plan(cold, tmp_path / "c2.sqlite", workers=1)  # the importances are cached by now
    assert [r["cache_hit"] for r in read_rows(tmp_path / "c2.sqlite")] == [0]
    assert read_rows(tmp_path / "c2.sqlite")[0]["timing"]["mode"] == "cold"
    run_plan(warm, tmp_path / "w.sqlite", workers=1)
    (row,) = read_rows(tmp_path / "w.sqlite")
    assert row["cache_hit"] == 1 and row["timing"]["mode"] == "warm"


@pytest.mark.parametrize("value", ["hot", True, 1, None])
def test_timing_key_is_validated(tmp_path, value):
    with pytest.raises(InvalidParameterError, match=r"'timing' key .* one of cold, warm"):
        cfg(timing=value)
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps({**TINY, "timing": value}))
    code, out, err = cli("bench", path, "--out", tmp_path / "r.sqlite", "--dry-run")
    assert code == 2 and out == ""
    assert_one_error_line(err, "'timing'")
    assert not (tmp_path / "r.sqlite").exists()


# ---------------------------------------------------------------------- forget
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("timing-cli")
    code, _, err = cli("train", "--data", "digits", "--model", "mlp", "--model-arg", "hidden=16",
                       "--epochs", "2", "--out", d / "original.safetensors")
    assert code == 0, err
    code, _, err = cli("forget", "--checkpoint", d / "original.safetensors", "--forget-class",
                       "3", "--method", "retrain", "--out", d / "retrained.safetensors")
    assert code == 0, err
    return d


def test_forget_with_a_retrained_checkpoint_says_its_time_is_indicative(models, tmp_path):
    args = ("forget", "--checkpoint", models / "original.safetensors", "--forget-class", "3",
            "--method", "finetune", "--param", "epochs=1", "--no-relearn", "--retrained",
            models / "retrained.safetensors", "--out", tmp_path / "u.safetensors")
    code, out, err = cli(*args, "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["retrain_seconds_source"] == "checkpoint"
    assert "another process" in res["note"] and "--time-retrain" in res["note"]
    recorded = uk.models.read_checkpoint_info(models / "retrained.safetensors").seconds
    assert res["metrics"]["retrain_seconds"] == recorded
    code, out, err = cli(*args)
    assert code == 0, err
    assert out.splitlines()[-1].startswith("note: retrain_seconds is the time recorded in the "
                                           "--retrained checkpoint")


def test_forget_time_retrain_measures_retraining_here(models, tmp_path):
    base = ("forget", "--checkpoint", models / "original.safetensors", "--forget-class", "3",
            "--method", "finetune", "--param", "epochs=1", "--no-relearn", "--time-retrain",
            "--out", tmp_path / "u.safetensors")
    recorded = uk.models.read_checkpoint_info(models / "retrained.safetensors").seconds
    for extra in ((), ("--retrained", models / "retrained.safetensors")):
        code, out, err = cli(*base, *extra, "--json")
        assert code == 0, err
        res = json.loads(out)
        m = res["metrics"]
        assert res["retrain_seconds_source"] == "timed-here" and "measured here" in res["note"]
        assert m["retrain_seconds"] != recorded  # a time of its own, not the checkpoint's
        assert m["speedup"] == pytest.approx(m["retrain_seconds"] / m["seconds"])
        assert "js_divergence" in m and "activation_distance" in m  # a reference either way
    code, out, err = cli(*base)
    assert code == 0, err
    assert out.splitlines()[-1].startswith("note: retrain_seconds was measured here")
