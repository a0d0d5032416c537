"""The ``unlearnkit`` command: parse arguments, call the library, print.

Every command accepts ``--json`` and then prints exactly one JSON object on stdout; progress
bars and log lines go to stderr. A user's mistake ends the command with one line
``unlearnkit: error: ...`` on stderr and exit code 2; output files are written atomically, so
an error never leaves a half-written one, and ``train``'s and ``forget``'s ``--out`` is
replaced last, once the metrics are computed and the output rendered, so that an error or
Ctrl-C before then leaves the previous file as it was. An ``--out`` that is not a regular file
(a directory, a link, a FIFO, a device) is refused before any work.

Without ``--json``, a terminal gets rich tables and colour (:mod:`unlearnkit._console`: rich
decides what is a terminal, FORCE_COLOR included; NO_COLOR drops the colours); a pipe or a
file gets the plain text of :func:`_text`, unchanged.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import math
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from unlearnkit import _console
from unlearnkit.api import default_recipe, train_model, unlearn
from unlearnkit.compare import (
    compare_methods,
    format_table,
    jsonable,
    rich_tables,
    scenario_label,
)
from unlearnkit.data.containers import DataBundle
from unlearnkit.data.registry import DATASETS, load_dataset
from unlearnkit.data.splits import (
    Split,
    read_indices,
    split_by_class,
    split_indices,
    split_random,
)
from unlearnkit.evaluation import NO_UNLEARNING, evaluate, score, verdict
from unlearnkit.exceptions import (
    CheckpointError,
    ForgetVerdictWarning,
    InvalidParameterError,
    InvalidSplitError,
    UnlearnkitError,
    short_repr,
)
from unlearnkit.methods.base import METHODS, coerce_param, get_method
from unlearnkit.metrics.accuracy import speedup
from unlearnkit.metrics.mia_power import uninformative_mias
from unlearnkit.metrics.verdict import Verdict
from unlearnkit.models.checkpoint import (
    check_output_path,
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
)
from unlearnkit.models.info import ModelInfo, get_info
from unlearnkit.models.registry import MODELS
from unlearnkit.pools import cached_original, pool_cache_dir, retrained_pool, unlearned_pool
from unlearnkit.registry import did_you_mean
from unlearnkit.training import MAX_COUNT, Recipe, accuracy, resolve_device, warm_up

__all__ = ["build_parser", "main"]

PROG = "unlearnkit"


# ---------------------------------------------------------------------- small parsers
def _key_value(text: str, what: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InvalidParameterError(f"{what} must be written key=value. Got {text!r}.")
    return key.strip(), value.strip()


def _literal(text: str) -> Any:
    """``"3"`` -> 3, ``"0.5"`` -> 0.5, ``"true"`` -> True, ``"none"`` -> None,
    ``"8,16"`` -> (8, 16); anything else stays a string."""
    if "," in text:
        return tuple(_literal(t) for t in text.split(",") if t.strip())
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


_MAX_SEED = 2**63 - 1


def _int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an int in ``[low, high]`` (else a one-line usage error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an int; got {short_repr(text)}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"must be an int in the range [{low}, {high}]; got {short_repr(value)}")
        return value

    return parse


def _options(pairs: Sequence[str] | None, what: str) -> dict[str, Any]:
    return {k: _literal(v) for k, v in (_key_value(p, what) for p in pairs or ())}


def _model_args(arch: str, pairs: Sequence[str] | None) -> dict[str, Any]:
    """``--model-arg`` values, shaped like the architecture's defaults (``hidden=32`` is
    ``(32,)`` for a layer-widths tuple); names and types are checked here."""
    signature = inspect.signature(MODELS.get(arch)).parameters
    valid = [p for p in signature if p not in ("self", "input_shape", "num_classes")]
    out: dict[str, Any] = {}
    for key, value in _options(pairs, "--model-arg").items():
        if key not in valid:
            raise InvalidParameterError(
                f"Model {arch!r} has no argument {key!r}.{did_you_mean(key, valid)} "
                f"Valid arguments: {', '.join(valid) or '(none)'}."
            )
        default = signature[key].default
        if isinstance(default, (tuple, list)) and not isinstance(value, tuple):
            value = (value,)
        items = value if isinstance(value, tuple) else (value,)
        kinds = {type(d) for d in default} if isinstance(default, (tuple, list)) else (
            set() if default in (None, inspect.Parameter.empty) else {type(default)}
        )
        ok = all(
            isinstance(v, tuple(kinds)) or (float in kinds and isinstance(v, int))
            for v in items
        ) if kinds else True
        if not ok or (kinds and isinstance(value, bool) != (bool in kinds)):
            raise InvalidParameterError(
                f"The {key!r} argument of model {arch!r} must look like its default "
                f"{default!r}. Got {value!r}."
            )
        out[key] = value
    return out


def _method_params(method: str, pairs: Sequence[str] | None) -> dict[str, Any]:
    cls = METHODS.get(method)
    out = {}
    for pair in pairs or ():
        key, value = _key_value(pair, "--param")
        out[key] = coerce_param(cls, key, value)
    return out


def _compare_params(pairs: Sequence[str] | None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for pair in pairs or ():
        key, value = _key_value(pair, "--param")
        method, dot, name = key.partition(".")
        if not dot or not name:
            raise InvalidParameterError(
                f"compare's --param must be written method.key=value (e.g. ssd.alpha=5). "
                f"Got {pair!r}."
            )
        out.setdefault(method, {})[name] = coerce_param(METHODS.get(method), name, value)
    return out


def _device(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise InvalidParameterError(
            f"The '--device' option must name a torch device such as cpu, cuda or cuda:1. "
            f"Got {text!r}."
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidParameterError(f"--device {text}: CUDA is not available on this machine.")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidParameterError(f"--device {text}: Apple MPS is not available here.")
    return text


#: How much goes to stderr besides errors and warnings: 0 (``--quiet``: nothing), 1 (the
#: default: progress bars on a terminal, else the progress lines) or 2 (``--verbose``: the
#: progress lines too, even beside the bars).
_VERBOSITY = 1


def _bars() -> bool:
    """Progress bars: on a terminal, unless ``--quiet`` or ``--verbose`` (lines instead)."""
    return _VERBOSITY == 1 and sys.stderr.isatty()


def _log(message: str) -> None:
    if _VERBOSITY > 0:
        print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- data and checkpoints
def _load_data(args: argparse.Namespace, info: ModelInfo | None = None,
               checkpoint: str | None = None) -> DataBundle:
    """The dataset named by --data (default: the checkpoint's), loaded with the checkpoint's
    recorded options, and checked against the checkpoint's classes and input shape."""
    recorded = (info.dataset or {}) if info is not None else {}
    name = args.data or recorded.get("name")
    if name is None:
        why = f"The checkpoint {checkpoint!r} records no dataset" if checkpoint else "No dataset"
        raise InvalidParameterError(
            f"{why}: give one with --data ({', '.join(DATASETS.names())})."
        )
    if recorded.get("name") not in (None, name):
        raise CheckpointError(
            f"The checkpoint {checkpoint!r} was trained on {recorded['name']!r}, not {name!r}. "
            f"Use --data {recorded['name']} (or leave --data out)."
        )
    options = dict(recorded.get("options") or {}) if recorded.get("name") == name else {}
    for key, value in _options(getattr(args, "data_option", None), "--data-option").items():
        if key in options and options[key] != value:
            raise CheckpointError(
                f"The checkpoint {checkpoint!r} was trained on {name!r} with {key}="
                f"{options[key]!r}, not {value!r}: its training set would differ."
            )
        options[key] = value
    data = load_dataset(name, root=args.data_root, download=args.download, **options)
    if info is not None:
        if info.num_classes is not None and info.num_classes != data.num_classes:
            raise CheckpointError(
                f"The checkpoint {checkpoint!r} has {info.num_classes} classes but {name!r} has "
                f"{data.num_classes}."
            )
        if info.input_shape is not None and tuple(info.input_shape) != data.input_shape:
            raise CheckpointError(
                f"The checkpoint {checkpoint!r} takes inputs of shape {tuple(info.input_shape)} "
                f"but {name!r} samples have shape {data.input_shape}."
            )
    return data


def _split_given(args: argparse.Namespace) -> bool:
    return bool(args.forget_class) or any(
        getattr(args, a) is not None for a in ("forget_fraction", "forget_count", "forget_indices")
    )


def _split(args: argparse.Namespace, data: DataBundle) -> Split:
    if args.forget_class:
        return split_by_class(data, args.forget_class)
    if args.forget_fraction is not None:
        return split_random(data, fraction=args.forget_fraction, seed=args.split_seed)
    if args.forget_count is not None:
        return split_random(data, count=args.forget_count, seed=args.split_seed)
    return split_indices(data, read_indices(args.forget_indices, num_samples=len(data.train)))


#: (key, check, what it must be) for the forget request a checkpoint records.
_SPLIT_KEYS: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("scenario", lambda v: isinstance(v, str), "a string"),
    ("classes", lambda v: isinstance(v, list) and all(
        isinstance(c, (int, str)) and not isinstance(c, bool) for c in v),
     "a list of class numbers or names"),
    ("fraction", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
     "a number"),
    ("count", lambda v: isinstance(v, int) and not isinstance(v, bool), "an int"),
    ("seed", lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= _MAX_SEED,
     f"an int in the range [0, {2**63 - 1}]"),
    ("forget_sha256", lambda v: isinstance(v, str), "a string"),
    ("indices", lambda v: isinstance(v, list) and all(
        isinstance(i, int) and not isinstance(i, bool) for i in v), "a list of ints"),
    ("n_forget", lambda v: isinstance(v, int) and not isinstance(v, bool), "an int"),
)


