"""Denormal floats flushed to zero (unlearnkit.training.flush_denormals) against kept, on a
CPU: `finetune` at its defaults (Adam, lr 1e-5, weight decay 0.01, batch 64) on the whole
CIFAR-10, class `cat`, with the MLP (512, 256) of benchmarks/calibrated-cifar10-full.yaml,
like for like: one process, one thread, the same cached original, split, seed and epochs,
warmed up, the two modes one after the other.

    python benchmarks/denormals.py [--epochs 4]

Prints, per mode, each epoch's seconds, the number of denormal weights after it, and the
seconds of one forward pass of the result over the 10,000 test images. "kept" is what
unlearnkit did before: its flushing is switched off by telling it that the CPU cannot flush.
Needs ../shared/data/cifar10-jpeg.tar.gz and the cached original (`unlearnkit bench
benchmarks/calibrated-cifar10-full.yaml` trains it; it is in ~/.cache/unlearnkit after).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from unittest import mock

import torch
import yaml

import unlearnkit as uk
from unlearnkit import training
from unlearnkit.pools import cached_original
from unlearnkit.training import Recipe, watch_epochs

HERE = Path(__file__).resolve().parent


def denormal(model: torch.nn.Module) -> int:
    tiny = torch.finfo(torch.float32).tiny
    return sum(int(((p != 0) & (p.abs() < tiny)).sum()) for p in model.parameters())


def run(original: torch.nn.Module, split: uk.Split, epochs: int) -> None:
    times: list[str] = []
    last = [time.perf_counter()]

    def watch(phase: str, epoch: int, current: torch.nn.Module) -> None:
        now = time.perf_counter()
        if epoch:
            times.append(f"{now - last[0]:.1f} s ({denormal(current)} denormal)")
        last[0] = time.perf_counter()

    with watch_epochs(watch):
        out = uk.unlearn(original, split, "finetune", epochs=epochs, verdict=False)
    start = time.perf_counter()
    with torch.no_grad():
        out(split.test.x)
    print("  epochs:", ", ".join(times))
    print(f"  forward pass over the test set: {time.perf_counter() - start:.3f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    config = yaml.safe_load((HERE / "calibrated-cifar10-full.yaml").read_text())
    data = uk.load_dataset("imagefolder",
                           root=HERE.parent.parent / "shared/data/cifar10-jpeg.tar.gz")
    original = cached_original(data, arch="mlp", recipe=Recipe.from_dict(config["recipe"]),
                               seed=0, **config["model"]["kwargs"])
    split = uk.split_by_class(data, ["cat"])
    uk.unlearn(original, split, "finetune", epochs=1, verdict=False)  # warm-up
    print("flushed (unlearnkit now):")
    run(original, split, args.epochs)
    print("kept (before):")
    with mock.patch.object(training.torch, "set_flush_denormal", lambda mode: False):
        run(original, split, args.epochs)


if __name__ == "__main__":
    main()
