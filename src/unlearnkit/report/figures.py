"""The report's figures beyond the summary table, per scenario, as PNG bytes.

Built from a :class:`~unlearnkit.report.summary.ScenarioSummary` and the runs' artefacts
documents (:func:`unlearnkit.bench.store.read_artefacts`, keys at
:data:`unlearnkit.bench.store.ARTEFACT_KEYS`):

- ``bars``: retain / forget / test accuracy of the original, the retrained model and each
  method's :func:`representative` row;
- ``sweep``: per method and hyper-parameter, the accuracies against the parameter's values
  (the rows grouped as :func:`sweeps` says);
- ``curves``: accuracy per epoch during a method's training phases (artefact ``curves``);
- ``per-class``: test accuracy per class, the forgotten classes marked (``per_class``);
- ``losses``: per-sample loss histograms of the forget and test sets (``losses``);
- ``saliency``: saliency maps and Grad-CAM of a forget and a retain sample (``saliency``).

Every figure is drawn with matplotlib's Agg canvas (no pyplot, no display) at :data:`DPI`, so
a figure of ``figsize`` inches is a PNG of ``figsize * DPI`` pixels.
"""

from __future__ import annotations

import io
import json
import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unlearnkit.report.summary import ORIGINAL, REFERENCE, ScenarioSummary, SummaryRow

__all__ = ["ACCURACIES", "DPI", "FIGURE_KINDS", "FigureImage", "Representative", "Sweep",
           "SweepLine", "method_defaults", "representative", "scenario_figures", "sweeps"]

#: Pixels per inch of every figure (``savefig`` at the figure's dpi).
DPI = 100

#: The metrics the bars, sweeps and curves show, one panel each.
ACCURACIES: tuple[str, ...] = ("retain_acc", "forget_acc", "test_acc")

