"""Contract tests generated from the method registry (STYLE.md point 9).

Every registered method, including those added after this file was written, is checked for the
rules that every caller relies on: same architecture out, input untouched, deterministic under a
seed, clear errors on bad input, declared capabilities honoured, provenance recorded.

Methods run at cheap settings, changed only through their declared hyper-parameters
(``zoo.cheap_params``: every declared ``*epochs`` hyper-parameter set to 1, then the ``CHEAP``
table of the methods known today). ``tests/test_conformance.py`` runs the same methods on every
model kind of the zoo.
"""

from __future__ import annotations

import copy
import json
import math
import warnings

import pytest
import torch

import unlearnkit as uk
from unlearnkit.exceptions import InvalidParameterError, ModelError, UnsupportedScenarioWarning
from zoo import cheap_params

METHOD_NAMES = uk.METHODS.names()

#: Methods whose result depends on the seed by design (noise, random init, random teacher).
RANDOM_METHODS = {"perturb", "retrain", "teacher", "eu-k", "boundary-expand", "random-label",
                  "amnesiac", "bad-teacher", "unsir", "salun", "fisher-forgetting"}


def _cls(name: str) -> type[uk.UnlearningMethod]:
    return uk.METHODS.get(name)


def cheap_method(name: str) -> uk.UnlearningMethod:
    return uk.get_method(name, **cheap_params(name))


def bad_values(name: str) -> list[tuple[str, object, str]]:
    """(parameter, bad value, case id) derived from the declared ranges and types."""
    out: list[tuple[str, object, str]] = []
    for h in _cls(name).hyperparameters():
        if h.type == "int":
            out += [(h.name, 1.5, "float"), (h.name, True, "bool")]
            if h.low is not None:
                out.append((h.name, math.floor(h.low) - 1, "below"))
            if h.high is not None and math.isfinite(h.high):
                out.append((h.name, math.floor(h.high) + 1, "above"))
        elif h.type == "float":
            out += [(h.name, float("nan"), "nan"), (h.name, "abc", "str")]
            if h.low is not None:
                out.append((h.name, h.low - 1.0, "below"))
                if h.low_open:
                    out.append((h.name, h.low, "at-open-low"))
            if h.high is not None and math.isfinite(h.high):
                out.append((h.name, h.high + 1.0, "above"))
        elif h.type == "bool":
            out.append((h.name, "yes", "str"))
        elif h.type == "str":
            out.append((h.name, 3, "int"))
        if h.choices:
            out.append((h.name, "no-such-choice", "choice"))
    return out


BAD_CASES = [
    pytest.param(name, param, value, id=f"{name}-{param}-{case}")
    for name in METHOD_NAMES
    for param, value, case in bad_values(name)
]


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def small(digits) -> uk.DataBundle:
    """The first 400 training and 120 test digits: enough for every rule, fast to train on."""
    return uk.DataBundle(
        name="digits-small",
        train=digits.train.subset(range(400)),
        test=digits.test.subset(range(120)),
        class_names=digits.class_names,
    )


@pytest.fixture(scope="module")
def splits(small) -> dict[str, uk.Split]:
    return {"class": uk.split_by_class(small, [3]), "random": uk.split_random(small, count=40)}


def _split_for(name: str, splits: dict[str, uk.Split]) -> uk.Split:
    return splits[_cls(name).scenarios[0]]


def _apply(method, model, split, *, seed=0, **changes):
    kwargs = dict(forget=split.forget, retain=split.retain, test=split.test,
                  scenario=split.scenario, seed=seed)
    kwargs.update(changes)
    return method.unlearn(model, **kwargs)


@pytest.fixture(scope="module")
def pristine(mlp_model) -> dict[str, torch.Tensor]:
    """The shared model's weights before any method of this module ran on it."""
    return _state(mlp_model)


@pytest.fixture(scope="module")
def results(mlp_model, splits, pristine):
    """``results(name, seed)``: the cheap method's output on the mlp, computed once."""
    cache: dict[tuple[str, int], torch.nn.Module] = {}

    def get(name: str, seed: int = 0) -> torch.nn.Module:
        if (name, seed) not in cache:
            cache[name, seed] = _apply(cheap_method(name), mlp_model, _split_for(name, splits),
                                       seed=seed)
        return cache[name, seed]

    return get


def test_registry_is_not_empty():
    assert {"finetune", "perturb", "teacher", "retrain"} <= set(METHOD_NAMES)


# --------------------------------------------------------------------- (a) same architecture
@pytest.mark.parametrize("name", METHOD_NAMES)
def test_returns_same_architecture(name, results, mlp_model):
    out = results(name)
    assert type(out) is type(mlp_model)
    assert out is not mlp_model
    s_in, s_out = mlp_model.state_dict(), out.state_dict()
    assert list(s_out) == list(s_in)
    for k in s_in:
        assert s_out[k].shape == s_in[k].shape, k
        assert s_out[k].dtype == s_in[k].dtype, k
        assert s_out[k].data_ptr() != s_in[k].data_ptr(), f"{k} shares storage with the input"
    assert all(torch.isfinite(t).all() for t in s_out.values())
    x = torch.zeros(2, 1, 8, 8)
    assert out(x).shape == (2, 10)


