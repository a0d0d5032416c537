"""The oracle-free verdict: its pure rules (metrics/verdict.py), the validation set that the
split builders hold out for it (data/splits.py), and its model-level use (evaluation.verdict,
unlearn, evaluate, checkpoints).

Expected values are computed independently: sklearn's ROC AUC, the formulas written out by
hand, simulations, and the models' accuracies and losses recomputed here with torch.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import Subset, TensorDataset

import unlearnkit as uk
from unlearnkit.data.splits import VALIDATION_FRACTION, validation_indices
from unlearnkit.metrics.verdict import (
    FORGET_THRESHOLD,
    OUTCOMES,
    Verdict,
    Z,
    accuracy_gap_halfwidth,
    auc_null_halfwidth,
    auc_standard_error,
    judge_class,
    judge_samples,
    loss_auc,
)

METHOD_HINT = "raise the learning rate"


# ================================================================ loss_auc
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_auc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    # one decimal: many ties, within and across the two sets
    f = np.round(rng.gamma(2.0, 0.3, size=37), 1)
    v = np.round(rng.gamma(2.0, 0.4, size=53), 1)
    assert len(np.intersect1d(f, v)) > 0  # there are ties across the sets
    labels = np.r_[np.ones(len(f)), np.zeros(len(v))]
    expected = roc_auc_score(labels, -np.r_[f, v])
    assert loss_auc(f, v) == pytest.approx(expected, abs=1e-12)


def test_loss_auc_hand_cases():
    assert loss_auc([0.1, 0.2], [0.5, 0.6, 0.7]) == 1.0  # D_f has every lower loss
    assert loss_auc([0.5, 0.6, 0.7], [0.1, 0.2]) == 0.0  # D_f has every higher loss
    assert loss_auc([0.3, 0.3], [0.3, 0.3, 0.3]) == 0.5  # all ties
    # pairs (f, v): (1,2) win, (1,3) win, (2,2) tie = 1/2, (2,3) win -> 3.5 / 4
    assert loss_auc([1.0, 2.0], [2.0, 3.0]) == pytest.approx(0.875)
    # accepts tensors and 2-d arrays (ravelled)
    assert loss_auc(torch.tensor([[0.1], [0.2]]), np.array([[0.5, 0.6]])) == 1.0


def test_loss_auc_needs_both_sides():
    with pytest.raises(ValueError):
        loss_auc([], [0.1])
    with pytest.raises(ValueError):
        loss_auc([0.1], [])


# ================================================================ bands
def test_auc_null_halfwidth_formula():
    # 1.96 * sqrt(301 / (12 * 100 * 200)) = 1.96 * sqrt(0.0012541667) = 1.96 * 0.0354142
    assert auc_null_halfwidth(100, 200) == pytest.approx(0.0694118, rel=1e-5)
    for n1, n2 in [(1, 1), (10, 20), (146, 180)]:
        assert auc_null_halfwidth(n1, n2) == pytest.approx(
            1.96 * math.sqrt((n1 + n2 + 1) / (12 * n1 * n2)))
    assert auc_null_halfwidth(100, 200, z=1.0) == pytest.approx(0.0694118 / 1.96, rel=1e-5)
    # symmetric in the two sizes, shrinking with more samples
    assert auc_null_halfwidth(30, 70) == pytest.approx(auc_null_halfwidth(70, 30))
    assert auc_null_halfwidth(300, 300) < auc_null_halfwidth(30, 30)
    with pytest.raises(ValueError):
        auc_null_halfwidth(0, 5)


def test_auc_null_halfwidth_covers_95_percent_of_null_aucs():
    """Two samples from one distribution: about 95 % of their AUCs lie within 0.5 +- band."""
    rng = np.random.default_rng(0)
    n1, n2, draws = 30, 50, 2000
    band = auc_null_halfwidth(n1, n2)
    data = rng.normal(size=(draws, n1 + n2))
    aucs = np.array([loss_auc(row[:n1], row[n1:]) for row in data])
    coverage = float(np.mean(np.abs(aucs - 0.5) <= band))
    assert 0.93 <= coverage <= 0.97


def test_auc_standard_error_hand_value():
    # A = 0.8, n1 = 10 positives, n2 = 20 negatives (Hanley & McNeil 1982):
    # Q1 = 0.8 / 1.2 = 0.666667, Q2 = 2 * 0.64 / 1.8 = 0.711111
    # var = (0.16 + 9 * 0.026667 + 19 * 0.071111) / 200 = 1.751111 / 200 = 0.0087556
    assert auc_standard_error(0.8, 10, 20) == pytest.approx(math.sqrt(0.0087556), rel=1e-4)
    # positives pair with Q1: swapping the sizes gives (0.16 + 0.506667 + 0.64) / 200
    assert auc_standard_error(0.8, 20, 10) == pytest.approx(math.sqrt(0.0065333), rel=1e-4)
    # A = 0.5 and n1 = n2 = 1: Q1 = 1/3, Q2 = 1/3, var = 0.25
    assert auc_standard_error(0.5, 1, 1) == pytest.approx(0.5)
    assert auc_standard_error(1.0, 10, 20) == 0.0
    with pytest.raises(ValueError):
        auc_standard_error(0.7, 5, 0)


def test_auc_standard_error_matches_simulation_of_exponential_scores():
    """Hanley and McNeil's Q1, Q2 are exact for exponential scores: the formula's SE is then the
    AUC's standard deviation over repeated draws."""
    rng = np.random.default_rng(1)
    n1, n2, draws = 10, 20, 4000
    # P(positive score > negative score) = a / (a + b) = 0.8 for rates a = 4 (neg), b = 1 (pos)
    pos = rng.exponential(1.0, size=(draws, n1))
    neg = rng.exponential(1 / 4.0, size=(draws, n2))
    aucs = (pos[:, :, None] > neg[:, None, :]).mean(axis=(1, 2))
    assert aucs.mean() == pytest.approx(0.8, abs=0.01)
    sd = float(aucs.std(ddof=1))
    assert auc_standard_error(0.8, n1, n2) == pytest.approx(sd, rel=0.06)
    # and the sizes are not interchangeable (the swapped SE is about 14 % smaller)
    assert auc_standard_error(0.8, n2, n1) < 0.9 * sd


