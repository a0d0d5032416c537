"""Every example in README.md and docs/*.md runs.

Python blocks are executed; shell blocks are run by bash in one temporary folder (also their
``$HOME``), in order (README first, then the docs in the README's order), with the installed
``unlearnkit`` command first on the PATH. The only blocks not run are marked
``<!-- readme-test: skip ... -->`` and may hold nothing but ``make`` commands; those are checked
here without installing anything: ``.ci/run`` calls exactly the README's test command, the
Makefile installs pinned torch first and is idempotent, and the demo job runs through the CLI
with small settings.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import unlearnkit as uk
from unlearnkit.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: The reference pages, in the order the README lists them (their examples build on each other).
DOCS = [ROOT / "docs" / f"{name}.md"
        for name in ("python", "cli", "benchmarks", "ledger", "methods", "metrics")]
SKIP = "<!-- readme-test: skip"


def blocks(files: list[Path] | None = None) -> list[tuple[str, str, bool]]:
    """``(language, code, skipped)`` for every fenced block of the README and the docs, in
    order."""
    out = []
    for path in files or [README, *DOCS]:
        text = path.read_text()
        for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M):
            before = text[: m.start()].rstrip().splitlines()
            skipped = bool(before) and before[-1].startswith(SKIP)
            out.append((m.group(1), m.group(2), skipped))
    return out


def commands(code: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments dropped."""
    joined = code.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines()
            if line.strip() and not line.strip().startswith("#")]


PYTHON_BLOCKS = [code for lang, code, skip in blocks() if lang == "python" and not skip]
SHELL_BLOCKS = [code for lang, code, skip in blocks() if lang in ("sh", "bash") and not skip]


def test_docs_are_all_linked_and_tested():
    assert sorted(DOCS) == sorted((ROOT / "docs").glob("*.md"))  # a new page joins DOCS
    text = README.read_text()
    for page in DOCS:
        assert f"](docs/{page.name})" in text, f"the README does not link {page.name}"
    links = re.findall(r"\]\(([^)#\s]+)(?:#([^)\s]+))?\)", text + "".join(
        p.read_text() for p in DOCS))
    for target, _ in links:  # every relative link resolves (from the README or docs/)
        if not re.match(r"[a-z]+:", target):
            assert (ROOT / target).exists() or (ROOT / "docs" / target).exists(), target


def test_readme_opens_with_a_short_quick_start():
    lines = README.read_text().splitlines()
    assert len(lines) <= 150, "reference material belongs in docs/"
    start = next(i for i, line in enumerate(lines) if line.startswith("**Quick start**"))
    end = next(i for i, line in enumerate(lines) if i > start and line == "```" and
               lines[start:i].count("```sh") == 1)
    assert start < 10 and end - start <= 14


def test_readme_has_examples():
    assert len(PYTHON_BLOCKS) >= 2 and len(SHELL_BLOCKS) >= 3
    langs = {lang for lang, _, _ in blocks()}
    assert langs <= {"python", "sh", "bash", "text"}, langs  # no block escapes the tests


@pytest.mark.parametrize("code", PYTHON_BLOCKS, ids=lambda c: c.splitlines()[0][:40])
def test_python_block_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})
    assert out.getvalue().strip(), "every Python example prints its result"


def test_shell_blocks_run(tmp_path):
    """All shell blocks, in order, in one folder (train -> forget -> evaluate build on each
    other); each command through the installed ``unlearnkit`` console script."""
    for code in SHELL_BLOCKS:
        for cmd in commands(code):
            assert cmd.split()[0] in ("unlearnkit", "printf", "mkdir", "echo"), cmd
    bindir = Path(sys.executable).parent
    assert (bindir / "unlearnkit").exists(), "the unlearnkit console script is not installed"
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)}
    for code in SHELL_BLOCKS:
        p = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, f"{code}\n--- stderr:\n{p.stderr}"
        assert "Traceback" not in p.stderr
    for name in ("original", "retrained", "unlearned", "erased"):
        assert (tmp_path / f"{name}.safetensors").is_file()
    assert json.loads((tmp_path / "runs" / "mine" / "results.json").read_text())["rows"]
    bash = tmp_path / ".local/share/bash-completion/completions/unlearnkit"  # docs/cli.md
    assert "_shtab_unlearnkit" in bash.read_text()
    assert (tmp_path / ".zfunc" / "_unlearnkit").read_text().startswith("#compdef unlearnkit")


# ---------------------------------------------------------------------- the make commands
def make_block() -> list[str]:
    skipped = [code for _, code, skip in blocks() if skip]
    assert len(skipped) == 1, "only the make block may be skipped"
    assert [code for _, code, skip in blocks([README]) if skip] == skipped
    cmds = [c.split("#")[0].strip() for c in commands(skipped[0])]
    assert all(c.startswith("make ") for c in cmds), cmds
    return cmds


def test_readme_gives_exactly_two_make_commands():
    assert make_block() == ["make demo", "make test"]


def test_ci_runs_the_readme_test_command():
    ci = ROOT / ".ci" / "run"
    assert os.access(ci, os.X_OK)
    lines = [line.strip() for line in ci.read_text().splitlines()
             if line.strip() and not line.strip().startswith("#")]
    assert lines[0] == "set -euo pipefail"
    assert lines[1:] == ["make test"] == [c for c in make_block() if c.endswith("test")]


def recipe(target: str) -> list[str]:
    """The recipe lines of a Makefile target."""
    text = (ROOT / "Makefile").read_text()
    m = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n?)*)", text, flags=re.M)
    assert m, f"no target {target!r} in the Makefile"
    return [line.strip() for line in m.group(1).splitlines()]


