"""The summary of a benchmark's results: tables per scenario, leaderboards, plots, a report.

:func:`summarize` turns the finished rows of a results database (``unlearnkit bench``) into
one table per scenario: a row per (method, params) (a calibrated method's runs in a row of
their own), each metric as mean ± std over seeds, the retrained model's row first as the
reference, the original model's next, and the best value of each column marked according to
:data:`BEST_RULES`. :func:`write_report` writes ``report.md``, a self-contained
``report.html`` (the figures embedded as data URIs) and the figures as PNG files. The page
leads with the leaderboards (:mod:`unlearnkit.report.leaderboard`: the rows ranked by
distance to the retrained model) and the Pareto figures of that distance against seconds;
every other figure (:mod:`unlearnkit.report.figures`) is folded away, per-method ones drawn
as small multiples.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from unlearnkit.bench.store import METRIC_COLUMNS, read_artefacts, read_rows
from unlearnkit.exceptions import DataError
from unlearnkit.metrics.mia_power import (
    MIA_FIGURES,
    MIN_POWER,
    MIN_SEPARATION,
    mia_informative,
    no_power_reasons,
)
from unlearnkit.models.checkpoint import atomic_write

if TYPE_CHECKING:
    from unlearnkit.report.leaderboard import Leaderboard

__all__ = ["BEST_RULES", "ORIGINAL", "REFERENCE", "ScenarioSummary", "SummaryRow",
           "load_finished", "summarize", "tradeoff_png", "write_report"]

#: The method whose rows are the reference.
REFERENCE = "retrain"

#: The pseudo-method whose rows are the original model evaluated like a method: a second
#: reference row, right after the retrained model's, never marked.
ORIGINAL = "original"

#: Table order of the reference rows (every other method comes after them).
_REFERENCE_ORDER = {REFERENCE: 0, ORIGINAL: 1}

#: What "best" means for each metric: ``closest`` (to the retrained model's mean),
#: ``max`` or ``min``. Metrics absent here (e.g. ``retrain_seconds``) are never marked.
BEST_RULES: dict[str, str] = {
    **{m: "closest" for m in ("forget_acc", "test_forget_acc", "mia_loss_cv", "mia_entropy",
                              "mia_confidence", "mia_lira", "zrf", "anamnesis")},
    **{m: "max" for m in ("retain_acc", "test_acc", "test_retain_acc", "forgetting_quality",
                          "competition_score", "speedup")},
    **{m: "min" for m in ("js_divergence", "activation_distance", "avg_gap", "forget_acc_gap",
                          "seconds")},
}

_RULE_TEXT = {"closest": "closest to the retrained model", "max": "highest", "min": "lowest"}


@dataclass
class SummaryRow:
    """One (method, params) of a scenario: per metric the mean, std (ddof=1) and count."""

    method: str
    params: dict[str, Any]
    seeds: list[int]
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float | None] = field(default_factory=dict)

    #: the hyper-parameters shown in :attr:`label` (set by :func:`summarize`: those that
    #: vary among this method's rows in the scenario; every other one is at one value)
    shown: tuple[str, ...] = ()

    #: the run_id of each seed's run (aligned with :attr:`seeds`; ``None`` where unknown)
    run_ids: list[str | None] = field(default_factory=list)

    #: each seed's oracle-free verdict (aligned with :attr:`seeds`; ``None`` where absent)
    verdicts: list[str | None] = field(default_factory=list)

    #: the row's runs were calibrated (the config's ``calibrate``): :attr:`params` are the
    #: parameters chosen by the first seed's search, and ``seconds`` the whole searches'
    calibrated: bool = False

    #: each seed's calibration summary (the store's ``calibration`` column; calibrated rows)
    calibrations: list[dict[str, Any] | None] = field(default_factory=list)

    @property
    def label(self) -> str:
        if self.calibrated:
            return f"{self.method} (calibrated)"
        params = ", ".join(f"{k}={self.params[k]}" for k in self.shown if k in self.params)
        return f"{self.method} ({params})" if params else self.method

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def verdict(self) -> str:
        """The seeds' verdicts: the outcome when they agree, else each with its count
        (``"forgotten 2/3, partial 1/3"``); ``-`` where none was recorded."""
        given = [v for v in self.verdicts if v]
        if not given:
            return "-"
        counts = {v: given.count(v) for v in dict.fromkeys(given)}
        if len(counts) == 1 and len(given) == len(self.verdicts):
            return given[0]
        return ", ".join(f"{v} {k}/{len(self.verdicts)}" for v, k in counts.items())

    def cell(self, metric: str) -> str:
        """``"mean ± std"`` (just the mean for one value; ``-`` where absent)."""
        if metric not in self.mean:
            return "-"
        std = self.std.get(metric)
        return f"{_fmt(self.mean[metric])}" + ("" if std is None else f" ± {_fmt(std)}")


@dataclass
class ScenarioSummary:
    """One scenario's table: ``rows`` (the reference first), ``metrics`` (the columns) and
    ``best`` (metric -> indices of the marked rows)."""

    dataset: str
    arch: str
    scenario: str
    scenario_kind: str
    metrics: list[str]
    rows: list[SummaryRow]
    best: dict[str, set[int]]

    @property
    def title(self) -> str:
        return f"{self.dataset} / {self.arch}: {self.scenario} ({self.scenario_kind})"

    @property
    def reference(self) -> SummaryRow | None:
        return next((r for r in self.rows if r.method == REFERENCE), None)

    @property
    def original(self) -> SummaryRow | None:
        return next((r for r in self.rows if r.method == ORIGINAL), None)

    @property
    def slug(self) -> str:
        return _slug(f"{self.dataset}-{self.arch}-{self.scenario}")

    @property
    def has_verdicts(self) -> bool:
        return any(any(r.verdicts) for r in self.rows)

    def uninformative(self) -> dict[str, set[int]]:
        """Per MIA figure, the indices of the rows where it is uninformative
        (:func:`unlearnkit.metrics.mia_informative` of the row's means: its attack has no
        power on that model, or does not separate the original from the retrained model)."""
        out = {m: {i for i, r in enumerate(self.rows)
                   if m in r.mean and mia_informative(r.mean, m) is False}
               for m in self.metrics if m in MIA_FIGURES}
        return {m: idx for m, idx in out.items() if idx}

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset, "arch": self.arch, "scenario": self.scenario,
            "scenario_kind": self.scenario_kind, "metrics": list(self.metrics),
            "rows": [{"method": r.method, "label": r.label, "params": r.params, "n": r.n,
                      "seeds": r.seeds, "run_ids": r.run_ids, "mean": r.mean, "std": r.std,
                      "verdict": r.verdict if any(r.verdicts) else None,
                      "calibrated": r.calibrated,
                      **({"calibrations": r.calibrations} if r.calibrated else {})}
                     for r in self.rows],
            "best": {m: sorted(i) for m, i in self.best.items()},
            "uninformative": {m: sorted(i) for m, i in self.uninformative().items()},
        }


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def load_finished(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows with status ``ok`` of a results database; :class:`DataError` if the file is
    missing, is not a results database, or holds no finished run."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"No results database at {str(p)!r} (run `unlearnkit bench` first).")
    try:
        conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True)
        try:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='runs'").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise DataError(f"{str(p)!r} is not a results database: {exc}.") from exc
    if not found:
        raise DataError(f"{str(p)!r} has no 'runs' table: it is not an `unlearnkit bench` "
                        "results database.")
    rows = [r for r in read_rows(p) if r["status"] == "ok"]
    if not rows:
        raise DataError(f"{str(p)!r} holds no finished run (status 'ok'); nothing to report.")
    return rows


def _params_key(params: Any) -> str:
    return json.dumps(params or {}, sort_keys=True)


def summarize(rows: list[dict[str, Any]]) -> list[ScenarioSummary]:
    """One :class:`ScenarioSummary` per (dataset, arch, scenario) of the rows with status
    ``ok``, in the order they first appear."""
    groups: dict[tuple[str, str, str], dict[tuple[str, str], list[dict[str, Any]]]] = {}
    kinds: dict[tuple[str, str, str], str] = {}
    for r in rows:
        if r.get("status", "ok") != "ok":
            continue
        key = (r["dataset"], r["arch"], r["scenario"])
        kinds.setdefault(key, r["scenario_kind"])
        calibrated = r.get("calibration") is not None
        # a calibrated method's seeds may choose different parameters: one row for them all
        pkey = "calibrated" if calibrated else _params_key(r["params"])
        groups.setdefault(key, {}).setdefault((r["method"], pkey), []).append(r)
    out = []
    for key, by_run in groups.items():
        summary_rows = []
        for (method, pkey), runs in by_run.items():
            runs = sorted(runs, key=lambda r: int(r["seed"]))
            calibrated = pkey == "calibrated"
            row = SummaryRow(method, dict(runs[0]["params"] or {}) if calibrated
                             else json.loads(pkey), [int(r["seed"]) for r in runs],
                             run_ids=[r.get("run_id") for r in runs],
                             verdicts=[r.get("verdict") for r in runs], calibrated=calibrated,
                             calibrations=[r.get("calibration") for r in runs])
            for m in METRIC_COLUMNS:
                vals = np.array([r[m] for r in runs if r.get(m) is not None], dtype=float)
                if len(vals):
                    row.mean[m] = float(vals.mean())
                    row.std[m] = float(vals.std(ddof=1)) if len(vals) > 1 else None
            summary_rows.append(row)
        # the references first (retrain, original), then one stable order in every scenario,
        # whatever order the runs finished in: the methods by name, each method's grid points
        # as they appear, its calibrated row last
        summary_rows.sort(key=lambda r: (_REFERENCE_ORDER.get(r.method, len(_REFERENCE_ORDER)),
                                         r.method if r.method not in _REFERENCE_ORDER else "",
                                         r.calibrated))
        _set_shown(summary_rows)
        metrics = [m for m in METRIC_COLUMNS if any(m in r.mean for r in summary_rows)]
        s = ScenarioSummary(*key, kinds[key], metrics, summary_rows, {})
        s.best = _best(s)
        out.append(s)
    return out


def _set_shown(rows: list[SummaryRow]) -> None:
    """Label each row by the hyper-parameters that tell it from its method's other rows."""
    for method in {r.method for r in rows}:
        same = [r for r in rows if r.method == method and not r.calibrated]
        keys = sorted({k for r in same for k in r.params})
        varying = tuple(k for k in keys
                        if len({json.dumps(r.params.get(k), sort_keys=True) for r in same}) > 1)
        for r in same:
            r.shown = varying


