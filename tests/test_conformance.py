"""Every method on every model kind of the zoo, in both scenarios (STYLE.md point 10).

The matrix is generated from the method registry and the zoo (``tests/zoo.py``): a method or a
model kind added later joins it with no change here. Each cell is either a working run or a
refusal *before any work*, and the refusals are exactly those the method declares (a scenario
it refuses, or ``needs_float_inputs`` on token ids). A working run:

* returns a finite model with the same parameters and buffers (names, shapes, dtypes);
* leaves the caller's model bit-for-bit untouched (weights, buffers, flags, ``requires_grad``);
* leaves frozen parameters (``requires_grad=False``) bit-for-bit unchanged;
* for ``retrain``, re-draws every trainable parameter (no tensor equals the original's).

``python tests/zoo.py`` prints the same matrix.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import unlearnkit as uk
from unlearnkit.evaluation import random_model
from unlearnkit.methods.bad_teacher import BadTeacher
from unlearnkit.models.registry import fresh_copy
from zoo import ZOO, expected_refusal, make_model, make_splits, run_cell

METHOD_NAMES = uk.METHODS.names()
KINDS = list(ZOO)


@pytest.fixture(scope="module")
def zoo_models() -> dict:
    """``kind -> (model, splits, pristine state)``, each built and trained once."""
    cache: dict[str, tuple] = {}

    def get(kind: str):
        if kind not in cache:
            model = make_model(ZOO[kind])
            cache[kind] = (model, make_splits(ZOO[kind]), _snapshot(model))
        return cache[kind]

    return get


def _snapshot(model: torch.nn.Module) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "training": {n: m.training for n, m in model.named_modules()},
    }


def _assert_untouched(model: torch.nn.Module, snap: dict, what: str) -> None:
    state = model.state_dict()
    assert state.keys() == snap["state"].keys()
    for k, v in snap["state"].items():
        assert torch.equal(state[k], v), f"{what} changed the caller's {k}"
    assert {n: p.requires_grad for n, p in model.named_parameters()} == snap["grad"], what
    assert {n: m.training for n, m in model.named_modules()} == snap["training"], what
    assert all(p.grad is None for p in model.parameters()), f"{what} left gradients behind"


@pytest.mark.parametrize("scenario", ["class", "random"])
@pytest.mark.parametrize("name", METHOD_NAMES)
@pytest.mark.parametrize("kind", KINDS)
def test_method_on_model_kind(kind, name, scenario, zoo_models):
    model, splits, snap = zoo_models(kind)
    outcome = run_cell(model, splits[scenario], name)
    _assert_untouched(model, snap, f"{name} on {kind}")
    assert outcome.status != "crash", f"{name} on {kind} ({scenario}) crashed: {outcome.reason}"
    expected = expected_refusal(ZOO[kind], name, scenario)
    if expected is not None:
        assert outcome.status == "refused", f"{name} on {kind} should refuse ({expected})"
        assert repr(name) in outcome.reason, "a refusal names the method"
        if expected == "inputs":
            assert isinstance(outcome.error, uk.UnsupportedModelError)
            assert "Use a method" in outcome.reason, "a refusal says what to do instead"
        return
    assert outcome.status == "ok", f"{name} on {kind} ({scenario}) refused: {outcome.reason}"
    out = outcome.model
    assert out is not model
    s_in, s_out = model.state_dict(), out.state_dict()
    assert list(s_out) == list(s_in)
    for k, v in s_in.items():
        assert (s_out[k].shape, s_out[k].dtype) == (v.shape, v.dtype), k
        if torch.is_floating_point(s_out[k]):
            assert torch.isfinite(s_out[k]).all(), f"{name} on {kind}: {k} is not finite"
    params_in = dict(model.named_parameters())
    for pname, p in out.named_parameters():
        if not params_in[pname].requires_grad:
            assert not p.requires_grad, f"{name} unfroze {pname}"
            assert torch.equal(p, params_in[pname]), f"{name} changed the frozen {pname}"
    if name == "retrain":
        same = [n for n, p in out.named_parameters()
                if params_in[n].requires_grad and torch.equal(p, params_in[n])]
        assert not same, f"retrain kept trained values in {same}"


@pytest.mark.parametrize("name", [n for n in METHOD_NAMES if uk.METHODS.get(n).search_space()])
@pytest.mark.parametrize("kind", KINDS)
def test_search_space_for_every_model_kind(kind, name, zoo_models):
    """What calibration searches on this model kind (the declared space, narrowed for the
    model): the declared keys, each range within the declared one, the caller's model
    untouched."""
    model, splits, snap = zoo_models(kind)
    declared = uk.METHODS.get(name).search_space()
    got = uk.get_method(name).search_space_for(dict(declared), model, splits["class"].retain)
    assert got.keys() == declared.keys()
    for key, s in got.items():
        d = declared[key]
        if d.choices is not None:
            assert s == d, key
        elif s.choices is not None:  # one value left
            assert len(s.choices) == 1 and d.low <= s.choices[0] <= d.high, key
        else:
            assert d.low <= s.low < s.high <= d.high and s.log == d.log, key
    _assert_untouched(model, snap, f"{name}'s search space")


def _redrawn(fresh: torch.nn.Module, model: torch.nn.Module) -> None:
    params_in = dict(model.named_parameters())
    assert type(fresh) is type(model)
    for n, p in fresh.named_parameters():
        if params_in[n].requires_grad:
            assert not torch.equal(p, params_in[n]), f"{n} was not re-drawn"
        else:
            assert torch.equal(p, params_in[n]), f"the frozen {n} changed"


@pytest.mark.parametrize("kind", KINDS)
def test_random_models_redraw_every_trainable_parameter(kind, zoo_models):
    """The random teacher of teacher / bad-teacher and the random model behind zrf start from
    scratch on every model kind: no trainable tensor equals the trained one."""
    model, _, snap = zoo_models(kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the notice of a fallback re-draw is tested elsewhere
        _redrawn(fresh_copy(model), model)
        _redrawn(random_model(model, seed=3), model)
        _redrawn(BadTeacher().incompetent_teacher(model, 0, torch.device("cpu")), model)
    _assert_untouched(model, snap, "fresh_copy")


@pytest.mark.filterwarnings("ignore:fresh_copy:UserWarning")  # zrf's random ViT: tested above
@pytest.mark.parametrize("kind", KINDS)
def test_evaluate_on_every_model_kind(kind, zoo_models):
    """The metrics read every kind's inputs and outputs (dicts, ModelOutput, float64)."""
    model, splits, snap = zoo_models(kind)
    for scenario, split in splits.items():
        res = uk.evaluate(model, split, mia=True)
        for key in ("retain_acc", "forget_acc", "test_acc", "zrf"):
            assert 0.0 <= res[key] <= 1.0, (scenario, key, res[key])
        assert res["retain_acc"] > 0.3, f"the zoo's {kind} did not learn: {res['retain_acc']}"
    _assert_untouched(model, snap, "evaluate")


def test_evaluate_refuses_logits_of_the_wrong_width(zoo_models):
    model, splits, _ = zoo_models("resnet")
    wide = copy.deepcopy(model)
    wide.fc = torch.nn.Linear(8, 12)
    with pytest.raises(uk.ModelError, match=r"12 logits per sample but the data has 10 classes"):
        uk.evaluate(wide, splits["random"])
    narrow = copy.deepcopy(model)
    narrow.fc = torch.nn.Linear(8, 3)
    split = splits["random"]
    no_count = uk.Split.from_data(forget=split.forget, retain=split.retain, test=split.test)
    with pytest.raises(uk.ModelError, match=r"holds label \d+ but the model outputs only 3"):
        uk.evaluate(narrow, no_count)
