"""The NeurIPS 2023 machine-unlearning competition's forgetting quality and score.

Reference: Triantafillou et al., "Are we making progress in unlearning? Findings from the
first NeurIPS unlearning competition" (2024), and the official scoring code,
google-deepmind/unlearning_evaluation, ``metric.py``. This module re-implements that
code's definitions in numpy (no GPU), with identical values:

* N unlearned models (one original, different seeds) and N retrained models.
* Per forget example and model: the logit-scaled confidence
  ``log p_y - log(sum_{j != y} p_j)`` in float64.
* Per example, the "positive" pool is the one with the larger median confidence (ties: the
  unlearned pool). If the smaller of the two pools' ranges is under 1 % of the larger, the
  epsilon is the cap, 50. Otherwise every threshold of two rule families is tried:
  a single threshold (``c >= t`` predicts positive; a float32 ``torch.linspace`` grid over
  the pooled range, 100 points per unit) and a double threshold (``l <= c <= r`` predicts
  the peakier pool; ``~400 x 400`` float64 grids around the peakier pool's maximum).
  Rates are float32 fractions of models; for each threshold
  ``eps = max(0, log(1 - delta - FPR) - log FNR, log(1 - delta - FNR) - log FPR)``
  (float32, as numpy evaluates it on float32 rates); both rates 0 gives ``inf``; exactly one
  rate 0 discards the threshold, as does a NaN value (FPR = FNR = 1). The example's epsilon
  is the maximum over the kept thresholds, clipped to [0, 50].
* Points ``2 ** -floor(eps / 0.5)`` while ``eps < ceil(ln(N - 1))``, else 0;
  forgetting quality F is the mean of the points over examples.
* score = F x (mean retain acc unlearned / mean retain acc retrained)
  x (mean test acc unlearned / mean test acc retrained).

F is far below 1 even when both pools come from the same distribution (about 0.15 to 0.2
for Gaussian samples at N = 512): the maximum over thousands of thresholds finds chance
separations in the tails. That is how the competition's metric behaves; it is kept as is.

Where ``metric.py`` builds a dense models x thresholds matrix per example, this code sorts
each example's confidences once and counts with binary search (O(T log N)); it produces
the same integer counts, and the epsilon of a threshold is a function of the two counts only
(looked up in an (N+1) x (N+1) table).
"""

from __future__ import annotations

import numpy as np

DELTA = 1e-5
EPSILON_CAP = 50.0
_PER_UNIT = 100
_BUFFER = 2.0
_BUCKET = 0.5

__all__ = [
    "competition_score",
    "epsilons",
    "forgetting_quality",
    "logit_scaled_confidence",
]


