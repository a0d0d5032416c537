"""Property-based fuzzing (Hypothesis) of everything a user hands the tool: command-line
arguments, index files, YAML configs, checkpoint metadata and results stores.

The invariant, for every input:

* the command exits 0, or 2 with the one-line ``unlearnkit: error: ...`` as its last line
  (one-line warnings may come before it); a Python function raises an
  :class:`~unlearnkit.UnlearnkitError` whose message is one line;
* no traceback is printed;
* an existing ``--out`` file is left byte for byte as it was unless the command succeeded;
* peak memory stays bounded (the process's high-water mark grows by less than
  ``MEMORY_BOUND``).

Examples are bounded (``max_examples`` per property) so that the suite stays a small part of
``make test``, and derandomised so that CI runs the same examples every time; set
``HYPOTHESIS_PROFILE=search`` to search with fresh random examples, ten times as many. Inputs
that once broke the invariant are kept as ``@example`` cases.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import os
import resource
import sqlite3
import string
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import unlearnkit as uk
from _cli import run
from unlearnkit.cli import build_parser

settings.register_profile(
    "ci", derandomize=True, database=None, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.register_profile(
    "search", deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)


def examples(n: int) -> int:
    """``n`` examples in CI; ten times as many when searching."""
    return n * 10 if PROFILE == "search" else n

#: How much the process's peak resident memory may grow during one fuzzed property.
MEMORY_BOUND_MB = 1024


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture(autouse=True)
def _memory_bounded():
    before = _max_rss_mb()
    yield
    grown = _max_rss_mb() - before
    assert grown < MEMORY_BOUND_MB, f"peak memory grew by {grown:.0f} MB"


def check_cli(code: int, out: str, err: str) -> None:
    """The command-line invariant: exit 0, or 2 with one line; never a traceback."""
    assert "Traceback" not in err and "Traceback" not in out, err[-2000:]
    assert code in (0, 2), f"exit code {code}: {err[-2000:]}"
    if code == 2:  # warnings may come first; the error is one line, the last
        errors = [line for line in err.splitlines() if line.startswith("unlearnkit: error: ")]
        assert len(errors) == 1, err[-2000:]
        assert errors[0] == err.strip().splitlines()[-1], "the error is the last line"


def check_error(exc: BaseException) -> None:
    """The Python invariant: an UnlearnkitError with a one-line message."""
    assert isinstance(exc, uk.UnlearnkitError), f"{type(exc).__name__}: {exc}"
    assert "\n" not in str(exc).strip(), str(exc)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def checkpoint(workdir) -> Path:
    """A tiny trained MLP on digits (one epoch)."""
    ds = uk.load_dataset("digits")
    model = uk.train_model(ds, arch="mlp", hidden=(8,), recipe=uk.Recipe(epochs=1), seed=0)
    return uk.save_checkpoint(model, workdir / "tiny.safetensors")


# --------------------------------------------------------------------------- the CLI
def _options(command: str) -> list[tuple[str, bool]]:
    """``(flag, takes a value)`` of every option of ``unlearnkit COMMAND``."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices[command]
    return [(a.option_strings[-1], a.nargs != 0) for a in parser._actions
            if a.option_strings
            and a.option_strings[-1] not in ("--help", "--device", "--download")]


#: Values that are wrong in every way a user manages, and a few right ones.
NASTY_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
NUMBERS = st.one_of(
    st.integers(-3, 3).map(str),
    st.integers(10**18, 10**30).map(str),
    st.integers(-(10**30), -(10**18)).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["1e-5", "0.1", "-0", "1e300", "nan", "inf", "٣", "0x10", "1_000"]),
)
NAMES = st.sampled_from(["digits", "mnist", "cnn", "mlp", "resnet18", "ssd", "finetune",
                         "retrain", "gradient-ascent", "no-such", "3", "cat", "sgd", "step"])
PARAMS = st.builds(lambda k, v: f"{k}={v}",
                   st.sampled_from(["epochs", "lr", "alpha", "hidden", "channels", "batch_size",
                                    "implementation", "model_factory", "k", "test_size", "x"]),
                   st.one_of(NUMBERS, NASTY_TEXT, st.just("4,-4"), st.just("8,8")))


def _path_values(workdir: Path, checkpoint: Path) -> st.SearchStrategy[str]:
    corrupt = workdir / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}    " + b"\0" * 32)
    indices = workdir / "indices.txt"
    indices.write_text("0 1 2\n5, 7\n")
    folder = workdir / "a-folder"
    folder.mkdir(exist_ok=True)
    return st.sampled_from([str(checkpoint), str(corrupt), str(indices), str(folder),
                            str(workdir / "missing.safetensors"), "", "-"])


