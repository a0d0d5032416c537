"""``unlearnkit ledger``: the ledger's commands (``init``, ``request add``, ``apply``, ``status``,
``audit``, ``export``, ``config``). Thin: parse, call :class:`unlearnkit.ledger.Ledger`, print.

Each command opens the ledger named by ``--ledger`` (a SQLite file or a database URL; default
``$UNLEARNKIT_LEDGER``, else ``ledger.sqlite``). ``ledger audit`` exits with 1 when it finds a
problem (and prints each, naming the entry); every other failure is the usual one line
``unlearnkit: error: ...`` and exit code 2.
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Any

__all__ = ["EXIT", "add_ledger_parser", "text"]

#: The key of a command's result that holds its exit code (the audit's 1 on a finding).
EXIT = "_exit"
LEDGER_ENV = "UNLEARNKIT_LEDGER"


def _ledger_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ledger", default=os.environ.get(LEDGER_ENV, "ledger.sqlite"),
                   metavar="FILE|URL",
                   help="the ledger: a SQLite file or a SQLAlchemy URL such as "
                        "postgresql+psycopg://user@host/db (default: $UNLEARNKIT_LEDGER, else "
                        "ledger.sqlite)")


def _limit(kind: type) -> Any:
    """An argparse type: a value of ``kind``, or ``none`` / ``off`` for no limit."""
    def parse(text: str) -> Any:
        if text.strip().lower() in ("none", "off", "never"):
            return None
        if kind is str:
            return text
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be a{'n int' if kind is int else ' number'} or 'none'; got {text!r}"
            ) from None
    return parse


def _policy_args(p: argparse.ArgumentParser, *, defaults: bool) -> None:
    from unlearnkit.ledger.policy import RetrainPolicy, format_seconds

    d = RetrainPolicy()
    keep = argparse.SUPPRESS if not defaults else None
    g = p.add_argument_group("retrain policy (each rule: a limit, or 'none' to turn it off)")
    g.add_argument("--retrain-after-requests", type=_limit(int), metavar="N",
                   default=d.after_requests if defaults else keep,
                   help=f"retrain when approximate steps would honour N requests since the "
                        f"last exact model (default: {d.after_requests})")
    g.add_argument("--retrain-after-fraction", type=_limit(float), metavar="F",
                   default=d.after_fraction if defaults else keep,
                   help=f"... when they would erase this share of the training data (default: "
                        f"{d.after_fraction})")
    g.add_argument("--retrain-after-age", type=_limit(str), metavar="DURATION",
                   default=format_seconds(d.after_age) if defaults else keep,
                   help=f"... when the oldest approximate step is this old, e.g. 12h, 30d "
                        f"(default: {format_seconds(d.after_age)})")
    g.add_argument("--retrain-on-failure", choices=("yes", "no"),
                   default="yes" if defaults else keep,
                   help="retrain at once when an approximate step's verdict fails (default: "
                        "yes)")
    g.add_argument("--accept", metavar="OUTCOMES", default="forgotten" if defaults else keep,
                   help="verdict outcomes that let a version be promoted, comma-separated "
                        "(default: forgotten)")


def _policy(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for flag, key in (("retrain_after_requests", "after_requests"),
                      ("retrain_after_fraction", "after_fraction"),
                      ("retrain_after_age", "after_age")):
        if hasattr(args, flag):
            out[key] = getattr(args, flag)
    if hasattr(args, "retrain_on_failure"):
        out["on_failure"] = args.retrain_on_failure == "yes"
    if hasattr(args, "accept"):
        out["accept"] = tuple(a.strip() for a in args.accept.split(",") if a.strip())
    return out


def _open(args: argparse.Namespace, **kw: Any) -> Any:
    from unlearnkit.cli import _log
    from unlearnkit.ledger.core import Ledger

    return Ledger(args.ledger, log=_log, **kw)


# ---------------------------------------------------------------------- commands
def cmd_init(args: argparse.Namespace) -> dict[str, Any]:
    from unlearnkit.cli import _log, _method_params, _options
    from unlearnkit.ledger.core import Ledger

    ledger = Ledger.create(
        args.ledger, checkpoint=args.checkpoint, data=args.data, data_root=args.data_root,
        data_options=_options(args.data_option, "--data-option") or None,
        id_file=args.id_file, checkpoints=args.checkpoints, method=args.method,
        params=_method_params(args.method, args.param), policy=_policy(args), seed=args.seed,
        log=_log)
    s = ledger.status()
    return {"command": "ledger init", "ledger": ledger.url, "ledger_id": ledger.id,
            "checkpoints": str(ledger.checkpoints.root), "data": s.data,
            "method": s.method, "policy": s.policy.to_dict(),
            "version": s.current.to_dict(), "policy_text": s.policy.describe()}


def cmd_request_add(args: argparse.Namespace) -> dict[str, Any]:
    from unlearnkit.ledger.ids import read_ids

    ledger = _open(args)
    if args.ids is not None:
        ids, lines = read_ids(args.ids)
        r = ledger.add_request(ids, reason=args.reason, keep_ids=args.keep_ids,
                               skip_erased=args.skip_erased, lines=lines,
                               source=f"The id file {args.ids!r}")
    else:
        r = ledger.add_request(class_=args.class_, reason=args.reason, keep_ids=args.keep_ids)
    s = ledger.status()
    return {"command": "ledger request add", "ledger": ledger.url, "request": r.to_dict(),
            "pending": [p.id for p in s.pending]}


def cmd_apply(args: argparse.Namespace) -> dict[str, Any]:
    from unlearnkit.cli import _bars, _device, _method_params

    ledger = _open(args)
    params = _method_params(args.method, args.param) if args.method else (
        _params_for_default(ledger, args.param))
    result = ledger.apply(method=args.method, params=params, retrain=args.retrain,
                          calibrate=args.calibrate, budget=args.budget,
                          budget_seconds=args.budget_seconds, max_trials=args.max_trials,
                          seed=args.seed, device=_device(args.device), wait=args.wait,
                          progress=_bars())
    return {"command": "ledger apply", "ledger": ledger.url, **result.to_dict()}


def _params_for_default(ledger: Any, pairs: list[str] | None) -> dict[str, Any] | None:
    """``--param`` without ``--method``: the ledger's default method, its stored parameters
    with these on top."""
    from unlearnkit.cli import _method_params

    if not pairs:
        return None
    m = ledger.status().method
    return {**(m.get("params") or {}), **_method_params(m["name"], pairs)}


def cmd_status(args: argparse.Namespace) -> dict[str, Any]:
    ledger = _open(args)
    s = ledger.status()
    return {"command": "ledger status", "ledger": ledger.url, **s.to_dict(),
            "_table": s.table(requests=args.requests)}


def cmd_audit(args: argparse.Namespace) -> dict[str, Any]:
    ledger = _open(args)
    report = ledger.audit()
    return {"command": "ledger audit", **report.to_dict(), EXIT: 0 if report.ok else 1}


def cmd_export(args: argparse.Namespace) -> dict[str, Any]:
    ledger = _open(args)
    paths = ledger.export(args.out)
    return {"command": "ledger export", "ledger": ledger.url, "files": paths}


def cmd_config(args: argparse.Namespace) -> dict[str, Any]:
    from unlearnkit.cli import _method_params

    ledger = _open(args)
    before = ledger.status()
    name = args.method or before.method["name"]
    params = _method_params(name, args.param) if args.param is not None else None
    policy = _policy(args) or None
    ledger.configure(method=args.method, params=params, policy=policy)
    after = ledger.status()
    return {"command": "ledger config", "ledger": ledger.url, "method": after.method,
            "policy": after.policy.to_dict(), "policy_text": after.policy.describe()}


# ---------------------------------------------------------------------- the parser
def add_ledger_parser(sub: Any) -> None:
    """Add ``ledger`` and its sub-commands to the ``unlearnkit`` parser's sub-parsers."""
    from unlearnkit.cli import _add_common, _add_data
    from unlearnkit.methods.base import METHODS

    methods = ", ".join(METHODS.names())
    top = sub.add_parser(
        "ledger", help="a ledger of deletion requests over a model's life",
        description="Record erasure requests by stable sample ids, apply them in batches (one "
                    "model version per batch, judged by the oracle-free verdict), retrain from "
                    "scratch when the policy says so, and audit the hash-chained record.")
    cmds = top.add_subparsers(dest="ledger_command", required=True, metavar="COMMAND",
                              parser_class=type(top))

    p = cmds.add_parser("init", help="create a ledger whose version 0 is a checkpoint")
    p.add_argument("--checkpoint", required=True, metavar="FILE",
                   help="the model in service (version 0)")
    _add_data(p, required=False)
    p.add_argument("--id-file", metavar="FILE",
                   help="your id column: one id per training sample, in order (default: the "
                        "dataset's own ids, the index for built-in sets, the path under the "
                        "root for image folders)")
    p.add_argument("--checkpoints", metavar="DIR",
                   help="folder for the versions' checkpoints (default: beside a SQLite "
                        "ledger, NAME.checkpoints; required for PostgreSQL)")
    p.add_argument("--method", default="finetune",
                   help=f"default unlearning method of apply (default: finetune): {methods}")
    p.add_argument("--param", action="append", metavar="K=V",
                   help="a hyper-parameter of the default method; repeatable")
    _policy_args(p, defaults=True)
    _ledger_arg(p)
    _add_common(p, device=False)
    p.set_defaults(func=cmd_init)

    p = cmds.add_parser("request", help="record deletion requests")
    rq = p.add_subparsers(dest="request_command", required=True, metavar="COMMAND",
                          parser_class=type(top))
    p = rq.add_parser("add", help="record one request: samples by id, or a whole class")
    ex = p.add_mutually_exclusive_group(required=True)
    ex.add_argument("--ids", metavar="FILE",
                    help="the samples' ids, one per line (# comments) or a .json list")
    ex.add_argument("--class", dest="class_", metavar="CLASS",
                    help="every training sample of this class (number or name)")
    p.add_argument("--reason", metavar="TEXT", help="kept with the request (e.g. a ticket)")
    p.add_argument("--keep-ids", action="store_true",
                   help="also store the ids (by default only their digest and salted hashes)")
    p.add_argument("--skip-erased", action="store_true",
                   help="leave out ids already erased or requested instead of refusing")
    _ledger_arg(p)
    _add_common(p, seed=False, device=False)
    p.set_defaults(func=cmd_request_add)

    p = cmds.add_parser("apply", help="honour every pending request: the next model version")
    p.add_argument("--method", help=f"the unlearning method (default: the ledger's): {methods}")
    p.add_argument("--param", action="append", metavar="K=V",
                   help="a hyper-parameter of the method; repeatable")
    p.add_argument("--retrain", action="store_true",
                   help="retrain from scratch on every sample not erased, whatever the policy")
    p.add_argument("--wait", nargs="?", type=float, const=math.inf, default=None,
                   metavar="SECONDS",
                   help="wait for another apply on this ledger to end (default: refuse at once; "
                        "no value: wait as long as it takes)")
    c = p.add_argument_group("calibration")
    c.add_argument("--calibrate", action="store_true",
                   help="search the method's hyper-parameters first, judged by the verdict")
    c.add_argument("--budget", type=float, metavar="F",
                   help="budget as a share of version 0's training time (default 0.2)")
    c.add_argument("--budget-seconds", type=float, metavar="S", help="budget in seconds")
    c.add_argument("--max-trials", type=int, metavar="N", help="stop after N trials")
    _ledger_arg(p)
    p.add_argument("--seed", type=int, default=None, metavar="S",
                   help="the step's seed (default: the ledger's seed + the version number)")
    _add_common(p, seed=False)
    p.set_defaults(func=cmd_apply)

    p = cmds.add_parser("status", help="versions, verdicts, pending requests and the policy")
    p.add_argument("--requests", action="store_true", help="also list every request")
    _ledger_arg(p)
    _add_common(p, seed=False, device=False)
    p.set_defaults(func=cmd_status)

    p = cmds.add_parser("audit", help="check the hash chain and every checkpoint's digest "
                                      "(exit 1 on a problem)")
    _ledger_arg(p)
    _add_common(p, seed=False, device=False)
    p.set_defaults(func=cmd_audit)

    p = cmds.add_parser("export", help="write ledger.json and ledger.html to a folder")
    p.add_argument("--out", required=True, metavar="DIR", help="the folder to write")
    _ledger_arg(p)
    _add_common(p, seed=False, device=False)
    p.set_defaults(func=cmd_export)

    p = cmds.add_parser("config", help="change the default method or the retrain policy")
    p.add_argument("--method", help=f"the default unlearning method: {methods}")
    p.add_argument("--param", action="append", metavar="K=V",
                   help="its hyper-parameters (replacing the stored ones); repeatable")
    _policy_args(p, defaults=False)
    _ledger_arg(p)
    _add_common(p, seed=False, device=False)
    p.set_defaults(func=cmd_config)


