"""A benchmark's configuration: a YAML file validated into frozen dataclasses.

.. code-block:: yaml

    dataset: digits                  # or {name: digits, options: {...}}, and for a subset
                                     # {..., root: PATH, train_per_class: N, test_per_class: N}
    model: {arch: mlp, kwargs: {hidden: [16]}}   # or just: cnn
    recipe: {epochs: 2}              # default: the architecture's recipe
    scenarios:
      classes: [[3], [1, 7]]         # each list is forgotten together
      random: [0.1]                  # fractions of the training set (split seed = run seed)
      indices: [erase.txt]           # a user's own request: files of training-set indices
                                     # (as `forget --forget-indices`; relative to the config)
    methods:                         # or: all (every registered method at its defaults)
      finetune: {}                   # defaults
      ssd: {alpha: [1, 10], lam: 1}  # a grid: the cartesian product; a scalar is one value
      teacher:                       # a list of grids: their union (one sweep per parameter)
        - {forget_lr: [1.0e-6, 1.0e-4]}
        - {forget_epochs: [5, 30]}
    seeds: [0, 1, 2]                 # ints in [0, 2**32 - 1]
    max_runs: 20000                  # refuse larger plans (default: 10,000; or --max-runs)
    relearn: false                   # compute anamnesis (default: true)
    mia: true                        # the membership-inference attacks (default: true)
    curves: true                     # accuracy on D_r, D_f and test per epoch (default: false)
    timing: cold                     # each method's seconds without any cache (default), or
                                     # warm: reading the importance cache (see benchmarks/README)
    original: true                   # an 'original' row per scenario and seed (default: true)
    score:                           # the competition's score, from pools of n_models
      n_models: 8
      methods: {perturb: {beta: 0.7}}   # the runs it applies to ({} = all of the method's)
    calibrate:                       # a calibrated run per method, scenario and seed
      budget: 0.2                    # a fraction of the retraining measured in the same pool
      max_trials: 40                 # optional; or budget_seconds: S instead of budget
      methods: all                   # the default: every listed method with a search space;
                                     # or [names], or {name: {budget: ...}} per method
      warm_start: runs/x/results.sqlite  # optional: each search starts from the same
                                     # method's search of the same scenario kind there

Each run is identified by a hash of everything that determines its result
(:mod:`unlearnkit.bench.plan`).

Every mistake raises :class:`~unlearnkit.exceptions.InvalidParameterError` naming the key,
before anything is trained or written: the model's arguments are tried on PyTorch's ``meta``
device (no memory), and the plan's size is computed from the grids' lengths before any run is
materialised (at most :data:`MAX_RUNS` runs unless ``max_runs`` raises the limit).

YAML is read as YAML 1.1 (PyYAML), except that a number with an exponent is a float with or
without a dot or a sign in the exponent (``1e-5``, ``1E5``; YAML 1.1 reads them as strings).
A config must be UTF-8 text of at most :data:`MAX_CONFIG_BYTES` bytes; every integer in it must
fit in 64 bits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import itertools
import math
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from unlearnkit.api import default_recipe
from unlearnkit.data.registry import DATASETS
from unlearnkit.data.splits import read_indices
from unlearnkit.exceptions import InvalidParameterError, UnlearnkitError
from unlearnkit.methods.base import METHODS, get_method
from unlearnkit.models.registry import MODELS, build_model
from unlearnkit.registry import did_you_mean
from unlearnkit.training import Recipe

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_RUNS",
    "PRESETS",
    "SEED_MAX",
    "BenchConfig",
    "Calibrate",
    "MethodGrid",
    "Scenario",
    "load_config",
    "parse_config",
    "preset",
]

_TOP_KEYS = ("name", "dataset", "model", "recipe", "scenarios", "methods", "seeds", "relearn",
             "mia", "curves", "original", "score", "max_runs", "timing", "calibrate")

#: The values of the config's ``timing`` key: ``cold`` (the default: every read of the
#: importance cache misses inside a method's timed call, so that its ``seconds`` is the cost
#: of a first request, whatever ran before) or ``warm`` (the cache is read; each row's
#: ``cache_hit`` says whether it was).
TIMINGS = ("cold", "warm")

#: A plan of more runs is refused unless the config's ``max_runs`` (or ``--max-runs``) allows it.
MAX_RUNS = 10_000

#: The largest config file read (a config is a few lines; this bounds the parser's memory).
MAX_CONFIG_BYTES = 4 * 1024 * 1024

#: The largest seed (seeds are in [0, SEED_MAX]: every RNG and the store take them).
SEED_MAX = 2**32 - 1

#: The most values a config may hold once YAML aliases are expanded.
_MAX_VALUES = 1_000_000

_INT64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class Scenario:
    """One forget request: ``kind="class"`` with ``classes``, ``kind="random"`` with
    ``fraction`` (the split's seed is the run's seed), or ``kind="indices"``: the training
    samples at ``indices``, read from the file ``source`` (a user's own request)."""

    kind: str
    classes: tuple[int | str, ...] = ()
    fraction: float | None = None
    indices: tuple[int, ...] = ()
    source: str | None = field(default=None, compare=False)

    @property
    def method_kind(self) -> str:
        """The scenario as the methods see it: ``class``, or ``random`` (samples, whether
        drawn at random or listed)."""
        return "class" if self.kind == "class" else "random"

    @property
    def label(self) -> str:
        if self.kind == "class":
            names = ",".join(str(c) for c in self.classes)
            return f"class{'es' if len(self.classes) > 1 else ''} {names}"
        if self.kind == "indices":
            name = Path(self.source).stem if self.source else "indices"
            return f"indices {name} ({len(self.indices)} samples)"
        return f"random {self.fraction * 100:g}%"  # type: ignore[operator]

    @property
    def indices_sha256(self) -> str:
        """The digest of the sorted indices (what identifies an index request in a run)."""
        text = ",".join(str(i) for i in self.indices)
        return hashlib.sha256(text.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "class":
            return {"kind": "class", "classes": list(self.classes)}
        if self.kind == "indices":
            return {"kind": "indices", "n": len(self.indices), "sha256": self.indices_sha256}
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

    def size(self) -> int:
        """How many points :meth:`points` returns at most (repeated points count once there),
        computed from the grids' lengths without building any point."""
        return sum(math.prod(len(values) for _, values in grid)
                   for grid in (self.grid, *self.sweeps))

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
class Calibrate:
    """A method calibrated by the benchmark (the config's ``calibrate`` key): its search is
    limited by ``budget`` (a fraction of the scenario's retraining, measured in the same pool)
    or ``budget_seconds``, and ``max_trials`` (see :func:`unlearnkit.calibrate`)."""

    method: str
    budget: float | None = 0.2
    budget_seconds: float | None = None
    max_trials: int | None = None
    #: an earlier results store: each search warm-starts from the same method's search of
    #: the same scenario kind in it (:func:`unlearnkit.calibrate`'s ``warm_start``)
    warm_start: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"budget": self.budget, "budget_seconds": self.budget_seconds,
                               "max_trials": self.max_trials}
        if self.warm_start is not None:  # only then: the runs of earlier configs keep their ids
            out["warm_start"] = self.warm_start
        return out


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
    #: how each method's seconds are measured: one of :data:`TIMINGS`
    timing: str = "cold"
    #: the calibrated methods (the ``calibrate`` key): one calibrated run each per scenario
    #: and seed, beside the grid's runs
    calibrate: tuple[Calibrate, ...] = ()

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


def _scenarios(value: Any, base: Path | None = None) -> tuple[Scenario, ...]:
    m = _mapping("scenarios", value)
    _unknown("'scenarios'", m, ("classes", "random", "indices"))
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
    for i, path in enumerate(_nonempty_list("scenarios.indices", m["indices"])
                             if "indices" in m else ()):
        key = f"scenarios.indices[{i}]"
        if not isinstance(path, str) or not path:
            raise _err(key, "the path of a file of training-set indices", path)
        where = Path(path) if base is None or Path(path).is_absolute() else base / path
        try:
            found = read_indices(where)
        except (UnlearnkitError, OSError) as exc:
            text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise InvalidParameterError(f"In {key} ({str(where)!r}): {text}") from None
        if not len(found):
            raise InvalidParameterError(f"In {key} ({str(where)!r}): the file lists no index.")
        out.append(Scenario("indices", indices=tuple(sorted(int(x) for x in found)),
                            source=str(where)))
    if not out:
        raise _err("scenarios", "a mapping with 'classes', 'random' and/or 'indices'", value)
    return tuple(dict.fromkeys(out))


def _in_method(name: Any, check: Any) -> Any:
    """``check()``, its errors prefixed with ``In methods.NAME:`` (once)."""
    try:
        return check()
    except UnlearnkitError as exc:
        if str(exc).startswith(("The 'methods", f"In methods.{name}")):
            raise
        raise InvalidParameterError(f"In methods.{name}: {exc}") from None


def _method_grids(value: Any) -> tuple[MethodGrid, ...]:
    """The ``methods`` key as grids; their points are not built yet (:func:`parse_config`
    counts them first)."""
    if value == "all":
        return tuple(MethodGrid(name) for name in METHODS.names())
    if isinstance(value, list):  # a list of names: each at its defaults
        names = _nonempty_list("methods", value)
        bad = next((n for n in names if not isinstance(n, str)), None)
        if bad is not None:
            raise _err("methods", "a list of method names", bad)
        value = {name: {} for name in names}
    m = _mapping("methods", value)
    if not m:
        raise _err("methods", "a non-empty mapping {method: {param: [values]}} or 'all'", value)
    out = []
    for name, spec in m.items():
        def grids(name: Any = name, spec: Any = spec) -> MethodGrid:
            METHODS.get(str(name))
            found = []
            specs = spec if isinstance(spec, list) and spec else [spec]
            for k, grid in enumerate(specs):
                where = f"methods.{name}" + (f"[{k}]" if isinstance(spec, list) else "")
                grid = _mapping(where, {} if grid is None else grid)
                items = []
                for param, values in grid.items():
                    values = values if isinstance(values, list) else [values]
                    values = _nonempty_list(f"{where}.{param}", values)
                    items.append((str(param), tuple(_freeze(v) for v in values)))
                found.append(tuple(items))
            return MethodGrid(str(name), found[0], tuple(found[1:]))

        out.append(_in_method(name, grids))
    return tuple(out)


def _plan_size(scenarios: int, grids: tuple[MethodGrid, ...],
               seeds: int, original: bool, limit: int) -> None:
    """Refuse a plan of more than ``limit`` runs, from the grids' lengths (nothing built)."""
    points = int(original) + sum(g.size() for g in grids)
    total = scenarios * points * seeds
    if total <= limit:
        return
    raise InvalidParameterError(
        f"The benchmark config plans up to {total:,} runs ({scenarios:,} scenario(s) x "
        f"{points:,} method settings x {seeds:,} seed(s)), more than the limit of {limit:,}. "
        "Shrink the grids, or raise the limit with 'max_runs: N' in the config or --max-runs N."
    )


def _positive_limit(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _err(key, "a positive int", value)
    return value


def _check_values(raw: Any) -> None:
    """Every integer fits in 64 bits; no alias refers to itself; at most :data:`_MAX_VALUES`
    values once aliases are expanded (YAML aliases can nest a document exponentially)."""
    sizes: dict[int, int] = {}
    busy: set[int] = set()

    def size(value: Any, path: str) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            if not _INT64[0] <= value <= _INT64[1]:
                raise InvalidParameterError(
                    f"The {path!r} key of the benchmark config is {value}, outside the range of "
                    "a 64-bit integer (-2**63 to 2**63 - 1).")
            return 1
        if not isinstance(value, Mapping | list):
            return 1
        if id(value) in sizes:
            return sizes[id(value)]
        if id(value) in busy:
            raise InvalidParameterError(
                f"The {path!r} key of the benchmark config contains itself (a YAML alias to "
                "one of its own parents).")
        busy.add(id(value))
        if isinstance(value, list):
            n = 1 + sum(size(v, f"{path}[{i}]") for i, v in enumerate(value))
        else:
            n = 1 + sum(size(v, f"{path}.{k}" if path else str(k)) for k, v in value.items())
        busy.discard(id(value))
        if n > _MAX_VALUES:
            raise InvalidParameterError(
                f"The benchmark config holds more than {_MAX_VALUES:,} values once its YAML "
                f"aliases are expanded (at {path or 'the top level'!r}).")
        sizes[id(value)] = n
        return n

    size(raw, "")


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _check_model(arch: str, kwargs: Mapping[str, Any], dataset: str,
                 options: Mapping[str, Any]) -> None:
    """Build the model on the ``meta`` device (no memory): every argument is checked as the
    run will check it, and a model larger than this machine's memory is refused."""
    spec = DATASETS.get(dataset)
    shape = spec.input_shape
    if shape is None:  # an image folder: its size, or a stand-in (only the arguments matter)
        size = options.get("image_size")
        channels = 1 if options.get("grayscale") else 3
        if isinstance(size, int) and not isinstance(size, bool) and 0 < size <= 4096:
            shape = (channels, size, size)
        elif (isinstance(size, list | tuple) and len(size) == 2
              and all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 4096
                      for v in size)):
            shape = (channels, *size)
        else:
            shape = (channels, 32, 32)
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            model = build_model(arch, num_classes=spec.num_classes or 10, input_shape=shape,
                                **kwargs)
    except UnlearnkitError as exc:
        raise InvalidParameterError(f"In model.kwargs: {exc}") from None
    except Exception as exc:  # an argument the architecture does not check itself
        lines = [x for x in str(exc).splitlines() if x.strip()]
        raise InvalidParameterError(
            f"In model.kwargs: model {arch!r} cannot be built with {args or 'its defaults'}: "
            f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")) from None
    n = sum(p.numel() for p in model.parameters())
    memory = _physical_memory()
    if memory and n * 4 > memory:
        raise InvalidParameterError(
            f"In model.kwargs: model {arch!r} with {args or 'its defaults'} has {n:,} "
            f"parameters ({n * 4 / 2**30:,.1f} GiB as float32), more than this machine's "
            f"memory ({memory / 2**30:,.1f} GiB).")


def parse_config(raw: Any, *, name: str = "config", max_runs: int | None = None,
                 base: str | os.PathLike | None = None) -> BenchConfig:
    """Validate a parsed YAML document (a mapping) into a :class:`BenchConfig`.

    ``max_runs`` (default: the config's ``max_runs``, else :data:`MAX_RUNS`): a plan of more
    runs is refused, before its runs are built. ``base``: the folder relative paths in the
    config (``scenarios.indices``) are read from (default: the current one; a config file's
    own folder when read by :func:`load_config`).
    """
    m = _mapping("(top level)", raw)
    _unknown("the benchmark config", m, _TOP_KEYS)
    seeds = _nonempty_list("seeds", m.get("seeds", [0]))
    for i, s in enumerate(seeds):
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= SEED_MAX:
            raise InvalidParameterError(
                f"The 'seeds' key of the benchmark config must be a list of ints in "
                f"[0, {SEED_MAX}]. Got {s!r} (item {i}) instead.")
    _check_values(m)
    if max_runs is not None:
        limit = _positive_limit("max_runs", max_runs)
    else:
        limit = _positive_limit("max_runs", m.get("max_runs", MAX_RUNS))
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
    valid_options = tuple(DATASETS.get(ds["name"]).options())
    for key in options:
        if not str(key).startswith("_") and key not in valid_options:
            raise InvalidParameterError(
                f"Unknown key {key!r} in dataset.options (of {ds['name']!r})."
                f"{did_you_mean(str(key), valid_options)} "
                f"Valid keys: {', '.join(valid_options) or '(none)'}.")

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
    _check_model(arch, kwargs, ds["name"], options)

    recipe = default_recipe(arch)
    if m.get("recipe") is not None:
        fields = {**recipe.to_dict(), **_mapping("recipe", m["recipe"])}
        try:
            recipe = Recipe.from_dict(fields)
        except (UnlearnkitError, TypeError) as exc:
            raise InvalidParameterError(f"In recipe: {exc}") from None

    flags = {}
    for key, default in (("relearn", True), ("mia", True), ("curves", False),
                         ("original", True)):
        flags[key] = m.get(key, default)
        if not isinstance(flags[key], bool):
            raise _err(key, "true or false", flags[key])
    timing = m.get("timing", "cold")
    if timing not in TIMINGS:
        raise _err("timing", f"one of {', '.join(TIMINGS)}", timing)
    scenarios = _scenarios(m["scenarios"], Path(base) if base is not None else None)
    _check_classes(scenarios, ds["name"])
    grids = _method_grids(m["methods"])
    _plan_size(len(scenarios), grids, len(dict.fromkeys(seeds)), flags["original"], limit)
    for mg in grids:  # every value of the grid is checked by the method itself
        _in_method(mg.name, mg.points)
    methods = grids
    score_models, score_runs = _score(m.get("score"), methods)
    calibrate = _calibrate(m.get("calibrate"), methods)
    if calibrate:
        _plan_size(len(scenarios), (*grids, *(MethodGrid(c.method) for c in calibrate)),
                   len(dict.fromkeys(seeds)), flags["original"], limit)

    return BenchConfig(
        name=str(m.get("name", name)),
        dataset=ds["name"],
        dataset_options=tuple(sorted((str(k), _freeze(v)) for k, v in options.items())),
        arch=arch,
        arch_kwargs=tuple(sorted((str(k), _freeze(v)) for k, v in kwargs.items())),
        recipe=recipe,
        scenarios=scenarios,
        methods=methods,
        seeds=tuple(dict.fromkeys(seeds)),
        score_models=score_models,
        score_runs=score_runs,
        timing=timing,
        calibrate=calibrate,
        **flags,
    )


def _budget_values(key: str, m: Mapping[str, Any], inherited: Calibrate | None
                   ) -> dict[str, Any]:
    """``budget``, ``budget_seconds`` and ``max_trials`` of a ``calibrate`` mapping, checked
    (``inherited``: the values a method's own mapping overrides)."""
    out = ({"budget": inherited.budget, "budget_seconds": inherited.budget_seconds,
            "max_trials": inherited.max_trials} if inherited is not None
           else {"budget": 0.2, "budget_seconds": None, "max_trials": None})
    if "budget_seconds" in m and m["budget_seconds"] is not None:
        out["budget"] = None
    if "budget" in m and m["budget"] is not None:
        out["budget_seconds"] = None
    for name in ("budget", "budget_seconds"):
        if name not in m:
            continue
        value = m[name]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not math.isfinite(value) or value <= 0):
            raise _err(f"{key}.{name}", "a positive number" + (
                " (a fraction of the retraining's seconds)" if name == "budget" else
                " of seconds"), value)
        out[name] = None if value is None else float(value)
    if "max_trials" in m:
        value = m["max_trials"]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise _err(f"{key}.max_trials", "a positive int", value)
        out["max_trials"] = value
    if out["budget"] is None and out["budget_seconds"] is None and out["max_trials"] is None:
        raise _err(key, "a limit: budget, budget_seconds or max_trials", dict(m))
    return out


def _calibrate(value: Any, methods: tuple[MethodGrid, ...]) -> tuple[Calibrate, ...]:
    """The ``calibrate`` key: ``{budget, budget_seconds, max_trials, methods: all | [names] |
    {name: {budget, ...}}}``; ``methods`` defaults to every listed method that declares a
    search space."""
    if value is None:
        return ()
    m = _mapping("calibrate", value)
    _unknown("'calibrate'", m, ("budget", "budget_seconds", "max_trials", "methods",
                                "warm_start"))
    warm = m.get("warm_start")
    if warm is not None:
        if not isinstance(warm, str) or not warm:
            raise _err("calibrate.warm_start", "the path of an earlier results store", warm)
        if not Path(warm).is_file():
            raise InvalidParameterError(
                f"calibrate.warm_start: no results store at {warm!r} (a path from the "
                "directory the bench runs in).")
    common = Calibrate("", **_budget_values("calibrate", m, None), warm_start=warm)
    listed = [g.name for g in methods]
    searchable = [n for n in dict.fromkeys(listed) if METHODS.get(n).search_space()]
    which = m.get("methods", "all")
    if which == "all":
        which = {n: {} for n in searchable}
    elif isinstance(which, list):
        which = {name: {} for name in _nonempty_list("calibrate.methods", which)}
    which = _mapping("calibrate.methods", which)
    if not which:
        raise _err("calibrate.methods", "all, a non-empty list or mapping of methods", value)
    out = []
    for name, own in which.items():
        if name not in listed:
            raise InvalidParameterError(
                f"calibrate.methods names {name!r}, which the config's 'methods' do not run."
                f"{did_you_mean(str(name), listed)} Methods run: {', '.join(sorted(listed))}.")
        if name not in searchable:
            raise InvalidParameterError(
                f"calibrate.methods names {name!r}, which declares no search space: there is "
                "nothing to calibrate.")
        own = _mapping(f"calibrate.methods.{name}", own or {})
        _unknown(f"'calibrate.methods.{name}'", own, ("budget", "budget_seconds", "max_trials"))
        out.append(Calibrate(name, **_budget_values(f"calibrate.methods.{name}", own, common),
                             warm_start=warm))
    return tuple(out)


def _check_classes(scenarios: tuple[Scenario, ...], dataset: str) -> None:
    """Class numbers beyond the dataset's classes (names are checked when the data is read)."""
    n = DATASETS.get(dataset).num_classes
    if not n:
        return
    for i, s in enumerate(x for x in scenarios if x.kind == "class"):
        for c in s.classes:
            if isinstance(c, int) and not 0 <= c < n:
                raise InvalidParameterError(
                    f"scenarios.classes[{i}] names class {c}, but dataset {dataset!r} has "
                    f"classes 0-{n - 1}.")


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


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, except that ``1e-5``, ``1E5`` and ``1.0e5`` are floats (YAML 1.1
    wants a dot and a signed exponent, so PyYAML reads them as strings; YAML 1.2 does not)."""


_FLOAT_TAG = "tag:yaml.org,2002:float"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _FLOAT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_FLOAT_TAG, re.compile(r"""^(?:
     [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X), list("-+0123456789."))


def _yaml_error(where: str, text: str, exc: yaml.YAMLError) -> InvalidParameterError:
    """A YAML error as one line: the file, line and column, and the problem."""
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return InvalidParameterError(
            f"{where} line {line} is not valid YAML: unacceptable character #x{char:04x} "
            f"({exc.reason}).")
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if problem is None:
        problem, mark, context = context, context_mark, None
    if problem is None:
        lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
        problem = lines[0] if lines else type(exc).__name__
    at = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    if context:
        where_context = (f" at line {context_mark.line + 1}, column {context_mark.column + 1}"
                         if context_mark is not None else "")
        problem += f" ({context}{where_context})"
    return InvalidParameterError(f"{where}{at} is not valid YAML: {problem}.")


def _load_yaml(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # a safe loader (SafeLoader, floats as 1.2)
    except yaml.YAMLError as exc:
        raise _yaml_error(where, text, exc) from None
    except RecursionError:
        raise InvalidParameterError(f"{where} is not valid YAML: it nests too deeply.") from None


def load_config(path: str | os.PathLike, *, max_runs: int | None = None) -> BenchConfig:
    """Read and validate a YAML benchmark config (UTF-8, at most :data:`MAX_CONFIG_BYTES`);
    ``max_runs`` as in :func:`parse_config`."""
    p = Path(path)
    where = repr(str(p))
    with p.open("rb") as f:
        data = f.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise InvalidParameterError(
            f"{where} is larger than {MAX_CONFIG_BYTES // 2**20} MiB: not a benchmark config.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InvalidParameterError(
            f"{where} line {line}, column {column} is not UTF-8 text: byte "
            f"0x{data[exc.start]:02x} cannot be decoded. Save the config as UTF-8.") from None
    return parse_config(_load_yaml(text, where), name=p.stem, max_runs=max_runs,
                        base=p.parent)


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
    "calibrated": """\
# every method at its defaults and calibrated beside them (issue 13's equal-budget comparison):
# each method's hyper-parameters searched by uk.calibrate within a fifth of the scenario's
# retraining time, measured in the same pool; the report leads with the leaderboard
name: calibrated
dataset: digits
model: cnn
scenarios: {classes: [[3]], random: [0.1]}
methods: all
calibrate: {budget: 0.2}
seeds: [0]
relearn: false
""",
    "founding-report": """\
# every figure and table of the founding report, and its claims checked, on digits: one class
# and 10 % at random (Fisher masking's R and SSD's alpha default per scenario)
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
    - fraction: [0.001, 0.003, 0.01, 0.03, 0.1, 0.4]
      epochs: [0, 5]
    - {fraction: 0.01, epochs: [0, 5], ranking: global}   # the report's literal ranking
  ssd:                                    # Figures 14 and 17: accuracy vs alpha
    alpha: [0.1, 0.3, 0.5, 1.0, 3.0, 10.0, 30.0]
  retrain: {}
seeds: [0, 1, 2]
relearn: false
curves: true                              # the per-epoch figures
score:                                    # the competition score of perturbation
  n_models: 8
  methods: {perturb: {beta: 0.7}}
# Figures 7 and 10 (original vs unlearned bars), 11, 12, 15 and 16 (saliency maps) and
# Tables 1 and 2 (activation distance and JS divergence) come from every run's record; the
# report's claims section checks its seven claims on them.
""",
    "founding-report-cifar10": """\
# the founding report's own setting: CIFAR-10 (the JPEG copy of ../shared/data, read from the
# current folder), a narrow ResNet-18 (81 % test accuracy), class 'cat' and 10 % at random;
# one seed. Measured on 2 CPU cores: about 3.5 hours (each run's evaluation takes ~400 s on
# one thread). The report checks the report's seven claims; benchmarks/README.md holds a run's
# table.
name: founding-report-cifar10
dataset: {name: imagefolder, root: ../shared/data/cifar10-jpeg.tar.gz}
model: {arch: resnet18, kwargs: {width: 0.125}}
recipe: {optimizer: sgd, lr: 0.1, momentum: 0.9, weight_decay: 5.0e-4, batch_size: 128,
         epochs: 15, schedule: cosine, augment: flip-crop}
scenarios: {classes: [[cat]], random: [0.1]}
methods:
  finetune: {}                            # claim 1
  perturb: {beta: [0.3, 0.7]}             # claim 2
  teacher:                                # claim 3: the defaults, then one reconstruction
    - {}                                  # epoch per alpha at a rate that forgets
    - {alpha: [0.0, 2.0], forget_lr: 1.0e-4, epochs: 1}
  fisher-mask:                            # claims 4 and 6 (R 0.01 for the class, 0.4 random)
    - {epochs: [0, 5]}
    - {epochs: 5, ranking: global}        # the report's literal ranking
  ssd: {alpha: [null, 1.0]}               # claims 5 and 6 (null: 10 for the class, 0.5 random)
  retrain: {}
seeds: [0]
relearn: false
""",
}


def preset(name: str, *, max_runs: int | None = None) -> BenchConfig:
    """A built-in configuration (:data:`PRESETS`); ``max_runs`` as in :func:`parse_config`."""
    if name not in PRESETS:
        raise InvalidParameterError(
            f"Unknown preset {name!r}.{did_you_mean(name, PRESETS)} "
            f"Valid presets: {', '.join(PRESETS)}."
        )
    return parse_config(_load_yaml(PRESETS[name], f"preset {name!r}"), name=name,
                        max_runs=max_runs)
