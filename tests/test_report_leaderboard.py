"""The leaderboard (rows ranked by avg_gap, ties by js_divergence) and the Pareto front of
avg_gap against seconds: checked against a brute-force front, on ties and on missing metrics."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from unlearnkit.report import summarize
from unlearnkit.report.leaderboard import (
    chosen_params,
    leaderboard,
    pareto_front,
    verdict_counts,
)


# ---------------------------------------------------------------------- the front
def brute_front(points):
    """Indices of the points that no other point dominates (both coordinates minimised), by
    the definition: another is <= on both and < on one. Missing/non-finite points excluded."""
    def ok(p):
        return p[0] is not None and p[1] is not None and math.isfinite(p[0]) \
            and math.isfinite(p[1])

    good = [i for i, p in enumerate(points) if ok(p)]
    out = []
    for i in good:
        xi, yi = points[i]
        if not any(points[j][0] <= xi and points[j][1] <= yi
                   and (points[j][0] < xi or points[j][1] < yi) for j in good if j != i):
            out.append(i)
    return out


_coord = st.one_of(st.none(), st.integers(0, 6).map(float),
                   st.sampled_from([math.nan, math.inf, 0.5, 2.5]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_coord, _coord), max_size=25))
@example([])
@example([(1.0, 1.0), (1.0, 1.0)])  # equal points: both on the front
@example([(1.0, 2.0), (2.0, 2.0)])  # same distance, slower: dominated
@example([(1.0, 2.0), (1.0, 1.0)])  # same seconds, farther: dominated
def test_front_equals_brute_force(points):
    front = pareto_front(points)
    assert sorted(front) == brute_front(points)
    # fastest first, and then the distances fall strictly between distinct seconds
    assert front == sorted(front, key=lambda i: (points[i][0], points[i][1], i))
    for a, b in itertools.pairwise(front):
        if points[a][0] < points[b][0]:
            assert points[a][1] > points[b][1]


def test_front_examples():
    pts = [(1.0, 0.5), (2.0, 0.1), (3.0, 0.2), (None, 0.0), (0.5, math.nan), (2.0, 0.1)]
    assert pareto_front(pts) == [0, 1, 5]  # the tie at (2, 0.1) keeps both
    rng = np.random.default_rng(0)
    many = [tuple(map(float, p)) for p in rng.integers(0, 5, size=(200, 2))]
    assert sorted(pareto_front(many)) == brute_front(many)


# ---------------------------------------------------------------------- the ranking
def _row(method, params, seed=0, *, calibration=None, verdict="forgotten", **metrics):
    return {"run_id": f"{method}-{len(str(params))}-{seed}-{calibration is not None}",
            "dataset": "digits", "arch": "mlp", "scenario": "class 3", "scenario_kind": "class",
            "method": method, "params": params, "seed": seed, "status": "ok",
            "verdict": verdict, "calibration": calibration, **metrics}


def _cal(params, *, best=2, trials=5):
    return {"budget": 0.2, "budget_seconds": 1.5, "budget_basis": "retrain-row",
            "max_trials": None, "trials": trials, "best_trial": best, "search_seconds": 4.0,
            "stopped_at": {"phase": "fine-tune", "epoch": 3},
            "defaults": {"epochs": 5, "lr": 1e-05, "weight_decay": 0.01, "optimizer": "adam",
                         "momentum": 0.9, "batch_size": 64},
            "params": params, "space": {"epochs": {"low": 1, "high": 10},
                                        "lr": {"low": 1e-5, "high": 0.1, "log": True}}}


FT_DEFAULTS = {"epochs": 5, "lr": 1e-05, "weight_decay": 0.01, "optimizer": "adam",
               "momentum": 0.9, "batch_size": 64}


def _study():
    ft_cal = [{**FT_DEFAULTS, "lr": 0.003}, {**FT_DEFAULTS, "lr": 0.003}]
    return [
        _row("retrain", {}, avg_gap=0.01, js_divergence=0.0, seconds=10.0,
             verdict="forgotten"),
        _row("original", {}, avg_gap=0.30, js_divergence=0.5, verdict="not forgotten"),
        # finetune at its defaults: as far as doing nothing; calibrated: much closer, slower
        _row("finetune", FT_DEFAULTS, avg_gap=0.30, js_divergence=0.4, seconds=1.0,
             verdict="not forgotten"),
        *[_row("finetune", p, seed, calibration=_cal(p), avg_gap=0.05, js_divergence=0.02,
               seconds=4.0) for seed, p in enumerate(ft_cal)],
        # ssd and scrub tie on avg_gap; ssd's js is lower
        _row("ssd", {}, avg_gap=0.05, js_divergence=0.01, seconds=0.5),
        _row("scrub", {}, avg_gap=0.05, js_divergence=0.03, seconds=0.2, verdict="partial"),
        # full tie with the calibrated finetune (avg_gap and js): the same rank
        _row("salun", {}, avg_gap=0.05, js_divergence=0.02, seconds=9.0),
        # no avg_gap (no reference for it): listed, not ranked
        _row("teacher", {}, seconds=0.1, verdict=None),
        # two seeds that disagree
        _row("perturb", {"beta": 0.7}, 0, avg_gap=0.2, js_divergence=0.1, seconds=3.0),
        _row("perturb", {"beta": 0.7}, 1, avg_gap=0.4, js_divergence=0.1, seconds=3.0,
             verdict="partial"),
    ]


def test_ranked_by_avg_gap_then_js_with_shared_ranks():
    board = leaderboard(summarize(_study())[0])
    got = [(e.rank, e.label) for e in board.entries]
    # perturb's mean avg_gap, (0.2 + 0.4) / 2, ties with finetune's 0.3: its js is lower
    assert got == [(1, "ssd"), (2, "finetune (calibrated)"), (2, "salun"), (4, "scrub"),
                   (5, "perturb"), (6, "finetune"), (None, "teacher")]
    assert {e.method for e in board.entries}.isdisjoint({"retrain", "original"})
    assert board.baseline == pytest.approx(0.30) and board.reference == pytest.approx(0.01)
    # the calibrated row's seconds are its whole search's, its params the chosen ones
    cal = board.entries[1]
    assert cal.calibrated and cal.seconds == pytest.approx(4.0)
    assert cal.params == ({"lr": 0.003},) and cal.params_text() == "lr=0.003"
    assert "best of 5 trials (trial 2), stopped at fine-tune epoch 3" in cal.calibration_text()
    assert "budget 0.2 x retraining = 1.5 s" in cal.calibration_text()
    assert board.entries[5].params == ({},) and board.entries[5].params_text() == "defaults"
    assert board.top(2) == list(board.entries[:2])


def test_closer_than_the_original_and_the_front():
    board = leaderboard(summarize(_study())[0])
    by = {e.label: e for e in board.entries}
    # equal to doing nothing is not closer; perturb's mean (0.3) neither
    assert by["finetune"].closer_than_original is False
    assert by["perturb"].closer_than_original is False
    assert by["ssd"].closer_than_original is True
    assert by["teacher"].closer_than_original is None  # no distance
    # (seconds, avg_gap): scrub (0.2, 0.05) dominates ssd (0.5, 0.05) and everything slower;
    # teacher (0.1, -) has no distance: not on the front
    assert [e.label for e in board.front] == ["scrub"]
    pts = [(e.seconds, e.avg_gap) for e in board.entries]
    assert {board.entries[i].label for i in brute_front(pts)} == {"scrub"}
    d = board.to_dict()
    assert d["front"] == ["scrub"] and d["distance"] == "avg_gap"
    assert [r["rank"] for r in d["rows"]] == [1, 2, 2, 4, 5, 6, None]


def test_missing_metrics_and_empty():
    rows = [_row("retrain", {}, seconds=3.0), _row("ssd", {}, seconds=1.0),
            _row("finetune", {}, avg_gap=0.1)]  # a distance but no seconds
    board = leaderboard(summarize(rows)[0])
    assert [(e.rank, e.label) for e in board.entries] == [(1, "finetune"), (None, "ssd")]
    assert board.front == [] and board.baseline is None
    assert board.entries[0].closer_than_original is None
    only_refs = leaderboard(summarize([_row("retrain", {}, avg_gap=0.0)])[0])
    assert only_refs.entries == () and only_refs.ranked == []


def test_chosen_params_of_seeds_that_disagree():
    p0, p1 = {**FT_DEFAULTS, "lr": 0.003}, {**FT_DEFAULTS, "lr": 0.01, "epochs": 7}
    rows = [_row("finetune", p, seed, calibration=_cal(p), avg_gap=0.1, seconds=1.0)
            for seed, p in enumerate((p0, p1))]
    row = summarize(rows)[0].rows[0]
    assert row.calibrated and row.n == 2
    assert chosen_params(row, "class") == [{"lr": 0.003}, {"epochs": 7, "lr": 0.01}]
    e = leaderboard(summarize(rows)[0]).entries[0]
    assert e.params_text() == "seed 0: lr=0.003; seed 1: epochs=7, lr=0.01"
    # a search that kept the defaults
    kept = summarize([_row("finetune", FT_DEFAULTS, calibration=_cal(FT_DEFAULTS),
                           avg_gap=0.1)])[0].rows[0]
    assert chosen_params(kept, "class") == [{}]
    # an unregistered method: all its parameters
    odd = summarize([_row("mystery", {"k": 3}, avg_gap=0.1)])[0].rows[0]
    assert chosen_params(odd) == [{"k": 3}]


def test_verdict_counts():
    s = summarize(_study())[0]
    # references left out; perturb's seeds disagree; teacher has none
    assert verdict_counts(s) == {"forgotten": 3, "partial": 1, "not forgotten": 1, "mixed": 1,
                                 "no verdict": 1}
    assert list(verdict_counts(s))[:3] == ["forgotten", "partial", "not forgotten"]


def test_pareto_labels_of_nearby_front_points_do_not_overlap(monkeypatch):
    """Two points of the front a hair apart (the demo's boundary-shrink and boundary-expand):
    the second label is lifted above the first; a distant point keeps the plain offset."""
    from unlearnkit.report import figures

    rows = [_row("retrain", {}, avg_gap=0.0, js_divergence=0.0, seconds=4.0),
            _row("original", {}, avg_gap=0.5, js_divergence=0.6),
            _row("gradient-ascent", {}, avg_gap=0.526, js_divergence=0.6, seconds=0.07),
            _row("boundary-expand", {}, avg_gap=0.523, js_divergence=0.6, seconds=0.27),
            _row("boundary-shrink", {}, avg_gap=0.521, js_divergence=0.6, seconds=0.29),
            _row("ssd", {}, avg_gap=0.0, js_divergence=0.1, seconds=0.45)]
    made = []
    real = figures._figure
    monkeypatch.setattr(figures, "_figure", lambda *a: made.append(real(*a)) or made[-1])
    assert figures.pareto_figure(summarize(rows)[0]) is not None
    offsets = {t.get_text(): t.xyann for t in made[0].axes[0].texts if t.get_text()[:1] == "#"}
    assert len(offsets) == 4, offsets  # every point but the original is on the front
    lifted = sorted(o[1] for o in offsets.values())
    assert lifted[:3] == [4, 4, 4] and lifted[3] >= 4 + 9  # of the two close ones, one
