"""Tests of the model pools (unlearnkit.pools) and the pool metrics (pool_metrics, score)."""

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch

import unlearnkit as uk
from unlearnkit import metrics as M
from unlearnkit.evaluation import pool_metrics
from unlearnkit.exceptions import InvalidParameterError, UnknownNameError
from unlearnkit.methods.base import UnlearningMethod, get_method
from unlearnkit.metrics.lira import mia_lira
from unlearnkit.pools import (
    RETRAINED_SEED_BASE,
    PoolOutputs,
    cached_original,
    original_pool,
    pool_cache_dir,
    retrained_pool,
    unlearned_pool,
)
from unlearnkit.training import predict

POOL_KEYS = {"forgetting_quality", "competition_score", "retain_acc_ratio", "test_acc_ratio",
             "mia_lira", "n_models"}


@pytest.fixture(scope="module")
def original(digits):
    # trains on digits only; touches no cache (the per-test cache folder is not set up yet)
    return uk.train_model(digits, arch="mlp", hidden=(16,), recipe=uk.Recipe(epochs=2), seed=0)


@pytest.fixture(scope="module")
def split(digits):
    return uk.split_random(digits, count=40, seed=0)


@pytest.fixture
def count_unlearn(monkeypatch):
    """Record the seed of every UnlearningMethod.unlearn call (how pools train their models)."""
    calls = []
    real = UnlearningMethod.unlearn

    def counting(self, model, **kwargs):
        calls.append((self.name, kwargs["seed"]))
        return real(self, model, **kwargs)

    monkeypatch.setattr(UnlearningMethod, "unlearn", counting)
    return calls


