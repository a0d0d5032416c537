"""The importance-based methods against hand computations: SalUn, LF-SSD, Fisher forgetting,
influence unlearning, and the importance modes and top-fraction rule they share."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import unlearnkit as uk
from unlearnkit._cache import cache_root
from unlearnkit.importance import (
    importances,
    per_sample_gradients,
    top_fraction,
)
from unlearnkit.methods.base import Request
from unlearnkit.methods.fisher_forgetting import FisherForgetting, output_layer
from unlearnkit.methods.fisher_mask import fisher_mask
from unlearnkit.methods.influence import Influence, woodfisher_gram, woodfisher_ihvp
from unlearnkit.methods.lf_ssd import LFSSD
from unlearnkit.methods.salun import SalUn, random_other_labels


def _data(n: int, seed: int, classes: int = 3, shape: tuple[int, ...] = (4,)) -> uk.ArrayDataset:
    gen = torch.Generator().manual_seed(seed)
    return uk.ArrayDataset(torch.randn(n, *shape, generator=gen),
                           torch.randint(0, classes, (n,), generator=gen))


def _mlp(seed: int = 0, d_in: int = 4, classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, 5), nn.Tanh(), nn.Linear(5, classes))


def _request(forget, retain, scenario="random", seed=0) -> Request:
    return Request(forget=forget, retain=retain, test=None, scenario=scenario, seed=seed,
                   device=torch.device("cpu"), progress=False, original_info=None)


def _hand_grad(model: nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    names = [n for n, _ in model.named_parameters()]
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return dict(zip(names, grads, strict=True))


def _close(a: dict, b: dict, rtol: float = 1e-5) -> None:
    assert set(a) == set(b)
    for k in a:
        scale = float(b[k].abs().max()) or 1.0
        torch.testing.assert_close(a[k].float(), b[k].float(), rtol=rtol, atol=rtol * scale,
                                   msg=k)


# ------------------------------------------------------------------- top fraction (shared)
def test_top_fraction_is_fisher_masks_rule():
    gen = torch.Generator().manual_seed(0)
    f = {"x": torch.randint(0, 4, (6, 5), generator=gen).float(), "y": torch.rand(7)}
    r = {"x": torch.rand(6, 5, generator=gen), "y": torch.zeros(7)}
    for fraction in (0.0, 0.1, 0.5, 0.77, 1.0):
        shared = top_fraction({k: f[k] - r[k] for k in f}, fraction)
        masked = fisher_mask(f, r, fraction=fraction)
        assert all(torch.equal(shared[k], masked[k]) for k in f)
        assert sum(int(v.sum()) for v in shared.values()) == round(fraction * 37)
    with pytest.raises(uk.InvalidParameterError, match="'fraction' parameter"):
        top_fraction(f, 1.5)


# ---------------------------------------------------------------------------- SalUn
def test_salun_mask_is_the_top_fraction_of_the_forget_loss_gradient():
    model, forget = _mlp(), _data(10, 1)
    loss = F.cross_entropy(model(forget.x), forget.y)  # the mean loss over D_f
    hand = {k: g.abs() for k, g in _hand_grad(model, loss).items()}
    _close(importances(model, forget, mode="saliency", batch_size=3), hand)
    flat = torch.cat([v.reshape(-1) for v in hand.values()])
    for threshold in (0.1, 0.5):
        k = round(threshold * flat.numel())
        cut = flat.sort(descending=True).values[k - 1]
        mask = SalUn(threshold=threshold).mask(model, _request(forget, _data(20, 2)))
        assert sum(int(m.sum()) for m in mask.values()) == k
        for name, m in mask.items():
            assert (hand[name][m] >= cut).all() and (hand[name][~m] <= cut).all(), name


def test_salun_updates_only_the_masked_weights():
    model, forget, retain = _mlp(), _data(12, 1), _data(40, 2)
    method = SalUn(threshold=0.3, epochs=3, lr=0.1, batch_size=16)
    mask = method.mask(model, _request(forget, retain))
    out = method.unlearn(model, forget=forget, retain=retain, seed=3)
    changed = 0
    for (name, p), q in zip(out.named_parameters(), model.parameters(), strict=True):
        m = mask[name]
        assert torch.equal(p[~m], q[~m]), f"{name}: an unmasked weight moved"
        changed += int((p[m] != q[m]).sum())
    assert changed > 0.9 * sum(int(m.sum()) for m in mask.values())
    assert not any(getattr(p, "_backward_hooks", None) for p in out.parameters())


def test_random_other_labels_never_keep_the_true_class():
    y = torch.arange(10).repeat(50)
    new = random_other_labels(y, 10, torch.Generator().manual_seed(0))
    assert not (new == y).any() and new.min() >= 0 and new.max() < 10
    assert set(new[y == 0].tolist()) == set(range(1, 10))


# ---------------------------------------------------------------------------- LF-SSD
def test_output_norm_sensitivity_by_hand():
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 1.0, -1.0]]))
        model.bias.copy_(torch.tensor([0.5, -0.25]))
    data = _data(5, 0, classes=2, shape=(3,))
    out = model(data.x).detach()  # d ||W x + b||^2 / dW = 2 f x^T, / db = 2 f
    per_w = 2 * out[:, :, None] * data.x[:, None, :]
    hand = {"weight": per_w.abs().mean(0), "bias": (2 * out).abs().mean(0)}
    for impl in ("hooks", "vmap", "loop"):
        _close(importances(model, data, mode="output-norm", batch_size=2,
                           implementation=impl), hand)
    # the public code's variant: |gradient of each batch's mean|, averaged over the batches
    batches = [slice(0, 2), slice(2, 4), slice(4, 5)]
    hand_b = {"weight": sum(per_w[b].mean(0).abs() for b in batches) / 3,
              "bias": sum((2 * out[b]).mean(0).abs() for b in batches) / 3}
    _close(importances(model, data, mode="batch-output-norm", batch_size=2), hand_b)


def test_lf_ssd_reads_no_label(mlp_model, random_split):
    forget, retain = random_split.forget, random_split.retain
    gen = torch.Generator().manual_seed(0)
    shuffled = [uk.ArrayDataset(d.x, d.y[torch.randperm(len(d.y), generator=gen)])
                for d in (forget, retain)]
    for mode in ("output-norm", "batch-output-norm"):
        want = importances(mlp_model, retain, mode=mode, device="cpu")
        got = importances(mlp_model, shuffled[1], mode=mode, device="cpu")
        assert all(torch.equal(want[k], got[k]) for k in want)
    method = LFSSD(alpha=2.0)
    a = method.unlearn(mlp_model, forget=forget, retain=retain, device="cpu")
    b = method.unlearn(mlp_model, forget=shuffled[0], retain=shuffled[1], device="cpu")
    pairs = list(zip(a.parameters(), b.parameters(), mlp_model.parameters(), strict=True))
    assert all(torch.equal(p, q) for p, q, _ in pairs)
    assert any(not torch.equal(p, o) for p, _, o in pairs)  # it did dampen something
    assert LFSSD().params() == {"alpha": 10.0, "lambd": 1.0, "importance": "output-norm",
                                "batch_size": 64, "reference": "train",
                                "implementation": "auto"}


# --------------------------------------------------------------------- Fisher forgetting
def test_true_fisher_by_hand():
    model, data = _mlp(), _data(6, 3)
    hand = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(len(data)):
        p = F.softmax(model(data.x[i : i + 1]), -1).detach()[0]
        for c in range(3):
            logits = model(data.x[i : i + 1])
            g = _hand_grad(model, F.cross_entropy(logits, torch.tensor([c])))
            for n in hand:
                hand[n] += p[c] * g[n] ** 2 / len(data)
    for impl in ("hooks", "vmap", "loop"):
        _close(importances(model, data, mode="true-fisher", batch_size=4,
                           implementation=impl), hand)
    shuffled = uk.ArrayDataset(data.x, data.y.flip(0))
    _close(importances(model, shuffled, mode="true-fisher"), hand)


def test_true_fisher_by_the_hooks_takes_one_forward_pass_for_all_classes():
    """One term per class, each its own backward, from one forward pass of each batch (the
    pass itself was repeated per class: a third of fisher-forgetting's time on an MLP). The
    value is the per-class loop's."""
    model, data = _mlp(), _data(12, 3)
    forwarded = []
    model.register_forward_pre_hook(lambda m, args: forwarded.append(len(args[0])))
    ref = importances(model, data, mode="true-fisher", batch_size=4, implementation="loop")
    forwarded.clear()
    got = importances(model, data, mode="true-fisher", batch_size=4, implementation="hooks")
    _close(got, ref)
    # 3 batches of 4 samples, each forwarded once (not once per class: 9 times); the rest
    # are single samples and the 2 on which the hooks are checked against the loop
    assert forwarded.count(4) == 3 and max(forwarded) == 4


@pytest.mark.parametrize("scenario", ["class", "random"])
def test_fisher_forgetting_draws_the_authors_distribution(scenario):
    model, retain = _mlp(), _data(30, 4)
    forget = uk.ArrayDataset(torch.randn(6, 4), torch.full((6,), 2))
    alpha = 1e-3
    out = FisherForgetting(alpha=alpha).unlearn(model, forget=forget, retain=retain,
                                                scenario=scenario, seed=5)
    fisher = importances(model, retain, mode="true-fisher")
    gen = torch.Generator().manual_seed(5)
    assert output_layer(model, 3) == ["2.weight", "2.bias"]
    for (name, p), q in zip(model.named_parameters(), out.parameters(), strict=True):
        last = name.startswith("2.")
        var = alpha * (1 / (fisher[name] + 1e-8)).clamp(max=1e2 if last else 1e3)
        if p.ndim == 2:
            var = var.mean(1, keepdim=True).expand_as(p)
        mean = p.detach().clone()
        if last and scenario == "class":
            mean[2], var = 0.0, var.clone()
            var[2] = 1e-4
        if last or p.ndim == 1:
            var = var * 10
        expected = mean + var.sqrt() * torch.randn(p.shape, generator=gen)
        torch.testing.assert_close(q, expected, msg=name)


def test_fisher_forgetting_noise_std_over_many_draws():
    model, forget, retain = _mlp(), _data(5, 1), _data(30, 4)
    method = FisherForgetting(alpha=1e-4)
    mean, std = method.distribution(model, _request(forget, retain))
    draws = torch.stack([dict(method.unlearn(model, forget=forget, retain=retain, seed=s)
                              .named_parameters())["0.weight"].detach() for s in range(200)])
    torch.testing.assert_close(draws.std(0), std["0.weight"], rtol=0.2, atol=0.0)
    torch.testing.assert_close(draws.mean(0), mean["0.weight"],
                               rtol=0.0, atol=float(4 * std["0.weight"].max() / 200**0.5))


# ------------------------------------------------------------------------- influence
def test_woodfisher_is_the_sherman_morrison_recursion_and_the_dense_inverse():
    gen = torch.Generator().manual_seed(0)
    m, d, lam = 7, 12, 0.3
    g = torch.randn(m, d, generator=gen, dtype=torch.float64)
    v = torch.randn(d, generator=gen, dtype=torch.float64)
    dense = torch.linalg.inv(lam * torch.eye(d, dtype=torch.float64) + g.T @ g / m) @ v
    inv = torch.eye(d, dtype=torch.float64) / lam  # WoodFisher's recursion, one sample at a time
    for k in range(m):
        u = inv @ g[k]
        inv = inv - torch.outer(u, u) / (m + g[k] @ u)
    torch.testing.assert_close(inv @ v, dense)
    torch.testing.assert_close(woodfisher_ihvp(g, v, damping=lam), dense)
    # the Gram matrix computed once serves every damping, unchanged
    gram = woodfisher_gram(g)
    torch.testing.assert_close(woodfisher_ihvp(g, v, damping=lam, gram=gram), dense)
    torch.testing.assert_close(gram, g @ g.T)


def test_influence_step_is_the_dense_newton_step():
    model, forget, retain = _mlp(), _data(6, 1), _data(20, 2)
    method = Influence(alpha=0.5, damping=0.1)  # samples (1000) >= |D_r|: all of D_r
    out = method.unlearn(model, forget=forget, retain=retain)

    def per_sample(data):
        return torch.stack([torch.cat([g.reshape(-1) for g in _hand_grad(
            model, F.cross_entropy(model(data.x[i : i + 1]), data.y[i : i + 1])).values()])
            for i in range(len(data))]).double()

    g_f, g_r = per_sample(forget), per_sample(retain)
    n_f, n_r = len(forget), len(retain)
    v = n_f / (n_f + n_r) * (g_f.mean(0) - g_r.mean(0))
    fisher = 0.1 * torch.eye(v.numel(), dtype=torch.float64) + g_r.T @ g_r / n_r
    want = 0.5 * torch.linalg.inv(fisher) @ v
    got = torch.cat([(q - p).reshape(-1) for p, q in zip(model.parameters(), out.parameters(),
                                                          strict=True)]).double()
    torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-6)
    flat = torch.cat(list(per_sample_gradients(model, retain, batch_size=7))).double()
    torch.testing.assert_close(flat, g_r, rtol=1e-5, atol=1e-7)