def _best(s: ScenarioSummary) -> dict[str, set[int]]:
    """Per metric with a rule, the indices of the best rows other than the references (ties
    all marked). An MIA figure is ranked only among the rows where it is informative
    (:meth:`ScenarioSummary.uninformative`), and not at all when the reference's is not: a
    figure the attack cannot back says nothing about forgetting, and "closest to a reference
    figure that is itself noise" says nothing either.

    Best respects the scenario's goal: a row that did not forget (:func:`_did_not_forget`)
    is best at nothing, or the highest test accuracy of a class scenario would go to the
    methods that left the class known."""
    ref = s.reference
    no_power = s.uninformative()
    failed = {i for i, r in enumerate(s.rows) if _did_not_forget(r, s, ref)}
    best: dict[str, set[int]] = {}
    for m in s.metrics:
        rule = BEST_RULES.get(m)
        skip = no_power.get(m, set()) | failed
        cands = {i: r.mean[m] for i, r in enumerate(s.rows)
                 if r.method not in _REFERENCE_ORDER and m in r.mean and i not in skip}
        if rule is None or not cands:
            continue
        if rule == "closest":
            if ref is None or m not in ref.mean or any(s.rows[i] is ref for i in skip):
                continue
            score = {i: -abs(v - ref.mean[m]) for i, v in cands.items()}
        else:
            score = {i: (v if rule == "max" else -v) for i, v in cands.items()}
        top = max(score.values())
        best[m] = {i for i, v in score.items() if math.isclose(v, top, rel_tol=1e-12,
                                                                 abs_tol=1e-12)}
    return best


#: Without a verdict, a row of a class scenario did not forget when its forget accuracy is
#: more than this above the retrained model's.
NOT_FORGOTTEN_GAP = 0.05


def _did_not_forget(r: SummaryRow, s: ScenarioSummary, ref: SummaryRow | None) -> bool:
    """Whether a row failed the scenario's goal: its oracle-free verdict is ``not forgotten``
    for every seed (where recorded), or, without a verdict, in a class scenario its forget
    accuracy is more than :data:`NOT_FORGOTTEN_GAP` above the retrained model's."""
    given = [v for v in r.verdicts if v]
    if given:
        return all(v == "not forgotten" for v in given)
    if s.scenario_kind == "class" and ref is not None and "forget_acc" in r.mean \
            and "forget_acc" in ref.mean:
        return r.mean["forget_acc"] - ref.mean["forget_acc"] > NOT_FORGOTTEN_GAP
    return False


