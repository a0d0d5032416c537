"""The founding report's claims as predicates over a store: holds, fails, not measured."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
import torch

from unlearnkit.bench import ResultStore
from unlearnkit.report import load_finished, summarize, write_report
from unlearnkit.report.claims import (
    CLAIMS,
    FAILS,
    HOLDS,
    NOT_MEASURED,
    check_claims,
    claims_html,
    claims_markdown,
)
from unlearnkit.saliency import saliency_agreement

CLASS, RANDOM = ("class 3", "class"), ("random 10%", "random")
_ids = itertools.count()
PER_CLASS = {"classes": [str(c) for c in range(10)], "forgotten": ["3"]}


def run(scenario, method, params=None, artefacts=None, **metrics):
    return {"run_id": f"r{next(_ids)}", "dataset": "digits", "arch": "cnn",
            "scenario": scenario[0], "scenario_kind": scenario[1], "method": method,
            "params": params or {}, "seed": 0, "status": "ok", "spec": {},
            "metrics": metrics, "artefacts": {"per_class": PER_CLASS, **(artefacts or {})}}


def curves(first_retain):
    return {"curves": [{"phase": "teacher: rebuild", "epoch": 1, "step": 16,
                        "retain_acc": first_retain, "forget_acc": 0.1, "test_acc": 0.9}]}


def agreement(forget, retain):
    return {"saliency_agreement": {"forget": forget, "retain": retain}}


def holding_rows():
    """A store on which every claim holds."""
    o = dict(retain_acc=1.0, test_retain_acc=0.97, forget_acc=1.0, test_acc=0.95)
    return [
        run(CLASS, "original", **o),
        run(CLASS, "retrain", retain_acc=1.0, test_retain_acc=0.98, forget_acc=0.0),
        run(CLASS, "finetune", forget_acc=0.9, retain_acc=1.0),
        run(CLASS, "perturb", {"beta": 0.3}, forget_acc=0.95, retain_acc=0.99,
            test_retain_acc=0.96),
        run(CLASS, "perturb", {"beta": 0.7}, forget_acc=0.80, retain_acc=0.99,
            test_retain_acc=0.955),
        run(CLASS, "perturb", {"beta": 1.0}, forget_acc=0.81, retain_acc=0.98,
            test_retain_acc=0.95),  # a rise of 0.01 is noise
        run(CLASS, "teacher", {}, curves(0.9), forget_acc=0.12, retain_acc=0.99),
        run(CLASS, "teacher", {"alpha": 0.0}, curves(0.80), forget_acc=0.1, retain_acc=0.99),
        run(CLASS, "teacher", {"alpha": 2.0}, curves(0.95), forget_acc=0.1, retain_acc=0.99),
        run(CLASS, "fisher-mask", {"epochs": 0}, agreement(0.4, 0.9), forget_acc=0.0,
            retain_acc=0.95, test_retain_acc=0.93),
        run(CLASS, "fisher-mask", {"epochs": 5}, forget_acc=0.0, retain_acc=1.0,
            test_retain_acc=0.965),
        run(CLASS, "ssd", {}, agreement(0.5, 0.99), forget_acc=0.01, retain_acc=0.99,
            test_retain_acc=0.96),
        run(RANDOM, "original", activation_distance=0.05, js_divergence=0.02),
        run(RANDOM, "fisher-mask", {}, activation_distance=0.11, js_divergence=0.07),
        run(RANDOM, "ssd", {}, activation_distance=0.19, js_divergence=0.11),
    ]


def verdicts(rows):
    summaries = summarize([{**r, **r["metrics"]} for r in rows])  # as the store reads them
    arts = {r["run_id"]: r["artefacts"] for r in rows}
    return {c.number: c for c in check_claims(summaries, arts)}


def test_every_claim_holds_where_the_numbers_say_so():
    got = verdicts(holding_rows())
    assert sorted(got) == [number for number, *_ in CLAIMS]
    assert {n: c.verdict for n, c in got.items()} == {n: HOLDS for n in got}
    assert "forget by beta 0.3: 0.950, 0.7: 0.800, 1: 0.810" in got[2].numbers
    assert "alpha 0: 0.800, 0.5: 0.900, 2: 0.950" in got[3].numbers
    assert "fisher-mask AD 0.110, JS 0.070" in got[6].numbers


def _replace(rows, method, params, **metrics):
    out = []
    for r in rows:
        if r["method"] == method and r["params"] == params and r["scenario_kind"] == (
                metrics.pop("_kind", r["scenario_kind"])):
            r = {**r, "metrics": {**r["metrics"], **metrics}}
        out.append(r)
    return out


@pytest.mark.parametrize(("number", "method", "params", "metrics", "why"), [
    (1, "finetune", {}, {"forget_acc": 0.02}, ""),
    (2, "perturb", {"beta": 1.0}, {"forget_acc": 0.97}, "does not fall with beta"),
    (2, "perturb", {"beta": 0.7}, {"retain_acc": 0.90}, "retain or test accuracy drops"),
    (3, "teacher", {}, {"forget_acc": 0.9},
     "far above chance; it holds with alpha=0.0 (test-retain -) or alpha=2.0"),
    (3, "teacher", {"alpha": 2.0}, {}, ""),  # curves replaced below
    (4, "fisher-mask", {"epochs": 0}, {"test_retain_acc": 0.85}, "the drop is not slight"),
    (4, "fisher-mask", {"epochs": 5}, {"test_retain_acc": 0.95}, "do not restore"),
    (5, "ssd", {}, {"forget_acc": 0.5}, "the class is not forgotten"),
    (6, "ssd", {}, {"js_divergence": 0.5, "_kind": "random"}, ""),
])
def test_each_claim_fails_when_its_predicate_does(number, method, params, metrics, why):
    rows = _replace(holding_rows(), method, params, **metrics)
    if number == 3 and not why:
        rows = [{**r, "artefacts": {**r["artefacts"], **curves(0.5)}}
                if r["method"] == "teacher" and r["params"] == {"alpha": 2.0} else r
                for r in rows]
        why = "alpha does not speed up reconstruction"
    got = verdicts(rows)[number]
    assert got.verdict == FAILS
    assert why in got.note
    others = {n: c.verdict for n, c in verdicts(rows).items() if n != number}
    assert set(others.values()) == {HOLDS}


def test_saliency_claim_fails_when_retained_maps_change():
    rows = [{**r, "artefacts": {**r["artefacts"], **agreement(0.5, 0.6)}}
            if r["method"] == "ssd" and r["scenario_kind"] == "class" else r
            for r in holding_rows()]
    got = verdicts(rows)[7]
    assert got.verdict == FAILS and "ssd: forget 0.500, retain 0.600" in got.numbers


def test_claims_without_their_runs_are_not_measured():
    rows = [r for r in holding_rows() if r["method"] in ("original", "retrain", "finetune")
            or r["params"] == {"beta": 0.3}]
    rows.append(run(CLASS, "ssd", {"alpha": 1.0}, agreement(0.1, 0.9), forget_acc=0.0))
    got = verdicts(rows)
    assert got[1].verdict == HOLDS
    assert {got[n].verdict for n in (2, 3, 4, 5, 6, 7)} == {NOT_MEASURED}
    assert got[6].scenario == "digits / cnn: random 10% (random)"
    no_random = [r for r in holding_rows() if r["scenario_kind"] == "class"]
    assert verdicts(no_random)[6].scenario == "(no random scenario)"
    # a store with fewer than three founding methods gets no claims section at all
    other = [run(CLASS, "scrub", forget_acc=0.1), run(CLASS, "retrain", forget_acc=0.0),
             run(CLASS, "finetune", forget_acc=0.9), run(CLASS, "ssd", forget_acc=0.0)]
    assert check_claims(summarize([{**r, **r["metrics"]} for r in other]), {}) == []
    # a row without the metric a claim reads is "not measured", never an error
    bare = [{**r, "metrics": {}} if r["method"] in ("ssd", "finetune", "teacher") else r
            for r in holding_rows()]
    got = verdicts(bare)
    assert {got[n].verdict for n in (1, 3, 5)} == {NOT_MEASURED}


def test_defaults_are_resolved_per_scenario():
    """``{}`` is SSD at alpha 10 for a class: an explicit alpha 10 row is the same claim."""
    rows = [r for r in holding_rows() if not (r["method"] == "ssd"
                                              and r["scenario_kind"] == "class")]
    rows.append(run(CLASS, "ssd", {"alpha": 10.0}, forget_acc=0.01, retain_acc=0.99,
                    test_retain_acc=0.96))
    assert verdicts(rows)[5].verdict == HOLDS
    rows[-1]["params"] = {"alpha": 1.0}  # another alpha is not the claim's setting
    assert verdicts(rows)[5].verdict == NOT_MEASURED


def test_report_has_the_claims_section(tmp_path: Path):
    db = tmp_path / "r.sqlite"
    with ResultStore(db) as store:
        for r in holding_rows():
            store.write(r)
    out = write_report(db, tmp_path / "report")
    assert len(out["claims"]) == 7 and {c["verdict"] for c in out["claims"]} == {HOLDS}
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## The founding report's claims" in md
    assert md.count("| **holds** |") == 7
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.count('<td class="verdict"') == 7 and page.rstrip().endswith("</html>")
    assert re.search(r'<section id="claims">.*</section></body>', page, re.S)
    assert claims_markdown([]) == "" and claims_html([]) == ""
    assert load_finished(db)  # the store is left readable


def test_saliency_agreement_is_one_for_the_same_model_and_lower_for_another():
    torch.manual_seed(0)
    make = lambda: torch.nn.Sequential(  # noqa: E731
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(4 * 8 * 8, 3))
    a, b = make(), make()
    from unlearnkit.data.containers import ArrayDataset

    data = ArrayDataset(torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2]))
    assert saliency_agreement(a, a, data, n=4) == pytest.approx(1.0)
    other = saliency_agreement(a, b, data, n=4)
    assert other is not None and other < 0.5
    assert saliency_agreement(a, a, ArrayDataset(torch.zeros(0, 1, 8, 8),
                                                 torch.zeros(0, dtype=torch.long))) is None


def test_alpha_speed_read_from_one_epoch_runs_without_curves():
    rows = [r for r in holding_rows() if r["method"] != "teacher"]
    rows += [run(CLASS, "teacher", {}, forget_acc=0.1, retain_acc=0.99),
             run(CLASS, "teacher", {"alpha": 0.0, "epochs": 1}, forget_acc=0.1,
                 retain_acc=0.70),
             run(CLASS, "teacher", {"alpha": 2.0, "epochs": 1}, forget_acc=0.1,
                 retain_acc=0.90)]
    got = verdicts(rows)[3]
    assert got.verdict == HOLDS and "alpha 0: 0.700, 2: 0.900" in got.numbers
    rows[-1]["metrics"]["retain_acc"] = 0.60
    assert verdicts(rows)[3].verdict == FAILS


SHARED_CIFAR = Path(__file__).resolve().parents[1] / "../shared/data/cifar10-jpeg.tar.gz"


def test_founding_presets_hold_the_runs_every_claim_reads(monkeypatch):
    """Claims 1-7 are measurable on the digits preset: each claim's setting is in its grid."""
    from unlearnkit.bench import expand, preset

    def settings(plan, kind):
        return [(r.method, _resolved(r.method, r.params, kind)) for r in plan.runs
                if r.scenario.kind == kind]

    from unlearnkit.report.claims import _resolved

    plan = expand(preset("founding-report"))
    cls, rnd = settings(plan, "class"), settings(plan, "random")

    def has(pairs, method, **fixed):
        return any(m == method and all(p.get(k) == v for k, v in fixed.items())
                   for m, p in pairs)

    assert has(cls, "finetune", epochs=5) and has(cls, "retrain") and has(cls, "original")
    assert sum(m == "perturb" for m, _ in cls) >= 2
    assert has(cls, "teacher", forget_lr=1e-6, alpha=0.5)
    assert {p["alpha"] for m, p in cls if m == "teacher" and p["forget_lr"] == 1e-4} >= {0.0, 2.0}
    for ranking in ("capped", "global"):
        for epochs in (0, 5):
            assert has(cls, "fisher-mask", fraction=0.01, epochs=epochs, ranking=ranking)
    assert has(cls, "ssd", alpha=10.0, reference="retain")
    assert has(rnd, "fisher-mask", fraction=0.4) and has(rnd, "ssd", alpha=0.5)
    if not SHARED_CIFAR.is_file():  # the CIFAR preset reads its class names from the data
        return
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    cifar = preset("founding-report-cifar10")
    assert cifar.arch == "resnet18" and dict(cifar.arch_kwargs) == {"width": 0.125}
    assert cifar.recipe.augment == "flip-crop" and cifar.recipe.epochs == 15
    plan = expand(cifar)
    cls = settings(plan, "class")
    assert has(cls, "ssd", alpha=10.0) and has(cls, "fisher-mask", fraction=0.01, epochs=0)
