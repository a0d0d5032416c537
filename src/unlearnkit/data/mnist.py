"""MNIST and Fashion-MNIST: 28x28 grayscale images in 10 classes, 60,000 train / 10,000 test.

Two on-disk forms are read:

* the four standard IDX files (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
  ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``), gzipped or not, in the data
  root, in ``root/raw`` or in torchvision's ``root/MNIST/raw`` (``FashionMNIST/raw``);
* an ``.npz`` file holding ``x_train, y_train, x_test, y_test`` (uint8 images shaped
  ``(N, 28, 28)``, ``(N, 28, 28, 1)`` or ``(N, 1, 28, 28)``) and optionally ``class_names``;
  ``root`` may be the file itself or a folder holding ``mnist.npz`` (``fashion-mnist.npz``).

With ``download=True`` the IDX files are fetched from the publisher (md5 verified).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unlearnkit.data.containers import ArrayDataset, DataBundle
from unlearnkit.data.download import Resource, ensure_files
from unlearnkit.data.idx import read_idx
from unlearnkit.data.registry import default_data_root, register_dataset
from unlearnkit.exceptions import DataError, InvalidParameterError

__all__ = ["FASHION_MNIST_CLASSES", "load_fashion_mnist", "load_mnist", "npz_bundle"]

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_PARTS = (
    ("train", "train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    ("test", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
)


@dataclass(frozen=True)
class _IdxSet:
    name: str
    torchvision_folder: str
    bases: tuple[str, ...]
    resources: tuple[Resource, ...]
    class_names: tuple[str, ...]


_MNIST = _IdxSet(
    name="mnist",
    torchvision_folder="MNIST",
    bases=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    resources=(
        Resource("train-images-idx3-ubyte.gz", md5="f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        Resource("train-labels-idx1-ubyte.gz", md5="d53e105ee54ea40749a09fcbcd1e9432"),
        Resource("t10k-images-idx3-ubyte.gz", md5="9fb629c4189551a2d022fa330f9573f3"),
        Resource("t10k-labels-idx1-ubyte.gz", md5="ec29112dd5afa0611ce80d1b7f02629c"),
    ),
    class_names=tuple(str(i) for i in range(10)),
)

_FASHION = _IdxSet(
    name="fashion-mnist",
    torchvision_folder="FashionMNIST",
    bases=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    resources=(
        Resource("train-images-idx3-ubyte.gz", md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        Resource("train-labels-idx1-ubyte.gz", md5="25c81989df183df01b3e8a0aad5dffbe"),
        Resource("t10k-images-idx3-ubyte.gz", md5="bef4ecab320f06d8554ea6380940ec79"),
        Resource("t10k-labels-idx1-ubyte.gz", md5="bb300cfdad3c16e7a12a480ee83cd310"),
    ),
    class_names=FASHION_MNIST_CLASSES,
)


def _to_nchw(x: np.ndarray, where: str) -> np.ndarray:
    """Images ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)`` -> ``(N, C, H, W)``."""
    if x.ndim == 3:
        return x[:, None, :, :]
    if x.ndim == 4:
        if x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3):
            return x
        if x.shape[-1] in (1, 3):
            return x.transpose(0, 3, 1, 2)
    raise DataError(
        f"{where}: images must be shaped (N, H, W), (N, H, W, C) or (N, C, H, W) with C 1 or 3; "
        f"got shape {x.shape}."
    )


def _scale(x: np.ndarray, where: str) -> np.ndarray:
    """uint8 images -> float32 in [0, 1]; float images must already lie in [0, 1]."""
    if x.dtype == np.uint8:
        out = x.astype(np.float32, order="C")
        out /= np.float32(255.0)
        return out
    if np.issubdtype(x.dtype, np.floating):
        if x.size and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
            raise DataError(
                f"{where}: float images must lie in [0, 1]; got [{float(x.min())}, "
                f"{float(x.max())}]. Store uint8 pixels (0-255) or scaled floats."
            )
        return x.astype(np.float32, order="C")
    raise DataError(f"{where}: images must be uint8 or float; got dtype {x.dtype}.")


def _labels(y: np.ndarray, n: int, num_classes: int, where: str) -> np.ndarray:
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{where}: expected {n} labels shaped ({n},); got shape {y.shape}.")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: labels must be integers; got dtype {y.dtype}.")
    if n and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise DataError(
            f"{where}: labels must lie in [0, {num_classes}); got [{int(y.min())}, {int(y.max())}]."
        )
    return y.astype(np.int64)


def npz_bundle(
    path: Path, *, name: str, default_class_names: tuple[str, ...], options: dict
) -> DataBundle:
    """A :class:`DataBundle` from an ``.npz`` holding ``x_train, y_train, x_test, y_test``.

    Raises:
        DataError: keys missing, or arrays of the wrong shape, type or range.
    """
    where = f"{str(path)!r}"
    try:
        with np.load(path, allow_pickle=False) as z:
            files = set(z.files)
            needed = ("x_train", "y_train", "x_test", "y_test")
            missing = [k for k in needed if k not in files]
            if missing:
                raise DataError(
                    f"{where} lacks the arrays {', '.join(missing)}; expected {', '.join(needed)} "
                    f"(and optionally class_names). Found: {', '.join(sorted(files)) or 'none'}."
                )
            arrays = {k: z[k] for k in needed}
            names = z["class_names"] if "class_names" in files else None
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"Could not read {where} as an .npz file: {exc}") from None
    class_names = (
        tuple(str(c) for c in names.tolist()) if names is not None else default_class_names
    )
    parts = {}
    for part in ("train", "test"):
        x = _to_nchw(arrays[f"x_{part}"], f"{where} x_{part}")
        y = _labels(arrays[f"y_{part}"], len(x), len(class_names), f"{where} y_{part}")
        parts[part] = ArrayDataset(_scale(x, f"{where} x_{part}"), y)
    return DataBundle(
        name=name,
        train=parts["train"],
        test=parts["test"],
        class_names=class_names,
        options=options,
    )


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _need_idx(folder: Path, stem: str) -> Path:
    found = _find_idx(folder, stem)
    if found is None:
        raise DataError(f"Missing IDX file {stem}.gz (or {stem}) in {str(folder)!r}.")
    return found


def _idx_folder(root: Path, spec: _IdxSet) -> Path | None:
    """The first folder under ``root`` that holds all four IDX files."""
    for folder in (root, root / "raw", root / spec.torchvision_folder / "raw"):
        stems = [s for _, *pair in _PARTS for s in pair]
        if all(_find_idx(folder, s) for s in stems):
            return folder
    return None


def _idx_bundle(folder: Path, spec: _IdxSet, options: dict) -> DataBundle:
    parts = {}
    for part, images_stem, labels_stem in _PARTS:
        images_path = _need_idx(folder, images_stem)
        labels_path = _need_idx(folder, labels_stem)
        x = read_idx(images_path, ndim=3, dtype=np.uint8)
        y = read_idx(labels_path, ndim=1, dtype=np.uint8)
        if len(x) != len(y):
            raise DataError(
                f"Dataset {spec.name!r}: {images_path.name} holds {len(x)} images but "
                f"{labels_path.name} holds {len(y)} labels."
            )
        y = _labels(y, len(x), len(spec.class_names), str(labels_path))
        parts[part] = ArrayDataset(_scale(x[:, None, :, :], str(images_path)), y)
    return DataBundle(
        name=spec.name,
        train=parts["train"],
        test=parts["test"],
        class_names=spec.class_names,
        options=options,
    )


def _load(spec: _IdxSet, root: Path | None, download: bool, mirror: str | None) -> DataBundle:
    if mirror is not None and not isinstance(mirror, str):
        raise InvalidParameterError(
            f"The 'mirror' option of {spec.name!r} must be a URL string. Got {mirror!r} instead."
        )
    root = Path(root) if root is not None else default_data_root() / spec.name
    options: dict = {}
    if root.is_file():
        if root.suffix != ".npz":
            raise DataError(
                f"Dataset {spec.name!r}: {str(root)!r} is a file but not an .npz; give the folder "
                "that holds the IDX files, or an .npz with x_train, y_train, x_test, y_test."
            )
        return npz_bundle(
            root, name=spec.name, default_class_names=spec.class_names, options=options
        )
    folder = _idx_folder(root, spec)
    if folder is not None:
        return _idx_bundle(folder, spec, options)
    npz = root / f"{spec.name}.npz"
    if npz.is_file():
        return npz_bundle(
            npz, name=spec.name, default_class_names=spec.class_names, options=options
        )
    ensure_files(
        spec.name,
        root,
        spec.resources,
        default_bases=spec.bases,
        download=download,
        mirror=mirror,
        hint=(
            f" Expected the IDX files there (gzipped or not), in {str(root / 'raw')!r}, or an "
            f"{spec.name}.npz with x_train, y_train, x_test, y_test."
        ),
    )
    return _idx_bundle(root, spec, options)


_FORMATS = (
    "IDX files (train-images-idx3-ubyte.gz, ...; gzipped or not)",
    ".npz with x_train, y_train, x_test, y_test",
)


@register_dataset(
    "mnist",
    description="MNIST handwritten digits, 28x28 grayscale, 60,000 train / 10,000 test",
    num_classes=10,
    input_shape=(1, 28, 28),
    needs_root=True,
    formats=_FORMATS,
)
def load_mnist(
    root: Path | None = None, download: bool = False, mirror: str | None = None
) -> DataBundle:
    """MNIST, scaled to [0, 1], shaped ``(N, 1, 28, 28)``; classes ``"0"``-``"9"``.

    Args:
        root: a folder holding the four IDX files (or ``raw/``, ``MNIST/raw/``, or
            ``mnist.npz``), or an ``.npz`` file.
        download: fetch the IDX files into ``root`` if they are missing (md5 verified).
        mirror: a base URL (``http(s)://`` or ``file://``) holding the IDX files, used instead
            of the publisher's.

    Returns:
        The 60,000 training and 10,000 test images.

    Raises:
        DataError: files missing (and ``download`` false) or malformed.
        DownloadError: a download failed or its checksum did not match.
    """
    return _load(_MNIST, root, download, mirror)


@register_dataset(
    "fashion-mnist",
    description="Fashion-MNIST clothing images, 28x28 grayscale, 60,000 train / 10,000 test",
    num_classes=10,
    input_shape=(1, 28, 28),
    needs_root=True,
    formats=_FORMATS,
)
def load_fashion_mnist(
    root: Path | None = None, download: bool = False, mirror: str | None = None
) -> DataBundle:
    """Fashion-MNIST, scaled to [0, 1], shaped ``(N, 1, 28, 28)``; classes ``"T-shirt/top"``,
    ``"Trouser"``, ... ``"Ankle boot"``.

    Args:
        root: a folder holding the four IDX files (or ``raw/``, ``FashionMNIST/raw/``, or
            ``fashion-mnist.npz``), or an ``.npz`` file.
        download: fetch the IDX files into ``root`` if they are missing (md5 verified).
        mirror: a base URL (``http(s)://`` or ``file://``) holding the IDX files, used instead
            of the publisher's.

    Returns:
        The 60,000 training and 10,000 test images.

    Raises:
        DataError: files missing (and ``download`` false) or malformed.
        DownloadError: a download failed or its checksum did not match.
    """
    return _load(_FASHION, root, download, mirror)