# ------------------------------------------------------------------ (b) input left untouched
@pytest.mark.parametrize("name", METHOD_NAMES)
def test_leaves_input_model_untouched(name, mlp_model, splits):
    model = copy.deepcopy(mlp_model)
    model.eval()
    model.net[1].train()  # mixed flags: each module's own flag must survive
    before = _state(model)
    flags = {n: m.training for n, m in model.named_modules()}
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    info = uk.get_info(model)

    out = _apply(cheap_method(name), model, _split_for(name, splits))

    assert out is not model
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k in before:
        assert torch.equal(after[k], before[k]), f"{name} modified the input's {k}"
    assert {n: m.training for n, m in model.named_modules()} == flags
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads
    assert all(p.grad is None for p in model.parameters())
    assert uk.get_info(model) == info


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_session_model_untouched(name, results, mlp_model, pristine):
    """The shared fixture itself (used by every test file) is still the trained model."""
    results(name)
    results(name, 1)
    assert all(torch.equal(mlp_model.state_dict()[k], v) for k, v in pristine.items())
    assert mlp_model.training
    assert uk.get_info(mlp_model).method is None


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_does_not_consume_callers_rng(name, mlp_model, splits):
    torch.manual_seed(1234)
    expected = torch.rand(5)
    torch.manual_seed(1234)
    _apply(cheap_method(name), mlp_model, _split_for(name, splits), seed=7)
    assert torch.equal(torch.rand(5), expected)


# ---------------------------------------------------------------- (c, d) seeds and randomness
@pytest.mark.parametrize("name", METHOD_NAMES)
def test_deterministic_under_seed(name, results, mlp_model, splits):
    again = _apply(cheap_method(name), mlp_model, _split_for(name, splits), seed=0)
    assert _same_weights(results(name), again)


@pytest.mark.parametrize("name", sorted(RANDOM_METHODS & set(METHOD_NAMES)))
def test_different_seed_changes_random_methods(name, results):
    assert not _same_weights(results(name, 0), results(name, 1))


# --------------------------------------------------------------------------- (e) bad input
@pytest.mark.parametrize("name", [n for n in METHOD_NAMES if _cls(n).needs_forget])
def test_missing_or_empty_forget_set_refused(name, mlp_model, splits):
    split = _split_for(name, splits)
    empty = uk.ArrayDataset(torch.empty(0, 1, 8, 8), torch.empty(0, dtype=torch.int64))
    m = cheap_method(name)
    with pytest.raises(InvalidParameterError, match=rf"{name}.*forget.*none given"):
        _apply(m, mlp_model, split, forget=None)
    with pytest.raises(InvalidParameterError, match=rf"{name}.*empty forget"):
        _apply(m, mlp_model, split, forget=empty)


@pytest.mark.parametrize("name", [n for n in METHOD_NAMES if _cls(n).needs_retain])
def test_missing_or_empty_retain_set_refused(name, mlp_model, splits):
    split = _split_for(name, splits)
    empty = uk.ArrayDataset(torch.empty(0, 1, 8, 8), torch.empty(0, dtype=torch.int64))
    m = cheap_method(name)
    with pytest.raises(InvalidParameterError, match=rf"{name}.*retain.*none given"):
        _apply(m, mlp_model, split, retain=None)
    with pytest.raises(InvalidParameterError, match=rf"{name}.*empty retain"):
        _apply(m, mlp_model, split, retain=empty)


@pytest.mark.parametrize("name", [n for n in METHOD_NAMES if not _cls(n).needs_forget])
def test_runs_without_forget_data(name, mlp_model, splits):
    split = _split_for(name, splits)
    out = _apply(cheap_method(name), mlp_model, split, forget=None)
    assert not _same_weights(out, mlp_model)
    assert all(torch.isfinite(p).all() for p in out.parameters())


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_nan_model_refused_naming_the_parameter(name, mlp_model, splits):
    model = copy.deepcopy(mlp_model)
    pname, param = list(model.named_parameters())[-1]
    with torch.no_grad():
        param.view(-1)[0] = float("nan")
    with pytest.raises(ModelError, match=rf"non-finite.*'{pname}'"):
        _apply(cheap_method(name), model, _split_for(name, splits))


@pytest.mark.parametrize("name", METHOD_NAMES)
@pytest.mark.parametrize("not_a_model", [{"w": torch.zeros(2)}, "model.safetensors", None])
def test_non_module_refused(name, not_a_model, splits):
    with pytest.raises(InvalidParameterError, match=r"torch\.nn\.Module"):
        _apply(cheap_method(name), not_a_model, _split_for(name, splits))


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_bad_seed_and_bad_scenario_refused(name, mlp_model, splits):
    split = _split_for(name, splits)
    m = cheap_method(name)
    with pytest.raises(InvalidParameterError, match="seed"):
        _apply(m, mlp_model, split, seed=1.5)
    with pytest.raises(InvalidParameterError, match=r"scenario.*'both'"):
        _apply(m, mlp_model, split, scenario="both")