#: The kinds of figure, in the order the report shows them, with their section headings.
FIGURE_KINDS: dict[str, str] = {
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
    "tradeoff": "x: distance of the forget accuracy to the retrained model's; y: retain "
                "accuracy; point size: seconds. Star: retrained, square: original.",
    "bars": "Mean ± std over seeds of the original model, the retrained model and each "
            "method's representative row (its default hyper-parameters where run, else the "
            "row with the lowest avg_gap).",
    "sweep": "One figure per method and hyper-parameter swept over at least 3 values; a line "
             "per combination of the method's other varying hyper-parameters; mean ± std over "
             "seeds. Dashed: retrained model, dotted: original model.",
    "curves": "Accuracy during the method's training phases (mean over seeds), a line per "
              "hyper-parameter setting; dash-dotted vertical lines in a line's colour: where "
              "its next phase starts (each phase named where it first starts); dashed: "
              "retrained model, dotted: original model.",
    "per-class": "Test accuracy per class (mean over seeds); the forgotten classes are marked "
                 "in red.",
    "losses": "Per-sample cross-entropy of the forget and test sets (first seed of the "
              "representative row), density histograms with shared bins; values above the "
              "99.5th percentile are counted in the last bin.",
    "saliency": "A forget and a retain sample (first seed of the representative row): the "
                "input, then per model |input gradient| (saliency) and Grad-CAM overlaid on the "
                "input where the model has convolutions; each map normalised to its maximum.",
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
    key = (method, "random" if scenario_kind == "random" else "class")
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
    the first; ``None`` if the method has no row."""
    rows = _rows_of(s, method)
    if not rows:
        return None
    defaults = method_defaults(method, s.scenario_kind)
    if defaults is not None:
        for r in rows:
            if all(k in defaults and (_same(v, defaults[k]) or v is None)
                   for k, v in r.params.items()):
                return Representative(r, "defaults")
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
    Non-numeric parameters (and booleans) are not swept over.
    """
    out = []
    for method in [*_methods(s), REFERENCE]:
        rows = _rows_of(s, method)
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


def _image(fig: Any, kind: str, tag: str, title: str) -> FigureImage:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    w, h = fig.get_size_inches()
    return FigureImage(kind, tag, title, (float(w), float(h)), buf.getvalue())


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


def losses_figure(s: ScenarioSummary, rep: Representative,
                  artefacts: Mapping[str, Mapping[str, Any]]) -> FigureImage | None:
    docs = [(seed, d) for seed, d in _docs(rep.row, artefacts, "losses")
            if isinstance(d, Mapping)]
    if not docs:
        return None
    seed, doc = docs[0]
    data = {model: {split: _losses((doc.get(model) or {}).get(split))
                    for split in ("forget", "test")}
            for model in _MODELS if isinstance(doc.get(model), Mapping)}
    values = np.concatenate([a for d in data.values() for a in d.values()] or [np.zeros(0)])
    if not len(values):
        return None
    lo, hi = float(values.min()), float(np.percentile(values, 99.5))
    if hi <= lo:
        hi = lo + 1.0
    bins = np.linspace(lo, hi, 41)
    fig = _figure(12.5, 4.2)
    axes = fig.subplots(1, len(_MODELS), sharex=True, squeeze=False)[0]
    for ax, model in zip(axes, _MODELS, strict=True):
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("cross-entropy loss")
        ax.grid(alpha=0.3)
        if model not in data:
            ax.text(0.5, 0.5, "not stored", ha="center", va="center", transform=ax.transAxes)
            continue
        for split, color in (("forget", "tab:red"), ("test", "tab:blue")):
            a = data[model][split]
            if len(a):
                ax.hist(np.clip(a, lo, hi), bins=bins, density=True, alpha=0.5, color=color,
                        label=f"{split} (n={len(a)}, mean {a.mean():.3g})")
        if ax.has_data():
            ax.legend(fontsize=7)
    axes[0].set_ylabel("density")
    fig.suptitle(f"{rep.label}, seed {seed}: per-sample loss ({s.title})", fontsize=10)
    return _image(fig, "losses", rep.row.method,
                  f"{rep.row.method}: loss histograms: {s.title}")


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


def saliency_figure(s: ScenarioSummary, rep: Representative,
                    artefacts: Mapping[str, Mapping[str, Any]],
                    classes: Sequence[str] | None) -> FigureImage | None:
    docs = [(seed, d) for seed, d in _docs(rep.row, artefacts, "saliency")
            if isinstance(d, Mapping)]
    if not docs:
        return None
    seed, doc = docs[0]
    samples = [(k, doc[k]) for k in ("forget", "retain")
               if isinstance(doc.get(k), Mapping) and _array(doc[k].get("image")) is not None]
    if not samples:
        return None

    def name(c: Any) -> str:
        if classes is not None and _is_number(c) and 0 <= int(c) < len(classes):
            return str(classes[int(c)])
        return str(c)

    def has_cam(sample: Mapping[str, Any]) -> bool:
        return any(_array((sample.get("models") or {}).get(m, {}).get("gradcam")) is not None
                   for m in _MODELS if isinstance((sample.get("models") or {}).get(m), Mapping))

    blocks = [(k, smp, "saliency") for k, smp in samples]
    blocks += [(k, smp, "gradcam") for k, smp in samples if has_cam(smp)]
    ncols = 1 + len(_MODELS)
    fig = _figure(2.3 * ncols + 0.6, 2.5 * len(blocks) + 0.6)
    axes = fig.subplots(len(blocks), ncols, squeeze=False)
    for row_axes, (kind, smp, what) in zip(axes, blocks, strict=True):
        image = _array(smp.get("image"))
        shown, cmap = _to_rgb(image)
        h, w = shown.shape[:2]
        extent = (-0.5, w - 0.5, h - 0.5, -0.5)
        ax = row_axes[0]
        ax.imshow(shown, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{kind} #{smp.get('index')}: label {name(smp.get('label'))}", fontsize=8)
        ax.set_ylabel("Grad-CAM" if what == "gradcam" else "saliency", fontsize=9)
        models = smp.get("models") or {}
        for ax, model in zip(row_axes[1:], _MODELS, strict=True):
            entry = models.get(model) if isinstance(models.get(model), Mapping) else None
            pred = f"pred {name(entry.get('pred'))}" if entry else "not stored"
            ax.set_title(f"{model}: {pred}", fontsize=8)
            amap = _array(entry.get(what)) if entry else None
            if amap is None:
                ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes)
            elif what == "gradcam":
                ax.imshow(_gray(image), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                ax.imshow(_norm(amap, signed=False), cmap="jet", alpha=0.45, vmin=0, vmax=1,
                          extent=extent, interpolation="bilinear")
            else:
                ax.imshow(_norm(amap, signed=True), cmap="inferno", vmin=0, vmax=1,
                          extent=extent, interpolation="nearest")
        for ax in row_axes:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{rep.label}, seed {seed}: saliency ({s.title})", fontsize=10)
    return _image(fig, "saliency", rep.row.method, f"{rep.row.method}: saliency maps: {s.title}")


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
    notes on the figures that could not be drawn (a malformed artefact: the report goes on)."""
    jobs: list[tuple[str, Callable[[], FigureImage | None]]] = [
        ("bars", lambda: bars_figure(s))]
    jobs += [(f"sweep of {sw.method} / {sw.param}", lambda sw=sw: sweep_figure(s, sw))
             for sw in sweeps(s)]
    methods = [*_methods(s), REFERENCE]
    jobs += [(f"curves of {m}", lambda m=m: curves_figure(s, m, artefacts)) for m in methods]
    jobs.append(("per-class accuracy", lambda: per_class_figure(s, artefacts)))
    reps = [rep for m in _methods(s) if (rep := representative(s, m)) is not None]
    jobs += [(f"losses of {rep.row.method}", lambda rep=rep: losses_figure(s, rep, artefacts))
             for rep in reps]
    classes = _class_names(s, artefacts)
    jobs += [(f"saliency of {rep.row.method}",
              lambda rep=rep: saliency_figure(s, rep, artefacts, classes)) for rep in reps]
    figures, notes = [], []
    for what, job in jobs:
        try:
            fig = job()
        except Exception as exc:  # one malformed artefact must not cost the whole report
            notes.append(f"The {what} figure could not be drawn: {type(exc).__name__}: {exc}")
            continue
        if fig is not None:
            figures.append(fig)
    order = list(FIGURE_KINDS)
    figures.sort(key=lambda f: order.index(f.kind))
    return figures, notes