def _check_split_record(desc: dict, checkpoint: str) -> None:
    for key, ok, expected in _SPLIT_KEYS:
        if desc.get(key) is not None and not ok(desc[key]):
            raise CheckpointError(
                f"{checkpoint!r} has unreadable unlearnkit metadata: the forget request's "
                f"{key!r} must be {expected}; got {short_repr(desc[key])}."
            )


def _split_from_record(desc: dict, data: DataBundle, checkpoint: str) -> Split:
    """Rebuild the forget request a checkpoint records, and check it is the same one."""
    _check_split_record(desc, checkpoint)
    if desc.get("scenario") == "class" and desc.get("classes"):
        split = split_by_class(data, desc["classes"])
    elif "fraction" in desc or "count" in desc:
        kw = {"fraction": desc["fraction"]} if "fraction" in desc else {"count": desc["count"]}
        split = split_random(data, seed=int(desc.get("seed", 0)), **kw)
    elif desc.get("indices") is not None:  # an explicit request, recorded with its indices
        split = split_indices(data, desc["indices"])
    else:
        raise InvalidSplitError(
            f"The checkpoint {checkpoint!r} was unlearned for a list of sample indices: give "
            "the same list with --forget-indices FILE."
        )
    if desc.get("forget_sha256") not in (None, split.description.get("forget_sha256")):
        raise InvalidSplitError(
            f"The forget request recorded in {checkpoint!r} cannot be rebuilt on this data (its "
            "samples differ): give the split options explicitly."
        )
    return split


def _same_request(recorded: dict | None, split: Split) -> bool:
    if not recorded:
        return True
    a, b = recorded.get("forget_sha256"), split.description.get("forget_sha256")
    return a is None or b is None or a == b


def _load_retrained(path: str | None, split: Split, data: DataBundle) -> torch.nn.Module | None:
    if path is None:
        return None
    info = read_checkpoint_info(path)
    if info is not None:
        if info.split:
            _check_split_record(info.split, path)
        if info.num_classes is not None and info.num_classes != data.num_classes:
            raise CheckpointError(
                f"The retrained checkpoint {path!r} has {info.num_classes} classes but "
                f"{data.name!r} has {data.num_classes}."
            )
        if not _same_request(info.split, split):
            raise CheckpointError(
                f"The retrained checkpoint {path!r} was retrained for another forget request "
                f"({info.split.get('scenario')}, {info.split.get('n_forget')} samples) than this "
                f"one ({scenario_label(split, data.class_names)}, "
                f"{split.description.get('n_forget')} samples)."
            )
    return load_checkpoint(path)


def _load_original(path: str | None, data: DataBundle) -> torch.nn.Module | None:
    if path is None:
        return None
    info = read_checkpoint_info(path)
    if info is not None:
        if info.method is not None:
            raise CheckpointError(
                f"--original {path!r} is an unlearned model (by {info.method.get('name')!r}), "
                "not the original: give the model the unlearning started from.")
        if info.num_classes is not None and info.num_classes != data.num_classes:
            raise CheckpointError(
                f"The original checkpoint {path!r} has {info.num_classes} classes but "
                f"{data.name!r} has {data.num_classes}.")
    return load_checkpoint(path)


def _split_summary(split: Split, data: DataBundle) -> dict[str, Any]:
    return {"label": scenario_label(split, data.class_names), **split.description}


# ---------------------------------------------------------------------- commands
_RECIPE_FLAGS = ("epochs", "lr", "optimizer", "batch_size", "weight_decay", "momentum",
                 "schedule")


def _recipe(args: argparse.Namespace, arch: str) -> Recipe:
    changes = {k: getattr(args, k) for k in _RECIPE_FLAGS if getattr(args, k) is not None}
    return default_recipe(arch).replace(**changes)


#: The key of a command's result that holds its output file's writer: :func:`_run` calls it
#: once everything else is done (metrics computed, output rendered), so that an error or
#: Ctrl-C before that leaves the previous ``--out`` as it was.
_WRITE = "_write"


def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    check_output_path(args.out)  # a FIFO, a device, a directory or a link: refused up front
    device = _device(args.device)
    data = _load_data(args)
    recipe = _recipe(args, args.model)
    arch_kwargs = _model_args(args.model, args.model_arg)
    model = train_model(data, arch=args.model, recipe=recipe, seed=args.seed, device=device,
                        progress=_bars(), **arch_kwargs)
    info = get_info(model)
    return {
        _WRITE: lambda: save_checkpoint(model, args.out),
        "command": "train",
        "out": str(Path(args.out)),
        "dataset": data.name,
        "arch": args.model,
        "arch_kwargs": arch_kwargs,
        "recipe": recipe.to_dict(),
        "seed": args.seed,
        "seconds": info.seconds if info else None,
        "metrics": {"train_acc": accuracy(model, data.train),
                    "test_acc": accuracy(model, data.test)},
    }


