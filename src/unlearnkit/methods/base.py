"""The one interface every unlearning method implements, and the method registry.

A method is a frozen, keyword-only dataclass of its hyper-parameters (scikit-learn's rule):
it can be printed, stored in a result row, swept over and rebuilt from a dict. It is applied
with one call, :meth:`UnlearningMethod.unlearn`, which takes the original model and the data of
the request and returns a new model; the caller's model is never modified.

What a method needs and supports is declared in class attributes (``needs_forget``,
``needs_retain``, ``scenarios``...) that the API, the CLI and the docs all read.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from unlearnkit.data.batches import describe
from unlearnkit.data.splits import Data, Scenario
from unlearnkit.exceptions import (
    InvalidParameterError,
    UnsupportedModelError,
    UnsupportedScenarioWarning,
    short_repr,
)
from unlearnkit.models.info import ModelInfo, check_finite, get_info, set_info
from unlearnkit.registry import Registry, did_you_mean
from unlearnkit.training import (
    MAX_COUNT,
    data_size,
    iter_batches,
    resolve_device,
    seeded,
    warm_up,
    watcher_seconds,
)

__all__ = [
    "METHODS",
    "HyperParameter",
    "Request",
    "Search",
    "UnlearningMethod",
    "get_method",
    "hp",
    "provenance_params",
    "qualified_name",
    "register_method",
]


@dataclass(frozen=True)
class Search:
    """Where calibration (:func:`unlearnkit.calibrate`) searches a hyper-parameter: a range
    ``[low, high]`` (``log=True``: sampled on a log scale; an int hyper-parameter is searched
    over integers) or a list of ``choices``. Declared beside the hyper-parameter, with
    ``hp(..., search=Search(...))``; it must lie inside the hyper-parameter's valid range.

    >>> Search(1e-5, 1e-1, log=True).to_dict()
    {'low': 1e-05, 'high': 0.1, 'log': True, 'choices': None}
    """

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(self.choices))
            if not self.choices or self.low is not None or self.high is not None:
                raise TypeError("Search: give either choices or a range [low, high]")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise TypeError(f"Search: a range needs low < high; got [{self.low}, {self.high}]")
        elif self.log and self.low <= 0:
            raise TypeError("Search: a log-scale range needs low > 0")

    def to_dict(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "log": self.log,
                "choices": list(self.choices) if self.choices is not None else None}


def hp(
    default: Any,
    help: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    choices: Sequence[Any] | None = None,
    type: type | None = None,
    per_scenario: dict[str, Any] | None = None,
    search: Search | None = None,
) -> Any:
    """Declare a hyper-parameter: its default, a one-line help, and its valid range.

    ``low``/``high`` bound numbers (``low_open`` excludes ``low``); ``choices`` lists valid
    values; ``type`` is needed only when the default is ``None``. ``search`` is where
    calibration looks for a better value (:class:`Search`); a hyper-parameter without one
    keeps its value during calibration.

    ``per_scenario={"class": a, "random": b}`` gives a default that depends on the scenario:
    the field's default is then ``None``, meaning "the request's scenario decides", and
    :meth:`UnlearningMethod.unlearn` runs with ``a`` for class unlearning and ``b`` for a
    random subset (and records the value it used). A value the user gives always wins.
    """
    if per_scenario is not None:
        if set(per_scenario) != {"class", "random"} or default is not None:
            raise TypeError("per_scenario needs both 'class' and 'random', and default=None")
        type = type or builtins_type(per_scenario["class"])
    kind = type if type is not None else builtins_type(default)
    return field(
        default=default,
        metadata={"help": help, "low": low, "high": high, "low_open": low_open,
                  "choices": tuple(choices) if choices else None, "type": kind,
                  "per_scenario": dict(per_scenario) if per_scenario else None,
                  "search": search},
    )


def builtins_type(value: Any) -> type:
    return bool if isinstance(value, bool) else value.__class__


@dataclass(frozen=True)
class HyperParameter:
    """A method's hyper-parameter as the CLI and the docs show it."""

    name: str
    type: str
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    #: whether ``low`` itself is excluded (the range is ``(low, ...`` rather than ``[low, ...``)
    low_open: bool = False
    #: the default per scenario (``{"class": ..., "random": ...}``) when ``default`` is None
    #: because the scenario decides it; else None
    per_scenario: dict[str, Any] | None = None
    #: where calibration searches it (:meth:`Search.to_dict`), or None: kept as given
    search: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Request:
    """Everything a method may use besides its hyper-parameters."""

    forget: Data | None
    retain: Data | None
    test: Data | None
    scenario: Scenario
    seed: int
    device: torch.device
    progress: bool
    #: provenance of the original model (its training recipe, architecture...), if known
    original_info: ModelInfo | None


