"""Reference tests of the importances: hooks == torch.func == per-sample loop, the automatic
choice among them, inputs of every form (token ids, dicts), and the cache."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import unlearnkit as uk
import unlearnkit.importance as imp
from unlearnkit._cache import cache_root
from unlearnkit.exceptions import ImplementationFallbackWarning, UnsupportedModelError
from unlearnkit.importance import (
    auto,
    cached_importances,
    importance_cache_key,
    importances,
    per_sample_gradients,
)
from unlearnkit.importance import hooks as hooks_module


def assert_close(a: dict, b: dict, rtol: float = 1e-4) -> None:
    assert set(a) == set(b)
    for k in a:
        scale = float(b[k].abs().max()) or 1.0
        torch.testing.assert_close(a[k], b[k], rtol=rtol, atol=rtol * scale, msg=k)


@pytest.fixture(scope="module")
def subset(digits) -> uk.ArrayDataset:
    return digits.train.subset(np.arange(96))


def _refuse_fallback(monkeypatch) -> None:
    """Make any use of vmap or of the loop instead of the hooks fail the test."""
    def refused(*args, **kwargs):
        raise AssertionError("fell back from the hooks")

    monkeypatch.setattr(hooks_module, "fisher_vmap", refused)
    monkeypatch.setattr(hooks_module, "vmap_grads", refused)
    for table in (auto.FISHER, auto.PER_SAMPLE_GRADS):
        monkeypatch.setitem(table, "vmap", refused)
        monkeypatch.setitem(table, "loop", refused)


def _fallbacks(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, ImplementationFallbackWarning)]


@pytest.mark.parametrize("mode", ["fisher", "output-norm"])
@pytest.mark.parametrize("fixture", ["mlp_model", "cnn_model"])
def test_fisher_implementations_agree(request, fixture, mode, subset, monkeypatch):
    # output-norm: the hooks sum |per-sample gradient| of a linear layer as |G|^T |A|, without
    # making the per-sample gradients; the loop makes each one
    model = copy.deepcopy(request.getfixturevalue(fixture)).cpu()  # CPU: exact float32
    out = {impl: importances(model, subset, mode=mode, batch_size=40, implementation=impl)
           for impl in ("loop", "vmap")}
    _refuse_fallback(monkeypatch)  # the default (auto) uses the hooks
    out["hooks"] = importances(model, subset, mode=mode, batch_size=40)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(out["loop"]) == names
    assert all(out["loop"][n].shape == p.shape for n, p in model.named_parameters())
    assert_close(out["hooks"], out["loop"])
    assert_close(out["vmap"], out["loop"])


class _Shared(nn.Module):
    """Plain linear layers, one of them called twice: its per-sample gradients are the sum
    of two calls', so its sum of |grad| has no closed form."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.out = nn.Linear(64, 16), nn.Linear(16, 16), nn.Linear(16, 10)

    def forward(self, x):
        return self.out(self.b(torch.relu(self.b(torch.relu(self.a(x.flatten(1)))))))


@pytest.mark.parametrize("shared", [False, True])
def test_output_norm_takes_a_linear_models_batch_whole(subset, shared, monkeypatch):
    """LF-SSD's sum of |per-sample gradient| for plain linear layers is one matrix product
    per batch (|G|^T |A|): the batch is not cut into the chunks that per-sample gradients
    need. A layer called twice needs them: that batch goes in chunks again. Both equal the
    per-sample loop."""
    torch.manual_seed(0)
    model = _Shared() if shared else nn.Sequential(nn.Flatten(), nn.Linear(64, 16),
                                                   nn.ReLU(), nn.Linear(16, 10))
    data = subset.subset(np.arange(60))
    ref = importances(model, data, mode="output-norm", batch_size=20, implementation="loop")
    monkeypatch.setattr(imp._common, "CHUNK_ELEMENTS", 4000)  # 2-3 samples a chunk
    passes = []
    real = hooks_module.hooked_pass

    def counted(model, names, x, y, **kwargs):
        passes.append((len(y), kwargs.get("closed_form_only", False)))
        return real(model, names, x, y, **kwargs)

    monkeypatch.setattr(hooks_module, "hooked_pass", counted)
    _refuse_fallback(monkeypatch)
    assert_close(importances(model, data, mode="output-norm", batch_size=20), ref)
    if shared:  # each batch tried whole, then in chunks
        assert passes[0] == (20, True) and len(passes) > 3 * 2
        assert max(n for n, whole in passes if not whole) < 20
    else:
        assert passes == [(20, True)] * 3


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


