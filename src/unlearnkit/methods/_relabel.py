"""Random relabelling of forget samples, shared by ``random-label`` and ``amnesiac``."""

from __future__ import annotations

import torch
from torch import nn

from unlearnkit.data.batches import Inputs, concat, take, to_device
from unlearnkit.data.containers import ArrayDataset
from unlearnkit.data.splits import Data
from unlearnkit.exceptions import DataError, InvalidParameterError
from unlearnkit.models.adapters import forward
from unlearnkit.models.info import ModelInfo
from unlearnkit.training import eval_mode, iter_batches

__all__ = ["as_tensors", "num_outputs", "random_other_labels"]


def random_other_labels(
    y: torch.Tensor, num_classes: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """For each label, a label drawn uniformly from the *other* ``num_classes - 1`` classes.

    ``(y + k) mod C`` with ``k`` uniform on ``{1, ..., C-1}``: never the true label, and every
    other class with probability ``1 / (C-1)``. The draws come from ``generator`` (on the CPU),
    so the same generator state gives the same labels on every device.

    Args:
        y: int64 labels in ``[0, num_classes)``, any shape, on any device.
        num_classes: C, at least 2.
        generator: a CPU generator; ``None`` uses torch's global one.

    Returns:
        A tensor shaped and placed like ``y``.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise InvalidParameterError(
            "The 'num_classes' parameter must be an int in the range [2, inf): relabelling "
            f"needs another class to move to. Got {num_classes!r} instead.")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise DataError(
            f"Labels must lie in [0, {num_classes}) to be relabelled; got labels from "
            f"{int(y.min())} to {int(y.max())}.")
    shift = torch.randint(1, num_classes, tuple(y.shape), generator=generator)
    return (y.cpu() + shift).remainder(num_classes).to(y.device)


@torch.no_grad()
def num_outputs(
    model: nn.Module, data: Data, device: torch.device, info: ModelInfo | None = None
) -> int:
    """The number of classes: from the model's recorded provenance, else from one forward pass
    (in eval mode, so that it draws no randomness and changes no state)."""
    if info is not None and info.num_classes:
        return int(info.num_classes)
    for x, _ in iter_batches(data, 8, shuffle=False, device=device):
        with eval_mode(model):
            return int(forward(model, take(x, slice(0, 1))).shape[-1])
    raise DataError("Cannot count the classes of an empty data set.")


def as_tensors(data: Data) -> tuple[Inputs, torch.Tensor]:
    """All samples and labels of ``data`` as two CPU tensors, in order (an ArrayDataset's own
    tensors, else one pass over the data), to relabel or combine them."""
    if isinstance(data, ArrayDataset):
        return data.x, data.y
    xs, ys = [], []
    for x, y in iter_batches(data, 1024, shuffle=False):
        xs.append(to_device(x, "cpu"))
        ys.append(y.cpu())
    if not xs:
        raise DataError("Cannot read the samples of an empty data set.")
    return concat(xs), torch.cat(ys)