def logit_scaled_confidence(logits, labels) -> np.ndarray:
    """Per-sample logit-scaled confidence ``log p_y - log(sum_{j != y} p_j)``, float64.

    Computed stably from log-softmax: ``log p_y = z_y - logsumexp(z)`` and
    ``log sum_{j != y} p_j = logsumexp_{j != y}(z) - logsumexp(z)``, so the result is
    ``z_y - logsumexp_{j != y}(z)``. (``metric.py`` adds 1e-45 inside each log, which only
    matters when a probability underflows in float64; this form stays finite there.)
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    if z.ndim != 2 or z.shape[0] != y.shape[0]:
        raise ValueError("logits must be (n, classes) with one label per row")
    rows = np.arange(z.shape[0])
    z_y = z[rows, y]
    others = z.copy()
    others[rows, y] = -np.inf
    m = np.max(others, axis=1, keepdims=True)
    lse_other = m[:, 0] + np.log(np.sum(np.exp(others - m), axis=1))
    return z_y - lse_other


# --------------------------------------------------------------------------- thresholds
def _torch_linspace_f32(start: float, stop: float, num: int) -> np.ndarray:
    """float32 values of ``torch.linspace(start, stop, num)`` (default dtype), as float64.

    torch's CPU kernel casts the ends to float32, takes ``step = (end - start) / (num - 1)``
    in float32 and evaluates ``start + step * i`` (first half) or ``end - step * (num-1-i)``
    (second half) with one rounding (fused multiply-add).
    """
    if num <= 0:
        return np.empty(0)
    s = np.float32(start)
    e = np.float32(stop)
    if num == 1:
        return np.array([s], dtype=np.float64)
    step = np.float64((e - s) / np.float32(num - 1))
    i = np.arange(num, dtype=np.float64)
    vals = np.where(i < num // 2, np.float64(s) + step * i, np.float64(e) - step * (num - 1 - i))
    return vals.astype(np.float32).astype(np.float64)


def _single_thresholds(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    lo = min(pos.min(), neg.min())
    hi = max(pos.max(), neg.max())
    num = int(np.ceil((hi - lo) * _PER_UNIT))
    return _torch_linspace_f32(lo, hi, num)


def _double_thresholds(pos: np.ndarray, neg: np.ndarray):
    """(peaky pool, other pool, left grid (R, L), right grid (R,)) as in metric.py."""
    pos_diff = pos.max() - pos.min()
    neg_diff = neg.max() - neg.min()
    width = neg_diff if pos_diff > neg_diff else pos_diff
    if pos_diff >= neg_diff:
        pos, neg = neg, pos
    lo = pos.min() + width - _BUFFER
    hi = pos.max() + _BUFFER
    right = np.linspace(lo, hi, num=int(np.ceil((hi - lo) * _PER_UNIT)))
    n_left = int(np.ceil(2 * _BUFFER * _PER_UNIT))
    left = np.linspace(right - width - _BUFFER, right - width + _BUFFER, num=n_left, axis=1)
    return pos, neg, left, right


def _range_capped(pos: np.ndarray, neg: np.ndarray) -> bool:
    pos_diff = pos.max() - pos.min()
    neg_diff = neg.max() - neg.min()
    largest = pos_diff if pos_diff > neg_diff else neg_diff
    smallest = neg_diff if pos_diff > neg_diff else pos_diff
    with np.errstate(divide="ignore", invalid="ignore"):
        return bool(np.float64(smallest) / np.float64(largest) < 0.01)  # 0/0 is NaN: not capped


def _split_pools(unlearned_conf, retrained_conf):
    u = np.asarray(unlearned_conf, dtype=np.float64)
    r = np.asarray(retrained_conf, dtype=np.float64)
    if u.ndim != 2 or u.shape != r.shape:
        raise ValueError("unlearned_conf and retrained_conf must both be (n_models, n_examples)")
    if u.shape[0] < 2:
        raise ValueError("need at least 2 models per pool")
    retrain_pos = np.median(r, axis=0) > np.median(u, axis=0)
    pos = np.where(retrain_pos, r, u)
    neg = np.where(retrain_pos, u, r)
    return pos, neg


def _eps_from_rates(fpr: np.ndarray, fnr: np.ndarray, delta: float) -> np.ndarray:
    """metric.py's per-threshold epsilon from float32 rates; NaN marks a discarded threshold."""
    fpr = np.asarray(fpr, dtype=np.float32)
    fnr = np.asarray(fnr, dtype=np.float32)
    one_minus = 1 - delta  # a Python float: numpy evaluates the rest in float32
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.log(one_minus - fpr) - np.log(fnr)
        b = np.log(one_minus - fnr) - np.log(fpr)
        both_nan = np.isnan(a) & np.isnan(b)
        val = np.clip(np.fmax(a, b), 0, None)
    val = np.where(both_nan, np.float32(np.nan), val)
    both_zero = (fpr == 0) & (fnr == 0)
    one_zero = (fpr * fnr == 0) & ~both_zero
    val = np.where(both_zero, np.float32(np.inf), val)
    val = np.where(one_zero, np.float32(np.nan), val)
    return val.astype(np.float32)


def _eps_table(n: int, delta: float) -> np.ndarray:
    """table[fp_count, fn_count] = epsilon (float32), -1 where the threshold is discarded."""
    counts = np.arange(n + 1)
    rates = (counts / n).astype(np.float32)  # == the float32 mean of n 0/1 values
    tab = _eps_from_rates(rates[:, None], rates[None, :], delta)
    return np.where(np.isnan(tab), np.float32(-1), tab)


def _example_eps_fast(pos, neg, table) -> float:
    if _range_capped(pos, neg):
        return EPSILON_CAP
    n = pos.shape[0]
    best = np.float32(-1)
    # single threshold: predict positive when c >= t
    thr = _single_thresholds(pos, neg)
    if thr.size:
        ps = np.sort(pos)
        ns = np.sort(neg)
        fn = np.searchsorted(ps, thr, side="left")  # pos < t
        fp = n - np.searchsorted(ns, thr, side="left")  # neg >= t
        best = max(best, table[fp, fn].max())
    # double threshold: predict the peakier pool when l <= c <= r
    peak, other, left, right = _double_thresholds(pos, neg)
    if right.size:
        pk = np.sort(peak)
        ot = np.sort(other)
        left_flat = left.reshape(-1)
        le_r_pk = np.searchsorted(pk, right, side="right")[:, None]
        le_r_ot = np.searchsorted(ot, right, side="right")[:, None]
        in_pk = le_r_pk - np.searchsorted(pk, left_flat, side="left").reshape(left.shape)
        in_ot = le_r_ot - np.searchsorted(ot, left_flat, side="left").reshape(left.shape)
        np.maximum(in_pk, 0, out=in_pk)
        np.maximum(in_ot, 0, out=in_ot)
        best = max(best, table[in_ot, n - in_pk].max())
    if best < 0:
        raise ValueError("all thresholds were discarded (metric.py's assertion)")
    return float(min(best, EPSILON_CAP))