def test_accuracy_gap_halfwidth_hand_values():
    # 0.9 of 100 and 0.8 of 100: p = (90 + 80 + 1) / 202 = 0.8465347
    # 1.96 * sqrt(0.8465347 * 0.1534653 * 0.02) = 1.96 * 0.0509733 = 0.0999076
    assert accuracy_gap_halfwidth(0.9, 100, 0.8, 100) == pytest.approx(0.0999076, rel=1e-5)
    # two perfect accuracies still leave a band: p = 101 / 102
    # 1.96 * sqrt(101 / 102**2 * 0.04) = 1.96 * 0.0197056 = 0.0386231
    perfect = accuracy_gap_halfwidth(1.0, 50, 1.0, 50)
    assert perfect > 0
    assert perfect == pytest.approx(0.0386231, rel=1e-5)
    assert accuracy_gap_halfwidth(0.0, 50, 0.0, 50) == pytest.approx(perfect)  # by symmetry
    assert accuracy_gap_halfwidth(0.9, 100, 0.8, 100, z=1.0) == pytest.approx(0.0509733,
                                                                              rel=1e-5)
    with pytest.raises(ValueError):
        accuracy_gap_halfwidth(0.9, 0, 0.8, 100)


# ================================================================ judge_class
def _cls(**kw):
    args = dict(forget_acc=0.0, heldout_forget_acc=0.02, n_heldout_forget=18,
                heldout_retain_acc=0.92, original_heldout_retain_acc=0.93,
                original_forget_acc=0.9, hint=METHOD_HINT)
    args.update(kw)
    return judge_class(**args)


def test_judge_class_forgotten():
    v = _cls()
    assert v.outcome == "forgotten" and v.forgotten
    assert v.scenario == "class"
    assert v.checks == {"forget": True, "heldout_forget": True, "utility": True}
    assert v.reasons == () and v.notes == ()
    assert v.hint is None


def test_judge_class_not_forgotten_gives_the_method_hint():
    # 0.8 is above the threshold and above half the original's 0.9
    v = _cls(forget_acc=0.8, heldout_forget_acc=0.85)
    assert v.outcome == "not forgotten" and not v.forgotten
    assert v.checks == {"forget": False, "heldout_forget": False, "utility": True}
    assert len(v.reasons) == 2
    assert "0.800" in v.reasons[0] and "0.850" in v.reasons[1]
    assert v.hint == METHOD_HINT
    # without a method's hint, a generic one
    generic = _cls(forget_acc=0.8, heldout_forget_acc=0.85, hint=None).hint
    assert generic and generic != METHOD_HINT


