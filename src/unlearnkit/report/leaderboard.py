"""A scenario's leaderboard: its rows ranked by distance to the retrained model, and the
Pareto front of that distance against seconds.

The distance is ``avg_gap`` (:func:`unlearnkit.metrics.avg_gap`): the mean absolute gap between
a model's and the retrained model's forget, retain and test accuracy and, where it was
measured, the ``mia_confidence`` member rate on D_f (SalUn's "Avg. Gap", Fan et al., ICLR
2024); ties are broken by ``js_divergence`` (the mean Jensen-Shannon divergence of the two
models' outputs on D_f). It is the one place where the retrained model judges a method: the
verdict is oracle-free, and calibration never sees the retrained model.

The references are never ranked: ``retrain`` (a second retraining, the noise floor of every
metric) and ``original`` (the model before unlearning, whose distance is the "do nothing"
baseline). A calibrated row (``SummaryRow.calibrated``) is ranked like any other, its
``seconds`` being the whole search's.

Pure functions of a :class:`~unlearnkit.report.summary.ScenarioSummary`:

>>> pareto_front([(1.0, 0.5), (2.0, 0.1), (3.0, 0.2), (None, 0.0)])
[0, 1]
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from unlearnkit.report.summary import ORIGINAL, REFERENCE, ScenarioSummary, SummaryRow

__all__ = ["COST", "DISTANCE", "TIE_BREAK", "VERDICT_ORDER", "Entry", "Leaderboard",
           "chosen_params", "leaderboard", "pareto_front", "verdict_counts"]

#: The distance to the retrained model that ranks the rows (lower is better).
DISTANCE = "avg_gap"

#: What breaks a tie in :data:`DISTANCE` (lower is better).
TIE_BREAK = "js_divergence"

#: The cost axis of the Pareto front (lower is better).
COST = "seconds"

#: The verdicts in the order the report counts them (then ``mixed``: seeds that disagree).
VERDICT_ORDER: tuple[str, ...] = ("forgotten", "partial", "not forgotten", "utility lost")

_REFERENCES = (REFERENCE, ORIGINAL)


def _value(row: SummaryRow | None, metric: str) -> float | None:
    """The row's mean of ``metric``; ``None`` where absent or not finite."""
    if row is None:
        return None
    v = row.mean.get(metric)
    if v is None or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
        return None
    return float(v)


def _close(a: float | None, b: float | None) -> bool:
    """Equal up to float noise (the mean of 0.2 and 0.4 ties with 0.3)."""
    if a is None or b is None:
        return a is None and b is None
    return _rounded(a) == _rounded(b)


def _rounded(v: float | None) -> float:
    """The sort key of a mean: rounded off its float noise (12 decimals; these metrics are
    fractions and divergences of order 1), a missing one last."""
    return math.inf if v is None else round(v, 12)


