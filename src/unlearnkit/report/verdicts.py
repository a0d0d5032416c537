"""Does the oracle-free verdict agree with the retrained model? Checked on a results store.

The verdict (:mod:`unlearnkit.metrics.verdict`) never sees the retrained model. A benchmark has
it, so every stored row can be checked: a row is **close to retraining** when its
``forget_acc_gap`` (|forget accuracy - the retrained model's|) is at most
:data:`CLOSE_FORGET_GAP` and its ``avg_gap`` (SalUn's mean gap over the forget, retain and test
accuracies and ``mia_confidence``) at most :data:`CLOSE_AVG_GAP`. The verdict agrees when it
says ``forgotten`` exactly for the close rows. The report prints the rate, the confusion counts
and every disagreement, so that a reader sees where the verdict can and cannot be trusted.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CLOSE_AVG_GAP", "CLOSE_FORGET_GAP", "VerdictCheck", "agreement_html",
           "agreement_markdown", "verdict_agreement"]

#: A row is close to retraining when |forget_acc - retrained forget_acc| is at most this ...
CLOSE_FORGET_GAP = 0.05
#: ... and its ``avg_gap`` at most this.
CLOSE_AVG_GAP = 0.05


@dataclass(frozen=True)
class VerdictCheck:
    """The verdicts of a set of rows against closeness to retraining.

    Attributes:
        n: rows with a verdict and both gaps.
        agree: rows where ``verdict == "forgotten"`` exactly when close.
        confusion: ``{verdict: {"close": k, "not close": k}}``.
        disagreements: ``(scenario, method, params, seed, verdict, forget_acc_gap, avg_gap)``
            of each row that disagrees.
    """

    n: int
    agree: int
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)
    disagreements: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def rate(self) -> float | None:
        return self.agree / self.n if self.n else None

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "agree": self.agree, "rate": self.rate,
                "confusion": self.confusion,
                "thresholds": {"forget_acc_gap": CLOSE_FORGET_GAP, "avg_gap": CLOSE_AVG_GAP},
                "disagreements": [list(d) for d in self.disagreements]}


def is_close(row: Mapping[str, Any], *, forget_gap: float = CLOSE_FORGET_GAP,
             avg_gap: float = CLOSE_AVG_GAP) -> bool | None:
    """Whether a row is close to retraining (``None`` without both gaps)."""
    fg, ag = row.get("forget_acc_gap"), row.get("avg_gap")
    if fg is None or ag is None:
        return None
    return fg <= forget_gap and ag <= avg_gap


def verdict_agreement(rows: Sequence[Mapping[str, Any]], *,
                      forget_gap: float = CLOSE_FORGET_GAP,
                      avg_gap: float = CLOSE_AVG_GAP) -> VerdictCheck:
    """Check the verdict of every row that has one (store rows, or ``compare`` rows) against
    :func:`is_close`; the ``retrain`` rows count too (their verdict should be ``forgotten``)."""
    n = agree = 0
    confusion: dict[str, dict[str, int]] = {}
    wrong = []
    for r in rows:
        verdict = r.get("verdict")
        close = is_close(r, forget_gap=forget_gap, avg_gap=avg_gap)
        if not verdict or close is None:
            continue
        n += 1
        cell = confusion.setdefault(verdict, {"close": 0, "not close": 0})
        cell["close" if close else "not close"] += 1
        if (verdict == "forgotten") == close:
            agree += 1
        else:
            wrong.append((r.get("scenario"), r.get("method"), r.get("params"), r.get("seed"),
                          verdict, r.get("forget_acc_gap"), r.get("avg_gap")))
    return VerdictCheck(n, agree, confusion, wrong)


def _intro(check: VerdictCheck) -> str:
    return (f"The verdict never sees the retrained model; here it is checked against it. A row "
            f"is close to retraining when |forget_acc - retrained| <= {CLOSE_FORGET_GAP} and "
            f"avg_gap <= {CLOSE_AVG_GAP}; the verdict agrees when it says 'forgotten' exactly "
            f"for the close rows: {check.agree} of {check.n} rows "
            f"({(check.rate or 0.0):.0%}).")


def _disagreement(d: tuple[Any, ...]) -> str:
    scenario, method, params, seed, verdict, fg, ag = d
    ps = ", ".join(f"{k}={v}" for k, v in (params or {}).items())
    return (f"{scenario}: {method}{f' ({ps})' if ps else ''} seed {seed}: {verdict}, "
            f"forget_acc_gap {fg:.3f}, avg_gap {ag:.3f}")


def agreement_markdown(check: VerdictCheck) -> str:
    """The verdict-check section of ``report.md`` (empty without rows)."""
    if not check.n:
        return ""
    lines = ["", "## The verdict against the retrained model", "", _intro(check), "",
             "| verdict | close | not close |", "|---|---:|---:|"]
    lines += [f"| {v} | {c['close']} | {c['not close']} |" for v, c in check.confusion.items()]
    if check.disagreements:
        lines += ["", "Disagreements:", ""]
        lines += [f"- {_disagreement(d)}" for d in check.disagreements]
    return "\n".join(lines) + "\n"


def agreement_html(check: VerdictCheck) -> str:
    """The verdict-check section of ``report.html`` (empty without rows)."""
    if not check.n:
        return ""
    e = html.escape
    body = "".join(f'<tr data-verdict="{e(v)}"><td>{e(v)}</td><td>{c["close"]}</td>'
                   f'<td>{c["not close"]}</td></tr>' for v, c in check.confusion.items())
    wrong = "".join(f"<li>{e(_disagreement(d))}</li>" for d in check.disagreements)
    return (f'<section id="verdict-check" data-agree="{check.agree}" data-n="{check.n}">'
            "<h2>The verdict against the retrained model</h2>"
            f'<p class="note">{e(_intro(check))}</p>'
            "<table><thead><tr><th>verdict</th><th>close</th><th>not close</th></tr></thead>"
            f"<tbody>{body}</tbody></table>"
            + (f"<p>Disagreements:</p><ul>{wrong}</ul>" if wrong else "") + "</section>")
