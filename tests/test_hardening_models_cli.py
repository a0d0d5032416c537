"""Issue 11, models and CLI: no input may crash, exhaust memory or clobber a file.

Output paths that are not regular files, an error after the work but before the output is
replaced, checkpoints whose metadata asks for a huge model or has the wrong JSON types,
absurd integers, and an empty forget set: each is one clear error, and nothing is destroyed.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import save_file

import unlearnkit as uk
from _cli import assert_one_error_line, run
from unlearnkit.compare import write_json
from unlearnkit.data.containers import ArrayDataset
from unlearnkit.exceptions import CheckpointError, InvalidParameterError, InvalidSplitError
from unlearnkit.methods.base import coerce_param, get_method
from unlearnkit.models.checkpoint import atomic_write


def _small_model():
    return uk.build_model("mlp", num_classes=10, input_shape=(1, 8, 8), hidden=(16,))


def _rewrite(src: Path, dst: Path, meta: object) -> Path:
    """``src``'s tensors with ``meta`` as its unlearnkit metadata (a JSON value, or raw text)."""
    with safe_open(str(src), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    raw = meta[1:] if isinstance(meta, str) and meta.startswith("!") else json.dumps(meta)
    save_file(tensors, str(dst), metadata={"unlearnkit": raw})
    return dst


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """An original MLP (1 epoch) and a model unlearned from it for a random 10 %."""
    d = tmp_path_factory.mktemp("hardening")
    code, _, err = run("train", "--data", "digits", "--model", "mlp", "--model-arg", "hidden=16",
                       "--epochs", "1", "--out", d / "original.safetensors")
    assert code == 0, err
    code, _, err = run("forget", "--checkpoint", d / "original.safetensors",
                       "--forget-fraction", "0.1", "--method", "finetune", "--param", "epochs=1",
                       "--no-relearn", "--out", d / "unlearned.safetensors")
    assert code == 0, err
    return d


# ---------------------------------------------------------------------- 1. what --out may be
def _non_regular(kind: str, tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / f"out-{kind}"
    if kind == "fifo":
        os.mkfifo(path)
        return path, "FIFO"
    if kind == "symlink":
        (tmp_path / "target.txt").write_text("keep me\n")
        path.symlink_to("target.txt")
        return path, "symbolic link"
    if kind == "dangling symlink":
        path.symlink_to("nowhere.safetensors")
        return path, "symbolic link"
    if kind == "directory":
        path.mkdir()
        (path / "inside.txt").write_text("keep me\n")
        return path, "directory"
    raise AssertionError(kind)


def _snapshot(path: Path) -> tuple:
    st = os.lstat(path)
    extra = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
    return stat.S_IFMT(st.st_mode), extra


@pytest.mark.parametrize("kind", ["fifo", "symlink", "dangling symlink", "directory"])
def test_save_checkpoint_refuses_what_is_not_a_regular_file(kind, tmp_path):
    path, what = _non_regular(kind, tmp_path)
    before = _snapshot(path)
    listing = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(InvalidParameterError, match=what) as exc:
        uk.save_checkpoint(_small_model(), path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)
    assert _snapshot(path) == before  # still a FIFO, the same link, the same directory
    assert sorted(p.name for p in tmp_path.iterdir()) == listing  # no temporary file left
    if kind == "symlink":
        assert (tmp_path / "target.txt").read_text() == "keep me\n"
    if kind == "directory":
        assert [p.name for p in path.iterdir()] == ["inside.txt"]


def test_save_checkpoint_refuses_a_character_device(tmp_path):
    path = tmp_path / "null-device"
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # what /dev/null is
    except (PermissionError, OSError) as exc:
        pytest.skip(f"cannot create a character device here (needs root): {exc}")
    with pytest.raises(InvalidParameterError, match="character device"):
        uk.save_checkpoint(_small_model(), path)
    assert stat.S_ISCHR(os.lstat(path).st_mode)


@pytest.mark.parametrize("writer", ["atomic_write", "write_json"])
def test_other_atomic_writers_refuse_a_fifo(writer, tmp_path):
    path = tmp_path / "results.json"
    os.mkfifo(path)
    with pytest.raises(InvalidParameterError, match="FIFO"):
        if writer == "atomic_write":
            atomic_write(path, lambda tmp: Path(tmp).write_text("x"))
        else:
            write_json(path, {"a": 1})
    assert stat.S_ISFIFO(os.lstat(path).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_the_check_runs_again_just_before_the_rename(tmp_path):
    """A FIFO that appears at the path while the file is written is not replaced either."""
    path = tmp_path / "late.json"

    def write(tmp: str) -> None:
        Path(tmp).write_text("x")
        os.mkfifo(path)

    with pytest.raises(InvalidParameterError, match="FIFO"):
        atomic_write(path, write)
    assert stat.S_ISFIFO(os.lstat(path).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["late.json"]


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def test_new_file_mode_follows_the_umask_and_a_replaced_file_keeps_its_mode(tmp_path,
                                                                             umask_027):
    new = uk.save_checkpoint(_small_model(), tmp_path / "new.safetensors")
    assert stat.S_IMODE(os.stat(new).st_mode) == 0o640  # 0o666 & ~0o027, not mkstemp's 0o600
    old = tmp_path / "old.safetensors"
    old.write_bytes(b"previous")
    os.chmod(old, 0o604)
    uk.save_checkpoint(_small_model(), old)
    assert stat.S_IMODE(os.stat(old).st_mode) == 0o604
    assert uk.load_checkpoint(old) is not None


@pytest.mark.parametrize("command", ["train", "forget"])
def test_cli_refuses_a_fifo_out_before_any_work(command, work, tmp_path, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("work started before --out was checked")

    monkeypatch.setattr("unlearnkit.cli.train_model", no_work)
    monkeypatch.setattr("unlearnkit.cli.unlearn", no_work)
    out = tmp_path / "fifo"
    os.mkfifo(out)
    if command == "train":
        argv = ["train", "--data", "digits", "--model", "mlp", "--epochs", "1"]
    else:
        argv = ["forget", "--checkpoint", work / "original.safetensors", "--forget-class", "3",
                "--method", "finetune"]
    code, stdout, err = run(*argv, "--out", out)
    assert code == 2 and stdout == ""
    assert_one_error_line(err, str(out), "FIFO")
    assert stat.S_ISFIFO(os.lstat(out).st_mode)


# ---------------------------------------------------------------------- 2. --out replaced last
@pytest.mark.parametrize("failure", [InvalidParameterError("evaluation failed"),
                                     KeyboardInterrupt()])
def test_forget_keeps_the_old_out_when_evaluation_fails(failure, work, tmp_path, monkeypatch):
    out = tmp_path / "previous.safetensors"
    out.write_bytes((work / "original.safetensors").read_bytes())
    before = out.read_bytes()

    def failing(*args, **kwargs):
        raise failure

    monkeypatch.setattr("unlearnkit.cli.evaluate", failing)
    code, stdout, err = run("forget", "--checkpoint", work / "original.safetensors",
                            "--forget-class", "3", "--method", "finetune", "--param", "epochs=1",
                            "--out", out)
    assert code != 0 and stdout == ""
    if isinstance(failure, KeyboardInterrupt):
        assert code == 130 and err.strip() == "unlearnkit: interrupted"
    else:
        assert_one_error_line(err, "evaluation failed")
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["previous.safetensors"]


def test_train_keeps_the_old_out_when_its_accuracy_fails(work, tmp_path, monkeypatch):
    out = tmp_path / "previous.safetensors"
    out.write_bytes(b"a previous model")

    def failing(*args, **kwargs):
        raise InvalidParameterError("accuracy failed")

    monkeypatch.setattr("unlearnkit.cli.accuracy", failing)
    code, stdout, err = run("train", "--data", "digits", "--model", "mlp", "--model-arg",
                            "hidden=8", "--epochs", "1", "--out", out)
    assert code == 2 and stdout == ""
    assert_one_error_line(err, "accuracy failed")
    assert out.read_bytes() == b"a previous model"


def test_forget_writes_out_only_after_the_output_is_rendered(work, tmp_path, monkeypatch):
    out = tmp_path / "u.safetensors"

    def failing(result):
        raise InvalidParameterError("rendering failed")

    monkeypatch.setattr("unlearnkit.cli._text", failing)
    code, _, err = run("forget", "--checkpoint", work / "original.safetensors",
                       "--forget-class", "3", "--method", "finetune", "--param", "epochs=1",
                       "--no-relearn", "--out", out)
    assert code == 2
    assert_one_error_line(err, "rendering failed")
    assert not out.exists()


# ---------------------------------------------------------------------- 3. memory
_MEASURE = textwrap.dedent("""
    import resource, sys
    import unlearnkit as uk
    from unlearnkit.exceptions import CheckpointError
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        uk.load_checkpoint(sys.argv[1])
    except CheckpointError as exc:
        message = str(exc)
    else:
        message = "LOADED"
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) // 1024)  # ru_maxrss is in KiB on Linux
    print(message)
""")


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux only")
def test_small_checkpoint_asking_for_a_huge_model_is_refused_without_allocating(work,
                                                                                 tmp_path):
    # before: the model was built (1.4 GB for these 5 KB) before the shapes were compared
    info = json.loads(json.dumps(uk.models.read_checkpoint_info(
        work / "original.safetensors").to_dict()))
    info["arch_kwargs"]["hidden"] = [5_000_000]
    path = _rewrite(work / "original.safetensors", tmp_path / "huge.safetensors", info)
    assert path.stat().st_size < 200_000
    p = subprocess.run([sys.executable, "-c", _MEASURE, str(path)], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    grown_mb, message = p.stdout.splitlines()[:2]
    assert "does not match the model's architecture" in message
    assert "file (16, 64) vs model (5000000, 64)" in message
    assert int(grown_mb) < 200


def test_metadata_over_the_parameter_limit_is_refused(work, tmp_path):
    info = uk.models.read_checkpoint_info(work / "original.safetensors").to_dict()
    info["arch_kwargs"]["hidden"] = [16_000_000]
    path = _rewrite(work / "original.safetensors", tmp_path / "huge.safetensors", info)
    with pytest.raises(CheckpointError, match=r"cannot build it.*1,200,000,010 parameters"):
        uk.load_checkpoint(path)


# ---------------------------------------------------------------------- 4. metadata types
def _meta(work: Path) -> dict:
    return json.loads(json.dumps(
        uk.models.read_checkpoint_info(work / "unlearned.safetensors").to_dict()))


def _set(path: list[str], value):
    def mutate(meta):
        target = meta
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return meta
    return mutate


BAD_METADATA = [
    (lambda m: [1, 2], "must be a JSON object; got a list"),
    (lambda m: "abc", "must be a JSON object; got a string"),
    (_set(["dataset"], "digits"), "'dataset' must be a JSON object"),
    (_set(["dataset", "options"], [1]), "'dataset' must be a JSON object"),
    (_set(["dataset", "name"], 5), "'dataset' must be a JSON object"),
    (_set(["split"], [1]), "'split' must be a JSON object; got a list"),
    (_set(["arch_kwargs"], [1]), "'arch_kwargs' must be a JSON object; got a list"),
    (_set(["num_classes"], "10"), "'num_classes' must be a positive int; got a string"),
    (_set(["input_shape"], 5), "'input_shape' must be a list of positive ints; got an int"),
    (_set(["input_shape"], [1, -8, 8]), "'input_shape' must be a list of positive ints"),
    (_set(["arch"], 5), "'arch' must be a string; got an int"),
    (_set(["method"], "x"), "'method' must be a JSON object"),
    (_set(["method", "params"], [1]), "'method' must be a JSON object"),
    (_set(["seconds"], "x"), "'seconds' must be a finite number >= 0; got a string"),
    (_set(["recipe"], 3), "'recipe' must be a JSON object; got an int"),
    (_set(["seed"], 1.5), "'seed' must be an int; got a number"),
]


@pytest.mark.parametrize(("mutate", "fragment"), BAD_METADATA)
def test_metadata_of_the_wrong_type_is_one_checkpoint_error(mutate, fragment, work, tmp_path):
    path = _rewrite(work / "unlearned.safetensors", tmp_path / "bad.safetensors",
                    mutate(_meta(work)))
    with pytest.raises(CheckpointError, match="unreadable unlearnkit metadata") as exc:
        uk.models.read_checkpoint_info(path)
    assert fragment in str(exc.value) and "\n" not in str(exc.value)
    code, stdout, err = run("evaluate", "--checkpoint", path, "--no-relearn")
    assert code == 2 and stdout == ""
    assert_one_error_line(err, str(path), fragment)


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (_set(["split", "fraction"], "abc"), "'fraction' must be a number"),
        (_set(["split", "seed"], "x"), "'seed' must be an int"),
        (_set(["split", "seed"], -1), "'seed' must be an int in the range [0, "),
        (_set(["split", "scenario"], ["class"]), "'scenario' must be a string"),
        (lambda m: _set(["split", "classes"], "x")(_set(["split", "scenario"], "class")(m)),
         "'classes' must be a list"),
    ],
)
def test_a_recorded_forget_request_of_the_wrong_type_is_one_error(mutate, fragment, work,
                                                                  tmp_path):
    path = _rewrite(work / "unlearned.safetensors", tmp_path / "bad.safetensors",
                    mutate(_meta(work)))
    code, stdout, err = run("evaluate", "--checkpoint", path, "--no-relearn")
    assert code == 2 and stdout == ""
    assert_one_error_line(err, str(path), fragment)


def test_metadata_nested_too_deep_is_one_checkpoint_error(work, tmp_path):
    path = _rewrite(work / "original.safetensors", tmp_path / "deep.safetensors",
                    "!" + "[" * 100_000 + "]" * 100_000)
    with pytest.raises(CheckpointError, match="unreadable unlearnkit metadata"):
        uk.load_checkpoint(path)


@pytest.mark.parametrize(
    ("hidden", "fragment"),
    [
        ([-4], "must be a list of layer sizes"),
        ([0], "must be a list of layer sizes"),
        ([2**40], "must be a list of layer sizes"),
        (3e7, "must be a list of layer sizes"),
        ("32", "must be a list of layer sizes"),
    ],
)
def test_metadata_with_bad_layer_sizes_is_refused(hidden, fragment, work, tmp_path):
    info = uk.models.read_checkpoint_info(work / "original.safetensors").to_dict()
    info["arch_kwargs"]["hidden"] = hidden
    path = _rewrite(work / "original.safetensors", tmp_path / "bad.safetensors", info)
    with pytest.raises(CheckpointError, match="cannot build it") as exc:
        uk.load_checkpoint(path)
    assert fragment in str(exc.value)


@pytest.mark.parametrize(
    ("arch", "kwargs", "pattern"),
    [
        ("mlp", {"hidden": (-4,)}, r"'hidden' argument of model 'mlp'.*\[1, 16777216\]"),
        ("mlp", {"hidden": (0, 8)}, r"'hidden' argument.*Got \(0, 8\)"),
        ("mlp", {"hidden": (True,)}, r"'hidden' argument"),
        ("mlp", {"hidden": 32}, r"'hidden' argument.*list of layer sizes"),
        ("mlp", {"hidden": (16_000_000,)}, r"3,248,000,010 parameters.*MAX_PARAMETERS"),
        ("cnn", {"channels": (0,)}, r"'channels' argument of model 'cnn'"),
        ("cnn", {"hidden": -1}, r"'hidden' argument of model 'cnn'.*\[1, 16777216\]"),
        ("resnet18", {"width": float("inf")}, r"'width' parameter must be > 0. Got inf"),
        ("resnet18", {"width": float("nan")}, r"'width' parameter must be > 0. Got nan"),
        ("resnet18", {"width": 1e9}, r"'width'.*at most 32768"),
        ("resnet18", {"width": 1000}, r"parameters.*more than the limit"),
    ],
)
def test_build_model_checks_sizes_before_allocating(arch, kwargs, pattern):
    with pytest.raises(InvalidParameterError, match=pattern):
        uk.build_model(arch, num_classes=10, input_shape=(3, 8, 8), **kwargs)


@pytest.mark.parametrize("shape", [(), (0, 8, 8), (1, -8, 8), (2**20, 2**20, 1), "abc"])
def test_build_model_checks_the_input_shape(shape):
    with pytest.raises(InvalidParameterError, match="'input_shape' parameter"):
        uk.build_model("mlp", num_classes=10, input_shape=shape)


def test_build_model_still_builds_and_seeds_the_same():
    import torch

    with uk.training.seeded(0):
        a = uk.build_model("mlp", num_classes=10, input_shape=(1, 8, 8), hidden=(16,))
    with uk.training.seeded(0):
        b = uk.build_model("mlp", num_classes=10, input_shape=[1, 8, 8], hidden=[16])
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                  b.state_dict().values(), strict=True))
    assert next(a.parameters()).device.type == "cpu"


@pytest.mark.parametrize("arg", ["hidden=-4", "hidden=0", "hidden=16000000"])
def test_cli_train_refuses_bad_model_args(arg, tmp_path):
    out = tmp_path / "m.safetensors"
    code, stdout, err = run("train", "--data", "digits", "--model", "mlp", "--model-arg", arg,
                            "--epochs", "1", "--out", out)
    assert code == 2 and stdout == ""
    assert_one_error_line(err, "'hidden'" if "16000000" not in arg else "parameters")
    assert not out.exists()


# ---------------------------------------------------------------------- 5. absurd integers
def test_recipe_refuses_ints_beyond_the_bound():
    for field in ("epochs", "batch_size"):
        with pytest.raises(InvalidParameterError, match=rf"'{field}'.*, 1000000000\]"):
            uk.Recipe(**{field: 10**23})
    assert uk.Recipe(epochs=uk.training.MAX_COUNT).epochs == 10**9


def test_method_int_parameters_are_bounded():
    with pytest.raises(InvalidParameterError,
                       match=r"'epochs' parameter of 'finetune' must be an int in the range "
                             r"\[0, 1000000000\]. Got 99999999999999999999999 instead"):
        get_method("finetune", epochs=99999999999999999999999)
    cls = type(get_method("finetune"))
    assert coerce_param(cls, "epochs", "1000000000") == 10**9
    with pytest.raises(InvalidParameterError, match=r"must be an int\. Got '9999"):
        coerce_param(cls, "epochs", "9" * 5000)  # more digits than Python converts
    with pytest.raises(InvalidParameterError) as exc:
        get_method("finetune", epochs=10**5000)  # its repr alone would raise
    assert len(str(exc.value)) < 200


@pytest.mark.parametrize(
    ("param", "fragment"),
    [
        ("epochs=99999999999999999999999", "range [0, 1000000000]. Got 99999999999999999999999"),
        ("batch_size=0", "'batch_size' parameter of 'finetune'"),
        ("lr=nan", "'lr' parameter of 'finetune' must be a float"),
        ("lr=inf", "'lr' parameter of 'finetune' must be a float"),
        ("lr=-inf", "'lr' parameter of 'finetune' must be a float"),
        ("lr=1e400", "Got inf"),
    ],
)
def test_cli_param_out_of_range_is_one_line(param, fragment, work, tmp_path):
    out = tmp_path / "u.safetensors"
    code, stdout, err = run("forget", "--checkpoint", work / "original.safetensors",
                            "--forget-class", "3", "--method", "finetune", "--param", param,
                            "--out", out)
    assert code == 2 and stdout == ""
    assert_one_error_line(err, fragment)
    assert not out.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ("train", "--data", "digits", "--epochs", "99999999999999999999999"),
        ("train", "--data", "digits", "--seed", "99999999999999999999999"),
        ("forget", "--forget-fraction", "0.1", "--split-seed", "-1", "--method", "finetune"),
        ("forget", "--forget-class", "3", "--seed", "-1", "--method", "finetune"),
    ],
)
def test_cli_absurd_ints_are_one_line(argv, work, tmp_path):
    out = tmp_path / "m.safetensors"
    extra = () if argv[0] == "train" else ("--checkpoint", work / "original.safetensors")
    code, stdout, err = run(*argv, *extra, "--out", out)
    assert code == 2 and stdout == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("unlearnkit: "), err
    assert "1000000000" in err or "9223372036854775807" in err
    assert not out.exists()


# ---------------------------------------------------------------------- 6. empty forget set
def test_evaluate_on_an_empty_forget_set_is_one_clear_error(digits, mlp_model):
    empty = ArrayDataset(digits.train.x[:0], digits.train.y[:0])
    split = uk.Split.from_data(forget=empty, retain=digits.train, test=digits.test)
    with pytest.raises(InvalidSplitError, match=r"^The forget set is empty") as exc:
        uk.evaluate(mlp_model, split)
    assert "\n" not in str(exc.value)
