"""A benchmark's plan: the config expanded into runs, and the models they need.

One :class:`Run` per (scenario, method, hyper-parameters, seed), identified by
:attr:`Run.run_id`, a hash of everything that determines its result (dataset and options,
architecture and arguments, recipe, scenario, method and its full parameters, seed, and which
metrics are computed). Each run needs the original trained with its seed and the retrained
reference of its (scenario, seed); both are trained once and cached
(:func:`unlearnkit.pools.cached_original`, :func:`unlearnkit.pools.cached_reference`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from unlearnkit.bench.config import BenchConfig, Scenario
from unlearnkit.compare import refusal
from unlearnkit.methods.base import METHODS, get_method

__all__ = ["ORIGINAL", "Plan", "Run", "expand"]

_FORMAT = 2

#: The pseudo-method of the rows that judge the original model itself, like a method.
ORIGINAL = "original"


@dataclass(frozen=True)
class Run:
    """One run of the benchmark: a method, with its parameters, on one scenario and seed."""

    run_id: str
    dataset: str
    dataset_options: dict[str, Any] = field(compare=False)
    arch: str
    arch_kwargs: dict[str, Any] = field(compare=False)
    recipe: dict[str, Any] = field(compare=False)
    scenario: Scenario
    method: str
    params: dict[str, Any] = field(compare=False)
    seed: int
    relearn: bool = True
    mia: bool = True
    #: why the method refuses this scenario (declared by the method), or ``None``
    refused: str | None = None
    #: record accuracy per epoch during the method's training phases
    curves: bool = False
    #: the size of the pools for the competition's score (0: no score)
    score_models: int = 0
    #: ``"cold"`` or ``"warm"``: whether the timed call may read the importance cache
    timing: str = "cold"
    #: a calibrated run's limits (``{"budget", "budget_seconds", "max_trials"}``;
    #: :class:`unlearnkit.bench.config.Calibrate`): its method's hyper-parameters are searched
    #: from ``params`` (the defaults) within them; ``None`` for every other run
    calibrate: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def label(self) -> str:
        """The method's name, marked when the run is calibrated."""
        return f"{self.method} (calibrated)" if self.calibrate else self.method

    @property
    def method_seed(self) -> int:
        """The seed the method runs with: ``seed``, except ``retrain`` (``seed + 1``), which is
        then judged against the reference like any method: the noise floor, as in
        :func:`unlearnkit.compare.compare_methods`."""
        return self.seed + 1 if self.method == "retrain" else self.seed

    def spec(self) -> dict[str, Any]:
        """Everything that determines the run's result (what :attr:`run_id` hashes)."""
        return _spec(self.dataset, self.dataset_options, self.arch, self.arch_kwargs,
                     self.recipe, self.scenario, self.method, self.params, self.seed,
                     self.relearn, self.mia, self.curves, self.score_models, self.timing,
                     self.calibrate)


def _spec(dataset: str, dataset_options: dict[str, Any], arch: str,
          arch_kwargs: dict[str, Any], recipe: dict[str, Any], scenario: Scenario, method: str,
          params: dict[str, Any], seed: int, relearn: bool, mia: bool, curves: bool,
          score_models: int, timing: str = "cold",
          calibrate: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "format": _FORMAT,
        "dataset": {"name": dataset, "options": dataset_options},
        "model": {"arch": arch, "kwargs": arch_kwargs},
        "recipe": recipe,
        "scenario": scenario.to_dict(),
        "method": method,
        "params": params,
        "seed": seed,
        "metrics": {"relearn": relearn, "mia": mia, "score_models": score_models},
        "record": {"curves": curves},
    }
    if timing != "cold":  # only then: the runs of every earlier store keep their ids
        spec["record"]["timing"] = timing
    if calibrate:  # likewise: only calibrated runs carry the key
        spec["calibrate"] = calibrate
    return spec


def run_id(spec: dict[str, Any]) -> str:
    """A stable 16-hex-digit id of a run's spec (tuples and lists hash alike)."""
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Plan:
    """The runs of a benchmark, and the originals and references they need."""

    config: BenchConfig
    runs: tuple[Run, ...]

    @property
    def seeds(self) -> tuple[int, ...]:
        """One original per seed."""
        return tuple(dict.fromkeys(r.seed for r in self.runs))

    @property
    def references(self) -> tuple[tuple[Scenario, int], ...]:
        """One retrained reference per (scenario, seed) that a non-refused run needs."""
        return tuple(dict.fromkeys((r.scenario, r.seed) for r in self.runs if not r.refused))

    def __len__(self) -> int:
        return len(self.runs)


def expand(config: BenchConfig) -> Plan:
    """One :class:`Run` per (scenario, method, grid point, seed), in that nesting order;
    with ``config.original``, first an :data:`ORIGINAL` run per (scenario, seed)."""
    options = dict(config.dataset_options)
    kwargs = dict(config.arch_kwargs)
    recipe = config.recipe.to_dict()
    runs: list[Run] = []
    seen: set[str] = set()
    points = {m.name: m.points() for m in config.methods}
    # a budget that is a share of the retraining needs the retraining measured in the same
    # pool: the reference retrain run, added where the config's methods lack it (else the
    # share would be of the cached reference's time, measured some other day)
    share = any(c.budget_seconds is None and c.budget is not None for c in config.calibrate)
    for scenario in config.scenarios:
        todo: list[tuple[str, list[dict[str, Any]], str | None]] = []
        if config.original:
            todo.append((ORIGINAL, [{}], None))
        if share:
            todo.append(("retrain", [get_method("retrain").params()], None))
        todo += [(g.name, points[g.name], refusal(METHODS.get(g.name), scenario.method_kind))
                 for g in config.methods]
        calibrated = {c.method: c.to_dict() for c in config.calibrate}
        for method, grid_points, why in todo:
            batch: list[tuple[dict[str, Any], dict[str, Any] | None]] = [
                (params, None) for params in grid_points]
            if method in calibrated:  # after the grid's points: searched from the defaults
                batch.append((get_method(method).params(), calibrated.pop(method)))
            for params, limits in batch:
                n_models = (config.score_models if limits is None
                            and config.scored(method, params) else 0)
                curves = config.curves and method != ORIGINAL and limits is None
                for seed in config.seeds:
                    spec = _spec(config.dataset, options, config.arch, kwargs, recipe, scenario,
                                 method, params, seed, config.relearn, config.mia, curves,
                                 n_models, config.timing, limits)
                    rid = run_id(spec)
                    if rid in seen:  # the same method listed twice, or a repeated grid value
                        continue
                    seen.add(rid)
                    runs.append(Run(
                        run_id=rid, dataset=config.dataset, dataset_options=options,
                        arch=config.arch, arch_kwargs=kwargs, recipe=recipe, scenario=scenario,
                        method=method, params=params, seed=seed, relearn=config.relearn,
                        mia=config.mia, refused=why, curves=curves, score_models=n_models,
                        timing=config.timing, calibrate=limits,
                    ))
    return Plan(config=config, runs=tuple(runs))
