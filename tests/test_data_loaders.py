"""Dataset loaders on small synthetic files in every supported format.

Each test writes its files in ``tmp_path`` (IDX gzipped and raw, .npz, CIFAR python batches,
image folders and their archives), loads them through the public registry and checks the exact
contents, shapes, labels and class names.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import unlearnkit as uk
from unlearnkit.data import imagefolder as imagefolder_module
from unlearnkit.data.archives import safe_extract
from unlearnkit.data.cache import cache_dir
from unlearnkit.data.cifar import CIFAR10_CLASSES
from unlearnkit.data.idx import read_idx, write_idx
from unlearnkit.data.safe_pickle import safe_loads
from unlearnkit.exceptions import DataError, InvalidParameterError

IDX_NAMES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


# --------------------------------------------------------------------------- helpers


def small_mnist(seed: int = 0, n_train: int = 30, n_test: int = 10) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": (np.arange(n_train) % 10).astype(np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }


def write_mnist_idx(folder: Path, arrays: dict[str, np.ndarray], *, gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for key, stem in IDX_NAMES.items():
        write_idx(folder / (stem + (".gz" if gz else "")), arrays[key])
    return folder


def check_mnist(bundle: uk.DataBundle, arrays: dict[str, np.ndarray]) -> None:
    for part in ("train", "test"):
        data = getattr(bundle, part)
        x = arrays[f"x_{part}"]
        assert data.x.shape == (len(x), 1, 28, 28)
        assert data.x.dtype == torch.float32 and data.y.dtype == torch.int64
        np.testing.assert_array_equal(data.x.numpy()[:, 0], x.astype(np.float32) / 255)
        np.testing.assert_array_equal(data.y.numpy(), arrays[f"y_{part}"].astype(np.int64))


def cifar_arrays(n: int, num_classes: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), [i % num_classes for i in range(n)]


def write_cifar10(folder: Path, *, per_batch: int = 4, protocol: int = 2, bytes_keys: bool = True):
    """The official cifar-10-batches-py layout (dict keys as bytes, like Python 2 pickles)."""
    folder.mkdir(parents=True, exist_ok=True)

    def key(k: str):
        return k.encode() if bytes_keys else k

    xs, ys = [], []
    names = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"]
    for i, name in enumerate([*names, "test_batch"]):
        data, labels = cifar_arrays(per_batch, 10, seed=i)
        batch = {
            key("batch_label"): key(f"batch {i}"),
            key("labels"): labels,
            key("data"): data,
            key("filenames"): [key(f"img_{i}_{j}.png") for j in range(per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        xs.append(data)
        ys.append(labels)
    meta = {
        key("label_names"): [key(c) for c in CIFAR10_CLASSES],
        key("num_cases_per_batch"): per_batch,
        key("num_vis"): 3072,
    }
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return np.concatenate(xs[:5]), np.concatenate(ys[:5]), xs[5], np.asarray(ys[5])


def write_cifar100(folder: Path, n_train: int = 12, n_test: int = 6) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, (name, n) in enumerate((("train", n_train), ("test", n_test))):
        data, fine = cifar_arrays(n, 100, seed=10 + i)
        fine = [(7 * j + i) % 100 for j in range(n)]
        coarse = [f % 20 for f in fine]
        batch = {b"data": data, b"fine_labels": fine, b"coarse_labels": coarse, b"filenames": []}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        out[name] = (data, np.asarray(fine), np.asarray(coarse))
    meta = {
        b"fine_label_names": [f"fine{j:02d}".encode() for j in range(100)],
        b"coarse_label_names": [f"coarse{j:02d}".encode() for j in range(20)],
    }
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return out


def make_tar(source: Path, dest: Path, arcname: str | None = None) -> Path:
    with tarfile.open(dest, "w:gz") as tf:
        for child in sorted(source.iterdir()):
            tf.add(child, arcname=f"{arcname}/{child.name}" if arcname else child.name)
    return dest


def write_image_tree(
    root: Path, classes=("cat", "dog", "emu"), per_class=(3, 2), size=(6, 5), mode="RGB", ext="png"
) -> dict[str, list[tuple[str, np.ndarray]]]:
    """``root/{train,test}/<class>/<i>.<ext>`` with random pixels; returns what was written."""
    rng = np.random.default_rng(0)
    h, w = size
    written: dict[str, list[tuple[str, np.ndarray]]] = {"train": [], "test": []}
    for split, n in zip(("train", "test"), per_class, strict=True):
        for cls in classes:
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                shape = (h, w, 3) if mode == "RGB" else (h, w)
                arr = rng.integers(0, 256, shape, dtype=np.uint8)
                Image.fromarray(arr, mode=mode).save(root / split / cls / f"{i:03d}.{ext}")
                written[split].append((cls, arr))
    return written


# --------------------------------------------------------------------------- IDX / MNIST


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "raw"])
def test_mnist_idx(tmp_path, gz):
    arrays = small_mnist()
    write_mnist_idx(tmp_path, arrays, gz=gz)
    bundle = uk.load_dataset("mnist", root=tmp_path)
    check_mnist(bundle, arrays)
    assert bundle.name == "mnist"
    assert bundle.class_names == tuple("0123456789")
    assert bundle.input_shape == (1, 28, 28)
    assert bundle.options == {}


def test_fashion_mnist_torchvision_layout(tmp_path):
    arrays = small_mnist(seed=1)
    write_mnist_idx(tmp_path / "FashionMNIST" / "raw", arrays)
    bundle = uk.load_dataset("fashion-mnist", root=tmp_path)
    check_mnist(bundle, arrays)
    assert bundle.class_names == (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    )  # fmt: skip


def test_read_idx_round_trip_and_types(tmp_path):
    arr = np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 5
    write_idx(tmp_path / "a.idx", arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), arr)
    with pytest.raises(DataError, match="holds >i4 values, expected uint8"):
        read_idx(tmp_path / "a.idx", dtype=np.uint8)
    with pytest.raises(DataError, match="has 3 dimensions, expected 1"):
        read_idx(tmp_path / "a.idx", ndim=1)


def test_idx_bad_magic(tmp_path):
    arrays = small_mnist()
    write_mnist_idx(tmp_path, arrays)
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    raw = bytearray(gzip.decompress(bad.read_bytes()))
    raw[0:4] = b"\x12\x34\x08\x03"
    bad.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(
        DataError, match=r"magic number 0x12340803.*train-images|train-images.*magic"
    ):
        uk.load_dataset("mnist", root=tmp_path)


def test_idx_truncated(tmp_path):
    arrays = small_mnist()
    write_mnist_idx(tmp_path, arrays, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"announces shape \(10, 28, 28\).*truncated"):
        uk.load_dataset("mnist", root=tmp_path)


def test_idx_corrupt_gzip(tmp_path):
    write_mnist_idx(tmp_path, small_mnist())
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:12])
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz"):
        uk.load_dataset("mnist", root=tmp_path)


def test_idx_count_mismatch(tmp_path):
    arrays = small_mnist()
    arrays["y_train"] = arrays["y_train"][:-1]
    write_mnist_idx(tmp_path, arrays)
    with pytest.raises(
        DataError, match=r"holds 30 images but train-labels-idx1-ubyte\.gz holds 29"
    ):
        uk.load_dataset("mnist", root=tmp_path)


def test_idx_label_out_of_range(tmp_path):
    arrays = small_mnist()
    arrays["y_test"][3] = 10
    write_mnist_idx(tmp_path, arrays)
    with pytest.raises(DataError, match=r"labels must lie in \[0, 10\); got \[0, 10\]"):
        uk.load_dataset("mnist", root=tmp_path)


def test_mnist_missing_names_files_and_download(tmp_path):
    with pytest.raises(DataError) as err:
        uk.load_dataset("mnist", root=tmp_path / "nothing-here")
    msg = str(err.value)
    for stem in IDX_NAMES.values():
        assert f"{stem}.gz" in msg
    assert "nothing-here" in msg and "download=True" in msg and "--download" in msg
    assert not (tmp_path / "nothing-here").exists()


# --------------------------------------------------------------------------- npz


@pytest.mark.parametrize("layout", ["nhwc", "nhw", "nchw"])
def test_mnist_npz_file_as_root(tmp_path, layout):
    arrays = small_mnist(seed=2)
    stored = dict(arrays)
    for k in ("x_train", "x_test"):
        stored[k] = {
            "nhwc": arrays[k][..., None],
            "nhw": arrays[k],
            "nchw": arrays[k][:, None],
        }[layout]
        stored[k.replace("x", "y")] = arrays[k.replace("x", "y")].astype(np.int64)
    np.savez(tmp_path / "digits.npz", **stored)
    bundle = uk.load_dataset("mnist", root=tmp_path / "digits.npz")
    check_mnist(bundle, arrays)
    assert bundle.class_names == tuple("0123456789")


def test_npz_in_folder_with_class_names(tmp_path):
    arrays = small_mnist(seed=3)
    names = np.asarray(["zero", "one", "two", "three", "four", "5", "6", "7", "8", "nine"])
    np.savez(tmp_path / "fashion-mnist.npz", class_names=names, **arrays)
    bundle = uk.load_dataset("fashion-mnist", root=tmp_path)
    check_mnist(bundle, arrays)
    assert bundle.class_names == tuple(names.tolist())


def test_npz_missing_keys(tmp_path):
    np.savez(tmp_path / "m.npz", x_train=np.zeros((2, 28, 28), np.uint8), y_train=np.zeros(2))
    with pytest.raises(
        DataError, match=r"lacks the arrays x_test, y_test.*Found: x_train, y_train"
    ):
        uk.load_dataset("mnist", root=tmp_path / "m.npz")


def test_npz_not_a_zip(tmp_path):
    (tmp_path / "m.npz").write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match=r"Could not read .*m\.npz"):
        uk.load_dataset("mnist", root=tmp_path / "m.npz")


def test_npz_with_pickled_object_is_refused(tmp_path):
    arrays = small_mnist()
    np.savez(tmp_path / "m.npz", class_names=np.asarray([object()] * 10), **arrays)
    with pytest.raises(DataError, match=r"m\.npz"):
        uk.load_dataset("mnist", root=tmp_path / "m.npz")


# --------------------------------------------------------------------------- CIFAR python batches


def check_cifar10(bundle, expected):
    x_tr, y_tr, x_te, y_te = expected
    assert bundle.name == "cifar10"
    assert bundle.class_names == CIFAR10_CLASSES
    assert bundle.train.x.shape == (len(x_tr), 3, 32, 32)
    assert bundle.test.x.shape == (len(x_te), 3, 32, 32)
    np.testing.assert_array_equal(
        bundle.train.x.numpy(), x_tr.reshape(-1, 3, 32, 32).astype(np.float32) / 255
    )
    np.testing.assert_array_equal(bundle.train.y.numpy(), y_tr)
    np.testing.assert_array_equal(bundle.test.x.numpy().reshape(len(x_te), -1) * 255, x_te)
    np.testing.assert_array_equal(bundle.test.y.numpy(), y_te)


@pytest.mark.parametrize(
    ("protocol", "bytes_keys"), [(2, True), (4, False), (5, False)], ids=["py2-like", "p4", "p5"]
)
def test_cifar10_batches(tmp_path, protocol, bytes_keys):
    expected = write_cifar10(
        tmp_path / "cifar-10-batches-py", protocol=protocol, bytes_keys=bytes_keys
    )
    check_cifar10(uk.load_dataset("cifar10", root=tmp_path), expected)


def test_cifar10_batches_folder_as_root_and_numpy1_pickles(tmp_path):
    expected = write_cifar10(tmp_path)
    for name in ("data_batch_1", "test_batch"):  # as numpy 1.x writes them
        path = tmp_path / name
        path.write_bytes(
            path.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        )
        assert b"numpy.core.multiarray" in path.read_bytes()
    check_cifar10(uk.load_dataset("cifar10", root=tmp_path), expected)


def test_cifar10_official_archive_as_root_and_in_root(tmp_path):
    src = tmp_path / "src"
    expected = write_cifar10(src / "cifar-10-batches-py")
    archive = make_tar(src, tmp_path / "cifar-10-python.tar.gz")
    check_cifar10(uk.load_dataset("cifar10", root=archive), expected)
    # An archive placed in the root is extracted there on first use.
    root = tmp_path / "root"
    root.mkdir()
    archive.rename(root / "cifar-10-python.tar.gz")
    check_cifar10(uk.load_dataset("cifar10", root=root), expected)
    assert (root / "cifar-10-batches-py" / "data_batch_5").is_file()


def test_cifar10_missing_batch_named(tmp_path):
    write_cifar10(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError) as err:
        uk.load_dataset("cifar10", root=tmp_path)
    msg = str(err.value)
    assert "data_batch_3" in msg and "cifar-10-python.tar.gz" in msg and "download=True" in msg
    assert "data_batch_2" not in msg


def test_cifar10_malformed_batch(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    (folder / "test_batch").write_bytes(pickle.dumps({"data": np.zeros((2, 10), np.uint8)}))
    with pytest.raises(DataError, match="test_batch lacks 'data' or 'labels'"):
        uk.load_dataset("cifar10", root=tmp_path)
    (folder / "test_batch").write_bytes(
        pickle.dumps({"data": np.zeros((2, 10), np.uint8), "labels": [0, 1]})
    )
    with pytest.raises(DataError, match=r"'data' must be a uint8 array shaped \(N, 3072\)"):
        uk.load_dataset("cifar10", root=tmp_path)
    (folder / "test_batch").write_bytes(b"\x80\x02}q\x00(")
    with pytest.raises(DataError, match="Could not unpickle test_batch"):
        uk.load_dataset("cifar10", root=tmp_path)


@pytest.mark.parametrize("labels", ["fine", "coarse"])
def test_cifar100(tmp_path, labels):
    written = write_cifar100(tmp_path / "cifar-100-python")
    bundle = uk.load_dataset("cifar100", root=tmp_path, labels=labels)
    column = 1 if labels == "fine" else 2
    n_classes = 100 if labels == "fine" else 20
    assert bundle.num_classes == n_classes
    assert bundle.class_names[3] == (f"{labels}03")
    assert bundle.options == {"labels": labels}
    for part, key in (("train", "train"), ("test", "test")):
        data = getattr(bundle, part)
        np.testing.assert_array_equal(data.y.numpy(), written[key][column])
        np.testing.assert_array_equal(
            data.x.numpy(), written[key][0].reshape(-1, 3, 32, 32).astype(np.float32) / 255
        )
    rebuilt = uk.load_dataset("cifar100", root=tmp_path, **bundle.options)
    np.testing.assert_array_equal(rebuilt.train.y.numpy(), bundle.train.y.numpy())


def test_cifar100_bad_labels_option(tmp_path):
    with pytest.raises(InvalidParameterError, match=r"'labels' option of 'cifar100'.*'medium'"):
        uk.load_dataset("cifar100", root=tmp_path, labels="medium")


# --------------------------------------------------------------------------- restricted unpickler


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    payload = {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 4, b"x": _RunsCode(marker)}
    (folder / "data_batch_2").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DataError, match=r"Refusing to unpickle the global (posix|os|nt)\.system"):
        uk.load_dataset("cifar10", root=tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        b"cbuiltins\neval\n(S'1+1'\ntR.",  # eval via protocol 0 GLOBAL + REDUCE
        b"cbuiltins\ngetattr\n(cbuiltins\nobject\nS'__subclasses__'\ntR.",
        b"c__builtin__\nexec\n(S'x=1'\ntR.",
        b"csubprocess\ncheck_output\n((S'true'\nltR.",
        b"cnumpy\nload\n(S'x'\ntR.",
    ],
    ids=["eval", "getattr", "py2-exec", "subprocess", "numpy-load"],
)
def test_forbidden_globals(payload):
    with pytest.raises(DataError, match="Refusing to unpickle the global"):
        safe_loads(payload)


def test_persistent_id_refused():
    with pytest.raises(DataError, match="persistent"):
        safe_loads(b"P1\n.")


# --------------------------------------------------------------------------- image folders


def test_imagefolder_png(tmp_path):
    written = write_image_tree(tmp_path)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / "dog" / ".hidden.png").write_bytes(b"junk")
    bundle = uk.load_dataset("imagefolder", root=tmp_path)
    assert bundle.class_names == ("cat", "dog", "emu")
    assert bundle.train.x.shape == (9, 3, 6, 5) and bundle.test.x.shape == (6, 3, 6, 5)
    for part in ("train", "test"):
        data = getattr(bundle, part)
        expected_x = np.stack([a for _, a in written[part]]).transpose(0, 3, 1, 2)
        np.testing.assert_array_equal(data.x.numpy(), expected_x.astype(np.float32) / 255)
        expected_y = [bundle.class_names.index(c) for c, _ in written[part]]
        np.testing.assert_array_equal(data.y.numpy(), expected_y)
    assert bundle.options == {"image_size": None, "grayscale": False}


def test_imagefolder_grayscale_resize_and_rebuild(tmp_path):
    write_image_tree(tmp_path, mode="L", size=(8, 8), per_class=(2, 1))
    bundle = uk.load_dataset("imagefolder", root=tmp_path, grayscale=True, image_size=(4, 6))
    assert bundle.train.x.shape == (6, 1, 4, 6)
    assert bundle.options == {"image_size": [4, 6], "grayscale": True}
    again = uk.load_dataset("imagefolder", root=tmp_path, **bundle.options)
    np.testing.assert_array_equal(again.train.x.numpy(), bundle.train.x.numpy())
    rgb = uk.load_dataset("imagefolder", root=tmp_path, image_size=4)
    assert rgb.train.x.shape == (6, 3, 4, 4)
    # A gray image in RGB has three equal channels.
    np.testing.assert_array_equal(rgb.train.x[:, 0].numpy(), rgb.train.x[:, 2].numpy())


def test_imagefolder_jpeg_matches_pillow(tmp_path):
    write_image_tree(tmp_path, ext="jpg", size=(16, 16), per_class=(2, 1))
    bundle = uk.load_dataset("imagefolder", root=tmp_path)
    with Image.open(tmp_path / "train" / "dog" / "001.jpg") as im:
        ref = np.asarray(im.convert("RGB")).transpose(2, 0, 1).astype(np.float32) / 255
    np.testing.assert_array_equal(bundle.train.x[3].numpy(), ref)  # dog's second image


@pytest.mark.parametrize("wrapped", [False, True], ids=["top-level", "in-one-folder"])
def test_imagefolder_archive_equals_folder(tmp_path, wrapped):
    tree = tmp_path / "tree"
    write_image_tree(tree)
    archive = make_tar(tree, tmp_path / "tree.tar.gz", arcname="mydata" if wrapped else None)
    from_folder = uk.load_dataset("imagefolder", root=tree, cache=False)
    from_archive = uk.load_dataset("imagefolder", root=archive, cache=False)
    assert from_archive.class_names == from_folder.class_names
    np.testing.assert_array_equal(from_archive.train.x.numpy(), from_folder.train.x.numpy())
    np.testing.assert_array_equal(from_archive.test.y.numpy(), from_folder.test.y.numpy())


def test_imagefolder_class_mismatch(tmp_path):
    write_image_tree(tmp_path)
    (tmp_path / "test" / "emu").rename(tmp_path / "test" / "owl")
    with pytest.raises(DataError, match=r"only in train/: \['emu'\]; only in test/: \['owl'\]"):
        uk.load_dataset("imagefolder", root=tmp_path)


def test_imagefolder_empty_class_and_missing_split(tmp_path):
    write_image_tree(tmp_path)
    (tmp_path / "train" / "yak").mkdir()
    (tmp_path / "test" / "yak").mkdir()
    with pytest.raises(DataError, match="train/yak/ hold no images"):
        uk.load_dataset("imagefolder", root=tmp_path)
    other = tmp_path / "other"
    (other / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="has no test/ folder"):
        uk.load_dataset("imagefolder", root=other)


def test_imagefolder_sizes_differ(tmp_path):
    write_image_tree(tmp_path)
    Image.new("RGB", (9, 9)).save(tmp_path / "test" / "dog" / "big.png")
    with pytest.raises(DataError, match=r"differ in size.*big.png is 9x9.*image_size"):
        uk.load_dataset("imagefolder", root=tmp_path)
    bundle = uk.load_dataset("imagefolder", root=tmp_path, image_size=(6, 5))
    assert bundle.test.x.shape == (7, 3, 6, 5)


def test_imagefolder_corrupt_image(tmp_path):
    write_image_tree(tmp_path)
    (tmp_path / "train" / "emu" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match=r"Could not decode the image train/emu/bad\.png"):
        uk.load_dataset("imagefolder", root=tmp_path)


def test_imagefolder_bad_options_and_root(tmp_path):
    with pytest.raises(InvalidParameterError, match=r"'image_size' option.*Got 0"):
        uk.load_dataset("imagefolder", root=tmp_path, image_size=0)
    with pytest.raises(InvalidParameterError, match=r"'image_size' option.*Got \(1, 2, 3\)"):
        uk.load_dataset("imagefolder", root=tmp_path, image_size=(1, 2, 3))
    with pytest.raises(InvalidParameterError, match=r"'grayscale' option.*Got 'false'"):
        uk.load_dataset("imagefolder", root=tmp_path, grayscale="false")
    with pytest.raises(InvalidParameterError, match=r"'cache' option of 'cifar10'.*Got 0"):
        uk.load_dataset("cifar10", root=tmp_path, cache=0)
    with pytest.raises(InvalidParameterError, match="'mirror' option of 'mnist' must be a URL"):
        uk.load_dataset("mnist", root=tmp_path, mirror=3)
    with pytest.raises(DataError, match="no such folder or archive"):
        uk.load_dataset("imagefolder", root=tmp_path / "absent")
    with pytest.raises(DataError, match="no public address"):
        uk.load_dataset("imagefolder", root=tmp_path / "absent", download=True)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match="not a tar archive"):
        uk.load_dataset("imagefolder", root=tmp_path / "file.txt")


# --------------------------------------------------------------------------- cache


@pytest.fixture
def count_decodes(monkeypatch):
    calls = {"n": 0}
    real = imagefolder_module.decode_image

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(imagefolder_module, "decode_image", counting)
    return calls


@pytest.mark.parametrize("as_archive", [False, True], ids=["folder", "archive"])
def test_cache_second_load_does_not_decode(tmp_path, count_decodes, as_archive):
    tree = tmp_path / "tree"
    write_image_tree(tree)
    root = make_tar(tree, tmp_path / "t.tgz") if as_archive else tree
    first = uk.load_dataset("imagefolder", root=root)
    assert count_decodes["n"] == 15
    assert len(list(cache_dir().glob("imagefolder-*.npz"))) == 1
    second = uk.load_dataset("imagefolder", root=root)
    assert count_decodes["n"] == 15  # served from the cache
    np.testing.assert_array_equal(second.train.x.numpy(), first.train.x.numpy())
    np.testing.assert_array_equal(second.test.y.numpy(), first.test.y.numpy())
    assert second.class_names == first.class_names
    # Other options are another entry.
    uk.load_dataset("imagefolder", root=root, grayscale=True)
    assert count_decodes["n"] == 30


def test_cache_invalidated_by_changed_file_and_disabled(tmp_path, count_decodes):
    write_image_tree(tmp_path)
    uk.load_dataset("imagefolder", root=tmp_path)
    img = tmp_path / "test" / "cat" / "000.png"
    Image.new("RGB", (5, 6), (255, 0, 0)).save(img)
    os.utime(img, ns=(1, 1))
    bundle = uk.load_dataset("imagefolder", root=tmp_path)
    assert count_decodes["n"] == 30
    np.testing.assert_array_equal(bundle.test.x[0, 0].numpy(), np.ones((6, 5), np.float32))
    uk.load_dataset("imagefolder", root=tmp_path, cache=False)
    assert count_decodes["n"] == 45


def test_corrupt_cache_entry_is_rebuilt(tmp_path, count_decodes):
    write_image_tree(tmp_path)
    uk.load_dataset("imagefolder", root=tmp_path)
    (entry,) = cache_dir().glob("imagefolder-*.npz")
    entry.write_bytes(b"truncated")
    bundle = uk.load_dataset("imagefolder", root=tmp_path)
    assert count_decodes["n"] == 30 and bundle.train.x.shape == (9, 3, 6, 5)


# --------------------------------------------------------------------------- CIFAR image trees


def test_cifar10_image_tree_and_class_check(tmp_path):
    classes = CIFAR10_CLASSES
    written = write_image_tree(tmp_path, classes=classes, per_class=(2, 1), size=(32, 32))
    bundle = uk.load_dataset("cifar10", root=tmp_path)
    assert bundle.class_names == classes
    assert bundle.train.x.shape == (20, 3, 32, 32)
    expected = np.stack([a for _, a in written["test"]]).transpose(0, 3, 1, 2) / 255
    np.testing.assert_allclose(bundle.test.x.numpy(), expected, atol=1e-7)
    np.testing.assert_array_equal(bundle.test.y.numpy(), np.arange(10))
    other = tmp_path / "other"
    write_image_tree(other, classes=("a", "b"), size=(32, 32))
    with pytest.raises(DataError, match=r"expected the cifar10 classes.*'imagefolder'"):
        uk.load_dataset("cifar10", root=other)
    with pytest.raises(DataError, match="labels='coarse' needs the official python version"):
        uk.load_dataset("cifar100", root=other, labels="coarse")


def test_cifar10_image_tree_wrong_size(tmp_path):
    write_image_tree(tmp_path, classes=CIFAR10_CLASSES, per_class=(1, 1))
    with pytest.raises(DataError, match="images are 5x6 with 3 channels; expected 32x32 RGB"):
        uk.load_dataset("cifar10", root=tmp_path)


# --------------------------------------------------------------------------- archives


def _tar_with(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def test_safe_extract_refuses_traversal_and_links(tmp_path):
    dest = tmp_path / "dest"
    evil = tarfile.TarInfo("cifar-10-batches-py/../../evil.txt")
    evil.size = 3
    _tar_with(tmp_path / "a.tar.gz", [(evil, b"bad")])
    with pytest.raises(DataError, match="outside"):
        safe_extract(tmp_path / "a.tar.gz", dest)
    absolute = tarfile.TarInfo("/tmp/evil.txt")
    absolute.size = 3
    _tar_with(tmp_path / "b.tar.gz", [(absolute, b"bad")])
    with pytest.raises(DataError, match="outside"):
        safe_extract(tmp_path / "b.tar.gz", dest)
    ok = tarfile.TarInfo("ok.txt")
    ok.size = 2
    link = tarfile.TarInfo("link")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    _tar_with(tmp_path / "c.tar.gz", [(ok, b"ok"), (link, None)])
    with pytest.raises(DataError, match="link or special file"):
        safe_extract(tmp_path / "c.tar.gz", dest)
    assert not (tmp_path / "evil.txt").exists()
    assert not (dest / "ok.txt").exists()  # nothing is left half-extracted
    assert [p.name for p in dest.iterdir()] == []


def test_corrupt_archive(tmp_path):
    tree = tmp_path / "tree"
    write_image_tree(tree)
    archive = make_tar(tree, tmp_path / "t.tar.gz")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match=r"not a valid tar archive \(corrupt or truncated\)"):
        uk.load_dataset("imagefolder", root=archive)


@pytest.mark.parametrize("mode", ["w:", "w:gz", "w:bz2", "w:xz"])
@pytest.mark.parametrize("cut", ["member-boundary", "mid-member"])
def test_truncated_archive_any_compression(tmp_path, mode, cut):
    """tarfile alone stops silently at a truncation; the loaders must not return part of a set."""
    tree = tmp_path / "tree"
    write_image_tree(tree)
    archive = tmp_path / "t.tar"
    with tarfile.open(archive, mode) as tf:
        for child in sorted(tree.iterdir()):
            tf.add(child, arcname=child.name)
    assert len(uk.load_dataset("imagefolder", root=archive, cache=False).train) == 9
    raw = archive.read_bytes()
    if mode == "w:":
        # Cut right after a member's data (a 512-byte boundary), or inside one.
        keep = 512 * 9 if cut == "member-boundary" else 512 * 9 + 100
    else:
        keep = len(raw) - 20 if cut == "member-boundary" else len(raw) // 2
    archive.write_bytes(raw[:keep])
    with pytest.raises(DataError, match=r"not a valid tar archive \(corrupt or truncated\)"):
        uk.load_dataset("imagefolder", root=archive, cache=False)


def test_archive_members_outside_the_tree_are_ignored(tmp_path):
    tree = tmp_path / "tree"
    write_image_tree(tree)
    archive = tmp_path / "t.tar.gz"
    png = (tree / "train" / "cat" / "000.png").read_bytes()
    with tarfile.open(archive, "w:gz") as tf:
        for child in sorted(tree.iterdir()):
            tf.add(child, arcname=child.name)
        for name in ("../train/cat/evil.png", "/train/cat/abs.png"):
            info = tarfile.TarInfo(name)
            info.size = len(png)
            tf.addfile(info, io.BytesIO(png))
        link = tarfile.TarInfo("train/cat/zz-link.png")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    bundle = uk.load_dataset("imagefolder", root=archive, cache=False)
    assert len(bundle.train) == 9 and len(bundle.test) == 6