@dataclass(frozen=True, kw_only=True)
class UnlearningMethod(ABC):
    """Base class: validates hyper-parameters and requests, copies, times, checks the result.

    Subclasses declare the class attributes below, their hyper-parameters as fields made with
    :func:`hp`, and implement :meth:`_unlearn` on a private copy of the model.
    """

    #: registry name, e.g. ``"ssd"``
    name: ClassVar[str]
    #: the paper it comes from
    paper: ClassVar[str]
    #: one line on what it does
    summary: ClassVar[str]
    #: what to change when its verdict is "not forgotten" (named hyper-parameters and the
    #: direction), shown by the verdict's hint
    forget_more: ClassVar[str | None] = None
    #: what to change when its verdict is "utility lost" (``None``: the generic advice, soften
    #: the method or fine-tune longer)
    keep_utility: ClassVar[str | None] = None
    needs_forget: ClassVar[bool] = True
    needs_retain: ClassVar[bool] = True
    #: whether it uses held-out (test / validation) data when given
    uses_test: ClassVar[bool] = False
    #: scenarios the method is designed and validated for
    scenarios: ClassVar[tuple[str, ...]] = ("class", "random")
    #: what happens in another scenario: "refuse" (error) or "warn" (runs, with a warning)
    other_scenarios: ClassVar[str] = "refuse"
    #: why the method needs floating-point tensor inputs (it perturbs or differentiates the
    #: inputs themselves), or ``None`` when any input works (token ids, dicts of tensors)
    needs_float_inputs: ClassVar[str | None] = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _validate_field(type(self).name, f, getattr(self, f.name))
        self._check()

    def _check(self) -> None:  # noqa: B027  (an optional hook, not an abstract method)
        """Cross-parameter validation; subclasses raise InvalidParameterError."""

    # ---------------------------------------------------------------- description
    @classmethod
    def hyperparameters(cls) -> list[HyperParameter]:
        out = []
        for f in dataclasses.fields(cls):
            m = f.metadata
            out.append(
                HyperParameter(
                    name=f.name,
                    type=m.get("type", object).__name__,
                    default=f.default,
                    help=m.get("help", ""),
                    choices=m.get("choices"),
                    low=m.get("low"),
                    high=m.get("high"),
                    low_open=bool(m.get("low_open", False)),
                    per_scenario=m.get("per_scenario"),
                    search=m["search"].to_dict() if m.get("search") is not None else None,
                )
            )
        return out

    @classmethod
    def search_space(cls) -> dict[str, Search]:
        """The hyper-parameters that calibration searches, and where (:class:`Search`)."""
        return {f.name: f.metadata["search"] for f in dataclasses.fields(cls)
                if f.metadata.get("search") is not None}

    def search_space_for(self, space: dict[str, Search], model: nn.Module, retain: Data | None,
                         device: torch.device | str | None = None) -> dict[str, Search]:
        """The search space for this model: ``space`` (the declared one, less the values held
        fixed) narrowed where a range depends on the model, for :func:`unlearnkit.calibrate`.
        As declared, by default; a method training with Adam searches its learning rate up to
        1e-2, and cf-k and eu-k search ``k`` only up to the model's depth."""
        return space

    def for_scenario(self, scenario: str) -> UnlearningMethod:
        """This method with every per-scenario default left unset (``None``) replaced by the
        value for ``scenario`` (see :func:`hp`); ``self`` when there is none to fill in.

        >>> from unlearnkit.methods import get_method
        >>> get_method("ssd").for_scenario("random").alpha
        0.5
        >>> get_method("ssd", alpha=3.0).for_scenario("random").alpha
        3.0
        """
        fill = {}
        for f in dataclasses.fields(self):
            table = f.metadata.get("per_scenario")
            if table and getattr(self, f.name) is None:
                fill[f.name] = table.get(scenario, table["class"])
        return dataclasses.replace(self, **fill) if fill else self

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Everything the ``methods`` command and the docs show about this method."""
        return {
            "name": cls.name,
            "summary": cls.summary,
            "paper": cls.paper,
            "needs_forget": cls.needs_forget,
            "needs_retain": cls.needs_retain,
            "uses_test": cls.uses_test,
            "scenarios": list(cls.scenarios),
            "other_scenarios": cls.other_scenarios,
            "needs_float_inputs": cls.needs_float_inputs,
            "hyperparameters": [h.to_dict() for h in cls.hyperparameters()],
        }

    def params(self) -> dict[str, Any]:
        """The hyper-parameters as a plain dict (re-create with ``type(self)(**params)``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def json_params(self) -> dict[str, Any]:
        """The hyper-parameters as JSON records them (result rows, checkpoints, cache keys):
        a callable one by its qualified name (see :func:`provenance_params`)."""
        return provenance_params(self.params())

    # ---------------------------------------------------------------- the one verb
    def unlearn(
        self,
        model: nn.Module,
        *,
        forget: Data | None = None,
        retain: Data | None = None,
        test: Data | None = None,
        scenario: Scenario = "random",
        seed: int = 0,
        device: str | torch.device | None = None,
        progress: bool = False,
    ) -> nn.Module:
        """Return a copy of ``model`` that has forgotten ``forget``.

        Args:
            model: the original model; it is not modified.
            forget: D_f (required when ``needs_forget``).
            retain: D_r (required when ``needs_retain``).
            test: held-out data, used only by methods with ``uses_test``.
            scenario: ``"class"`` or ``"random"``; see the ``scenarios`` attribute.
            seed: seeds every random choice; same seed, same result on the CPU.
            device: where to compute (default: CUDA, then MPS, then CPU).
            progress: show progress bars on stderr.

        The returned model carries a :class:`ModelInfo` whose ``seconds`` is the wall-clock
        time of this call, less the time spent in the epoch watchers of
        :func:`~unlearnkit.training.watch_epochs` (per-epoch evaluations), and whose
        ``method`` records the name, hyper-parameters (a callable one by its
        ``"module:qualname"``; a per-scenario default at the value used) and seed.

        Frozen parameters (``requires_grad=False``) are never changed; a model with no
        trainable parameter at all is refused up front with an
        :class:`~unlearnkit.exceptions.UnsupportedModelError`.
        """
        if scenario in ("class", "random"):  # fill in the scenario's defaults, then run
            method = self.for_scenario(scenario)
            if method is not self:
                return method.unlearn(model, forget=forget, retain=retain, test=test,
                                      scenario=scenario, seed=seed, device=device,
                                      progress=progress)
        if not isinstance(model, nn.Module):
            raise InvalidParameterError(
                f"{self.name}: the model must be a torch.nn.Module. Got {type(model).__name__}."
            )
        if not any(p.requires_grad for p in model.parameters()):
            raise UnsupportedModelError(
                self.name, "a model with no trainable parameter (every requires_grad is False)",
                "Unfreeze the layers to unlearn (requires_grad_(True)) before calling it: "
                "unlearnkit never changes a frozen parameter.")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise InvalidParameterError(f"The 'seed' parameter must be an int. Got {seed!r}.")
        seed = int(seed)
        check_finite(model, "The original model")
        self._check_request(forget, retain, scenario)
        self._check_inputs(forget if forget is not None else retain)
        dev = resolve_device(device)
        request = Request(
            forget=forget if self.needs_forget or forget is not None else None,
            retain=retain,
            test=test if self.uses_test else None,
            scenario=scenario,
            seed=seed,
            device=dev,
            progress=progress,
            original_info=get_info(model),
        )
        warm_up(dev)  # torch's one-time costs are not the method's
        watched = watcher_seconds()
        start = time.perf_counter()
        work = copy.deepcopy(model).to(dev)
        with seeded(seed, dev):
            out = self._unlearn(work, request)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        # the clock pauses around per-epoch evaluations (watch_epochs): instrumentation
        seconds = max(time.perf_counter() - start - (watcher_seconds() - watched), 0.0)
        check_finite(out, f"The model produced by {self.name!r}")
        base = get_info(model) or ModelInfo()
        return set_info(
            out,
            base.replace(
                seconds=seconds,
                method={"name": self.name, "params": self.json_params(),
                        "seed": seed},
            ),
        )

    def _check_request(self, forget: Data | None, retain: Data | None, scenario: str) -> None:
        if scenario not in ("class", "random"):
            raise InvalidParameterError(
                f"The 'scenario' parameter must be 'class' or 'random'. Got {scenario!r} instead."
            )
        for needed, data, what in ((self.needs_forget, forget, "forget"),
                                   (self.needs_retain, retain, "retain")):
            if not needed:
                continue
            if data is None:
                raise InvalidParameterError(
                    f"Method {self.name!r} needs the {what} set; none given."
                )
            if data_size(data) == 0:
                raise InvalidParameterError(f"Method {self.name!r} got an empty {what} set.")
        if scenario not in self.scenarios:
            msg = (
                f"Method {self.name!r} is designed for {' and '.join(self.scenarios)} unlearning; "
                f"it has no guarantee for {scenario} unlearning."
            )
            if self.other_scenarios == "refuse":
                raise InvalidParameterError(msg)
            warnings.warn(msg, UnsupportedScenarioWarning, stacklevel=3)

    def _check_inputs(self, data: Data | None) -> None:
        """Refuse, before any work, inputs of a form the method cannot handle."""
        if self.needs_float_inputs is None or data is None:
            return
        for x, _ in iter_batches(data, 2, shuffle=False):
            if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x):
                raise UnsupportedModelError(
                    self.name, f"inputs that are not one floating-point tensor (got {describe(x)})",
                    f"It {self.needs_float_inputs}, which needs continuous inputs such as images "
                    "or features, not token ids. Use a method that works on the weights alone, "
                    "e.g. 'scrub', 'ssd' or 'neggrad-plus'.")
            return

    @abstractmethod
    def _unlearn(self, model: nn.Module, request: Request) -> nn.Module:
        """Unlearn in place on ``model`` (a private copy, already on the device); return it."""

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{self.name}({args})"


