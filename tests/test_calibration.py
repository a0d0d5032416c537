"""Calibration (unlearnkit.calibration): the oracle-free objective, the budget, the history,
reproducibility, and `unlearnkit forget --calibrate`."""

from __future__ import annotations

import contextlib
import copy
import json
import math

import pytest
import torch

import unlearnkit as uk
from _cli import assert_one_error_line, run
from unlearnkit import calibration as C
from unlearnkit.evaluation import Outputs
from unlearnkit.metrics.verdict import judge_class, judge_samples


# ---------------------------------------------------------------------- the objective
def test_objective_of_a_class_verdict_by_hand():
    v = judge_class(forget_acc=0.30, heldout_forget_acc=0.15, n_heldout_forget=20,
                    heldout_retain_acc=0.90, original_heldout_retain_acc=0.92,
                    original_forget_acc=1.0)
    value, shortfall, retained = C.objective_of(v)
    assert shortfall == pytest.approx((0.30 - 0.05) + (0.15 - 0.05))
    assert retained == 0.90
    assert value == pytest.approx(0.90 - 2 * 0.35)
    forgotten = judge_class(forget_acc=0.0, heldout_forget_acc=0.0, n_heldout_forget=20,
                            heldout_retain_acc=0.91, original_heldout_retain_acc=0.92,
                            original_forget_acc=1.0)
    assert C.objective_of(forgotten) == (pytest.approx(0.91), 0.0, 0.91)


def test_objective_of_a_sample_verdict_by_hand():
    v = judge_samples(forget_acc=1.0, n_forget=100, validation_acc=0.8, n_validation=100,
                      auc=0.7, original_forget_acc=1.0, original_validation_acc=0.8,
                      original_auc=0.7)
    n = v.numbers
    gap_excess = 0.2 - n["accuracy_band"]
    auc_excess = 0.2 - n["auc_band"]
    value, shortfall, retained = C.objective_of(v)
    assert retained == 0.8
    assert shortfall == pytest.approx(gap_excess + auc_excess)
    assert value == pytest.approx(0.8 - 2 * (gap_excess + auc_excess))


def test_retrain_estimate_scales_the_training_time(mlp_model, class_split):
    info = uk.get_info(mlp_model)
    n_r, n_f = len(class_split.retain), len(class_split.forget)
    assert C.retrain_estimate(mlp_model, class_split) == pytest.approx(
        info.seconds * n_r / (n_r + n_f))
    assert C.retrain_estimate(torch.nn.Linear(64, 10), class_split) is None


# ---------------------------------------------------------------------- the search
def test_calibrate_starts_from_the_defaults_and_keeps_the_best(mlp_model, class_split):
    cal = uk.calibrate(mlp_model, class_split, "ssd", budget=None, max_trials=6, seed=0)
    assert len(cal.trials) == 6 and [t.number for t in cal.trials] == list(range(6))
    # trial 0 is the method's defaults for the scenario (alpha 10, lambda 1 for a class)
    defaults = uk.get_method("ssd").for_scenario("class")
    assert cal.trials[0].params == {k: getattr(defaults, k) for k in cal.space}
    done = [t for t in cal.trials if t.state == "complete"]
    forgotten = [t for t in done if t.outcome == "forgotten"]
    best = next(t for t in cal.trials if t.number == cal.best_trial)
    if forgotten:  # the forgotten trial with the highest retained accuracy
        assert best.outcome == "forgotten"
        assert best.retained == max(t.retained for t in forgotten)
    else:  # the best that kept its utility
        kept = [t for t in done if t.outcome != "utility lost"] or done
        assert best.value == max(t.value for t in kept)
    # the returned model is that trial's: its verdict and parameters say so
    assert cal.verdict.outcome == best.outcome
    assert uk.get_info(cal.model).verdict == cal.verdict.to_dict()
    for k, v in best.params.items():
        assert cal.params[k] == pytest.approx(v)
    assert uk.verdict(cal.model, class_split, mlp_model).outcome == best.outcome
    assert uk.get_info(cal.model).method["calibration"]["trials"] == 6


def test_torchs_one_time_costs_are_paid_before_the_budgets_clock(mlp_model, class_split,
                                                                monkeypatch):
    # in a fresh process the first optimiser imports torch._dynamo (1.3 s on this project's
    # CPU): counted, it took a quarter of a 5 s budget from the defaults' trial
    import time

    calls = []

    def slow_warm_up(device=None, *, model=None, data=None):
        calls.append((model, data))
        time.sleep(0.3)

    monkeypatch.setattr(C, "warm_up", slow_warm_up)
    t = time.perf_counter()
    cal = uk.calibrate(mlp_model, class_split, "ssd", budget=None, max_trials=1)
    wall = time.perf_counter() - t
    assert calls == [(mlp_model, class_split.retain)]  # warmed on the model and its data
    assert wall - cal.seconds >= 0.3  # and outside the search's clock


def test_calibrate_is_reproducible_given_the_seed(mlp_model, random_split):
    runs = [uk.calibrate(mlp_model, random_split, "finetune", budget=None, max_trials=4,
                         seed=3, epochs=1) for _ in range(2)]
    a, b = (r.to_dict()["trials"] for r in runs)
    assert [t["params"] for t in a] == [t["params"] for t in b]
    assert [t["value"] for t in a] == [t["value"] for t in b]
    # the fixed hyper-parameter is not searched
    assert "epochs" not in runs[0].space and runs[0].params["epochs"] == 1


