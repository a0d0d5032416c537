"""GPU check for the core issue: the automatic device is CUDA there, and the whole pipeline
(training, every registered method, evaluation, checkpoints, importances) runs on it.

Run on a machine with a CUDA GPU:

    PYTHONPATH=src python3 benchmarks/gpu_check.py [--mnist PATH/TO/mnist.npz] [--out results.json]

It prints one JSON object (and writes it with --out): per method on digits (class 3, random
10 %), the device of the returned model, metrics and seconds; the importance implementations
compared on CUDA; a checkpoint saved from the GPU reloaded on the CPU; and, with --mnist, the
MNIST pipeline's timings.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

import unlearnkit as uk


def run_scenarios(ds: uk.DataBundle, arch: str, recipe: uk.Recipe | None, methods: list[str],
                  scenarios: dict[str, uk.Split]) -> dict:
    dev = uk.training.resolve_device()
    t0 = time.perf_counter()
    original = uk.train_model(ds, arch=arch, recipe=recipe, seed=0)
    torch.cuda.synchronize()
    out: dict = {"device": str(dev), "train_seconds": time.perf_counter() - t0,
                 "original_device": str(next(original.parameters()).device)}
    for sname, split in scenarios.items():
        retrained = uk.retrain(original, split, seed=1)
        rows = {"original": uk.evaluate(original, split, retrained=retrained),
                "retrain": uk.evaluate(retrained, split, retrained=retrained)}
        for name in methods:
            if name == "retrain":
                continue
            m = uk.METHODS.get(name)
            if sname not in m.scenarios and m.other_scenarios == "refuse":
                rows[name] = {"skipped": f"{name} refuses {sname} unlearning"}
                continue
            try:
                u = uk.unlearn(original, split, name, seed=0)
                row = uk.evaluate(u, split, retrained=retrained)
                row["param_device"] = str(next(u.parameters()).device)
            except Exception as exc:  # report, don't stop: this is a check script
                row = {"error": f"{type(exc).__name__}: {exc}"}
            rows[name] = row
        out[sname] = rows
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mnist", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    report: dict = {"torch": torch.__version__, "cuda": torch.cuda.is_available(),
                    "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                    "auto_device": str(uk.training.resolve_device())}
    methods = uk.METHODS.names()
    ds = uk.load_dataset("digits")
    report["digits"] = run_scenarios(
        ds, "cnn", None, methods,
        {"class": uk.split_by_class(ds, [3]), "random": uk.split_random(ds, fraction=0.1, seed=0)})

    # A checkpoint written from the GPU reloads on the CPU with the same outputs.
    model = uk.train_model(ds, arch="cnn", recipe=uk.Recipe(epochs=2), seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = uk.save_checkpoint(model, Path(tmp) / "gpu.safetensors")
        cpu = uk.load_checkpoint(path, device="cpu")
        x = ds.test.x[:64]
        diff = (model(x.cuda()).cpu() - cpu(x)).abs().max().item()
    report["checkpoint_gpu_to_cpu_max_abs_diff"] = diff

    # Importance implementations agree on CUDA.
    try:
        from unlearnkit import importance as imp

        split = uk.split_by_class(ds, [3])
        res = {}
        for impl in getattr(imp, "IMPLEMENTATIONS", ()):
            t = time.perf_counter()
            val = imp.importances(model, split.forget, mode="fisher", implementation=impl)
            torch.cuda.synchronize()
            res[impl] = (time.perf_counter() - t, val)
        if res:
            ref = next(iter(res.values()))[1]
            report["importance"] = {
                k: {"seconds": s, "max_rel_diff_vs_first": max(
                    float((v[n] - ref[n]).abs().max() / (ref[n].abs().max() + 1e-12)) for n in ref)}
                for k, (s, v) in res.items()}
    except Exception as exc:
        report["importance"] = {"error": f"{type(exc).__name__}: {exc}"}

    if args.mnist is not None:
        mn = uk.load_dataset("mnist", root=args.mnist)
        report["mnist"] = run_scenarios(
            mn, "cnn", uk.Recipe(epochs=5, lr=0.05, batch_size=128), methods,
            {"class": uk.split_by_class(mn, [3]),
             "random": uk.split_random(mn, fraction=0.1, seed=0)})

    text = json.dumps(report, indent=1, default=str)
    if args.out:
        args.out.write_text(text)
    print(text)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
