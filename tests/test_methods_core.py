"""The core rule of each built-in method, on tiny models where the answer is known by hand."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from scipy.stats import entropy
from torch import nn

import unlearnkit as uk
from unlearnkit.exceptions import InvalidParameterError
from unlearnkit.methods import FineTune, Perturb, Retrain, StochasticTeacher
from unlearnkit.methods.base import Request
from unlearnkit.methods.perturb import perturb_parameters
from unlearnkit.methods.teacher import kl_to
from unlearnkit.models import fresh_copy


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def small_split(digits) -> uk.Split:
    ds = uk.DataBundle(name="digits-small", train=digits.train.subset(range(300)),
                       test=digits.test.subset(range(60)), class_names=digits.class_names)
    return uk.split_by_class(ds, [3])


# ------------------------------------------------------------------------------- perturb
def test_perturb_parameters_by_hand():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))  # the last bias has one element
    before = {k: v.clone() for k, v in model.state_dict().items()}
    beta = 0.3
    perturb_parameters(model, beta, torch.Generator().manual_seed(11))

    gen = torch.Generator().manual_seed(11)
    for name, p in model.named_parameters():
        w = before[name]
        noise = torch.randn(w.shape, generator=gen)  # drawn for every tensor, in order
        if w.numel() == 1:
            assert torch.equal(p, w), f"{name}: a one-element tensor has no spread to scale by"
            continue
        sigma = float(np.std(w.numpy()))  # population std of this tensor's own values
        expected = w + beta * sigma * noise
        assert torch.allclose(p, expected, rtol=0, atol=1e-7), name
        assert not torch.equal(p, w)


def test_perturb_noise_std_is_beta_sigma_per_tensor():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(200, 200), nn.Linear(200, 50))
    with torch.no_grad():
        model[1].weight.mul_(10.0)  # tensors with very different spreads
    before = {k: v.clone() for k, v in model.state_dict().items()}
    beta = 0.5
    perturb_parameters(model, beta, torch.Generator().manual_seed(3))
    for name, p in model.named_parameters():
        added = (p - before[name]).detach()
        sigma = before[name].std(unbiased=False)
        assert float(added.std()) == pytest.approx(float(beta * sigma), rel=0.15), name
    w_small = (model[0].weight - before["0.weight"]).std()
    w_large = (model[1].weight - before["1.weight"]).std()
    assert w_large > 5 * w_small


def test_perturb_method_is_the_noise_then_finetuning(mlp_model, small_split):
    """With 0 fine-tuning epochs, the method's output is exactly the seeded noise."""
    out = Perturb(beta=0.4, epochs=0).unlearn(mlp_model, retain=small_split.retain, seed=5)
    by_hand = copy.deepcopy(mlp_model)
    perturb_parameters(by_hand, 0.4, torch.Generator().manual_seed(5))
    assert _same(out, by_hand)
    assert not _same(out, mlp_model)


def test_perturb_needs_no_forget_data(mlp_model, small_split):
    assert Perturb.needs_forget is False
    out = Perturb(epochs=1).unlearn(mlp_model, retain=small_split.retain)
    assert not _same(out, mlp_model)
    assert uk.get_info(out).method["name"] == "perturb"


# ------------------------------------------------------------------------------ finetune
def test_finetune_zero_epochs_is_identity(mlp_model, small_split):
    out = FineTune(epochs=0).unlearn(mlp_model, forget=small_split.forget,
                                     retain=small_split.retain, scenario="class")
    assert out is not mlp_model
    assert _same(out, mlp_model)


def test_finetune_is_fit_on_retain_with_its_recipe(mlp_model, small_split):
    m = FineTune(epochs=2, lr=1e-3, optimizer="sgd", momentum=0.5, batch_size=32)
    out = m.unlearn(mlp_model, forget=small_split.forget, retain=small_split.retain, seed=4)
    by_hand = copy.deepcopy(mlp_model)
    recipe = uk.Recipe(epochs=2, lr=1e-3, optimizer="sgd", momentum=0.5, batch_size=32,
                       weight_decay=0.01, schedule="constant")
    uk.fit(by_hand, small_split.retain, recipe, seed=4)
    assert _same(out, by_hand)


# ------------------------------------------------------------------------------- teacher
def test_kl_to_direction_against_scipy():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(6, 5, generator=g, dtype=torch.float64) * 2
    student = torch.randn(6, 5, generator=g, dtype=torch.float64)
    p = torch.softmax(target, 1).numpy()
    q = torch.softmax(student, 1).numpy()
    want = np.mean([entropy(p[i], q[i]) for i in range(6)])  # KL(p_target || p_student)
    reverse = np.mean([entropy(q[i], p[i]) for i in range(6)])
    got = float(kl_to(target, student))
    assert got == pytest.approx(want, rel=1e-10)
    assert abs(got - reverse) > 1e-3, "the test distinguishes the two directions"
    assert float(kl_to(target, target)) == pytest.approx(0.0, abs=1e-12)


