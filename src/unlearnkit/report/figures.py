"""The report's figures beyond the summary table, per scenario, as PNG bytes.

Built from a :class:`~unlearnkit.report.summary.ScenarioSummary` and the runs' artefacts
documents (:func:`unlearnkit.bench.store.read_artefacts`, keys at
:data:`unlearnkit.bench.store.ARTEFACT_KEYS`):

- ``pareto``: distance to the retrained model (``avg_gap``) against seconds, each method's
  defaults and its calibrated point joined by an arrow, the Pareto front as a step line
  (:mod:`unlearnkit.report.leaderboard`);
- ``bars``: retain / forget / test accuracy of the original, the retrained model and each
  method's :func:`representative` row;
- ``sweep``: per method and hyper-parameter, the accuracies against the parameter's values
  (the rows grouped as :func:`sweeps` says);
- ``curves``: accuracy per epoch during the methods' training phases (artefact ``curves``):
  small multiples, a panel per method (its representative row), and a figure of its own for
  a method with several rows that have curves;
- ``per-class``: test accuracy per class, the forgotten classes marked (``per_class``);
- ``losses``: per-sample loss histograms of the forget and test sets (``losses``), small
  multiples: the original, the retrained model, then a panel per method;
- ``saliency``: saliency maps and Grad-CAM of a forget and a retain sample (``saliency``),
  small multiples: a row per model.

Every figure is drawn with matplotlib's Agg canvas (no pyplot, no display) at :data:`DPI`, so
a figure of ``figsize`` inches is a PNG of ``figsize * DPI`` pixels.

:func:`figure_jobs` lists a scenario's figures before drawing any: each a :class:`FigureJob`
with the digest of exactly the data it is drawn from (:func:`figure_digest`), so that
:func:`unlearnkit.report.write_report` can reuse a figure whose inputs did not change.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unlearnkit.report.summary import ORIGINAL, REFERENCE, ScenarioSummary, SummaryRow

__all__ = ["ACCURACIES", "DPI", "FIGURE_KINDS", "FIGURE_VERSION", "KIND_NOTES", "FigureImage",
           "FigureJob", "Representative", "Sweep", "SweepLine", "bars_figure", "curves_figure",
           "curves_grid", "figure_digest", "figure_jobs", "losses_grid", "method_defaults",
           "pareto_figure", "per_class_figure", "png_bytes", "representative", "saliency_grid",
           "scenario_figures", "sweep_figure", "sweeps"]

#: Pixels per inch of every figure (``savefig`` at the figure's dpi).
DPI = 100

#: The version of the drawing code, part of every figure's digest (:func:`figure_digest`):
#: bump it when a change to how figures are drawn is not in this module, ``summary.py`` or
#: ``leaderboard.py`` (whose source is in the digest too), e.g. in a helper they call, so that
#: :func:`unlearnkit.report.write_report` draws every figure again instead of reusing it.
FIGURE_VERSION = 1

#: The metrics the bars, sweeps and curves show, one panel each.
ACCURACIES: tuple[str, ...] = ("retain_acc", "forget_acc", "test_acc")

#: The kinds of figure, in the order the report shows them, with their section headings.
FIGURE_KINDS: dict[str, str] = {
    "pareto": "Distance to the retrained model against seconds",
    "tradeoff": "Trade-off",
    "bars": "Original vs unlearned",
    "sweep": "Hyper-parameter sweeps",
    "curves": "Training curves",
    "per-class": "Per-class accuracy",
    "losses": "Loss distributions",
    "saliency": "Saliency maps",
}

#: One line per kind of figure that explains how to read it.
KIND_NOTES: dict[str, str] = {
    "pareto": "x: seconds (log scale; a calibrated point's are its whole search's, every trial "
              "counted); y: avg_gap, the distance to the retrained model (lower is better). "
              "Hollow: a method at its defaults (smaller: its other grid points); filled: "
              "calibrated, joined to the defaults by an arrow. Step line: the Pareto front "
              "(no point is both faster and closer), its points marked #rank (the "
              "leaderboard's) and named in the legend; dashed: the original's distance (do "
              "nothing); star: the retrain row (a second retraining, the noise floor).",
    "tradeoff": "x: distance of the forget accuracy to the retrained model's; y: retain "
                "accuracy; point size: seconds. Star: retrained, square: original.",
    "bars": "Mean ± std over seeds of the original model, the retrained model and each "
            "method's representative row (its default hyper-parameters where run, else the "
            "row with the lowest avg_gap).",
    "sweep": "One figure per method and hyper-parameter swept over at least 3 values; a line "
             "per combination of the method's other varying hyper-parameters; mean ± std over "
             "seeds. Dashed: retrained model, dotted: original model.",
    "curves": "Accuracy during the methods' training phases (mean over seeds). First a panel "
              "per method (its representative row): retain, forget and test accuracy, dashed "
              "at the retrained model's values, dash-dotted vertical lines where a phase "
              "starts. Then, for a method with several rows with curves, a figure of its own: "
              "a line per hyper-parameter setting, phase starts in its colour; dashed: "
              "retrained model, dotted: original model.",
    "per-class": "Test accuracy per class (mean over seeds); the forgotten classes are marked "
                 "in red.",
    "losses": "Per-sample cross-entropy of the forget (red) and test (blue) sets, density "
              "histograms with bins shared by every panel (values above the 99.5th percentile "
              "in the last bin): the original and the retrained model, then each method's "
              "representative row (first seed).",
    "saliency": "A forget and a retain sample (first seed of each method's representative "
                "row): the inputs, then a row per model: |input gradient| (saliency) and, "
                "where the model has convolutions, Grad-CAM overlaid on the input; each map "
                "normalised to its maximum, each titled with the model's prediction.",
}

_REF_STYLE = {REFERENCE: ("retrained", "--", "black"), ORIGINAL: ("original", ":", "dimgray")}
_MODELS = ("original", "unlearned", "retrained")


@dataclass
class FigureImage:
    """One figure: its ``kind`` (a key of :data:`FIGURE_KINDS`), ``tag`` (what tells it from
    the scenario's other figures of the kind, for its file name), ``title`` (also the image's
    alt text), ``figsize`` (inches; the PNG is ``figsize * DPI`` pixels) and ``png``."""

    kind: str
    tag: str
    title: str
    figsize: tuple[float, float]
    png: bytes

    @property
    def pixels(self) -> tuple[int, int]:
        """(width, height) of the PNG in pixels."""
        return round(self.figsize[0] * DPI), round(self.figsize[1] * DPI)


# ---------------------------------------------------------------------- rows and parameters
def _is_number(v: Any) -> bool:
    return (isinstance(v, numbers.Real) and not isinstance(v, bool)
            and math.isfinite(float(v)))


def _same(a: Any, b: Any) -> bool:
    """Equal hyper-parameter values (``10`` and ``10.0`` alike, lists and tuples alike)."""
    if _is_number(a) and _is_number(b):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    return _vkey(a) == _vkey(b)


def _vkey(v: Any) -> str:
    if _is_number(v):
        return repr(float(v))
    try:
        return json.dumps(v, sort_keys=True)
    except TypeError:
        return repr(v)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _pstr(params: Mapping[str, Any], keys: Iterable[str]) -> str:
    return ", ".join(f"{k}={_fmt(params.get(k))}" for k in keys)


_DEFAULTS: dict[tuple[str, str], dict[str, Any] | None] = {}


def method_defaults(method: str, scenario_kind: str = "class") -> dict[str, Any] | None:
    """The default hyper-parameters of a registered method in a scenario of ``scenario_kind``
    (a per-scenario default at that scenario's value); ``None`` for others, such as the
    pseudo-method ``original``."""
    key = (method, "random" if scenario_kind in ("random", "indices") else "class")
    if key not in _DEFAULTS:
        try:
            from unlearnkit.methods.base import get_method

            _DEFAULTS[key] = dict(get_method(method).for_scenario(key[1]).params())
        except Exception:  # an unknown name: no defaults
            _DEFAULTS[key] = None
    return _DEFAULTS[key]


def _methods(s: ScenarioSummary) -> list[str]:
    """The scenario's methods other than the two references, in table order."""
    return [m for m in dict.fromkeys(r.method for r in s.rows) if m not in (REFERENCE, ORIGINAL)]


def _rows_of(s: ScenarioSummary, method: str) -> list[SummaryRow]:
    return [r for r in s.rows if r.method == method]


def _effective(rows: Sequence[SummaryRow], defaults: Mapping[str, Any] | None
               ) -> list[dict[str, Any]]:
    """Each row's params over the keys of all the rows, a missing (or ``None``) key at its
    default."""
    keys = sorted({k for r in rows for k in r.params})
    defaults = defaults or {}
    return [{k: r.params[k] if r.params.get(k) is not None else defaults.get(k) for k in keys}
            for r in rows]


def _varying(eff: Sequence[Mapping[str, Any]]) -> list[str]:
    keys = sorted({k for e in eff for k in e})
    return [k for k in keys if len({_vkey(e.get(k)) for e in eff}) > 1]


@dataclass
class Representative:
    """A method's representative row in a scenario and ``why`` it was chosen (``defaults``,
    ``lowest avg_gap``, ``lowest forget_acc_gap`` or ``first row``)."""

    row: SummaryRow
    why: str

    @property
    def label(self) -> str:
        return f"{self.row.label} [{self.why}]"


def representative(s: ScenarioSummary, method: str) -> Representative | None:
    """The row of ``method`` the per-method figures show: the one at the method's defaults if
    it was run, else the one with the lowest mean ``avg_gap`` (then ``forget_acc_gap``), else
    the first; ``None`` if the method has no row. A calibrated row is chosen only when the
    method has no other (never as the defaults, even when its search kept them)."""
    rows = _rows_of(s, method)
    if not rows:
        return None
    defaults = method_defaults(method, s.scenario_kind)
    if defaults is not None:
        for r in rows:
            if not r.calibrated and all(k in defaults and (_same(v, defaults[k]) or v is None)
                                        for k, v in r.params.items()):
                return Representative(r, "defaults")
    rows = [r for r in rows if not r.calibrated] or rows  # a calibrated row only if alone
    for metric in ("avg_gap", "forget_acc_gap"):
        scored = [r for r in rows if metric in r.mean]
        if scored:
            return Representative(min(scored, key=lambda r: r.mean[metric]), f"lowest {metric}")
    return Representative(rows[0], "first row")


# ---------------------------------------------------------------------- sweeps
@dataclass
class SweepLine:
    """A line of a sweep: the rows (sorted by ``xs``) that differ only in the swept
    parameter, and the values of the other varying parameters (``fixed``)."""

    fixed: dict[str, Any]
    xs: list[float]
    rows: list[SummaryRow]

    @property
    def label(self) -> str:
        return _pstr(self.fixed, self.fixed)


@dataclass
class Sweep:
    """A sweep figure: ``method``'s metrics against ``param``, one :class:`SweepLine` each."""

    method: str
    param: str
    lines: list[SweepLine] = field(default_factory=list)


def sweeps(s: ScenarioSummary) -> list[Sweep]:
    """The sweep figures of a scenario.

    For each method and each hyper-parameter ``p`` that varies among its rows (a parameter
    missing from a row counts at the method's default), the rows are grouped by the values of
    their other parameters; a group with at least 2 distinct numeric values of ``p`` is a
    line, and ``p`` gets a figure when one of its lines has at least 3 points. So in a crossed
    grid ``lr x epochs`` with 2 values of ``epochs``, the ``lr`` figure has a line per
    ``epochs`` and ``epochs`` has no figure; in a union of sweeps (``lr`` at the default
    ``epochs``, ``epochs`` at the default ``lr``), each parameter gets its own figure.
    Non-numeric parameters (and booleans) are not swept over, and calibrated rows are not
    grid points.
    """
    out = []
    for method in [*_methods(s), REFERENCE]:
        rows = [r for r in _rows_of(s, method) if not r.calibrated]  # grid points only
        if len(rows) < 3:
            continue
        eff = _effective(rows, method_defaults(method, s.scenario_kind))
        varying = _varying(eff)
        for p in varying:
            others = [k for k in varying if k != p]
            groups: dict[tuple[str, ...], list[int]] = {}
            for i, e in enumerate(eff):
                if _is_number(e.get(p)):
                    groups.setdefault(tuple(_vkey(e.get(k)) for k in others), []).append(i)
            lines = []
            for idx in groups.values():
                first: dict[float, int] = {}  # one row per value (the first in table order)
                for i in idx:
                    first.setdefault(float(eff[i][p]), i)
                idx = [first[x] for x in sorted(first)]
                xs = [float(eff[i][p]) for i in idx]
                if len(set(xs)) >= 2:
                    lines.append(SweepLine({k: eff[idx[0]][k] for k in others}, xs,
                                           [rows[i] for i in idx]))
            if any(len(set(line.xs)) >= 3 for line in lines):
                out.append(Sweep(method, p, lines))
    return out


# ---------------------------------------------------------------------- drawing helpers
def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Any, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes, ``figsize * dpi`` pixels, in a palette of 256 colours: a
    third of the size of matplotlib's RGBA, with no visible change on plots like these."""
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    buf.seek(0)
    with Image.open(buf) as im:
        small = im.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _image(fig: Any, kind: str, tag: str, title: str) -> FigureImage:
    w, h = fig.get_size_inches()
    return FigureImage(kind, tag, title, (float(w), float(h)), png_bytes(fig))


def _ref_lines(ax: Any, s: ScenarioSummary, metric: str) -> None:
    for method, (name, style, color) in _REF_STYLE.items():
        row = next((r for r in s.rows if r.method == method), None)
        if row is not None and metric in row.mean:
            ax.axhline(row.mean[metric], ls=style, color=color, lw=1.2, label=name)


def _legend(fig: Any, axes: Sequence[Any], ncols: int = 4, refs_last: bool = True) -> None:
    """One legend below the panels, each label once (the reference lines last)."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    refs = [name for name, _, _ in _REF_STYLE.values()]
    labels = sorted(handles, key=lambda lab: refs_last and lab in refs)
    if handles:
        fig.legend([handles[lab] for lab in labels], labels, loc="outside lower center",
                   ncols=max(1, min(ncols, len(handles))), fontsize=8, frameon=False)


def _std(row: SummaryRow, metric: str) -> float:
    v = row.std.get(metric)
    return 0.0 if v is None else float(v)


def _panels(s: ScenarioSummary, rows: Iterable[SummaryRow]) -> list[str]:
    rows = list(rows)
    return [m for m in ACCURACIES if any(m in r.mean for r in rows)]


# ---------------------------------------------------------------------- small multiples
def _grid(fig: Any, n: int, ncols: int, **kw: Any) -> list[Any]:
    """``n`` axes in rows of ``ncols``; the grid's unused axes are hidden."""
    nrows = math.ceil(n / ncols)
    axes = list(fig.subplots(nrows, ncols, squeeze=False, **kw).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    return axes[:n]


def _short(text: str, width: int = 34) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


#: Marker shapes of the Pareto figure's methods: the colour cycles over 10, the shape changes
#: every 10 methods, so that 30 methods stay apart.
_SHAPES = ("o", "s", "D", "^", "v", "P")


def pareto_figure(s: ScenarioSummary) -> FigureImage | None:
    """Distance to the retrained model (``avg_gap``) against seconds (log scale): each row of
    a method a point, hollow for its defaults and other grid points (smaller), filled when
    calibrated, an arrow from the defaults to the calibrated point; the Pareto front as a step
    line, its points marked with their leaderboard rank and named in the legend; the
    original's distance as a dashed "do nothing" line; the ``retrain`` row as a star. ``None``
    when no row has both metrics."""
    from unlearnkit.report.leaderboard import COST, DISTANCE, leaderboard

    board = leaderboard(s)
    shown = [e for e in board.entries
             if e.avg_gap is not None and e.seconds is not None and e.seconds > 0]
    if not shown:
        return None
    left_out = sum(1 for e in board.entries if e.avg_gap is not None) - len(shown)
    methods = list(dict.fromkeys(e.method for e in board.entries))
    style = {m: (f"C{i % 10}", _SHAPES[(i // 10) % len(_SHAPES)]) for i, m in enumerate(methods)}
    fig = _figure(10.0, 5.6)
    ax = fig.add_subplot()
    at_defaults = {id(rep.row) for m in methods
                   if (rep := representative(s, m)) is not None and rep.why == "defaults"}
    default_xy: dict[str, tuple[float, float]] = {}
    for e in shown:
        color, marker = style[e.method]
        xy = (e.seconds, e.avg_gap)
        is_default = id(e.row) in at_defaults
        if e.calibrated:
            ax.scatter(*xy, s=55, marker=marker, color=color, edgecolors="black",
                       linewidths=0.6, zorder=4)
        else:
            ax.scatter(*xy, s=55 if is_default else 22, marker=marker, facecolors="none",
                       edgecolors=color, linewidths=1.4 if is_default else 0.8,
                       alpha=1.0 if is_default else 0.7, zorder=3)
        if is_default:
            default_xy[e.method] = xy
    for e in shown:  # each calibrated point's arrow from its method's defaults
        if e.calibrated and e.method in default_xy:
            start = default_xy[e.method]
            if start != (e.seconds, e.avg_gap):
                ax.annotate("", xy=(e.seconds, e.avg_gap), xytext=start, zorder=2,
                            arrowprops={"arrowstyle": "->", "color": style[e.method][0],
                                        "lw": 1.1, "shrinkA": 4, "shrinkB": 5})
    front = [e for e in board.front if e.seconds is not None and e.seconds > 0]
    if front:
        xs = [e.seconds for e in front]
        ys = [e.avg_gap for e in front]
        ax.step(xs, ys, where="post", color="black", lw=1.0, alpha=0.6, zorder=1)
        span = (max(ys) - min(ys)) or 1.0
        placed: list[tuple[float, float]] = []
        for e in front:  # by their leaderboard rank; the legend names them
            # a label near an earlier one (within 0.15 decade and 4 % of the height) goes
            # above it rather than on top of it
            near = sum(1 for lx, ly in placed if abs(lx - math.log10(e.seconds)) < 0.15
                       and abs(ly - e.avg_gap) < 0.04 * span)
            placed.append((math.log10(e.seconds), e.avg_gap))
            ax.annotate(f"#{e.rank}", (e.seconds, e.avg_gap), textcoords="offset points",
                        xytext=(4, 4 + 9 * near), fontsize=7, fontweight="bold", zorder=5)
    ref = s.reference
    if ref is not None and DISTANCE in ref.mean and (ref.mean.get(COST) or 0) > 0:
        ax.scatter(ref.mean[COST], ref.mean[DISTANCE], marker="*", s=160, color="black",
                   zorder=4)
    if board.baseline is not None:
        ax.axhline(board.baseline, ls="--", color="dimgray", lw=1.1, zorder=0)
    ax.set_xscale("log")
    ax.set_xlabel("seconds (log scale; calibrated: the whole search)")
    ax.set_ylabel("avg_gap: distance to the retrained model")
    ax.grid(alpha=0.3, which="both")
    ax.margins(x=0.08, y=0.08)
    ax.text(0.01, 0.01, "better: left (faster) and down (closer)", transform=ax.transAxes,
            fontsize=7, color="dimgray", va="bottom")
    title = s.title + (f" ({left_out} row(s) without seconds not shown)" if left_out else "")
    ax.set_title(title, fontsize=10)
    fig.legend(*_pareto_legend(methods, style, board.baseline is not None,
                               ref is not None and DISTANCE in ref.mean, front),
               loc="outside right upper", fontsize=7, frameon=False,
               ncols=2 if len(methods) + len(front) > 20 else 1)
    return _image(fig, "pareto", "", f"distance to the retrained model vs seconds: {s.title}")


#: At most this many points of the Pareto front are named in the figure's legend.
_FRONT_NAMED = 12


def _pareto_legend(methods: Sequence[str], style: Mapping[str, tuple[str, str]],
                   baseline: bool, reference: bool, front: Sequence[Any]
                   ) -> tuple[list[Any], list[str]]:
    from matplotlib.lines import Line2D

    handles: list[Any] = [
        Line2D([], [], ls="", marker="o", mfc="none", mec="black", ms=7),
        Line2D([], [], ls="", marker="o", mfc="gray", mec="black", ms=7)]
    labels = ["defaults (hollow)", "calibrated (filled)"]
    if front:
        handles.append(Line2D([], [], color="black", alpha=0.6))
        labels.append("Pareto front")
    if baseline:
        handles.append(Line2D([], [], color="dimgray", ls="--"))
        labels.append("do nothing (original)")
    if reference:
        handles.append(Line2D([], [], ls="", marker="*", color="black", ms=10))
        labels.append("retrain (noise floor)")
    for m in methods:
        color, marker = style[m]
        handles.append(Line2D([], [], ls="", marker=marker, mfc="none", mec=color, mew=1.4,
                              ms=6))
        labels.append(m)
    for e in front[:_FRONT_NAMED]:  # "#rank label", no marker
        handles.append(Line2D([], [], ls="", marker=""))
        labels.append(f"#{e.rank} {_short(e.label, 44)}")
    if len(front) > _FRONT_NAMED:
        handles.append(Line2D([], [], ls="", marker=""))
        labels.append(f"(and {len(front) - _FRONT_NAMED} more on the front)")
    return handles, labels


# ---------------------------------------------------------------------- bars
def bars_figure(s: ScenarioSummary) -> FigureImage | None:
    """Retain / forget / test accuracy of the original, the retrained model and each
    method's representative row, grouped by metric."""
    series: list[tuple[str, SummaryRow]] = []
    for method in (ORIGINAL, REFERENCE):
        row = next((r for r in s.rows if r.method == method), None)
        if row is not None:
            series.append((_REF_STYLE[method][0], row))
    for method in _methods(s):
        rep = representative(s, method)
        if rep is not None:
            series.append((rep.label, rep.row))
    metrics = _panels(s, (r for _, r in series))
    if not metrics or not any(r.method in _REF_STYLE for _, r in series):
        return None  # nothing to compare with
    n = len(series)
    fig = _figure(min(16.0, 4.0 + 0.3 * n * len(metrics)), 5.2)
    ax = fig.add_subplot()
    width = 0.8 / n
    x = np.arange(len(metrics))
    for j, (label, row) in enumerate(series):
        ys = [row.mean.get(m, np.nan) for m in metrics]
        err = [_std(row, m) if m in row.mean else 0.0 for m in metrics]
        hatch = "//" if row.method in (ORIGINAL, REFERENCE) else None
        ax.bar(x - 0.4 + width * (j + 0.5), ys, width, yerr=err, capsize=2, label=label,
               hatch=hatch, edgecolor="white" if hatch else None)
    ax.set_xticks(x, metrics)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"{s.title}: original vs unlearned (representative rows)", fontsize=10)
    _legend(fig, [ax], ncols=3, refs_last=False)
    return _image(fig, "bars", "", f"original vs unlearned: {s.title}")


# ---------------------------------------------------------------------- sweeps
def sweep_figure(s: ScenarioSummary, sweep: Sweep) -> FigureImage | None:
    rows = [r for line in sweep.lines for r in line.rows]
    metrics = _panels(s, rows)
    if not metrics:
        return None
    fig = _figure(4.0 * len(metrics) + 0.5, 4.4)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    xs = [x for line in sweep.lines for x in line.xs]
    log = min(xs) > 0 and max(xs) / min(xs) >= 100
    for ax, m in zip(axes, metrics, strict=True):
        for line in sweep.lines:
            pts = [(x, r.mean[m], _std(r, m)) for x, r in zip(line.xs, line.rows, strict=True)
                   if m in r.mean]
            if pts:
                px, py, pe = zip(*pts, strict=True)
                ax.errorbar(px, py, yerr=pe, marker="o", ms=4, capsize=3,
                            label=line.label or sweep.method)
        _ref_lines(ax, s, m)
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(sweep.param)
        ax.set_ylabel(m)
        ax.set_title(m, fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{sweep.method}: sweep of {sweep.param} ({s.title})", fontsize=10)
    _legend(fig, axes)
    return _image(fig, "sweep", f"{sweep.method}-{sweep.param}",
                  f"{sweep.method}: accuracy vs {sweep.param}: {s.title}")


# ---------------------------------------------------------------------- curves
def _docs(row: SummaryRow, artefacts: Mapping[str, Mapping[str, Any]], key: str
          ) -> list[tuple[int, Any]]:
    """(seed, artefacts[key]) of the row's runs that have it, by seed."""
    out = []
    for seed, rid in zip(row.seeds, row.run_ids, strict=False):
        doc = artefacts.get(rid) if rid is not None else None
        if isinstance(doc, Mapping) and doc.get(key):
            out.append((seed, doc[key]))
    return out


def _curve(docs: Sequence[Sequence[Mapping[str, Any]]], metric: str
           ) -> tuple[list[float], list[float]]:
    """Mean over seeds of ``metric`` per (phase, step), in step order."""
    vals: dict[tuple[str, float], list[float]] = {}
    order: dict[tuple[str, float], int] = {}
    for curve in docs:
        for pt in curve:
            step, v = pt.get("step"), pt.get(metric)
            if _is_number(step) and _is_number(v):
                key = (str(pt.get("phase", "")), float(step))
                vals.setdefault(key, []).append(float(v))
                order.setdefault(key, len(order))
    keys = sorted(vals, key=lambda k: (k[1], order[k]))
    return [k[1] for k in keys], [float(np.mean(vals[k])) for k in keys]


def _phase_starts(docs: Iterable[Sequence[Mapping[str, Any]]]) -> dict[str, float]:
    """The first step of each phase (over every curve of ``docs``), in order of appearance."""
    starts: dict[str, float] = {}
    for curve in docs:
        for pt in curve:
            if _is_number(pt.get("step")):
                phase = str(pt.get("phase", ""))
                starts[phase] = min(starts.get(phase, math.inf), float(pt["step"]))
    return starts


def curves_figure(s: ScenarioSummary, method: str,
                  artefacts: Mapping[str, Mapping[str, Any]]) -> FigureImage | None:
    rows = _rows_of(s, method)
    per_row = [(r, [c for _, c in _docs(r, artefacts, "curves") if isinstance(c, list)])
               for r in rows]
    per_row = [(r, d) for r, d in per_row if d]
    if not per_row:
        return None
    metrics = [m for m in ACCURACIES
               if any(_curve(d, m)[0] for _, d in per_row)]
    if not metrics:
        return None
    fig = _figure(4.0 * len(metrics) + 0.5, 4.4)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    first = _phase_starts(c for _, d in per_row for c in d)  # where each phase is named
    origin = min(first.values(), default=0.0)
    for ax, m in zip(axes, metrics, strict=True):
        for r, d in per_row:
            xs, ys = _curve(d, m)
            if not xs:
                continue
            (line,) = ax.plot(xs, ys, marker="o", ms=3, label=_pstr(r.params, r.shown) or method)
            # this row's phase boundaries, in its colour (they move with e.g. the epochs)
            for x in _phase_starts(d).values():
                if x > origin:
                    ax.axvline(x, color=line.get_color(), ls="-.", lw=0.9, alpha=0.6)
        _ref_lines(ax, s, m)
        if len(first) > 1:
            for phase, x in first.items():
                ax.text(x, 0.98, f" {phase}", transform=ax.get_xaxis_transform(),
                        rotation=90, va="top", ha="left", fontsize=7, color="dimgray")
        ax.set_xlabel("epoch (across phases)")
        ax.set_ylabel(m)
        ax.set_title(m, fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{method}: accuracy during training ({s.title})", fontsize=10)
    _legend(fig, axes)
    return _image(fig, "curves", method, f"{method}: training curves: {s.title}")


#: The colour of each accuracy in the small multiples.
_ACC_COLORS = {"retain_acc": "tab:blue", "forget_acc": "tab:red", "test_acc": "tab:green"}


def _curve_rows(s: ScenarioSummary, method: str, artefacts: Mapping[str, Mapping[str, Any]]
                ) -> list[tuple[SummaryRow, list[Any]]]:
    """The method's rows that have curves, with them."""
    out = []
    for r in _rows_of(s, method):
        docs = [c for _, c in _docs(r, artefacts, "curves") if isinstance(c, list)]
        if docs:
            out.append((r, docs))
    return out


def curves_grid(s: ScenarioSummary, artefacts: Mapping[str, Mapping[str, Any]]
                ) -> FigureImage | None:
    """Small multiples: a panel per method (the retrained model's last) with the retain,
    forget and test accuracy of its representative row during its training phases (the
    method's first row with curves where the representative has none)."""
    panels = []
    for method in [*_methods(s), REFERENCE]:
        rows = _curve_rows(s, method, artefacts)
        if not rows:
            continue
        rep = representative(s, method)
        row, docs = next(((r, d) for r, d in rows if rep is not None and r is rep.row), rows[0])
        panels.append((row, docs))
    metrics = [m for m in ACCURACIES if any(_curve(d, m)[0] for _, d in panels)]
    if not metrics:
        return None
    ncols = min(5, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = _figure(2.5 * ncols + 0.3, 1.9 * nrows + 0.8)
    axes = _grid(fig, len(panels), ncols, sharey=True)
    ref = s.reference
    for ax, (row, docs) in zip(axes, panels, strict=True):
        for m in metrics:
            xs, ys = _curve(docs, m)
            if xs:
                ax.plot(xs, ys, color=_ACC_COLORS[m], lw=1.2, marker="o", ms=2, label=m)
            if ref is not None and m in ref.mean and row.method != REFERENCE:
                ax.axhline(ref.mean[m], color=_ACC_COLORS[m], ls="--", lw=0.8, alpha=0.5)
        starts = _phase_starts(docs)
        origin = min(starts.values(), default=0.0)
        for x in starts.values():
            if x > origin:
                ax.axvline(x, color="dimgray", ls="-.", lw=0.8, alpha=0.6)
        ax.set_title(_short(row.label), fontsize=8)
        ax.set_ylim(-0.03, 1.03)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(f"accuracy during training against the epoch (across phases), a panel per "
                 f"method ({s.title})", fontsize=10)
    handles = [axes[0].plot([], [], color=_ACC_COLORS[m])[0] for m in metrics]
    from matplotlib.lines import Line2D

    handles.append(Line2D([], [], color="gray", ls="--"))
    fig.legend(handles, [*metrics, "the retrained model's"], loc="outside lower center",
               ncols=len(handles), fontsize=8, frameon=False)
    return _image(fig, "curves", "", f"training curves of every method: {s.title}")


# ---------------------------------------------------------------------- per class
def _vector(v: Any, n: int) -> np.ndarray | None:
    if not isinstance(v, list) or len(v) != n:
        return None
    return np.array([float(x) if _is_number(x) else np.nan for x in v], dtype=float)


def _mean_vectors(vecs: Sequence[np.ndarray]) -> np.ndarray | None:
    if not vecs:
        return None
    stack = np.vstack(vecs)
    ok = ~np.isnan(stack)
    total = np.where(ok, stack, 0.0).sum(axis=0)
    count = ok.sum(axis=0)
    return np.divide(total, count, out=np.full(stack.shape[1], np.nan), where=count > 0)


def per_class_figure(s: ScenarioSummary, artefacts: Mapping[str, Mapping[str, Any]]
                     ) -> FigureImage | None:
    docs_by_row = [(r, _docs(r, artefacts, "per_class")) for r in s.rows]
    first = next((d for _, docs in docs_by_row for _, d in docs
                  if isinstance(d, Mapping) and isinstance(d.get("classes"), list)
                  and d["classes"]), None)
    if first is None:
        return None
    classes = [str(c) for c in first["classes"]]
    n = len(classes)
    forgotten = {str(c) for c in first.get("forgotten") or ()}
    # the original and retrained models: one vector per seed (any run of that seed has them)
    refs: dict[str, dict[int, np.ndarray]] = {"original": {}, "retrained": {}}
    for _, docs in sorted(docs_by_row, key=lambda rd: rd[0].method != ORIGINAL):
        for seed, d in docs:
            for model in refs:
                vec = _vector(d.get(model), n)
                if vec is not None:
                    refs[model].setdefault(seed, vec)
    series: list[tuple[str, np.ndarray]] = []
    for model, by_seed in refs.items():
        vec = _mean_vectors(list(by_seed.values()))
        if vec is not None:
            series.append((model, vec))
    for method in _methods(s):
        rep = representative(s, method)
        if rep is None:
            continue
        vecs = [v for _, d in _docs(rep.row, artefacts, "per_class")
                if (v := _vector(d.get("unlearned"), n)) is not None]
        vec = _mean_vectors(vecs)
        if vec is not None:
            series.append((rep.label, vec))
    if not series:
        return None
    marked = [i for i, c in enumerate(classes) if c in forgotten]
    title = f"{s.title}: test accuracy per class"
    if n * len(series) <= 60:
        fig = _figure(min(16.0, 4.5 + 0.18 * n * len(series)), 5.2)
        ax = fig.add_subplot()
        width = 0.8 / len(series)
        x = np.arange(n)
        for i in marked:
            ax.axvspan(i - 0.5, i + 0.5, color="tab:red", alpha=0.12, lw=0)
        for j, (label, vec) in enumerate(series):
            hatch = "//" if label in refs else None
            ax.bar(x - 0.4 + width * (j + 0.5), vec, width, label=label, hatch=hatch,
                   edgecolor="white" if hatch else None)
        ax.set_xticks(x, [c + (" (forgotten)" if i in marked else "")
                          for i, c in enumerate(classes)],
                      rotation=30 if n > 6 or marked else 0, ha="right" if n > 6 else "center",
                      fontsize=8)
        for i in marked:
            ax.get_xticklabels()[i].set_color("tab:red")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("test accuracy")
        ax.set_xlabel("class")
        ax.grid(axis="y", alpha=0.3)
        _legend(fig, [ax], ncols=3, refs_last=False)
    else:
        fig = _figure(min(18.0, 3.5 + 0.45 * n), min(14.0, 1.8 + 0.45 * len(series)))
        ax = fig.add_subplot()
        data = np.vstack([v for _, v in series])
        im = ax.imshow(data, aspect="auto", cmap="viridis", vmin=0, vmax=1,
                       interpolation="nearest")
        ax.set_yticks(range(len(series)), [label for label, _ in series], fontsize=8)
        ax.set_xticks(range(n), classes, rotation=90 if n > 10 else 0, fontsize=7)
        if n <= 20:
            for (i, j), v in np.ndenumerate(data):
                if not np.isnan(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if v < 0.5 else "black")
        for i in marked:
            ax.get_xticklabels()[i].set_color("tab:red")
            ax.add_patch(_rect(i, len(series)))
        fig.colorbar(im, ax=ax, label="test accuracy", shrink=0.8)
        ax.set_xlabel("class (forgotten in red)" if marked else "class")
    ax.set_title(title, fontsize=10)
    return _image(fig, "per-class", "", title)


def _rect(i: int, rows: int) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((i - 0.5, -0.5), 1, rows, fill=False, ec="tab:red", lw=1.5)


# ---------------------------------------------------------------------- losses
def _losses(v: Any) -> np.ndarray:
    if not isinstance(v, list):
        return np.zeros(0)
    return np.array([float(x) for x in v if _is_number(x)], dtype=float)


def _first_doc(row: SummaryRow, artefacts: Mapping[str, Mapping[str, Any]], key: str
               ) -> tuple[int, Mapping[str, Any]] | None:
    """(seed, artefacts[key]) of the row's first seed that has it as a mapping."""
    return next(((seed, d) for seed, d in _docs(row, artefacts, key) if isinstance(d, Mapping)),
                None)


def losses_grid(s: ScenarioSummary, artefacts: Mapping[str, Mapping[str, Any]]
                ) -> FigureImage | None:
    """Small multiples: the per-sample loss histograms of the forget and test sets of the
    original and the retrained model, then of each method's representative row (first seed),
    with bins shared by every panel."""
    reps = [rep for m in _methods(s) if (rep := representative(s, m)) is not None]
    found = [(rep, doc) for rep in reps if (doc := _first_doc(rep.row, artefacts, "losses"))]
    refs = [doc for r in s.rows if r.method in (REFERENCE, ORIGINAL)
            if (doc := _first_doc(r, artefacts, "losses"))]
    panels: list[tuple[str, Mapping[str, Any] | None]] = []
    for model in ("original", "retrained"):  # from the first document that has them
        doc = next((d for _, d in [*(d for _, d in found), *refs]
                    if isinstance(d.get(model), Mapping)), None)
        panels.append((model, doc.get(model) if doc is not None else None))
    panels += [(rep.row.label + f" (seed {seed})",
                d.get("unlearned") if isinstance(d.get("unlearned"), Mapping) else None)
               for rep, (seed, d) in found]
    data = [(title, {split: _losses((v or {}).get(split)) for split in ("forget", "test")})
            for title, v in panels]
    values = np.concatenate([a for _, d in data for a in d.values()] or [np.zeros(0)])
    if not len(values) or not found:
        return None
    lo, hi = float(values.min()), float(np.percentile(values, 99.5))
    if hi <= lo:
        hi = lo + 1.0
    bins = np.linspace(lo, hi, 31)
    ncols = min(5, len(data))
    nrows = math.ceil(len(data) / ncols)
    fig = _figure(2.5 * ncols + 0.3, 1.8 * nrows + 0.8)
    axes = _grid(fig, len(data), ncols, sharex=True)
    for ax, (title, d) in zip(axes, data, strict=True):
        ax.set_title(_short(title), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if not any(len(a) for a in d.values()):
            ax.text(0.5, 0.5, "not stored", ha="center", va="center", transform=ax.transAxes,
                    fontsize=8)
            continue
        for split, color in (("forget", "tab:red"), ("test", "tab:blue")):
            a = d[split]
            if len(a):
                ax.hist(np.clip(a, lo, hi), bins=bins, density=True, alpha=0.5, color=color,
                        label=f"{split} (n={len(a)})")
        means = ", ".join(f"{k} {a.mean():.2g}" for k, a in d.items() if len(a))
        ax.text(0.98, 0.95, f"mean: {means}", ha="right", va="top", fontsize=6,
                transform=ax.transAxes, color="dimgray")
    fig.supxlabel("cross-entropy loss", fontsize=8)
    fig.supylabel("density", fontsize=8)
    fig.suptitle(f"per-sample loss, forget (red) and test (blue) ({s.title})", fontsize=10)
    return _image(fig, "losses", "", f"loss histograms of every method: {s.title}")


# ---------------------------------------------------------------------- saliency
def _array(v: Any) -> np.ndarray | None:
    try:
        a = np.array(v, dtype=float)
    except (TypeError, ValueError):
        return None
    return a if a.ndim >= 2 and a.size else None


def _to_rgb(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """A C x H x W (or H x W) image as H x W (gray) or H x W x 3 in [0, 1]."""
    a = image
    if a.ndim == 3:
        a = np.moveaxis(a, 0, -1) if a.shape[0] in (1, 3) else a.mean(axis=0)[..., None]
        a = a[..., 0] if a.shape[-1] == 1 else a
    a = np.nan_to_num(a)
    if a.min() < 0 or a.max() > 1:
        span = a.max() - a.min()
        a = (a - a.min()) / span if span > 0 else np.zeros_like(a)
    return np.clip(a, 0, 1), ("gray" if a.ndim == 2 else None)


def _gray(image: np.ndarray) -> np.ndarray:
    rgb, _ = _to_rgb(image)
    return rgb if rgb.ndim == 2 else rgb.mean(axis=-1)


def _norm(m: np.ndarray, signed: bool) -> np.ndarray:
    m = np.nan_to_num(np.abs(m) if signed else m)
    if not signed:
        m = m - m.min()
    top = m.max()
    return m / top if top > 0 else m


def _sample_ok(doc: Mapping[str, Any], which: str) -> bool:
    return isinstance(doc.get(which), Mapping) and _array(doc[which].get("image")) is not None


def saliency_grid(s: ScenarioSummary, artefacts: Mapping[str, Mapping[str, Any]],
                  classes: Sequence[str] | None) -> FigureImage | None:
    """Small multiples: a forget and a retain sample (first seed of each method's
    representative row). A first row of the inputs, then a row per model (the original, the
    retrained model, each method's unlearned model) with its saliency map and, where any model
    has one, its Grad-CAM per sample; many rows are laid out in side-by-side blocks."""
    reps = [rep for m in _methods(s) if (rep := representative(s, m)) is not None]
    found = []
    for rep in reps:
        sd = _first_doc(rep.row, artefacts, "saliency")
        if sd is not None and (_sample_ok(sd[1], "forget") or _sample_ok(sd[1], "retain")):
            found.append((rep, sd[1]))
    if not found:
        return None
    head = found[0][1]
    samples = [k for k in ("forget", "retain") if _sample_ok(head, k)]

    def name(c: Any) -> str:
        if classes is not None and _is_number(c) and 0 <= int(c) < len(classes):
            return str(classes[int(c)])
        return str(c)

    # the models: (row title, document, key of the model in the document)
    models = [(m, head, m) for m in ("original", "retrained")]
    models += [(rep.row.label, d, "unlearned") for rep, d in found]

    def entry(doc: Mapping[str, Any], which: str, model: str) -> Mapping[str, Any] | None:
        smp = doc.get(which)
        if not isinstance(smp, Mapping):
            return None
        e = (smp.get("models") or {}).get(model)
        return e if isinstance(e, Mapping) else None

    cam = any(_array((entry(d, k, m) or {}).get("gradcam")) is not None
              for _, d, m in models for k in samples)
    whats = ("saliency", "gradcam") if cam else ("saliency",)
    cols = [(k, w) for k in samples for w in whats]
    blocks = 1 if len(models) <= 8 else min(4, math.ceil(len(models) / (12 if cam else 8)))
    per_block = math.ceil(len(models) / blocks)
    cell = 1.15
    fig = _figure(blocks * (cell * len(cols) + 0.35) + 0.2, cell * (per_block + 1) + 0.7)
    subs = fig.subfigures(1, blocks, squeeze=False)[0] if blocks > 1 else [fig]
    for b, sub in enumerate(subs):
        chunk = models[b * per_block:(b + 1) * per_block]
        axes = sub.subplots(per_block + 1, len(cols), squeeze=False)
        for ax in axes.ravel():
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_linewidth(0.4)
        for j, (which, what) in enumerate(cols):  # the inputs, titled as the columns
            ax = axes[0][j]
            smp = head[which]
            shown, cmap = _to_rgb(_array(smp.get("image")))
            ax.imshow(shown, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"{which} #{smp.get('index')}, label {name(smp.get('label'))}\n"
                         f"{'Grad-CAM' if what == 'gradcam' else 'saliency'}", fontsize=6.5)
        axes[0][0].set_ylabel("input", fontsize=7)
        for i in range(per_block):
            row_axes = axes[i + 1]
            if i >= len(chunk):
                for ax in row_axes:
                    ax.set_axis_off()
                continue
            title, doc, model = chunk[i]
            row_axes[0].set_ylabel(_short(title, 18), fontsize=6.5)
            for ax, (which, what) in zip(row_axes, cols, strict=True):
                e = entry(doc, which, model)
                smp = doc.get(which) if isinstance(doc.get(which), Mapping) else {}
                image = _array(smp.get("image"))
                amap = _array(e.get(what)) if e else None
                if what == whats[0]:
                    moved = smp.get("index") not in (None, head[which].get("index"))
                    pred = f"pred {name(e.get('pred'))}" if e else "not stored"
                    ax.set_title(pred + (f" (#{smp.get('index')})" if moved else ""),
                                 fontsize=6, pad=2)
                if amap is None or image is None:
                    ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes,
                            fontsize=7)
                    continue
                h, w = _to_rgb(image)[0].shape[:2]
                extent = (-0.5, w - 0.5, h - 0.5, -0.5)
                if what == "gradcam":
                    ax.imshow(_gray(image), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                    ax.imshow(_norm(amap, signed=False), cmap="jet", alpha=0.45, vmin=0, vmax=1,
                              extent=extent, interpolation="bilinear")
                else:
                    ax.imshow(_norm(amap, signed=True), cmap="inferno", vmin=0, vmax=1,
                              extent=extent, interpolation="nearest")
    fig.suptitle(f"saliency maps, a row per model ({s.title})", fontsize=10)
    return _image(fig, "saliency", "", f"saliency maps of every method: {s.title}")


# ---------------------------------------------------------------------- all of a scenario
def _class_names(s: ScenarioSummary, artefacts: Mapping[str, Mapping[str, Any]]
                 ) -> list[str] | None:
    for r in s.rows:
        for _, d in _docs(r, artefacts, "per_class"):
            if isinstance(d, Mapping) and isinstance(d.get("classes"), list):
                return [str(c) for c in d["classes"]]
    return None


def scenario_figures(s: ScenarioSummary, artefacts: Mapping[str, Mapping[str, Any]]
                     ) -> tuple[list[FigureImage], list[str]]:
    """Every figure of the scenario but the trade-off plot, in :data:`FIGURE_KINDS` order, and
    notes on the figures that could not be drawn (a malformed artefact: the report goes on).

    Per-method artefacts are drawn as small multiples, one figure per kind for all the
    methods (:func:`curves_grid`, :func:`losses_grid`, :func:`saliency_grid`); only a method
    with several rows that have curves gets a curves figure of its own. Draws every figure of
    :func:`figure_jobs` (but the trade-off plot) at once."""
    figures, notes = [], []
    for job in figure_jobs(s, artefacts):
        if job.kind == "tradeoff":
            continue
        fig, note = job.run()
        if note is not None:
            notes.append(note)
        if fig is not None:
            figures.append(fig)
    return figures, notes


# ---------------------------------------------------------------------- lazy figures, digests
@dataclass
class FigureJob:
    """A figure of a scenario, not drawn yet: its ``kind`` and ``tag`` (as the
    :class:`FigureImage` it draws has them: its file name), ``what`` it is (for the note when
    drawing it fails), ``inputs`` (exactly the data it is drawn from, JSON-able) and
    ``draw`` (the figure, or ``None`` when the data make none)."""

    kind: str
    tag: str
    what: str
    inputs: Any
    draw: Callable[[], FigureImage | None]

    @functools.cached_property
    def digest(self) -> str | None:
        """:func:`figure_digest` of the figure (``None``: its inputs cannot be digested)."""
        return figure_digest(self.kind, self.tag, self.inputs)

    def run(self) -> tuple[FigureImage | None, str | None]:
        """(the figure, ``None``), or (``None``, a note) when drawing it raised: one malformed
        artefact must not cost the whole report."""
        try:
            fig = self.draw()
        except Exception as exc:
            return None, f"The {self.what} figure could not be drawn: {type(exc).__name__}: {exc}"
        if fig is not None and (fig.kind, fig.tag) != (self.kind, self.tag):
            fig = dataclasses.replace(fig, kind=self.kind, tag=self.tag)
        return fig, None


def _jsonable(o: Any) -> Any:
    """``json.dumps``'s ``default`` for the digests: numpy values and arrays, sets; anything
    else raises ``TypeError`` (no digest: the figure is always drawn)."""
    if isinstance(o, np.ndarray):
        return {"ndarray": o.dtype.str, "shape": list(o.shape), "data": o.ravel().tolist()}
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (set, frozenset)):
        return sorted(o, key=_vkey)
    if isinstance(o, SummaryRow):
        return _row_state(o)
    raise TypeError(f"cannot digest a {type(o).__name__}")


@functools.cache
def _sources() -> dict[str, str | None]:
    """The sha256 of the drawing code's source files (``None`` where unreadable)."""
    here = Path(__file__).resolve().parent
    out: dict[str, str | None] = {}
    for name in ("figures.py", "summary.py", "leaderboard.py"):
        try:
            out[name] = hashlib.sha256((here / name).read_bytes()).hexdigest()
        except OSError:
            out[name] = None
    return out


def _drawing_code() -> dict[str, Any]:
    """What the figures depend on besides their data: :data:`FIGURE_VERSION`, the versions of
    matplotlib and Pillow, matplotlib's settings (``rcParams`` but the backend), and the
    source of the drawing code."""
    import matplotlib
    import PIL

    rc = {k: repr(v) for k, v in dict.items(matplotlib.rcParams)
          if not k.startswith("backend")}
    return {"figure_version": FIGURE_VERSION, "dpi": DPI, "matplotlib": matplotlib.__version__,
            "pillow": PIL.__version__, "sources": _sources(),
            "rc": hashlib.sha256(json.dumps(rc, sort_keys=True).encode()).hexdigest()}


def figure_digest(kind: str, tag: str, inputs: Any) -> str | None:
    """The sha256 of a canonical JSON of the figure's ``kind``, ``tag`` and ``inputs`` and of
    :func:`_drawing_code` (:data:`FIGURE_VERSION`, the matplotlib and Pillow versions, ...);
    ``None`` when ``inputs`` is not JSON-able (such a figure is always drawn)."""
    payload = {"code": _drawing_code(), "kind": kind, "tag": tag, "inputs": inputs}
    try:
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=_jsonable)
    except (TypeError, ValueError, RecursionError):
        return None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _row_state(r: SummaryRow) -> dict[str, Any]:
    """Everything of a row a figure may read (its label too)."""
    return {**dataclasses.asdict(r), "label": r.label}


def _scenario_state(s: ScenarioSummary) -> dict[str, Any]:
    """The scenario's data that the whole-scenario figures read: its names, every row, and
    each method's representative row (which depends on the method's defaults)."""
    reps = {}
    for m in dict.fromkeys(r.method for r in s.rows):
        try:
            rep = representative(s, m)
        except Exception as exc:  # the figures that need it fail too (and are not reused)
            reps[m] = f"{type(exc).__name__}: {exc}"
            continue
        reps[m] = None if rep is None else [
            next(i for i, r in enumerate(s.rows) if r is rep.row), rep.why]
    return {"dataset": s.dataset, "arch": s.arch, "scenario": s.scenario,
            "scenario_kind": s.scenario_kind, "title": s.title, "metrics": list(s.metrics),
            "rows": [_row_state(r) for r in s.rows], "representatives": reps}


def _artefact_state(rows: Iterable[SummaryRow], artefacts: Mapping[str, Mapping[str, Any]],
                    *keys: str) -> dict[str, Any]:
    """The ``keys`` of the artefacts of the rows' runs (what the figure reads of them)."""
    out: dict[str, Any] = {}
    for r in rows:
        for rid in r.run_ids:
            if rid is None or rid not in artefacts:
                continue
            doc = artefacts[rid]
            out[rid] = ({k: doc.get(k) for k in keys} if isinstance(doc, Mapping)
                        else None)
    return out


def _tradeoff(s: ScenarioSummary) -> FigureImage | None:
    from unlearnkit.report import summary

    png = summary.tradeoff_png(s)
    if png is None:
        return None
    return FigureImage("tradeoff", "", f"trade-off: {s.title}", (6.4, 4.8), png)


def figure_jobs(s: ScenarioSummary, artefacts: Mapping[str, Mapping[str, Any]]
                ) -> list[FigureJob]:
    """Every figure of the scenario, the trade-off plot included, in :data:`FIGURE_KINDS`
    order, none drawn yet: each with the data it is drawn from (its digest's inputs).

    The whole-scenario figures (Pareto, trade-off, bars, the small multiples, per class)
    read every row, the representative rows and the artefacts of their kind; a sweep reads
    its lines' rows and the references; a method's own curves figure its rows, the references
    and their curves."""
    from unlearnkit.report.leaderboard import leaderboard

    state = _scenario_state(s)
    refs = [_row_state(r) for r in s.rows if r.method in _REF_STYLE]

    def whole(*keys: str, **more: Any) -> dict[str, Any]:
        arts = {k: _artefact_state(s.rows, artefacts, k) for k in keys}
        return {"scenario": state, "artefacts": arts, **more}

    jobs = [FigureJob("pareto", "", "Pareto", whole(board=leaderboard(s).to_dict()),
                      lambda: pareto_figure(s)),
            FigureJob("tradeoff", "", "trade-off", whole(), lambda: _tradeoff(s)),
            FigureJob("bars", "", "bars", whole(), lambda: bars_figure(s))]
    for sw in sweeps(s):
        inputs = {"title": s.title, "method": sw.method, "param": sw.param, "refs": refs,
                  "lines": [{"fixed": ln.fixed, "xs": ln.xs,
                             "rows": [_row_state(r) for r in ln.rows]} for ln in sw.lines]}
        jobs.append(FigureJob("sweep", f"{sw.method}-{sw.param}",
                              f"sweep of {sw.method} / {sw.param}", inputs,
                              lambda sw=sw: sweep_figure(s, sw)))
    jobs.append(FigureJob("curves", "", "curves", whole("curves"),
                          lambda: curves_grid(s, artefacts)))
    for m in [*_methods(s), REFERENCE]:
        if len(_curve_rows(s, m, artefacts)) > 1:
            rows = _rows_of(s, m)
            inputs = {"title": s.title, "method": m, "refs": refs,
                      "rows": [_row_state(r) for r in rows],
                      "curves": _artefact_state(rows, artefacts, "curves")}
            jobs.append(FigureJob("curves", m, f"curves of {m}", inputs,
                                  lambda m=m: curves_figure(s, m, artefacts)))
    jobs.append(FigureJob("per-class", "", "per-class accuracy", whole("per_class"),
                          lambda: per_class_figure(s, artefacts)))
    jobs.append(FigureJob("losses", "", "loss histograms", whole("losses"),
                          lambda: losses_grid(s, artefacts)))
    classes = _class_names(s, artefacts)
    jobs.append(FigureJob("saliency", "", "saliency", whole("saliency", classes=classes),
                          lambda: saliency_grid(s, artefacts, classes)))
    order = list(FIGURE_KINDS)
    return sorted(jobs, key=lambda j: order.index(j.kind))
