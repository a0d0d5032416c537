"""A benchmark's configuration: a YAML file validated into frozen dataclasses.

.. code-block:: yaml

    dataset: digits                  # or {name: digits, options: {...}}
    model: {arch: mlp, kwargs: {hidden: [16]}}   # or just: cnn
    recipe: {epochs: 2}              # default: the architecture's recipe
    scenarios:
      classes: [[3], [1, 7]]         # each list is forgotten together
      random: [0.1]                  # fractions of the training set (split seed = run seed)
    methods:                         # or: all (every registered method at its defaults)
      finetune: {}                   # defaults
      ssd: {alpha: [1, 10], lam: 1}  # a grid: the cartesian product; a scalar is one value
    seeds: [0, 1, 2]
    relearn: false                   # compute anamnesis (default: true)
    mia: true                        # the membership-inference attacks (default: true)

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
             "mia")


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


@dataclass(frozen=True)
class MethodGrid:
    """A method and its hyper-parameter grid: ``grid`` maps each parameter to its values."""

    name: str
    grid: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def points(self) -> list[dict[str, Any]]:
        """Every combination, as the method's full parameters (defaults filled in)."""
        keys = [k for k, _ in self.grid]
        combos = itertools.product(*(values for _, values in self.grid))
        kinds = {f.name: f.metadata.get("type") for f in dataclasses.fields(METHODS.get(self.name))}

        def typed(key: str, value: Any) -> Any:  # alpha: 5 and alpha: 5.0 are one run
            if kinds.get(key) is float and isinstance(value, int) and not isinstance(value, bool):
                return float(value)
            return value

        return [get_method(self.name, **{k: typed(k, v) for k, v in zip(keys, c, strict=True)}
                           ).params() for c in combos]


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
    for name, grid in m.items():
        try:
            METHODS.get(str(name))
            grid = _mapping(f"methods.{name}", {} if grid is None else grid)
            items = []
            for param, values in grid.items():
                values = values if isinstance(values, list) else [values]
                values = _nonempty_list(f"methods.{name}.{param}", values)
                items.append((str(param), tuple(_freeze(v) for v in values)))
            mg = MethodGrid(str(name), tuple(items))
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
    _unknown("'dataset'", ds, ("name", "options"))
    if not isinstance(ds.get("name"), str):
        raise _err("dataset.name", "a dataset name", ds.get("name"))
    try:
        DATASETS.get(ds["name"])
    except UnlearnkitError as exc:
        raise InvalidParameterError(f"In dataset: {exc}") from None
    options = _mapping("dataset.options", ds.get("options") or {})

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
    for key in ("relearn", "mia"):
        flags[key] = m.get(key, True)
        if not isinstance(flags[key], bool):
            raise _err(key, "true or false", flags[key])

    return BenchConfig(
        name=str(m.get("name", name)),
        dataset=ds["name"],
        dataset_options=tuple(sorted((str(k), _freeze(v)) for k, v in options.items())),
        arch=arch,
        arch_kwargs=tuple(sorted((str(k), _freeze(v)) for k, v in kwargs.items())),
        recipe=recipe,
        scenarios=_scenarios(m["scenarios"]),
        methods=_methods(m["methods"]),
        seeds=tuple(dict.fromkeys(seeds)),
        **flags,
    )


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
# the demo: the README's comparison, one seed
name: quick
dataset: digits
model: cnn
scenarios: {classes: [[3]], random: [0.1]}
methods: all
seeds: [0]
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
}


def preset(name: str) -> BenchConfig:
    """A built-in configuration (:data:`PRESETS`)."""
    if name not in PRESETS:
        raise InvalidParameterError(
            f"Unknown preset {name!r}.{did_you_mean(name, PRESETS)} "
            f"Valid presets: {', '.join(PRESETS)}."
        )
    return parse_config(yaml.safe_load(PRESETS[name]), name=name)