def epsilons(unlearned_conf, retrained_conf, *, delta: float = DELTA) -> np.ndarray:
    """Per-example epsilon of the best single- and double-threshold attack (metric.py).

    ``unlearned_conf`` and ``retrained_conf`` are (n_models, n_examples) logit-scaled
    confidences. Returns float64 values in [0, 50] (each a float32 value, as the official
    code computes them). See the module docstring for the rules.
    """
    pos, neg = _split_pools(unlearned_conf, retrained_conf)
    table = _eps_table(pos.shape[0], delta)
    return np.array(
        [_example_eps_fast(pos[:, i], neg[:, i], table) for i in range(pos.shape[1])],
        dtype=np.float64,
    )


def _points(eps: np.ndarray, n_models: int) -> np.ndarray:
    max_eps = np.ceil(np.log(n_models - 1)) if n_models > 1 else 0.0
    n_buckets = int(np.floor(max_eps / _BUCKET)) if max_eps > 0 else 0
    k = np.floor(np.asarray(eps, dtype=np.float64) / _BUCKET)
    return np.where(k < n_buckets, np.exp2(-np.minimum(k, n_buckets)), 0.0)


def forgetting_quality(unlearned_conf, retrained_conf, *, delta: float = DELTA) -> float:
    """The competition's forgetting quality F in [0, 1] (higher = closer to retraining).

    Each example's epsilon (see :func:`epsilons`) earns ``2 ** -floor(eps / 0.5)`` points
    while ``eps < ceil(ln(N - 1))`` (N = number of models per pool; 7 for N = 512), else 0;
    F is the mean over examples. Even two pools from one distribution score well below 1
    (about 0.15 to 0.2 at N = 512 for Gaussian samples), as in the competition.
    """
    eps = epsilons(unlearned_conf, retrained_conf, delta=delta)
    n_models = np.asarray(unlearned_conf).shape[0]
    return float(np.sum(_points(eps, n_models)) / eps.shape[0])


def competition_score(
    F,
    retain_acc_unlearned,
    retain_acc_retrained,
    test_acc_unlearned,
    test_acc_retrained,
) -> float:
    """``F x (mean RA_u / mean RA_r) x (mean TA_u / mean TA_r)``: the competition's score.

    Accuracies may be scalars or arrays of per-model accuracies (fractions in [0, 1]).
    """
    ra = np.mean(retain_acc_unlearned) / np.mean(retain_acc_retrained)
    ta = np.mean(test_acc_unlearned) / np.mean(test_acc_retrained)
    return float(F) * float(ra) * float(ta)


# --------------------------------------------------------------------------- reference
def _epsilons_dense(unlearned_conf, retrained_conf, *, delta: float = DELTA) -> np.ndarray:
    """Literal dense (models x thresholds) transcription of metric.py, for tests only."""
    pos_all, neg_all = _split_pools(unlearned_conf, retrained_conf)
    out = []
    for i in range(pos_all.shape[1]):
        pos, neg = pos_all[:, i], neg_all[:, i]
        if _range_capped(pos, neg):
            out.append(EPSILON_CAP)
            continue
        peak, other, left, right = _double_thresholds(pos, neg)
        thr_l = left.reshape(-1)[None, :]
        thr_r = np.repeat(right, left.shape[1])[None, :]

        def is_pp(c, thr_l=thr_l, thr_r=thr_r):
            return ((thr_l <= c[:, None]) & (c[:, None] <= thr_r)).astype(np.float32)

        fnr_d = (1 - is_pp(peak)).mean(axis=0)
        fpr_d = is_pp(other).mean(axis=0)
        thr = _single_thresholds(pos, neg)[None, :]
        fpr_s = (neg[:, None] >= thr).astype(np.float32).mean(axis=0)
        fnr_s = (pos[:, None] < thr).astype(np.float32).mean(axis=0)
        fpr = np.concatenate([fpr_d, fpr_s]).astype(np.float32)
        fnr = np.concatenate([fnr_d, fnr_s]).astype(np.float32)
        eps = _eps_from_rates(fpr, fnr, delta)
        kept = eps[~np.isnan(eps)]
        if kept.size == 0:
            raise ValueError("all thresholds were discarded (metric.py's assertion)")
        out.append(kept.max())
    return np.clip(np.array(out, dtype=np.float64), 0, EPSILON_CAP)
