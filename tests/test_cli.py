"""The command line, through ``--json`` as a script would use it.

Most commands run in-process through ``unlearnkit.cli.main`` (fast); two run as
``python -m unlearnkit`` subprocesses to check the entry point, the exit code and that an error
is one line with no traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import unlearnkit as uk
from _cli import assert_one_error_line, run

MIAS = {"mia_loss_cv", "mia_entropy", "mia_confidence"}
METRICS_CLASS = {"retain_acc", "forget_acc", "test_acc", "test_retain_acc", "test_forget_acc",
                 "seconds", "zrf", "probe_forget_acc"} | MIAS | {f"{m}_power" for m in MIAS}
WITH_REFERENCE = {"retrain_seconds", "speedup", "js_divergence", "activation_distance",
                  "avg_gap", "cka_retrained"}


def run_json(*argv: str | os.PathLike) -> dict:
    code, out, err = run(*argv, "--json")
    assert code == 0, err
    return json.loads(out)  # exactly one JSON object: json.loads refuses trailing text


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A folder with an original MLP (3 epochs) and its retrained reference for class 3."""
    d = tmp_path_factory.mktemp("cli")
    res = run_json("train", "--data", "digits", "--model", "mlp", "--model-arg", "hidden=32",
                   "--epochs", "3", "--seed", "0", "--out", d / "original.safetensors")
    assert res["metrics"]["test_acc"] > 0.5
    run_json("forget", "--checkpoint", d / "original.safetensors", "--data", "digits",
             "--forget-class", "3", "--method", "retrain", "--out", d / "retrained.safetensors")
    return d


def test_train_json_and_checkpoint_provenance(work):
    info = uk.models.read_checkpoint_info(work / "original.safetensors")
    assert info.arch == "mlp" and info.arch_kwargs == {"hidden": [32]}
    assert info.dataset["name"] == "digits" and info.recipe["epochs"] == 3
    assert info.num_classes == 10 and info.input_shape == (1, 8, 8)


def test_forget_evaluate_round_trip(work):
    out = work / "unlearned.safetensors"
    res = run_json("forget", "--checkpoint", work / "original.safetensors", "--data", "digits",
                   "--forget-class", "3", "--method", "finetune", "--param", "lr=1e-3",
                   "--param", "epochs=2", "--retrained", work / "retrained.safetensors",
                   "--out", out)
    assert res["method"] == "finetune" and res["params"]["lr"] == 1e-3
    assert res["params"]["epochs"] == 2
    assert res["split"]["scenario"] == "class" and res["split"]["classes"] == [3]
    assert res["out"] == str(out) and out.is_file()
    assert set(res["metrics"]) == (METRICS_CLASS | WITH_REFERENCE | {"anamnesis", "cka_original"}
                                   | {f"{m}_separation" for m in MIAS})
    assert all(isinstance(v, float) for v in res["metrics"].values())

    info = uk.models.read_checkpoint_info(out)
    assert info.method["name"] == "finetune" and info.method["params"]["lr"] == 1e-3
    assert info.split["classes"] == [3]

    # evaluate rebuilds the recorded forget request when no split option is given
    ev = run_json("evaluate", "--checkpoint", out, "--retrained", work / "retrained.safetensors")
    assert ev["split"]["classes"] == [3] and ev["method"]["name"] == "finetune"
    for key in ("retain_acc", "forget_acc", "test_acc", "test_retain_acc", "test_forget_acc"):
        assert ev["metrics"][key] == pytest.approx(res["metrics"][key])

    # ... and measures any other request it is given
    ev = run_json("evaluate", "--checkpoint", work / "original.safetensors",
                  "--forget-fraction", "0.1", "--split-seed", "1")
    assert set(ev["metrics"]) == ({"retain_acc", "forget_acc", "test_acc", "seconds", "zrf"}
                                  | MIAS | {f"{m}_power" for m in MIAS})
    assert ev["metrics"]["seconds"] is None  # an original has no unlearning step to time
    assert ev["split"]["scenario"] == "random" and ev["split"]["seed"] == 1


def test_retrained_model_forgets_the_class(work):
    ev = run_json("evaluate", "--checkpoint", work / "retrained.safetensors")
    assert ev["metrics"]["forget_acc"] == 0.0 and ev["metrics"]["test_forget_acc"] == 0.0