def test_judge_class_partial_when_one_check_holds():
    v = _cls(forget_acc=0.03, heldout_forget_acc=0.4)
    assert v.outcome == "partial"
    assert v.checks["forget"] and not v.checks["heldout_forget"]
    assert any("0.400" in r for r in v.reasons)
    assert v.hint == METHOD_HINT


def test_judge_class_halfway_rule():
    # neither check holds; the forget accuracy moved at least half-way from 0.9 to 0
    assert _cls(forget_acc=0.4, heldout_forget_acc=0.5).outcome == "partial"
    assert _cls(forget_acc=0.45, heldout_forget_acc=0.5).outcome == "partial"
    assert _cls(forget_acc=0.46, heldout_forget_acc=0.5).outcome == "not forgotten"
    # an original already below the threshold has no half-way to go
    v = _cls(forget_acc=0.2, heldout_forget_acc=0.2, original_forget_acc=0.04)
    assert v.outcome == "not forgotten"


def test_judge_class_utility_lost_overrides():
    # everything forgotten, but the retained held-out accuracy fell 0.93 -> 0.85
    v = _cls(heldout_retain_acc=0.85)
    assert v.outcome == "utility lost"
    assert v.checks == {"forget": True, "heldout_forget": True, "utility": False}
    assert len(v.reasons) == 1 and "0.080" in v.reasons[0]
    assert v.hint and v.hint != METHOD_HINT
    # a fall within the tolerance is fine; the tolerance is a parameter
    assert _cls(heldout_retain_acc=0.93 - 0.02).outcome == "forgotten"
    assert _cls(heldout_retain_acc=0.85, tolerance=0.1).outcome == "forgotten"
    # a better retained accuracy is never a loss
    assert _cls(heldout_retain_acc=0.99).outcome == "forgotten"
    # utility lost also wins over not forgotten
    assert _cls(forget_acc=0.9, heldout_forget_acc=0.9,
                heldout_retain_acc=0.5).outcome == "utility lost"


def test_judge_class_threshold():
    assert _cls(forget_acc=FORGET_THRESHOLD, heldout_forget_acc=0.0).outcome == "forgotten"
    assert _cls(forget_acc=0.06, heldout_forget_acc=0.0).outcome == "partial"
    assert _cls(forget_acc=0.06, heldout_forget_acc=0.0, threshold=0.1).outcome == "forgotten"


def test_judge_class_without_heldout_forgotten_samples():
    v = _cls(heldout_forget_acc=None, n_heldout_forget=0)
    assert v.outcome == "forgotten"
    assert "heldout_forget" not in v.checks
    assert len(v.notes) == 1 and "D_f alone" in v.notes[0]
    assert _cls(forget_acc=0.8, heldout_forget_acc=None,
                n_heldout_forget=0).outcome == "not forgotten"


# ================================================================ judge_samples
def _smp(**kw):
    args = dict(forget_acc=0.9, n_forget=100, validation_acc=0.9, n_validation=200, auc=0.52,
                original_forget_acc=1.0, original_validation_acc=0.9, original_auc=0.8,
                hint=METHOD_HINT)
    args.update(kw)
    return judge_samples(**args)


def test_judge_samples_forgotten_and_its_numbers():
    v = _smp()
    assert v.outcome == "forgotten" and v.scenario == "random"
    assert v.checks == {"accuracy_gap": True, "loss_auc": True, "utility": True}
    assert v.reasons == () and v.hint is None
    assert v.notes == ()  # the original (gap 0.1, AUC 0.8) did stand out
    n = v.numbers
    # bands by hand: p = (90 + 180 + 1) / 302
    p = 271 / 302
    assert n["accuracy_band"] == pytest.approx(1.96 * math.sqrt(p * (1 - p) * (0.01 + 0.005)))
    assert n["auc_band"] == pytest.approx(0.0694118, rel=1e-5)
    assert n["accuracy_gap"] == pytest.approx(0.0)
    lo, hi = n["loss_auc_ci"]
    se = auc_standard_error(0.52, 100, 200)
    assert lo == pytest.approx(0.52 - Z * se) and hi == pytest.approx(0.52 + Z * se)
    assert n["heldout_retain_acc"] == 0.9 and n["original_heldout_retain_acc"] == 0.9


