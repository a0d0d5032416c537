"""Loss-based methods: each one's defining rule, checked on the small MLP where it could fail.

gradient-ascent, neggrad-plus, random-label, amnesiac and l1-sparse. The registry-generated
contract tests (tests/test_contracts.py) cover what every method shares.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import unlearnkit as uk
from unlearnkit.methods import amnesiac as amnesiac_module
from unlearnkit.methods import l1_sparse as l1_module
from unlearnkit.methods import random_label as rl_module
from unlearnkit.methods._relabel import random_other_labels
from unlearnkit.methods.amnesiac import Amnesiac, amnesiac_dataset
from unlearnkit.methods.finetune import FineTune
from unlearnkit.methods.gradient_ascent import GradientAscent
from unlearnkit.methods.l1_sparse import L1Sparse, l1_norm, l1_weight
from unlearnkit.methods.neggrad_plus import NegGradPlus
from unlearnkit.methods.random_label import RandomLabel

ALL = ["gradient-ascent", "neggrad-plus", "random-label", "amnesiac", "l1-sparse"]
BIG = 100_000  # a batch size that makes every set one batch


def _ce(model: torch.nn.Module, data: uk.ArrayDataset) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(model(data.x), data.y))


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _run(method, model, split, *, seed=0, **changes):
    kwargs = dict(forget=split.forget, retain=split.retain, scenario=split.scenario, seed=seed,
                  device="cpu")
    kwargs.update(changes)
    return method.unlearn(model, **kwargs)


def _manual_sgd_step(model, loss_fn, lr):
    """One plain SGD step (what SGD with momentum does at its first step, no weight decay)."""
    want = copy.deepcopy(model)
    want.zero_grad()
    loss_fn(want).backward()
    with torch.no_grad():
        for p in want.parameters():
            p -= lr * p.grad
    return want


def test_declared_needs_and_scenarios():
    for name in ALL:
        cls = uk.METHODS.get(name)
        assert set(cls.scenarios) == {"class", "random"}
        assert "Paper" in cls.__doc__
    assert uk.METHODS.get("gradient-ascent").needs_retain is False
    assert uk.METHODS.get("l1-sparse").needs_forget is False
    for name in ("neggrad-plus", "random-label", "amnesiac"):
        cls = uk.METHODS.get(name)
        assert cls.needs_forget and cls.needs_retain


# ---------------------------------------------------------------------- random relabelling
def test_random_other_labels_never_true_uniform_and_seeded():
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (18_000,), generator=gen)
    new = random_other_labels(y, 10, torch.Generator().manual_seed(1))
    assert new.dtype == torch.int64 and new.shape == y.shape
    assert not (new == y).any()
    assert ((new >= 0) & (new < 10)).all()
    # uniform over the 9 other classes: each (true, new) pair about 1/90 of the samples
    pairs = torch.bincount(y * 10 + new, minlength=100).view(10, 10).float()
    off = pairs[~torch.eye(10, dtype=torch.bool)]
    assert off.min() > 0.6 * len(y) / 90 and off.max() < 1.4 * len(y) / 90
    # seeded: same generator state, same labels; another seed, other labels
    assert torch.equal(new, random_other_labels(y, 10, torch.Generator().manual_seed(1)))
    assert not torch.equal(new, random_other_labels(y, 10, torch.Generator().manual_seed(2)))
    # two classes: the other class, always
    y2 = torch.tensor([0, 1, 1, 0])
    assert torch.equal(random_other_labels(y2, 2, gen), torch.tensor([1, 0, 0, 1]))


def test_random_other_labels_refuses_bad_input():
    with pytest.raises(uk.InvalidParameterError, match=r"'num_classes'.*Got 1"):
        random_other_labels(torch.zeros(3, dtype=torch.int64), 1)
    with pytest.raises(uk.DataError, match=r"\[0, 3\).*0 to 5"):
        random_other_labels(torch.tensor([0, 5]), 3)


# --------------------------------------------------------------------------- gradient ascent
def test_gradient_ascent_is_an_ascent_step_on_forget_only(mlp_model, class_split):
    forget = class_split.forget
    method = GradientAscent(epochs=1, lr=0.05, weight_decay=0.0, batch_size=BIG)
    out = _run(method, mlp_model, class_split, retain=None)
    assert _ce(out, forget) > _ce(mlp_model, forget) + 0.01
    want = _manual_sgd_step(mlp_model, lambda m: -F.cross_entropy(m(forget.x), forget.y), 0.05)
    for p, q in zip(out.parameters(), want.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    # the retain set, when given, is ignored
    assert _same(out, _run(method, mlp_model, class_split))


# ------------------------------------------------------------------------------ NegGrad+
def test_neggrad_plus_step_raises_forget_loss_and_lowers_retain_loss(mlp_model, class_split):
    f, r = class_split.forget, class_split.retain
    method = NegGradPlus(epochs=1, lr=0.05, retain_batch_size=BIG, forget_batch_size=BIG)
    out = _run(method, mlp_model, class_split)
    assert _ce(out, f) > _ce(mlp_model, f) + 0.01
    assert _ce(out, r) < _ce(mlp_model, r)

    def rule(m):
        return 0.95 * F.cross_entropy(m(r.x), r.y) - 0.05 * F.cross_entropy(m(f.x), f.y)

    want = _manual_sgd_step(mlp_model, rule, 0.05)
    for p, q in zip(out.parameters(), want.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_neggrad_plus_alpha_one_is_fine_tuning_exactly(mlp_model, class_split):
    ng = NegGradPlus(alpha=1.0, epochs=2, lr=0.02, momentum=0.5, weight_decay=1e-3)
    ft = FineTune(epochs=2, lr=0.02, optimizer="sgd", momentum=0.5, weight_decay=1e-3,
                  batch_size=ng.retain_batch_size)
    out = _run(ng, mlp_model, class_split, seed=3)
    assert _same(out, _run(ft, mlp_model, class_split, seed=3))
    assert not _same(out, _run(NegGradPlus(alpha=0.9, epochs=2, lr=0.02, momentum=0.5,
                                           weight_decay=1e-3), mlp_model, class_split, seed=3))


def test_neggrad_plus_cycles_the_smaller_set(mlp_model, class_split):
    """An epoch runs over the set with more batches; each step sees one batch of each."""
    calls = []
    model = copy.deepcopy(mlp_model)
    model.register_forward_pre_hook(lambda _, args: calls.append(len(args[0])))
    retain = class_split.retain.subset(range(50))
    # 146 forget / 16 -> 10 batches > 50 retain / 25 -> 2 batches: 10 steps, retain cycled
    _run(NegGradPlus(epochs=1, retain_batch_size=25, forget_batch_size=16), model,
         class_split, retain=retain)
    assert len(calls) == 20
    assert calls[0::2] == [25] * 10  # the retain batch of each step, cycled five times
    assert calls[1::2] == [16] * 9 + [146 - 9 * 16]
    # the other way round: 146 / 100 -> 2 forget batches < 1291 / 128 -> 11 retain batches
    calls.clear()
    _run(NegGradPlus(epochs=1, forget_batch_size=100), model, class_split)
    assert len(calls) == 22 and calls[1::2] == [100, 46] * 5 + [100]


# ------------------------------------------------------------------------------ random label
def test_random_label_relabels_every_forget_sample_each_epoch_and_no_retain_one(
        mlp_model, class_split, monkeypatch):
    seen = []

    def spy(y, num_classes, generator=None):
        new = random_other_labels(y, num_classes, generator)
        seen.append((y.clone(), new.clone()))
        return new

    monkeypatch.setattr(rl_module, "random_other_labels", spy)
    out = _run(RandomLabel(epochs=2, batch_size=64), mlp_model, class_split)
    relabelled = torch.cat([y for y, _ in seen])
    assert len(relabelled) == 2 * len(class_split.forget)  # each forget sample, each epoch
    assert (relabelled == 3).all()  # only forget (class 3) samples, never a retain one
    assert all(not (new == y).any() and ((new >= 0) & (new < 10)).all() for y, new in seen)
    assert uk.accuracy(out, class_split.forget) < uk.accuracy(mlp_model, class_split.forget)


def test_random_label_forgets_a_class_and_depends_on_the_seed(mlp_model, class_split):
    out = _run(RandomLabel(), mlp_model, class_split)
    assert uk.accuracy(out, class_split.forget) < 0.1
    assert uk.accuracy(out, class_split.retain) > 0.85
    assert not _same(out, _run(RandomLabel(epochs=1), mlp_model, class_split, seed=1))
    assert not _same(_run(RandomLabel(epochs=1), mlp_model, class_split, seed=0),
                     _run(RandomLabel(epochs=1), mlp_model, class_split, seed=1))


# --------------------------------------------------------------------------------- amnesiac
def test_amnesiac_dataset_is_relabelled_forget_plus_retain(class_split):
    f, r = class_split.forget, class_split.retain
    union = amnesiac_dataset(f, r, num_classes=10, generator=torch.Generator().manual_seed(0))
    n_f = len(f)
    assert len(union) == n_f + len(r)
    assert torch.equal(union.x[:n_f], f.x) and not (union.y[:n_f] == f.y).any()
    assert torch.equal(union.x[n_f:], r.x) and torch.equal(union.y[n_f:], r.y)
    again = amnesiac_dataset(f, r, num_classes=10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.y, union.y)

    half = amnesiac_dataset(f, r, num_classes=10, generator=torch.Generator().manual_seed(0),
                            retain_fraction=0.5)
    assert len(half) == n_f + round(0.5 * len(r))
    rows = {(bytes(x.numpy().tobytes()), int(y)) for x, y in zip(r.x, r.y, strict=True)}
    kept = [(bytes(x.numpy().tobytes()), int(y)) for x, y in zip(half.x[n_f:], half.y[n_f:],
                                                                 strict=True)]
    assert len(set(kept)) == len(kept) and set(kept) <= rows
    with pytest.raises(uk.InvalidParameterError, match="'retain_fraction'"):
        amnesiac_dataset(f, r, num_classes=10, generator=torch.Generator(), retain_fraction=0.0)


def test_amnesiac_dataset_reads_any_torch_data(class_split):
    f, r = class_split.forget, class_split.retain
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(f.x, f.y), batch_size=7)
    plain = amnesiac_dataset(f, r, num_classes=10, generator=torch.Generator().manual_seed(0))
    other = amnesiac_dataset(loader, torch.utils.data.TensorDataset(r.x, r.y), num_classes=10,
                             generator=torch.Generator().manual_seed(0))
    assert torch.equal(other.x, plain.x) and torch.equal(other.y, plain.y)


def test_amnesiac_trains_on_the_union(mlp_model, random_split):
    method = Amnesiac(epochs=2, lr=1e-3)
    out = _run(method, mlp_model, random_split, seed=5)
    union = amnesiac_dataset(random_split.forget, random_split.retain, num_classes=10,
                             generator=torch.Generator().manual_seed(5))
    want = copy.deepcopy(mlp_model)
    uk.fit(want, union, uk.Recipe(epochs=2, lr=1e-3, optimizer="adam", weight_decay=0.0,
                                  batch_size=128, schedule="constant"), seed=5, device="cpu")
    assert _same(out, want)
    assert not _same(out, _run(method, mlp_model, random_split, seed=6))


def test_amnesiac_counts_classes_without_provenance(mlp_model, class_split, monkeypatch):
    counted = []
    real = amnesiac_module.num_outputs

    def spy(model, data, device, info=None):
        counted.append(real(model, data, device, None))
        return counted[-1]

    monkeypatch.setattr(amnesiac_module, "num_outputs", spy)
    _run(Amnesiac(epochs=1), mlp_model, class_split)
    assert counted == [10]


# -------------------------------------------------------------------------------- l1-sparse
def test_l1_weight_follows_the_linear_schedule():
    assert [l1_weight(1e-3, t, 4) for t in range(4)] == pytest.approx(
        [1e-3, 0.75e-3, 0.5e-3, 0.25e-3])
    assert l1_weight(0.2, 0, 1) == 0.2
    assert l1_weight(0.0, 3, 10) == 0.0
    with pytest.raises(uk.InvalidParameterError, match=r"'epoch'.*Got 4"):
        l1_weight(1e-3, 4, 4)
    with pytest.raises(uk.InvalidParameterError, match=r"'epochs'.*Got 0"):
        l1_weight(1e-3, 0, 0)


def test_l1_sparse_applies_the_schedule_per_epoch(mlp_model, class_split, monkeypatch):
    asked = []

    def spy(gamma, epoch, epochs):
        asked.append(epoch)
        return l1_weight(gamma, epoch, epochs)

    monkeypatch.setattr(l1_module, "l1_weight", spy)
    _run(L1Sparse(epochs=3, batch_size=512), mlp_model, class_split)
    steps = -(-len(class_split.retain) // 512)  # 3 steps per epoch
    assert asked == [0] * steps + [1] * steps + [2] * steps


def test_l1_sparse_gamma_zero_is_fine_tuning_and_gamma_shrinks_the_norm(mlp_model,
                                                                        class_split):
    params = dict(epochs=2, lr=0.01, optimizer="sgd", momentum=0.9, weight_decay=5e-4,
                  batch_size=256)
    plain = _run(FineTune(**params), mlp_model, class_split, seed=2)
    assert _same(_run(L1Sparse(gamma=0.0, **params), mlp_model, class_split, seed=2), plain)
    sparse = _run(L1Sparse(gamma=1e-2, **params), mlp_model, class_split, seed=2)
    with torch.no_grad():
        assert float(l1_norm(sparse)) < float(l1_norm(plain)) - 1.0
