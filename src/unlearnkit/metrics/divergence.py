"""Divergence and distance to reference models: pure functions of logits.

All functions take two ``(N, C)`` arrays of logits (``torch.Tensor`` or ``numpy.ndarray``) for
the same N inputs, normally the forget set D_f, and return a Python float (``nan`` for N = 0).
Softmaxes are computed from the logits in float64 with the usual max shift, and ``0 log 0 = 0``.

Names follow DESIGN.md ("Metric names and conventions"): ``js_divergence``,
``activation_distance``, ``zrf``; ``zrf_compat`` is the public code's variant under its own
name (see DESIGN.md, "Known traps"); ``avg_gap`` is SalUn's summary.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "activation_distance",
    "avg_gap",
    "js_divergence",
    "js_divergence_per_sample",
    "zrf",
    "zrf_compat",
]

LN2 = math.log(2.0)


def _as_f64(x: Any) -> np.ndarray:
    """A float64 numpy copy of a tensor or array (detached, on the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _log_softmax(logits: Any) -> np.ndarray:
    z = _as_f64(logits)
    if z.ndim != 2:
        raise ValueError(f"expected (N, C) logits, got shape {z.shape}")
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _pair(p_logits: Any, q_logits: Any) -> tuple[np.ndarray, np.ndarray]:
    lp, lq = _log_softmax(p_logits), _log_softmax(q_logits)
    if lp.shape != lq.shape:
        raise ValueError(f"logit shapes differ: {lp.shape} vs {lq.shape}")
    return lp, lq


def _log_mid_ratio(d: np.ndarray) -> np.ndarray:
    """``log(m / p)`` for ``m = (p + q) / 2`` as a function of ``d = log q - log p``.

    ``log((1 + e^d) / 2)``, evaluated as ``log1p(expm1(d) / 2)`` near 0 (exactly 0 at
    ``d = 0``, accurate for small ``d``) and as ``logaddexp(0, d) - ln 2`` elsewhere (no
    overflow for large ``d``).
    """
    with np.errstate(over="ignore", invalid="ignore"):
        small = np.log1p(0.5 * np.expm1(np.minimum(d, 1.0)))
        large = np.logaddexp(0.0, d) - LN2
    return np.where(d <= 1.0, small, large)


def _kl_to_mid(p: np.ndarray, log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """Row sums of ``p * log(p / m)``, ``m = (p + q) / 2``, with ``0 log 0 = 0``."""
    with np.errstate(invalid="ignore"):
        terms = np.where(p > 0, -p * _log_mid_ratio(log_q - log_p), 0.0)
    return terms.sum(axis=1)


def js_divergence_per_sample(p_logits: Any, q_logits: Any) -> np.ndarray:
    """Per-row Jensen-Shannon divergence (natural log) between two softmax outputs.

    ``JS(p, q) = 1/2 KL(p || m) + 1/2 KL(q || m)`` with ``m = (p + q) / 2``; each value lies
    in ``[0, ln 2]`` (clipped there against rounding).

    Args:
        p_logits: ``(N, C)`` logits of the first model.
        q_logits: ``(N, C)`` logits of the second model, same inputs.

    Returns:
        A float64 array of N divergences.
    """
    lp, lq = _pair(p_logits, q_logits)
    p, q = np.exp(lp), np.exp(lq)
    js = 0.5 * _kl_to_mid(p, lp, lq) + 0.5 * _kl_to_mid(q, lq, lp)
    return np.clip(js, 0.0, LN2)


def js_divergence(p_logits: Any, q_logits: Any) -> float:
    """``js_divergence``: mean over samples of the Jensen-Shannon divergence.

    Definition (DESIGN.md, ``js_divergence``): the mean over the N rows (normally D_f, the
    unlearned model vs the retrained one) of ``JS(p, q) = 1/2 KL(p || m) + 1/2 KL(q || m)``,
    ``m = (p + q) / 2``, with ``p = softmax(p_logits)``, ``q = softmax(q_logits)`` computed in
    float64, natural log and ``0 log 0 = 0``. It is symmetric, 0 for identical outputs and
    bounded by ``ln 2`` (reached for disjoint supports). Used, e.g., in Chundawat et al.,
    "Can Bad Teaching Induce Forgetting?" (AAAI 2023), where ZRF is built on it.

    This is *not* the value of the public code's ``JSDiv`` (``F.kl_div(log p, m)`` is
    KL(m || p), averaged over all N x C elements); see :func:`zrf_compat`.

    Args:
        p_logits: ``(N, C)`` logits of the first model (e.g. the unlearned one).
        q_logits: ``(N, C)`` logits of the second model (e.g. the retrained one).

    Returns:
        The mean JS divergence in nats, ``nan`` for N = 0.
    """
    js = js_divergence_per_sample(p_logits, q_logits)
    return float(js.mean()) if js.size else float("nan")


def activation_distance(p_logits: Any, q_logits: Any) -> float:
    """``activation_distance``: mean L2 distance between two models' softmax outputs.

    Definition (DESIGN.md, ``activation_distance``): the mean over the N rows (normally D_f,
    the unlearned model vs the retrained one) of ``|| softmax(p_logits) - softmax(q_logits) ||_2``
    (softmax in float64). It lies in ``[0, sqrt 2]``. From Chundawat et al., "Can Bad Teaching
    Induce Forgetting?" (AAAI 2023), also used by SSD (Foster et al., AAAI 2024).

    Args:
        p_logits: ``(N, C)`` logits of the first model.
        q_logits: ``(N, C)`` logits of the second model, same inputs.

    Returns:
        The mean L2 distance, ``nan`` for N = 0.
    """
    lp, lq = _pair(p_logits, q_logits)
    if lp.shape[0] == 0:
        return float("nan")
    return float(np.linalg.norm(np.exp(lp) - np.exp(lq), axis=1).mean())


def zrf(unlearned_logits: Any, random_logits: Any) -> float:
    """``zrf``: the Zero Retrain Forgetting score, ``1 - mean JS``.

    Definition (DESIGN.md, ``zrf``): ``1 - js_divergence(unlearned, random)`` on D_f, where
    ``random`` is a randomly initialised model of the same architecture (the "incompetent
    teacher"). It lies in ``[1 - ln 2, 1]``; higher means the unlearned model behaves more like
    the random one on D_f. From Chundawat et al., "Can Bad Teaching Induce Forgetting?
    Unlearning in Deep Networks using an Incompetent Teacher" (AAAI 2023).

    Published ZRF figures come from the public code, whose value differs; compare those with
    :func:`zrf_compat`.

    Args:
        unlearned_logits: ``(N, C)`` logits of the unlearned model on D_f.
        random_logits: ``(N, C)`` logits of the randomly initialised model on D_f.

    Returns:
        The ZRF score, ``nan`` for N = 0.
    """
    return 1.0 - js_divergence(unlearned_logits, random_logits)


def zrf_compat(unlearned_logits: Any, random_logits: Any) -> float:
    """``zrf_compat``: ZRF as the bad-teacher / SSD public code computes it.

    Reproduces ``UnLearningScore`` of the public code of Chundawat et al. (AAAI 2023,
    github.com/vikram2000b/bad-teaching-unlearning, ``metrics.py``), reused unchanged by SSD
    (Foster et al., AAAI 2024, github.com/if-loops/selective-synaptic-dampening). That code
    evaluates ``1 - (1/2 F.kl_div(log p, m) + 1/2 F.kl_div(log q, m))`` on the softmax outputs of
    the whole forget set at once. ``F.kl_div(input, target)`` with its default reduction
    ``"mean"`` returns ``sum target * (log target - input) / (N * C)``, so the value is::

        1 - 1/(2 N C) * sum_{i, c} m_ic * ((log m_ic - log p_ic) + (log m_ic - log q_ic))

    How it differs from :func:`zrf`:

    * the KL direction is reversed: KL(m || p) and KL(m || q) instead of KL(p || m) and
      KL(q || m) (the result is not the Jensen-Shannon divergence, and it is unbounded);
    * the sum over classes is divided by C as well as N ("mean" over all N x C elements),
      so the divergence term is 1/C of a per-sample mean and the score sits close to 1 for
      most models.

    The public code uses float32 softmaxes; this function uses float64 softmaxes of the same
    logits, so values agree to float32 rounding (about 1e-7), except where a float32 softmax
    underflows to exactly 0, which makes the public value ``-inf``.

    Args:
        unlearned_logits: ``(N, C)`` logits of the unlearned model on D_f.
        random_logits: ``(N, C)`` logits of the randomly initialised model on D_f.

    Returns:
        The public code's ZRF value, ``nan`` for N = 0.
    """
    lp, lq = _pair(unlearned_logits, random_logits)
    if lp.size == 0:
        return float("nan")
    log_m = np.logaddexp(lp, lq) - LN2
    m = np.exp(log_m)
    kl_m_p = (m * (log_m - lp)).mean()  # F.kl_div(log p, m), reduction "mean"
    kl_m_q = (m * (log_m - lq)).mean()
    return float(1.0 - (0.5 * kl_m_p + 0.5 * kl_m_q))


DEFAULT_GAP_KEYS = ("forget_acc", "retain_acc", "test_acc", "mia_confidence")


def avg_gap(
    unlearned: Mapping[str, float],
    retrained: Mapping[str, float],
    keys: Sequence[str] = DEFAULT_GAP_KEYS,
) -> float:
    """``avg_gap``: SalUn's average absolute gap to the retrained model.

    Definition: ``mean_k |unlearned[k] - retrained[k]|`` over ``keys``; by default forget,
    retain and test accuracy and the MIA figure (``mia_confidence``, the SalUn attack; the gap
    of its member rate equals the gap of SalUn's "MIA-efficacy" = 1 - member rate). From
    Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency in
    Both Image Classification and Generation" (ICLR 2024), "Avg. Gap". Values are fractions
    in [0, 1] as in DESIGN.md (SalUn reports percentage points: multiply by 100). Lower is
    better; 0 means indistinguishable from retraining on these figures.

    Args:
        unlearned: metric name -> value for the unlearned model.
        retrained: metric name -> value for the retrained model.
        keys: the metric names to average over; each must be in both mappings.

    Returns:
        The mean absolute gap.

    Raises:
        KeyError: if a key is missing from either mapping.
        ValueError: if ``keys`` is empty.
    """
    keys = tuple(keys)
    if not keys:
        raise ValueError("avg_gap needs at least one key")
    missing = [k for k in keys if k not in unlearned or k not in retrained]
    if missing:
        raise KeyError(f"avg_gap: missing metrics {missing}")
    return float(np.mean([abs(float(unlearned[k]) - float(retrained[k])) for k in keys]))
