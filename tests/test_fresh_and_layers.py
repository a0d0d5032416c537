"""Fresh models, frozen parameters, and layers found by data flow.

* ``fresh_copy`` re-draws every trainable tensor (bare parameters and attention projections
  included), keeps frozen ones bit for bit, and says when it had to guess an initialisation;
* ``retrain`` takes the user's own model factory and training function, and records them in
  the model's provenance by name;
* no method changes a frozen parameter, and a model with nothing trainable is refused;
* "the output layer" and "the last k layers" follow the forward pass, not registration order.
"""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
from torch import nn

import unlearnkit as uk
from unlearnkit.exceptions import ModelError, UnsupportedModelError
from unlearnkit.methods._layers import find_head, last_layers
from unlearnkit.methods.fisher_forgetting import FisherForgetting, output_layer
from unlearnkit.models import fresh_copy, load_checkpoint, read_checkpoint_info, save_checkpoint
from unlearnkit.models.graph import forward_order, output_module, sample_input
from zoo import ZOO, MLPHeadFirst, make_model, make_splits

FORGET_CLASS = 3

# the zoo's models are trained with uk.fit, which records no recipe; the methods say so
pytestmark = pytest.mark.filterwarnings("ignore:The original model records no training recipe")


@pytest.fixture(scope="module")
def zoo():
    """``kind -> (trained model, splits)``, each built once."""
    cache: dict[str, tuple] = {}

    def get(kind: str):
        if kind not in cache:
            cache[kind] = (make_model(ZOO[kind]), make_splits(ZOO[kind]))
        return cache[kind]

    return get


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _frozen(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}


def _assert_frozen_kept(out: nn.Module, frozen: dict[str, torch.Tensor], what: str) -> None:
    params = dict(out.named_parameters())
    assert frozen, "the test needs frozen parameters"
    for n, v in frozen.items():
        assert torch.equal(params[n], v), f"{what} changed the frozen {n}"
        assert not params[n].requires_grad, f"{what} unfroze {n}"


