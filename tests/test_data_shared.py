"""Integration tests on the offline copies of real datasets in ``../shared/data``.

That folder sits beside the repository on the machines this project is built on; a fresh clone
has none, and these tests then skip with the reason. Decoding all 60,000 CIFAR-10 JPEGs takes
about half a minute on a small machine, so by default the CIFAR test loads a small archive made
from members of the real one; set ``UNLEARNKIT_FULL_DATA_TESTS=1`` to also run the full load.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import unlearnkit as uk
from unlearnkit.data import imagefolder as imagefolder_module
from unlearnkit.data.cifar import CIFAR10_CLASSES

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MNIST_NPZ = SHARED_DATA / "mnist.npz"
CIFAR_JPEG = SHARED_DATA / "cifar10-jpeg.tar.gz"

pytestmark = pytest.mark.shared_data


def need(path: Path) -> None:
    if not path.is_file():
        pytest.skip(f"{path} is absent: the offline dataset copies in ../shared/data are not here")


def test_mnist_npz_counts():
    need(MNIST_NPZ)
    bundle = uk.load_dataset("mnist", root=MNIST_NPZ)
    assert len(bundle.train) == 60000 and len(bundle.test) == 10000
    assert bundle.input_shape == (1, 28, 28) and bundle.class_names == tuple("0123456789")
    train_counts = np.bincount(bundle.train.y.numpy(), minlength=10).tolist()
    assert train_counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    test_counts = np.bincount(bundle.test.y.numpy(), minlength=10).tolist()
    assert test_counts == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    x = bundle.train.x
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    # Pixels are k/255 exactly.
    sample = (x[:100] * 255).numpy()
    np.testing.assert_allclose(sample, np.round(sample), atol=1e-4)


PER_CLASS = 3


@pytest.fixture(scope="module")
def small_cifar(tmp_path_factory) -> tuple[Path, dict[str, list[tuple[str, bytes]]]]:
    """A .tar.gz of the first PER_CLASS images of every class and split of the real archive."""
    need(CIFAR_JPEG)
    picked: dict[str, list[tuple[str, bytes]]] = {}
    out = tmp_path_factory.mktemp("cifar-small") / "cifar10-small.tar.gz"
    with tarfile.open(CIFAR_JPEG, "r|gz") as src, tarfile.open(out, "w:gz") as dst:
        for member in src:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3:
                continue
            group = picked.setdefault(f"{parts[0]}/{parts[1]}", [])
            if len(group) >= PER_CLASS:
                continue
            data = src.extractfile(member).read()
            group.append((parts[2], data))
            info = tarfile.TarInfo(member.name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    return out, picked


def test_cifar10_jpeg_archive_sample(small_cifar, monkeypatch):
    archive, picked = small_cifar
    assert len(picked) == 20
    bundle = uk.load_dataset("cifar10", root=archive)
    assert bundle.class_names == CIFAR10_CLASSES
    assert bundle.train.x.shape == (10 * PER_CLASS, 3, 32, 32)
    assert bundle.test.x.shape == (10 * PER_CLASS, 3, 32, 32)
    np.testing.assert_array_equal(bundle.train.y.numpy(), np.repeat(np.arange(10), PER_CLASS))
    for split in ("train", "test"):
        data = getattr(bundle, split)
        for label, cls in enumerate(CIFAR10_CLASSES):
            for i, (name, raw) in enumerate(sorted(picked[f"{split}/{cls}"])):
                with Image.open(io.BytesIO(raw)) as im:
                    ref = np.asarray(im.convert("RGB")).transpose(2, 0, 1) / np.float32(255)
                np.testing.assert_array_equal(data.x[label * PER_CLASS + i].numpy(), ref, name)

    def no_decoding(*args, **kwargs):
        raise AssertionError("the second load must come from the cache")

    monkeypatch.setattr(imagefolder_module, "decode_image", no_decoding)
    again = uk.load_dataset("cifar10", root=archive)
    np.testing.assert_array_equal(again.train.x.numpy(), bundle.train.x.numpy())


@pytest.mark.slow
def test_cifar10_jpeg_full_load():
    need(CIFAR_JPEG)
    bundle = uk.load_dataset("cifar10", root=CIFAR_JPEG)
    again = uk.load_dataset("cifar10", root=CIFAR_JPEG)  # from the decoded-image cache
    assert len(bundle.train) == 50000 and len(bundle.test) == 10000
    assert np.bincount(bundle.train.y.numpy()).tolist() == [5000] * 10
    assert np.bincount(bundle.test.y.numpy()).tolist() == [1000] * 10
    np.testing.assert_array_equal(again.test.x[:100].numpy(), bundle.test.x[:100].numpy())
