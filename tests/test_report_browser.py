"""The HTML report in a real browser: headless Chromium, driven by Selenium.

A tiny real benchmark (an MLP on digits, two scenarios, three methods, two seeds) is run
once for this module, its report written and served over HTTP on 127.0.0.1. The page must
load with no console error, every image must render, and every cell of the summary tables
must equal the mean ± std that this test computes itself from the SQLite store.

Chromium and ChromeDriver are Debian's ``chromium`` and ``chromium-driver`` packages, which
``make test`` installs. Without them these tests fail (never skip): a report that no browser
has opened is not tested.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from unlearnkit.bench import METRIC_COLUMNS, expand, parse_config, run_plan
from unlearnkit.report import write_report

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

CONFIG = {
    "dataset": "digits",
    "model": {"arch": "mlp", "kwargs": {"hidden": [16]}},
    "recipe": {"epochs": 2},
    "scenarios": {"classes": [[3]], "random": [0.1]},
    "methods": {"finetune": {"epochs": 1}, "ssd": {}, "retrain": {}},
    "seeds": [0, 1],
    "relearn": False,
    "mia": False,
}


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict[str, Path]:
    """A real results database and the report written from it."""
    base = tmp_path_factory.mktemp("report-browser")
    db = base / "results.sqlite"
    with pytest.MonkeyPatch.context() as mp:  # caches in tmp (the autouse fixture is per test)
        mp.setenv("UNLEARNKIT_CACHE", str(base / "cache"))
        mp.setenv("UNLEARNKIT_DATA", str(base / "data"))
        summary = run_plan(expand(parse_config(CONFIG)), db, workers=1)
    assert summary["failed"] == 0, summary
    out = base / "report"
    write_report(db, out)
    return {"db": db, "dir": out, "html": out / "report.html"}


@pytest.fixture(scope="module")
def server(report) -> Iterator[str]:
    """The report's folder over HTTP on 127.0.0.1; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(report["dir"]))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no request lines on stderr
        pass


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    """Headless Chromium through the system's ChromeDriver; fails if either is missing."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (os.path.isfile(p)
                                                            and os.access(p, os.X_OK))]
    if missing:
        pytest.fail(
            f"The browser tests need Chromium and ChromeDriver, and {', '.join(missing)} "
            "is missing. Run `make test` (it installs them), or install Debian's packages: "
            "`apt-get install chromium chromium-driver`.", pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-quic",
                f"--user-data-dir={profile}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # both paths given, so selenium-manager neither downloads nor reports anything
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SE_AVOID_STATS", "true")
        drv = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        drv.set_page_load_timeout(30)
        try:
            yield drv
        finally:
            drv.quit()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def page(driver, server):
    """The report loaded in the browser, with the console messages of the load."""
    driver.get_log("browser")  # start from an empty log
    driver.get(f"{server}/report.html")
    driver.execute_async_script(  # wait until every image has loaded or failed
        "const done = arguments[arguments.length - 1];"
        "Promise.all(Array.from(document.images, img => img.decode().catch(() => null)))"
        ".then(() => done(true));")
    return {"driver": driver, "log": driver.get_log("browser")}


# ---------------------------------------------------------------------- the store, independently
def _expected(db: Path) -> dict[str, dict[tuple[str, str], dict[str, str]]]:
    """Scenario -> (method, params as sorted JSON) -> metric -> the cell text, computed from
    the ``runs`` table with sqlite3 and numpy (rows with status 'ok', std with ddof=1)."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        cur = conn.execute(f"SELECT scenario, method, params, {', '.join(METRIC_COLUMNS)} "
                           "FROM runs WHERE status = 'ok'")
        rows = cur.fetchall()
    finally:
        conn.close()
    values: dict[str, dict[tuple[str, str], dict[str, list[float]]]] = {}
    for scenario, method, params, *metrics in rows:
        key = (method, json.dumps(json.loads(params), sort_keys=True))
        group = values.setdefault(scenario, {}).setdefault(key, {})
        for name, v in zip(METRIC_COLUMNS, metrics, strict=True):
            if v is not None:
                group.setdefault(name, []).append(float(v))
    out: dict[str, dict[tuple[str, str], dict[str, str]]] = {}
    for scenario, groups in values.items():
        for key, by_metric in groups.items():
            cells = out.setdefault(scenario, {}).setdefault(key, {})
            for name, vs in by_metric.items():
                a = np.array(vs)
                cells[name] = (f"{a.mean():.4g}" if len(a) == 1
                               else f"{a.mean():.4g} ± {a.std(ddof=1):.4g}")
    return out


