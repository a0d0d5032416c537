"""`unlearnkit completion SHELL`: a static script that completes commands, options and the
names of methods, datasets, architectures and presets; the bash one is run here in bash."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import unlearnkit as uk
from unlearnkit.bench.config import PRESETS
from unlearnkit.data.registry import DATASETS

BIN = Path(sys.executable).parent / "unlearnkit"


def script(shell: str) -> str:
    p = subprocess.run([str(BIN), "completion", shell], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "unlearnkit.bash"
    path.write_text(script("bash"))
    return path


def complete(bash_script: Path, *words: str) -> list[str]:
    """What bash offers for the command line ``words`` (the last one being typed)."""
    quoted = " ".join(f"'{w}'" for w in words)
    code = (f"source '{bash_script}'\nCOMP_WORDS=({quoted}); "
            "COMP_CWORD=$((${#COMP_WORDS[@]}-1)); COMP_LINE=\"${COMP_WORDS[*]}\"; "
            "COMP_POINT=${#COMP_LINE}; COMPREPLY=(); _shtab_unlearnkit; "
            "printf '%s\\n' \"${COMPREPLY[@]}\"")
    p = subprocess.run(["bash", "-c", code], capture_output=True, text=True, timeout=30,
                       cwd=bash_script.parent)
    assert p.returncode == 0, p.stderr
    return [w for w in p.stdout.splitlines() if w]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
class TestBash:
    def test_commands(self, bash_script):
        got = complete(bash_script, "unlearnkit", "")
        assert {"train", "forget", "evaluate", "compare", "bench", "report", "ledger",
                "methods", "datasets", "completion"} <= set(got)
        assert complete(bash_script, "unlearnkit", "fo") == ["forget"]
        assert {"init", "request", "apply", "audit"} <= set(
            complete(bash_script, "unlearnkit", "ledger", ""))

    def test_options(self, bash_script):
        assert complete(bash_script, "unlearnkit", "forget", "--meth") == ["--method"]
        assert "--forget-indices" in complete(bash_script, "unlearnkit", "compare", "--forget-")

    def test_names(self, bash_script):
        assert complete(bash_script, "unlearnkit", "forget", "--method", "s") == sorted(
            n for n in uk.METHODS.names() if n.startswith("s"))
        assert "ssd" in complete(bash_script, "unlearnkit", "methods", "ss")
        assert "finetune" in complete(bash_script, "unlearnkit", "compare", "--methods", "fi")
        assert set(complete(bash_script, "unlearnkit", "train", "--data", "")) == set(
            DATASETS.names())
        assert "resnet18" in complete(bash_script, "unlearnkit", "train", "--model", "")
        assert set(complete(bash_script, "unlearnkit", "bench", "--preset", "")) == set(PRESETS)
        assert set(complete(bash_script, "unlearnkit", "bench", "--executor", "")) == {
            "process", "ray"}

    def test_files(self, bash_script):
        (bash_script.parent / "original.safetensors").touch()
        assert complete(bash_script, "unlearnkit", "forget", "--checkpoint", "orig") == [
            "original.safetensors"]


def test_scripts_name_everything_for_every_shell():
    for shell in ("zsh", "tcsh"):
        text = script(shell)
        for name in ("forget", "--forget-indices", "ssd", "digits", "founding-report"):
            assert name in text, (shell, name)
    assert script("zsh").startswith("#compdef unlearnkit")


def test_unknown_shell_is_one_line_error():
    p = subprocess.run([str(BIN), "completion", "fish"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "invalid choice: 'fish'" in p.stderr and len(p.stderr.strip().splitlines()) == 1