def test_judge_samples_not_forgotten():
    # D_f 0.1 above unseen data (band about 0.061) and AUC 0.78 (band about 0.069), both about
    # where the original was (gap 0.1, AUC 0.8): nothing moved
    v = _smp(forget_acc=1.0, auc=0.78)
    assert v.outcome == "not forgotten"
    assert v.checks == {"accuracy_gap": False, "loss_auc": False, "utility": True}
    assert len(v.reasons) == 2
    assert "above unseen" in v.reasons[0] and "0.780" in v.reasons[1]
    assert v.hint == METHOD_HINT


def test_judge_samples_partial_when_one_check_holds():
    v = _smp(forget_acc=1.0, auc=0.5)
    assert v.outcome == "partial"
    assert v.checks["loss_auc"] and not v.checks["accuracy_gap"]
    assert v.hint == METHOD_HINT


def test_judge_samples_halfway_by_auc():
    # the AUC moved from 0.8 to 0.64: 0.14 above 0.5 is at most half the original's 0.3
    assert _smp(forget_acc=1.0, auc=0.64).outcome == "partial"
    assert _smp(forget_acc=1.0, auc=0.66).outcome == "not forgotten"


def test_judge_samples_halfway_by_accuracy():
    # the original's gap 1.0 - 0.6 = 0.4; the model's 0.78 - 0.6 = 0.18 (band about 0.114)
    base = dict(validation_acc=0.6, original_validation_acc=0.6, original_forget_acc=1.0,
                auc=0.8, original_auc=0.8)
    v = _smp(forget_acc=0.78, **base)
    assert not v.checks["accuracy_gap"] and not v.checks["loss_auc"]
    assert v.outcome == "partial"
    assert _smp(forget_acc=0.82, **base).outcome == "not forgotten"


def test_judge_samples_utility_lost_overrides():
    # both forgetting checks hold, but unseen-data accuracy fell 0.9 -> 0.8
    v = _smp(forget_acc=0.8, validation_acc=0.8, auc=0.5)
    assert v.checks["accuracy_gap"] and v.checks["loss_auc"]
    assert v.outcome == "utility lost" and not v.checks["utility"]
    assert any("0.100" in r for r in v.reasons)
    assert v.hint and v.hint != METHOD_HINT


@pytest.mark.parametrize("kw, says", [
    (dict(forget_acc=0.5, auc=0.5), "stands out"),  # accuracy far below unseen data's
    (dict(forget_acc=0.9, auc=0.2), "higher losses"),  # AUC far below 0.5
])
def test_judge_samples_over_forgetting_is_partial(kw, says):
    v = _smp(**kw)
    assert v.outcome == "partial"
    assert any(says in r for r in v.reasons)
    assert "soften" in v.hint  # not "strengthen": the method went too far


def test_judge_samples_over_forgetting_alone_makes_partial():
    """No check holds and there is no half-way (the original looked unseen), yet D_f scoring
    *below* unseen data is partial, while scoring above is not forgotten."""
    unseen = dict(original_forget_acc=0.9, original_validation_acc=0.9, original_auc=0.5)
    below = _smp(forget_acc=0.5, auc=0.2, **unseen)
    assert not below.checks["accuracy_gap"] and not below.checks["loss_auc"]
    assert below.outcome == "partial"
    assert any("stands out" in r for r in below.reasons)
    assert any("gives it away" in r for r in below.reasons)
    above = _smp(forget_acc=1.0, auc=0.8, **unseen)
    assert not above.checks["accuracy_gap"] and not above.checks["loss_auc"]
    assert above.outcome == "not forgotten"


def test_judge_samples_notes_an_original_that_already_looks_unseen():
    v = _smp(original_forget_acc=0.9, original_validation_acc=0.9, original_auc=0.5)
    assert v.outcome == "forgotten"
    assert len(v.notes) == 1 and "already" in v.notes[0]
    # one of the original's two measures outside its band: no note
    assert _smp(original_forget_acc=0.9, original_validation_acc=0.9,
                original_auc=0.8).notes == ()
    assert _smp(original_forget_acc=1.0, original_validation_acc=0.9,
                original_auc=0.5).notes == ()


def test_judge_samples_bands_widen_for_small_requests():
    # the same gap (0.1) and AUC (0.6): remembered at 1000 samples, within chance at 20
    big = _smp(forget_acc=1.0, validation_acc=0.9, auc=0.6, n_forget=1000, n_validation=1000)
    small = _smp(forget_acc=1.0, validation_acc=0.9, auc=0.6, n_forget=20, n_validation=20)
    assert not big.checks["accuracy_gap"] and not big.checks["loss_auc"]
    assert small.checks["accuracy_gap"] and small.checks["loss_auc"]
    assert small.outcome == "forgotten"


