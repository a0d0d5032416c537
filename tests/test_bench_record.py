"""What a benchmark records beyond the metrics: 'original' rows, unions of sweeps, accuracy per
epoch, per-class accuracy, per-sample losses, saliency maps, the competition's score, and
datasets cut to a per-class subset.

Plans are tiny (an MLP or the CNN on digits, 2 epochs); caches go to a fresh folder per test.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import unlearnkit as uk
from unlearnkit.bench import ResultStore, expand, parse_config, read_artefacts, read_rows, run_plan
from unlearnkit.bench.plan import ORIGINAL
from unlearnkit.bench.run import _data, _split
from unlearnkit.exceptions import InvalidParameterError
from unlearnkit.methods.base import get_method
from unlearnkit.models.checkpoint import load_checkpoint
from unlearnkit.pools import original_cache_path, reference_cache_path
from unlearnkit.training import Recipe, fit, predict, watch_epochs

TINY = {
    "dataset": "digits",
    "model": {"arch": "mlp", "kwargs": {"hidden": [16]}},
    "recipe": {"epochs": 2},
    "scenarios": {"classes": [[3]]},
    "methods": {"finetune": {"epochs": 2, "lr": 1e-3}},
    "seeds": [0],
    "relearn": False,
    "mia": False,
}

TIMING = ("seconds", "speedup")


def cfg(**changes):
    return parse_config({**TINY, **changes})


def models_of(run, cache=None):
    """The cached original and reference a run was judged with, and its split."""
    if cache is not None:
        import os

        old = os.environ.get("UNLEARNKIT_CACHE")
        os.environ["UNLEARNKIT_CACHE"] = str(cache)
        try:
            return models_of(run)
        finally:
            os.environ["UNLEARNKIT_CACHE"] = old if old is not None else ""
    data = _data(run.dataset, run.dataset_options)
    split = _split(data, run.scenario, run.seed)
    path = original_cache_path(data, arch=run.arch, recipe=Recipe.from_dict(run.recipe),
                               seed=run.seed, **run.arch_kwargs)
    original = load_checkpoint(path)
    reference = load_checkpoint(reference_cache_path(original, split, seed=run.seed))
    return data, split, original, reference


# ---------------------------------------------------------------------- config and plan
def test_union_of_sweeps_is_each_point_once():
    default_lr = get_method("teacher").forget_lr
    plan = expand(cfg(original=False, methods={"teacher": [
        {"forget_lr": [default_lr, 1e-3]},      # includes the default point
        {"forget_epochs": [15, 30]},             # 15 is the default: the same point again
    ]}))
    pts = sorted((r.params["forget_lr"], r.params["forget_epochs"]) for r in plan.runs)
    assert pts == sorted([(default_lr, 15), (1e-3, 15), (default_lr, 30)])
    with pytest.raises(InvalidParameterError, match=r"methods\.teacher\[1\]\.forget_epochs"):
        cfg(methods={"teacher": [{"forget_lr": [1e-3]}, {"forget_epochs": []}]})


def test_original_rows_one_per_scenario_and_seed():
    plan = expand(cfg(scenarios={"classes": [[3]], "random": [0.1]}, seeds=[0, 1]))
    originals = [r for r in plan.runs if r.method == ORIGINAL]
    assert len(originals) == 2 * 2 and all(r.params == {} for r in originals)
    assert plan.runs[0].method == ORIGINAL  # first in each scenario
    assert not any(r.method == ORIGINAL for r in expand(cfg(original=False)).runs)


def test_score_selects_runs_by_method_and_params():
    config = cfg(original=False, methods={"finetune": {"epochs": [1, 2]}, "ssd": {}},
                 score={"n_models": 3, "methods": {"finetune": {"epochs": 2}}})
    scored = {(r.method, r.params.get("epochs")): r.score_models for r in expand(config).runs}
    assert scored == {("finetune", 1): 0, ("finetune", 2): 3, ("ssd", None): 0}
    every = cfg(methods={"finetune": {"epochs": [1, 2]}},
                score={"n_models": 2, "methods": ["finetune"]})
    assert {r.score_models for r in expand(every).runs if r.method == "finetune"} == {2}


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"score": {"n_models": 1, "methods": ["finetune"]}}, "score.n_models"),
        ({"score": {"n_models": 4, "methods": ["ssd"]}}, "'ssd'"),
        ({"score": {"n_models": 4}}, "score.methods"),
        ({"score": {"n_models": 4, "methods": ["finetune"], "x": 1}}, "'x'"),
        ({"curves": "yes"}, "'curves'"),
        ({"original": 1}, "'original'"),
        ({"dataset": {"name": "digits", "train_per_class": 0}}, "dataset.train_per_class"),
        ({"dataset": {"name": "digits", "root": 3}}, "dataset.root"),
    ],
)
def test_new_config_keys_are_checked(changes, fragment):
    with pytest.raises(InvalidParameterError, match=fragment.replace(".", r"\.")):
        cfg(**changes)


def test_per_class_subset():
    data = uk.load_dataset("digits")
    small = data.per_class(train=20, test=5)
    assert np.bincount(small.train.y.numpy()).tolist() == [20] * 10
    assert np.bincount(small.test.y.numpy()).tolist() == [5] * 10
    # the first samples of each class, in their original order
    first = np.sort(np.concatenate([np.flatnonzero(data.train.y.numpy() == c)[:20]
                                    for c in range(10)]))
    assert torch.equal(small.train.x, data.train.x[first])
    assert data.per_class(test=5).train is data.train
    with pytest.raises(InvalidParameterError, match="per class"):
        data.per_class(train=-1)
    cut = _data("digits", dict(cfg(dataset={"name": "digits", "train_per_class": 20}
                                   ).dataset_options))
    assert len(cut.train) == 200 and len(cut.test) == len(data.test)


# ---------------------------------------------------------------------- epoch watchers
def test_watching_epochs_leaves_training_bit_identical():
    data = uk.load_dataset("digits").per_class(train=30)
    recipe = Recipe(epochs=3, lr=1e-2)
    plain = uk.build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=(16,))
    watched = copy.deepcopy(plain)
    fit(plain, data.train, recipe, seed=3)
    seen = []

    def watch(phase, epoch, model):
        seen.append((phase, epoch, uk.accuracy(model, data.test)))

    with watch_epochs(watch):
        fit(watched, data.train, recipe, seed=3, desc="phase A")
    fit(copy.deepcopy(plain), data.train, recipe)  # outside the block: not watched
    assert [(p, e) for p, e, _ in seen] == [("phase A", e) for e in range(4)]
    for a, b in zip(plain.state_dict().values(), watched.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert seen[-1][2] == uk.accuracy(watched, data.test)


# ---------------------------------------------------------------------- recorded runs
@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One real tiny bench with curves, on the CNN (so Grad-CAM exists), class 3."""
    import os

    folder = tmp_path_factory.mktemp("recorded")
    old = os.environ.get("UNLEARNKIT_CACHE")
    os.environ["UNLEARNKIT_CACHE"] = str(folder / "cache")
    try:
        config = cfg(model="cnn", recipe={"epochs": 2}, curves=True,
                     methods={"finetune": {"epochs": 2, "lr": 1e-3}, "ssd": {}})
        plan = expand(config)
        db = folder / "r.sqlite"
        run_plan(plan, db, workers=1)
        yield plan, db, {r.method: r for r in plan.runs}, folder / "cache"
    finally:
        if old is None:
            os.environ.pop("UNLEARNKIT_CACHE", None)
        else:
            os.environ["UNLEARNKIT_CACHE"] = old