def test_text_output(work):
    code, out, _ = run("evaluate", "--checkpoint", work / "retrained.safetensors")
    assert code == 0 and "class 3" in out and "forget_acc" in out


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--method", "fintune"], ["Unknown method 'fintune'", "Did you mean 'finetune'?",
                                   "Valid methods:"]),
        (["--method", "finetune", "--param", "lrr=0.1"],
         ["no parameter 'lrr'", "Did you mean 'lr'?", "Valid parameters:"]),
        (["--method", "finetune", "--param", "lr=fast"], ["'lr'", "must be a float"]),
        (["--method", "finetune", "--param", "lr"], ["key=value"]),
        (["--method", "finetune", "--param", "lr=-1"], ["'lr'", "range"]),
    ],
)
def test_bad_method_or_parameter(work, args, fragments):
    out = work / "never.safetensors"
    code, stdout, err = run("forget", "--checkpoint", work / "original.safetensors",
                            "--forget-class", "3", "--out", out, *args)
    assert code == 2 and stdout == ""
    assert_one_error_line(err, *fragments)
    assert not out.exists()


@pytest.mark.parametrize(
    ("split", "fragments"),
    [
        (["--forget-class", "12"], ["Unknown class 12", "0-9"]),
        (["--forget-class", "three"], ["Unknown class 'three'"]),
        (["--forget-fraction", "1.5"], ["'fraction'", "(0, 1)"]),
        (["--forget-count", "0"], ["'count'"]),
        (["--forget-indices", "missing.txt"], ["not found"]),
    ],
)
def test_bad_forget_request(work, split, fragments):
    out = work / "never.safetensors"
    code, _, err = run("forget", "--checkpoint", work / "original.safetensors",
                       "--method", "finetune", "--out", out, *split)
    assert code == 2
    assert_one_error_line(err, *fragments)
    assert not out.exists()
    assert not list(work.glob(".never*"))  # no temporary file left either


def test_forget_indices_file(work, tmp_path):
    idx = tmp_path / "erase.txt"
    idx.write_text("# one user's samples\n0, 5, 17\n42\n")
    res = run_json("forget", "--checkpoint", work / "original.safetensors", "--forget-indices",
                   idx, "--method", "finetune", "--out", tmp_path / "u.safetensors")
    assert res["split"]["n_forget"] == 4 and res["split"]["source"] == "indices"