def test_history_round_trips_as_json(mlp_model, class_split, tmp_path):
    cal = uk.calibrate(mlp_model, class_split, "fisher-mask", budget=None, max_trials=3,
                       epochs=0)
    path = cal.save_history(tmp_path / "h.json")
    data = json.loads(path.read_text())
    assert data["method"] == "fisher-mask" and data["best_trial"] == cal.best_trial
    assert [t["params"] for t in data["trials"]] == [t.params for t in cal.trials]
    assert data["verdict"]["outcome"] == cal.verdict.outcome
    assert data["space"]["fraction"]["log"] is True


def test_a_spent_budget_stops_the_search(mlp_model, class_split, monkeypatch):
    # a clock that advances 1 s per reading: the budget of 6 s runs out within a few epochs
    now = [0.0]

    def tick() -> float:
        now[0] += 1.0
        return now[0]

    monkeypatch.setattr(C.time, "perf_counter", tick)
    # a clock read per optimiser step (the mid-epoch limit) would make these counts of
    # readings meaningless: the mid-epoch stop is tested on its own
    monkeypatch.setattr(C, "time_limit", lambda until: contextlib.nullcontext())
    with pytest.raises(uk.InvalidParameterError, match="no trial finished within the budget"):
        uk.calibrate(mlp_model, class_split, "finetune", budget_seconds=3.0, epochs=10)


def test_over_budget_trials_are_recorded_and_end_the_search(mlp_model, class_split,
                                                             monkeypatch):
    now = [0.0]

    def tick() -> float:
        now[0] += 1.0
        return now[0]

    monkeypatch.setattr(C.time, "perf_counter", tick)
    # a clock read per optimiser step (the mid-epoch limit) would make these counts of
    # readings meaningless: the mid-epoch stop is tested on its own
    monkeypatch.setattr(C, "time_limit", lambda until: contextlib.nullcontext())
    # the defaults finish; the next trial would have run past the budget (less is left than
    # the first took), so it is not started and the budget holds
    cal = uk.calibrate(mlp_model, class_split, "fisher-mask", budget_seconds=40.0, seed=0)
    assert [t.state for t in cal.trials] == ["complete"]
    assert cal.trials[0].seconds > 40.0 / 2 and cal.seconds <= 40.0
    # with room for a second trial, it starts, and the fine-tuning that would run past its
    # share of the budget is stopped at an epoch's end: here after an epoch that forgot,
    # which is its result (before, it was discarded as over budget)
    now[0] = 0.0
    cal = uk.calibrate(mlp_model, class_split, "fisher-mask", budget_seconds=60.0, seed=0)
    first, second = cal.trials
    assert first.state == "complete" and first.stopped_at is None
    assert second.state == "complete"
    assert second.note == "stopped at its time limit after that epoch"
    assert second.outcome == "forgotten" and second.stopped_at["epoch"] < second.params["epochs"]
    assert cal.seconds <= 60.0
    # without an epoch that forgot, a trial past its share is recorded as over budget (the
    # stall forecast, which would stop these lr 1e-6 trials first, is tested on its own)
    monkeypatch.setattr(C, "STALL_EPOCHS", 10**6)
    now[0] = 0.0
    cal = uk.calibrate(mlp_model, class_split, "finetune", budget_seconds=60.0, seed=0,
                       lr=1e-6)
    assert [t.state for t in cal.trials][1:] == ["over budget"]
    assert cal.trials[cal.best_trial].state == "complete"


# ---------------------------------------------------------------------- warm start
def _best_two(cal):
    done = sorted((t for t in cal.trials if t.outcome is not None), key=C._rank, reverse=True)
    return [t.params for t in done[:2]]


def test_a_warm_start_tries_the_earlier_searchs_best_after_the_defaults(mlp_model,
                                                                         class_split, tmp_path):
    earlier = uk.calibrate(mlp_model, class_split, "ssd", budget=None, max_trials=6, seed=0)
    best = _best_two(earlier)
    assert best[0] == earlier.trials[earlier.best_trial].params
    defaults = uk.get_method("ssd").for_scenario("class")
    first = {k: getattr(defaults, k) for k in earlier.space}
    path = earlier.save_history(tmp_path / "earlier.json")
    for given in (earlier, earlier.to_dict(), path, str(path)):
        cal = uk.calibrate(mlp_model, class_split, "ssd", budget=None, max_trials=4, seed=0,
                           warm_start=given)
        # the defaults, then the earlier two best (the defaults once), then the sampler's own
        queued = [first] + [p for p in best if p != first]
        assert [t.params for t in cal.trials[:len(queued)]] == queued
        assert cal.warm_start == best and cal.to_dict()["warm_start"] == best
        # the same request and seed: the earlier best is re-run to the same verdict
        again = next(t for t in cal.trials if t.params == best[0])
        before = earlier.trials[earlier.best_trial]
        assert (again.outcome, again.retained) == (before.outcome, before.retained)


def test_warm_start_points_are_clipped_into_the_space_and_fixed_values_kept(mlp_model,
                                                                           class_split):
    # alpha above the space's top is clipped to it; lambd is held fixed, so its warm value
    # goes; a point equal to the defaults is not run twice
    defaults = uk.get_method("ssd").for_scenario("class")
    cal = uk.calibrate(mlp_model, class_split, "ssd", budget=None, max_trials=2, lambd=0.5,
                       warm_start=[{"alpha": defaults.alpha}, {"alpha": 1e9, "lambd": 0.9}])
    space = uk.get_method("ssd").search_space()
    assert [t.params for t in cal.trials] == [{"alpha": defaults.alpha},
                                              {"alpha": space["alpha"].high}]
    assert cal.params["lambd"] == 0.5
    # a value the point does not give is the default's, not a sample
    cal = uk.calibrate(mlp_model, class_split, "ssd", budget=None, max_trials=2,
                       warm_start=[{"alpha": 3.0}])
    assert cal.trials[1].params == {"alpha": 3.0, "lambd": defaults.lambd}