# ---------------------------------------------------------------------------- fresh_copy
def test_fresh_copy_redraws_bare_and_attention_parameters_of_the_vit(zoo):
    model, _ = zoo("vit")
    before = _params(model)
    torch.manual_seed(0)
    with pytest.warns(UserWarning) as record:
        new = fresh_copy(model)
    same = [n for n, p in new.named_parameters() if torch.equal(p, before[n])]
    assert same == [], f"not re-drawn: {same}"
    # the two bare parameters were drawn by the fallback, and the one warning says so
    messages = [str(w.message) for w in record if issubclass(w.category, UserWarning)]
    assert len(messages) == 1
    assert "'cls_token'" in messages[0] and "'pos_embed'" in messages[0]
    assert "trunc_normal_(std=0.02)" in messages[0] and "model_factory" in messages[0]
    assert "in_proj_weight" not in messages[0]  # drawn by MultiheadAttention's own init
    for name in ("cls_token", "pos_embed"):
        drawn = new.get_parameter(name).detach()
        assert 0.005 < float(drawn.std()) < 0.04 and float(drawn.abs().max()) <= 2.0
    # the model itself is untouched and the copy runs
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert new(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_fresh_copy_of_hugging_face_uses_its_config(zoo):
    model, splits = zoo("hugging-face")
    before = _params(model)
    torch.manual_seed(0)
    with warnings.catch_warnings():  # Hugging Face's init draws everything: no fallback notice
        warnings.simplefilter("error")
        new = fresh_copy(model)
    assert type(new) is type(model) and new is not model
    same = [n for n, p in new.named_parameters() if torch.equal(p, before[n])]
    assert same == [], f"not re-drawn: {same}"
    assert new.training == model.training
    x = sample_input(splits["class"].test)
    assert uk.models.adapters.forward(new, x).shape == (2, 10)
    # seeded: the same seed gives the same model
    torch.manual_seed(0)
    again = fresh_copy(model)
    assert all(torch.equal(p, q) for p, q in zip(new.parameters(), again.parameters(),
                                                  strict=True))


def test_fresh_copy_of_hugging_face_keeps_frozen_parameters(zoo):
    model, _ = zoo("hugging-face")
    partly = copy.deepcopy(model)
    partly.bert.embeddings.requires_grad_(False)
    frozen = _frozen(partly)
    new = fresh_copy(partly)
    _assert_frozen_kept(new, frozen, "fresh_copy")
    trainable = [n for n, p in new.named_parameters() if p.requires_grad]
    assert trainable and all(
        not torch.equal(new.get_parameter(n), partly.get_parameter(n)) for n in trainable)


def test_fresh_copy_keeps_the_frozen_backbone(zoo):
    model, _ = zoo("frozen-backbone")
    frozen = _frozen(model)
    with warnings.catch_warnings():  # every trainable parameter has an initialiser
        warnings.simplefilter("error")
        new = fresh_copy(model)
    _assert_frozen_kept(new, frozen, "fresh_copy")
    assert not torch.equal(new.head.weight, model.head.weight)
    assert not torch.equal(new.head.bias, model.head.bias)


@pytest.mark.parametrize("kind", ["mlp-batchnorm", "resnet", "text-gru", "frozen-backbone"])
def test_fresh_copy_warns_only_when_the_fallback_draws(kind, zoo):
    model, _ = zoo(kind)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = fresh_copy(model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(not torch.equal(new.get_parameter(n), model.get_parameter(n)) for n in trainable)


def test_fresh_copy_keeps_the_statistics_of_frozen_normalisation():
    """A frozen BatchNorm (and a parameter-free one inside a frozen block) keeps its running
    statistics; a trainable one starts again from zero."""
    model = nn.Sequential(
        nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.BatchNorm1d(6, affine=False)),
        nn.Linear(6, 6), nn.BatchNorm1d(6), nn.Linear(6, 3))
    model[0].requires_grad_(False)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 4) * 3 + 1)
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    new = fresh_copy(model)
    for key in ("0.1.running_mean", "0.1.running_var", "0.2.running_mean", "0.2.running_var"):
        assert torch.equal(new.state_dict()[key], stats[key]), key
    assert torch.equal(new.state_dict()["2.running_mean"], torch.zeros(6))
    assert torch.equal(new.state_dict()["2.running_var"], torch.ones(6))
    _assert_frozen_kept(new, _frozen(model), "fresh_copy")


# ---------------------------------------------------------------------- retrain, the user's way
_CALLS: list[dict] = []


def _factory() -> nn.Module:
    model = MLPHeadFirst()
    model.built_by_factory = True
    return model


def _wrong_factory() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def _train(model: nn.Module, data, *, seed: int, device: torch.device) -> None:
    _CALLS.append({"model": model, "data": data, "seed": seed, "device": device})
    uk.fit(model, data, uk.Recipe(epochs=1, lr=0.01, optimizer="adam", weight_decay=0.0),
           seed=seed, device=device)


def test_retrain_with_a_model_factory_and_a_training_function(zoo, tmp_path):
    model, splits = zoo("mlp-batchnorm")
    split = splits["class"]
    _CALLS.clear()
    out = uk.retrain(model, split, seed=4, model_factory=_factory, train_fn=_train)
    assert getattr(out, "built_by_factory", False)
    assert len(_CALLS) == 1
    call = _CALLS[0]
    assert call["model"] is out and call["data"] is split.retain
    assert call["seed"] == 4 and call["device"] == torch.device("cpu")
    # provenance records the callables by qualified name, as JSON
    params = uk.get_info(out).method["params"]
    assert params["model_factory"] == f"{__name__}:_factory"
    assert params["train_fn"] == f"{__name__}:_train"
    json.dumps(uk.get_info(out).to_dict())
    path = tmp_path / "retrained.safetensors"
    save_checkpoint(out, path)
    info = read_checkpoint_info(path)
    assert info.method["params"]["model_factory"] == f"{__name__}:_factory"
    loaded = load_checkpoint(path, model=MLPHeadFirst())
    assert all(torch.equal(p, q) for p, q in zip(loaded.parameters(), out.parameters(),
                                                  strict=True))
    # the method object itself keeps the callables: it round-trips
    method = uk.get_method("retrain", model_factory=_factory, train_fn=_train)
    assert type(method)(**method.params()) == method
    assert method.params()["model_factory"] is _factory


