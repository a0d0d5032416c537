"""Executing a plan: originals, references and runs, all tasks of one pool.

Every model a run needs is a task too (:func:`prepare`): the original of each seed, the
retrained reference of each (scenario, seed), and the retrained pool of the competition's
score. They are scheduled by dependency in the same pool as the runs (a reference starts once
its original exists, a run once its original and reference do), under the same conditions:
in this process with one torch thread when ``workers=1`` (the caller's thread count is
restored afterwards), else in a local process pool (spawned processes, one torch thread each),
on the same device. A model already in the on-disk cache is loaded, not trained. The parent
checks the data and the splits, then opens the store (so that a plan refused this early leaves
no file). Workers return rows; the parent alone writes them to the store, one transaction per
row, as they finish. Each run logs to ``<db>.logs/<run_id>.log``.

Times are measured like for like (``benchmarks/README.md``, "How times are measured"): each
timed call is warmed up first, paused around the curves' evaluations, cold unless the config
says ``timing: warm``, and repeated when it is shorter than :data:`REPEAT_BELOW`. Each row's
``speedup`` is computed against the plan's ``retrain`` run of the same scenario and seed once
it is stored (rows stored before it are amended), else against the reference's training;
its ``retrain_seconds_source`` says which (:data:`unlearnkit.bench.store.RETRAIN_SOURCES`).

Before running a run the parent claims it in the store (a lease, see
:mod:`unlearnkit.bench.store`), as many at a time as it has workers; so benchmarks started on
one store at once share its runs, and each run is executed once. A benchmark whose remaining
runs are all held by others waits for them (their rows, or their leases' death) before it
returns. A benchmark that fails before it stores any row deletes the store it created. The Ray
executor still prepares in the parent, the simple way (:mod:`unlearnkit.bench.ray_executor`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import nullcontext
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from unlearnkit.api import unlearn
from unlearnkit.bench.artefacts import curve_watcher, model_artefacts
from unlearnkit.bench.config import Scenario
from unlearnkit.bench.plan import ORIGINAL, Plan, Run
from unlearnkit.bench.store import FINISHED, ResultStore, read_rows, read_states, read_trials
from unlearnkit.compare import jsonable
from unlearnkit.data.containers import DataBundle
from unlearnkit.data.registry import load_dataset
from unlearnkit.data.splits import Split, split_by_class, split_indices, split_random
from unlearnkit.evaluation import EvaluationCache, evaluate
from unlearnkit.exceptions import DataError, InvalidParameterError, UnlearnkitError
from unlearnkit.importance.cache import cache_use
from unlearnkit.methods.base import get_method
from unlearnkit.metrics.accuracy import speedup
from unlearnkit.models.checkpoint import load_checkpoint, save_checkpoint
from unlearnkit.models.info import get_info, set_info
from unlearnkit.pools import (
    cached_original,
    cached_reference,
    original_cache_path,
    reference_cache_path,
    retrained_pool,
    unlearned_pool,
)
from unlearnkit.training import (
    Recipe,
    accuracy,
    resolve_device,
    warm_up,
    watch_epochs,
    watcher_seconds,
)

__all__ = ["EXECUTORS", "POLL_SECONDS", "describe", "execute", "log_dir", "prepare", "run_plan"]

#: Where runs execute: a local process pool, or Ray.
EXECUTORS = ("process", "ray")

#: How often (seconds) a benchmark whose remaining runs are held by others looks again.
POLL_SECONDS = 1.0


def log_dir(db: str | os.PathLike) -> Path:
    """Where the per-run logs of the results database ``db`` go: ``<db>.logs/``."""
    return Path(f"{os.fspath(db)}.logs")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


_DATA: dict[str, DataBundle] = {}


def _data(name: str, options: dict[str, Any]) -> DataBundle:
    """The config's dataset: its loader options, and the config's own keys (stored with a
    leading underscore): ``root`` and the per-class subset."""
    key = repr((name, sorted(options.items())))
    if key not in _DATA:
        opts = {k: v for k, v in options.items() if not k.startswith("_")}
        try:
            data = load_dataset(name, root=options.get("_root"), **opts)
        except (TypeError, ValueError) as exc:  # an option the loader does not check itself
            if isinstance(exc, UnlearnkitError):
                raise
            lines = [x for x in str(exc).splitlines() if x.strip()]
            raise InvalidParameterError(
                f"Cannot load dataset {name!r} with options {opts}: "
                f"{lines[0] if lines else type(exc).__name__}") from None
        if options.get("_train_per_class") or options.get("_test_per_class"):
            data = data.per_class(train=options.get("_train_per_class"),
                                  test=options.get("_test_per_class"))
        _DATA[key] = data
    return _DATA[key]


def _split(data: DataBundle, scenario: Scenario, seed: int) -> Split:
    if scenario.kind == "class":
        return split_by_class(data, list(scenario.classes))
    if scenario.kind == "indices":
        return split_indices(data, list(scenario.indices))
    return split_random(data, fraction=scenario.fraction, seed=seed)


def _row(run: Run, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "run_id": run.run_id, "dataset": run.dataset, "arch": run.arch,
        "scenario": run.scenario.label, "scenario_kind": run.scenario.kind,
        "method": run.method, "params": run.params, "seed": run.seed, "status": status,
        "spec": run.spec(), "metrics": {}, "warnings": [], "started": None, "finished": None,
        "error": None, **extra,
    }


# ---------------------------------------------------------------------- timing
def _conditions(process: str, device: torch.device) -> dict[str, Any]:
    """Where a time is measured: the process kind (``worker`` of the local pool, ``main`` =
    the benchmark's own process with ``workers=1``, ``ray``), torch's thread count, device."""
    return {"process": process, "threads": torch.get_num_threads(), "device": str(device)}


def _warm(model: torch.nn.Module, data: Any, device: torch.device) -> None:
    """Pay a fresh process's one-off costs outside every clock (:func:`warm_up` with the
    model): the first run of a worker is not charged for them."""
    warm_up(device, model=model, data=data)


#: A timed call shorter than this (wall-clock seconds) is repeated, and its median reported.
REPEAT_BELOW = 3.0

#: The most calls a short timed call is repeated to (the first included).
MAX_REPEATS = 5


def _timed(call: Callable[[], torch.nn.Module], *, read_cache: bool,
           watcher: Any = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Run a timed unlearning call (``call()``, which records its wall-clock ``seconds`` in the
    model's info) as the benchmark times every method and every retraining.

    The importance cache is read only with ``read_cache`` (warm timing); ``watcher`` (the
    curves) watches the first call, whose time spent watching is paused out. A call shorter
    than :data:`REPEAT_BELOW` is made again (same seed, same result, no watcher), until the
    calls add up to that long or :data:`MAX_REPEATS` were made, and the median is reported:
    a sub-second time is at the mercy of one scheduling hiccup. Returns the first call's model,
    its ``seconds`` replaced by the median, and ``{"repeats", "cpu_seconds" (the median of the
    process CPU time of each call, watchers excluded), "cache_hit" (whether any read of the
    cache was served)}``.
    """
    walls: list[float] = []
    cpus: list[float] = []
    hits: list[bool] = []
    # each call in its own block: a repeat does not read what the first call stored
    with (cache_use(read=read_cache) as use,
          watch_epochs(watcher) if watcher is not None else nullcontext()):
        cpu, watched = time.process_time(), watcher_seconds(cpu=True)
        model = call()
        cpus.append(time.process_time() - cpu - (watcher_seconds(cpu=True) - watched))
    hits.append(use.hit)
    info = get_info(model)
    first = info.seconds if info is not None else None
    if first is not None:
        walls.append(first)
        while sum(walls) < REPEAT_BELOW and len(walls) < MAX_REPEATS:
            with cache_use(read=read_cache) as use:
                cpu = time.process_time()
                again = call()
                cpus.append(time.process_time() - cpu)
            hits.append(use.hit)
            walls.append(get_info(again).seconds or 0.0)  # type: ignore[union-attr]
            del again
    if info is not None and len(walls) > 1:
        set_info(model, info.replace(seconds=statistics.median(walls)))
    return model, {"repeats": len(cpus), "cpu_seconds": statistics.median(cpus),
                   "cache_hit": any(hits)}