def cmd_forget(args: argparse.Namespace) -> dict[str, Any]:
    check_output_path(args.out)  # a FIFO, a device, a directory or a link: refused up front
    device = _device(args.device)
    params = _method_params(args.method, args.param)
    method = get_method(args.method, **params)  # every check before any work
    info = read_checkpoint_info(args.checkpoint)
    data = _load_data(args, info, args.checkpoint)
    split = _split(args, data)
    retrained = _load_retrained(args.retrained, split, data)
    model = load_checkpoint(args.checkpoint, device=resolve_device(device))
    if args.time_retrain:  # both timed calls start warm, in this process, on this device
        warm_up(device, model=model, data=split.retain)
    calibration = None
    if args.calibrate:
        from unlearnkit.calibration import DEFAULT_BUDGET, calibrate

        calibration = calibrate(
            model, split, method, budget=DEFAULT_BUDGET if args.budget is None else args.budget,
            budget_seconds=args.budget_seconds, max_trials=args.max_trials, seed=args.seed,
            device=device, log=_log, warm_start=args.warm_start, **params)
        unlearned = calibration.model
        method = get_method(args.method, **calibration.params)
    else:
        for flag in ("budget", "budget_seconds", "max_trials", "warm_start"):
            if getattr(args, flag) is not None:
                raise InvalidParameterError(
                    f"--{flag.replace('_', '-')} is an option of calibration: add --calibrate.")
        with warnings.catch_warnings():
            if not args.json:  # the verdict is printed below, with what to try
                warnings.simplefilter("ignore", ForgetVerdictWarning)
            unlearned = unlearn(model, split, method, seed=args.seed, device=device,
                                progress=_bars())
    timed = None
    if args.time_retrain:  # retraining measured like the method: here, now, same threads
        timed = unlearn(model, split, "retrain", seed=args.seed, device=device,
                        progress=_bars(), verdict=False)
        retrained = retrained if retrained is not None else timed
    metrics = evaluate(unlearned, split, retrained=retrained, original=model,
                       relearn=not args.no_relearn)
    source, note = None, None
    if timed is not None:
        secs = get_info(timed).seconds  # type: ignore[union-attr]
        metrics["retrain_seconds"] = secs
        value = speedup(metrics.get("seconds"), secs)
        if value is not None:
            metrics["speedup"] = value
        source = "timed-here"
        note = (f"retrain_seconds was measured here, retraining right after the method, in "
                f"this process ({torch.get_num_threads()} torch threads, "
                f"{resolve_device(device)}): the speedup is like for like.")
    elif retrained is not None and "retrain_seconds" in metrics:
        source = "checkpoint"
        note = ("retrain_seconds is the time recorded in the --retrained checkpoint, measured "
                "in another process, under another load (perhaps another machine or thread "
                "count): the speedup is indicative only. Add --time-retrain to retrain here "
                "and compare like for like.")
    history = (Path(args.out).with_suffix(".calibration.json") if calibration is not None
               else None)

    def write() -> None:
        if calibration is not None and history is not None:
            calibration.save_history(history)
        save_checkpoint(unlearned, args.out)

    return {
        _WRITE: write,
        "command": "forget",
        "checkpoint": args.checkpoint,
        "out": str(Path(args.out)),
        "method": method.name,
        "params": method.for_scenario(split.scenario).json_params(),
        "seed": args.seed,
        "split": _split_summary(split, data),
        "retrained": args.retrained,
        "metrics": metrics,
        "verdict": (get_info(unlearned).verdict  # type: ignore[union-attr]
                    if get_info(unlearned) is not None else None),
        "uninformative_mias": uninformative_mias(metrics),  # MIA figures with no power here
        **({"retrain_seconds_source": source, "note": note} if source else {}),
        **({"calibration": _calibration_summary(calibration, history)}
           if calibration is not None else {}),
    }


def _calibration_summary(c: Any, history: Path | None) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for t in c.trials:
        counts[t.state] = counts.get(t.state, 0) + 1
    return {"best_trial": c.best_trial, "stopped_at": c.stopped_at,
            "trials": len(c.trials), "states": counts,
            "seconds": c.seconds, "budget_seconds": c.budget_seconds,
            "retrain_estimate": c.retrain_estimate, "space": c.space,
            "warm_start": c.warm_start,
            "history": str(history) if history is not None else None}


def cmd_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    device = _device(args.device)
    info = read_checkpoint_info(args.checkpoint)
    data = _load_data(args, info, args.checkpoint)
    recorded = info.split if info is not None else None
    if _split_given(args):
        split = _split(args, data)
        if not _same_request(recorded, split):
            warnings.warn(
                f"{args.checkpoint!r} was unlearned for another forget request "
                f"({recorded.get('n_forget')} samples) than the one evaluated "
                f"({split.description.get('n_forget')} samples).", UserWarning, stacklevel=1)
    elif recorded:
        split = _split_from_record(recorded, data, args.checkpoint)
    else:
        raise InvalidSplitError(
            f"The checkpoint {args.checkpoint!r} records no forget request: say which samples "
            "were forgotten with --forget-class, --forget-fraction, --forget-count or "
            "--forget-indices."
        )
    retrained = _load_retrained(args.retrained, split, data)
    original = _load_original(args.original, data)
    if args.n_models and original is None:
        raise InvalidParameterError(
            "--n-models builds pools of unlearned models from the original: give it with "
            "--original FILE.")
    if args.n_models and not (info is not None and info.method):
        raise InvalidParameterError(
            f"--n-models: {args.checkpoint!r} records no unlearning method, so there is no "
            "method to make a pool of. Use `unlearnkit score` to judge a method.")
    model = load_checkpoint(args.checkpoint, device=resolve_device(device))
    pools = None
    if args.n_models:
        assert info is not None and info.method is not None and original is not None
        method = get_method(info.method["name"], **(info.method.get("params") or {}))
        pools = (unlearned_pool(original, split, method, args.n_models, device=device,
                                progress=_bars()),
                 retrained_pool(original, split, args.n_models, device=device,
                                progress=_bars()))
    metrics = evaluate(model, split, retrained=retrained, original=original, pools=pools,
                       relearn=not args.no_relearn, device=device)
    judged = (verdict(model, split, original, device=device).to_dict()
              if original is not None and split.validation is not None else None)
    return {
        "command": "evaluate",
        "checkpoint": args.checkpoint,
        "method": info.method if info is not None else None,
        "split": _split_summary(split, data),
        "retrained": args.retrained,
        "original": args.original,
        "n_models": args.n_models or None,
        "metrics": metrics,
        "verdict": judged,  # with --original: the oracle-free verdict and its numbers
        "uninformative_mias": uninformative_mias(metrics),  # MIA figures with no power here
    }