def test_the_earlier_best_goes_first_where_the_earlier_defaults_did_not_forget(mlp_model,
                                                                               class_split):
    """What the earlier search learned of the defaults decides: where they did not forget
    there, its best trials run first (the first with the whole budget), then the defaults;
    where they forgot, or the history does not say (another trial 0, a list of points), the
    defaults run first."""
    def history(first_outcome, first_params=None):
        return {"method": "ssd", "trials": [
            {"number": 0, "params": first_params or {"alpha": 10.0, "lambd": 1.0},
             "state": "complete", "outcome": first_outcome, "value": 0.1, "seconds": 1.0},
            {"number": 1, "params": {"alpha": 3.0, "lambd": 0.5}, "state": "complete",
             "outcome": "forgotten", "value": 0.9, "seconds": 1.0}]}

    def order(warm):
        cal = uk.calibrate(mlp_model, class_split, "ssd", budget=None, max_trials=2,
                           warm_start=warm)
        return [t.params for t in cal.trials]

    best, defaults = {"alpha": 3.0, "lambd": 0.5}, {"alpha": 10.0, "lambd": 1.0}
    assert order(history("not forgotten")) == [best, defaults]
    assert order(history(None)) == [best, defaults]  # they did not even finish
    assert order(history("forgotten")) == [defaults, best]
    assert order(history("not forgotten", {"alpha": 5.0, "lambd": 1.0})) == [defaults, best]
    assert order([best]) == [defaults, best]


def test_a_history_without_a_finished_trial_starts_from_the_defaults(mlp_model, class_split):
    # the earlier budget was too small for one trial: nothing to start from, nothing refused
    history = {"method": "ssd", "trials": [{"number": 0, "params": {"alpha": 3.0},
                                            "state": "over budget", "outcome": None}]}
    cal = uk.calibrate(mlp_model, class_split, "ssd", budget=None, max_trials=1,
                       warm_start=history)
    assert cal.warm_start == [] and cal.trials[0].params["alpha"] == 10.0


@pytest.mark.parametrize("warm, match", [
    ({"method": "finetune", "trials": []}, "a search of 'finetune', not of 'ssd'"),
    ({"method": "ssd", "trials": "x"}, "not a calibration history"),
    ([{"alhpa": 3.0}], "no hyper-parameter 'alhpa'"),
    ([{"alpha": float("nan")}], "alpha=nan is not a finite number"),
    ([{"alpha": "big"}], "alpha='big' is not a finite number"),
    (["alpha"], "must map hyper-parameter names"),
    (3, "warm_start must be a Calibration"),
])
def test_bad_warm_starts_are_refused_before_any_trial(mlp_model, class_split, warm, match,
                                                      monkeypatch):
    monkeypatch.setattr(C, "warm_up", lambda *a, **k: pytest.fail("the search started"))
    with pytest.raises(uk.InvalidParameterError, match=match):
        uk.calibrate(mlp_model, class_split, "ssd", budget=None, max_trials=1, warm_start=warm)


def test_a_warm_start_gives_an_int_hyper_parameter_a_whole_number(mlp_model, class_split):
    with pytest.raises(uk.InvalidParameterError, match=r"epochs=2.5 is not a whole number"):
        uk.calibrate(mlp_model, class_split, "finetune", budget=None, max_trials=1,
                     warm_start=[{"epochs": 2.5}])
    # JSON's 3.0 is 3
    cal = uk.calibrate(mlp_model, class_split, "finetune", budget=None, max_trials=2,
                       warm_start=[{"epochs": 3.0, "lr": 1e-3}])
    assert cal.trials[1].params == {"epochs": 3, "lr": 1e-3}


def test_a_warm_start_file_is_checked_before_it_is_read(mlp_model, class_split, tmp_path,
                                                        monkeypatch):
    def refused(path, match):
        with pytest.raises(uk.InvalidParameterError, match=match):
            uk.calibrate(mlp_model, class_split, "ssd", budget=None, max_trials=1,
                         warm_start=path)

    refused(tmp_path / "none.json", "does not exist")
    refused(tmp_path, "not a regular file")
    (tmp_path / "bad.json").write_bytes(b"{\xff")
    refused(tmp_path / "bad.json", "not UTF-8")
    (tmp_path / "cut.json").write_text('{"method": "ssd", "trials": [')
    refused(tmp_path / "cut.json", "is not JSON")
    (tmp_path / "list.json").write_text("[]")
    refused(tmp_path / "list.json", "not a calibration history")
    monkeypatch.setattr(C, "MAX_HISTORY_BYTES", 10)
    (tmp_path / "big.json").write_text('{"method": "ssd", "trials": []}')
    refused(tmp_path / "big.json", "more than the 10")


@pytest.mark.parametrize("kwargs, match", [
    ({"budget": None}, "needs a limit"),
    ({"budget": -1.0}, "positive fraction"),
    ({"budget_seconds": 0.0}, "positive number"),
    ({"budget": None, "max_trials": 0}, "positive int"),
])
def test_bad_limits_are_refused(mlp_model, class_split, kwargs, match):
    with pytest.raises(uk.InvalidParameterError, match=match):
        uk.calibrate(mlp_model, class_split, "ssd", **kwargs)


