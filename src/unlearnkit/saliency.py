"""Attribution maps: which parts of one input a classifier's decision rests on.

:func:`saliency_maps` explains one prediction of a model with two maps, both computed by captum
(never by hand-written attribution code here), for a class ``c`` (by default the predicted one):

``"saliency"``
    The vanilla gradient saliency of Simonyan et al. (2014), ``captum.attr.Saliency``: the
    absolute gradient of the logit of ``c`` with respect to each input value,
    ``|d f_c(x) / d x|``, reduced by the maximum over the colour channels to one ``H x W`` map
    (a flat feature vector keeps its own shape). It shows which pixels, changed a little, would
    change the logit the most: fine-grained and often noisy.
``"gradcam"``
    Grad-CAM (Selvaraju et al. 2017), ``captum.attr.LayerGradCam`` on the last ``nn.Conv2d`` of
    the model (:func:`last_conv_layer`): the feature maps ``A_k`` of that layer weighted by the
    spatial mean of the gradient of the logit of ``c`` with respect to them,
    ``relu(sum_k mean(d f_c / d A_k) * A_k)``, upsampled bilinearly to the input's ``H x W`` with
    ``captum.attr.LayerAttribution.interpolate``. It shows the coarse regions that speak *for*
    the class (the ReLU drops the evidence against it). ``None`` for a model without a
    convolution (an MLP) or an input that is not an image.

Both are float32 numpy arrays, computed in eval mode; the model comes back as it was (its
train/eval flags and ``requires_grad`` flags, no gradients, no hooks). Comparing the maps of the
original, the retrained and an unlearned model on a forgotten sample shows whether unlearning
changed what the model looks at, or only its final layer.

Example::

    import unlearnkit
    from unlearnkit.saliency import saliency_maps

    data = unlearnkit.load_dataset("digits")
    model = unlearnkit.build_model("cnn", input_shape=(1, 8, 8), num_classes=10)
    maps = saliency_maps(model, data.x[0])      # one sample, shaped (1, 8, 8)
    maps["pred"], maps["saliency"].shape        # (the predicted class, (8, 8))
    maps["gradcam"]                             # an 8 x 8 map, >= 0
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import torch
from captum.attr import LayerAttribution, LayerGradCam, Saliency
from torch import nn

from unlearnkit.exceptions import InvalidParameterError, ModelError
from unlearnkit.models.info import get_info
from unlearnkit.training import eval_mode, model_device, resolve_device

__all__ = ["last_conv_layer", "saliency_agreement", "saliency_maps"]


def last_conv_layer(model: nn.Module) -> nn.Module | None:
    """The last ``nn.Conv2d`` of ``model`` in module order, or ``None`` if it has none (an MLP).

    Module order is the order of ``model.modules()``: the order in which the submodules were
    assigned, which for the built-in architectures is the order of the forward pass.
    """
    last = None
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            last = m
    return last


def _one_sample(model: nn.Module, x: Any) -> torch.Tensor:
    """``x`` as a tensor holding one sample, or an error naming the shape that was expected."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    info = get_info(model)
    expected = info.input_shape if info is not None else None
    shape = tuple(x.shape)
    if expected is not None:
        if shape == expected:
            return x
        if shape[1:] == expected:
            raise InvalidParameterError(
                f"saliency_maps explains one sample: expected x shaped {expected}, got a batch "
                f"shaped {shape}. Pass one sample, e.g. x[0]."
            )
        raise InvalidParameterError(
            f"saliency_maps expected x shaped {expected} (the model's input shape), got {shape}."
        )
    if x.dim() in (1, 3):
        return x
    raise InvalidParameterError(
        "saliency_maps explains one sample: expected x shaped (C, H, W) (an image) or (D,) (a "
        f"flat feature vector), got {shape}"
        + (". For a batch, pass one sample, e.g. x[0]." if x.dim() in (2, 4) else ".")
    )


def _check_target(target: Any, num_outputs: int) -> int:
    try:
        t = operator.index(target)
    except TypeError:
        t = None
    if isinstance(target, bool) or t is None or not 0 <= t < num_outputs:
        raise InvalidParameterError(
            f"The 'target' parameter must be a class index in the range [0, {num_outputs}) "
            f"(the model has {num_outputs} outputs). Got {target!r} instead."
        )
    return t


