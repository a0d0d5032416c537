"""The ledger as text (``ledger status``) and as a report (``ledger export``: JSON and HTML).

The JSON report holds every entry of the chain as stored, so that an auditor can recompute
the chain from it alone (:func:`unlearnkit.ledger.store.verify_chain`); the HTML report is one
self-contained page for people: the audit, the versions with their verdicts, the requests, the
refusals and the retrains.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unlearnkit.ledger.policy import format_seconds
from unlearnkit.models.checkpoint import atomic_write

if TYPE_CHECKING:
    from unlearnkit.ledger.core import Ledger, LedgerStatus
    from unlearnkit.ledger.state import RequestRecord, VersionRecord

__all__ = ["export", "request_span", "status_text"]


def request_span(ids: list[str] | tuple[str, ...], limit: int = 4) -> str:
    """``req-1..req-3`` for a run of consecutive requests, else a short list.

    >>> request_span(["req-1", "req-2", "req-3"]), request_span(["req-2", "req-5"])
    ('req-1..req-3', 'req-2, req-5')
    """
    if not ids:
        return "-"
    nums = [int(i.rsplit("-", 1)[1]) if i.rsplit("-", 1)[-1].isdigit() else None for i in ids]
    if len(ids) > 2 and None not in nums and nums == list(range(nums[0], nums[0] + len(nums))):
        return f"{ids[0]}..{ids[-1]}"
    shown = ", ".join(ids[:limit])
    return shown + (f" (+{len(ids) - limit})" if len(ids) > limit else "")


def _outcome(v: dict[str, Any] | None) -> str:
    return "-" if not v else str(v.get("outcome"))


def _secs(v: VersionRecord) -> str:
    s = (v.payload.get("seconds") or {}).get("method")
    return "-" if s is None else f"{s:.2f}"


def _grid(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _id_kind(data: dict[str, Any]) -> str:
    return {"index": "training-set indices", "paths": "file paths under the root",
            "column": "an id column"}.get(data.get("ids", ""), str(data.get("ids")))


def status_text(s: LedgerStatus, *, requests: bool = False) -> str:
    """The status table (see :meth:`LedgerStatus.table`)."""
    d = s.data
    n = int(d["n_train"])
    cur = s.current
    base = next(v for v in reversed(s.versions) if v.exact)
    lines = [
        f"Ledger {s.url} (id {s.ledger_id[:12]})",
        f"data: {d['name']}, {n} training samples (ids: {_id_kind(d)}); default method: "
        f"{s.method['name']}" + (f" {s.method['params']}" if s.method.get("params") else ""),
        f"current: v{cur.number} ({cur.kind}, base v{base.number}); {s.erased} samples erased "
        f"({s.erased / max(n, 1):.2%}); {s.entries} entries, head {s.head[:16]}",
    ]
    if s.chain_problems:
        lines.append(f"CHAIN BROKEN: {s.chain_problems[0]} (run `unlearnkit ledger audit`)")
    rows = []
    for v in s.versions:
        p = v.payload
        verdicts = p.get("verdicts") or {}
        m = p.get("method") or {}
        rows.append([f"v{v.number}", v.kind, m.get("name", "-") if v.number else "-",
                     request_span(list(v.requests)),
                     str(p.get("n_new", "-")) if v.number else "-",
                     str(p.get("n_erased", "-")) if v.number else "-",
                     _outcome(verdicts.get("new")), _outcome(verdicts.get("all")),
                     _secs(v), v.created_at[:19].replace("T", " "), v.checkpoint[:12]])
    lines += ["", *_grid(["version", "kind", "method", "requests", "new", "erased",
                          "verdict new", "verdict all", "seconds", "created (UTC)",
                          "checkpoint"], rows)]
    if s.refusals:
        lines.append("")
        for r in s.refusals:
            m = r.get("method") or {}
            lines.append(f"refused: entry {r['entry']}, attempted v{r.get('attempt')} by "
                         f"{m.get('name')} for {request_span(r.get('requests') or [])}: "
                         f"{r.get('reason')}")
    pending = s.pending
    lines.append("")
    lines.append("pending: " + (", ".join(f"{r.id} ({r.n_samples} samples"
                                          + (f", class {r.class_}" if r.class_ is not None
                                             else "") + ")" for r in pending[:10])
                                + (f" (+{len(pending) - 10})" if len(pending) > 10 else "")
                                if pending else "none"))
    rules = []
    for t in s.triggers:
        if t.rule == "after_requests":
            rules.append(f"requests since exact {t.value}/{t.limit}")
        elif t.rule == "after_fraction":
            rules.append(f"erased share since exact {float(t.value or 0):.2%}/"
                         f"{float(t.limit or 0):.0%}")
        elif t.rule == "after_age":
            age = "-" if t.value is None else format_seconds(round(float(t.value)))
            rules.append(f"oldest approximation {age}/{format_seconds(float(t.limit or 0))}")
    fired = [t for t in s.triggers if t.fired]
    decision = ("retrain" if fired else "approximate") if pending or fired else "nothing"
    lines.append(f"next apply: {', '.join(rules) or 'no size or age rule'}: {decision}")
    lines.append(f"policy: {s.policy.describe()}")
    if requests:
        lines += ["", *_request_rows(list(s.requests))]
    return "\n".join(lines)


def _request_rows(reqs: list[RequestRecord]) -> list[str]:
    rows = [[r.id, r.created_at[:19].replace("T", " "), str(r.n_samples),
             "-" if r.class_ is None else str(r.class_),
             r.status + ("" if r.version is None else f" in v{r.version}"),
             str(r.attempts), r.digest[:12], (r.reason or "")[:40]] for r in reqs]
    return _grid(["request", "created (UTC)", "samples", "class", "status", "refused",
                  "id digest", "reason"], rows)


# ---------------------------------------------------------------------- export
def export(ledger: Ledger, out: str | os.PathLike) -> dict[str, str]:
    """Write ``ledger.json`` and ``ledger.html`` into the folder ``out`` (each atomically)."""
    from unlearnkit.compare import jsonable

    status = ledger.status()
    audit = ledger.audit()
    entries = [{"seq": e.seq, "kind": e.kind, "created_at": e.created_at,
                "prev_hash": e.prev_hash, "hash": e.hash, "payload": e.payload}
               for e in ledger.entries()]
    doc = {"ledger": status.to_dict(), "audit": audit.to_dict(), "entries": entries,
           "hash_formula": "sha256(canonical_json({seq, kind, created_at, prev_hash, payload})) "
                           "with canonical_json = json.dumps(sort_keys=True, separators=(',', "
                           "':'), ensure_ascii=False)"}
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        from unlearnkit.exceptions import LedgerError

        raise LedgerError(f"The export folder {str(folder)!r} is a file; give a folder.")
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(jsonable(doc), indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    page = _html(status, audit)
    jpath = atomic_write(folder / "ledger.json", lambda tmp: Path(tmp).write_text(
        text, encoding="utf-8"))
    hpath = atomic_write(folder / "ledger.html", lambda tmp: Path(tmp).write_text(
        page, encoding="utf-8"))
    return {"json": str(jpath), "html": str(hpath)}


def _e(x: Any) -> str:
    return html.escape("-" if x is None else str(x))


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _verdict_cell(v: dict[str, Any] | None) -> str:
    if not v:
        return "-"
    parts = []
    for p in v.get("parts") or []:
        n = p.get("numbers") or {}
        if p.get("scope") == "classes":
            held = n.get("heldout_forget_acc")
            what = (f"classes {p.get('classes')}: forget acc {n.get('forget_acc', 0):.3f}, "
                    f"held-out {'-' if held is None else f'{held:.3f}'}")
        else:
            what = (f"{p.get('n')} samples: forget acc {n.get('forget_acc', 0):.3f} vs unseen "
                    f"{n.get('validation_acc', 0):.3f}, loss AUC {n.get('loss_auc', 0):.3f}")
        parts.append(f"{_e(p.get('outcome'))}: {_e(what)}; retained "
                     f"{n.get('heldout_retain_acc', 0):.3f} vs "
                     f"{n.get('original_heldout_retain_acc', 0):.3f}")
    cls = "ok" if v.get("outcome") == "forgotten" else "bad"
    return f"<b class='{cls}'>{_e(v.get('outcome'))}</b><br>" + "<br>".join(parts)


def _html(s: LedgerStatus, audit: Any) -> str:
    d = s.data
    versions = []
    for v in s.versions:
        p = v.payload
        m = p.get("method") or {}
        params = ", ".join(f"{k}={val}" for k, val in (m.get("params") or {}).items())
        verdicts = p.get("verdicts") or {}
        versions.append([
            f"v{v.number}", _e(v.kind), _e(m.get("name") if v.number else "-") +
            (f"<br><small>{_e(params)}</small>" if params else ""),
            _e(", ".join(v.requests) or "-"), _e(p.get("n_new")), _e(p.get("n_erased")),
            _verdict_cell(verdicts.get("new")), _verdict_cell(verdicts.get("all")),
            _e(_secs(v)), _e("; ".join(p.get("reasons") or []) or "-"),
            _e(v.created_at), f"<code>{_e(v.checkpoint)}</code>"])
    reqs = [[_e(r.id), _e(r.created_at), _e(r.n_samples), _e(r.class_),
             _e(r.status + ("" if r.version is None else f" in v{r.version}")),
             _e(r.attempts), f"<code>{_e(r.digest)}</code>", _e(r.reason)]
            for r in s.requests]
    refusals = [[_e(r["entry"]), _e(f"v{r.get('attempt')}"),
                 _e((r.get("method") or {}).get("name")), _e(", ".join(r.get("requests") or [])),
                 _verdict_cell((r.get("verdicts") or {}).get("new")),
                 _verdict_cell((r.get("verdicts") or {}).get("all")), _e(r.get("reason"))]
                for r in s.refusals]
    retrains = [v for v in s.versions if v.kind == "retrain"]
    audit_html = ("<p class='ok'>The chain checks out: every entry's hash, every link and every "
                  "checkpoint's digest.</p>" if audit.ok else
                  "<p class='bad'>The audit FAILED:</p><ul>" +
                  "".join(f"<li>{_e(p)}</li>" for p in audit.problems) + "</ul>")
    orphans = (f"<p>Files no entry names (left by an interrupted apply; harmless): "
               f"{_e(', '.join(audit.orphans))}</p>" if audit.orphans else "")
    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:"
             "collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:"
             "top;font-size:90%}th{background:#eee}.ok{color:#176317}.bad{color:#a31515}"
             "code{font-size:85%}")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>unlearnkit ledger {_e(s.ledger_id[:12])}</title>
<style>{style}</style></head><body>
<h1>Ledger of deletion requests</h1>
<p>{_e(s.url)} (id <code>{_e(s.ledger_id)}</code>): {_e(d['name'])}, {_e(d['n_train'])} training
samples (ids: {_e(_id_kind(d))}). Current version v{s.current.number} ({_e(s.current.kind)});
{s.erased} samples erased ({s.erased / max(int(d['n_train']), 1):.2%}); {len(s.requests)} requests,
{len(s.pending)} pending; {len(retrains)} retrain(s); {s.entries} entries, head
<code>{_e(s.head)}</code>.</p>
<p>Policy: {_e(s.policy.describe())}.</p>
<h2>Audit</h2>{audit_html}{orphans}
<h2>Versions</h2>
<p>Each version's verdict is oracle-free: the new samples, and every sample erased so far,
against held-out data the model never saw; the retained held-out accuracy against the last exact
version's.</p>
{_table(["version", "kind", "method", "requests", "new", "erased", "verdict (new)",
         "verdict (all erased)", "seconds", "retrain reasons", "created (UTC)", "checkpoint"],
        versions)}
<h2>Requests</h2>
<p>The ledger keeps each request's id digest (SHA-256 of its sorted ids, one per line) and salted
per-sample hashes; the ids themselves only when asked to.</p>
{_table(["request", "created (UTC)", "samples", "class", "status", "refused", "id digest",
         "reason"], reqs)}
<h2>Refused versions</h2>
{_table(["entry", "attempt", "method", "requests", "verdict (new)", "verdict (all)", "reason"],
        refusals) if refusals else "<p>None.</p>"}
</body></html>
"""
