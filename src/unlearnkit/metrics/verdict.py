"""The oracle-free verdict: has a forget request been met, judged without the retrained model?

A user who unlearns does not have the retrained model (that is the point of unlearning). The
verdict therefore compares the unlearned model on D_f with its behaviour on data it never saw:
a **validation set** held out from the test data (:attr:`unlearnkit.Split.validation`), never
used for the final test figures. Pure functions of accuracies, counts and losses; the model
level is :func:`unlearnkit.evaluation.verdict`.

**Class unlearning.** The retrained model never predicts a class it has not seen, so both the
accuracy on D_f and the forgotten classes' held-out accuracy should be near 0:
at most :data:`FORGET_THRESHOLD` each.

**Sample unlearning.** The retrained model treats D_f like unseen data. Two checks, each with
a tolerance that is the 95 % band of "no difference" at the request's sizes (so that a small
request is not failed by chance):

- the forget accuracy against the validation accuracy, within
  :func:`accuracy_gap_halfwidth` (two-proportion z band, Laplace-smoothed);
- a membership attack that tells D_f from the validation set by per-sample loss
  (:func:`loss_auc`, ROC AUC, 0.5 = no difference), within :func:`auc_null_halfwidth` of 0.5
  (the Mann-Whitney null variance, (n1 + n2 + 1) / (12 n1 n2)).

Both checks are two-sided: a forget set that now scores *worse* than unseen data stands out as
much as one that scores better (the "Streisand effect").

**Utility** (both scenarios): the retained held-out accuracy (validation samples of the
retained classes; the whole validation set for samples) must stay within
:data:`UTILITY_TOLERANCE` of the original's.

**Outcomes**, in this order:

- ``utility lost``: the retained held-out accuracy fell by more than the tolerance (a model that
  collapses "forgets" everything; that is not success);
- ``forgotten``: every forgetting check holds;
- ``partial``: some hold, or the measure moved at least half-way from the original's value to
  the target, or D_f now stands out by scoring below unseen data;
- ``not forgotten``: none of that.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "FORGET_THRESHOLD",
    "OUTCOMES",
    "UTILITY_TOLERANCE",
    "Verdict",
    "Z",
    "accuracy_gap_halfwidth",
    "auc_null_halfwidth",
    "auc_standard_error",
    "judge_class",
    "judge_samples",
    "loss_auc",
]

#: The four outcomes, from the best to the worst for a user who asked to forget.
OUTCOMES: tuple[str, ...] = ("forgotten", "partial", "not forgotten", "utility lost")

#: Class unlearning: the forget accuracy and the forgotten classes' held-out accuracy must be at
#: most this ("near 0"; the retrained model scores 0, the competition-style target is 0.05).
FORGET_THRESHOLD = 0.05

#: The retained held-out accuracy may fall at most this far below the original's (3 points,
#: the tolerance of the project's retrain-level target).
UTILITY_TOLERANCE = 0.03

#: The normal quantile of the 95 % bands.
Z = 1.96


def loss_auc(forget_losses: Any, validation_losses: Any) -> float:
    """ROC AUC of telling D_f (positive) from the validation set by *low* per-sample loss.

    0.5: D_f is treated like unseen data; 1: every forget sample has a lower loss than every
    validation sample (remembered); below 0.5: D_f now scores worse than unseen data. Ties
    count one half (the Mann-Whitney U statistic over n1 n2).
    """
    f = np.asarray(forget_losses, dtype=np.float64).ravel()
    v = np.asarray(validation_losses, dtype=np.float64).ravel()
    if not len(f) or not len(v):
        raise ValueError("loss_auc needs at least one forget and one validation sample.")
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([-f, -v]))  # high score = low loss
    u = ranks[: len(f)].sum() - len(f) * (len(f) + 1) / 2
    return float(u / (len(f) * len(v)))


def auc_null_halfwidth(n1: int, n2: int, z: float = Z) -> float:
    """Half-width of the band around 0.5 that an AUC on ``n1`` vs ``n2`` samples stays in,
    with probability about 95 % (``z`` = 1.96), when the two sets come from one distribution:
    ``z * sqrt((n1 + n2 + 1) / (12 n1 n2))`` (the Mann-Whitney U null variance)."""
    if n1 < 1 or n2 < 1:
        raise ValueError("auc_null_halfwidth needs at least one sample on each side.")
    return float(z * math.sqrt((n1 + n2 + 1) / (12.0 * n1 * n2)))


def auc_standard_error(auc: float, n1: int, n2: int) -> float:
    """The standard error of an AUC measured on ``n1`` positives and ``n2`` negatives (Hanley
    and McNeil, 1982), for the AUC's own confidence interval."""
    if n1 < 1 or n2 < 1:
        raise ValueError("auc_standard_error needs at least one sample on each side.")
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n1 - 1) * (q1 - auc * auc) + (n2 - 1) * (q2 - auc * auc)) / (n1 * n2)
    return float(math.sqrt(max(var, 0.0)))


