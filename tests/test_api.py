"""The Python API in a few verbs: train_model, unlearn, retrain, evaluate."""

from __future__ import annotations

import copy
import doctest

import pytest
import torch

import unlearnkit as uk
from unlearnkit.exceptions import InvalidParameterError, ModelError, UnknownNameError

ACCURACIES = {"retain_acc", "forget_acc", "test_acc"}
CLASS_ONLY = {"test_retain_acc", "test_forget_acc", "probe_forget_acc"}
FORGETTING = {"mia_loss_cv", "mia_entropy", "mia_confidence", "zrf",  # the model alone allows
              "mia_loss_cv_power", "mia_entropy_power", "mia_confidence_power"}


@pytest.fixture(scope="module")
def unlearned(mlp_model, class_split):
    return uk.unlearn(mlp_model, class_split, "perturb", epochs=1, seed=1)


@pytest.fixture(scope="module")
def retrained(mlp_model, class_split):
    return uk.retrain(mlp_model, class_split, epochs=2)


def test_public_names_exist():
    missing = [n for n in uk.__all__ if not hasattr(uk, n)]
    assert not missing
    assert isinstance(uk.__version__, str)


def test_package_docstring_example_runs():
    result = doctest.testmod(uk, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_train_model_records_provenance(mlp_model, digits, tiny_recipe):
    info = uk.get_info(mlp_model)
    assert info.arch == "mlp" and info.arch_kwargs == {"hidden": [32]}
    assert info.num_classes == 10 and info.input_shape == (1, 8, 8)
    assert info.dataset == {"name": "digits", "options": dict(digits.options)}
    assert uk.Recipe.from_dict(info.recipe) == tiny_recipe
    assert info.seed == 0 and 0 < info.seconds < 120
    assert info.method is None and info.split is None
    assert uk.accuracy(mlp_model, digits.test) > 0.8


def test_default_recipe():
    assert uk.default_recipe("resnet18").lr == 0.1
    assert uk.default_recipe("mlp").epochs == 30
    assert uk.default_recipe("someone-elses-net") == uk.Recipe()


@pytest.mark.parametrize("not_a_split", ["class", {"forget": None}, None, (1, 2)])
def test_unlearn_requires_a_split(mlp_model, digits, not_a_split):
    with pytest.raises(InvalidParameterError, match=r"'split' parameter must be a unlearnkit "
                                                    r"Split.*split_by_class"):
        uk.unlearn(mlp_model, not_a_split, "finetune")
    with pytest.raises(InvalidParameterError, match=r"Got DataBundle"):
        uk.unlearn(mlp_model, digits, "finetune")


def test_unlearn_explains_unknown_names(mlp_model, class_split):
    with pytest.raises(UnknownNameError, match=r"Unknown method 'perturbe'. Did you mean "
                                               r"'perturb'\?"):
        uk.unlearn(mlp_model, class_split, "perturbe")
    with pytest.raises(InvalidParameterError, match=r"no parameter 'betta'. Did you mean 'beta'"):
        uk.unlearn(mlp_model, class_split, "perturb", betta=0.5)


def test_unlearn_records_method_split_and_seed(unlearned, mlp_model, class_split):
    info = uk.get_info(unlearned)
    assert info.method == {"name": "perturb",
                           "params": uk.get_method("perturb", epochs=1).params(), "seed": 1}
    assert info.split == class_split.description
    assert info.split["classes"] == [3]
    assert info.recipe == uk.get_info(mlp_model).recipe
    assert uk.get_info(mlp_model).split is None  # the original's record is untouched


def test_unlearn_accepts_a_method_instance(mlp_model, class_split, unlearned):
    m = uk.methods.Perturb(epochs=1)
    out = uk.unlearn(mlp_model, class_split, m, seed=1)
    assert all(torch.equal(a, b) for a, b in
               zip(out.state_dict().values(), unlearned.state_dict().values(), strict=True))
    changed = uk.unlearn(mlp_model, class_split, m, beta=0.2, seed=1)
    assert uk.get_info(changed).method["params"]["beta"] == 0.2
    assert m.beta == 0.7


def test_retrain_api(retrained, mlp_model, class_split):
    info = uk.get_info(retrained)
    assert info.method["name"] == "retrain" and info.method["params"]["epochs"] == 2
    assert info.split == class_split.description
    with pytest.raises(InvalidParameterError, match="no parameter 'epoch'"):
        uk.retrain(mlp_model, class_split, epoch=2)


def test_evaluate_class_scenario(unlearned, class_split):
    scores = uk.evaluate(unlearned, class_split)
    assert set(scores) == ACCURACIES | CLASS_ONLY | FORGETTING | {"seconds"}
    assert scores["retain_acc"] == uk.accuracy(unlearned, class_split.retain)
    assert scores["forget_acc"] == uk.accuracy(unlearned, class_split.forget)
    assert scores["test_acc"] == uk.accuracy(unlearned, class_split.test)
    assert scores["test_forget_acc"] == uk.accuracy(unlearned, class_split.test_forget)
    assert scores["test_retain_acc"] == uk.accuracy(unlearned, class_split.test_retain)
    assert all(0.0 <= scores[k] <= 1.0 for k in ACCURACIES | CLASS_ONLY)
    assert scores["seconds"] == uk.get_info(unlearned).seconds > 0


def test_evaluate_random_scenario(mlp_model, random_split):
    out = uk.unlearn(mlp_model, random_split, "finetune", epochs=1)
    scores = uk.evaluate(out, random_split)
    assert set(scores) == ACCURACIES | FORGETTING | {"seconds"}
    assert not CLASS_ONLY & set(scores)


def test_evaluate_with_retrained(unlearned, retrained, class_split):
    scores = uk.evaluate(unlearned, class_split, retrained=retrained)
    assert set(scores) == ACCURACIES | CLASS_ONLY | FORGETTING | {
        "seconds", "retrain_seconds", "speedup", "js_divergence", "activation_distance",
        "avg_gap", "cka_retrained"}
    assert scores["retrain_seconds"] == uk.get_info(retrained).seconds > 0
    assert scores["speedup"] == pytest.approx(scores["retrain_seconds"] / scores["seconds"])


def test_evaluate_original_has_no_unlearning_time(mlp_model, class_split):
    scores = uk.evaluate(mlp_model, class_split)
    assert scores["seconds"] is None
    assert scores["forget_acc"] > 0.8


def test_evaluate_refuses_nan_model(mlp_model, class_split):
    model = copy.deepcopy(mlp_model)
    with torch.no_grad():
        model.net[1].bias[0] = float("nan")
    with pytest.raises(ModelError, match=r"evaluate.*'net\.1\.bias'"):
        uk.evaluate(model, class_split)
