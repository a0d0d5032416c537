"""Architectures, build_model, fresh_copy, ModelInfo and check_finite."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import unlearnkit as uk
from unlearnkit.exceptions import InvalidParameterError, ModelError, UnknownNameError
from unlearnkit.models import check_finite, fresh_copy


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"name": "cnm"}, UnknownNameError, r"Unknown model 'cnm'. Did you mean 'cnn'"),
        ({"hiden": (8,)}, InvalidParameterError,
         r"Model 'mlp' has no argument 'hiden'. Did you mean 'hidden'.*Valid arguments: hidden"),
        ({"width": 0.5}, InvalidParameterError, r"no argument 'width'"),
        ({"num_classes": 1}, InvalidParameterError, r"'num_classes'.*>= 2. Got 1"),
        ({"num_classes": True}, InvalidParameterError, r"'num_classes'.*Got True"),
    ],
)
def test_build_model_errors(kwargs, error, pattern):
    args = {"name": "mlp", "num_classes": 10, "input_shape": (1, 8, 8), **kwargs}
    with pytest.raises(error, match=pattern):
        uk.build_model(args.pop("name"), **args)


def test_image_models_need_image_shapes():
    with pytest.raises(InvalidParameterError, match=r"'cnn' needs image inputs.*\(64,\)"):
        uk.build_model("cnn", num_classes=3, input_shape=(64,))
    with pytest.raises(InvalidParameterError, match=r"at least 4x4; got 2x2"):
        uk.build_model("cnn", num_classes=3, input_shape=(1, 2, 2))
    with pytest.raises(InvalidParameterError, match=r"'resnet18' needs image inputs"):
        uk.build_model("resnet18", num_classes=3, input_shape=(64,))
    with pytest.raises(InvalidParameterError, match=r"'width' parameter must be > 0. Got 0"):
        uk.build_model("resnet18", num_classes=3, input_shape=(3, 8, 8), width=0)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 5, 7)])
def test_cnn_input_sizes(shape):
    model = uk.build_model("cnn", num_classes=7, input_shape=shape, channels=(4, 8), hidden=16)
    out = model(torch.randn(3, *shape))
    assert out.shape == (3, 7)
    # the head does not depend on the image size: same parameter count for every size
    ref = uk.build_model("cnn", num_classes=7, input_shape=(shape[0], 8, 8), channels=(4, 8),
                         hidden=16)
    assert _n_params(model) == _n_params(ref)


def test_mlp_on_vectors_and_images():
    assert uk.build_model("mlp", num_classes=4, input_shape=(20,), hidden=())(
        torch.randn(2, 20)).shape == (2, 4)
    model = uk.build_model("mlp", num_classes=4, input_shape=(1, 8, 8), hidden=(16, 8))
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 4)
    assert _n_params(model) == (64 * 16 + 16) + (16 * 8 + 8) + (8 * 4 + 4)


def test_resnet18_width_changes_parameter_count():
    counts = {w: _n_params(uk.build_model("resnet18", num_classes=10, input_shape=(3, 16, 16),
                                          width=w)) for w in (0.125, 0.25, 0.5)}
    assert counts[0.125] < counts[0.25] < counts[0.5]
    # convolutions dominate: doubling the width about quadruples the count
    assert 3.3 < counts[0.5] / counts[0.25] < 4.1
    model = uk.build_model("resnet18", num_classes=10, input_shape=(3, 16, 16), width=0.125)
    assert model.conv1.out_channels == 8 and model.fc.in_features == 64
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_build_model_records_info():
    model = uk.build_model("cnn", num_classes=5, input_shape=[1, 8, 8], channels=(4, 8))
    info = uk.get_info(model)
    assert info == uk.ModelInfo(arch="cnn", arch_kwargs={"channels": [4, 8]}, num_classes=5,
                                input_shape=(1, 8, 8))
    rebuilt = uk.build_model(info.arch, num_classes=info.num_classes,
                             input_shape=info.input_shape, **info.arch_kwargs)
    assert [t.shape for t in rebuilt.state_dict().values()] == [
        t.shape for t in model.state_dict().values()]


@pytest.mark.parametrize("arch", ["mlp", "cnn", "resnet18"])
def test_fresh_copy_reinitialises_and_keeps_architecture(arch):
    kwargs = {"resnet18": {"width": 0.125}, "cnn": {"channels": (4, 8)}}.get(arch, {})
    torch.manual_seed(0)
    model = uk.build_model(arch, num_classes=10, input_shape=(3, 8, 8), **kwargs)
    model = uk.models.set_info(model, uk.get_info(model).replace(
        recipe=uk.Recipe().to_dict(), seconds=3.0, seed=1, method={"name": "perturb"}))
    if arch == "resnet18":
        with torch.no_grad():
            model(torch.randn(4, 3, 8, 8))  # move the BatchNorm statistics
    before = {k: v.clone() for k, v in model.state_dict().items()}
    new = fresh_copy(model)
    assert type(new) is type(model) and new is not model
    s_new = new.state_dict()
    assert list(s_new) == list(before)
    for k, v in before.items():
        assert s_new[k].shape == v.shape
        assert torch.equal(model.state_dict()[k], v), "the original is untouched"
    weights = [k for k, _ in model.named_parameters() if k.endswith("weight")
               and model.get_parameter(k).dim() > 1]
    assert all(not torch.equal(s_new[k], before[k]) for k in weights)
    if arch == "resnet18":
        assert torch.equal(new.bn1.running_mean, torch.zeros_like(new.bn1.running_mean))
        assert int(new.bn1.num_batches_tracked) == 0
    info = uk.get_info(new)
    assert (info.arch, info.arch_kwargs, info.recipe) == (
        uk.get_info(model).arch, uk.get_info(model).arch_kwargs, uk.get_info(model).recipe)
    assert info.seconds is None and info.method is None and info.seed is None


def test_fresh_copy_is_seeded():
    model = uk.build_model("mlp", num_classes=3, input_shape=(4,), hidden=(5,))
    torch.manual_seed(5)
    a = fresh_copy(model)
    torch.manual_seed(5)
    b = fresh_copy(model)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_fresh_copy_of_users_module():
    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return x * self.w

    # no initialiser: the fallback draws it, with a warning that names it
    scale = Scale()
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match=r"'w'.*trunc_normal_\(std=0\.02\).*model_factory"):
        drawn = fresh_copy(scale)
    assert not torch.equal(drawn.w, scale.w) and float(drawn.w.detach().abs().max()) < 0.1
    mine = nn.Sequential(nn.Linear(4, 3))
    new = fresh_copy(mine)
    assert uk.get_info(new) is None
    assert not torch.equal(new[0].weight, mine[0].weight)


def test_check_finite_names_the_tensor():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    check_finite(model)  # finite: no error
    with torch.no_grad():
        model[1].running_var[1] = float("inf")
    with pytest.raises(ModelError, match=r"The probe has non-finite.*'1\.running_var' \(1 of 2"):
        check_finite(model, "The probe")


def test_model_info_normalises_to_json_form():
    info = uk.ModelInfo(arch="mlp", arch_kwargs={"hidden": (8, 4)}, input_shape=[1, 8, 8],
                        method={"name": "x", "params": {"t": (1, 2)}})
    assert info.arch_kwargs == {"hidden": [8, 4]}
    assert info.input_shape == (1, 8, 8)
    assert info.method["params"]["t"] == [1, 2]
    assert uk.ModelInfo.from_dict(info.to_dict()) == info
    assert info.replace(seed=3).arch_kwargs == {"hidden": [8, 4]}
