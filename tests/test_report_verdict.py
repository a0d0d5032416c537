"""The verdict in results: the store's column, the report's column and its check against the
retrained model (unlearnkit.report.verdicts)."""

from __future__ import annotations

import re
import sqlite3

import pytest

from unlearnkit.bench import ResultStore
from unlearnkit.exceptions import DataError
from unlearnkit.report import summarize, write_report
from unlearnkit.report.verdicts import CLOSE_AVG_GAP, is_close, verdict_agreement

# per (method, seed): verdict, forget_acc_gap, avg_gap
ROWS = {
    ("retrain", 0): ("forgotten", 0.0, 0.01),
    ("ssd", 0): ("forgotten", 0.01, 0.02),       # agrees (close)
    ("ssd", 1): ("forgotten", 0.20, 0.02),       # disagrees: forgotten but far on forget acc
    ("ssd", 2): ("partial", 0.02, 0.03),         # disagrees: close but not "forgotten"
    ("finetune", 0): ("not forgotten", 0.9, 0.3),  # agrees (far)
    ("finetune", 1): ("not forgotten", 0.9, 0.3),  # agrees
}


def make_db(path):
    with ResultStore(path) as store:
        for n, ((method, seed), (verdict, fg, ag)) in enumerate(ROWS.items()):
            store.write({"run_id": f"r{n}", "dataset": "digits", "arch": "cnn",
                         "scenario": "class 3", "scenario_kind": "class", "method": method,
                         "params": {}, "seed": seed, "status": "ok", "spec": {},
                         "metrics": {"forget_acc": 0.0, "forget_acc_gap": fg, "avg_gap": ag,
                                     "verdict": verdict}})
    return path


def test_the_store_keeps_the_verdict_in_its_own_column(tmp_path):
    db = make_db(tmp_path / "r.sqlite")
    with sqlite3.connect(db) as conn:
        got = dict(conn.execute("SELECT run_id, verdict FROM runs"))
    assert got == {f"r{n}": v[0] for n, v in enumerate(ROWS.values())}


def test_a_foreign_verdict_in_the_store_is_refused(tmp_path):
    db = make_db(tmp_path / "r.sqlite")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE runs SET verdict = 'maybe' WHERE run_id = 'r0'")
    with pytest.raises(DataError, match="verdict"):
        write_report(db, tmp_path / "out")


def test_agreement_counts_by_hand():
    rows = [{"scenario": "s", "method": m, "seed": s, "params": {}, "verdict": v,
             "forget_acc_gap": fg, "avg_gap": ag} for (m, s), (v, fg, ag) in ROWS.items()]
    check = verdict_agreement([*rows, {"verdict": "forgotten"}])  # no gaps: not counted
    assert (check.n, check.agree) == (6, 4) and check.rate == pytest.approx(4 / 6)
    assert check.confusion == {"forgotten": {"close": 2, "not close": 1},
                               "partial": {"close": 1, "not close": 0},
                               "not forgotten": {"close": 0, "not close": 2}}
    assert [(d[1], d[3]) for d in check.disagreements] == [("ssd", 1), ("ssd", 2)]
    assert is_close({"forget_acc_gap": 0.0, "avg_gap": CLOSE_AVG_GAP}) is True
    assert is_close({"forget_acc_gap": 0.0, "avg_gap": CLOSE_AVG_GAP + 1e-9}) is False
    assert is_close({"avg_gap": 0.0}) is None


def test_summary_rows_carry_the_seeds_verdicts(tmp_path):
    from unlearnkit.bench.store import read_rows

    (s,) = summarize(read_rows(make_db(tmp_path / "r.sqlite")))
    by = {r.method: r for r in s.rows}
    assert by["retrain"].verdict == "forgotten"
    assert by["finetune"].verdict == "not forgotten"
    assert by["ssd"].verdict == "forgotten 2/3, partial 1/3"


def test_report_shows_the_verdict_column_and_the_check(tmp_path):
    out = write_report(make_db(tmp_path / "r.sqlite"), tmp_path / "rep")
    assert out["verdict_check"]["agree"] == 4 and out["verdict_check"]["n"] == 6
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| method | n | verdict |" in md
    assert re.search(r"\| ssd \| 3 \| forgotten 2/3, partial 1/3 \|", md)
    assert "## The verdict against the retrained model" in md and "4 of 6 rows" in md
    page = (tmp_path / "rep" / "report.html").read_text()
    assert page.count('class="forget-verdict"') == 3  # one cell per summary row
    assert 'data-verdict="forgotten 2/3, partial 1/3"' in page
    assert 'id="verdict-check" data-agree="4" data-n="6"' in page
