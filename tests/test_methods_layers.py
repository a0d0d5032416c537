"""Layer-surgery methods: cf-k, eu-k, boundary-shrink, boundary-expand.

Each test checks a defining rule on a tiny model, where a wrong implementation would fail:
which layers are "the last k", what stays bit-for-bit, what the relabelling picks, what the
shadow class leaves behind.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import unlearnkit as uk
from unlearnkit.methods._layers import (
    find_head,
    last_layers,
    narrow_head,
    parameterised_layers,
    widen_head,
)
from unlearnkit.methods.boundary_shrink import fgsm, nearest_wrong_labels
from unlearnkit.training import Recipe, fit, seeded

SHAPE = (1, 8, 8)


def _names(layers):
    return [name for name, _ in layers]


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _in_layers(key: str, names: list[str]) -> bool:
    return key.rpartition(".")[0] in names


@pytest.fixture(scope="module")
def mlp3(digits):
    """An MLP with three layers, trained briefly."""
    recipe = Recipe(epochs=2, lr=0.05, batch_size=64)
    return uk.train_model(digits, arch="mlp", hidden=(16, 16), recipe=recipe, seed=0)


@pytest.fixture(scope="module")
def small_class(digits):
    ds = uk.DataBundle(name="digits-small", train=digits.train.subset(range(400)),
                       test=digits.test.subset(range(100)), class_names=digits.class_names)
    return uk.split_by_class(ds, [3])


# --------------------------------------------------------------------- the last k layers
def test_layers_in_module_order_mlp_cnn_resnet():
    mlp = uk.build_model("mlp", num_classes=10, input_shape=SHAPE, hidden=(16, 8))
    assert _names(parameterised_layers(mlp)) == ["net.1", "net.3", "net.5"]
    x = torch.zeros(2, *SHAPE)
    assert _names(last_layers(mlp, 2, x)) == ["net.3", "net.5"]

    cnn = uk.build_model("cnn", num_classes=10, input_shape=SHAPE, channels=(4, 8), hidden=8)
    assert _names(parameterised_layers(cnn)) == [
        "features.0", "features.2", "features.5", "features.7", "classifier.1", "classifier.3"]
    assert _names(last_layers(cnn, 3, x)) == ["features.7", "classifier.1", "classifier.3"]

    resnet = uk.build_model("resnet18", num_classes=10, input_shape=SHAPE, width=0.0625)
    names = _names(parameterised_layers(resnet))
    # stem (2) + 8 blocks x (conv, bn, conv, bn) + 3 shortcuts x (conv, bn) + fc
    assert len(names) == 2 + 8 * 4 + 3 * 2 + 1
    assert names[:6] == ["conv1", "bn1", "layer1.0.conv1", "layer1.0.bn1", "layer1.0.conv2",
                         "layer1.0.bn2"]
    assert names[names.index("layer2.0.bn2") + 1 :][:2] == ["layer2.0.shortcut.0",
                                                            "layer2.0.shortcut.1"]
    assert _names(last_layers(resnet, 3, x)) == ["layer4.1.conv2", "layer4.1.bn2", "fc"]
    # every parameter belongs to exactly one layer
    owned = [p for _, m in parameterised_layers(resnet) for p in m.parameters(recurse=False)]
    assert len(owned) == len(list(resnet.parameters()))
    assert {id(p) for p in owned} == {id(p) for p in resnet.parameters()}

    with pytest.warns(UserWarning, match="only 3 parameterised layers"):
        assert _names(last_layers(mlp, 5, x)) == ["net.1", "net.3", "net.5"]


@pytest.mark.parametrize("name", ["cf-k", "eu-k"])
def test_k_zero_refused(name):
    with pytest.raises(uk.InvalidParameterError, match=rf"'k' parameter of '{name}'.*Got 0"):
        uk.get_method(name, k=0)


# ---------------------------------------------------------------------------- cf-k, eu-k
@pytest.mark.parametrize("name", ["cf-k", "eu-k"])
def test_only_the_last_k_layers_change(name, mlp3, small_class):
    before = _state(mlp3)
    out = uk.unlearn(mlp3, small_class, name, k=2, epochs=1)
    inside = ["net.3", "net.5"]
    after = out.state_dict()
    for key, value in before.items():
        if _in_layers(key, inside):
            assert not torch.equal(after[key], value), f"{name} left {key} unchanged"
        else:
            assert torch.equal(after[key], value), f"{name} changed {key} outside the last 2"
    assert all(p.requires_grad for p in out.parameters())
    assert all(p.grad is None for p in out.parameters())


@pytest.mark.parametrize("name", ["cf-k", "eu-k"])
def test_frozen_batchnorm_statistics_do_not_move(name, small_class):
    """Frozen modules run in eval mode: their buffers stay bit-for-bit; the trained BN moves."""
    net = uk.build_model("resnet18", num_classes=10, input_shape=SHAPE, width=0.0625)
    with torch.no_grad():  # non-default statistics, so that a reset would show
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.fill_(2.0)
    before = _state(net)
    method = uk.get_method(name, k=2, epochs=1, lr=0.01, optimizer="sgd", weight_decay=0.0,
                           batch_size=64, schedule="constant")
    out = method.unlearn(net, forget=small_class.forget, retain=small_class.retain,
                         scenario="class")
    after = out.state_dict()
    inside = ["layer4.1.bn2", "fc"]
    for key, value in before.items():
        if _in_layers(key, inside):
            if "num_batches" not in key:
                assert not torch.equal(after[key], value), key
        else:
            assert torch.equal(after[key], value), f"{name} changed {key}"


def test_eu_k_reinitialises_the_last_k_layers_before_training(mlp3, small_class):
    before = _state(mlp3)
    reset = uk.unlearn(mlp3, small_class, "eu-k", k=2, epochs=0)
    other_seed = uk.unlearn(mlp3, small_class, "eu-k", k=2, epochs=0, seed=1)
    for key, value in before.items():
        if _in_layers(key, ["net.3", "net.5"]):
            assert not torch.equal(reset.state_dict()[key], value), key
            assert not torch.equal(reset.state_dict()[key], other_seed.state_dict()[key]), key
        else:
            assert torch.equal(reset.state_dict()[key], value), key
    assert uk.accuracy(reset, small_class.retain) < 0.3  # the last two layers know nothing
    # training starts from the re-initialised layers, the first one frozen
    trained = uk.unlearn(mlp3, small_class, "eu-k", k=2, epochs=1)
    by_hand = copy.deepcopy(reset)
    by_hand.net[1].requires_grad_(False)
    recipe = Recipe.from_dict(uk.get_info(mlp3).recipe).replace(epochs=1)
    fit(by_hand, small_class.retain, recipe, seed=0,
        params=[*by_hand.net[3].parameters(), *by_hand.net[5].parameters()])
    for key, value in by_hand.state_dict().items():
        assert torch.equal(trained.state_dict()[key], value), key


def test_eu_k_says_when_k_covers_the_whole_model(mlp3, small_class):
    """k equal to the model's depth re-initialises every layer, a retraining from scratch, as
    silently as k beyond it did: both are named, once; a k below it is not."""
    for k in (3, 5):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = uk.unlearn(mlp3, small_class, "eu-k", k=k, epochs=0)
        said = [str(w.message) for w in caught if "parameterised layer" in str(w.message)]
        assert said == [f"eu-k: k={k} re-initialises every parameterised layer of this model "
                        "(3): a retraining from scratch, at about its cost; lower k to keep "
                        "the first layers as the feature extractor."]
        for key, value in mlp3.state_dict().items():
            assert not torch.equal(out.state_dict()[key], value), key
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        uk.unlearn(mlp3, small_class, "eu-k", k=2, epochs=0)
    assert not [w for w in caught if "parameterised layer" in str(w.message)]


def test_cf_k_takes_the_original_recipe(mlp3, small_class):
    """With every field at None, the training is the original's recipe on D_r, layers frozen."""
    recipe = Recipe.from_dict(uk.get_info(mlp3).recipe)
    by_hand = copy.deepcopy(mlp3)
    by_hand.net[1].requires_grad_(False)
    fit(by_hand, small_class.retain, recipe, seed=0,
        params=[*by_hand.net[3].parameters(), *by_hand.net[5].parameters()])
    out = uk.unlearn(mlp3, small_class, "cf-k", k=2)
    for key, value in by_hand.state_dict().items():
        assert torch.equal(out.state_dict()[key], value), key