def provenance_params(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as a model's JSON provenance records them: a callable hyper-parameter (such
    as ``retrain``'s ``model_factory``) by its qualified name, ``"module:qualname"``."""
    return {k: qualified_name(v) if callable(v) else v for k, v in params.items()}


def qualified_name(fn: Any) -> str:
    """``"module:qualname"`` of a function, a class, a callable object (its class) or a
    ``functools.partial`` (its function)."""
    target = fn
    while hasattr(target, "func") and callable(target.func):  # functools.partial
        target = target.func
    if not hasattr(target, "__qualname__"):
        target = type(target)
    module = getattr(target, "__module__", None) or "?"
    return f"{module}:{target.__qualname__}"


def _validate_field(method: str, f: dataclasses.Field, value: Any) -> None:
    m = f.metadata
    kind = m.get("type")
    where = f"The {f.name!r} parameter of {method!r}"
    if value is None and f.default is None:
        return
    if kind is float:
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value))
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is bool:
        ok = isinstance(value, bool)
    elif kind is str:
        ok = isinstance(value, str)
    else:
        ok = True
    choices = m.get("choices")
    if ok and choices is not None and value not in choices:
        raise InvalidParameterError(
            f"{where} must be one of {list(choices)}. Got {value!r} instead."
        )
    low, high, low_open = m.get("low"), m.get("high"), m.get("low_open")
    if kind is int and high is None:  # an int without its own bound is a count: bounded too
        high = MAX_COUNT
    if ok and kind in (int, float):
        if low is not None and (value < low or (low_open and value == low)):
            ok = False
        if high is not None and value > high:
            ok = False
    if not ok:
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        bracket = "(" if low_open or low is None else "["
        close = ")" if high is None else "]"
        rng = f" in the range {bracket}{lo}, {hi}{close}" if kind in (int, float) else ""
        name = kind.__name__ if kind else "value"
        raise InvalidParameterError(f"{where} must be {'an' if name == 'int' else 'a'} {name}"
                                    f"{rng}. Got {short_repr(value)} instead.")


