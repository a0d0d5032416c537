"""Downloads against a local HTTP server on 127.0.0.1 and ``file://`` URLs: never the internet.

Covers checksum verification (a mismatch raises and leaves no file), mirrors (the ``mirror``
option and ``$UNLEARNKIT_MIRROR``), the loaders' download path, and the error that names the
missing files when downloading is not allowed.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import pickle
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

import unlearnkit as uk
from unlearnkit.data import cifar as cifar_module
from unlearnkit.data import mnist as mnist_module
from unlearnkit.data.download import (
    MIRROR_ENV,
    Resource,
    download_file,
    ensure_files,
    file_digest,
    resolve_urls,
)
from unlearnkit.data.idx import write_idx
from unlearnkit.exceptions import DataError, DownloadError

MNIST_FILES = {
    "train-images-idx3-ubyte.gz": lambda rng: rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
    "train-labels-idx1-ubyte.gz": lambda rng: (np.arange(20) % 10).astype(np.uint8),
    "t10k-images-idx3-ubyte.gz": lambda rng: rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
    "t10k-labels-idx1-ubyte.gz": lambda rng: (np.arange(10) % 10).astype(np.uint8),
}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture
def served(tmp_path):
    """A folder served over HTTP on 127.0.0.1: yields ``(folder, base_url)``."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def write_mnist_files(folder: Path, seed: int = 0) -> dict[str, str]:
    """The four IDX files in ``folder``; returns their md5 sums."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, make in MNIST_FILES.items():
        write_idx(folder / name, make(rng))
    return {name: file_digest(folder / name, "md5") for name in MNIST_FILES}


@pytest.fixture
def patched_mnist(monkeypatch):
    """Point the mnist loader's checksums at the synthetic files of ``write_mnist_files``."""

    def patch(md5s: dict[str, str]) -> None:
        resources = tuple(Resource(name, md5=md5s[name]) for name in MNIST_FILES)
        spec = dataclasses.replace(mnist_module._MNIST, resources=resources)
        monkeypatch.setattr(mnist_module, "_MNIST", spec)

    return patch


def no_leftovers(folder: Path) -> bool:
    return not folder.exists() or not any(p.name.startswith(".") for p in folder.iterdir())


# --------------------------------------------------------------------------- download_file


def test_http_good_sha256(served, tmp_path, capsys):
    folder, base = served
    payload = bytes(range(256)) * 4000
    (folder / "blob.bin").write_bytes(payload)
    dest = tmp_path / "out" / "blob.bin"
    got = download_file(base + "blob.bin", dest, sha256=hashlib.sha256(payload).hexdigest())
    assert got == dest and dest.read_bytes() == payload
    assert no_leftovers(dest.parent)
    assert "blob.bin" in capsys.readouterr().err  # the progress bar goes to stderr


