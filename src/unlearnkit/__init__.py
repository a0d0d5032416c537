"""unlearnkit: make a trained PyTorch classifier forget part of its training data, and measure
honestly how well it forgot.

>>> import unlearnkit as uk
>>> ds = uk.load_dataset("digits")
>>> split = uk.split_by_class(ds, [3])
>>> split.scenario, len(split.forget) + len(split.retain) == len(ds.train)
('class', True)
"""

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
