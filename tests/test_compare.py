"""The comparison job (library and ``unlearnkit compare``) on a tiny setting."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
from pathlib import Path

import pytest
from torch import nn

import unlearnkit as uk
from unlearnkit.cli import main
from unlearnkit.compare import (
    DIRECTION_LEGEND,
    compare_methods,
    format_table,
    jsonable,
    refusal,
    scenario_label,
)
from unlearnkit.methods import METHODS, Request, UnlearningMethod
from unlearnkit.metrics.verdict import OUTCOMES

ROW_KEYS = {"scenario", "scenario_kind", "split", "method", "status", "params", "reason",
            "warnings", "checkpoint"}
METRIC_KEYS = {"retain_acc", "forget_acc", "test_acc", "forget_acc_gap", "seconds",
               "retrain_seconds", "speedup"}
CLASS_KEYS = {"test_retain_acc", "test_forget_acc"}


@pytest.fixture(scope="module")
def tiny_original(digits) -> nn.Module:
    return uk.train_model(digits, arch="mlp", hidden=(16,), recipe=uk.Recipe(epochs=2), seed=0)


@pytest.fixture(scope="module")
def rows(digits, tiny_original, tmp_path_factory) -> list[dict]:
    """Every registered method, both default scenarios, checkpoints saved."""
    out = tmp_path_factory.mktemp("compare")
    return compare_methods(digits, original=tiny_original, seed=0, out_dir=out)


def test_rows_cover_every_method_and_scenario(rows):
    assert [r["scenario"] for r in rows[:: len(METHODS) + 1]] == ["class 3", "random 10%"]
    for scenario in ("class 3", "random 10%"):
        group = [r for r in rows if r["scenario"] == scenario]
        assert [r["method"] for r in group][:2] == ["original", "retrain"]
        assert {r["method"] for r in group} == {"original", *METHODS.names()}
        for r in group:
            assert set(r) >= ROW_KEYS | METRIC_KEYS | CLASS_KEYS  # one schema for every row
            if r["status"] in ("ok", "original"):
                expected = {"retain_acc", "forget_acc", "test_acc", "forget_acc_gap",
                            "retrain_seconds", "mia_loss_cv", "mia_entropy", "mia_confidence",
                            "js_divergence", "activation_distance", "zrf", "avg_gap",
                            "anamnesis", "verdict"}
                assert r["verdict"] in OUTCOMES
                if scenario.startswith("class"):
                    expected |= CLASS_KEYS
                if r["status"] == "ok":
                    expected |= {"seconds", "speedup"}
                assert all(r[k] is not None for k in expected), r
            else:
                assert r["status"] in ("skipped", "failed") and r["reason"]
            if not scenario.startswith("class"):
                assert r["test_forget_acc"] is None


def test_retrain_row_is_a_fresh_retraining_judged_like_a_method(rows, tiny_original):
    for r in rows:
        if r["method"] == "retrain":
            # another seed than the reference: close to it, but not the same model
            assert 0.0 < r["js_divergence"] < 0.1 and r["speedup"] > 0
            if r["scenario_kind"] == "class":
                assert r["forget_acc"] == 0.0 and r["test_forget_acc"] == 0.0
                assert r["forget_acc_gap"] == 0.0
            assert uk.get_info(uk.load_checkpoint(r["checkpoint"])).method["seed"] == 1
        if r["method"] == "original":
            assert r["seconds"] is None and r["params"] is None
            assert r["forget_acc"] > 0.3  # the original still knows class 3


def test_refusals_are_read_from_declared_attributes(rows):
    for r in rows:
        if r["method"] == "original":
            continue
        cls = METHODS.get(r["method"])
        refused = r["scenario_kind"] not in cls.scenarios and cls.other_scenarios == "refuse"
        assert (r["status"] == "skipped") == refused, r
        if r["scenario_kind"] not in cls.scenarios and cls.other_scenarios == "warn":
            assert any("designed for" in w for w in r["warnings"])  # the warning is kept


def test_results_json_and_checkpoints(rows):
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok and all(r["checkpoint"] for r in ok)
    path = uk.load_checkpoint(ok[-1]["checkpoint"])
    assert uk.get_info(path).method["name"] == ok[-1]["method"]
    folder = Path(ok[0]["checkpoint"]).parent.parent
    saved = json.loads((folder / "results.json").read_text())
    assert saved["dataset"] == "digits" and len(saved["rows"]) == len(rows)
    assert (folder / "original.safetensors").is_file()


def test_format_table(rows):
    text = format_table(rows)
    assert text.count("Scenario: ") == 2
    assert "forget_acc_gap↓" in text and "test_forget_acc≈" in text
    assert text.rstrip().endswith(DIRECTION_LEGEND)  # the marks explained
    assert text.count("mia_entropy≈") == 2 and "anamnesis≈" in text  # the forgetting tables
    assert text.count("mia_entropy_power") == 2  # the power checks, named as in the JSON
    assert " F " not in text  # no pools, no competition columns
    assert text.count("closest to the retrained model (avg_gap): ") == 2
    # the verdict column: each judged row's outcome on its line
    assert text.count(" verdict") == 2
    blocks = dict(zip(("class 3", "random 10%"), text.split("Scenario: ")[1:], strict=True))
    for r in rows:
        if r["status"] in ("ok", "original"):
            line = next(x for x in blocks[r["scenario"]].splitlines()
                        if x.startswith(r["method"] + " "))
            assert line.rstrip().endswith(r["verdict"]), (line, r["verdict"])
    for name in ("original", *METHODS.names()):
        assert name in text


def test_closest_to_retraining_ranks_by_avg_gap(rows):
    from unlearnkit.compare import closest_to_retraining

    for scenario in ("class 3", "random 10%"):
        ranked = closest_to_retraining([r for r in rows if r["scenario"] == scenario])
        gaps = [r["avg_gap"] for r in ranked]
        assert gaps == sorted(gaps) and len(ranked) >= 3
        assert not {"original", "retrain"} & {r["method"] for r in ranked}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClassOnly(UnlearningMethod):
    """A method for class unlearning only (not registered)."""

    name = "class-only"
    paper = "none"
    summary = "returns the model unchanged"
    scenarios = ("class",)
    other_scenarios = "refuse"

    def _unlearn(self, model: nn.Module, request: Request) -> nn.Module:
        return model



def test_refusing_method_is_skipped_with_reason(digits, tiny_original, monkeypatch):
    monkeypatch.setitem(METHODS._items, "class-only", ClassOnly)
    assert refusal(ClassOnly, "random") == "designed for class unlearning only"
    assert refusal(ClassOnly, "class") is None
    rows = compare_methods(digits, original=tiny_original, methods=["class-only"],
                           scenarios=[uk.split_random(digits, count=30, seed=0)])
    assert [(r["method"], r["status"]) for r in rows] == [("original", "original"),
                                                         ("class-only", "skipped")]
    assert rows[1]["reason"] == "designed for class unlearning only"
    assert "skipped: designed for class unlearning only" in format_table(rows)


def test_params_and_method_names_are_checked(digits, tiny_original):
    with pytest.raises(uk.UnknownNameError, match="Did you mean 'finetune'"):
        compare_methods(digits, original=tiny_original, methods=["fintune"])
    with pytest.raises(uk.InvalidParameterError, match="not compared"):
        compare_methods(digits, original=tiny_original, methods=["finetune"],
                        params={"perturb": {"beta": 0.1}})
    with pytest.raises(uk.InvalidParameterError, match="Did you mean 'lr'"):
        compare_methods(digits, original=tiny_original, methods=["finetune"],
                        params={"finetune": {"lrr": 0.1}})


def test_scenario_labels(digits):
    assert scenario_label(uk.split_by_class(digits, [3, 5])) == "classes 3,5"
    assert scenario_label(uk.split_random(digits, fraction=0.1)) == "random 10%"
    assert scenario_label(uk.split_random(digits, count=20)) == "random 20 samples"
    assert scenario_label(uk.split_indices(digits, [1, 2, 3])) == "indices (3 samples)"


def test_jsonable_gives_valid_json():
    obj = {"a": math.nan, "b": [math.inf, 1.5, (2, 3)], "c": None, "d": True}
    text = json.dumps(jsonable(obj), allow_nan=False)
    assert json.loads(text) == {"a": None, "b": [None, 1.5, [2, 3]], "c": None, "d": True}


def test_cli_compare_json(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    argv = ["compare", "--data", "digits", "--model", "mlp", "--model-arg", "hidden=16",
            "--epochs", "2", "--methods", "retrain,finetune", "--param", "finetune.lr=1e-3",
            "--forget-class", "3", "--forget-count", "25", "--out-dir", str(tmp_path / "run"),
            "--json"]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    assert code == 0, err.getvalue()
    res = json.loads(out.getvalue())
    assert res["dataset"] == "digits" and res["arch"] == "mlp"
    assert [(r["scenario"], r["method"]) for r in res["rows"]] == [
        ("class 3", "original"), ("class 3", "retrain"), ("class 3", "finetune"),
        ("random 25 samples", "original"), ("random 25 samples", "retrain"),
        ("random 25 samples", "finetune"),
    ]
    ft = res["rows"][2]
    assert ft["params"]["lr"] == 1e-3 and set(ft) >= METRIC_KEYS | CLASS_KEYS
    assert res["rows"][1]["forget_acc"] == 0.0
    assert (tmp_path / "run" / "results.json").is_file()
    assert "[class 3] finetune" in err.getvalue()  # progress goes to stderr


def test_cli_compare_bad_param(tmp_path):
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(["compare", "--data", "digits", "--param", "alpha=3"])
    assert code == 2 and "method.key=value" in err.getvalue()


def test_cli_compare_from_checkpoint(digits, tiny_original, tmp_path):
    ckpt = uk.save_checkpoint(tiny_original, tmp_path / "original.safetensors")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["compare", "--checkpoint", str(ckpt), "--methods", "finetune",
                     "--forget-count", "20", "--epochs", "50", "--json"])
    assert code == 0, err.getvalue()
    res = json.loads(out.getvalue())
    assert res["dataset"] == "digits" and res["arch"] == "mlp"  # both read from the checkpoint
    assert [r["method"] for r in res["rows"]] == ["original", "finetune"]
    assert "--epochs ignored" in err.getvalue()


def test_pools_add_the_competition_figures(digits, tiny_original):
    split = uk.split_random(digits, count=30, seed=2)
    rows = compare_methods(digits, original=tiny_original, scenarios=[split],
                           methods=["retrain", "finetune"], n_models=3, relearn=False,
                           params={"finetune": {"epochs": 1}})
    assert [r["method"] for r in rows] == ["original", "retrain", "finetune"]
    for r in rows:
        assert r["n_models"] == 3 and 0.0 <= r["forgetting_quality"] <= 1.0
        assert 0.0 <= r["mia_lira"] <= 1.0 and r["anamnesis"] is None
    text = format_table(rows)
    assert "pools of 3 models" in text and "mia_lira" in text
