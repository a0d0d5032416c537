"""Calibration's search spaces: every method declares where to search, inside its valid ranges.

Each method marks, with ``hp(..., search=Search(...))``, the hyper-parameters that decide how much
it forgets against how much utility it keeps; calibration searches those and keeps the rest.
These tests hold every registered method (including one added later) to the rules calibration
relies on: a non-empty space, every range inside the hyper-parameter's valid range and of its
kind, containing the default, and every end of every range accepted by the method.
"""

from __future__ import annotations

import dataclasses

import pytest

from unlearnkit.methods import METHODS, HyperParameter, get_method
from unlearnkit.methods.base import Search

#: Methods that are not calibrated: the reference itself.
NOT_SEARCHED = {"retrain"}

SEARCHED = [name for name, _ in METHODS.items() if name not in NOT_SEARCHED]


def _searched(name: str) -> list[tuple[HyperParameter, Search]]:
    cls = METHODS.get(name)
    space = cls.search_space()
    return [(h, space[h.name]) for h in cls.hyperparameters() if h.name in space]


def _defaults(h: HyperParameter) -> list:
    """The default, or both per-scenario defaults; none for "the original's" (``None``)."""
    if h.per_scenario:
        return list(h.per_scenario.values())
    return [] if h.default is None else [h.default]


def _ends(s: Search) -> list:
    return list(s.choices) if s.choices is not None else [s.low, s.high]


def test_every_method_but_retrain_is_listed():
    assert set(METHODS.names()) - set(SEARCHED) == NOT_SEARCHED
    assert len(SEARCHED) >= 21


@pytest.mark.parametrize("name", SEARCHED)
def test_declares_a_search_space(name):
    cls = METHODS.get(name)
    space = cls.search_space()
    assert space, f"{name} declares no searched hyper-parameter"
    fields = {f.name for f in dataclasses.fields(cls)}
    assert set(space) <= fields
    assert all(isinstance(s, Search) for s in space.values())


@pytest.mark.parametrize("name", SEARCHED)
def test_search_lies_inside_the_valid_range(name):
    for h, s in _searched(name):
        where = f"{name}.{h.name}"
        if s.choices is not None:
            if h.choices is not None:
                assert set(s.choices) <= set(h.choices), where
            continue
        assert h.type in ("int", "float"), f"{where}: a range on a {h.type}"
        assert s.low < s.high, where
        if h.type == "int":
            for end in (s.low, s.high):
                assert isinstance(end, int) and not isinstance(end, bool), (
                    f"{where}: an int hyper-parameter needs integer bounds, got {end!r}")
        if s.log:
            assert s.low > 0, where
        if h.low is not None:
            assert s.low > h.low if h.low_open else s.low >= h.low, (
                f"{where}: search low {s.low} outside the valid low {h.low}")
        if h.high is not None:
            assert s.high <= h.high, f"{where}: search high {s.high} above {h.high}"
        assert h.choices is None, f"{where}: a range on a hyper-parameter with choices"


@pytest.mark.parametrize("name", SEARCHED)
def test_search_contains_the_default(name):
    for h, s in _searched(name):
        for default in _defaults(h):
            if s.choices is not None:
                assert default in s.choices, f"{name}.{h.name}: default {default!r}"
            else:
                assert s.low <= default <= s.high, (
                    f"{name}.{h.name}: default {default!r} outside [{s.low}, {s.high}]")


@pytest.mark.parametrize("name", SEARCHED)
def test_hyperparameters_describe_the_search(name):
    cls = METHODS.get(name)
    space = cls.search_space()
    for h in cls.hyperparameters():
        if h.name in space:
            assert h.search == space[h.name].to_dict()
            assert h.to_dict()["search"] == space[h.name].to_dict()
        else:
            assert h.search is None
    assert all(hd["search"] == (space[hd["name"]].to_dict() if hd["name"] in space else None)
               for hd in cls.describe()["hyperparameters"])


@pytest.mark.parametrize("name", SEARCHED)
def test_every_end_of_every_range_builds(name):
    searched = _searched(name)
    for h, s in searched:
        for value in _ends(s):
            method = get_method(name, **{h.name: value})  # must not raise
            assert getattr(method, h.name) == value
    # all at their low ends together, then all at their high ends
    for pick in (0, -1):
        get_method(name, **{h.name: _ends(s)[pick] for h, s in searched})


def test_retrain_declares_no_search():
    cls = METHODS.get("retrain")
    assert cls.search_space() == {}
    assert all(h.search is None for h in cls.hyperparameters())


def test_search_declarations():
    assert Search(1e-5, 1e-1, log=True).to_dict() == {
        "low": 1e-5, "high": 0.1, "log": True, "choices": None}
    assert Search(1, 10).to_dict() == {"low": 1, "high": 10, "log": False, "choices": None}
    s = Search(choices=["a", "b"])
    assert s.choices == ("a", "b")
    assert s.to_dict() == {"low": None, "high": None, "log": False, "choices": ["a", "b"]}
    bad = [
        dict(low=1.0, high=1.0),  # low >= high
        dict(low=2.0, high=1.0),
        dict(low=0.0, high=1.0, log=True),  # a log range needs low > 0
        dict(low=-1.0, high=1.0, log=True),
        dict(low=0.1, high=1.0, choices=(0.5,)),  # both choices and a range
        dict(low=0.1, choices=(0.5,)),
        dict(choices=()),  # empty choices
        dict(choices=[]),
        dict(low=0.1),  # half a range
        dict(),
    ]
    for kwargs in bad:
        with pytest.raises(TypeError, match="Search"):
            Search(**kwargs)


def test_methods_command_shows_the_search_ranges():
    from _cli import run

    code, out, _ = run("methods")
    assert code == 0
    ssd = out.split("\n\n")[[b.split(":")[0] for b in out.split("\n\n")].index("ssd")]
    assert "--param alpha=10.0/0.5" in ssd and "calibrated over [0.1, 100] log" in ssd
    assert "calibrated over [0.1, 1])" in ssd  # lambd, linear
    assert "calibrated over" not in out.split("\n\n")[
        [b.split(":")[0] for b in out.split("\n\n")].index("retrain")]
