"""The report: summary tables (mean ± std, best marked), the plots, Markdown and HTML, CLI."""

from __future__ import annotations

import base64
import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from _cli import run as cli
from unlearnkit.bench import ResultStore
from unlearnkit.exceptions import DataError
from unlearnkit.report import BEST_RULES, load_finished, summarize, write_report
from unlearnkit.report.cache import MANIFEST

# scenario "class 3", the original stored first, the reference last: per (method, params),
# per seed (retain_acc, forget_acc, seconds)
VALUES = {
    ("original", ()): [(0.999, 0.98, 0.1), (0.998, 0.99, 0.1), (0.997, 0.97, 0.1)],
    ("finetune", (("epochs", 1),)): [(0.99, 0.50, 1.0), (0.98, 0.40, 1.5), (0.97, 0.45, 2.0)],
    ("finetune", (("epochs", 2),)): [(0.90, 0.15, 2.0), (0.92, 0.05, 2.5), (0.91, 0.13, 3.0)],
    ("ssd", (("alpha", 10),)): [(0.93, 0.00, 0.5), (0.94, 0.01, 0.4), (0.95, 0.02, 0.6)],
    ("retrain", ()): [(0.95, 0.10, 10.0), (0.97, 0.12, 11.0), (0.96, 0.08, 12.0)],
}


def make_db(path: Path, *, extra: bool = True) -> Path:
    with ResultStore(path) as store:
        n = 0
        for (method, params), seeds in VALUES.items():
            for seed, (ra, fa, sec) in enumerate(seeds):
                n += 1
                store.write({"run_id": f"r{n}", "dataset": "digits", "arch": "mlp",
                             "scenario": "class 3", "scenario_kind": "classes",
                             "method": method, "params": dict(params), "seed": seed,
                             "status": "ok", "spec": {},
                             "metrics": {"retain_acc": ra, "forget_acc": fa, "seconds": sec}})
        if extra:  # a failed run (ignored), and a second scenario with one seed, no retrain
            store.write({"run_id": "bad", "dataset": "digits", "arch": "mlp",
                         "scenario": "class 3", "scenario_kind": "classes", "method": "ssd",
                         "params": {"alpha": 10}, "seed": 9, "status": "failed", "spec": {},
                         "metrics": {"retain_acc": 0.0}})
            store.write({"run_id": "o1", "dataset": "digits", "arch": "mlp",
                         "scenario": "random <10%> & co", "scenario_kind": "random",
                         "method": "ssd", "params": {}, "seed": 0, "status": "ok",
                         "spec": {}, "metrics": {"retain_acc": 0.8, "test_acc": 0.7}})
    return path


def test_means_stds_order_and_best(tmp_path):
    summaries = summarize(load_finished(make_db(tmp_path / "r.sqlite")))
    assert [s.scenario for s in summaries] == ["class 3", "random <10%> & co"]
    s = summaries[0]
    assert s.metrics == ["retain_acc", "forget_acc", "seconds"]
    assert s.rows[0].method == "retrain"  # stored last, listed first
    assert s.rows[1].method == "original"  # stored first, listed second
    assert len(s.rows) == 5 and all(r.n == 3 for r in s.rows)  # the failed run is left out
    for (method, params), seeds in VALUES.items():
        row = next(r for r in s.rows if r.method == method and r.params == dict(params))
        arr = np.array(seeds)
        for j, m in enumerate(("retain_acc", "forget_acc", "seconds")):
            assert row.mean[m] == pytest.approx(arr[:, j].mean())
            assert row.std[m] == pytest.approx(arr[:, j].std(ddof=1))
            assert row.cell(m) == f"{arr[:, j].mean():.4g} ± {arr[:, j].std(ddof=1):.4g}"
    idx = {r.label: i for i, r in enumerate(s.rows)}
    # forget_acc: closest to retrain's 0.10 is finetune epochs=2 (0.11), not the lowest (ssd)
    assert s.best["forget_acc"] == {idx["finetune (epochs=2)"]}
    assert s.best["retain_acc"] == {idx["finetune (epochs=1)"]}  # highest
    assert s.best["seconds"] == {idx["ssd"]}  # lowest; retrain never marked
    # the original has the highest retain_acc and the lowest seconds, but is never marked
    assert all(idx["original"] not in marked for marked in s.best.values())
    assert BEST_RULES["forget_acc"] == "closest" and BEST_RULES["seconds"] == "min"
    # one seed: just the mean; no reference: nothing "closest" marked, max still marked
    o = summaries[1]
    assert o.rows[0].cell("retain_acc") == "0.8" and o.rows[0].std["retain_acc"] is None
    assert o.best == {"retain_acc": {0}, "test_acc": {0}}


