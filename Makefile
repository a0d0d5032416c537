# Two commands for a new user on a fresh machine (see README.md):
#   make demo   set up .venv, compare every unlearning method on digits, write the report
#   make test   set up .venv, the browser and PostgreSQL, then run the test suite
# Set-up runs once: the stamp files make a second `make demo` or `make test` start at once.
# `make demo` installs unlearnkit and what it runs on; `make test` adds the test tools (pytest,
# Selenium, Ray, transformers, ...), the browser and PostgreSQL.
# The browser tests open the HTML report in headless Chromium: `make test` installs Debian's
# chromium and chromium-driver with apt-get when they are missing (as root; otherwise it
# says how, and those tests fail naming what is missing). `make demo` needs no browser.
# The ledger's PostgreSQL tests need a real server: `make test` installs Debian's postgresql
# the same way, runs a private one on 127.0.0.1:$(PG_PORT) (tests/pg_server.sh; it stays up
# for the next run, `make postgres-stop` stops it) and gives the tests its URL in
# UNLEARNKIT_TEST_POSTGRES_URL; a plain `pytest` without that variable skips them.

PYTHON ?= python3
# extra pip options for installing torch (e.g. an index of CPU-only wheels)
TORCH_PIP_ARGS ?=
VENV   := .venv
BIN    := $(VENV)/bin
CORE   := $(VENV)/.unlearnkit-core
STAMP  := $(VENV)/.unlearnkit-installed
PG_PORT ?= 55432
PG_DIR  ?= $(CURDIR)/$(VENV)/postgres
export UNLEARNKIT_TEST_POSTGRES_URL ?= postgresql+psycopg://unlearnkit@127.0.0.1:$(PG_PORT)/unlearnkit_test

.PHONY: setup browser postgres postgres-stop demo test conformance lint clean

setup: $(STAMP)

# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
$(CORE): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(TORCH_PIP_ARGS) torch==2.13.0
	$(BIN)/python -m pip install -e .
	touch $(CORE)

# the test tools on top
$(STAMP): $(CORE)
	$(BIN)/python -m pip install -e '.[test,ray]'
	touch $(STAMP)

# Chromium and ChromeDriver at the paths the browser tests use (tests/test_report_browser.py).
CHROMIUM     := /usr/bin/chromium
CHROMEDRIVER := /usr/bin/chromedriver

browser:
	@if [ -x $(CHROMIUM) ] && [ -x $(CHROMEDRIVER) ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "Installing chromium and chromium-driver for the browser tests (apt-get)"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y --no-install-recommends chromium chromium-driver; \
	else \
		echo "make: $(CHROMIUM) or $(CHROMEDRIVER) is missing, so the browser tests will fail: install them with 'sudo apt-get install chromium chromium-driver'"; \
	fi

# the private PostgreSQL server of the ledger's tests (tests/test_ledger_postgres.py)
postgres:
	@PG_DIR='$(PG_DIR)' PG_PORT=$(PG_PORT) tests/pg_server.sh start

postgres-stop:
	@PG_DIR='$(PG_DIR)' PG_PORT=$(PG_PORT) tests/pg_server.sh stop

demo: $(CORE)
	$(BIN)/unlearnkit bench --preset quick --out runs/demo/results.sqlite --report runs/demo/report
	@echo "Next: 'source $(BIN)/activate' puts the command on your PATH for the examples of README.md"

test: $(STAMP) browser postgres
	$(BIN)/python -m pytest

# every method on every model kind of the test zoo (tests/zoo.py), both scenarios: ok or refused
conformance: $(STAMP)
	$(BIN)/python tests/zoo.py

lint: $(STAMP)
	$(BIN)/ruff check src tests

clean: postgres-stop
	rm -rf $(VENV) runs
