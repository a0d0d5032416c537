"""Ctrl-C on a running benchmark (issue 15): a real SIGINT to the terminal's process group
stops the workers at once, leaves no process behind, stores exactly the runs that finished
(and says how many), and the same command completes the rest."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import pytest

CONFIG = """\
dataset: digits
model: {arch: mlp, kwargs: {hidden: [32]}}
recipe: {epochs: 2}
scenarios: {classes: [[3]]}
methods: {finetune: {epochs: [30, 31, 32, 33, 34, 35]}}
seeds: [0]
relearn: false
mia: false
original: false
"""


def _rows(db: Path) -> int:
    try:
        conn = sqlite3.connect(db)
        try:
            return conn.execute("SELECT count(*) FROM runs").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _processes_named(word: str) -> set[int]:
    out = subprocess.run(["pgrep", "-f", word], capture_output=True, text=True).stdout
    return {int(x) for x in out.split()}


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["process", "ray"])
def test_sigint_stops_the_workers_stores_the_finished_runs_and_a_rerun_completes(
        tmp_path, executor):
    if executor == "ray":
        pytest.importorskip("ray")  # the test extra installs it: `make test` runs this
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG)
    db = tmp_path / "r.sqlite"
    cmd = [sys.executable, "-m", "unlearnkit", "bench", str(cfg), "--out", str(db),
           "--workers", "2", "--executor", executor]
    rays_before = _processes_named("ray::") | _processes_named("raylet")
    env = {**os.environ, "PYTHONWARNINGS": ""}
    # a terminal's foreground job: SIGINT at its default, even when this test runs under
    # `nohup ... &`, whose ignored SIGINT every child would inherit (and then never stop)
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env,
                            preexec_fn=_default_sigint)
    try:
        deadline = time.monotonic() + 120
        while _rows(db) < 1 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None, "the benchmark ended before it could be interrupted"
        workers = _children(proc.pid)
        if executor == "process":  # the pool's two workers (and multiprocessing's tracker)
            assert len(workers) >= 2
        else:  # Ray's own processes (raylet, workers), wherever Ray started them
            workers += sorted((_processes_named("ray::") | _processes_named("raylet"))
                              - rays_before)
            assert workers
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out[-3000:]
    said = re.search(r"interrupted: (\d+) run\(s\) stored, (\d+) in flight discarded", out)
    assert said, out
    stored, lost = int(said.group(1)), int(said.group(2))
    assert 1 <= stored < 6 and 1 <= lost <= (2 if executor == "process" else 6)
    assert "leaked semaphore" not in out and "Traceback" not in out
    # no process left behind: every worker is gone within a few seconds
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in workers)
    # the store holds exactly the finished runs, no lease, and one log per stored run
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM runs WHERE status = 'ok'").fetchone()[0] == stored
    assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == stored
    assert conn.execute("SELECT count(*) FROM leases").fetchone()[0] == 0
    conn.close()
    assert len(list((tmp_path / "r.sqlite.logs").glob("*.log"))) == stored
    # the same command completes the rest
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"{6 - stored} done, {stored} skipped (already in the store)" in again.stdout
    assert _rows(db) == 6


def test_a_ctrl_c_while_a_worker_starts_cannot_reach_its_start_up_code():
    """The pool starts workers on demand, inside ``submit``: a Ctrl-C that comes while one is
    still importing (before its initializer ignores SIGINT) raised a KeyboardInterrupt there
    and printed a traceback. Started under ``_spawning``, the worker is born with SIGINT
    blocked: the same signal, sent at once, leaves it to finish its work and exit cleanly."""
    import multiprocessing

    from unlearnkit.bench.run import _spawning

    ctx = multiprocessing.get_context("spawn")
    codes = {}
    # a terminal's foreground job: SIGINT at Python's default here (a shell's background job,
    # as under `nohup ... &`, ignores it, and its children would inherit that)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for guarded in (False, True):
            proc = ctx.Process(target=time.sleep, args=(0.2,))
            with _spawning() if guarded else nullcontext():
                proc.start()
            os.kill(proc.pid, signal.SIGINT)  # surely still in the interpreter's start-up
            proc.join(30)
            codes[guarded] = proc.exitcode
    finally:
        signal.signal(signal.SIGINT, before)
    assert codes[False] != 0  # the unguarded start-up dies of it: the test can fail
    assert codes[True] == 0
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, set())  # restored


def test_a_pool_worker_ignores_sigint_and_no_longer_blocks_it():
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from unlearnkit.bench.run import _init_worker, _spawning

    with ProcessPoolExecutor(1, mp_context=get_context("spawn"),
                             initializer=_init_worker) as pool:
        with _spawning():
            fut = pool.submit(_sigint_state)
        blocked, handler = fut.result(timeout=60)
    assert not blocked and handler == signal.SIG_IGN


def _sigint_state() -> tuple[bool, object]:
    return (signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, set()),
            signal.getsignal(signal.SIGINT))