def test_write_report_files_md_and_html(tmp_path):
    out = tmp_path / "rep"
    result = write_report(make_db(tmp_path / "r.sqlite"), out)
    files = [Path(f) for f in result["files"]]
    assert all(f.is_file() for f in files)
    pngs = [f for f in files if f.suffix == ".png"]
    # the trade-off plot and the bars of "class 3"; the scenario without a reference has none
    assert [f.name.split("-")[0] for f in pngs] == ["tradeoff", "bars"]
    assert all(f.read_bytes().startswith(b"\x89PNG") for f in pngs)
    # no temporary files; the figures' manifest (the cache of the next report) is hidden
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [MANIFEST]

    md = (out / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert links and all((out / link).is_file() for link in links)
    assert "| **0.91 ± 0.01** |" not in md  # retain of finetune e2 is not the best ...
    assert "**0.11 ± 0.05292**" in md  # ... its forget_acc is (closest to retrain)
    assert "closest to the retrained model" in md

    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page)
    assert "http://" not in page and "https://" not in page
    imgs = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert sorted(base64.b64decode(i) for i in imgs) == sorted(f.read_bytes() for f in pngs)
    assert "random &lt;10%&gt; &amp; co" in page and "<10%>" not in page
    assert re.search(r'<td data-metric="forget_acc" data-mean="0\.11\d*" '
                     r'data-std="0\.0529\d*" data-best="true"><b>0.11 ± 0.05292</b></td>', page)
    assert page.count('<table class="summary"') == page.count("</table>") == 2
    assert "No artefacts stored" in page  # this database has none: fewer figures


