"""The HTML report in a real browser: headless Chromium, driven by Selenium.

A tiny real benchmark (an MLP on digits, two scenarios, three methods, finetune also
calibrated, two seeds) is run once for this module, its report written and served over HTTP
on 127.0.0.1. The page must load with no console error, every image must render, every cell
of the summary tables must equal the mean ± std that this test computes itself from the
SQLite store, the page must lead with the leaderboards and the Pareto figures, and every
other figure must sit in a closed ``<details>`` that opens on a click.

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
    "methods": {"finetune": {}, "ssd": {}, "retrain": {}},
    "seeds": [0, 1],
    "relearn": False,
    "mia": False,
    "curves": True,
    # a budget in seconds: a fifth of this MLP's retraining would fit no trial
    "calibrate": {"budget_seconds": 30, "max_trials": 3, "methods": ["finetune"]},
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
def _key(method: str, params: str, calibrated: bool) -> tuple[str, str]:
    """A summary row's key: a calibrated method's seeds are one row whatever they chose."""
    return (method, "calibrated" if calibrated
            else json.dumps(json.loads(params), sort_keys=True))


def _expected(db: Path) -> dict[str, dict[tuple[str, str], dict[str, str]]]:
    """Scenario -> :func:`_key` -> metric -> the cell text, computed from the ``runs`` table
    with sqlite3 and numpy (rows with status 'ok', std with ddof=1)."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        cur = conn.execute("SELECT scenario, method, params, calibration IS NOT NULL, "
                           f"{', '.join(METRIC_COLUMNS)} FROM runs WHERE status = 'ok'")
        rows = cur.fetchall()
    finally:
        conn.close()
    values: dict[str, dict[tuple[str, str], dict[str, list[float]]]] = {}
    for scenario, method, params, calibrated, *metrics in rows:
        key = _key(method, params, bool(calibrated))
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
    calibrated: tr.dataset.calibrated === "true",
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
            key = _key(row["method"], row["params"], row["calibrated"])
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


def _mean(db: Path, scenario: str, key: tuple[str, str], metric: str) -> float | None:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    with contextlib.closing(conn):
        vals = [v for method, params, cal, v in conn.execute(
            f"SELECT method, params, calibration IS NOT NULL, {metric} FROM runs "
            "WHERE status = 'ok' AND scenario = ?", (scenario,))
            if _key(method, params, bool(cal)) == key and v is not None]
    return float(np.mean(vals)) if vals else None


# The page's first block, as rendered: what follows the title, and where it sits.
_READ_GLANCE = """
const h1 = document.querySelector("h1");
const first = h1.nextElementSibling;
return {
  id: first.id, tag: first.tagName, heading: first.querySelector("h2").innerText,
  top: first.getBoundingClientRect().top, viewport: window.innerHeight,
  scenarios: Array.from(first.querySelectorAll(".glance"), g => ({
    scenario: g.dataset.scenario,
    top: Array.from(g.querySelectorAll("ol.top li"), li => li.dataset.method),
    counts: g.querySelector(".verdict-counts").innerText,
    images: Array.from(g.querySelectorAll("img"), img => ({
      kind: img.dataset.kind, width: img.naturalWidth, shown: img.checkVisibility()})),
  })),
};
"""


def test_page_leads_with_the_leaderboards_at_a_glance(page):
    glance = page["driver"].execute_script(_READ_GLANCE)
    assert (glance["tag"], glance["id"], glance["heading"]) == ("SECTION", "at-a-glance",
                                                                 "At a glance")
    assert glance["top"] < glance["viewport"]  # in the first screen
    assert sorted(g["scenario"] for g in glance["scenarios"]) == ["class 3", "random 10%"]
    for g in glance["scenarios"]:
        assert 1 <= len(g["top"]) <= 3 and set(g["top"]) <= {"finetune", "ssd"}, g
        assert g["counts"].startswith("Verdicts of the "), g
        # the Pareto figure, rendered on the page (not folded)
        assert [(im["kind"], im["width"] > 0, im["shown"]) for im in g["images"]] == [
            ("pareto", True, True)], g


_READ_BOARDS = """
return Array.from(document.querySelectorAll("table.leaderboard"), t => ({
  scenario: t.dataset.scenario,
  rows: Array.from(t.querySelectorAll("tbody tr"), tr => ({
    method: tr.dataset.method, calibrated: tr.dataset.calibrated === "true",
    rank: tr.dataset.rank, chosen: tr.dataset.chosen,
    params: tr.querySelector("td.params").innerText,
    gap: tr.querySelector('td[data-metric="avg_gap"]').dataset.value})),
}));
"""