#: The scenarios a worker keeps the references of (their split, original and retrained
#: model, and what evaluating against them computed): the runs of a scenario reuse them.
_KEEP_SCENARIOS = 2
_JUDGED: dict[tuple[Any, ...], tuple[Split, torch.nn.Module, torch.nn.Module,
                                     EvaluationCache]] = {}


def _judged_against(task: dict[str, Any], run: Run, data: DataBundle, dev: torch.device
                    ) -> tuple[Split, torch.nn.Module, torch.nn.Module, EvaluationCache]:
    """The split, the original, the retrained reference and an :class:`EvaluationCache` of a
    run's scenario, loaded once per worker and kept for the scenario's other runs: every run
    is judged against the same references, whose outputs and features are then computed once
    per worker instead of once per run (the methods never change the original: they work on
    a copy). At most :data:`_KEEP_SCENARIOS` scenarios are kept."""
    key = (run.dataset, repr(sorted(run.dataset_options.items())), run.scenario, run.seed,
           task["original"], task["reference"], str(dev))
    found = _JUDGED.pop(key, None)
    if found is None:
        found = (_split(data, run.scenario, run.seed),
                 load_checkpoint(task["original"], device=dev),
                 load_checkpoint(task["reference"], device=dev), EvaluationCache())
    _JUDGED[key] = found  # the most recent last
    while len(_JUDGED) > _KEEP_SCENARIOS:
        _JUDGED.pop(next(iter(_JUDGED)))
    return found


def _calibrated(run: Run, original: torch.nn.Module, split: Split, dev: torch.device,
                task: dict[str, Any], say: Callable[[str], None]
                ) -> tuple[Any, Any, Any, dict[str, Any]]:
    """A calibrated run's search (:func:`unlearnkit.calibrate`), timed whole: every trial's
    cost counts. Its budget is ``budget`` times the retraining of the scenario measured in the
    same pool (``task["retrain_seconds"]``, whose source ``task["retrain_source"]`` names), or
    ``budget_seconds``. Returns ``(model, calibration, trials, timing)``; ``model`` is ``None``
    when no trial finished within the budget (``calibration["note"]`` then says so)."""
    from unlearnkit.calibration import NoTrialFinished, calibrate

    limits = run.calibrate or {}
    basis, source = task.get("retrain_seconds"), task.get("retrain_source")
    if limits.get("budget_seconds") is not None:
        budget_seconds, source = float(limits["budget_seconds"]), None
    elif limits.get("budget") is not None and basis:
        budget_seconds = float(limits["budget"]) * float(basis)
    elif limits.get("budget") is not None:  # no measured retraining: the original's estimate
        budget_seconds, source = None, "estimate"
    else:
        budget_seconds, source = None, None
    summary = {"budget": limits.get("budget") if limits.get("budget_seconds") is None
               else None, "budget_seconds": budget_seconds, "budget_basis": source,
               "max_trials": limits.get("max_trials"), "defaults": dict(run.params)}
    warm, warm_from = None, None
    if limits.get("warm_start"):
        warm_from, warm = _earlier_search(limits["warm_start"], run)
        summary["warm_start"] = {"store": limits["warm_start"], "run_id": warm_from}
    say(f"calibrating {run.method}: budget {budget_seconds} s ({summary['budget']} of the "
        f"retraining's {basis} s, {source}), max_trials {limits.get('max_trials')}"
        + (f", warm-started from run {warm_from}" if warm_from else ""))
    with cache_use(read=run.timing == "warm") as use:
        cpu = time.process_time()
        try:
            found = calibrate(
                original, split, run.method, seed=run.method_seed, device=dev,
                budget=limits.get("budget") if budget_seconds is None else None,
                budget_seconds=budget_seconds, max_trials=limits.get("max_trials"),
                log=say, warm_start=warm)
        except NoTrialFinished as exc:  # the method cannot get there within the budget
            summary.update(note=str(exc), budget_seconds=exc.budget_seconds,
                           trials=len(exc.trials))
            return None, summary, [t.to_dict() for t in exc.trials], {}
        cpu = time.process_time() - cpu
    info = get_info(found.model)
    if info is not None:  # the row's seconds: the whole search
        set_info(found.model, info.replace(seconds=found.seconds))
    summary.update(budget_seconds=found.budget_seconds, trials=len(found.trials),
                   best_trial=found.best_trial, stopped_at=found.stopped_at,
                   search_seconds=found.seconds, params=found.params, space=found.space)
    trials = [t.to_dict() for t in found.trials]
    return found.model, summary, trials, {"repeats": 1, "cpu_seconds": cpu,
                                          "cache_hit": use.hit}


