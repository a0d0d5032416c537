"""Shared fixtures: the digits data and small trained models, built once per session.

Session-scoped models must never be modified by a test: unlearning returns copies, and a
contract test checks that.
"""

from __future__ import annotations

import pytest
import torch

import unlearnkit as uk

# Small CPU jobs run fastest on one thread, and the machines that run the suite are shared.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory, monkeypatch):
    """Caches and default data roots go to temporary folders, never the user's home."""
    base = tmp_path_factory.mktemp("uk-home")
    monkeypatch.setenv("UNLEARNKIT_CACHE", str(base / "cache"))
    monkeypatch.setenv("UNLEARNKIT_DATA", str(base / "data"))


@pytest.fixture(autouse=True)
def _plain_output(monkeypatch):
    """The command's captured output is plain text, as in a pipe, even where the shell that
    runs the tests sets FORCE_COLOR (CI often does): rich would call it a terminal. The tests
    of the terminal output (test_cli_rich.py) set these themselves."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def digits() -> uk.DataBundle:
    return uk.load_dataset("digits")


@pytest.fixture(scope="session")
def tiny_recipe() -> uk.Recipe:
    return uk.Recipe(epochs=4, lr=0.05, batch_size=64)


@pytest.fixture(scope="session")
def mlp_model(digits, tiny_recipe) -> torch.nn.Module:
    """A small MLP trained briefly on digits (about 90 % test accuracy)."""
    return uk.train_model(digits, arch="mlp", hidden=(32,), recipe=tiny_recipe, seed=0)


@pytest.fixture(scope="session")
def cnn_model(digits) -> torch.nn.Module:
    """A narrow CNN trained briefly on digits (about 94 % test accuracy)."""
    recipe = uk.Recipe(epochs=8, lr=0.01, optimizer="adam", weight_decay=0.0)
    return uk.train_model(digits, arch="cnn", channels=(8, 16), hidden=32, recipe=recipe, seed=0)


@pytest.fixture(scope="session")
def class_split(digits) -> uk.Split:
    return uk.split_by_class(digits, [3])


@pytest.fixture(scope="session")
def random_split(digits) -> uk.Split:
    return uk.split_random(digits, fraction=0.1, seed=0)
