"""unlearnkit: make a trained PyTorch classifier forget part of its training data, and measure
honestly how well it forgot.

>>> import unlearnkit as uk
>>> ds = uk.load_dataset("digits")
>>> split = uk.split_by_class(ds, [3])
>>> split.scenario, len(split.forget) + len(split.retain) == len(ds.train)
('class', True)
"""

# Everything is imported on first use (PEP 562), so that `import unlearnkit` and
# `unlearnkit --version` do not pay for torch and every module: the names below resolve to
# the same objects as an eager import would give.
import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "ArrayDataset": "unlearnkit.data",
    "Batches": "unlearnkit.data",
    "Calibration": "unlearnkit.calibration",
    "CheckpointError": "unlearnkit.exceptions",
    "DATASETS": "unlearnkit.data",
    "Data": "unlearnkit.data",
    "DataBundle": "unlearnkit.data",
    "DataError": "unlearnkit.exceptions",
    "ForgetVerdictWarning": "unlearnkit.exceptions",
    "ImplementationFallbackWarning": "unlearnkit.exceptions",
    "InvalidParameterError": "unlearnkit.exceptions",
    "InvalidSplitError": "unlearnkit.exceptions",
    "Ledger": "unlearnkit.ledger",
    "LedgerBusyError": "unlearnkit.exceptions",
    "LedgerError": "unlearnkit.exceptions",
    "METHODS": "unlearnkit.methods",
    "MODELS": "unlearnkit.models",
    "ModelError": "unlearnkit.exceptions",
    "ModelInfo": "unlearnkit.models",
    "Recipe": "unlearnkit.training",
    "RetrainPolicy": "unlearnkit.ledger",
    "Split": "unlearnkit.data",
    "UnknownNameError": "unlearnkit.exceptions",
    "UnlearningMethod": "unlearnkit.methods",
    "UnlearnkitError": "unlearnkit.exceptions",
    "UnsupportedModelError": "unlearnkit.exceptions",
    "UnsupportedScenarioWarning": "unlearnkit.exceptions",
    "Verdict": "unlearnkit.metrics.verdict",
    "accuracy": "unlearnkit.training",
    "build_model": "unlearnkit.models",
    "calibrate": "unlearnkit.calibration",
    "default_recipe": "unlearnkit.api",
    "evaluate": "unlearnkit.evaluation",
    "fit": "unlearnkit.training",
    "get_info": "unlearnkit.models",
    "get_method": "unlearnkit.methods",
    "load_checkpoint": "unlearnkit.models",
    "load_dataset": "unlearnkit.data",
    "predict": "unlearnkit.training",
    "read_indices": "unlearnkit.data",
    "retrain": "unlearnkit.api",
    "save_checkpoint": "unlearnkit.models",
    "score": "unlearnkit.evaluation",
    "split_by_class": "unlearnkit.data",
    "split_indices": "unlearnkit.data",
    "split_random": "unlearnkit.data",
    "train_model": "unlearnkit.api",
    "unlearn": "unlearnkit.api",
    "verdict": "unlearnkit.evaluation",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
    else:  # a submodule (uk.metrics, uk.compare ...), imported on first use
        try:
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # the eager imports, for type checkers and IDEs
    from unlearnkit.api import default_recipe, retrain, train_model, unlearn
    from unlearnkit.calibration import Calibration, calibrate
    from unlearnkit.data import (
        DATASETS,
        ArrayDataset,
        Batches,
        Data,
        DataBundle,
        Split,
        load_dataset,
        read_indices,
        split_by_class,
        split_indices,
        split_random,
    )
    from unlearnkit.evaluation import evaluate, score, verdict
    from unlearnkit.exceptions import (
        CheckpointError,
        DataError,
        ForgetVerdictWarning,
        ImplementationFallbackWarning,
        InvalidParameterError,
        InvalidSplitError,
        LedgerBusyError,
        LedgerError,
        ModelError,
        UnknownNameError,
        UnlearnkitError,
        UnsupportedModelError,
        UnsupportedScenarioWarning,
    )
    from unlearnkit.ledger import Ledger, RetrainPolicy
    from unlearnkit.methods import METHODS, UnlearningMethod, get_method
    from unlearnkit.metrics.verdict import Verdict
    from unlearnkit.models import (
        MODELS,
        ModelInfo,
        build_model,
        get_info,
        load_checkpoint,
        save_checkpoint,
    )
    from unlearnkit.training import Recipe, accuracy, fit, predict

__version__ = "0.1.0"

#: What `unlearnkit --version` prints.
PROG_VERSION = f"unlearnkit {__version__}"

__all__ = [
    "DATASETS",
    "METHODS",
    "MODELS",
    "ArrayDataset",
    "Batches",
    "Calibration",
    "CheckpointError",
    "Data",
    "DataBundle",
    "DataError",
    "ForgetVerdictWarning",
    "ImplementationFallbackWarning",
    "InvalidParameterError",
    "InvalidSplitError",
    "Ledger",
    "LedgerBusyError",
    "LedgerError",
    "ModelError",
    "ModelInfo",
    "Recipe",
    "RetrainPolicy",
    "Split",
    "UnknownNameError",
    "UnlearningMethod",
    "UnlearnkitError",
    "UnsupportedModelError",
    "UnsupportedScenarioWarning",
    "Verdict",
    "__version__",
    "accuracy",
    "build_model",
    "calibrate",
    "default_recipe",
    "evaluate",
    "fit",
    "get_info",
    "get_method",
    "load_checkpoint",
    "load_dataset",
    "predict",
    "read_indices",
    "retrain",
    "save_checkpoint",
    "score",
    "split_by_class",
    "split_indices",
    "split_random",
    "train_model",
    "unlearn",
    "verdict",
]