# ---------------------------------------------------------------------- the plot

#: The colour of each verdict in the trade-off figure (the terminal's colours, darker).
_VERDICT_COLOUR = {"forgotten": "tab:green", "partial": "tab:orange", "not forgotten": "tab:red",
                   "utility lost": "tab:purple"}

#: At most this many names are written beside one point of the trade-off figure.
_NAMES_PER_POINT = 4


def _most_common_outcome(row: SummaryRow) -> str | None:
    given = [v for v in row.verdicts if v]
    return max(dict.fromkeys(given), key=given.count) if given else None


def tradeoff_clusters(xs: Sequence[float], ys: Sequence[float],
                      tol: float = 0.06) -> list[list[int]]:
    """The points that would be drawn on top of each other: groups of indices whose x and y
    are both within ``tol`` of each axis's range of the first point of the group (in order
    of first appearance), so that each group is labelled once."""
    xr = (max(xs) - min(xs)) or 1.0
    yr = (max(ys) - min(ys)) or 1.0
    groups: list[list[int]] = []
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        for g in groups:
            if abs(xs[g[0]] - x) <= tol * xr and abs(ys[g[0]] - y) <= tol * yr:
                g.append(i)
                break
        else:
            groups.append([i])
    return groups


def _label_clusters(ax: Any, labels: Sequence[str], xs: Sequence[float],
                    ys: Sequence[float]) -> list[tuple[float, float, float, float]]:
    """Label each cluster of points (:func:`tradeoff_clusters`) once, beside its first point:
    the right half's labels to the left, so that they stay in the frame; labels that would
    cover one another on the same side are pushed down below each other, with a line to their
    point. Returns each label's estimated box, ``(left, right, top, bottom)`` in pixels."""
    fig = ax.figure
    to_px = ax.transData.transform
    middle = (min(xs) + max(xs)) / 2
    per_pt = fig.dpi / 72.0  # pixels per point
    line, gap = 7 * 1.15 * per_pt, 2.0 * per_pt  # a 7-point line; the space between labels
    placed: list[tuple[float, float, float, float]] = []  # left, right, top, bottom (px)
    for group in sorted(tradeoff_clusters(xs, ys), key=lambda g: -ys[g[0]]):
        names = [labels[i] for i in group]
        shown = names[:_NAMES_PER_POINT] + ([f"+{len(names) - _NAMES_PER_POINT} more"]
                                            if len(names) > _NAMES_PER_POINT else [])
        x, y = xs[group[0]], ys[group[0]]
        right = x > middle
        px, py = to_px((x, y))
        top = py - 4 * per_pt
        height = len(shown) * line
        width = max(map(len, shown)) * 7 * 0.6 * per_pt  # about 0.6 em per character
        left = px - 8 * per_pt - width if right else px + 8 * per_pt
        moved = True
        while moved:  # below every label above whose box it would cover
            moved = False
            for oleft, oright, otop, obottom in placed:
                if (left < oright and oleft < left + width
                        and top - height < otop and top > obottom - gap):
                    top, moved = obottom - gap, True
        dy = (top - py) / per_pt
        placed.append((left, left + width, top, top - height))
        ax.annotate("\n".join(shown), (x, y), textcoords="offset points",
                    xytext=(-8.0 if right else 8.0, dy), ha="right" if right else "left", va="top",
                    fontsize=7, linespacing=1.1,
                    arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5}
                    if dy < -10 else None)
    return placed


