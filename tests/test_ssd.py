"""Selective Synaptic Dampening: the rule by hand, the method against the rule, the cache."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import unlearnkit as uk
import unlearnkit.methods.ssd as ssd_module
from unlearnkit._cache import cache_root
from unlearnkit.importance import importances
from unlearnkit.methods.ssd import SSD, dampen, dampening_factors


def test_selection_and_dampening_by_hand():
    ref = {"w": torch.tensor([1.0, 1.0, 0.0, 2.0, 0.0]), "b": torch.tensor([0.5])}
    forget = {"w": torch.tensor([20.0, 5.0, 3.0, 10.0, 0.0]), "b": torch.tensor([10.0])}
    f = dampening_factors(ref, forget, alpha=10.0, lambd=1.0)
    # 20 > 10 -> 1/20; 5 < 10 -> kept; 3 > 0 -> 0/3; 10 < 20 -> kept; 0 > 0 false -> kept
    torch.testing.assert_close(f["w"], torch.tensor([0.05, 1.0, 0.0, 1.0, 1.0]))
    torch.testing.assert_close(f["b"], torch.tensor([0.05]))  # 10 > 5 -> 0.5 / 10
    # lambd large: selected, but the factor is capped at 1 (never amplifies)
    f = dampening_factors(ref, forget, alpha=10.0, lambd=30.0)
    torch.testing.assert_close(f["w"], torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0]))
    # alpha 1: 5 > 1 selected as well
    f = dampening_factors(ref, forget, alpha=1.0, lambd=1.0)
    torch.testing.assert_close(f["w"], torch.tensor([0.05, 0.2, 0.0, 0.2, 1.0]))


def test_dampen_changes_only_selected_entries_bit_for_bit():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    factors = {"weight": torch.tensor([[1.0, 0.5, 1.0], [0.0, 1.0, 1.0]]),
               "bias": torch.ones(2)}
    changed = dampen(model, factors)
    assert changed == {"weight": 2, "bias": 0}
    w = model.weight.detach()
    assert w[0, 1] == before["weight"][0, 1] * 0.5
    assert w[1, 0] == 0
    keep = factors["weight"] == 1
    assert torch.equal(w[keep], before["weight"][keep])
    assert torch.equal(model.bias.detach(), before["bias"])


def test_mismatched_importances_are_refused():
    with pytest.raises(uk.InvalidParameterError, match="same parameters"):
        dampening_factors({"a": torch.ones(1)}, {"b": torch.ones(1)}, alpha=1, lambd=1)
    with pytest.raises(uk.InvalidParameterError, match="shapes"):
        dampening_factors({"a": torch.ones(2)}, {"a": torch.ones(3)}, alpha=1, lambd=1)


def _expected(model, ref, forget, alpha, lambd):
    out = copy.deepcopy(model).cpu()
    dampen(out, dampening_factors(ref, forget, alpha=alpha, lambd=lambd))
    return out


def test_method_applies_the_rule_to_the_fisher(mlp_model, class_split):
    forget = importances(mlp_model, class_split.forget, device="cpu")
    retain = importances(mlp_model, class_split.retain, device="cpu")
    got = uk.unlearn(mlp_model, class_split, "ssd", reference="retain", device="cpu")
    want = _expected(mlp_model, retain, forget, 10.0, 1.0)
    n_changed = 0
    for (name, p), q, o in zip(got.named_parameters(), want.parameters(),
                               mlp_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, msg=name)
        same = p == o.cpu()
        n_changed += int((~same).sum())
    assert n_changed > 0
    info = uk.get_info(got)
    assert info.method["name"] == "ssd" and info.method["params"]["alpha"] == 10.0


def test_training_set_reference_is_the_fisher_of_forget_plus_retain(mlp_model, class_split):
    full = uk.ArrayDataset(torch.cat([class_split.retain.x, class_split.forget.x]),
                           torch.cat([class_split.retain.y, class_split.forget.y]))
    i_d = importances(mlp_model, full, device="cpu")
    i_f = importances(mlp_model, class_split.forget, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # alpha 2 selects; 10 would not (see below)
        got = uk.unlearn(mlp_model, class_split, "ssd", alpha=2.0, reference="train",
                         device="cpu")
    want = _expected(mlp_model, i_d, i_f, 2.0, 1.0)
    for p, q in zip(got.parameters(), want.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_default_reference_is_the_retain_set(mlp_model, class_split):
    """The founding report's Algorithm 1: I_f > alpha * I_r, with alpha 10 for a class."""
    got = uk.unlearn(mlp_model, class_split, "ssd", device="cpu")
    want = uk.unlearn(mlp_model, class_split, "ssd", alpha=10.0, reference="retain",
                      device="cpu")  # checked against the formula above
    assert not all(torch.equal(p, q) for p, q in zip(got.parameters(), mlp_model.parameters(),
                                                      strict=True))
    assert all(torch.equal(p, q) for p, q in zip(got.parameters(), want.parameters(),
                                                  strict=True))
    assert uk.get_info(got).method["params"]["alpha"] == 10.0
    assert uk.get_info(got).method["params"]["reference"] == "retain"


