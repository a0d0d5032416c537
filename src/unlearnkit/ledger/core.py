"""The ledger of deletion requests over a model's life: :class:`Ledger`.

A model in service receives erasure requests one after another. The ledger records each
request (:meth:`Ledger.add_request`), makes the next model version from the current one for
every pending request at once (:meth:`Ledger.apply`), keeps the evidence that each was
honoured (the oracle-free verdict, for the new samples and for every sample erased so far),
retrains from scratch when its :class:`~unlearnkit.ledger.policy.RetrainPolicy` says so, and
lets anyone check afterwards that nothing was changed (:meth:`Ledger.audit`).

Example (README.md runs the same)::

    ledger = uk.Ledger.create("ledger.sqlite", checkpoint="original.safetensors")
    ledger.add_request(["12", "40"], reason="user 4812")  # the samples' stable ids
    ledger.apply(method="finetune")  # the next version, judged, promoted or refused
    print(ledger.status().table())
    assert ledger.audit().ok
"""

from __future__ import annotations

import os
import secrets
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from unlearnkit.data.containers import DataBundle
from unlearnkit.exceptions import (
    InvalidParameterError,
    LedgerError,
    UnlearnkitError,
)
from unlearnkit.ledger import ids as sid
from unlearnkit.ledger.checkpoints import CheckpointFolder, checkpoint_bytes
from unlearnkit.ledger.policy import RetrainPolicy, Trigger
from unlearnkit.ledger.state import RequestRecord, State, VersionRecord, replay
from unlearnkit.ledger.steps import FAILPOINT_ENV, Step, _failpoint, _ids, _jsonable
from unlearnkit.ledger.store import FORMAT, Entry, LedgerStore, verify_chain

__all__ = ["FAILPOINT_ENV", "ApplyResult", "AuditReport", "Ledger", "LedgerStatus"]

_MAX_REASON = 2000
_SHOW = 5


def _age(since: str, now: datetime) -> float:
    return (now - datetime.fromisoformat(since)).total_seconds()


# ---------------------------------------------------------------------- results
@dataclass(frozen=True)
class ApplyResult:
    """What one :meth:`Ledger.apply` did.

    Attributes:
        outcome: ``applied`` (a new approximate version), ``retrained`` (a new exact
            version), ``refused`` (the approximate version failed its verdict and was not
            promoted; the requests stay pending) or ``nothing to apply``.
        version: the current version afterwards.
        requests: the requests of the batch.
        entries: the entries written (``{"seq", "kind", "payload"}``), in order.
        message: one sentence saying what happened.
    """

    outcome: str
    version: int
    requests: tuple[str, ...]
    entries: tuple[dict[str, Any], ...]
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "version": self.version,
                "requests": list(self.requests), "entries": list(self.entries),
                "message": self.message}


@dataclass(frozen=True)
class AuditReport:
    """The result of :meth:`Ledger.audit`: ``ok`` when ``problems`` is empty.

    Attributes:
        problems: one sentence per problem, each naming the entry or the version.
        entries: how many entries were checked; ``head``: the last entry's hash (keep it
            elsewhere to detect a rewrite of the whole chain later).
        checkpoints: how many version checkpoints were re-hashed.
        orphans: files of the checkpoint folder that no entry names (harmless leftovers of an
            interrupted ``apply``).
    """

    url: str
    ok: bool
    problems: tuple[str, ...]
    entries: int
    head: str | None
    checkpoints: int
    orphans: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "ok": self.ok, "problems": list(self.problems),
                "entries": self.entries, "head": self.head, "checkpoints": self.checkpoints,
                "orphans": list(self.orphans)}


@dataclass(frozen=True)
class LedgerStatus:
    """A snapshot of a ledger (:meth:`Ledger.status`); :meth:`table` prints it."""

    url: str
    ledger_id: str
    data: dict[str, Any]
    method: dict[str, Any]
    policy: RetrainPolicy
    versions: tuple[VersionRecord, ...]
    requests: tuple[RequestRecord, ...]
    refusals: tuple[dict[str, Any], ...]
    triggers: tuple[Trigger, ...]
    erased: int
    entries: int
    head: str
    chain_problems: tuple[str, ...] = ()

    @property
    def current(self) -> VersionRecord:
        return self.versions[-1]

    @property
    def pending(self) -> list[RequestRecord]:
        return [r for r in self.requests if r.version is None]

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "ledger_id": self.ledger_id, "data": self.data,
                "method": self.method, "policy": self.policy.to_dict(),
                "current_version": self.current.number,
                "base_version": next(v for v in reversed(self.versions) if v.exact).number,
                "versions": [v.to_dict() for v in self.versions],
                "requests": [r.to_dict() for r in self.requests],
                "refusals": list(self.refusals),
                "next_apply": [t.to_dict() for t in self.triggers],
                "erased_samples": self.erased,
                "erased_fraction": self.erased / max(int(self.data["n_train"]), 1),
                "pending": [r.id for r in self.pending], "entries": self.entries,
                "head": self.head, "chain_ok": not self.chain_problems,
                "chain_problems": list(self.chain_problems)}

    def table(self, *, requests: bool = False) -> str:
        """The status as text: the versions, the pending requests and the policy."""
        from unlearnkit.ledger.report import status_text

        return status_text(self, requests=requests)


