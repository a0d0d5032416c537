"""The founding report's claims, each checked as a predicate over a results store.

The founding report (the spec of ``finetune``, ``perturb``, ``teacher``, ``fisher-mask`` and
``ssd``) makes seven claims of its own. :func:`check_claims` turns each into a predicate over
the summaries of a benchmark (:func:`unlearnkit.report.summary.summarize`) and the runs'
artefacts, and returns one :class:`ClaimResult` per claim and scenario: the numbers it read,
and a verdict, ``holds``, ``fails`` or ``not measured`` (the store lacks the runs the
predicate needs). A claim judged at the report's setting that fails there is also tried on
every other setting the store swept, and the result names those where it holds.

A run's hyper-parameters are read as the method resolves them today: ``{}`` is the method's
defaults (per scenario where the default depends on it, e.g. SSD's alpha 10 for a class).

The thresholds are module constants, written into every predicate's text:

======================================  ======================================================
claim                                   predicate (class scenarios unless said)
======================================  ======================================================
1. fine-tuning forgets slowly           ``finetune``'s forget accuracy after its epochs is at
                                        least :data:`SLOW` above the retrained model's
2. perturbation: forget falls with      forget accuracy never rises by more than :data:`NOISE`
   beta, retain and test stay           from one beta to the next, falls overall, and every
                                        beta keeps retain and test within :data:`CLOSE`
3. the teacher forgets towards chance,  at its defaults, forget accuracy within :data:`CHANCE`
   alpha speeds up reconstruction       of chance; with curves, the retain accuracy after the
                                        first reconstruction epoch grows with alpha
4. Fisher masking at R 0.01 forgets     R 0.01 without fine-tuning: forget accuracy at most
   with a slight drop; 5 epochs         :data:`FORGOTTEN`, test-retain within :data:`SLIGHT`;
   restore the original                 with 5 epochs: test-retain within :data:`RESTORED`
5. SSD at alpha 10 forgets and keeps    forget accuracy at most :data:`FORGOTTEN`, retain and
   retain and test                      test-retain within :data:`CLOSE` of the original
6. random samples: Fisher masking and   (random scenarios) activation distance at most
   SSD end close to the retrained       :data:`AD_CLOSE` and JS divergence at most
   model                                :data:`JS_CLOSE` (the report: FM 0.11 / 0.07, SSD
                                        0.19 / 0.11)
7. saliency maps of forgotten samples   Spearman agreement of the original's and the unlearned
   change, of retained ones do not      model's maps: retain at least :data:`SAME_MAPS`,
                                        forget at least :data:`MAPS_CHANGE` below it
======================================  ======================================================
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np

from unlearnkit.report.summary import ScenarioSummary, SummaryRow

__all__ = ["CLAIMS", "FOUNDING_METHODS", "ClaimResult", "check_claims", "claims_html",
           "claims_markdown"]

#: The five methods the founding report specifies.
FOUNDING_METHODS = ("finetune", "perturb", "teacher", "fisher-mask", "ssd")
#: A store with at least this many of them gets a claims section.
MIN_FOUNDING = 3

SLOW = 0.05         # claim 1: forget accuracy still this far above the retrained model's
NOISE = 0.02        # claim 2: a rise of forget accuracy this small between betas is noise
CLOSE = 0.03        # claims 2, 5: "keeps" = within 3 points of the original
CHANCE = 0.10       # claim 3: "towards chance" = within 10 points of 1 / classes
FORGOTTEN = 0.05    # claims 4, 5: "forgets the class" = forget accuracy at most 5 %
SLIGHT = 0.05       # claim 4: "a slight drop" = at most 5 points of test-retain accuracy
RESTORED = 0.01     # claim 4: "restore" = within 1 point of the original
AD_CLOSE = 0.20     # claim 6: the report's larger activation distance (SSD 0.19), rounded
JS_CLOSE = 0.12     # claim 6: the report's larger JS divergence (SSD 0.11), rounded
UNCHANGED = 0.005   # claim 6: a setting this close to the original's AD and JS changed nothing
SAME_MAPS = 0.80    # claim 7: retained samples' maps agree at least this much
MAPS_CHANGE = 0.10  # claim 7: forgotten samples' maps agree at least this much less

HOLDS, FAILS, NOT_MEASURED = "holds", "fails", "not measured"


@dataclass(frozen=True)
class ClaimResult:
    """One claim judged on one scenario of a store."""

    number: int
    claim: str
    predicate: str
    scenario: str
    verdict: str
    numbers: str
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# ------------------------------------------------------------------------ reading the store
def _resolved(method: str, params: dict[str, Any], kind: str) -> dict[str, Any]:
    """``params`` as the method resolves them today (its defaults filled in)."""
    from unlearnkit.methods.base import get_method

    try:
        return get_method(method, **params).for_scenario(kind).params()
    except Exception:  # a method or parameter this version does not know: take it as given
        return dict(params)


def _rows(s: ScenarioSummary, method: str, **fixed: Any) -> list[tuple[dict[str, Any],
                                                                        SummaryRow]]:
    """The rows of ``method`` whose resolved parameters include ``fixed``, with them."""
    out = []
    for r in s.rows:
        if r.method != method:
            continue
        p = _resolved(method, r.params, s.scenario_kind)
        if all(_same(p.get(k), v) for k, v in fixed.items()):
            out.append((p, r))
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _defaults(s: ScenarioSummary, method: str) -> dict[str, Any]:
    return _resolved(method, {}, s.scenario_kind)


def _m(r: SummaryRow | None, metric: str) -> float | None:
    return None if r is None else r.mean.get(metric)


def _or(x: float | None, default: float) -> float:
    """``x``, or ``default`` where it is missing (0.0 is a value, not a missing one)."""
    return default if x is None else x


def _test_retain(r: SummaryRow | None) -> float | None:
    """Test accuracy on the kept classes (class scenarios), else on the whole test set."""
    v = _m(r, "test_retain_acc")
    return v if v is not None else _m(r, "test_acc")


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _setting(p: dict[str, Any], keys: Sequence[str]) -> str:
    return ", ".join(f"{k}={p[k]}" for k in keys if k in p)


def _swept_keys(s: ScenarioSummary, method: str) -> list[str]:
    """The hyper-parameters whose resolved value varies among ``method``'s rows."""
    seen: dict[str, set[str]] = {}
    for p, _ in _rows(s, method):
        for k, v in p.items():
            seen.setdefault(k, set()).add(json.dumps(v, sort_keys=True, default=str))
    return [k for k, vals in seen.items() if len(vals) > 1]


