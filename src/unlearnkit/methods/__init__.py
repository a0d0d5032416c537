"""Unlearning methods: one file per method, one interface, one registry.

Import a method class from here, or build one by name with :func:`get_method`.
"""

from unlearnkit.methods.base import (
    METHODS,
    HyperParameter,
    Request,
    UnlearningMethod,
    get_method,
    hp,
    register_method,
)
from unlearnkit.methods.finetune import FineTune
from unlearnkit.methods.fisher_mask import FisherMask
from unlearnkit.methods.perturb import Perturb
from unlearnkit.methods.retrain import Retrain
from unlearnkit.methods.ssd import SSD
from unlearnkit.methods.teacher import StochasticTeacher

__all__ = [
    "METHODS",
    "SSD",
    "FineTune",
    "FisherMask",
    "HyperParameter",
    "Perturb",
    "Request",
    "Retrain",
    "StochasticTeacher",
    "UnlearningMethod",
    "get_method",
    "hp",
    "register_method",
]