def _earlier_search(store: str, run: Run) -> tuple[str | None, dict[str, Any] | None]:
    """The search of ``run``'s method in an earlier results store, for its warm start: of the
    same scenario kind, the same scenario and seed preferred. ``(None, None)`` when the store
    holds none (the search starts cold)."""
    rows = [r for r in read_rows(store) if r["method"] == run.method and r.get("calibration")
            and r["scenario_kind"] == run.scenario.kind]
    if not rows:
        return None, None
    best = max(rows, key=lambda r: (r["scenario"] == run.scenario.label, r["seed"] == run.seed))
    trials = read_trials(store, [best["run_id"]]).get(best["run_id"]) or []
    return best["run_id"], {"method": run.method, "trials": trials}


# ---------------------------------------------------------------------- one run
def execute(task: dict[str, Any]) -> dict[str, Any]:
    """Run one task (a :class:`Run` and the paths of its original and reference); return its
    row. Never raises for a failing run: the row says ``failed`` and why."""
    run: Run = task["run"]
    started, t0 = _now(), time.perf_counter()
    log_path = Path(task["log"])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        def say(text: str) -> None:
            log.write(f"{_now()} {text}\n")
            log.flush()

        say(f"run {run.run_id}: {run.scenario.label} / {run.method} {run.params} "
            f"seed {run.seed}")
        try:
            dev = resolve_device(task.get("device"))
            data = _data(run.dataset, run.dataset_options)
            split, original, reference, references = _judged_against(task, run, data, dev)
            watch, curve = curve_watcher(split, device=dev)
            timing = {**_conditions(task.get("process", "main"), dev), "mode": run.timing,
                      "repeats": 1}
            cache_hit = None
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if run.method == ORIGINAL:  # the original itself, judged like a method
                    model = original
                elif run.calibrate:
                    _warm(original, split.retain if split.retain is not None else split.forget,
                          dev)
                    model, calibration, trials, measured = _calibrated(
                        run, original, split, dev, task, say)
                    if model is None:  # no trial finished within the budget: the method
                        why = calibration["note"]  # cannot get there; not run again
                        row = _row(run, "skipped", error=why, calibration=calibration,
                                   trials=trials)
                        say(f"skipped: {why}")
                        row["started"], row["finished"] = started, _now()
                        return row
                    cache_hit = measured.pop("cache_hit")
                    timing.update(measured)
                else:
                    _warm(original, split.retain if split.retain is not None else split.forget,
                          dev)
                    # cold (default): every importance-cache read misses inside the clock
                    model, measured = _timed(
                        lambda: unlearn(original, split, run.method, seed=run.method_seed,
                                        device=dev, verdict=False, **run.params),
                        read_cache=run.timing == "warm",
                        watcher=watch if run.curves else None)
                    cache_hit = measured.pop("cache_hit")
                    timing.update(measured)
                    info = get_info(model)
                    say(f"timed: {info.seconds if info is not None else None} s wall-clock "
                        f"(median of {timing['repeats']} call(s)), {timing['cpu_seconds']:.4g} "
                        f"s CPU; {timing['process']} process, {timing['threads']} thread(s), "
                        f"{timing['mode']}, cache hit: {'yes' if cache_hit else 'no'}")
            notes = list(dict.fromkeys(str(w.message) for w in caught))
            for note in notes:
                say(f"warning: {note}")
            pools = None
            if run.score_models:
                say(f"pools of {run.score_models} models for the competition's score")
                pools = (unlearned_pool(original, split, get_method(run.method, **run.params),
                                        run.score_models, device=dev),
                         retrained_pool(original, split, run.score_models, device=dev))
            say("unlearned; evaluating")
            ref_forget = references.get(
                "forget_acc", reference, split,
                lambda: accuracy(reference, split.forget, device=dev))
            metrics = evaluate(model, split, retrained=reference, original=original,
                               pools=pools, mia=run.mia, relearn=run.relearn, seed=run.seed,
                               verdict=True, cache=references)
            if run.method == ORIGINAL:  # no unlearning took place: no cost to report
                for key in ("seconds", "speedup"):
                    metrics.pop(key, None)
            if metrics.get("forget_acc") is not None and ref_forget is not None:
                metrics["forget_acc_gap"] = abs(metrics["forget_acc"] - ref_forget)
            metrics = jsonable(metrics)
            say("recording the artefacts")
            artefacts = model_artefacts(
                {"original": original, "unlearned": model, "retrained": reference}, split,
                class_names=getattr(data, "class_names", None), device=dev, cache=references)
            if curve:
                artefacts["curves"] = curve
            for key, value in metrics.items():
                say(f"  {key} = {value}")
            row = _row(run, "ok", metrics=metrics, warnings=notes, artefacts=artefacts,
                       cache_hit=cache_hit, timing=timing if run.method != ORIGINAL else None)
            if run.calibrate:
                row.update(params=calibration["params"], calibration=calibration,
                           trials=trials)
        except Exception as exc:  # a failing run is a row, never a crashed benchmark
            say(traceback.format_exc())
            text = str(exc) if isinstance(exc, UnlearnkitError) else (
                f"{type(exc).__name__}: {exc}")
            row = _row(run, "failed", error=text)
        say(f"{row['status']} in {time.perf_counter() - t0:.2f} s")
    row["started"], row["finished"] = started, _now()
    return row