def accuracy_gap_halfwidth(acc1: float, n1: int, acc2: float, n2: int, z: float = Z) -> float:
    """Half-width of the 95 % band of the difference of two accuracies measured on ``n1`` and
    ``n2`` samples when they are equal: ``z * sqrt(p (1 - p) (1/n1 + 1/n2))`` with ``p`` the
    pooled accuracy, Laplace-smoothed ((k + 1) / (n + 2)) so that two perfect scores still
    leave a band."""
    if n1 < 1 or n2 < 1:
        raise ValueError("accuracy_gap_halfwidth needs at least one sample on each side.")
    hits = acc1 * n1 + acc2 * n2
    p = (hits + 1.0) / (n1 + n2 + 2.0)
    return float(z * math.sqrt(p * (1.0 - p) * (1.0 / n1 + 1.0 / n2)))


@dataclass(frozen=True)
class Verdict:
    """An oracle-free verdict on one forget request.

    Attributes:
        outcome: one of :data:`OUTCOMES`.
        scenario: ``"class"`` or ``"random"``.
        numbers: the figures behind it (accuracies, sizes, the AUC and the bands), by name.
        checks: each criterion and whether it holds (``forget``, ``heldout_forget`` or
            ``accuracy_gap``, ``loss_auc``; ``utility``).
        reasons: one sentence per failed check, with its numbers.
        hint: for ``not forgotten`` / ``partial`` / ``utility lost``, what to try.
    """

    outcome: str
    scenario: str
    numbers: dict[str, Any]
    checks: dict[str, bool]
    reasons: tuple[str, ...] = ()
    hint: str | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def forgotten(self) -> bool:
        return self.outcome == "forgotten"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: ``{"outcome", "scenario", "numbers", "checks", "reasons", "hint",
        "notes"}``."""
        return {"outcome": self.outcome, "scenario": self.scenario,
                "numbers": dict(self.numbers), "checks": dict(self.checks),
                "reasons": list(self.reasons), "hint": self.hint, "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Verdict:
        return cls(outcome=str(d["outcome"]), scenario=str(d["scenario"]),
                   numbers=dict(d.get("numbers") or {}), checks=dict(d.get("checks") or {}),
                   reasons=tuple(d.get("reasons") or ()), hint=d.get("hint"),
                   notes=tuple(d.get("notes") or ()))

    def summary(self) -> str:
        """One line: the outcome and its key numbers."""
        n = self.numbers
        if self.scenario == "class":
            what = (f"forget acc {n['forget_acc']:.3f}, held-out forgotten classes "
                    f"{_fmt(n.get('heldout_forget_acc'))} (at most {n['threshold']:.2f})")
        else:
            what = (f"forget acc {n['forget_acc']:.3f} vs unseen {n['validation_acc']:.3f} "
                    f"(band ±{n['accuracy_band']:.3f}), loss-attack AUC {n['loss_auc']:.3f} "
                    f"(0.5 ±{n['auc_band']:.3f})")
        utility = (f"retained held-out acc {n['heldout_retain_acc']:.3f} vs original "
                   f"{n['original_heldout_retain_acc']:.3f}")
        return f"{self.outcome}: {what}; {utility}"

    def __str__(self) -> str:
        return self.summary()


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _utility(heldout_retain_acc: float, original_heldout_retain_acc: float, tolerance: float
             ) -> tuple[bool, str | None]:
    drop = original_heldout_retain_acc - heldout_retain_acc
    if drop > tolerance:
        return False, (f"retained held-out accuracy fell {drop:.3f} (from "
                       f"{original_heldout_retain_acc:.3f} to {heldout_retain_acc:.3f}), more "
                       f"than the tolerance {tolerance:.2f}")
    return True, None


def _outcome(utility_ok: bool, forgot: list[bool], halfway: bool, below: bool) -> str:
    if not utility_ok:
        return "utility lost"
    if all(forgot):
        return "forgotten"
    if any(forgot) or halfway or below:
        return "partial"
    return "not forgotten"


def judge_class(
    *,
    forget_acc: float,
    heldout_forget_acc: float | None,
    n_heldout_forget: int,
    heldout_retain_acc: float,
    original_heldout_retain_acc: float,
    original_forget_acc: float,
    threshold: float = FORGET_THRESHOLD,
    tolerance: float = UTILITY_TOLERANCE,
    hint: str | None = None,
    utility_hint: str | None = None,
) -> Verdict:
    """The verdict of class unlearning from its accuracies (see the module's rules).

    ``heldout_forget_acc`` is ``None`` when the validation set holds no sample of the forgotten
    classes; the check on D_f then decides alone (and a note says so). ``hint`` is the method's
    advice for forgetting more, ``utility_hint`` for keeping what is retained.
    """
    checks = {"forget": forget_acc <= threshold}
    reasons: list[str] = []
    notes: list[str] = []
    if not checks["forget"]:
        reasons.append(f"accuracy on D_f {forget_acc:.3f} is above {threshold:.2f}")
    if heldout_forget_acc is not None:
        checks["heldout_forget"] = heldout_forget_acc <= threshold
        if not checks["heldout_forget"]:
            reasons.append(f"the forgotten classes' held-out accuracy {heldout_forget_acc:.3f} "
                           f"is above {threshold:.2f}: the model still recognises them")
    else:
        notes.append("the validation set holds no sample of the forgotten classes; judged on "
                     "D_f alone")
    utility_ok, why = _utility(heldout_retain_acc, original_heldout_retain_acc, tolerance)
    if why:
        reasons.append(why)
    halfway = original_forget_acc > threshold and forget_acc <= original_forget_acc / 2
    forgot = [v for k, v in checks.items() if k != "utility"]
    checks["utility"] = utility_ok
    outcome = _outcome(utility_ok, forgot, halfway, False)
    numbers = {"forget_acc": forget_acc, "heldout_forget_acc": heldout_forget_acc,
               "n_heldout_forget": n_heldout_forget, "threshold": threshold,
               "original_forget_acc": original_forget_acc,
               "heldout_retain_acc": heldout_retain_acc,
               "original_heldout_retain_acc": original_heldout_retain_acc,
               "tolerance": tolerance}
    return Verdict(outcome, "class", numbers, checks, tuple(reasons),
                   _hint(outcome, hint, utility_hint), tuple(notes))


def judge_samples(
    *,
    forget_acc: float,
    n_forget: int,
    validation_acc: float,
    n_validation: int,
    auc: float,
    original_forget_acc: float,
    original_validation_acc: float,
    original_auc: float,
    tolerance: float = UTILITY_TOLERANCE,
    z: float = Z,
    hint: str | None = None,
    utility_hint: str | None = None,
) -> Verdict:
    """The verdict of sample (random or listed) unlearning (see the module's rules).

    ``auc`` is :func:`loss_auc` of the model, ``original_auc`` the original's; utility is the
    validation accuracy against the original's; ``hint`` and ``utility_hint`` as in
    :func:`judge_class`.
    """
    acc_band = accuracy_gap_halfwidth(forget_acc, n_forget, validation_acc, n_validation, z)
    original_band = accuracy_gap_halfwidth(original_forget_acc, n_forget,
                                           original_validation_acc, n_validation, z)
    auc_band = auc_null_halfwidth(n_forget, n_validation, z)
    se = auc_standard_error(auc, n_forget, n_validation)
    gap = forget_acc - validation_acc
    original_gap = original_forget_acc - original_validation_acc
    checks = {"accuracy_gap": abs(gap) <= acc_band, "loss_auc": abs(auc - 0.5) <= auc_band}
    reasons: list[str] = []
    notes: list[str] = []
    below = False
    if gap > acc_band:
        reasons.append(f"accuracy on D_f {forget_acc:.3f} is {gap:.3f} above unseen data's "
                       f"{validation_acc:.3f} (band ±{acc_band:.3f})")
    elif gap < -acc_band:
        below = True
        reasons.append(f"accuracy on D_f {forget_acc:.3f} is {-gap:.3f} below unseen data's "
                       f"{validation_acc:.3f}: D_f now stands out by being forgotten too hard")
    if auc - 0.5 > auc_band:
        reasons.append(f"a loss attack tells D_f from unseen data: AUC {auc:.3f} "
                       f"(0.5 ±{auc_band:.3f})")
    elif 0.5 - auc > auc_band:
        below = True
        reasons.append(f"D_f now has higher losses than unseen data: AUC {auc:.3f} "
                       f"(0.5 ±{auc_band:.3f}), which gives it away")
    # "forgotten too hard" only where nothing says D_f is still remembered
    below = below and not (gap > acc_band or auc - 0.5 > auc_band)
    utility_ok, why = _utility(validation_acc, original_validation_acc, tolerance)
    if why:
        reasons.append(why)
    forgot = list(checks.values())
    halfway = ((original_gap > original_band and gap <= original_gap / 2)
               or (original_auc - 0.5 > auc_band
                   and -auc_band <= auc - 0.5 <= (original_auc - 0.5) / 2))
    if abs(original_gap) <= original_band and abs(original_auc - 0.5) <= auc_band:
        notes.append("the original already treats D_f like unseen data at these sizes: the "
                     "request is nearly free, and this verdict cannot tell methods apart")
    checks["utility"] = utility_ok
    outcome = _outcome(utility_ok, forgot, halfway, below)
    numbers = {"forget_acc": forget_acc, "n_forget": n_forget,
               "validation_acc": validation_acc, "n_validation": n_validation,
               "accuracy_gap": gap, "accuracy_band": acc_band, "loss_auc": auc,
               "auc_band": auc_band,
               "loss_auc_ci": [max(0.0, auc - z * se), min(1.0, auc + z * se)],
               "original_forget_acc": original_forget_acc,
               "original_loss_auc": original_auc,
               "heldout_retain_acc": validation_acc,
               "original_heldout_retain_acc": original_validation_acc,
               "tolerance": tolerance}
    return Verdict(outcome, "random", numbers, checks, tuple(reasons),
                   _hint(outcome, hint, utility_hint, below), tuple(notes))


#: What a ``utility lost`` verdict suggests when the method gives no advice of its own.
SOFTEN = ("the method damaged the model: soften it (a lower learning rate, fewer epochs, a "
          "smaller share of the parameters changed), or fine-tune longer on D_r")


def _hint(outcome: str, method_hint: str | None, utility_hint: str | None = None,
          below: bool = False) -> str | None:
    if outcome == "forgotten":
        return None
    if outcome == "utility lost":
        return utility_hint or SOFTEN
    if below and outcome == "partial":
        return ("D_f is forgotten past unseen data: soften the method (a lower learning rate or "
                "fewer epochs) so that D_f looks like data never seen")
    return method_hint or "strengthen the method (a higher learning rate or more epochs)"
