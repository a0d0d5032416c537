"""Tests of divergence and distance metrics (unlearnkit.metrics.divergence)."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import softmax

from unlearnkit.metrics.divergence import (
    activation_distance,
    avg_gap,
    js_divergence,
    js_divergence_per_sample,
    zrf,
    zrf_compat,
)


@pytest.fixture
def logits():
    rng = np.random.default_rng(0)
    return rng.normal(0, 2, size=(50, 10)), rng.normal(0.5, 3, size=(50, 10))


def test_js_matches_scipy(logits):
    a, b = logits
    p, q = softmax(a, axis=1), softmax(b, axis=1)
    # scipy returns the JS *distance*, the square root of the divergence
    ref = jensenshannon(p, q, base=math.e, axis=1) ** 2
    np.testing.assert_allclose(js_divergence_per_sample(a, b), ref, rtol=1e-10, atol=1e-14)
    assert js_divergence(a, b) == pytest.approx(ref.mean(), rel=1e-10)


def test_js_accepts_torch_and_is_symmetric(logits):
    a, b = logits
    ta, tb = torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32)
    assert js_divergence(ta, tb) == pytest.approx(js_divergence(a, b), rel=1e-5)
    assert js_divergence(a, b) == pytest.approx(js_divergence(b, a), rel=1e-12)


def test_js_near_identical_is_accurate(logits):
    a, _ = logits
    b = a + 1e-4 * np.random.default_rng(2).normal(size=a.shape)
    ref = jensenshannon(softmax(a, axis=1), softmax(b, axis=1), base=math.e, axis=1) ** 2
    np.testing.assert_allclose(js_divergence_per_sample(a, b), ref, rtol=1e-6)


def test_js_identical_is_zero(logits):
    a, _ = logits
    assert js_divergence(a, a) == 0.0
    assert zrf(a, a) == 1.0


def test_js_disjoint_reaches_ln2():
    # extreme logits: softmax underflows to exact zeros, disjoint supports
    a = np.array([[1000.0, 0.0, 0.0], [0.0, 0.0, 1000.0]])
    b = np.array([[0.0, 1000.0, 0.0], [1000.0, 0.0, 0.0]])
    assert js_divergence(a, b) == pytest.approx(math.log(2), rel=1e-12)
    assert js_divergence(a, b) <= math.log(2)
    assert zrf(a, b) == pytest.approx(1 - math.log(2))
    assert np.isfinite(js_divergence(a, b))


def test_js_bounded_for_random_inputs():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 30, size=(200, 5)), rng.normal(0, 30, size=(200, 5))
    js = js_divergence_per_sample(a, b)
    assert np.all(js >= 0) and np.all(js <= math.log(2))


def test_empty_is_nan():
    e = np.zeros((0, 4))
    assert math.isnan(js_divergence(e, e))
    assert math.isnan(activation_distance(e, e))
    assert math.isnan(zrf_compat(e, e))


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        js_divergence(np.zeros((3, 4)), np.zeros((3, 5)))


def test_activation_distance_by_hand():
    # logits chosen so the softmaxes are simple: [1, 0] vs [0.5, 0.5]; [0.5, 0.5] vs itself
    a = np.array([[0.0, -1e4], [2.0, 2.0]])
    b = np.array([[0.0, 0.0], [-1.0, -1.0]])
    expected = (math.sqrt(0.5**2 + 0.5**2) + 0.0) / 2
    assert activation_distance(a, b) == pytest.approx(expected, rel=1e-12)
    assert activation_distance(a, a) == 0.0


def test_activation_distance_matches_numpy(logits):
    a, b = logits
    ref = np.linalg.norm(softmax(a, axis=1) - softmax(b, axis=1), axis=1).mean()
    assert activation_distance(torch.tensor(a), torch.tensor(b)) == pytest.approx(ref, rel=1e-12)


def test_zrf_compat_by_hand():
    # p = [0.5, 0.5], q = [0.9, 0.1]: m = [0.7, 0.3]; N = 1, C = 2
    a = np.log(np.array([[0.5, 0.5]]))
    b = np.log(np.array([[0.9, 0.1]]))
    m = np.array([0.7, 0.3])
    p, q = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    kl_m_p = np.sum(m * np.log(m / p)) / 2  # F.kl_div(log p, m): mean over N*C = 2 elements
    kl_m_q = np.sum(m * np.log(m / q)) / 2
    expected = 1 - (0.5 * kl_m_p + 0.5 * kl_m_q)
    assert zrf_compat(a, b) == pytest.approx(expected, rel=1e-12)
    # and it differs from the true ZRF (1 - JS)
    js = 0.5 * np.sum(p * np.log(p / m)) + 0.5 * np.sum(q * np.log(q / m))
    assert zrf(a, b) == pytest.approx(1 - js, rel=1e-12)
    assert abs(zrf_compat(a, b) - zrf(a, b)) > 1e-3


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")
def test_zrf_compat_equals_public_formula_in_torch(logits):
    # the public formula evaluated with torch.nn.functional.kl_div on float64 softmaxes
    a, b = logits
    p = torch.softmax(torch.tensor(a), dim=1)
    q = torch.softmax(torch.tensor(b), dim=1)
    m = (p + q) / 2
    kl = torch.nn.functional.kl_div
    public = 1 - (0.5 * kl(torch.log(p), m) + 0.5 * kl(torch.log(q), m))
    assert zrf_compat(a, b) == pytest.approx(float(public), rel=1e-12)
    assert zrf_compat(a, b) != pytest.approx(zrf(a, b), rel=1e-3)
    assert zrf_compat(a, a) == pytest.approx(1.0)


def test_avg_gap():
    u = {"forget_acc": 0.9, "retain_acc": 0.95, "test_acc": 0.8, "mia_confidence": 0.7}
    r = {"forget_acc": 0.8, "retain_acc": 0.97, "test_acc": 0.82, "mia_confidence": 0.5}
    assert avg_gap(u, r) == pytest.approx((0.1 + 0.02 + 0.02 + 0.2) / 4)
    assert avg_gap(u, r, keys=("forget_acc",)) == pytest.approx(0.1)
    assert avg_gap(u, u) == 0.0
    with pytest.raises(KeyError):
        avg_gap(u, {"forget_acc": 0.8})
    with pytest.raises(ValueError):
        avg_gap(u, r, keys=())
