"""Checkpoints: safetensors + JSON metadata, rebuilt from the file alone, refused when broken."""

from __future__ import annotations

import copy
import json
import os

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import unlearnkit as uk
from unlearnkit.exceptions import CheckpointError, ModelError


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with uk.training.eval_mode(model), torch.no_grad():
        return model(x)


def _assert_same(a: nn.Module, b: nn.Module, x: torch.Tensor) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k
    assert torch.equal(_outputs(a, x), _outputs(b, x))


def _with_history(model: nn.Module) -> nn.Module:
    info = uk.get_info(model)
    return uk.models.set_info(model, info.replace(
        dataset={"name": "digits", "options": {"test_size": 0.2, "split_seed": 0}},
        recipe=uk.Recipe(epochs=3).to_dict(), seconds=1.25, seed=7,
        split={"scenario": "class", "classes": [3]},
        method={"name": "perturb", "params": {"beta": 0.5}, "seed": 1}))


def test_round_trip_trained_mlp(mlp_model, digits, tmp_path):
    path = uk.save_checkpoint(mlp_model, tmp_path / "mlp.safetensors")
    assert path == tmp_path / "mlp.safetensors" and path.is_file()
    back = uk.load_checkpoint(path)
    assert type(back) is type(mlp_model) and back is not mlp_model
    _assert_same(back, mlp_model, digits.test.x)
    assert uk.get_info(back) == uk.get_info(mlp_model)
    assert uk.get_info(back).recipe["epochs"] == 4
    assert uk.accuracy(back, digits.test) == uk.accuracy(mlp_model, digits.test)
    assert uk.models.read_checkpoint_info(path) == uk.get_info(mlp_model)


def test_round_trip_cnn(digits, tmp_path):
    torch.manual_seed(0)
    model = _with_history(uk.build_model("cnn", num_classes=10, input_shape=(1, 8, 8),
                                         channels=(4, 8), hidden=16))
    back = uk.load_checkpoint(uk.save_checkpoint(model, tmp_path / "cnn.safetensors"))
    assert isinstance(back, uk.models.CNN)
    _assert_same(back, model, digits.test.x[:50])
    assert uk.get_info(back) == uk.get_info(model)


def test_round_trip_narrow_resnet(tmp_path):
    torch.manual_seed(0)
    model = _with_history(uk.build_model("resnet18", num_classes=5, input_shape=(3, 16, 16),
                                         width=0.125))
    x = torch.randn(8, 3, 16, 16)
    with torch.no_grad():
        model(x)  # train-mode pass: BatchNorm running statistics move off their defaults
    assert int(model.bn1.num_batches_tracked) == 1
    back = uk.load_checkpoint(uk.save_checkpoint(model, tmp_path / "r.safetensors"))
    assert isinstance(back, uk.models.ResNet18)
    _assert_same(back, model, x)
    assert uk.get_info(back) == uk.get_info(model)
    assert uk.get_info(back).arch_kwargs == {"width": 0.125}


def test_users_own_module(tmp_path):
    torch.manual_seed(0)
    mine = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    path = uk.save_checkpoint(mine, tmp_path / "mine.safetensors")
    with pytest.raises(CheckpointError, match=r"registered architecture.*model=MyNet\(\)"):
        uk.load_checkpoint(path)
    template = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    back = uk.load_checkpoint(path, model=template)
    assert back is template
    _assert_same(back, mine, torch.randn(3, 1, 8, 8))
    assert uk.get_info(back).arch is None


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"not found.*nope\.safetensors"):
        uk.load_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        uk.models.read_checkpoint_info(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "tail-cut"])