def test_missing_and_corrupt_checkpoints(work, tmp_path):
    code, _, err = run("forget", "--checkpoint", tmp_path / "nope.safetensors",
                       "--forget-class", "3", "--method", "finetune",
                       "--out", tmp_path / "u.safetensors")
    assert code == 2
    assert_one_error_line(err, "Checkpoint not found", "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    code, _, err = run("evaluate", "--checkpoint", bad, "--forget-class", "3")
    assert code == 2
    assert_one_error_line(err, "not a valid safetensors checkpoint")
    assert not (tmp_path / "u.safetensors").exists()


def test_checkpoint_must_match_the_data(work, tmp_path):
    code, _, err = run("evaluate", "--checkpoint", work / "original.safetensors",
                       "--data", "mnist", "--forget-class", "3")
    assert code == 2
    assert_one_error_line(err, "trained on 'digits', not 'mnist'")
    code, _, err = run("evaluate", "--checkpoint", work / "original.safetensors",
                       "--forget-class", "3", "--data-option", "test_size=0.3")
    assert code == 2
    assert_one_error_line(err, "test_size=0.2, not 0.3")


def test_retrained_reference_must_match_the_request(work, tmp_path):
    code, _, err = run("forget", "--checkpoint", work / "original.safetensors",
                       "--forget-class", "5", "--method", "finetune",
                       "--retrained", work / "retrained.safetensors",
                       "--out", tmp_path / "u.safetensors")
    assert code == 2
    assert_one_error_line(err, "another forget request")
    assert not (tmp_path / "u.safetensors").exists()


def test_usage_errors_exit_2():
    code, _, err = run("compare", "--model", "mlp")
    assert code == 2
    assert_one_error_line(err, "No dataset", "--data")
    code, _, err = run("forget", "--checkpoint", "x.safetensors", "--method", "finetune",
                       "--out", "y.safetensors")
    assert code == 2
    assert_one_error_line(err, "--forget-class")
    code, _, err = run("frobnicate")
    assert code == 2 and "invalid choice" in err


def test_bad_device(work, tmp_path):
    code, _, err = run("train", "--data", "digits", "--device", "warp-drive",
                       "--out", tmp_path / "m.safetensors")
    assert code == 2
    assert_one_error_line(err, "--device")


def test_methods_json_lists_every_registered_method():
    res = run_json("methods")
    by_name = {m["name"]: m for m in res["methods"]}
    assert set(by_name) == set(uk.METHODS.names())
    for name, cls in uk.METHODS.items():
        d = by_name[name]
        assert d["paper"] == cls.paper and d["scenarios"] == list(cls.scenarios)
        assert {"needs_forget", "needs_retain", "summary", "other_scenarios"} <= set(d)
        hps = {h["name"]: h for h in d["hyperparameters"]}
        assert set(hps) == set(cls().params())
        for key, default in cls().params().items():
            assert hps[key]["default"] == default
        assert d["needs_float_inputs"] == cls.needs_float_inputs
    code, out, _ = run("methods")
    assert code == 0 and all(name in out for name in uk.METHODS.names())
    float_only = [n for n, c in uk.METHODS.items() if c.needs_float_inputs]
    assert float_only and out.count("inputs: float tensors only") == len(float_only)


def test_datasets_json_lists_every_registered_dataset():
    res = run_json("datasets")
    assert [d["name"] for d in res["datasets"]] == uk.DATASETS.names()
    digits = next(d for d in res["datasets"] if d["name"] == "digits")
    assert digits["num_classes"] == 10 and digits["input_shape"] == [1, 8, 8]


def _subprocess(*argv: str | os.PathLike) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "unlearnkit", *map(str, argv)],
                          capture_output=True, text=True, env=env, timeout=120)


def test_python_m_unlearnkit_error_is_one_line(work, tmp_path):
    p = _subprocess("forget", "--checkpoint", work / "original.safetensors", "--forget-class", "3",
                    "--method", "sdd", "--out", tmp_path / "u.safetensors", "--json")
    assert p.returncode == 2
    assert_one_error_line(p.stderr, "Unknown method 'sdd'")
    assert not (tmp_path / "u.safetensors").exists()
    # with --json, stdout holds the error as one JSON object too (a script reads stdout)
    got = json.loads(p.stdout)
    assert got["command"] == "forget" and got["error"]["type"] == "UnknownNameError"
    assert got["error"]["message"] in p.stderr and "Did you mean 'ssd'" in got["error"]["message"]


def test_without_json_an_error_leaves_stdout_empty_and_methods_takes_names(tmp_path):
    code, out, err = run("methods", "sdd")
    assert code == 2 and out == ""
    assert_one_error_line(err, "Unknown method 'sdd'", "Did you mean 'ssd'")
    code, out, _ = run("methods", "ssd", "finetune", "--json")
    assert code == 0
    assert [m["name"] for m in json.loads(out)["methods"]] == ["ssd", "finetune"]
    code, out, _ = run("methods", "--json")
    assert len(json.loads(out)["methods"]) == len(uk.METHODS.names())


# ---------------------------------------------------------------------- evaluation metrics, score
@pytest.fixture(scope="module")
def unlearned(work) -> Path:
    out = work / "finetuned.safetensors"
    run_json("forget", "--checkpoint", work / "original.safetensors", "--forget-class", "3",
             "--method", "finetune", "--param", "epochs=1", "--out", out)
    return out


