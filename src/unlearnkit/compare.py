"""The comparison job: every method against the retrained model, scenario by scenario.

:func:`compare_methods` trains the original once (or takes one), and for each forget request
retrains the exact reference, runs every method at its defaults (or the given
hyper-parameters), evaluates each result against the reference, and returns one flat row per
(scenario, method). :func:`format_table` prints those rows as one table per scenario.

>>> import unlearnkit as uk
>>> from unlearnkit.compare import compare_methods, format_table
>>> ds = uk.load_dataset("digits")
>>> rows = compare_methods(ds, arch="mlp", arch_kwargs={"hidden": (16,)},
...                        recipe=uk.Recipe(epochs=2), methods=["retrain", "finetune"])
>>> [(r["scenario"], r["method"]) for r in rows]  # doctest: +NORMALIZE_WHITESPACE
[('class 3', 'original'), ('class 3', 'retrain'), ('class 3', 'finetune'),
 ('random 10%', 'original'), ('random 10%', 'retrain'), ('random 10%', 'finetune')]
>>> [r["forget_acc"] for r in rows if r["method"] == "retrain"][0]  # retraining never saw a 3
0.0
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import warnings as _warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unlearnkit.api import train_model, unlearn
from unlearnkit.data.containers import DataBundle
from unlearnkit.data.splits import Split, split_by_class, split_random
from unlearnkit.evaluation import evaluate
from unlearnkit.exceptions import InvalidParameterError, UnlearnkitError
from unlearnkit.methods.base import METHODS, UnlearningMethod, get_method
from unlearnkit.metrics.mia_power import (
    MIA_FIGURES,
    MIN_POWER,
    MIN_SEPARATION,
    uninformative_mias,
)
from unlearnkit.models.checkpoint import atomic_write, save_checkpoint
from unlearnkit.models.info import get_info
from unlearnkit.pools import identity_pool, retrained_pool, unlearned_pool
from unlearnkit.training import Recipe

__all__ = [
    "FORGETTING_COLUMNS",
    "POWER_COLUMNS",
    "ROW_METRICS",
    "TABLE_COLUMNS",
    "closest_to_retraining",
    "compare_methods",
    "default_scenarios",
    "format_table",
    "jsonable",
    "refusal",
    "rich_tables",
    "scenario_label",
    "write_json",
]

#: The columns of the printed tables, (row key, header), in two tables per scenario: how
#: well the model still works and what it cost, then how well it forgot. The header is the
#: metric's own name (as in the JSON, `bench` and the report), marked with its direction
#: (:data:`DIRECTION_LEGEND`).
TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("retain_acc", "retain_acc"),
    ("forget_acc", "forget_acc"),
    ("test_acc", "test_acc"),
    ("test_retain_acc", "test_retain_acc"),
    ("test_forget_acc", "test_forget_acc"),
    ("forget_acc_gap", "forget_acc_gap"),
    ("seconds", "seconds"),
    ("speedup", "speedup"),
    ("verdict", "verdict"),
)
FORGETTING_COLUMNS: tuple[tuple[str, str], ...] = (
    ("mia_loss_cv", "mia_loss_cv"),
    ("mia_entropy", "mia_entropy"),
    ("mia_confidence", "mia_confidence"),
    ("mia_lira", "mia_lira"),
    ("js_divergence", "js_divergence"),
    ("activation_distance", "activation_distance"),
    ("zrf", "zrf"),
    ("avg_gap", "avg_gap"),
    ("anamnesis", "anamnesis"),
    ("forgetting_quality", "forgetting_quality"),
    ("competition_score", "competition_score"),
)
#: The third table: each MIA's power check on each row's model (AUC, 0.5 = no power).
POWER_COLUMNS: tuple[tuple[str, str], ...] = (
    ("mia_loss_cv_power", "mia_loss_cv_power"),
    ("mia_entropy_power", "mia_entropy_power"),
    ("mia_confidence_power", "mia_confidence_power"),
)

#: The legend of a marked MIA figure in :func:`format_table`.
NO_POWER_LEGEND = (
    f"? = uninformative: the attack has no power here (power, its AUC at telling retain from "
    f"test on that model, below {MIN_POWER:.2f}; or its figure on the original minus on the "
    f"retrained model below {MIN_SEPARATION:.2f}); not a forgetting signal, not to rank on")

#: The metric keys that every row has (``None`` where they do not apply).
ROW_METRICS: tuple[str, ...] = (
    "retain_acc", "forget_acc", "test_acc", "test_retain_acc", "test_forget_acc",
    "forget_acc_gap", "seconds", "retrain_seconds", "speedup",
    "mia_loss_cv", "mia_entropy", "mia_confidence", "mia_lira", "js_divergence",
    "activation_distance", "zrf", "avg_gap", "anamnesis", "forgetting_quality",
    "competition_score", "retain_acc_ratio", "test_acc_ratio", "n_models",
    *(f"{m}_{check}" for check in ("power", "separation") for m in MIA_FIGURES),
    "uninformative_mias", "verdict",
)


# ---------------------------------------------------------------------- scenarios
def default_scenarios(data: DataBundle, *, seed: int = 0) -> list[Split]:
    """The README's two forget requests: class 3, and a random 10 % of the training set."""
    return [split_by_class(data, [3]), split_random(data, fraction=0.1, seed=seed)]


