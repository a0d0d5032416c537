"""Which methods could forget within a smaller budget: from a store whose searches ran at a
larger one (e.g. ``benchmarks/calibrated-budget-1.yaml``, a whole retraining's time each), per
scenario and method, the cheapest trial whose oracle-free verdict was ``forgotten``.

    python benchmarks/feasibility.py runs/cal1/results.sqlite --fraction 0.2

A search at ``--fraction`` of the retraining (the scenario's retrain row's seconds, measured
in the same pool) can return a ``forgotten`` model only from a trial that costs less than that.
Two counts per scenario:

- **never forgot**: methods none of whose trials ended ``forgotten`` (an epoch on the way
  counts: a trial's result is its best epoch that forgot), in a search five times as long
  when the store's budget is 1.0. The others bound what a search at ``--fraction`` can reach.
- **within the smaller budget**: methods whose cheapest ``forgotten`` trial took less than it.
  A trial's seconds are the whole trial's, also when its result is an earlier epoch (column
  ``stopped at``), so this count is an underestimate where such trials are the cheapest.

Evidence, not a proof: the longer search may have missed a cheaper configuration; and a
search at the smaller budget runs its defaults first and pays once for what its trials share
(an importance pass, which the longer search's later trials read from its cache: column
``trial 0 s``).
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from unlearnkit.bench.store import read_rows, read_trials


def cheapest_forgotten(trials: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The trial that ended ``forgotten`` in the fewest seconds (``None``: none did)."""
    done = [t for t in trials if t.get("outcome") == "forgotten" and t.get("seconds")]
    return min(done, key=lambda t: t["seconds"]) if done else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("store")
    p.add_argument("--fraction", type=float, default=0.2,
                   help="the smaller budget, a fraction of the retraining (default 0.2)")
    args = p.parse_args()
    rows = read_rows(args.store)
    trials = read_trials(args.store)
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        mine = [r for r in rows if r["scenario"] == scenario]
        # the retrain row, or (a store without one) the retraining its rows were compared with
        retrain_s = next((r["seconds"] for r in mine
                          if r["method"] == "retrain" and r["status"] == "ok"),
                         next((r["retrain_seconds"] for r in mine if r["retrain_seconds"]), None))
        if retrain_s is None:
            print(f"\n### {scenario}: no retraining recorded; skipped")
            continue
        budget = args.fraction * retrain_s
        searched = [r for r in mine if r["calibration"] is not None and r["run_id"] in trials]
        print(f"\n### {scenario}: retraining {retrain_s:.2f} s; "
              f"{args.fraction:g} of it = {budget:.2f} s\n")
        print("| method | trials | forgotten | cheapest forgotten s | stopped at | its retained | "
              "trial 0 s | within the smaller budget |")
        print("|---|---|---|---|---|---|---|---|")
        reach = never = 0
        for r in sorted(searched, key=lambda r: r["method"]):
            ts = trials[r["run_id"]]
            best = cheapest_forgotten(ts)
            ok = best is not None and best["seconds"] <= budget
            reach += ok
            never += best is None
            at = re.match(r"stopped at (.*? epoch \d+)", (best or {}).get("note") or "")
            first = ts[0]["seconds"] if ts else None
            print(f"| {r['method']} | {len(ts)} | "
                  f"{sum(t.get('outcome') == 'forgotten' for t in ts)} | "
                  f"{'-' if best is None else format(best['seconds'], '.2f')} | "
                  f"{at[1] if at else '-'} | "
                  f"{'-' if best is None else format(best['retained'], '.3f')} | "
                  f"{'-' if first is None else format(first, '.2f')} | "
                  f"{'yes' if ok else 'no'} |")
        print(f"\nnever forgot: {never} of {len(searched)} methods (at most "
              f"{len(searched) - never} can); within {budget:.2f} s: {reach}")


if __name__ == "__main__":
    main()