# ---------------------------------------------------------------------------- the claims
Check = Callable[[ScenarioSummary, dict[str, Any]], tuple[str, str, str]]


def _claim1(s: ScenarioSummary, art: dict[str, Any]) -> tuple[str, str, str]:
    ref = s.reference
    rows = _rows(s, "finetune", **_defaults(s, "finetune"))
    if ref is None or not rows or _m(ref, "forget_acc") is None:
        return NOT_MEASURED, "needs finetune at its defaults and a retrain row", ""
    ft, rf = _m(rows[0][1], "forget_acc"), _m(ref, "forget_acc")
    if ft is None or rf is None:
        return NOT_MEASURED, "finetune or retrain lacks forget accuracy", ""
    nums = f"finetune forget {_f(ft)} after {rows[0][0]['epochs']} epochs; retrained {_f(rf)}"
    return (HOLDS if ft >= rf + SLOW else FAILS), nums, ""


def _claim2(s: ScenarioSummary, art: dict[str, Any]) -> tuple[str, str, str]:
    orig = s.original
    base = {k: v for k, v in _defaults(s, "perturb").items() if k != "beta"}
    rows = sorted(_rows(s, "perturb", **base), key=lambda pr: pr[0]["beta"])
    if len(rows) < 2 or orig is None:
        return NOT_MEASURED, "needs perturb at two or more betas and the original row", ""
    betas = [p["beta"] for p, _ in rows]
    forget = [_m(r, "forget_acc") for _, r in rows]
    if any(v is None for v in forget):
        return NOT_MEASURED, "a perturb row lacks forget accuracy", ""
    fs = [float(v) for v in forget]  # type: ignore[arg-type]
    falls = fs[-1] < fs[0] and all(b <= a + NOISE for a, b in pairwise(fs))
    worst_retain = min(float(_m(r, "retain_acc") or 0.0) for _, r in rows)
    worst_test = min(float(_test_retain(r) or 0.0) for _, r in rows)
    o_retain, o_test = _m(orig, "retain_acc"), _test_retain(orig)
    if o_retain is None or o_test is None:
        return NOT_MEASURED, "the original row lacks retain or test accuracy", ""
    keeps = worst_retain >= o_retain - CLOSE and worst_test >= o_test - CLOSE
    by_beta = ", ".join(f"{b:g}: {_f(v)}" for b, v in zip(betas, fs, strict=True))
    nums = (f"forget by beta {by_beta}; "
            f"lowest retain {_f(worst_retain)}, test-retain {_f(worst_test)} (original "
            f"{_f(o_retain)}, {_f(o_test)})")
    note = "" if falls else "forget accuracy does not fall with beta"
    if not keeps:
        note = (note + "; " if note else "") + "retain or test accuracy drops"
    return (HOLDS if falls and keeps else FAILS), nums, note


