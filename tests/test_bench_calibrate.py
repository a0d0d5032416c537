"""Comparisons at equal budget (issue 13, part 3): the bench config's ``calibrate`` key, the
calibrated runs of the plan, their rows and trials in the store, and the work the benchmark
shares between a scenario's runs (references' outputs and features evaluated once, the
probe's features computed for its subsample only), which must not change any value.
"""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
import torch

import unlearnkit as uk
from unlearnkit.bench import ResultStore, expand, parse_config, read_rows, run_plan
from unlearnkit.bench.store import read_trials
from unlearnkit.evaluation import (
    EvaluationCache,
    evaluate,
    penultimate_features,
    probe_forget_acc,
)
from unlearnkit.exceptions import DataError, InvalidParameterError
from unlearnkit.importance.cache import cache_use
from unlearnkit.metrics import probe_accuracy
from unlearnkit.metrics.representation import subsample

TINY = {
    "dataset": "digits",
    "model": {"arch": "mlp", "kwargs": {"hidden": [16]}},
    "recipe": {"epochs": 3},
    "scenarios": {"classes": [[3]]},
    "methods": {"retrain": {}, "ssd": {}, "finetune": {"epochs": 1}},
    "seeds": [0],
    "relearn": False,
    "mia": False,
}


def cfg(**changes):
    return parse_config({**TINY, **changes})


# ---------------------------------------------------------------------- the config
def test_calibrate_defaults_to_every_listed_method_with_a_search_space():
    c = cfg(calibrate={"budget": 0.5})
    assert [x.method for x in c.calibrate] == ["ssd", "finetune"]  # retrain: nothing to search
    assert all((x.budget, x.budget_seconds, x.max_trials) == (0.5, None, None)
               for x in c.calibrate)
    assert cfg().calibrate == ()


def test_calibrate_per_method_overrides_the_common_limits():
    c = cfg(calibrate={"budget": 0.2, "max_trials": 9,
                       "methods": {"ssd": {"budget_seconds": 3}, "finetune": {}}})
    by = {x.method: x for x in c.calibrate}
    assert (by["ssd"].budget, by["ssd"].budget_seconds, by["ssd"].max_trials) == (None, 3.0, 9)
    assert (by["finetune"].budget, by["finetune"].max_trials) == (0.2, 9)
    assert [x.method for x in cfg(calibrate={"methods": ["ssd"]}).calibrate] == ["ssd"]


@pytest.mark.parametrize("value, words", [
    ({"budget": -1}, "calibrate.budget"),
    ({"budget": True}, "calibrate.budget"),
    ({"max_trials": 0}, "calibrate.max_trials"),
    ({"budget": None}, "a limit"),
    ({"methods": ["teacher"]}, "'teacher', which the config's 'methods' do not run"),
    ({"methods": ["retrain"]}, "no search space"),
    ({"methods": {"ssd": {"bugdet": 1}}}, "Unknown key 'bugdet'"),
    ({"budjet": 0.2}, "Unknown key 'budjet'"),
    ([0.2], "a mapping"),
])
def test_bad_calibrate_keys_are_refused_naming_the_key(value, words):
    with pytest.raises(InvalidParameterError, match=words):
        cfg(calibrate=value)


def test_the_plan_adds_one_calibrated_run_per_method_scenario_and_seed():
    plain = expand(cfg())
    plan = expand(cfg(calibrate={"budget": 0.2}, seeds=[0, 1]))
    calibrated = [r for r in plan.runs if r.calibrate]
    assert len(calibrated) == 2 * 2  # ssd and finetune, two seeds
    assert {r.label for r in calibrated} == {"ssd (calibrated)", "finetune (calibrated)"}
    for r in calibrated:
        assert r.params == uk.get_method(r.method).params()  # searched from the defaults
        assert r.spec()["calibrate"] == {"budget": 0.2, "budget_seconds": None,
                                         "max_trials": None}
        assert not r.curves and not r.score_models
    # the grid's runs keep their ids: a store from before calibration is resumed
    assert {r.run_id for r in plain.runs} <= {r.run_id for r in plan.runs}
    assert len({r.run_id for r in plan.runs}) == len(plan.runs)
    other = expand(cfg(calibrate={"budget": 0.3}, seeds=[0, 1]))
    assert ({r.run_id for r in other.runs if r.calibrate}
            .isdisjoint(r.run_id for r in calibrated))  # the budget is part of the run