def test_cli_json_lists_files(tmp_path):
    db = make_db(tmp_path / "r.sqlite")
    code, out, err = cli("report", db, "--out", tmp_path / "rep", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["command"] == "report"
    names = sorted(Path(f).name for f in result["files"])
    assert names == sorted(p.name for p in (tmp_path / "rep").iterdir() if p.name != MANIFEST)
    assert {"report.md", "report.html"} <= set(names)
    code, out, _ = cli("report", db, "--out", tmp_path / "rep2")
    assert code == 0 and "report.html" in out


def test_errors(tmp_path):
    code, out, err = cli("report", tmp_path / "missing.sqlite", "--out", tmp_path / "o")
    assert code == 2 and out == "" and err.startswith("unlearnkit: error: No results database")
    assert len(err.strip().splitlines()) == 1
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    code, _, err = cli("report", other, "--out", tmp_path / "o")
    assert code == 2 and "no 'runs' table" in err
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    code, _, err = cli("report", junk, "--out", tmp_path / "o")
    assert code == 2 and "not a results database" in err
    empty = tmp_path / "empty.sqlite"
    ResultStore(empty).close()
    with pytest.raises(DataError, match="no finished run"):
        write_report(empty, tmp_path / "o")
    code, _, err = cli("report", empty, "--out", tmp_path / "o", "--json")
    assert code == 2 and "no finished run" in err
    assert not (tmp_path / "o").exists()


def test_labels_show_only_the_varying_hyper_parameters():
    from unlearnkit.report.summary import summarize

    def row(method, params, seed):
        return {"dataset": "d", "arch": "a", "scenario": "class 3", "scenario_kind": "class",
                "method": method, "params": params, "seed": seed, "status": "ok",
                "forget_acc": 0.5, "retain_acc": 0.9}

    rows = [row("retrain", {"epochs": None}, 0),
            row("finetune", {"lr": 0.1, "epochs": 5}, 0),
            row("finetune", {"lr": 0.01, "epochs": 5}, 0),
            row("ssd", {"alpha": 5.0, "lambd": 1.0}, 0)]
    labels = [r.label for r in summarize(rows)[0].rows]
    assert labels == ["retrain", "finetune (lr=0.1)", "finetune (lr=0.01)", "ssd"]


def test_report_of_a_subset(tmp_path):
    db = make_db(tmp_path / "r.sqlite")
    result = write_report(db, tmp_path / "one", scenarios=["class 3"], methods=["ssd"])
    (s,) = result["scenarios"]
    assert s["scenario"] == "class 3"
    # the references are kept
    assert {r["method"] for r in s["rows"]} == {"retrain", "original", "ssd"}
    with pytest.raises(DataError, match=r"scenario 'class 4'.*'class 3'"):
        write_report(db, tmp_path / "two", scenarios=["class 4"])
    with pytest.raises(DataError, match=r"method 'sdd'"):
        write_report(db, tmp_path / "two", methods=["sdd"])
    assert not (tmp_path / "two").exists()  # nothing written
    code, out, _ = cli("report", db, "--out", tmp_path / "cli", "--methods", "finetune",
                       "--scenario", "class 3", "--json")
    assert code == 0
    rows = json.loads(out)["scenarios"][0]["rows"]
    assert rows == 4  # retrain, original, and finetune with epochs 1 and 2


# ---------------------------------------------------------------------- calibrated rows
FT = {"epochs": 5, "lr": 1e-05, "weight_decay": 0.01, "optimizer": "adam", "momentum": 0.9,
      "batch_size": 64}  # finetune's defaults


def _calibration(method, defaults, params, space):
    return {"budget": 0.2, "budget_seconds": 2.0, "budget_basis": "retrain-row",
            "max_trials": None, "trials": 3, "best_trial": 2, "search_seconds": 3.0,
            "defaults": defaults, "params": params,
            "space": {k: {"low": 0.1, "high": 10.0, "log": True} for k in space}}


def make_calibrated_db(path: Path) -> Path:
    """Each of finetune and ssd at its defaults and calibrated, the references, and a
    calibrated scrub that found nothing within its budget (skipped)."""
    ft_cal = {**FT, "lr": 0.003}
    ssd_cal = {"alpha": 3.0, "lambd": 1.0}
    trials = [{"number": 0, "params": {"lr": 1e-5}, "state": "complete", "value": -1.0,
               "outcome": "not forgotten", "retained": 0.9, "shortfall": 0.95, "seconds": 1.0},
              {"number": 1, "params": {"lr": 0.5}, "state": "failed", "seconds": 0.1,
               "note": "diverged"},
              {"number": 2, "params": {"lr": 0.003}, "state": "complete", "value": 0.9,
               "outcome": "forgotten", "retained": 0.9, "shortfall": 0.0, "seconds": 1.2}]
    rows = [  # (method, params, avg_gap, js, seconds, verdict, calibration, trials)
        ("retrain", {}, 0.01, 0.0, 10.0, "forgotten", None, None),
        ("original", {}, 0.5, 0.6, None, "not forgotten", None, None),
        ("finetune", FT, 0.4, 0.3, 1.0, "not forgotten", None, None),
        ("finetune", ft_cal, 0.05, 0.02, 3.0, "forgotten",
         _calibration("finetune", FT, ft_cal, ["lr", "epochs"]), trials),
        ("ssd", {}, 0.1, 0.05, 0.5, "forgotten", None, None),
        ("ssd", ssd_cal, 0.02, 0.01, 2.0, "forgotten",
         _calibration("ssd", {"alpha": 10.0, "lambd": 1.0}, ssd_cal, ["alpha", "lambd"]), None),
    ]
    with ResultStore(path) as store:
        for n, (method, params, gap, js, sec, verdict, cal, tr) in enumerate(rows):
            store.write({"run_id": f"c{n}", "dataset": "digits", "arch": "mlp",
                         "scenario": "class 3", "scenario_kind": "class", "method": method,
                         "params": params, "seed": 0, "status": "ok", "spec": {},
                         "metrics": {"retain_acc": 0.9, "forget_acc": 0.1, "avg_gap": gap,
                                     "js_divergence": js, "seconds": sec, "verdict": verdict},
                         "calibration": cal, "trials": tr})
        store.write({"run_id": "skip", "dataset": "digits", "arch": "mlp",
                     "scenario": "class 3", "scenario_kind": "class", "method": "scrub",
                     "params": {}, "seed": 0, "status": "skipped", "spec": {},
                     "error": "no trial finished within the budget of 2 s",
                     "calibration": {"budget": 0.2, "budget_seconds": 2.0}})
    return path


def test_leaderboard_of_defaults_and_calibrated_rows(tmp_path):
    out = tmp_path / "rep"
    result = write_report(make_calibrated_db(tmp_path / "c.sqlite"), out)
    (board,) = result["leaderboards"]
    # by avg_gap: each method's calibrated row ahead of its defaults; no reference ranked
    assert [(r["rank"], r["label"]) for r in board["rows"]] == [
        (1, "ssd (calibrated)"), (2, "finetune (calibrated)"), (3, "ssd"), (4, "finetune")]
    assert board["baseline"] == 0.5 and board["front"] == ["ssd", "ssd (calibrated)"]
    assert board["rows"][1]["params"] == [{"lr": 0.003}]  # what the search changed
    assert board["rows"][0]["params"] == [{"alpha": 3.0}]
    assert board["rows"][3]["closer_than_original"] is True
    assert board["verdict_counts"] == {"forgotten": 3, "not forgotten": 1}

    pareto = out / "pareto-digits-mlp-class-3.png"
    assert str(pareto) in result["files"] and pareto.read_bytes().startswith(b"\x89PNG")

    md = (out / "report.md").read_text()
    assert "1. ssd (calibrated): avg_gap 0.02, 2 s, forgotten, alpha=3" in md  # at a glance
    assert "Verdicts of the 4 rows: forgotten 3, not forgotten 1." in md
    assert re.search(r"\| 2 \| finetune \(calibrated\) \| forgotten \| 0\.05 \|.*"
                     r"\| closer \| lr=0\.003 \(best of 3 trials \(trial 2\), budget 0\.2 x "
                     r"retraining = 2 s", md)
    assert md.count("(pareto-digits-mlp-class-3.png)") == 2
    assert "| **2** (best) | complete | 0.9 | forgotten |" in md  # the trials, as data
    assert "scrub (calibrated), seed 0: not in the leaderboard: no trial finished" in md

    page = (out / "report.html").read_text()
    glance = page.split('<section id="at-a-glance">', 1)[1].split("</section>", 1)[0]
    assert re.findall(r'<li value="(\d)" data-method="(\w+)" data-calibrated="(\w+)"',
                      glance) == [("1", "ssd", "true"), ("2", "finetune", "true"),
                                  ("3", "ssd", "false")]
    assert 'data-file="pareto-digits-mlp-class-3.png"' in glance
    assert page.count('data-file="pareto-digits-mlp-class-3.png"') == 2
    lb = page.split('<table class="leaderboard"', 1)[1].split("</table>", 1)[0]
    assert [m for m in re.findall(r'<tr(?: class="front")? data-method="([\w-]+)"', lb)] == [
        "ssd", "finetune", "ssd", "finetune", "original", "retrain"]
    assert 'data-chosen=\'[{&quot;lr&quot;: 0.003}]\'' in lb
    trials = page.split('<details class="calibration"', 1)[1].split("</details>", 1)[0]
    assert 'data-run-id="c3"' in trials and trials.count('data-best="true"') == 1
    assert "diverged" in trials
    # the summary table keeps both finetune rows apart, the calibrated one marked
    assert page.count('data-method="finetune" data-params') == 2
    assert 'data-calibrated="true" data-n="1"><td>finetune (calibrated)</td>' in page


def test_a_row_that_did_not_forget_is_best_at_nothing():
    """The highest test accuracy of a class scenario would otherwise go to the methods that
    left the class known: best respects the scenario's goal (issue 15)."""
    def row(method, forget, test, verdict=None, kind="class"):
        return {"dataset": "d", "arch": "a", "scenario": "s", "scenario_kind": kind,
                "method": method, "params": {}, "seed": 0, "status": "ok",
                "forget_acc": forget, "test_acc": test, "verdict": verdict}

    with_verdicts = [row("retrain", 0.0, 0.90, "forgotten"),
                     row("finetune", 1.0, 0.98, "not forgotten"),
                     row("ssd", 0.0, 0.91, "forgotten"),
                     row("salun", 0.0, 0.85, "partial")]
    s = summarize(with_verdicts)[0]
    labels = [r.label for r in s.rows]
    assert {labels[i] for i in s.best["test_acc"]} == {"ssd"}  # not finetune's 0.98
    assert {labels[i] for i in s.best["forget_acc"]} == {"ssd", "salun"}
    # without verdicts, a class row whose forget accuracy is far above the retrained one's
    plain = [{**r, "verdict": None} for r in with_verdicts]
    s = summarize(plain)[0]
    assert {[r.label for r in s.rows][i] for i in s.best["test_acc"]} == {"ssd"}
    # in a random scenario without verdicts nothing is excluded by forget accuracy
    s = summarize([{**r, "scenario_kind": "random"} for r in plain])[0]
    assert {[r.label for r in s.rows][i] for i in s.best["test_acc"]} == {"finetune"}


def test_report_print_shows_the_tables_at_once_without_writing(tmp_path):
    db = make_db(tmp_path / "r.sqlite")
    code, out, err = cli("report", db, "--print")
    assert code == 0, err
    scenarios = {r["scenario"] for r in load_finished(db)}
    for label in scenarios:  # one table per scenario, as bench prints them
        assert f"Scenario: {label}" in out
    assert "retrain" in out and "Report of" not in out and err == ""
    assert not any(tmp_path.glob("*/report.html"))
    code, out, _ = cli("report", db, "--print", "--json")
    assert code == 0 and json.loads(out)["files"] == [] and json.loads(out)["tables"]
    # with --out as well: the tables, then the files, and the progress on stderr
    code, out, err = cli("report", db, "--print", "--out", tmp_path / "rep")
    assert code == 0 and "Scenario: " in out and "report.html" in out
    assert "report: scenario 1/" in err and "files written" in err
    code, _, err = cli("report", db)
    assert code == 2 and "--out DIR, or prints the tables with --print" in err


def test_quiet_silences_the_progress_and_verbose_keeps_it(tmp_path):
    db = make_db(tmp_path / "r.sqlite")
    code, out, err = cli("report", db, "--out", tmp_path / "a", "--quiet")
    assert code == 0 and err == "" and "report.html" in out
    code, _, err = cli("report", db, "--out", tmp_path / "b", "-v")
    assert code == 0 and "report: scenario 1/" in err
    code, _, err = cli("report", db, "--out", tmp_path / "c", "-q", "-v")
    assert code == 2 and "not allowed with argument" in err