def test_influence_subsamples_the_retain_set_by_seed():
    model, forget, retain = _mlp(), _data(6, 1), _data(50, 2)
    method = Influence(samples=10)
    a = method.unlearn(model, forget=forget, retain=retain, seed=0)
    b = method.unlearn(model, forget=forget, retain=retain, seed=0)
    c = method.unlearn(model, forget=forget, retain=retain, seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters(),
                                                     strict=True))


# ------------------------------------------------------------ per-sample implementations
PER_SAMPLE_METHODS = ["ssd", "lf-ssd", "fisher-mask", "fisher-forgetting", "influence"]


@pytest.mark.filterwarnings("ignore::unlearnkit.exceptions.UnsupportedScenarioWarning")
@pytest.mark.parametrize("name", PER_SAMPLE_METHODS)
def test_the_implementation_is_passed_through_and_agrees(name, monkeypatch):
    from unlearnkit.importance import auto

    used: list[str] = []
    for table in (auto.FISHER, auto.PER_SAMPLE_GRADS):
        for impl, fn in list(table.items()):
            monkeypatch.setitem(table, impl, lambda *a, _i=impl, _f=fn, **k:
                                used.append(_i) or _f(*a, **k))
    model, forget, retain = _mlp(), _data(6, 1), _data(20, 2)
    params = {"ssd": {"alpha": 2.0}, "lf-ssd": {"alpha": 2.0},
              "fisher-mask": {"epochs": 0}}.get(name, {})
    out = {}
    for impl in ("hooks", "vmap", "loop"):
        for f in (cache_root() / "importance").glob("*.safetensors"):
            f.unlink()  # computed by this implementation, not read from the cache
        used.clear()
        method = uk.get_method(name, implementation=impl, **params)
        out[impl] = method.unlearn(model, forget=forget, retain=retain, seed=0)
        assert used and set(used) == {impl}
    for impl in ("hooks", "vmap"):
        for p, q in zip(out[impl].parameters(), out["loop"].parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", PER_SAMPLE_METHODS)
def test_an_unknown_implementation_is_refused(name):
    with pytest.raises(uk.InvalidParameterError,
                       match=rf"'implementation' parameter of '{name}' must be one of"):
        uk.get_method(name, implementation="magic")
    assert uk.get_method(name).implementation == "auto"


# -------------------------------------------------------------------------- registry
def test_registered_with_the_documented_defaults():
    assert uk.get_method("salun").params() == {
        "threshold": 0.5, "epochs": 10, "lr": 0.013, "momentum": 0.9, "weight_decay": 5e-4,
        "batch_size": 256}
    assert uk.get_method("fisher-forgetting").params() == {"alpha": 1e-6,
                                                           "class_correction": True,
                                                           "implementation": "auto"}
    assert uk.get_method("influence").params() == {"alpha": 0.2, "samples": 1000,
                                                   "damping": 1.0, "implementation": "auto"}
    assert isinstance(uk.get_method("lf-ssd"), LFSSD)
    with pytest.raises(uk.InvalidParameterError, match="'importance' parameter of 'lf-ssd'"):
        LFSSD(importance="fisher")