@st.composite
def argvs(draw, workdir: Path, checkpoint: Path) -> list[str]:
    command = draw(st.sampled_from(["train", "forget", "evaluate", "methods", "datasets",
                                    "compare", "score"]))
    opts = _options(command)
    paths = _path_values(workdir, checkpoint)
    argv = [command]
    for flag, takes_value in draw(st.lists(st.sampled_from(opts), max_size=6)):
        argv.append(flag)
        if takes_value:
            kind = st.one_of(NUMBERS, NAMES, PARAMS, NASTY_TEXT, paths)
            if flag in ("--checkpoint", "--retrained", "--original", "--forget-indices",
                        "--data-root"):
                kind = paths
            argv.append(draw(kind))
    return argv


#: Settings that keep a valid run short: appended before the fuzzed options, which win.
QUICK = {"train": ["--data", "digits", "--model", "mlp", "--model-arg", "hidden=8",
                   "--epochs", "1"],
         "forget": ["--checkpoint", "{ckpt}", "--forget-class", "3", "--method", "finetune",
                    "--param", "epochs=1"],
         "evaluate": ["--checkpoint", "{ckpt}", "--forget-class", "3"],
         "compare": ["--checkpoint", "{ckpt}", "--methods", "finetune", "--forget-class", "3",
                     "--param", "finetune.epochs=1"],
         "score": ["--checkpoint", "{ckpt}", "--method", "finetune", "--forget-class", "3",
                   "--n-models", "2", "--param", "epochs=1"]}


def _quick(command: str, ckpt: Path) -> list[str]:
    return [a.replace("{ckpt}", str(ckpt)) for a in QUICK.get(command, [])]


@settings(max_examples=examples(40))
@given(data=st.data())
def test_fuzz_command_line(data, workdir, checkpoint, monkeypatch):
    monkeypatch.chdir(workdir)
    argv = data.draw(argvs(workdir, checkpoint))
    # huge values must be refused, never run: big epochs or models could run for hours
    for flag, value in itertools.pairwise(argv):
        if flag in ("--epochs", "--n-models") and value.lstrip("-").isdigit() and int(value) > 3:
            return
    out_path = workdir / "out.safetensors"
    out_path.write_bytes(b"precious")
    full = [argv[0], *_quick(argv[0], checkpoint), *argv[1:]]
    if "--out" in _flags(argv[0]) and "--out" not in argv:
        full += ["--out", str(out_path)]
    code, out, err = run(*full)
    event(f"{argv[0]}: exit {code}")
    check_cli(code, out, err)
    if code != 0 and out_path.exists():
        assert out_path.read_bytes() == b"precious", "a failed command changed --out"


def _flags(command: str) -> set[str]:
    return {f for f, _ in _options(command)}


# ------------------------------------------------------------------------ index files
INDEX_TEXT = st.text(alphabet=string.digits + " ,\n\t#-+.e[]{}\"'" + "٣x\r\ufeff", max_size=80)


def _nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


#: lists of plausible indices (most in range, some not)
PLAUSIBLE = st.lists(st.integers(-3, 1500), min_size=1, max_size=20)


def _npy(values: list[int]) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.asarray(values, dtype=np.int64), allow_pickle=False)
    return buf.getvalue()


#: ``(file content, suffix)``: plausible files in each format, and garbage in any format
INDEX_FILES = st.one_of(
    st.tuples(PLAUSIBLE.map(lambda xs: " ".join(map(str, xs)).encode()),
              st.sampled_from([".txt", ""])),
    st.tuples(PLAUSIBLE.map(lambda xs: json.dumps(xs).encode()), st.just(".json")),
    st.tuples(PLAUSIBLE.map(_npy), st.just(".npy")),
    st.tuples(st.one_of(
        INDEX_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=64),
        st.recursive(st.integers() | st.floats() | st.text(max_size=3),
                     lambda c: st.lists(c, max_size=4), max_leaves=12
                     ).map(lambda v: json.dumps(v).encode())),
        st.sampled_from([".txt", ".json", ".npy", ""])),
)


def _nested(depth: int) -> bytes:
    return ("[" * depth + "1" + "]" * depth).encode()