# ------------------------------------------------------------------------ boundary-shrink
def _tiny_linear() -> nn.Module:
    """logits = (x0, x1, 0): class 2's logit is always 0."""
    model = nn.Linear(2, 3)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
        model.bias.zero_()
    return model


def test_boundary_shrink_relabelling_by_hand():
    model = _tiny_linear()
    x = torch.tensor([[0.5, 0.4], [2.0, 0.0]])
    y = torch.tensor([0, 0])
    # d CE / d x = W^T (softmax - e_y): (-, +) for both samples, so FGSM moves (-0.1, +0.1)
    x_adv = fgsm(model, x, y, bound=0.1)
    torch.testing.assert_close(x_adv, torch.tensor([[0.4, 0.5], [1.9, 0.1]]))
    # sample 0 crosses into class 1: its adversarial prediction;
    # sample 1 stays in class 0 (logits 1.9, 0.1, 0): the runner-up, class 1, not its own
    labels = nearest_wrong_labels(model, x, y, bound=0.1)
    assert labels.tolist() == [1, 1]
    assert model.weight.grad is None


def test_boundary_shrink_labels_are_wrong_and_adversarial(mlp_model, class_split):
    x, y = class_split.forget.x, class_split.forget.y
    model = copy.deepcopy(mlp_model)
    model.train()
    labels = nearest_wrong_labels(model, x, y, bound=0.1)
    assert model.training and all(m.training for m in model.modules())
    with torch.no_grad():
        adv_pred = model.eval()(fgsm(model, x, y, bound=0.1)).argmax(1)
    crossed = adv_pred != y
    assert crossed.float().mean() > 0.2  # the attack works on most samples...
    assert torch.equal(labels[crossed], adv_pred[crossed])  # ... and gives their labels
    assert (labels != y).all()  # every label is a wrong one