def test_retrain_checks_the_factory_and_the_training_function(zoo):
    model, splits = zoo("mlp-batchnorm")
    split = splits["class"]
    with pytest.raises(ModelError, match=r"_wrong_factory.*parameters differ.*missing head"):
        uk.retrain(model, split, model_factory=_wrong_factory)
    with pytest.raises(ModelError, match=r"must return a torch\.nn\.Module"):
        uk.retrain(model, split, model_factory=lambda: "a model")
    for key in ("model_factory", "train_fn"):
        with pytest.raises(uk.InvalidParameterError, match=rf"'{key}'.*must be a callable"):
            uk.get_method("retrain", **{key: "module:name"})
    with pytest.raises(uk.InvalidParameterError, match=r"train_fn.*epochs"):
        uk.get_method("retrain", train_fn=_train, epochs=3)


def test_retrain_keeps_a_frozen_backbone_by_default(zoo):
    model, splits = zoo("frozen-backbone")
    frozen = _frozen(model)
    out = uk.retrain(model, splits["class"], epochs=1)
    _assert_frozen_kept(out, frozen, "retrain")
    assert not torch.equal(out.head.weight, model.head.weight)


# ------------------------------------------------------------------ frozen parameters
@pytest.mark.parametrize(("name", "params"), [
    ("perturb", {"epochs": 1}),
    ("cf-k", {"k": 3, "epochs": 1}),
    ("eu-k", {"k": 3, "epochs": 1}),
    ("eu-k", {"k": 2, "epochs": 0}),
])
def test_methods_leave_the_frozen_backbone_bit_for_bit(name, params, zoo):
    model, splits = zoo("frozen-backbone")
    frozen = _frozen(model)
    out = uk.unlearn(model, splits["class"], name, **params)
    _assert_frozen_kept(out, frozen, name)
    assert not torch.equal(out.head.weight, model.head.weight), f"{name} did nothing"


@pytest.mark.parametrize("name", ["cf-k", "eu-k"])
def test_last_k_layers_without_a_trainable_parameter_are_refused(name, zoo):
    model, splits = zoo("frozen-backbone")
    flipped = copy.deepcopy(model)
    flipped.backbone.requires_grad_(True)
    flipped.head.requires_grad_(False)
    with pytest.raises(UnsupportedModelError, match=r"last 1 layers \('head'\).*no trainable"):
        uk.unlearn(flipped, splits["class"], name, k=1)


def test_a_model_with_no_trainable_parameter_is_refused_by_every_method(zoo):
    model, splits = zoo("mlp-batchnorm")
    frozen = copy.deepcopy(model).requires_grad_(False)
    split = splits["class"]
    for name in uk.METHODS.names():
        with pytest.raises(UnsupportedModelError,
                           match=rf"'{name}'.*no trainable parameter.*Unfreeze"):
            uk.get_method(name).unlearn(frozen, forget=split.forget, retain=split.retain,
                                        test=split.test, scenario="class")


# ------------------------------------------------------------------- layers by data flow
def test_output_module_and_last_layers_follow_the_forward_pass(zoo):
    model, splits = zoo("mlp-batchnorm")
    x = sample_input(splits["class"].retain)
    assert next(iter(dict(model.named_children()))) == "head"  # registered first
    assert [n for n, _ in forward_order(model, x)] == ["body.1", "body.2", "head"]
    assert output_module(model, x) == ("head", model.head)
    assert [n for n, _ in last_layers(model, 1, x)] == ["head"]
    assert find_head(model, x) == ("head", model.head)
    assert output_layer(model, 10, x) == ["head.weight", "head.bias"]