@settings(max_examples=examples(120))
@given(file=INDEX_FILES)
@example(file=(b"1" * 23, ".txt"))
@example(file=(_nested(3000), ".json"))
@example(file=(b"1e300", ".txt"))
@example(file=(b"[1e300]", ".json"))
@example(file=(b"18446744073709551615", ".txt"))
@example(file=("\u0663".encode(), ".txt"))
@example(file=(_npy([3, 5]).replace(b"<i8", b"|O8"), ".npy"))
def test_fuzz_index_files(file, workdir):
    content, suffix = file
    path = workdir / f"indices{suffix}"
    path.write_bytes(content)
    ds = _digits()
    try:
        idx = uk.read_indices(path, num_samples=len(ds.train) if len(content) % 2 else None)
        split = uk.split_indices(ds, idx)
    except Exception as exc:
        event("refused")
        check_error(exc)
        return
    event("read")
    assert split.forget_indices.dtype == np.int64
    assert 0 < len(split.forget_indices) < len(ds.train)


_DIGITS: list[uk.DataBundle] = []


def _digits() -> uk.DataBundle:
    if not _DIGITS:
        _DIGITS.append(uk.load_dataset("digits"))
    return _DIGITS[0]


# ------------------------------------------------------------------------ YAML configs
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | NASTY_TEXT
    | NAMES,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(NASTY_TEXT | NAMES, c, max_size=3),
    max_leaves=10)
CONFIG_KEYS = ["name", "dataset", "model", "recipe", "scenarios", "methods", "seeds", "relearn",
               "mia", "curves", "original", "score", "max_runs"]


@st.composite
def configs(draw) -> bytes:
    base = {"dataset": "digits", "model": {"arch": "mlp", "kwargs": {"hidden": [8]}},
            "recipe": {"epochs": 1}, "scenarios": {"classes": [[3]]},
            "methods": {"finetune": {"epochs": 1}}, "seeds": [0]}
    for key in draw(st.lists(st.sampled_from(CONFIG_KEYS), max_size=3)):
        base[key] = draw(JSONISH)
    if draw(st.booleans()):  # a nested change: a method's grid or a model argument
        base["methods"] = {draw(NAMES): {draw(st.sampled_from(["epochs", "lr", "alpha"])):
                                          draw(JSONISH)}}
    text = yaml.safe_dump(base, allow_unicode=True)
    if draw(st.booleans()):
        text = text.replace(draw(st.sampled_from(["1", ":", "-", "[", "digits", "8"])),
                            draw(st.sampled_from(["1e-5", "::", "\t", "{", "1e20", "-4", "é"])),
                            1)
    raw = text.encode("utf-8")
    if draw(st.integers(0, 9)) == 0:
        raw = draw(st.binary(max_size=64))
    return raw


@settings(max_examples=examples(60))
@given(raw=configs())
@example(raw=b"seeds: [1e20]\ndataset: digits\nmethods: all\n")
@example(raw=b"dataset: digits\nmodel: {arch: mlp, kwargs: {hidden: [-4]}}\nmethods: all\n")
@example(raw=b"\xff\xfe\x00bad")
@example(raw=b"methods:\n  finetune: {lr: 1e-5}\n")
@example(raw=b"methods:\n  ssd: {alpha: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}\n"
             b"seeds: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]\n"
             b"scenarios: {random: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]}\n")
