"""The power of the membership-inference attacks: can the attack tell members at all?

A figure of :mod:`unlearnkit.metrics.mia` reads "higher = more remembered" only if the attack
can tell members from non-members on the model at hand. On a model that barely overfits it
cannot, and its figure is then decided by where an arbitrary threshold falls, not by
membership: ``mia_entropy`` on a forgotten class can score the original 0.03 and the retrained
model 0.46, ranking the original as the best forgetter. Two checks, both pure functions:

- **power** (``<attack>_power``): the same attack (feature and classifier) at telling members
  (D_r) from non-members (the test set) on the same model, as a cross-validated ROC AUC; 0.5 =
  no power, 1 = perfect. D_r is subsampled (seeded) to the test set's size, both to at most
  :data:`POWER_MAX_SAMPLES`.
- **separation** (``<attack>_separation``): the attack's figure on the original model minus
  its figure on the retrained one (:func:`mia_separation`). Signed: an attack that calls the
  retrained model more "remembering" than the original ranks backwards.

:func:`mia_informative` is the one rule that reads them (thresholds :data:`MIN_POWER` and
:data:`MIN_SEPARATION`, justified there); :func:`uninformative_mias` and :func:`power_note`
are what the tables and the report use.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

from unlearnkit.metrics.mia import _column, entropy

# scikit-learn is imported in each function that fits an attack, not here: importing it takes
# about 1.5 s, which every command of the CLI would pay, most of them for nothing
if TYPE_CHECKING:
    from sklearn.base import BaseEstimator

__all__ = [
    "MIA_FIGURES",
    "MIN_POWER",
    "MIN_SEPARATION",
    "POWER_MAX_SAMPLES",
    "POWER_SPLITS",
    "attack_auc",
    "mia_confidence_power",
    "mia_entropy_power",
    "mia_informative",
    "mia_loss_cv_power",
    "mia_separation",
    "no_power_reasons",
    "power_note",
    "uninformative_mias",
]

#: The MIA figures that carry a power check (``mia_lira`` is judged on pools, not here).
MIA_FIGURES: tuple[str, ...] = ("mia_loss_cv", "mia_entropy", "mia_confidence")

#: At most this many members and as many non-members enter a power estimate (seeded subsets):
#: the null standard error of an AUC on 2 x 1000 samples is about 0.013, a quarter of
#: :data:`MIN_POWER`'s margin, and the five RBF SVC fits of ``mia_confidence_power`` take about
#: 0.25 s on one CPU thread (about 1 s at 2000).
POWER_MAX_SAMPLES = 1000

#: Folds of the cross-validated AUC (stratified, shuffled, seeded).
POWER_SPLITS = 5

#: Below this power AUC an attack is deemed to have no power. 0.55 is 0.05 above chance: on
#: the smallest test set the library ships (digits: 360 samples, 323 outside a forgotten
#: class) the null standard error of an AUC is sqrt((n1 + n2 + 1) / (12 n1 n2)) = 0.021 to
#: 0.023, so 0.55 is about 2.2 standard errors above chance (one-sided p ~ 0.015); on larger
#: test sets it is many more. A cross-validated AUC of a useless attack also tends to fall *below*
#: 0.5 (the folds' fitted directions disagree), which the threshold absorbs. An attack with
#: power 0.55 ranks a random member above a random non-member 55 % of the time: its member
#: rates can move by a few points for reasons other than membership, so figures weaker than
#: that are not ranked.
MIN_POWER = 0.55

#: Below this separation (figure on the original minus on the retrained model) the attack
#: does not tell remembering from forgetting on this forget request: a method's figure then
#: sits between two references that the attack cannot tell apart. 0.05 is the same margin as
#: :data:`MIN_POWER`'s, on the scale of a member rate or accuracy, and about 2 binomial
#: standard errors of a member rate on 400 samples (sqrt(0.25 / 400) = 0.025).
MIN_SEPARATION = 0.05


def _subsample(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= n else x[np.sort(rng.permutation(len(x))[:n])]


def attack_auc(
    member_features: Any,
    nonmember_features: Any,
    make_classifier: Callable[[], BaseEstimator],
    *,
    n_splits: int = POWER_SPLITS,
    seed: int = 0,
    max_samples: int | None = POWER_MAX_SAMPLES,
) -> float:
    """An attack's cross-validated ROC AUC at telling members from non-members.

    Both sets are subsampled without replacement (seeded, ``numpy.random.default_rng(seed)``)
    to the smaller one's size, and to at most ``max_samples``; labels are member = 1,
    non-member = 0; the attack ``make_classifier()`` is scored by ``cross_val_score(...,
    scoring="roc_auc")`` (its ``decision_function``) over ``StratifiedKFold(n_splits,
    shuffle=True, random_state=seed)``; the result is the mean of the folds' AUCs. Computed on
    one thread (``threadpool_limits(1)``): the fits are tiny, and threads would only compete
    with a benchmark's other workers.

    Args:
        member_features: one feature per member (e.g. per-sample losses on D_r).
        nonmember_features: one feature per non-member (e.g. on the test set).
        make_classifier: builds the attack's unfitted classifier.
        n_splits: number of folds; each set needs at least this many samples.
        seed: seeds the subsets and the folds.
        max_samples: cap on each set's size (``None``: no cap).

    Returns:
        The mean held-out AUC in [0, 1]: 0.5 = no power, 1 = members always told apart.
    """
    x_m = _column(member_features, "member_features")
    x_n = _column(nonmember_features, "nonmember_features")
    n = min(len(x_m), len(x_n), max_samples if max_samples is not None else len(x_m))
    if n < n_splits:
        raise ValueError(f"the power of an attack needs at least n_splits={n_splits} members "
                         f"and non-members; got {len(x_m)} and {len(x_n)}")
    rng = np.random.default_rng(seed)
    x_m, x_n = _subsample(x_m, n, rng), _subsample(x_n, n, rng)
    x = np.concatenate([x_n, x_m])
    y = np.concatenate([np.zeros(n, dtype=np.int64), np.ones(n, dtype=np.int64)])
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore")  # convergence chatter on a featureless set
        scores = cross_val_score(make_classifier(), x, y, cv=cv, scoring="roc_auc")
    return float(np.mean(scores))


def mia_loss_cv_power(retain_losses: Any, test_losses: Any, *, n_splits: int = POWER_SPLITS,
                      seed: int = 0, max_samples: int | None = POWER_MAX_SAMPLES) -> float:
    """``mia_loss_cv_power``: :func:`attack_auc` of :func:`~unlearnkit.metrics.mia_loss_cv`'s
    attack (per-sample loss, ``LogisticRegression()``), D_r (members) vs test."""
    from sklearn.linear_model import LogisticRegression

    return attack_auc(retain_losses, test_losses, LogisticRegression, n_splits=n_splits,
                      seed=seed, max_samples=max_samples)


def mia_entropy_power(retain_probs: Any, test_probs: Any, *, n_splits: int = POWER_SPLITS,
                      seed: int = 0, max_samples: int | None = POWER_MAX_SAMPLES) -> float:
    """``mia_entropy_power``: :func:`attack_auc` of :func:`~unlearnkit.metrics.mia_entropy`'s
    attack (softmax entropy, ``LogisticRegression(class_weight="balanced")``), D_r vs test.

    Args:
        retain_probs: ``(N_r, C)`` softmax outputs on D_r.
        test_probs: ``(N_t, C)`` softmax outputs on the test set.
    """
    from sklearn.linear_model import LogisticRegression

    return attack_auc(entropy(retain_probs), entropy(test_probs),
                      lambda: LogisticRegression(class_weight="balanced"), n_splits=n_splits,
                      seed=seed, max_samples=max_samples)


def mia_confidence_power(retain_true_probs: Any, test_true_probs: Any, *,
                         n_splits: int = POWER_SPLITS, seed: int = 0,
                         max_samples: int | None = POWER_MAX_SAMPLES) -> float:
    """``mia_confidence_power``: :func:`attack_auc` of
    :func:`~unlearnkit.metrics.mia_confidence`'s attack (true-class probability,
    ``SVC(C=3, gamma="auto", kernel="rbf")``), D_r vs test."""
    from sklearn.svm import SVC

    return attack_auc(retain_true_probs, test_true_probs,
                      lambda: SVC(C=3, gamma="auto", kernel="rbf"), n_splits=n_splits,
                      seed=seed, max_samples=max_samples)


def mia_separation(original_figure: float, retrained_figure: float) -> float:
    """``<attack>_separation``: the attack's figure on the original model minus its figure on
    the retrained one. Positive when the attack calls the original (which saw D_f) more
    "remembering" than the retrained model (which never did), as it should; near 0 or
    negative when it cannot tell them apart, or ranks them backwards."""
    return float(original_figure) - float(retrained_figure)


def _value(metrics: Mapping[str, Any], key: str) -> float | None:
    v = metrics.get(key)
    if v is None or isinstance(v, bool):
        return None
    v = float(v)
    return None if math.isnan(v) else v


def mia_informative(metrics: Mapping[str, Any], name: str, *, min_power: float = MIN_POWER,
                    min_separation: float = MIN_SEPARATION) -> bool | None:
    """Whether the MIA figure ``name`` (e.g. ``"mia_entropy"``) of ``metrics`` says anything.

    The rule: a figure is **uninformative** when its attack's power on the same model
    (``metrics[name + "_power"]``) is below ``min_power``, or, where the original and the
    retrained model were both at hand, when the attack's separation of them
    (``metrics[name + "_separation"]``, original minus retrained) is below
    ``min_separation`` (negative included: an attack that ranks backwards). Read it as "this
    attack cannot tell membership here", not as "forgotten": such a figure is marked and never
    used to rank methods.

    Args:
        metrics: one model's metrics (:func:`unlearnkit.evaluate`'s output, a result row, or
            means over seeds).
        name: the figure's key.
        min_power: :data:`MIN_POWER`.
        min_separation: :data:`MIN_SEPARATION`.

    Returns:
        ``True`` or ``False``; ``None`` when ``metrics`` holds neither check.
    """
    power = _value(metrics, f"{name}_power")
    sep = _value(metrics, f"{name}_separation")
    if power is None and sep is None:
        return None
    return (power is None or power >= min_power) and (sep is None or sep >= min_separation)


def uninformative_mias(metrics: Mapping[str, Any]) -> list[str]:
    """The figures of :data:`MIA_FIGURES` present in ``metrics`` that :func:`mia_informative`
    calls uninformative, in that order."""
    return [m for m in MIA_FIGURES
            if _value(metrics, m) is not None and mia_informative(metrics, m) is False]


def no_power_reasons(metrics: Mapping[str, Any], name: str) -> list[str]:
    """The checks of :func:`mia_informative` that the figure ``name`` fails, in words (empty
    when it passes them, or they are absent)."""
    power = _value(metrics, f"{name}_power")
    sep = _value(metrics, f"{name}_separation")
    why = []
    if power is not None and power < MIN_POWER:
        why.append(f"the attack tells retain from test with AUC {power:.4f} "
                   f"(< {MIN_POWER:.2f})")
    if sep is not None and sep < MIN_SEPARATION:
        why.append(f"it scores the original {sep:+.3f} above the retrained model "
                   f"(< {MIN_SEPARATION:.2f})")
    return why


def power_note(metrics: Mapping[str, Any], name: str) -> str | None:
    """Why the figure ``name`` is uninformative, in words (``None`` if it is not), e.g.
    ``"mia_entropy: the attack tells retain from test with AUC 0.5100 (< 0.55): no power"``."""
    why = no_power_reasons(metrics, name)
    return f"{name}: {' and '.join(why)}: no power" if why else None
