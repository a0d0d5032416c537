"""The ledger's state, rebuilt by replaying its entries in order.

The entries are the only record: requests, versions, refusals and the configuration are what
replaying them gives (:func:`replay`), so there is no second table that could disagree with the
chain. Replaying also checks that the entries make sense together (a version extends the one
before it, a request is honoured once), and names the first entry that does not.

Entry kinds and their payloads (JSON objects):

* ``init`` (entry 1): ``ledger_id``, ``salt``, ``data`` (the dataset, how its ids are made,
  ``n_train``, ``train_digest``), ``checkpoints`` (the folder), ``method`` (the default
  ``{"name", "params"}``), ``seed``, ``policy`` (:class:`RetrainPolicy`), ``version`` (version
  0: ``checkpoint``, its SHA-256);
* ``request``: ``request`` (its id), ``reason``, ``n``, ``digest`` (of the id set),
  ``hashes`` (salted, one per sample), ``ids`` (only when kept), ``class`` (a whole-class
  request);
* ``apply`` (an approximate version) and ``retrain`` (an exact one): ``version``, ``parent``,
  ``base`` (the last exact version it builds on), ``requests``, ``method``, ``seconds``,
  ``verdicts`` (``new``, ``all``), ``checkpoint`` (``input``, ``output`` digests), ``policy``
  (each rule's value and whether it fired), and for a retrain its ``reasons``;
* ``refused``: an approximate version that failed its verdict and was not promoted:
  ``attempt`` (the version it would have been), ``requests``, ``method``, ``verdicts``,
  ``reason``, ``checkpoint`` (``input``, and ``output``: the digest of the model not kept);
* ``config``: a change of the default ``method`` or of the ``policy``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from unlearnkit.exceptions import LedgerError
from unlearnkit.ledger.policy import RetrainPolicy
from unlearnkit.ledger.store import Entry

__all__ = ["KINDS", "RequestRecord", "State", "VersionRecord", "replay"]

KINDS = ("init", "request", "apply", "retrain", "refused", "config")
EXACT = ("original", "retrain")


@dataclass
class RequestRecord:
    """One deletion request, as the ledger knows it.

    Attributes:
        id: its unique id (``req-1``, ``req-2``...).
        created_at: when it was recorded (UTC, ISO 8601).
        reason: the free text given with it.
        n_samples: how many training samples it names.
        digest: SHA-256 of its id set (:func:`unlearnkit.ledger.ids.id_set_digest`).
        hashes: the salted hash of each sample (how later steps find them).
        ids: the ids themselves, only when the user chose to keep them.
        class_: the class, for a whole-class request.
        version: the version that honours it (``None``: pending).
        attempts: how many approximate versions for it were refused.
        skipped: how many of the given ids were left out (already erased or requested).
        seq: its entry.
    """

    id: str
    created_at: str
    reason: str | None
    n_samples: int
    digest: str
    hashes: tuple[str, ...]
    ids: tuple[str, ...] | None
    class_: int | None
    seq: int
    version: int | None = None
    attempts: int = 0
    skipped: int = 0

    @property
    def status(self) -> str:
        return "pending" if self.version is None else "applied"

    def to_dict(self, *, hashes: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id, "created_at": self.created_at, "reason": self.reason,
            "n_samples": self.n_samples, "digest": self.digest, "class": self.class_,
            "status": self.status, "version": self.version, "refused_attempts": self.attempts,
            "skipped": self.skipped, "entry": self.seq}
        if self.ids is not None:
            d["ids"] = list(self.ids)
        if hashes:
            d["hashes"] = list(self.hashes)
        return d


@dataclass
class VersionRecord:
    """One model version: the original (0), an approximate step or an exact retrain."""

    number: int
    kind: str
    created_at: str
    checkpoint: str
    seq: int
    parent: int | None = None
    base: int = 0
    requests: tuple[str, ...] = ()
    payload: dict[str, Any] = field(default_factory=dict)

    @property
    def exact(self) -> bool:
        return self.kind in EXACT

    def to_dict(self) -> dict[str, Any]:
        p = self.payload
        return {"version": self.number, "kind": self.kind, "created_at": self.created_at,
                "parent": self.parent, "base": self.base, "requests": list(self.requests),
                "checkpoint": self.checkpoint, "entry": self.seq, "method": p.get("method"),
                "seconds": p.get("seconds"), "verdicts": p.get("verdicts"),
                "n_new": p.get("n_new"), "n_erased": p.get("n_erased"),
                "reasons": p.get("reasons"), "policy": p.get("policy"),
                "calibration": p.get("calibration"), "notes": p.get("notes")}


@dataclass
class State:
    """What the entries say, replayed (see :func:`replay`)."""

    config: dict[str, Any] = field(default_factory=dict)
    policy: RetrainPolicy = field(default_factory=RetrainPolicy)
    method: dict[str, Any] = field(default_factory=dict)
    requests: dict[str, RequestRecord] = field(default_factory=dict)
    versions: list[VersionRecord] = field(default_factory=list)
    refusals: list[dict[str, Any]] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)

    @property
    def ledger_id(self) -> str:
        return str(self.config["ledger_id"])

    @property
    def salt(self) -> str:
        return str(self.config["salt"])

    @property
    def current(self) -> VersionRecord:
        return self.versions[-1]

    @property
    def base(self) -> VersionRecord:
        """The last exact version (the original or the last retrain)."""
        return next(v for v in reversed(self.versions) if v.exact)

    def pending(self) -> list[RequestRecord]:
        return [r for r in self.requests.values() if r.version is None]

    def applied(self, upto: int | None = None) -> list[RequestRecord]:
        """The requests honoured by version ``upto`` (default: the current one)."""
        top = self.current.number if upto is None else upto
        return [r for r in self.requests.values() if r.version is not None and r.version <= top]

    def erased_hashes(self, upto: int | None = None) -> set[str]:
        return {h for r in self.applied(upto) for h in r.hashes}

    def erased_classes(self, upto: int | None = None) -> set[int]:
        return {r.class_ for r in self.applied(upto) if r.class_ is not None}

    def since_exact(self) -> tuple[list[VersionRecord], list[RequestRecord]]:
        """The approximate versions after the last exact one, and the requests they honour."""
        b = self.base.number
        steps = [v for v in self.versions if v.number > b]
        reqs = [self.requests[r] for v in steps for r in v.requests]
        return steps, reqs

    def n_train(self) -> int:
        return int(self.config["data"]["n_train"])


def _version(p: dict[str, Any], kind: str, e: Entry, st: State) -> VersionRecord:
    number = p["version"]
    if number != len(st.versions):
        raise LedgerError(f"{e.label()}: it makes version {number}, but the next version is "
                          f"{len(st.versions)}")
    if p["parent"] != st.current.number:
        raise LedgerError(f"{e.label()}: it extends version {p['parent']}, but the current "
                          f"version is {st.current.number}")
    reqs = tuple(p["requests"])
    _pending(reqs, e, st)
    base = number if kind == "retrain" else st.base.number
    return VersionRecord(number, "retrain" if kind == "retrain" else "approximate",
                         e.created_at, str(p["checkpoint"]["output"]), e.seq, p["parent"], base,
                         reqs, p)


def _pending(reqs: tuple[str, ...], e: Entry, st: State) -> None:
    for r in reqs:
        if r not in st.requests:
            raise LedgerError(f"{e.label()}: it names request {r!r}, which no earlier entry "
                              "records")
        if st.requests[r].version is not None:
            raise LedgerError(f"{e.label()}: request {r!r} was already honoured by version "
                              f"{st.requests[r].version}")


def replay(entries: list[Entry]) -> State:
    """The state the entries describe, in order.

    Raises:
        LedgerError: an entry that is malformed or contradicts the ones before it (named).
    """
    st = State(entries=entries)
    seen_hashes: dict[str, str] = {}
    for e in entries:
        p = e.payload
        if not isinstance(p, dict):
            raise LedgerError(f"{e.label()}: its payload is not a JSON object")
        if e.kind not in KINDS:
            raise LedgerError(f"{e.label()}: unknown kind {e.kind!r}")
        if (e.kind == "init") != (e.seq == 1):
            raise LedgerError(f"{e.label()}: the init entry must be the first and only the first")
        try:
            datetime.fromisoformat(e.created_at)
            if e.kind == "init":
                st.config = p
                st.policy = RetrainPolicy.from_dict(p["policy"])
                st.method = dict(p["method"])
                v = p["version"]
                st.versions.append(VersionRecord(0, "original", e.created_at,
                                                 str(v["checkpoint"]), e.seq, payload=v))
            elif e.kind == "config":
                if "policy" in p:
                    st.policy = RetrainPolicy.from_dict(p["policy"])
                if "method" in p:
                    st.method = dict(p["method"])
            elif e.kind == "request":
                rid = str(p["request"])
                if rid in st.requests:
                    raise LedgerError(f"{e.label()}: request id {rid!r} is used twice")
                hashes = tuple(str(h) for h in p["hashes"])
                if len(hashes) != p["n"] or not hashes:
                    raise LedgerError(f"{e.label()}: it says {p['n']} samples but holds "
                                      f"{len(hashes)} sample hashes")
                for h in hashes:
                    if h in seen_hashes:
                        raise LedgerError(f"{e.label()}: a sample of it is already in request "
                                          f"{seen_hashes[h]!r}")
                    seen_hashes[h] = rid
                ids = p.get("ids")
                st.requests[rid] = RequestRecord(
                    rid, e.created_at, p.get("reason"), int(p["n"]), str(p["digest"]), hashes,
                    tuple(ids) if ids is not None else None,
                    int(p["class"]) if p.get("class") is not None else None, e.seq,
                    skipped=int(p.get("skipped", 0)))
            elif e.kind in ("apply", "retrain"):
                v = _version(p, e.kind, e, st)
                for r in v.requests:
                    st.requests[r].version = v.number
                st.versions.append(v)
            elif e.kind == "refused":
                reqs = tuple(p["requests"])
                _pending(reqs, e, st)
                for r in reqs:
                    st.requests[r].attempts += 1
                st.refusals.append({"entry": e.seq, "created_at": e.created_at, **p})
        except LedgerError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise LedgerError(f"{e.label()}: malformed payload ({type(exc).__name__}: "
                              f"{exc})") from None
    if not st.versions:
        raise LedgerError("The ledger has no init entry.")
    return st