def test_boundary_shrink_fine_tunes_on_the_relabelled_forget_set(mlp_model, class_split):
    method = uk.get_method("boundary-shrink", epochs=2)
    out = uk.unlearn(mlp_model, class_split, method)
    by_hand = copy.deepcopy(mlp_model)
    relabelled = uk.ArrayDataset(class_split.forget.x, nearest_wrong_labels(
        mlp_model, class_split.forget.x, class_split.forget.y, bound=0.1))
    fit(by_hand, relabelled, method.forget_recipe(), seed=0)
    for key, value in by_hand.state_dict().items():
        assert torch.equal(out.state_dict()[key], value), key


def test_boundary_shrink_forgets_with_a_larger_learning_rate(mlp_model, class_split):
    out = uk.unlearn(mlp_model, class_split, "boundary-shrink", lr=0.01, epochs=5)
    assert uk.accuracy(out, class_split.forget) < 0.1
    assert uk.accuracy(out, class_split.retain) > 0.75


# ------------------------------------------------------------------------ boundary-expand
def test_widen_then_narrow_is_lossless():
    torch.manual_seed(0)
    head = nn.Linear(4, 3)
    w, b = head.weight.detach().clone(), head.bias.detach().clone()
    widen_head(head)
    assert head.weight.shape == (4, 4) and head.bias.shape == (4,) and head.out_features == 4
    assert torch.equal(head.weight[:3], w) and torch.equal(head.bias[:3], b)
    assert head.bias[3] == 0 and head.weight[3].abs().sum() > 0
    narrow_head(head, 3)
    assert torch.equal(head.weight, w) and torch.equal(head.bias, b) and head.out_features == 3


def test_boundary_expand_is_widen_train_narrow(mlp_model, class_split):
    before = _state(mlp_model)
    method = uk.get_method("boundary-expand", epochs=2, lr=1e-3)
    out = uk.unlearn(mlp_model, class_split, method)
    # same architecture and output size
    assert out(torch.zeros(2, *SHAPE)).shape == (2, 10)
    assert {k: v.shape for k, v in out.state_dict().items()} == {
        k: v.shape for k, v in before.items()}
    # the rule by hand: shadow unit (seeded), every weight trained towards class 10, unit removed
    by_hand = copy.deepcopy(mlp_model)
    _, head = find_head(by_hand, class_split.forget.x[:2])
    with seeded(0):
        widen_head(head)
    fit(by_hand, class_split.forget, method.forget_recipe(), seed=0,
        loss_fn=lambda m, x, y: F.cross_entropy(m(x), torch.full_like(y, 10)))
    narrow_head(head, 10)
    for key, value in by_hand.state_dict().items():
        assert torch.equal(out.state_dict()[key], value), key
    # every weight moved, the body's included (the official code trains its whole network)
    for key, value in before.items():
        assert not torch.equal(out.state_dict()[key], value), key


def test_boundary_expand_without_epochs_returns_the_original(mlp_model, class_split):
    out = uk.unlearn(mlp_model, class_split, "boundary-expand", epochs=0)
    for key, value in mlp_model.state_dict().items():
        assert torch.equal(out.state_dict()[key], value), key


class _Take(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x):
        return x[:, : self.n]


@pytest.mark.parametrize(("model", "match"), [
    # no Linear at all: a fully convolutional classifier, whose logits a reshape makes
    (nn.Sequential(nn.Conv2d(1, 10, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()),
     r"logits are not the output of a layer.*flatten after the last layer, '0'"),
    # a Linear with 10 outputs whose extra unit never reaches the output
    (nn.Sequential(nn.Flatten(), nn.Linear(64, 10), _Take(10)), r"not the classifier head"),
    # a Linear with 10 outputs followed by a layer: that layer outputs the logits
    (nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.LayerNorm(10)),
     r"classifier head that is not an nn.Linear.*'2', a LayerNorm"),
])
def test_boundary_expand_refuses_a_model_without_a_head(model, match, class_split):
    before = _state(model)
    with pytest.raises(uk.ModelError, match=match):
        uk.get_method("boundary-expand").unlearn(model, forget=class_split.forget,
                                                 scenario="class")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