def pareto_front(points: Sequence[tuple[float | None, float | None]]) -> list[int]:
    """The indices of the non-dominated points, both coordinates minimised, ordered by the
    first coordinate (then the second, then the index).

    A point is dominated when another is at least as good on both coordinates and strictly
    better on one; equal points do not dominate each other, so all of them are on the front. A
    point with a missing (``None``) or non-finite coordinate is never on it."""
    ok = [(i, float(x), float(y)) for i, (x, y) in enumerate(points)
          if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
    ok.sort(key=lambda p: (p[1], p[2], p[0]))
    front: list[int] = []
    best_y = math.inf  # the lowest y among the points with a smaller x
    k = 0
    while k < len(ok):
        # the points sharing this x: only those with the group's lowest y can be on it
        j = k
        while j < len(ok) and ok[j][1] == ok[k][1]:
            j += 1
        low = ok[k][2]
        if low < best_y:  # else a point with a smaller x is as close or closer
            front += [i for i, _, y in ok[k:j] if y == low]
            best_y = low
        k = j
    return front


def verdict_counts(s: ScenarioSummary) -> dict[str, int]:
    """How many of the scenario's rows other than the references each verdict has, in
    :data:`VERDICT_ORDER` (only those present), then ``mixed`` (the seeds disagree) and ``no
    verdict``, where any."""
    counts: dict[str, int] = {}
    for r in s.rows:
        if r.method in _REFERENCES:
            continue
        given = [v for v in r.verdicts if v]
        if not given:
            key = "no verdict"
        elif len(set(given)) == 1 and len(given) == len(r.verdicts):
            key = given[0]
        else:
            key = "mixed"
        counts[key] = counts.get(key, 0) + 1
    order = [*VERDICT_ORDER, *sorted(k for k in counts
                                     if k not in VERDICT_ORDER and k not in ("mixed",
                                                                             "no verdict")),
             "mixed", "no verdict"]
    return {k: counts[k] for k in order if k in counts}


def _defaults(method: str, kind: str) -> dict[str, Any] | None:
    from unlearnkit.report.figures import method_defaults

    return method_defaults(method, kind)


def _differs(value: Any, default: Any) -> bool:
    from unlearnkit.report.figures import _same

    return value is not None and not _same(value, default)


def chosen_params(row: SummaryRow, scenario_kind: str = "class") -> list[dict[str, Any]]:
    """What sets the row apart from its method's defaults: for a calibrated row, per distinct
    choice of its seeds' searches, the searched hyper-parameters' chosen values (``{}``: the
    search kept the defaults); for any other row, the parameters that differ from the
    method's defaults (``[{}]``: at its defaults). Unknown methods: the row's parameters."""
    if row.calibrated:
        out: list[dict[str, Any]] = []
        for cal in row.calibrations or [None]:
            cal = cal or {}
            params = cal.get("params") or row.params
            defaults = cal.get("defaults") or _defaults(row.method, scenario_kind) or {}
            keys = list(cal.get("space") or {}) or sorted(params)
            choice = {k: params[k] for k in keys
                      if k in params and (k not in defaults or _differs(params[k], defaults[k]))}
            if choice not in out:
                out.append(choice)
        return out
    defaults = _defaults(row.method, scenario_kind)
    if defaults is None:
        return [dict(row.params)]
    return [{k: v for k, v in sorted(row.params.items())
             if k not in defaults or _differs(v, defaults[k])}]


@dataclass(frozen=True)
class Entry:
    """One row of a leaderboard: ``rank`` (1 = closest to the retrained model; rows that tie
    on both :data:`DISTANCE` and :data:`TIE_BREAK` share one; ``None``: not ranked, for want
    of a distance), the scenario's ``row``, its metrics' means, whether it is closer to the
    retrained model than the original (``None`` without both distances) and whether it is on
    the Pareto front of distance against seconds."""

    rank: int | None
    row: SummaryRow
    avg_gap: float | None
    forget_acc_gap: float | None
    js_divergence: float | None
    seconds: float | None
    speedup: float | None
    closer_than_original: bool | None
    on_front: bool
    #: see :func:`chosen_params`
    params: tuple[dict[str, Any], ...] = ()

    @property
    def label(self) -> str:
        return self.row.label

    @property
    def method(self) -> str:
        return self.row.method

    @property
    def calibrated(self) -> bool:
        return self.row.calibrated

    @property
    def verdict(self) -> str:
        return self.row.verdict

    def params_text(self) -> str:
        """The chosen parameters as text (``defaults`` where none differs)."""
        def one(p: dict[str, Any]) -> str:
            return ", ".join(f"{k}={_fmt_param(v)}" for k, v in p.items()) or "defaults"

        texts = [one(p) for p in self.params] or ["defaults"]
        if len(texts) == 1:
            return texts[0]
        seeds = self.row.seeds
        return "; ".join(f"seed {seeds[i] if i < len(seeds) else i}: {t}"
                         for i, t in enumerate(texts))

    def calibration_text(self) -> str:
        """For a calibrated row, the search's size and budget (first seed), else ``""``."""
        if not self.calibrated:
            return ""
        cal = next((c for c in self.row.calibrations if c), None) or {}
        bits = []
        if cal.get("trials") is not None:
            bits.append(f"best of {cal['trials']} trials"
                        + (f" (trial {cal['best_trial']})" if cal.get("best_trial") is not None
                           else "")
                        + (f", stopped at {cal['stopped_at']['phase']} epoch "
                           f"{cal['stopped_at']['epoch']}" if cal.get("stopped_at") else ""))
        if cal.get("budget") is not None and cal.get("budget_seconds") is not None:
            bits.append(f"budget {cal['budget']:g} x retraining = {cal['budget_seconds']:.3g} s")
        elif cal.get("budget_seconds") is not None:
            bits.append(f"budget {cal['budget_seconds']:.3g} s")
        if cal.get("budget_basis"):
            bits.append(f"basis: {cal['budget_basis']}")
        return ", ".join(bits)

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "method": self.method, "label": self.label,
                "calibrated": self.calibrated,
                "verdict": self.verdict if any(self.row.verdicts) else None,
                "avg_gap": self.avg_gap, "forget_acc_gap": self.forget_acc_gap,
                "js_divergence": self.js_divergence, "seconds": self.seconds,
                "speedup": self.speedup, "closer_than_original": self.closer_than_original,
                "on_front": self.on_front, "params": [dict(p) for p in self.params],
                "n": self.row.n}