METHODS: Registry[type[UnlearningMethod]] = Registry("method")


def register_method(cls: type[UnlearningMethod]) -> type[UnlearningMethod]:
    """Class decorator: register a method under its ``name`` attribute."""
    for attr in ("name", "paper", "summary"):
        if not isinstance(getattr(cls, attr, None), str):
            raise TypeError(f"{cls.__name__} must declare a string class attribute {attr!r}.")
    METHODS.register(cls.name, cls)
    return cls


def get_method(name: str | UnlearningMethod, **params: Any) -> UnlearningMethod:
    """Build the method ``name`` with ``params``; unknown names and parameters are explained."""
    cls = type(name) if isinstance(name, UnlearningMethod) else METHODS.get(name)
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in params:
        if key not in valid:
            raise InvalidParameterError(
                f"Method {cls.name!r} has no parameter {key!r}.{did_you_mean(key, valid)} "
                f"Valid parameters: {', '.join(valid)}."
            )
    if isinstance(name, UnlearningMethod):
        return dataclasses.replace(name, **params) if params else name
    return cls(**params)


def coerce_param(cls: type[UnlearningMethod], key: str, text: str) -> Any:
    """Convert a ``--param key=value`` string to the parameter's type."""
    fields_ = {f.name: f for f in dataclasses.fields(cls)}
    if key not in fields_:
        raise InvalidParameterError(
            f"Method {cls.name!r} has no parameter {key!r}.{did_you_mean(key, fields_)} "
            f"Valid parameters: {', '.join(fields_)}."
        )
    kind = fields_[key].metadata.get("type", str)
    if text.lower() in ("none", "null") and fields_[key].default is None:
        return None
    try:
        if kind is bool:
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if kind is int:
            return int(text)  # its range is checked by the method (at most MAX_COUNT)
        if kind is float:
            return float(text)  # nan and inf are refused by the method's range check
    except ValueError:  # not a number, or an int of more digits than Python converts
        raise InvalidParameterError(
            f"The {key!r} parameter of {cls.name!r} must be {_article(kind.__name__)} "
            f"{kind.__name__}. Got {short_repr(text)}."
        ) from None
    return text


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"