# ================================================================ Verdict
def test_verdict_dict_round_trip_through_json():
    for v in (_cls(), _cls(heldout_forget_acc=None, n_heldout_forget=0, forget_acc=0.8),
              _smp(forget_acc=0.5, auc=0.2), _smp(validation_acc=0.5)):
        d = v.to_dict()
        assert set(d) == {"outcome", "scenario", "numbers", "checks", "reasons", "hint",
                          "notes"}
        back = Verdict.from_dict(json.loads(json.dumps(d)))
        assert back == v
        assert back.to_dict() == d
    assert OUTCOMES == ("forgotten", "partial", "not forgotten", "utility lost")


def test_verdict_summary_holds_outcome_and_numbers():
    c = _cls(forget_acc=0.8, heldout_forget_acc=0.85, heldout_retain_acc=0.91)
    s = c.summary()
    assert s.startswith("not forgotten:")
    for x in ("0.800", "0.850", "0.910", "0.930", "0.05"):
        assert x in s
    assert str(c) == s
    none = _cls(heldout_forget_acc=None, n_heldout_forget=0).summary()
    assert none.startswith("forgotten:") and "0.000" in none
    r = _smp(forget_acc=0.97, validation_acc=0.88, auc=0.61, original_validation_acc=0.89)
    s = r.summary()
    assert s.startswith(f"{r.outcome}:")
    for x in ("0.970", "0.880", "0.610", "0.890", f"{r.numbers['auc_band']:.3f}"):
        assert x in s


# ================================================================ the validation set
def _rows(*parts) -> np.ndarray:
    """The samples of ``parts`` (ArrayDatasets) as rows (pixels, label), sorted: a multiset."""
    rows = np.concatenate([np.c_[p.x.flatten(1).numpy(), p.y.numpy()] for p in parts])
    return rows[np.lexsort(rows.T[::-1])]


def _builders(digits, **kw):
    return [uk.split_by_class(digits, [3], **kw),
            uk.split_random(digits, fraction=0.1, seed=0, **kw),
            uk.split_indices(digits, [0, 5, 7], **kw)]


def test_builders_hold_out_half_the_test_set_stratified(digits):
    assert VALIDATION_FRACTION == 0.5
    test_counts = np.bincount(digits.test.y.numpy(), minlength=10)
    for split in _builders(digits):
        val, test = split.validation, split.test
        assert isinstance(val, uk.ArrayDataset)
        assert len(val) + len(test) == len(digits.test)
        counts = np.bincount(val.y.numpy(), minlength=10)
        assert np.all(np.abs(counts - test_counts / 2) <= 1)
        # disjoint and together the whole test set: as multisets of samples
        assert np.array_equal(_rows(val, test), _rows(digits.test))
        assert len(np.unique(_rows(val, test), axis=0)) == len(digits.test)
        assert split.description.get("validation") == 0.5


def test_validation_is_the_same_for_every_builder_and_call(digits):
    first = _builders(digits)
    second = _builders(digits)
    ref = first[0]
    for split in first + second:
        assert torch.equal(split.validation.x, ref.validation.x)
        assert torch.equal(split.validation.y, ref.validation.y)
        assert torch.equal(split.test.x, ref.test.x)


def test_validation_zero_keeps_the_whole_test_set(digits):
    for split in _builders(digits, validation=0):
        assert split.validation is None
        assert split.test is digits.test
        assert "validation" not in split.description
    split = uk.split_by_class(digits, [3], validation=0)
    assert len(split.test_retain) + len(split.test_forget) == len(digits.test)


def test_other_validation_fraction(digits):
    split = uk.split_random(digits, count=10, validation=0.25)
    test_counts = np.bincount(digits.test.y.numpy(), minlength=10)
    counts = np.bincount(split.validation.y.numpy(), minlength=10)
    assert np.all(np.abs(counts - test_counts / 4) <= 1)
    assert np.array_equal(_rows(split.validation, split.test), _rows(digits.test))


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5])
def test_builders_refuse_a_bad_validation_fraction(digits, bad):
    with pytest.raises(uk.InvalidSplitError):
        uk.split_by_class(digits, [3], validation=bad)
    with pytest.raises(uk.InvalidSplitError):
        uk.split_random(digits, fraction=0.1, validation=bad)


