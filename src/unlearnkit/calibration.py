"""Calibration: search a method's hyper-parameters for the user's model and request, within a
time budget, judged by the oracle-free verdict alone (:func:`calibrate`).

The founding report spent most of its pages searching hyper-parameters by hand, and every
public tool leaves that search to the user. :func:`calibrate` does it with Optuna's TPE
sampler and median pruner over the search space each method declares beside its
hyper-parameters (:meth:`unlearnkit.UnlearningMethod.search_space`), narrowed for the model
where a range depends on it (:meth:`unlearnkit.UnlearningMethod.search_space_for`: a learning
rate under Adam up to 1e-2; cf-k's and eu-k's ``k`` within the model's depth). The method's
defaults, clipped into that space, are the first trial.

**Objective (never the test set, never the retrained model).** Each trial's model gets the
verdict of :func:`unlearnkit.evaluation.verdict` (D_f against the split's validation set). The
search maximises ``retained - 2 * shortfall``, where ``retained`` is the retained held-out
accuracy and ``shortfall`` how far the forgetting checks are from holding (class: the forget
and held-out forgotten-class accuracies above the threshold; samples: the accuracy gap and the
loss-attack AUC outside their bands), under two constraints that Optuna's constrained TPE
reads: ``shortfall <= 0`` and a retained accuracy within the verdict's tolerance of the
original's. The best trial is the ``forgotten`` one with the highest retained accuracy (ties:
the faster); when no trial is ``forgotten``, the one with the highest objective among those
that kept the retained accuracy (not ``utility lost``), so that a search that cannot forget
does no harm: a model that forgot by ruining the rest is the result only when every trial
ruined it.

**Budget.** Wall-clock, all of it counted (each trial's unlearning, its verdicts, the sampler;
torch's one-time costs of a fresh process are paid before the clock starts, by
:func:`unlearnkit.training.warm_up`, as for the training whose time it is compared with):
``budget`` times the estimated cost of retraining (the original's recorded training seconds
scaled by |D_r| / |D|; 0.2 by default, the NeurIPS 2023 competition's gate), or
``budget_seconds``. The method's defaults are the first trial, and may use the whole budget, so
that calibration never returns worse than the defaults when they fit in it and do not stall
(below); every later trial may use at most half of the budget left when it starts
(:data:`TRIAL_SHARE`), and none starts when less is left than the median time of the trials so
far, less the seconds they spent computing what later trials read back (an importance pass,
influence's gradients: :func:`unlearnkit.importance.cache.one_off`). A trial is stopped when it
runs past its share (``over budget``: at the first optimiser step past it,
:func:`unlearnkit.training.time_limit`, or at an epoch's end for a loop of a method's own),
when its per-epoch objective falls below the median of earlier trials at the same epoch
(``pruned``: it cannot win), or when it **stalls**: from the third epoch of a phase on, if at
the pace of each of its last two epochs (how much of the distance to forgetting it closed per
second, read from the logits: :func:`distance_to_forgetting`) it would not forget before its
time limit, it stops (``stalled``; defaults that change the model too little to forget in the
budget, the usual case of published defaults on a new model, no longer use it up); its result
is the model at that epoch, with its verdict. A method without epochs (SSD, one pass) cannot be
stopped mid-way: a trial of it that ends after the budget ran out (its verdict included) is
``over budget`` too, its model discarded, so that a calibrated result never costs more than its
budget, give or take the sampler's bookkeeping; a trial cut at the first optimiser step past
the budget keeps its epoch that forgot, judged before (below), so a search may end past its
budget by one step and a copy of the weights. A trial whose outputs become non-finite (a
diverging ascent) stops at that epoch (``failed``). When no trial finishes,
:class:`NoTrialFinished` says so, with the history.

**Early stopping.** Every epoch of a trial is judged by the verdict already (for the pruner),
so every epoch is a candidate: when an epoch's model is ``forgotten`` and scores above the
trial's end, the trial's result is the model as it was at the end of that epoch (its weights
copied when judged, then put into a copy of the original), and the trial records where it
stopped (``stopped_at``). This is the rewinding of SCRUB (Kurmanji et al., 2023) made general: an
ascent that forgets in its second epoch and destroys the model by its fifth still yields the
second epoch's model, and so does one whose loss diverges (NaN) in its fifth: a trial that
fails after an epoch that forgot keeps that epoch, its ``note`` saying how it failed. The
chosen parameters are then the trial's, with ``stopped_at``. An epoch whose model cannot be
judged yet (boundary expanding's shadow class) is left to the trial's end. A trial stops
*before* an epoch that would end past its time limit (timed by the epoch before it), where it
would not be judged, and keeps its epoch that forgot, if one did: a cut-off trial is no longer
lost, and the budget holds. Likewise a trial pruned after an epoch that forgot keeps that epoch.

**Reuse.** Importance passes are read from the on-disk importance cache after the first trial
(SSD's I_D is computed once per search, not per trial), and what a method computes from the
original and the data alone, whatever the searched values, is kept in memory for the search's
other trials (:func:`unlearnkit.importance.cache.shared_between_trials`: influence's
WoodFisher gradients and their Gram matrix).

**Warm start.** A model in production receives request after request, each calibrated in a
fifth of a retraining: few trials each. ``warm_start`` (an earlier search of the same method:
its :class:`Calibration` or its history) queues that search's best trials in place of the
sampler's first random draws. Where that search ran the same defaults and they did not end
``forgotten``, its best go first (the first of them with the whole budget) and the defaults
after them; otherwise (the defaults forgot there, or the history does not say) the defaults
stay first, with the whole budget, and the earlier best follow them. The ledger
(:mod:`unlearnkit.ledger`) warm-starts each calibrated step from the last one of the same
method.

**Reproducible.** Seeded (the sampler and every trial use ``seed``); the history is returned
(:meth:`Calibration.to_dict`) and ``unlearnkit forget --calibrate`` writes it beside the
checkpoint. A time budget decides how many trials run, so only ``max_trials`` without a budget
repeats a search trial for trial.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import statistics
import time
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unlearnkit.data.splits import Split
from unlearnkit.exceptions import InvalidParameterError, ModelError, UnlearnkitError
from unlearnkit.importance.cache import shared, shared_between_trials
from unlearnkit.methods.base import Search, UnlearningMethod, get_method
from unlearnkit.metrics.verdict import Verdict
from unlearnkit.models.info import ModelInfo, check_finite, get_info, set_info
from unlearnkit.training import (
    TimeLimitReached,
    data_size,
    flushing_denormals,
    time_limit,
    warm_up,
    watch_epochs,
)

__all__ = ["DEFAULT_BUDGET", "SHORTFALL_WEIGHT", "Calibration", "CalibrationTrial",
           "NoTrialFinished", "calibrate", "objective_of", "retrain_estimate"]

#: The default budget: a fifth of the estimated retraining cost (the competition's gate).
DEFAULT_BUDGET = 0.2

#: The weight of the forgetting shortfall in the objective (``retained - w * shortfall``).
SHORTFALL_WEIGHT = 2.0

#: Trials of random sampling before TPE models the objective.
STARTUP_TRIALS = 5

#: A trial may spend at most this share of the budget left when it starts, so that one
#: expensive configuration (the defaults, say) cannot use up the whole search.
TRIAL_SHARE = 0.5

#: How many of an earlier search's best trials a warm start queues first.
WARM_START_TRIALS = 2

#: The largest calibration history a warm start reads (a search of thousands of trials
#: writes well under 1 MiB).
MAX_HISTORY_BYTES = 16 * 2**20


@dataclass(frozen=True)
class CalibrationTrial:
    """One trial of a search.

    Attributes:
        number: 0-based; trial 0 holds the method's defaults (with a warm start, the earlier
            search's best trials follow them, or precede them where the defaults did not
            forget in that search).
        params: the searched hyper-parameters' values.
        state: ``complete``, ``pruned`` (could not win), ``stalled`` (would not forget
            before its time limit at its pace: its result is the epoch it stopped at, a
            candidate when no trial forgets), ``over budget`` (stopped when the budget ran
            out) or ``failed`` (the method refused the values or diverged; ``note`` says why).
        note: how a trial ended when not plainly, and the warnings its method gave.
        value: the objective (``retained - 2 * shortfall``), ``None`` unless complete.
        outcome, retained, shortfall: the verdict and its two quantities.
        seconds: the trial's wall-clock, verdicts included.
        stopped_at: ``{"phase", "epoch"}`` when the trial's result is the model as it was at
            the end of that epoch (a ``forgotten`` one that beat the trial's last epoch), else
            ``None``: the trial's own result.
    """

    number: int
    params: dict[str, Any]
    state: str
    value: float | None = None
    outcome: str | None = None
    retained: float | None = None
    shortfall: float | None = None
    seconds: float = 0.0
    note: str | None = None
    stopped_at: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Calibration:
    """The result of :func:`calibrate`.

    Attributes:
        method: the method's name.
        params: every hyper-parameter of the best trial (JSON form, per-scenario defaults
            resolved), to re-run it with ``uk.unlearn(model, split, method, **params)``.
        model: the best trial's model (its info carries the verdict and the search's summary).
        verdict: the best model's verdict.
        trials: the history, in order.
        best_trial: the number of the best trial.
        budget_seconds: the wall-clock budget (``None``: none).
        retrain_estimate: the estimated seconds of retraining it was derived from.
        seconds: the search's wall-clock.
        seed: the search's seed.
        stopped_at: the best trial's ``stopped_at`` (``None``: its model is the method's
            result at ``params``; else the model as it was at the end of that epoch).
        warm_start: the points ``calibrate(warm_start=...)`` queued, as tried.
    """

    method: str
    params: dict[str, Any]
    model: nn.Module
    verdict: Verdict
    trials: list[CalibrationTrial]
    best_trial: int
    budget_seconds: float | None
    retrain_estimate: float | None
    seconds: float
    seed: int
    space: dict[str, dict[str, Any]] = field(default_factory=dict)
    stopped_at: dict[str, Any] | None = None
    warm_start: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: everything but the model."""
        return {"method": self.method, "params": self.params, "verdict": self.verdict.to_dict(),
                "best_trial": self.best_trial, "stopped_at": self.stopped_at,
                "budget_seconds": self.budget_seconds,
                "retrain_estimate": self.retrain_estimate, "seconds": self.seconds,
                "seed": self.seed, "space": self.space, "warm_start": self.warm_start,
                "objective": f"retained - {SHORTFALL_WEIGHT:g} * shortfall",
                "trials": [t.to_dict() for t in self.trials]}

    def save_history(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON to ``path``, atomically."""
        from unlearnkit.compare import write_json

        return write_json(path, self.to_dict())


def objective_of(v: Verdict) -> tuple[float, float, float]:
    """``(objective, shortfall, retained)`` of a verdict (see the module's docstring)."""
    n = v.numbers
    if v.scenario == "class":
        t = float(n["threshold"])
        shortfall = max(0.0, float(n["forget_acc"]) - t)
        if n.get("heldout_forget_acc") is not None:
            shortfall += max(0.0, float(n["heldout_forget_acc"]) - t)
    else:
        shortfall = (max(0.0, abs(float(n["accuracy_gap"])) - float(n["accuracy_band"]))
                     + max(0.0, abs(float(n["loss_auc"]) - 0.5) - float(n["auc_band"])))
    retained = float(n["heldout_retain_acc"])
    return retained - SHORTFALL_WEIGHT * shortfall, shortfall, retained


def _rank(t: CalibrationTrial) -> tuple[bool, bool, float, float]:
    """The order of trials (the best is the largest): ``forgotten`` first, then those that
    kept the utility, then by objective, then the faster."""
    return (t.outcome == "forgotten", t.outcome != "utility lost",
            t.value if t.value is not None else -math.inf, -t.seconds)


def retrain_estimate(model: nn.Module, split: Split) -> float | None:
    """The estimated seconds of retraining: the original's recorded training seconds scaled by
    |D_r| / |D| (``None`` when the model records none or the sizes are unknown)."""
    info = get_info(model)
    if info is None or info.seconds is None or info.method is not None:
        return None
    try:
        n_r, n_f = data_size(split.retain), data_size(split.forget)
    except TypeError:
        return None
    return float(info.seconds) * n_r / max(n_r + n_f, 1)


def _suggest(trial: Any, name: str, space: Search, kind: type) -> Any:
    if space.choices is not None:
        return trial.suggest_categorical(name, list(space.choices))
    assert space.low is not None and space.high is not None
    if kind is int:
        return trial.suggest_int(name, int(space.low), int(space.high), log=space.log)
    return trial.suggest_float(name, float(space.low), float(space.high), log=space.log)


def _clip(value: Any, space: Search) -> Any:
    if space.choices is not None:
        return value if value in space.choices else space.choices[0]
    assert space.low is not None and space.high is not None
    return min(max(value, type(value)(space.low)), type(value)(space.high))


class _OverBudget(Exception):
    pass


class _Stalled(Exception):
    pass


#: A trial's epochs judged in one phase before the stall forecast may stop it, and the number
#: of epochs in a row whose forecast must fail (see :func:`_stalled`).
STALL_EPOCHS = 3
STALL_PATIENCE = 2
#: A phase whose last epoch closed this many times the distance per second of the first in
#: the window is speeding up, and not stalled.
STALL_ACCELERATION = 1.2

STALLED = ("stalled: at the pace of its last epochs it would not forget before its time "
           "limit")


def distance_to_forgetting(outputs: Any, v: Verdict) -> float:
    """How far a model's outputs are from forgetting, smoothly (0: there), for the stall
    forecast. The verdict's accuracies move in steps (a class's forget accuracy can sit at
    1.0 while its margins shrink epoch by epoch), so the forecast reads the logits:

    - class: the ``1 - threshold`` quantile of D_f's margins (the true class's logit minus
      the largest other), floored at 0: it is <= 0 exactly when at most a ``threshold``
      share of D_f is still classified right, the verdict's forget check;
    - samples: ``|median loss on D_f - median loss on the validation set|``, the gap that the
      loss attack's AUC and the accuracy gap measure.
    """
    logits, labels = outputs.forget
    logits = logits.double()
    labels = labels.to(logits.device)
    if v.scenario == "class":
        true = logits.gather(1, labels.view(-1, 1)).squeeze(1)
        other = logits.scatter(1, labels.view(-1, 1), -math.inf).amax(dim=1)
        q = torch.quantile(true - other, 1.0 - float(v.numbers["threshold"]))
        return max(0.0, float(q))
    v_logits, v_labels = outputs.validation
    f_loss = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    v_loss = torch.nn.functional.cross_entropy(v_logits.double(), v_labels.to(v_logits.device),
                                               reduction="none")
    return abs(float(f_loss.median()) - float(v_loss.median()))


def _stalled(history: list[tuple[float, float]], stop_at: float) -> bool:
    """Whether a trial should stop: in the phase now running, at the pace of each of its last
    :data:`STALL_PATIENCE` epochs (the distance to forgetting it closed per second, from the
    epoch before), it would not reach forgetting before its time limit ``stop_at``, and it is
    not speeding up (:data:`STALL_ACCELERATION`). Judged from the :data:`STALL_EPOCHS`-th
    epoch of a phase on; the pace of each epoch, not the average, so that an ascent that
    starts slowly and speeds up is not cut for its start."""
    if len(history) < max(STALL_EPOCHS, STALL_PATIENCE + 1):
        return False
    paces = []
    for (t0, d0), (t1, d1) in zip(history[-STALL_PATIENCE - 1:-1],
                                  history[-STALL_PATIENCE:], strict=True):
        if d1 <= 0.0:
            return False
        closed = (d0 - d1) / max(t1 - t0, 1e-9)
        if closed > 0.0 and t1 + d1 / closed <= stop_at:
            return False
        paces.append(closed)
    # speeding up (momentum building, an ascent's loss taking off): a forecast at today's
    # pace says nothing of the cliff ahead
    return not (paces[-1] > 0.0 and paces[-1] > STALL_ACCELERATION * max(paces[0], 0.0))


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``model``'s state, as an epoch's model to come back to."""
    return {k: t.detach().clone() for k, t in model.state_dict().items()}


def _finite(outputs: Any) -> bool:
    return all(bool(torch.isfinite(pair[0]).all())
               for pair in (outputs.forget, outputs.validation) if pair is not None)


def _noted(note: str | None, caught: list[warnings.WarningMessage]) -> str | None:
    """A trial's note with the warnings its method gave, each once."""
    said = list(dict.fromkeys(str(w.message) for w in caught))
    parts = ([note] if note else []) + [f"warning: {m}" for m in said]
    return "; ".join(parts) or None


def _history_of(path: str | os.PathLike) -> dict[str, Any]:
    """A calibration history written by :meth:`Calibration.save_history`, read with its size
    checked first."""
    import json

    from unlearnkit._files import read_small_text

    where = f"The calibration history {str(Path(path))!r}"
    text = read_small_text(path, where=where, limit=MAX_HISTORY_BYTES,
                           holds="a search's history takes", error=InvalidParameterError)
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidParameterError(f"{where} is not JSON: {' '.join(str(exc).split())}.") \
            from None
    if not isinstance(doc, dict):
        raise InvalidParameterError(f"{where} is not a calibration history (a JSON object).")
    return doc


def _best_points(doc: Mapping[str, Any], method: str) -> tuple[list[Any], Any]:
    """The searched values of a history's best finished trials, best first (the order of
    the search's own ranking, :func:`_rank`; none when no trial finished: its budget was too
    small for one), and its trial 0, the defaults it ran (``None``: not in it)."""
    if doc.get("method") != method:
        raise InvalidParameterError(
            f"warm_start is a search of {doc.get('method')!r:.60}, not of {method!r}: only the "
            "same method's hyper-parameters carry over.")
    trials = doc.get("trials")
    if not isinstance(trials, list) or not all(isinstance(t, dict) for t in trials):
        raise InvalidParameterError("warm_start is not a calibration history: its 'trials' "
                                    "is not a list of trials.")

    def number(x: Any) -> float:
        return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and \
            math.isfinite(x) else -math.inf

    done = [t for t in trials if t.get("state") in ("complete", "stalled")
            and t.get("outcome") is not None]
    done.sort(key=lambda t: (t.get("outcome") == "forgotten", t.get("outcome") != "utility lost",
                             number(t.get("value")), -number(t.get("seconds"))), reverse=True)
    first = next((t for t in trials if t.get("number") == 0), None)
    return [t.get("params") for t in done[:WARM_START_TRIALS]], first


def _clean_point(point: Any, method: str, space: Mapping[str, Search],
                 kinds: Mapping[str, type]) -> dict[str, Any]:
    """A warm start's point checked, clipped into this search's space, and without the values
    held fixed here."""
    if not isinstance(point, Mapping) or not all(isinstance(k, str) for k in point):
        raise InvalidParameterError(f"A warm start point must map hyper-parameter names "
                                    f"to values; got {point!r:.80}.")
    unknown = sorted(k for k in point if k not in kinds)
    if unknown:
        raise InvalidParameterError(
            f"{method} has no hyper-parameter {', '.join(map(repr, unknown))} (warm start).")
    clean: dict[str, Any] = {}
    for k, v in point.items():
        if k not in space:  # held fixed here, or not searched: the search's own value
            continue
        if kinds[k] is int and isinstance(v, float) and v.is_integer():
            v = int(v)  # JSON's 3.0
        if space[k].choices is None and (
                isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            raise InvalidParameterError(f"The warm start's {k}={v!r} is not a finite number.")
        if space[k].choices is None and kinds[k] is int and not isinstance(v, int):
            raise InvalidParameterError(f"The warm start's {k}={v!r} is not a whole number.")
        clean[k] = _clip(v, space[k])
    return clean


def _warm_points(warm_start: Any, method: str, space: Mapping[str, Search],
                 kinds: Mapping[str, type]) -> tuple[list[dict[str, Any]], Any]:
    """The points a warm start queues (:func:`_clean_point`), and what its history says of
    the defaults: ``(their values, their outcome)`` (``None``: it does not say)."""
    if warm_start is None:
        return [], None
    first = None
    if isinstance(warm_start, Calibration):
        points, first = _best_points(warm_start.to_dict(), method)
    elif isinstance(warm_start, (str, os.PathLike)):
        points, first = _best_points(_history_of(warm_start), method)
    elif isinstance(warm_start, Mapping):
        points, first = (_best_points(warm_start, method) if "trials" in warm_start
                         else ([warm_start], None))
    elif isinstance(warm_start, Sequence) and not isinstance(warm_start, (bytes, bytearray)):
        points = list(warm_start)
    else:
        raise InvalidParameterError(
            "warm_start must be a Calibration, its history (a dict or the path of its JSON), "
            f"or a list of hyper-parameter dicts; got {type(warm_start).__name__}.")
    out: list[dict[str, Any]] = []
    for point in points:
        clean = _clean_point(point, method, space, kinds)
        if clean and clean not in out:
            out.append(clean)
    defaults = None
    if first is not None:
        defaults = (_clean_point(first.get("params") or {}, method, space, kinds),
                    first.get("outcome"))
    return out, defaults


class NoTrialFinished(InvalidParameterError):
    """No trial of a search finished within its budget; :attr:`trials` holds the history
    (every trial ``over budget``, ``pruned``, ``stalled`` without an epoch to keep, or
    ``failed``) and :attr:`budget_seconds` the
    budget."""

    def __init__(self, message: str, trials: list[CalibrationTrial],
                 budget_seconds: float | None) -> None:
        super().__init__(message)
        self.trials = trials
        self.budget_seconds = budget_seconds


@flushing_denormals
def calibrate(
    model: nn.Module,
    split: Split,
    method: str | UnlearningMethod,
    *,
    budget: float | None = DEFAULT_BUDGET,
    budget_seconds: float | None = None,
    max_trials: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    warm_start: Any = None,
    **params: Any,
) -> Calibration:
    """Search ``method``'s hyper-parameters for ``model`` and ``split``; return the best model,
    its parameters and the history (see the module's docstring for the objective and budget).

    Args:
        model: the original model (left untouched).
        split: the forget request; it needs a validation set (the split builders' default).
        method: a registered name or a method instance (its values are the fixed ones).
        budget: the wall-clock budget as a fraction of the estimated retraining cost
            (:func:`retrain_estimate`); ignored when ``budget_seconds`` is given.
        budget_seconds: the budget in seconds.
        max_trials: stop after this many trials (``budget=None`` and no ``budget_seconds``:
            the only limit, which makes the search repeat trial for trial).
        seed: seeds the sampler and every trial.
        warm_start: an earlier search of the same method to start from: its
            :class:`Calibration`, its history (:meth:`Calibration.to_dict`, or the path of the
            JSON that :meth:`Calibration.save_history` and ``unlearnkit forget --calibrate``
            write), or a list of hyper-parameter dicts (a value not given: the default's;
            one out of the space: clipped into it). Its best :data:`WARM_START_TRIALS`
            finished trials are tried before the sampler's own: first, where its defaults'
            trial did not forget, else right after the defaults (see the module's
            docstring). A model in production that receives request after request is
            searched once with room, then warm-started.
        **params: hyper-parameters to hold fixed (not searched).

    Raises:
        InvalidParameterError: no validation set, no budget that can be worked out, nothing
            to search, or a bad budget.
    """
    import optuna

    if split.validation is None:
        raise InvalidParameterError(
            "Calibration is judged on the split's validation set, and this split has none: "
            "build it with validation > 0 (the default).")
    base = get_method(method, **params)
    cls = type(base)
    fixed = set(params) | ({f.name for f in dataclasses.fields(base)
                            if getattr(base, f.name) != f.default}
                           if isinstance(method, UnlearningMethod) else set())
    kinds = {f.name: f.metadata.get("type", float) for f in dataclasses.fields(cls)}
    space = base.search_space_for({k: s for k, s in cls.search_space().items()
                                   if k not in fixed}, model, split.retain, device)
    if not space:
        raise InvalidParameterError(
            f"{cls.name}: nothing to calibrate (it declares no search space, or every searched "
            "hyper-parameter was given a fixed value).")
    warm, earlier_defaults = _warm_points(warm_start, cls.name, space, kinds)
    estimate = retrain_estimate(model, split)
    if budget_seconds is not None:
        if not (isinstance(budget_seconds, (int, float)) and math.isfinite(budget_seconds)
                and budget_seconds > 0):
            raise InvalidParameterError(
                f"budget_seconds must be a positive number of seconds; got {budget_seconds!r}.")
        limit: float | None = float(budget_seconds)
    elif budget is not None:
        if not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget > 0):
            raise InvalidParameterError(
                f"budget must be a positive fraction of the retraining cost; got {budget!r}.")
        if estimate is None:
            raise InvalidParameterError(
                "The model records no training time, so a budget as a share of retraining "
                "cannot be worked out: give budget_seconds (or max_trials with budget=None).")
        limit = float(budget) * estimate
    else:
        limit = None
    if limit is None and max_trials is None:
        raise InvalidParameterError("Give a budget, budget_seconds or max_trials: a search "
                                    "needs a limit.")
    if max_trials is not None and (isinstance(max_trials, bool) or not isinstance(
            max_trials, int) or max_trials < 1):
        raise InvalidParameterError(f"max_trials must be a positive int; got {max_trials!r}.")
    check_finite(model, "The model to calibrate")
    say = log or (lambda _m: None)

    from unlearnkit.api import unlearn
    from unlearnkit.evaluation import Outputs, verdict

    # torch's one-time costs of a fresh process (the first optimiser imports torch._dynamo,
    # 1.3 s on this project's CPU; the first pass through the architecture) are paid before
    # the clock starts, as they were before the original's recorded training time
    warm_up(device, model=model, data=split.retain)
    start = time.perf_counter()
    deadline = start + limit if limit is not None else math.inf
    original = Outputs.of(model, split, device, retain=False)  # computed once per search
    defaults = base.for_scenario(split.scenario)
    unset = {k for k in space if getattr(defaults, k) is None}
    first = {k: _clip(getattr(defaults, k), s) for k, s in space.items()
             if getattr(defaults, k) is not None}
    # the trials queued before the sampler's own: the defaults, then an earlier search's best
    # (warm_start); each with the keys left to the method (a default of None)
    # a warm start's point lacking a searched value takes the default's (not a sample)
    completed = [{**first, **p} for p in warm]
    warm = [q for i, q in enumerate(completed) if q not in completed[:i]]
    # the earlier search ran these same defaults and they did not forget: its best go first
    # (the first of them with the whole budget); else the defaults do
    warm_first = (bool(warm) and earlier_defaults is not None
                  and {**first, **earlier_defaults[0]} == first
                  and earlier_defaults[1] != "forgotten")
    queued = (warm + ([first] if first not in warm else []) if warm_first
              else [first] + [p for p in warm if p != first])
    left_to_method = {n: unset - set(p) for n, p in enumerate(queued)}

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP_TRIALS)
    study = optuna.create_study(direction="maximize", sampler=sampler,
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2,
                                                                   n_warmup_steps=1))
    for point in queued:
        study.enqueue_trial(point)
    trials: list[CalibrationTrial] = []
    best: dict[str, Any] = {}
    # per trial, the seconds it spent computing what the search's later trials read back
    one_off_at_start: dict[int, float] = {}
    one_off_of: dict[int, float] = {}

    def one_off_seconds() -> float:
        memo = shared()
        return memo.seconds if memo is not None else 0.0

    def objective(trial: optuna.Trial) -> float:
        t0 = time.perf_counter()
        counted = one_off_seconds()
        for n, before in one_off_at_start.items():  # the trials before ran one at a time
            one_off_of.setdefault(n, counted - before)
        one_off_at_start[trial.number] = counted
        # what the trials so far would cost again: their time less what they computed once
        # for the whole search (the importances, influence's gradients), read back now
        spent = [t.seconds - one_off_of.get(t.number, 0.0) for t in trials
                 if t.state in ("complete", "stalled", "over budget")]
        if t0 >= deadline or (spent and deadline - t0 < statistics.median(spent)):
            # nothing left, or less than a typical trial: one would run past the budget
            study.stop()
            raise optuna.TrialPruned("the budget is spent")  # not recorded: it never ran
        # this trial's own limit: a share of what is left (all of it for the defaults, the
        # first trial, and when there is no budget)
        stop_at = (t0 + TRIAL_SHARE * (deadline - t0)
                   if math.isfinite(deadline) and trial.number > 0 else deadline)
        # a queued trial (the defaults, a warm start) leaves a default of None (resolved when
        # the method runs, e.g. from the original's recipe) to the method, not sampled
        leave = left_to_method.get(trial.number, set())
        values = {k: _suggest(trial, k, s, kinds[k]) for k, s in space.items()
                  if k not in leave}
        try:
            m = dataclasses.replace(base, **values)
        except InvalidParameterError as exc:
            trials.append(CalibrationTrial(trial.number, values, "failed", note=str(exc),
                                           seconds=time.perf_counter() - t0))
            raise optuna.TrialPruned(str(exc)) from None
        step = [0]
        # the trial's best epoch so far whose model is ``forgotten``: its value, where it
        # was, and a copy of its weights (a candidate beside the trial's own result)
        epoch_best: dict[str, Any] = {}
        stall: dict[str, Any] = {}  # the epoch a stalled trial stopped at

        since = [t0]  # when the epoch now running started (its verdict left out)
        # the distance to forgetting after each judged epoch of the phase now running: the
        # stall forecast's history, (phase, [(time, distance), ...])
        pace: list[Any] = [None, []]

        def watch(phase: str, epoch: int, current: nn.Module) -> None:
            now = time.perf_counter()
            if now >= stop_at:
                raise _OverBudget
            took, since[0] = now - since[0], now
            if epoch == 0:
                return
            try:
                o = Outputs.of(current, split, device, retain=False)
            except UnlearnkitError:
                # a model that is not yet the classifier it will be (boundary expanding adds
                # a shadow class and folds it back at the end): judged at the end only
                return
            if not _finite(o):
                # diverged: no later epoch can recover, and the metrics cannot read it
                raise ModelError(f"The model's outputs became non-finite at {phase} epoch "
                                 f"{epoch}: lower the learning rate.")
            try:
                v_epoch = verdict(o, split, original, hint=m.forget_more,
                                  utility_hint=m.keep_utility)
            except UnlearnkitError:
                return
            step[0] += 1
            value, _, _ = objective_of(v_epoch)
            if v_epoch.outcome == "forgotten" and value > epoch_best.get("value", -math.inf):
                epoch_best.update(value=value, verdict=v_epoch,
                                  at={"phase": phase, "epoch": epoch},
                                  state=_weights(current))
            trial.report(value, step[0])
            if trial.should_prune():
                raise optuna.TrialPruned
            if not epoch_best and math.isfinite(stop_at):
                if pace[0] != phase:
                    pace[0], pace[1] = phase, []
                pace[1].append((now, distance_to_forgetting(o, v_epoch)))
                if _stalled(pace[1], stop_at):
                    # the trial's result: this epoch's model, judged (not forgotten, but a
                    # candidate still when no trial forgets)
                    stall.update(verdict=v_epoch, at={"phase": phase, "epoch": epoch},
                                 state=_weights(current))
                    raise _Stalled
            since[0] = time.perf_counter()
            if since[0] + took > stop_at:
                # another epoch like this one would end past the trial's limit, where it
                # would not even be judged: stop here (with the epoch that forgot, if one
                # did), rather than after it, past the budget
                raise _OverBudget

        def salvage() -> nn.Module | None:
            """The trial's best epoch that forgot, as a model (``None``: there is none)."""
            return (_epoch_model(model, epoch_best["state"], m, seed, split, device,
                                 time.perf_counter() - t0) if epoch_best else None)

        failure: str | None = None
        cut: str | None = None
        caught: list[warnings.WarningMessage] = []
        try:
            with (watch_epochs(watch), time_limit(stop_at),
                  warnings.catch_warnings(record=True) as caught):
                # a trial's warnings (SSD selecting nothing at a large alpha, say) are facts
                # of that trial: its note, not the search's output
                warnings.simplefilter("always")
                out = unlearn(model, split, m, seed=seed, device=device, progress=progress,
                              verdict=False)
        except _Stalled:
            stalled = _epoch_model(model, stall["state"], m, seed, split, device,
                                   time.perf_counter() - t0)
            if stalled is None:
                trials.append(CalibrationTrial(
                    trial.number, values, "stalled", seconds=time.perf_counter() - t0,
                    note=_noted(STALLED, caught)))
                raise optuna.TrialPruned("stalled") from None
            out, cut = stalled, STALLED
        except UnlearnkitError as exc:  # e.g. a learning rate that makes the loss diverge
            salvaged = salvage()
            if salvaged is None:
                trials.append(CalibrationTrial(trial.number, values, "failed",
                                               note=_noted(str(exc), caught),
                                               seconds=time.perf_counter() - t0))
                raise optuna.TrialPruned(str(exc)) from None
            # it failed after an epoch that forgot (an ascent that ran away later): that
            # epoch's model is the trial's result
            out, failure = salvaged, f"the method failed after that epoch: {exc}"
        except (_OverBudget, TimeLimitReached):  # at an epoch's end, or mid-epoch
            salvaged = salvage()
            if salvaged is None:
                now = time.perf_counter()
                trials.append(CalibrationTrial(trial.number, values, "over budget",
                                               seconds=now - t0))
                if now >= deadline:
                    study.stop()
                raise optuna.TrialPruned("over budget") from None
            # stopped at its time limit after an epoch that forgot: that epoch's model
            out, cut = salvaged, "stopped at its time limit after that epoch"
        except optuna.TrialPruned:
            salvaged = salvage()
            if salvaged is None:
                trials.append(CalibrationTrial(trial.number, values, "pruned",
                                               seconds=time.perf_counter() - t0))
                raise
            # its later epochs fell below the median, after an epoch that forgot: that one
            out, cut = salvaged, "pruned after that epoch"
        stopped_at = None
        if stall and cut == STALLED:  # the epoch it stalled at, as judged then
            v, stopped_at = stall["verdict"], stall["at"]
        elif failure is not None or cut is not None:
            # an epoch's model, salvaged: as judged then (the original's architecture with
            # the weights the epoch's verdict saw: the same model, the same verdict)
            v, stopped_at = epoch_best["verdict"], epoch_best["at"]
        else:
            v = verdict(out, split, original, hint=m.forget_more, utility_hint=m.keep_utility)
        if stopped_at is None and epoch_best and (v.outcome != "forgotten"
                                                  or epoch_best["value"] > objective_of(v)[0]):
            # an epoch on the way forgot, and better than the end: early stopping, judged by
            # the verdict alone
            salvaged = salvage()
            if salvaged is not None:
                out, v, stopped_at = salvaged, epoch_best["verdict"], epoch_best["at"]
        if stopped_at is None and time.perf_counter() > deadline:
            # the trial's own result, finished past the budget (a pass that cannot stop
            # mid-way): discarded. An epoch's model (stopped_at) was judged before its limit:
            # a trial cut at the first optimiser step past the budget keeps it, the step and
            # the copy of its weights counted in the search's seconds
            trials.append(CalibrationTrial(trial.number, values, "over budget",
                                           seconds=time.perf_counter() - t0,
                                           note="finished after the budget ran out"))
            study.stop()
            raise optuna.TrialPruned("over budget")
        value, shortfall, retained = objective_of(v)
        tolerance = float(v.numbers["tolerance"])
        drop = float(v.numbers["original_heldout_retain_acc"]) - retained - tolerance
        trial.set_constraint("shortfall", shortfall)  # feasible: <= 0 (constrained TPE)
        trial.set_constraint("utility", drop)
        record = CalibrationTrial(trial.number, values,
                                  "stalled" if cut == STALLED else "complete", value,
                                  v.outcome, retained,
                                  shortfall, time.perf_counter() - t0,
                                  note=_noted(failure or cut, caught), stopped_at=stopped_at)
        trials.append(record)
        if not best or _rank(record) > _rank(best["trial"]):
            best.update(trial=record, model=out, verdict=v, method=m)
        where = (f" at {stopped_at['phase']} epoch {stopped_at['epoch']}" if stopped_at
                 else "")
        say(f"trial {trial.number}: {values} -> {v.outcome}{where}, retained "
            f"{retained:.3f}, shortfall {shortfall:.3f} ({record.seconds:.2f} s)")
        return value

    timeout = None if limit is None else max(deadline - time.perf_counter(), 0.0)
    with shared_between_trials():  # what a method computes from the original alone, once
        study.optimize(objective, n_trials=max_trials, timeout=timeout,
                       catch=(_OverBudget,))
    seconds = time.perf_counter() - start
    if not best:
        states = ", ".join(f"{n} {state}" for state, n in sorted(
            Counter(t.state for t in trials).items()))
        why = f" ({states})" if states else ""
        raise NoTrialFinished(
            f"{cls.name}: no trial finished within the budget ({limit:.3g} s){why}; give a "
            "larger budget or budget_seconds." if limit is not None else
            f"{cls.name}: no trial finished{why}.", trials, limit)
    m_best: UnlearningMethod = best["method"].for_scenario(split.scenario)
    out = best["model"]
    info = get_info(out)
    summary = {"budget_seconds": limit, "retrain_estimate": estimate, "seconds": seconds,
               "trials": len(trials), "best_trial": best["trial"].number,
               "stopped_at": best["trial"].stopped_at}
    if info is not None:
        method_info = dict(info.method or {})
        method_info["calibration"] = summary
        set_info(out, info.replace(method=method_info, verdict=best["verdict"].to_dict()))
    return Calibration(
        method=cls.name, params=m_best.json_params(), model=out, verdict=best["verdict"],
        trials=trials, best_trial=best["trial"].number, budget_seconds=limit,
        retrain_estimate=estimate, seconds=seconds, seed=seed,
        space={k: s.to_dict() for k, s in space.items()}, stopped_at=best["trial"].stopped_at,
        warm_start=warm)


def _epoch_model(model: nn.Module, state: dict[str, torch.Tensor], method: UnlearningMethod,
                 seed: int, split: Split, device: str | torch.device | None,
                 seconds: float) -> nn.Module | None:
    """A copy of ``model`` holding an epoch's weights ``state``, with the provenance that
    :func:`unlearnkit.unlearn` gives its result (``None`` if the weights do not fit it)."""
    if not _same_shapes(state, model.state_dict()):
        return None
    out = copy.deepcopy(model)
    if device is not None:
        out = out.to(device)
    out.load_state_dict(state)
    info = (get_info(model) or ModelInfo()).replace(
        seconds=seconds, method={"name": method.name, "params": method.json_params(),
                                 "seed": seed})
    if split.description:
        info = info.replace(split=dict(split.description))
    return set_info(out, info)


def _same_shapes(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)

