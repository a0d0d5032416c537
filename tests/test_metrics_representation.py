"""Tests of the representation metrics (unlearnkit.metrics.representation) and their
model-level wrappers (penultimate features, CKA, linear probe) in unlearnkit.evaluation."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import unlearnkit as uk
from unlearnkit import evaluation as E
from unlearnkit.metrics import linear_cka, probe_accuracy


@pytest.fixture
def feats():
    rng = np.random.default_rng(0)
    return rng.normal(size=(60, 5)), rng.normal(size=(60, 7))


# ---------------------------------------------------------------------- linear CKA
def test_cka_matches_a_hand_computed_value():
    x = np.array([[1.0, 2.0], [3.0, 1.0], [0.0, 4.0], [2.0, 2.0]])
    y = np.array([[1.0, 0.0], [2.0, 1.0], [0.0, 3.0], [5.0, 1.0]])
    xc, yc = x - x.mean(0), y - y.mean(0)
    num = np.sum((yc.T @ xc) ** 2)
    den = np.sqrt(np.sum((xc.T @ xc) ** 2)) * np.sqrt(np.sum((yc.T @ yc) ** 2))
    expected = num / den
    assert 0.0 < expected < 1.0
    assert linear_cka(x, y) == pytest.approx(expected, rel=1e-12)
    # the sample-space (n x n Gram) form gives the same value: HSIC(K, L) / sqrt(...)
    k, l_ = xc @ xc.T, yc @ yc.T
    assert linear_cka(x, y) == pytest.approx(
        np.sum(k * l_) / np.sqrt(np.sum(k * k) * np.sum(l_ * l_)), rel=1e-12)


def test_cka_of_a_matrix_with_itself_is_one(feats):
    x, y = feats
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(torch.tensor(x, dtype=torch.float32), x) == pytest.approx(1.0, abs=1e-6)
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x), rel=1e-12)
    assert 0.0 <= linear_cka(x, y) < 0.5  # independent noise: far from 1


def test_cka_invariances(feats):
    x, y = feats
    base = linear_cka(x, y)
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(5, 5)))
    assert linear_cka(x @ q, y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(x * 37.5, y / 1e3) == pytest.approx(base, rel=1e-10)
    assert linear_cka(x + 4.0, y) == pytest.approx(base, rel=1e-10)  # centring
    # a non-isotropic scaling of the columns changes it
    scaled = x * np.array([10.0, 1.0, 0.1, 1.0, 1.0])
    assert abs(linear_cka(scaled, y) - base) > 1e-3
    assert abs(linear_cka(scaled, x) - 1.0) > 1e-3


def test_cka_degenerate_and_bad_shapes(feats):
    x, _ = feats
    assert math.isnan(linear_cka(np.ones((60, 3)), x))
    assert math.isnan(linear_cka(x, np.full((60, 2), 5.0)))
    assert math.isnan(linear_cka(np.zeros((0, 3)), np.zeros((0, 2))))
    with pytest.raises(ValueError, match="different samples"):
        linear_cka(x, x[:10])
    with pytest.raises(ValueError, match="expected"):
        linear_cka(x[:, 0], x[:, 0])


# ---------------------------------------------------------------------- linear probe
def test_probe_recognises_separable_classes():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 100)
    centres = rng.normal(scale=5.0, size=(4, 8))
    f = centres[y] + rng.normal(size=(400, 8))
    assert probe_accuracy(f, y, [2]) == pytest.approx(1.0, abs=0.02)
    assert probe_accuracy(torch.tensor(f), torch.tensor(y), [0, 1]) >= 0.98


def test_probe_on_noise_is_near_chance():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 300)
    f = rng.normal(size=(1200, 10))
    acc = probe_accuracy(f, y, range(4))
    assert abs(acc - 0.25) < 0.08


def test_probe_subsamples_and_is_seeded():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), [400, 400, 30])
    f = rng.normal(size=(830, 6)) + y[:, None]
    a = probe_accuracy(f, y, [2], max_samples=200, seed=1)
    assert a == probe_accuracy(f, y, [2], max_samples=200, seed=1)
    assert 0.0 <= a <= 1.0
    assert math.isnan(probe_accuracy(f, y, [7]))  # no sample of the class
    with pytest.raises(ValueError, match="two labels"):
        probe_accuracy(f[:400], y[:400], [0])
    with pytest.raises(ValueError, match="folds"):
        probe_accuracy(f, y, [0], folds=1)


# ---------------------------------------------------------------------- model level
def test_penultimate_features_are_the_hidden_activations():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    x = torch.randn(20, 4)
    data = uk.ArrayDataset(x, torch.randint(0, 3, (20,)))
    feats = E.penultimate_features(model, data)
    with torch.no_grad():
        hidden = torch.relu(x @ model[0].weight.T + model[0].bias)
    assert feats.shape == (20, 6) and feats.dtype == np.float64
    np.testing.assert_allclose(feats, hidden.double().numpy(), rtol=1e-6, atol=1e-7)
    # a named layer gives that module's output
    np.testing.assert_allclose(E.penultimate_features(model, data, layer="0"),
                               (x @ model[0].weight.T + model[0].bias).detach().double(),
                               rtol=1e-6, atol=1e-7)
    with pytest.raises(uk.InvalidParameterError, match="no module named"):
        E.penultimate_features(model, data, layer="head")


def test_evaluate_reports_representation_metrics(mlp_model, class_split, random_split):
    out = uk.evaluate(mlp_model, class_split, retrained=mlp_model, original=mlp_model,
                      relearn=False, mia=False)
    assert 0.0 <= out["probe_forget_acc"] <= 1.0
    assert out["cka_retrained"] == pytest.approx(1.0, abs=1e-9)
    assert out["cka_original"] == pytest.approx(1.0, abs=1e-9)
    assert out["probe_forget_acc"] == E.probe_forget_acc(mlp_model, class_split)
    alone = uk.evaluate(mlp_model, class_split, mia=False)
    assert "probe_forget_acc" in alone
    assert not {"cka_retrained", "cka_original"} & set(alone)
    only_original = uk.evaluate(mlp_model, class_split, original=mlp_model, mia=False)
    assert "cka_original" in only_original and "cka_retrained" not in only_original
    rand = uk.evaluate(mlp_model, random_split, mia=False)
    assert "probe_forget_acc" not in rand
    with pytest.raises(uk.InvalidParameterError, match="class-unlearning"):
        E.probe_forget_acc(mlp_model, random_split)


def test_cka_against_a_different_model_is_below_one(mlp_model, class_split):
    other = E.random_model(mlp_model, seed=3)
    value = E.cka_retrained(mlp_model, other, class_split)
    assert 0.0 <= value < 0.99
    assert value == pytest.approx(E.cka_original(mlp_model, other, class_split), rel=1e-12)


def test_probe_on_tiny_data_uses_fewer_folds_or_gives_nan():
    """Stratified folds need a label with as many samples as folds: fewer folds on tiny data,
    nan when no label has two samples (sklearn would raise)."""
    from unlearnkit.metrics import probe_accuracy

    feats = np.array([[0.0], [0.1], [5.0], [5.1], [10.0], [10.1]])
    acc = probe_accuracy(feats, np.array([0, 0, 1, 1, 2, 2]), [1], folds=5)
    assert 0.0 <= acc <= 1.0
    assert np.isnan(probe_accuracy(feats[[0, 2, 4]], np.array([0, 1, 2]), [1], folds=5))
