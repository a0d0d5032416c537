"""Benchmark: LF-SSD's importance (mode ``"output-norm"``, the mean over samples of the absolute
per-sample gradient of ``||f(x)||^2``) by the hooks' closed form for linear layers, against
making every per-sample gradient and taking its absolute value (the path it replaced).

Run on demand (not a test):

    .venv/bin/python benchmarks/output_norm.py [--samples 5000] [--repeats 3] [--threads 1]
    .venv/bin/python benchmarks/output_norm.py --study benchmarks/calibrated-cifar10.yaml

For a plain ``nn.Linear`` on ``(N, D)`` inputs the per-sample gradient is ``g_n a_n^T``, so the
sum of its absolute values is ``|G|^T |A|``, one matrix product, as the sum of its squares
(SSD's Fisher) is ``(G*G)^T (A*A)``. Other layers (convolutions, norms) still make per-sample
gradients, in chunks; a model of plain linear layers only takes each batch whole (the closed
form was first run in chunks too: "closed form, chunked"). The paths run in this process on
the same data, alternated, one thread, after a warm-up, and must agree (checked before
timing); medians are printed with their ratios.

Models: the MLP (512, 256) of ``benchmarks/calibrated-cifar10*.yaml`` on CIFAR-shaped inputs
(3x32x32, random: the cost does not depend on the pixels), and the default ``cnn`` on digits.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import unlearnkit as uk
from unlearnkit.importance import hooks, importances
from unlearnkit.importance._common import sum_into, trainable
from unlearnkit.importance.hooks import hooks_grads
from unlearnkit.importance.modes import reduce, squared_norm_sum
from unlearnkit.training import eval_mode, iter_batches

BATCH = 64  # LF-SSD's default batch size


def per_sample_path(model: torch.nn.Module, data: uk.ArrayDataset) -> dict[str, torch.Tensor]:
    """The replaced path: every per-sample gradient, then ``|.|`` summed, over the data."""
    names = trainable(model)
    out: dict[str, torch.Tensor] = {}
    with eval_mode(model):
        for x, y in iter_batches(data, BATCH, shuffle=False):
            grads = hooks_grads(model, names, x, y, objective=squared_norm_sum)
            sum_into(out, {k: reduce(v, "abs") for k, v in grads.items()})
    return {k: v / len(data) for k, v in out.items()}


def closed_form(model: torch.nn.Module, data: uk.ArrayDataset) -> dict[str, torch.Tensor]:
    return importances(model, data, mode="output-norm", batch_size=BATCH,
                       implementation="hooks")


def closed_form_chunked(model: torch.nn.Module, data: uk.ArrayDataset
                        ) -> dict[str, torch.Tensor]:
    """The closed form as first written: each batch in chunks of ``per_sample_chunk``
    samples (8 for the MLP), as if a layer might need per-sample gradients, every chunk's
    full-size sums added."""
    real = hooks._closed_form_abs
    hooks._closed_form_abs = lambda model, names: False
    try:
        return closed_form(model, data)
    finally:
        hooks._closed_form_abs = real


PATHS = {"per-sample": per_sample_path, "closed form, chunked": closed_form_chunked,
         "closed form": closed_form}


def compare(label: str, model: torch.nn.Module, data: uk.ArrayDataset, repeats: int) -> dict:
    a = per_sample_path(model, data)
    for other in (closed_form_chunked(model, data), closed_form(model, data)):
        for k in a:
            torch.testing.assert_close(other[k], a[k], rtol=1e-4, atol=1e-7)
    times: dict[str, list[float]] = {name: [] for name in PATHS}
    for _ in range(repeats):  # alternated, so that all meet the same machine
        for name, fn in PATHS.items():
            t = time.perf_counter()
            fn(model, data)
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    row = {"model": label, "samples": len(data), **{f"{k} s": round(v, 3) for k, v in med.items()},
           "speed-up": round(med["per-sample"] / med["closed form"], 2),
           "speed-up over chunked": round(med["closed form, chunked"] / med["closed form"], 2)}
    print(json.dumps(row), flush=True)
    return row


def lf_ssd_on_study(config: str, repeats: int) -> dict:
    """LF-SSD at its defaults on the class scenario of a bench config (its cached original,
    trained by the bench), cold (the importance cache not read), chunked against whole."""
    from method_seconds import class_study  # beside this file

    from unlearnkit.importance.cache import cache_use

    model, split = class_study(config)
    real = hooks._closed_form_abs

    def run(chunked: bool) -> float:
        hooks._closed_form_abs = (lambda model, names: False) if chunked else real
        try:
            with cache_use(read=False):
                t = time.perf_counter()
                uk.unlearn(model, split, "lf-ssd", seed=0, verdict=False)
                return time.perf_counter() - t
        finally:
            hooks._closed_form_abs = real

    run(True), run(False)  # warm-up
    times: dict[str, list[float]] = {"chunked": [], "whole": []}
    for _ in range(repeats):
        for name in times:
            times[name].append(run(name == "chunked"))
    med = {k: statistics.median(v) for k, v in times.items()}
    row = {"lf-ssd on": config, **{f"{k} s": round(v, 3) for k, v in med.items()},
           "speed-up": round(med["chunked"] / med["whole"], 2)}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=5000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--study", metavar="CONFIG",
                   help="instead: LF-SSD on the class scenario of this bench config's cached "
                        "original (run the bench first), chunked against whole batches")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.study:
        lf_ssd_on_study(args.study, args.repeats)
        return
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.samples, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (args.samples,), generator=g)
    torch.manual_seed(0)
    mlp = uk.build_model("mlp", num_classes=10, input_shape=(3, 32, 32), hidden=(512, 256))
    compare("mlp (512, 256), 3x32x32", mlp, uk.ArrayDataset(x, y), args.repeats)
    digits = uk.load_dataset("digits")
    cnn = uk.build_model("cnn", num_classes=10, input_shape=tuple(digits.train.x.shape[1:]))
    compare("cnn, digits", cnn, digits.train, args.repeats)


if __name__ == "__main__":
    main()
