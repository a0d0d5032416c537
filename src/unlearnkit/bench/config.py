"""A benchmark's configuration: a YAML file validated into frozen dataclasses.

.. code-block:: yaml

    dataset: digits                  # or {name: digits, options: {...}}, and for a subset
                                     # {..., root: PATH, train_per_class: N, test_per_class: N}
    model: {arch: mlp, kwargs: {hidden: [16]}}   # or just: cnn
    recipe: {epochs: 2}              # default: the architecture's recipe
    scenarios:
      classes: [[3], [1, 7]]         # each list is forgotten together
      random: [0.1]                  # fractions of the training set (split seed = run seed)
    methods:                         # or: all (every registered method at its defaults)
      finetune: {}                   # defaults
      ssd: {alpha: [1, 10], lam: 1}  # a grid: the cartesian product; a scalar is one value
      teacher:                       # a list of grids: their union (one sweep per parameter)
        - {forget_lr: [1.0e-6, 1.0e-4]}
        - {forget_epochs: [5, 30]}
    seeds: [0, 1, 2]
    relearn: false                   # compute anamnesis (default: true)
    mia: true                        # the membership-inference attacks (default: true)
    curves: true                     # accuracy on D_r, D_f and test per epoch (default: false)
    original: true                   # an 'original' row per scenario and seed (default: true)
    score:                           # the competition's score, from pools of n_models
      n_models: 8
      methods: {perturb: {beta: 0.7}}   # the runs it applies to ({} = all of the method's)

Each run is identified by a hash of everything that determines its result
(:mod:`unlearnkit.bench.plan`).

Every mistake raises :class:`~unlearnkit.exceptions.InvalidParameterError` naming the key.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from unlearnkit.api import default_recipe
from unlearnkit.data.registry import DATASETS
from unlearnkit.exceptions import InvalidParameterError, UnlearnkitError
from unlearnkit.methods.base import METHODS, get_method
from unlearnkit.models.registry import MODELS
from unlearnkit.registry import did_you_mean
from unlearnkit.training import Recipe

__all__ = [
    "PRESETS",
    "BenchConfig",
    "MethodGrid",
    "Scenario",
    "load_config",
    "parse_config",
    "preset",
]

_TOP_KEYS = ("name", "dataset", "model", "recipe", "scenarios", "methods", "seeds", "relearn",
             "mia", "curves", "original", "score")


@dataclass(frozen=True)
class Scenario:
    """One forget request: ``kind="class"`` with ``classes``, or ``kind="random"`` with
    ``fraction`` (the split's seed is the run's seed)."""

    kind: str
    classes: tuple[int | str, ...] = ()
    fraction: float | None = None

    @property
    def label(self) -> str:
        if self.kind == "class":
            names = ",".join(str(c) for c in self.classes)
            return f"class{'es' if len(self.classes) > 1 else ''} {names}"
        return f"random {self.fraction * 100:g}%"  # type: ignore[operator]

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "class":
            return {"kind": "class", "classes": list(self.classes)}
        return {"kind": "random", "fraction": self.fraction}


Grid = tuple[tuple[str, tuple[Any, ...]], ...]


@dataclass(frozen=True)
class MethodGrid:
    """A method and its hyper-parameter grid: ``grid`` maps each parameter to its values;
    ``sweeps`` are further grids whose points are added (a union of grids, so that parameters
    can be swept one at a time rather than crossed)."""

    name: str
    grid: Grid = ()
    sweeps: tuple[Grid, ...] = ()

    def points(self) -> list[dict[str, Any]]:
        """Every combination of every grid, as the method's full parameters (defaults filled
        in), each once, in order."""
        kinds = {f.name: f.metadata.get("type") for f in dataclasses.fields(METHODS.get(self.name))}

        def typed(key: str, value: Any) -> Any:  # alpha: 5 and alpha: 5.0 are one run
            if kinds.get(key) is float and isinstance(value, int) and not isinstance(value, bool):
                return float(value)
            return value

        out: dict[str, dict[str, Any]] = {}
        for grid in (self.grid, *self.sweeps):
            keys = [k for k, _ in grid]
            for combo in itertools.product(*(values for _, values in grid)):
                params = get_method(self.name, **{k: typed(k, v) for k, v in
                                                  zip(keys, combo, strict=True)}).params()
                out.setdefault(repr(sorted(params.items())), params)
        return list(out.values())


@dataclass(frozen=True)
class BenchConfig:
    """A validated benchmark configuration (see the module's docstring for the YAML)."""

    name: str
    dataset: str
    dataset_options: tuple[tuple[str, Any], ...]
    arch: str
    arch_kwargs: tuple[tuple[str, Any], ...]
    recipe: Recipe
    scenarios: tuple[Scenario, ...]
    methods: tuple[MethodGrid, ...]
    seeds: tuple[int, ...]
    relearn: bool = True
    mia: bool = True
    curves: bool = False
    original: bool = True
    #: the competition's score: pools of ``score_models`` models for the runs that
    #: ``score_runs`` selects (method -> parameter values; an empty mapping selects all runs)
    score_models: int = 0
    score_runs: tuple[tuple[str, tuple[tuple[str, tuple[Any, ...]], ...]], ...] = ()

    def scored(self, method: str, params: dict[str, Any]) -> bool:
        """Whether the run of ``method`` with ``params`` gets the competition's score."""
        if not self.score_models:
            return False
        for name, where in self.score_runs:
            if name == method and all(_same(params.get(k), values) for k, values in where):
                return True
        return False


def _same(value: Any, values: tuple[Any, ...]) -> bool:
    return any(value == v or (isinstance(value, float) and isinstance(v, int | float)
                              and not isinstance(v, bool) and float(v) == value) for v in values)


def _err(key: str, expected: str, got: Any) -> InvalidParameterError:
    return InvalidParameterError(
        f"The {key!r} key of the benchmark config must be {expected}. Got {got!r} instead.")


def _mapping(key: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _err(key, "a mapping", value)
    return value


def _nonempty_list(key: str, value: Any) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise _err(key, "a non-empty list", value)
    return value


def _freeze(value: Any) -> Any:
    """Lists as tuples (hashable, and how the registries' defaults look)."""
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _unknown(where: str, keys: Any, valid: tuple[str, ...]) -> None:
    for key in keys:
        if key not in valid:
            raise InvalidParameterError(
                f"Unknown key {key!r} in {where}.{did_you_mean(str(key), valid)} "
                f"Valid keys: {', '.join(valid)}."
            )


def _scenarios(value: Any) -> tuple[Scenario, ...]:
    m = _mapping("scenarios", value)
    _unknown("'scenarios'", m, ("classes", "random"))
    out: list[Scenario] = []
    for i, group in enumerate(_nonempty_list("scenarios.classes", m["classes"])
                              if "classes" in m else ()):
        key = f"scenarios.classes[{i}]"
        if isinstance(group, int | str) and not isinstance(group, bool):
            group = [group]
        group = _nonempty_list(key, group)
        if any(isinstance(c, bool) or not isinstance(c, int | str) for c in group):
            raise _err(key, "a list of class numbers or names", group)
        out.append(Scenario("class", classes=tuple(group)))
    for i, f in enumerate(_nonempty_list("scenarios.random", m["random"])
                          if "random" in m else ()):
        if isinstance(f, bool) or not isinstance(f, int | float) or not 0 < f < 1:
            raise _err(f"scenarios.random[{i}]", "a fraction in (0, 1)", f)
        out.append(Scenario("random", fraction=float(f)))
    if not out:
        raise _err("scenarios", "a mapping with 'classes' and/or 'random'", value)
    return tuple(dict.fromkeys(out))


def _methods(value: Any) -> tuple[MethodGrid, ...]:
    if value == "all":
        return tuple(MethodGrid(name) for name in METHODS.names())
    if isinstance(value, list):  # a list of names: each at its defaults
        value = {name: {} for name in _nonempty_list("methods", value)}
    m = _mapping("methods", value)
    if not m:
        raise _err("methods", "a non-empty mapping {method: {param: [values]}} or 'all'", value)
    out = []
    for name, spec in m.items():
        try:
            METHODS.get(str(name))
            grids = []
            specs = spec if isinstance(spec, list) and spec else [spec]
            for k, grid in enumerate(specs):
                where = f"methods.{name}" + (f"[{k}]" if isinstance(spec, list) else "")
                grid = _mapping(where, {} if grid is None else grid)
                items = []
                for param, values in grid.items():
                    values = values if isinstance(values, list) else [values]
                    values = _nonempty_list(f"{where}.{param}", values)
                    items.append((str(param), tuple(_freeze(v) for v in values)))
                grids.append(tuple(items))
            mg = MethodGrid(str(name), grids[0], tuple(grids[1:]))
            mg.points()  # every value of the grid is checked by the method itself
        except UnlearnkitError as exc:
            if str(exc).startswith(("The 'methods", f"In methods.{name}")):
                raise
            raise InvalidParameterError(f"In methods.{name}: {exc}") from None
        out.append(mg)
    return tuple(out)


def parse_config(raw: Any, *, name: str = "config") -> BenchConfig:
    """Validate a parsed YAML document (a mapping) into a :class:`BenchConfig`."""
    m = _mapping("(top level)", raw)
    _unknown("the benchmark config", m, _TOP_KEYS)
    for key in ("dataset", "model", "scenarios", "methods"):
        if key not in m:
            raise InvalidParameterError(f"The benchmark config lacks the required key {key!r}.")

    ds = m["dataset"]
    if isinstance(ds, str):
        ds = {"name": ds}
    ds = _mapping("dataset", ds)
    _unknown("'dataset'", ds, ("name", "options", "root", "train_per_class", "test_per_class"))
    if not isinstance(ds.get("name"), str):
        raise _err("dataset.name", "a dataset name", ds.get("name"))
    try:
        DATASETS.get(ds["name"])
    except UnlearnkitError as exc:
        raise InvalidParameterError(f"In dataset: {exc}") from None
    options = dict(_mapping("dataset.options", ds.get("options") or {}))
    for key in ("root", "train_per_class", "test_per_class"):  # how the bundle is loaded
        if ds.get(key) is None:
            continue
        value = ds[key]
        if key == "root" and not isinstance(value, str):
            raise _err("dataset.root", "a path", value)
        if key != "root" and (isinstance(value, bool) or not isinstance(value, int)
                              or value < 1):
            raise _err(f"dataset.{key}", "a positive int", value)
        options[f"_{key}"] = value

    model = m["model"]
    if isinstance(model, str):
        model = {"arch": model}
    model = _mapping("model", model)
    _unknown("'model'", model, ("arch", "kwargs"))
    arch = model.get("arch")
    if not isinstance(arch, str):
        raise _err("model.arch", "an architecture name", arch)
    try:
        MODELS.get(arch)
    except UnlearnkitError as exc:
        raise InvalidParameterError(f"In model.arch: {exc}") from None
    kwargs = _mapping("model.kwargs", model.get("kwargs") or {})
    valid = tuple(p for p in inspect.signature(MODELS.get(arch)).parameters
                  if p not in ("self", "input_shape", "num_classes"))
    _unknown(f"model.kwargs (of {arch!r})", kwargs, valid)

    recipe = default_recipe(arch)
    if m.get("recipe") is not None:
        fields = {**recipe.to_dict(), **_mapping("recipe", m["recipe"])}
        try:
            recipe = Recipe.from_dict(fields)
        except (UnlearnkitError, TypeError) as exc:
            raise InvalidParameterError(f"In recipe: {exc}") from None

    seeds = _nonempty_list("seeds", m.get("seeds", [0]))
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise _err("seeds", "a list of non-negative ints", seeds)

    flags = {}
    for key, default in (("relearn", True), ("mia", True), ("curves", False),
                         ("original", True)):
        flags[key] = m.get(key, default)
        if not isinstance(flags[key], bool):
            raise _err(key, "true or false", flags[key])
    methods = _methods(m["methods"])
    score_models, score_runs = _score(m.get("score"), methods)

    return BenchConfig(
        name=str(m.get("name", name)),
        dataset=ds["name"],
        dataset_options=tuple(sorted((str(k), _freeze(v)) for k, v in options.items())),
        arch=arch,
        arch_kwargs=tuple(sorted((str(k), _freeze(v)) for k, v in kwargs.items())),
        recipe=recipe,
        scenarios=_scenarios(m["scenarios"]),
        methods=methods,
        seeds=tuple(dict.fromkeys(seeds)),
        score_models=score_models,
        score_runs=score_runs,
        **flags,
    )


def _score(value: Any, methods: tuple[MethodGrid, ...]) -> tuple[int, tuple[Any, ...]]:
    """The ``score`` key: ``{n_models: N, methods: {name: {param: value(s)}} or [names]}``."""
    if value is None:
        return 0, ()
    m = _mapping("score", value)
    _unknown("'score'", m, ("n_models", "methods"))
    n = m.get("n_models")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise _err("score.n_models", "an int of at least 2 (the pools' size)", n)
    which = m.get("methods")
    if isinstance(which, list):
        which = {name: {} for name in _nonempty_list("score.methods", which)}
    which = _mapping("score.methods", which)
    if not which:
        raise _err("score.methods", "a non-empty mapping {method: {param: value}}", which)
    listed = {g.name for g in methods}
    runs = []
    for name, where in which.items():
        if name not in listed:
            raise InvalidParameterError(
                f"score.methods names {name!r}, which the config's 'methods' do not run. "
                f"Methods run: {', '.join(sorted(listed))}.")
        where = _mapping(f"score.methods.{name}", where or {})
        runs.append((str(name), tuple(
            (str(k), tuple(_freeze(v) for v in (vs if isinstance(vs, list) else [vs])))
            for k, vs in where.items())))
    return n, tuple(runs)


def load_config(path: str | os.PathLike) -> BenchConfig:
    """Read and validate a YAML benchmark config."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise InvalidParameterError(f"{str(p)!r} is not valid YAML: {exc}") from None
    return parse_config(raw, name=p.stem)


#: The built-in configurations, as YAML.
PRESETS: dict[str, str] = {
    "quick": """\
# the demo (make demo): every method at its defaults, one seed, accuracy per epoch
name: quick
dataset: digits
model: cnn
scenarios: {classes: [[3]], random: [0.1]}
methods: all
seeds: [0]
curves: true
""",
    "compare": """\
# every registered method at its defaults, class and random unlearning, three seeds
name: compare
dataset: digits
model: cnn
scenarios: {classes: [[3]], random: [0.1]}
methods: all
seeds: [0, 1, 2]
""",
    "founding-report": """\
# every figure and table of the founding report, on digits: one class and 10 % at random
name: founding-report
dataset: digits
model: cnn
scenarios: {classes: [[3]], random: [0.1]}
methods:
  finetune: {}                            # Figures 1 and 8: accuracy per epoch
  perturb:                                # Figure 3: accuracy vs beta after 5 epochs;
    beta: [0.1, 0.3, 0.5, 0.7, 0.9, 1.0]  # Figure 4: per epoch (beta 0.7)
  teacher:                                # Figure 5: forget accuracy vs lr and vs epochs;
    - forget_lr: [1.0e-6, 1.0e-5, 1.0e-4, 1.0e-3, 1.0e-2]
    - forget_epochs: [5, 15, 30, 60]
    - alpha: [0.0, 0.25, 0.5, 1.0, 2.0]   # Figure 6: reconstruction per epoch per alpha, at
      forget_lr: 1.0e-4                   # a forgetting rate that forgets (1e-6 changes nothing)
  fisher-mask:                            # Figures 9 and 13: accuracy vs R, +/- fine-tuning
    fraction: [0.001, 0.003, 0.01, 0.03, 0.1]
    epochs: [0, 5]
  ssd:                                    # Figures 14 and 17: accuracy vs alpha
    alpha: [0.1, 0.3, 1.0, 3.0, 10.0, 30.0]
  retrain: {}
seeds: [0, 1, 2]
relearn: false
curves: true                              # the per-epoch figures
score:                                    # the competition score of perturbation
  n_models: 8
  methods: {perturb: {beta: 0.7}}
# Figures 7 and 10 (original vs unlearned bars), 11, 12, 15 and 16 (saliency maps) and
# Tables 1 and 2 (activation distance and JS divergence) come from every run's record.
""",
}


def preset(name: str) -> BenchConfig:
    """A built-in configuration (:data:`PRESETS`)."""
    if name not in PRESETS:
        raise InvalidParameterError(
            f"Unknown preset {name!r}.{did_you_mean(name, PRESETS)} "
            f"Valid presets: {', '.join(PRESETS)}."
        )
    return parse_config(yaml.safe_load(PRESETS[name]), name=name)
