"""Tests of the per-example likelihood-ratio attack on model pools (unlearnkit.metrics.lira)."""

import itertools

import numpy as np
import pytest
import torch
from scipy.stats import norm

from unlearnkit.metrics.lira import mia_lira, mia_lira_per_example


def _reference(u, r, min_std=1e-4):
    """The definition, written plainly: per example and per held-out model, refit two Gaussians
    with np.mean / np.var (ddof=0), floor the std at ``min_std``, compare log-likelihoods."""
    u = np.asarray(u, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    n_u, n_r = u.shape[0], r.shape[0]

    def fit(values):
        return np.mean(values), max(np.sqrt(np.var(values)), min_std)

    out = []
    for e in range(u.shape[1]):
        correct_u = 0.0
        for i in range(n_u):
            x = u[i, e]
            mu_own, sd_own = fit(np.delete(u[:, e], i))
            mu_other, sd_other = fit(r[:, e])
            llr = norm.logpdf(x, mu_own, sd_own) - norm.logpdf(x, mu_other, sd_other)
            if llr > 0:
                correct_u += 1.0
            elif llr == 0:
                correct_u += 0.5
        correct_r = 0.0
        for i in range(n_r):
            x = r[i, e]
            mu_other, sd_other = fit(u[:, e])
            mu_own, sd_own = fit(np.delete(r[:, e], i))
            llr = norm.logpdf(x, mu_other, sd_other) - norm.logpdf(x, mu_own, sd_own)
            if llr < 0:
                correct_r += 1.0
            elif llr == 0:
                correct_r += 0.5
        out.append(0.5 * (correct_u / n_u + correct_r / n_r))
    return np.array(out)


def _random_cases():
    rng = np.random.default_rng(2024)
    # (n_unlearned, n_retrained, n_examples): several shapes, unequal pool sizes
    for n_u, n_r, e in ((3, 3, 1), (3, 7, 5), (8, 4, 9), (12, 12, 6), (5, 20, 3), (31, 17, 4)):
        u = rng.normal(rng.normal(size=e), rng.uniform(0.2, 2.0, size=e), size=(n_u, e))
        r = rng.normal(rng.normal(size=e), rng.uniform(0.2, 2.0, size=e), size=(n_r, e))
        yield u, r


@pytest.mark.parametrize("case", range(6))
def test_per_example_equals_brute_force_reference(case):
    u, r = list(_random_cases())[case]
    got = mia_lira_per_example(u, r)
    want = _reference(u, r)
    assert got.shape == (u.shape[1],)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert mia_lira(u, r) == pytest.approx(float(np.mean(want)), abs=1e-12)


def test_reference_with_floors_and_ties():
    # column 0: both pools constant and equal -> every ratio is exactly 1: all ties, 0.5
    # column 1: both constant, different values -> floored stds, perfectly told apart
    # column 2: unlearned constant, retrained spread (floored std on one side only)
    # column 3: discrete values with repeats
    u = np.array([[0.0, 1.0, 2.0, 1.0], [0.0, 1.0, 2.0, 2.0], [0.0, 1.0, 2.0, 1.0],
                  [0.0, 1.0, 2.0, 3.0]])
    r = np.array([[0.0, 4.0, 0.5, 2.0], [0.0, 4.0, 1.5, 2.0], [0.0, 4.0, 3.0, 1.0],
                  [0.0, 4.0, 2.5, 3.0], [0.0, 4.0, -1.0, 2.0]])
    for min_std in (1e-4, 0.3, 2.0):
        got = mia_lira_per_example(u, r, min_std=min_std)
        np.testing.assert_allclose(got, _reference(u, r, min_std), rtol=0, atol=1e-12)
    got = mia_lira_per_example(u, r)
    assert got[0] == 0.5
    assert got[1] == 1.0


def test_same_distribution_is_near_chance():
    rng = np.random.default_rng(0)
    u = rng.normal(size=(200, 500))
    r = rng.normal(size=(200, 500))
    # Per example, the balanced accuracy averages 400 nearly independent guesses (sd about
    # 0.5 / sqrt(400) = 0.025, a little more from the fitted parameters' own noise); the 500
    # examples are independent, so the mean has sd about 0.025 / sqrt(500) ~ 0.0012. Both fits
    # are independent of the held-out value (leave-one-out), so there is no systematic bias
    # beyond 199 vs 200 models. 0.02 is over 10 standard deviations.
    assert mia_lira(u, r) == pytest.approx(0.5, abs=0.02)


def test_well_separated_pools_score_one():
    rng = np.random.default_rng(1)
    u = rng.normal(0.0, 1.0, size=(20, 30))
    r = rng.normal(10.0, 1.0, size=(20, 30))
    assert mia_lira(u, r) == 1.0
    assert mia_lira(r, u) == 1.0


def test_deterministic_unlearned_pool_is_found_out():
    rng = np.random.default_rng(2)
    row = rng.normal(size=40)
    u = np.tile(row, (10, 1))  # every "unlearned" model is the same
    r = rng.normal(size=(10, 40))
    assert mia_lira(u, r) >= 0.95


def test_monotone_in_separation():
    # Common random numbers: the same draws, shifted. With equal unit variances the attack is
    # close to "nearest mean", whose balanced accuracy is Phi(d / 2): 0.5, 0.60, 0.69, 0.84
    # for d = 0, 0.5, 1, 2, so consecutive gaps are >= 0.09. Each value averages 300 independent
    # examples of 2 x 60 guesses (sd per example <= 0.05, of the mean <= 0.003), so noise
    # cannot flip the order (the gaps are ~30 standard deviations).
    rng = np.random.default_rng(3)
    z_u = rng.normal(size=(60, 300))
    z_r = rng.normal(size=(60, 300))
    values = [mia_lira(z_u + d, z_r) for d in (0.0, 0.5, 1.0, 2.0)]
    assert all(a < b for a, b in itertools.pairwise(values)), values
    assert values[0] == pytest.approx(0.5, abs=0.03)
    assert values[-1] == pytest.approx(norm.cdf(1.0), abs=0.03)


def test_accepts_torch_tensors():
    rng = np.random.default_rng(4)
    u = rng.normal(size=(5, 7))
    r = rng.normal(0.5, 1.0, size=(6, 7))
    want = mia_lira(u, r)
    assert mia_lira(torch.tensor(u), torch.tensor(r)) == want
    got = mia_lira_per_example(torch.tensor(u, requires_grad=True), torch.tensor(r))
    np.testing.assert_array_equal(got, mia_lira_per_example(u, r))
    assert isinstance(mia_lira(torch.tensor(u), r), float)


@pytest.mark.parametrize(
    ("u", "r", "match"),
    [
        (np.zeros((2, 4)), np.zeros((3, 4)), "at least 3"),
        (np.zeros((3, 4)), np.zeros((2, 4)), "at least 3"),
        (np.zeros((3, 4)), np.zeros((3, 5)), "different examples"),
        (np.zeros(4), np.zeros((3, 4)), r"\(n_models, n_examples\)"),
        (np.zeros((3, 4)), np.zeros(4), r"\(n_models, n_examples\)"),
        (np.zeros((3, 4, 1)), np.zeros((3, 4)), r"\(n_models, n_examples\)"),
        (np.array([[0.0, np.nan]] * 3), np.zeros((3, 2)), "NaN"),
        (np.zeros((3, 2)), np.array([[np.inf, 0.0]] * 3), "infinite"),
        (np.zeros((3, 0)), np.zeros((3, 0)), "no examples"),
    ],
)
def test_invalid_inputs(u, r, match):
    with pytest.raises(ValueError, match=match):
        mia_lira(u, r)
    with pytest.raises(ValueError, match=match):
        mia_lira_per_example(u, r)


@pytest.mark.parametrize("min_std", [0.0, -1.0, float("nan")])
def test_min_std_must_be_positive(min_std):
    with pytest.raises(ValueError, match="min_std"):
        mia_lira(np.zeros((3, 2)), np.ones((3, 2)), min_std=min_std)
