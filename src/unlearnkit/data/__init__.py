"""Datasets (a registry by name), their in-memory form, and forget/retain/test splits."""

from unlearnkit.data import cifar as _cifar  # noqa: F401  (registers "cifar10", "cifar100")
from unlearnkit.data import digits as _digits  # noqa: F401  (registers "digits")
from unlearnkit.data import imagefolder as _imagefolder  # noqa: F401  (registers "imagefolder")
from unlearnkit.data import mnist as _mnist  # noqa: F401  (registers "mnist", "fashion-mnist")
from unlearnkit.data.batches import Batches
from unlearnkit.data.containers import ArrayDataset, DataBundle
from unlearnkit.data.registry import DATASETS, DatasetSpec, load_dataset, register_dataset
from unlearnkit.data.splits import (
    Data,
    Scenario,
    Split,
    read_indices,
    split_by_class,
    split_indices,
    split_random,
)

__all__ = [
    "DATASETS",
    "ArrayDataset",
    "Batches",
    "Data",
    "DataBundle",
    "DatasetSpec",
    "Scenario",
    "Split",
    "load_dataset",
    "read_indices",
    "register_dataset",
    "split_by_class",
    "split_indices",
    "split_random",
]
