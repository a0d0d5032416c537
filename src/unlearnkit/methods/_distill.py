"""Pieces shared by the teacher-student and noise methods (``scrub``, ``bad-teacher``, ``unsir``).

* :func:`distill_kl`: Hinton's tempered distillation loss, ``T^2 * KL(p_T^T || p_S^T)``, which is
  :func:`unlearnkit.methods.teacher.kl_to` on logits divided by ``T``.
* :func:`frozen_copy`: a teacher (a frozen, eval-mode copy).
* :func:`student_pass`: one shuffled pass over a data set with a given loss and a given optimiser,
  for methods whose phases share one optimiser (SCRUB's max- and min-steps). A method with a
  single phase, or with one optimiser per phase, trains with :func:`unlearnkit.training.fit`.
* :func:`take`, :func:`mix`, :func:`labels_of`, :func:`sample_shape`: subsets and mixtures of any
  :data:`~unlearnkit.data.splits.Data` (tensors stay tensors; other datasets are wrapped, never
  loaded into memory).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.data import ConcatDataset, Dataset, Subset

from unlearnkit.data.batches import concat, first_tensor, samples
from unlearnkit.data.containers import ArrayDataset
from unlearnkit.data.splits import Data
from unlearnkit.exceptions import ModelError
from unlearnkit.methods.teacher import kl_to
from unlearnkit.training import LossFn, Recipe, iter_batches, make_optimizer, train_mode

__all__ = [
    "distill_kl",
    "frozen_copy",
    "labels_of",
    "mix",
    "optimizer_for",
    "sample_shape",
    "student_pass",
    "take",
    "train_mode",
]


# --------------------------------------------------------------------------- teachers
def distill_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor,
               temperature: float = 1.0) -> torch.Tensor:
    """``T^2 * KL(softmax(t / T) || softmax(s / T))``, summed over classes, mean over the batch.

    The ``T^2`` keeps the gradient's scale independent of ``T`` (Hinton et al. 2015; SCRUB's
    ``DistillKL``). At ``T = 1`` this is exactly :func:`~unlearnkit.methods.teacher.kl_to`.
    """
    t = float(temperature)
    if t == 1.0:
        return kl_to(teacher_logits, student_logits)
    return kl_to(teacher_logits / t, student_logits / t) * (t * t)


def frozen_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode whose parameters do not require grad (a teacher)."""
    teacher = copy.deepcopy(model)
    teacher.requires_grad_(False)
    teacher.eval()
    return teacher


# ------------------------------------------------------------------------- the loop
def optimizer_for(params: Sequence[nn.Parameter], *, optimizer: str, lr: float,
                   momentum: float = 0.9, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """The optimiser :func:`unlearnkit.training.fit` would build for the same settings."""
    recipe = Recipe(optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return make_optimizer(list(params), recipe)


def student_pass(
    model: nn.Module,
    data: Data,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    *,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    desc: str,
) -> float:
    """One shuffled pass over ``data``: a step of ``optimizer`` on ``loss_fn`` per mini-batch.

    The caller puts ``model`` in train mode (:func:`train_mode`). Returns the mean loss.
    """
    total, count = 0.0, 0
    for x, y in iter_batches(data, batch_size, shuffle=True, generator=generator, device=device):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model, x, y)
        if not torch.isfinite(loss):
            raise ModelError(f"The loss became {loss.item()} during {desc!r}: lower the "
                             "learning rate.")
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(y)
        count += len(y)
    optimizer.zero_grad(set_to_none=True)
    return total / max(count, 1)


# ------------------------------------------------------------------------------ data
def _dataset(data: Data) -> Dataset:
    """``data`` as a dataset of ``(input, target)`` samples (see :func:`samples`)."""
    return samples(data)


def labels_of(data: Data) -> torch.Tensor:
    """The labels of ``data`` in index order (int64, on the CPU); a DataLoader's own sampler
    and batch size are ignored."""
    ds = _dataset(data)
    if isinstance(ds, ArrayDataset):
        return ds.y
    ys = [y.cpu() for _, y in iter_batches(ds, 1024, shuffle=False)]
    return torch.cat(ys).to(torch.int64) if ys else torch.empty(0, dtype=torch.int64)


def sample_shape(data: Data) -> tuple[int, ...]:
    """The shape of one sample of ``data`` (without the batch dimension)."""
    ds = _dataset(data)
    if isinstance(ds, ArrayDataset):
        return ds.sample_shape
    x, _ = next(iter_batches(ds, 1, shuffle=False))
    return tuple(first_tensor(x).shape[1:])


def take(data: Data, indices: torch.Tensor) -> Data:
    """The samples of ``data`` at ``indices`` (a copy for tensors, a view otherwise)."""
    ds = _dataset(data)
    if isinstance(ds, ArrayDataset):
        return ds.subset(indices)
    return Subset(ds, [int(i) for i in indices])


class _Relabelled(Dataset):
    """``(x_i, labels[i])`` for the samples ``x_i`` of another dataset."""

    def __init__(self, data: Dataset, labels: torch.Tensor) -> None:
        self.data, self.labels = data, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.data[index][0]
        return x, self.labels[index]


def mix(parts: Sequence[tuple[Data, torch.Tensor | None]]) -> Data:
    """The concatenation of ``parts``, each ``(data, labels)``: ``labels`` (one per sample)
    replace the data's own labels, ``None`` keeps them. Order is kept; shuffle when iterating."""
    datasets = [_dataset(d) for d, _ in parts]
    if all(isinstance(d, ArrayDataset) for d in datasets):
        xs = [d.x for d in datasets]
        ys = [d.y if lab is None else lab.to(torch.int64).cpu()
              for d, (_, lab) in zip(datasets, parts, strict=True)]
        return ArrayDataset(concat(xs), torch.cat(ys))
    return ConcatDataset([d if lab is None else _Relabelled(d, lab.to(torch.int64).cpu())
                          for d, (_, lab) in zip(datasets, parts, strict=True)])