def test_teacher_forgetting_moves_towards_the_random_teacher(mlp_model, small_split):
    m = StochasticTeacher(forget_epochs=5, forget_lr=1e-2, epochs=0)
    out = m.unlearn(mlp_model, forget=small_split.forget, retain=small_split.retain,
                    scenario="class", seed=2)
    with torch.random.fork_rng():
        torch.manual_seed(2)
        teacher = fresh_copy(mlp_model)  # the teacher the method draws under its seed
    x = small_split.forget.x
    with torch.no_grad():
        t = teacher(x)
        assert kl_to(t, out(x)) < 0.5 * kl_to(t, mlp_model(x))
    assert uk.accuracy(out, small_split.forget) < uk.accuracy(mlp_model, small_split.forget)


def test_teacher_with_no_epochs_is_identity(mlp_model, small_split):
    out = StochasticTeacher(forget_epochs=0, epochs=0).unlearn(
        mlp_model, forget=small_split.forget, retain=small_split.retain, scenario="class")
    assert _same(out, mlp_model)


# ------------------------------------------------------------------------------- retrain
@pytest.fixture
def retrain_recipes(monkeypatch):
    import unlearnkit.methods.retrain as retrain_module

    seen: list[uk.Recipe] = []
    real = retrain_module.fit

    def spy(model, data, recipe, **kwargs):
        seen.append(recipe)
        return real(model, data, recipe, **kwargs)

    monkeypatch.setattr(retrain_module, "fit", spy)
    return seen


def test_retrain_uses_the_recorded_recipe(mlp_model, small_split, retrain_recipes):
    recorded = uk.Recipe.from_dict(uk.get_info(mlp_model).recipe)
    assert recorded.epochs == 4  # the conftest's tiny recipe
    Retrain().unlearn(mlp_model, retain=small_split.retain)
    Retrain(epochs=1, lr=0.01).unlearn(mlp_model, retain=small_split.retain)
    assert retrain_recipes == [recorded, recorded.replace(epochs=1, lr=0.01)]


def test_retrain_is_training_from_scratch(mlp_model, small_split):
    out = Retrain(epochs=2).unlearn(mlp_model, retain=small_split.retain, seed=3)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        by_hand = fresh_copy(mlp_model)
    recipe = uk.Recipe.from_dict(uk.get_info(mlp_model).recipe).replace(epochs=2)
    uk.fit(by_hand, small_split.retain, recipe, seed=3)
    assert _same(out, by_hand)
    # the original's weights play no part: another original of the same architecture and
    # recipe gives the same retrained model
    other = fresh_copy(mlp_model)
    assert not _same(other, mlp_model)
    again = Retrain(epochs=2).unlearn(other, retain=small_split.retain, seed=3)
    assert _same(again, out)


def test_retrain_forgets_a_class_completely(mlp_model, digits, class_split):
    assert uk.accuracy(mlp_model, class_split.forget) > 0.8
    retrained = uk.retrain(mlp_model, class_split)
    scores = uk.evaluate(retrained, class_split)
    assert scores["forget_acc"] <= 0.01
    assert scores["test_forget_acc"] <= 0.01
    assert scores["retain_acc"] > 0.8 and scores["test_retain_acc"] > 0.8


def test_retrain_without_recorded_recipe_warns(small_split, retrain_recipes):
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    untrained = uk.build_model("mlp", num_classes=10, input_shape=(1, 8, 8), hidden=(8,))
    for model in (plain, untrained):
        with pytest.warns(UserWarning, match="records no training recipe"):
            out = Retrain(epochs=1).unlearn(model, retain=small_split.retain)
        assert isinstance(out, type(model))
    assert retrain_recipes == [uk.Recipe(epochs=1)] * 2


# --------------------------------------------------------------------- declared scenarios
@dataclass(frozen=True, kw_only=True)
class _ClassOnly(uk.UnlearningMethod):
    """A method (not registered) for class unlearning only. Paper: none."""

    name = "class-only-probe"
    paper = "none"
    summary = "identity"
    scenarios = ("class",)

    def _unlearn(self, model: nn.Module, request: Request) -> nn.Module:
        return model


@dataclass(frozen=True, kw_only=True)
class _ClassOnlyWarn(_ClassOnly):
    """Paper: none."""

    other_scenarios = "warn"


def test_scenario_refuse_and_warn(mlp_model, small_split):
    assert "class-only-probe" not in uk.METHODS
    pattern = r"'class-only-probe'.*designed for class.*random"
    with pytest.raises(InvalidParameterError, match=pattern):
        _ClassOnly().unlearn(mlp_model, forget=small_split.forget, retain=small_split.retain,
                             scenario="random")
    with pytest.warns(UserWarning, match="no guarantee for random"):
        out = _ClassOnlyWarn().unlearn(mlp_model, forget=small_split.forget,
                                       retain=small_split.retain, scenario="random")
    assert _same(out, mlp_model) and out is not mlp_model
    assert StochasticTeacher.scenarios == ("class",) and StochasticTeacher.other_scenarios == "warn"
