"""Model-level evaluation: which metrics each input enables, the wrappers against the pure
functions, and the direction convention of every membership-inference attack."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import unlearnkit as uk
from unlearnkit import evaluation as E
from unlearnkit import metrics as M
from unlearnkit.pools import retrained_pool, unlearned_pool

MIAS = ("mia_loss_cv", "mia_entropy", "mia_confidence")
DIVERGENCES = ("js_divergence", "activation_distance", "avg_gap")
POOL_KEYS = ("forgetting_quality", "competition_score", "mia_lira", "n_models")


@pytest.fixture(scope="module")
def retrained_random(mlp_model, random_split) -> nn.Module:
    return uk.retrain(mlp_model, random_split, seed=0)


@pytest.fixture(scope="module")
def retrained_class(mlp_model, class_split) -> nn.Module:
    return uk.retrain(mlp_model, class_split, seed=0)


# ---------------------------------------------------------------------- what each input enables
def test_model_alone_gives_accuracies_mias_and_zrf(mlp_model, random_split):
    out = uk.evaluate(mlp_model, random_split)
    assert set(MIAS) <= set(out) and "zrf" in out
    assert not set(DIVERGENCES) & set(out) and "anamnesis" not in out
    assert not set(POOL_KEYS) & set(out)
    assert out["seconds"] is None  # an original records no unlearning step
    for key in MIAS:
        assert 0.0 <= out[key] <= 1.0
    assert 1 - math.log(2) <= out["zrf"] <= 1  # JS is at most ln 2


def test_retrained_enables_divergences_original_enables_anamnesis(
        mlp_model, random_split, retrained_random):
    with_ref = uk.evaluate(mlp_model, random_split, retrained=retrained_random)
    assert set(DIVERGENCES) <= set(with_ref) and "anamnesis" not in with_ref
    full = uk.evaluate(mlp_model, random_split, retrained=retrained_random, original=mlp_model)
    assert full["anamnesis"] > 0
    skipped = uk.evaluate(mlp_model, random_split, retrained=retrained_random,
                          original=mlp_model, relearn=False)
    assert "anamnesis" not in skipped
    no_mia = uk.evaluate(mlp_model, random_split, mia=False)
    assert not set(MIAS) & set(no_mia)


def test_pools_enable_the_competition_figures(mlp_model, digits):
    split = uk.split_random(digits, count=30, seed=1)
    pools = (unlearned_pool(mlp_model, split, "finetune", 3, epochs=1),
             retrained_pool(mlp_model, split, 3))
    out = uk.evaluate(mlp_model, split, pools=pools)
    assert set(POOL_KEYS) <= set(out) and out["n_models"] == 3
    assert out == {**out, **E.pool_metrics(*pools)}


def test_reference_against_itself_is_at_distance_zero(random_split, retrained_random):
    out = uk.evaluate(retrained_random, random_split, retrained=retrained_random)
    assert out["js_divergence"] == pytest.approx(0.0, abs=1e-12)
    assert out["activation_distance"] == pytest.approx(0.0, abs=1e-12)
    assert out["avg_gap"] == 0.0


def test_avg_gap_is_the_mean_gap_of_the_two_reports(mlp_model, random_split, retrained_random):
    out = uk.evaluate(mlp_model, random_split, retrained=retrained_random)
    ref = uk.evaluate(retrained_random, random_split)
    keys = ("forget_acc", "retain_acc", "test_acc", "mia_confidence")
    assert out["avg_gap"] == pytest.approx(np.mean([abs(out[k] - ref[k]) for k in keys]))


def test_small_forget_set_has_no_mia(mlp_model, digits):
    split = uk.split_random(digits, count=E.MIN_MIA_SAMPLES - 1, seed=0)
    out = uk.evaluate(mlp_model, split)
    assert not set(MIAS) & set(out)
    assert "forget_acc" in out


def test_nan_reference_is_refused(mlp_model, random_split, retrained_random):
    import copy

    bad = copy.deepcopy(retrained_random)
    with torch.no_grad():
        next(bad.parameters()).fill_(float("nan"))
    with pytest.raises(uk.ModelError, match="retrained"):
        uk.evaluate(mlp_model, random_split, retrained=bad)


# ---------------------------------------------------------------------- wrappers = pure functions
def test_wrappers_equal_the_pure_functions(mlp_model, random_split, retrained_random):
    f_logits, f_labels = uk.predict(mlp_model, random_split.forget)
    r_logits, r_labels = uk.predict(mlp_model, random_split.retain)
    t_logits, t_labels = uk.predict(mlp_model, random_split.test)
    ref_f, _ = uk.predict(retrained_random, random_split.forget)

    def true_prob(z, y):
        return torch.softmax(z.double(), 1)[torch.arange(len(y)), y]

    expected = {
        "mia_loss_cv": M.mia_loss_cv(M.per_sample_loss(f_logits, f_labels),
                                     M.per_sample_loss(t_logits, t_labels)),
        "mia_entropy": M.mia_entropy(torch.softmax(r_logits.double(), 1),
                                     torch.softmax(t_logits.double(), 1),
                                     torch.softmax(f_logits.double(), 1)),
        "mia_confidence": M.mia_confidence(true_prob(r_logits, r_labels),
                                           true_prob(t_logits, t_labels),
                                           true_prob(f_logits, f_labels)),
        "js_divergence": M.js_divergence(f_logits, ref_f),
        "activation_distance": M.activation_distance(f_logits, ref_f),
    }
    assert E.mia_loss_cv(mlp_model, random_split) == expected["mia_loss_cv"]
    assert E.mia_entropy(mlp_model, random_split) == expected["mia_entropy"]
    assert E.mia_confidence(mlp_model, random_split) == expected["mia_confidence"]
    assert E.js_divergence(mlp_model, retrained_random, random_split) == pytest.approx(
        expected["js_divergence"], rel=1e-12)
    assert E.activation_distance(mlp_model, retrained_random, random_split) == pytest.approx(
        expected["activation_distance"], rel=1e-12)
    out = uk.evaluate(mlp_model, random_split, retrained=retrained_random)
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, rel=1e-12), key


def test_zrf_compares_with_a_seeded_random_model(mlp_model, random_split):
    rand = E.random_model(mlp_model, seed=3)
    assert not torch.equal(next(rand.parameters()), next(mlp_model.parameters()))
    expected = M.zrf(uk.predict(mlp_model, random_split.forget)[0],
                     uk.predict(rand, random_split.forget)[0])
    assert E.zrf(mlp_model, random_split, seed=3) == pytest.approx(expected, rel=1e-12)
    assert E.zrf(mlp_model, random_split, seed=3) == E.zrf(mlp_model, random_split, seed=3)
    compat = M.zrf_compat(uk.predict(mlp_model, random_split.forget)[0],
                          uk.predict(rand, random_split.forget)[0])
    assert E.zrf(mlp_model, random_split, seed=3, compat=True) == pytest.approx(compat)


def test_class_loss_attack_compares_with_the_forgotten_classes_test_samples(
        mlp_model, class_split):
    f_logits, f_labels = uk.predict(mlp_model, class_split.forget)
    tf_logits, tf_labels = uk.predict(mlp_model, class_split.test_forget)
    expected = M.mia_loss_cv(M.per_sample_loss(f_logits, f_labels),
                             M.per_sample_loss(tf_logits, tf_labels))
    assert E.mia_loss_cv(mlp_model, class_split) == expected


# ---------------------------------------------------------------------- direction convention
@pytest.fixture(scope="module")
def memorising_pair(digits):
    """An original that memorises a small training set, and its retrained model.

    300 training samples, 100 of them forgotten, an MLP trained to zero training error:
    the original's losses on D_f are far below its test losses; the retrained model never
    saw D_f, so D_f looks like test data to it.
    """
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(digits.train), generator=g)[:300]
    train = digits.train.subset(idx)
    forget, retain = train.subset(range(100)), train.subset(range(100, 300))
    # every test sample a non-member of the attacks (no validation half held out)
    split = uk.Split.from_data(forget=forget, retain=retain, test=digits.test, validation=0)
    recipe = uk.Recipe(epochs=60, lr=0.05, batch_size=32)

    def trained(data, seed):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = uk.build_model("mlp", num_classes=10, input_shape=(1, 8, 8), hidden=(64,))
        uk.fit(model, data, recipe, seed=seed)
        return model

    return trained(train, 0), trained(retain, 1), split


def test_every_mia_scores_the_original_above_its_retrained_model(memorising_pair):
    original, retrained, split = memorising_pair
    assert uk.accuracy(original, split.forget) == 1.0  # it memorised D_f
    o, r = uk.evaluate(original, split), uk.evaluate(retrained, split)
    for key in MIAS:
        assert o[key] > r[key], (key, o[key], r[key])


def test_class_mias_score_the_original_above_its_retrained_model(
        mlp_model, class_split, retrained_class):
    o = uk.evaluate(mlp_model, class_split)
    r = uk.evaluate(retrained_class, class_split)
    for key in ("mia_entropy", "mia_confidence"):
        assert o[key] > r[key] + 0.3, (key, o[key], r[key])  # a whole class: a large margin


def test_no_test_set_gives_f_but_no_score(mlp_model, digits):
    import dataclasses

    split = dataclasses.replace(uk.split_random(digits, count=30, seed=1), test=None)
    out = E.pool_metrics(unlearned_pool(mlp_model, split, "finetune", 3, epochs=1),
                         retrained_pool(mlp_model, split, 3))
    assert 0.0 <= out["forgetting_quality"] <= 1.0
    assert out["competition_score"] is None and out["test_acc_ratio"] is None


def test_no_unlearning_two_ways(mlp_model, digits):
    from unlearnkit.pools import identity_pool, original_pool

    split = uk.split_random(digits, count=30, seed=3)
    same = identity_pool(mlp_model, split, 4)
    logits, _ = uk.predict(mlp_model, split.forget)
    assert all(np.array_equal(row, logits.numpy()) for row in same.forget_logits)
    ident = uk.score(mlp_model, split, "original", n_models=4)
    assert ident["forgetting_quality"] == 0.0  # no spread: every epsilon is the cap
    assert ident["mia_lira"] > 0.9  # and a pool without spread is told apart
    seeds = uk.score(mlp_model, split, "original-seeds", n_models=4)
    assert seeds["method"] == "original-seeds"
    assert seeds["forgetting_quality"] == E.pool_metrics(
        original_pool(mlp_model, split, 4), retrained_pool(mlp_model, split, 4)
    )["forgetting_quality"]
