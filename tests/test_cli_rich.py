"""The command's output on a terminal (issue 15): rich tables and colour when rich calls stdout
a terminal (FORCE_COLOR stands for one here), colour dropped with NO_COLOR, and the plain text
unchanged, byte for byte, in a pipe or a file. In-process, on a small bench store: fast."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from rich.cells import cell_len

from _cli import run
from unlearnkit import _console, cli
from unlearnkit.bench import ResultStore
from unlearnkit.compare import format_table, rich_tables

SGR = re.compile(r"\x1b\[([0-9;]*)m")
BOX = "─"  # box.SIMPLE_HEAD's rule under the headers

#: per method: the seeds' verdicts (None: none recorded); metric values grow with the row
VERDICTS = {"retrain": ["forgotten"] * 3, "original": ["not forgotten"] * 3,
            "finetune": ["partial", "partial", "forgotten"], "ssd": ["utility lost"] * 3,
            "fisher-forgetting": [None] * 3}
METRICS = {"retain_acc": 0.9, "forget_acc": 0.1, "test_acc": 0.88, "mia_entropy": 0.5,
           "js_divergence": 0.02, "seconds": 1.5, "speedup": 7.0}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """Five methods x three seeds, every bench column, verdicts, and one MIA figure with no
    power (ssd's mia_entropy)."""
    path = tmp_path_factory.mktemp("rich") / "results.sqlite"
    with ResultStore(path) as db:
        n = 0
        for k, (method, verdicts) in enumerate(VERDICTS.items()):
            for seed, v in enumerate(verdicts):
                n += 1
                metrics = {c: x * (1 + 0.05 * k + 0.01 * seed) for c, x in METRICS.items()}
                metrics |= {"mia_entropy_power": 0.5 if method == "ssd" else 0.8,
                            "mia_entropy_separation": 0.3, **({"verdict": v} if v else {})}
                db.write({"run_id": f"r{n}", "dataset": "digits", "arch": "cnn",
                          "scenario": "class 3", "scenario_kind": "class", "method": method,
                          "params": {"lr": 0.01} if method == "finetune" else {},
                          "seed": seed, "status": "ok", "spec": {}, "metrics": metrics})
    return path


@pytest.fixture
def terminal(monkeypatch):
    """stdout and stderr count as a terminal (FORCE_COLOR), with colours; set COLUMNS with
    the returned function."""
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TERM", "xterm-256color")
    for name in ("NO_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(name, raising=False)
    return lambda columns: monkeypatch.setenv("COLUMNS", str(columns))


def plain(text: str) -> str:
    return SGR.sub("", text)


def colours(text: str) -> set[int]:
    """The SGR colour parameters in ``text`` (30-49 and 90-107: foreground, background)."""
    params = {int(p) for m in SGR.finditer(text) for p in m.group(1).split(";") if p}
    return {p for p in params if 30 <= p <= 49 or 90 <= p <= 107}


def coloured(text: str, word: str, colour: int) -> bool:
    """Whether ``word`` appears right after an escape code that sets ``colour``."""
    return any(str(colour) in m.group(1).split(";") and text[m.end():].startswith(word)
               for m in SGR.finditer(text))


def widest(text: str) -> int:
    return max(cell_len(line) for line in plain(text).splitlines())


def header_lines(text: str) -> list[str]:
    return [line for line in plain(text).splitlines() if line.startswith("method ")]


# ---------------------------------------------------------------------- bench tables
@pytest.mark.parametrize("columns", [80, 160])
def test_report_print_on_a_terminal_is_rich_and_fits_the_width(store, terminal, columns):
    terminal(columns)
    code, out, err = run("report", store, "--print")
    assert code == 0 and err == ""
    assert BOX in out and "\x1b[" in out and "---" not in out  # rich's rule, not dashes
    assert widest(out) <= columns
    heads = header_lines(out)
    assert len(heads) == (1 if columns == 160 else 3)  # blocks to fit 80 columns
    assert "verdict" in heads[0] and "seconds↓" in heads[0]  # the key columns first
    shown = " ".join(heads)
    for head in ("retain_acc↑", "forget_acc≈", "test_acc↑", "mia_entropy≈", "js_divergence↓",
                 "seconds↓", "speedup↑", "verdict"):
        assert shown.count(head) == 1, head
    for method in VERDICTS:  # every row in every block
        assert sum(line.startswith(method + " ") for line in plain(out).splitlines()) \
            == len(heads)
    assert coloured(out, "forgotten", 32) and coloured(out, "not forgotten", 31)
    assert coloured(out, "partial", 33) and coloured(out, "utility lost", 35)
    assert "\x1b[2m0.580±0.005?" in out  # an uninformative MIA figure: dim
    assert "\x1b[1m" in out  # the best values: bold
    assert "n = seeds averaged" in plain(out) and "? = uninformative MIA figure" in plain(out)


def test_no_color_keeps_the_tables_and_drops_the_colours(store, terminal, monkeypatch):
    terminal(80)
    monkeypatch.setenv("NO_COLOR", "1")
    code, out, _ = run("report", store, "--print")
    assert code == 0 and BOX in out and len(header_lines(out)) == 3
    assert colours(out) == set() and widest(out) <= 80
    assert "not forgotten" in out and "utility lost" in out


def test_a_pipe_gets_the_plain_text_byte_for_byte(store, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    code, out, _ = run("report", store, "--print")
    assert code == 0 and "\x1b" not in out and BOX not in out
    code, text, _ = run("report", store, "--print", "--json")
    assert out == cli._text(json.loads(text)) + "\n"
    lines = out.splitlines()
    assert lines[:3] == [
        "Scenario: class 3 (digits, cnn)",
        "method             n  retain_acc↑  forget_acc≈    test_acc↑  mia_entropy≈  "
        "js_divergence↓     seconds↓     speedup↑                     verdict",
        "-----------------  -  -----------  -----------  -----------  ------------  "
        "--------------  -----------  -----------  --------------------------"]
    assert "finetune           3  0.999±0.009  0.111±0.001  0.977±0.009   0.555±0.005  " \
           "   0.022±0.000  1.665±0.015  7.770±0.070  partial 2/3, forgotten 1/3" in lines
    assert "ssd                3  1.044±0.009  0.116±0.001  1.021±0.009  0.580±0.005?  " \
           "   0.023±0.000  1.740±0.015  8.120±0.070                utility lost" in lines
    # COLUMNS in a pipe: the plain blocks, as before
    monkeypatch.setenv("COLUMNS", "80")
    code, narrow, _ = run("report", store, "--print")
    assert "\x1b" not in narrow and narrow.count("\nmethod ") == 3
    assert max(len(line) for line in narrow.splitlines()
               if not line.startswith(("n = ", "? = "))) <= 80


def test_json_is_never_rich(store, terminal):
    terminal(80)
    code, out, _ = run("report", store, "--print", "--json")
    assert code == 0 and "\x1b" not in out and json.loads(out)["tables"]


def test_bench_summary_on_a_terminal(store, terminal):
    from unlearnkit.report import load_finished, summarize

    terminal(80)
    t = summarize(load_finished(store))[0].to_dict()
    result = {"command": "bench", "dry_run": False, "tables": [t], "config": "c", "total": 15,
              "ok": 15, "reused": 0, "skipped": 0, "failed": 0, "seconds": 1.0, "db": "d",
              "logs": "l", "cpu_share": 0.5}
    out = _console.stdout_console()
    assert out is not None  # FORCE_COLOR: a terminal
    text = _console.render(out, cli._rich_view(result, out))
    assert BOX in text and widest(text) <= 80 and coloured(text, "forgotten", 32)
    assert "the machine was busy" in plain(text).replace("\n", " ")
    assert plain(text).endswith("Results: d (logs: l)")


# ---------------------------------------------------------------------- compare's tables
def _cmp_row(method, verdict, status="ok", **extra):
    m = {"retain_acc": 0.9, "forget_acc": 0.05, "test_acc": 0.88, "test_retain_acc": 0.89,
         "test_forget_acc": 0.02, "forget_acc_gap": 0.01, "seconds": 1.25, "speedup": 8.0,
         "mia_entropy": 0.4, "js_divergence": 0.02, "avg_gap": 0.05, "zrf": 0.9,
         "anamnesis": 0.3, "verdict": verdict}
    return {"scenario": "class 3", "split": {"n_forget": 146}, "method": method,
            "status": status, **(m if status == "ok" else {}), "uninformative_mias": [],
            **extra}


@pytest.mark.parametrize("columns", [80, 160])
def test_compare_tables_on_a_terminal(terminal, columns):
    terminal(columns)
    rows = [_cmp_row("retrain", "forgotten"), _cmp_row("finetune", "not forgotten"),
            _cmp_row("ssd", "partial"),
            _cmp_row("bad-teacher", None, "skipped", reason="designed for class unlearning")]
    out = _console.stdout_console()
    assert out is not None
    text = _console.render(out, rich_tables(rows, out))
    assert BOX in text and widest(text) <= columns
    assert coloured(text, "forgotten", 32) and coloured(text, "not forgotten", 31)
    assert coloured(text, "partial", 33)
    assert "bad-teacher skipped: designed for class unlearning" in plain(text)
    heads = " ".join(header_lines(text))
    for head in ("retain_acc", "test_forget_acc", "forget_acc_gap↓", "verdict", "zrf",
                 "anamnesis"):
        assert head in heads
    assert len(header_lines(text)) == (2 if columns == 160 else 4)
    # in a pipe the same rows are the plain tables, unchanged
    assert "\x1b" not in format_table(rows) and BOX not in format_table(rows)


# ---------------------------------------------------------------------- verdicts, errors
@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rich-model") / "original.safetensors"
    code, _, err = run("train", "--data", "digits", "--model", "mlp", "--model-arg",
                       "hidden=16", "--epochs", "1", "--out", path, "-q")
    assert code == 0, err
    return path


def test_forget_verdict_is_coloured_on_a_terminal(original, terminal, tmp_path, monkeypatch):
    terminal(80)
    argv = ("forget", "--checkpoint", original, "--forget-class", "3", "--method", "ssd",
            "--no-relearn", "--out", tmp_path / "f.safetensors", "-q")
    code, out, _ = run(*argv)
    assert code == 0 and widest(out) <= 80
    assert plain(out).startswith("ssd forgot class 3 (146 samples)")
    assert coloured(out, "forgotten", 32) and "verdict: forgotten: forget acc" in plain(out)
    monkeypatch.delenv("FORCE_COLOR")  # a pipe: the plain text
    code, out, _ = run(*argv)
    assert code == 0 and "\x1b" not in out and "\nverdict: forgotten: forget acc" in out


def test_errors_are_red_only_on_a_terminal_with_colour(terminal, monkeypatch):
    terminal(80)
    code, out, err = run("methods", "sdd")
    assert code == 2 and out == "" and coloured(err, "unlearnkit: error:", 31)
    assert plain(err).startswith("unlearnkit: error: Unknown method 'sdd'")
    code, _, err = run("train", "--epochs", "x")  # argparse's usage errors too
    assert code == 2 and coloured(err, "unlearnkit: error:", 31)
    monkeypatch.setenv("NO_COLOR", "1")
    code, _, err = run("methods", "sdd")
    assert code == 2 and err.startswith("unlearnkit: error: Unknown method") and "\x1b" not in err
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.delenv("FORCE_COLOR")
    code, _, err = run("methods", "sdd")
    assert code == 2 and err.startswith("unlearnkit: error: Unknown method") and "\x1b" not in err


def test_methods_and_datasets_on_a_terminal(terminal):
    terminal(100)
    code, out, _ = run("methods", "ssd")
    assert code == 0 and "\x1b[1mssd\x1b[0m: dampen" in out and widest(out) <= 100
    code, out, _ = run("datasets")
    assert code == 0 and "\x1b[1mdigits\x1b[0m" in out
