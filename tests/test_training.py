"""The one training loop (fit), evaluation (predict, accuracy), recipes and devices."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import unlearnkit as uk
from unlearnkit.data.containers import ArrayDataset
from unlearnkit.exceptions import InvalidParameterError, ModelError
from unlearnkit.training import Recipe, fit, resolve_device


@pytest.fixture(scope="module")
def data(digits) -> uk.ArrayDataset:
    return digits.train.subset(range(256))


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return uk.build_model("mlp", num_classes=10, input_shape=(1, 8, 8), hidden=(16,))


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in model.state_dict().values()]


def _equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


RECIPE = uk.Recipe(epochs=3, lr=0.05, batch_size=32)
_C = math.cos(math.pi / 4)


def test_deterministic_under_seed(data):
    a, b = _mlp(), _mlp()
    uk.fit(a, data, RECIPE, seed=3)
    uk.fit(b, data, RECIPE, seed=3)
    assert _equal(_weights(a), _weights(b))


def test_different_seeds_differ(data):
    a, b = _mlp(), _mlp()
    uk.fit(a, data, RECIPE, seed=3)
    uk.fit(b, data, RECIPE, seed=4)
    assert not _equal(_weights(a), _weights(b))


def test_callers_global_rng_not_consumed(data, digits):
    torch.manual_seed(99)
    expected = torch.rand(4)
    model = _mlp()
    torch.manual_seed(99)
    uk.fit(model, data, RECIPE, seed=1)
    uk.accuracy(model, data)
    assert torch.equal(torch.rand(4), expected)
    torch.manual_seed(99)
    uk.train_model(digits, arch="mlp", hidden=(8,), recipe=RECIPE.replace(epochs=1), seed=5)
    assert torch.equal(torch.rand(4), expected)


def test_train_model_is_deterministic(digits):
    recipe = RECIPE.replace(epochs=1)
    a = uk.train_model(digits, arch="mlp", hidden=(8,), recipe=recipe, seed=5)
    b = uk.train_model(digits, arch="mlp", hidden=(8,), recipe=recipe, seed=5)
    c = uk.train_model(digits, arch="mlp", hidden=(8,), recipe=recipe, seed=6)
    assert _equal(_weights(a), _weights(b))
    assert not _equal(_weights(a), _weights(c))


def test_loss_goes_down_and_history(data):
    model = _mlp()
    before = uk.accuracy(model, data)
    epochs_seen = []
    history = uk.fit(model, data, RECIPE.replace(epochs=5, lr=0.2), seed=0,
                     on_epoch=lambda e, m: epochs_seen.append((e, m is model)))
    assert len(history) == 5 and all(math.isfinite(h) for h in history)
    assert all(b < a for a, b in itertools.pairwise(history))
    assert history[-1] < 0.5 * history[0]
    assert uk.accuracy(model, data) > max(before, 0.5)
    assert epochs_seen == [(e, True) for e in range(1, 6)]


def test_dataloader_input_works_like_arraydataset(data):
    """Full-batch training does not depend on order: both inputs give the same weights."""
    recipe = uk.Recipe(epochs=3, lr=0.1, batch_size=len(data), momentum=0.0)
    a, b, c = _mlp(), _mlp(), _mlp()
    ha = uk.fit(a, data, recipe, seed=0)
    loader = DataLoader(TensorDataset(data.x, data.y), batch_size=len(data))
    hb = uk.fit(b, loader, recipe, seed=0)
    hc = uk.fit(c, TensorDataset(data.x, data.y), recipe, seed=0)  # a plain torch Dataset
    assert ha == pytest.approx(hb, rel=1e-5) and ha == pytest.approx(hc, rel=1e-5)
    for wa, wb, wc in zip(_weights(a), _weights(b), _weights(c), strict=True):
        assert torch.allclose(wa, wb, atol=1e-6) and torch.allclose(wa, wc, atol=1e-6)
    assert not _equal(_weights(a), _weights(_mlp()))
    # evaluation too
    la, ya = uk.predict(a, data)
    lb, yb = uk.predict(a, DataLoader(TensorDataset(data.x, data.y), batch_size=50))
    assert torch.equal(ya, yb) and torch.allclose(la, lb, atol=1e-6)
    assert uk.accuracy(a, loader) == uk.accuracy(a, data)


class _DictData(Dataset):
    def __init__(self, ds: uk.ArrayDataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i):
        return {"image": self.ds.x[i], "label": self.ds.y[i]}


def test_dict_batches(data):
    model = _mlp()
    history = uk.fit(model, _DictData(data), RECIPE.replace(epochs=2), seed=0)
    assert len(history) == 2 and history[1] < history[0]
    assert uk.accuracy(model, _DictData(data)) == uk.accuracy(model, data)


@pytest.fixture
def lrs(monkeypatch):
    """Record the learning rate of each epoch of the next fit."""
    import unlearnkit.training as training

    made: list[torch.optim.Optimizer] = []
    real = training.make_optimizer

    def spy(params, recipe):
        made.append(real(params, recipe))
        return made[-1]

    monkeypatch.setattr(training, "make_optimizer", spy)
    seen: list[float] = []
    return seen, lambda epoch, model: seen.append(made[-1].param_groups[0]["lr"])


@pytest.mark.parametrize(
    ("schedule", "epochs", "factors"),
    [
        ("constant", 4, [1, 1, 1, 1]),
        ("step", 8, [1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01]),
        ("step", 4, [1, 1, 0.1, 0.01]),
        ("cosine", 4, [1, 0.5 + 0.5 * _C, 0.5, 0.5 - 0.5 * _C]),
    ],
)
def test_schedules(data, lrs, schedule, epochs, factors):
    seen, hook = lrs
    recipe = uk.Recipe(epochs=epochs, lr=0.2, batch_size=128, schedule=schedule)
    uk.fit(_mlp(), data.subset(range(64)), recipe, on_epoch=hook)
    assert seen == pytest.approx([0.2 * f for f in factors], rel=1e-12)


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"epochs": -1}, r"'epochs'.*\[0, 1000000000\].*Got -1"),
        ({"epochs": 2.0}, r"'epochs'.*int.*Got 2.0"),
        ({"batch_size": 0}, r"'batch_size'.*\[1, 1000000000\].*Got 0"),
        ({"lr": 0.0}, r"'lr'.*\(0.0, inf\].*Got 0.0"),
        ({"lr": float("nan")}, r"'lr'.*Got nan"),
        ({"lr": "0.1"}, r"'lr'.*Got '0.1'"),
        ({"momentum": 1.5}, r"'momentum'.*\[0.0, 1.0\].*Got 1.5"),
        ({"weight_decay": -1e-4}, r"'weight_decay'.*Got -0.0001"),
        ({"optimizer": "rmsprop"}, r"'optimizer'.*sgd.*Got 'rmsprop'"),
        ({"schedule": "linear"}, r"'schedule'.*cosine.*Got 'linear'"),
    ],
)
def test_recipe_validation(changes, pattern):
    with pytest.raises(InvalidParameterError, match=pattern):
        uk.Recipe(**changes)
    with pytest.raises(InvalidParameterError, match=pattern):
        uk.Recipe().replace(**changes)


def test_recipe_dict_round_trip():
    r = uk.Recipe(epochs=7, optimizer="adam", schedule="step")
    assert uk.Recipe.from_dict(r.to_dict()) == r
    with pytest.raises(InvalidParameterError, match=r"Unknown recipe fields \['epoch'\]"):
        uk.Recipe.from_dict({"epoch": 3})
    with pytest.raises(TypeError):
        uk.Recipe(5)  # keyword-only


def test_zero_epochs_changes_nothing(data):
    model = _mlp()
    before = _weights(model)
    assert uk.fit(model, data, RECIPE.replace(epochs=0)) == []
    assert _equal(before, _weights(model))


def test_empty_data_refused():
    empty = uk.ArrayDataset(torch.empty(0, 1, 8, 8), torch.empty(0, dtype=torch.int64))
    with pytest.raises(InvalidParameterError, match="training data is empty"):
        uk.fit(_mlp(), empty, RECIPE)


def test_nonfinite_loss_raises_and_restores_flag(data):
    model = _mlp()
    model.eval()

    def bad_loss(m, x, y):
        return m(x).sum() * float("nan")

    with pytest.raises(ModelError, match=r"loss became nan.*epoch 1"):
        uk.fit(model, data, RECIPE, loss_fn=bad_loss, desc="probe")
    assert not model.training


def test_fit_trains_only_given_params_and_restores_flag(data):
    model = _mlp()
    model.eval()
    before = _weights(model)
    last = model.net[3].weight
    uk.fit(model, data, RECIPE.replace(epochs=1, weight_decay=0.0), params=[last])
    after = _weights(model)
    changed = [not torch.equal(a, b) for a, b in zip(before, after, strict=True)]
    assert changed == [False, False, True, False]  # net.1.w, net.1.b, net.3.w, net.3.b
    assert not model.training


def test_predict_and_accuracy_restore_train_flags(data):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Dropout(0.5), nn.Linear(32, 10))
    model.train()
    model[2].eval()  # mixed flags survive
    flags = [m.training for m in model.modules()]
    logits, labels = uk.predict(model, data)
    assert [m.training for m in model.modules()] == flags
    uk.accuracy(model, data)
    assert [m.training for m in model.modules()] == flags
    # predictions are made in eval mode: dropout is off, outputs are repeatable
    model.eval()
    with torch.no_grad():
        expected = model(data.x)
    assert torch.allclose(logits, expected, atol=1e-6)
    assert logits.dtype == torch.float32 and torch.equal(labels, data.y)
    assert not model.training


def test_accuracy_by_hand():
    class AlwaysTwo(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            out = torch.zeros(len(x), 4)
            out[:, 2] = 1.0
            return out + self.w

    y = torch.tensor([2, 0, 2, 1, 3, 2, 2, 0])
    ds = uk.ArrayDataset(torch.zeros(8, 3), y)
    assert uk.accuracy(AlwaysTwo(), ds) == 0.5
    empty = uk.ArrayDataset(torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64))
    assert math.isnan(uk.accuracy(AlwaysTwo(), empty))


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    mps = getattr(torch.backends, "mps", None)
    if torch.cuda.is_available():
        assert resolve_device().type == "cuda"
    elif mps is not None and mps.is_available():
        assert resolve_device().type == "mps"
    else:
        assert resolve_device() == torch.device("cpu")


def test_fit_leaves_a_frozen_batchnorm_backbone_as_it_was():
    """A frozen backbone's running statistics do not drift while the head trains; a trainable
    BatchNorm's do."""
    torch.manual_seed(0)
    frozen = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6))
    for p in frozen.parameters():
        p.requires_grad_(False)
    model = torch.nn.Sequential(frozen, torch.nn.ReLU(), torch.nn.Linear(6, 6),
                                torch.nn.BatchNorm1d(6), torch.nn.Linear(6, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = uk.ArrayDataset(torch.randn(32, 4) * 3 + 1, torch.randint(0, 2, (32,)))
    uk.fit(model, data, uk.Recipe(epochs=2, batch_size=8))
    after = model.state_dict()
    for k in ("0.0.weight", "0.1.running_mean", "0.1.running_var", "0.1.num_batches_tracked"):
        assert torch.equal(after[k], before[k]), k
    assert not torch.equal(after["3.running_mean"], before["3.running_mean"])
    assert model.training and frozen[1].training  # flags restored


# ------------------------------------------------------------------ augmentation (flip-crop)
def test_flip_crop_is_a_flip_and_a_shift_of_each_image():
    from unlearnkit.training import flip_crop

    x = torch.arange(2 * 3 * 6 * 5, dtype=torch.float32).reshape(2, 3, 6, 5) + 1
    out = flip_crop(x, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == x.shape
    for i in range(2):
        found = []
        for flip in (False, True):
            img = x[i].flip(2) if flip else x[i]
            padded = torch.nn.functional.pad(img, (2, 2, 2, 2))
            found += [(flip, dy, dx) for dy in range(5) for dx in range(5)
                      if torch.equal(padded[:, dy:dy + 6, dx:dx + 5], out[i])]
        assert len(found) == 1  # exactly one flip and shift explains the output
    again = flip_crop(x, torch.Generator().manual_seed(0), pad=2)
    assert torch.equal(out, again)
    draws = {flip_crop(x, torch.Generator().manual_seed(s), pad=2)[0].sum().item()
             for s in range(20)}
    assert len(draws) > 1  # the shift changes the visible pixels


def test_recipe_augment_is_validated_and_recorded():
    with pytest.raises(InvalidParameterError, match="'augment' parameter must be one of"):
        Recipe(augment="mixup")
    r = Recipe(augment="flip-crop")
    assert Recipe.from_dict(r.to_dict()) == r
    assert Recipe.from_dict({k: v for k, v in r.to_dict().items() if k != "augment"}).augment \
        == "none"  # a recipe recorded before augmentation existed


def test_flip_crop_training_differs_and_refuses_non_images():
    x = torch.randn(32, 1, 8, 8)
    y = torch.arange(32) % 4
    data = ArrayDataset(x, y)

    def trained(augment):
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
        fit(m, data, Recipe(epochs=2, batch_size=8, augment=augment), seed=0)
        return m[1].weight.detach().clone()

    assert not torch.equal(trained("none"), trained("flip-crop"))
    assert torch.equal(trained("flip-crop"), trained("flip-crop"))
    tokens = ArrayDataset(torch.randint(0, 5, (8, 6)), torch.zeros(8, dtype=torch.long))
    model = torch.nn.Sequential(torch.nn.Embedding(5, 4), torch.nn.Flatten(),
                                torch.nn.Linear(24, 2))
    with pytest.raises(InvalidParameterError, match=r"augment='flip-crop'.*\(N, C, H, W\)"):
        fit(model, tokens, Recipe(epochs=1, augment="flip-crop"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_optimizers_are_fused_where_kernels_exist(name, dtype):
    """Fused steps (6x faster on a CPU, benchmarks/fused_optimizer.py) follow the same rule
    as the default implementation: a few steps agree to rounding."""
    from unlearnkit.training import make_optimizer

    torch.manual_seed(0)
    init = torch.randn(64, 8, dtype=dtype)
    grads = [torch.randn(64, 8, dtype=dtype) for _ in range(5)]
    recipe = Recipe(optimizer=name, lr=0.01, weight_decay=0.01, momentum=0.9)
    p = nn.Parameter(init.clone())
    opt = make_optimizer([p], recipe)
    assert opt.defaults["fused"] is True
    q = nn.Parameter(init.clone())
    ref = {"sgd": torch.optim.SGD(
        [q], lr=0.01, weight_decay=0.01, momentum=0.9), "adam": torch.optim.Adam(
        [q], lr=0.01, weight_decay=0.01), "adamw": torch.optim.AdamW(
        [q], lr=0.01, weight_decay=0.01)}[name]
    assert not ref.defaults.get("fused")
    for g in grads:
        p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
    torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)
    assert not torch.equal(p.detach(), init)  # it moved


def test_optimizer_falls_back_where_fused_kernels_do_not_exist():
    from unlearnkit.training import make_optimizer

    p = nn.Parameter(torch.ones(3, dtype=torch.complex64))  # fused would fail at the step
    opt = make_optimizer([p], Recipe(optimizer="adam", lr=0.1))
    assert not opt.defaults.get("fused")
    p.grad = torch.ones(3, dtype=torch.complex64)
    opt.step()
    assert p.detach().real[0] < 1


# ---------------------------------------------------------------------- denormal floats
def _denormal(t: torch.Tensor) -> int:
    return int(((t != 0) & (t.abs() < torch.finfo(t.dtype).tiny)).sum())


def test_training_flushes_denormals_to_zero_and_gives_the_callers_mode_back(monkeypatch):
    """A weight that weight decay alone halves at each step (its input is always zero, so its
    data gradient is exactly zero) from 1e-30 passes below float32's smallest normal number
    (1.2e-38) after about 27 steps. Denormal, it would make every later operation on it up to
    a hundred times slower on x86; fit flushes it to zero."""
    from unlearnkit import training as T

    x = torch.zeros(8, 4)
    x[:, 0] = 1.0  # only the first input is ever non-zero
    data = ArrayDataset(x, torch.tensor([0, 1] * 4))
    recipe = Recipe(epochs=40, lr=0.5, optimizer="sgd", momentum=0.0, weight_decay=1.0,
                    batch_size=8, schedule="constant")

    def trained() -> nn.Linear:
        model = nn.Linear(4, 2)
        with torch.no_grad():
            model.weight.fill_(1e-30)
        fit(model, data, recipe)
        return model

    assert not T._flushing_denormals()
    flushed = trained()
    assert _denormal(flushed.weight) == 0 and bool((flushed.weight[:, 1:] == 0).all())
    assert not T._flushing_denormals()  # the caller's mode, as before
    # a CPU that cannot flush (set_flush_denormal answers False): the same weights denormal
    monkeypatch.setattr(T.torch, "set_flush_denormal", lambda mode: False)
    kept = trained()
    assert _denormal(kept.weight[:, 1:]) == 6
    # and a caller who flushes already keeps flushing after
    monkeypatch.undo()
    torch.set_flush_denormal(True)
    try:
        trained()
        assert T._flushing_denormals()
    finally:
        torch.set_flush_denormal(False)
