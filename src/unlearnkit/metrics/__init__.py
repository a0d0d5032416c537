"""Metrics: pure functions of model outputs, named as in DESIGN.md."""

from unlearnkit.metrics.accuracy import accuracy_from_logits, speedup
from unlearnkit.metrics.anamnesis import anamnesis_index
from unlearnkit.metrics.competition import (
    competition_score,
    epsilons,
    forgetting_quality,
    logit_scaled_confidence,
)
from unlearnkit.metrics.divergence import (
    activation_distance,
    avg_gap,
    js_divergence,
    zrf,
    zrf_compat,
)
from unlearnkit.metrics.lira import mia_lira, mia_lira_per_example
from unlearnkit.metrics.mia import (
    entropy,
    mia_confidence,
    mia_entropy,
    mia_loss_cv,
    per_sample_loss,
)
from unlearnkit.metrics.mia_power import (
    mia_confidence_power,
    mia_entropy_power,
    mia_informative,
    mia_loss_cv_power,
    mia_separation,
    uninformative_mias,
)
from unlearnkit.metrics.representation import linear_cka, probe_accuracy

__all__ = [
    "accuracy_from_logits",
    "activation_distance",
    "anamnesis_index",
    "avg_gap",
    "competition_score",
    "entropy",
    "epsilons",
    "forgetting_quality",
    "js_divergence",
    "linear_cka",
    "logit_scaled_confidence",
    "mia_confidence",
    "mia_confidence_power",
    "mia_entropy",
    "mia_entropy_power",
    "mia_informative",
    "mia_lira",
    "mia_lira_per_example",
    "mia_loss_cv",
    "mia_loss_cv_power",
    "mia_separation",
    "per_sample_loss",
    "probe_accuracy",
    "speedup",
    "uninformative_mias",
    "zrf",
    "zrf_compat",
]
