"""How long `unlearnkit report` takes when its figures are drawn (cold), when nothing changed
(every figure reused from the report folder) and when one scenario's rows changed.

    python benchmarks/report_cache.py runs/demo/results.sqlite

The store is copied to a temporary folder first (one run's ``retain_acc`` is changed in the
copy for the third pass); the report goes to a temporary folder too.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from unlearnkit.report import write_report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store", help="a bench store (results.sqlite)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db, out = Path(tmp) / "results.sqlite", Path(tmp) / "report"
        shutil.copy(args.store, db)

        def once(label: str) -> None:
            t = time.perf_counter()
            r = write_report(db, out)
            print(f"{label:<22} {time.perf_counter() - t:6.2f} s  {r['figures_drawn']:3d} drawn, "
                  f"{r['figures_reused']:3d} reused", flush=True)

        once("cold")
        once("nothing changed")
        with sqlite3.connect(db) as con:  # one run of the last scenario changes
            (rid,) = con.execute(
                "SELECT run_id FROM runs WHERE status = 'ok' AND method NOT IN "
                "('retrain', 'original') ORDER BY rowid DESC LIMIT 1").fetchone()
            con.execute("UPDATE runs SET retain_acc = retain_acc * 0.99 WHERE run_id = ?",
                        (rid,))
        once("one scenario changed")


if __name__ == "__main__":
    main()