def test_makefile_installs_pinned_torch_first():
    core = recipe("$(CORE)")
    assert core[0] == "$(PYTHON) -m venv $(VENV)"
    assert "torch==2.13.0" in core[1]
    assert core[2].endswith("pip install -e .")  # the demo's install: no test tools
    assert core[-1] == "touch $(CORE)"
    setup = recipe("$(STAMP)")
    assert setup[0].endswith("pip install -e '.[test,ray]'") and setup[-1] == "touch $(STAMP)"
    text = (ROOT / "Makefile").read_text()
    assert re.search(r"^\$\(STAMP\): \$\(CORE\)$", text, re.M)
    assert re.search(r"^demo: \$\(CORE\)$", text, re.M)
    assert recipe("test") == ["$(BIN)/python -m pytest"]
    # the browser tests' Chromium and the ledger tests' PostgreSQL come with `make test`, not
    # with the demo
    assert re.search(r"^test: \$\(STAMP\) browser postgres$", (ROOT / "Makefile").read_text(),
                     re.M)
    assert any("apt-get install" in line and "chromium-driver" in line
               for line in recipe("browser"))
    assert recipe("postgres") == ["@PG_DIR='$(PG_DIR)' PG_PORT=$(PG_PORT) tests/pg_server.sh start"]
    assert "apt-get install -y --no-install-recommends postgresql" in (
        ROOT / "tests" / "pg_server.sh").read_text()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_makefile_setup_is_idempotent(tmp_path):
    """With the stamp newer than pyproject.toml, `make test` goes straight to pytest."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    dry = subprocess.run(["make", "--no-print-directory", "-n", "test"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert "torch==2.13.0" in dry.stdout  # a fresh folder sets up first
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / ".unlearnkit-core").touch()
    os.utime(tmp_path / ".venv" / ".unlearnkit-core", (1, 1))
    (tmp_path / ".venv" / ".unlearnkit-installed").touch()
    os.utime(tmp_path / "pyproject.toml", (0, 0))
    dry = subprocess.run(["make", "--no-print-directory", "-n", "test"], cwd=tmp_path,
                         capture_output=True, text=True)
    lines = dry.stdout.strip().splitlines()
    assert dry.returncode == 0 and lines[-1] == ".venv/bin/python -m pytest"
    assert not any("pip install" in line or "-m venv" in line for line in lines)
    (tmp_path / ".venv" / ".unlearnkit-installed").unlink()  # a demo-only set-up:
    demo = subprocess.run(["make", "--no-print-directory", "-n", "demo"], cwd=tmp_path,
                          capture_output=True, text=True).stdout
    assert "pip install" not in demo and "bench --preset quick" in demo  # nothing to add
    test = subprocess.run(["make", "--no-print-directory", "-n", "test"], cwd=tmp_path,
                          capture_output=True, text=True).stdout
    assert "pip install -e '.[test,ray]'" in test and "torch==" not in test  # only the tools


def test_demo_job_runs_with_small_settings(tmp_path, monkeypatch):
    """`make demo`'s command, on the quick preset made small (an MLP, 2 epochs): it prints a
    table per scenario with every method, writes the report and says where."""
    from unlearnkit.bench import config

    (demo,) = [c for c in recipe("demo") if "unlearnkit" in c]
    argv = shlex.split(demo)
    assert argv[0] == "$(BIN)/unlearnkit" and argv[1:4] == ["bench", "--preset", "quick"]
    quick = config.PRESETS["quick"]
    assert "methods: all" in quick and "dataset: digits" in quick
    # every method runs in tests/test_contracts.py; three keep this test short
    small = quick.replace("model: cnn", "model: {arch: mlp, kwargs: {hidden: [16]}}\n"
                          "recipe: {epochs: 2}").replace("methods: all",
                                                         "methods: [finetune, ssd, retrain]")
    monkeypatch.setitem(config.PRESETS, "quick", small + "relearn: false\n")
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main([*argv[1:], "--workers", "1"]) == 0
    text = out.getvalue()
    for scenario in ("class 3", "random 10%"):
        assert f"Scenario: {scenario} (digits, mlp)" in text
    table = text.split("Scenario: class 3", 1)[1].split("Scenario:", 1)[0]
    names = {line.split()[0] for line in table.splitlines()[3:] if line.strip()}
    assert names == {"original", "finetune", "ssd", "retrain"}
    report = tmp_path / "runs" / "demo" / "report" / "report.html"
    assert text.rstrip().endswith(f"Report: {Path('runs/demo/report/report.html')}")
    assert report.is_file() and (tmp_path / "runs" / "demo" / "results.sqlite").is_file()


# ---------------------------------------------------------------------- the methods table
def methods_table() -> dict[str, dict[str, str]]:
    section = (ROOT / "docs" / "methods.md").read_text().split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    table = {}
    for line in rows[2:]:
        cells = dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
        table[cells["method"].strip("`")] = cells
    return table


def test_methods_table_lists_every_registered_method():
    table = methods_table()
    assert set(table) == set(uk.METHODS.names())
    for name, cls in uk.METHODS.items():
        row = table[name]
        needs = [w for w, f in (("forget", cls.needs_forget), ("retain", cls.needs_retain)) if f]
        assert row["needs"] == ", ".join(needs), name
        assert row["scenarios"].startswith(", ".join(cls.scenarios)), name
        assert row["what it does"] and row["paper"], name
