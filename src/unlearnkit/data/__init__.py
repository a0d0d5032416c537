"""Datasets (a registry by name), their in-memory form, and forget/retain/test splits."""

from unlearnkit.data import digits as _digits  # noqa: F401  (registers "digits")
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
