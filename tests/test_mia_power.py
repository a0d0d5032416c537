"""The MIAs' power checks: values against scikit-learn, the informativeness rule, and how the
tables, the CLI text and the report mark (and refuse to rank) a figure with no power."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import SVC
from torch import nn

import unlearnkit as uk
from unlearnkit import evaluation as E
from unlearnkit.bench import ResultStore
from unlearnkit.bench.store import METRIC_COLUMNS
from unlearnkit.compare import NO_POWER_LEGEND, ROW_METRICS, format_table
from unlearnkit.metrics import (
    mia_confidence_power,
    mia_entropy_power,
    mia_informative,
    mia_loss_cv_power,
    mia_separation,
    uninformative_mias,
)
from unlearnkit.metrics.mia_power import (
    MIN_POWER,
    MIN_SEPARATION,
    attack_auc,
    power_note,
)
from unlearnkit.report import load_finished, summarize, write_report

FIGS = ("mia_loss_cv", "mia_entropy", "mia_confidence")


def _per_fold_auc(members, non_members, make, seed=0, n_splits=5, raw=False):
    """The reference: sklearn's folds, fits and roc_auc_score, written out by hand."""
    x = np.concatenate([non_members, members]).reshape(-1, 1)
    y = np.r_[np.zeros(len(non_members)), np.ones(len(members))]
    aucs = []
    for tr, te in StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(x, y):
        score = x[te, 0] if raw else make().fit(x[tr], y[tr]).decision_function(x[te])
        aucs.append(roc_auc_score(y[te], score))
    return float(np.mean(aucs))


# ---------------------------------------------------------------------- values
def test_power_is_the_cross_validated_auc_of_sklearn():
    rng = np.random.default_rng(1)
    m, t = rng.normal(1.0, 1.0, 400), rng.normal(0.0, 1.0, 400)  # AUC = Phi(1/sqrt 2) = 0.76
    got = attack_auc(m, t, LogisticRegression)
    # a 1-d logistic regression with a positive slope ranks like the raw feature
    assert got == pytest.approx(_per_fold_auc(m, t, LogisticRegression, raw=True), abs=1e-12)
    assert got == pytest.approx(roc_auc_score(np.r_[np.zeros(400), np.ones(400)],
                                              np.r_[t, m]), abs=0.02)
    assert got == pytest.approx(norm.cdf(1 / math.sqrt(2)), abs=0.04)
    svc = lambda: SVC(C=3, gamma="auto", kernel="rbf")  # noqa: E731
    p_m, p_t = 1 / (1 + np.exp(-m)), 1 / (1 + np.exp(-t))
    assert mia_confidence_power(p_m, p_t) == pytest.approx(_per_fold_auc(p_m, p_t, svc),
                                                           abs=1e-12)


def test_power_has_no_direction_members_with_lower_loss_are_found():
    rng = np.random.default_rng(2)
    members, non_members = rng.exponential(0.1, 300), rng.exponential(1.0, 300)
    raw = roc_auc_score(np.r_[np.zeros(300), np.ones(300)], np.r_[non_members, members])
    assert raw < 0.2  # members have the *lower* loss
    assert mia_loss_cv_power(members, non_members) == pytest.approx(1 - raw, abs=0.02)


def test_entropy_power_of_an_overfit_and_of_a_blind_model():
    rng = np.random.default_rng(3)

    def probs(n, sharp):
        z = rng.normal(size=(n, 10)) + sharp * np.eye(10)[rng.integers(0, 10, n)]
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    assert mia_entropy_power(probs(300, 12.0), probs(300, 3.0)) > 0.95  # members sharper
    blind = mia_entropy_power(probs(300, 3.0), probs(300, 3.0))  # one distribution
    assert abs(blind - 0.5) < 0.06 and blind < MIN_POWER


def test_power_subsamples_with_a_cap_and_a_seed():
    rng = np.random.default_rng(4)
    m, t = rng.normal(0.5, 1, 5000), rng.normal(0, 1, 300)
    a = mia_loss_cv_power(m, t, seed=0)
    assert a == mia_loss_cv_power(m, t, seed=0)  # deterministic
    assert mia_loss_cv_power(m, t, seed=0, max_samples=50) != a  # the cap is applied
    sub = np.sort(np.random.default_rng(0).permutation(5000)[:300])  # the documented subset
    assert a == pytest.approx(_per_fold_auc(m[sub], t, LogisticRegression, raw=True), abs=1e-12)
    with pytest.raises(ValueError, match="n_splits"):
        mia_loss_cv_power(m, t[:3])


# ---------------------------------------------------------------------- the rule
@pytest.mark.parametrize(("metrics", "expected"), [
    ({}, None),
    ({"mia_entropy_power": float("nan")}, None),
    ({"mia_entropy_power": 0.51}, False),
    ({"mia_entropy_power": 0.47}, False),  # a CV AUC of no attack falls below 0.5 too
    ({"mia_entropy_power": 0.70}, True),
    ({"mia_entropy_power": 0.70, "mia_entropy_separation": 0.30}, True),
    ({"mia_entropy_power": 0.70, "mia_entropy_separation": 0.01}, False),
    ({"mia_entropy_power": 0.70, "mia_entropy_separation": -0.428}, False),  # backwards
    ({"mia_entropy_separation": 0.30}, True),
])
def test_informative_rule(metrics, expected):
    assert mia_informative(metrics, "mia_entropy") is expected


