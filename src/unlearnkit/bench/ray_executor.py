"""Running a benchmark's runs as Ray tasks: ``unlearnkit bench CONFIG --executor ray``.

:func:`run_tasks_ray` is what :func:`unlearnkit.bench.run_plan` calls with
``executor="ray"``. The parent still trains (or loads from the cache) every original and
reference, and still writes every row to SQLite itself; only the runs (each one
:func:`unlearnkit.bench.run.execute`) go to Ray, one task per run, one CPU each (one torch
thread). A reference the parent trains is timed there, with all its threads: rows measured
against it say ``retrain_seconds_source = reference-parent`` (not like for like), unless the
plan's ``retrain`` run of their scenario and seed, timed on a Ray worker like them, is stored
(``retrain-row``; see :data:`unlearnkit.bench.store.RETRAIN_SOURCES`).

On one machine, nothing to set up: a local Ray instance is started (``workers`` CPUs) and
stopped at the end. On a cluster:

1. ``pip install 'unlearnkit[ray]'`` on every node (the same versions of unlearnkit, torch
   and Ray everywhere).
2. ``ray start --head`` on one node, ``ray start --address HEAD_IP:6379`` on the others.
3. On the head node: ``unlearnkit bench CONFIG.yaml --out results.sqlite --executor ray
   --ray-address auto`` (or set ``RAY_ADDRESS``). The cluster's CPUs decide how many runs go
   at once; ``--workers`` only sizes a local instance.

What travels: the checkpoints of the originals and references the runs need (each file's
bytes are put in Ray's object store once and written to a temporary folder on the worker),
and each run's log (written by the worker to a temporary file, sent back, and written by the
parent to ``<db>.logs/<run_id>.log``). What does not travel: the dataset. Every node must be
able to load it: a built-in dataset (``digits``), or files at the same path on every node (a
shared filesystem). ``UNLEARNKIT_DATA``, ``UNLEARNKIT_MIRROR`` and ``UNLEARNKIT_CACHE``, when
set where the benchmark is started, are set for the runs on every node too. Runs with the
competition's score (``score: {n_models: N}``) read the retrained pool that the parent built in
the pool cache: on another node, unless ``UNLEARNKIT_CACHE`` is on a shared filesystem, each
such run trains that pool again (correct, but slow).

A run that fails is a ``failed`` row, as with the other executors; so is a run whose Ray task
is lost (its worker or node died, after one retry): the next ``unlearnkit bench`` retries it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import traceback
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from unlearnkit.exceptions import InvalidParameterError

__all__ = ["require_ray", "run_tasks_ray"]

#: environment variables of the parent that the runs see on every node (when set)
FORWARDED_ENV = ("UNLEARNKIT_DATA", "UNLEARNKIT_MIRROR", "UNLEARNKIT_CACHE")

#: how many times Ray reruns a task whose worker died (a lost node) before it is a failed row
MAX_RETRIES = 1

_MISSING = "--executor ray needs Ray: pip install 'unlearnkit[ray]'"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def require_ray() -> Any:
    """The ``ray`` module; :class:`InvalidParameterError` (one line, naming the extra to
    install) if it is missing. Cheap: call it before training anything."""
    try:
        import ray
    except ImportError:
        raise InvalidParameterError(_MISSING) from None
    return ray


def _remote_execute(task: dict[str, Any], original: bytes | None, reference: bytes | None,
                    env: dict[str, str]) -> tuple[dict[str, Any], str]:
    """The body of one Ray task (runs on a worker): the checkpoints written to a temporary
    folder, :func:`execute` run there; returns ``(row, log text)``."""
    import torch

    from unlearnkit.bench.run import execute

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # a run's warnings are recorded in its row and log
    task = dict(task)
    with tempfile.TemporaryDirectory(prefix="unlearnkit-ray-") as tmp, _environ(env):
        folder = Path(tmp)
        for key, blob in (("original", original), ("reference", reference)):
            if blob is not None:  # None: the parent could not read it; execute says why
                path = folder / f"{key}.safetensors"
                path.write_bytes(blob)
                task[key] = str(path)
        task["log"] = str(folder / "run.log")
        row = execute(task)
        log = Path(task["log"])
        text = log.read_text() if log.is_file() else ""
    return row, text


def _read(path: str) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except OSError:
        return None


def _failure(exc: BaseException) -> str:
    """A one-line account of a Ray-level failure (the task's own exception, if any)."""
    cause = getattr(exc, "cause", None)
    what = cause if isinstance(cause, BaseException) else exc
    lines = [x.strip() for x in str(what).splitlines() if x.strip()]
    return f"Ray task failed: {type(what).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _write_log(path: str, text: str) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def _connect(ray: Any, *, workers: int | None, address: str | None) -> str | None:
    """Connect to Ray. Returns what this call must close: ``"local"`` (it started a local
    instance), ``"cluster"`` (it connected to a cluster) or ``None`` (this process had
    initialised Ray already: used as it is, left open)."""
    if ray.is_initialized():
        return None
    address = address or os.environ.get("RAY_ADDRESS") or None
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=workers or os.cpu_count() or 1, include_dashboard=False,
                     log_to_driver=False, logging_level=logging.WARNING)
    except ConnectionError as exc:
        raise InvalidParameterError(
            f"Cannot connect to the Ray cluster at {address!r}: {exc}") from None
    return "cluster" if address else "local"


