"""Input plumbing: which parts of a batch are the input and the target, batch sizes, dtypes."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, SubsetRandomSampler, TensorDataset

import unlearnkit as uk
from unlearnkit.data.batches import concat, default_unpack, num_samples, samples, take
from unlearnkit.data.containers import join
from unlearnkit.exceptions import DataError, InvalidParameterError
from unlearnkit.models.adapters import forward, logits_of
from unlearnkit.training import iter_batches

X = torch.arange(24, dtype=torch.float32).reshape(6, 4)
Y = torch.tensor([0, 1, 2, 0, 1, 2])


class KwargsModel(nn.Module):
    """A Hugging Face-like model: keyword tensors in, an object with ``.logits`` out."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.fc = nn.Linear(4, 3)

    def forward(self, input_ids, attention_mask):
        h = (self.embed(input_ids) * attention_mask.unsqueeze(-1)).sum(1)
        return SimpleNamespace(logits=self.fc(h))


class DictItems(Dataset):
    def __init__(self, ids: torch.Tensor, y: torch.Tensor) -> None:
        self.ids, self.y = ids, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]),
                "labels": self.y[i]}


# ------------------------------------------------------------------------ default rule
def test_default_rule_reads_pairs_xy_dicts_and_hugging_face_dicts():
    x, y = default_unpack((X, Y))
    assert x is X and y is Y
    x, y = default_unpack({"x": X, "y": Y, "id": torch.arange(6)})
    assert x is X and y is Y
    x, y = default_unpack({"image": X, "label": Y})
    assert x is X and y is Y
    ids, mask = torch.zeros(6, 5, dtype=torch.long), torch.ones(6, 5, dtype=torch.long)
    x, y = default_unpack({"input_ids": ids, "attention_mask": mask, "labels": Y})
    assert set(x) == {"input_ids", "attention_mask"} and y is Y


def test_default_rule_refuses_what_it_would_misread():
    with pytest.raises(DataError, match=r"sequence of 3 items.*input=1, target=2"):
        default_unpack((torch.arange(6), X, Y))
    with pytest.raises(DataError, match=r"no target under any of.*target="):
        default_unpack({"pixels": X, "cls": Y})
    with pytest.raises(DataError, match="must be an \\(input, target\\) pair"):
        default_unpack(X)


def test_id_x_y_tuples_read_by_position_match_the_arrays():
    loader = DataLoader(TensorDataset(torch.arange(6), X, Y), batch_size=4)
    data = uk.Batches(loader, input=1, target=2)
    assert len(data) == 6
    got = list(iter_batches(data, 6, shuffle=False))
    assert len(got) == 1
    assert torch.equal(got[0][0], X) and torch.equal(got[0][1], Y)
    model = nn.Linear(4, 3)
    a, la = uk.predict(model, data)
    b, lb = uk.predict(model, uk.ArrayDataset(X, Y))
    assert torch.equal(a, b) and torch.equal(la, lb)


def test_keys_positions_and_a_function():
    batch = {"pixels": X, "cls": Y, "extra": X}
    x, y = uk.Batches(TensorDataset(X), input="pixels", target="cls").unpack(batch)
    assert x is X and y is Y
    x, y = uk.Batches(TensorDataset(X), input=["pixels", "extra"], target="cls").unpack(batch)
    assert set(x) == {"pixels", "extra"}
    x, y = uk.Batches(TensorDataset(X), input=[0, 1], target=2).unpack((X, X, Y))
    assert isinstance(x, tuple) and len(x) == 2
    x, y = uk.Batches(TensorDataset(X), unpack=lambda b: (b[1], b[0])).unpack((Y, X))
    assert x is X and y is Y
    with pytest.raises(DataError, match="no target 'label'"):
        list(iter_batches(uk.Batches(DataLoader(DictItems(torch.zeros(2, 3).long(), Y[:2])),
                                     input="input_ids", target="label"), 2, shuffle=False))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"input": "x"}, "both 'input' and 'target'"),
    ({"input": "x", "target": "y", "unpack": lambda b: b}, "either 'unpack'"),
    ({"unpack": 3}, "must be callable"),
    ({"input": 1.5, "target": 2}, "'input' parameter of Batches"),
])
def test_batches_refuses_bad_rules(kwargs, match):
    with pytest.raises(InvalidParameterError, match=match):
        uk.Batches(TensorDataset(X), **kwargs)


def test_targets_must_be_one_integer_label_per_sample():
    with pytest.raises(DataError, match="one integer class label per sample"):
        list(iter_batches(DataLoader(TensorDataset(X, Y.float()), batch_size=3), 3,
                          shuffle=False))
    with pytest.raises(DataError, match="3 inputs but 2 targets"):
        list(iter_batches(uk.Batches(TensorDataset(X), unpack=lambda b: (b[0], Y[:2])), 3,
                          shuffle=False))


# --------------------------------------------------------------- the method's batch size
def test_a_dataloader_is_rebatched_with_the_methods_batch_size():
    loader = DataLoader(TensorDataset(X, Y), batch_size=4)
    sizes: list[int] = []

    def loss_fn(model, x, y):
        sizes.append(len(y))
        return nn.functional.cross_entropy(model(x), y)

    uk.fit(nn.Linear(4, 3), loader, uk.Recipe(epochs=1, batch_size=5), loss_fn=loss_fn)
    assert sizes == [5, 1]
    # and the seeded order is the same as for the same data in memory
    a = [y.tolist() for _, y in iter_batches(loader, 2, shuffle=True,
                                             generator=torch.Generator().manual_seed(3))]
    b = [y.tolist() for _, y in iter_batches(TensorDataset(X, Y), 2, shuffle=True,
                                             generator=torch.Generator().manual_seed(3))]
    assert a == b


