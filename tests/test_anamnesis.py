"""The Anamnesis index: the pure ratio, relearning step counts, and the whole measurement."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import unlearnkit as uk
from unlearnkit.data.containers import ArrayDataset
from unlearnkit.exceptions import InvalidParameterError
from unlearnkit.metrics.anamnesis import anamnesis_index
from unlearnkit.relearn import anamnesis, relearn_steps
from unlearnkit.training import accuracy

# ---------------------------------------------------------------- the index itself


@pytest.mark.parametrize(
    ("unlearned", "retrained", "expected"),
    [(3, 6, 0.5), (6, 3, 2.0), (1, 25, 0.04), (7, 7, 1.0), (np.int64(2), 8, 0.25)],
)
def test_index_is_the_ratio(unlearned, retrained, expected):
    assert anamnesis_index(unlearned, retrained) == expected


def test_index_when_a_model_never_recovers():
    assert anamnesis_index(None, 6) == math.inf
    assert math.isnan(anamnesis_index(3, None))
    assert math.isnan(anamnesis_index(None, None))


@pytest.mark.parametrize(("unlearned", "retrained", "name"), [
    (0, 3, "unlearned_steps"), (-1, 3, "unlearned_steps"), (2.0, 3, "unlearned_steps"),
    (True, 3, "unlearned_steps"), (3, 0, "retrained_steps"), (3, "4", "retrained_steps"),
])
def test_index_rejects_bad_counts(unlearned, retrained, name):
    with pytest.raises(InvalidParameterError, match=name):
        anamnesis_index(unlearned, retrained)


# ---------------------------------------------------------------- relearning steps

# The conftest models are trained for 4 epochs only; at the default lr 1e-3 the retrained one
# needs about 75 steps to reach the target on class 3 (beyond the default budget of 10 epochs x
# 5 batches), at 1e-2 about 10, which keeps these tests fast.
LR = 1e-2


@pytest.fixture(scope="module")
def retrained(mlp_model, class_split) -> nn.Module:
    return uk.retrain(mlp_model, class_split)


@pytest.fixture(scope="module")
def target(mlp_model, class_split) -> float:
    return 0.95 * accuracy(mlp_model, class_split.forget)


def test_relearn_leaves_model_and_rng_untouched(retrained, class_split, target):
    before = {k: v.clone() for k, v in retrained.state_dict().items()}
    retrained.eval()
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    steps = relearn_steps(retrained, class_split.forget, class_split.forget, target,
                          lr=LR)
    assert steps is not None and steps > 1  # it really trained its copy
    assert torch.equal(torch.get_rng_state(), rng)
    assert not retrained.training
    after = retrained.state_dict()
    assert before.keys() == after.keys()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k


def test_relearn_is_deterministic_for_a_seed(retrained, class_split, target):
    runs = [relearn_steps(retrained, class_split.forget, class_split.forget, target, seed=3,
                          lr=LR)
            for _ in range(2)]
    assert runs[0] == runs[1]
    assert runs[0] is not None and runs[0] > 1


def test_relearn_seeds_dropout_and_spares_the_callers_rng(class_split):
    f = class_split.forget
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(f.x[0].numel(), 16), nn.ReLU(),
                              nn.Dropout(0.5), nn.Linear(16, 10))
    counts = []
    for caller_seed in (1, 2):
        torch.manual_seed(caller_seed)
        rng = torch.get_rng_state()
        counts.append(relearn_steps(model, f, f, 1.0, lr=LR, seed=7))
        assert torch.equal(torch.get_rng_state(), rng)  # dropout drew from a forked RNG
    assert counts[0] == counts[1]
    assert counts[0] is not None and counts[0] > 1


def test_relearn_counts_from_one(retrained, class_split):
    # The retrained model never saw class 3 (accuracy 0), yet a target of 0 counts one step.
    assert accuracy(retrained, class_split.forget) < 0.05
    assert relearn_steps(retrained, class_split.forget, class_split.forget, 0.0) == 1


def test_relearn_returns_none_for_an_unreachable_target(mlp_model, class_split):
    # Every input appears twice with two different labels: no model exceeds 50 % accuracy.
    f = class_split.forget
    eval_data = ArrayDataset(torch.cat([f.x, f.x]), torch.cat([f.y, (f.y + 1) % 10]))
    assert relearn_steps(mlp_model, f, eval_data, 0.6, lr=LR, max_epochs=1) is None
    assert relearn_steps(mlp_model, f, eval_data, 0.0, lr=LR, max_epochs=1) == 1


def test_higher_target_never_needs_fewer_steps(retrained, class_split):
    targets = [0.0, 0.2, 0.5, 0.8, 0.9, 1.0]
    steps = [relearn_steps(retrained, class_split.forget, class_split.forget, t, lr=LR,
                           max_epochs=3)
             for t in targets]
    as_num = [math.inf if s is None else s for s in steps]
    assert as_num == sorted(as_num), steps
    assert as_num[0] == 1 and as_num[-2] > 1


class _ModeRecorder(nn.Module):
    """A linear classifier that records, per forward call, (batch size, training flag)."""

    calls: list[tuple[int, bool]] = []  # class attribute: shared by deep copies

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        type(self).calls.append((len(x), self.training))
        return self.fc(x.flatten(1))


def test_steps_in_train_mode_checks_in_eval_mode(class_split):
    f = class_split.forget
    relearn = f.subset(range(40))
    x, y = f.x[:7], f.y[:7]
    check = ArrayDataset(torch.cat([x, x]), torch.cat([y, (y + 1) % 10]))  # at most 50 %
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = _ModeRecorder(x[0].numel()).eval()
    _ModeRecorder.calls = []
    assert relearn_steps(model, relearn, check, 0.6, batch_size=16, max_epochs=2) is None
    # A training step on a batch (40 = 16 + 16 + 8), then a check on the 14 eval samples.
    epoch = [(16, True), (14, False), (16, True), (14, False), (8, True), (14, False)]
    assert _ModeRecorder.calls == epoch * 2
    assert not model.training


# ---------------------------------------------------------------- the whole measurement


def test_class_scenario_original_relearns_faster_than_retrained(
    mlp_model, retrained, class_split, target
):
    f = class_split.forget
    assert relearn_steps(mlp_model, f, f, target, lr=LR) == 1
    r = relearn_steps(retrained, f, f, target, lr=LR)
    assert r is not None and r > 1
    ain = anamnesis(mlp_model, mlp_model, retrained, class_split, lr=LR)
    assert ain == pytest.approx(1 / r)
    assert ain < 1


def test_retrained_against_itself_gives_exactly_one(mlp_model, retrained, class_split):
    assert anamnesis(retrained, mlp_model, retrained, class_split, seed=5, lr=LR) == 1.0


def test_anamnesis_leaves_models_untouched(mlp_model, retrained, class_split):
    before = [p.clone() for p in mlp_model.parameters()]
    anamnesis(mlp_model, mlp_model, retrained, class_split, lr=LR)
    assert all(torch.equal(a, b) for a, b in zip(before, mlp_model.parameters(), strict=True))


# ---------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"lr": 0.0}, "lr"), ({"lr": -1e-3}, "lr"), ({"lr": math.nan}, "lr"),
    ({"batch_size": 0}, "batch_size"), ({"batch_size": 2.5}, "batch_size"),
    ({"max_epochs": 0}, "max_epochs"), ({"target_acc": 1.5}, "target_acc"),
    ({"target_acc": -0.1}, "target_acc"), ({"target_acc": math.nan}, "target_acc"),
])
def test_relearn_rejects_bad_arguments(mlp_model, class_split, kwargs, name):
    args = {"target_acc": 0.5, **kwargs}
    with pytest.raises(InvalidParameterError, match=name):
        relearn_steps(mlp_model, class_split.forget, class_split.forget, **args)


@pytest.mark.parametrize("which", ["relearn_data", "eval_data"])
def test_relearn_rejects_empty_data(mlp_model, class_split, which):
    f = class_split.forget
    data = {"relearn_data": f, "eval_data": f, which: f.subset([])}
    with pytest.raises(InvalidParameterError, match=which):
        relearn_steps(mlp_model, target_acc=0.5, **data)


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"error_range": 1.5}, "error_range"), ({"error_range": -0.1}, "error_range"),
    ({"lr": 0.0}, "lr"), ({"batch_size": 0}, "batch_size"), ({"max_epochs": 0}, "max_epochs"),
])
def test_anamnesis_rejects_bad_arguments(mlp_model, class_split, kwargs, name):
    with pytest.raises(InvalidParameterError, match=name):
        anamnesis(mlp_model, mlp_model, mlp_model, class_split, **kwargs)


def test_anamnesis_rejects_a_non_split(mlp_model, class_split):
    with pytest.raises(InvalidParameterError, match="split"):
        anamnesis(mlp_model, mlp_model, mlp_model, class_split.forget)