def test_refusals_name_the_problem(mlp_model, digits, class_split):
    with pytest.raises(uk.InvalidParameterError, match="validation set"):
        uk.calibrate(mlp_model, uk.split_by_class(digits, [3], validation=0), "ssd")
    with pytest.raises(uk.InvalidParameterError, match="nothing to calibrate"):
        uk.calibrate(mlp_model, class_split, "retrain")
    with pytest.raises(uk.InvalidParameterError, match="budget_seconds"):
        plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        uk.calibrate(plain, class_split, "ssd")


# ---------------------------------------------------------------------- the command line
def test_forget_calibrate_writes_the_model_and_its_history(mlp_model, tmp_path):
    ckpt = uk.save_checkpoint(mlp_model, tmp_path / "original.safetensors")
    out = tmp_path / "unlearned.safetensors"
    code, stdout, err = run("forget", "--checkpoint", ckpt, "--forget-class", "3",
                            "--method", "ssd", "--calibrate", "--max-trials", "3",
                            "--budget-seconds", "600", "--out", out, "--json",
                            "--no-relearn")
    assert code == 0, err
    result = json.loads(stdout)
    history = tmp_path / "unlearned.calibration.json"
    assert result["calibration"]["history"] == str(history)
    data = json.loads(history.read_text())
    assert len(data["trials"]) == result["calibration"]["trials"] == 3
    best = data["trials"][data["best_trial"]]
    assert {k: result["params"][k] for k in best["params"]} == pytest.approx(best["params"])
    model = uk.load_checkpoint(out)
    assert uk.get_info(model).verdict["outcome"] == result["verdict"]["outcome"]


def test_forget_warm_start_reads_an_earlier_searchs_history(mlp_model, tmp_path):
    ckpt = uk.save_checkpoint(mlp_model, tmp_path / "original.safetensors")
    first = tmp_path / "first.safetensors"
    code, _, err = run("forget", "--checkpoint", ckpt, "--forget-class", "3", "--method",
                       "ssd", "--calibrate", "--max-trials", "3", "--budget-seconds", "600",
                       "--out", first, "--json", "--no-relearn")
    assert code == 0, err
    earlier = json.loads((tmp_path / "first.calibration.json").read_text())
    best = earlier["trials"][earlier["best_trial"]]["params"]
    code, stdout, err = run("forget", "--checkpoint", ckpt, "--forget-class", "5", "--method",
                            "ssd", "--calibrate", "--max-trials", "2", "--budget-seconds",
                            "600", "--warm-start", tmp_path / "first.calibration.json",
                            "--out", tmp_path / "second.safetensors", "--no-relearn")
    assert code == 0, err
    assert "calibrated (warm-started): 2 trials" in stdout
    later = json.loads((tmp_path / "second.calibration.json").read_text())
    assert later["warm_start"][0] == best
    assert best in [t["params"] for t in later["trials"]]  # the defaults' or the next
    # a history of another method, or none, is refused before any work, in one line
    code, _, err = run("forget", "--checkpoint", ckpt, "--forget-class", "5", "--method",
                       "finetune", "--calibrate", "--warm-start",
                       tmp_path / "first.calibration.json", "--out", tmp_path / "x.safetensors")
    assert code == 2
    assert_one_error_line(err, "a search of 'ssd', not of 'finetune'")
    code, _, err = run("forget", "--checkpoint", ckpt, "--forget-class", "5", "--method",
                       "ssd", "--warm-start", tmp_path / "first.calibration.json",
                       "--out", tmp_path / "x.safetensors")
    assert code == 2
    assert_one_error_line(err, "--warm-start", "--calibrate")
    assert not (tmp_path / "x.safetensors").exists()


def test_calibration_limits_need_calibrate(mlp_model, tmp_path):
    ckpt = uk.save_checkpoint(mlp_model, tmp_path / "original.safetensors")
    code, _, err = run("forget", "--checkpoint", ckpt, "--forget-class", "3", "--method", "ssd",
                       "--budget", "0.5", "--out", tmp_path / "u.safetensors")
    assert code == 2
    assert_one_error_line(err, "--budget", "--calibrate")
    assert not (tmp_path / "u.safetensors").exists()


