"""Benchmark: one method's seconds at its defaults on a bench config's class scenario, cold
(the importance cache not read), to compare two commits like for like.

Run on demand (not a test), from the project root, after the bench has trained (and cached)
the config's original:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/method_seconds.py \
        benchmarks/calibrated-cifar10.yaml influence

One process, one thread, a warm-up run, then ``--repeats`` timed runs of
``uk.unlearn(original, split, METHOD)``; prints the median, the runs, and a checksum of the
unlearned weights (equal checksums: the two commits compute the same model). Run it at each
commit on a quiet machine, one after the other.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import yaml

import unlearnkit as uk
from unlearnkit.bench import expand, parse_config
from unlearnkit.bench.run import _data, _split
from unlearnkit.data.splits import Split
from unlearnkit.importance.cache import cache_use
from unlearnkit.models.checkpoint import load_checkpoint
from unlearnkit.pools import original_cache_path


def class_study(config: str) -> tuple[torch.nn.Module, Split]:
    """A bench config's cached original (trained by the bench) and its class scenario."""
    with open(config) as f:
        plan = expand(parse_config(yaml.safe_load(f)))
    cfg = plan.config
    data = _data(cfg.dataset, dict(cfg.dataset_options))
    model = load_checkpoint(original_cache_path(data, arch=cfg.arch, recipe=cfg.recipe, seed=0,
                                                **dict(cfg.arch_kwargs)))
    return model, _split(data, next(s for s, _ in plan.references if s.kind == "class"), 0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config")
    p.add_argument("method")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    model, split = class_study(args.config)

    def run() -> tuple[float, torch.nn.Module]:
        with cache_use(read=False):
            t = time.perf_counter()
            out = uk.unlearn(model, split, args.method, seed=0, verdict=False)
            return time.perf_counter() - t, out

    run()  # warm-up
    times, out = [], None
    for _ in range(args.repeats):
        t, out = run()
        times.append(t)
    assert out is not None
    checksum = float(torch.cat([q.detach().double().flatten() for q in out.parameters()]).sum())
    print(json.dumps({"method": args.method, "config": args.config,
                      "median s": round(statistics.median(times), 3),
                      "runs": [round(t, 3) for t in times], "checksum": checksum}))


if __name__ == "__main__":
    main()