def test_evaluate_reports_what_its_inputs_allow(work, unlearned):
    base = run_json("evaluate", "--checkpoint", unlearned)["metrics"]
    assert {"mia_loss_cv", "mia_entropy", "mia_confidence", "zrf"} <= set(base)
    assert "js_divergence" not in base and "anamnesis" not in base
    res = run_json("evaluate", "--checkpoint", unlearned, "--retrained",
                   work / "retrained.safetensors", "--original", work / "original.safetensors",
                   "--n-models", "3")
    m = res["metrics"]
    assert {"js_divergence", "activation_distance", "avg_gap", "anamnesis"} <= set(m)
    assert {"forgetting_quality", "competition_score", "mia_lira"} <= set(m)
    assert res["n_models"] == 3 == m["n_models"]
    assert m["competition_score"] == pytest.approx(
        m["forgetting_quality"] * m["retain_acc_ratio"] * m["test_acc_ratio"])
    no_relearn = run_json("evaluate", "--checkpoint", unlearned, "--retrained",
                          work / "retrained.safetensors", "--original",
                          work / "original.safetensors", "--no-relearn")
    assert "anamnesis" not in no_relearn["metrics"]


def test_evaluate_pool_errors(work, unlearned):
    code, _, err = run("evaluate", "--checkpoint", unlearned, "--n-models", "3")
    assert code == 2
    assert_one_error_line(err, "--original")
    code, _, err = run("evaluate", "--checkpoint", work / "original.safetensors",
                       "--forget-class", "3", "--original", work / "original.safetensors",
                       "--n-models", "3")
    assert code == 2
    assert_one_error_line(err, "records no unlearning method")
    code, _, err = run("evaluate", "--checkpoint", unlearned, "--original", unlearned)
    assert code == 2
    assert_one_error_line(err, "is an unlearned model")


def test_score_json_reuses_its_pools(work):
    argv = ("score", "--checkpoint", work / "original.safetensors", "--forget-class", "3",
            "--method", "finetune", "--param", "epochs=1", "--n-models", "3")
    first = run_json(*argv)
    assert first["method"] == "finetune" and first["params"]["epochs"] == 1
    m = first["metrics"]
    assert 0.0 <= m["forgetting_quality"] <= 1.0 and 0.0 <= m["mia_lira"] <= 1.0
    assert m["competition_score"] == pytest.approx(
        m["forgetting_quality"] * m["retain_acc_ratio"] * m["test_acc_ratio"])
    assert m["retrained_forget_acc"] == 0.0  # no retrained model knows class 3
    files = sorted(p.name for p in uk.pools.pool_cache_dir().rglob("*.npz"))
    assert len(files) == 6  # 3 retrained + 3 unlearned
    again = run_json(*argv)
    assert again["metrics"] == {**m, "seconds": again["metrics"]["seconds"],
                                "retrain_seconds": again["metrics"]["retrain_seconds"]}
    assert sorted(p.name for p in uk.pools.pool_cache_dir().rglob("*.npz")) == files
    code, out, _ = run(*argv)
    assert code == 0 and "competition_score" in out and "pools of 3 models" in out


def test_score_trains_the_original_once(work):
    argv = ("score", "--data", "digits", "--model", "mlp", "--model-arg", "hidden=16",
            "--epochs", "1", "--forget-count", "20", "--method", "original", "--n-models", "3")
    first = run_json(*argv)
    assert first["method"] == "original" and first["params"] is None
    saved = list((uk.pools.pool_cache_dir() / "originals").glob("*.safetensors"))
    assert len(saved) == 1
    assert run_json(*argv)["metrics"]["forgetting_quality"] == (
        first["metrics"]["forgetting_quality"])


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (("--method", "finetune", "--n-models", "2"), "at least 3"),
        (("--method", "original", "--param", "epochs=1"), "takes no --param"),
        (("--method", "fintune"), "Did you mean 'finetune'"),
    ],
)
def test_score_errors(work, extra, fragment):
    code, _, err = run("score", "--checkpoint", work / "original.safetensors",
                       "--forget-class", "3", *extra)
    assert code == 2
    assert_one_error_line(err, fragment)
    assert not uk.pools.pool_cache_dir().exists()  # refused before any training


def test_datasets_text_never_shows_none_or_a_question_mark():
    code, out, _ = run("datasets")
    assert code == 0 and "imagefolder" in out
    assert "None" not in out and "input shape: ?" not in out
    assert "classes: one per folder" in out


