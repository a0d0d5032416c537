"""Registries: duplicates refused, misses explained with the nearest name."""

from __future__ import annotations

import pytest

import unlearnkit as uk
from unlearnkit.exceptions import InvalidParameterError, UnknownNameError
from unlearnkit.methods import FineTune, Perturb, Retrain, register_method
from unlearnkit.methods.base import coerce_param
from unlearnkit.registry import Registry, did_you_mean


def test_registry_basics():
    r: Registry[int] = Registry("widget")
    r.register("beta", 2)
    assert r.decorator("alpha")(1) == 1
    assert r.names() == ["alpha", "beta"] == list(r)
    assert r.items() == [("alpha", 1), ("beta", 2)]
    assert len(r) == 2 and "alpha" in r and "gamma" not in r
    assert r.get("beta") == 2


def test_registry_refuses_duplicates():
    r: Registry[int] = Registry("widget")
    r.register("alpha", 1)
    with pytest.raises(ValueError, match="widget named 'alpha' is already registered"):
        r.register("alpha", 2)
    assert r.get("alpha") == 1


def test_registry_miss_names_nearest_and_valid():
    r: Registry[int] = Registry("widget")
    for i, n in enumerate(("sprocket", "gear", "lever")):
        r.register(n, i)
    pattern = r"Unknown widget 'sprokcet'. Did you mean 'sprocket'\? Valid widgets: gear, lever"
    with pytest.raises(UnknownNameError, match=pattern):
        r.get("sprokcet")
    with pytest.raises(KeyError) as info:  # also a KeyError, shown without extra quotes
        r.get("zzzzzz")
    assert str(info.value).startswith("Unknown widget 'zzzzzz'. Valid")
    assert "Did you mean" not in str(info.value)


def test_did_you_mean():
    assert did_you_mean("fisher_mask", ["fisher-mask", "ssd"]) == " Did you mean 'fisher-mask'?"
    assert did_you_mean("xyz", ["fisher-mask", "ssd"]) == ""


@pytest.mark.parametrize(
    ("get", "pattern"),
    [
        (lambda: uk.get_method("finetun"), r"Unknown method 'finetun'. Did you mean 'finetune'"),
        (lambda: uk.METHODS.get("retrian"), r"Did you mean 'retrain'"),
        (lambda: uk.MODELS.get("resnet"), r"Unknown model 'resnet'. Did you mean 'resnet18'"),
        (lambda: uk.load_dataset("digit"), r"Unknown dataset 'digit'. Did you mean 'digits'"),
    ],
)
def test_builtin_registries_explain_misses(get, pattern):
    with pytest.raises(UnknownNameError, match=pattern):
        get()


def test_unknown_parameter_names_nearest():
    with pytest.raises(InvalidParameterError,
                       match=r"'perturb' has no parameter 'bta'. Did you mean 'beta'.*Valid "
                             r"parameters: .*beta"):
        uk.get_method("perturb", bta=0.5)
    with pytest.raises(InvalidParameterError, match=r"no parameter 'epoch'. Did you mean 'epochs'"):
        uk.get_method("finetune", epoch=1)
    with pytest.raises(InvalidParameterError, match=r"'digits' has no option 'test_sise'. Did "
                                                    r"you mean 'test_size'"):
        uk.load_dataset("digits", test_sise=0.3)


def test_duplicate_method_registration_refused():
    before = uk.METHODS.items()
    with pytest.raises(ValueError, match="method named 'finetune' is already registered"):
        register_method(FineTune)
    with pytest.raises(ValueError, match="already registered"):
        uk.METHODS.register("perturb", Perturb)
    assert uk.METHODS.items() == before


def test_register_method_requires_declarations():
    class Nameless(FineTune):
        name = None  # type: ignore[assignment]

    with pytest.raises(TypeError, match="Nameless must declare a string class attribute 'name'"):
        register_method(Nameless)
    assert None not in uk.METHODS


def test_get_method_instances_and_classes():
    m = uk.get_method("perturb", beta=0.3)
    assert isinstance(m, Perturb) and m.beta == 0.3
    assert uk.get_method(m) is m
    m2 = uk.get_method(m, epochs=2)
    assert (m2.beta, m2.epochs, m.epochs) == (0.3, 2, 5)
    assert uk.get_method("retrain") == Retrain()
    with pytest.raises(InvalidParameterError, match=r"'perturb' has no parameter 'bta'. Did you "
                                                    r"mean 'beta'"):
        uk.get_method(m, bta=0.1)


def test_coerce_param_from_command_line_text():
    assert coerce_param(Perturb, "beta", "0.25") == 0.25
    assert coerce_param(Perturb, "epochs", "3") == 3
    assert coerce_param(Perturb, "optimizer", "adam") == "adam"
    assert coerce_param(Retrain, "epochs", "none") is None
    with pytest.raises(InvalidParameterError, match=r"'epochs' parameter of 'perturb' must be an "
                                                    r"int. Got '1.5'"):
        coerce_param(Perturb, "epochs", "1.5")
    with pytest.raises(InvalidParameterError, match=r"no parameter 'bta'. Did you mean 'beta'"):
        coerce_param(Perturb, "bta", "1")
    with pytest.raises(InvalidParameterError, match="must be an int"):
        coerce_param(Perturb, "epochs", "none")  # None is not a valid epochs for perturb