def _num_classes(s: ScenarioSummary, art: dict[str, Any]) -> int | None:
    for r in s.rows:
        for rid in r.run_ids:
            classes = ((art.get(rid) or {}).get("per_class") or {}).get("classes")
            if classes:
                return len(classes)
    return None


def _first_rebuild_retain(art: dict[str, Any], run_ids: Sequence[str | None]) -> float | None:
    vals = []
    for rid in run_ids:
        points = (art.get(rid) or {}).get("curves") or []
        first = [p for p in points if "rebuild" in str(p.get("phase"))
                 and p.get("epoch") == 1 and p.get("retain_acc") is not None]
        if first:
            vals.append(float(first[0]["retain_acc"]))
    return float(np.mean(vals)) if vals else None


def _claim3(s: ScenarioSummary, art: dict[str, Any]) -> tuple[str, str, str]:
    defaults = _defaults(s, "teacher")
    rows = _rows(s, "teacher", **defaults)
    n_classes = _num_classes(s, art)
    if not rows or not n_classes:
        return NOT_MEASURED, "needs teacher at its defaults (and the runs' artefacts)", ""
    chance = 1.0 / n_classes
    fa = _m(rows[0][1], "forget_acc")
    if fa is None:
        return NOT_MEASURED, "teacher lacks forget accuracy", ""
    forgets = fa <= chance + CHANCE
    nums = f"teacher forget {_f(fa)} at its defaults (chance {chance:.3f})"
    # alpha: the runs that differ from each other in alpha alone
    by_rest: dict[str, list[tuple[float, int, SummaryRow]]] = {}
    for p, r in _rows(s, "teacher"):
        rest = json.dumps({k: v for k, v in p.items() if k != "alpha"}, sort_keys=True,
                          default=str)
        by_rest.setdefault(rest, []).append((p["alpha"], p["epochs"], r))
    speeds = None
    for group in by_rest.values():
        if len(group) < 2:
            continue
        group.sort(key=lambda g: g[0])
        firsts = [_first_rebuild_retain(art, r.run_ids) for _, _, r in group]
        if any(v is None for v in firsts):  # no curves: a run of one rebuild epoch will do
            if group[0][1] != 1:
                continue
            firsts = [_m(r, "retain_acc") for _, _, r in group]
            if any(v is None for v in firsts):
                continue
        vals = [float(v) for v in firsts]  # type: ignore[arg-type]
        speeds = vals[-1] > vals[0] and all(b >= a - NOISE for a, b in pairwise(vals))
        nums += ("; retain after 1 reconstruction epoch by alpha "
                 + ", ".join(f"{g[0]:g}: {v:.3f}" for g, v in zip(group, vals, strict=True)))
        break
    note = ""
    if speeds is None:
        note = "alpha's effect not measured (needs teacher runs differing in alpha, with curves)"
        verdict = FAILS if not forgets else NOT_MEASURED
    else:
        verdict = HOLDS if forgets and speeds else FAILS
        if not speeds:
            note = "alpha does not speed up reconstruction"
    if not forgets:
        note = ("; ".join(x for x in ("forget accuracy stays far above chance", note) if x))
        better = [(p, r) for p, r in _rows(s, "teacher")
                  if _or(_m(r, "forget_acc"), 1.0) <= chance + CHANCE]
        if better:
            keys = _swept_keys(s, "teacher")
            note += "; it holds with " + " or ".join(sorted(
                {f"{_setting(p, keys)} (test-retain {_f(_test_retain(r))})" for p, r in better}))
    return verdict, nums, note


