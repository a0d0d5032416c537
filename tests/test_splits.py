"""Forget requests: split_by_class, split_random, split_indices, read_indices, Split.from_data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import unlearnkit as uk
from unlearnkit.exceptions import InvalidSplitError


@pytest.fixture(scope="module")
def pets() -> uk.DataBundle:
    """12 training and 6 test samples of three named classes (4 / 2 of each)."""
    y_train = torch.tensor([0, 1, 2] * 4)
    y_test = torch.tensor([0, 1, 2] * 2)
    return uk.DataBundle(
        name="pets",
        train=uk.ArrayDataset(torch.arange(12.0).reshape(12, 1), y_train),
        test=uk.ArrayDataset(100 + torch.arange(6.0).reshape(6, 1), y_test),
        class_names=("cat", "dog", "bird"),
    )


def _check_partition(ds: uk.DataBundle, split: uk.Split) -> None:
    """forget + retain is exactly the training set, in index order, with no overlap."""
    n = len(ds.train)
    idx = split.forget_indices
    assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)
    rest = np.setdiff1d(np.arange(n), idx)
    assert len(split.forget) == len(idx) and len(split.retain) == n - len(idx)
    assert torch.equal(split.forget.x, ds.train.x[torch.as_tensor(idx)])
    assert torch.equal(split.forget.y, ds.train.y[torch.as_tensor(idx)])
    assert torch.equal(split.retain.x, ds.train.x[torch.as_tensor(rest)])
    assert torch.equal(split.retain.y, ds.train.y[torch.as_tensor(rest)])
    # the test set is split in two: the verdict's validation half and the test figures' half
    held = uk.data.splits.validation_indices(ds.test.y.numpy())
    test_idx = np.setdiff1d(np.arange(len(ds.test)), held)
    assert torch.equal(split.validation.x, ds.test.x[torch.as_tensor(held)])
    assert torch.equal(split.test.x, ds.test.x[torch.as_tensor(test_idx)])
    assert torch.equal(split.test.y, ds.test.y[torch.as_tensor(test_idx)])
    assert split.num_classes == ds.num_classes
    assert split.description["n_forget"] == len(idx)


# ------------------------------------------------------------------------------ by class
def test_split_by_one_class(digits):
    split = uk.split_by_class(digits, 3)
    _check_partition(digits, split)
    assert split.scenario == "class" and split.forget_classes == (3,)
    assert len(split.forget) == int((digits.train.y == 3).sum()) > 0
    assert set(split.forget.y.tolist()) == {3}
    assert 3 not in split.retain.y.tolist()
    assert set(split.test_forget.y.tolist()) == {3}
    assert 3 not in split.test_retain.y.tolist()
    assert len(split.test_forget) + len(split.test_retain) == len(split.test)
    assert len(split.test_forget) == int((split.test.y == 3).sum())
    assert split.description["classes"] == [3] and split.description["dataset"] == "digits"


def test_split_by_several_classes(digits):
    split = uk.split_by_class(digits, [7, 2])
    _check_partition(digits, split)
    assert split.forget_classes == (2, 7)
    assert set(split.forget.y.tolist()) == {2, 7}
    assert not {2, 7} & set(split.retain.y.tolist())
    assert set(split.test_forget.y.tolist()) == {2, 7}
    assert len(split.forget) == int(((digits.train.y == 2) | (digits.train.y == 7)).sum())


def test_split_by_class_names(pets):
    split = uk.split_by_class(pets, ["dog"], validation=0)  # the whole test set
    assert split.forget_classes == (1,)
    assert split.forget_indices.tolist() == [1, 4, 7, 10]
    assert split.forget.x.flatten().tolist() == [1.0, 4.0, 7.0, 10.0]
    assert split.retain.y.tolist() == [0, 2] * 4
    assert split.test_forget.x.flatten().tolist() == [101.0, 104.0]
    assert split.test_retain.y.tolist() == [0, 2, 0, 2]
    # names and numbers mix, and numbers given as strings work as in the CLI
    assert uk.split_by_class(pets, ["cat", 2]).forget_classes == (0, 2)
    assert uk.split_by_class(pets, "2").forget_classes == (2,)


def test_split_by_class_same_as_indices(pets):
    by_class = uk.split_by_class(pets, "bird")
    by_index = uk.split_indices(pets, [2, 5, 8, 11])
    assert torch.equal(by_class.forget.x, by_index.forget.x)
    assert torch.equal(by_class.retain.x, by_index.retain.x)
    assert by_index.scenario == "random" and by_index.test_forget is None


@pytest.mark.parametrize(
    ("classes", "pattern"),
    [
        ("horse", r"Unknown class 'horse'.*cat, dog, bird"),
        (3, r"Unknown class 3.*0-2"),
        (-1, r"Unknown class -1"),
        (["cat", 0], r"Duplicate classes"),
        ([], r"No class"),
        (["cat", "dog", "bird"], r"all 3 classes"),
    ],
)
def test_split_by_class_errors(pets, classes, pattern):
    with pytest.raises(InvalidSplitError, match=pattern):
        uk.split_by_class(pets, classes)


def test_split_by_class_with_no_samples():
    ds = uk.DataBundle(
        name="lopsided",
        train=uk.ArrayDataset(torch.zeros(4, 1), torch.tensor([0, 0, 1, 1])),
        test=uk.ArrayDataset(torch.zeros(2, 1), torch.tensor([0, 2])),
        class_names=("a", "b", "c"),
    )
    with pytest.raises(InvalidSplitError, match="no training samples"):
        uk.split_by_class(ds, "c")


def test_errors_are_value_errors(pets):
    with pytest.raises(ValueError):
        uk.split_by_class(pets, "horse")


# ------------------------------------------------------------------------------- random
def test_split_random_fraction(digits):
    split = uk.split_random(digits, fraction=0.1, seed=0)
    _check_partition(digits, split)
    assert split.scenario == "random"
    assert len(split.forget) == round(0.1 * len(digits.train))
    assert split.forget_classes is None and split.test_retain is None and split.test_forget is None
    assert split.description["fraction"] == 0.1 and split.description["seed"] == 0


def test_split_random_count(digits):
    split = uk.split_random(digits, count=25, seed=3)
    _check_partition(digits, split)
    assert len(split.forget) == 25 and split.description["count"] == 25


def test_split_random_is_seeded(digits):
    a = uk.split_random(digits, fraction=0.1, seed=5)
    b = uk.split_random(digits, fraction=0.1, seed=5)
    c = uk.split_random(digits, fraction=0.1, seed=6)
    assert np.array_equal(a.forget_indices, b.forget_indices)
    assert a.description == b.description
    assert not np.array_equal(a.forget_indices, c.forget_indices)
    assert a.description["forget_sha256"] != c.description["forget_sha256"]


def test_split_random_does_not_touch_global_rngs(digits):
    np.random.seed(0)
    torch.manual_seed(0)
    expected = (np.random.rand(), torch.rand(1))
    np.random.seed(0)
    torch.manual_seed(0)
    uk.split_random(digits, fraction=0.2, seed=1)
    assert (np.random.rand(), torch.rand(1)) == expected


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"fraction": 0.0}, r"'fraction'.*\(0, 1\).*Got 0.0"),
        ({"fraction": 1.0}, r"'fraction'.*Got 1.0"),
        ({"fraction": 1.5}, r"'fraction'.*Got 1.5"),
        ({"fraction": -0.1}, r"'fraction'.*Got -0.1"),
        ({"fraction": float("nan")}, r"'fraction'.*Got nan"),
        ({"fraction": 0.0001}, r"forget set is empty"),
        ({"count": 0}, r"'count'.*\[1, 11\].*Got 0"),
        ({"count": 12}, r"'count'.*Got 12"),
        ({"count": 2.5}, r"'count'.*int.*Got 2.5"),
        ({"count": True}, r"'count'.*int"),
        ({}, r"exactly one of 'fraction' and 'count'"),
        ({"fraction": 0.5, "count": 3}, r"exactly one"),
    ],
)
def test_split_random_errors(pets, kwargs, pattern):
    with pytest.raises(InvalidSplitError, match=pattern):
        uk.split_random(pets, **kwargs)


# ------------------------------------------------------------------------------ indices
def test_split_indices(pets):
    split = uk.split_indices(pets, [9, 0, 4])
    _check_partition(pets, split)
    assert split.forget_indices.tolist() == [0, 4, 9]
    assert split.forget.x.flatten().tolist() == [0.0, 4.0, 9.0]
    assert split.scenario == "random" and split.description["source"] == "indices"


def test_split_indices_accepts_arrays_and_integral_floats(pets):
    a = uk.split_indices(pets, np.array([1, 2], dtype=np.int32))
    b = uk.split_indices(pets, np.array([2.0, 1.0]))
    c = uk.split_indices(pets, (i for i in (1, 2)))
    assert a.forget_indices.tolist() == b.forget_indices.tolist() == c.forget_indices.tolist()


@pytest.mark.parametrize(
    ("indices", "pattern"),
    [
        ([0, 12], r"out of range.*valid 0-11.*\[12\]"),
        ([-1, 3], r"out of range.*\[-1\]"),
        ([3, 5, 3], r"Duplicate forget indices: \[3\]"),
        ([], r"forget set is empty"),
        (list(range(12)), r"all 12 training samples"),
        ([1.5], r"integers"),
        (["a"], r"integers"),
    ],
)
def test_split_indices_errors(pets, indices, pattern):
    with pytest.raises(InvalidSplitError, match=pattern):
        uk.split_indices(pets, indices)


def test_read_indices_text(tmp_path, pets):
    p = tmp_path / "forget.txt"
    p.write_text("# one user's samples\n3, 5\n7 # the last one\n\n10\n")
    idx = uk.read_indices(p)
    assert idx.tolist() == [3, 5, 7, 10] and idx.dtype == np.int64
    assert uk.split_indices(pets, idx).forget_indices.tolist() == [3, 5, 7, 10]


def test_read_indices_npy_and_json(tmp_path):
    np.save(tmp_path / "f.npy", np.array([4, 1, 2]))
    (tmp_path / "f.json").write_text(json.dumps([8, 6]))
    assert uk.read_indices(tmp_path / "f.npy").tolist() == [4, 1, 2]
    assert uk.read_indices(str(tmp_path / "f.json")).tolist() == [8, 6]


def test_read_indices_errors(tmp_path, pets):
    with pytest.raises(InvalidSplitError, match="not found"):
        uk.read_indices(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("1, two, 3")
    with pytest.raises(InvalidSplitError, match=r"Could not read.*bad\.txt"):
        uk.read_indices(bad)
    broken = tmp_path / "broken.json"
    broken.write_text("[1, 2")
    with pytest.raises(InvalidSplitError, match="Could not read"):
        uk.read_indices(broken)
    obj = tmp_path / "obj.json"
    obj.write_text('{"forget": [1]}')
    with pytest.raises(InvalidSplitError):
        uk.split_indices(pets, uk.read_indices(obj))


# ---------------------------------------------------------------------------- from_data
def test_from_data_with_dataloaders(digits, mlp_model):
    ref = uk.split_by_class(digits, [3])

    def loader(d: uk.ArrayDataset) -> DataLoader:
        return DataLoader(TensorDataset(d.x, d.y), batch_size=100)

    split = uk.Split.from_data(forget=loader(ref.forget), retain=loader(ref.retain),
                               test=loader(digits.test))
    assert split.scenario == "random" and split.forget_indices is None
    assert split.description == {"scenario": "random", "source": "user data"}
    assert "forget=" in repr(split)
    # evaluation over DataLoaders equals evaluation over the tensors
    got = uk.evaluate(mlp_model, split)
    want = uk.evaluate(mlp_model, uk.Split.from_data(forget=ref.forget, retain=ref.retain,
                                                     test=digits.test))
    assert set(got) == set(want) >= {"retain_acc", "forget_acc", "test_acc", "seconds"}
    assert len(split.test) + len(split.validation) == len(digits.test)
    for key, data in (("forget_acc", ref.forget), ("retain_acc", ref.retain),
                      ("test_acc", split.test)):
        assert got[key] == pytest.approx(uk.accuracy(mlp_model, data), abs=1e-12)
    for key in ("mia_loss_cv", "mia_entropy", "mia_confidence", "zrf"):
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    # and every method accepts them
    out = uk.unlearn(mlp_model, split, "finetune", epochs=1, lr=1e-3)
    assert not torch.equal(out.net[1].weight, mlp_model.net[1].weight)


def test_from_data_with_forget_classes(digits):
    ref = uk.split_by_class(digits, [2, 5])
    split = uk.Split.from_data(forget=ref.forget, retain=ref.retain, test=digits.test,
                               forget_classes=[5, 2], num_classes=10)
    assert split.scenario == "class" and split.forget_classes == (2, 5)
    assert torch.equal(split.test_forget.x, ref.test_forget.x)
    assert torch.equal(split.test_retain.y, ref.test_retain.y)
    assert split.description["classes"] == [2, 5]


def test_from_data_bad_scenario(digits):
    with pytest.raises(InvalidSplitError, match=r"'scenario'.*'mixed'"):
        uk.Split.from_data(forget=digits.test, retain=digits.train, scenario="mixed")