def test_original_row_judges_the_original_itself(recorded):
    _plan, db, runs, cache = recorded
    row = next(r for r in read_rows(db) if r["method"] == ORIGINAL)
    _, split, original, _ = models_of(runs[ORIGINAL], cache)
    assert row["status"] == "ok"
    assert row["retain_acc"] == pytest.approx(uk.accuracy(original, split.retain))
    assert row["forget_acc"] == pytest.approx(uk.accuracy(original, split.forget))
    assert row["seconds"] is None and row["speedup"] is None  # no unlearning, no cost


def test_curves_per_epoch_end_at_the_run_metrics(recorded):
    _plan, db, runs, _cache = recorded
    arts = read_artefacts(db)
    rows = {r["method"]: r for r in read_rows(db)}
    curve = arts[runs["finetune"].run_id]["curves"]
    assert [(p["epoch"], p["step"]) for p in curve] == [(0, 0), (1, 1), (2, 2)]
    assert len({p["phase"] for p in curve}) == 1 and curve[0]["phase"].startswith("finetune")
    # epoch 0 is the original; the last epoch is the unlearned model the row judges
    for key in ("retain_acc", "forget_acc", "test_acc"):
        assert curve[0][key] == pytest.approx(rows[ORIGINAL][key])
        assert curve[-1][key] == pytest.approx(rows["finetune"][key])
    assert "curves" not in arts[runs["ssd"].run_id]  # no training phase
    assert "curves" not in arts[runs[ORIGINAL].run_id]


