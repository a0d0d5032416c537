"""The ledger of deletion requests on SQLite: ids, requests, apply, verdict gating, the retrain
policy, the hash chain and its audit, the export and the command line.

Crash safety and concurrency (processes killed or raced) are in ``test_ledger_crash.py``; the
same ledger on a real PostgreSQL server is in ``test_ledger_postgres.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import unlearnkit as uk
from _cli import assert_one_error_line, run
from _ledger import ENTRIES, FAST, copy_db, db_bytes, make_ledger, sql, tiny_checkpoint
from unlearnkit.exceptions import InvalidParameterError, LedgerError
from unlearnkit.ledger import Ledger, RetrainPolicy
from unlearnkit.ledger.ids import id_set_digest, image_tree_ids, read_ids
from unlearnkit.ledger.store import LedgerStore, verify_chain


@pytest.fixture(scope="module")
def original(tmp_path_factory, mlp_model) -> Path:
    return tiny_checkpoint(mlp_model, tmp_path_factory.mktemp("ledger-v0"))


@pytest.fixture
def ledger(tmp_path, original) -> Ledger:
    return make_ledger(tmp_path / "ledger.sqlite", original)


def class_indices(digits, c: int) -> list[str]:
    return [str(i) for i in np.flatnonzero(digits.train.y.numpy() == c)]


def entry_payloads(ledger: Ledger, kind: str) -> list[dict]:
    return [e.payload for e in ledger.entries() if e.kind == kind]


# ---------------------------------------------------------------------- ids
def test_read_ids_text_and_json(tmp_path):
    p = tmp_path / "ids.txt"
    p.write_text("# user 4812\n\n train/a/1.png \n7\n")
    assert read_ids(p) == (["train/a/1.png", "7"], [3, 4])
    j = tmp_path / "ids.json"
    j.write_text(json.dumps(["a", 3]))
    assert read_ids(j) == (["a", "3"], [1, 2])


@pytest.mark.parametrize(("content", "fragment"), [
    ("1\n2\n1\n", "'1' is listed twice (lines 1 and 3)"),
    ("# nothing\n\n", "lists no id"),
    (b"\xff\xfe1\n", "is not UTF-8"),
])
def test_read_ids_refuses_bad_files(tmp_path, content, fragment):
    p = tmp_path / "ids.txt"
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(LedgerError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        read_ids(p)


def test_read_ids_refuses_missing_file_and_json_object(tmp_path):
    with pytest.raises(LedgerError, match="does not exist"):
        read_ids(tmp_path / "nope.txt")
    j = tmp_path / "ids.json"
    j.write_text('{"a": 1}')
    with pytest.raises(LedgerError, match="JSON list"):
        read_ids(j)


def test_id_set_digest_is_sha256_of_sorted_lines():
    ids = ["train/b/2.png", "train/a/1.png"]
    expected = hashlib.sha256(b"train/a/1.png\ntrain/b/2.png\n").hexdigest()
    assert id_set_digest(ids) == expected


def make_image_tree(root: Path) -> dict[str, int]:
    """A 2-class tree of 4x4 grey PNGs, each file's pixels one distinct value; returns the
    value of every training file by its id."""
    from PIL import Image

    values = {}
    v = 10
    for split, n in (("train", 6), ("test", 3)):
        for cls in ("cat", "dog"):
            (root / split / cls / "sub").mkdir(parents=True)
            for i in range(n):
                rel = f"sub/img{i}.png" if i % 3 == 0 else f"img{i}.png"
                Image.fromarray(np.full((4, 4), v, dtype=np.uint8)).save(root / split / cls / rel)
                if split == "train":
                    values[f"train/{cls}/{rel}"] = v
                v += 3
    return values


def test_image_tree_ids_are_paths_in_the_loaders_order(tmp_path):
    values = make_image_tree(tmp_path / "tree")
    ids = image_tree_ids(tmp_path / "tree")
    data = uk.load_dataset("imagefolder", root=tmp_path / "tree", grayscale=True)
    assert sorted(ids) == sorted(values) and len(ids) == len(data.train)
    for i, sample_id in enumerate(ids):  # id i names the loader's sample i
        assert round(float(data.train.x[i].mean()) * 255) == values[sample_id]
    with tarfile.open(tmp_path / "tree.tar.gz", "w:gz") as tf:
        tf.add(tmp_path / "tree", arcname="enclosing")
    assert image_tree_ids(tmp_path / "tree.tar.gz") == ids  # archive: the same ids


# ---------------------------------------------------------------------- requests
def test_request_keeps_digest_and_hashes_not_ids(ledger):
    r = ledger.add_request(["5", "17"], reason="user 4812")
    assert r.id == "req-1" and r.status == "pending" and r.n_samples == 2
    assert r.digest == id_set_digest(["5", "17"]) and len(r.hashes) == 2
    assert r.ids is None and "ids" not in entry_payloads(ledger, "request")[0]
    kept = ledger.add_request(["6"], keep_ids=True)
    assert kept.id == "req-2" and kept.ids == ("6",)
    assert entry_payloads(ledger, "request")[1]["ids"] == ["6"]
    assert [x.id for x in ledger.status().pending] == ["req-1", "req-2"]


def test_unknown_duplicate_and_erased_ids_get_clear_answers(ledger):
    with pytest.raises(LedgerError, match=r"2 of 3 ids are not training samples.*"
                                          r"indices 0-1436\): '5000' \(item 2\), 'x' \(item 3\)"):
        ledger.add_request(["1", "5000", "x"])
    with pytest.raises(LedgerError, match=r"the id '4' is listed twice \(item 1 and item 2\)"):
        ledger.add_request(["4", "4"])
    ledger.add_request(["1", "2"])
    with pytest.raises(LedgerError, match=r"1 of 2 ids are already erased or requested: "
                                          r"'2' \(item 1: pending in req-1\)"):
        ledger.add_request(["2", "3"])
    assert ledger.apply().outcome == "applied"
    with pytest.raises(LedgerError, match=r"'1' \(item 1: erased by req-1 in version 1\)"):
        ledger.add_request(["1"])
    r = ledger.add_request(["1", "2", "3"], skip_erased=True)
    assert r.n_samples == 1 and r.skipped == 2
    with pytest.raises(LedgerError, match="every id is already erased or requested"):
        ledger.add_request(["1", "3"], skip_erased=True)
    assert len(ledger.status().requests) == 2  # the refused requests left no entry


def test_class_request_takes_the_remaining_samples_of_the_class(ledger, digits):
    threes = class_indices(digits, 3)
    ledger.add_request(threes[:1])
    r = ledger.add_request(class_="3", reason="drop the class")
    assert r.class_ == 3 and r.n_samples == len(threes) - 1 and r.skipped == 1
    with pytest.raises(LedgerError, match="class 3 has no sample left"):
        ledger.add_request(class_=3)
    with pytest.raises(LedgerError, match="Unknown class 12"):
        ledger.add_request(class_=12)
    with pytest.raises(InvalidParameterError, match="not both"):
        ledger.add_request(["1"], class_=3)


def own_data(n: int = 120, seed: int = 0) -> uk.DataBundle:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 6, generator=g) + y[:, None].float() * 2
    yt = torch.arange(40) % 2
    xt = torch.randn(40, 6, generator=g) + yt[:, None].float() * 2
    return uk.DataBundle("crm", uk.ArrayDataset(x, y), uk.ArrayDataset(xt, yt), ("stay", "churn"))


def test_own_data_with_an_id_column(tmp_path):
    data = own_data()
    model = uk.train_model(data, arch="mlp", hidden=(8,), recipe=uk.Recipe(epochs=3), seed=0)
    users = [f"customer-{1000 + i}" for i in range(len(data.train))]
    url = tmp_path / "crm.sqlite"
    ledger = Ledger.create(url, checkpoint=model, data=data, ids=users, params=FAST,
                           policy={"after_fraction": None})
    ledger.add_request(["customer-1003", "customer-1010"], reason="GDPR art. 17")
    with pytest.raises(LedgerError, match="'customer-9' \\(item 1\\)"):
        ledger.add_request(["customer-9"])
    res = ledger.apply()
    assert res.outcome == "applied" and res.version == 1
    assert b"customer-1003" not in db_bytes(url)  # the ledger holds no copy of the ids
    with pytest.raises(LedgerError, match=r"open it with Ledger\(url, data=\.\.\., ids="):
        Ledger(url).add_request(["customer-1004"])
    again = Ledger(url, data=data, ids=users)
    again.add_request(["customer-1004"])
    with pytest.raises(LedgerError, match=r"own data \('crm'\)"):
        Ledger(url).apply()
    again.add_request(class_="stay")
    with pytest.raises(LedgerError, match="would erase every remaining training sample"):
        again.add_request(class_="churn")


def test_id_column_must_fit_the_data(tmp_path, mlp_model):
    with pytest.raises(LedgerError, match="holds 3 ids but the training set has 1437"):
        Ledger.create(tmp_path / "l.sqlite", checkpoint=mlp_model, ids=["a", "b", "c"])
    column = [f"u{i}" for i in range(1437)]
    column[7] = "u3"
    with pytest.raises(LedgerError, match="the id 'u3' appears twice \\(rows 3 and 7\\)"):
        Ledger.create(tmp_path / "l.sqlite", checkpoint=mlp_model, ids=column)
    assert not (tmp_path / "l.sqlite").exists()


def test_image_folder_ledger_survives_the_deletion_of_erased_files(tmp_path):
    make_image_tree(tmp_path / "tree")
    data = uk.load_dataset("imagefolder", root=tmp_path / "tree", grayscale=True)
    model = uk.train_model(data, arch="mlp", hidden=(8,), recipe=uk.Recipe(epochs=2), seed=0)
    url = tmp_path / "photos.sqlite"
    ledger = Ledger.create(url, checkpoint=model, data_root=tmp_path / "tree",
                           data_options={"grayscale": True}, params=FAST,
                           policy={"after_fraction": None, "accept": list(uk_outcomes())})
    ledger.add_request(["train/dog/img1.png"], reason="photo of user 4812")
    assert ledger.apply().outcome == "applied"
    assert b"img1.png" not in db_bytes(url)
    (tmp_path / "tree" / "train" / "dog" / "img1.png").unlink()  # the owner erases the file
    ledger.add_request(["train/cat/img2.png"])
    assert ledger.apply().version == 2  # the data lost only an erased sample: fine
    ledger.add_request(["train/cat/img5.png"])
    (tmp_path / "tree" / "train" / "cat" / "img4.png").unlink()  # never requested
    with pytest.raises(LedgerError, match="training data are not the ledger's: 10 samples now "
                                          "against 12"):
        ledger.apply()
    with pytest.raises(LedgerError, match="training data are not the ledger's"):
        ledger.add_request(["train/cat/sub/img3.png"])


def uk_outcomes() -> tuple[str, ...]:
    from unlearnkit.metrics.verdict import OUTCOMES

    return OUTCOMES


# ---------------------------------------------------------------------- apply
def test_apply_records_the_step_and_excludes_every_erased_sample(ledger, monkeypatch, digits):
    import unlearnkit.api

    seen = []
    real = unlearnkit.api.unlearn

    def spy(model, split, method, **kw):
        seen.append((method, len(split.forget), len(split.retain)))
        return real(model, split, method, **kw)

    monkeypatch.setattr(unlearnkit.api, "unlearn", spy)
    ledger.add_request(["1", "2", "3"])
    ledger.add_request(["10"])
    res = ledger.apply()
    assert res.outcome == "applied" and res.requests == ("req-1", "req-2")
    ledger.add_request(["20", "21"])
    assert ledger.apply(params={"epochs": 2, "lr": 1e-4}).version == 2
    n = len(digits.train)
    # the forget set is the new requests' samples; the retain set excludes all erased so far
    assert seen == [("finetune", 4, n - 4), ("finetune", 2, n - 6)]
    s = ledger.status()
    v1, v2 = s.versions[1], s.versions[2]
    p = v2.payload
    assert p["method"] == {"name": "finetune", "params": p["method"]["params"], "seed": 2,
                           "calibrated": False}
    assert p["method"]["params"]["epochs"] == 2 and p["method"]["params"]["lr"] == 1e-4
    assert p["seconds"]["method"] > 0 and p["seconds"]["verdicts"] > 0
    assert p["verdicts"]["new"]["n"] == 2 and p["verdicts"]["all"]["n"] == 6
    assert p["verdicts"]["new"]["outcome"] == "forgotten"
    assert p["checkpoint"] == {"input": v1.checkpoint, "output": v2.checkpoint}
    file = ledger.checkpoints.path(v2.checkpoint)
    assert hashlib.sha256(file.read_bytes()).hexdigest() == v2.checkpoint
    assert [r.version for r in s.requests] == [1, 1, 2] and not s.pending
    assert ledger.apply().outcome == "nothing to apply"
    model = ledger.model()
    assert uk.get_info(model).split["version"] == 2  # the checkpoint records its step


def test_failed_verdict_is_not_promoted_and_the_request_stays_pending(tmp_path, original):
    ledger = make_ledger(tmp_path / "l.sqlite", original,
                         policy={"on_failure": False, "after_fraction": None})
    ledger.add_request(class_=3)
    res = ledger.apply(params={"epochs": 1, "lr": 1e-6})  # finetune barely moves: remembered
    assert res.outcome == "refused" and res.version == 0
    s = ledger.status()
    assert s.current.number == 0 and [r.id for r in s.pending] == ["req-1"]
    assert s.requests[0].attempts == 1
    (refusal,) = s.refusals
    assert refusal["attempt"] == 1 and "new samples: not forgotten" in refusal["reason"]
    assert refusal["verdicts"]["new"]["parts"][0]["scope"] == "classes"
    assert refusal["checkpoint"]["input"] == s.versions[0].checkpoint
    # the refused model was never stored
    assert ledger.checkpoints.files() == [f"{s.versions[0].checkpoint}.safetensors"]
    assert "refused: entry 3, attempted v1 by finetune" in s.table()


def test_failed_verdict_triggers_a_retrain_and_earlier_erasures_stay_judged(tmp_path,
                                                                             original, digits):
    ledger = make_ledger(tmp_path / "l.sqlite", original, policy={"after_fraction": None})
    ledger.add_request(class_=3)
    res = ledger.apply(params={"epochs": 1, "lr": 1e-6})
    assert res.outcome == "retrained" and [e["kind"] for e in res.entries] == ["refused",
                                                                             "retrain"]
    v1 = ledger.status().current
    assert v1.kind == "retrain" and v1.base == 1
    assert v1.payload["reasons"] == ["the approximate step's verdict failed"]
    assert v1.payload["verdicts"]["all"]["outcome"] == "forgotten"
    ledger.add_request(class_indices(digits, 0)[:2])
    assert ledger.apply().outcome == "applied"
    v2 = ledger.status().current
    parts = {p["scope"]: p for p in v2.payload["verdicts"]["all"]["parts"]}
    assert parts["classes"]["classes"] == [3] and parts["classes"]["outcome"] == "forgotten"
    assert parts["samples"]["n"] == 2
    assert v2.payload["base"] == 1  # utility is judged against the last exact version
    held = ledger.held()
    assert [(h["request"], h["version"], h["outcome"]) for h in held] == [
        ("req-1", 1, "forgotten"), ("req-2", 2, "forgotten")]


# ---------------------------------------------------------------------- the policy
def test_policy_retrains_after_a_count_of_requests(tmp_path, original):
    ledger = make_ledger(tmp_path / "l.sqlite", original,
                         policy={"after_requests": 3, "after_fraction": None})
    ledger.add_request(["1"])
    ledger.add_request(["2"])
    assert ledger.apply().outcome == "applied"
    ledger.add_request(["3"])
    res = ledger.apply()
    assert res.outcome == "retrained"
    v = ledger.status().current
    assert v.payload["reasons"] == ["requests since the last exact model 3 >= 3"]
    fired = v.payload["policy"]["fired"]
    assert fired == [{"rule": "after_requests", "value": 3, "limit": 3, "fired": True}]
    assert v.payload["checkpoint"]["input"] == ledger.status().versions[0].checkpoint
    ledger.add_request(["4"])  # the chain was reset: one request since the retrain
    assert ledger.apply().outcome == "applied"
    assert ledger.status().triggers[0].value == 1


def test_policy_retrains_after_a_share_of_the_data(tmp_path, original):
    ledger = make_ledger(tmp_path / "l.sqlite", original, policy={"after_fraction": 0.01})
    ledger.add_request([str(i) for i in range(10)])
    assert ledger.apply().outcome == "applied"  # 10 / 1437 < 1 %
    ledger.add_request([str(i) for i in range(10, 20)])
    res = ledger.apply()
    assert res.outcome == "retrained"
    assert "erased share since the last exact model 1.39% >= 1.00%" in res.message


def test_policy_retrains_old_approximations_even_with_nothing_pending(tmp_path, original):
    ledger = make_ledger(tmp_path / "l.sqlite", original,
                         policy={"after_age": 1.0, "after_fraction": None})
    ledger.add_request(["1"])
    assert ledger.apply().outcome == "applied"
    assert ledger.apply().outcome == "nothing to apply"  # young enough
    time.sleep(1.1)
    res = ledger.apply()
    assert res.outcome == "retrained" and res.requests == ()
    assert "oldest approximate step" in res.message
    assert ledger.apply().message == "No pending request: the current version is exact."


def test_a_retrain_can_be_asked_for(ledger):
    ledger.add_request(["8"])
    res = ledger.apply(retrain=True)
    assert res.outcome == "retrained" and "a retrain was asked for" in res.message


@pytest.mark.parametrize(("settings_", "fragment"), [
    ({"after_requests": 0}, "'after_requests'"),
    ({"after_fraction": 1.5}, "'after_fraction'"),
    ({"after_age": "soon"}, "duration"),
    ({"accept": ["great"]}, "'accept'"),
    ({"retrain_sometimes": True}, "no setting 'retrain_sometimes'"),
])
def test_policy_refuses_bad_settings(settings_, fragment):
    with pytest.raises(InvalidParameterError, match=fragment):
        RetrainPolicy.from_dict(settings_)


def test_configure_is_an_entry_of_the_chain(ledger):
    ledger.configure(policy={"after_requests": 1}, method="ssd", params={"alpha": 5.0})
    s = ledger.status()
    assert s.policy.after_requests == 1 and s.policy.after_fraction == 0.05
    assert s.method == {"name": "ssd", "params": {"alpha": 5.0}}
    assert [e.kind for e in ledger.entries()] == ["init", "config"]
    with pytest.raises(uk.UnknownNameError):
        ledger.configure(method="forgetful")


# ---------------------------------------------------------------------- the chain
def built(ledger: Ledger) -> Ledger:
    ledger.add_request(["1", "2"], reason="first")
    ledger.add_request(["3"], reason="second")
    ledger.apply()
    return ledger


def test_audit_passes_then_names_the_entry_edited_by_hand(tmp_path, original):
    db = tmp_path / "l.sqlite"
    ledger = built(make_ledger(db, original))
    report = ledger.audit()
    assert report.ok and report.entries == 4 and report.checkpoints == 2 and not report.orphans
    assert report.head == ledger.entries()[-1].hash
    sql(db, f"UPDATE {ENTRIES} SET payload = replace(payload, 'second', 'other') WHERE seq = 3")
    report = ledger.audit()
    assert not report.ok
    assert report.problems == (
        f"entry 3 (request req-2, {ledger.entries()[2].created_at}): its content does not "
        "match its hash: it was changed after it was written",)
    code, out, _ = run("ledger", "audit", "--ledger", db)
    assert code == 1 and "FAILED" in out and "  entry 3 (request req-2" in out
    with pytest.raises(LedgerError, match="chain is broken: entry 3 \\(request req-2"):
        ledger.add_request(["9"])
    with pytest.raises(LedgerError, match="chain is broken"):
        ledger.apply()
    assert "CHAIN BROKEN: entry 3" in ledger.status().table()


def test_audit_names_deleted_and_relinked_entries(tmp_path, original):
    db = tmp_path / "l.sqlite"
    ledger = built(make_ledger(db, original))
    sql(db, f"DELETE FROM {ENTRIES} WHERE seq = 2")
    problems = ledger.audit().problems
    assert "entry 2 missing: the chain jumps from entry 1 to entry 3 (deleted)" in problems[0]
    # a forger who also recomputes the edited entry's hash breaks the next link
    db2 = tmp_path / "l2.sqlite"
    ledger2 = built(make_ledger(db2, original))
    e = ledger2.entries()[1]
    from unlearnkit.ledger.store import entry_hash

    forged = dict(e.payload, reason="forged")
    raw = json.dumps(forged, sort_keys=True, separators=(",", ":"))
    sql(db2, f"UPDATE {ENTRIES} SET payload = ?, hash = ? WHERE seq = 2", raw,
        entry_hash(2, e.kind, e.created_at, e.prev_hash, forged))
    problems = ledger2.audit().problems
    assert len(problems) == 1 and problems[0].startswith("entry 3 (request req-2")
    assert "entry 2 was changed or replaced" in problems[0]


def test_audit_catches_the_deletion_of_the_last_entry(tmp_path, original):
    db = tmp_path / "l.sqlite"
    ledger = built(make_ledger(db, original))
    sql(db, f"DELETE FROM {ENTRIES} WHERE seq = 4")
    (problem,) = ledger.audit().problems
    assert "the head records entry 4 as the last, but the last entry is 3" in problem


def test_audit_rehashes_every_checkpoint(tmp_path, original):
    ledger = built(make_ledger(tmp_path / "l.sqlite", original))
    v1 = ledger.status().versions[1]
    path = ledger.checkpoints.path(v1.checkpoint)
    os.chmod(path, 0o644)
    with open(path, "ab") as f:
        f.write(b"\0")
    (problem,) = ledger.audit().problems
    assert problem.startswith("version 1 (entry 4): its checkpoint") and "changed on disk" in \
        problem
    ledger.add_request(["100"])
    with pytest.raises(LedgerError, match=r"Version 1: its checkpoint .* was changed on disk"):
        ledger.apply()
    path.unlink()
    assert "is missing from" in ledger.audit().problems[0]


def test_audit_lists_orphan_files(tmp_path, original):
    ledger = built(make_ledger(tmp_path / "l.sqlite", original))
    (ledger.checkpoints.root / ("ab" * 32 + ".safetensors")).write_bytes(b"x")
    report = ledger.audit()
    assert report.ok and report.orphans == ("ab" * 32 + ".safetensors",)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, original) -> Path:
    db = tmp_path_factory.mktemp("pristine") / "l.sqlite"
    built(make_ledger(db, original))
    return db


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seq=st.integers(1, 4), column=st.sampled_from(["kind", "created_at", "payload",
                                                         "prev_hash", "hash"]),
       junk=st.text(min_size=1, max_size=8))
def test_any_edit_of_any_entry_is_caught_and_located(pristine, tmp_path, seq, column, junk):
    db = tmp_path / f"edit-{seq}-{column}.sqlite"
    copy_db(pristine, db)
    conn = sqlite3.connect(db)
    old = conn.execute(f"SELECT {column} FROM {ENTRIES} WHERE seq = ?", (seq,)).fetchone()[0]
    new = old[:-1] + junk if column != "payload" else old.replace('"n":', f'"n{junk}":', 1) \
        if '"n":' in old else old[:-1] + junk
    if new == old:
        conn.close()
        return
    conn.execute(f"UPDATE {ENTRIES} SET {column} = ? WHERE seq = ?", (new, seq))
    conn.commit()
    conn.close()
    store = LedgerStore(db)
    entries, head = store.read()
    problems = verify_chain(entries, head)
    assert problems, (seq, column)
    named = f"entry {seq} " if column != "hash" else f"entry {seq + 1} "
    assert any(p.startswith(named) or p.startswith(f"entry {seq} (") for p in problems) or (
        column == "hash" and seq == 4 and "head" in problems[-1]), problems


# ---------------------------------------------------------------------- export
def test_export_writes_json_that_reverifies_and_escaped_html(tmp_path, original):
    ledger = make_ledger(tmp_path / "l.sqlite", original)
    ledger.add_request(["1"], reason="<script>alert(1)</script>")
    ledger.apply()
    paths = ledger.export(tmp_path / "out")
    doc = json.loads(Path(paths["json"]).read_text())
    assert doc["audit"]["ok"] and doc["ledger"]["current_version"] == 1
    from unlearnkit.ledger.store import Entry

    entries = [Entry(e["seq"], e["kind"], e["created_at"], e["payload"], e["prev_hash"],
                     e["hash"], "") for e in doc["entries"]]
    assert verify_chain(entries, (entries[-1].seq, entries[-1].hash)) == []
    page = Path(paths["html"]).read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Ledger of deletion requests" in page and "forgotten" in page
    (tmp_path / "file").write_text("x")
    with pytest.raises(LedgerError, match="is a file"):
        ledger.export(tmp_path / "file")


# ---------------------------------------------------------------------- the store
def test_store_refuses_what_is_not_a_ledger(tmp_path, original):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database at all" * 10)
    with pytest.raises(LedgerError, match="is not a SQLite database"):
        Ledger(junk)
    other = tmp_path / "other.sqlite"
    sql(other, "CREATE TABLE results (x INTEGER)")
    with pytest.raises(LedgerError, match="holds other tables \\(results\\)"):
        make_ledger(other, original)
    with pytest.raises(LedgerError, match="No ledger at"):
        Ledger(tmp_path / "none.sqlite")
    assert not (tmp_path / "none.sqlite").exists()  # opening never creates a file
    with pytest.raises(LedgerError, match="SQLite or PostgreSQL"):
        LedgerStore("mysql://u@h/db")
    with pytest.raises(LedgerError, match="in-memory"):
        LedgerStore("sqlite://")
    assert LedgerStore("postgresql://u:secret@h/db").display == \
        "postgresql+psycopg://u:***@h/db"


def test_a_second_ledger_at_the_same_place_is_refused(ledger, original):
    with pytest.raises(LedgerError, match="already exists"):
        make_ledger(ledger._store.path, original)


# ---------------------------------------------------------------------- the command line
def test_cli_round_trip(tmp_path, original):
    db = tmp_path / "l.sqlite"
    code, out, err = run("ledger", "init", "--ledger", db, "--checkpoint", original,
                         "--param", "epochs=1", "--retrain-after-requests", "3",
                         "--retrain-after-fraction", "none", "--retrain-after-age", "12h")
    assert code == 0, err
    assert "Created the ledger" in out and "retrain after 3 requests, after 12h" in out
    (tmp_path / "ids.txt").write_text("# user 4812\n1\n2\n")
    code, out, err = run("ledger", "request", "add", "--ledger", db, "--ids",
                         tmp_path / "ids.txt", "--reason", "ticket 7")
    assert code == 0 and out.startswith("Recorded req-1: 2 samples"), err
    code, out, err = run("ledger", "apply", "--ledger", db, "--json")
    res = json.loads(out)
    assert code == 0 and res["outcome"] == "applied" and res["version"] == 1
    assert res["entries"][0]["payload"]["verdicts"]["new"]["outcome"] == "forgotten"
    code, out, _ = run("ledger", "status", "--ledger", db, "--json")
    status = json.loads(out)
    assert status["current_version"] == 1 and status["chain_ok"] and "_table" not in status
    assert status["requests"][0]["reason"] == "ticket 7"
    code, out, _ = run("ledger", "status", "--ledger", db, "--requests")
    assert "v1       approximate  finetune  req-1" in out and "ticket 7" in out
    code, out, _ = run("ledger", "audit", "--ledger", db)
    assert code == 0 and out.startswith(f"Audit of sqlite:///{db}: OK")
    code, out, _ = run("ledger", "export", "--ledger", db, "--out", tmp_path / "report")
    assert code == 0 and (tmp_path / "report" / "ledger.html").is_file()
    code, out, _ = run("ledger", "config", "--ledger", db, "--retrain-after-requests", "none")
    assert code == 0 and "retrain after 12h" in out


@pytest.mark.parametrize(("argv", "fragment"), [
    (["status"], "No ledger at"),
    (["request", "add", "--ids", "{dir}/missing.txt"], "does not exist"),
    (["request", "add", "--ids", "{dir}/bad.txt"], "'77777' (line 2)"),
    (["request", "add", "--class", "ten"], "Unknown class 'ten'"),
    (["apply", "--budget", "0.5"], "add calibrate=True (--calibrate)"),
    (["apply", "--method", "forgetful"], "Unknown method 'forgetful'"),
    (["apply", "--param", "epochs=-1"], "epochs"),
    (["init", "--checkpoint", "{ckpt}"], "already exists"),
    (["init", "--checkpoint", "{ckpt}", "--ledger", "{dir}/n.sqlite",
      "--retrain-after-fraction", "2"], "'after_fraction'"),
    (["init", "--checkpoint", "{ckpt}", "--ledger", "{dir}/n.sqlite",
      "--retrain-after-requests", "many"], "must be an int or 'none'"),
])
def test_cli_errors_are_one_line(tmp_path, original, argv, fragment):
    db = tmp_path / "l.sqlite"
    if argv[0] != "status":
        make_ledger(db, original)
    (tmp_path / "bad.txt").write_text("1\n77777\n")
    args = [a.format(dir=tmp_path, ckpt=original) for a in argv]
    if "--ledger" not in args:
        args += ["--ledger", str(db)]
    code, out, err = run("ledger", *args)
    assert code == 2 and not out
    assert_one_error_line(err, fragment)
    assert not (tmp_path / "n.sqlite").exists()


def test_an_unreachable_server_is_one_line(tmp_path):
    code, out, err = run("ledger", "status", "--ledger",
                         "postgresql://nobody:pw@127.0.0.1:1/ledger")
    assert code == 2 and not out
    assert_one_error_line(err, "Cannot use the ledger at "
                               "'postgresql+psycopg://nobody:***@127.0.0.1:1/ledger'")
    assert "pw@" not in err


# ---------------------------------------------------------------------- properties
ID_LINES = st.lists(st.one_of(st.integers(-5, 2000).map(str), st.sampled_from(
    ["", "# c", "abc", " 7 ", "1e3", "٣", "0x1", "12\t", "1436", "1437", "00012"]),
    st.text(max_size=6)), max_size=8)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory, original) -> Path:
    db = tmp_path_factory.mktemp("fuzz") / "l.sqlite"
    make_ledger(db, original)
    return db


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=ID_LINES)
def test_request_add_records_all_or_answers_one_line(fuzzed, tmp_path, lines):
    """Whatever the id file holds: exit 0 with one more request, or exit 2, one error line
    and nothing written."""
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    before = len(Ledger(fuzzed).entries())
    code, out, err = run("ledger", "request", "add", "--ids", ids, "--ledger", fuzzed,
                         "--skip-erased")
    after = len(Ledger(fuzzed).entries())
    assert code in (0, 2), err
    if code == 0:
        assert after == before + 1 and out.startswith("Recorded req-")
    else:
        assert after == before and not out
        assert_one_error_line(err)


@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=st.one_of(st.integers(-2, 30).map(str), st.sampled_from(["none", "x", ""])),
       fraction=st.one_of(st.floats(-1, 2).map(repr), st.sampled_from(["none", "nan", "1"])),
       age=st.sampled_from(["30d", "12h", "0", "-1d", "soon", "none", "1.5h", "inf"]),
       accept=st.sampled_from(["forgotten", "forgotten,partial", "great", ""]))
def test_init_policy_flags_create_or_answer_one_line(tmp_path_factory, original, requests,
                                                     fraction, age, accept):
    folder = tmp_path_factory.mktemp("init")
    code, _, err = run("ledger", "init", "--ledger", folder / "l.sqlite", "--checkpoint",
                       original, "--retrain-after-requests", requests,
                       "--retrain-after-fraction", fraction, "--retrain-after-age", age,
                       "--accept", accept)
    assert code in (0, 2), err
    if code == 0:
        assert Ledger(folder / "l.sqlite").audit().ok
    else:
        assert_one_error_line(err)
        assert not (folder / "l.sqlite").exists()


def test_the_ledger_modules_docstring_examples_run():
    import doctest

    from unlearnkit.ledger import ids, policy, report

    for module in (ids, policy, report):
        result = doctest.testmod(module, verbose=False)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_apply_can_calibrate_the_step(ledger):
    ledger.add_request(["30", "31", "32"])
    res = ledger.apply(calibrate=True, max_trials=2)
    assert res.outcome == "applied"
    p = ledger.status().current.payload
    assert p["method"]["calibrated"] and p["calibration"]["trials"] == 2
    assert set(p["calibration"]["space"]) <= set(p["method"]["params"])
    assert p["calibration"]["budget_seconds"] is None  # max_trials alone: no time limit
    assert p["calibration"]["warm_start"] is None  # the first search of its method


def test_a_calibrated_step_warm_starts_from_the_last_of_its_method(ledger, monkeypatch):
    from unlearnkit import calibration

    ledger.add_request(["30", "31", "32"])
    first = ledger.apply(calibrate=True, max_trials=2)
    v1 = ledger.status().current
    searched = {k: v1.payload["method"]["params"][k] for k in v1.payload["calibration"]["space"]}
    given = []
    real = calibration.calibrate

    def spy(*args, **kwargs):
        given.append(kwargs.get("warm_start"))
        return real(*args, **kwargs)

    monkeypatch.setattr(calibration, "calibrate", spy)
    ledger.add_request(["40", "41"])
    second = ledger.apply(calibrate=True, max_trials=2)
    assert first.outcome == second.outcome == "applied"
    # version 1's search, whole: its best follow (or precede) the defaults
    assert given == [{"method": v1.payload["method"]["name"],
                      "trials": v1.payload["calibration"]["history"]}]
    best = v1.payload["calibration"]["history"][v1.payload["calibration"]["best_trial"]]
    assert {k: v for k, v in best["params"].items()} == {
        k: v for k, v in searched.items() if k in best["params"]}
    p = ledger.status().current.payload
    assert p["calibration"]["warm_start"] == v1.number
    assert len(p["calibration"]["history"]) == p["calibration"]["trials"] == 2
    # a step of another method starts afresh
    ledger.add_request(["50"])
    ledger.apply(method="ssd", calibrate=True, max_trials=1)
    assert given[-1] is None


def test_a_ledger_whose_entries_no_longer_replay_still_opens_to_be_audited(tmp_path, original):
    db = tmp_path / "l.sqlite"
    built(make_ledger(db, original))
    sql(db, f"UPDATE {ENTRIES} SET payload = replace(payload, '\"n\":1', '\"n\":5') WHERE seq = 3")
    problems = Ledger(db).audit().problems
    assert len(problems) == 2 and all(p.startswith("entry 3 (request req-2") for p in problems)
    assert "it says 5 samples but holds 1 sample hashes" in problems[1]
    code, _, err = run("ledger", "status", "--ledger", db)
    assert code == 2
    assert_one_error_line(err, "entry 3 (request req-2")