def saliency_maps(
    model: nn.Module,
    x: torch.Tensor,
    *,
    target: int | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Gradient saliency and Grad-CAM of one input sample, for one class.

    Args:
        model: a classifier returning logits shaped ``(batch, num_classes)``; left unchanged.
        x: one sample, shaped ``(C, H, W)`` or as a flat feature vector ``(D,)`` (the model's
            ``input_shape`` when it carries a :class:`~unlearnkit.models.ModelInfo`), not a
            batch.
        target: the class to explain; by default the model's prediction.
        device: where to evaluate (default: the device of the model's parameters, where the
            model must already be); ``x`` is moved there.

    Returns:
        ``{"pred": int, "target": int, "saliency": np.ndarray, "gradcam": np.ndarray | None}``:
        the model's argmax prediction, the class attributed, the saliency map (``H x W``, or the
        flat input's shape) and the Grad-CAM map (``H x W``, >= 0; ``None`` without a
        ``Conv2d`` or for an input that is not an image), both float32 and finite.

    Raises:
        InvalidParameterError: ``x`` is a batch or not shaped like one sample, or ``target``
            is not a class index of the model.
        ModelError: the model does not return one row of logits per sample.
    """
    x = _one_sample(model, x)
    dev = resolve_device(device) if device is not None else model_device(model)
    if not torch.is_floating_point(x):
        x = x.to(torch.get_default_dtype())
    # A fresh leaf that requires its gradient: captum neither warns that it had to set the flag
    # nor touches the caller's tensor, and with the parameters frozen below the gradients still
    # flow to the input and the conv layer's output.
    inp = x.detach().to(dev).clone().unsqueeze(0).requires_grad_(True)
    is_image = x.dim() == 3
    conv = last_conv_layer(model)

    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)  # attributions need no parameter gradients
        with eval_mode(model):
            with torch.no_grad():
                logits = model(inp)
            if logits.dim() != 2 or logits.shape[0] != 1:
                raise ModelError(
                    "saliency_maps needs a classifier returning logits shaped (batch, "
                    f"num_classes); for one sample it returned {tuple(logits.shape)}."
                )
            pred = int(logits[0].argmax())
            tgt = pred if target is None else _check_target(target, logits.shape[1])

            sal = Saliency(model).attribute(inp, target=tgt, abs=True).detach()[0]
            sal = sal.amax(dim=0) if is_image else sal

            cam = None
            if conv is not None and is_image:
                layer_cam = LayerGradCam(model, conv).attribute(
                    inp, target=tgt, relu_attributions=True
                )
                up = LayerAttribution.interpolate(
                    layer_cam.detach(), tuple(x.shape[-2:]), interpolate_mode="bilinear"
                )
                cam = up[0, 0]
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)

    out_sal = _to_numpy(sal, "saliency")
    out_cam = _to_numpy(cam, "gradcam") if cam is not None else None
    return {"pred": pred, "target": tgt, "saliency": out_sal, "gradcam": out_cam}


def _to_numpy(t: torch.Tensor, name: str) -> np.ndarray:
    a = t.detach().float().cpu().numpy().astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        raise ModelError(
            f"The {name} map holds non-finite values: the model's logits or gradients are not "
            "finite for this input."
        )
    return a


def saliency_agreement(
    model: nn.Module,
    other: nn.Module,
    data: Any,
    *,
    n: int = 16,
    device: str | torch.device | None = None,
) -> float | None:
    """How much two models' saliency maps agree on the first ``n`` samples of ``data``: the
    mean over samples of Spearman's rank correlation between the two gradient saliency maps
    (:func:`saliency_maps`' ``"saliency"``, for the sample's true label, so that both models
    explain the same class).

    1 means the two models rank the input values identically; near 0, unrelated maps. The
    founding report's claim: unlearning changes the maps of forgotten samples and leaves
    those of retained ones. ``None`` where no sample has a map that varies (a constant map has
    no ranks) or ``data`` is empty. Samples whose inputs are not one float tensor are refused
    by :func:`saliency_maps`.
    """
    from scipy.stats import spearmanr

    from unlearnkit.training import iter_batches

    values: list[float] = []
    for x, y in iter_batches(data, max(1, n), shuffle=False):
        for xi, yi in zip(x[:n], y[:n], strict=True):
            a = saliency_maps(model, xi, target=int(yi), device=device)["saliency"].ravel()
            b = saliency_maps(other, xi, target=int(yi), device=device)["saliency"].ravel()
            if np.ptp(a) > 0 and np.ptp(b) > 0:
                values.append(float(spearmanr(a, b).statistic))
        break
    return float(np.mean(values)) if values else None
