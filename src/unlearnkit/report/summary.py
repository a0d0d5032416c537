"""The summary of a benchmark's results: tables per scenario, trade-off plots, a report.

:func:`summarize` turns the finished rows of a results database (``unlearnkit bench``) into
one table per scenario: a row per (method, params), each metric as mean ± std over seeds,
the retrained model's row first as the reference, the original model's next, and the best
value of each column marked according to :data:`BEST_RULES`. :func:`write_report` writes
``report.md``, a self-contained ``report.html`` (the figures embedded as data URIs) and the
figures as PNG files: per scenario a trade-off plot and, from the runs' artefacts, the
figures of :mod:`unlearnkit.report.figures`.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

    @property
    def label(self) -> str:
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
                      "verdict": r.verdict if any(r.verdicts) else None}
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
        groups.setdefault(key, {}).setdefault((r["method"], _params_key(r["params"])),
                                              []).append(r)
    out = []
    for key, by_run in groups.items():
        summary_rows = []
        for (method, pkey), runs in by_run.items():
            runs = sorted(runs, key=lambda r: int(r["seed"]))
            row = SummaryRow(method, json.loads(pkey), [int(r["seed"]) for r in runs],
                             run_ids=[r.get("run_id") for r in runs],
                             verdicts=[r.get("verdict") for r in runs])
            for m in METRIC_COLUMNS:
                vals = np.array([r[m] for r in runs if r.get(m) is not None], dtype=float)
                if len(vals):
                    row.mean[m] = float(vals.mean())
                    row.std[m] = float(vals.std(ddof=1)) if len(vals) > 1 else None
            summary_rows.append(row)
        # the references first (retrain, original), then the others in order of appearance
        summary_rows.sort(key=lambda r: _REFERENCE_ORDER.get(r.method, len(_REFERENCE_ORDER)))
        _set_shown(summary_rows)
        metrics = [m for m in METRIC_COLUMNS if any(m in r.mean for r in summary_rows)]
        s = ScenarioSummary(*key, kinds[key], metrics, summary_rows, {})
        s.best = _best(s)
        out.append(s)
    return out


def _set_shown(rows: list[SummaryRow]) -> None:
    """Label each row by the hyper-parameters that tell it from its method's other rows."""
    for method in {r.method for r in rows}:
        same = [r for r in rows if r.method == method]
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
    figure that is itself noise" says nothing either."""
    ref = s.reference
    no_power = s.uninformative()
    best: dict[str, set[int]] = {}
    for m in s.metrics:
        rule = BEST_RULES.get(m)
        skip = no_power.get(m, set())
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


# ---------------------------------------------------------------------- the plot
#: Up to this many rows, every point of the trade-off plot is labelled; beyond, only the
#: references and each method's representative row (the colours tell the methods).
_LABEL_ALL = 8