def cmd_score(args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    device = _device(args.device)
    if args.method not in NO_UNLEARNING:
        params = _method_params(args.method, args.param)
        get_method(args.method, **params)  # every check before any work
    elif args.param:
        raise InvalidParameterError(f"--method {args.method} (no unlearning) takes no --param.")
    else:
        params = {}
    if args.n_models < 3:
        raise InvalidParameterError(
            f"--n-models must be at least 3 (the competition used 512); got {args.n_models}.")
    info = read_checkpoint_info(args.checkpoint) if args.checkpoint else None
    data = _load_data(args, info, args.checkpoint)
    split = _split(args, data)
    if args.checkpoint is not None:
        original = load_checkpoint(args.checkpoint, device=resolve_device(device))
    else:
        _log(f"the original {args.model} on {data.name} (trained once, then cached) ...")
        original = cached_original(data, arch=args.model, recipe=_recipe(args, args.model),
                                   seed=args.seed, device=device, progress=_bars(),
                                   **_model_args(args.model, args.model_arg))
    _log(f"pools of {args.n_models} models (cached under {pool_cache_dir()}) ...")
    result = score(original, split, args.method, n_models=args.n_models, device=device,
                   progress=_bars(), cache=not args.no_cache, **params)
    return {
        "command": "score",
        "dataset": data.name,
        "checkpoint": args.checkpoint,
        "split": _split_summary(split, data),
        "method": result.pop("method"),
        "params": result.pop("params"),
        "n_models": args.n_models,
        "seconds": time.perf_counter() - start,
        "metrics": result,
    }


def cmd_methods(args: argparse.Namespace) -> dict[str, Any]:
    names = list(dict.fromkeys(args.names or ())) or list(METHODS.names())
    return {"methods": [METHODS.get(name).describe() for name in names]}


def cmd_datasets(args: argparse.Namespace) -> dict[str, Any]:
    return {"datasets": [spec.to_dict() for _, spec in DATASETS.items()]}


def cmd_compare(args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    device = _device(args.device)
    methods = None
    if args.methods and args.methods.strip() != "all":
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        for m in methods:
            METHODS.get(m)
    params = _compare_params(args.param)
    original = None
    info = None
    if args.checkpoint is not None:
        info = read_checkpoint_info(args.checkpoint)
    data = _load_data(args, info, args.checkpoint)
    scenarios: list[Split] = []
    if args.forget_class:
        scenarios.append(split_by_class(data, args.forget_class))
    for fraction in args.forget_fraction or ():
        scenarios.append(split_random(data, fraction=fraction, seed=args.split_seed))
    for count in args.forget_count or ():
        scenarios.append(split_random(data, count=count, seed=args.split_seed))
    for path in args.forget_indices or ():  # a user's own request: the samples listed
        scenarios.append(split_indices(data, read_indices(path, num_samples=len(data.train))))
    if args.checkpoint is not None:
        original = load_checkpoint(args.checkpoint, device=resolve_device(device))
        ignored = [f"--{k.replace('_', '-')}" for k in (*_RECIPE_FLAGS, "model_arg")
                   if getattr(args, k) is not None]
        if ignored:
            warnings.warn(
                f"{', '.join(ignored)} ignored: the original comes from --checkpoint, and the "
                "reference is retrained with its recorded recipe (change that with "
                "--param retrain.epochs=N ...).", UserWarning, stacklevel=1)
    arch = (info.arch if info is not None else None) or args.model
    rows = compare_methods(
        data,
        scenarios=scenarios or None,
        methods=methods,
        params=params,
        arch=arch,
        arch_kwargs=_model_args(arch, args.model_arg) if original is None else None,
        recipe=_recipe(args, arch),
        original=original,
        seed=args.seed,
        device=device,
        out_dir=args.out_dir,
        n_models=args.n_models,
        relearn=not args.no_relearn,
        progress=_bars(),
        log=_log,
    )
    return {
        "command": "compare",
        "dataset": data.name,
        "arch": arch,
        "checkpoint": args.checkpoint,
        "seed": args.seed,
        "out_dir": args.out_dir,
        "results": str(Path(args.out_dir) / "results.json") if args.out_dir else None,
        "n_models": args.n_models or None,
        "seconds": time.perf_counter() - start,
        "rows": rows,
    }


def cmd_bench(args: argparse.Namespace) -> dict[str, Any]:
    from unlearnkit.bench import describe, expand, load_config, preset, run_plan

    if (args.config is None) == (args.preset is None):
        raise InvalidParameterError(
            "bench takes a CONFIG.yaml file or --preset NAME (one of them, not both).")
    if args.workers is not None and args.workers < 1:
        raise InvalidParameterError(f"--workers must be at least 1. Got {args.workers}.")
    if args.max_runs is not None and args.max_runs < 1:
        raise InvalidParameterError(f"--max-runs must be at least 1. Got {args.max_runs}.")
    config = (preset(args.preset, max_runs=args.max_runs) if args.preset
              else load_config(args.config, max_runs=args.max_runs))
    plan = expand(config)
    device = _device(args.device)
    head = {"command": "bench", "config": config.name, "dry_run": bool(args.dry_run)}
    if args.dry_run:
        return {**head, **describe(plan, args.out)}
    result = {**head, **run_plan(plan, args.out, workers=args.workers, device=device,
                                 progress=_bars(), log=None if _bars() else _log,
                                 executor=args.executor, ray_address=args.ray_address)}
    from unlearnkit.bench import read_rows
    from unlearnkit.report import summarize

    ids = {r["run_id"] for r in result["runs"]}
    result["tables"] = [s.to_dict() for s in summarize(
        [r for r in read_rows(args.out, ids) if r["status"] == "ok"])]
    if args.report:
        from unlearnkit.report import write_report

        files = write_report(args.out, args.report, log=_log)["files"]
        result["report"] = next((f for f in files if f.endswith(".html")), args.report)
    return result


def cmd_report(args: argparse.Namespace) -> dict[str, Any]:
    from unlearnkit.report import load_finished, summarize, write_report

    if args.out is None and not args.print:
        raise InvalidParameterError(
            "report writes to --out DIR, or prints the tables with --print (or both).")
    methods = ([m.strip() for m in args.methods.split(",") if m.strip()]
               if args.methods else None)
    out: dict[str, Any] = {"command": "report", "db": str(args.results), "out": args.out,
                           "files": []}
    if args.print:  # the tables at once, as `bench` prints them, from the store alone
        rows = load_finished(args.results)
        keep = {"retrain", "original"}
        rows = [r for r in rows if (args.scenario is None or r["scenario"] in args.scenario)
                and (methods is None or r["method"] in methods or r["method"] in keep)]
        out["tables"] = [s.to_dict() for s in summarize(rows)]
    if args.out is not None:
        result = write_report(args.results, args.out, scenarios=args.scenario, methods=methods,
                              log=_log if args.out is not None and not args.json else None)
        out.update(db=result["db"], out=result["out"], files=result["files"],
                   figures_drawn=result["figures_drawn"],
                   figures_reused=result["figures_reused"],
                   scenarios=[{k: s[k] for k in ("dataset", "arch", "scenario",
                                                 "scenario_kind")}
                              | {"rows": len(s["rows"])} for s in result["scenarios"]])
    return out


# ---------------------------------------------------------------------- text output
def _num(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.4g}" if not math.isinf(value) else str(value)
    return "-" if value is None else str(value)


def _metrics_text(metrics: dict[str, Any]) -> list[str]:
    """One line per metric; an MIA figure whose attack has no power here is marked ``?``,
    with why below (:func:`unlearnkit.metrics.mia_informative`)."""
    from unlearnkit.metrics.mia_power import power_note

    flagged = uninformative_mias(metrics)
    width = max((len(k) for k in metrics), default=0)
    lines = [f"  {k:<{width}}  {_num(v)}" + ("?" if k in flagged else "")
             for k, v in metrics.items()]
    notes = [power_note(metrics, m) for m in flagged]
    return lines + [f"  ? {n}; not a forgetting signal" for n in notes if n]


def _verdict_text(v: dict[str, Any] | None) -> list[str]:
    """The verdict block of ``forget`` and ``evaluate``: the outcome with its numbers, why,
    and what to try."""
    if not v:
        return []
    judged = Verdict.from_dict(v)
    lines = [f"verdict: {judged.summary()}"]
    lines += [f"  why: {r}" for r in judged.reasons]
    lines += [f"  note: {n}" for n in judged.notes]
    if judged.hint:
        lines.append(f"  try: {judged.hint}")
    return lines


def _head_lines(result: dict[str, Any]) -> list[str]:
    """The first lines of ``forget`` and ``evaluate``: what was done (and calibrated)."""
    split = result["split"]
    if result["command"] == "evaluate":
        return [f"{result['checkpoint']} on {split['label']} "
                f"({split.get('n_forget')} samples forgotten)"]
    lines = [f"{result['method']} forgot {split['label']} "
             f"({split.get('n_forget')} samples); saved {result['out']}"]
    cal = result.get("calibration")
    if cal:
        budget = (f"budget {cal['budget_seconds']:.3g} s" if cal["budget_seconds"]
                  else "no time budget")
        states = ", ".join(f"{k} {v}" for k, v in cal["states"].items())
        params = ", ".join(f"{k}={result['params'][k]}" for k in cal["space"])
        warm = " (warm-started)" if cal.get("warm_start") else ""
        lines.append(f"calibrated{warm}: {cal['trials']} trials ({states}) in "
                     f"{cal['seconds']:.3g} s, {budget}; best trial {cal['best_trial']}"
                     f"{_stopped_text(cal.get('stopped_at'))}: {params}; history: "
                     f"{cal['history']}")
    return lines


def _stopped_text(at: dict[str, Any] | None) -> str:
    """`` (stopped at <phase> epoch k)`` for a calibration whose best model is an epoch's."""
    return f" (stopped at {at['phase']} epoch {at['epoch']})" if at else ""


# ---------------------------------------------------------------------- terminal output (rich)
def _verdict_rich(v: dict[str, Any] | None) -> list[Any]:
    """:func:`_verdict_text` for a terminal: the outcome in its colour, the notes dim."""
    from rich.text import Text

    if not v:
        return []
    judged = Verdict.from_dict(v)
    summary = judged.summary().removeprefix(judged.outcome)
    shown: list[Any] = [Text.assemble(("verdict: ", "bold"),
                                      _console.verdict(judged.outcome, style="bold"), summary)]
    shown += [_console.line(f"  why: {r}") for r in judged.reasons]
    shown += [_console.line(f"  note: {n}", "dim") for n in judged.notes]
    if judged.hint:
        shown.append(_console.line(Text.assemble(("  try: ", "bold"), judged.hint)))
    return shown


def _metrics_rich(metrics: dict[str, Any]) -> list[Any]:
    return [_console.line(x, "dim" if x.startswith("  ? ") else "")
            for x in _metrics_text(metrics)]


def _tables_rich(r: dict[str, Any], out: Any) -> list[Any]:
    """The bench tables of ``bench`` and ``report --print`` for a terminal, with their notes."""
    shown: list[Any] = []
    for t in r.get("tables", ()):
        shown += [*_summary_rich(t, out), ""]
    if r.get("tables"):
        shown += [_console.line(TABLE_LEGEND, "dim"), ""]
    busy = _busy_note(r) if r.get("command") == "bench" else None
    if busy:
        shown += [_console.line(busy, "dim"), ""]
    if _no_power(r):
        shown += [_console.line(NO_POWER_NOTE, "dim"), ""]
    return shown


def _named_blocks(text: str) -> list[Any]:
    """``methods`` and ``datasets``: each block's name in bold."""
    from rich.text import Text

    shown: list[Any] = []
    for x in text.split("\n"):
        name, sep, rest = x.partition(": ")
        shown.append(_console.line(Text.assemble((name, "bold"), sep, rest))
                     if sep and not x.startswith(" ") else _console.line(x))
    return shown


def _rich_view(result: dict[str, Any], out: Any) -> list[Any] | None:
    """What a command prints on a terminal (``out``, a rich console): its tables as rich
    tables fitted to the width, verdicts in colour, notes dim; ``None`` where the command
    prints its plain text there too (train, score, a dry run, the ledger)."""
    cmd = result.get("command")
    if cmd in ("forget", "evaluate"):
        note = [_console.line(f"note: {result['note']}", "dim")] if result.get("note") else []
        return [*map(_console.line, _head_lines(result)), *_verdict_rich(result.get("verdict")),
                *_metrics_rich(result["metrics"]), *note]
    if cmd == "compare":
        shown = [*rich_tables(result["rows"], out), "",
                 f"Total wall-clock time: {result['seconds']:.1f} s"]
        if result.get("results"):
            shown.append(f"Checkpoints and {result['results']} saved.")
        return shown
    if cmd == "bench" and not result["dry_run"]:
        return [*_tables_rich(result, out), *_bench_tail(result).split("\n")]
    if cmd == "report":
        shown = _tables_rich(result, out)
        if result.get("files"):
            shown += [f"Report of {result['db']} ({len(result['scenarios'])} scenarios):",
                      *(_console.line(f"  {f}") for f in result["files"])]
        while shown and shown[-1] == "":
            shown.pop()
        return shown
    if cmd is None and ("methods" in result or "datasets" in result):
        return _named_blocks(_text(result))
    return None


def _text(result: dict[str, Any]) -> str:
    if "_text" in result:  # a command that prints text of its own (`completion`)
        return result["_text"]
    cmd = result.get("command")
    if str(cmd).startswith("ledger "):
        from unlearnkit.ledger.cli import text

        return text(result)
    if cmd == "train":
        lines = [f"Trained {result['arch']} on {result['dataset']} in "
                 f"{_num(result['seconds'])} s; saved {result['out']}"]
        return "\n".join(lines + _metrics_text(result["metrics"]))
    if cmd in ("forget", "evaluate"):
        notes = [f"note: {result['note']}"] if result.get("note") else []
        return "\n".join(_head_lines(result) + _verdict_text(result.get("verdict"))
                         + _metrics_text(result["metrics"]) + notes)
    if cmd == "score":
        m = result["metrics"]
        params = ", ".join(f"{k}={v}" for k, v in (result["params"] or {}).items())
        lines = [
            f"{result['method']}{f' ({params})' if params else ''} on {result['dataset']}, "
            f"{result['split']['label']} ({result['split'].get('n_forget')} samples), "
            f"pools of {result['n_models']} models",
            f"  competition_score   {_num(m['competition_score'])}  = F x RA ratio x TA ratio",
            f"  forgetting_quality  {_num(m['forgetting_quality'])}",
            f"  retain_acc_ratio    {_num(m['retain_acc_ratio'])}  ({_num(m['retain_acc'])} "
            f"vs retrained {_num(m['retrained_retain_acc'])})",
            f"  test_acc_ratio      {_num(m['test_acc_ratio'])}  ({_num(m['test_acc'])} "
            f"vs retrained {_num(m['retrained_test_acc'])})",
            f"  mia_lira            {_num(m['mia_lira'])}  (0.5 = indistinguishable)",
            f"  seconds (median)    {_num(m['seconds'])}  (retraining: "
            f"{_num(m['retrain_seconds'])})",
        ]
        return "\n".join(lines)
    if cmd == "compare":
        text = format_table(result["rows"])
        text += f"\n\nTotal wall-clock time: {result['seconds']:.1f} s"
        if result.get("results"):
            text += f"\nCheckpoints and {result['results']} saved."
        return text
    if cmd == "bench":
        return _bench_text(result)
    if cmd == "report":
        lines = _tables_plain(result)
        if result.get("files"):
            lines += [f"Report of {result['db']} ({len(result['scenarios'])} scenarios):",
                      *(f"  {f}" for f in result["files"])]
        return "\n".join(lines).rstrip("\n")
    if "methods" in result:
        return "\n\n".join(_method_text(d) for d in result["methods"])
    if "datasets" in result:
        return "\n\n".join(_dataset_text(d) for d in result["datasets"])
    return json.dumps(jsonable(result), indent=2)


def _bench_text(r: dict[str, Any]) -> str:
    if r["dry_run"]:
        lines = [f"{r['config']}: {r['total']} runs; {r['to_run']} to run, {r['done']} already "
                 f"in {r['db']}, {r['skip']} skipped (method refuses the scenario)"]
        for o in r["originals"]:
            lines.append(f"  original seed {o['seed']}: "
                         f"{'cached (reused)' if o['cached'] else 'to train'}")
        for ref in r["references"]:
            lines.append(f"  reference {ref['scenario']}, seed {ref['seed']}: "
                         f"{'cached (reused)' if ref['cached'] else 'to train'}")
        for run in r["runs"]:
            params = ", ".join(f"{k}={v}" for k, v in run["params"].items())
            lines.append(f"  {run['run_id']}  {run['state']:<6}  {run['scenario']} / "
                         f"{run['method']} ({params}) seed {run['seed']}")
        return "\n".join(lines)
    return "\n".join(_tables_plain(r)) + _bench_tail(r)


def _tables_plain(r: dict[str, Any]) -> list[str]:
    """The bench tables of ``bench`` and ``report --print`` as plain text, with their notes
    (:func:`_tables_rich` for a terminal)."""
    lines: list[str] = []
    width = _table_width()
    for t in r.get("tables", ()):
        lines += [*_summary_grid(t, width), ""]
    if r.get("tables"):
        lines += [TABLE_LEGEND, ""]
    busy = _busy_note(r) if r.get("command") == "bench" else None
    if busy:
        lines += [busy, ""]
    if _no_power(r):
        lines += [NO_POWER_NOTE, ""]
    return lines


def _busy_note(r: dict[str, Any]) -> str | None:
    share = r.get("cpu_share")
    if share is None or share >= BUSY_SHARE:
        return None
    return (f"note: the timed calls had {share:.0%} of a CPU core (median): the machine "
            "was busy, so the wall-clock seconds and speed-ups are noisy; each row's "
            "timing also holds cpu_seconds and cpu_speedup (see benchmarks/README.md, "
            "'How times are measured').")


def _no_power(r: dict[str, Any]) -> bool:
    """Whether a bench table shows an uninformative MIA figure (marked ``?``)."""
    return any(set(t.get("uninformative") or ()) & set(BENCH_COLUMNS)
               for t in r.get("tables", ()))


def _bench_tail(r: dict[str, Any]) -> str:
    return (f"{r['config']}: {r['total']} runs: {r['ok']} done, {r['reused']} skipped (already "
            f"in the store), {r['skipped']} refused by their method, "
            + (f"{r['over_budget']} calibrated without a trial in their budget, "
               if r.get("over_budget") else "")
            + f"{r['failed']} failed; "
            f"{r['seconds']:.1f} s\nResults: {r['db']} (logs: {r['logs']})"
            + (f"\nReport: {r['report']}" if r.get("report") else ""))


#: The columns of the tables `unlearnkit bench` prints (the report has every metric).
BENCH_COLUMNS = ("retain_acc", "forget_acc", "test_acc", "forget_acc_gap", "mia_entropy",
                 "js_divergence", "seconds", "speedup", "verdict")

#: Below this median share of a CPU core per timed call, `unlearnkit bench` says the machine
#: was busy.
BUSY_SHARE = 0.8


#: The mark of each bench column's direction in the tables' headers.
_DIRECTION = {"max": "↑", "min": "↓", "closest": "≈"}

#: The note under a table with an uninformative MIA figure (marked ``?``).
NO_POWER_NOTE = ("? = uninformative MIA figure: its attack has no power on that model (the "
                 "report says why); not a forgetting signal")

#: The legend printed under the bench tables.
TABLE_LEGEND = ("n = seeds averaged (mean±std over them); ↑ higher is better, ↓ lower is "
                "better, ≈ closest to the retrained model is better")


def _table_width() -> int | None:
    """The terminal's width when the output is a terminal (or COLUMNS is set); ``None``
    (no limit) when it goes to a file or a pipe, which read one block per table."""
    if os.environ.get("COLUMNS") or sys.stdout.isatty():
        return shutil.get_terminal_size((100, 24)).columns
    return None


def _summary_cells(t: dict[str, Any]) -> dict[str, Any]:
    """What a scenario's bench table shows, as text: its columns, each header marked with
    its direction, each row's label, seed count and cells (mean ± std over seeds)."""
    from unlearnkit.report.summary import BEST_RULES

    cols = [c for c in BENCH_COLUMNS if c in t["metrics"]
            or (c == "verdict" and any(r.get("verdict") for r in t["rows"]))]

    no_power = {m: set(i) for m, i in (t.get("uninformative") or {}).items()}

    def cell(i: int, row: dict[str, Any], c: str) -> str:
        if c == "verdict":
            return row.get("verdict") or "-"
        if c not in row["mean"]:
            return "-"
        std = row["std"].get(c)
        return (f"{row['mean'][c]:.3f}" + ("" if std is None else f"±{std:.3f}")
                + ("?" if i in no_power.get(c, ()) else ""))

    def head(c: str) -> str:
        mark = _DIRECTION.get(BEST_RULES.get(c, ""), "")
        return f"{c}{mark}"

    return {"title": f"Scenario: {t['scenario']} ({t['dataset']}, {t['arch']})",
            "cols": cols, "heads": {c: head(c) for c in cols}, "no_power": no_power,
            "labels": [row.get("label") or row["method"] for row in t["rows"]],
            "ns": [str(row["n"]) for row in t["rows"]],
            "body": {c: [cell(i, row, c) for i, row in enumerate(t["rows"])] for c in cols}}


def _summary_grid(t: dict[str, Any], width: int | None = None) -> list[str]:
    """One scenario of a benchmark as plain text: mean (± std over seeds) per column, each
    header marked with its direction; wider than ``width`` (the terminal's), the columns are
    split into blocks, the key ones first, each block starting with the method."""
    g = _summary_cells(t)
    cols, labels, ns, body = g["cols"], g["labels"], g["ns"], g["body"]
    heads = g["heads"]
    wid = {c: max(len(heads[c]), *(len(x) for x in body[c])) for c in cols}
    lead = [max(len("method"), *(len(x) for x in labels)), max(1, *(len(x) for x in ns))]
    blocks: list[list[str]] = []
    for c in sorted(cols, key=_KEY_ORDER.index) if width else cols:
        used = sum(lead) + 2 + sum(wid[x] + 2 for x in blocks[-1]) if blocks else None
        if not blocks or (width is not None and used + wid[c] + 2 > width):
            blocks.append([])
        blocks[-1].append(c)
    if width:  # each block in the table's own column order
        blocks = [[c for c in cols if c in b] for b in blocks]
    out = [g["title"]]
    for k, block in enumerate(blocks or [[]]):
        widths = [*lead, *(wid[c] for c in block)]
        fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}"
                        for i, w in enumerate(widths))
        if k:
            out.append("")
        out += [fmt.format("method", "n", *(heads[c] for c in block)),
                "  ".join("-" * w for w in widths),
                *(fmt.format(labels[i], ns[i], *(body[c][i] for c in block))
                  for i in range(len(labels)))]
    return out


