"""The Anamnesis index (AIN): how fast a model relearns what it was asked to forget.

A pure function of two step counts; the counts themselves come from
:func:`unlearnkit.relearn.relearn_steps`, and :func:`unlearnkit.relearn.anamnesis` runs the
whole measurement.
"""

from __future__ import annotations

import math
import numbers

from unlearnkit.exceptions import InvalidParameterError

__all__ = ["anamnesis_index"]


def _check_steps(name: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InvalidParameterError(
            f"The {name!r} parameter must be an int in the range [1, inf) or None. Got "
            f"{value!r} instead."
        )


def anamnesis_index(unlearned_steps: int | None, retrained_steps: int | None) -> float:
    """``anamnesis_index``: relearning steps of the unlearned model over those of the retrained.

    Definition (Chundawat et al., "Zero-Shot Machine Unlearning", IEEE TIFS 2023): both models
    are fine-tuned on the forgotten data until their accuracy on it comes back to within an
    ``error_range`` of the original model's (``(1 - error_range) * acc_original``); ``rt(m)`` is
    the number of optimiser steps that takes, and::

        AIN = rt(unlearned) / rt(retrained)

    Reading: ``AIN`` near 1 means the unlearned model is as hard to teach the forgotten data
    again as a model that never saw it (good unlearning); ``AIN << 1`` means it relearns much
    faster, i.e. the information is still in the weights and was only masked; ``AIN > 1``
    means it is harder to relearn than the retrained model (the method damaged more than
    needed, e.g. drove the forget data far from anything learnable in a few steps).

    Step counts start at 1 (one step is taken before the first check, as in the public code),
    so a model that already meets the target counts 1 step and the ratio is always defined
    when both models recover.

    Args:
        unlearned_steps: steps the unlearned model needed, or ``None`` if it never reached the
            target within the budget.
        retrained_steps: steps the retrained model needed, or ``None`` if it never did.

    Returns:
        The ratio; ``math.inf`` when only the unlearned model never recovered (it is harder to
        relearn than any budget shows), ``nan`` when the retrained model never recovered
        (there is no reference to compare with, whatever the unlearned model did).

    Raises:
        InvalidParameterError: a count that is neither ``None`` nor an int >= 1.
    """
    _check_steps("unlearned_steps", unlearned_steps)
    _check_steps("retrained_steps", retrained_steps)
    if retrained_steps is None:
        return math.nan
    if unlearned_steps is None:
        return math.inf
    return int(unlearned_steps) / int(retrained_steps)