def test_bench_tables_fit_the_terminal_and_mark_each_columns_direction(monkeypatch):
    from unlearnkit.cli import TABLE_LEGEND, _summary_grid, _table_width

    metrics = ["retain_acc", "forget_acc", "test_acc", "forget_acc_gap", "mia_entropy",
               "js_divergence", "seconds", "speedup"]
    rows = [{"method": m, "label": m, "n": 3, "verdict": v,
             "mean": dict.fromkeys(metrics, 0.5), "std": dict.fromkeys(metrics, 0.01)}
            for m, v in (("retrain", "forgotten"), ("fisher-forgetting", "partial"))]
    t = {"scenario": "class 3", "dataset": "digits", "arch": "cnn", "metrics": metrics,
         "rows": rows}
    wide = _summary_grid(t)
    assert len(wide) == 5 and "forget_acc_gap↓" in wide[1] and "retain_acc↑" in wide[1]
    assert "forget_acc≈" in wide[1] and "verdict" in wide[1]
    narrow = _summary_grid(t, 80)
    assert max(len(line) for line in narrow) <= 80 < max(len(line) for line in wide)
    heads = [line for line in narrow if line.startswith("method")]
    assert len(heads) >= 2 and "forget_acc_gap↓" in heads[0] and "verdict" in heads[0]
    shown = " ".join(heads)
    assert all(m in shown for m in metrics)  # every column in some block
    for name in ("retrain", "fisher-forgetting"):  # every row in every block
        assert sum(line.startswith(name) for line in narrow) == len(heads)
    assert "↑ higher is better" in TABLE_LEGEND and "n = seeds" in TABLE_LEGEND
    monkeypatch.setenv("COLUMNS", "90")
    assert _table_width() == 90
    monkeypatch.delenv("COLUMNS")
    assert _table_width() is None  # captured output is not a terminal: one block


@pytest.mark.parametrize("command", ["train", "forget", "evaluate", "score", "methods",
                                     "datasets", "compare", "bench", "report"])
def test_every_help_ends_with_an_example(command):
    code, out, _ = run(command, "--help")
    assert code == 0
    tail = " ".join(out.strip().split("\n\n")[-1].split())  # the epilog, unwrapped
    assert tail.startswith(f"example: unlearnkit {command} ")


def test_an_out_that_replaces_a_file_says_so(work, tmp_path):
    out = tmp_path / "u.safetensors"
    argv = ("forget", "--checkpoint", work / "original.safetensors", "--forget-class", "3",
            "--method", "ssd", "--out", out)
    code, text, err = run(*argv, "--json")
    assert code == 0 and json.loads(text)["replaced"] is False and "replaced" not in err
    code, text, err = run(*argv, "--json")
    assert code == 0 and json.loads(text)["replaced"] is True
    assert f"'{out}' existed; it was replaced" in err


def test_version_and_import_do_not_load_torch():
    """`unlearnkit --version` answers without importing torch or a command (issue 15: it took
    4 s); `import unlearnkit` is lazy, and its names are the modules' own objects."""
    code = ("import sys, io, contextlib\n"
            "import unlearnkit._entry as e\n"
            "out = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n"
            "    rc = e.main(['--version'])\n"
            "print(rc, out.getvalue().strip(), 'torch' in sys.modules,\n"
            "      any(m.split('.')[0] == 'rich' for m in sys.modules))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)  # neither torch nor rich (the terminal's tables)
    assert p.stdout.split() == ["0", "unlearnkit", uk.__version__, "False", "False"], p.stderr
    from unlearnkit.evaluation import evaluate
    from unlearnkit.methods.base import METHODS

    assert uk.evaluate is evaluate and uk.METHODS is METHODS
    assert set(uk.__all__) <= set(dir(uk))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        uk.nope  # noqa: B018
    code, out, _ = run("--version")
    assert code == 0 and out.strip() == f"unlearnkit {uk.__version__}"


def test_commands_that_fit_no_attack_do_not_import_scikit_learn():
    """scikit-learn takes about 1.5 s to import (scipy.stats with it), half of a command's
    start-up: it is imported where an attack or a probe is fitted, not by the CLI's modules."""
    code = ("import sys, unlearnkit.cli, unlearnkit.evaluation, unlearnkit.metrics; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'sklearn', 'scipy'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"  # (the attacks: tests/test_metrics_mia.py, test_mia_power.py)