def tradeoff_png(s: ScenarioSummary) -> bytes | None:
    """The scenario's trade-off plot as PNG bytes: x = ``forget_acc_gap`` (the distance of the
    forget accuracy from the retrained model's), y = retain_acc, point size by seconds, the
    colour by verdict (the retrained model a star, the original a square). Points that would
    overlap are labelled once, with their names (at most :data:`_NAMES_PER_POINT`, then how
    many more), so that no label covers another; ``None`` without a reference or these
    metrics."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from unlearnkit.report.figures import png_bytes

    ref = s.reference
    if ref is None or "forget_acc" not in ref.mean:
        return None
    pts = [r for r in s.rows if "forget_acc" in r.mean and "retain_acc" in r.mean]
    if not pts:
        return None
    secs = [r.mean.get("seconds") for r in pts]
    top = max((x for x in secs if x is not None), default=0.0) or 1.0
    fig = Figure(figsize=(6.4, 4.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs = [abs(r.mean["forget_acc"] - ref.mean["forget_acc"]) for r in pts]
    ys = [r.mean["retain_acc"] for r in pts]
    for r, sec, x, y in zip(pts, secs, xs, ys, strict=True):
        ax.scatter([x], [y], s=30.0 + 400.0 * (sec or 0.0) / top, alpha=0.55,
                   color=_VERDICT_COLOUR.get(_most_common_outcome(r) or "", "tab:gray"),
                   marker={REFERENCE: "*", ORIGINAL: "s"}.get(r.method, "o"),
                   edgecolors="black", linewidths=0.4)
    ax.margins(x=0.1, y=0.1)
    used = {_most_common_outcome(r) for r in pts}
    handles = [Line2D([], [], ls="", marker="o", color=c, label=v, alpha=0.7)
               for v, c in _VERDICT_COLOUR.items() if v in used]
    handles += [Line2D([], [], ls="", marker=m, color="tab:gray", label=name)
                for m, name in (("*", "the retrained model"), ("s", "the original"))]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=7,
               title="colour: verdict; size: seconds", title_fontsize=7)
    ax.set_xlabel("forget_acc_gap↓: |forget_acc - the retrained model's|")
    ax.set_ylabel("retain_acc↑")
    ax.set_title(s.title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.draw_without_rendering()  # the layout first: the labels are placed in its pixels
    _label_clusters(ax, [p.label for p in pts], xs, ys)
    return png_bytes(fig, dpi=100)


# ---------------------------------------------------------------------- the documents
def _rule_lines() -> list[tuple[str, str]]:
    by_rule: dict[str, list[str]] = {}
    for m, rule in BEST_RULES.items():
        by_rule.setdefault(rule, []).append(m)
    return [(_RULE_TEXT[rule], ", ".join(ms)) for rule, ms in by_rule.items()]


_DISTANCE = ("Each scenario's leaderboard ranks its rows by avg_gap, the distance to the "
             "retrained model: the mean absolute gap between the row's and the retrained "
             "model's forget, retain and test accuracy and, where measured, the mia_confidence "
             "member rate on the forget set (SalUn's \"Avg. Gap\", Fan et al., ICLR 2024; 0 = "
             "indistinguishable from retraining on these figures), mean over seeds; ties are "
             "broken by js_divergence (the mean Jensen-Shannon divergence of the two models' "
             "outputs on the forget set). This is the one place where the retrained model "
             "judges a method: the verdict is oracle-free, and calibration never sees the "
             "retrained model. A calibrated row is its method at the parameters that its "
             "search (the config's calibrate) chose within the budget, its seconds the whole "
             "search's, every trial counted; a method's other rows are its defaults and grid "
             "points. Neither reference is ranked: the original's distance is the \"do "
             "nothing\" baseline, the retrain row (a second retraining) the noise floor.")

_GLANCE = ("Per scenario: the rows closest to the retrained model (avg_gap, lower is better; "
           "see How to read the tables), how many rows each oracle-free verdict has, and that "
           "distance against seconds. A calibrated row is its method at the parameters its "
           "search chose within the budget, its seconds the whole search's.")

_INTRO = ("In the summary tables, each cell is the mean ± standard deviation (ddof=1) over "
          "seeds (just the mean for one seed); n is the number of seeds. A method is labelled "
          "by the hyper-parameters that vary among its rows (all of them are in the --json "
          "output). The retrained "
          f"model's row (method '{REFERENCE}') comes first, as the reference, then the "
          f"original model's before unlearning (method '{ORIGINAL}', where stored); neither is "
          "ever marked. An MIA figure marked † is uninformative: its attack has no power on "
          f"that model (it tells retain from test with a cross-validated AUC below {MIN_POWER}) "
          "or does not score the original model at least "
          f"{MIN_SEPARATION} above the retrained one; it is greyed, explained under the table, "
          "and never ranked (its column is not ranked at all when the reference's is marked). "
          "A row that did not forget (verdict 'not forgotten') is best at nothing. "
          "The best value of each column among the other rows is in bold:")

_NO_TRADEOFF = ("(No trade-off plot: no retrained reference with forget_acc and retain_acc.)")
_NO_ARTEFACTS = ("(No artefacts stored for this scenario's runs: no training curves, "
                 "per-class accuracy, loss or saliency figures.)")
_NO_LEADERBOARD = ("(No leaderboard: no row has an avg_gap, which needs the retrained "
                   "reference.)")
_NO_PARETO = "(No Pareto figure: no row has both avg_gap and seconds.)"
_FOLDED = ("Every figure below is folded: open a heading to see its figures. Per-method "
           "artefacts are drawn as small multiples, a panel per method.")

#: How many rows the "At a glance" block lists per scenario.
TOP = 3

#: The leaderboard's metric columns (the distance first).
_BOARD_METRICS = ("avg_gap", "forget_acc_gap", "js_divergence", "seconds", "speedup")

#: The trial table's columns (:data:`unlearnkit.bench.store.TRIAL_COLUMNS` but ``params``).
_TRIAL_COLUMNS = ("number", "state", "value", "outcome", "retained", "shortfall", "seconds")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "scenario"


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*")


def _unique(name: str, used: set[str]) -> str:
    out, k = name, 1
    while out in used:
        k += 1
        out = f"{name}-{k}"
    used.add(out)
    return out


@dataclass
class _Section:
    """One scenario of the documents: its table, leaderboard, figures (with their file names),
    calibration trials (by run_id), notes."""

    summary: ScenarioSummary
    anchor: str
    figures: list[tuple[Any, str]]  # (FigureImage, file name)
    notes: list[str]
    has_artefacts: bool
    board: Leaderboard | None = None
    trials: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def kinds(self) -> list[str]:
        """The kinds of the folded figures (all but the Pareto figure), in order."""
        return list(dict.fromkeys(f.kind for f, _ in self.figures if f.kind != "pareto"))

    def pareto(self) -> tuple[Any, str] | None:
        return next(((f, n) for f, n in self.figures if f.kind == "pareto"), None)

    def calibrated_runs(self) -> list[tuple[SummaryRow, int, str]]:
        """(row, seed, run_id) of each calibrated run with stored trials."""
        return [(r, seed, rid) for r in self.summary.rows if r.calibrated
                for seed, rid in zip(r.seeds, r.run_ids, strict=False)
                if rid is not None and self.trials.get(rid)]


def _kind_heading(kind: str) -> str:
    from unlearnkit.report.figures import FIGURE_KINDS

    return FIGURE_KINDS.get(kind, kind)


def _kind_note(kind: str) -> str:
    from unlearnkit.report.figures import KIND_NOTES

    return KIND_NOTES.get(kind, "")


def _opt(x: float | None) -> str:
    return "-" if x is None else _fmt(x)


def _top_text(e: Any) -> str:
    """One line of the "At a glance" list."""
    bits = [f"avg_gap {_opt(e.avg_gap)}", f"{_opt(e.seconds)} s"]
    if any(e.row.verdicts):
        bits.append(e.verdict)
    if e.calibrated:
        bits.append(e.params_text())
    return f"{e.label}: " + ", ".join(bits)


def _counts_text(s: ScenarioSummary) -> str:
    from unlearnkit.report.leaderboard import verdict_counts

    counts = verdict_counts(s)
    n = sum(counts.values())
    if not n or set(counts) == {"no verdict"}:
        return "No verdict was recorded (the split had no validation set)."
    return (f"Verdicts of the {n} rows: "
            + ", ".join(f"{k} {v}" for k, v in counts.items()) + ".")


def _vs_text(e: Any) -> str:
    return {True: "closer", False: "not closer", None: "-"}[e.closer_than_original]


def _trial_cell(t: Mapping[str, Any], c: str) -> str:
    v = t.get(c)
    if v is None:
        return "-"
    return _fmt(v) if isinstance(v, float) else str(v)


def _trial_params(t: Mapping[str, Any]) -> str:
    p = t.get("params") or {}
    return ", ".join(f"{k}={_fmt(v) if isinstance(v, float) else v}" for k, v in p.items())


def _best_trial(row: SummaryRow, seed: int) -> int | None:
    cal = row.calibrations[row.seeds.index(seed)] if seed in row.seeds else None
    return (cal or {}).get("best_trial")


def _markdown(sections: list[_Section]) -> str:
    lines = ["# Unlearning benchmark report", "", "## At a glance", "", _md_escape(_GLANCE), ""]
    for sec in sections:
        s, board = sec.summary, sec.board
        lines += [f"### [{_md_escape(s.title)}](#{sec.anchor})", ""]
        if board is not None and board.ranked:
            lines += [f"Closest to the retrained model (avg_gap; do nothing: "
                      f"{_opt(board.baseline)}):", ""]
            lines += [f"{e.rank}. {_md_escape(_top_text(e))}" for e in board.top(TOP)] + [""]
        else:
            lines += [_NO_LEADERBOARD, ""]
        lines += [_counts_text(s), ""]
        pareto = sec.pareto()
        if pareto is not None:
            lines += [f"![{_md_escape(pareto[0].title)}]({pareto[1]})", ""]
    lines += ["## How to read the tables", "", _md_escape(_DISTANCE), "", _INTRO, ""]
    lines += [f"- {text}: {ms}" for text, ms in _rule_lines()] + [""]
    if len(sections) > 1:
        lines += ["Scenarios:", ""]
        lines += [f"- [{_md_escape(sec.summary.title)}](#{sec.anchor})" for sec in sections]
        lines.append("")
    for sec in sections:
        lines += _md_section(sec)
    return "\n".join(lines)


def _md_section(sec: _Section) -> list[str]:
    s, board = sec.summary, sec.board
    lines = [f'<a id="{sec.anchor}"></a>', "", f"## {_md_escape(s.title)}", "",
             "### Leaderboard", ""]
    if board is not None and board.ranked:
        lines.append("| rank | method | verdict | " + " | ".join(_BOARD_METRICS)
                     + " | vs do nothing | parameters |")
        lines.append("|---:|---|---|" + "---:|" * len(_BOARD_METRICS) + "---|---|")
        for e in board.entries:
            params = e.params_text() + (f" ({e.calibration_text()})" if e.calibrated else "")
            lines.append(f"| {e.rank or '-'} | {_md_escape(e.label)}"
                         + (" (front)" if e.on_front else "") + f" | {e.verdict} | "
                         + " | ".join(e.row.cell(m) for m in _BOARD_METRICS)
                         + f" | {_vs_text(e)} | {_md_escape(params)} |")
        for ref, name in ((s.original, "do nothing (original)"),
                          (s.reference, "retrain (noise floor)")):
            if ref is not None:
                lines.append(f"| - | {name} | {ref.verdict} | "
                             + " | ".join(ref.cell(m) for m in _BOARD_METRICS) + " | | |")
        lines += ["", "(front): on the Pareto front of avg_gap against seconds.", ""]
    else:
        lines += [_NO_LEADERBOARD, ""]
    lines += [f"### {_kind_heading('pareto')}", ""]
    pareto = sec.pareto()
    if pareto is not None:
        lines += [_kind_note("pareto"), "", f"![{_md_escape(pareto[0].title)}]({pareto[1]})", ""]
    else:
        lines += [_NO_PARETO, ""]
    lines += ["### Summary", ""]
    vcol = s.has_verdicts
    lines.append("| method | n | " + ("verdict | " if vcol else "") + " | ".join(s.metrics)
                 + " |")
    lines.append("|---|---:|" + ("---|" if vcol else "") + "---:|" * len(s.metrics))
    no_power = s.uninformative()
    for i, r in enumerate(s.rows):
        cells = [f"**{r.cell(m)}**" if i in s.best.get(m, ()) else
                 f"{r.cell(m)} †" if i in no_power.get(m, ()) else r.cell(m)
                 for m in s.metrics]
        verdict = f"{r.verdict} | " if vcol else ""
        lines.append(f"| {_md_escape(r.label)} | {r.n} | {verdict}" + " | ".join(cells)
                     + " |")
    lines.append("")
    lines += [f"{_md_escape(note)}\n" for note in _no_power_notes(s)]
    lines += ["### Figures", ""]
    kinds = sec.kinds()
    if "tradeoff" not in kinds:
        lines += ["#### Trade-off", "", _NO_TRADEOFF, ""]
    for kind in kinds:
        lines += [f"#### {_kind_heading(kind)}", "", _kind_note(kind), ""]
        lines += [f"![{_md_escape(f.title)}]({name})\n" for f, name in sec.figures
                  if f.kind == kind]
    runs = sec.calibrated_runs()
    if runs:
        lines += ["#### Calibration trials", "", _TRIALS_NOTE, ""]
        for row, seed, rid in runs:
            best = _best_trial(row, seed)
            lines += [f"{_md_escape(row.label)}, seed {seed} (run {rid}):", "",
                      "| " + " | ".join(_TRIAL_COLUMNS) + " | params | note |",
                      "|" + "---:|" * len(_TRIAL_COLUMNS) + "---|---|"]
            for t in sec.trials[rid]:
                cells = [_md_escape(_trial_cell(t, c)) for c in _TRIAL_COLUMNS]
                if t.get("number") == best:
                    cells[0] = f"**{cells[0]}** (best)"
                lines.append("| " + " | ".join(cells) + f" | {_md_escape(_trial_params(t))} | "
                             f"{_md_escape(t.get('note') or '')} |")
            lines.append("")
    if not sec.has_artefacts:
        lines += [_NO_ARTEFACTS, ""]
    lines += [f"- {_md_escape(note)}" for note in sec.notes]
    if sec.notes:
        lines.append("")
    return lines


_TRIALS_NOTE = ("Each calibrated run's search, trial by trial (trial 0: the method's "
                "defaults): its state, the objective (retained - 2 x shortfall, judged by the "
                "oracle-free verdict on the validation set), the verdict, its seconds, the "
                "searched values and why a trial failed; the best trial is the row's.")

_CSS = ("body{font-family:sans-serif;margin:2em;max-width:110em}"
        "table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.25em .5em;text-align:right}"
        "td:first-child,th:first-child{text-align:left;white-space:nowrap}"
        "img{max-width:100%;height:auto}figure{margin:1em 0}"
        "figcaption{font-size:.85em;color:#555}.note{color:#555;font-size:.9em}"
        "nav ul ul{font-size:.9em}td.no-power{color:#999}"
        ".glance-grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(34em,1fr));"
        "gap:1.5em}.glance{border:1px solid #ddd;border-radius:6px;padding:0 1em}"
        ".glance figure{margin:.5em 0}"
        "div.wide{overflow-x:auto;max-width:100%}"
        "table.leaderboard th,table.leaderboard td.label,table.leaderboard td.params,"
        "table.leaderboard td.lb-verdict,table.leaderboard td.vs{text-align:left}"
        "table.leaderboard tr.front td.label{font-weight:bold}"
        "table.leaderboard td.label{white-space:nowrap}"
        "table.leaderboard tfoot td{color:#666;font-style:italic}"
        "details{margin:.4em 0;border:1px solid #ddd;border-radius:4px;padding:.2em .6em}"
        "details>summary{cursor:pointer;font-weight:bold}"
        "details[open]>summary{margin-bottom:.4em}")


def _num(x: float | None) -> str:
    return "" if x is None else repr(float(x))


def _img(f: Any, name: str, pngs: dict[str, bytes]) -> str:
    e = html.escape
    data = base64.b64encode(pngs[name]).decode("ascii")
    w, h = f.pixels
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{e(f.title)}" '
            f'width="{w}" height="{h}" data-file="{e(name)}" data-kind="{e(f.kind)}">'
            f"<figcaption>{e(f.title)}</figcaption></figure>")


def _glance_html(sections: list[_Section], pngs: dict[str, bytes]) -> list[str]:
    e = html.escape
    parts = ['<section id="at-a-glance">', "<h2>At a glance</h2>",
             f'<p class="note">{e(_GLANCE)}</p>', '<div class="glance-grid">']
    for sec in sections:
        s, board = sec.summary, sec.board
        parts.append(f'<div class="glance" data-scenario="{e(s.scenario)}">')
        parts.append(f'<h3><a href="#{sec.anchor}">{e(s.title)}</a></h3>')
        if board is not None and board.ranked:
            parts.append(f"<p>Closest to the retrained model (avg_gap; do nothing: "
                         f"{e(_opt(board.baseline))}):</p>")
            parts.append('<ol class="top">' + "".join(
                f'<li value="{x.rank}" data-method="{e(x.method)}" '
                f'data-calibrated="{str(x.calibrated).lower()}">{e(_top_text(x))}</li>'
                for x in board.top(TOP)) + "</ol>")
        else:
            parts.append(f'<p class="note">{e(_NO_LEADERBOARD)}</p>')
        parts.append(f'<p class="verdict-counts">{e(_counts_text(s))}</p>')
        pareto = sec.pareto()
        if pareto is not None:
            parts.append(_img(*pareto, pngs))
        parts.append("</div>")
    parts += ["</div>", "</section>"]
    return parts


def _board_html(sec: _Section) -> list[str]:
    e = html.escape
    s, board = sec.summary, sec.board
    if board is None or not board.ranked:
        return [f'<p class="note">{e(_NO_LEADERBOARD)}</p>']
    parts = ['<div class="wide">', f'<table class="leaderboard" data-scenario="{e(s.scenario)}" '
             f'data-baseline="{_num(board.baseline)}">',
             "<thead><tr><th>rank</th><th>method</th><th>verdict</th>"
             + "".join(f"<th>{e(m)}</th>" for m in _BOARD_METRICS)
             + "<th>vs do nothing</th><th>parameters</th></tr></thead>", "<tbody>"]
    for x in board.entries:
        params = e(json.dumps([dict(p) for p in x.params], sort_keys=True), quote=True)
        cells = "".join(
            f'<td data-metric="{m}" data-value="{_num(x.row.mean.get(m))}">'
            f"{e(x.row.cell(m))}</td>" for m in _BOARD_METRICS)
        cal = x.calibration_text()
        front = ' class="front"' if x.on_front else ""
        parts.append(
            f'<tr{front} data-method="{e(x.method)}" '
            f'data-label="{e(x.label)}" data-rank="{x.rank or ""}" '
            f'data-calibrated="{str(x.calibrated).lower()}" '
            f'data-on-front="{str(x.on_front).lower()}" data-chosen=\'{params}\'>'
            f'<td class="rank">{x.rank or "-"}</td><td class="label">{e(x.label)}</td>'
            f'<td class="lb-verdict">{e(x.verdict)}</td>{cells}'
            f'<td class="vs">{_vs_text(x)}</td><td class="params">{e(x.params_text())}'
            + (f'<br><span class="note">{e(cal)}</span>' if cal else "") + "</td></tr>")
    parts.append("</tbody><tfoot>")
    for ref, name in ((s.original, "do nothing (original)"), (s.reference,
                                                              "retrain (noise floor)")):
        if ref is not None:
            parts.append(f'<tr data-method="{e(ref.method)}"><td>-</td><td class="label">'
                         f"{e(name)}</td><td>{e(ref.verdict)}</td>"
                         + "".join(f'<td data-metric="{m}" data-value="{_num(ref.mean.get(m))}">'
                                   f"{e(ref.cell(m))}</td>" for m in _BOARD_METRICS)
                         + "<td></td><td></td></tr>")
    parts.append("</tfoot></table></div>")
    parts.append('<p class="note">Bold: on the Pareto front of avg_gap against seconds. '
                 "vs do nothing: whether the row is closer to the retrained model than the "
                 "original is.</p>")
    return parts


def _summary_html(s: ScenarioSummary) -> list[str]:
    e = html.escape
    parts = ['<div class="wide">', f'<table class="summary" data-scenario="{e(s.scenario)}" '
             f'data-dataset="{e(s.dataset)}" data-arch="{e(s.arch)}" '
             f'data-scenario-kind="{e(s.scenario_kind)}">']
    vcol = s.has_verdicts
    parts.append("<thead><tr><th>method</th><th>n</th>"
                 + ("<th>verdict</th>" if vcol else "")
                 + "".join(f"<th>{e(m)}</th>" for m in s.metrics) + "</tr></thead>")
    parts.append("<tbody>")
    no_power = s.uninformative()
    for i, r in enumerate(s.rows):
        cells = ([f'<td class="forget-verdict" data-verdict="{e(r.verdict)}">'
                  f"{e(r.verdict)}</td>"] if vcol else [])
        for m in s.metrics:
            attrs = f'data-metric="{e(m)}"'
            if m in r.mean:
                attrs += f' data-mean="{_num(r.mean[m])}" data-std="{_num(r.std.get(m))}"'
            best = i in s.best.get(m, ())
            if best:
                attrs += ' data-best="true"'
            text = f"<b>{e(r.cell(m))}</b>" if best else e(r.cell(m))
            if i in no_power.get(m, ()):
                why = "; ".join(no_power_reasons(r.mean, m))
                attrs += (f' class="no-power" data-informative="false" '
                          f'title="{e(why)}: no power"')
                text += " †"
            cells.append(f"<td {attrs}>{text}</td>")
        params = e(json.dumps(r.params, sort_keys=True), quote=True)
        parts.append(f'<tr data-method="{e(r.method)}" data-params=\'{params}\' '
                     f'data-calibrated="{str(r.calibrated).lower()}" '
                     f'data-n="{r.n}"><td>{e(r.label)}</td><td>{r.n}</td>'
                     + "".join(cells) + "</tr>")
    parts.append("</tbody></table></div>")
    parts += [f'<p class="note no-power-note">{e(note)}</p>' for note in _no_power_notes(s)]
    return parts


def _trials_html(sec: _Section) -> list[str]:
    e = html.escape
    runs = sec.calibrated_runs()
    if not runs:
        return []
    parts = [f'<details class="calibration" id="{sec.anchor}-calibration">',
             f"<summary>Calibration trials ({len(runs)} calibrated run"
             f"{'s' if len(runs) > 1 else ''})</summary>", f'<p class="note">{e(_TRIALS_NOTE)}</p>']
    for row, seed, rid in runs:
        best = _best_trial(row, seed)
        parts.append(f"<p>{e(row.label)}, seed {seed} (run {e(rid)}):</p>")
        parts.append(f'<table class="trials" data-run-id="{e(rid)}" '
                     f'data-method="{e(row.method)}">'
                     "<thead><tr>" + "".join(f"<th>{c}</th>" for c in _TRIAL_COLUMNS)
                     + "<th>params</th><th>note</th></tr></thead><tbody>")
        for t in sec.trials[rid]:
            mark = ' class="best" data-best="true"' if t.get("number") == best else ""
            parts.append(f"<tr{mark}>" + "".join(
                f"<td>{e(_trial_cell(t, c))}{' (best)' if c == 'number' and mark else ''}</td>"
                for c in _TRIAL_COLUMNS)
                + f'<td class="params">{e(_trial_params(t))}</td>'
                f'<td class="params">{e(t.get("note") or "")}</td></tr>')
        parts.append("</tbody></table>")
    parts.append("</details>")
    return parts


def _html(sections: list[_Section], pngs: dict[str, bytes]) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             '<link rel="icon" href="data:,">',
             "<title>Unlearning benchmark report</title>", f"<style>{_CSS}</style>",
             "</head>", "<body>", "<h1>Unlearning benchmark report</h1>"]
    parts += _glance_html(sections, pngs)
    parts += ['<nav id="contents">', "<h2>Contents</h2>", "<ul>",
              '<li><a href="#how-to-read">How to read the tables</a></li>']
    for sec in sections:
        subs = [("leaderboard", "Leaderboard"), ("pareto", _kind_heading("pareto")),
                ("summary", "Summary"), ("figures", "Figures")]
        links = "".join(f'<li><a href="#{sec.anchor}-{k}">{e(h)}</a></li>' for k, h in subs)
        parts.append(f'<li><a href="#{sec.anchor}">{e(sec.summary.title)}</a>'
                     f"<ul>{links}</ul></li>")
    parts += ["</ul>", "</nav>", '<section id="how-to-read">', "<h2>How to read the tables</h2>",
              f"<p>{e(_DISTANCE)}</p>", f"<p>{e(_INTRO)}</p>", "<ul>"]
    parts += [f"<li>{e(text)}: {e(ms)}</li>" for text, ms in _rule_lines()]
    parts += ["</ul>", "</section>"]
    for sec in sections:
        s = sec.summary
        parts.append(f'<section id="{sec.anchor}">')
        parts.append(f"<h2>{e(s.title)}</h2>")
        parts.append(f'<h3 id="{sec.anchor}-leaderboard">Leaderboard</h3>')
        parts += _board_html(sec)
        parts.append(f'<h3 id="{sec.anchor}-pareto">{e(_kind_heading("pareto"))}</h3>')
        pareto = sec.pareto()
        if pareto is not None:
            parts.append(f'<p class="note">{e(_kind_note("pareto"))}</p>')
            parts.append(_img(*pareto, pngs))
        else:
            parts.append(f'<p class="note">{e(_NO_PARETO)}</p>')
        parts.append(f'<h3 id="{sec.anchor}-summary">Summary</h3>')
        parts += _summary_html(s)
        parts.append(f'<h3 id="{sec.anchor}-figures">Figures</h3>')
        kinds = sec.kinds()
        if kinds:
            parts.append(f'<p class="note">{e(_FOLDED)}</p>')
        if "tradeoff" not in kinds:
            parts.append(f'<p class="note">{e(_NO_TRADEOFF)}</p>')
        for kind in kinds:
            figs = [(f, name) for f, name in sec.figures if f.kind == kind]
            parts.append(f'<details class="figures" id="{sec.anchor}-{kind}" '
                         f'data-kind="{e(kind)}"><summary>{e(_kind_heading(kind))} '
                         f"({len(figs)} figure{'s' if len(figs) > 1 else ''})</summary>")
            parts.append(f'<p class="note">{e(_kind_note(kind))}</p>')
            parts += [_img(f, name, pngs) for f, name in figs]
            parts.append("</details>")
        parts += _trials_html(sec)
        if not sec.has_artefacts:
            parts.append(f'<p class="note">{e(_NO_ARTEFACTS)}</p>')
        parts += [f'<p class="note">{e(note)}</p>' for note in sec.notes]
        parts.append("</section>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def _no_power_notes(s: ScenarioSummary) -> list[str]:
    """One footnote per MIA figure marked † in the table: where, and why."""
    notes = []
    for m, idx in s.uninformative().items():
        why = "; ".join(f"{s.rows[i].label}: {' and '.join(no_power_reasons(s.rows[i].mean, m))}"
                        for i in sorted(idx))
        notes.append(f"† {m} has no power where marked, so it is not ranked there ({why}).")
    return notes


def _write_bytes(path: Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def _skipped_calibrations(db: str | os.PathLike, rows: list[dict[str, Any]],
                          methods: Sequence[str] | None
                          ) -> dict[tuple[str, str, str], list[str]]:
    """Per (dataset, arch, scenario) of ``rows``, a note for each calibrated run that was
    skipped (no trial finished within its budget), of ``methods`` (``None``: all)."""
    keep = {(r["dataset"], r["arch"], r["scenario"]) for r in rows}
    out: dict[tuple[str, str, str], list[str]] = {}
    for r in read_rows(db):
        key = (r["dataset"], r["arch"], r["scenario"])
        if (r["status"] == "skipped" and r.get("calibration") is not None and key in keep
                and (methods is None or r["method"] in methods)):
            why = r.get("error") or (r["calibration"] or {}).get("note") or "skipped"
            out.setdefault(key, []).append(
                f"{r['method']} (calibrated), seed {r['seed']}: not in the leaderboard: {why}")
    return out


def write_report(db: str | os.PathLike, out_dir: str | os.PathLike, *,
                 scenarios: Sequence[str] | None = None,
                 methods: Sequence[str] | None = None,
                 log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write ``report.md``, ``report.html`` and the figures as PNG files into ``out_dir``,
    each atomically; returns the written files, the summaries, the leaderboards, the claims
    and the verdict check (as dicts).

    The page leads with "At a glance" (per scenario the leaderboard's top rows, the count of
    each verdict and the Pareto figure of :func:`unlearnkit.report.figures.pareto_figure`),
    then per scenario: the leaderboard (:func:`unlearnkit.report.leaderboard.leaderboard`),
    the Pareto figure, the summary table, and folded (``<details>``) every other figure: the
    trade-off plot (where there is a reference), those of
    :func:`unlearnkit.report.figures.scenario_figures` that the stored artefacts allow, and the
    calibrated runs' trials.

    ``scenarios`` and ``methods`` report a subset: only those scenario labels (e.g.
    ``"class 3"``) and methods (the references ``retrain`` and ``original`` are always kept).
    A name that matches no finished run raises :class:`DataError` listing the valid ones.
    ``log`` (e.g. a line on stderr) hears of each scenario's figures: how many were drawn and
    how many were unchanged.

    A figure whose inputs did not change since the last report written into ``out_dir`` is
    not drawn again: its file is reused (:mod:`unlearnkit.report.cache`, the manifest
    ``.figures.json``). ``figures_drawn`` and ``figures_reused`` of the result count them;
    ``files`` lists every file of the report, reused figures included."""
    from unlearnkit.bench.store import read_trials
    from unlearnkit.report.cache import FigureCache
    from unlearnkit.report.figures import figure_jobs
    from unlearnkit.report.leaderboard import leaderboard

    rows = load_finished(db)
    for key, wanted, keep in (("scenario", scenarios, ()),
                              ("method", methods, (REFERENCE, ORIGINAL))):
        if wanted is None:
            continue
        valid = list(dict.fromkeys(r[key] for r in rows))
        for name in wanted:
            if name not in valid:
                raise DataError(f"No finished run of {key} {name!r} in {str(db)!r}. "
                                f"Valid {key}s: {', '.join(map(repr, valid))}.")
        rows = [r for r in rows if r[key] in wanted or r[key] in keep]
    summaries = summarize(rows)
    artefacts = read_artefacts(db)
    calibrated = [r["run_id"] for r in rows if r.get("calibration") is not None]
    trials = read_trials(db, calibrated) if calibrated else {}
    skipped = _skipped_calibrations(db, rows, methods)
    out = Path(out_dir)
    files: list[Path] = []
    pngs: dict[str, bytes] = {}
    used: set[str] = set()
    anchors: set[str] = set()
    sections = []
    say = log or (lambda _m: None)
    start = time.perf_counter()
    cache = FigureCache(out)
    drawn = reused = 0
    for k, s in enumerate(summaries, 1):
        say(f"report: scenario {k}/{len(summaries)}, {s.title}: the figures ...")
        began, before = time.perf_counter(), (drawn, reused)
        named = []
        notes: list[str] = []
        for job in figure_jobs(s, artefacts):
            if cache.empty(job):  # these inputs made no figure last time
                continue
            stem = "-".join(x for x in (job.kind, s.slug, _slug(job.tag) if job.tag else "")
                            if x)
            name = f"{_unique(stem, used)}.png"  # its name if it has a figure
            f = cache.reuse(name, job)
            if f is not None:
                reused += 1
                files.append(out / name)
            else:
                f, note = job.run()
                if note is not None:
                    notes.append(note)
                if f is None:
                    used.discard(name[:-len(".png")])
                    if note is None:
                        cache.drawn_empty(job)
                    continue
                drawn += 1
                files.append(_write_bytes(out / name, f.png))
                cache.drawn(name, job, f)
            pngs[name] = f.png
            named.append((f, name))
        if drawn > before[0]:  # an interrupted report's figures are reused by the next
            cache.save(final=False)
        new, old = drawn - before[0], reused - before[1]
        say(f"report: scenario {k}/{len(summaries)}: {new + old} figures ({new} drawn, "
            f"{old} unchanged) in {time.perf_counter() - began:.1f} s")
        has = any(rid in artefacts for r in s.rows for rid in r.run_ids)
        notes = skipped.get((s.dataset, s.arch, s.scenario), []) + notes
        sections.append(_Section(s, _unique(f"s-{s.slug}", anchors), named, notes, has,
                                 leaderboard(s), trials))
    from unlearnkit.report.claims import check_claims, claims_html, claims_markdown
    from unlearnkit.report.verdicts import agreement_html, agreement_markdown, verdict_agreement

    claims = check_claims(summaries, artefacts)  # the founding report's, on a store with them
    check = verdict_agreement(rows)  # the oracle-free verdict against the retrained model
    page = _html(sections, pngs).replace(
        "</body>", agreement_html(check) + claims_html(claims) + "</body>", 1)
    files.append(_write_bytes(out / "report.md", (_markdown(sections) + agreement_markdown(check)
                                                  + claims_markdown(claims)).encode("utf-8")))
    files.append(_write_bytes(out / "report.html", page.encode("utf-8")))
    cache.save()
    say(f"report: {drawn + 2} files written ({drawn + reused} figures: {drawn} drawn, "
        f"{reused} unchanged) in {time.perf_counter() - start:.1f} s")
    return {"db": str(db), "out": str(out), "files": [str(f) for f in files],
            "figures_drawn": drawn, "figures_reused": reused,
            "scenarios": [s.to_dict() for s in summaries],
            "leaderboards": [sec.board.to_dict() for sec in sections],
            "claims": [c.to_dict() for c in claims], "verdict_check": check.to_dict()}
