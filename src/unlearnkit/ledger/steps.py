"""The work of one ``apply`` (and of :meth:`Ledger.held`): the data and validation set, the
forget and retain sets, the approximate step or the retrain, and the verdicts.

Kept apart from :mod:`unlearnkit.ledger.core`, which owns the records: nothing here writes to
the ledger; :class:`Step` returns each entry's payload and the checkpoint's bytes, which the
ledger then stores and commits.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from unlearnkit.data.splits import Split, validation_indices
from unlearnkit.exceptions import ForgetVerdictWarning, LedgerError
from unlearnkit.ledger.checkpoints import checkpoint_bytes
from unlearnkit.ledger.policy import Trigger
from unlearnkit.ledger.state import RequestRecord, State
from unlearnkit.metrics.verdict import OUTCOMES

__all__ = ["FAILPOINT_ENV", "Step"]

#: Test hook: ``kill@POINT`` makes ``apply`` SIGKILL its own process at POINT, ``sleep@POINT:S``
#: pauses it there S seconds (several, comma-separated). Points, in order: ``locked``,
#: ``unlearned``, ``checkpoint-written``, ``entry-inserted`` (rows written, not committed),
#: ``committed``.
FAILPOINT_ENV = "UNLEARNKIT_LEDGER_FAILPOINT"


def _failpoint(point: str) -> None:
    spec = os.environ.get(FAILPOINT_ENV)
    if not spec:
        return
    for item in spec.split(","):
        action, _, rest = item.strip().partition("@")
        where, _, arg = rest.partition(":")
        if where != point:
            continue
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "sleep":
            time.sleep(float(arg or 1.0))


class Step:
    """The data, the validation set and the models that one apply or check works on."""

    def __init__(self, ledger: Any, st: State, device: str | torch.device | None) -> None:
        self.ledger, self.st, self.device = ledger, st, device
        self.samples = ledger._samples(st, load=True)
        data = self.samples.data
        assert data is not None
        self.data = data
        vidx = validation_indices(data.test.y.numpy())
        keep = np.ones(len(data.test), dtype=bool)
        keep[vidx] = False
        self.validation = data.test.subset(vidx)
        self.test = data.test.subset(np.flatnonzero(keep))
        self.labels = data.train.y.numpy()

    # the verdicts ---------------------------------------------------------
    def judge(self, model: nn.Module, base: nn.Module, positions: np.ndarray,
              erased_classes: set[int]) -> dict[str, Any] | None:
        """The verdict of ``model`` on the samples at ``positions``: those of an erased class
        by the class rule, the others by the sample rule (their unseen data: the validation
        samples of the classes not erased); utility against ``base``. The outcome is the worst
        of the parts."""
        from unlearnkit.evaluation import verdict

        if not len(positions):
            return None
        train, n_cls = self.data.train, self.data.num_classes
        labels = self.labels[positions]
        in_class = np.isin(labels, sorted(erased_classes)) if erased_classes else \
            np.zeros(len(positions), dtype=bool)
        parts = []
        empty = train.subset(np.zeros(0, dtype=np.int64))
        vy = self.validation.y.numpy()
        if in_class.any():
            classes = tuple(sorted({int(c) for c in labels[in_class]}))
            split = Split(scenario="class", forget=train.subset(positions[in_class]),
                          retain=empty, test=None, forget_classes=classes, num_classes=n_cls,
                          validation=self.validation)
            v = verdict(model, split, base, device=self.device)
            parts.append({"scope": "classes", "classes": list(classes),
                          "n": int(in_class.sum()), **v.to_dict()})
        if (~in_class).any():
            seen = np.flatnonzero(~np.isin(vy, sorted(erased_classes))) if erased_classes \
                else np.arange(len(vy))
            split = Split(scenario="random", forget=train.subset(positions[~in_class]),
                          retain=empty, test=None, num_classes=n_cls,
                          validation=self.validation.subset(seen))
            v = verdict(model, split, base, device=self.device)
            parts.append({"scope": "samples", "n": int((~in_class).sum()), **v.to_dict()})
        outcome = max((p["outcome"] for p in parts), key=OUTCOMES.index)
        return {"outcome": outcome, "n": len(positions), "parts": parts}

    def verdicts(self, model: nn.Module, base: nn.Module, new: np.ndarray,
                 erased: np.ndarray, classes: set[int]) -> dict[str, Any]:
        start = time.perf_counter()
        out = {"new": self.judge(model, base, new, classes),
               "all": self.judge(model, base, erased, classes)}
        out["seconds"] = time.perf_counter() - start
        return out

    # the splits -----------------------------------------------------------
    def _positions(self, batch: list[RequestRecord]) -> tuple[np.ndarray, np.ndarray, int]:
        """(new positions, every erased position incl. the new, absent count)."""
        new, absent = self.samples.positions([h for r in batch for h in r.hashes])
        old, _ = self.samples.positions(sorted(self.st.erased_hashes()))
        return new, np.union1d(old, new).astype(np.int64), absent

    def split(self, forget: np.ndarray, erased: np.ndarray, classes: tuple[int, ...] | None,
              description: dict[str, Any]) -> Split:
        train = self.data.train
        keep = np.ones(len(train), dtype=bool)
        keep[erased] = False
        test_retain = test_forget = None
        if classes:
            test_retain = self.test.of_classes(classes, keep=False)
            test_forget = self.test.of_classes(classes, keep=True)
        return Split(scenario="class" if classes else "random", forget=train.subset(forget),
                     retain=train.subset(np.flatnonzero(keep)), test=self.test,
                     forget_indices=forget, forget_classes=classes, test_retain=test_retain,
                     test_forget=test_forget, num_classes=self.data.num_classes,
                     description=description, validation=self.validation)

    def _common(self, batch: list[RequestRecord], number: int, new: np.ndarray,
                erased: np.ndarray, absent: int) -> dict[str, Any]:
        return {"requests": list(_ids(batch)), "n_new": len(new),
                "n_erased": len(erased), "n_absent": absent,
                "parent": self.st.current.number, "version": number}

    def _warm_start(self, name: str) -> tuple[int | None, Any]:
        """The last calibrated version of method ``name`` and its search's history (a ledger
        written before the history was kept: the values it chose): the next search of that
        method starts from it (:func:`unlearnkit.calibrate`'s ``warm_start``). ``(None,
        None)`` when no version was calibrated with it."""
        for v in reversed(self.st.versions):
            method, cal = v.payload.get("method") or {}, v.payload.get("calibration")
            if method.get("name") == name and method.get("calibrated") and cal:
                if cal.get("history"):
                    return v.number, {"method": name, "trials": cal["history"]}
                params = method.get("params") or {}
                point = {k: params[k] for k in cal.get("space") or {}
                         if params.get(k) is not None}
                if point:
                    return v.number, [point]
        return None, None

    # the steps ------------------------------------------------------------
    def approximate(self, batch: list[RequestRecord], name: str, params: dict[str, Any],
                    triggers: list[Trigger], *, calibrate: bool, budget: float | None,
                    budget_seconds: float | None, max_trials: int | None, seed: int | None,
                    progress: bool) -> dict[str, Any]:
        from unlearnkit.api import unlearn
        from unlearnkit.methods.base import get_method
        from unlearnkit.models.info import get_info

        st, log = self.st, self.ledger._log
        number = st.current.number + 1
        new, erased, absent = self._positions(batch)
        if not len(new):
            raise LedgerError("None of the pending requests' samples is in the training data "
                              "any more: there is nothing to unlearn from. Use apply with "
                              "retrain (--retrain).")
        new_classes = {r.class_ for r in batch if r.class_ is not None}
        classes = st.erased_classes() | new_classes
        class_pos = set(np.flatnonzero(np.isin(self.labels, sorted(new_classes))).tolist()) \
            if new_classes else set()
        scenario_classes = (tuple(sorted(new_classes))
                            if new_classes and set(new.tolist()) <= class_pos else None)
        step_seed = st.config["seed"] + number if seed is None else seed
        desc = {"ledger": st.ledger_id, "version": number, "requests": list(_ids(batch)),
                "scenario": "class" if scenario_classes else "random",
                "n_forget": len(new)}
        split = self.split(new, erased, scenario_classes, desc)
        current = self.ledger._model(st, st.current.number)
        base = current if st.base.number == st.current.number else \
            self.ledger._model(st, st.base.number)
        log(f"v{number}: {name} on {len(batch)} request(s), {len(new)} samples "
            f"({len(erased)} erased in all)")
        start = time.perf_counter()
        calibration = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ForgetVerdictWarning)
            if calibrate:
                from unlearnkit.calibration import DEFAULT_BUDGET
                from unlearnkit.calibration import calibrate as search

                # the budget: given in seconds; or a share of version 0's training time
                # (its recorded seconds x |D_r| / |D|: the current version's own seconds are
                # an unlearning step's); max_trials alone: no time limit
                limit = budget_seconds
                if limit is None and (budget is not None or max_trials is None):
                    v0 = get_info(self.ledger._model(st, 0))
                    trained = v0.seconds if v0 is not None else None
                    if trained is None:
                        raise LedgerError("Version 0 records no training time to scale the "
                                          "calibration budget by: give budget_seconds or "
                                          "max_trials.")
                    n_retain = len(self.data.train) - len(erased)
                    limit = (DEFAULT_BUDGET if budget is None else budget) * trained * \
                        n_retain / len(self.data.train)
                warm_from, warm = self._warm_start(name)
                cal = search(current, split, name, budget=None, budget_seconds=limit,
                             max_trials=max_trials, seed=step_seed, device=self.device,
                             log=log, warm_start=warm, **params)
                model = cal.model
                used = dict(cal.params)
                calibration = {"trials": len(cal.trials), "best_trial": cal.best_trial,
                               "stopped_at": cal.stopped_at,
                               "budget_seconds": cal.budget_seconds, "seconds": cal.seconds,
                               "space": cal.space, "warm_start": warm_from,
                               "history": [t.to_dict() for t in cal.trials]}
            else:
                model = unlearn(current, split, name, seed=step_seed, device=self.device,
                                progress=progress, verdict=False, **params)
                used = get_method(name, **params).for_scenario(split.scenario).json_params()
        method_seconds = time.perf_counter() - start
        info = get_info(model)
        _failpoint("unlearned")
        verdicts = self.verdicts(model, base, new, erased, classes)
        blob = checkpoint_bytes(model)
        digest = hashlib.sha256(blob).hexdigest()
        accept = st.policy.accept
        failed = [f"{scope}: {v['outcome']}" for scope, v in
                  (("new samples", verdicts["new"]), ("all erased samples", verdicts["all"]))
                  if v is not None and v["outcome"] not in accept]
        payload = {
            **self._common(batch, number, new, erased, absent),
            "base": st.base.number, "scenario": desc["scenario"],
            "method": {"name": name, "params": used, "seed": step_seed,
                       "calibrated": calibrate},
            "seconds": {"method": info.seconds if info and info.seconds is not None
                        else method_seconds,
                        "wall": method_seconds, "verdicts": verdicts.pop("seconds")},
            "verdicts": verdicts,
            "checkpoint": {"input": st.current.checkpoint, "output": digest},
            "policy": {"rules": [t.to_dict() for t in triggers], "decision": "approximate",
                       "accept": list(accept)},
        }
        if calibration is not None:
            payload["calibration"] = calibration
        log(f"v{number}: verdict new {_outcome(verdicts['new'])}, all "
            f"{_outcome(verdicts['all'])}" + (f"; refused ({'; '.join(failed)})" if failed
                                               else ""))
        if failed:
            payload = {**payload, "attempt": payload.pop("version"),
                       "reason": f"verdict not in {list(accept)}: {'; '.join(failed)}"}
            return {"accepted": False, "payload": _jsonable(payload), "blob": None}
        return {"accepted": True, "payload": _jsonable(payload), "blob": blob}

    def retrain(self, batch: list[RequestRecord], fired: list[Trigger],
                triggers: list[Trigger], *, seed: int | None, progress: bool
                ) -> tuple[dict[str, Any], bytes]:
        from unlearnkit.api import unlearn
        from unlearnkit.models.info import get_info

        st, log = self.st, self.ledger._log
        number = st.current.number + 1
        new, erased, absent = self._positions(batch)
        classes = st.erased_classes() | {r.class_ for r in batch if r.class_ is not None}
        step_seed = st.config["seed"] + number if seed is None else seed
        desc = {"ledger": st.ledger_id, "version": number, "requests": list(_ids(batch)),
                "scenario": "random", "n_forget": len(erased), "retrain": True}
        split = self.split(erased, erased, None, desc) if len(erased) else None
        original = self.ledger._model(st, 0)
        reasons = [t.describe() for t in fired]
        log(f"v{number}: exact retrain on {len(self.data.train) - len(erased)} samples "
            f"({'; '.join(reasons)})")
        start = time.perf_counter()
        if split is None:
            raise LedgerError("Nothing is erased: a retrain would remake version 0.")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ForgetVerdictWarning)
            model = unlearn(original, split, "retrain", seed=step_seed, device=self.device,
                            progress=progress, verdict=False)
        wall = time.perf_counter() - start
        info = get_info(model)
        base = self.ledger._model(st, st.base.number)
        verdicts = self.verdicts(model, base, new, erased, classes)
        blob = checkpoint_bytes(model)
        notes = []
        if any(v is not None and v["outcome"] not in st.policy.accept
               for v in (verdicts["new"], verdicts["all"])):
            notes.append("an exact retrain is promoted whatever its verdict: a failing verdict "
                         "on it is the test's false alarm, or a recipe that under-trains")
        payload = {
            **self._common(batch, number, new, erased, absent),
            "base": number, "scenario": "retrain",
            "method": {"name": "retrain", "params": {}, "seed": step_seed,
                       "calibrated": False},
            "seconds": {"method": info.seconds if info and info.seconds is not None else wall,
                        "wall": wall, "verdicts": verdicts.pop("seconds")},
            "verdicts": verdicts,
            "checkpoint": {"input": st.versions[0].checkpoint,
                           "output": hashlib.sha256(blob).hexdigest()},
            "policy": {"rules": [t.to_dict() for t in triggers],
                       "fired": [t.to_dict() for t in fired], "decision": "retrain"},
            "reasons": reasons,
            "notes": notes,
        }
        log(f"v{number}: verdict new {_outcome(verdicts['new'])}, all "
            f"{_outcome(verdicts['all'])}")
        return _jsonable(payload), blob


def _outcome(v: dict[str, Any] | None) -> str:
    return "-" if v is None else str(v["outcome"])


def _ids(batch: list[RequestRecord]) -> tuple[str, ...]:
    return tuple(r.id for r in batch)


def _jsonable(obj: Any) -> Any:
    from unlearnkit.compare import jsonable

    return jsonable(obj)