@pytest.mark.parametrize(("name", "param", "value"), BAD_CASES)
def test_bad_hyperparameter_refused(name, param, value):
    pattern = rf"'{param}' parameter of '{name}'.*Got"
    with pytest.raises(InvalidParameterError, match=pattern):
        _cls(name)(**{param: value})
    with pytest.raises(InvalidParameterError, match=pattern):
        uk.get_method(name, **{param: value})
    # a valid instance cannot be changed into an invalid one either
    with pytest.raises(InvalidParameterError, match=pattern):
        uk.get_method(_cls(name)(), **{param: value})


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_negative_epochs_refused(name):
    epochs = [h.name for h in _cls(name).hyperparameters() if h.name.endswith("epochs")]
    for e in epochs:
        with pytest.raises(InvalidParameterError, match=rf"'{e}'.*Got -1"):
            uk.get_method(name, **{e: -1})


@pytest.mark.parametrize("scenario", ["class", "random"])
@pytest.mark.parametrize("name", METHOD_NAMES)
def test_scenarios_as_declared(name, scenario, mlp_model, splits):
    cls = _cls(name)
    split = splits[scenario]
    m = cheap_method(name)
    if scenario in cls.scenarios:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = _apply(m, mlp_model, split)
        assert not [w for w in caught if issubclass(w.category, UnsupportedScenarioWarning)]
        assert uk.get_info(out).method["name"] == name
    elif cls.other_scenarios == "refuse":
        with pytest.raises(InvalidParameterError, match=rf"'{name}'.*{scenario}"):
            _apply(m, mlp_model, split)
    else:
        assert cls.other_scenarios == "warn"
        with pytest.warns(UnsupportedScenarioWarning, match=rf"'{name}'.*{scenario}"):
            out = _apply(m, mlp_model, split)
        assert uk.get_info(out).method["name"] == name


# ------------------------------------------------------------------------- (g) provenance
@pytest.mark.parametrize("name", METHOD_NAMES)
def test_result_records_method_params_seed_seconds(name, results, mlp_model, splits,
                                                   tmp_path):
    out = results(name, 1)
    info = uk.get_info(out)
    m = cheap_method(name).for_scenario(_split_for(name, splits).scenario)
    assert info.method["name"] == name
    assert info.method["params"] == json.loads(json.dumps(m.params()))
    scenario = _split_for(name, splits).scenario
    for h in _cls(name).hyperparameters():  # a per-scenario default is recorded as used
        if h.per_scenario and h.name not in cheap_params(name):
            assert info.method["params"][h.name] == h.per_scenario[scenario]
    assert info.method["seed"] == 1
    assert isinstance(info.seconds, float) and 0 < info.seconds < 60
    original = uk.get_info(mlp_model)
    assert (info.arch, info.arch_kwargs, info.num_classes, info.input_shape) == (
        original.arch, original.arch_kwargs, original.num_classes, original.input_shape)
    assert info.recipe == original.recipe
    # the record is JSON: the result can be saved and rebuilt from the file alone
    path = uk.save_checkpoint(out, tmp_path / f"{name}.safetensors")
    back = uk.load_checkpoint(path)
    assert _same_weights(back, out)
    assert uk.get_info(back) == info


# --------------------------------------------------------------------------- (h) describe
@pytest.mark.parametrize("name", METHOD_NAMES)
def test_describe_and_params_round_trip(name):
    cls = _cls(name)
    d = cls.describe()
    assert d["name"] == name == cls.name
    assert isinstance(d["paper"], str) and d["paper"].strip()
    assert isinstance(d["summary"], str) and d["summary"].strip()
    assert isinstance(d["needs_forget"], bool) and isinstance(d["needs_retain"], bool)
    assert d["scenarios"] and set(d["scenarios"]) <= {"class", "random"}
    assert d["other_scenarios"] in ("refuse", "warn")
    json.dumps(d)  # the CLI prints it as JSON
    default = cls()
    hps = d["hyperparameters"]
    assert [h["name"] for h in hps] == list(default.params())
    for h in hps:
        assert {"name", "type", "default", "help", "choices", "low", "high"} <= set(h)
        assert h["help"].strip(), f"{name}.{h['name']} has no help"
        assert h["default"] == getattr(default, h["name"])
    assert cls.__doc__ and "Paper" in cls.__doc__, "the docstring names the paper"
    for m in (default, cheap_method(name)):
        assert type(m)(**m.params()) == m
        assert uk.get_method(name, **m.params()) == m
        assert str(m).startswith(f"{name}(")
    assert uk.get_method(name) == default