def test_a_budget_share_brings_the_retraining_it_is_a_share_of():
    """The config's methods lack `retrain`: a budget that is a share of the retraining adds the
    reference retrain run of each scenario and seed, so that the share is of a retraining
    measured in the same pool (not of the cached reference's time, measured another day);
    once, where the methods have it; not for a budget in seconds."""
    def retrains(plan):
        return [(r.scenario.label, r.seed) for r in plan.runs if r.method == "retrain"]

    lacking = {"ssd": {}, "finetune": {"epochs": 1}}
    assert retrains(expand(cfg(methods=lacking))) == []
    plan = expand(cfg(methods=lacking, calibrate={"budget": 0.2}, seeds=[0, 1]))
    assert retrains(plan) == [("class 3", 0), ("class 3", 1)]
    assert all(r.params == uk.get_method("retrain").params() and not r.calibrate
               for r in plan.runs if r.method == "retrain")
    assert retrains(expand(cfg(calibrate={"budget": 0.2}))) == [("class 3", 0)]  # TINY has it
    assert retrains(expand(cfg(methods=lacking, calibrate={"budget_seconds": 5.0}))) == []


# ---------------------------------------------------------------------- the store
def _row(run_id: str, **extra):
    return {"run_id": run_id, "dataset": "digits", "arch": "mlp", "scenario": "class 3",
            "scenario_kind": "class", "method": "ssd", "params": {"alpha": 3.0}, "seed": 0,
            "status": "ok", "spec": {"x": run_id}, "metrics": {"seconds": 1.5}, **extra}


def test_the_store_keeps_a_calibrated_rows_summary_and_its_trials(tmp_path):
    db = tmp_path / "r.sqlite"
    calibration = {"budget": 0.2, "budget_seconds": 0.7, "budget_basis": "retrain-row",
                   "trials": 2, "best_trial": 1, "params": {"alpha": 3.0}}
    trials = [{"number": 0, "params": {"alpha": 10.0}, "state": "complete", "value": 0.5,
               "outcome": "not forgotten", "retained": 0.9, "shortfall": 0.2, "seconds": 0.3},
              {"number": 1, "params": {"alpha": 3.0}, "state": "pruned", "seconds": 0.1,
               "note": None},
              {"number": 2, "params": {"alpha": 2.0}, "state": "complete", "value": 0.9,
               "seconds": 0.2, "stopped_at": {"phase": "fit", "epoch": 3}}]
    with ResultStore(db) as store:
        assert store.write(_row("a", calibration=calibration, trials=trials))
        assert store.write(_row("b"))
        assert set(store.trials()) == {"a"}
    rows = {r["run_id"]: r for r in read_rows(db)}
    assert rows["a"]["calibration"] == calibration and rows["b"]["calibration"] is None
    got = read_trials(db)["a"]
    assert [t["number"] for t in got] == [0, 1, 2]
    assert got[0]["params"] == {"alpha": 10.0} and got[0]["value"] == 0.5
    assert got[1]["state"] == "pruned" and got[1]["value"] is None
    assert got[0]["note"] is None and got[2]["note"] == "stopped at fit epoch 3"
    assert read_trials(db, ["b"]) == {} and read_trials(tmp_path / "none.sqlite") == {}


def test_a_store_from_before_calibration_is_read_and_upgraded(tmp_path):
    db = tmp_path / "old.sqlite"
    with ResultStore(db) as store:
        store.write(_row("a"))
    conn = sqlite3.connect(db)  # as an older unlearnkit wrote it
    conn.execute("DROP TABLE trials")
    conn.execute("ALTER TABLE runs DROP COLUMN calibration")
    conn.commit()
    conn.close()
    assert read_rows(db)[0]["calibration"] is None and read_trials(db) == {}
    with ResultStore(db) as store:  # opened for writing: the column and table are added
        store.write(_row("c", calibration={"trials": 1}, trials=[
            {"number": 0, "params": {}, "state": "complete"}]))
    assert {r["run_id"]: r["calibration"] for r in read_rows(db)} == {"a": None,
                                                                      "c": {"trials": 1}}


def test_corrupt_trial_parameters_name_the_store_and_the_trial(tmp_path):
    db = tmp_path / "r.sqlite"
    with ResultStore(db) as store:
        store.write(_row("a", calibration={}, trials=[{"number": 0, "params": {},
                                                       "state": "complete"}]))
    conn = sqlite3.connect(db)
    conn.execute("UPDATE trials SET params = '[1, 2'")
    conn.commit()
    conn.close()
    with pytest.raises(DataError, match=r"trial 0 of run 'a'.*not a JSON mapping"):
        read_trials(db)


