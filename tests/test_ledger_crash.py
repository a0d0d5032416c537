"""Crash safety and concurrency of the ledger on SQLite: ``unlearnkit ledger apply`` killed with
SIGKILL at every stage of its work, two applies at once, requests recorded while an apply runs,
and racing requests. The same on PostgreSQL is in ``test_ledger_postgres.py``.

The stages are reached through the ledger's fault-injection hook (``FAILPOINT_ENV``:
``kill@POINT`` makes the process SIGKILL itself there, ``sleep@POINT:S`` holds it there), so
that each kill lands where it is meant to.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import pytest

from _cli import assert_one_error_line
from _ledger import cli, make_ledger, start, tiny_checkpoint
from unlearnkit.exceptions import LedgerError
from unlearnkit.ledger import FAILPOINT_ENV, Ledger

#: the stages of an apply, in order (see unlearnkit.ledger.core.FAILPOINT_ENV)
POINTS = ("locked", "unlearned", "checkpoint-written", "entry-inserted", "committed")


@pytest.fixture(scope="module")
def original(tmp_path_factory, mlp_model) -> Path:
    return tiny_checkpoint(mlp_model, tmp_path_factory.mktemp("ledger-v0"))


def wait_for(predicate, timeout: float = 60.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def lock_held(db: Path) -> bool:
    """Whether a process holds the ledger's apply lock (the flock on ``<db>.lock``), read from
    /proc/locks so that looking never takes the lock itself."""
    import os

    try:
        inode = os.stat(f"{db}.lock").st_ino
    except FileNotFoundError:
        return False
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(inode):
            return True
    return False


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_sigkill_at_any_stage_of_apply_leaves_a_consistent_ledger(tmp_path, original, point):
    db = tmp_path / "l.sqlite"
    ledger = make_ledger(db, original)
    ledger.add_request(["1", "2"])
    ledger.add_request(["3"])
    before = ledger.entries()
    p = cli("ledger", "apply", "--ledger", db, env={FAILPOINT_ENV: f"kill@{point}"})
    assert p.returncode == -signal.SIGKILL, p.stderr
    report = ledger.audit()
    assert report.ok, report.problems
    s = ledger.status()
    if point == "committed":  # the new version with every record
        assert s.current.number == 1 and not s.pending
        assert [e.kind for e in ledger.entries()] == [e.kind for e in before] + ["apply"]
        assert report.orphans == ()
    else:  # nothing: the requests still pending
        assert s.current.number == 0 and [r.id for r in s.pending] == ["req-1", "req-2"]
        assert ledger.entries() == before
        written = point in ("checkpoint-written", "entry-inserted")
        assert len(report.orphans) == (1 if written else 0)  # harmless, and listed
    # the killed process's lock died with it: the next apply proceeds at once
    res = ledger.apply()
    assert res.outcome == ("nothing to apply" if point == "committed" else "applied")
    assert ledger.audit().ok and ledger.status().current.number == 1


@pytest.mark.slow
def test_sigkill_at_random_moments(tmp_path, original):
    db = tmp_path / "l.sqlite"
    ledger = make_ledger(db, original)
    for i, delay in enumerate((0.05, 0.3, 0.6, 0.9)):
        ledger.add_request([str(10 * i + 1), str(10 * i + 2)])
        before = ledger.status().current.number
        proc = start("ledger", "apply", "--ledger", db)
        wait_for(lambda p=proc: lock_held(db) or p.poll() is not None,
                 what="the apply to take the lock")
        time.sleep(delay)  # somewhere inside the locked work (about a second on digits)
        proc.kill()
        proc.communicate(timeout=60)
        assert ledger.audit().ok
        s = ledger.status()
        assert s.current.number in (before, before + 1)
        assert bool(s.pending) == (s.current.number == before)  # all or nothing
    ledger.apply()
    s = ledger.status()
    assert not s.pending and ledger.audit().ok
    assert sorted(r for v in s.versions for r in v.requests) == [f"req-{i}" for i in (1, 2, 3, 4)]


@pytest.mark.slow
def test_a_second_apply_refuses_with_one_line_or_waits(tmp_path, original):
    db = tmp_path / "l.sqlite"
    ledger = make_ledger(db, original)
    ledger.add_request(["1"])
    first = start("ledger", "apply", "--ledger", db, env={FAILPOINT_ENV: "sleep@locked:6"})
    wait_for(lambda: lock_held(db), what="the first apply to take the lock")
    second = cli("ledger", "apply", "--ledger", db)
    assert second.returncode == 2 and not second.stdout
    assert_one_error_line(second.stderr, "Another apply is running on the ledger",
                          f"pid {first.pid}", "--wait")
    waiting = start("ledger", "apply", "--ledger", db, "--wait", "--json")
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    out2, err2 = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err2
    assert json.loads(out2)["outcome"] == "nothing to apply"  # the first honoured req-1
    kinds = [e.kind for e in ledger.entries()]
    assert kinds == ["init", "request", "apply"] and ledger.audit().ok


@pytest.mark.slow
def test_requests_recorded_during_an_apply_wait_for_the_next(tmp_path, original):
    db = tmp_path / "l.sqlite"
    ledger = make_ledger(db, original)
    ledger.add_request(["1"])
    proc = start("ledger", "apply", "--ledger", db, env={FAILPOINT_ENV: "sleep@unlearned:5"})
    working = threading.Event()

    def watch() -> None:
        for line in proc.stderr:  # "v1: finetune on ..." comes once the batch is fixed
            if line.startswith("v1: finetune on"):
                working.set()

    threading.Thread(target=watch, daemon=True).start()
    assert working.wait(60), "the apply did not start its step"
    t = time.monotonic()
    ledger.add_request(["2"])  # not blocked by the running apply
    assert time.monotonic() - t < 3
    proc.wait(timeout=120)
    assert proc.returncode == 0
    s = ledger.status()
    assert s.current.requests == ("req-1",) and [r.id for r in s.pending] == ["req-2"]


def test_racing_requests_for_the_same_sample_record_one(tmp_path, original):
    db = tmp_path / "l.sqlite"
    make_ledger(db, original)
    results: list[object] = []
    barrier = threading.Barrier(4)

    def add(i: int) -> None:
        ledger = Ledger(db)
        barrier.wait()
        try:
            results.append(ledger.add_request(["7", str(100 + i)]).id)
        except LedgerError as exc:
            results.append(exc)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [r for r in results if isinstance(r, str)]
    lost = [r for r in results if isinstance(r, LedgerError)]
    assert won == ["req-1"] and len(lost) == 3
    assert all("'7' (item 1: pending in req-1)" in str(e) for e in lost)
    assert Ledger(db).audit().ok
