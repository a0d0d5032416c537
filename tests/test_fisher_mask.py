"""Fisher masking: the top-R rule on a known case, exact counts, the method against the rule."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import unlearnkit as uk
from unlearnkit.importance import importances
from unlearnkit.methods.fisher_mask import FisherMask, apply_mask, fisher_mask

FORGET = {"a": torch.tensor([5.0, 1.0, 3.0]), "b": torch.tensor([[2.0, 2.0], [0.0, 9.0]])}
RETAIN = {"a": torch.tensor([1.0, 1.0, 1.0]), "b": torch.tensor([[0.0, 0.0], [0.0, 1.0]])}
# scores: a = [4, 0, 2], b = [[2, 2], [0, 8]]; flat order a0 a1 a2 b00 b01 b10 b11


@pytest.mark.parametrize(("fraction", "a", "b"), [
    (0.0, [0, 0, 0], [[0, 0], [0, 0]]),
    (1 / 7, [0, 0, 0], [[0, 0], [0, 1]]),  # 8
    (2 / 7, [1, 0, 0], [[0, 0], [0, 1]]),  # 8, 4
    (3 / 7, [1, 0, 1], [[0, 0], [0, 1]]),  # three 2s tie: a2 comes first
    (4 / 7, [1, 0, 1], [[1, 0], [0, 1]]),  # then b00
    (5 / 7, [1, 0, 1], [[1, 1], [0, 1]]),
    (6 / 7, [1, 1, 1], [[1, 1], [0, 1]]),  # two 0s tie: a1 before b10
    (6 / 7 - 0.01, [1, 1, 1], [[1, 1], [0, 1]]),  # round(5.93) = 6
    (1.0, [1, 1, 1], [[1, 1], [1, 1]]),
])
def test_top_fraction_on_a_known_case(fraction, a, b):
    mask = fisher_mask(FORGET, RETAIN, fraction=fraction, ranking="global")
    assert torch.equal(mask["a"], torch.tensor(a, dtype=torch.bool))
    assert torch.equal(mask["b"], torch.tensor(b, dtype=torch.bool))
    assert int(mask["a"].sum() + mask["b"].sum()) == round(fraction * 7)


def test_exact_count_and_deterministic_ties():
    zeros = {"x": torch.zeros(10, 10), "y": torch.zeros(7)}
    mask = fisher_mask(zeros, zeros, fraction=0.25)
    assert int(mask["x"].sum()) + int(mask["y"].sum()) == round(0.25 * 107)
    assert mask["x"].reshape(-1)[:27].all() and not mask["x"].reshape(-1)[27:].any()
    gen = torch.Generator().manual_seed(0)
    f = {"x": torch.randint(0, 3, (50, 20), generator=gen).float(), "y": torch.zeros(3)}
    r = {"x": torch.zeros(50, 20), "y": torch.zeros(3)}
    for fraction in (0.01, 0.1, 0.333, 0.5):
        m1 = fisher_mask(f, r, fraction=fraction)
        m2 = fisher_mask(f, r, fraction=fraction)
        assert sum(int(v.sum()) for v in m1.values()) == round(fraction * 1003)
        assert all(torch.equal(m1[k], m2[k]) for k in m1)


def test_capped_ranking_cannot_wipe_out_a_small_tensor():
    # a 4-entry tensor whose entries all outscore a 100-entry tensor's
    forget = {"big": torch.arange(100, 0, -1).float() / 100, "small": torch.full((4,), 10.0)}
    retain = {k: torch.zeros_like(v) for k, v in forget.items()}
    wiped = fisher_mask(forget, retain, fraction=0.04, ranking="global")  # k = round(4.16) = 4
    assert wiped["small"].all() and not wiped["big"].any()  # the literal rule empties "small"
    capped = fisher_mask(forget, retain, fraction=0.04)  # cap 5: ceil(5 * 0.04 * 4) = 1
    assert torch.equal(capped["small"], torch.tensor([True, False, False, False]))
    assert torch.equal(capped["big"].nonzero().flatten(), torch.tensor([0, 1, 2]))
    gen = torch.Generator().manual_seed(0)
    f = {"x": torch.rand(40, 30, generator=gen), "y": torch.rand(7, generator=gen) + 1,
         "z": torch.rand(300, generator=gen) * 3}
    r = {k: torch.zeros_like(v) for k, v in f.items()}
    for fraction, cap in [(0.01, 5.0), (0.1, 2.0), (0.3, 1.0), (0.05, 1.5)]:
        m = fisher_mask(f, r, fraction=fraction, cap=cap)
        assert sum(int(v.sum()) for v in m.values()) == round(fraction * 1507)
        for k, v in m.items():
            assert int(v.sum()) <= math.ceil(cap * fraction * v.numel()), (k, fraction, cap)


def test_bad_input_is_refused():
    with pytest.raises(uk.InvalidParameterError, match="'fraction' parameter must be a float"):
        fisher_mask(FORGET, RETAIN, fraction=1.5)
    with pytest.raises(uk.InvalidParameterError, match="'ranking' parameter must be one of"):
        fisher_mask(FORGET, RETAIN, fraction=0.1, ranking="per-layer")
    with pytest.raises(uk.InvalidParameterError, match="'cap' parameter must be"):
        fisher_mask(FORGET, RETAIN, fraction=0.1, cap=0.5)
    with pytest.raises(uk.InvalidParameterError, match="same parameters"):
        fisher_mask(FORGET, {"a": RETAIN["a"]}, fraction=0.1)
    with pytest.raises(uk.InvalidParameterError, match="'fraction' parameter of 'fisher-mask'"):
        FisherMask(fraction=-0.1)


def test_method_zeroes_the_mask_of_the_fisher(cnn_model, class_split):
    f_forget = importances(cnn_model, class_split.forget, device="cpu")
    f_retain = importances(cnn_model, class_split.retain, device="cpu")
    mask = fisher_mask(f_forget, f_retain, fraction=0.01)  # the default: capped
    total = sum(p.numel() for p in cnn_model.parameters())
    assert sum(int(m.sum()) for m in mask.values()) == round(0.01 * total)
    out = uk.unlearn(cnn_model, class_split, "fisher-mask", epochs=0, device="cpu")
    original = copy.deepcopy(cnn_model).cpu()
    want = copy.deepcopy(original)
    assert apply_mask(want, mask) == round(0.01 * total)
    for (name, p), q, o in zip(out.named_parameters(), want.parameters(),
                               original.parameters(), strict=True):
        assert torch.equal(p, q), name
        assert (p[mask[name]] == 0).all()
        assert torch.equal(p[~mask[name]], o[~mask[name]])
    r = uk.evaluate(out, class_split)
    assert r["forget_acc"] < 0.2  # the mask removes class 3 without any fine-tuning


def test_defaults_fine_tune_and_random_requests_warn(cnn_model, random_split):
    m = uk.get_method("fisher-mask")
    assert m.params()["fraction"] is None and m.epochs == 5 and m.lr == 1e-5
    assert m.for_scenario("class").fraction == 0.01  # the founding report's R per scenario
    assert m.for_scenario("random").fraction == 0.4
    assert m.ranking == "capped" and m.cap == 5.0
    assert "Fisher Masking" in FisherMask.paper and FisherMask.scenarios == ("class",)
    with pytest.warns(UserWarning, match="designed for class unlearning"):
        uk.unlearn(cnn_model, random_split, "fisher-mask", epochs=1, fraction=0.001,
                   device="cpu")