def _fmt_param(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, str):
        return v
    return json.dumps(v)


@dataclass(frozen=True)
class Leaderboard:
    """A scenario's :class:`Entry` list: the ranked rows by rank, then the unranked ones in
    table order; ``baseline`` is the original's distance ("do nothing"), ``reference`` the
    ``retrain`` row's (a second retraining: the noise floor)."""

    summary: ScenarioSummary
    entries: tuple[Entry, ...]
    baseline: float | None
    reference: float | None

    @property
    def ranked(self) -> list[Entry]:
        return [e for e in self.entries if e.rank is not None]

    @property
    def front(self) -> list[Entry]:
        """The entries on the Pareto front, fastest first."""
        return sorted((e for e in self.entries if e.on_front),
                      key=lambda e: (e.seconds, e.avg_gap))

    def top(self, k: int = 3) -> list[Entry]:
        return self.ranked[:k]

    def to_dict(self) -> dict[str, Any]:
        s = self.summary
        return {"dataset": s.dataset, "arch": s.arch, "scenario": s.scenario,
                "scenario_kind": s.scenario_kind, "distance": DISTANCE, "tie_break": TIE_BREAK,
                "baseline": self.baseline, "reference": self.reference,
                "rows": [e.to_dict() for e in self.entries],
                "front": [e.label for e in self.front],
                "verdict_counts": verdict_counts(s)}


def leaderboard(s: ScenarioSummary) -> Leaderboard:
    """The scenario's rows other than the references, ranked by mean :data:`DISTANCE`, ties
    broken by mean :data:`TIE_BREAK` (a missing one last), then by seconds and table order
    (the last two do not split a rank); rows without a distance follow, unranked."""
    rows = [r for r in s.rows if r.method not in _REFERENCES]
    baseline = _value(s.original, DISTANCE)
    scored = [(i, r) for i, r in enumerate(rows) if _value(r, DISTANCE) is not None]
    scored.sort(key=lambda ir: (_rounded(_value(ir[1], DISTANCE)),
                                _rounded(_value(ir[1], TIE_BREAK)),
                                _rounded(_value(ir[1], COST)), ir[0]))
    front = {id(rows[i]) for i in pareto_front([(_value(r, COST), _value(r, DISTANCE))
                                                for r in rows])}
    ranks: list[int] = []
    for k, (_, r) in enumerate(scored):
        if k and all(_close(_value(r, m), _value(scored[k - 1][1], m))
                     for m in (DISTANCE, TIE_BREAK)):
            ranks.append(ranks[-1])
        else:
            ranks.append(k + 1)
    order = [(rank, r) for rank, (_, r) in zip(ranks, scored, strict=True)]
    order += [(None, r) for r in rows if _value(r, DISTANCE) is None]

    def entry(rank: int | None, r: SummaryRow) -> Entry:
        gap = _value(r, DISTANCE)
        closer = None if gap is None or baseline is None else (
            gap < baseline and not _close(gap, baseline))
        return Entry(rank, r, gap, _value(r, "forget_acc_gap"), _value(r, TIE_BREAK),
                     _value(r, COST), _value(r, "speedup"), closer, id(r) in front,
                     tuple(chosen_params(r, s.scenario_kind)))

    return Leaderboard(s, tuple(entry(rank, r) for rank, r in order), baseline,
                       _value(s.reference, DISTANCE))