def _init_worker() -> None:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # a run's warnings are recorded in its row and log
    # Ctrl-C reaches the terminal's whole process group: the benchmark (the parent) decides
    # what stops, and stops its workers itself (_stop_workers)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # born with SIGINT blocked (_spawning): a Ctrl-C that came while this worker was starting
    # is pending, and now discarded, since the signal is ignored
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@contextlib.contextmanager
def _spawning() -> Iterator[None]:
    """Block SIGINT in the calling thread while a process pool may start a worker (the pool
    starts them on demand, in ``submit``). A worker inherits the blocked signal through
    ``exec``, so a Ctrl-C that comes while it is still starting, before :func:`_init_worker`
    has made it ignore SIGINT, cannot raise a ``KeyboardInterrupt`` (and print a traceback)
    inside multiprocessing's start-up code. The benchmark itself loses nothing: its other
    threads still take the signal, and a signal pending here is delivered on unblocking."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _quiet_resource_tracker() -> None:
    """Start multiprocessing's resource tracker (if it is not running yet) with its warning
    about leaked semaphores silenced. A worker stopped by :func:`_stop_workers` (Ctrl-C)
    cannot unregister the semaphores its libraries created; the tracker removes them, as it
    should, but says so in a warning that would read like a fault of the interrupted run."""
    from multiprocessing import resource_tracker

    tracker = resource_tracker._resource_tracker
    if getattr(tracker, "_pid", None) is not None:
        return
    quiet = "ignore::UserWarning:multiprocessing.resource_tracker"
    before = os.environ.get("PYTHONWARNINGS")
    os.environ["PYTHONWARNINGS"] = ",".join(x for x in (before, quiet) if x)
    try:
        resource_tracker.ensure_running()
    finally:
        if before is None:
            os.environ.pop("PYTHONWARNINGS", None)
        else:
            os.environ["PYTHONWARNINGS"] = before


#: Seconds a terminated worker is given to exit before it is killed.
STOP_GRACE = 2.0


def _stop_workers(pool: Any) -> None:
    """Stop a process pool's workers now: terminate each (SIGTERM), kill what is still alive
    after :data:`STOP_GRACE` seconds, and shut the pool down without waiting for its tasks, so
    that an interrupted benchmark returns within seconds and leaves no orphan process."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    for p in procs:
        with contextlib.suppress(Exception):
            p.terminate()
    deadline = time.monotonic() + STOP_GRACE
    for p in procs:
        with contextlib.suppress(Exception):
            p.join(max(deadline - time.monotonic(), 0.0))
            if p.is_alive():
                p.kill()
                p.join(1.0)
    with contextlib.suppress(Exception):
        pool.shutdown(wait=False, cancel_futures=True)


# ---------------------------------------------------------------------- the models runs need
def _cached(path: Path | None, device: torch.device) -> torch.nn.Module | None:
    """The checkpoint at ``path`` if it is there and readable, else ``None``."""
    if path is None or not path.is_file():
        return None
    try:
        return load_checkpoint(path, device=device)
    except Exception:  # an unreadable cache entry is retrained and overwritten
        return None


def prepare(task: dict[str, Any]) -> dict[str, Any]:
    """Train, or load from the on-disk cache, one model that runs need: an original
    (``task["kind"] == "original"``), a retrained reference (``"reference"``) or the retrained
    pool of the competition's score (``"pool"``). A task of the benchmark's pool like any run:
    same process kind, one torch thread, same device, warmed up before the clock starts.

    Returns ``{"kind", "key", "path", "cached", "seconds", "timing"}``: ``cached`` when the
    model was in the cache (nothing trained; ``seconds`` is then what its training took
    wherever and whenever it was trained), ``timing`` the conditions here
    (:func:`_conditions`). Raises when the model cannot be made: every run that needs it
    would fail, so the benchmark stops.
    """
    kind = task["kind"]
    dev = resolve_device(task.get("device"))
    data = _data(task["dataset"], task["dataset_options"])
    recipe = Recipe.from_dict(task["recipe"])
    kwargs = dict(task["arch_kwargs"])
    seed = task["seed"]
    out: dict[str, Any] = {"kind": kind, "key": task["key"], "path": None, "cached": True,
                           "seconds": None}
    if kind == "original":
        path = original_cache_path(data, arch=task["arch"], recipe=recipe, seed=seed, **kwargs)
        model = _cached(path, dev)
        if model is None:
            out["cached"] = False
            model = cached_original(data, arch=task["arch"], recipe=recipe, seed=seed,
                                    device=dev, **kwargs)
        info = get_info(model)
        out.update(path=str(path), seconds=info.seconds if info is not None else None)
    else:
        original = load_checkpoint(task["original"], device=dev)
        split = _split(data, task["scenario"], seed)
        if kind == "reference":
            ref_path = reference_cache_path(original, split, seed=seed)
            model = _cached(ref_path, dev)
            if model is None:
                out["cached"] = False
                _warm(original, split.retain, dev)
                # cached_reference's work, timed as the runs are (pools.cached_reference)
                model, measured = _timed(
                    lambda: unlearn(original, split, "retrain", seed=seed, device=dev,
                                    verdict=False),
                    read_cache=False)
                if ref_path is not None:
                    save_checkpoint(model, ref_path)
                out.update(repeats=measured["repeats"], cpu_seconds=measured["cpu_seconds"])
            info = get_info(model)
            out.update(path=str(ref_path) if ref_path is not None else None,
                       seconds=info.seconds if info is not None else None)
        else:  # the retrained pool, shared by every scored run of the scenario
            pool = retrained_pool(original, split, task["n_models"], device=dev)
            out["seconds"] = float(sum(pool.seconds))
            out["cached"] = None  # some of its models may have been cached, some trained
    out["timing"] = _conditions(task.get("process", "main"), dev)
    return out