def test_test_retain_and_forget_exclude_the_validation_set(digits):
    split = uk.split_by_class(digits, [3, 7])
    assert set(split.test_forget.y.tolist()) == {3, 7}
    assert not set(split.test_retain.y.tolist()) & {3, 7}
    # test_retain + test_forget is exactly the (new, smaller) test set
    assert np.array_equal(_rows(split.test_retain, split.test_forget), _rows(split.test))
    assert len(split.test_retain) + len(split.test_forget) == len(split.test) < len(digits.test)


def test_validation_indices_partition_and_stratify():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, size=403)
    idx = validation_indices(labels, 0.5)
    assert np.all(np.diff(idx) > 0)  # sorted, no repeat
    assert idx.min() >= 0 and idx.max() < len(labels)
    for c in range(5):
        n = int((labels == c).sum())
        assert abs(int((labels[idx] == c).sum()) - n / 2) <= 1
    assert np.array_equal(idx, validation_indices(labels, 0.5))  # seeded
    assert not np.array_equal(idx, validation_indices(labels, 0.5, seed=1))
    # every class keeps a sample in the test set: a class of one sample stays there whole
    assert validation_indices(np.array([0, 1, 1, 1, 1]), 0.9).tolist() in (
        [1, 2, 3], [1, 2, 4], [1, 3, 4], [2, 3, 4])
    assert len(validation_indices(labels, 0.0)) == 0
    with pytest.raises(uk.InvalidSplitError):
        validation_indices(labels, 1.0)


def test_from_data_carves_the_validation_set_from_the_test_set(digits):
    tr, te = digits.train, digits.test
    split = uk.Split.from_data(forget=tr.subset(range(20)), retain=tr.subset(range(20, 200)),
                               test=te, validation=0.5)
    assert len(split.validation) + len(split.test) == len(te)
    assert np.array_equal(_rows(split.validation, split.test), _rows(te))
    counts = np.bincount(split.validation.y.numpy(), minlength=10)
    assert np.all(np.abs(counts - np.bincount(te.y.numpy(), minlength=10) / 2) <= 1)
    # the default is the same half
    default = uk.Split.from_data(forget=tr.subset(range(20)), retain=tr.subset(range(20, 200)),
                                 test=te)
    assert torch.equal(default.validation.x, split.validation.x)
    # class scenario: its test_retain / test_forget come from what is left of the test set
    cls = uk.Split.from_data(forget=tr.of_classes([3]), retain=tr.of_classes([3], keep=False),
                             test=te, forget_classes=[3])
    assert np.array_equal(_rows(cls.test_retain, cls.test_forget), _rows(cls.test))
    assert len(cls.test) < len(te)


def test_from_data_with_a_torch_dataset(digits):
    te = TensorDataset(digits.test.x, digits.test.y)
    split = uk.Split.from_data(forget=digits.train, retain=digits.train, test=te)
    assert isinstance(split.validation, Subset) and isinstance(split.test, Subset)
    a, b = set(split.validation.indices), set(split.test.indices)
    assert not a & b and a | b == set(range(len(te)))
    labels = digits.test.y.numpy()
    counts = np.bincount(labels[sorted(a)], minlength=10)
    assert np.all(np.abs(counts - np.bincount(labels, minlength=10) / 2) <= 1)


def test_from_data_uses_a_given_validation_set_as_is(digits):
    val = digits.test.subset(range(50))
    split = uk.Split.from_data(forget=digits.train, retain=digits.train, test=digits.test,
                               validation=val)
    assert split.validation is val
    assert split.test is digits.test


@pytest.mark.parametrize("none", [0, 0.0, None])
def test_from_data_without_validation(digits, none):
    split = uk.Split.from_data(forget=digits.train, retain=digits.train, test=digits.test,
                               validation=none)
    assert split.validation is None and split.test is digits.test


@pytest.mark.parametrize("bad", [1.0, -0.1])
def test_from_data_refuses_a_bad_fraction(digits, bad):
    with pytest.raises(uk.InvalidSplitError):
        uk.Split.from_data(forget=digits.train, retain=digits.train, test=digits.test,
                           validation=bad)


# ================================================================ model-level verdict
class _Shift(nn.Module):
    """A plain module (no unlearnkit provenance): ``inner``'s logits minus ``delta``."""

    def __init__(self, inner: nn.Module, delta: torch.Tensor) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("delta", delta)

    def forward(self, x):
        return self.inner(x) - self.delta


