"""Membership inference attacks (MIA): pure functions of model outputs.

Inputs are ``torch.Tensor`` or ``numpy.ndarray`` (per-sample losses, softmax probabilities,
true-class probabilities, logits and labels); results are Python floats.

Convention (DESIGN.md, ``mia_*``): every figure is the attack's member rate or accuracy on
D_f, **higher = more remembered**, whichever attack. Public papers report some of these
attacks the other way round; each docstring says how to convert.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# scikit-learn is imported in each function that fits an attack, not here: importing it takes
# about 1.5 s, which every command of the CLI would pay, most of them for nothing

__all__ = [
    "entropy",
    "mia_confidence",
    "mia_entropy",
    "mia_loss_cv",
    "per_sample_loss",
]


def _as_f64(x: Any) -> np.ndarray:
    """A float64 numpy copy of a tensor or array (detached, on the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _column(x: Any, name: str) -> np.ndarray:
    a = _as_f64(x).reshape(-1)
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    return a.reshape(-1, 1)


def per_sample_loss(logits: Any, labels: Any) -> np.ndarray:
    """Per-sample cross-entropy loss ``-log softmax(logits)[y]`` in float64.

    The feature of the NeurIPS 2023 starting-kit attack (:func:`mia_loss_cv`); equal to
    ``torch.nn.CrossEntropyLoss(reduction="none")`` up to float rounding.

    Args:
        logits: ``(N, C)`` logits.
        labels: ``(N,)`` integer class labels.

    Returns:
        A float64 array of N losses.
    """
    z = _as_f64(logits)
    y = np.asarray(labels.detach().cpu().numpy() if hasattr(labels, "detach") else labels)
    y = y.astype(np.int64).reshape(-1)
    if z.ndim != 2 or z.shape[0] != y.shape[0]:
        raise ValueError(f"expected (N, C) logits and (N,) labels, got {z.shape}, {y.shape}")
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return log_norm - z[np.arange(len(y)), y]


def entropy(probs: Any) -> np.ndarray:
    """Per-row Shannon entropy ``-sum_c p_c log p_c`` (natural log, ``0 log 0 = 0``).

    The feature of the SSD / bad-teacher attack (:func:`mia_entropy`).

    Args:
        probs: ``(N, C)`` probabilities (rows summing to 1), or one ``(C,)`` distribution.

    Returns:
        A float64 array of N entropies (a 0-d array for a single distribution).
    """
    p = _as_f64(probs)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return -terms.sum(axis=-1)


def mia_loss_cv(
    forget_losses: Any, test_losses: Any, *, n_splits: int = 10, seed: int = 0
) -> float:
    """``mia_loss_cv``: the NeurIPS 2023 unlearning competition starting kit's attack.

    Definition: the feature is the per-sample loss (:func:`per_sample_loss`); the larger of
    the two sets is subsampled without replacement (seeded) to the smaller's size; labels are
    forget = 1 (member), test = 0; the attack is ``sklearn`` ``LogisticRegression()`` with its
    defaults, scored by ``cross_val_score(..., scoring="accuracy")`` over
    ``StratifiedShuffleSplit(n_splits=n_splits, random_state=seed)`` (its default 10 %
    held-out fraction); the result is the mean cross-validated accuracy. Higher = more
    remembered; the ideal is the retrained model's value, about 0.5. Source: the starting-kit
    notebook of the NeurIPS 2023 Machine Unlearning challenge (``simple_mia``; Triantafillou
    et al., "Are we making progress in unlearning?", 2024).

    The samples are stacked test first, then forget, as in the kit, so that with equal-size
    sets and ``seed=0`` the splits are the kit's. The kit subsamples with the unseeded global
    numpy generator; here a ``numpy.random.default_rng(seed)`` permutation is used.

    Args:
        forget_losses: per-sample losses on D_f.
        test_losses: per-sample losses on the test set.
        n_splits: number of shuffle splits.
        seed: seeds the subsampling and the splits (the kit's ``random_state=0``).

    Returns:
        The mean cross-validated attack accuracy on D_f vs test.
    """
    forget = _column(forget_losses, "forget_losses")
    test = _column(test_losses, "test_losses")
    n = min(len(forget), len(test))
    rng = np.random.default_rng(seed)
    if len(forget) > n:
        forget = forget[rng.permutation(len(forget))[:n]]
    if len(test) > n:
        test = test[rng.permutation(len(test))[:n]]
    x = np.concatenate([test, forget])
    y = np.concatenate([np.zeros(n, dtype=np.int64), np.ones(n, dtype=np.int64)])
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedShuffleSplit, cross_val_score

    cv = StratifiedShuffleSplit(n_splits=n_splits, random_state=seed)
    scores = cross_val_score(LogisticRegression(), x, y, cv=cv, scoring="accuracy")
    return float(np.mean(scores))


def mia_entropy(retain_probs: Any, test_probs: Any, forget_probs: Any) -> float:
    """``mia_entropy``: the SSD / bad-teacher entropy attack; member rate on D_f.

    Definition: the feature is the softmax entropy (:func:`entropy`); a
    ``LogisticRegression(class_weight="balanced")`` is trained on retain (member = 1) vs test
    (non-member = 0); the result is the fraction of D_f predicted member. Higher = more
    remembered, as the papers report it. From Chundawat et al., "Can Bad Teaching Induce
    Forgetting?" (AAAI 2023) and Foster et al., "Fast Machine Unlearning Without Retraining
    Through Selective Synaptic Dampening" (SSD, AAAI 2024); public code
    ``get_membership_attack_prob`` in their ``metrics.py``.

    Differences from the public code: the bad-teacher repository's current code uses an
    ``SVC(C=3, gamma="auto", kernel="rbf")`` instead (SSD's uses the logistic regression);
    SSD passes ``multi_class="multinomial"``, which for two classes in scikit-learn < 1.5
    fits a symmetric parametrisation whose L2 penalty equals a binomial fit with ``C = 2``;
    this function uses scikit-learn's binomial default ``C = 1``.

    Args:
        retain_probs: ``(N_r, C)`` softmax outputs on D_r (or a subset of it).
        test_probs: ``(N_t, C)`` softmax outputs on the test set.
        forget_probs: ``(N_f, C)`` softmax outputs on D_f.

    Returns:
        The fraction of D_f that the attack calls member.
    """
    x_r = _column(entropy(retain_probs), "retain_probs")
    x_t = _column(entropy(test_probs), "test_probs")
    x_f = _column(entropy(forget_probs), "forget_probs")
    x = np.concatenate([x_r, x_t])
    y = np.concatenate([np.ones(len(x_r), dtype=np.int64), np.zeros(len(x_t), dtype=np.int64)])
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(class_weight="balanced")
    clf.fit(x, y)
    return float(clf.predict(x_f).mean())


def mia_confidence(
    retain_true_probs: Any,
    test_true_probs: Any,
    forget_true_probs: Any,
    *,
    seed: int | None = 0,
) -> float:
    """``mia_confidence``: the SalUn / Unlearn-Sparse confidence attack; member rate on D_f.

    Definition: the feature is the softmax probability of the true class; an
    ``SVC(C=3, gamma="auto", kernel="rbf")`` is trained on a subset of D_r of the test set's
    size (member = 1) vs the test set (non-member = 0); the result is the fraction of D_f
    predicted member. Higher = more remembered. From Jia et al., "Model Sparsity Can Simplify
    Machine Unlearning" (NeurIPS 2023) and Fan et al., "SalUn" (ICLR 2024), public code
    ``SVC_MIA`` (``evaluation/SVC_MIA.py``), confidence feature.

    Their published "MIA-efficacy" is ``1 - mia_confidence``: they report the fraction of
    D_f predicted *non*-member (higher = better forgetting there); convert before comparing.

    The public code takes the *first* ``len(test)`` retain samples; pass ``seed=None`` for
    that, or a seed for a random subset without replacement. If D_r is smaller than the test
    set, the test set is subsampled to D_r's size the same way, so that the attack is always
    trained on two classes of equal size (an unbalanced SVC calls every sample non-member).

    Args:
        retain_true_probs: ``(N_r,)`` true-class probabilities on D_r.
        test_true_probs: ``(N_t,)`` true-class probabilities on the test set.
        forget_true_probs: ``(N_f,)`` true-class probabilities on D_f.
        seed: seed of the retain subset; ``None`` takes the first ``N_t`` rows.

    Returns:
        The fraction of D_f that the attack calls member.
    """
    x_r = _column(retain_true_probs, "retain_true_probs")
    x_t = _column(test_true_probs, "test_true_probs")
    x_f = _column(forget_true_probs, "forget_true_probs")
    n = min(len(x_r), len(x_t))
    if seed is None:
        x_r, x_t = x_r[:n], x_t[:n]
    else:
        rng = np.random.default_rng(seed)
        x_r = x_r[np.sort(rng.permutation(len(x_r))[:n])]
        x_t = x_t[np.sort(rng.permutation(len(x_t))[:n])]
    x = np.concatenate([x_r, x_t])
    y = np.concatenate([np.ones(len(x_r), dtype=np.int64), np.zeros(len(x_t), dtype=np.int64)])
    from sklearn.svm import SVC

    clf = SVC(C=3, gamma="auto", kernel="rbf")
    clf.fit(x, y)
    return float(clf.predict(x_f).mean())
