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


def _register_every_method_module() -> None:
    """Import every public module of this package: each registers its method on import, so a
    new method is one new file here and nothing else."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_") and module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")


_register_every_method_module()

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