def test_output_module_of_hugging_face_is_its_classifier(zoo):
    model, splits = zoo("hugging-face")
    x = sample_input(splits["class"].retain)
    assert output_module(model, x) == ("classifier", model.classifier)
    assert [n for n, _ in last_layers(model, 2, x)] == ["bert.pooler.dense", "classifier"]


def test_forward_order_of_the_vit(zoo):
    """The root's cls_token / pos_embed are used right after the patch embedding; the fused
    encoder layer's sub-layers all count; the head is last."""
    model, _ = zoo("vit")
    order = [n for n, _ in forward_order(model, torch.zeros(2, 1, 8, 8))]
    assert order[:2] == ["patch", ""]
    assert order[-2:] == ["norm", "head"]
    assert {"encoder.self_attn", "encoder.self_attn.out_proj", "encoder.linear1",
            "encoder.linear2", "encoder.norm1", "encoder.norm2"} <= set(order)
    assert len(order) == len({n for n, m in model.named_modules()
                              if list(m.parameters(recurse=False))})
    assert output_module(model, torch.zeros(2, 1, 8, 8)) == ("head", model.head)


class _BareOutput(nn.Module):
    """Logits computed from a bare parameter of the root."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 16))
        self.w_out = nn.Parameter(torch.randn(16, 10))

    def forward(self, x):
        return self.body(x) @ self.w_out


class _Scaled(nn.Module):
    """Logits scaled after the last layer."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    def forward(self, x):
        return self.body(x) / 2.0


@pytest.mark.parametrize(("model", "match"), [
    (_BareOutput(), r"'fisher-forgetting'.*bare parameter 'w_out'"),
    (_Scaled(), r"'fisher-forgetting'.*Tensor\.div after the last layer, 'body\.1'"),
])
def test_logits_that_no_layer_outputs_are_refused(model, match):
    with pytest.raises(UnsupportedModelError, match=match):
        output_module(model, torch.zeros(2, 1, 8, 8), method="fisher-forgetting")


def test_fisher_forgetting_corrects_the_head_registered_first(zoo):
    """MLPHeadFirst registers ``head`` before ``body``: the class correction must still reach
    the forgotten class's row of ``head``."""
    model, splits = zoo("mlp-batchnorm")
    split = splits["class"]
    outs = {flag: FisherForgetting(class_correction=flag).unlearn(
        model, forget=split.forget, retain=split.retain, scenario="class", seed=1)
        for flag in (True, False)}
    on, off = outs[True].head, outs[False].head
    rows = [c for c in range(10) if c != FORGET_CLASS]
    assert not torch.equal(on.weight[FORGET_CLASS], off.weight[FORGET_CLASS])
    assert torch.equal(on.weight[rows], off.weight[rows])
    # the corrected row is drawn around 0 (std sqrt(1e-4 * 10)), far from the trained row
    assert float(on.weight[FORGET_CLASS].detach().abs().max()) < 0.2
    assert float(on.bias[FORGET_CLASS].detach().abs()) < 0.2


def test_cf_k_trains_the_head_registered_first(zoo):
    model, splits = zoo("mlp-batchnorm")
    before = _params(model)
    out = uk.unlearn(model, splits["class"], "cf-k", k=1, epochs=1)
    changed = {n for n, p in out.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"head.weight", "head.bias"}


def test_boundary_expand_widens_the_hugging_face_classifier(zoo):
    model, splits = zoo("hugging-face")
    out = uk.unlearn(model, splits["class"], "boundary-expand", epochs=1, lr=1e-3)
    assert out.classifier.out_features == 10 and out.classifier.weight.shape[0] == 10
    assert not torch.equal(out.classifier.weight, model.classifier.weight)