def _prep_tasks(plan: Plan, runs: list[Run], *, device: str | None, process: str
                ) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The preparation tasks ``runs`` need, keyed ``("original", seed)``, ``("reference",
    scenario, seed)`` and ``("pool", scenario, seed)``, in the order they should start (each
    lists the keys it depends on under ``"deps"``)."""
    cfg = plan.config
    base = {"dataset": cfg.dataset, "dataset_options": dict(cfg.dataset_options),
            "arch": cfg.arch, "arch_kwargs": dict(cfg.arch_kwargs),
            "recipe": cfg.recipe.to_dict(), "device": device, "process": process}
    tasks: dict[tuple[Any, ...], dict[str, Any]] = {}
    for seed in dict.fromkeys(r.seed for r in runs):
        tasks[("original", seed)] = {**base, "kind": "original", "key": ("original", seed),
                                     "seed": seed, "deps": []}
    pools = {}
    for scenario, seed in dict.fromkeys((r.scenario, r.seed) for r in runs):
        key = ("reference", scenario, seed)
        tasks[key] = {**base, "kind": "reference", "key": key, "seed": seed,
                      "scenario": scenario, "deps": [("original", seed)]}
        n_models = max((r.score_models for r in runs
                        if r.scenario == scenario and r.seed == seed), default=0)
        if n_models:
            key = ("pool", scenario, seed)
            pools[key] = {**base, "kind": "pool", "key": key, "seed": seed, "scenario": scenario,
                          "n_models": n_models, "deps": [("original", seed)]}
    return {**tasks, **pools}  # the references first: they unblock most runs


def _needs(run: Run) -> list[tuple[Any, ...]]:
    """The preparation tasks a run waits for."""
    keys: list[tuple[Any, ...]] = [("original", run.seed), ("reference", run.scenario, run.seed)]
    if run.score_models:
        keys.append(("pool", run.scenario, run.seed))
    return keys


def _describe_prep(task: dict[str, Any]) -> str:
    if task["kind"] == "original":
        return f"original {task['arch']} on {task['dataset']}, seed {task['seed']}"
    if task["kind"] == "reference":
        return f"reference for {task['scenario'].label}, seed {task['seed']}"
    return (f"retrained pool of {task['n_models']} for {task['scenario'].label}, "
            f"seed {task['seed']}")


#: The ``retrain`` method's parameters that make a run the same retraining as the reference.
_REFERENCE_PARAMS = get_method("retrain").params()


def _is_reference_retrain(run: Run) -> bool:
    """Whether ``run`` retrains exactly as the reference does (method ``retrain`` at its
    defaults): its time is the like-for-like cost of retraining for its scenario and seed."""
    return run.method == "retrain" and dict(run.params) == _REFERENCE_PARAMS


def _cpu_speedup(timing: dict[str, Any], basis: dict[str, Any]) -> dict[str, Any]:
    """``timing`` with ``cpu_speedup``: the retraining's CPU seconds over the row's, where both
    were measured (``None`` otherwise, e.g. against a cached reference's time)."""
    mine, theirs = timing.get("cpu_seconds"), basis.get("cpu_seconds")
    return {**timing, "cpu_speedup": speedup(mine, theirs) if theirs is not None else None}


def _check_inputs(plan: Plan, runs: list[Run]) -> None:
    """Load the data and build every split ``runs`` need, here, so that a mistake only the
    data reveals (an unknown class name) is refused before any store exists."""
    cfg = plan.config
    data = _data(cfg.dataset, dict(cfg.dataset_options))
    for scenario, seed in dict.fromkeys((r.scenario, r.seed) for r in runs):
        _split(data, scenario, seed)


def _do(task: dict[str, Any]) -> dict[str, Any]:
    """One task of the pool: a run (:func:`execute`) or a preparation (:func:`prepare`)."""
    return execute(task) if "run" in task else prepare(task)


class _Inline:
    """The pool of ``workers=1``: each task runs at once, in this process."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args))
        except Exception as exc:
            fut.set_exception(exc)
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` for the block, then restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _prepare(plan: Plan, runs: list[Run], *, device: str | None, progress: bool,
             say: Callable[[str], None],
             bases: dict[tuple[Scenario, int], dict[str, Any]] | None = None
             ) -> dict[Any, Path]:
    """Train or load every original and reference ``runs`` need, here, sequentially, with all
    of this process's threads; their checkpoint paths. The Ray executor prepares this way;
    ``bases`` (if given) receives per (scenario, seed) the reference's ``seconds`` and their
    ``source``: ``reference-parent`` (trained here: not the runs' conditions) or ``cache``."""
    cfg = plan.config
    data = _data(cfg.dataset, dict(cfg.dataset_options))
    kwargs = dict(cfg.arch_kwargs)
    paths: dict[Any, Path] = {}
    dev = resolve_device(device)
    for seed in dict.fromkeys(r.seed for r in runs):
        path = original_cache_path(data, arch=cfg.arch, recipe=cfg.recipe, seed=seed, **kwargs)
        say(f"original {cfg.arch} on {cfg.dataset}, seed {seed}: "
            f"{'cached' if path.is_file() else 'training'} ...")
        original = cached_original(data, arch=cfg.arch, recipe=cfg.recipe, seed=seed,
                                   device=device, progress=progress, **kwargs)
        paths[seed] = path
        for scenario, s in dict.fromkeys((r.scenario, r.seed) for r in runs):
            if s != seed:
                continue
            split = _split(data, scenario, seed)
            ref = reference_cache_path(original, split, seed=seed)
            cached = ref is not None and ref.is_file()
            say(f"reference for {scenario.label}, seed {seed}: "
                f"{'cached' if cached else 'retraining'} ...")
            model = cached_reference(original, split, seed=seed, device=device,
                                     progress=progress)
            paths[(scenario, seed)] = ref  # type: ignore[assignment]
            info = get_info(model)
            if bases is not None and info is not None and info.seconds is not None:
                bases[(scenario, seed)] = {
                    "seconds": info.seconds, "source": "cache" if cached else "reference-parent",
                    **({} if cached else _conditions("main", dev))}
            n_models = max((r.score_models for r in runs
                            if r.scenario == scenario and r.seed == seed), default=0)
            if n_models:  # shared by every scored run of the scenario: built once, here
                say(f"retrained pool of {n_models} for {scenario.label}, seed {seed} ...")
                retrained_pool(original, split, n_models, device=device, progress=progress)
    return paths


def _check_writable(db: str | os.PathLike) -> None:
    """Refuse, before anything is trained, a results path that cannot be a store file."""
    p = Path(db)
    if p.exists():
        if not p.is_file():
            raise DataError(f"{str(p)!r} is not a file: it cannot be a results store.")
        if not os.access(p, os.R_OK | os.W_OK):
            raise DataError(f"{str(p)!r} cannot be read and written (permissions).")
        return
    parent = p.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise DataError(f"Cannot create the results store {str(p)!r}: {str(parent)!r} is not "
                        "a writable folder.")


def run_plan(
    plan: Plan,
    db: str | os.PathLike,
    *,
    workers: int | None = None,
    device: str | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    executor: str = "process",
    ray_address: str | None = None,
) -> dict[str, Any]:
    """Run every run of ``plan`` that ``db`` does not hold yet; return a summary.

    Args:
        plan: from :func:`unlearnkit.bench.expand`.
        db: the SQLite results file (created if missing; see :mod:`unlearnkit.bench.store`).
            Other benchmarks may use it at the same time: each run is claimed before it runs,
            and executed once.
        workers: processes (default: the CPU count); 1 runs in this process, sequentially.
        device: where to compute (default: CUDA, then MPS, then the CPU).
        progress: a progress bar over runs, with an ETA, on stderr.
        log: called with one line per step.
        executor: ``"process"`` (a local process pool; ``workers=1`` runs in this process) or
            ``"ray"`` (Ray tasks, one CPU each, on a local Ray instance or the cluster at
            ``ray_address``; needs the ``ray`` extra; see
            :mod:`unlearnkit.bench.ray_executor`). With Ray, every run that no other
            benchmark holds is claimed at once.
        ray_address: the Ray cluster to join (default: ``$RAY_ADDRESS``, else a local one).

    Returns:
        ``{"db", "total", "ran", "reused", "skipped", "failed", "seconds", "runs",
        "prepared", "cpu_share"}``: ``ran`` = the runs this call executed; ``reused`` =
        already in the store, or stored meanwhile by another benchmark; ``skipped`` = the
        method refuses the scenario; ``over_budget`` = calibrated runs whose search finished
        no trial within its budget (stored as ``skipped``, saying so); ``runs`` = one
        ``{run_id, scenario, method, params, seed, status}`` per run; ``prepared`` = one
        ``{kind, scenario, seed, cached, seconds, cpu_seconds, repeats, process, threads,
        device}`` per original, reference and pool
        this call made or loaded; ``cpu_share`` = the median, over the timed calls on a CPU, of
        their CPU time over their wall-clock time (1: each had a core to itself; lower: the
        machine was busy, and wall-clock seconds are noisy), or ``None``.

    Raises:
        DataError: ``db`` is not a results store, lacks a column or holds a corrupt row.

    If it fails before any row is stored, a store this call created is deleted.
    """
    n_workers = (os.cpu_count() or 1) if workers is None else workers
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
        raise InvalidParameterError(
            f"The 'workers' parameter must be a positive int. Got {workers!r} instead.")
    if executor not in EXECUTORS:
        raise InvalidParameterError(
            f"Unknown executor {executor!r}. Valid executors: {', '.join(EXECUTORS)}.")
    if executor == "ray":  # fail before any training when Ray is missing
        from unlearnkit.bench.ray_executor import require_ray

        require_ray()
    say = log or (lambda message: None)
    start = time.perf_counter()
    logs = log_dir(db)
    status: dict[str, str] = {}
    _check_writable(db)
    states = read_states(db)  # a bad store is refused here, before anything is trained
    done = {rid for rid, state in states.items() if state[0] in FINISHED}
    for rid in done:
        status[rid] = "reused"
    pending = [r for r in plan.runs if r.run_id not in done]
    todo = [r for r in pending if not r.refused]
    # the reference's training time per (scenario, seed), and where it was measured
    bases: dict[tuple[Scenario, int], dict[str, Any]] = {}
    paths: dict[Any, Path] = {}
    inline = executor != "ray" and (n_workers == 1 or len(todo) <= 1)
    process = "ray" if executor == "ray" else "main" if inline else "worker"
    preps: dict[tuple[Any, ...], dict[str, Any]] = {}
    if todo and executor == "ray":  # prepared here, the simple way (and labelled so)
        paths = _prepare(plan, todo, device=device, progress=progress, say=say, bases=bases)
    elif todo:
        _check_inputs(plan, todo)  # before any store exists
        preps = _prep_tasks(plan, todo, device=device, process=process)
    prep_done: dict[tuple[Any, ...], dict[str, Any]] = {}
    prepared: list[dict[str, Any]] = []
    retry = {rid: state for rid, state in states.items() if state[0] not in FINISHED}
    by_id = {r.run_id: r for r in todo}
    needs = {r.run_id: _needs(r) for r in todo} if executor != "ray" else {}
    logs_existed = logs.exists()
    counts = {"ran": 0, "wrote": 0, "finished": 0}
    # like-for-like retraining times: the reference retrain row of each (scenario, seed) once
    # this benchmark has measured it, and the rows written before it (amended then)
    retrain_rows: dict[tuple[Scenario, int], dict[str, Any]] = {}
    # a resumed benchmark: the retrain rows an earlier call stored stay the basis (not the
    # cached reference's time, measured elsewhere), so that the rows of one store are timed
    # against one retraining whether or not the benchmark was interrupted
    stored_retrains = {r.run_id: r for r in plan.runs
                       if r.run_id in done and _is_reference_retrain(r)}
    if stored_retrains and todo:
        for row in read_rows(db, stored_retrains):
            secs = (row.get("metrics") or {}).get("seconds")
            if row["status"] == "ok" and secs:
                r = stored_retrains[row["run_id"]]
                retrain_rows[(r.scenario, r.seed)] = {
                    "seconds": secs, "source": "retrain-row",
                    "cpu_seconds": (row.get("timing") or {}).get("cpu_seconds")}
    written: dict[tuple[Scenario, int], list[dict[str, Any]]] = {}
    shares: list[float] = []  # CPU seconds / wall-clock seconds of each timed call on a CPU
    bar = None
    store = ResultStore(db)
    try:
        for run in (r for r in pending if r.refused):
            row = _row(run, "skipped", error=run.refused, started=_now(), finished=_now())
            wrote = store.write(row)
            counts["wrote"] += wrote
            status[run.run_id] = "skipped" if wrote else "reused"
        if todo:
            say(f"{len(todo)} runs to do ({len(plan.runs) - len(todo)} done or skipped), "
                f"{1 if inline else min(n_workers, len(todo) + len(preps))} worker(s); logs "
                f"in {logs}")
        if progress and todo:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc="bench", unit="run", file=sys.stderr)

        def task(rid: str) -> dict[str, Any]:
            r = by_id[rid]
            if executor == "ray":
                original, reference = paths[r.seed], paths[(r.scenario, r.seed)]
            else:
                original = prep_done[("original", r.seed)]["path"]
                reference = prep_done[("reference", r.scenario, r.seed)]["path"]
            out = {"run": r, "original": str(original), "reference": str(reference),
                   "log": str(logs / f"{r.run_id}.log"), "device": device,
                   "process": process}
            if r.calibrate:  # the budget's basis: the retraining measured in this pool
                basis = (retrain_rows.get((r.scenario, r.seed))
                         or bases.get((r.scenario, r.seed)) or {})
                out.update(retrain_seconds=basis.get("seconds"),
                           retrain_source=basis.get("source"))
            return out

        def retime(run: Run, row: dict[str, Any]) -> None:
            """The row's retrain_seconds and speedup, like for like (see RETRAIN_SOURCES)."""
            if row["status"] != "ok":
                return
            key = (run.scenario, run.seed)
            basis = (retrain_rows.get(key) if not _is_reference_retrain(run) else None
                     ) or bases.get(key)
            if basis is None or basis.get("seconds") is None:
                return
            metrics = row["metrics"]
            metrics["retrain_seconds"] = basis["seconds"]
            if run.method != ORIGINAL:
                value = speedup(metrics.get("seconds"), basis["seconds"])
                if value is None:
                    metrics.pop("speedup", None)
                else:
                    metrics["speedup"] = value
            row["retrain_seconds_source"] = basis["source"]
            if row.get("timing") is not None:
                row["timing"] = _cpu_speedup(row["timing"], basis)

        def amend(run: Run, row: dict[str, Any]) -> None:
            """Once the reference retrain row is stored: every row of its scenario and seed
            stored before it is measured against it."""
            key = (run.scenario, run.seed)
            secs = row["metrics"].get("seconds")
            if not _is_reference_retrain(run):
                if key not in retrain_rows:
                    written.setdefault(key, []).append(
                        {"run_id": run.run_id, "seconds": secs, "timing": row.get("timing"),
                         "original": run.method == ORIGINAL})
                return
            if not secs:
                return
            retrain_rows[key] = {"seconds": secs, "source": "retrain-row",
                                 "cpu_seconds": (row.get("timing") or {}).get("cpu_seconds")}
            for earlier in written.pop(key, []):
                changes: dict[str, Any] = {"retrain_seconds": secs}
                if not earlier["original"]:
                    changes["speedup"] = speedup(earlier["seconds"], secs)
                timing = earlier["timing"]
                store.amend_timing(earlier["run_id"], changes, "retrain-row",
                                   timing=None if timing is None else _cpu_speedup(
                                       timing, retrain_rows[key]))

        def finished(row: dict[str, Any], k: int = 0) -> None:
            counts["finished"] += 1
            rid = row["run_id"]
            run = by_id[rid]
            retime(run, row)
            if store.write(row):
                counts["wrote"] += 1
                status[rid] = ("over budget" if row["status"] == "skipped" and run.calibrate
                               else row["status"])
                extra = f": {row['error']}" if row["error"] else ""
                if row["status"] == "ok":
                    amend(run, row)
                    t, secs = row.get("timing") or {}, row["metrics"].get("seconds")
                    if t.get("device") == "cpu" and t.get("cpu_seconds") and secs:
                        shares.append(t["cpu_seconds"] / secs)
            else:  # another benchmark took the run over (this one looked dead) and stored it
                status[rid] = "reused"
                extra = " (discarded: another benchmark stored this run first)"
            if bar is not None:
                bar.update(1)
            what = f"{row['scenario']} / {row['method']} seed {row['seed']} ({rid})"
            say(f"[{counts['finished']}/{len(todo)}] {what}: {row['status']}{extra}")

        def resolved(found: dict[str, str]) -> None:
            for rid, state in found.items():
                status[rid] = "reused" if state in FINISHED else state
                counts["finished"] += 1
                if bar is not None:
                    bar.update(1)
                r = by_id[rid]
                say(f"[{counts['finished']}/{len(todo)}] {r.scenario.label} / {r.method} seed "
                    f"{r.seed} ({rid}): {state}, by another benchmark")

        def ready(result: dict[str, Any]) -> None:
            """A preparation task is done."""
            key = result["key"]
            prep_done[key] = result
            t = result["timing"]
            where = f"{t['process']}, {t['threads']} thread{'s' if t['threads'] != 1 else ''}"
            if result["cached"]:
                how = "cached"
            else:
                secs = result["seconds"]
                how = f"trained in {secs:.2f} s" if secs is not None else "trained"
                how += f" ({where})"
            if result["kind"] == "reference" and result["seconds"] is not None:
                bases[(key[1], key[2])] = {
                    "seconds": result["seconds"],
                    "source": "cache" if result["cached"] else "reference-pool", **(
                        {} if result["cached"] else
                        {**t, "cpu_seconds": result.get("cpu_seconds")})}
            say(f"{_describe_prep(preps[key])}: {how}")
            prepared.append({"kind": result["kind"],
                             "scenario": key[1].label if len(key) > 2 else None,
                             "seed": key[-1], "cached": result["cached"],
                             "seconds": result["seconds"],
                             "cpu_seconds": result.get("cpu_seconds"),
                             "repeats": result.get("repeats"), **t})

        # the reference retrain runs first: the other runs are measured against them
        # and the calibrated runs last: their budgets are shares of those retrainings
        remaining = [r.run_id for r in todo if _is_reference_retrain(r)]
        remaining += [r.run_id for r in todo if not _is_reference_retrain(r)
                      and not r.calibrate]
        remaining += [r.run_id for r in todo if r.calibrate]

        def claim(candidates: list[str], n: int) -> list[str]:
            nonlocal remaining
            got, found = store.claim(candidates, n, retry)
            resolved(found)
            taken = set(got) | set(found)
            remaining = [rid for rid in remaining if rid not in taken]
            counts["ran"] += len(got)
            return got

        waiting = False

        def wait_for_others() -> None:
            nonlocal waiting
            if not waiting:
                say(f"{len(remaining)} run(s) held by another benchmark; waiting for them")
                waiting = True
            time.sleep(POLL_SECONDS)

        if executor == "ray":
            from unlearnkit.bench.ray_executor import run_tasks_ray

            try:
                while remaining:
                    got = claim(remaining, len(remaining))
                    if got:
                        run_tasks_ray([task(rid) for rid in got], finished, workers=n_workers,
                                      address=ray_address)
                    elif remaining:
                        wait_for_others()
            except KeyboardInterrupt:  # run_tasks_ray cancelled the tasks still going
                say(f"interrupted: {counts['wrote']} run(s) stored, "
                    f"{counts['ran'] - counts['finished']} in flight discarded (not stored); "
                    "the same command completes the rest")
                raise
        elif todo:
            slots = 1 if inline else min(n_workers, len(todo) + len(preps))
            if not inline:
                with contextlib.suppress(Exception):  # cosmetic: never stop a benchmark
                    _quiet_resource_tracker()
            pool_kind: Any = (_Inline() if inline else ProcessPoolExecutor(
                max_workers=slots, mp_context=get_context("spawn"), initializer=_init_worker))
            # one torch thread everywhere: the clock sees the same conditions in every task
            with _threads(1) if inline else nullcontext(), pool_kind as pool:
                running: dict[Future, tuple[str, Any]] = {}
                waiting_preps = dict(preps)
                try:
                    while waiting_preps or remaining or running:
                        startable = [k for k, t in waiting_preps.items()
                                     if all(d in prep_done for d in t["deps"])]
                        for key in startable[:max(slots - len(running), 0)]:
                            t = waiting_preps.pop(key)
                            if t["kind"] != "original":
                                t["original"] = prep_done[("original", t["seed"])]["path"]
                            say(f"{_describe_prep(t)}: from the cache, or training ...")
                            with _spawning():
                                running[pool.submit(_do, t)] = ("prep", key)
                        free = slots - len(running)
                        if free > 0 and remaining:
                            candidates = [rid for rid in remaining
                                          if all(k in prep_done for k in needs[rid])]
                            if candidates:
                                for rid in claim(candidates, free):
                                    with _spawning():
                                        fut = pool.submit(_do, task(rid))
                                    running[fut] = ("run", rid)
                        if running:
                            done_now, _ = wait(list(running), return_when=FIRST_COMPLETED,
                                               timeout=POLL_SECONDS if remaining else None)
                            for fut in done_now:
                                kind, _key = running.pop(fut)
                                if kind == "prep":
                                    ready(fut.result())
                                else:
                                    finished(fut.result())
                        elif remaining:
                            wait_for_others()
                except BaseException as exc:
                    if inline:
                        pool.shutdown(wait=False, cancel_futures=True)
                    else:
                        _stop_workers(pool)
                    if isinstance(exc, KeyboardInterrupt):
                        lost = [key for kind, key in running.values() if kind == "run"]
                        for rid in lost:  # their logs would describe runs that never ended
                            (logs / f"{rid}.log").unlink(missing_ok=True)
                        say(f"interrupted: {counts['wrote']} run(s) stored, "
                            f"{len(lost)} in flight discarded (not stored); the same "
                            "command completes the rest")
                    raise
    except BaseException:
        if bar is not None:
            bar.close()
            bar = None
        deleted = False
        if not counts["wrote"]:  # failed before storing anything: no file left behind
            with contextlib.suppress(Exception):  # never hide the error itself
                deleted = store.discard()
        if deleted:
            for rid in by_id:
                (logs / f"{rid}.log").unlink(missing_ok=True)
            if not logs_existed:
                with contextlib.suppress(OSError):
                    logs.rmdir()
        raise
    finally:
        if bar is not None:
            bar.close()
        store.close()
    runs = [{"run_id": r.run_id, "scenario": r.scenario.label, "method": r.method,
             "params": r.params, "seed": r.seed, "status": status.get(r.run_id, "pending")}
            for r in plan.runs]
    summary = {k: sum(1 for r in runs if r["status"] == v)
               for k, v in (("ok", "ok"), ("reused", "reused"), ("skipped", "skipped"),
                            ("failed", "failed"), ("over_budget", "over budget"))}
    return {"db": str(db), "logs": str(logs), "total": len(plan.runs), "ran": counts["ran"],
            **summary, "seconds": time.perf_counter() - start, "runs": runs,
            "prepared": prepared,
            "cpu_share": statistics.median(shares) if shares else None}


def describe(plan: Plan, db: str | os.PathLike) -> dict[str, Any]:
    """What :func:`run_plan` would do, without training anything: every run's state
    (``done``, ``to run``, ``skip``), and for every original and reference whether it is
    cached (reused) or would be trained. Neither creates nor changes ``db``."""
    cfg = plan.config
    done = {r["run_id"] for r in read_rows(db) if r["status"] in ("ok", "skipped")}
    data = _data(cfg.dataset, dict(cfg.dataset_options))
    kwargs = dict(cfg.arch_kwargs)
    originals, references = [], []
    for seed in plan.seeds:
        path = original_cache_path(data, arch=cfg.arch, recipe=cfg.recipe, seed=seed, **kwargs)
        cached = path.is_file()
        originals.append({"seed": seed, "cached": cached, "path": str(path)})
        original = load_checkpoint(path) if cached else None
        for scenario, s in plan.references:
            if s != seed:
                continue
            ref = (reference_cache_path(original, _split(data, scenario, seed), seed=seed)
                   if original is not None else None)
            references.append({"scenario": scenario.label, "seed": seed,
                                "cached": ref is not None and ref.is_file(),
                                "path": str(ref) if ref is not None else None})
    runs = [{"run_id": r.run_id, "scenario": r.scenario.label, "method": r.method,
             "params": r.params, "seed": r.seed,
             "state": "done" if r.run_id in done else "skip" if r.refused else "to run",
             "reason": r.refused} for r in plan.runs]
    return {"db": str(db), "total": len(runs),
            "to_run": sum(r["state"] == "to run" for r in runs),
            "done": sum(r["state"] == "done" for r in runs),
            "skip": sum(r["state"] == "skip" for r in runs),
            "originals": originals, "references": references, "runs": runs}