def test_corrupt_file(mlp_model, tmp_path, damage):
    good = uk.save_checkpoint(mlp_model, tmp_path / "good.safetensors").read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes({
        "truncated": good[: len(good) // 2],
        "garbage": os.urandom(64) + b"\xff" * 200,
        "empty": b"",
        "tail-cut": good[:-4],
    }[damage])
    with pytest.raises(CheckpointError, match=r"bad\.safetensors.*(corrupt|truncated)"):
        uk.load_checkpoint(bad)


def test_unreadable_metadata(tmp_path):
    path = tmp_path / "meta.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"unlearnkit": "{not json"})
    with pytest.raises(CheckpointError, match="unreadable unlearnkit metadata"):
        uk.load_checkpoint(path)


def test_unregistered_architecture(tmp_path):
    path = tmp_path / "vit.safetensors"
    meta = uk.ModelInfo(arch="vit", num_classes=10, input_shape=(3, 32, 32)).to_dict()
    save_file({"w": torch.zeros(2)}, str(path), metadata={"unlearnkit": json.dumps(meta)})
    with pytest.raises(CheckpointError, match=r"architecture 'vit'.*not registered.*cnn"):
        uk.load_checkpoint(path)


def test_wrong_architecture(mlp_model, tmp_path):
    path = uk.save_checkpoint(mlp_model, tmp_path / "mlp.safetensors")
    cnn = uk.build_model("cnn", num_classes=10, input_shape=(1, 8, 8), channels=(4, 8), hidden=16)
    before = copy.deepcopy(cnn.state_dict())
    with pytest.raises(CheckpointError, match=r"does not match.*missing.*unexpected"):
        uk.load_checkpoint(path, model=cnn)
    assert all(torch.equal(cnn.state_dict()[k], v) for k, v in before.items())


def test_mismatched_shapes(mlp_model, tmp_path):
    path = uk.save_checkpoint(mlp_model, tmp_path / "mlp.safetensors")
    narrower = uk.build_model("mlp", num_classes=10, input_shape=(1, 8, 8), hidden=(16,))
    before = copy.deepcopy(narrower.state_dict())
    pattern = r"shape mismatch.*net\.1\.weight.*\(32, 64\).*\(16, 64\)"
    with pytest.raises(CheckpointError, match=pattern):
        uk.load_checkpoint(path, model=narrower)
    assert all(torch.equal(narrower.state_dict()[k], v) for k, v in before.items())


def test_nan_weights_refused_on_save(mlp_model, tmp_path):
    model = copy.deepcopy(mlp_model)
    with torch.no_grad():
        model.net[3].bias[2] = float("inf")
    with pytest.raises(ModelError, match=r"'net\.3\.bias'.*1 of 10"):
        uk.save_checkpoint(model, tmp_path / "nan.safetensors")
    assert not (tmp_path / "nan.safetensors").exists()


def test_nan_weights_refused_on_load(mlp_model, tmp_path):
    state = {k: v.clone() for k, v in mlp_model.state_dict().items()}
    state["net.1.weight"][0, 0] = float("nan")
    path = tmp_path / "nan.safetensors"
    meta = json.dumps(uk.get_info(mlp_model).to_dict())
    save_file(state, str(path), metadata={"unlearnkit": meta})
    with pytest.raises(ModelError, match=r"nan\.safetensors.*non-finite.*'net\.1\.weight'"):
        uk.load_checkpoint(path)
    # a template given by the user is not half-modified by a refused load
    template = copy.deepcopy(mlp_model)
    with pytest.raises(ModelError):
        uk.load_checkpoint(path, model=template)
    assert torch.isfinite(template.net[1].weight).all()
    assert torch.equal(template.net[1].weight, mlp_model.net[1].weight)
    # asked for explicitly, it loads
    loaded = uk.load_checkpoint(path, allow_nonfinite=True)
    assert torch.isnan(loaded.net[1].weight[0, 0])


def _boom(tensors, filename, metadata=None):
    with open(filename, "wb") as f:
        f.write(b"partial")
    raise OSError("disk full")


def test_atomic_write_leaves_nothing_on_failure(mlp_model, tmp_path, monkeypatch):
    monkeypatch.setattr("unlearnkit.models.checkpoint.save_file", _boom)
    with pytest.raises(OSError, match="disk full"):
        uk.save_checkpoint(mlp_model, tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_previous_file_on_failure(mlp_model, tmp_path, monkeypatch):
    path = uk.save_checkpoint(mlp_model, tmp_path / "m.safetensors")
    good = path.read_bytes()
    monkeypatch.setattr("unlearnkit.models.checkpoint.save_file", _boom)
    with pytest.raises(OSError):
        uk.save_checkpoint(mlp_model, path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_save_creates_folders_and_leaves_no_temp_files(mlp_model, tmp_path):
    path = uk.save_checkpoint(mlp_model, tmp_path / "a" / "b" / "m.safetensors")
    assert [p.name for p in path.parent.iterdir()] == ["m.safetensors"]
    # overwriting in place also leaves one file
    uk.save_checkpoint(mlp_model, path)
    assert [p.name for p in path.parent.iterdir()] == ["m.safetensors"]


def test_model_info_dict_round_trip(mlp_model):
    info = uk.get_info(mlp_model)
    d = json.loads(json.dumps(info.to_dict()))
    assert d["format_version"] == 1
    assert uk.ModelInfo.from_dict(d) == info
    # fields written by a newer version are ignored, not fatal
    assert uk.ModelInfo.from_dict({**d, "added_later": 1}) == info