def _claim4(s: ScenarioSummary, art: dict[str, Any]) -> tuple[str, str, str]:
    orig = s.original
    base = {k: v for k, v in _defaults(s, "fisher-mask").items() if k != "epochs"}
    base["fraction"] = 0.01
    masked = _rows(s, "fisher-mask", **base, epochs=0)
    tuned = _rows(s, "fisher-mask", **base, epochs=5)
    if orig is None or not masked or not tuned:
        return NOT_MEASURED, "needs fisher-mask at R 0.01 with epochs 0 and 5, and the original", ""
    o = _test_retain(orig)
    f0, t0 = _m(masked[0][1], "forget_acc"), _test_retain(masked[0][1])
    f5, t5 = _m(tuned[0][1], "forget_acc"), _test_retain(tuned[0][1])
    if o is None or None in (f0, t0, f5, t5):
        return NOT_MEASURED, "a fisher-mask or original row lacks an accuracy", ""
    forgets = f0 <= FORGOTTEN  # type: ignore[operator]
    slight = t0 >= o - SLIGHT  # type: ignore[operator]
    restored = t5 >= o - RESTORED  # type: ignore[operator]
    nums = (f"masked: forget {_f(f0)}, test-retain {_f(t0)}; after 5 epochs: forget {_f(f5)}, "
            f"test-retain {_f(t5)}; original {_f(o)} ({base.get('ranking', 'global')} ranking)")
    why = [w for w, ok in (("the class is not forgotten", forgets),
                           ("the drop is not slight", slight),
                           ("5 epochs do not restore the original", restored)) if not ok]
    return (HOLDS if not why else FAILS), nums, "; ".join(why)


def _claim5(s: ScenarioSummary, art: dict[str, Any]) -> tuple[str, str, str]:
    orig = s.original
    base = dict(_defaults(s, "ssd"), alpha=10.0)
    rows = _rows(s, "ssd", **base)
    if orig is None or not rows:
        return NOT_MEASURED, "needs ssd at alpha 10 and the original", ""
    r = rows[0][1]
    fa, ra, ta = _m(r, "forget_acc"), _m(r, "retain_acc"), _test_retain(r)
    o_r, o_t = _m(orig, "retain_acc"), _test_retain(orig)
    if None in (fa, ra, ta, o_r, o_t):
        return NOT_MEASURED, "an ssd or original row lacks an accuracy", ""
    why = [w for w, ok in (("the class is not forgotten", fa <= FORGOTTEN),  # type: ignore
                           ("retain accuracy drops", ra >= o_r - CLOSE),  # type: ignore
                           ("test accuracy drops", ta >= o_t - CLOSE))  # type: ignore
           if not ok]
    nums = (f"forget {_f(fa)}, retain {_f(ra)}, test-retain {_f(ta)} (original {_f(o_r)}, "
            f"{_f(o_t)}; reference={base.get('reference')})")
    note = "; ".join(why)
    if why:
        good = [p for p, row in _rows(s, "ssd")
                if _or(_m(row, "forget_acc"), 1.0) <= FORGOTTEN
                and _or(_m(row, "retain_acc"), 0.0) >= o_r - CLOSE  # type: ignore[operator]
                and _or(_test_retain(row), 0.0) >= o_t - CLOSE]  # type: ignore[operator]
        if good:
            keys = _swept_keys(s, "ssd") or ["alpha"]
            note += "; it holds with " + " or ".join(sorted({_setting(p, keys) for p in good}))
    return (HOLDS if not why else FAILS), nums, note


