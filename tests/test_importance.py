"""Reference tests of the importances: hooks == torch.func == per-sample loop, and the cache."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import unlearnkit as uk
import unlearnkit.importance as imp
from unlearnkit._cache import cache_root
from unlearnkit.importance import cached_importances, importances


def assert_close(a: dict, b: dict, rtol: float = 1e-4) -> None:
    assert set(a) == set(b)
    for k in a:
        scale = float(b[k].abs().max()) or 1.0
        torch.testing.assert_close(a[k], b[k], rtol=rtol, atol=rtol * scale, msg=k)


@pytest.fixture(scope="module")
def subset(digits) -> uk.ArrayDataset:
    return digits.train.subset(np.arange(96))


@pytest.mark.parametrize("fixture", ["mlp_model", "cnn_model"])
def test_fisher_implementations_agree(request, fixture, subset, monkeypatch):
    model = copy.deepcopy(request.getfixturevalue(fixture)).cpu()  # CPU: exact float32
    out = {impl: importances(model, subset, batch_size=40, implementation=impl)
           for impl in ("loop", "vmap")}
    monkeypatch.setattr(imp, "_fisher_vmap", None)  # the hooks must not fall back
    out["hooks"] = importances(model, subset, batch_size=40)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(out["loop"]) == names
    assert all(out["loop"][n].shape == p.shape for n, p in model.named_parameters())
    assert_close(out["hooks"], out["loop"])
    assert_close(out["vmap"], out["loop"])


class _Zoo(nn.Module):
    """Every layer the hooks know, in unusual configurations, plus two they do not."""

    def __init__(self) -> None:
        super().__init__()
        # 8x8 outputs: per-sample grads by a grouped conv-weight backward; 4x4: by unfold
        self.c1 = nn.Conv2d(1, 6, 3, padding="same", padding_mode="reflect")
        self.c2 = nn.Conv2d(6, 6, 3, padding=2, dilation=2, groups=2, bias=False)
        self.c3 = nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=3)
        self.bn = nn.BatchNorm2d(6)
        self.gn = nn.GroupNorm(2, 6)
        self.c1d = nn.Conv1d(6, 4, 2)  # no rule: per-module torch.func
        self.ln = nn.LayerNorm(60)
        self.tok = nn.Linear(4, 5)  # 3-D input
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 10))  # owned by the root module
        self.fc = nn.Linear(75, 10)

    def forward(self, x):
        h = torch.relu(self.c2(torch.relu(self.c1(x))))
        h = torch.relu_(self.gn(self.bn(self.c3(h))))
        h = torch.relu(self.c1d(h.flatten(2)))  # (N, 4, 15)
        h = self.ln(h.flatten(1)).view(-1, 4, 15).transpose(1, 2)
        return self.fc(self.tok(h).flatten(1)) * self.scale


def test_hooks_cover_norm_conv_and_fallback_layers(subset, monkeypatch):
    torch.manual_seed(0)
    model = _Zoo()
    model.train()
    with torch.no_grad():
        model(subset.x[:64])  # running statistics
        for m in (model.bn, model.gn, model.ln):
            m.weight.normal_()
            m.bias.normal_()
    data = subset.subset(np.arange(48))
    ref = importances(model, data, implementation="loop")
    assert_close(importances(model, data, implementation="vmap"), ref)

    monkeypatch.setattr(imp, "_fisher_vmap", None)  # the hooks must not fall back
    assert_close(importances(model, data, batch_size=20), ref)
    assert model.training  # flags restored


def test_hooks_fall_back_when_a_parameter_is_used_outside_its_module(subset):
    class Outside(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(64, 10)

        def forward(self, x):
            x = x.flatten(1)
            return self.a(x) + x @ self.a.weight.t()

    torch.manual_seed(0)
    model = Outside()
    with pytest.warns(UserWarning, match="torch.func"):
        got = importances(model, subset)
    assert_close(got, importances(model, subset, implementation="loop"))


def test_module_called_twice_sums_per_sample_gradients_first(subset):
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(64, 64)
            self.b = nn.Linear(64, 10)

        def forward(self, x):
            return self.b(torch.tanh(self.a(torch.tanh(self.a(x.flatten(1))))))

    torch.manual_seed(0)
    model = Twice()
    assert_close(importances(model, subset), importances(model, subset, implementation="loop"))


def _hand_model() -> nn.Module:
    model = nn.Linear(2, 2, bias=False)
    nn.init.zeros_(model.weight)  # uniform softmax: dCE/dlogit = 0.5 - onehot
    return model


def _hand_data() -> uk.ArrayDataset:
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 2.0]])
    return uk.ArrayDataset(x, torch.tensor([0, 1, 1, 0]))


def test_batch_squared_grad_by_hand():
    # per-sample gradients of W (rows = classes):
    #   g1 = [[-.5, 0], [.5, 0]]  g2 = [[0, .5], [0, -.5]]
    #   g3 = [[1, 0], [-1, 0]]    g4 = [[0, -1], [0, 1]]
    model, data = _hand_model(), _hand_data()
    # batches of 2: mean grads [[-.25, .25], ...] and [[.5, -.5], ...]; (1/16 + 1/4) / 2
    got = importances(model, data, mode="batch-squared-grad", batch_size=2)["weight"]
    torch.testing.assert_close(got, torch.full((2, 2), 0.15625))
    # one batch of 4: mean grad [[.125, -.125], ...] squared
    got = importances(model, data, mode="batch-squared-grad", batch_size=4)["weight"]
    torch.testing.assert_close(got, torch.full((2, 2), 0.015625))
    # the Fisher: (1/4 + 1 per entry, over 4 samples) = 0.3125, whatever the batch size
    for bs in (1, 3, 4):
        torch.testing.assert_close(importances(model, data, batch_size=bs)["weight"],
                                   torch.full((2, 2), 0.3125))
    # batches of one: both modes coincide
    torch.testing.assert_close(
        importances(model, data, mode="batch-squared-grad", batch_size=1)["weight"],
        torch.full((2, 2), 0.3125))


def test_modes_differ_and_only_batch_squared_grad_depends_on_batch_size(mlp_model, subset):
    mlp_model = copy.deepcopy(mlp_model).cpu()
    f16 = importances(mlp_model, subset, batch_size=16)
    f64 = importances(mlp_model, subset, batch_size=64)
    assert_close(f16, f64)
    b16 = importances(mlp_model, subset, mode="batch-squared-grad", batch_size=16)
    b64 = importances(mlp_model, subset, mode="batch-squared-grad", batch_size=64)
    for k in f16:
        assert not torch.allclose(b16[k], b64[k])
        assert not torch.allclose(b16[k], f16[k])
        assert float(b64[k].sum()) < float(f64[k].sum())  # cross terms partly cancel


def test_model_is_left_untouched(mlp_model, subset):
    model = copy.deepcopy(mlp_model).cpu().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    importances(model, subset)
    importances(model, subset, mode="batch-squared-grad")
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_frozen_parameters_are_left_out(mlp_model, subset):
    model = copy.deepcopy(mlp_model).cpu()
    first = next(model.parameters())
    first.requires_grad_(False)
    out = importances(model, subset)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert list(out) == names
    assert_close(out, importances(model, subset, implementation="loop"))


# ---------------------------------------------------------------------------- cache
def _files() -> list:
    return sorted((cache_root() / "importance").glob("*.safetensors"))


def test_cache_hit_does_not_recompute(mlp_model, subset, monkeypatch):
    first = cached_importances(mlp_model, subset)
    assert len(_files()) == 1

    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(imp, "importances", boom)
    again = cached_importances(mlp_model, subset)
    assert all(torch.equal(first[k], again[k]) for k in first)
    # the Fisher does not depend on the batch size nor on the order of the samples
    shuffled = subset.subset(np.random.default_rng(0).permutation(len(subset)))
    cached_importances(mlp_model, shuffled, batch_size=7)
    # another mode, another model: misses
    with pytest.raises(AssertionError, match="recomputed"):
        cached_importances(mlp_model, subset, mode="batch-squared-grad")
    changed = copy.deepcopy(mlp_model)
    with torch.no_grad():
        next(changed.parameters())[0, 0] += 1
    with pytest.raises(AssertionError, match="recomputed"):
        cached_importances(changed, subset)


def test_cache_keys_batch_squared_grad_by_batch_size_and_order(mlp_model, subset, monkeypatch):
    cached_importances(mlp_model, subset, mode="batch-squared-grad", batch_size=32)
    calls = []
    real = imp.importances
    monkeypatch.setattr(imp, "importances", lambda *a, **k: calls.append(k) or real(*a, **k))
    cached_importances(mlp_model, subset, mode="batch-squared-grad", batch_size=32)
    assert calls == []
    cached_importances(mlp_model, subset, mode="batch-squared-grad", batch_size=16)
    reordered = subset.subset(np.arange(len(subset))[::-1].copy())
    cached_importances(mlp_model, reordered, mode="batch-squared-grad", batch_size=32)
    assert len(calls) == 2


def test_cache_skips_other_data_and_recovers_from_corrupt_files(mlp_model, subset):
    loader_data = TensorDataset(subset.x, subset.y)
    out = cached_importances(mlp_model, loader_data)
    assert _files() == []
    assert_close(out, importances(mlp_model, subset))
    cached_importances(mlp_model, subset)
    (path,) = _files()
    path.write_bytes(b"not a safetensors file")
    assert_close(cached_importances(mlp_model, subset), out)
    assert path.stat().st_size > 100  # rewritten


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize(("kwargs", "match"), [
    ({"mode": "fisherr"}, "'mode' parameter must be one of"),
    ({"batch_size": 0}, "'batch_size' parameter must be an int"),
    ({"implementation": "magic"}, "'implementation' parameter must be one of"),
])
def test_bad_arguments_are_explained(mlp_model, subset, kwargs, match):
    with pytest.raises(uk.InvalidParameterError, match=match):
        importances(mlp_model, subset, **kwargs)


def test_empty_data_and_batch_coupled_models_are_refused(mlp_model, subset):
    with pytest.raises(uk.InvalidParameterError, match="empty"):
        importances(mlp_model, subset.subset(np.arange(0)))
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8),
                          nn.BatchNorm1d(8, track_running_stats=False), nn.Linear(8, 10))
    with pytest.raises(uk.ModelError, match="batch-squared-grad"):
        importances(model, subset)
    assert importances(model, subset, mode="batch-squared-grad")
