"""Tests of the membership inference attacks (unlearnkit.metrics.mia)."""

import numpy as np
import pytest
import torch
from scipy.stats import entropy as scipy_entropy
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedShuffleSplit, cross_val_score

from unlearnkit.metrics.mia import (
    entropy,
    mia_confidence,
    mia_entropy,
    mia_loss_cv,
    per_sample_loss,
)


def _probs(rng, n, c, sharpness):
    """Softmax rows whose label class gets ``sharpness`` extra logit."""
    logits = rng.normal(size=(n, c))
    labels = rng.integers(0, c, size=n)
    logits[np.arange(n), labels] += sharpness
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True), labels, logits


def test_per_sample_loss_matches_torch():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 5, size=(40, 7))
    labels = rng.integers(0, 7, size=40)
    ref = torch.nn.functional.cross_entropy(
        torch.tensor(logits), torch.tensor(labels), reduction="none"
    ).numpy()
    np.testing.assert_allclose(per_sample_loss(logits, labels), ref, rtol=1e-12, atol=1e-14)
    out = per_sample_loss(torch.tensor(logits, dtype=torch.float32), torch.tensor(labels))
    np.testing.assert_allclose(out, ref, rtol=1e-5)


def test_entropy_matches_scipy():
    rng = np.random.default_rng(1)
    p, _, _ = _probs(rng, 30, 5, 2.0)
    p[0] = [1.0, 0.0, 0.0, 0.0, 0.0]  # 0 log 0 = 0
    p[1] = [0.5, 0.5, 0.0, 0.0, 0.0]
    np.testing.assert_allclose(entropy(p), scipy_entropy(p, axis=1), rtol=1e-12, atol=1e-15)
    assert entropy(p)[0] == 0.0
    assert entropy(p)[1] == pytest.approx(np.log(2))
    assert entropy(torch.tensor([0.25, 0.25, 0.25, 0.25])) == pytest.approx(np.log(4))


def test_mia_loss_cv_equals_sklearn_pipeline():
    rng = np.random.default_rng(2)
    forget = rng.exponential(0.5, size=200)
    test = rng.exponential(1.0, size=200)
    x = np.concatenate([test, forget]).reshape(-1, 1)
    y = np.r_[np.zeros(200), np.ones(200)]
    cv = StratifiedShuffleSplit(n_splits=10, random_state=0)
    ref = cross_val_score(LogisticRegression(), x, y, cv=cv, scoring="accuracy").mean()
    assert mia_loss_cv(forget, test) == pytest.approx(ref, rel=1e-12)
    cv5 = StratifiedShuffleSplit(n_splits=5, random_state=3)
    ref5 = cross_val_score(LogisticRegression(), x, y, cv=cv5, scoring="accuracy").mean()
    assert mia_loss_cv(forget, test, n_splits=5, seed=3) == pytest.approx(ref5, rel=1e-12)


def test_mia_loss_cv_subsamples_the_larger_set():
    rng = np.random.default_rng(3)
    forget = rng.exponential(0.2, size=500)
    test = rng.exponential(1.0, size=120)
    a = mia_loss_cv(forget, test, seed=4)
    assert a == mia_loss_cv(forget, test, seed=4)  # seeded
    assert 0.5 < a <= 1.0
    # with tiny forget set the smaller one is kept whole
    assert 0.0 <= mia_loss_cv(forget[:30], test) <= 1.0


def test_mia_loss_cv_direction():
    rng = np.random.default_rng(4)
    test = rng.exponential(1.0, size=300)
    memorised = rng.exponential(0.05, size=300)  # forget losses near 0: remembered
    forgotten = rng.exponential(1.0, size=300)  # like test: forgotten
    high, low = mia_loss_cv(memorised, test), mia_loss_cv(forgotten, test)
    assert high > 0.85
    assert abs(low - 0.5) < 0.1
    assert high > low


