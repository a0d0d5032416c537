"""Reference tests of the attribution maps: captum's results against independent computations."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import unlearnkit as uk
from unlearnkit.exceptions import InvalidParameterError
from unlearnkit.saliency import last_conv_layer, saliency_maps


def gradcam_reference(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """Grad-CAM by hand: hook the last conv, weight its maps by their mean gradients, upsample."""
    model = copy.deepcopy(model).eval()
    layer = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]
    acts = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: acts.__setitem__("a", out))
    try:
        logits = model(x[None])
    finally:
        handle.remove()
    a = acts["a"]  # 1 x K x h x w
    (g,) = torch.autograd.grad(logits[0, target], a)
    weights = g.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * a).sum(dim=1, keepdim=True))
    up = F.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
    return up[0, 0].detach()


def hooks_of(model: nn.Module) -> int:
    return sum(
        len(d)
        for m in model.modules()
        for d in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks,
                  m._backward_pre_hooks)
    )


@pytest.fixture
def linear() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def test_saliency_of_a_linear_model_is_the_absolute_weight_row(linear, digits):
    x = digits.train.x[5]
    w, b = linear[1].weight.detach(), linear[1].bias.detach()
    expected_pred = int(np.argmax(w.numpy() @ x.numpy().ravel() + b.numpy()))

    out = saliency_maps(linear, x)
    assert out["pred"] == expected_pred and out["target"] == expected_pred
    assert out["saliency"].dtype == np.float32 and out["saliency"].shape == (8, 8)
    np.testing.assert_allclose(out["saliency"], np.abs(w[expected_pred].numpy()).reshape(8, 8))
    assert out["gradcam"] is None  # no convolution

    other = (expected_pred + 3) % 10
    out = saliency_maps(linear, x, target=other)
    assert out["pred"] == expected_pred and out["target"] == other
    np.testing.assert_allclose(out["saliency"], np.abs(w[other].numpy()).reshape(8, 8))


def test_saliency_takes_the_max_over_channels():
    torch.manual_seed(1)
    model = uk.build_model("cnn", input_shape=(3, 8, 8), num_classes=5, channels=(4, 6), hidden=8)
    x = torch.randn(3, 8, 8)
    out = saliency_maps(model, x, target=2)

    ref_model = copy.deepcopy(model).eval()
    xr = x[None].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(ref_model(xr)[0, 2], xr)
    expected = g[0].abs().amax(dim=0)
    assert out["saliency"].shape == (8, 8)
    np.testing.assert_allclose(out["saliency"], expected.numpy(), rtol=1e-5, atol=1e-8)
    # The channels differ, so the max is not a trivial reduction.
    assert not torch.allclose(g[0].abs()[0], g[0].abs()[1])


@pytest.mark.parametrize("target", [None, 0, 7])
def test_gradcam_on_the_cnn_matches_a_hand_computation(cnn_model, digits, target):
    x = digits.train.x[11]
    out = saliency_maps(cnn_model, x, target=target)
    cam = out["gradcam"]
    assert cam.dtype == np.float32 and cam.shape == (8, 8)
    assert np.isfinite(cam).all() and (cam >= 0).all()
    t = out["pred"] if target is None else target
    assert out["target"] == t
    expected = gradcam_reference(cnn_model, x, t)
    np.testing.assert_allclose(cam, expected.numpy(), rtol=1e-5, atol=1e-7)
    if target is None:  # the predicted class of a trained model has positive evidence
        assert cam.max() > 0


def test_captum_interpolate_is_torch_bilinear_without_corner_alignment():
    from captum.attr import LayerAttribution

    t = torch.randn(1, 1, 4, 4)
    np.testing.assert_array_equal(
        LayerAttribution.interpolate(t, (8, 8), interpolate_mode="bilinear").numpy(),
        F.interpolate(t, size=(8, 8), mode="bilinear", align_corners=False).numpy(),
    )
    assert not torch.allclose(
        F.interpolate(t, size=(8, 8), mode="bilinear", align_corners=False),
        F.interpolate(t, size=(8, 8), mode="bilinear", align_corners=True),
    )


def test_mlp_has_no_gradcam(mlp_model, digits):
    x = digits.train.x[0]
    out = saliency_maps(mlp_model, x)
    assert out["gradcam"] is None
    assert out["saliency"].shape == (8, 8) and out["saliency"].dtype == np.float32
    with torch.no_grad():
        assert out["pred"] == int(copy.deepcopy(mlp_model).eval()(x[None]).argmax())

    flat = uk.build_model("mlp", input_shape=(20,), num_classes=3, hidden=(7,))
    out = saliency_maps(flat, torch.randn(20))
    assert out["gradcam"] is None and out["saliency"].shape == (20,)
    assert np.isfinite(out["saliency"]).all() and (out["saliency"] >= 0).all()


def test_the_model_is_left_unchanged(cnn_model, digits):
    model = copy.deepcopy(cnn_model).train()
    model.classifier[1].weight.requires_grad_(False)  # a mix of frozen and trainable parameters
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    global_hooks = len(nn.modules.module._global_forward_hooks)

    a = saliency_maps(model, digits.train.x[3], target=4)
    assert model.training and all(m.training for m in model.modules())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    conv = last_conv_layer(model)
    assert not conv._forward_hooks and not conv._forward_pre_hooks
    assert not conv._backward_hooks and not conv._backward_pre_hooks
    assert hooks_of(model) == 0
    assert len(nn.modules.module._global_forward_hooks) == global_hooks

    # Deterministic, and the same maps as the model in eval mode.
    b = saliency_maps(copy.deepcopy(cnn_model).eval(), digits.train.x[3], target=4)
    np.testing.assert_array_equal(a["saliency"], b["saliency"])
    np.testing.assert_array_equal(a["gradcam"], b["gradcam"])


def test_the_input_is_left_unchanged(cnn_model, digits):
    x = digits.train.x[3].clone()
    saliency_maps(cnn_model, x, device="cpu")
    assert not x.requires_grad and x.grad is None
    assert torch.equal(x, digits.train.x[3])


def test_batch_inputs_are_refused(cnn_model, linear, digits):
    with pytest.raises(InvalidParameterError, match=r"one sample.*\(1, 8, 8\).*batch"):
        saliency_maps(cnn_model, digits.train.x[:2])
    with pytest.raises(InvalidParameterError, match=r"one sample.*\(C, H, W\).*batch"):
        saliency_maps(linear, digits.train.x[:2])  # a model without ModelInfo
    with pytest.raises(InvalidParameterError, match=r"expected x shaped \(1, 8, 8\)"):
        saliency_maps(cnn_model, torch.zeros(3, 8, 8))


@pytest.mark.parametrize("target", [10, -1, 2.0, True])
def test_bad_targets_are_refused(cnn_model, digits, target):
    with pytest.raises(InvalidParameterError, match=r"'target'.*\[0, 10\)"):
        saliency_maps(cnn_model, digits.train.x[0], target=target)


def test_last_conv_layer():
    cnn = uk.build_model("cnn", input_shape=(1, 8, 8), num_classes=10)
    convs = [m for m in cnn.features if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4
    assert last_conv_layer(cnn) is convs[-1] is cnn.features[7]
    assert last_conv_layer(uk.build_model("mlp", input_shape=(1, 8, 8), num_classes=10)) is None
    resnet = uk.build_model("resnet18", input_shape=(3, 8, 8), num_classes=10, width=0.125)
    assert last_conv_layer(resnet) is resnet.layer4[1].conv2


def test_resnet_maps_have_the_input_shape():
    torch.manual_seed(0)
    model = uk.build_model("resnet18", input_shape=(3, 16, 16), num_classes=4, width=0.125)
    out = saliency_maps(model, torch.randn(3, 16, 16))
    assert out["saliency"].shape == out["gradcam"].shape == (16, 16)
    assert (out["gradcam"] >= 0).all() and np.isfinite(out["gradcam"]).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(cnn_model, digits):
    x = digits.train.x[11]
    cpu = saliency_maps(cnn_model, x)
    gpu = saliency_maps(copy.deepcopy(cnn_model).cuda(), x)  # x is moved to the model's device
    assert gpu["pred"] == cpu["pred"]
    np.testing.assert_allclose(gpu["saliency"], cpu["saliency"], rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(gpu["gradcam"], cpu["gradcam"], rtol=1e-3, atol=1e-5)