def scenario_label(split: Split, class_names: Sequence[str] | None = None) -> str:
    """A short human name for a forget request: ``class 3``, ``random 10%``,
    ``indices (146 samples)``."""
    desc = split.description or {}
    if split.scenario == "class" and split.forget_classes:
        names = [
            class_names[c] if class_names is not None and c < len(class_names) else str(c)
            for c in split.forget_classes
        ]
        return f"class{'es' if len(names) > 1 else ''} {','.join(names)}"
    if "fraction" in desc:
        return f"random {float(desc['fraction']) * 100:g}%"
    if "count" in desc:
        return f"random {desc['count']} samples"
    n = desc.get("n_forget")
    if desc.get("scenario") == "indices":
        return f"indices ({n} samples)" if n is not None else "indices"
    return f"{n} samples" if n is not None else split.scenario


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", label.replace("%", "pct")).strip("-") or "scenario"


def refusal(cls: type[UnlearningMethod], scenario: str) -> str | None:
    """Why ``cls`` refuses ``scenario``, read from its declared attributes, or ``None``."""
    if scenario in cls.scenarios or cls.other_scenarios != "refuse":
        return None
    return f"designed for {' and '.join(cls.scenarios)} unlearning only"


# ---------------------------------------------------------------------- the job
def _resolve_methods(methods: Sequence[str] | None) -> list[str]:
    names = list(METHODS.names()) if methods is None else list(dict.fromkeys(methods))
    for name in names:
        METHODS.get(name)  # unknown names are explained here
    # the reference first, then the approximate methods in registry order
    return sorted(names, key=lambda n: n != "retrain")


