"""A stream of deletion requests on digits through the ledger (``uk.Ledger``), and how far
sequential approximate steps drift from retraining.

Part 1, the life of a model: version 0 is a CNN trained on digits; 10 requests of a few random
samples each and one whole-class request arrive in five batches; each batch is applied
(finetune by default); the policy retrains when an approximate step fails its verdict (the
class request: finetune does not forget a class) and when 5 requests have been approximated
since the last exact model. The status table is printed after each step; then, for every
version, the verdict on each request it honours, one by one (do earlier erasures stay erased
after later approximate steps?); then the audit, and the audit of a copy whose entry was edited
by hand.

Part 2, drift: for each method, 10 sequential approximate steps (one request of a few samples
each, no retrain, every version promoted so that the chain can be measured), and after step k
the Jensen-Shannon divergence between the chain's model and a model retrained from scratch on
the same cumulative retain set (seed 0), on the erased samples and on the test set; beside
them the noise floor, a second retrain with seed 1 against the first.

    .venv/bin/python benchmarks/ledger_stream.py                      # about 5 min on 2 cores
    .venv/bin/python benchmarks/ledger_stream.py --methods finetune,ssd --steps 5
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch

import unlearnkit as uk
from unlearnkit.ledger import Ledger, RetrainPolicy
from unlearnkit.metrics.divergence import js_divergence
from unlearnkit.metrics.verdict import OUTCOMES


def stream(n_requests: int, size: int, data: uk.DataBundle, seed: int, avoid: int
           ) -> list[list[str]]:
    """``n_requests`` disjoint random sets of ``size`` training indices (as ids), none of
    class ``avoid`` (the class that the whole-class request erases)."""
    rng = np.random.default_rng(seed)
    pool = np.flatnonzero(data.train.y.numpy() != avoid)
    chosen = rng.choice(pool, size=n_requests * size, replace=False)
    return [[str(i) for i in sorted(chosen[k * size:(k + 1) * size])] for k in range(n_requests)]


def grid(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths, strict=True)))
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, rows)])


def part1(work: Path, original: Path, data: uk.DataBundle, requests: list[list[str]],
          cls: int, method: str) -> None:
    print("=" * 100)
    print(f"Part 1: a stream of {len(requests)} sample requests and one whole-class request "
          f"(class {cls}) on digits, method {method}")
    print("=" * 100)
    policy = RetrainPolicy(after_requests=5, after_fraction=None, after_age=30 * 86400,
                           on_failure=True)
    db = work / "stream.sqlite"
    ledger = Ledger.create(db, checkpoint=original, method=method, policy=policy,
                           log=lambda m: print(f"  . {m}"))
    # the class batch fails finetune's verdict (-> retrain on failure); batch 4 brings the
    # requests approximated since that retrain to 5 (-> retrain by count)
    batches = [requests[0:3], ["class"], requests[3:6], requests[6:8], requests[8:10]]
    step_seconds = []
    for b, batch in enumerate(batches, 1):
        names = []
        for ids in batch:
            if ids == "class":
                r = ledger.add_request(class_=cls, reason=f"remove the class {cls}")
            else:
                r = ledger.add_request(ids, reason=f"user {1000 + len(ledger.status().requests)}")
            names.append(f"{r.id} ({r.n_samples})")
        print(f"\n--- batch {b}: {', '.join(names)}; ledger apply")
        t = time.perf_counter()
        res = ledger.apply()
        step_seconds.append(time.perf_counter() - t)
        print(f"  {res.outcome}: {res.message} [{step_seconds[-1]:.1f} s wall]\n")
        print(ledger.status().table())
    print("\n--- does every erasure hold until the end? The verdict of each version on each "
          "request it honours, judged alone")
    s = ledger.status()
    versions = [v.number for v in s.versions[1:]]
    held = {v: {h["request"]: h for h in ledger.held(v)} for v in versions}
    rows = []
    for r in s.requests:
        cells = []
        for v in versions:
            h = held[v].get(r.id)
            cells.append("" if h is None else
                         h["outcome"] + ("*" if h["version"] == v else ""))
        what = f"class {r.class_}" if r.class_ is not None else f"{r.n_samples} samples"
        rows.append([f"{r.id} ({what})", *cells])
    print(grid(["request", *(f"v{v} ({s.versions[v].kind[:6]})" for v in versions)], rows))
    print("  * the version that honoured the request; later columns: does it still hold?")
    final = [held[versions[-1]][r.id]["outcome"] for r in s.requests]
    print(f"  at the end (v{versions[-1]}): {final.count('forgotten')}/{len(final)} requests "
          "forgotten")
    print("\n--- ledger audit")
    report = ledger.audit()
    print(f"  ok={report.ok}, {report.entries} entries, {report.checkpoints} checkpoints "
          f"re-hashed, head {report.head}")
    copy = work / "tampered.sqlite"
    src, dst = sqlite3.connect(db), sqlite3.connect(copy)
    src.backup(dst)  # a consistent copy, its write-ahead log included
    src.close()
    dst.close()
    edit = ("UPDATE unlearnkit_ledger_entries SET payload = replace(payload, 'user 1001', "
            "'user 9999') WHERE seq = 3")
    conn = sqlite3.connect(copy)
    assert conn.execute(edit).rowcount == 1
    conn.commit()
    conn.close()
    tampered = Ledger(copy).audit()
    print(f"  after `{edit}` on a copy (req-2's reason):")
    print(f"  ok={tampered.ok}")
    for p in tampered.problems:
        print(f"    {p}")
    print(f"\n  wall-clock per apply: {', '.join(f'{x:.1f}' for x in step_seconds)} s")


def part2(work: Path, original: Path, data: uk.DataBundle, requests: list[list[str]],
          methods: list[str]) -> None:
    print("\n" + "=" * 100)
    print(f"Part 2: distance to retraining after k sequential approximate steps "
          f"({len(requests)} steps of {len(requests[0])} samples, no retrain)")
    print("=" * 100)
    v0 = uk.load_checkpoint(original)
    test = data.test
    cumulative: list[np.ndarray] = []
    acc = np.zeros(0, dtype=np.int64)
    for ids in requests:
        acc = np.union1d(acc, np.asarray([int(i) for i in ids]))
        cumulative.append(acc.copy())
    refs, floors, ref_seconds = [], [], []
    for k, erased in enumerate(cumulative, 1):
        split = uk.split_indices(data, erased)
        t = time.perf_counter()
        ref = uk.retrain(v0, split, seed=0)
        ref_seconds.append(time.perf_counter() - t)
        other = uk.retrain(v0, split, seed=1)
        refs.append(ref)
        floors.append((js(other, ref, data.train.subset(erased)), js(other, ref, test)))
        print(f"  reference {k}: retrained on {len(data.train) - len(erased)} samples in "
              f"{ref_seconds[-1]:.1f} s")
    js_erased = {"retrain (seed noise)": [f[0] for f in floors]}
    js_test = {"retrain (seed noise)": [f[1] for f in floors]}
    acc_test = {"retrain": [uk.accuracy(r, test) for r in refs]}
    refused = {}
    seconds = {}
    everything = RetrainPolicy(after_requests=None, after_fraction=None, after_age=None,
                               on_failure=False, accept=OUTCOMES)
    for m in methods:
        ledger = Ledger.create(work / f"drift-{m}.sqlite", checkpoint=original, method=m,
                               policy=everything)
        js_erased[m], js_test[m], acc_test[m], secs = [], [], [], []
        fails: Counter[str] = Counter()
        for k, ids in enumerate(requests, 1):
            ledger.add_request(ids)
            res = ledger.apply()
            assert res.outcome == "applied", res.message
            v = ledger.status().current
            secs.append(v.payload["seconds"]["method"])
            worst = max((x["outcome"] for x in v.payload["verdicts"].values() if x),
                        key=OUTCOMES.index)
            if worst != "forgotten":
                fails[worst] += 1
            model = ledger.model()
            acc_test[m].append(uk.accuracy(model, test))
            js_erased[m].append(js(model, refs[k - 1], data.train.subset(cumulative[k - 1])))
            js_test[m].append(js(model, refs[k - 1], test))
        refused[m] = fails
        seconds[m] = float(np.mean(secs))
        why = ", ".join(f"{n} {o}" for o, n in fails.most_common())
        print(f"  {m}: {len(requests)} steps, {np.mean(secs):.2f} s per step; "
              f"{sum(fails.values())} of them would be refused under the default gate "
              f"(forgotten only){f': {why}' if why else ''}")
    cols = list(js_erased)
    for title, table in (("JS divergence to the retrained model on the erased samples "
                          "(cumulative)", js_erased),
                         ("JS divergence to the retrained model on the test set", js_test)):
        print(f"\n{title}, after k steps (nats; 0 = identical outputs):")
        rows = [[str(k + 1), *(f"{table[c][k]:.4f}" for c in cols)]
                for k in range(len(requests))]
        ratio = ["k=last / k=1", *(f"{table[c][-1] / max(table[c][0], 1e-12):.2f}x"
                                    for c in cols)]
        print(grid(["k", *cols], [*rows, ratio]))
    print("\nTest accuracy after k steps (the retrained reference beside the chains):")
    acc_cols = list(acc_test)
    print(grid(["k", *acc_cols], [[str(k + 1), *(f"{acc_test[c][k]:.3f}" for c in acc_cols)]
                                  for k in range(len(requests))]))
    print(f"\n  retraining from scratch took {np.mean(ref_seconds):.1f} s per step; the "
          "methods: " + ", ".join(f"{m} {seconds[m]:.2f} s" for m in methods))


def js(a: torch.nn.Module, b: torch.nn.Module, data: uk.ArrayDataset) -> float:
    return js_divergence(uk.predict(a, data)[0], uk.predict(b, data)[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default="finetune,ssd,salun,random-label")
    p.add_argument("--stream-method", default="finetune",
                   help="the ledger's method in part 1 (default: finetune)")
    p.add_argument("--steps", type=int, default=10, help="sample requests (default: 10)")
    p.add_argument("--samples", type=int, default=4, help="samples per request (default: 4)")
    p.add_argument("--class", dest="cls", type=int, default=3, help="the class request's class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("--skip", choices=("part1", "part2"), help="leave one part out")
    p.add_argument("--work", help="keep the ledgers here (default: a temporary folder)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", uk.ForgetVerdictWarning)
    start = time.perf_counter()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="ledger-stream-"))
    work.mkdir(parents=True, exist_ok=True)
    # a cache of our own: every method's seconds are a first request's (cold), whatever ran
    # before on this machine
    os.environ.setdefault("UNLEARNKIT_CACHE", str(work / "cache"))
    data = uk.load_dataset("digits")
    t = time.perf_counter()
    model = uk.train_model(data, arch="cnn", seed=args.seed)
    original = work / "original.safetensors"
    uk.save_checkpoint(model, original)
    print(f"version 0: cnn trained on digits in {time.perf_counter() - t:.1f} s, test accuracy "
          f"{uk.accuracy(model, data.test):.3f}; work folder {work}")
    requests = stream(args.steps, args.samples, data, args.seed, args.cls)
    if args.skip != "part1":
        part1(work, original, data, requests, args.cls, args.stream_method)
    if args.skip != "part2":
        part2(work, original, data, requests, [m.strip() for m in args.methods.split(",")])
    print(f"\ntotal: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