def test_a_dataloader_with_its_own_sampler_keeps_its_batches_and_says_so():
    loader = DataLoader(TensorDataset(X, Y), batch_size=4,
                        sampler=SubsetRandomSampler(range(6)))
    with pytest.warns(UserWarning, match="its own batches are used, not the method's batch size"):
        sizes = [len(y) for _, y in iter_batches(loader, 5, shuffle=False)]
    assert sizes == [4, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per loader
        list(iter_batches(loader, 5, shuffle=False))


# ------------------------------------------------------------------------------ dtypes
def test_arraydataset_keeps_the_input_dtype():
    assert uk.ArrayDataset(X.double(), Y).x.dtype == torch.float64
    ids = torch.randint(0, 9, (6, 5))
    ds = uk.ArrayDataset(ids, Y)
    assert ds.x.dtype == torch.int64
    assert ds.subset([1, 3]).x.dtype == torch.int64
    assert torch.equal(ds.of_classes([2]).x, ids[Y == 2])


def test_arraydataset_holds_dict_inputs():
    ids = torch.randint(0, 9, (6, 5))
    ds = uk.ArrayDataset({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, Y)
    assert len(ds) == 6 and ds.sample_shape == (5,)
    sub = ds.subset([4, 0])
    assert torch.equal(sub.x["input_ids"], ids[[4, 0]]) and sub.y.tolist() == [1, 0]
    with pytest.raises(DataError, match="one row per label"):
        uk.ArrayDataset({"input_ids": ids[:5]}, Y)


def test_input_helpers_treat_tensors_dicts_and_tuples_alike():
    d = {"a": X, "b": X.long()}
    assert num_samples(d) == num_samples((X, X)) == num_samples(X) == 6
    assert torch.equal(take(d, slice(1, 3))["b"], X.long()[1:3])
    assert torch.equal(concat([take(d, [0]), take(d, [5])])["a"], X[[0, 5]])
    assert torch.equal(concat([(X[:2], X[:2]), (X[2:], X[2:])])[1], X)


def test_samples_gives_one_pair_per_item_whatever_the_batches():
    data = uk.Batches(DataLoader(TensorDataset(torch.arange(6), X, Y)), input=1, target=2)
    ds = samples(data)
    x, y = ds[4]
    assert torch.equal(x, X[4]) and int(y) == int(Y[4])


# ----------------------------------------------------------------------- model outputs
def test_forward_calls_with_keywords_and_reads_the_logits():
    model = KwargsModel()
    ids = torch.randint(0, 10, (6, 5))
    x = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    out = forward(model, x)
    assert out.shape == (6, 3)
    assert torch.equal(out, model(**x).logits)
    assert torch.equal(logits_of((out, "features")), out)
    assert torch.equal(logits_of({"logits": out}), out)
    with pytest.raises(uk.ModelError, match="holds no logits"):
        logits_of("text")


def test_hugging_face_style_dict_batches_train_and_predict():
    ids = torch.randint(0, 10, (12, 5))
    y = (ids[:, 0] % 3).long()
    loader = DataLoader(DictItems(ids, y), batch_size=4)
    model = KwargsModel()
    before = uk.accuracy(model, loader)
    uk.fit(model, loader, uk.Recipe(epochs=60, lr=0.05, optimizer="adam", weight_decay=0.0))
    assert uk.accuracy(model, loader) > max(before, 0.8)
    logits, labels = uk.predict(model, loader)
    assert logits.shape == (12, 3) and torch.equal(labels, y)


def test_from_data_splits_a_dataloader_test_set_by_class():
    loader = uk.Batches(DataLoader(TensorDataset(torch.arange(6), X, Y), batch_size=4),
                        input=1, target=2)
    split = uk.Split.from_data(forget=loader, retain=loader, test=loader, forget_classes=[1],
                               validation=0)  # the whole test set, to count it
    assert len(split.test_forget) == 2 and len(split.test_retain) == 4
    _, labels = uk.predict(nn.Linear(4, 3), split.test_forget)
    assert labels.tolist() == [1, 1]
    res = uk.evaluate(nn.Linear(4, 3), split, mia=False)
    assert 0.0 <= res["test_retain_acc"] <= 1.0 and 0.0 <= res["test_forget_acc"] <= 1.0


def test_join_keeps_arrays_in_memory_and_reads_other_batches_by_their_rule():
    a, b = uk.ArrayDataset(X[:2], Y[:2]), uk.ArrayDataset(X[2:], Y[2:])
    joined = join(a, b)
    assert isinstance(joined, uk.ArrayDataset) and torch.equal(joined.x, X)
    mixed = join(a, uk.Batches(DataLoader(TensorDataset(torch.arange(4), X[2:], Y[2:])),
                               input=1, target=2))
    x, y = next(iter_batches(mixed, 6, shuffle=False))
    assert torch.equal(x, X) and torch.equal(y, Y)


def test_predict_reads_a_shuffling_loader_in_order_with_its_own_batch_size():
    sizes: list[int] = []
    model = nn.Linear(4, 3)
    model.register_forward_hook(lambda m, args, out: sizes.append(len(out)))
    loader = DataLoader(TensorDataset(X, Y), batch_size=4, shuffle=True)
    logits, labels = uk.predict(model, loader)
    assert sizes == [4, 2]
    assert torch.equal(labels, Y)
    assert torch.allclose(logits, model(X).detach())