def _claim6(s: ScenarioSummary, art: dict[str, Any]) -> tuple[str, str, str]:
    parts, verdicts = [], []
    for method in ("fisher-mask", "ssd"):
        rows = _rows(s, method, **_defaults(s, method))
        ad, js = (_m(rows[0][1], "activation_distance"), _m(rows[0][1], "js_divergence")
                  ) if rows else (None, None)
        if ad is None or js is None:
            parts.append(f"{method}: not measured")
            verdicts.append(NOT_MEASURED)
            continue
        verdicts.append(HOLDS if ad <= AD_CLOSE and js <= JS_CLOSE else FAILS)
        parts.append(f"{method} AD {_f(ad)}, JS {_f(js)}")
    orig = s.original
    if orig is not None and _m(orig, "activation_distance") is not None:
        parts.append(f"original AD {_f(_m(orig, 'activation_distance'))}, "
                     f"JS {_f(_m(orig, 'js_divergence'))}")
    if all(v == NOT_MEASURED for v in verdicts):
        return NOT_MEASURED, "; ".join(parts), "needs fisher-mask and ssd at their defaults"
    verdict = FAILS if FAILS in verdicts else (NOT_MEASURED if NOT_MEASURED in verdicts
                                               else HOLDS)
    notes = []
    o_ad, o_js = _m(orig, "activation_distance"), _m(orig, "js_divergence")
    if verdict == FAILS:  # the swept settings where it would hold, and that changed the model
        for method in ("fisher-mask", "ssd"):
            good = [p for p, r in _rows(s, method)
                    if _or(_m(r, "activation_distance"), math.inf) <= AD_CLOSE
                    and _or(_m(r, "js_divergence"), math.inf) <= JS_CLOSE
                    and not (o_ad is not None and o_js is not None
                             and abs(_or(_m(r, "activation_distance"), 0.0) - o_ad) < UNCHANGED
                             and abs(_or(_m(r, "js_divergence"), 0.0) - o_js) < UNCHANGED)]
            if good:
                keys = _swept_keys(s, method)
                notes.append(f"{method} holds with "
                             + " or ".join(sorted({_setting(p, keys) for p in good})))
    return verdict, "; ".join(parts), "; ".join(notes)


def _claim7(s: ScenarioSummary, art: dict[str, Any]) -> tuple[str, str, str]:
    parts, verdicts = [], []
    for method in ("fisher-mask", "ssd"):
        rows = _rows(s, method, **_defaults(s, method))
        agree = [(art.get(rid) or {}).get("saliency_agreement") for _, r in rows
                 for rid in r.run_ids]
        agree = [a for a in agree if a and a.get("forget") is not None
                 and a.get("retain") is not None]
        if not agree:
            continue
        fg = float(np.mean([a["forget"] for a in agree]))
        rt = float(np.mean([a["retain"] for a in agree]))
        ok = rt >= SAME_MAPS and fg <= rt - MAPS_CHANGE
        verdicts.append(HOLDS if ok else FAILS)
        parts.append(f"{method}: forget {fg:.3f}, retain {rt:.3f}")
    if not verdicts:
        return NOT_MEASURED, "needs fisher-mask or ssd runs with saliency artefacts", ""
    return (HOLDS if all(v == HOLDS for v in verdicts) else FAILS), "; ".join(parts), ""