# ---------------------------------------------------------------------- samples
@dataclass
class _Samples:
    """The training samples' ids as the ledger sees them now."""

    hashes: list[str]
    index: dict[str, int]
    ids: list[str] | None = None
    data: DataBundle | None = None

    def positions(self, hashes: Sequence[str]) -> tuple[np.ndarray, int]:
        """The positions of ``hashes`` in the training set, and how many are absent."""
        pos = [self.index[h] for h in hashes if h in self.index]
        return np.asarray(sorted(pos), dtype=np.int64), len(hashes) - len(pos)


# ---------------------------------------------------------------------- the ledger
class Ledger:
    """A ledger of deletion requests for one model (see the module's docstring).

    Open an existing ledger with ``Ledger(url)``; create one with :meth:`create`.

    Args:
        url: a SQLite file's path, or a SQLAlchemy URL (``sqlite:///ledger.sqlite``,
            ``postgresql+psycopg://user@host/db``: a team shares one ledger this way).
        data: for a ledger made on your own data (a :class:`DataBundle` that no registry
            loads), the same data, given every time the ledger is opened.
        ids: with ``data``, its id column (one id per training sample, in order), if the
            ledger was made with one.
        model: for a model of your own architecture (one unlearnkit does not register), an
            instance to load each version's weights into (a copy is made each time).
        log: called with one line per step of :meth:`apply` (e.g. ``print``).

    Raises:
        LedgerError: no ledger at ``url``, or the database cannot be reached.
    """

    def __init__(self, url: str | os.PathLike, *, data: DataBundle | None = None,
                 ids: Sequence[object] | None = None, model: nn.Module | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self._store = LedgerStore(url)
        self._data_given = data
        self._ids_given = ids
        self._template = model
        self._log = log or (lambda _msg: None)
        self.url = self._store.display
        # only the init entry is read here, so that a ledger whose later entries were damaged
        # still opens, to be audited
        entries, _ = self._store.read()
        init = entries[0].payload if entries and entries[0].kind == "init" else None
        init = init if isinstance(init, dict) else {}
        #: the ledger's unique id (from its init entry)
        self.id = str(init.get("ledger_id", ""))
        where = init.get("checkpoints")
        #: the folder of the versions' checkpoints
        self.checkpoints = CheckpointFolder(where if isinstance(where, str) else ".")

    def __repr__(self) -> str:
        return f"Ledger({self.url!r})"

    def close(self) -> None:
        """Release the database connections (a ``with Ledger(url) as ledger:`` block does it
        on leaving); the ledger can still be used after."""
        self._store.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ creating
    @classmethod
    def create(
        cls,
        url: str | os.PathLike,
        *,
        checkpoint: str | os.PathLike | nn.Module,
        data: str | DataBundle | None = None,
        data_root: str | os.PathLike | None = None,
        data_options: dict[str, Any] | None = None,
        ids: Sequence[object] | None = None,
        id_file: str | os.PathLike | None = None,
        checkpoints: str | os.PathLike | None = None,
        method: str = "finetune",
        params: dict[str, Any] | None = None,
        policy: RetrainPolicy | dict[str, Any] | None = None,
        seed: int = 0,
        model: nn.Module | None = None,
        log: Callable[[str], None] | None = None,
    ) -> Ledger:
        """Create a ledger whose version 0 is ``checkpoint``, trained on ``data``.

        Args:
            url: where the ledger lives (see :class:`Ledger`); must hold no ledger yet.
            checkpoint: version 0, the model in service: a checkpoint file or a model.
            data: a registered dataset's name (default: the one the checkpoint records), or
                your own :class:`DataBundle` (then give it again each time you open the
                ledger, with ``Ledger(url, data=...)``).
            data_root, data_options: where and how to load a registered dataset (default
                options: the checkpoint's).
            ids: your id column, one id per training sample in order (default: the dataset's
                own ids; see :mod:`unlearnkit.ledger.ids`). Give it again on opening.
            id_file: the id column as a file (one id per line), read each time it is needed.
            checkpoints: the folder for the versions' checkpoints (default: beside a SQLite
                file, ``<name>.checkpoints``; required for PostgreSQL).
            method, params: the default unlearning method of :meth:`apply` and its
                hyper-parameters.
            policy: the retrain policy (a :class:`RetrainPolicy` or its settings as a dict).
            seed: seeds every step (version ``k`` uses ``seed + k``).
            model: an instance of your own architecture (see :class:`Ledger`).

        Raises:
            LedgerError: a ledger already exists there, the data or ids do not fit the model.
        """
        from unlearnkit.data.registry import DATASETS, load_dataset
        from unlearnkit.methods.base import get_method
        from unlearnkit.models.checkpoint import load_checkpoint, read_checkpoint_info
        from unlearnkit.models.info import get_info

        store = LedgerStore(url)
        if store.exists():
            raise LedgerError(f"A ledger already exists at {store.display!r}.")
        pol = (policy if isinstance(policy, RetrainPolicy)
               else RetrainPolicy.from_dict(policy or {}))
        get_method(method, **(params or {}))  # checks the name and every value up front
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InvalidParameterError(f"The 'seed' parameter must be an int >= 0. Got {seed!r}.")
        # version 0
        if isinstance(checkpoint, nn.Module):
            original = checkpoint
            blob = checkpoint_bytes(original)
        else:
            path = Path(checkpoint)
            info = read_checkpoint_info(path)
            if info is not None and info.method is not None:
                warnings.warn(f"{str(path)!r} is itself an unlearned model (by "
                              f"{info.method.get('name')!r}); it becomes version 0 of the "
                              "ledger.", UserWarning, stacklevel=2)
            original = load_checkpoint(path, model=_copy(model))
            blob = path.read_bytes()
        info = get_info(original)
        recorded = (info.dataset or {}) if info is not None else {}
        # the data
        own = isinstance(data, DataBundle)
        if own:
            bundle = data
            name = bundle.name
            options: dict[str, Any] = {}
        else:
            name = data or recorded.get("name")
            if name is None:
                raise LedgerError("The checkpoint records no dataset: give the ledger's data "
                                  f"({', '.join(DATASETS.names())}, or your own DataBundle).")
            if recorded.get("name") not in (None, name):
                raise LedgerError(f"The checkpoint was trained on {recorded['name']!r}, not "
                                  f"{name!r}.")
            options = dict(recorded.get("options") or {}) if recorded.get("name") == name else {}
            options.update(data_options or {})
            bundle = load_dataset(name, root=data_root, **options)
        if info is not None and info.num_classes not in (None, bundle.num_classes):
            raise LedgerError(f"The model has {info.num_classes} classes but the data "
                              f"{name!r} has {bundle.num_classes}.")
        n = len(bundle.train)
        if ids is not None and id_file is not None:
            raise InvalidParameterError("Give the id column as 'ids' or as 'id_file', not both.")
        if ids is not None:
            kind = "column"
            column = sid.check_id_column(list(ids), n, "The id column")
        elif id_file is not None:
            kind = "column"
            column = _read_column(id_file, n)
        elif own:
            kind = "index"
            column = sid.index_ids(n)
        elif name == "imagefolder":
            kind = "paths"
            column = sid.image_tree_ids(_root(name, data_root))
            if len(column) != n:
                raise LedgerError(f"The image tree lists {len(column)} training images but "
                                  f"the loader read {n}.")
        else:
            kind = "index"
            column = sid.index_ids(n)
        salt = secrets.token_hex(16)
        hashes = sid.sample_hashes(salt, column)
        if checkpoints is None:
            if store.path is None:
                raise LedgerError("A PostgreSQL ledger needs a checkpoint folder that every "
                                  "user of it can reach: give checkpoints=... (--checkpoints).")
            checkpoints = store.path.with_name(store.path.stem + ".checkpoints")
        folder = CheckpointFolder(checkpoints)
        digest = folder.put(blob)
        payload = {
            "format": FORMAT,
            "ledger_id": uuid.uuid4().hex,
            "salt": salt,
            "data": {"name": name, "options": options, "own": own,
                     "root": str(_root(name, data_root).resolve())
                     if not own and DATASETS.get(name).needs_root else None,
                     "ids": kind,
                     "id_file": str(Path(id_file).resolve()) if id_file is not None else None,
                     "n_train": n, "n_test": len(bundle.test),
                     "num_classes": bundle.num_classes, "class_names": list(bundle.class_names),
                     "train_digest": sid.train_digest(hashes)},
            "checkpoints": str(folder.root),
            "method": {"name": method, "params": dict(params or {})},
            "seed": seed,
            "policy": pol.to_dict(),
            "version": {"version": 0, "kind": "original", "checkpoint": digest,
                        "arch": info.arch if info is not None else None},
        }
        store.create("init", _jsonable(payload))
        store.close()
        return cls(url, data=bundle if own else None, ids=ids, model=model, log=log)

    # ------------------------------------------------------------------ reading
    def _state(self, strict: bool = True) -> State:
        entries, head = self._store.read()
        if strict:
            problems = verify_chain(entries, head)
            if problems:
                raise LedgerError(f"The ledger's chain is broken: {problems[0]}. Nothing was "
                                  "done; run `unlearnkit ledger audit`.")
        return replay(entries)

    def status(self) -> LedgerStatus:
        """The ledger now: its versions, requests, refusals, and what the next :meth:`apply`
        would decide (each policy rule's value and limit)."""
        entries, head = self._store.read()
        problems = tuple(verify_chain(entries, head))
        st = replay(entries)
        return LedgerStatus(
            url=self.url, ledger_id=st.ledger_id, data=dict(st.config["data"]),
            method=st.method, policy=st.policy, versions=tuple(st.versions),
            requests=tuple(st.requests.values()), refusals=tuple(st.refusals),
            triggers=tuple(self._triggers(st, st.pending(), datetime.now(timezone.utc))),
            erased=len(st.erased_hashes()), entries=len(entries),
            head=entries[-1].hash if entries else "", chain_problems=problems)

    def entries(self) -> list[Entry]:
        """Every entry of the chain, in order."""
        return self._store.read()[0]

    def _triggers(self, st: State, batch: list[RequestRecord], now: datetime) -> list[Trigger]:
        steps, reqs = st.since_exact()
        samples = sum(r.n_samples for r in reqs) + sum(r.n_samples for r in batch)
        age = _age(steps[0].created_at, now) if steps else None
        return st.policy.evaluate(requests=len(reqs) + len(batch),
                                  fraction=samples / max(st.n_train(), 1), age=age)

    # ------------------------------------------------------------------ samples
    def _samples(self, st: State, *, load: bool) -> _Samples:
        """The training samples' hashes now; with ``load``, the data too. Checks that the
        data are the ledger's (samples may only have gone if a request named them)."""
        cfg = st.config["data"]
        data = self._load_data(cfg) if load else None
        if cfg["ids"] == "index":
            column = sid.index_ids(len(data.train) if data is not None else int(cfg["n_train"]))
        elif cfg["ids"] == "paths":
            column = sid.image_tree_ids(_root(cfg["name"], cfg["root"]))
        elif self._ids_given is not None:
            given = list(self._ids_given)
            column = sid.check_id_column(given, len(data.train) if data is not None
                                         else len(given), "The id column")
        elif cfg.get("id_file"):
            column = _read_column(cfg["id_file"], None if data is None else len(data.train))
        else:
            raise LedgerError("This ledger was made with an id column given in Python: open it "
                              "with Ledger(url, data=..., ids=...).")
        if data is not None and len(column) != len(data.train):
            raise LedgerError(f"The data have {len(data.train)} training samples but "
                              f"{len(column)} ids.")
        hashes = sid.sample_hashes(st.salt, column)
        requested = {h for r in st.requests.values() for h in r.hashes}
        present = set(hashes)
        if sid.train_digest(present | requested) != cfg["train_digest"] and \
                sid.train_digest(present) != cfg["train_digest"]:
            raise LedgerError(
                f"The training data are not the ledger's: {len(present)} samples now against "
                f"{cfg['n_train']} when the ledger was made, and they differ by more than "
                "erased samples. Load the data the ledger was made with (samples may only "
                "go once a request names them).")
        return _Samples(hashes, {h: i for i, h in enumerate(hashes)}, column, data)

    def _load_data(self, cfg: dict[str, Any]) -> DataBundle:
        from unlearnkit.data.registry import load_dataset

        if cfg.get("own"):
            if self._data_given is None:
                raise LedgerError(f"This ledger was made on your own data ({cfg['name']!r}): open "
                                  "it with Ledger(url, data=...) to apply or add requests.")
            data = self._data_given
        else:
            data = load_dataset(cfg["name"], root=cfg.get("root"), **(cfg.get("options") or {}))
        if data.num_classes != cfg["num_classes"]:
            raise LedgerError(f"The data have {data.num_classes} classes; the ledger's had "
                              f"{cfg['num_classes']}.")
        return data

    # ------------------------------------------------------------------ requests
    def add_request(
        self,
        ids: Sequence[object] | None = None,
        *,
        class_: int | str | None = None,
        reason: str | None = None,
        keep_ids: bool = False,
        skip_erased: bool = False,
        lines: Sequence[int] | None = None,
        source: str | None = None,
    ) -> RequestRecord:
        """Record a deletion request for the samples ``ids`` (or every remaining sample of
        ``class_``); it stays pending until :meth:`apply`.

        Args:
            ids: the samples' stable ids (see :mod:`unlearnkit.ledger.ids`).
            class_: a whole-class request instead: a class number or name.
            reason: free text kept with the request (e.g. the ticket's reference).
            keep_ids: store the ids themselves (by default only their digest and salted
                hashes are kept, so that the ledger holds no copy of the identifiers).
            skip_erased: leave out the ids already erased or already requested, instead of
                refusing the request (the result says how many were left out).
            lines, source: where each id came from, for messages (the command line's file).

        Raises:
            LedgerError: no id, an id listed twice, ids the training set does not hold, or
                ids already erased or pending (each named).
        """
        if (ids is None) == (class_ is None):
            raise InvalidParameterError("Give the request's ids or a class, not both and not "
                                        "neither.")
        if reason is not None and (not isinstance(reason, str) or len(reason) > _MAX_REASON):
            raise InvalidParameterError(f"The 'reason' must be a string of at most {_MAX_REASON} "
                                        "characters.")
        st = self._state()
        where = source or "The request"
        cls_number: int | None = None
        if class_ is not None:
            samples = self._samples(st, load=True)
            assert samples.data is not None and samples.ids is not None
            cls_number = _class_number(class_, samples.data)
            labels = samples.data.train.y.numpy()
            column = [samples.ids[i] for i in np.flatnonzero(labels == cls_number)]
            hashes = [samples.hashes[i] for i in np.flatnonzero(labels == cls_number)]
            where = f"Class {class_!r}"
            given = column
        else:
            assert ids is not None
            if isinstance(ids, (str, bytes)):
                raise InvalidParameterError("'ids' must be a sequence of ids, not one string.")
            given = [sid._check_id(v, f"{where}, id {i + 1}") for i, v in enumerate(ids)]
            if not given:
                raise LedgerError(f"{where} names no sample: nothing to erase.")
            first: dict[str, int] = {}
            for i, v in enumerate(given):
                if v in first:
                    raise LedgerError(f"{where}: the id {v!r} is listed twice ("
                                      f"{_at(lines, first[v])} and {_at(lines, i)}).")
                first[v] = i
            samples = self._samples(st, load=False)
            hashes = sid.sample_hashes(st.salt, given)
            unknown = [i for i, h in enumerate(hashes) if h not in samples.index]
            if unknown:
                shown = ", ".join(f"{given[i]!r} ({_at(lines, i)})" for i in unknown[:_SHOW])
                more = f" and {len(unknown) - _SHOW} more" if len(unknown) > _SHOW else ""
                raise LedgerError(
                    f"{where}: {len(unknown)} of {len(given)} ids are not training samples of "
                    f"the ledger's data ({_id_rule(st)}): {shown}{more}.")

        def build(entries: list[Entry]) -> list[tuple[str, dict[str, Any]]]:
            now = replay(entries)
            owner = {h: r for r in now.requests.values() for h in r.hashes}
            keep = [i for i, h in enumerate(hashes) if h not in owner]
            taken = [i for i, h in enumerate(hashes) if h in owner]
            if taken and (class_ is None and not skip_erased):
                shown = ", ".join(
                    f"{given[i]!r} ({_at(lines, i)}: {_owner_text(owner[hashes[i]])})"
                    for i in taken[:_SHOW])
                more = f" and {len(taken) - _SHOW} more" if len(taken) > _SHOW else ""
                raise LedgerError(
                    f"{where}: {len(taken)} of {len(given)} ids are already erased or requested: "
                    f"{shown}{more}. Leave them out, or pass --skip-erased.")
            if not keep:
                what = (f"class {cls_number} has no sample left that is not already erased or "
                        "requested" if class_ is not None else
                        "every id is already erased or requested")
                raise LedgerError(f"{where}: {what}: nothing new to erase.")
            remaining = now.n_train() - len(owner) - len(keep)
            if remaining <= 0:
                raise LedgerError(f"{where}: it would erase every remaining training sample; "
                                  "nothing would be left to train on.")
            chosen = [given[i] for i in keep]
            payload: dict[str, Any] = {
                "request": f"req-{len(now.requests) + 1}",
                "reason": reason, "n": len(keep), "digest": sid.id_set_digest(chosen),
                "hashes": [hashes[i] for i in keep]}
            if cls_number is not None:
                payload["class"] = cls_number
            if keep_ids:
                payload["ids"] = chosen
            if taken:
                payload["skipped"] = len(taken)
            return [("request", payload)]

        (entry,) = self._store.append(build)
        return replay(self._store.read()[0]).requests[entry.payload["request"]]

    # ------------------------------------------------------------------ configuration
    def configure(self, *, method: str | None = None, params: dict[str, Any] | None = None,
                  policy: RetrainPolicy | dict[str, Any] | None = None) -> None:
        """Change the default method (and its parameters) or the retrain policy; the change is
        an entry of the chain. A ``policy`` dict changes only the settings it names."""
        from unlearnkit.methods.base import get_method

        st = self._state()
        change: dict[str, Any] = {}
        if method is not None or params is not None:
            name = method or st.method["name"]
            p = dict(params if params is not None else
                     (st.method.get("params") if name == st.method["name"] else {}) or {})
            get_method(name, **p)
            change["method"] = {"name": name, "params": p}
        if policy is not None:
            pol = (policy if isinstance(policy, RetrainPolicy)
                   else RetrainPolicy.from_dict({**st.policy.to_dict(), **policy}))
            change["policy"] = pol.to_dict()
        if not change:
            raise InvalidParameterError("Nothing to change: give a method, params or a policy.")
        self._store.append(lambda entries: [("config", _jsonable(change))])

    # ------------------------------------------------------------------ models
    def _model(self, st: State, version: int) -> nn.Module:
        """The model of ``version``, from its checkpoint, after checking its digest."""
        from unlearnkit.models.checkpoint import load_checkpoint

        v = st.versions[version]
        problem = self.checkpoints.check(v.checkpoint)
        if problem:
            raise LedgerError(f"Version {version}: {problem}. Run `unlearnkit ledger audit`.")
        return load_checkpoint(self.checkpoints.path(v.checkpoint), model=_copy(self._template))

    def model(self, version: int | None = None) -> nn.Module:
        """The model of ``version`` (default: the current one), its checkpoint's digest
        checked."""
        st = self._state(strict=False)
        number = st.current.number if version is None else version
        if not 0 <= number < len(st.versions):
            raise InvalidParameterError(f"No version {version}: the ledger has versions 0 to "
                                        f"{len(st.versions) - 1}.")
        return self._model(st, number)

    # ------------------------------------------------------------------ apply
    def apply(
        self,
        *,
        method: str | None = None,
        params: dict[str, Any] | None = None,
        retrain: bool = False,
        calibrate: bool = False,
        budget: float | None = None,
        budget_seconds: float | None = None,
        max_trials: int | None = None,
        seed: int | None = None,
        device: str | torch.device | None = None,
        wait: float | None = None,
        progress: bool = False,
    ) -> ApplyResult:
        """Honour every pending request in one step: make the next version from the current
        one, judge it, and promote it or record why not.

        The forget set is the pending requests' samples; the retain set is every sample never
        erased. The step records the method, its parameters and seconds, the verdict for the
        new samples and for every sample erased so far, and the digests of the input and
        output checkpoints. A version whose verdicts are not among the policy's ``accept`` is
        not promoted: a ``refused`` entry says why and the requests stay pending (unless the
        policy retrains on failure, which then follows at once). A retrain (by the policy,
        or ``retrain=True``) trains version 0's architecture and recipe from scratch on every
        sample not erased, and resets the chain of approximations.

        Args:
            method, params: the unlearning method and its hyper-parameters (default: the
                ledger's).
            retrain: retrain from scratch whatever the policy says.
            calibrate: search the method's hyper-parameters first (:func:`unlearnkit.calibrate`)
                within ``budget`` (a share of version 0's training time; default 0.2),
                ``budget_seconds`` or ``max_trials``.
            seed: the step's seed (default: the ledger's seed + the version number).
            wait: seconds to wait for another ``apply`` on this ledger (default: refuse at once
                with :class:`~unlearnkit.exceptions.LedgerBusyError`; ``math.inf``: no limit).

        Raises:
            LedgerBusyError: another apply holds the ledger.
            LedgerError: a broken chain, a checkpoint changed on disk, data not the ledger's.
        """
        from unlearnkit.methods.base import get_method

        st0 = self._state()
        name = method or st0.method["name"]
        chosen = dict(params if params is not None else
                      (st0.method.get("params") if name == st0.method["name"] else {}) or {})
        get_method(name, **chosen)  # every check before the lock
        if not calibrate and any(x is not None for x in (budget, budget_seconds, max_trials)):
            raise InvalidParameterError("budget, budget_seconds and max_trials limit the "
                                        "calibration: add calibrate=True (--calibrate).")
        with self._store.apply_lock(self.id, wait):
            _failpoint("locked")
            return self._apply_locked(name, chosen, retrain=retrain, calibrate=calibrate,
                                      budget=budget, budget_seconds=budget_seconds,
                                      max_trials=max_trials, seed=seed, device=device,
                                      progress=progress)

    def _apply_locked(self, name: str, params: dict[str, Any], *, retrain: bool,
                      calibrate: bool, budget: float | None, budget_seconds: float | None,
                      max_trials: int | None, seed: int | None,
                      device: str | torch.device | None, progress: bool) -> ApplyResult:
        st = self._state()
        batch = st.pending()
        now = datetime.now(timezone.utc)
        triggers = self._triggers(st, batch, now)
        fired = [t for t in triggers if t.fired]
        if retrain:
            fired.append(Trigger("requested", True, True, True))
        steps, _ = st.since_exact()
        if not batch and not (fired and steps):
            return ApplyResult("nothing to apply", st.current.number, (), (),
                               "No pending request" + (": the current version is exact."
                                                       if not steps else "."))
        ctx = Step(self, st, device)
        written: list[Entry] = []
        if not fired:
            attempt = ctx.approximate(batch, name, params, triggers, calibrate=calibrate,
                                      budget=budget, budget_seconds=budget_seconds,
                                      max_trials=max_trials, seed=seed, progress=progress)
            if attempt["accepted"]:
                written += self._commit(st, "apply", attempt["payload"], attempt["blob"], batch)
                _failpoint("committed")
                v = attempt["payload"]["version"]
                return ApplyResult("applied", v, _ids(batch), _entries(written),
                                   f"Version {v} honours {len(batch)} request(s) "
                                   f"({attempt['payload']['n_new']} samples) by {name}.")
            written += self._commit(st, "refused", attempt["payload"], None, batch)
            _failpoint("committed")
            if not st.policy.on_failure:
                return ApplyResult("refused", st.current.number, _ids(batch), _entries(written),
                                   f"{name}'s version was refused: "
                                   f"{attempt['payload']['reason']}. The requests stay pending.")
            fired = [Trigger("on_failure", True, True, True)]
            st = self._state()
        payload, blob = ctx.retrain(batch, fired, triggers, seed=seed, progress=progress)
        written += self._commit(st, "retrain", payload, blob, batch)
        _failpoint("committed")
        v = payload["version"]
        return ApplyResult("retrained", v, _ids(batch), _entries(written),
                           f"Version {v} is an exact retrain ({'; '.join(payload['reasons'])})"
                           + (f", honouring {len(batch)} request(s)." if batch else "."))

    def _commit(self, st: State, kind: str, payload: dict[str, Any], blob: bytes | None,
                batch: list[RequestRecord]) -> list[Entry]:
        if blob is not None:
            digest = self.checkpoints.put(blob)
            assert digest == payload["checkpoint"]["output"]
            self._log(f"checkpoint {digest[:16]}... written")
            _failpoint("checkpoint-written")
        expected = st.current.number
        names = _ids(batch)

        def build(entries: list[Entry]) -> list[tuple[str, dict[str, Any]]]:
            now = replay(entries)
            if now.current.number != expected:
                raise LedgerError(f"The ledger changed during this apply (version "
                                  f"{now.current.number} appeared); nothing was written. Run "
                                  "apply again.")
            for r in names:
                if now.requests[r].version is not None:
                    raise LedgerError(f"Request {r} was honoured by another process during this "
                                      "apply; nothing was written.")
            return [(kind, payload)]

        return self._store.append(build, before_commit=lambda: _failpoint("entry-inserted"))

    # ------------------------------------------------------------------ evidence
    def held(self, version: int | None = None, *, device: str | torch.device | None = None
             ) -> list[dict[str, Any]]:
        """The verdict of ``version`` (default: the current one) on each request it honours,
        one by one: does each erasure still hold? ``[{"request", "version", "n", "outcome",
        "verdict"}]``, judged like :meth:`apply`'s verdicts (against the last exact version
        at or before ``version``)."""
        st = self._state(strict=False)
        number = st.current.number if version is None else version
        if not 0 <= number < len(st.versions):
            raise InvalidParameterError(f"No version {version}: the ledger has versions 0 to "
                                        f"{len(st.versions) - 1}.")
        ctx = Step(self, st, device)
        model = self._model(st, number)
        base_number = next(v.number for v in reversed(st.versions[:number + 1]) if v.exact)
        base = model if base_number == number else self._model(st, base_number)
        classes = st.erased_classes(number)
        out = []
        for r in st.applied(number):
            pos, absent = ctx.samples.positions(r.hashes)
            v = ctx.judge(model, base, pos, classes)
            out.append({"request": r.id, "version": r.version, "n": r.n_samples,
                        "absent": absent, "outcome": v["outcome"] if v else None, "verdict": v})
        return out

    def audit(self) -> AuditReport:
        """Check the hash chain entry by entry, replay it, and re-hash every version's
        checkpoint; list the checkpoint folder's orphans."""
        entries, head = self._store.read()
        problems = verify_chain(entries, head)
        checked = 0
        referenced: set[str] = set()
        try:
            st = replay(entries)
        except LedgerError as exc:
            problems.append(str(exc))
            st = None
        if st is not None:
            folder = CheckpointFolder(st.config["checkpoints"])
            for v in st.versions:
                referenced.add(v.checkpoint)
                problem = folder.check(v.checkpoint)
                checked += 1
                if problem:
                    problems.append(f"version {v.number} (entry {v.seq}): {problem}")
            for v in st.versions[1:]:
                inp = v.payload.get("checkpoint", {}).get("input")
                parent = st.versions[v.parent] if v.parent is not None else None
                want = st.versions[0].checkpoint if v.kind == "retrain" else (
                    parent.checkpoint if parent else None)
                if inp != want:
                    problems.append(f"version {v.number} (entry {v.seq}): its input checkpoint "
                                    f"{str(inp)[:16]}... is not version "
                                    f"{0 if v.kind == 'retrain' else v.parent}'s")
            orphans = tuple(f for f in folder.files()
                            if f.removesuffix(".safetensors") not in referenced)
        else:
            orphans = ()
        problems = list(dict.fromkeys(problems))
        return AuditReport(self.url, not problems, tuple(problems), len(entries),
                           entries[-1].hash if entries else None, checked, orphans)

    def export(self, out: str | os.PathLike) -> dict[str, str]:
        """Write ``ledger.json`` and ``ledger.html`` (requests, versions, verdicts, retrains,
        refusals and the audit) to the folder ``out``; return their paths."""
        from unlearnkit.ledger.report import export

        return export(self, out)


# ---------------------------------------------------------------------- helpers




def _entries(written: list[Entry]) -> tuple[dict[str, Any], ...]:
    return tuple({"seq": e.seq, "kind": e.kind, "payload": e.payload} for e in written)


def _copy(model: nn.Module | None) -> nn.Module | None:
    import copy

    return None if model is None else copy.deepcopy(model)




def _at(lines: Sequence[int] | None, i: int) -> str:
    return f"line {lines[i]}" if lines is not None and i < len(lines) else f"item {i + 1}"


def _owner_text(r: RequestRecord) -> str:
    return (f"erased by {r.id} in version {r.version}" if r.version is not None
            else f"pending in {r.id}")


def _id_rule(st: State) -> str:
    cfg = st.config["data"]
    if cfg["ids"] == "index":
        return f"{cfg['name']}: ids are training-set indices 0-{int(cfg['n_train']) - 1}"
    if cfg["ids"] == "paths":
        return f"{cfg['name']}: ids are paths relative to its root, like train/<class>/<file>"
    return f"{cfg['name']}: ids come from its id column"


def _root(name: str, root: str | os.PathLike | None) -> Path:
    from unlearnkit.data.registry import default_data_root

    return Path(root).expanduser() if root is not None else default_data_root() / name


def _read_column(path: str | os.PathLike, n: int | None) -> list[str]:
    column, _ = sid.read_ids(path)
    return sid.check_id_column(column, len(column) if n is None else n,
                               f"The id file {str(path)!r}")


def _class_number(c: int | str, data: DataBundle) -> int:
    from unlearnkit.data.splits import _class_index

    try:
        return _class_index(data, c)
    except UnlearnkitError as exc:
        raise LedgerError(str(exc)) from None

