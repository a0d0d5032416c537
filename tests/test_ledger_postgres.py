"""The ledger on a real PostgreSQL server: the same code as on SQLite, through SQLAlchemy.

`make test` starts a private server on 127.0.0.1 (tests/pg_server.sh, Debian's postgresql) and
sets ``UNLEARNKIT_TEST_POSTGRES_URL``; these tests then FAIL, naming the URL, if that server
cannot be reached. A plain ``pytest`` without the variable skips them, saying how to run them
(CI runs `make test`, so the skip cannot hide a failure there). Each test works in a schema of
its own, dropped afterwards.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest

from _cli import assert_one_error_line, run
from _ledger import cli, make_ledger, start, tiny_checkpoint
from unlearnkit.exceptions import LedgerError
from unlearnkit.ledger import FAILPOINT_ENV, Ledger

URL_ENV = "UNLEARNKIT_TEST_POSTGRES_URL"


@pytest.fixture(scope="module")
def server() -> str:
    url = os.environ.get(URL_ENV)
    if not url:
        pytest.skip(f"{URL_ENV} is not set: `make test` starts a PostgreSQL server on 127.0.0.1 "
                    "and sets it (or export it yourself)")
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # the variable is set: a server we cannot use is a failure
        pytest.fail(f"{URL_ENV}={url}: cannot reach that PostgreSQL server "
                    f"({type(exc).__name__}: {str(exc).splitlines()[0]}); `make postgres` "
                    "starts the tests' server", pytrace=False)
    return url


@pytest.fixture
def pg_url(server):
    """The server's URL with a fresh schema first on the search path."""
    import sqlalchemy as sa

    schema = f"ledger_test_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(server)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in server else "?"
    yield f"{server}{sep}options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()


@pytest.fixture(scope="module")
def original(tmp_path_factory, mlp_model) -> Path:
    return tiny_checkpoint(mlp_model, tmp_path_factory.mktemp("ledger-v0"))


def execute(url: str, statement: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(statement))
    engine.dispose()


def test_postgres_ledger_life(pg_url, original, tmp_path, digits):
    ledger = make_ledger(pg_url, original, checkpoints=tmp_path / "ck",
                         policy={"after_fraction": 0.05})
    assert ledger.url.startswith("postgresql+psycopg://")
    ledger.add_request(["1", "2"], reason="user 1")
    ledger.add_request(["3"], reason="user 2")
    assert ledger.apply().outcome == "applied"
    ledger.add_request(class_=5)
    res = ledger.apply()
    assert res.outcome == "retrained" and "erased share" in res.message
    s = ledger.status()
    assert [v.kind for v in s.versions] == ["original", "approximate", "retrain"]
    assert s.versions[2].payload["verdicts"]["all"]["outcome"] == "forgotten"
    times = [e.created_at for e in ledger.entries()]
    assert times == sorted(times)  # the server's clock
    report = ledger.audit()
    assert report.ok and report.checkpoints == 3
    code, out, _ = run("ledger", "status", "--ledger", pg_url)
    assert code == 0 and "v2       retrain" in out
    with pytest.raises(LedgerError, match="already exists"):
        make_ledger(pg_url, original, checkpoints=tmp_path / "ck2")


def test_postgres_needs_a_checkpoint_folder(pg_url, original):
    with pytest.raises(LedgerError, match="needs a checkpoint folder"):
        Ledger.create(pg_url, checkpoint=original)


def test_postgres_audit_names_the_edited_entry(pg_url, original, tmp_path):
    ledger = make_ledger(pg_url, original, checkpoints=tmp_path / "ck")
    ledger.add_request(["1"], reason="first")
    ledger.add_request(["2"], reason="second")
    ledger.apply()
    assert ledger.audit().ok
    execute(pg_url, "UPDATE unlearnkit_ledger_entries SET payload = "
                    "replace(payload, 'first', 'other') WHERE seq = 2")
    code, out, _ = run("ledger", "audit", "--ledger", pg_url)
    assert code == 1 and "  entry 2 (request req-1, " in out and "changed after" in out
    with pytest.raises(LedgerError, match="chain is broken: entry 2"):
        ledger.apply()


@pytest.mark.slow
def test_postgres_sigkill_inside_the_transaction_rolls_back(pg_url, original, tmp_path):
    ledger = make_ledger(pg_url, original, checkpoints=tmp_path / "ck")
    ledger.add_request(["1", "2"])
    before = ledger.entries()
    p = cli("ledger", "apply", "--ledger", pg_url, env={FAILPOINT_ENV: "kill@entry-inserted"})
    assert p.returncode == -signal.SIGKILL, p.stderr
    report = ledger.audit()
    assert report.ok and len(report.orphans) == 1
    assert ledger.entries() == before and [r.id for r in ledger.status().pending] == ["req-1"]
    # the server released the dead session's advisory lock: the next apply proceeds
    assert ledger.apply().outcome == "applied" and ledger.audit().ok


@pytest.mark.slow
def test_postgres_a_second_apply_refuses_with_one_line(pg_url, original, tmp_path):
    import sqlalchemy as sa

    ledger = make_ledger(pg_url, original, checkpoints=tmp_path / "ck")
    ledger.add_request(["1"])
    first = start("ledger", "apply", "--ledger", pg_url, env={FAILPOINT_ENV: "sleep@locked:6"})
    engine = sa.create_engine(pg_url)

    def held() -> bool:
        with engine.connect() as conn:
            return bool(conn.execute(sa.text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")).scalar())

    end = time.monotonic() + 60
    while not held():
        assert time.monotonic() < end, "the first apply never took the lock"
        time.sleep(0.05)
    engine.dispose()
    second = cli("ledger", "apply", "--ledger", pg_url)
    assert second.returncode == 2
    assert_one_error_line(second.stderr, "Another apply is running",
                          f"ledger apply, pid {first.pid}")
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert [e.kind for e in ledger.entries()] == ["init", "request", "apply"]


def test_postgres_racing_requests_for_the_same_sample_record_one(pg_url, original, tmp_path):
    make_ledger(pg_url, original, checkpoints=tmp_path / "ck")
    results: list[object] = []
    barrier = threading.Barrier(4)

    def add(i: int) -> None:
        ledger = Ledger(pg_url)
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
    assert [r for r in results if isinstance(r, str)] == ["req-1"]
    assert sum(isinstance(r, LedgerError) for r in results) == 3
    assert Ledger(pg_url).audit().ok
