"""Fused optimiser steps against PyTorch's default ones on a CPU: an epoch of training, like
for like (same process, one thread, same model, data and seed, warmed up, the two
implementations alternated, median of the repeats).

    python benchmarks/fused_optimizer.py [--repeats 3]

The model is the MLP (512, 256) of benchmarks/calibrated-cifar10*.yaml on 3x32x32 inputs (1.7
M parameters), the data 5,000 random images; the recipes are those of the methods' defaults:
Adam at batch 64 (finetune, perturb, teacher, fisher-mask) and SGD with momentum at batch 256
(l1-sparse, random-label, salun).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3072, 512), nn.ReLU(), nn.Linear(512, 256),
                         nn.ReLU(), nn.Linear(256, 10))


def epoch(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
          batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(x), batch):
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x[i:i + batch]), y[i:i + batch]).backward()
        opt.step()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(5000, 3, 32, 32, generator=g), torch.randint(0, 10, (5000,), generator=g)
    recipes = {"adam, batch 64": (torch.optim.Adam, {"lr": 1e-5, "weight_decay": 0.01}, 64),
               "sgd, batch 256": (torch.optim.SGD, {"lr": 0.01, "momentum": 0.9,
                                                    "weight_decay": 5e-4}, 256)}
    print(f"torch {torch.__version__}, 1 thread, {len(x)} samples, median of {args.repeats}")
    for name, (cls, kw, batch) in recipes.items():
        times: dict[bool, list[float]] = {False: [], True: []}
        for r in range(args.repeats + 1):  # the first round warms up, not counted
            for fused in (False, True):
                model = mlp()
                opt = cls(model.parameters(), fused=True, **kw) if fused else cls(
                    model.parameters(), **kw)
                t = epoch(model, opt, x, y, batch)
                if r:
                    times[fused].append(t)
        d, f = statistics.median(times[False]), statistics.median(times[True])
        print(f"{name}: default {d:.2f} s/epoch, fused {f:.2f} s/epoch: {d / f:.2f}x")


if __name__ == "__main__":
    main()