def test_trial_zero_is_the_defaults_even_where_they_are_resolved_at_run_time(mlp_model,
                                                                             class_split):
    """eu-k's lr and epochs default to None (the original's recipe): trial 0 leaves them to
    the method instead of sampling them, so it is the model `uk.unlearn` gives."""
    cal = uk.calibrate(mlp_model, class_split, "eu-k", budget=None, max_trials=1, seed=0)
    (first,) = cal.trials
    assert first.number == 0 and "lr" not in first.params and "epochs" not in first.params
    # the default k=3 is clipped into this two-layer model's space, k below its depth
    assert first.params["k"] == 1 and cal.space["k"]["choices"] == [1]
    plain = uk.unlearn(mlp_model, class_split, "eu-k", k=1, seed=0, verdict=False)
    for (name, a), (_, b) in zip(cal.model.state_dict().items(), plain.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name


def test_cf_k_and_eu_k_search_k_within_the_models_depth(digits, class_split, cnn_model):
    """k beyond the depth is the whole model whatever its value (and for eu-k, k equal to it a
    retraining from scratch, the `retrain` method): the search draws each configuration once."""
    mlp3 = uk.train_model(digits, arch="mlp", hidden=(16, 16), recipe=uk.Recipe(epochs=1),
                          seed=0)
    shallow = uk.train_model(digits, arch="mlp", hidden=(16,), recipe=uk.Recipe(epochs=1),
                             seed=0)
    linear = uk.train_model(digits, arch="mlp", hidden=(), recipe=uk.Recipe(epochs=1), seed=0)
    want = {  # (model, its depth): eu-k's k, cf-k's k
        "mlp3": (mlp3, {"low": 1, "high": 2}, {"low": 1, "high": 3}),
        "mlp2": (shallow, {"choices": (1,)}, {"low": 1, "high": 2}),
        "linear": (linear, {"low": 1, "high": 7}, {"choices": (1,)}),  # eu-k: a retrain anyway
        "cnn (6 layers)": (cnn_model, {"low": 1, "high": 5}, {"low": 1, "high": 6}),
    }
    for name, (model, eu, cf) in want.items():
        for method, k in (("eu-k", eu), ("cf-k", cf)):
            m = uk.get_method(method)
            got = m.search_space_for(type(m).search_space(), model, class_split.retain)["k"]
            assert {key: getattr(got, key) for key in k} == k, (name, method, got)
            # the rest of the space is the declared one (lr: under Adam, the test below)
            assert {n: s for n, s in m.search_space_for(type(m).search_space(), model,
                                                        class_split.retain).items()
                    if n not in ("k", "lr")} == {n: s for n, s in type(m).search_space().items()
                                                 if n not in ("k", "lr")}
    cal = uk.calibrate(mlp3, class_split, "eu-k", budget=None, max_trials=4, seed=0)
    assert cal.space["k"] == {"low": 1, "high": 2, "log": False, "choices": None}
    assert cal.trials[0].params["k"] == 2  # the default 3, clipped into the space
    assert {t.params["k"] for t in cal.trials} <= {1, 2}


def test_an_adam_learning_rate_is_searched_up_to_1e_2(mlp_model, cnn_model, class_split):
    """Adam moves every weight by about its learning rate per step: above 1e-2 it wrecks a
    trained model, so the searches under Adam stop there; under SGD they keep their range.
    cf-k and eu-k train with the original's optimiser unless given one."""
    def lr_high(method, model, **params):
        m = uk.get_method(method, **params)
        return m.search_space_for(type(m).search_space(), model, class_split.retain)["lr"].high

    assert type(uk.get_method("finetune")).search_space()["lr"].high == 0.1  # as declared
    for method in ("finetune", "perturb", "teacher", "fisher-mask"):  # Adam by default
        assert lr_high(method, mlp_model) == 0.01, method
        assert lr_high(method, mlp_model, optimizer="sgd") == 0.1, method
    assert lr_high("l1-sparse", mlp_model) == 0.1  # SGD by default
    assert lr_high("l1-sparse", mlp_model, optimizer="adamw") == 0.01
    assert uk.get_info(mlp_model).recipe["optimizer"] == "sgd"
    assert uk.get_info(cnn_model).recipe["optimizer"] == "adam"
    for method in ("cf-k", "eu-k"):
        assert lr_high(method, mlp_model) == 0.1, method
        assert lr_high(method, cnn_model) == 0.01, method
        assert lr_high(method, mlp_model, optimizer="adam") == 0.01, method
    cal = uk.calibrate(mlp_model, class_split, "finetune", budget=None, max_trials=6, seed=0)
    assert cal.space["lr"]["high"] == 0.01
    assert all(t.params["lr"] <= 0.01 for t in cal.trials)


def test_an_epoch_that_forgot_better_than_the_end_is_the_trials_result(mlp_model, class_split):
    """Early stopping by the verdict: an ascent at lr 0.01 forgets class 3 by its fourth epoch
    and goes on to lose utility in its fifth; the trial's result is the fourth epoch's model,
    bit for bit the model of the same method run for four epochs."""
    cal = uk.calibrate(mlp_model, class_split, "gradient-ascent", budget=None, max_trials=1,
                       lr=0.01, seed=0)
    (trial,) = cal.trials
    assert trial.params == {"epochs": 5}
    assert cal.stopped_at == trial.stopped_at == {"phase": "gradient-ascent: ascend",
                                                  "epoch": 4}
    end = uk.unlearn(mlp_model, class_split, "gradient-ascent", lr=0.01, epochs=5, seed=0,
                     verdict=False)
    four = uk.unlearn(mlp_model, class_split, "gradient-ascent", lr=0.01, epochs=4, seed=0,
                      verdict=False)
    v_end = uk.verdict(end, class_split, mlp_model)
    assert cal.verdict.outcome == "forgotten"
    assert C.objective_of(cal.verdict)[0] > C.objective_of(v_end)[0]
    for (k, a), b in zip(cal.model.state_dict().items(), four.state_dict().values(),
                         strict=True):
        assert torch.equal(a, b), k
    assert uk.get_info(cal.model).method["calibration"]["stopped_at"] == cal.stopped_at
    assert cal.to_dict()["stopped_at"] == cal.stopped_at


def test_an_epoch_that_forgot_is_kept_when_the_budget_runs_out_in_the_next(mlp_model,
                                                                            class_split,
                                                                            monkeypatch):
    """The ascent above forgets in its fourth epoch; here the budget runs out during its
    fifth (a clock that jumps 100 s once the fourth epoch has been judged), so the trial
    stops at the first optimiser step past the budget. The fourth epoch's model, judged
    before, is its result: before, a trial cut at the very end of the budget (the defaults,
    which may use all of it) was discarded whole, by chance of the last epoch's timing."""
    import time

    from unlearnkit import training as T

    real_clock, real_notify = time.perf_counter, T._notify
    offset = [0.0]

    def notify(phase, epoch, model):
        real_notify(phase, epoch, model)  # calibration's watcher judges the epoch first
        if epoch == 4:
            offset[0] = 100.0

    monkeypatch.setattr(time, "perf_counter", lambda: real_clock() + offset[0])
    monkeypatch.setattr(T, "_notify", notify)
    cal = uk.calibrate(mlp_model, class_split, "gradient-ascent", budget_seconds=60.0,
                       max_trials=1, lr=0.01, seed=0)
    (trial,) = cal.trials
    assert trial.state == "complete" and trial.outcome == "forgotten"
    assert cal.stopped_at == {"phase": "gradient-ascent: ascend", "epoch": 4}
    assert "stopped at its time limit after that epoch" in trial.note
    assert cal.seconds > 60.0  # past the budget by one step and a copy (and the jump)
    four = uk.unlearn(mlp_model, class_split, "gradient-ascent", lr=0.01, epochs=4, seed=0,
                      verdict=False)
    for (k, a), b in zip(cal.model.state_dict().items(), four.state_dict().values(),
                         strict=True):
        assert torch.equal(a, b), k


def test_without_a_better_epoch_the_trials_result_is_its_end(mlp_model, class_split):
    # at lr 0.1 no epoch of the ascent keeps the retained classes: nothing to stop at
    cal = uk.calibrate(mlp_model, class_split, "gradient-ascent", budget=None, max_trials=1,
                       lr=0.1, seed=0)
    assert cal.stopped_at is None and cal.trials[0].stopped_at is None
    end = uk.unlearn(mlp_model, class_split, "gradient-ascent", lr=0.1, epochs=5, seed=0,
                     verdict=False)
    for a, b in zip(cal.model.state_dict().values(), end.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_method_whose_model_changes_shape_mid_way_is_judged_at_its_end(mlp_model,
                                                                        class_split):
    # boundary expanding trains with an 11th (shadow) output and folds it back at the end:
    # its epochs cannot be judged, and its trials must still complete (they all failed before)
    cal = uk.calibrate(mlp_model, class_split, "boundary-expand", budget=None, max_trials=3,
                       seed=0)
    assert [t.state for t in cal.trials] == ["complete"] * 3
    assert all(t.stopped_at is None and t.outcome is not None for t in cal.trials)


def test_a_trial_that_fails_after_an_epoch_that_forgot_keeps_that_epoch(mlp_model,
                                                                        class_split,
                                                                        monkeypatch):
    """A method that fails late (an ascent whose loss runs away: NaN) after an epoch that
    forgot: the trial's result is that epoch's model, saying why, rather than nothing."""
    import unlearnkit.api as api

    real = api.unlearn

    def diverges_at_the_end(*args, **kwargs):
        real(*args, **kwargs)  # every epoch runs, and is judged
        raise uk.ModelError("The loss became nan at epoch 5: lower the learning rate.")

    monkeypatch.setattr(api, "unlearn", diverges_at_the_end)
    cal = uk.calibrate(mlp_model, class_split, "gradient-ascent", budget=None, max_trials=1,
                       lr=0.01, seed=0)
    (trial,) = cal.trials
    assert trial.state == "complete" and trial.outcome == cal.verdict.outcome == "forgotten"
    assert trial.stopped_at == {"phase": "gradient-ascent: ascend", "epoch": 4}
    assert "failed after that epoch" in trial.note and "nan" in trial.note
    monkeypatch.setattr(api, "unlearn", real)
    four = uk.unlearn(mlp_model, class_split, "gradient-ascent", lr=0.01, epochs=4, seed=0,
                      verdict=False)
    for a, b in zip(cal.model.state_dict().values(), four.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    info = uk.get_info(cal.model)
    assert info.method["name"] == "gradient-ascent" and info.method["params"]["lr"] == 0.01
    # without an epoch that forgot, the failure is the trial's end, as before
    monkeypatch.setattr(api, "unlearn", diverges_at_the_end)
    with pytest.raises(uk.InvalidParameterError, match="no trial finished"):
        uk.calibrate(mlp_model, class_split, "gradient-ascent", budget=None, max_trials=1,
                     lr=1e-5, seed=0)


def test_forget_calibrate_says_where_the_best_trial_stopped(mlp_model, tmp_path):
    ckpt = uk.save_checkpoint(mlp_model, tmp_path / "original.safetensors")
    args = ["forget", "--checkpoint", ckpt, "--forget-class", "3", "--method",
            "gradient-ascent", "--param", "lr=0.01", "--calibrate", "--max-trials", "1",
            "--budget-seconds", "600",
            "--no-relearn"]
    code, stdout, err = run(*args, "--out", tmp_path / "a.safetensors", "--json")
    assert code == 0, err
    result = json.loads(stdout)
    at = {"phase": "gradient-ascent: ascend", "epoch": 4}
    assert result["calibration"]["stopped_at"] == at
    assert json.loads((tmp_path / "a.calibration.json").read_text())["stopped_at"] == at
    code, stdout, err = run(*args, "--out", tmp_path / "b.safetensors")
    assert code == 0, err
    assert "best trial 0 (stopped at gradient-ascent: ascend epoch 4)" in stdout


# ---------------------------------------------------------------------- stalled trials
def _outputs(forget, validation=None) -> Outputs:
    return Outputs(forget=forget, retain=(forget[0][:0], forget[1][:0]), test=None,
                   validation=validation)


def test_distance_to_forgetting_by_hand():
    class_v = judge_class(forget_acc=1.0, heldout_forget_acc=None, n_heldout_forget=0,
                          heldout_retain_acc=0.9, original_heldout_retain_acc=0.9,
                          original_forget_acc=1.0)
    # 20 samples of class 0 whose margins (logit 0 minus the largest other) are 0.1 .. 2.0
    margins = torch.arange(1, 21, dtype=torch.float64) / 10
    logits = torch.stack([margins, torch.zeros(20), torch.full((20,), -5.0)], dim=1)
    labels = torch.zeros(20, dtype=torch.long)
    out = _outputs((logits, labels))
    expected = float(torch.quantile(margins, 0.95))  # the threshold is 0.05
    assert C.distance_to_forgetting(out, class_v) == pytest.approx(expected)
    # at most 5 % still classified right: there
    assert C.distance_to_forgetting(_outputs((-logits, labels)), class_v) == 0.0
    sample_v = judge_samples(forget_acc=1.0, n_forget=20, validation_acc=0.8, n_validation=20,
                             auc=0.7, original_forget_acc=1.0, original_validation_acc=0.8,
                             original_auc=0.7)
    two = torch.tensor([[0.0, 0.0]] * 3, dtype=torch.float64)  # loss log 2 each
    sure = torch.tensor([[5.0, 0.0], [4.0, 0.0], [3.0, 0.0]], dtype=torch.float64)
    y = torch.zeros(3, dtype=torch.long)
    out = _outputs((sure, y), (two, y))
    assert C.distance_to_forgetting(out, sample_v) == pytest.approx(
        math.log(2) - math.log1p(math.exp(-4.0)))


def test_a_trial_stalls_when_its_pace_cannot_reach_forgetting_in_time():
    # (seconds, distance) after each judged epoch of a phase; the limit is at 10 s
    assert not C._stalled([(1, 1.0), (2, 1.0)], 10.0)  # too early to tell
    assert C._stalled([(1, 1.0), (2, 1.0), (3, 1.0)], 10.0)  # no progress
    assert C._stalled([(1, 1.0), (2, 0.99), (3, 0.98)], 10.0)  # 0.01/s: 98 s more
    # 0.1/s: the 0.8 left takes 8 s more, there at 11 s: past a limit at 10 s, not at 12 s
    assert C._stalled([(1, 1.0), (2, 0.9), (3, 0.8)], 10.0)
    assert not C._stalled([(1, 1.0), (2, 0.9), (3, 0.8)], 12.0)
    assert not C._stalled([(1, 1.0), (2, 0.9), (3, 0.6)], 10.0)  # the last pace gets there
    assert not C._stalled([(1, 1.0), (2, 0.99), (3, 0.5)], 10.0)  # the last pace gets there
    # an ascent speeding up: not there at the last pace (0.02/s), but twice the one before
    assert not C._stalled([(1, 1.0), (2, 0.99), (3, 0.97)], 10.0)
    assert C._stalled([(1, 1.0), (2, 0.98), (3, 0.97)], 10.0)  # slowing down
    assert C._stalled([(1, 1.0), (2, 0.98), (3, 0.958)], 10.0)  # hardly faster (1.1x)
    assert not C._stalled([(1, 1.0), (2, 1.0), (3, 0.0)], 10.0)  # there
    assert C._stalled([(1, 1.0), (2, 1.2), (3, 1.4)], 10.0)  # moving away


def test_defaults_that_cannot_forget_in_the_budget_stall_and_leave_it_to_other_trials(
        mlp_model, class_split):
    # at lr 1e-7 fine-tuning hardly changes the model: trial 0 (its 5 default epochs) stalls
    # at its third epoch; at that pace it would take minutes to forget (measured: about
    # 170 s on the project's CPU), against a budget of 5 s
    epochs = []
    real = C._stalled

    def spy(history, stop_at):
        epochs.append(len(history))
        return real(history, stop_at)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(C, "_stalled", spy)
        cal = uk.calibrate(mlp_model, class_split, "finetune", budget_seconds=5.0,
                           max_trials=1, lr=1e-7, seed=0)
    (trial,) = cal.trials
    assert trial.params == {"epochs": 5}
    assert trial.state == "stalled" and trial.note == C.STALLED
    assert epochs == [1, 2, 3]
    # its result is the model at the epoch it stopped at, judged: bit for bit three epochs
    assert trial.stopped_at == cal.stopped_at == {"phase": "finetune: fine-tune", "epoch": 3}
    assert trial.outcome == cal.verdict.outcome == "not forgotten"
    three = uk.unlearn(mlp_model, class_split, "finetune", lr=1e-7, epochs=3, seed=0,
                       verdict=False)
    for a, b in zip(cal.model.state_dict().values(), three.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # without a budget there is no time limit to forecast against: the trial runs to its end
    cal = uk.calibrate(mlp_model, class_split, "finetune", budget=None, max_trials=1, lr=1e-7,
                       seed=0)
    assert cal.trials[0].state == "complete"


def test_an_ascent_that_starts_slowly_is_not_stalled(mlp_model, class_split):
    # the ascent at lr 0.01 forgets class 3 by its fourth epoch (see above) after a slow
    # start: with a budget, where the stall forecast runs, the result is the same
    cal = uk.calibrate(mlp_model, class_split, "gradient-ascent", budget_seconds=600.0,
                       max_trials=1, lr=0.01, seed=0)
    assert cal.trials[0].state == "complete"
    assert cal.stopped_at == {"phase": "gradient-ascent: ascend", "epoch": 4}


def test_a_trials_warnings_are_its_note(mlp_model, class_split, recwarn):
    # EU-k with k=3 held fixed on a model of two layers warns that it retrains the whole
    # model: said in the trial's note, not on the search's output
    cal = uk.calibrate(mlp_model, class_split, "eu-k", k=3, budget=None, max_trials=1)
    (trial,) = cal.trials
    assert "k" not in trial.params and cal.params["k"] == 3
    assert trial.note is not None and ("warning: eu-k: k=3 re-initialises every parameterised "
                                       "layer of this model (2)") in trial.note
    assert not [w for w in recwarn if "parameterised layer" in str(w.message)]


def test_a_diverging_trial_stops_at_the_epoch_its_outputs_become_non_finite(
        mlp_model, class_split, monkeypatch):
    """An ascent whose weights overflow at an epoch's end, its last batch's loss still finite
    (so the training loop did not stop it): the trial fails there, saying so, rather than
    the metrics reading infinite logits, and no later epoch runs."""
    import unlearnkit.api as api
    from unlearnkit.training import epoch_end

    ends = []

    def overflows(model, split, method, **kwargs):
        net = copy.deepcopy(model)
        for epoch in range(1, 4):
            ends.append(epoch)
            if epoch == 2:
                with torch.no_grad():
                    net.net[-1].weight.fill_(math.inf)
            epoch_end("ascend", epoch, net)
        return net

    monkeypatch.setattr(api, "unlearn", overflows)
    with pytest.raises(uk.InvalidParameterError, match=r"\(1 failed\)") as info:
        uk.calibrate(mlp_model, class_split, "gradient-ascent", budget=None, max_trials=1,
                     seed=0)
    (trial,) = info.value.trials
    assert trial.state == "failed"
    assert trial.note == ("The model's outputs became non-finite at ascend epoch 2: lower the "
                          "learning rate.")
    assert ends == [1, 2]


def test_influence_computes_its_gradients_once_per_search(mlp_model, class_split, monkeypatch):
    """The issue's reuse: what influence computes from the original and the data alone (its
    WoodFisher gradients, their Gram matrix, the gradient difference) is computed by the
    first trial only, and every trial's model is still bit for bit the method's own."""
    from unlearnkit.methods.influence import Influence

    passes = []
    real = Influence._woodfisher_samples

    def counted(self, *args, **kwargs):
        passes.append(self.damping)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Influence, "_woodfisher_samples", counted)
    cal = uk.calibrate(mlp_model, class_split, "influence", budget=None, max_trials=4, seed=0)
    assert [t.state for t in cal.trials] == ["complete"] * 4
    assert len(passes) == 1
    alone = uk.unlearn(mlp_model, class_split, "influence", seed=0, verdict=False,
                       **cal.params)
    assert len(passes) == 2  # outside a search nothing is kept
    for a, b in zip(cal.model.state_dict().values(), alone.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_what_the_first_trial_computed_for_all_does_not_count_against_the_next(
        mlp_model, class_split, monkeypatch):
    """SSD's first trial computes I_D (here made to take 2 s more) and stores it; the next
    trials read it back. Less than the first trial's time is left after it, yet trials go on:
    a trial is judged to cost its time less what it computed once for the search."""
    import time

    import unlearnkit.methods.ssd as ssd
    from unlearnkit.importance.cache import cache_use
    from unlearnkit.training import data_size

    real = ssd.importance_sums
    slow = []

    def slow_retain_pass(model, data, **kwargs):
        if data_size(data) > 1000:  # D_r (1291 samples), not D_f (146)
            slow.append(1)
            time.sleep(2.0)
        return real(model, data, **kwargs)

    monkeypatch.setattr(ssd, "importance_sums", slow_retain_pass)
    with cache_use(read=False):  # pay the cold cost, whatever the cache holds
        cal = uk.calibrate(mlp_model, class_split, "ssd", budget_seconds=3.0, seed=0)
    assert cal.trials[0].seconds > 2.0 and len(cal.trials) > 1
    assert len(slow) == 1
    assert cal.seconds <= 3.0 + 0.05  # the budget, give or take the sampler's bookkeeping


def test_a_search_that_cannot_forget_does_no_harm():
    def trial(number, outcome, value, seconds=1.0):
        return C.CalibrationTrial(number, {}, "complete", value, outcome, seconds=seconds)

    ruined = trial(0, "utility lost", 0.11)  # forgot by wrecking the rest: shortfall 0
    unchanged = trial(1, "not forgotten", -2.8)
    partial = trial(2, "partial", 0.5)
    forgotten = trial(3, "forgotten", -0.1)
    assert max([ruined, unchanged], key=C._rank) is unchanged
    assert max([ruined, unchanged, partial], key=C._rank) is partial
    assert max([ruined, unchanged, partial, forgotten], key=C._rank) is forgotten
    assert max([ruined], key=C._rank) is ruined  # when every trial ruined it
    # ties: the faster
    assert max([trial(4, "forgotten", 0.9, 2.0), trial(5, "forgotten", 0.9, 1.0)],
               key=C._rank).number == 5


def test_a_trial_stops_mid_epoch_at_its_time_limit(mlp_model, class_split, monkeypatch):
    """An epoch longer than the whole budget (batches of one: 1,291 steps) is not run to its
    end: the trial stops at the first optimiser step past its limit, inside epoch 1, and is
    over budget. (A clock that advances 1 s per reading: each step reads it once.)"""
    from unlearnkit import training as T

    now = [0.0]

    def tick() -> float:
        now[0] += 1.0
        return now[0]

    ends = []
    real = T._notify

    def notify(phase, epoch, model):
        ends.append(epoch)
        real(phase, epoch, model)

    monkeypatch.setattr(C.time, "perf_counter", tick)
    monkeypatch.setattr(T, "_notify", notify)
    with pytest.raises(uk.InvalidParameterError, match=r"\(1 over budget\)") as info:
        uk.calibrate(mlp_model, class_split, "finetune", budget_seconds=100.0, max_trials=1,
                     lr=1e-6, batch_size=1, seed=0)
    (trial,) = info.value.trials
    assert trial.state == "over budget"
    assert ends == [0]  # started, and stopped before its first epoch's end
    assert 100.0 <= trial.seconds < 120.0  # about at the limit, not 1,291 readings past it
