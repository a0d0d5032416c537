"""Tests of the NeurIPS 2023 competition score (unlearnkit.metrics.competition)."""

import numpy as np
import pytest

from unlearnkit.metrics.competition import (
    EPSILON_CAP,
    _epsilons_dense,
    _torch_linspace_f32,
    competition_score,
    epsilons,
    forgetting_quality,
    logit_scaled_confidence,
)


def _cases():
    rng = np.random.default_rng(123)
    for n in (3, 4, 8, 17, 32):
        yield rng.normal(size=(n, 12)), rng.normal(0.4, 1.3, size=(n, 12))
    # discrete values with ties (also ties of the medians)
    for n in (4, 9, 16):
        yield (rng.integers(0, 6, size=(n, 15)).astype(float),
               rng.integers(1, 7, size=(n, 15)).astype(float))
    # constant pools (range ratio 0/0 is NaN: not capped), one constant pool (capped)
    yield np.zeros((5, 1)), np.ones((5, 1))
    yield np.zeros((5, 1)), np.linspace(0, 1, 5)[:, None]
    # wide, shifted, and nearly separated pools
    yield rng.normal(0, 5, size=(10, 6)), rng.normal(8, 0.5, size=(10, 6))


@pytest.mark.parametrize("case", list(range(11)))
def test_fast_equals_dense_reference(case):
    u, r = list(_cases())[case]
    fast = epsilons(u, r)
    dense = _epsilons_dense(u, r)
    np.testing.assert_array_equal(fast, dense)
    # symmetric in the two pools, as the rules are
    np.testing.assert_array_equal(fast, epsilons(r, u) if not np.any(
        np.median(u, 0) == np.median(r, 0)) else fast)


def test_torch_linspace_emulation():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    for _ in range(200):
        a, b = np.sort(rng.normal(size=2) * rng.uniform(0.01, 40) + rng.normal() * 10)
        num = int(np.ceil((b - a) * 100))
        want = torch.linspace(torch.tensor(a, dtype=torch.float64),
                              torch.tensor(b, dtype=torch.float64), num).numpy()
        np.testing.assert_array_equal(_torch_linspace_f32(a, b, num), want.astype(np.float64))


def test_separated_distributions_score_zero():
    rng = np.random.default_rng(0)
    u = rng.normal(0, 1, size=(64, 20))
    r = rng.normal(30, 1, size=(64, 20))
    assert np.all(epsilons(u, r) == EPSILON_CAP)
    assert forgetting_quality(u, r) == 0.0


def test_peaky_pool_gets_the_cap():
    u = np.full((8, 1), 2.0) + np.linspace(0, 1e-3, 8)[:, None]
    r = np.linspace(-3, 3, 8)[:, None]
    assert epsilons(u, r)[0] == EPSILON_CAP


def test_hand_worked_case():
    # retrained {0,1,2,3}, unlearned {1.5,2.5,3.5,4.5}: the best attacks misclassify one
    # model of each pool (FPR = FNR = 1/4); no threshold reaches FPR or FNR = 0 alone with
    # the other below 1/4 except where it is discarded. eps = ln(3/4 - delta) - ln(1/4).
    r = np.array([[0.0], [1.0], [2.0], [3.0]])
    u = r + 1.5
    eps = epsilons(u, r)
    want = np.float32(np.log(np.float32(0.75 - 1e-5)) - np.log(np.float32(0.25)))
    assert eps[0] == pytest.approx(np.log(3), abs=1e-4)
    assert eps[0] == float(want)
    # N = 4: ceil(ln 3) = 2, so buckets of 0.5 up to 2; eps in [1, 1.5) earns 1/4.
    assert forgetting_quality(u, r) == 0.25
    # delta enters the formula
    assert epsilons(u, r, delta=0.25)[0] == pytest.approx(np.log(0.5 / 0.25), abs=1e-5)


def test_points_rule():
    # 2 models: ceil(ln 1) = 0, no bucket: everything scores 0.
    assert forgetting_quality(np.array([[0.0], [1.0]]), np.array([[0.2], [0.9]])) == 0.0


def test_same_distribution_scores_like_retrained_reference():
    rng = np.random.default_rng(2023)
    n, m = 512, 48
    r1 = rng.normal(size=(n, m))
    r2 = rng.normal(size=(n, m))
    u = rng.normal(size=(n, m))
    f_ref = forgetting_quality(r1, r2)
    f_same = forgetting_quality(u, r2)
    f_shift = forgetting_quality(u + 1.0, r2)
    assert 0.1 < f_ref < 0.3
    assert 0.1 < f_same < 0.3
    assert abs(f_same - f_ref) < 0.08
    assert f_shift < f_same / 2


def test_logit_scaled_confidence():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 3, size=(50, 7))
    y = rng.integers(0, 7, size=50)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    py = p[np.arange(50), y]
    want = np.log(py) - np.log(p.sum(axis=1) - py)
    got = logit_scaled_confidence(z.astype(np.float32), y)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, np.log(py) - np.log(1 - py), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logit_scaled_confidence(z, y), want, rtol=1e-10, atol=1e-10)
    # extreme logits stay finite and exact: z_y - logsumexp(others)
    ext = logit_scaled_confidence(np.array([[1000.0, 0.0, 0.0], [0.0, 800.0, 0.0]]), [0, 0])
    np.testing.assert_allclose(ext, [1000 - np.log(2), -800.0], rtol=1e-12)


def test_competition_score():
    assert competition_score(0.5, [0.9, 0.9], [1.0, 0.8], 0.8, [0.8]) == pytest.approx(0.5)
    assert competition_score(0.2, 0.45, 0.9, 0.4, 0.8) == pytest.approx(0.05)


def test_identical_constant_pools_fail_like_metric_py():
    # every threshold has exactly one of FPR, FNR at 0: metric.py's assertion fails too
    with pytest.raises(ValueError, match="discarded"):
        epsilons(np.zeros((5, 1)), np.zeros((5, 1)))


def test_input_validation():
    with pytest.raises(ValueError):
        epsilons(np.zeros((4, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError):
        epsilons(np.zeros((1, 3)), np.zeros((1, 3)))