def _summary_rich(t: dict[str, Any], out: Any) -> list[Any]:
    """:func:`_summary_grid` for a terminal, with rich: the same columns and blocks (as many
    as the terminal's width needs, the key columns first), each best value in bold (as the
    report marks it), uninformative MIA figures dim, the verdicts in their colours."""
    g = _summary_cells(t)
    cols, labels, ns, body = g["cols"], g["labels"], g["ns"], g["body"]
    best = {c: set(i) for c, i in (t.get("best") or {}).items()}

    def styled(c: str, i: int) -> Any:
        if c == "verdict":
            return _console.verdict(body[c][i])
        return _console.cell(body[c][i], bold=i in best.get(c, ()),
                             dim=i in g["no_power"].get(c, ()))

    rows = [[labels[i], ns[i], *(styled(c, i) for c in cols)] for i in range(len(labels))]
    header = ["method", "n", *(g["heads"][c] for c in cols)]
    order = [2 + cols.index(c) for c in sorted(cols, key=_KEY_ORDER.index)]
    justify = ["left", "right", *("left" if c == "verdict" else "right" for c in cols)]
    tables = _console.blocks(out, header, rows, lead=2, order=order, justify=justify)
    shown: list[Any] = [_console.cell(g["title"], bold=True)]
    for k, table in enumerate(tables):
        shown += [*([""] if k else []), table]
    return shown


