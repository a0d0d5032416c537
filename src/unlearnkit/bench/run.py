"""Executing a plan: originals and references first (cached), then every run as a task.

The parent process trains (or loads from the cache) every original and reference the pending
runs need, sequentially, so workers never race on the cache; then it opens the store (creating
it only now, so that a plan that fails this early leaves no file). Each run is then an
independent task (:func:`execute`), given the paths of its two cached checkpoints: in-process
with ``workers=1``, else in a local process pool (spawned processes, one torch thread each).
Workers return rows; the parent alone writes them to the store, one transaction per row, as they
finish. Each run logs to ``<db>.logs/<run_id>.log``.

Before running a run the parent claims it in the store (a lease, see
:mod:`unlearnkit.bench.store`), as many at a time as it has workers; so benchmarks started on
one store at once share its runs, and each run is executed once. A benchmark whose remaining
runs are all held by others waits for them (their rows, or their leases' death) before it
returns. A benchmark that fails before it stores any row deletes the store it created.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable
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
from unlearnkit.bench.store import FINISHED, ResultStore, read_rows, read_states
from unlearnkit.compare import jsonable
from unlearnkit.data.containers import DataBundle
from unlearnkit.data.registry import load_dataset
from unlearnkit.data.splits import Split, split_by_class, split_random
from unlearnkit.evaluation import evaluate
from unlearnkit.exceptions import DataError, InvalidParameterError, UnlearnkitError
from unlearnkit.methods.base import get_method
from unlearnkit.models.checkpoint import load_checkpoint
from unlearnkit.pools import (
    cached_original,
    cached_reference,
    original_cache_path,
    reference_cache_path,
    retrained_pool,
    unlearned_pool,
)
from unlearnkit.training import resolve_device, watch_epochs

__all__ = ["EXECUTORS", "POLL_SECONDS", "describe", "execute", "log_dir", "run_plan"]

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
    return split_random(data, fraction=scenario.fraction, seed=seed)


def _row(run: Run, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "run_id": run.run_id, "dataset": run.dataset, "arch": run.arch,
        "scenario": run.scenario.label, "scenario_kind": run.scenario.kind,
        "method": run.method, "params": run.params, "seed": run.seed, "status": status,
        "spec": run.spec(), "metrics": {}, "warnings": [], "started": None, "finished": None,
        "error": None, **extra,
    }


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
            split = _split(data, run.scenario, run.seed)
            original = load_checkpoint(task["original"], device=dev)
            reference = load_checkpoint(task["reference"], device=dev)
            watch, curve = curve_watcher(split, device=dev)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if run.method == ORIGINAL:  # the original itself, judged like a method
                    model = original
                else:
                    with watch_epochs(watch) if run.curves else nullcontext():
                        model = unlearn(original, split, run.method, seed=run.method_seed,
                                        device=dev, **run.params)
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
            ref_forget = evaluate(reference, split, mia=False, relearn=False)["forget_acc"]
            metrics = evaluate(model, split, retrained=reference, original=original,
                               pools=pools, mia=run.mia, relearn=run.relearn, seed=run.seed)
            if run.method == ORIGINAL:  # no unlearning took place: no cost to report
                for key in ("seconds", "speedup"):
                    metrics.pop(key, None)
            if metrics.get("forget_acc") is not None and ref_forget is not None:
                metrics["forget_acc_gap"] = abs(metrics["forget_acc"] - ref_forget)
            metrics = jsonable(metrics)
            say("recording the artefacts")
            artefacts = model_artefacts(
                {"original": original, "unlearned": model, "retrained": reference}, split,
                class_names=getattr(data, "class_names", None), device=dev)
            if curve:
                artefacts["curves"] = curve
            for key, value in metrics.items():
                say(f"  {key} = {value}")
            row = _row(run, "ok", metrics=metrics, warnings=notes, artefacts=artefacts)
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


# ---------------------------------------------------------------------- the plan
def _prepare(plan: Plan, runs: list[Run], *, device: str | None, progress: bool,
             say: Callable[[str], None]) -> dict[Any, Path]:
    """Train or load every original and reference ``runs`` need; their checkpoint paths."""
    cfg = plan.config
    data = _data(cfg.dataset, dict(cfg.dataset_options))
    kwargs = dict(cfg.arch_kwargs)
    paths: dict[Any, Path] = {}
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
            say(f"reference for {scenario.label}, seed {seed}: "
                f"{'cached' if ref is not None and ref.is_file() else 'retraining'} ...")
            cached_reference(original, split, seed=seed, device=device, progress=progress)
            paths[(scenario, seed)] = ref  # type: ignore[assignment]
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
        ``{"db", "total", "ran", "reused", "skipped", "failed", "seconds", "runs"}``:
        ``ran`` = the runs this call executed; ``reused`` = already in the store, or stored
        meanwhile by another benchmark; ``skipped`` = the method refuses the scenario;
        ``runs`` = one ``{run_id, scenario, method, params, seed, status}`` per run.

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
    paths = _prepare(plan, todo, device=device, progress=progress, say=say) if todo else {}
    retry = {rid: state for rid, state in states.items() if state[0] not in FINISHED}
    by_id = {r.run_id: r for r in todo}
    logs_existed = logs.exists()
    counts = {"ran": 0, "wrote": 0, "finished": 0}
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
                f"{min(n_workers, len(todo))} worker(s); logs in {logs}")
        if progress and todo:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc="bench", unit="run", file=sys.stderr)

        def task(rid: str) -> dict[str, Any]:
            r = by_id[rid]
            return {"run": r, "original": str(paths[r.seed]),
                    "reference": str(paths[(r.scenario, r.seed)]),
                    "log": str(logs / f"{r.run_id}.log"), "device": device}

        def finished(row: dict[str, Any], k: int = 0) -> None:
            counts["finished"] += 1
            rid = row["run_id"]
            if store.write(row):
                counts["wrote"] += 1
                status[rid] = row["status"]
                extra = f": {row['error']}" if row["error"] else ""
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

        remaining = [r.run_id for r in todo]

        def claim(n: int) -> list[str]:
            nonlocal remaining
            got, found = store.claim(remaining, n, retry)
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

            while remaining:
                got = claim(len(remaining))
                if got:
                    run_tasks_ray([task(rid) for rid in got], finished, workers=n_workers,
                                  address=ray_address)
                elif remaining:
                    wait_for_others()
        elif n_workers == 1 or len(todo) <= 1:
            while remaining:
                got = claim(1)
                if got:
                    finished(execute(task(got[0])))
                elif remaining:
                    wait_for_others()
        elif todo:
            with ProcessPoolExecutor(max_workers=min(n_workers, len(todo)),
                                     mp_context=get_context("spawn"),
                                     initializer=_init_worker) as pool:
                running: dict[Future, str] = {}
                try:
                    while remaining or running:
                        if remaining and len(running) < n_workers:
                            for rid in claim(n_workers - len(running)):
                                running[pool.submit(execute, task(rid))] = rid
                        if running:
                            ready, _ = wait(list(running), return_when=FIRST_COMPLETED,
                                            timeout=POLL_SECONDS if remaining else None)
                            for fut in ready:
                                del running[fut]
                                finished(fut.result())
                        elif remaining:
                            wait_for_others()
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)
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
                            ("failed", "failed"))}
    return {"db": str(db), "logs": str(logs), "total": len(plan.runs), "ran": counts["ran"],
            **summary, "seconds": time.perf_counter() - start, "runs": runs}


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