def run_tasks_ray(
    tasks: list[dict[str, Any]],
    on_row: Callable[[dict[str, Any], int], None],
    *,
    workers: int | None = None,
    address: str | None = None,
    gpus_per_task: float = 0.0,
) -> None:
    """Run ``tasks`` (as built by :func:`unlearnkit.bench.run_plan`) as Ray tasks; call
    ``on_row(row, k)`` here, in the calling process, as each finishes (``k`` counts from 1).

    Args:
        tasks: ``{"run", "original", "reference", "log", "device"}`` dicts; the checkpoint
            paths need only exist here (their bytes are shipped), and the log is written to
            ``task["log"]`` here.
        on_row: called with each run's row, in the order they finish.
        workers: the CPUs of a local Ray instance, if one is started (default: the CPU
            count). Ignored when Ray is already initialised or an address is given.
        address: a Ray cluster's address (``auto``, ``HOST:6379``, ``ray://HOST:10001``);
            default ``$RAY_ADDRESS``, else a local instance is started. If this process
            already called ``ray.init``, that connection is used as it is.
        gpus_per_task: the GPUs each task reserves (e.g. ``0.25``: four runs share a GPU).
            With the default 0, Ray leaves the GPUs visible, unreserved, to every run.

    Raises:
        InvalidParameterError: Ray is not installed, the cluster cannot be reached, or a bad
            argument.

    A Ray instance this call started (or a cluster it connected to) is shut down (the
    connection closed) before it returns, also on an error or Ctrl-C, which stops the runs
    still going: on a cluster (or a Ray this process had initialised) they are cancelled, and
    a local instance's shutdown stops its workers.
    """
    ray = require_ray()
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise InvalidParameterError(
            f"The 'workers' parameter must be a positive int. Got {workers!r} instead.")
    if isinstance(gpus_per_task, bool) or not isinstance(gpus_per_task, (int, float)) or not (
            gpus_per_task >= 0):
        raise InvalidParameterError(
            f"The 'gpus_per_task' parameter must be a number >= 0. Got {gpus_per_task!r} "
            "instead.")
    if not tasks:
        return
    from unlearnkit.bench.run import _row

    started = _connect(ray, workers=workers, address=address)
    pending: dict[Any, dict[str, Any]] = {}
    try:
        env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
        blobs: dict[str, Any] = {}
        for path in dict.fromkeys(p for t in tasks for p in (t["original"], t["reference"])):
            data = _read(path)
            blobs[path] = ray.put(data) if data is not None else None
        remote = ray.remote(num_cpus=1, num_gpus=gpus_per_task,
                            max_retries=MAX_RETRIES)(_remote_execute)
        submitted = _now()
        for task in tasks:
            ref = remote.remote(task, blobs[task["original"]], blobs[task["reference"]], env)
            pending[ref] = task
        k = 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                task = pending.pop(ref)
                try:
                    row, text = ray.get(ref)
                except Exception as exc:  # the task was lost or could not run: a failed row
                    error = _failure(exc)
                    text = f"{_now()} {error}\n{''.join(traceback.format_exception(exc))}"
                    row = _row(task["run"], "failed", error=error, started=submitted,
                               finished=_now())
                _write_log(task["log"], text)
                k += 1
                on_row(row, k)
    except BaseException:  # Ctrl-C or an error: stop what runs, and never mask the cause
        if started != "local":
            # on a cluster (or a Ray this process runs) the tasks would outlive this call.
            # A local instance is not cancelled task by task: its shutdown stops every worker,
            # and a cancel that races with a task finishing can abort this process inside
            # Ray (Ray 2.60: "Check failed: ... Tried to complete task that was not
            # pending", the race of ray-project/ray#54798, seen on Ctrl-C in the tests)
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
        if started:
            with contextlib.suppress(Exception):
                ray.shutdown()
        raise
    if started:
        ray.shutdown()