# ---------------------------------------------------------------------- a calibrated bench
@pytest.mark.slow
def test_a_calibrated_bench_stores_the_search_and_measures_it_whole(tmp_path):
    db = tmp_path / "c.sqlite"
    plan = expand(cfg(methods={"retrain": {}, "ssd": {}},
                      calibrate={"budget_seconds": 30, "max_trials": 3}))
    summary = run_plan(plan, db, workers=1)
    assert summary["failed"] == 0
    rows = {(r["method"], r["calibration"] is not None): r for r in read_rows(db)}
    cal, plain = rows[("ssd", True)], rows[("ssd", False)]
    c = cal["calibration"]
    assert c["budget_seconds"] == 30.0 and c["budget_basis"] is None and c["trials"] == 3
    assert c["defaults"] == uk.get_method("ssd").params()
    assert cal["params"] == c["params"]  # the row's params: the chosen ones
    trials = read_trials(db)[cal["run_id"]]
    assert len(trials) == 3 and trials[0]["number"] == 0
    # trial 0 is the defaults (what the search space covers of them)
    assert all(trials[0]["params"][k] == pytest.approx(v) for k, v in
               uk.get_method("ssd").for_scenario("class").json_params().items()
               if k in trials[0]["params"])
    # the row's seconds: the whole search, at least every trial's own cost
    assert cal["seconds"] == pytest.approx(c["search_seconds"])
    assert cal["seconds"] >= sum(t["seconds"] for t in trials) * 0.999
    assert cal["verdict"] in uk.metrics.verdict.OUTCOMES
    assert cal["retrain_seconds_source"] == "retrain-row"
    assert cal["speedup"] == pytest.approx(cal["retrain_seconds"] / cal["seconds"])
    assert plain["calibration"] is None and plain["run_id"] != cal["run_id"]


@pytest.mark.slow
def test_a_budget_share_is_of_the_retraining_measured_in_the_pool(tmp_path):
    db = tmp_path / "b.sqlite"
    plan = expand(cfg(methods={"retrain": {}, "ssd": {}},
                      calibrate={"budget": 2.0, "max_trials": 2}))
    run_plan(plan, db, workers=1)
    rows = read_rows(db)
    retrain = next(r for r in rows if r["method"] == "retrain")
    cal = next(r for r in rows if r["calibration"] is not None)
    c = cal["calibration"]
    assert c["budget"] == 2.0 and c["budget_basis"] == "retrain-row"
    assert c["budget_seconds"] == pytest.approx(2.0 * retrain["seconds"])


@pytest.mark.slow
def test_a_budget_share_is_of_a_measured_retraining_where_the_methods_lack_one(tmp_path):
    db = tmp_path / "b.sqlite"
    run_plan(expand(cfg(methods={"ssd": {}}, calibrate={"budget": 2.0, "max_trials": 2})), db,
             workers=1)
    rows = read_rows(db)
    retrain = next(r for r in rows if r["method"] == "retrain")
    c = next(r for r in rows if r["calibration"] is not None)["calibration"]
    assert c["budget_basis"] == "retrain-row"
    assert c["budget_seconds"] == pytest.approx(2.0 * retrain["seconds"])


@pytest.mark.slow
def test_a_method_that_cannot_finish_a_trial_in_its_budget_is_skipped_saying_so(tmp_path):
    db = tmp_path / "s.sqlite"
    plan = expand(cfg(methods={"retrain": {}, "finetune": {"epochs": 1}},
                      calibrate={"budget_seconds": 1e-6}))
    summary = run_plan(plan, db, workers=1)
    assert summary["failed"] == 0
    (row,) = [r for r in read_rows(db) if r["calibration"] is not None]
    assert row["status"] == "skipped" and "no trial finished within the budget" in row["error"]
    assert row["calibration"]["budget_seconds"] == 1e-6
    run_plan(plan, db, workers=1)  # finished: not run again
    assert len(read_rows(db)) == 4


@pytest.mark.slow
def test_a_bench_warm_starts_each_search_from_an_earlier_store(tmp_path):
    first = tmp_path / "first.sqlite"
    run_plan(expand(cfg(methods={"retrain": {}, "ssd": {}},
                        calibrate={"budget_seconds": 30, "max_trials": 4})), first, workers=1)
    earlier = next(r for r in read_rows(first) if r["calibration"] is not None)
    trials = read_trials(first)[earlier["run_id"]]
    done = sorted((t for t in trials if t["outcome"] is not None),
                  key=lambda t: (t["outcome"] == "forgotten", t["outcome"] != "utility lost",
                                 t["value"], -t["seconds"]), reverse=True)
    # a later request (class 5), warm-started from the class-3 search
    second = tmp_path / "second.sqlite"
    config = cfg(methods={"retrain": {}, "ssd": {}}, scenarios={"classes": [[5]]},
                 calibrate={"budget_seconds": 30, "max_trials": 3, "warm_start": str(first)})
    assert config.calibrate[0].warm_start == str(first)
    run_plan(expand(config), second, workers=1)
    row = next(r for r in read_rows(second) if r["calibration"] is not None)
    assert row["calibration"]["warm_start"] == {"store": str(first),
                                                "run_id": earlier["run_id"]}
    tried = [t["params"] for t in read_trials(second)[row["run_id"]]]
    assert done[0]["params"] in tried[:3]  # the earlier best, among the queued trials
    # the same config without the warm start is another run (its id), and the earlier
    # configs' runs keep theirs
    assert "warm_start" not in cfg(calibrate={"budget": 0.2}).calibrate[0].to_dict()