def test_http_bad_checksum_leaves_no_file(served, tmp_path):
    folder, base = served
    (folder / "blob.bin").write_bytes(b"tampered")
    dest = tmp_path / "out" / "blob.bin"
    with pytest.raises(
        DownloadError, match=r"Checksum mismatch.*expected md5 0{32}, got [0-9a-f]{32}"
    ):
        download_file(base + "blob.bin", dest, md5="0" * 32, progress=False)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_http_404(served, tmp_path):
    _, base = served
    with pytest.raises(DownloadError, match=r"Could not download .*absent\.bin.*404"):
        download_file(base + "absent.bin", tmp_path / "out" / "a.bin", md5="0" * 32, progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_file_url(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"hello" * 1000)
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    dest = download_file(src.as_uri(), tmp_path / "dest" / "x.bin", md5=md5, progress=False)
    assert dest.read_bytes() == src.read_bytes()
    with pytest.raises(DownloadError, match="Checksum mismatch"):
        download_file(src.as_uri(), tmp_path / "dest" / "y.bin", sha256="1" * 64, progress=False)
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["x.bin"]
    with pytest.raises(DownloadError, match="Could not download"):
        download_file((tmp_path / "nope").as_uri(), tmp_path / "z", md5=md5, progress=False)


def test_unsupported_scheme(tmp_path):
    with pytest.raises(DownloadError, match="scheme must be http, https or file; got 'ftp'"):
        download_file("ftp://127.0.0.1/x", tmp_path / "x", md5="0" * 32)
    assert list(tmp_path.iterdir()) == []


def test_resolve_urls_precedence(monkeypatch):
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    assert resolve_urls("mnist", "f.gz", ["https://a/x/", "https://b/"]) == [
        "https://a/x/f.gz",
        "https://b/f.gz",
    ]
    monkeypatch.setenv(MIRROR_ENV, "file:///srv/mirror")
    assert resolve_urls("mnist", "f.gz", ["https://a/"]) == ["file:///srv/mirror/mnist/f.gz"]
    assert resolve_urls("mnist", "f.gz", ["https://a/"], mirror="http://h/m") == ["http://h/m/f.gz"]


def test_ensure_files_tries_next_mirror(served, tmp_path):
    folder, base = served
    (folder / "a.bin").write_bytes(b"abc")
    res = Resource("a.bin", sha256=hashlib.sha256(b"abc").hexdigest())
    dead = (tmp_path / "dead").as_uri() + "/"
    paths = ensure_files(
        "demo", tmp_path / "root", [res], default_bases=[dead, base], download=True, progress=False
    )
    assert paths[0].read_bytes() == b"abc"
    with pytest.raises(DownloadError, match=r"could not download b\.bin.*mirror=") as err:
        ensure_files(
            "demo",
            tmp_path / "root",
            [Resource("b.bin", md5="0" * 32)],
            default_bases=[dead],
            download=True,
            progress=False,
        )
    assert "UNLEARNKIT_MIRROR" in str(err.value)


# --------------------------------------------------------------------------- loaders


def test_mnist_download_over_http(served, tmp_path, patched_mnist):
    folder, base = served
    patched_mnist(write_mnist_files(folder))
    root = tmp_path / "data"
    bundle = uk.load_dataset("mnist", root=root, download=True, mirror=base)
    assert len(bundle.train) == 20 and len(bundle.test) == 10
    assert sorted(p.name for p in root.iterdir()) == sorted(MNIST_FILES)
    for name in MNIST_FILES:
        assert (root / name).read_bytes() == (folder / name).read_bytes()
    # Now present: no download needed, and none attempted (the server is not asked again).
    again = uk.load_dataset("mnist", root=root)
    np.testing.assert_array_equal(again.train.x.numpy(), bundle.train.x.numpy())


def test_mnist_download_bad_checksum(served, tmp_path):
    folder, base = served
    write_mnist_files(folder)  # synthetic files: the official md5 sums do not match
    root = tmp_path / "data"
    with pytest.raises(
        DownloadError, match=r"Checksum mismatch for http://127\.0\.0\.1.*train-images"
    ):
        uk.load_dataset("mnist", root=root, download=True, mirror=base)
    assert not root.exists() or list(root.iterdir()) == []


def test_mnist_mirror_env_file_url(tmp_path, monkeypatch, patched_mnist):
    mirror = tmp_path / "mirror"
    patched_mnist(write_mnist_files(mirror / "mnist", seed=5))
    monkeypatch.setenv(MIRROR_ENV, mirror.as_uri())
    bundle = uk.load_dataset("mnist", root=tmp_path / "data", download=True)
    assert bundle.train.x.shape == (20, 1, 28, 28)
    assert (tmp_path / "data" / "t10k-labels-idx1-ubyte.gz").is_file()


def test_missing_without_download_names_files(tmp_path, served):
    folder, base = served
    write_mnist_files(folder)
    root = tmp_path / "empty"
    with pytest.raises(DataError) as err:
        uk.load_dataset("fashion-mnist", root=root, mirror=base)
    msg = str(err.value)
    assert not isinstance(err.value, DownloadError)
    for name in MNIST_FILES:
        assert name in msg
    assert str(root) in msg and "download=True" in msg and "--download" in msg
    assert not root.exists()


def test_default_root_is_the_data_folder(tmp_path, monkeypatch, patched_mnist):
    mirror = tmp_path / "mirror"
    patched_mnist(write_mnist_files(mirror))
    monkeypatch.setenv("UNLEARNKIT_DATA", str(tmp_path / "home-data"))
    uk.load_dataset("mnist", download=True, mirror=mirror.as_uri())
    assert (tmp_path / "home-data" / "mnist" / "train-images-idx3-ubyte.gz").is_file()


def _official_cifar10_archive(path: Path) -> Path:
    """A tiny archive in the layout of cifar-10-python.tar.gz."""
    src = path.parent / "cifar-src" / "cifar-10-batches-py"
    src.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"labels": [3, 7]}
        (src / name).write_bytes(pickle.dumps(batch, protocol=2))
    names = [c.encode() for c in cifar_module.CIFAR10_CLASSES]
    (src / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
    with tarfile.open(path, "w:gz") as tf:
        tf.add(src, arcname="cifar-10-batches-py")
    return path


def test_cifar10_download_and_extract(served, tmp_path, monkeypatch):
    folder, base = served
    archive = _official_cifar10_archive(folder / "cifar-10-python.tar.gz")
    spec = dataclasses.replace(
        cifar_module._CIFAR10,
        archive=Resource("cifar-10-python.tar.gz", md5=file_digest(archive, "md5")),
    )
    monkeypatch.setattr(cifar_module, "_CIFAR10", spec)
    root = tmp_path / "data"
    with pytest.raises(DataError, match=r"cifar-10-python\.tar\.gz.*download=True"):
        uk.load_dataset("cifar10", root=root, mirror=base)
    bundle = uk.load_dataset("cifar10", root=root, download=True, mirror=base)
    assert len(bundle.train) == 10 and len(bundle.test) == 2
    assert bundle.train.y.tolist() == [3, 7] * 5
    assert (root / "cifar-10-batches-py" / "batches.meta").is_file()
    assert (root / "cifar-10-python.tar.gz").is_file()
