"""Defaults against calibrated, per scenario, from a store of `unlearnkit bench` with a
`calibrate` key (e.g. `--preset calibrated`): issue 13's closing tables.

    python benchmarks/calibration_table.py runs/calibrated/results.sqlite

Prints, per scenario, one Markdown row per method: at its defaults (verdict, forget_acc_gap,
avg_gap, js_divergence, seconds) and calibrated (the same, the chosen parameters, the trials),
then how many methods reach retrain-level at defaults and calibrated, and why each calibrated
row that does not misses it:

- class: forget_acc <= 0.05 and test-retain accuracy within 3 points of the retrained model's;
- random: closer to the retrained model than the original is on both avg_gap and
  js_divergence, with the verdict's loss-attack AUC (D_f against the validation set) within
  0.05 of the retrained model's;

and, over all rows, how often the oracle-free verdict agrees with the retrained-model
comparison (`unlearnkit.report.verdicts`), and whether the budgets held: each calibrated row's
seconds against its budget, and their total against the retraining's (like for like: both
measured in the same pool).
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from unlearnkit.bench.store import read_rows
from unlearnkit.methods.base import get_method
from unlearnkit.report.verdicts import verdict_agreement

CLASS_FORGET = 0.05
CLASS_UTILITY = 0.03
RANDOM_AUC = 0.05


def _f(x: Any, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def retrain_level(row: dict[str, Any], retrain: dict[str, Any], original: dict[str, Any] | None
                  ) -> bool:
    """The issue's criterion of "retrain-level" for ``row``'s scenario kind."""
    if row is None or row["status"] != "ok":
        return False
    if row["scenario_kind"] == "class":
        return (row["forget_acc"] is not None and row["forget_acc"] <= CLASS_FORGET
                and row["test_retain_acc"] is not None
                and abs(row["test_retain_acc"] - retrain["test_retain_acc"]) <= CLASS_UTILITY)
    if original is None:
        return False
    auc, ref_auc = row.get("verdict_loss_auc"), retrain.get("verdict_loss_auc")
    return (row["avg_gap"] is not None and row["avg_gap"] < original["avg_gap"]
            and row["js_divergence"] is not None
            and row["js_divergence"] < original["js_divergence"]
            and auc is not None and ref_auc is not None and abs(auc - ref_auc) <= RANDOM_AUC)


def shortfall(row: dict[str, Any] | None, retrain: dict[str, Any],
              original: dict[str, Any] | None) -> str:
    """Why ``row`` is not at retrain-level ("" when it is): the criterion's parts it misses,
    with their numbers."""
    if row is None:
        return "no row"
    if row["status"] != "ok":
        # calibrate's message counts its trials by how they ended: "(1 over budget, 3 stalled)"
        how = re.search(r"\((\d+ (?:complete|pruned|stalled|over budget|failed)[^()]*)\)",
                        (row.get("calibration") or {}).get("note") or "")
        return "no trial finished within the budget" + (f" ({how[1]})" if how else "")
    if retrain_level(row, retrain, original):
        return ""
    why = []
    if row["scenario_kind"] == "class":
        if row["forget_acc"] is None or row["forget_acc"] > CLASS_FORGET:
            why.append(f"forget_acc {_f(row['forget_acc'])} > {CLASS_FORGET}")
        gap = (None if row["test_retain_acc"] is None
               else row["test_retain_acc"] - retrain["test_retain_acc"])
        if gap is None or abs(gap) > CLASS_UTILITY:
            why.append(f"test-retain {_f(row['test_retain_acc'])} vs the retrained "
                       f"{_f(retrain['test_retain_acc'])}")
        return "; ".join(why)
    assert original is not None
    for key, name in (("avg_gap", "avg_gap"), ("js_divergence", "JS")):
        if row[key] is None or row[key] >= original[key]:
            why.append(f"{name} {_f(row[key])} >= the original's {_f(original[key])}")
    auc, ref = row.get("verdict_loss_auc"), retrain.get("verdict_loss_auc")
    if auc is None or ref is None or abs(auc - ref) > RANDOM_AUC:
        why.append(f"loss AUC {_f(auc)} vs the retrained {_f(ref)}")
    return "; ".join(why)


def main(path: str) -> None:
    rows = read_rows(path)
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    budget_ratios: list[float] = []
    total_cal = total_retrain = 0.0
    for scenario in scenarios:
        mine = [r for r in rows if r["scenario"] == scenario]
        retrain = next(r for r in mine if r["method"] == "retrain" and r["status"] == "ok")
        original = next((r for r in mine if r["method"] == "original"), None)
        methods = [m for m in dict.fromkeys(r["method"] for r in mine)
                   if m not in ("retrain", "original")]
        print(f"\n### {scenario} ({mine[0]['dataset']}, {mine[0]['arch']})\n")
        print(f"retrain: test-retain {_f(retrain['test_retain_acc'])}, loss AUC "
              f"{_f(retrain.get('verdict_loss_auc'))}, {_f(retrain['seconds'], 2)} s; original: "
              f"avg_gap {_f(original and original['avg_gap'])}, JS "
              f"{_f(original and original['js_divergence'])}\n")
        print("| method | verdict | forget_acc_gap | avg_gap | JS | s | verdict (cal.) | "
              "forget_acc_gap | avg_gap | JS | s | trials | chosen |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        counts = {"defaults": 0, "calibrated": 0}
        misses: list[str] = []
        n = 0
        for m in methods:
            plain = [r for r in mine if r["method"] == m and r["calibration"] is None]
            defaults = get_method(m).params()
            d = next((r for r in plain if r["params"] == defaults), None)
            c = next((r for r in mine if r["method"] == m and r["calibration"] is not None),
                     None)
            if d is not None and d["status"] != "ok":
                print(f"| {m} | refused: {d['error'] or ''} |" + " |" * 11)
                continue
            n += 1
            counts["defaults"] += retrain_level(d, retrain, original)
            cells = ([d["verdict"], _f(d["forget_acc_gap"]), _f(d["avg_gap"]),
                      _f(d["js_divergence"]), _f(d["seconds"], 2)] if d is not None
                     else ["-"] * 5)
            why = shortfall(c, retrain, original)
            if why:
                misses.append(f"- {m}: {why}")
            if c is None:
                cells += ["-"] * 7
            elif c["status"] != "ok":
                cal = c["calibration"] or {}
                cells += [f"skipped: no trial finished in {_f(cal.get('budget_seconds'), 2)} s",
                          "", "", "", "", "", ""]
            else:
                counts["calibrated"] += retrain_level(c, retrain, original)
                cal = c["calibration"]
                chosen = {k: c["params"][k] for k in cal.get("space", {}) if k in c["params"]}
                if cal.get("stopped_at"):  # the best trial's model at the end of that epoch
                    chosen["stopped at"] = (f"{cal['stopped_at']['phase']} epoch "
                                            f"{cal['stopped_at']['epoch']}")
                cells += [c["verdict"], _f(c["forget_acc_gap"]), _f(c["avg_gap"]),
                          _f(c["js_divergence"]), _f(c["seconds"], 2), str(cal["trials"]),
                          json.dumps({k: float(f"{v:.3g}") if isinstance(v, float) else v
                                      for k, v in chosen.items()})]
                if cal.get("budget_seconds"):
                    budget_ratios.append(c["seconds"] / cal["budget_seconds"])
                total_cal += c["seconds"]
                total_retrain += retrain["seconds"]
            print(f"| {m} | " + " | ".join(str(x) for x in cells) + " |")
        print(f"\nretrain-level: {counts['defaults']}/{n} at defaults, "
              f"{counts['calibrated']}/{n} calibrated")
        if misses:
            print("\ncalibrated, not at retrain-level:\n" + "\n".join(misses))
    check = verdict_agreement([r for r in rows if r["status"] == "ok"])
    print(f"\nverdict agreement: {json.dumps(check.to_dict().get('summary', check.to_dict()))}")
    if budget_ratios:
        print(f"budget: calibrated seconds / budget: max {max(budget_ratios):.3f}, "
              f"median {sorted(budget_ratios)[len(budget_ratios) // 2]:.3f} over "
              f"{len(budget_ratios)} searches; total calibrated seconds / total retraining "
              f"seconds of their scenarios: {total_cal / total_retrain:.3f}")


if __name__ == "__main__":
    main(sys.argv[1])
