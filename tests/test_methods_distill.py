"""The defining rule of scrub, bad-teacher and unsir, on the small MLP and a slice of digits."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import entropy
from torch import nn

import unlearnkit as uk
from unlearnkit.methods._distill import distill_kl, frozen_copy, labels_of, mix, optimizer_for
from unlearnkit.methods.bad_teacher import BadTeacher
from unlearnkit.methods.scrub import SCRUB
from unlearnkit.methods.teacher import kl_to
from unlearnkit.methods.unsir import UNSIR
from unlearnkit.models import fresh_copy

CPU = torch.device("cpu")


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def small_split(digits) -> uk.Split:
    ds = uk.DataBundle(name="digits-small", train=digits.train.subset(range(400)),
                       test=digits.test.subset(range(120)), class_names=digits.class_names)
    return uk.split_by_class(ds, [3])


@torch.no_grad()
def _kl(target: nn.Module, model: nn.Module, data: uk.ArrayDataset) -> float:
    """KL(p_target || p_model), mean over ``data``."""
    return float(kl_to(target.eval()(data.x), model.eval()(data.x)))


@torch.no_grad()
def _ce(model: nn.Module, data: uk.ArrayDataset) -> float:
    return float(F.cross_entropy(model.eval()(data.x), data.y))


# ------------------------------------------------------------------------ shared pieces
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_distill_kl_is_tempered_kl_times_t_squared(temperature):
    gen = torch.Generator().manual_seed(0)
    t, s = torch.randn(6, 5, generator=gen) * 3, torch.randn(6, 5, generator=gen) * 3
    p = F.softmax(t / temperature, dim=1).double().numpy()
    q = F.softmax(s / temperature, dim=1).double().numpy()
    expected = temperature**2 * np.mean([entropy(p[i], q[i]) for i in range(6)])
    assert float(distill_kl(t, s, temperature)) == pytest.approx(expected, rel=1e-5)


def test_mix_relabels_and_keeps_order(small_split):
    f, r = small_split.forget, small_split.retain
    mixed = mix([(f, torch.ones(len(f), dtype=torch.int64)), (r, None)])
    assert len(mixed) == len(f) + len(r)
    assert torch.equal(mixed.x[: len(f)], f.x) and torch.equal(mixed.x[len(f):], r.x)
    assert torch.equal(labels_of(mixed), torch.cat([torch.ones(len(f), dtype=torch.int64), r.y]))
    # any torch Dataset works too, without being loaded into tensors
    wrapped = mix([(torch.utils.data.TensorDataset(f.x, f.y), torch.zeros(len(f))), (r, None)])
    assert torch.equal(labels_of(wrapped), labels_of(mix([(f, torch.zeros(len(f))), (r, None)])))


# -------------------------------------------------------------------------------- scrub
def test_scrub_max_step_pushes_student_away_on_forget(mlp_model, small_split):
    method = SCRUB(lr=0.05, weight_decay=0.0, temperature=4.0)
    teacher = frozen_copy(mlp_model)
    student = copy.deepcopy(mlp_model)
    with torch.no_grad():  # at student == teacher the KL's gradient is exactly zero
        gen = torch.Generator().manual_seed(0)
        for p in student.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=gen))
    before = _kl(teacher, student, small_split.forget)
    opt = optimizer_for(list(student.parameters()), optimizer="sgd", lr=method.lr)
    method.max_step(student, teacher, small_split.forget, opt,
                    generator=torch.Generator().manual_seed(0), device=CPU)
    after = _kl(teacher, student, small_split.forget)
    assert after > 2 * before > 0


def test_scrub_max_step_is_still_where_student_equals_teacher(mlp_model, small_split):
    method = SCRUB(lr=0.05, weight_decay=0.0, momentum=0.0)
    student = copy.deepcopy(mlp_model)
    opt = optimizer_for(list(student.parameters()), optimizer="sgd", lr=method.lr, momentum=0)
    method.max_step(student, frozen_copy(mlp_model), small_split.forget, opt,
                    generator=torch.Generator().manual_seed(0), device=CPU)
    for a, b in zip(student.parameters(), mlp_model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_scrub_min_steps_alone_lower_retain_ce(mlp_model, small_split):
    out = SCRUB(msteps=0, epochs=3, lr=0.05).unlearn(
        mlp_model, forget=small_split.forget, retain=small_split.retain, scenario="class")
    assert _ce(out, small_split.retain) < 0.9 * _ce(mlp_model, small_split.retain)


@pytest.mark.parametrize(("msteps", "epochs", "expected"), [(2, 3, 2), (0, 2, 0), (5, 2, 2)])
def test_scrub_max_steps_only_in_the_first_msteps_epochs(mlp_model, small_split, monkeypatch,
                                                         msteps, epochs, expected):
    calls: list[str] = []
    original_max, original_min = SCRUB.max_step, SCRUB.min_step

    def spy_max(self, *args, **kwargs):
        calls.append("max")
        return original_max(self, *args, **kwargs)

    def spy_min(self, *args, **kwargs):
        calls.append("min")
        return original_min(self, *args, **kwargs)

    monkeypatch.setattr(SCRUB, "max_step", spy_max)
    monkeypatch.setattr(SCRUB, "min_step", spy_min)
    SCRUB(msteps=msteps, epochs=epochs).unlearn(
        mlp_model, forget=small_split.forget, retain=small_split.retain, scenario="class")
    assert calls == ["max", "min"] * expected + ["min"] * (epochs - expected)


# -------------------------------------------------------------------------- bad teacher
def test_incompetent_teacher_is_a_seeded_random_copy(mlp_model):
    method = BadTeacher()
    bad = method.incompetent_teacher(mlp_model, 5)
    torch.manual_seed(5)
    assert _same(bad, fresh_copy(mlp_model))
    assert type(bad) is type(mlp_model) and not _same(bad, mlp_model)
    assert not _same(bad, method.incompetent_teacher(mlp_model, 6))
    assert not bad.training and not any(p.requires_grad for p in bad.parameters())


def test_bad_teacher_data_is_forget_tagged_1_and_a_retain_fraction_tagged_0(small_split):
    f, r = small_split.forget, small_split.retain
    data = BadTeacher(retain_fraction=0.3).unlearning_data(f, r, seed=0)
    n_r = int(0.3 * len(r))
    assert len(data) == len(f) + n_r
    assert torch.equal(data.y, torch.cat([torch.ones(len(f)), torch.zeros(n_r)]).long())
    assert torch.equal(data.x[: len(f)], f.x)
    rows = {tuple(x.flatten().tolist()) for x in r.x}
    assert all(tuple(x.flatten().tolist()) in rows for x in data.x[len(f):])
    again = BadTeacher(retain_fraction=0.3).unlearning_data(f, r, seed=0)
    other = BadTeacher(retain_fraction=0.3).unlearning_data(f, r, seed=1)
    assert torch.equal(again.x, data.x) and not torch.equal(other.x, data.x)


def test_bad_teacher_student_follows_random_teacher_on_forget_only(mlp_model, small_split):
    method = BadTeacher(epochs=3, lr=1e-3)
    out = method.unlearn(mlp_model, forget=small_split.forget, retain=small_split.retain,
                         scenario="class", seed=0)
    bad = method.incompetent_teacher(mlp_model, 0)
    start = _kl(bad, mlp_model, small_split.forget)
    assert _kl(bad, out, small_split.forget) < 0.9 * start  # moved towards the random net
    assert _kl(mlp_model, out, small_split.retain) < 0.05 * start  # stayed on retain


# -------------------------------------------------------------------------------- unsir
def test_unsir_noise_maximises_the_forget_class_loss(mlp_model):
    method = UNSIR(noise_samples=16)
    grads = [None if p.grad is None else p.grad.clone() for p in mlp_model.parameters()]
    noise = method.noise(mlp_model, 3, (1, 8, 8), generator=torch.Generator().manual_seed(0),
                         device=CPU)
    start = torch.randn((16, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    target = torch.full((16,), 3)
    with torch.no_grad():
        assert F.cross_entropy(mlp_model(noise), target) > 2 * F.cross_entropy(
            mlp_model(start), target)
    for p, g in zip(mlp_model.parameters(), grads, strict=True):  # the model is only read
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)


def test_unsir_retain_subset_per_class(small_split):
    r = small_split.retain
    sub = UNSIR(retain_per_class=5).retain_subset(r, [3, 4], seed=0)
    counts = torch.bincount(sub.y, minlength=10)
    assert counts[3] == 0 and counts[4] == 0
    assert all(int(counts[c]) == min(5, int((r.y == c).sum())) for c in (0, 1, 2, 5, 6, 7, 8, 9))
    assert not torch.equal(sub.x, UNSIR(retain_per_class=5).retain_subset(r, [3, 4], 1).x)


def test_unsir_impair_repair_forgets_the_class_more_than_the_rest(mlp_model, small_split):
    f, r = small_split.forget, small_split.retain
    out = UNSIR().unlearn(mlp_model, forget=f, retain=r, scenario="class", seed=0)
    forget_drop = uk.accuracy(mlp_model, f) - uk.accuracy(out, f)
    retain_drop = uk.accuracy(mlp_model, r) - uk.accuracy(out, r)
    assert forget_drop > 0.2
    assert forget_drop > 5 * abs(retain_drop)


def test_unsir_reads_only_the_labels_of_the_forget_set(mlp_model, small_split):
    f, r = small_split.forget, small_split.retain
    blank = uk.ArrayDataset(torch.zeros(3, *f.sample_shape), f.y[:3])
    a = UNSIR(noise_steps=5).unlearn(mlp_model, forget=f, retain=r, scenario="class")
    b = UNSIR(noise_steps=5).unlearn(mlp_model, forget=blank, retain=r, scenario="class")
    assert _same(a, b)