#: The bench columns by importance: what a narrow terminal shows in its first block.
_KEY_ORDER = ("forget_acc_gap", "verdict", "seconds", "speedup", "forget_acc", "test_acc",
              "retain_acc", "js_divergence", "mia_entropy")


def _method_text(d: dict[str, Any]) -> str:
    needs = [w for w, f in (("forget", d["needs_forget"]), ("retain", d["needs_retain"])) if f]
    scen = ", ".join(d["scenarios"])
    if d["other_scenarios"] == "warn":
        scen += " (others run with a warning)"
    lines = [f"{d['name']}: {d['summary']}",
             f"  needs: {', '.join(needs) or 'nothing'} set; scenarios: {scen}",
             f"  paper: {d['paper']}"]
    if d.get("needs_float_inputs"):
        lines.insert(2, f"  inputs: float tensors only (it {d['needs_float_inputs']})")
    for h in d["hyperparameters"]:
        extra = f", one of {list(h['choices'])}" if h.get("choices") else ""
        default = h["default"]
        if h.get("per_scenario"):  # the scenario decides: show both values
            default = "/".join(f"{v}" for v in h["per_scenario"].values())
            extra += ", by scenario: " + ", ".join(f"{k} {v}" for k, v in h["per_scenario"].items())
        search = h.get("search")
        if search:  # where calibration looks
            extra += (f", calibrated over {list(search['choices'])}" if search["choices"]
                      else f", calibrated over [{search['low']:g}, {search['high']:g}]"
                      + (" log" if search["log"] else ""))
        lines.append(f"  --param {h['name']}={default}  ({h['type']}{extra}) {h['help']}")
    return "\n".join(lines)


def _dataset_text(d: dict[str, Any]) -> str:
    # a dataset read from the user's files knows its classes and shape once it is read
    shape = ("x".join(str(s) for s in d["input_shape"]) if d["input_shape"]
             else "the images' own (image_size=N: 3xNxN, 1xNxN with grayscale)")
    classes = d["num_classes"] if d["num_classes"] is not None else "one per folder"
    lines = [f"{d['name']}: {d['description']}",
             f"  classes: {classes}; input shape: {shape}; "
             f"needs --data-root: {'yes' if d['needs_data_root'] else 'no'}"]
    if d["options"]:
        lines.append(f"  options (--data-option k=v): {', '.join(d['options'])}")
    return "\n".join(lines)


