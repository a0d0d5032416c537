"""Benchmark: a second forget request to the same model, calibrated at a fifth of a retraining,
cold against warm-started from the first request's searches (``uk.calibrate(warm_start=...)``,
what the ledger does from one step to the next).

Run on demand (not a test), from the project root, after the bench has run ``CONFIG`` (its
class scenario's searches, at one budget or several, are the first request's):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/warm_start.py \\
        benchmarks/calibrated-cifar10.yaml --later dog \\
        --earlier runs/cal-cifar/results.sqlite --earlier runs/cal-cifar1/results.sqlite

One process, one thread, warmed up. The later request's retraining is timed here and is both
its reference (test-retain accuracy) and its budget's base (``--budget`` x its seconds). Each
method is then searched once cold and once from each ``--earlier`` store's history of it, in
that order, each search with an importance cache of its own (so none reads another's I_D).
Prints one row per method and the count at retrain-level (``forget_acc`` <= 0.05 and
test-retain accuracy within 3 points of the retrained model's: the issue's class criterion).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import tempfile
import time

import torch
import yaml

import unlearnkit as uk
from unlearnkit.bench import expand, parse_config
from unlearnkit.bench.run import _data
from unlearnkit.calibration import NoTrialFinished
from unlearnkit.methods.base import METHODS
from unlearnkit.models.checkpoint import load_checkpoint
from unlearnkit.pools import original_cache_path
from unlearnkit.training import accuracy, warm_up

TRIAL_FIELDS = ("number", "params", "state", "value", "outcome", "retained", "shortfall",
                "seconds", "note")


def earlier_histories(store: str) -> dict[str, dict]:
    """Each method's search on the store's class scenario, as a calibration history."""
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    out = {}
    for run_id, method in db.execute(
            "SELECT run_id, method FROM runs WHERE scenario_kind = 'class'"):
        rows = db.execute(f"SELECT {', '.join(TRIAL_FIELDS)} FROM trials WHERE run_id = ? "
                          "ORDER BY number", (run_id,)).fetchall()
        if rows:
            trials = [dict(zip(TRIAL_FIELDS, r, strict=True)) for r in rows]
            for t in trials:
                t["params"] = json.loads(t["params"])
            out[method] = {"method": method, "trials": trials}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config")
    p.add_argument("--later", default="dog", help="the later request's class")
    p.add_argument("--earlier", action="append", default=[], metavar="STORE")
    p.add_argument("--budget", type=float, default=0.2)
    p.add_argument("--methods", nargs="*", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    with open(args.config) as f:
        cfg = expand(parse_config(yaml.safe_load(f))).config
    data = _data(cfg.dataset, dict(cfg.dataset_options))
    model = load_checkpoint(original_cache_path(data, arch=cfg.arch, recipe=cfg.recipe, seed=0,
                                                **dict(cfg.arch_kwargs)))
    split = uk.split_by_class(data, [args.later])
    earlier = {store: earlier_histories(store) for store in args.earlier}
    warm_up(None, model=model, data=split.retain)
    t = time.perf_counter()
    retrained = uk.unlearn(model, split, "retrain", seed=0, verdict=False)
    retrain_s = time.perf_counter() - t
    reference = accuracy(retrained, split.test_retain)
    budget = args.budget * retrain_s
    print(f"later request: class {args.later}; retraining {retrain_s:.2f} s, test-retain "
          f"{reference:.3f}; budget {budget:.2f} s")
    methods = args.methods or [m for m in METHODS if m != "retrain"]
    arms = [("cold", None)] + [(store, None) for store in args.earlier]
    counts = {arm: 0 for arm, _ in arms}
    print("| method | " + " | ".join(a for a, _ in arms) + " |")
    print("|---|" + "---|" * len(arms))
    for m in methods:
        cells = []
        for arm, _ in arms:
            warm = None if arm == "cold" else earlier[arm].get(m)
            if arm != "cold" and warm is None:
                cells.append("no earlier search")
                continue
            with tempfile.TemporaryDirectory() as cache:
                os.environ["UNLEARNKIT_CACHE"] = cache  # no search reads another's importances
                try:
                    c = uk.calibrate(model, split, m, budget_seconds=budget, seed=0,
                                     warm_start=warm)
                except NoTrialFinished:
                    cells.append("no trial finished")
                    continue
                except uk.InvalidParameterError as exc:
                    cells.append(f"refused: {str(exc)[:40]}")
                    continue
            f_acc = accuracy(c.model, split.forget)
            tr = accuracy(c.model, split.test_retain)
            level = f_acc <= 0.05 and tr >= reference - 0.03
            counts[arm] += level
            cells.append(f"{'**yes**' if level else 'no'}: {c.verdict.outcome}, forget "
                         f"{f_acc:.3f}, test-retain {tr:.3f}, {len(c.trials)} trials, "
                         f"{c.seconds:.2f} s")
        print(f"| {m} | " + " | ".join(cells) + " |", flush=True)
    print("retrain-level: " + ", ".join(f"{a} {n}/{len(methods)}" for a, n in counts.items()))


if __name__ == "__main__":
    main()