def _secs(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds >= 1 else f"{seconds:.2f} s"


def _row(
    scenario: str, split: Split, method: str, status: str, *,
    params: Mapping[str, Any] | None = None, metrics: Mapping[str, Any] | None = None,
    reference_forget_acc: float | None = None, reason: str | None = None,
    warnings: Sequence[str] = (), checkpoint: Path | None = None,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "scenario": scenario,
        # the request's kind: class, random, or indices (a listed request, which the methods
        # treat as random samples: split.scenario)
        "scenario_kind": ("indices" if (split.description or {}).get("scenario") == "indices"
                          else split.scenario),
        "split": dict(split.description),
        "method": method,
        "status": status,
        "params": dict(params) if params is not None else None,
    }
    # every row has every key (None where it does not apply): one schema for all rows
    metrics = {**dict.fromkeys(ROW_METRICS), **dict(metrics or {})}
    # the MIA figures whose attack has no power here (unlearnkit.metrics.mia_informative)
    if any(metrics.get(m) is not None for m in MIA_FIGURES):
        metrics["uninformative_mias"] = uninformative_mias(metrics)
    fa = metrics.get("forget_acc")
    if fa is not None and reference_forget_acc is not None:
        metrics["forget_acc_gap"] = abs(float(fa) - float(reference_forget_acc))
    row.update(metrics)
    row["reason"] = reason
    row["warnings"] = list(warnings)
    row["checkpoint"] = str(checkpoint) if checkpoint is not None else None
    return row


def compare_methods(
    data: DataBundle,
    *,
    scenarios: Sequence[Split] | None = None,
    methods: Sequence[str] | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    arch: str = "cnn",
    arch_kwargs: Mapping[str, Any] | None = None,
    recipe: Recipe | None = None,
    original: nn.Module | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    out_dir: str | os.PathLike | None = None,
    n_models: int = 0,
    relearn: bool = True,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every method on every forget request and judge each against retraining.

    Args:
        data: the dataset (``uk.load_dataset("digits")``).
        scenarios: the forget requests (default: :func:`default_scenarios`).
        methods: registered method names (default: every registered method). ``retrain`` is
            always run, as the reference; it is listed as a row when it is in ``methods``.
        params: hyper-parameters per method, e.g. ``{"ssd": {"alpha": 5.0}}``; others run at
            their defaults.
        arch, arch_kwargs, recipe: how to train the original (ignored with ``original``).
        original: an already trained model to start from, instead of training one.
        seed: seeds the original's training, the retraining and every method.
        device: where to compute (default: CUDA, then MPS, then the CPU).
        out_dir: if given, the original, every reference and every unlearned model are saved
            there as ``.safetensors``, and the rows as ``results.json`` (all written atomically).
        n_models: if > 0, also the NeurIPS 2023 competition's figures (``forgetting_quality``,
            ``competition_score``) and ``mia_lira``, from pools of ``n_models`` retrained
            models and ``n_models`` seeds of each method (:mod:`unlearnkit.pools`, cached on
            disk); the ``original`` row is judged as the competition would judge doing
            nothing: N copies of the original (F = 0, the lowest there is).
        relearn: compute ``anamnesis`` (relearning the forget set; a few seconds per row).
        progress: progress bars on stderr.
        log: called with one line per step (e.g. ``print``), to follow a long run.

    Returns:
        One dict per (scenario, method), in order: an ``original`` row (no unlearning), then
        ``retrain`` and the other methods. Each has ``scenario``, ``scenario_kind``, ``split``,
        ``method``, ``status`` (``"ok"``, ``"original"``, ``"skipped"`` or ``"failed"``),
        ``params``, ``reason``, ``warnings``, ``checkpoint`` and the metrics
        (:data:`ROW_METRICS`, ``None`` where they do not apply) of :func:`unlearnkit.evaluate`
        (accuracies, ``seconds``, ``retrain_seconds``, ``speedup``, the MIAs with their
        power checks ``<attack>_power`` and ``<attack>_separation`` and the list
        ``uninformative_mias`` of those that cannot tell membership, the divergences to the
        reference, ``zrf``, ``avg_gap``, ``anamnesis``, and with
        ``n_models`` the pool figures) plus ``forget_acc_gap`` = |forget_acc - the retrained
        model's forget_acc|. The ``retrain`` row is a second retraining with seed ``seed + 1``,
        judged against the reference like any method: the noise floor of every metric.
        A method that refuses a scenario (its ``scenarios`` and ``other_scenarios`` say so) is
        ``skipped``; one whose run raises an unlearnkit error is ``failed``; ``reason`` says why.
        The warnings a method raised (run outside its designed scenarios, selected nothing...)
        are kept in ``warnings``.
    """
    say = log or (lambda message: None)
    names = _resolve_methods(methods)
    params = {k: dict(v) for k, v in (params or {}).items()}
    for name in params:
        if name not in names:
            raise InvalidParameterError(
                f"Hyper-parameters were given for method {name!r}, which is not compared. "
                f"Compared methods: {', '.join(names)}."
            )
    # build every method first: a bad parameter fails before any training
    built = {name: get_method(name, **params.get(name, {})) for name in names}
    reference_method = get_method("retrain")
    out = Path(out_dir) if out_dir is not None else None

    if original is None:
        say(f"training the original {arch} on {data.name} ...")
        start = time.perf_counter()
        original = train_model(data, arch=arch, recipe=recipe, seed=seed, device=device,
                               progress=progress, **dict(arch_kwargs or {}))
        say(f"  done in {_secs(time.perf_counter() - start)}")
    if out is not None:
        save_checkpoint(original, out / "original.safetensors")

    if scenarios is None:
        scenarios = default_scenarios(data, seed=seed)
    rows: list[dict[str, Any]] = []
    for split in scenarios:
        label = scenario_label(split, data.class_names)
        folder = out / _slug(label) if out is not None else None

        def save(model: nn.Module, name: str, folder: Path | None = folder) -> Path | None:
            return save_checkpoint(model, folder / f"{name}.safetensors") if folder else None

        # every model is evaluated where it lives (a given original may sit on another device)
        say(f"[{label}] retraining the reference ...")
        reference = unlearn(original, split, reference_method, seed=seed, device=device,
                            progress=progress, verdict=False)
        save(reference, "reference")
        ref_forget = evaluate(reference, split, mia=False)["forget_acc"]
        say(f"[{label}]   done in {_secs(get_info(reference).seconds)}")  # type: ignore[union-attr]
        ref_pool = None
        if n_models:
            say(f"[{label}] pool of {n_models} retrained models ...")
            ref_pool = retrained_pool(original, split, n_models, device=device,
                                      progress=progress)

        def judge(model: nn.Module, pool: Callable[[], Any] | None,
                  split: Split = split, reference: nn.Module = reference,
                  ref_pool: Any = ref_pool) -> dict[str, Any]:
            pools = (pool(), ref_pool) if pool is not None and ref_pool is not None else None
            return evaluate(model, split, retrained=reference, original=original, pools=pools,
                            relearn=relearn, seed=seed, verdict=True)

        rows.append(_row(label, split, "original", "original",
                         metrics=judge(original, lambda split=split: identity_pool(
                             original, split, n_models, device=device)),
                         reference_forget_acc=ref_forget))
        for name in names:
            method = built[name]
            shown = method.for_scenario(split.scenario).json_params()  # the values it runs with
            cls = type(method)
            why = refusal(cls, split.scenario)
            if why is not None:
                rows.append(_row(label, split, name, "skipped", params=shown,
                                 reason=why))
                say(f"[{label}] {name}: skipped ({why})")
                continue
            say(f"[{label}] {name} ...")
            # retrain: a fresh seed, so that it is judged like a method (the noise floor)
            run_seed = seed + 1 if name == "retrain" else seed
            with _warnings.catch_warnings(record=True) as caught:
                _warnings.simplefilter("always")
                try:
                    # judged below by evaluate, verdict included
                    model = unlearn(original, split, method, seed=run_seed, device=device,
                                    progress=progress, verdict=False)
                except UnlearnkitError as exc:
                    rows.append(_row(label, split, name, "failed", params=shown,
                                     reason=str(exc)))
                    say(f"[{label}]   failed: {exc}")
                    continue
            notes = list(dict.fromkeys(str(w.message) for w in caught))
            metrics = judge(model, lambda split=split, method=method: unlearned_pool(
                original, split, method, n_models, device=device, progress=progress))
            rows.append(_row(label, split, name, "ok", params=shown, metrics=metrics,
                             reference_forget_acc=ref_forget, warnings=notes,
                             checkpoint=save(model, name)))
            say(f"[{label}]   done in {_secs(metrics['seconds'])}")
    if out is not None:
        write_json(out / "results.json", {"dataset": data.name, "seed": seed, "rows": rows})
    return rows


# ---------------------------------------------------------------------- output
def jsonable(obj: Any) -> Any:
    """``obj`` with non-finite floats as ``None``, tuples as lists, numpy/torch scalars as
    Python numbers: always valid JSON."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        try:
            return jsonable(obj.item())
        except (TypeError, ValueError):
            pass
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return str(obj)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path``, atomically."""
    text = json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n"
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _fmt(key: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, str):  # the verdict
        return value
    if key == "speedup":
        return "inf" if math.isinf(value) else f"{value:.1f}x"
    if key == "seconds":
        return f"{value:.2f}"
    return f"{value:.3f}"


def _cells(group: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]],
           *, with_skipped: bool) -> tuple[list[tuple[str, str]], list[list[str]]] | None:
    """The columns of one table (those with a value) and its rows as text: a skipped or
    failed row (``with_skipped``) is two cells, the method and why; ``None`` if no column
    has a value."""
    cols = [(k, h) for k, h in columns if any(r.get(k) is not None for r in group)]
    if not cols:
        return None
    body: list[list[str]] = []
    for r in group:
        if r["status"] in ("skipped", "failed"):
            if with_skipped:
                body.append([r["method"], f"{r['status']}: {r['reason']}"])
            continue
        flagged = r.get("uninformative_mias") or ()
        body.append([r["method"], *(_fmt(k, r.get(k)) + ("?" if k in flagged else "")
                                    for k, _ in cols)])
    return cols, body


#: The marks of the columns' directions, explained under every table.
DIRECTION_LEGEND = ("↑ higher is better, ↓ lower is better, ≈ closest to the retrained model "
                    "is better")


def _marked(key: str, header: str) -> str:
    """A column's header with its direction's mark (↑ ↓ ≈), as `bench` prints it."""
    from unlearnkit.report.summary import BEST_RULES

    return header + {"max": "↑", "min": "↓", "closest": "≈"}.get(BEST_RULES.get(key, ""), "")


def _grid(group: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]],
          *, with_skipped: bool) -> list[str] | None:
    """The lines of one table over ``columns`` (those with a value), or ``None`` if none has."""
    cells = _cells(group, columns, with_skipped=with_skipped)
    if cells is None:
        return None
    cols, body = cells
    header = ["method", *(_marked(k, h) for k, h in cols)]
    full = [x for x in [header, *body] if len(x) == len(header)]
    width = [max(len(x[i]) for x in full) for i in range(len(header))]
    width[0] = max(len(x[0]) for x in [header, *body])

    def line(cells: list[str]) -> str:
        if len(cells) != len(width):  # a skipped / failed row: one free-text cell
            return f"{cells[0]:<{width[0]}}  {cells[1]}"
        pairs = enumerate(zip(cells, width, strict=True))
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs)

    return [line(header), line(["-" * w for w in width]), *(line(b) for b in body)]


#: On a terminal too narrow for a whole table, the columns its first block shows first.
_KEY_FIRST = ("forget_acc_gap", "verdict", "seconds", "speedup", "forget_acc", "test_acc",
              "retain_acc", "avg_gap", "competition_score", "forgetting_quality", "mia_lira",
              "js_divergence")


def _rich_grid(group: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]],
               out: Any, *, with_skipped: bool) -> list[Any]:
    """:func:`_grid` as rich tables fitted to ``out``'s width (split into blocks, each
    starting with the method, where the terminal is too narrow), the verdicts in their
    colours, uninformative MIA figures dim; a skipped or failed row says so in its verdict
    cell (else the first block's first column), and why under the table."""
    from unlearnkit import _console

    cells = _cells(group, columns, with_skipped=with_skipped)
    if cells is None:
        return []
    cols, body = cells
    header = ["method", *(_marked(k, h) for k, h in cols)]
    keys = [k for k, _ in cols]
    order = [1 + keys.index(k) for k in sorted(
        keys, key=lambda k: _KEY_FIRST.index(k) if k in _KEY_FIRST else len(_KEY_FIRST))]
    where = 1 + keys.index("verdict") if "verdict" in keys else order[0]
    rows: list[list[Any]] = []
    why: list[Any] = []
    for b in body:
        if len(b) != len(header):  # skipped / failed: the status in a cell, why below
            status = b[1].partition(":")[0]
            row: list[Any] = [b[0], *([""] * len(keys))]
            row[where] = _console.cell(status, dim=status == "skipped",
                                       style="red" if status == "failed" else "")
            rows.append(row)
            why.append(_console.line(f"  {b[0]} {b[1]}", "dim"))
            continue
        rows.append([b[0], *(_console.verdict(x) if k == "verdict"
                             else _console.cell(x, dim=x.endswith("?"))
                             for k, x in zip(keys, b[1:], strict=True))])
    justify = ["left", *("left" if k == "verdict" else "right" for k in keys)]
    tables = _console.blocks(out, header, rows, order=order, justify=justify)
    shown: list[Any] = []
    for i, table in enumerate(tables):
        shown += [*([""] if i else []), table]
    return shown + why


def closest_to_retraining(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The approximate methods' rows, closest to the retrained reference first: by ``avg_gap``
    (SalUn's mean gap over forget, retain and test accuracy and ``mia_confidence``), ties by
    ``forget_acc_gap``. The ``original`` and ``retrain`` rows and rows without ``avg_gap`` are
    left out."""
    ranked = [r for r in rows if r.get("status") == "ok" and r.get("avg_gap") is not None
              and r["method"] not in ("original", "retrain")]
    return sorted(ranked, key=lambda r: (r["avg_gap"], r.get("forget_acc_gap") or 0.0))


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Plain-text tables per scenario: accuracy and cost, the forgetting metrics (those that
    were computed), and the MIAs' power checks; skipped and failed methods are listed with
    why. An MIA figure that :func:`unlearnkit.metrics.mia_informative` calls uninformative is
    marked ``?`` (legend :data:`NO_POWER_LEGEND`)."""
    groups = _by_scenario(rows)
    text = "\n\n".join("\n".join(_scenario(group, None)) for group in groups)
    return f"{text}\n\n{DIRECTION_LEGEND}" if groups else text


def rich_tables(rows: Sequence[Mapping[str, Any]], out: Any) -> list[Any]:
    """:func:`format_table` for a terminal: the same tables as rich tables, each fitted to
    the width of ``out`` (a ``rich.console.Console``), the verdicts in colour, the notes
    dim. What to print with ``out.print``, one after the other."""
    from unlearnkit import _console

    shown: list[Any] = []
    for i, group in enumerate(_by_scenario(rows)):
        shown += [*([""] if i else []), *_scenario(group, out)]
    return [*shown, "", _console.line(DIRECTION_LEGEND, "dim")] if shown else shown


def _by_scenario(rows: Sequence[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    return [[r for r in rows if r["scenario"] == label] for label in scenarios]


def _scenario(group: Sequence[Mapping[str, Any]], out: Any) -> list[Any]:
    """One scenario's tables and notes: plain lines (``out`` is ``None``), or rich renderables
    for the console ``out``."""
    if out is not None:
        from unlearnkit import _console

        def grid(columns: Sequence[tuple[str, str]], *, with_skipped: bool) -> list[Any]:
            return _rich_grid(group, columns, out, with_skipped=with_skipped)

        def note(text: str) -> Any:
            return _console.line(text, "dim")

        def head(text: str) -> Any:
            return _console.cell(text, bold=True)
    else:
        def grid(columns: Sequence[tuple[str, str]], *, with_skipped: bool) -> list[Any]:
            return _grid(group, columns, with_skipped=with_skipped) or []

        def note(text: str) -> Any:
            return text

        head = note
    first = group[0]
    label = first["scenario"]
    n = first.get("split", {}).get("n_forget")
    ref = next((r for r in group if r.get("retrain_seconds")), None)
    rs = ref.get("retrain_seconds") if ref else None
    title = f"Scenario: {label}"
    extras = []
    if n is not None:
        extras.append(f"{n} samples forgotten")
    if rs is not None:
        extras.append(f"retraining took {_secs(rs)}")
    n_models = next((r.get("n_models") for r in group if r.get("n_models")), None)
    if n_models:
        extras.append(f"pools of {n_models} models")
    if extras:
        title += f" ({'; '.join(extras)})"
    out_lines: list[Any] = [head(title), *grid(TABLE_COLUMNS, with_skipped=True)]
    forgetting = grid(FORGETTING_COLUMNS, with_skipped=False)
    if forgetting:
        out_lines += ["", *forgetting]
    power = grid(POWER_COLUMNS, with_skipped=False)
    if power:
        out_lines += ["", *power]
    seps = next(({m: r[f"{m}_separation"] for m in MIA_FIGURES
                  if r.get(f"{m}_separation") is not None}
                 for r in group if any(r.get(f"{m}_separation") is not None
                                       for m in MIA_FIGURES)), None)
    if seps:  # the same in every row: the attack on the original minus on the reference
        out_lines.append(note("separation (figure on the original - on the retrained model): "
                              + ", ".join(f"{m.removeprefix('mia_')} {v:+.3f}"
                                          for m, v in seps.items())))
    flagged = {m for r in group for m in r.get("uninformative_mias") or ()}
    if flagged & {k for k, _ in FORGETTING_COLUMNS}:
        out_lines.append(note(NO_POWER_LEGEND))
    ranking = closest_to_retraining(group)
    if ranking:
        out_lines += ["", "closest to the retrained model (avg_gap): " + ", ".join(
            f"{r['method']} {r['avg_gap']:.3f}" for r in ranking[:5])]
        if any("mia_confidence" in (r.get("uninformative_mias") or ()) for r in ranking):
            out_lines.append(note("  (avg_gap averages in mia_confidence, uninformative in "
                                  "some rows: read the accuracy gaps)"))
    out_lines += [note(f"  note: {r['method']}: {w}")
                  for r in group for w in r.get("warnings") or ()]
    return out_lines
