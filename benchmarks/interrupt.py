"""Ctrl-C on a running `unlearnkit bench`: how long until the command exits, what is left
running, what the store holds, and whether the same command completes the rest.

    python benchmarks/interrupt.py [--after 45] [--rerun]

The bench (`--preset compare`, 2 workers, in a temporary folder) is started as a terminal would
start it: its own process group, SIGINT not ignored. (A `cmd &` in a non-interactive shell
script starts with SIGINT ignored, and Python then never raises KeyboardInterrupt: measure
that way and the bench runs to its end.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def group(pid: int) -> list[str]:
    out = subprocess.run(["ps", "-o", "pid=,stat=,args=", "-g", str(pid)],
                         capture_output=True, text=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--after", type=float, default=45.0, help="seconds before the SIGINT")
    ap.add_argument("--rerun", action="store_true", help="then run the same command again")
    args = ap.parse_args()
    exe = shutil.which("unlearnkit") or str(Path(sys.executable).parent / "unlearnkit")
    cmd = [exe, "bench", "--preset", "compare", "--out", "r.sqlite", "--workers", "2"]
    with tempfile.TemporaryDirectory() as d:
        with open(Path(d) / "err.txt", "w") as err:
            # SIGINT at its default, as in a terminal, even under `nohup ... &`
            p = subprocess.Popen(cmd, cwd=d, stdout=subprocess.DEVNULL, stderr=err,
                                 start_new_session=True,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                                  signal.SIG_DFL))
            time.sleep(args.after)
            print(f"running before the SIGINT: {len(group(p.pid))} processes")
            start = time.perf_counter()
            os.kill(p.pid, signal.SIGINT)
            code = p.wait()
            print(f"exit {code} after {time.perf_counter() - start:.2f} s")
        for wait in (1.0, 3.0):
            time.sleep(wait)
            print(f"left in the process group {wait:g} s later: {group(p.pid) or 'nothing'}")
        print("stderr:", *(Path(d) / "err.txt").read_text().strip().splitlines()[-2:], sep="\n  ")
        with sqlite3.connect(Path(d) / "r.sqlite") as con:
            print("stored:", dict(con.execute("SELECT status, count(*) FROM runs GROUP BY status")))
        logs = Path(d) / "r.sqlite.logs"
        print("log files:", len(list(logs.iterdir())) if logs.is_dir() else 0)
        if args.rerun:
            start = time.perf_counter()
            r = subprocess.run(cmd, cwd=d, capture_output=True, text=True)
            tail = next((line for line in r.stdout.splitlines() if " runs: " in line), "")
            print(f"rerun: exit {r.returncode} in {time.perf_counter() - start:.0f} s: {tail}")


if __name__ == "__main__":
    main()