@pytest.mark.parametrize("mode", ["fisher", "output-norm"])
def test_hooks_cover_norm_conv_and_fallback_layers(subset, mode, monkeypatch):
    torch.manual_seed(0)
    model = _Zoo()
    model.train()
    with torch.no_grad():
        model(subset.x[:64])  # running statistics
        for m in (model.bn, model.gn, model.ln):
            m.weight.normal_()
            m.bias.normal_()
    data = subset.subset(np.arange(48))
    ref = importances(model, data, mode=mode, implementation="loop")
    assert_close(importances(model, data, mode=mode, implementation="vmap"), ref)

    _refuse_fallback(monkeypatch)
    assert_close(importances(model, data, mode=mode, batch_size=20), ref)
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
    with pytest.warns(ImplementationFallbackWarning, match="torch.func"):
        got = importances(model, subset, implementation="hooks")
    assert_close(got, importances(model, subset, implementation="loop"))
    with pytest.warns(ImplementationFallbackWarning, match="using torch.func.vmap"):
        assert_close(importances(model, subset), got)  # auto: vmap, said once


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


# ---------------------------------------------------------------------------- inputs, auto
VOCAB = 11


def _tokens(n: int = 24, length: int = 7, classes: int = 4) -> uk.ArrayDataset:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (n, length), generator=gen)
    return uk.ArrayDataset(ids, torch.randint(0, classes, (n,), generator=gen))


class _TextGRU(nn.Module):
    """nn.Embedding and nn.GRU on int64 token ids: neither the hooks nor vmap read the GRU."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 6)
        self.gru = nn.GRU(6, 5, batch_first=True)
        self.fc = nn.Linear(5, 4)

    def forward(self, ids):
        _, h = self.gru(self.embed(ids))
        return self.fc(h[-1])


class _TextCNN(nn.Module):
    """nn.Embedding and nn.Conv1d on token ids: the hooks read both (by per-module vmap)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 6)
        self.conv = nn.Conv1d(6, 5, 3, padding=1)
        self.fc = nn.Linear(5, 4)

    def forward(self, ids):
        return self.fc(torch.relu(self.conv(self.embed(ids).transpose(1, 2))).amax(2))


class _Output:
    """What a Hugging Face model returns: an object with the logits under ``.logits``."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits


class _DictModel(nn.Module):
    """Called as ``model(input_ids=..., attention_mask=...)``, both int64, like a BERT."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 8)
        self.norm = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, input_ids, attention_mask):
        h = self.norm(self.embed(input_ids))
        mask = attention_mask.unsqueeze(-1).to(h.dtype)
        return _Output(self.fc((h * mask).sum(1) / mask.sum(1).clamp(min=1.0)))


def _dict_data() -> uk.ArrayDataset:
    tokens = _tokens()
    lengths = torch.arange(len(tokens)) % tokens.x.shape[1] + 1
    mask = (torch.arange(tokens.x.shape[1]) < lengths[:, None]).long()
    return uk.ArrayDataset({"input_ids": tokens.x, "attention_mask": mask}, tokens.y)


def test_gru_on_token_ids_uses_the_loop_and_says_so_once(monkeypatch):
    monkeypatch.setattr(auto, "_ANNOUNCED", set())
    torch.manual_seed(0)
    model, data = _TextGRU(), _tokens()
    assert data.x.dtype == torch.int64
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = importances(model, data, batch_size=10)
        second = importances(model, data, batch_size=10, implementation="auto")
    (message,) = _fallbacks(caught)
    assert "nn.GRU ('gru')" in message and "per-sample loop" in message
    assert "hooks" in message and "vmap" in message
    ref = importances(model, data, batch_size=10, implementation="loop")
    assert_close(first, ref, rtol=1e-5)
    assert_close(second, ref, rtol=1e-5)
    assert set(ref) == {n for n, _ in model.named_parameters()}
    grads = torch.cat(list(per_sample_gradients(model, data, batch_size=10)))
    assert grads.shape == (len(data), sum(p.numel() for p in model.parameters()))


def test_an_implementation_asked_for_that_cannot_run_is_refused_clearly():
    torch.manual_seed(0)
    model, data = _TextGRU(), _tokens()
    for impl in ("vmap", "hooks"):  # the hooks fall back to vmap, which cannot batch a GRU
        with pytest.raises(UnsupportedModelError, match=r"nn\.GRU.*implementation='loop'"):
            importances(model, data, implementation=impl)