def test_per_class_and_losses_match_independent_computations(recorded):
    _plan, db, runs, cache = recorded
    art = read_artefacts(db)[runs[ORIGINAL].run_id]
    data, split, original, reference = models_of(runs[ORIGINAL], cache)
    for name, model in (("original", original), ("retrained", reference)):
        logits, labels = predict(model, split.test)
        right = (logits.argmax(1) == labels).numpy()
        expected = [right[labels.numpy() == c].mean() for c in range(10)]
        assert art["per_class"][name] == pytest.approx(expected)
        for part, d in (("forget", split.forget), ("test", split.test)):
            lg, lb = predict(model, d)
            losses = F.cross_entropy(lg, lb, reduction="none").numpy()
            assert art["losses"][name][part] == pytest.approx(losses, rel=1e-4, abs=1e-6)
    assert art["per_class"]["classes"] == list(data.class_names)
    assert art["per_class"]["forgotten"] == ["3"]
    assert art["per_class"]["retrained"][3] == 0.0  # the retrained model never saw a 3


def test_saliency_maps_are_recorded_for_both_samples(recorded):
    _plan, db, runs, cache = recorded
    art = read_artefacts(db)[runs["ssd"].run_id]["saliency"]
    _, split, original, _ = models_of(runs["ssd"], cache)
    assert set(art) == {"forget", "retain"}
    f = art["forget"]
    assert f["label"] == 3 and np.array(f["image"]).shape == (1, 8, 8)
    x = split.forget.x[f["index"]]
    assert np.array(f["image"]) == pytest.approx(x.numpy(), abs=1e-4)
    assert set(f["models"]) == {"original", "unlearned", "retrained"}
    for maps in f["models"].values():
        assert np.array(maps["saliency"]).shape == (8, 8)
        assert np.array(maps["gradcam"]).shape == (8, 8)
        assert min(np.array(maps["gradcam"]).ravel()) >= 0
    # the picked sample is one the original classifies right
    assert f["models"]["original"]["pred"] == f["label"]
    assert int(original(x[None]).argmax()) == f["label"]


def test_score_runs_get_the_competition_figures(tmp_path):
    config = cfg(original=False, methods={"finetune": {"epochs": [1, 2], "lr": 1e-3}},
                 score={"n_models": 2, "methods": {"finetune": {"epochs": 2}}})
    db = tmp_path / "s.sqlite"
    run_plan(expand(config), db, workers=1)
    rows = {r["params"]["epochs"]: r for r in read_rows(db)}
    assert rows[1]["competition_score"] is None and rows[1]["forgetting_quality"] is None
    assert rows[2]["forgetting_quality"] is not None
    assert 0.0 <= rows[2]["forgetting_quality"] <= 1.0
    assert rows[2]["competition_score"] is not None


def test_store_writes_artefacts_with_their_row(tmp_path):
    db = tmp_path / "a.sqlite"
    base = {"dataset": "d", "arch": "a", "scenario": "s", "scenario_kind": "class",
            "method": "m", "params": {}, "seed": 0, "spec": {}, "metrics": {}}
    with ResultStore(db) as store:
        store.write({**base, "run_id": "x", "status": "failed"})
        store.write({**base, "run_id": "y", "status": "ok", "artefacts": {"curves": [1.5]}})
        store.write({**base, "run_id": "x", "status": "ok", "artefacts": {"losses": {}}})
        assert store.artefacts() == {"y": {"curves": [1.5]}, "x": {"losses": {}}}
    assert read_artefacts(db, ["y"]) == {"y": {"curves": [1.5]}}
    assert read_artefacts(tmp_path / "missing.sqlite") == {}