def test_fuzz_bench_configs(raw, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    config = workdir / "config.yaml"
    config.write_bytes(raw)
    store = workdir / "dry.sqlite"
    store.unlink(missing_ok=True)
    code, out, err = run("bench", config, "--dry-run", "--out", store)
    event(f"exit {code}")
    check_cli(code, out, err)


# ---------------------------------------------------------------- checkpoint metadata
META_KEYS = ["arch", "arch_kwargs", "num_classes", "input_shape", "dataset", "split", "recipe",
             "seconds", "method", "seed", "format_version"]


@st.composite
def metadata(draw, base: dict) -> str:
    meta = dict(base)
    for key in draw(st.lists(st.sampled_from(META_KEYS), max_size=2)):
        meta[key] = draw(JSONISH)
    if draw(st.integers(0, 2)) == 0:
        meta["arch_kwargs"] = {"hidden": draw(st.lists(
            st.one_of(st.integers(-5, 64), st.integers(10**6, 10**12), st.floats(), NASTY_TEXT),
            max_size=3))}
    doc = json.dumps(meta)
    if draw(st.integers(0, 7)) == 0:
        doc = json.dumps(draw(JSONISH))
    return doc


@settings(max_examples=examples(60))
@given(data=st.data())
def test_fuzz_checkpoint_metadata(data, checkpoint, workdir):
    from safetensors import safe_open

    with safe_open(str(checkpoint), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        header = f.metadata()
    key = next(iter(header))
    doc = data.draw(metadata(json.loads(header[key])))
    path = workdir / "meta.safetensors"
    save_file(tensors, str(path), metadata={key: doc})
    try:
        model = uk.load_checkpoint(path)
    except Exception as exc:
        event(f"refused: {type(exc).__name__}")
        check_error(exc)
        return
    event("loaded")
    assert isinstance(model, torch.nn.Module)
    # what loaded must also evaluate (or refuse) cleanly on the command line
    code, out, err = run("evaluate", "--checkpoint", path, "--forget-class", "3", "--json")
    check_cli(code, out, err)


# ------------------------------------------------------------------------ results stores
@pytest.fixture(scope="module")
def real_store(workdir) -> Path:
    """A real results store from a one-run benchmark."""
    config = workdir / "tiny.yaml"
    config.write_text("dataset: digits\nmodel: {arch: mlp, kwargs: {hidden: [8]}}\n"
                      "recipe: {epochs: 1}\nscenarios: {classes: [[3]]}\n"
                      "methods: {finetune: {epochs: 1}}\nseeds: [0]\noriginal: false\n"
                      "relearn: false\n")
    store = workdir / "real.sqlite"
    code, _, err = run("bench", config, "--out", store, "--workers", "1")
    assert code == 0, err
    return store


@settings(max_examples=examples(25))
@given(column=st.sampled_from(["metrics", "params", "spec", "status", "seed", "method",
                               "forget_acc", "scenario"]),
       value=st.one_of(st.none(), JSONISH.map(json.dumps), NASTY_TEXT,
                       st.integers(-(2**63), 2**63 - 1),
                       st.floats()),
       drop=st.one_of(st.none(), st.sampled_from(["metrics", "params", "status", "spec"])))
def test_fuzz_results_store(column, value, drop, real_store, workdir):
    store = workdir / "fuzzed.sqlite"
    store.write_bytes(real_store.read_bytes())
    con = sqlite3.connect(store)
    try:
        with contextlib.suppress(sqlite3.IntegrityError):
            con.execute(f"UPDATE runs SET {column} = ?", (value,))
        if drop is not None:
            con.execute(f"ALTER TABLE runs DROP COLUMN {drop}")
        con.commit()
    finally:
        con.close()
    code, out, err = run("report", store, "--out", workdir / "report", "--json")
    event(f"exit {code}")
    check_cli(code, out, err)


# ------------------------------------------------------------ calibration histories
@st.composite
def histories(draw) -> bytes:
    """A calibration history (``warm_start``'s JSON) with fields replaced by anything."""
    trial = {"number": 1, "params": {"alpha": 3.0, "lambd": 0.5}, "state": "complete",
             "outcome": "forgotten", "value": 0.9, "seconds": 1.0}
    doc: dict = {"method": "ssd", "trials": [
        {**trial, "number": 0, "params": {"alpha": 10.0, "lambd": 1.0},
         "outcome": "not forgotten"}, trial]}
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.sampled_from(["doc", "trial", "params"]))
        value = draw(JSONISH)
        if where == "doc":
            doc[draw(st.sampled_from(["method", "trials", "x"]))] = value
        elif isinstance(doc.get("trials"), list) and doc["trials"]:
            t = doc["trials"][-1]
            if where == "trial" and isinstance(t, dict):
                t[draw(st.sampled_from([*trial, "x"]))] = value
            elif isinstance(t, dict) and isinstance(t.get("params"), dict):
                t["params"][draw(st.sampled_from(["alpha", "lambd", "epochs", "x"]))] = value
    raw = json.dumps(doc).encode()
    if draw(st.integers(0, 9)) == 0:
        raw = draw(st.binary(max_size=64))
    return raw


@settings(max_examples=examples(80))
@given(raw=histories())
def test_fuzz_warm_start_histories(raw, workdir):
    """Whatever the history file holds, ``warm_start`` reads it or refuses it in one line, and
    what it queues lies in the search space."""
    from unlearnkit import calibration as C

    path = workdir / "history.calibration.json"
    path.write_bytes(raw)
    cls = type(uk.get_method("ssd"))
    space = cls.search_space()
    kinds = {f.name: f.metadata.get("type", float) for f in dataclasses.fields(cls)}
    try:
        points, defaults = C._warm_points(path, "ssd", space, kinds)
    except Exception as exc:
        event("refused")
        check_error(exc)
        return
    event(f"{len(points)} points")
    for p in points + ([defaults[0]] if defaults else []):
        for k, v in p.items():
            assert space[k].low <= v <= space[k].high, (k, v)