def test_leaderboards_rank_by_the_stores_avg_gap(page, report):
    boards = page["driver"].execute_script(_READ_BOARDS)
    assert sorted(b["scenario"] for b in boards) == ["class 3", "random 10%"]
    for b in boards:
        rows = b["rows"]
        # finetune at its defaults and calibrated, ssd; never a reference
        assert sorted((r["method"], r["calibrated"]) for r in rows) == [
            ("finetune", False), ("finetune", True), ("ssd", False)], b
        gaps = [float(r["gap"]) for r in rows]
        assert gaps == sorted(gaps), b
        for r in rows:  # each the mean over seeds that this test computes from the store
            if r["calibrated"]:
                key = (r["method"], "calibrated")
            else:  # one grid point per method in this config
                conn = sqlite3.connect(f"{report['db'].resolve().as_uri()}?mode=ro", uri=True)
                with contextlib.closing(conn):
                    (params,) = {p for (p,) in conn.execute(
                        "SELECT params FROM runs WHERE status='ok' AND scenario=? AND "
                        "method=? AND calibration IS NULL", (b["scenario"], r["method"]))}
                key = _key(r["method"], params, False)
            assert float(r["gap"]) == pytest.approx(
                _mean(report["db"], b["scenario"], key, "avg_gap")), (b["scenario"], r)
        # the calibrated row shows what its searches chose: finetune's searched parameters
        cal = next(r for r in rows if r["calibrated"])
        chosen = json.loads(cal["chosen"])
        assert chosen and all(set(p) <= {"epochs", "lr"} for p in chosen), cal
        assert "best of 3 trials" in cal["params"], cal


_READ_FOLDS = """
return Array.from(document.querySelectorAll("img"), img => {
  const d = img.closest("details");
  return {kind: img.dataset.kind, folded: d !== null, open: d !== null && d.open,
          width: img.naturalWidth, visible: img.checkVisibility()};
});
"""


def test_figures_folded_closed_and_open_on_a_click(driver, server):
    from selenium.webdriver.common.by import By

    driver.get_log("browser")
    driver.get(f"{server}/report.html")
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "Promise.all(Array.from(document.images, img => img.decode().catch(() => null)))"
        ".then(() => done(true));")
    details = driver.find_elements(By.CSS_SELECTOR, "details.figures")
    assert details and not any(d.get_property("open") for d in details)
    images = driver.execute_script(_READ_FOLDS)
    kinds = {im["kind"] for im in images}
    assert {"pareto", "curves", "losses", "saliency", "bars"} <= kinds, kinds
    # every figure but the Pareto ones is folded, and a closed fold shows nothing
    assert all(im["folded"] == (im["kind"] != "pareto") for im in images), images
    assert all(im["visible"] != im["folded"] for im in images), images
    # open the small multiples of the training curves: they render
    fold = next(d for d in details if d.get_attribute("data-kind") == "curves")
    fold.find_element(By.TAG_NAME, "summary").click()
    assert fold.get_property("open")
    shown = driver.execute_script(
        "return Array.from(arguments[0].querySelectorAll('img'), img => "
        "[img.naturalWidth, img.getBoundingClientRect().width, img.checkVisibility()]);", fold)
    assert shown and all(w > 0 and s > 0 and v for w, s, v in shown), shown
    others = [d for d in details if d.get_property("open")]
    assert others == [fold]  # the others stay closed
    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, severe


# The page at a given width: whether anything overflows it, and whether method names wrap.
_READ_FIT = """
window.scrollTo(0, 0);
const labels = Array.from(document.querySelectorAll(
  "table.summary td:first-child, table.leaderboard td.label"));
// the line boxes of a cell's own text (a cell is as tall as its row, whatever it holds)
const lines = td => {
  const range = document.createRange();
  range.selectNodeContents(td);
  return new Set(Array.from(range.getClientRects(), r => Math.round(r.top))).size;
};
return {
  page: document.documentElement.scrollWidth, viewport: window.innerWidth,
  glanceTop: document.querySelector("#at-a-glance").getBoundingClientRect().top,
  height: window.innerHeight,
  wrapped: labels.filter(td => lines(td) > 1).map(td => td.innerText),
  labels: labels.length,
};
"""


@pytest.mark.parametrize("width", [1400, 1000])
def test_the_first_screen_fits_at_1400_and_1000_px(page, width):
    """Issue 15: the summary table ran off the right edge and method names wrapped at their
    hyphens. At either width the page does not scroll sideways (wide tables scroll in their
    own box), the at-a-glance block starts in the first screen, and no name wraps."""
    drv = page["driver"]
    drv.set_window_size(width, 900)
    try:
        fit = drv.execute_script(_READ_FIT)
    finally:
        drv.set_window_size(1400, 1000)
    assert fit["labels"] > 4
    assert fit["page"] <= fit["viewport"], fit
    assert 0 <= fit["glanceTop"] < fit["height"]
    assert fit["wrapped"] == [], fit["wrapped"]