#: (number, the report's claim, the predicate, scenario kind, check)
CLAIMS: tuple[tuple[int, str, str, str, Check], ...] = (
    (1, "Fine-tuning forgets slowly.",
     f"finetune's forget accuracy after its epochs is still >= the retrained model's + {SLOW}",
     "class", _claim1),
    (2, "Perturbation lowers forget accuracy as beta grows, with retain and test close to the "
        "original.",
     f"forget accuracy falls with beta (rises <= {NOISE} between steps); retain and "
     f"test-retain within {CLOSE} of the original at every beta", "class", _claim2),
    (3, "The teacher drives forget accuracy towards chance, and alpha speeds up reconstruction.",
     f"forget accuracy <= chance + {CHANCE} at the defaults; retain accuracy after the first "
     "reconstruction epoch grows with alpha", "class", _claim3),
    (4, "Fisher masking at R 0.01 forgets the class with a slight drop, and 5 epochs restore "
        "the original performance.",
     f"R 0.01, no fine-tuning: forget <= {FORGOTTEN}, test-retain >= original - {SLIGHT}; "
     f"5 epochs: test-retain >= original - {RESTORED}", "class", _claim4),
    (5, "SSD at alpha 10 forgets the class with no fine-tuning and keeps retain and test.",
     f"alpha 10: forget <= {FORGOTTEN}; retain and test-retain within {CLOSE} of the original",
     "class", _claim5),
    (6, "For random samples, Fisher masking and SSD end close to the retrained model by "
        "activation distance and JS divergence (report: FM 0.11 / 0.07, SSD 0.19 / 0.11).",
     f"at their defaults: activation distance <= {AD_CLOSE} and JS <= {JS_CLOSE}",
     "random", _claim6),
    (7, "Saliency maps of a forgotten sample change, and those of a retained sample do not.",
     f"Spearman agreement with the original's maps (16 samples): retain >= {SAME_MAPS}, "
     f"forget <= retain - {MAPS_CHANGE} (fisher-mask and ssd at their defaults)",
     "class", _claim7),
)


def check_claims(summaries: Sequence[ScenarioSummary], artefacts: dict[str, Any]
                 ) -> list[ClaimResult]:
    """Every claim of :data:`CLAIMS` on every scenario of its kind; a claim with no scenario
    of its kind is one ``not measured`` result. Empty when the store holds fewer than
    :data:`MIN_FOUNDING` of the founding methods (a study of other methods)."""
    present = {r.method for s in summaries for r in s.rows} & set(FOUNDING_METHODS)
    if len(present) < MIN_FOUNDING:
        return []
    out = []
    for number, claim, predicate, kind, check in CLAIMS:
        scenarios = [s for s in summaries if s.scenario_kind == kind]
        if not scenarios:
            out.append(ClaimResult(number, claim, predicate, f"(no {kind} scenario)",
                                   NOT_MEASURED, "-"))
        for s in scenarios:
            verdict, numbers, note = check(s, artefacts)
            out.append(ClaimResult(number, claim, predicate, s.title, verdict, numbers, note))
    return out


_INTRO = ("Each claim of the founding report, written as a predicate over this store, with the "
          "numbers read and a verdict. Hyper-parameters are resolved as the methods resolve "
          "them today (per-scenario defaults included); see `unlearnkit.report.claims`.")


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def claims_markdown(results: Sequence[ClaimResult]) -> str:
    """The claims section of ``report.md`` (empty without results)."""
    if not results:
        return ""
    lines = ["", "## The founding report's claims", "", _INTRO, "",
             "| # | claim | predicate | scenario | numbers | verdict |",
             "|---:|---|---|---|---|---|"]
    for r in results:
        verdict = r.verdict + (f" ({r.note})" if r.note else "")
        lines.append(f"| {r.number} | {_md(r.claim)} | {_md(r.predicate)} | {_md(r.scenario)} "
                     f"| {_md(r.numbers)} | **{_md(verdict)}** |")
    return "\n".join(lines) + "\n"


def claims_html(results: Sequence[ClaimResult]) -> str:
    """The claims section of ``report.html`` (empty without results)."""
    if not results:
        return ""
    e = html.escape
    colour = {HOLDS: "#1a7f37", FAILS: "#cf222e", NOT_MEASURED: "#6e7781"}
    rows = "".join(
        f"<tr><td>{r.number}</td><td>{e(r.claim)}</td><td>{e(r.predicate)}</td>"
        f"<td>{e(r.scenario)}</td><td>{e(r.numbers)}</td>"
        f'<td class="verdict" style="color:{colour[r.verdict]}"><b>{e(r.verdict)}</b>'
        f"{'<br>' + e(r.note) if r.note else ''}</td></tr>" for r in results)
    return (f'<section id="claims"><h2>The founding report\'s claims</h2>'
            f'<p class="note">{e(_INTRO)}</p><table><thead><tr><th>#</th><th>claim</th>'
            "<th>predicate</th><th>scenario</th><th>numbers</th><th>verdict</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></section>")
