"""The summary of a benchmark's results: tables per scenario, trade-off plots, a report.

:func:`summarize` turns the finished rows of a results database (``unlearnkit bench``) into
one table per scenario: a row per (method, params), each metric as mean ± std over seeds,
the retrained model's row first as the reference, and the best value of each column marked
according to :data:`BEST_RULES`. :func:`write_report` writes ``report.md``, a
self-contained ``report.html`` (the plots embedded as data URIs) and one PNG per scenario.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unlearnkit.bench.store import METRIC_COLUMNS, read_rows
from unlearnkit.exceptions import DataError
from unlearnkit.models.checkpoint import atomic_write

__all__ = ["BEST_RULES", "REFERENCE", "ScenarioSummary", "SummaryRow", "load_finished",
           "summarize", "tradeoff_png", "write_report"]

#: The method whose rows are the reference.
REFERENCE = "retrain"

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

    @property
    def label(self) -> str:
        params = ", ".join(f"{k}={self.params[k]}" for k in self.shown if k in self.params)
        return f"{self.method} ({params})" if params else self.method

    @property
    def n(self) -> int:
        return len(self.seeds)

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset, "arch": self.arch, "scenario": self.scenario,
            "scenario_kind": self.scenario_kind, "metrics": list(self.metrics),
            "rows": [{"method": r.method, "params": r.params, "n": r.n, "seeds": r.seeds,
                      "mean": r.mean, "std": r.std} for r in self.rows],
            "best": {m: sorted(i) for m, i in self.best.items()},
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
            row = SummaryRow(method, json.loads(pkey), sorted(int(r["seed"]) for r in runs))
            for m in METRIC_COLUMNS:
                vals = np.array([r[m] for r in runs if r.get(m) is not None], dtype=float)
                if len(vals):
                    row.mean[m] = float(vals.mean())
                    row.std[m] = float(vals.std(ddof=1)) if len(vals) > 1 else None
            summary_rows.append(row)
        # the reference first, then the others in their order of appearance
        summary_rows.sort(key=lambda r: r.method != REFERENCE)
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
    """Per metric with a rule, the indices of the best non-reference rows (ties all marked)."""
    ref = s.reference
    best: dict[str, set[int]] = {}
    for m in s.metrics:
        rule = BEST_RULES.get(m)
        cands = {i: r.mean[m] for i, r in enumerate(s.rows)
                 if r.method != REFERENCE and m in r.mean}
        if rule is None or not cands:
            continue
        if rule == "closest":
            if ref is None or m not in ref.mean:
                continue
            score = {i: -abs(v - ref.mean[m]) for i, v in cands.items()}
        else:
            score = {i: (v if rule == "max" else -v) for i, v in cands.items()}
        top = max(score.values())
        best[m] = {i for i, v in score.items() if math.isclose(v, top, rel_tol=1e-12,
                                                                 abs_tol=1e-12)}
    return best


# ---------------------------------------------------------------------- the plot
def tradeoff_png(s: ScenarioSummary) -> bytes | None:
    """The scenario's trade-off plot as PNG bytes: x = |forget_acc - retrain's|, y =
    retain_acc, point size by seconds; ``None`` without a reference or these metrics."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ref = s.reference
    if ref is None or "forget_acc" not in ref.mean:
        return None
    pts = [r for r in s.rows if "forget_acc" in r.mean and "retain_acc" in r.mean]
    if not pts:
        return None
    secs = [r.mean.get("seconds") for r in pts]
    top = max((x for x in secs if x is not None), default=0.0) or 1.0
    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs = [abs(r.mean["forget_acc"] - ref.mean["forget_acc"]) for r in pts]
    middle = (min(xs) + max(xs)) / 2
    for r, sec, x in zip(pts, secs, xs, strict=True):
        y = r.mean["retain_acc"]
        size = 30.0 + 400.0 * (sec or 0.0) / top
        ax.scatter([x], [y], s=size, alpha=0.6,
                   marker="*" if r.method == REFERENCE else "o")
        right = x > middle  # labels of the right half point left, so they stay in the frame
        ax.annotate(r.label, (x, y), textcoords="offset points", xytext=(-6 if right else 6, 6),
                    ha="right" if right else "left", fontsize=8)
    ax.margins(x=0.08, y=0.1)
    ax.set_xlabel("|forget_acc - retrained forget_acc|")
    ax.set_ylabel("retain_acc")
    ax.set_title(s.title, fontsize=10)
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
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
          "model's row (method "
          f"'{REFERENCE}') comes first, as the reference, and is never marked. The best value "
          "of each column among the other rows is in bold:")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "scenario"


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*")