def tradeoff_png(s: ScenarioSummary) -> bytes | None:
    """The scenario's trade-off plot as PNG bytes: x = |forget_acc - retrain's|, y =
    retain_acc, point size by seconds, a colour per method; ``None`` without a reference or
    these metrics."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from unlearnkit.report.figures import representative

    ref = s.reference
    if ref is None or "forget_acc" not in ref.mean:
        return None
    pts = [r for r in s.rows if "forget_acc" in r.mean and "retain_acc" in r.mean]
    if not pts:
        return None
    methods = list(dict.fromkeys(r.method for r in pts))
    palette = [f"C{i}" for i in range(10)]
    color = {m: palette[i % len(palette)] for i, m in enumerate(methods)}
    if len(pts) <= _LABEL_ALL:
        labelled = {id(r) for r in pts}
    else:
        reps = [representative(s, m) for m in methods if m not in _REFERENCE_ORDER]
        labelled = {id(r) for r in pts if r.method in _REFERENCE_ORDER}
        labelled |= {id(rep.row) for rep in reps if rep is not None}
    secs = [r.mean.get("seconds") for r in pts]
    top = max((x for x in secs if x is not None), default=0.0) or 1.0
    fig = Figure(figsize=(6.4, 4.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs = [abs(r.mean["forget_acc"] - ref.mean["forget_acc"]) for r in pts]
    middle = (min(xs) + max(xs)) / 2
    seen: set[str] = set()
    for r, sec, x in zip(pts, secs, xs, strict=True):
        y = r.mean["retain_acc"]
        size = 30.0 + 400.0 * (sec or 0.0) / top
        ax.scatter([x], [y], s=size, alpha=0.6, color=color[r.method],
                   marker={REFERENCE: "*", ORIGINAL: "s"}.get(r.method, "o"),
                   label=None if r.method in seen else r.method)
        seen.add(r.method)
        if id(r) not in labelled:
            continue
        right = x > middle  # labels of the right half point left, so they stay in the frame
        ax.annotate(r.label, (x, y), textcoords="offset points", xytext=(-6 if right else 6, 6),
                    ha="right" if right else "left", fontsize=7 if len(pts) > _LABEL_ALL else 8)
    if len(pts) > _LABEL_ALL:
        ax.legend(fontsize=7, markerscale=0.6, loc="best", title="labelled: representative rows",
                  title_fontsize=7)
    ax.margins(x=0.08, y=0.1)
    ax.set_xlabel("|forget_acc - retrained forget_acc|")
    ax.set_ylabel("retain_acc")
    ax.set_title(s.title, fontsize=10)
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


# ---------------------------------------------------------------------- the documents
def _rule_lines() -> list[tuple[str, str]]:
    by_rule: dict[str, list[str]] = {}
    for m, rule in BEST_RULES.items():
        by_rule.setdefault(rule, []).append(m)
    return [(_RULE_TEXT[rule], ", ".join(ms)) for rule, ms in by_rule.items()]


_INTRO = ("Each cell is the mean ± standard deviation (ddof=1) over seeds (just the mean for "
          "one seed); n is the number of seeds. A method is labelled by the hyper-parameters "
          "that vary among its rows (all of them are in the --json output). The retrained "
          f"model's row (method '{REFERENCE}') comes first, as the reference, then the "
          f"original model's before unlearning (method '{ORIGINAL}', where stored); neither is "
          "ever marked. An MIA figure marked † is uninformative: its attack has no power on "
          f"that model (it tells retain from test with a cross-validated AUC below {MIN_POWER}) "
          "or does not score the original model at least "
          f"{MIN_SEPARATION} above the retrained one; it is greyed, explained under the table, "
          "and never ranked (its column is not ranked at all when the reference's is marked). "
          "The best value of each column among the other rows is in bold:")

_NO_TRADEOFF = ("(No trade-off plot: no retrained reference with forget_acc and retain_acc.)")
_NO_ARTEFACTS = ("(No artefacts stored for this scenario's runs: no training curves, "
                 "per-class accuracy, loss or saliency figures.)")


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
    """One scenario of the documents: its table, figures (with their file names), notes."""

    summary: ScenarioSummary
    anchor: str
    figures: list[tuple[Any, str]]  # (FigureImage, file name)
    notes: list[str]
    has_artefacts: bool

    def kinds(self) -> list[str]:
        return list(dict.fromkeys(f.kind for f, _ in self.figures))


def _kind_heading(kind: str) -> str:
    from unlearnkit.report.figures import FIGURE_KINDS

    return FIGURE_KINDS.get(kind, kind)


def _kind_note(kind: str) -> str:
    from unlearnkit.report.figures import KIND_NOTES

    return KIND_NOTES.get(kind, "")


def _markdown(sections: list[_Section]) -> str:
    lines = ["# Unlearning benchmark report", "", _INTRO, ""]
    lines += [f"- {text}: {ms}" for text, ms in _rule_lines()] + [""]
    if len(sections) > 1:
        lines += ["Scenarios:", ""]
        lines += [f"- [{_md_escape(sec.summary.title)}](#{sec.anchor})" for sec in sections]
        lines.append("")
    for sec in sections:
        s = sec.summary
        lines += [f'<a id="{sec.anchor}"></a>', "", f"## {_md_escape(s.title)}", "",
                  "### Summary", ""]
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
        kinds = sec.kinds()
        if "tradeoff" not in kinds:
            lines += ["### Trade-off", "", _NO_TRADEOFF, ""]
        for kind in kinds:
            lines += [f"### {_kind_heading(kind)}", "", _kind_note(kind), ""]
            lines += [f"![{_md_escape(f.title)}]({name})\n" for f, name in sec.figures
                      if f.kind == kind]
        if not sec.has_artefacts:
            lines += [_NO_ARTEFACTS, ""]
        lines += [f"- {_md_escape(note)}" for note in sec.notes]
        if sec.notes:
            lines.append("")
    return "\n".join(lines)


_CSS = ("body{font-family:sans-serif;margin:2em;max-width:110em}"
        "table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.25em .5em;text-align:right}"
        "td:first-child,th:first-child{text-align:left}"
        "img{max-width:100%;height:auto}figure{margin:1em 0}"
        "figcaption{font-size:.85em;color:#555}.note{color:#555;font-size:.9em}"
        "nav ul ul{font-size:.9em}td.no-power{color:#999}")


def _num(x: float | None) -> str:
    return "" if x is None else repr(float(x))


def _html(sections: list[_Section], pngs: dict[str, bytes]) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             '<link rel="icon" href="data:,">',
             "<title>Unlearning benchmark report</title>", f"<style>{_CSS}</style>",
             "</head>", "<body>", "<h1>Unlearning benchmark report</h1>",
             f"<p>{e(_INTRO)}</p>", "<ul>"]
    parts += [f"<li>{e(text)}: {e(ms)}</li>" for text, ms in _rule_lines()]
    parts.append("</ul>")
    parts += ['<nav id="contents">', "<h2>Contents</h2>", "<ul>"]
    for sec in sections:
        subs = [("summary", "Summary")] + [(k, _kind_heading(k)) for k in sec.kinds()]
        links = "".join(f'<li><a href="#{sec.anchor}-{k}">{e(h)}</a></li>' for k, h in subs)
        parts.append(f'<li><a href="#{sec.anchor}">{e(sec.summary.title)}</a>'
                     f"<ul>{links}</ul></li>")
    parts += ["</ul>", "</nav>"]
    for sec in sections:
        s = sec.summary
        parts.append(f'<section id="{sec.anchor}">')
        parts.append(f"<h2>{e(s.title)}</h2>")
        parts.append(f'<h3 id="{sec.anchor}-summary">Summary</h3>')
        parts.append(f'<table class="summary" data-scenario="{e(s.scenario)}" '
                     f'data-dataset="{e(s.dataset)}" data-arch="{e(s.arch)}" '
                     f'data-scenario-kind="{e(s.scenario_kind)}">')
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
                         f'data-n="{r.n}"><td>{e(r.label)}</td><td>{r.n}</td>'
                         + "".join(cells) + "</tr>")
        parts.append("</tbody></table>")
        parts += [f'<p class="note no-power-note">{e(note)}</p>' for note in _no_power_notes(s)]
        kinds = sec.kinds()
        if "tradeoff" not in kinds:
            parts += ["<h3>Trade-off</h3>", f'<p class="note">{e(_NO_TRADEOFF)}</p>']
        for kind in kinds:
            parts.append(f'<h3 id="{sec.anchor}-{kind}">{e(_kind_heading(kind))}</h3>')
            parts.append(f'<p class="note">{e(_kind_note(kind))}</p>')
            for f, name in sec.figures:
                if f.kind != kind:
                    continue
                data = base64.b64encode(pngs[name]).decode("ascii")
                w, h = f.pixels
                parts.append(f'<figure><img src="data:image/png;base64,{data}" '
                             f'alt="{e(f.title)}" width="{w}" height="{h}" '
                             f'data-file="{e(name)}"><figcaption>{e(f.title)}</figcaption>'
                             "</figure>")
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


def write_report(db: str | os.PathLike, out_dir: str | os.PathLike, *,
                 scenarios: Sequence[str] | None = None,
                 methods: Sequence[str] | None = None) -> dict[str, Any]:
    """Write ``report.md``, ``report.html`` and the figures as PNG files into ``out_dir``,
    each atomically: per scenario a trade-off plot (where there is a reference) and the
    figures of :func:`unlearnkit.report.figures.scenario_figures` (those the stored
    artefacts allow); returns the written files and the summaries (as dicts).

    ``scenarios`` and ``methods`` report a subset: only those scenario labels (e.g.
    ``"class 3"``) and methods (the references ``retrain`` and ``original`` are always kept).
    A name that matches no finished run raises :class:`DataError` listing the valid ones."""
    from unlearnkit.report.figures import FigureImage, scenario_figures

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
    out = Path(out_dir)
    files: list[Path] = []
    pngs: dict[str, bytes] = {}
    used: set[str] = set()
    anchors: set[str] = set()
    sections = []
    for s in summaries:
        figures: list[FigureImage] = []
        png = tradeoff_png(s)
        if png is not None:
            figures.append(FigureImage("tradeoff", "", f"trade-off: {s.title}", (6.4, 4.8), png))
        more, notes = scenario_figures(s, artefacts)
        figures += more
        named = []
        for f in figures:
            stem = "-".join(x for x in (f.kind, s.slug, _slug(f.tag) if f.tag else "") if x)
            name = f"{_unique(stem, used)}.png"
            pngs[name] = f.png
            files.append(_write_bytes(out / name, f.png))
            named.append((f, name))
        has = any(rid in artefacts for r in s.rows for rid in r.run_ids)
        sections.append(_Section(s, _unique(f"s-{s.slug}", anchors), named, notes, has))
    from unlearnkit.report.claims import check_claims, claims_html, claims_markdown
    from unlearnkit.report.verdicts import agreement_html, agreement_markdown, verdict_agreement

    claims = check_claims(summaries, artefacts)  # the founding report's, on a store with them
    check = verdict_agreement(rows)  # the oracle-free verdict against the retrained model
    page = _html(sections, pngs).replace(
        "</body>", agreement_html(check) + claims_html(claims) + "</body>", 1)
    files.append(_write_bytes(out / "report.md", (_markdown(sections) + agreement_markdown(check)
                                                  + claims_markdown(claims)).encode("utf-8")))
    files.append(_write_bytes(out / "report.html", page.encode("utf-8")))
    return {"db": str(db), "out": str(out), "files": [str(f) for f in files],
            "scenarios": [s.to_dict() for s in summaries],
            "claims": [c.to_dict() for c in claims], "verdict_check": check.to_dict()}
