"""The retrain policy: when the ledger stops approximating and retrains from scratch.

An approximate step is fast but leaves the model somewhere near, not at, the model retrained
without the erased samples, and each later step starts from there. A full retrain on every
sample not erased is the exact answer, and resets that chain. :class:`RetrainPolicy` says when
``apply`` retrains instead of approximating; each rule is optional (``None`` or ``False``
turns it off), and every decision records each rule's value, limit and whether it fired.

"Since the last exact model" means since version 0 or the last retrain, counting the batch
being applied:

* ``after_requests``: the requests honoured by approximate steps would reach this many;
* ``after_fraction``: the samples erased by approximate steps would reach this share of the
  training set;
* ``after_age``: the oldest approximate step is older than this many seconds (checked even
  when no request is pending, so that a scheduled ``apply`` makes old approximations exact);
* ``on_failure``: an approximate step whose verdict fails is followed, in the same ``apply``,
  by a retrain (the requests are then honoured exactly instead of staying pending).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

from unlearnkit.exceptions import InvalidParameterError
from unlearnkit.metrics.verdict import OUTCOMES

__all__ = ["RetrainPolicy", "Trigger", "format_seconds", "parse_duration"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_duration(text: str | float | int) -> float:
    """Seconds from ``"90s"``, ``"15m"``, ``"12h"``, ``"30d"``, ``"2w"`` or a number of seconds.

    >>> parse_duration("30d"), parse_duration("90"), parse_duration(1.5)
    (2592000.0, 90.0, 1.5)
    """
    if isinstance(text, bool):
        raise InvalidParameterError(f"A duration must be a number of seconds or like '30d'; "
                                    f"got {text!r}.")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = _DURATION.match(str(text))
        if not m:
            raise InvalidParameterError(
                f"A duration must be a number of seconds or a number with a unit s, m, h, d or w "
                f"(e.g. 30d); got {text!r}.")
        value = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if not math.isfinite(value) or value <= 0:
        raise InvalidParameterError(f"A duration must be positive and finite; got {text!r}.")
    return value


def format_seconds(seconds: float | None) -> str:
    """``3600`` -> ``"1h"``; the largest unit that divides it, else seconds.

    >>> format_seconds(2592000), format_seconds(90), format_seconds(1.5)
    ('30d', '90s', '1.5s')
    """
    if seconds is None:
        return "-"
    for unit in ("w", "d", "h", "m"):
        n = seconds / _UNITS[unit]
        if n >= 1 and n == int(n):
            return f"{int(n)}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class Trigger:
    """One rule of the policy at one decision: its value, its limit and whether it fired."""

    rule: str
    value: float | bool | None
    limit: float | bool | None
    fired: bool

    def describe(self) -> str:
        if self.rule == "on_failure":
            return "the approximate step's verdict failed"
        if self.rule == "after_fraction":
            return f"erased share since the last exact model {self.value:.2%} >= {self.limit:.2%}"
        if self.rule == "after_age":
            return (f"oldest approximate step {format_seconds(round(float(self.value or 0)))} old"
                    f" >= {format_seconds(self.limit)}")  # type: ignore[arg-type]
        if self.rule == "requested":
            return "a retrain was asked for"
        return f"requests since the last exact model {self.value} >= {self.limit}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class RetrainPolicy:
    """When ``apply`` retrains from scratch instead of approximating (see the module).

    Args:
        after_requests: retrain once approximate steps would honour this many requests since
            the last exact model (``None``: never for this reason).
        after_fraction: ... once they would erase this share of the training set, in (0, 1].
        after_age: ... once the oldest approximate step is this old (seconds; ``None``: never).
        on_failure: retrain when an approximate step's verdict fails.
        accept: the verdict outcomes that let an approximate version be promoted (default:
            ``forgotten`` only; :data:`unlearnkit.metrics.verdict.OUTCOMES`).
    """

    after_requests: int | None = 20
    after_fraction: float | None = 0.05
    after_age: float | None = 30 * 86400.0
    on_failure: bool = True
    accept: tuple[str, ...] = ("forgotten",)

    def __post_init__(self) -> None:
        r = self.after_requests
        if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < 1):
            raise InvalidParameterError(
                f"The 'after_requests' parameter of the retrain policy must be an int >= 1 or "
                f"None. Got {r!r} instead.")
        f = self.after_fraction
        if f is not None and (isinstance(f, bool) or not isinstance(f, (int, float))
                              or not 0 < f <= 1):
            raise InvalidParameterError(
                f"The 'after_fraction' parameter of the retrain policy must be a float in the "
                f"range (0, 1] or None. Got {f!r} instead.")
        if self.after_age is not None:
            object.__setattr__(self, "after_age", parse_duration(self.after_age))
        if f is not None:
            object.__setattr__(self, "after_fraction", float(f))
        if not isinstance(self.on_failure, bool):
            raise InvalidParameterError(
                f"The 'on_failure' parameter of the retrain policy must be True or False. Got "
                f"{self.on_failure!r} instead.")
        accept = (self.accept,) if isinstance(self.accept, str) else tuple(self.accept)
        bad = [a for a in accept if a not in OUTCOMES]
        if bad or not accept:
            raise InvalidParameterError(
                f"The 'accept' parameter of the retrain policy must name verdict outcomes among "
                f"{', '.join(OUTCOMES)}. Got {list(accept)!r} instead.")
        object.__setattr__(self, "accept", tuple(o for o in OUTCOMES if o in accept))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["accept"] = list(self.accept)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RetrainPolicy:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InvalidParameterError(
                f"The retrain policy has no setting {unknown[0]!r}. Settings: "
                f"{', '.join(sorted(known))}.")
        return cls(**{k: (tuple(v) if k == "accept" else v) for k, v in d.items()})

    def evaluate(self, *, requests: int, fraction: float, age: float | None
                 ) -> list[Trigger]:
        """Each size or age rule at these values: ``requests`` and ``fraction`` since the last
        exact model with the batch counted, ``age`` of the oldest approximate step (``None``:
        there is none)."""
        out = []
        if self.after_requests is not None:
            out.append(Trigger("after_requests", requests, self.after_requests,
                               requests >= self.after_requests))
        if self.after_fraction is not None:
            out.append(Trigger("after_fraction", round(fraction, 6), self.after_fraction,
                               fraction >= self.after_fraction))
        if self.after_age is not None:
            out.append(Trigger("after_age", None if age is None else round(age, 3),
                               self.after_age, age is not None and age >= self.after_age))
        return out

    def describe(self) -> str:
        parts = [f"after {self.after_requests} requests" if self.after_requests else None,
                 f"after {self.after_fraction:.1%} of the data" if self.after_fraction else None,
                 f"after {format_seconds(self.after_age)}" if self.after_age else None,
                 "on a failed verdict" if self.on_failure else None]
        rules = ", ".join(p for p in parts if p) or "never (only when asked)"
        return f"retrain {rules}; promote a version whose verdicts are {' or '.join(self.accept)}"
