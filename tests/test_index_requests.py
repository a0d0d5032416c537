"""A user's own request, listed by sample index (issue 15): `compare --forget-indices` and a
bench scenario `indices`, both named `indices` in their output, and `evaluate` rebuilding the
request from the checkpoint's record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import unlearnkit as uk
from _cli import assert_one_error_line, run
from unlearnkit.bench import expand, load_config, parse_config, read_rows, run_plan

ERASE = "# one user's samples\n0, 5, 17\n42\n100 101 102\n"


def run_json(*argv) -> dict:
    code, out, err = run(*argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_an_index_split_is_named_indices_and_keeps_its_samples(digits):
    split = uk.split_indices(digits, [42, 0, 5])
    assert split.scenario == "random"  # the methods see listed samples as samples
    assert split.description["scenario"] == "indices"
    assert split.description["indices"] == [0, 5, 42] and split.description["n_forget"] == 3
    assert uk.compare.scenario_label(split) == "indices (3 samples)"


@pytest.mark.slow
def test_compare_takes_index_files_each_its_own_request(tmp_path):
    (tmp_path / "a.txt").write_text(ERASE)
    (tmp_path / "b.json").write_text("[7, 8]")
    res = run_json("compare", "--data", "digits", "--model", "mlp", "--epochs", "2",
                   "--forget-indices", tmp_path / "a.txt", "--forget-indices",
                   tmp_path / "b.json", "--methods", "retrain,finetune,unsir", "--no-relearn")
    by = {}
    for r in res["rows"]:
        by.setdefault(r["scenario"], {})[r["method"]] = r
    assert set(by) == {"indices (7 samples)", "indices (2 samples)"}
    for label, n in (("indices (7 samples)", 7), ("indices (2 samples)", 2)):
        rows = by[label]
        assert {r["scenario_kind"] for r in rows.values()} == {"indices"}
        assert rows["finetune"]["status"] == "ok" and rows["retrain"]["status"] == "ok"
        assert rows["finetune"]["split"]["n_forget"] == n
        # a class-only method refuses a listed request as it refuses random samples
        assert rows["unsir"]["status"] == "skipped" and "class" in rows["unsir"]["reason"]
    assert by["indices (2 samples)"]["finetune"]["split"]["indices"] == [7, 8]


def test_compare_refuses_a_bad_index_file_in_one_line(tmp_path):
    (tmp_path / "bad.txt").write_text("0\n5\n99999\n")
    code, _, err = run("compare", "--data", "digits", "--forget-indices", tmp_path / "bad.txt",
                       "--methods", "finetune")
    assert code == 2
    assert_one_error_line(err, "out of range", "99999")


def test_evaluate_rebuilds_an_index_request_from_the_checkpoint(tmp_path):
    original = tmp_path / "original.safetensors"
    run_json("train", "--data", "digits", "--model", "mlp", "--model-arg", "hidden=16",
             "--epochs", "2", "--out", original)
    (tmp_path / "erase.txt").write_text(ERASE)
    out = tmp_path / "erased.safetensors"
    res = run_json("forget", "--checkpoint", original, "--forget-indices",
                   tmp_path / "erase.txt", "--method", "finetune", "--out", out)
    assert res["split"]["scenario"] == "indices" and res["split"]["n_forget"] == 7
    ev = run_json("evaluate", "--checkpoint", out)  # no --forget-indices: from its record
    assert ev["split"]["n_forget"] == 7 and ev["split"]["indices"] == [0, 5, 17, 42, 100,
                                                                       101, 102]
    assert ev["split"]["forget_sha256"] == res["split"]["forget_sha256"]


# ---------------------------------------------------------------------- bench
CONFIG = """\
dataset: digits
model: {arch: mlp, kwargs: {hidden: [16]}}
recipe: {epochs: 2}
scenarios: {indices: [erase.txt], classes: [[3]]}
methods: {retrain: {}, finetune: {epochs: 1}, unsir: {}}
seeds: [0]
relearn: false
mia: false
"""


def test_a_bench_index_scenario_is_read_relative_to_the_config_and_keyed_by_content(
        tmp_path):
    (tmp_path / "erase.txt").write_text(ERASE)
    (tmp_path / "c.yaml").write_text(CONFIG)
    cfg = load_config(tmp_path / "c.yaml")
    (scenario,) = [s for s in cfg.scenarios if s.kind == "indices"]
    assert scenario.indices == (0, 5, 17, 42, 100, 101, 102)
    assert scenario.label == "indices erase (7 samples)" and scenario.method_kind == "random"
    plan = expand(cfg)
    runs = [r for r in plan.runs if r.scenario.kind == "indices"]
    assert {r.method: r.refused is not None for r in runs} == {
        "original": False, "retrain": False, "finetune": False, "unsir": True}
    # the same indices elsewhere, in another order: the same runs
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mine.json").write_text("[102, 101, 100, 42, 17, 5, 0]")
    moved = parse_config({**_yaml(CONFIG), "scenarios": {"indices": ["other/mine.json"],
                                                         "classes": [[3]]}}, base=tmp_path)
    assert ({r.run_id for r in expand(moved).runs} == {r.run_id for r in plan.runs})


def _yaml(text: str) -> dict:
    import yaml

    return yaml.safe_load(text)


@pytest.mark.parametrize("value, words", [
    (["missing.txt"], "scenarios.indices[0]"),
    (["empty.txt"], "holds no index"),
    ([3], "the path of a file"),
    ("erase.txt", "a non-empty list"),
])
def test_bad_index_scenarios_are_refused_naming_the_key(tmp_path, value, words):
    (tmp_path / "empty.txt").write_text("# nothing\n")
    raw = {**_yaml(CONFIG), "scenarios": {"indices": value}}
    with pytest.raises(uk.InvalidParameterError, match=words.replace("[", r"\[")):
        parse_config(raw, base=tmp_path)


@pytest.mark.slow
def test_a_bench_runs_an_index_scenario_and_stores_it_as_indices(tmp_path):
    (tmp_path / "erase.txt").write_text(ERASE)
    (tmp_path / "c.yaml").write_text(CONFIG.replace(", classes: [[3]]", ""))
    db = tmp_path / "r.sqlite"
    summary = run_plan(expand(load_config(tmp_path / "c.yaml")), db, workers=1)
    assert summary["failed"] == 0
    rows = read_rows(db)
    assert {r["scenario"] for r in rows} == {"indices erase (7 samples)"}
    assert {r["scenario_kind"] for r in rows} == {"indices"}
    ok = {r["method"] for r in rows if r["status"] == "ok"}
    assert ok == {"original", "retrain", "finetune"}
    finetune = next(r for r in rows if r["method"] == "finetune")
    assert finetune["spec"]["scenario"] == {"kind": "indices", "n": 7,
                                            "sha256": finetune["spec"]["scenario"]["sha256"]}
    assert Path(db).is_file()
