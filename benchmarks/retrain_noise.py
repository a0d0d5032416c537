"""Benchmark: the noise floor of the retrained-model comparison, from a bench config.

Run on demand (not a test):

    python benchmarks/retrain_noise.py benchmarks/calibrated-cifar10.yaml [--scenario random]
        [--seeds 1 2]

For the config's first scenario of the given kind, seed 0, it loads the bench's original and
its reference retraining (both from the on-disk cache, trained if absent), retrains the model
again with other seeds (``uk.unlearn(original, split, "retrain", seed=s)``), and prints the
figures of each of those retrainings against the reference, beside the original's: how far
from "the retrained model" an exact retraining lands by chance alone. A criterion such as
"closer to the retrained model than the original on JS" has only the room between the two.
The MIAs are left out (``mia=False``), so ``avg_gap`` here is over the accuracies only.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import torch
import yaml

import unlearnkit as uk
from unlearnkit.bench import expand, parse_config
from unlearnkit.bench.run import _data, _prep_tasks, _split, prepare
from unlearnkit.evaluation import evaluate
from unlearnkit.models.checkpoint import load_checkpoint

KEYS = ("forget_acc", "retain_acc", "test_acc", "js_divergence", "avg_gap", "verdict_loss_auc")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", type=Path)
    p.add_argument("--scenario", choices=("class", "random"), default="random")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    raw = yaml.safe_load(args.config.read_text())
    plan = expand(parse_config(raw, base=args.config.resolve().parent.parent))
    run = next(r for r in plan.runs if r.scenario.kind == args.scenario and r.seed == 0)
    tasks = _prep_tasks(plan, [run], device=None, process="main")
    made = prepare(tasks[("original", 0)])
    original = load_checkpoint(made["path"])
    ref = prepare({**tasks[("reference", run.scenario, 0)], "original": made["path"]})
    reference = load_checkpoint(ref["path"])
    split = _split(_data(plan.config.dataset, dict(plan.config.dataset_options)),
                   run.scenario, 0)

    def show(label: str, model: torch.nn.Module) -> None:
        ev = evaluate(model, split, original=original, retrained=reference, mia=False,
                      verdict=True)
        print(json.dumps({"model": label, "scenario": run.scenario.label,
                          **{k: round(float(ev[k]), 4) for k in KEYS if ev.get(k) is not None},
                          "verdict": ev.get("verdict")}), flush=True)

    show("original", original)
    for seed in args.seeds:
        show(f"retrain, seed {seed}",
             uk.unlearn(original, split, "retrain", seed=seed, verdict=False))


if __name__ == "__main__":
    main()
