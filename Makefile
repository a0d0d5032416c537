# Two commands for a new user on a fresh machine (see README.md):
#   make demo   set up .venv, then compare every unlearning method on digits
#   make test   set up .venv, then run the test suite
# Set-up runs once: the stamp file makes a second `make test` start at once.

PYTHON ?= python3
# extra pip options for installing torch (e.g. an index of CPU-only wheels)
TORCH_PIP_ARGS ?=
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.unlearnkit-installed

.PHONY: setup demo test lint clean

setup: $(STAMP)

# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(TORCH_PIP_ARGS) torch==2.13.0
	$(BIN)/python -m pip install -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/unlearnkit compare --data digits --out-dir runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) runs
