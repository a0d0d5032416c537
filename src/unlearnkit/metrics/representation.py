"""Forgetting in the representation: pure functions of feature matrices.

Accuracy and logit-based attacks can be satisfied by editing the output layer alone while the
features below it still encode the forgotten data (Kim et al., "Are We Truly Forgetting? A
Critical Re-examination of Machine Unlearning Evaluation Protocols", 2025). These functions
judge the features themselves: :func:`linear_cka` compares two models' features of the same
samples, :func:`probe_accuracy` asks how well a linear probe on frozen features still recognises
the forgotten classes. The model-level wrappers (``cka_retrained``, ``cka_original``,
``probe_forget_acc``) are in :mod:`unlearnkit.evaluation`.

Feature matrices are ``(N, D)`` arrays (``torch.Tensor`` or ``numpy.ndarray``), one row per
sample; they are converted to float64.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

# scikit-learn is imported where a probe is fitted, not here: importing it takes about
# 1.5 s, which every command of the CLI would pay, most of them for nothing

__all__ = ["PROBE_MAX_SAMPLES", "linear_cka", "probe_accuracy", "subsample"]

#: Default cap on the samples :func:`probe_accuracy` fits its probe on.
PROBE_MAX_SAMPLES = 5000


def _as_f64(x: Any) -> np.ndarray:
    """A float64 numpy copy of a tensor or array (detached, on the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _features(x: Any, what: str) -> np.ndarray:
    f = _as_f64(x)
    if f.ndim != 2:
        raise ValueError(f"expected (N, D) {what}, got shape {f.shape}")
    return f


def linear_cka(x: Any, y: Any) -> float:
    """``linear_cka``: linear centred kernel alignment of two feature matrices.

    Definition (Kornblith et al., "Similarity of Neural Network Representations Revisited",
    ICML 2019): with ``X`` (N, D1) and ``Y`` (N, D2) the features of the same N samples, each
    column centred (mean subtracted),

        ``CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)``

    computed in float64 in this feature-space (D x D) form, so that the cost is linear in N.
    It lies in ``[0, 1]`` (clipped there against rounding), is 1 for ``Y = X``, and is invariant
    to orthogonal transforms and isotropic scaling of either matrix (not to an arbitrary
    invertible linear map, e.g. scaling the columns differently).

    Degenerate case: when either matrix is constant (every column constant, so nothing is left
    after centring; this includes N <= 1) the similarity is undefined and ``nan`` is returned.
    ``nan`` is also returned for N = 0.

    Args:
        x: ``(N, D1)`` features of the first model.
        y: ``(N, D2)`` features of the second model, same samples in the same order.

    Returns:
        The linear CKA, or ``nan`` in the degenerate case.

    Raises:
        ValueError: if an input is not 2-D or the numbers of rows differ.
    """
    a, b = _features(x, "features"), _features(y, "features")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"the feature matrices hold different samples: {a.shape[0]} vs "
                         f"{b.shape[0]} rows")
    if a.shape[0] == 0:
        return float("nan")
    a = a - a.mean(axis=0, keepdims=True)
    b = b - b.mean(axis=0, keepdims=True)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if not (na > 0 and nb > 0):  # constant (or empty) features; also catches nan
        return float("nan")
    a, b = a / na, b / nb  # CKA is scale-invariant: this keeps the products in range
    cross = np.linalg.norm(b.T @ a) ** 2
    value = cross / (np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b))
    return float(np.clip(value, 0.0, 1.0))


def subsample(labels: np.ndarray, max_samples: int, seed: int) -> np.ndarray:
    """Sorted indices of at most ``max_samples`` samples, drawn per label in proportion to its
    count (at least one of each label), seeded."""
    n = len(labels)
    if n <= max_samples:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    values, counts = np.unique(labels, return_counts=True)
    quota = np.maximum(1, np.floor(counts * max_samples / n).astype(int))
    keep = [rng.choice(np.flatnonzero(labels == v), size=int(min(q, c)), replace=False)
            for v, q, c in zip(values, quota, counts, strict=True)]
    return np.sort(np.concatenate(keep))


def probe_accuracy(
    features: Any,
    labels: Any,
    classes: Iterable[int],
    *,
    folds: int = 5,
    seed: int = 0,
    max_samples: int | None = PROBE_MAX_SAMPLES,
) -> float:
    """``probe_forget_acc``: how well a linear probe on frozen features recognises ``classes``.

    A linear probe (scikit-learn ``LogisticRegression``, L2, ``C = 1``, on standardised
    features) is fitted to predict ``labels`` from ``features`` by stratified ``folds``-fold
    cross-validation (shuffled with ``seed``); the value is the cross-validated accuracy on the
    samples whose label is in ``classes``, i.e. the recall of their true labels by a probe that
    never saw them. With ``classes`` the forgotten classes and the features those of the
    unlearned model on D_r + D_f, a high value means the features still tell the forgotten
    classes apart even if the output layer no longer does (Kim et al., 2025). Compare with the
    retrained model's value: features learnt on other classes often separate an unseen class
    to some degree, so "forgotten" is not 0.

    Cost: when there are more than ``max_samples`` samples, the probe is fitted on a seeded,
    stratified subsample of ``max_samples`` (each label keeps its share, at least one sample);
    ``None`` uses all samples. The fits run on one BLAS thread (about 0.15 s on digits, 5 s
    for 5000 x 512 features). The probe stops after 1000 iterations (convergence warnings
    are silenced: the value is a probe's, not an optimum's).

    Args:
        features: ``(N, D)`` frozen features.
        labels: ``(N,)`` integer labels.
        classes: the labels to report the accuracy on (e.g. the forgotten classes).
        folds: the number of cross-validation folds (at least 2; fewer when no label has
            that many samples, and nan when none has two).
        seed: seeds the subsample and the folds.
        max_samples: the cap on the number of samples the probe is fitted on.

    Returns:
        The cross-validated accuracy on the samples of ``classes``, in ``[0, 1]``; ``nan`` when
        no sample has one of those labels.

    Raises:
        ValueError: on mismatched shapes, fewer than two distinct labels, or ``folds < 2``.
    """
    f = _features(features, "features")
    y = np.asarray(labels.detach().cpu().numpy() if hasattr(labels, "detach") else labels)
    y = y.reshape(-1).astype(np.int64)
    if len(y) != f.shape[0]:
        raise ValueError(f"{f.shape[0]} feature rows but {len(y)} labels")
    if folds < 2:
        raise ValueError(f"probe_accuracy needs at least 2 folds, got {folds}")
    targets = np.array(sorted({int(c) for c in classes}), dtype=np.int64)
    if not np.isin(y, targets).any():
        return float("nan")
    if max_samples is not None:
        idx = subsample(y, max_samples, seed)
        f, y = f[idx], y[idx]
    labels_present, counts = np.unique(y, return_counts=True)
    if len(labels_present) < 2:
        raise ValueError("probe_accuracy needs samples of at least two labels to fit a probe")
    # stratified folds need a label with at least as many samples as folds: fewer folds on
    # tiny data, and nan when no label has two samples (nothing to cross-validate)
    folds = min(folds, int(counts.max()))
    if folds < 2:
        return float("nan")
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    # one BLAS thread: these fits are small, and threads oversubscribed on a shared machine
    # made them up to ~20x slower (5000 x 512 features: 95 s vs 5 s on 2 cores)
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        # a label with fewer samples than folds only draws sklearn's warning
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        pred = cross_val_predict(probe, f, y, cv=cv)
    mask = np.isin(y, targets)
    return float(np.mean(pred[mask] == y[mask]))