def _forbid_training(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("a model was trained although it should have come from the cache")

    monkeypatch.setattr(UnlearningMethod, "unlearn", boom)
    monkeypatch.setattr("unlearnkit.pools.fit", boom)


def _assert_same_pool(a: PoolOutputs, b: PoolOutputs):
    assert a.seeds == b.seeds
    for name in ("forget_logits", "forget_labels", "retain_acc", "forget_acc", "test_acc",
                 "seconds"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def _cached_files():
    root = pool_cache_dir()
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


# ---------------------------------------------------------------------- contents
def test_retrained_pool_contents(original, split):
    pool = retrained_pool(original, split, 3)
    assert isinstance(pool, PoolOutputs)
    assert (pool.kind, pool.label, len(pool)) == ("retrained", "retrain", 3)
    assert pool.seeds == (RETRAINED_SEED_BASE, RETRAINED_SEED_BASE + 1, RETRAINED_SEED_BASE + 2)
    assert pool.forget_logits.shape == (3, 40, 10)
    assert pool.forget_logits.dtype == np.float32
    np.testing.assert_array_equal(pool.forget_labels, split.forget.y.numpy())
    for acc in (pool.retain_acc, pool.forget_acc, pool.test_acc):
        assert acc.shape == (3,)
        assert np.all((acc >= 0) & (acc <= 1))
    assert pool.seconds.shape == (3,) and np.all(pool.seconds >= 0)
    # the forget accuracy is the one the stored logits give
    want = (pool.forget_logits.argmax(axis=2) == pool.forget_labels[None, :]).mean(axis=1)
    np.testing.assert_allclose(pool.forget_acc, want, rtol=0, atol=1e-6)
    # confidences: the competition's statistic, model by model
    conf = pool.confidences()
    assert conf.shape == (3, 40) and conf.dtype == np.float64
    for i in range(3):
        np.testing.assert_array_equal(
            conf[i], M.logit_scaled_confidence(pool.forget_logits[i], pool.forget_labels))
    assert pool.folder is not None and pool.folder.parent == pool_cache_dir()


def test_pool_json_names_the_kind(original, split):
    for pool, kind, label in (
        (retrained_pool(original, split, 1), "retrained", "retrain"),
        (unlearned_pool(original, split, "finetune", 1), "unlearned", "finetune"),
        (original_pool(original, split, 1), "original", "original"),
    ):
        meta = json.loads((pool.folder / "pool.json").read_text())
        assert meta["kind"] == kind and meta["label"] == label
        assert pool.folder.name.startswith(kind + "-")
        assert (pool.folder / f"seed-{pool.seeds[0]}.npz").is_file()


# ---------------------------------------------------------------------- caching
def test_second_call_trains_nothing(original, split, monkeypatch):
    first = [retrained_pool(original, split, 3), unlearned_pool(original, split, "finetune", 3),
             original_pool(original, split, 3)]
    _forbid_training(monkeypatch)
    second = [retrained_pool(original, split, 3), unlearned_pool(original, split, "finetune", 3),
              original_pool(original, split, 3)]
    for a, b in zip(first, second, strict=True):
        _assert_same_pool(a, b)
        assert a.folder == b.folder


def test_growing_a_pool_trains_only_the_new_models(original, split, count_unlearn):
    small = retrained_pool(original, split, 3)
    assert count_unlearn == [("retrain", RETRAINED_SEED_BASE + i) for i in range(3)]
    count_unlearn.clear()
    big = retrained_pool(original, split, 5)
    assert count_unlearn == [("retrain", RETRAINED_SEED_BASE + 3),
                             ("retrain", RETRAINED_SEED_BASE + 4)]
    assert len(big) == 5 and big.forget_logits.shape == (5, 40, 10)
    np.testing.assert_array_equal(big.forget_logits[:3], small.forget_logits)
    # and a smaller request is served from the cache
    count_unlearn.clear()
    _assert_same_pool(retrained_pool(original, split, 2), dataclasses.replace(
        big, seeds=big.seeds[:2], forget_logits=big.forget_logits[:2],
        retain_acc=big.retain_acc[:2], forget_acc=big.forget_acc[:2],
        test_acc=big.test_acc[:2], seconds=big.seconds[:2]))
    assert count_unlearn == []


def test_corrupt_seed_file_is_recomputed(original, split, count_unlearn):
    first = retrained_pool(original, split, 3)
    bad = first.folder / f"seed-{RETRAINED_SEED_BASE + 1}.npz"
    bad.write_bytes(b"\x00garbage, not a zip archive\xff" * 7)
    count_unlearn.clear()
    again = retrained_pool(original, split, 3)
    assert count_unlearn == [("retrain", RETRAINED_SEED_BASE + 1)]
    np.testing.assert_array_equal(again.forget_logits, first.forget_logits)  # CPU determinism
    with np.load(bad, allow_pickle=False) as f:  # overwritten with a readable file
        np.testing.assert_array_equal(f["forget_logits"], first.forget_logits[1])


def test_cache_false_writes_nothing(original, split):
    pools = [retrained_pool(original, split, 2, cache=False),
             unlearned_pool(original, split, "finetune", 2, cache=False),
             original_pool(original, split, 2, cache=False)]
    assert all(p.folder is None for p in pools)
    assert not pool_cache_dir().exists()


# ---------------------------------------------------------------------- cache keys
def test_cache_keys(original, split, digits):
    same = unlearned_pool(original, split, "finetune", 1).folder
    assert unlearned_pool(original, split, "finetune", 1).folder == same
    assert unlearned_pool(original, split, get_method("finetune"), 1).folder == same
    # a different split
    other_split = uk.split_random(digits, count=40, seed=1)
    assert unlearned_pool(original, other_split, "finetune", 1).folder != same
    # different hyper-parameters
    assert unlearned_pool(original, split, "finetune", 1, epochs=1).folder != same
    # different original weights (same architecture, same recorded provenance)
    nudged = copy.deepcopy(original)
    with torch.no_grad():
        next(nudged.parameters()).add_(1e-3)
    assert unlearned_pool(nudged, split, "finetune", 1).folder != same
    # the retrained pool does not depend on the original's weights, only on the request
    ref = retrained_pool(original, split, 1).folder
    assert retrained_pool(nudged, split, 1).folder == ref
    assert retrained_pool(original, other_split, 1).folder != ref
    assert len({same, ref}) == 2
    # ... nor does retraining judged as a method
    assert unlearned_pool(nudged, split, "retrain", 1).folder == unlearned_pool(
        original, split, "retrain", 1).folder


# ---------------------------------------------------------------------- what the models are
def test_pool_models_are_the_api_results(original, split):
    ref = retrained_pool(original, split, 3)
    for i in range(3):
        model = uk.retrain(original, split, seed=RETRAINED_SEED_BASE + i)
        logits, _ = predict(model, split.forget)
        np.testing.assert_array_equal(ref.forget_logits[i], logits.numpy())
    pool = unlearned_pool(original, split, "finetune", 3)
    assert pool.seeds == (0, 1, 2)
    for i in range(3):
        model = uk.unlearn(original, split, "finetune", seed=i)
        logits, _ = predict(model, split.forget)
        np.testing.assert_array_equal(pool.forget_logits[i], logits.numpy())


def test_retrain_as_a_method_never_reuses_reference_models(original, split):
    ref = retrained_pool(original, split, 3)
    pool = unlearned_pool(original, split, "retrain", 3)
    assert not set(pool.seeds) & set(ref.seeds)
    for i in range(3):
        for j in range(3):
            assert not np.array_equal(pool.forget_logits[i], ref.forget_logits[j]), (i, j)


def test_original_pool_remembers_the_forgotten_class(original, class_split):
    orig = original_pool(original, class_split, 3)
    ref = retrained_pool(original, class_split, 3)
    assert orig.kind == "original" and orig.seeds == (0, 1, 2)
    # the retrained models never saw the class: they never predict it
    np.testing.assert_array_equal(ref.forget_acc, np.zeros(3))
    # the originals trained on it
    assert orig.forget_acc.min() >= ref.forget_acc.max()
    assert orig.forget_acc.mean() > 0


# ---------------------------------------------------------------------- pool_metrics
def test_pool_metrics(original, split):
    u = unlearned_pool(original, split, "finetune", 3)
    r = retrained_pool(original, split, 3)
    out = pool_metrics(u, r)
    assert set(out) == POOL_KEYS
    assert out["n_models"] == 3
    ra = np.mean(u.retain_acc) / np.mean(r.retain_acc)
    ta = np.mean(u.test_acc) / np.mean(r.test_acc)
    assert out["retain_acc_ratio"] == pytest.approx(ra, rel=1e-12)
    assert out["test_acc_ratio"] == pytest.approx(ta, rel=1e-12)
    f = out["forgetting_quality"]
    assert 0.0 <= f <= 1.0
    assert f == M.forgetting_quality(u.confidences(), r.confidences())
    assert out["competition_score"] == pytest.approx(f * ra * ta, rel=1e-12, abs=1e-15)
    assert out["mia_lira"] == mia_lira(u.confidences(), r.confidences())
    assert 0.0 <= out["mia_lira"] <= 1.0


def _first(pool: PoolOutputs, n: int, examples: slice = slice(None)) -> PoolOutputs:
    return dataclasses.replace(
        pool, seeds=pool.seeds[:n], forget_logits=pool.forget_logits[:n, examples],
        forget_labels=pool.forget_labels[examples], retain_acc=pool.retain_acc[:n],
        forget_acc=pool.forget_acc[:n], test_acc=pool.test_acc[:n], seconds=pool.seconds[:n])


def test_pool_metrics_rejects_mismatched_pools(original, split):
    u = unlearned_pool(original, split, "finetune", 3)
    r = retrained_pool(original, split, 3)
    with pytest.raises(InvalidParameterError, match="differ in size"):
        pool_metrics(_first(u, 2), r)
    with pytest.raises(InvalidParameterError, match="differ in size"):
        pool_metrics(u, _first(r, 2))
    with pytest.raises(InvalidParameterError, match="different forget sets"):
        pool_metrics(_first(u, 3, slice(0, 20)), r)
    # two models per pool: the competition's figures, but no leave-one-out attack
    small = pool_metrics(_first(u, 2), _first(r, 2))
    assert small["mia_lira"] is None and small["n_models"] == 2


# ---------------------------------------------------------------------- score
def test_score_keys_and_values(original, split):
    out = uk.score(original, split, "finetune", n_models=3)
    extra = {"method", "params", "retain_acc", "forget_acc", "test_acc", "retrained_retain_acc",
             "retrained_forget_acc", "retrained_test_acc", "seconds", "retrain_seconds"}
    assert set(out) == POOL_KEYS | extra
    assert out["method"] == "finetune"
    assert out["params"] == get_method("finetune").params()
    # the pools are cached by score: rebuild them without training and recompute
    u = unlearned_pool(original, split, "finetune", 3)
    r = retrained_pool(original, split, 3)
    assert out["retain_acc"] == pytest.approx(np.mean(u.retain_acc))
    assert out["forget_acc"] == pytest.approx(np.mean(u.forget_acc))
    assert out["retrained_test_acc"] == pytest.approx(np.mean(r.test_acc))
    assert out["seconds"] == pytest.approx(np.median(u.seconds))
    for key, value in pool_metrics(u, r).items():
        assert out[key] == value, key


def test_score_original_vs_retrain_on_a_class_split(original, class_split):
    # The class-3 confidences of the originals (which trained on it) sit several units above
    # those of the retrained models (which never saw it), far more than either pool's spread,
    # so the attack tells originals from retrained models on nearly every example. "retrain"
    # judged as a method is a second pool from the reference's own distribution: with 3 models
    # per pool its leave-one-out fits hover around or below chance. The gap between the two
    # is wide (about 0.9 vs 0.4 here), not an accident of N = 3.
    orig = uk.score(original, class_split, "original", n_models=3)
    retr = uk.score(original, class_split, "retrain", n_models=3)
    assert orig["retrained_forget_acc"] == 0.0
    assert retr["retrained_forget_acc"] == 0.0 and retr["forget_acc"] == 0.0
    assert orig["forget_acc"] > 0.0
    assert orig["mia_lira"] >= retr["mia_lira"]
    assert orig["mia_lira"] >= 0.75
    assert orig["method"] == "original" and orig["params"] is None


def test_score_errors_before_training(original, split, monkeypatch):
    _forbid_training(monkeypatch)
    with pytest.raises(InvalidParameterError, match="no hyper-parameters"):
        uk.score(original, split, "original", epochs=3)
    with pytest.raises(UnknownNameError, match="no-such-method"):
        uk.score(original, split, "no-such-method", n_models=3)
    with pytest.raises(InvalidParameterError, match="no parameter"):
        uk.score(original, split, "finetune", n_models=3, no_such_param=1)
    for bad in (0, -1, True, 2.5, "3"):
        with pytest.raises(InvalidParameterError, match="n_models"):
            uk.score(original, split, "finetune", n_models=bad)
        with pytest.raises(InvalidParameterError, match="n_models"):
            retrained_pool(original, split, bad)
    assert _cached_files() == []


# ---------------------------------------------------------------------- cached_original
def test_cached_original_trains_once(digits, original, monkeypatch):
    calls = []
    real = uk.api.train_model

    def counting(*args, **kwargs):
        calls.append(kwargs.get("seed"))
        return real(*args, **kwargs)

    monkeypatch.setattr("unlearnkit.api.train_model", counting)
    kw = {"arch": "mlp", "recipe": uk.Recipe(epochs=2), "seed": 0, "hidden": (16,)}
    first = cached_original(digits, **kw)
    assert calls == [0]
    # the same training as train_model's (CPU determinism)
    for name, t in original.state_dict().items():
        assert torch.equal(first.state_dict()[name], t), name
    files = list((pool_cache_dir() / "originals").glob("*.safetensors"))
    assert len(files) == 1

    def boom(*args, **kwargs):
        raise AssertionError("cached_original trained again")

    monkeypatch.setattr("unlearnkit.api.train_model", boom)
    second = cached_original(digits, **kw)
    assert first.state_dict().keys() == second.state_dict().keys()
    for name, t in first.state_dict().items():
        assert torch.equal(second.state_dict()[name], t), name

    # an unreadable entry is retrained and overwritten, not crashed on
    monkeypatch.setattr("unlearnkit.api.train_model", counting)
    files[0].write_bytes(b"not a safetensors file")
    third = cached_original(digits, **kw)
    assert calls == [0, 0]
    for name, t in first.state_dict().items():
        assert torch.equal(third.state_dict()[name], t), name
    # another seed is another entry
    cached_original(digits, **{**kw, "seed": 1})
    assert calls == [0, 0, 1]
    assert len(list((pool_cache_dir() / "originals").glob("*.safetensors"))) == 2
