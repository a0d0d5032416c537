"""Benchmark: the competition's forgetting quality, fast path (sort + binary search).

Run on demand (never by the test suite):

    .venv/bin/python benchmarks/competition_score.py --models 512 --examples 1000 --repeats 3

Times ``forgetting_quality`` on Gaussian logit-scaled confidences (both pools from one
distribution, the slowest realistic case since nothing hits the range cap) and prints the
median wall time; ``--check N`` also compares the first N examples with the dense reference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

from unlearnkit.metrics.competition import _epsilons_dense, epsilons, forgetting_quality


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=512)
    ap.add_argument("--examples", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", type=int, default=0, help="examples to compare with the dense path")
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    u = rng.normal(size=(args.models, args.examples))
    r = rng.normal(size=(args.models, args.examples))
    times = []
    for i in range(args.repeats):
        t0 = time.perf_counter()
        f = forgetting_quality(u, r)
        times.append(time.perf_counter() - t0)
        print(f"run {i + 1}: {times[-1]:.2f} s, F = {f:.4f}", file=sys.stderr)
    out = {
        "models": args.models,
        "examples": args.examples,
        "median_s": statistics.median(times),
        "times_s": times,
        "forgetting_quality": f,
    }
    if args.check:
        k = args.check
        out["dense_equal"] = bool(
            np.array_equal(epsilons(u[:, :k], r[:, :k]), _epsilons_dense(u[:, :k], r[:, :k]))
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