# ---------------------------------------------------------------------- the parser
class _Parser(argparse.ArgumentParser):
    """argparse, but its usage errors are one ``unlearnkit: error:`` line too (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{_console.error_prefix()} {message} (see '{self.prog} --help')\n")


def _add_data(p: argparse.ArgumentParser, *, required: bool) -> None:
    names = ", ".join(DATASETS.names())
    p.add_argument("--data", required=required, metavar="NAME",
                   help=f"dataset ({names})" + ("" if required else
                                                "; default: the checkpoint's dataset"))
    p.add_argument("--data-root", metavar="DIR", help="folder holding the dataset's files")
    p.add_argument("--download", action="store_true", help="fetch missing dataset files")
    p.add_argument("--data-option", action="append", metavar="K=V",
                   help="a loader option (see `unlearnkit datasets`), repeatable")


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="cnn", metavar="ARCH", help="architecture (default: cnn)")
    p.add_argument("--model-arg", action="append", metavar="K=V",
                   help="architecture argument, e.g. channels=8,16; repeatable")
    g = p.add_argument_group("training recipe (default: the architecture's recipe)")
    g.add_argument("--epochs", type=int, metavar="N", help="training epochs")
    g.add_argument("--lr", type=float, metavar="X", help="learning rate")
    g.add_argument("--optimizer", choices=("sgd", "adam", "adamw"))
    g.add_argument("--batch-size", type=int, metavar="B")
    g.add_argument("--weight-decay", type=float, metavar="W")
    g.add_argument("--momentum", type=float, metavar="M", help="SGD momentum")
    g.add_argument("--schedule", choices=("constant", "cosine", "step"),
                   help="learning-rate schedule")


def _add_split(p: argparse.ArgumentParser, *, required: bool) -> None:
    g = p.add_argument_group("what to forget")
    ex = g.add_mutually_exclusive_group(required=required)
    ex.add_argument("--forget-class", action="append", metavar="CLASS",
                    help="a class number or name; repeat to forget several classes")
    ex.add_argument("--forget-fraction", type=float, metavar="F",
                    help="a random fraction of the training set, in (0, 1)")
    ex.add_argument("--forget-count", type=int, metavar="N",
                    help="N random training samples")
    ex.add_argument("--forget-indices", metavar="FILE",
                    help="training-set indices (text, .json or .npy)")
    g.add_argument("--split-seed", type=_int_in(0, _MAX_SEED), default=0, metavar="S",
                   help="seed of a random split (default: 0)")


def _add_common(p: argparse.ArgumentParser, *, seed: bool = True, device: bool = True) -> None:
    if seed:
        p.add_argument("--seed", type=_int_in(0, _MAX_SEED), default=0, metavar="S",
                       help="random seed (default: 0)")
    if device:
        p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: the best available)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    talk = p.add_mutually_exclusive_group()
    talk.add_argument("-q", "--quiet", action="store_true",
                      help="no progress on stderr (errors and warnings only)")
    talk.add_argument("-v", "--verbose", action="store_true",
                      help="progress as lines, one per step (no bars)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Make a trained PyTorch classifier forget part of its training data, and "
                    "measure how close it comes to retraining from scratch.",
        epilog="example: unlearnkit compare --data digits --methods retrain,finetune,ssd "
               "(each command's --help ends with its own example)",
    )
    from unlearnkit import PROG_VERSION

    parser.add_argument("--version", action="version", version=PROG_VERSION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)

    p = sub.add_parser("train", help="train the original model on a dataset",
                       epilog="example: unlearnkit train --data digits --model cnn "
                              "--out original.safetensors")
    _add_data(p, required=True)
    _add_model(p)
    p.add_argument("--out", required=True, metavar="FILE", help="checkpoint to write")
    _add_common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("forget", help="make a trained model forget part of its data",
                       epilog="example: unlearnkit forget --checkpoint original.safetensors "
                              "--forget-class 3 --method ssd --out forgot.safetensors")
    p.add_argument("--checkpoint", required=True, metavar="FILE", help="the original model")
    _add_data(p, required=False)
    _add_split(p, required=True)
    p.add_argument("--method", required=True,
                   help=f"{', '.join(METHODS.names())} (see `unlearnkit methods`)")
    p.add_argument("--param", action="append", metavar="K=V",
                   help="a hyper-parameter of the method, e.g. alpha=10; repeatable")
    p.add_argument("--out", required=True, metavar="FILE", help="checkpoint to write")
    p.add_argument("--retrained", metavar="FILE",
                   help="the retrained reference: adds speedup, js_divergence, "
                        "activation_distance, avg_gap, anamnesis (its recorded seconds come "
                        "from another process: the speedup is indicative)")
    p.add_argument("--time-retrain", action="store_true",
                   help="also retrain here, right after the method and under the same "
                        "conditions, and use that time for retrain_seconds and speedup "
                        "(without --retrained, the model retrained here is the reference)")
    p.add_argument("--no-relearn", action="store_true", help="skip anamnesis (relearning)")
    c = p.add_argument_group(
        "calibration", "search the method's hyper-parameters for this model and request "
        "(Optuna TPE), judged by the oracle-free verdict alone; the search's history is "
        "written beside --out, e.g. out.calibration.json for out.safetensors")
    c.add_argument("--calibrate", action="store_true",
                   help="calibrate before forgetting (--param values stay fixed)")
    c.add_argument("--budget", type=float, default=None, metavar="F",
                   help="the wall-clock budget as a share of the estimated retraining cost "
                        "(the original's training seconds x |D_r|/|D|; default 0.2)")
    c.add_argument("--budget-seconds", type=float, default=None, metavar="S",
                   help="the budget in seconds (for a model that records no training time)")
    c.add_argument("--max-trials", type=int, default=None, metavar="N",
                   help="stop after N trials")
    c.add_argument("--warm-start", default=None, metavar="FILE",
                   help="an earlier search's history (the .calibration.json of a forget "
                        "--calibrate of the same method): its best trials are tried first")
    _add_common(p)
    p.set_defaults(func=cmd_forget)

    p = sub.add_parser("evaluate", help="measure a model against a forget request",
                       epilog="example: unlearnkit evaluate --checkpoint forgot.safetensors "
                              "--original original.safetensors")
    p.add_argument("--checkpoint", required=True, metavar="FILE", help="the model to evaluate")
    _add_data(p, required=False)
    _add_split(p, required=False)
    p.add_argument("--retrained", metavar="FILE",
                   help="the retrained reference: adds speedup, js_divergence, "
                        "activation_distance, avg_gap")
    p.add_argument("--original", metavar="FILE",
                   help="the model before unlearning: adds anamnesis (with --retrained)")
    p.add_argument("--n-models", type=_int_in(0, MAX_COUNT), default=0, metavar="N",
                   help="with --original: build or reuse pools of N unlearned (the "
                        "checkpoint's method) and N retrained models; adds mia_lira, "
                        "forgetting_quality, competition_score")
    p.add_argument("--no-relearn", action="store_true", help="skip anamnesis (relearning)")
    _add_common(p, seed=False)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "score",
        help="the NeurIPS 2023 competition score of a method, from pools of models",
        description="Build (or reuse from the cache) N retrained models and N unlearned ones "
                    "(the method applied to one original with N seeds) and print the "
                    "competition's forgetting quality F, its score F x RA ratio x TA ratio, "
                    "and mia_lira.",
        epilog="example: unlearnkit score --data digits --forget-class 3 --method ssd "
               "--n-models 8",
    )
    _add_data(p, required=False)
    _add_model(p)
    p.add_argument("--checkpoint", metavar="FILE",
                   help="the original model (default: train one, cached for later calls)")
    _add_split(p, required=True)
    p.add_argument("--method", required=True,
                   help=f"{', '.join(METHODS.names())}; or no unlearning: 'original' (the one "
                        "original, N times: the competition's reading) or 'original-seeds' (N "
                        "originals trained with N seeds)")
    p.add_argument("--param", action="append", metavar="K=V",
                   help="a hyper-parameter of the method; repeatable")
    p.add_argument("--n-models", type=_int_in(0, MAX_COUNT), default=32, metavar="N",
                   help="models per pool (default: 32; the competition used 512)")
    p.add_argument("--no-cache", action="store_true",
                   help="train every pool model afresh and store nothing")
    _add_common(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("methods", help="list the unlearning methods and their hyper-parameters",
                       epilog="example: unlearnkit methods ssd finetune")
    p.add_argument("names", nargs="*", metavar="METHOD",
                   help="only these methods (default: every registered one)")
    _add_common(p, seed=False, device=False)
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("datasets", help="list the datasets",
                       epilog="example: unlearnkit datasets --json")
    _add_common(p, seed=False, device=False)
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser(
        "compare",
        help="compare every method against retraining (the main job)",
        epilog="example: unlearnkit compare --data digits --forget-indices erase.txt "
               "--methods retrain,finetune,ssd",
        description="Train the original once (or load --checkpoint); for each forget request "
                    "(default: class 3, and a random 10 percent of the training set) retrain the "
                    "reference, run every method and print how close each comes to it.",
    )
    _add_data(p, required=False)
    _add_model(p)
    p.add_argument("--checkpoint", metavar="FILE", help="start from this original model")
    g = p.add_argument_group("forget requests (default: --forget-class 3 --forget-fraction 0.1)")
    g.add_argument("--forget-class", action="append", metavar="CLASS",
                   help="a class to forget; repeated classes are forgotten together")
    g.add_argument("--forget-fraction", action="append", type=float, metavar="F",
                   help="a random fraction to forget; each is its own request")
    g.add_argument("--forget-count", action="append", type=int, metavar="N",
                   help="N random samples to forget; each is its own request")
    g.add_argument("--forget-indices", action="append", metavar="FILE",
                   help="training-set indices to forget (text, .json or .npy), e.g. one "
                        "user's samples; each file is its own request")
    g.add_argument("--split-seed", type=_int_in(0, _MAX_SEED), default=0, metavar="S",
                   help="seed of random requests (default: 0)")
    p.add_argument("--methods", default="all", metavar="all|M1,M2",
                   help="methods to compare (default: all registered)")
    p.add_argument("--param", action="append", metavar="METHOD.K=V",
                   help="a method's hyper-parameter, e.g. ssd.alpha=5; repeatable")
    p.add_argument("--out-dir", metavar="DIR",
                   help="save every checkpoint and results.json here")
    p.add_argument("--n-models", type=_int_in(0, MAX_COUNT), default=0, metavar="N",
                   help="also the competition's F and score and mia_lira, from pools of N "
                        "models per method (cached; default: 0, none)")
    p.add_argument("--no-relearn", action="store_true", help="skip anamnesis (relearning)")
    _add_common(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "bench",
        help="run a benchmark (methods x hyper-parameters x scenarios x seeds) into SQLite",
        epilog="example: unlearnkit bench --preset quick --out runs/demo/results.sqlite "
               "--report runs/demo/report",
        description="Expand a YAML config (or a preset) into runs, train or reuse the cached "
                    "originals and references, run every pending run (in parallel) and store "
                    "one row per run in SQLite. Rerunning skips finished runs.",
    )
    p.add_argument("config", nargs="?", metavar="CONFIG.yaml", help="the benchmark config")
    p.add_argument("--preset", metavar="NAME",
                   help="a built-in config: quick, compare, founding-report")
    p.add_argument("--out", default="results.sqlite", metavar="FILE",
                   help="the SQLite results file (default: results.sqlite)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="processes (default: the CPU count; 1 = in this process)")
    p.add_argument("--dry-run", action="store_true",
                   help="list the runs and the cached models, train nothing")
    p.add_argument("--executor", choices=("process", "ray"), default="process",
                   help="where runs execute: a local process pool (default) or Ray "
                        "(pip install 'unlearnkit[ray]')")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="the Ray cluster to join (default: $RAY_ADDRESS, else a local one)")
    p.add_argument("--report", metavar="DIR",
                   help="then write the report (as `unlearnkit report`) to DIR")
    p.add_argument("--max-runs", type=int, metavar="N",
                   help="refuse a plan of more than N runs (default: the config's max_runs, "
                        "else 10000)")
    _add_common(p, seed=False)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "report",
        help="summarise a benchmark's results as Markdown and one self-contained HTML page",
        description="Read RESULTS.sqlite (from `unlearnkit bench`) and write report.md, "
                    "one self-contained report.html (plots embedded) and every plot as a PNG "
                    "to DIR: at a glance, per scenario the leaderboard (distance to the "
                    "retrained model), the Pareto figure of that distance against seconds, "
                    "the summary table, then folded figures. --print shows the tables at once.",
        epilog="example: unlearnkit report runs/demo/results.sqlite --print",
    )
    p.add_argument("results", metavar="RESULTS.sqlite", help="the benchmark's results")
    p.add_argument("--out", metavar="DIR", help="folder to write the report to")
    p.add_argument("--print", action="store_true",
                   help="print each scenario's table (as bench does), at once")
    p.add_argument("--scenario", action="append", metavar="LABEL",
                   help="report only this scenario, e.g. 'class 3' (repeatable)")
    p.add_argument("--methods", metavar="A,B",
                   help="report only these methods (retrain and original are always kept)")
    _add_common(p, seed=False, device=False)
    p.set_defaults(func=cmd_report)

    from unlearnkit.ledger.cli import add_ledger_parser

    add_ledger_parser(sub)  # `unlearnkit ledger init|request add|apply|status|audit|export`

    from unlearnkit._completion import SHELLS

    p = sub.add_parser(
        "completion", help="print the shell completion script (bash, zsh, tcsh)",
        description="Print a completion script for SHELL: commands, options, method, dataset, "
                    "architecture and preset names, files. It is static (Tab imports nothing): "
                    "write it again after an upgrade.",
        epilog="example (bash): unlearnkit completion bash > ~/.local/share/bash-completion/"
               "completions/unlearnkit")
    p.add_argument("shell", choices=SHELLS, help="the shell")
    p.set_defaults(func=cmd_completion, json=False)
    return parser


def cmd_completion(args: argparse.Namespace) -> dict[str, Any]:
    from unlearnkit._completion import script

    return {"shell": args.shell, "_text": script(build_parser(), args.shell).rstrip("\n")}


# ---------------------------------------------------------------------- entry point
def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"{_console.error_prefix('warning')} {message}", file=sys.stderr)


def _run(func: Callable[[argparse.Namespace], dict[str, Any]], args: argparse.Namespace) -> int:
    result = func(args)
    write = result.pop(_WRITE, None)
    code = result.pop("_exit", 0)  # `ledger audit`: 1 when it finds a problem
    out = getattr(args, "out", None)
    replaces = write is not None and out is not None and Path(out).exists()
    if write is not None:
        result["replaced"] = replaces  # whether --out named an existing file
    shown = {k: v for k, v in result.items() if not k.startswith("_")}  # "_": text output only
    if args.json:
        text = json.dumps(jsonable(shown), allow_nan=False)
    else:  # rich tables and colour on a terminal, else the plain text
        out = _console.stdout_console()
        view = _rich_view(result, out) if out is not None else None
        text = _console.render(out, view) if view is not None else _text(result)
    if write is not None:  # the output file replaces the old one last, in one step
        write()
        if replaces:
            print(f"{PROG}: note: {str(out)!r} existed; it was replaced", file=sys.stderr)
    print(text)
    return code


def _json_error(args: argparse.Namespace, kind: str, message: str) -> None:
    """With ``--json``, the error as one JSON object on stdout too (a script reading stdout
    gets ``{"error": {"type", "message"}}`` rather than nothing)."""
    if getattr(args, "json", False):
        with contextlib.suppress(OSError):
            print(json.dumps({"command": getattr(args, "command", None),
                              "error": {"type": kind, "message": message}}), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0, or 2 on a user's error)."""
    args = build_parser().parse_args(argv)
    global _VERBOSITY
    _VERBOSITY = 0 if getattr(args, "quiet", False) else 2 if getattr(args, "verbose",
                                                                       False) else 1
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return _run(args.func, args)
        except UnlearnkitError as exc:
            print(f"{_console.error_prefix()} {exc}", file=sys.stderr)
            _json_error(args, type(exc).__name__, str(exc))
            return 2
        except BrokenPipeError:  # e.g. `unlearnkit methods --json | head`: not an error
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 1
        except OSError as exc:
            where = f": {exc.filename!r}" if getattr(exc, "filename", None) else ""
            print(f"{_console.error_prefix()} {exc.strerror or exc}{where}", file=sys.stderr)
            _json_error(args, type(exc).__name__, f"{exc.strerror or exc}{where}")
            return 2
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            _json_error(args, "KeyboardInterrupt", "interrupted")
            return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