def test_the_issue_case_is_flagged_and_explained():
    # the issue: the original scored 0.034, the retrained model 0.462, no power on the model
    sep = mia_separation(0.034, 0.462)
    assert sep == pytest.approx(-0.428)
    m = {"mia_entropy": 0.034, "mia_entropy_power": 0.51, "mia_entropy_separation": sep,
         "mia_loss_cv": 0.7, "mia_loss_cv_power": 0.8, "mia_confidence_power": 0.4}
    assert uninformative_mias(m) == ["mia_entropy"]  # mia_confidence: no figure, not listed
    note = power_note(m, "mia_entropy")
    assert "AUC 0.5100" in note and "-0.428" in note and note.endswith("no power")
    assert power_note(m, "mia_loss_cv") is None
    assert MIN_POWER == 0.55 and MIN_SEPARATION == 0.05


# ---------------------------------------------------------------------- on models
class _Memoriser(nn.Module):
    """Perfectly overfit: confident on the training inputs it stored, a 1-NN guess elsewhere."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, num_classes: int = 10) -> None:
        super().__init__()
        self.register_buffer("x", x.reshape(len(x), -1).float())
        self.register_buffer("y", y.long())
        self.num_classes = num_classes

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        d = torch.cdist(inputs.reshape(len(inputs), -1).float(), self.x)
        dist, idx = d.min(dim=1)
        scale = torch.where(dist < 1e-6, 12.0, 2.0)
        return scale[:, None] * nn.functional.one_hot(self.y[idx], self.num_classes).float()


def test_a_model_that_cannot_tell_retain_from_test_is_uninformative(mlp_model, class_split):
    blind = copy.deepcopy(mlp_model)
    with torch.no_grad():
        for p in blind.parameters():
            p.zero_()  # constant logits: every sample looks the same
    out = uk.evaluate(blind, class_split, relearn=False)
    for k in FIGS:
        assert out[f"{k}_power"] == pytest.approx(0.5, abs=1e-9)
    assert uninformative_mias(out) == list(FIGS)


def test_an_overfit_model_is_informative(digits, class_split):
    x, y = digits.train.x, digits.train.y
    o = E.Outputs.of(_Memoriser(x, y), class_split)
    for fn in (E.mia_loss_cv_power, E.mia_entropy_power, E.mia_confidence_power):
        assert fn(o, class_split) > 0.9
    assert E.mia_loss_cv_power(o, class_split, seed=0) == E.mia_loss_cv_power(o, class_split,
                                                                                seed=0)


def test_power_uses_the_retained_classes_test_samples(digits, class_split):
    o = E.Outputs.of(_Memoriser(digits.train.x, digits.train.y), class_split)
    members, non_members = E._power_sets(o, class_split)
    assert 3 not in set(non_members[1].tolist()) and 3 not in set(members[1].tolist())
    assert len(non_members[1]) == len(o.test[1]) - len(o.test_forget[1])


def test_evaluate_reports_power_and_separation(mlp_model, random_split):
    retrained = uk.retrain(mlp_model, random_split, seed=0)
    out = uk.evaluate(mlp_model, random_split, retrained=retrained, original=mlp_model,
                      relearn=False)
    o, r = E.Outputs.of(mlp_model, random_split), E.Outputs.of(retrained, random_split)
    assert out["mia_loss_cv_power"] == E.mia_loss_cv_power(o, random_split)
    assert out["mia_entropy_separation"] == pytest.approx(
        E.mia_entropy(o, random_split) - E.mia_entropy(r, random_split))
    assert out["mia_confidence_separation"] == pytest.approx(
        E.mia_confidence(o, random_split) - E.mia_confidence(r, random_split))
    plain = uk.evaluate(mlp_model, random_split, relearn=False)  # no references: no separation
    assert "mia_entropy_power" in plain and "mia_entropy_separation" not in plain
    assert "mia_entropy_power" not in uk.evaluate(mlp_model, random_split, mia=False)
    assert {f"{k}_power" for k in FIGS} | {f"{k}_separation" for k in FIGS} <= set(METRIC_COLUMNS)
    assert "uninformative_mias" in ROW_METRICS
    # evaluate's figures stay numbers (users round them); the flags are derived from them
    assert all(isinstance(v, float) for k, v in out.items() if k.startswith("mia_"))
    assert "uninformative_mias" not in out


def test_compare_rows_carry_the_flags(class_split):
    from unlearnkit.compare import _row

    m = {"mia_entropy": 0.034, "mia_entropy_power": 0.51, "mia_entropy_separation": -0.428,
         "mia_loss_cv": 0.6, "mia_loss_cv_power": 0.7, "mia_loss_cv_separation": 0.2}
    row = _row("class 3", class_split, "ssd", "ok", metrics=m)
    assert row["uninformative_mias"] == ["mia_entropy"]
    assert row["mia_entropy_power"] == 0.51 and row["mia_confidence_power"] is None
    assert _row("class 3", class_split, "ssd", "skipped", reason="no")["uninformative_mias"] \
        is None


# ---------------------------------------------------------------------- tables and text
def _cmp_row(method, entropy, power, sep=0.3):
    m = {"mia_entropy": entropy, "mia_entropy_power": power, "mia_entropy_separation": sep}
    return {"scenario": "class 3", "status": "ok", "method": method, "split": {},
            "retain_acc": 0.9, **m, "uninformative_mias": uninformative_mias(m)}


def test_compare_table_marks_a_figure_with_no_power():
    text = format_table([_cmp_row("original", 0.034, 0.51), _cmp_row("ssd", 0.250, 0.80)])
    assert "0.034?" in text and "0.250?" not in text and "0.250" in text
    assert NO_POWER_LEGEND in text
    assert "mia_entropy_power" in text and "0.510" in text  # the power table
    assert "entropy +0.300" in text  # the separation line
    assert text.count("mia_entropy≈") == 1  # the forgetting table's header only
    clean = format_table([_cmp_row("ssd", 0.250, 0.80)])
    assert "?" not in clean and NO_POWER_LEGEND not in clean


def test_cli_metrics_text_marks_and_explains():
    from unlearnkit.cli import _metrics_text

    m = {"mia_entropy": 0.034, "mia_entropy_power": 0.51, "mia_loss_cv": 0.7,
         "mia_loss_cv_power": 0.8}
    lines = _metrics_text(m)
    assert any(line.split() == ["mia_entropy", "0.034?"] for line in lines)
    assert any(line.split() == ["mia_loss_cv", "0.7"] for line in lines)
    assert any("AUC 0.5100" in line and line.strip().startswith("?") for line in lines)


# ---------------------------------------------------------------------- the report
def _db(path, ref_power=0.8):
    # (method, forget-figure, power): salun is closest to retrain's 0.10 but has no power
    values = [("retrain", 0.10, ref_power), ("original", 0.90, 0.80), ("salun", 0.11, 0.50),
              ("finetune", 0.30, 0.70), ("amnesiac", 0.60, 0.75)]
    with ResultStore(path) as store:
        for n, (method, fig, power) in enumerate(values):
            metrics = {"retain_acc": 0.9, "mia_entropy": fig, "mia_entropy_power": power,
                       "mia_entropy_separation": 0.8, "mia_loss_cv": fig,
                       "mia_loss_cv_power": power, "mia_loss_cv_separation": 0.01}
            store.write({"run_id": f"r{n}", "dataset": "digits", "arch": "mlp",
                         "scenario": "class 3", "scenario_kind": "class", "method": method,
                         "params": {}, "seed": 0, "status": "ok", "spec": {},
                         "metrics": metrics})
    return path


def test_best_skips_figures_with_no_power(tmp_path):
    s = summarize(load_finished(_db(tmp_path / "r.sqlite")))[0]
    idx = {r.method: i for i, r in enumerate(s.rows)}
    assert s.uninformative()["mia_entropy"] == {idx["salun"]}
    assert s.best["mia_entropy"] == {idx["finetune"]}  # not salun, whose 0.11 is noise
    assert "mia_loss_cv" not in s.best  # separation 0.01 in every row: never ranked
    assert s.uninformative()["mia_loss_cv"] == set(idx.values())
    assert s.to_dict()["uninformative"]["mia_entropy"] == [idx["salun"]]
    # the reference itself has no power: "closest to it" means nothing, the column is skipped
    s2 = summarize(load_finished(_db(tmp_path / "r2.sqlite", ref_power=0.5)))[0]
    assert "mia_entropy" not in s2.best


def test_report_greys_and_footnotes_figures_with_no_power(tmp_path):
    result = write_report(_db(tmp_path / "r.sqlite"), tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    page = (tmp_path / "out" / "report.html").read_text()
    assert "| 0.11 † |" in md and "| **0.3** |" in md
    assert "† mia_entropy has no power where marked" in md
    assert "salun: the attack tells retain from test with AUC 0.5000" in md
    assert 'class="no-power" data-informative="false"' in page
    assert 'title="the attack tells retain from test with AUC 0.5000 (&lt; 0.55): no power"' \
        in page
    assert "td.no-power{color:#999}" in page
    assert result["scenarios"][0]["uninformative"]["mia_entropy"]


def test_bench_text_marks_figures_with_no_power(tmp_path):
    from unlearnkit.cli import _bench_text

    t = summarize(load_finished(_db(tmp_path / "r.sqlite")))[0].to_dict()
    text = _bench_text({"dry_run": False, "tables": [t], "config": "c", "total": 5, "ok": 5,
                        "reused": 0, "skipped": 0, "failed": 0, "seconds": 1.0, "db": "d",
                        "logs": "l"})
    salun = next(line for line in text.splitlines() if line.startswith("salun"))
    finetune = next(line for line in text.splitlines() if line.startswith("finetune"))
    assert "0.110?" in salun.split() and "0.300" in finetune.split()
    assert "? = uninformative MIA figure" in text