def _markdown(summaries: list[ScenarioSummary], images: list[str | None]) -> str:
    lines = ["# Unlearning benchmark report", "", _INTRO, ""]
    lines += [f"- {text}: {ms}" for text, ms in _rule_lines()] + [""]
    for s, img in zip(summaries, images, strict=True):
        lines += [f"## {_md_escape(s.title)}", ""]
        lines.append("| method | n | " + " | ".join(s.metrics) + " |")
        lines.append("|---|---:|" + "---:|" * len(s.metrics))
        for i, r in enumerate(s.rows):
            cells = [f"**{r.cell(m)}**" if i in s.best.get(m, ()) else r.cell(m)
                     for m in s.metrics]
            lines.append(f"| {_md_escape(r.label)} | {r.n} | " + " | ".join(cells) + " |")
        lines.append("")
        if img:
            lines += [f"![trade-off: {_md_escape(s.title)}]({img})", ""]
        else:
            lines += ["(No trade-off plot: no retrained reference with forget_acc and "
                      "retain_acc.)", ""]
    return "\n".join(lines)


_CSS = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.25em .5em;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}")


def _html(summaries: list[ScenarioSummary], pngs: list[bytes | None]) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             "<title>Unlearning benchmark report</title>", f"<style>{_CSS}</style>",
             "</head>", "<body>", "<h1>Unlearning benchmark report</h1>",
             f"<p>{e(_INTRO)}</p>", "<ul>"]
    parts += [f"<li>{e(text)}: {e(ms)}</li>" for text, ms in _rule_lines()]
    parts.append("</ul>")
    for s, png in zip(summaries, pngs, strict=True):
        parts.append(f"<h2>{e(s.title)}</h2>")
        parts.append("<table>")
        parts.append("<thead><tr><th>method</th><th>n</th>"
                     + "".join(f"<th>{e(m)}</th>" for m in s.metrics) + "</tr></thead>")
        parts.append("<tbody>")
        for i, r in enumerate(s.rows):
            cells = "".join(
                f"<td><b>{e(r.cell(m))}</b></td>" if i in s.best.get(m, ())
                else f"<td>{e(r.cell(m))}</td>" for m in s.metrics)
            parts.append(f"<tr><td>{e(r.label)}</td><td>{r.n}</td>{cells}</tr>")
        parts.append("</tbody></table>")
        if png:
            data = base64.b64encode(png).decode("ascii")
            parts.append(f'<p><img src="data:image/png;base64,{data}" '
                         f'alt="{e("trade-off: " + s.title)}"></p>')
        else:
            parts.append("<p>(No trade-off plot: no retrained reference with forget_acc "
                         "and retain_acc.)</p>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def _write_bytes(path: Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def write_report(db: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Write ``report.md``, ``report.html`` and one trade-off PNG per scenario (where there is
    a reference) into ``out_dir``, each atomically; returns the written files and the
    summaries (as dicts)."""
    summaries = summarize(load_finished(db))
    out = Path(out_dir)
    files: list[Path] = []
    pngs: list[bytes | None] = []
    names: list[str | None] = []
    used: set[str] = set()
    for s in summaries:
        png = tradeoff_png(s)
        pngs.append(png)
        if png is None:
            names.append(None)
            continue
        base = name = f"tradeoff-{_slug(f'{s.dataset}-{s.arch}-{s.scenario}')}"
        k = 1
        while name in used:
            k += 1
            name = f"{base}-{k}"
        used.add(name)
        names.append(f"{name}.png")
        files.append(_write_bytes(out / f"{name}.png", png))
    files.append(_write_bytes(out / "report.md", _markdown(summaries, names).encode("utf-8")))
    files.append(_write_bytes(out / "report.html", _html(summaries, pngs).encode("utf-8")))
    return {"db": str(db), "out": str(out), "files": [str(f) for f in files],
            "scenarios": [s.to_dict() for s in summaries]}