def test_alpha_defaults_by_scenario_and_a_given_alpha_wins(mlp_model, random_split):
    assert uk.get_method("ssd").alpha is None
    assert uk.get_method("ssd").for_scenario("class").alpha == 10.0
    assert uk.get_method("ssd").for_scenario("random").alpha == 0.5
    out = uk.unlearn(mlp_model, random_split, "ssd", device="cpu")
    assert uk.get_info(out).method["params"]["alpha"] == 0.5
    out = uk.unlearn(mlp_model, random_split, "ssd", alpha=3.0, device="cpu")
    assert uk.get_info(out).method["params"]["alpha"] == 3.0
    hp = {h.name: h for h in SSD.hyperparameters()}["alpha"]
    assert hp.default is None and hp.per_scenario == {"class": 10.0, "random": 0.5}


def test_nothing_selected_warns_and_explains(mlp_model, class_split):
    # class 3 is 146 of 1437 samples: I_D >= 0.102 * I_f, so alpha = 10 can select nothing
    with pytest.warns(UserWarning, match=r"selected no parameter.*alpha < 9\.84"):
        out = uk.unlearn(mlp_model, class_split, "ssd", reference="train")
    for p, q in zip(out.parameters(), mlp_model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_reference_importances_are_cached(mlp_model, class_split, monkeypatch):
    calls = []
    real = ssd_module.importance_sums
    monkeypatch.setattr(ssd_module, "importance_sums",
                        lambda model, data, **k: calls.append(len(data)) or real(model, data, **k))
    first = uk.unlearn(mlp_model, class_split, "ssd", alpha=2.0, device="cpu")
    assert calls == [len(class_split.forget), len(class_split.retain)]
    calls.clear()
    second = uk.unlearn(mlp_model, class_split, "ssd", alpha=2.0, device="cpu")
    assert calls == [len(class_split.forget)]  # I_D read from the cache
    for p, q in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("reference", ["train", "retain"])
def test_every_implementation_gives_the_same_model(mlp_model, random_split, monkeypatch,
                                                   reference):
    asked = []
    real = ssd_module.importance_sums
    monkeypatch.setattr(ssd_module, "importance_sums",
                        lambda model, data, **k: asked.append(k["implementation"])
                        or real(model, data, **k))
    out = {}
    for impl in ("hooks", "vmap", "loop"):
        for f in (cache_root() / "importance").glob("*.safetensors"):
            f.unlink()  # I_D computed by this implementation, not read from the cache
        out[impl] = uk.unlearn(mlp_model, random_split, "ssd", alpha=2.0, reference=reference,
                               implementation=impl, device="cpu")
        assert asked == [impl, impl]
        asked.clear()
    changed = [not torch.equal(p, q)
               for p, q in zip(out["loop"].parameters(), mlp_model.parameters(), strict=True)]
    assert any(changed)
    for impl in ("hooks", "vmap"):
        for p, q in zip(out[impl].parameters(), out["loop"].parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


def test_public_code_variant_uses_retain_then_forget_batches(mlp_model, random_split):
    full = uk.ArrayDataset(torch.cat([random_split.retain.x, random_split.forget.x]),
                           torch.cat([random_split.retain.y, random_split.forget.y]))
    kw = {"mode": "batch-squared-grad", "batch_size": 64}
    kw["device"] = "cpu"
    i_d, i_f = importances(mlp_model, full, **kw), importances(mlp_model, random_split.forget, **kw)
    got = uk.unlearn(mlp_model, random_split, "ssd", importance="batch-squared-grad",
                     alpha=5.0, reference="train", device="cpu")
    want = _expected(mlp_model, i_d, i_f, 5.0, 1.0)
    for p, q in zip(got.parameters(), want.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_user_datasets_are_not_cached_but_work(mlp_model, class_split):
    from torch.utils.data import TensorDataset

    split = uk.Split.from_data(
        forget=TensorDataset(class_split.forget.x, class_split.forget.y),
        retain=TensorDataset(class_split.retain.x, class_split.retain.y),
        forget_classes=[3])
    got = uk.unlearn(mlp_model, split, "ssd", alpha=2.0, device="cpu")
    assert not list((cache_root() / "importance").glob("*.safetensors"))
    want = uk.unlearn(mlp_model, class_split, "ssd", alpha=2.0, device="cpu")
    for p, q in zip(got.parameters(), want.parameters(), strict=True):
        torch.testing.assert_close(p, q)


@pytest.mark.parametrize(("params", "match"), [
    ({"alpha": -1.0}, "'alpha' parameter of 'ssd' must be a float in the range"),
    ({"lambd": float("nan")}, "'lambd'"),
    ({"importance": "ssd"}, r"must be one of \['fisher', 'batch-squared-grad'\]"),
    ({"reference": "test"}, "'reference'"),
    ({"batch_size": 0}, "'batch_size'"),
    ({"implementation": "magic"},
     r"'implementation' parameter of 'ssd' must be one of \['auto', 'hooks', 'vmap', 'loop'\]"),
])
def test_bad_hyperparameters_are_explained(params, match):
    with pytest.raises(uk.InvalidParameterError, match=match):
        SSD(**params)


def test_registered_with_paper_and_defaults():
    m = uk.get_method("ssd")
    assert isinstance(m, SSD)
    d = SSD.describe()
    assert "Selective Synaptic Dampening" in d["paper"]
    assert m.params() == {"alpha": None, "lambd": 1.0, "importance": "fisher",
                          "batch_size": 64, "reference": "retain", "implementation": "auto"}
    assert np.isclose(SSD(alpha=5).alpha, 5)