@pytest.mark.parametrize("value, words", [
    (3, "calibrate.warm_start"),
    ("", "calibrate.warm_start"),
    ("no/such.sqlite", "no results store at 'no/such.sqlite'"),
])
def test_a_bad_warm_start_store_is_refused_naming_the_key(value, words):
    with pytest.raises(InvalidParameterError, match=words):
        cfg(calibrate={"budget": 0.2, "warm_start": value})


# ---------------------------------------------------------------------- shared work
def test_cold_reads_miss_what_was_stored_before_and_hit_what_the_block_stored(digits,
                                                                               mlp_model):
    split = uk.split_by_class(digits, [3])
    uk.unlearn(mlp_model, split, "ssd")  # stored before the block
    with cache_use(read=False) as cold:
        uk.unlearn(mlp_model, split, "ssd")
        assert cold.hits == 0 and cold.written  # computed afresh, and stored
        uk.unlearn(mlp_model, split, "ssd")  # a second trial of a search reads it back
    assert cold.hit


def test_evaluation_with_a_cache_gives_the_same_values_and_reuses_the_references(
        digits, mlp_model, cnn_model):
    split = uk.split_by_class(digits, [3])
    retrained = uk.unlearn(mlp_model, split, "retrain", seed=1)
    models = [uk.unlearn(mlp_model, split, "ssd"), uk.unlearn(mlp_model, split, "finetune")]
    cache = EvaluationCache()
    for m in models:
        plain = evaluate(m, split, retrained=retrained, original=mlp_model, relearn=False,
                         verdict=True)
        cached = evaluate(m, split, retrained=retrained, original=mlp_model, relearn=False,
                          verdict=True, cache=cache)
        assert cached == plain
    filled = len(cache)
    assert filled >= 6  # outputs, features and attack figures of both references
    evaluate(models[0], split, retrained=retrained, original=mlp_model, relearn=False,
             cache=cache)
    assert len(cache) == filled  # nothing new computed for the references
    other = uk.split_by_class(digits, [3])  # another split object: not served from the cache
    got = evaluate(models[0], other, retrained=cnn_model, original=mlp_model, relearn=False,
                   cache=cache)
    assert got["js_divergence"] == evaluate(models[0], other, retrained=cnn_model,
                                            original=mlp_model,
                                            relearn=False)["js_divergence"]
    assert len(cache) > filled


def test_the_probe_computes_features_for_its_subsample_only_with_the_same_value(
        digits, mlp_model):
    split = uk.split_by_class(digits, [3])
    calls = []
    original = uk.evaluation._features_and_labels

    def counting(model, data, **kw):
        calls.append(len(data))
        return original(model, data, **kw)

    full = np.concatenate([penultimate_features(mlp_model, split.retain),
                           penultimate_features(mlp_model, split.forget)])
    labels = torch.cat([split.retain.y, split.forget.y]).numpy()
    for cap in (300, 5000):
        expected = probe_accuracy(full, labels, [3], seed=4, max_samples=cap)
        uk.evaluation._features_and_labels = counting
        try:
            calls.clear()
            got = probe_forget_acc(mlp_model, split, seed=4, max_samples=cap)
        finally:
            uk.evaluation._features_and_labels = original
        assert got == expected
        assert sum(calls) == len(subsample(labels, cap, 4))
    assert len(subsample(labels, 300, 4)) < len(labels)  # the cap of 300 did subsample


def test_a_one_pass_trial_that_ends_after_the_budget_is_discarded(digits, mlp_model,
                                                                  monkeypatch):
    """SSD cannot stop mid-pass: a trial that ends past the budget is over budget, its model
    not returned, so a calibrated result never costs more than its budget."""
    import time

    from unlearnkit.calibration import NoTrialFinished
    from unlearnkit.methods.ssd import SSD

    passes = SSD._unlearn

    def slow_pass(self, model, request):  # a pass longer than the budget, on any machine
        time.sleep(0.6)
        return passes(self, model, request)

    monkeypatch.setattr(SSD, "_unlearn", slow_pass)
    split = uk.split_by_class(digits, [3])
    with cache_use(read=False), pytest.raises(NoTrialFinished) as caught:
        uk.calibrate(mlp_model, split, "ssd", budget_seconds=0.3)
    (first, *_) = caught.value.trials
    assert first.number == 0 and first.state == "over budget"
    assert "after the budget" in first.note and first.seconds > 0.6
    assert caught.value.budget_seconds == 0.3
    assert "no trial finished within the budget" in str(caught.value)