# ---------------------------------------------------------------------- text output
def _verdict_line(label: str, v: dict[str, Any] | None) -> list[str]:
    from unlearnkit.metrics.verdict import Verdict

    if not v:
        return []
    lines = [f"  verdict, {label}: {v['outcome']}"]
    for part in v.get("parts") or []:
        scope = (f"classes {part['classes']}" if part["scope"] == "classes"
                 else f"{part['n']} samples")
        lines.append(f"    {scope}: {Verdict.from_dict(part).summary()}")
    return lines


def text(result: dict[str, Any]) -> str:
    """The text a ledger command prints (without ``--json``)."""
    from unlearnkit.ledger.report import request_span

    cmd = result["command"]
    if cmd == "ledger init":
        v = result["version"]
        return (f"Created the ledger {result['ledger']} (id {result['ledger_id'][:12]}): "
                f"{result['data']['name']}, {result['data']['n_train']} training samples; "
                f"version 0 is checkpoint {v['checkpoint'][:16]}... in "
                f"{result['checkpoints']}\n"
                f"default method: {result['method']['name']}; policy: {result['policy_text']}")
    if cmd == "ledger request add":
        r = result["request"]
        what = f"class {r['class']}, " if r.get("class") is not None else ""
        skipped = (f"; {r['skipped']} id{'s' if r['skipped'] != 1 else ''} left out (already "
                   "erased or requested)"
                   if r.get("skipped") else "")
        return (f"Recorded {r['id']}: {what}{r['n_samples']} samples (id digest "
                f"{r['digest'][:16]}...){skipped}; pending: "
                f"{request_span(result['pending'])}. Run `unlearnkit ledger apply`.")
    if cmd == "ledger apply":
        lines = [result["message"]]
        for e in result["entries"]:
            p = e["payload"]
            verdicts = p.get("verdicts") or {}
            head = {"apply": f"entry {e['seq']}: version {p.get('version')}",
                    "retrain": f"entry {e['seq']}: version {p.get('version')} (exact retrain)",
                    "refused": f"entry {e['seq']}: refused ({p.get('reason')})"}[e["kind"]]
            secs = (p.get("seconds") or {}).get("method")
            lines.append(f"{head}; {p['method']['name']}"
                         + (f" in {secs:.2f} s" if secs is not None else ""))
            lines += _verdict_line("new samples", verdicts.get("new"))
            lines += _verdict_line("all erased samples", verdicts.get("all"))
        return "\n".join(lines)
    if cmd == "ledger status":
        return str(result["_table"])
    if cmd == "ledger audit":
        head = f"head {result['head']}" if result.get("head") else "no entry"
        lines = [f"Audit of {result['url']}: " + ("OK" if result["ok"] else "FAILED"),
                 *(f"  {p}" for p in result["problems"]),
                 f"checked {result['entries']} entries ({head}) and {result['checkpoints']} "
                 "checkpoints"]
        if result["orphans"]:
            lines.append(f"note: {len(result['orphans'])} file(s) in the checkpoint folder that "
                         f"no entry names (left by an interrupted apply; harmless): "
                         f"{', '.join(result['orphans'][:5])}")
        return "\n".join(lines)
    if cmd == "ledger export":
        return "\n".join([f"Exported {result['ledger']}:",
                          *(f"  {v}" for v in result["files"].values())])
    if cmd == "ledger config":
        return (f"default method: {result['method']['name']} {result['method']['params']}; "
                f"policy: {result['policy_text']}")
    raise AssertionError(cmd)