# ---------------------------------------------------------------------- the tests
def test_page_loads_without_errors_and_images_render(page, report):
    driver, log = page["driver"], page["log"]
    severe = [e for e in log if e.get("level") == "SEVERE"]
    assert not severe, "console errors:\n" + "\n".join(
        f"{e.get('level')} {e.get('source', '')}: {e.get('message')}" for e in severe)
    source = report["html"].read_text(encoding="utf-8")
    images = driver.execute_script(
        "return Array.from(document.images, img => ({src: img.src.slice(0, 60), "
        "complete: img.complete, width: img.naturalWidth, height: img.naturalHeight}));")
    assert len(images) >= 1
    assert len(images) == source.count("<img")
    broken = [im for im in images if not (im["complete"] and im["width"] > 0)]
    assert not broken, f"images that did not render: {broken}"


# The summary tables as rendered: per table its scenario, per row its method and params, per
# metric cell the text the browser shows (one round trip, not one per cell).
_READ_TABLES = """
return Array.from(document.querySelectorAll("table.summary"), table => ({
  scenario: table.dataset.scenario,
  rows: Array.from(table.querySelectorAll("tbody tr"), tr => ({
    method: tr.dataset.method,
    params: tr.dataset.params,
    cells: Object.fromEntries(Array.from(tr.querySelectorAll("td[data-metric]"),
                                         td => [td.dataset.metric, td.innerText.trim()])),
  })),
}));
"""


def test_summary_tables_equal_the_store(page, report):
    expected = _expected(report["db"])
    tables = page["driver"].execute_script(_READ_TABLES)
    assert tables, "no <table class='summary'> in the report"
    seen = []
    for table in tables:
        scenario = table["scenario"]
        assert scenario in expected, (scenario, list(expected))
        seen.append(scenario)
        groups = expected[scenario]
        rows = table["rows"]
        assert len(rows) == len(groups), (scenario, [r["method"] for r in rows], list(groups))
        found = set()
        for row in rows:
            assert row["method"] and row["params"] is not None, row
            key = (row["method"], json.dumps(json.loads(row["params"]), sort_keys=True))
            assert key in groups, (scenario, key, list(groups))
            found.add(key)
            cells, want = row["cells"], groups[key]
            assert {"retain_acc", "forget_acc", "test_acc"} <= set(want), (scenario, key)
            # every metric the store holds for this group is shown, with the same value
            assert {m: cells.get(m) for m in want} == want, (scenario, key)
            # and a column the group has no value for shows "-"
            assert all(text == "-" for m, text in cells.items() if m not in want), cells
        assert found == set(groups), scenario
    assert sorted(seen) == sorted(expected)


def test_title_and_one_heading_per_scenario(page, report):
    from selenium.webdriver.common.by import By

    driver = page["driver"]
    assert driver.title.strip()
    conn = sqlite3.connect(f"{report['db'].resolve().as_uri()}?mode=ro", uri=True)
    with contextlib.closing(conn):
        scenarios = {s for (s,) in conn.execute(
            "SELECT DISTINCT scenario FROM runs WHERE status = 'ok'")}
    assert len(scenarios) == 2
    headings = [h.text for h in driver.find_elements(By.TAG_NAME, "h2")]
    # the scenarios' sections (the verdict check and the claims have sections of their own)
    in_sections = driver.find_elements(By.CSS_SELECTOR, 'section[id^="s-"] > h2')
    assert len(in_sections) == len(scenarios), [h.text for h in in_sections]
    for s in scenarios:  # titled "<dataset> / <arch>: <scenario> (<kind>)"
        assert sum(f": {s} (" in h for h in headings) == 1, (s, headings)
