"""``mia_lira``: a per-example likelihood-ratio attack on pools of models (U-LiRA style).

Inputs are two ``(n_models, n_examples)`` arrays of logit-scaled confidences on D_f
(:func:`unlearnkit.metrics.logit_scaled_confidence`): one row per unlearned model, one row per
retrained model. The result is a Python float.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["mia_lira", "mia_lira_per_example"]

_LOG_2PI = float(np.log(2.0 * np.pi))


def _pool(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be (n_models, n_examples), got shape {a.shape}")
    if a.shape[0] < 3:
        raise ValueError(
            f"{name} has {a.shape[0]} models; the leave-one-out fit needs at least 3 per pool"
        )
    if a.shape[1] == 0:
        raise ValueError(f"{name} has no examples")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite confidences")
    return a


def _log_pdf(x: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    return -0.5 * (_LOG_2PI + np.log(var) + (x - mean) ** 2 / var)


def _loo_moments(a: np.ndarray, min_var: float) -> tuple[np.ndarray, np.ndarray]:
    """Per model i and example e: mean and variance of column e without row i."""
    n = a.shape[0]
    total = a.sum(axis=0)
    mean = (total - a) / (n - 1)
    # sum of squared deviations of the others from their own mean, stably:
    # sum_{j != i} (a_j - m)^2 = S2 - (a_i - m)^2 - (n - 1) (mean_i - m)^2, m = full mean
    m = total / n
    s2 = ((a - m) ** 2).sum(axis=0)
    ss = s2 - (a - m) ** 2 - (n - 1) * (mean - m) ** 2
    var = np.maximum(ss / (n - 1), min_var)
    return mean, var


def mia_lira_per_example(
    unlearned_conf: Any, retrained_conf: Any, *, min_std: float = 1e-4
) -> np.ndarray:
    """Per forget example, the balanced accuracy of the likelihood-ratio attack.

    See :func:`mia_lira`, whose result is the mean of this array.
    """
    u = _pool(unlearned_conf, "unlearned_conf")
    r = _pool(retrained_conf, "retrained_conf")
    if u.shape[1] != r.shape[1]:
        raise ValueError(
            f"the pools hold different examples: {u.shape[1]} vs {r.shape[1]} columns"
        )
    if not min_std > 0:
        raise ValueError(f"min_std must be > 0, got {min_std}")
    min_var = float(min_std) ** 2
    u_mean_all, r_mean_all = u.mean(axis=0), r.mean(axis=0)
    u_var_all = np.maximum(u.var(axis=0), min_var)
    r_var_all = np.maximum(r.var(axis=0), min_var)
    u_mean_loo, u_var_loo = _loo_moments(u, min_var)
    r_mean_loo, r_var_loo = _loo_moments(r, min_var)
    # a held-out unlearned model: its own pool's Gaussian without it, the other pool's whole
    llr_u = _log_pdf(u, u_mean_loo, u_var_loo) - _log_pdf(u, r_mean_all, r_var_all)
    llr_r = _log_pdf(r, u_mean_all, u_var_all) - _log_pdf(r, r_mean_loo, r_var_loo)
    # "unlearned" when the ratio favours it; an exact tie is a coin flip (counts one half)
    tpr = ((llr_u > 0) + 0.5 * (llr_u == 0)).mean(axis=0)
    tnr = ((llr_r < 0) + 0.5 * (llr_r == 0)).mean(axis=0)
    return 0.5 * (tpr + tnr)


def mia_lira(unlearned_conf: Any, retrained_conf: Any, *, min_std: float = 1e-4) -> float:
    """``mia_lira``: how well a per-example likelihood-ratio test tells unlearned from retrained.

    Definition: for each forget example, one Gaussian is fitted to its logit-scaled confidence
    under the unlearned models and one under the retrained models. Each model in turn is held
    out: the Gaussian of its own pool is refitted without it (leave-one-out), the other pool's
    uses all its models, and the model is called "unlearned" when the likelihood ratio
    ``N(c; mu_u, s_u) / N(c; mu_r, s_r)`` exceeds 1 (an exact tie counts as half right). Per
    example, the balanced accuracy is ``(TPR on unlearned + TNR on retrained) / 2``; the
    result is its mean over forget examples.

    Reading: 0.5 means the unlearned models are indistinguishable from retrained ones on D_f
    (ideal); 1.0 means every model is told apart on every example. Higher = more
    remembered, as DESIGN.md's ``mia_*`` convention says. A deterministic method (every
    "unlearned" model the same) scores about 1: its pool has no spread, so any retrained
    model falls outside it.

    In the spirit of U-LiRA (Hayes et al., "Inexact Unlearning Needs More Careful Evaluations
    to Avoid a False Sense of Privacy", 2024), which fits per-example Gaussians to shadow
    unlearned and retrained models; this is the simpler population version on the model pools
    of the NeurIPS 2023 competition score (one original, N unlearned seeds, N retrained
    seeds), so it needs no extra training beyond :func:`forgetting_quality`'s.

    Args:
        unlearned_conf: ``(N_u, E)`` logit-scaled confidences, one row per unlearned model.
        retrained_conf: ``(N_r, E)`` the same for the retrained models (same E examples).
        min_std: floor of every fitted standard deviation (a pool without spread).

    Returns:
        The mean balanced accuracy over the E examples, in [0, 1].

    Raises:
        ValueError: fewer than 3 models in a pool, mismatched examples, non-finite values.
    """
    return float(np.mean(mia_lira_per_example(unlearned_conf, retrained_conf, min_std=min_std)))
