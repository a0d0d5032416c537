"""Benchmark: the cost of one diagonal-Fisher pass, by implementation, and SSD vs retraining.

Run on demand (not a test):

    .venv/bin/python benchmarks/fisher_pass.py [--mnist /work/shared/data/mnist.npz]
        [--mnist-samples 10000] [--repeats 3] [--loop-samples 200] [--threads N] [--no-ssd]

On the default ``cnn`` (``uk.build_model("cnn", num_classes=10, input_shape=...)``) it times, side
by side on the same data and the same device:

* ``plain``: one ordinary batched forward + backward of the mean loss over the data (the floor:
  what any gradient pass costs);
* ``hooks``: :func:`unlearnkit.importance.importances` with the per-layer hooks (what the
  default ``"auto"`` picks for these models);
* ``vmap``: the same with ``torch.func`` (``vmap(grad)`` over the whole model);
* ``loop``: one forward + backward per sample, timed on ``--loop-samples`` samples and
  extrapolated linearly to the whole data (said so in the output).

Medians over ``--repeats`` runs are printed with the ratios hooks/plain and loop/hooks, on digits
(1,437 training samples, 8x8) and on an MNIST subset (the first ``--mnist-samples`` training
images, 28x28, scaled to [0, 1]). Then SSD on digits (class 3) with the reference importances
cached, against the time of ``uk.retrain`` on the default cnn recipe.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import unlearnkit as uk
from unlearnkit.importance import importances
from unlearnkit.training import eval_mode, iter_batches, resolve_device

BATCH = 256


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn, repeats: int, dev: torch.device) -> float:
    fn()  # warm-up
    sync(dev)
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(dev)
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def plain_pass(model: torch.nn.Module, data: uk.ArrayDataset, dev: torch.device) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    with eval_mode(model):
        for x, y in iter_batches(data, BATCH, shuffle=False, device=dev):
            torch.autograd.grad(F.cross_entropy(model(x), y), params)


def load_mnist(path: Path, n: int) -> uk.ArrayDataset:
    try:
        ds = uk.load_dataset("mnist", root=str(path.parent))
        train = ds.train
    except Exception:  # the mnist loader may not exist yet: read the npz directly
        d = np.load(path)
        x = torch.from_numpy(d["x_train"]).float().div_(255.0).permute(0, 3, 1, 2).contiguous()
        train = uk.ArrayDataset(x, torch.from_numpy(d["y_train"]))
    return train.subset(np.arange(min(n, len(train))))


def bench_data(name: str, data: uk.ArrayDataset, args, dev: torch.device) -> dict:
    torch.manual_seed(0)
    model = uk.build_model("cnn", num_classes=10, input_shape=data.sample_shape).to(dev)
    n = len(data)
    loop_data = data.subset(np.arange(min(args.loop_samples, n)))
    row = {"dataset": name, "samples": n, "batch_size": BATCH}
    row["plain_s"] = timed(lambda: plain_pass(model, data, dev), args.repeats, dev)
    for impl in ("hooks", "vmap"):
        row[f"{impl}_s"] = timed(
            lambda impl=impl: importances(model, data, batch_size=BATCH, implementation=impl,
                                          device=dev), args.repeats, dev)
    loop_s = timed(lambda: importances(model, loop_data, implementation="loop", device=dev),
                   args.repeats, dev)
    row["loop_timed_samples"] = len(loop_data)
    row["loop_s_extrapolated"] = loop_s / len(loop_data) * n
    row["hooks_over_plain"] = row["hooks_s"] / row["plain_s"]
    row["vmap_over_plain"] = row["vmap_s"] / row["plain_s"]
    row["loop_over_hooks"] = row["loop_s_extrapolated"] / row["hooks_s"]
    return row


def bench_ssd(args, dev: torch.device) -> dict:
    ds = uk.load_dataset("digits")
    split = uk.split_by_class(ds, [3])
    original = uk.train_model(ds, arch="cnn", seed=0, device=dev)
    t = time.perf_counter()
    retrained = uk.retrain(original, split, device=dev)
    sync(dev)
    retrain_s = time.perf_counter() - t
    out = {"retrain_seconds": retrain_s}
    for label in ("first call (computes I_D, fills the cache)", "cached I_D"):
        m = uk.unlearn(original, split, "ssd", device=dev)
        r = uk.evaluate(m, split, retrained=retrained)
        out[label] = {"seconds": r["seconds"], "fraction_of_retrain": r["seconds"] / retrain_s,
                      "forget_acc": r["forget_acc"], "test_retain_acc": r["test_retain_acc"]}
    cached = [uk.get_info(uk.unlearn(original, split, "ssd", device=dev)).seconds
              for _ in range(args.repeats)]
    out["cached_median_seconds"] = statistics.median(cached)
    out["cached_median_fraction_of_retrain"] = out["cached_median_seconds"] / retrain_s
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mnist", type=Path, default=Path("/work/shared/data/mnist.npz"))
    p.add_argument("--mnist-samples", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--loop-samples", type=int, default=200)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--no-ssd", action="store_true")
    p.add_argument("--cache", default=None, help="UNLEARNKIT_CACHE for the SSD part "
                   "(default: a fresh temporary folder, so that the first call misses)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    import os
    import tempfile

    os.environ["UNLEARNKIT_CACHE"] = args.cache or tempfile.mkdtemp(prefix="uk-bench-")
    result = {"device": str(dev), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "passes": []}
    result["passes"].append(bench_data("digits", uk.load_dataset("digits").train, args, dev))
    if args.mnist.is_file():
        result["passes"].append(
            bench_data(f"mnist[:{args.mnist_samples}]", load_mnist(args.mnist,
                                                                   args.mnist_samples),
                       args, dev))
    for r in result["passes"]:
        print(f"{r['dataset']:>14s} n={r['samples']:6d}  plain {r['plain_s']:.3f}s  hooks "
              f"{r['hooks_s']:.3f}s  vmap {r['vmap_s']:.3f}s  loop {r['loop_s_extrapolated']:.3f}s"
              f" (extrapolated from {r['loop_timed_samples']})  hooks/plain "
              f"{r['hooks_over_plain']:.2f}  vmap/plain {r['vmap_over_plain']:.2f}  loop/hooks "
              f"{r['loop_over_hooks']:.1f}", file=sys.stderr)
    if not args.no_ssd:
        result["ssd_digits_class3"] = bench_ssd(args, dev)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
