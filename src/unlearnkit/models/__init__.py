"""Architectures (a registry by name), model provenance, and safetensors checkpoints."""

from unlearnkit.models.architectures import CNN, MLP, ResNet18
from unlearnkit.models.checkpoint import (
    atomic_write,
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
)
from unlearnkit.models.info import ModelInfo, check_finite, get_info, set_info
from unlearnkit.models.registry import MODELS, build_model, fresh_copy, register_model

__all__ = [
    "CNN",
    "MLP",
    "MODELS",
    "ModelInfo",
    "ResNet18",
    "atomic_write",
    "build_model",
    "check_finite",
    "fresh_copy",
    "get_info",
    "load_checkpoint",
    "read_checkpoint_info",
    "register_model",
    "save_checkpoint",
    "set_info",
]