def test_mia_entropy_separable():
    rng = np.random.default_rng(5)
    retain, _, _ = _probs(rng, 300, 10, 12.0)  # confident: low entropy
    test, _, _ = _probs(rng, 300, 10, 0.0)  # diffuse: high entropy
    like_retain, _, _ = _probs(rng, 100, 10, 12.0)
    like_test, _, _ = _probs(rng, 100, 10, 0.0)
    assert mia_entropy(retain, test, like_retain) > 0.95
    assert mia_entropy(retain, test, like_test) < 0.05
    t = torch.tensor
    assert mia_entropy(t(retain), t(test), t(like_retain)) > 0.95


def test_mia_confidence_separable():
    rng = np.random.default_rng(6)
    retain = rng.uniform(0.9, 1.0, size=500)
    test = rng.uniform(0.0, 0.5, size=200)
    assert mia_confidence(retain, test, rng.uniform(0.9, 1.0, size=100)) > 0.95
    assert mia_confidence(retain, test, rng.uniform(0.0, 0.5, size=100)) < 0.05
    # the public code's first-rows subset
    assert mia_confidence(retain, test, rng.uniform(0.9, 1.0, size=100), seed=None) > 0.95


def test_mia_confidence_uses_retain_subset_of_test_size():
    # retain: first 50 rows near 1, the rest near 0. seed=None keeps only the first
    # len(test)=50 rows, so the attack learns "high confidence = member".
    rng = np.random.default_rng(7)
    retain = np.r_[rng.uniform(0.95, 1.0, 50), rng.uniform(0.0, 0.05, 450)]
    test = rng.uniform(0.4, 0.6, size=50)
    forget = rng.uniform(0.95, 1.0, size=40)
    assert mia_confidence(retain, test, forget, seed=None) > 0.95
    grid = np.linspace(0, 1, 101)
    assert mia_confidence(retain, test, grid, seed=None) == mia_confidence(
        retain[:50], test, grid, seed=None
    )


def test_mia_confidence_balances_a_small_retain_set():
    # 50 members near 1; 500 non-members of which 60 also near 1. Trained on 50 vs 500 the SVC
    # calls the region near 1 non-member (60 > 50); balanced at 50 vs 50 (about 6 near 1)
    # it calls it member.
    rng = np.random.default_rng(9)
    retain = rng.uniform(0.9, 1.0, 50)
    test = np.r_[rng.uniform(0.0, 0.5, 440), rng.uniform(0.9, 1.0, 60)]
    forget = rng.uniform(0.9, 1.0, 40)
    assert mia_confidence(retain, test, forget) > 0.9
    assert mia_confidence(retain, test, forget, seed=None) > 0.9  # the first 50 test rows


def test_direction_memorising_beats_non_memorising():
    """An 'original' (memorising D_f) scores higher than a 'retrained' model on every MIA."""
    rng = np.random.default_rng(8)
    n_cls = 10
    retain, retain_y, _ = _probs(rng, 400, n_cls, 9.0)
    test, test_y, test_logits = _probs(rng, 200, n_cls, 2.0)
    orig_f, orig_y, orig_logits = _probs(rng, 200, n_cls, 9.0)  # like retain
    retr_f, retr_y, retr_logits = _probs(rng, 200, n_cls, 2.0)  # like test

    def true_p(p, y):
        return p[np.arange(len(y)), y]

    test_loss = per_sample_loss(test_logits, test_y)
    assert mia_loss_cv(per_sample_loss(orig_logits, orig_y), test_loss) > mia_loss_cv(
        per_sample_loss(retr_logits, retr_y), test_loss
    )
    assert mia_entropy(retain, test, orig_f) > mia_entropy(retain, test, retr_f)
    r, t = true_p(retain, retain_y), true_p(test, test_y)
    assert mia_confidence(r, t, true_p(orig_f, orig_y)) > mia_confidence(
        r, t, true_p(retr_f, retr_y)
    )


def test_empty_inputs_raise():
    with pytest.raises(ValueError):
        mia_loss_cv(np.array([]), np.ones(10))
    with pytest.raises(ValueError):
        mia_confidence(np.ones(5), np.ones(5), np.array([]))