def test_token_ids_are_read_by_the_hooks(monkeypatch):
    torch.manual_seed(0)
    model, data = _TextCNN(), _tokens()
    ref = importances(model, data, batch_size=10, implementation="loop")
    assert_close(importances(model, data, batch_size=10, implementation="vmap"), ref)
    _refuse_fallback(monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert_close(importances(model, data, batch_size=10), ref)
    assert _fallbacks(caught) == []


@pytest.mark.parametrize("mode", ["fisher", "output-norm"])
def test_dict_inputs_agree_across_implementations(mode, monkeypatch):
    torch.manual_seed(0)
    model, data = _DictModel(), _dict_data()
    out = {impl: importances(model, data, mode=mode, batch_size=10, implementation=impl)
           for impl in ("loop", "vmap")}
    grads = {impl: torch.cat(list(per_sample_gradients(model, data, batch_size=10,
                                                       implementation=impl)))
             for impl in ("loop", "vmap")}
    _refuse_fallback(monkeypatch)
    out["hooks"] = importances(model, data, mode=mode, batch_size=10, implementation="hooks")
    grads["hooks"] = torch.cat(list(per_sample_gradients(model, data, batch_size=10,
                                                         implementation="hooks")))
    assert_close(out["hooks"], out["loop"])
    assert_close(out["vmap"], out["loop"])
    assert all(float(v.abs().sum()) > 0 for v in out["loop"].values())
    for impl in ("hooks", "vmap"):
        torch.testing.assert_close(grads[impl], grads["loop"], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("impl", ["hooks", "vmap", "loop"])
@pytest.mark.parametrize("chunk_elements", [None, 4000])
def test_per_sample_gradient_matrix_is_the_concatenated_batches(subset, impl, chunk_elements,
                                                                monkeypatch):
    """The matrix influence reads, written in place (in batches no larger than the chunks the
    hooks work in: 2-3 samples with 4,000 elements), holds what the generator yields."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    data = subset.subset(np.arange(45))
    ref = torch.cat(list(per_sample_gradients(model, data, batch_size=20, implementation=impl)))
    if chunk_elements is not None:
        monkeypatch.setattr(imp._common, "CHUNK_ELEMENTS", chunk_elements)
    got = imp.per_sample_gradient_matrix(model, data, batch_size=20, implementation=impl)
    assert got.shape == (45, 1210) and got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-7)
    with pytest.raises(uk.DataError, match="empty"):
        imp.per_sample_gradient_matrix(model, data.subset(np.arange(0)), implementation=impl)


def test_cache_keys_of_token_and_dict_inputs():
    model = _DictModel()
    data = _dict_data()
    key = importance_cache_key(model, data, mode="fisher")
    assert key is not None
    # the dict's order and the samples' order do not matter; another token does
    swapped = uk.ArrayDataset({"attention_mask": data.x["attention_mask"],
                               "input_ids": data.x["input_ids"]}, data.y)
    assert importance_cache_key(model, swapped, mode="fisher") == key
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(1))
    assert importance_cache_key(model, data.subset(perm), mode="fisher") == key
    assert importance_cache_key(model, data.subset(perm), mode="batch-squared-grad") != (
        importance_cache_key(model, data, mode="batch-squared-grad"))
    changed = {k: v.clone() for k, v in data.x.items()}
    changed["input_ids"][0, 0] = (changed["input_ids"][0, 0] + 1) % VOCAB
    assert importance_cache_key(model, uk.ArrayDataset(changed, data.y), mode="fisher") != key
    cnn, tokens = _TextCNN(), _tokens()
    token_key = importance_cache_key(cnn, tokens, mode="fisher")
    other = tokens.x.clone()
    other[-1, -1] = (other[-1, -1] + 1) % VOCAB
    assert importance_cache_key(cnn, uk.ArrayDataset(other, tokens.y), mode="fisher") != token_key
    as_int32 = uk.ArrayDataset(tokens.x.int(), tokens.y)
    assert importance_cache_key(cnn, as_int32, mode="fisher") != token_key
    first = cached_importances(model, data, batch_size=10)
    again = cached_importances(model, swapped, batch_size=7, implementation="loop")
    assert len(_files()) == 1  # the implementation is not part of the key
    assert all(torch.equal(first[k], again[k]) for k in first)


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