class _Constant(nn.Module):
    """A collapsed model: always class 0."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(10))

    def forward(self, x):
        logits = self.bias.detach().clone()
        logits[0] = 1.0
        return logits.expand(x.shape[0], 10)


def _acc(model, data) -> float:
    with torch.no_grad():
        return float((model(data.x).argmax(1) == data.y).float().mean())


def _suppressed(model: nn.Module, cls: int = 3) -> nn.Module:
    delta = torch.zeros(10)
    delta[cls] = 1e4
    return _Shift(model, delta)


def test_original_judged_against_itself_is_not_forgotten(mlp_model, class_split):
    v = uk.verdict(mlp_model, class_split, mlp_model)
    assert isinstance(v, uk.Verdict)
    assert v.outcome == "not forgotten"
    n = v.numbers
    assert n["forget_acc"] == pytest.approx(_acc(mlp_model, class_split.forget))
    assert n["forget_acc"] == n["original_forget_acc"] > 0.5
    val = class_split.validation
    gone = val.y == 3
    assert n["n_heldout_forget"] == int(gone.sum()) > 0
    assert n["heldout_forget_acc"] == pytest.approx(_acc(mlp_model, val.subset(
        torch.nonzero(gone).flatten())))
    assert n["heldout_retain_acc"] == pytest.approx(_acc(mlp_model, val.subset(
        torch.nonzero(~gone).flatten())))
    assert n["heldout_retain_acc"] == n["original_heldout_retain_acc"]
    assert v.checks["utility"] and not v.checks["forget"]


def test_suppressed_class_is_forgotten_for_a_plain_module(mlp_model, class_split):
    model = _suppressed(mlp_model)
    assert uk.get_info(model) is None
    v = uk.verdict(model, class_split, mlp_model)
    assert v.outcome == "forgotten"
    assert v.numbers["forget_acc"] == 0.0 and v.numbers["heldout_forget_acc"] == 0.0
    # taking a class away can only help the other classes
    assert v.numbers["heldout_retain_acc"] >= v.numbers["original_heldout_retain_acc"]
    assert v.hint is None


def test_collapsed_model_is_utility_lost(mlp_model, class_split):
    v = uk.verdict(_Constant(), class_split, mlp_model)
    assert v.numbers["forget_acc"] == 0.0  # "forgets" class 3 perfectly ...
    assert v.checks["forget"]
    assert v.outcome == "utility lost"  # ... by forgetting everything
    assert v.numbers["heldout_retain_acc"] < 0.2


def test_verdict_needs_a_validation_set(digits, mlp_model):
    split = uk.split_by_class(digits, [3], validation=0)
    with pytest.raises(uk.InvalidParameterError):
        uk.verdict(mlp_model, split, mlp_model)


def test_sample_verdict_reads_validation_not_test(mlp_model, random_split):
    v = uk.verdict(mlp_model, random_split, mlp_model)
    n = v.numbers
    fx, fy = random_split.forget.x, random_split.forget.y
    vx, vy = random_split.validation.x, random_split.validation.y
    with torch.no_grad():
        fl = nn.functional.cross_entropy(mlp_model(fx).double(), fy, reduction="none").numpy()
        vl = nn.functional.cross_entropy(mlp_model(vx).double(), vy, reduction="none").numpy()
    expected_auc = roc_auc_score(np.r_[np.ones(len(fl)), np.zeros(len(vl))], -np.r_[fl, vl])
    assert n["loss_auc"] == pytest.approx(expected_auc, abs=1e-6)
    assert n["n_forget"] == len(fy) and n["n_validation"] == len(vy)
    assert n["validation_acc"] == pytest.approx(_acc(mlp_model, random_split.validation))
    assert n["forget_acc"] == pytest.approx(_acc(mlp_model, random_split.forget))
    assert n["auc_band"] == pytest.approx(auc_null_halfwidth(len(fy), len(vy)))
    # the test set plays no part
    no_test = dataclasses.replace(random_split, test=None)
    assert uk.verdict(mlp_model, no_test, mlp_model) == v
    assert v.outcome in OUTCOMES


# ================================================================ unlearn, checkpoints, evaluate
def test_unlearn_warns_when_not_forgotten(mlp_model, class_split):
    with pytest.warns(uk.ForgetVerdictWarning, match="not forgotten"):
        out = uk.unlearn(mlp_model, class_split, "finetune", epochs=0)
    d = uk.get_info(out).verdict
    assert isinstance(d, dict) and d["outcome"] == "not forgotten"
    assert d == uk.verdict(out, class_split, mlp_model,
                           hint=uk.get_method("finetune").forget_more).to_dict()
    assert d["hint"] == uk.get_method("finetune").forget_more


def test_unlearn_without_verdict(mlp_model, class_split):
    with warnings.catch_warnings():
        warnings.simplefilter("error", uk.ForgetVerdictWarning)
        out = uk.unlearn(mlp_model, class_split, "finetune", epochs=0, verdict=False)
    assert uk.get_info(out).verdict is None


def test_checkpoint_keeps_the_verdict(mlp_model, class_split, tmp_path):
    with pytest.warns(uk.ForgetVerdictWarning):
        out = uk.unlearn(mlp_model, class_split, "finetune", epochs=0)
    path = uk.save_checkpoint(out, tmp_path / "m.safetensors")
    back = uk.load_checkpoint(path)
    assert uk.get_info(back).verdict == uk.get_info(out).verdict
    assert uk.get_info(back).verdict["outcome"] == "not forgotten"


def _bias_suppressed(model: nn.Module, cls: int = 3) -> nn.Module:
    """A copy of an MLP whose output bias for ``cls`` is -1e4 (provenance kept)."""
    out = copy.deepcopy(model)
    last = [m for m in out.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.bias[cls] -= 1e4
    return out


def test_evaluate_reports_the_verdict_outcome(digits, mlp_model, class_split):
    suppressed = _bias_suppressed(mlp_model)
    seen = set()
    for model in (mlp_model, suppressed):
        res = uk.evaluate(model, class_split, original=mlp_model, mia=False, relearn=False,
                          verdict=True)
        assert isinstance(res["verdict"], str)
        assert res["verdict"] == uk.verdict(model, class_split, mlp_model).outcome
        seen.add(res["verdict"])
    assert seen == {"not forgotten", "forgotten"}
    # not asked for, without the original, or without a validation set: no verdict, and every
    # value a number
    plain = uk.evaluate(mlp_model, class_split, original=mlp_model, mia=False, relearn=False)
    assert "verdict" not in plain and all(isinstance(v, float) for v in plain.values()
                                          if v is not None)
    assert "verdict" not in uk.evaluate(mlp_model, class_split, mia=False, verdict=True)
    no_val = uk.split_by_class(digits, [3], validation=0)
    assert "verdict" not in uk.evaluate(mlp_model, no_val, original=mlp_model, mia=False,
                                        relearn=False, verdict=True)


# ---------------------------------------------------------------------- edge cases found in review
def test_from_data_validation_false_is_none_and_true_is_refused(digits):
    split = uk.Split.from_data(forget=digits.train.subset(range(20)),
                               retain=digits.train.subset(range(20, 200)), test=digits.test,
                               validation=False)
    assert split.validation is None and len(split.test) == len(digits.test)
    with pytest.raises(uk.InvalidSplitError, match="fraction"):
        uk.Split.from_data(forget=digits.train.subset(range(20)),
                           retain=digits.train.subset(range(20, 200)), test=digits.test,
                           validation=True)


def test_from_data_numpy_fraction_and_bad_fraction_without_test(digits):
    split = uk.Split.from_data(forget=digits.train.subset(range(20)),
                               retain=digits.train.subset(range(20, 200)), test=digits.test,
                               validation=np.float32(0.5))
    assert len(split.validation) + len(split.test) == len(digits.test)
    assert abs(len(split.validation) - len(digits.test) / 2) <= 10
    with pytest.raises(uk.InvalidSplitError, match="fraction"):
        uk.Split.from_data(forget=digits.train.subset(range(20)),
                           retain=digits.train.subset(range(20, 200)), test=None,
                           validation=1.0)


def test_remembered_by_accuracy_is_never_told_to_soften():
    # accuracy on D_f far above unseen data (remembered) while the loss AUC is below 0.5: the
    # advice is the method's, to forget more, not "soften"
    v = judge_samples(forget_acc=1.0, n_forget=200, validation_acc=0.9, n_validation=200,
                      auc=0.2, original_forget_acc=1.0, original_validation_acc=0.9,
                      original_auc=0.7, hint=METHOD_HINT)
    assert v.outcome == "not forgotten"
    assert v.hint == METHOD_HINT
    assert any("above unseen" in r for r in v.reasons)
