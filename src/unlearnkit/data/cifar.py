"""CIFAR-10 and CIFAR-100: 32x32 colour images, 50,000 train / 10,000 test.

Read from any of:

* the official "python version": the folder ``cifar-10-batches-py/`` (``data_batch_1`` ...
  ``data_batch_5``, ``test_batch``, ``batches.meta``) or ``cifar-100-python/`` (``train``,
  ``test``, ``meta``), under the data root or as the root itself; or the official archive
  ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``, in the root (it is extracted there)
  or given as the root (read without extracting). The batches are pickles and are read with
  :class:`~unlearnkit.data.safe_pickle.RestrictedUnpickler`, which runs no code;
* an image-folder tree ``train/<class>/*``, ``test/<class>/*`` (such as a JPEG copy of CIFAR-10),
  as a folder or a ``.tar.gz``; decoded images are cached.

With ``download=True`` the official archive is fetched (md5 verified) and safely extracted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from unlearnkit.data.archives import is_archive, iter_tar_files, peek_member_names, safe_extract
from unlearnkit.data.containers import ArrayDataset, DataBundle
from unlearnkit.data.download import Resource, ensure_files
from unlearnkit.data.imagefolder import bundle_from_arrays, check_bool, read_image_tree
from unlearnkit.data.registry import default_data_root, register_dataset
from unlearnkit.data.safe_pickle import safe_loads
from unlearnkit.exceptions import DataError, InvalidParameterError

__all__ = ["CIFAR10_CLASSES", "load_cifar10", "load_cifar100"]

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

_BASES = ("https://www.cs.toronto.edu/~kriz/",)
#: The largest batch file read from an archive (CIFAR-100's ``train`` is about 150 MB); a larger
#: member is refused before it is read or extracted.
MAX_BATCH_BYTES = 256 * 2**20


@dataclass(frozen=True)
class _CifarSpec:
    name: str
    folder: str
    archive: Resource
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    num_classes: int
    #: CIFAR-100's batches hold fine and coarse labels; CIFAR-10's hold one kind.
    has_coarse: bool
    #: The class names an image-folder copy must have (``None``: any ``num_classes`` names).
    class_names: tuple[str, ...] | None = None

    def options(self, labels: str) -> dict:
        """The loader options recorded in the bundle."""
        return {"labels": labels} if self.has_coarse else {}

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train_files, *self.test_files, self.meta_file)


_CIFAR10 = _CifarSpec(
    name="cifar10",
    folder="cifar-10-batches-py",
    archive=Resource("cifar-10-python.tar.gz", md5="c58f30108f718f92721af3b95e74349a"),
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    num_classes=10,
    has_coarse=False,
    class_names=CIFAR10_CLASSES,
)

_CIFAR100 = _CifarSpec(
    name="cifar100",
    folder="cifar-100-python",
    archive=Resource("cifar-100-python.tar.gz", md5="eb9058c3a382ffc7106e4002c42a8d85"),
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    num_classes=100,
    has_coarse=True,
)


def _str_keys(obj: Any, where: str) -> dict[str, Any]:
    """A batch dict with ``str`` keys (Python 2 pickles read as bytes have ``bytes`` keys)."""
    if not isinstance(obj, dict):
        raise DataError(f"{where} holds a {type(obj).__name__}, expected a dict (a CIFAR batch).")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _label_key(spec: _CifarSpec, labels: str, kind: str) -> str:
    """The key of a batch's labels (``kind="labels"``) or of the meta's names (``"names"``)."""
    if not spec.has_coarse:
        return "labels" if kind == "labels" else "label_names"
    return f"{labels}_labels" if kind == "labels" else f"{labels}_label_names"


def _read_batches(spec: _CifarSpec, read: Callable[[str], bytes], labels: str) -> DataBundle:
    meta = _str_keys(safe_loads(read(spec.meta_file), where=spec.meta_file), spec.meta_file)
    names_key = _label_key(spec, labels, "names")
    if names_key not in meta:
        raise DataError(
            f"{spec.meta_file} has no {names_key!r} entry; found {sorted(meta)}. Not a "
            f"{spec.name} meta file?"
        )
    class_names = tuple(_text(n) for n in meta[names_key])
    parts = {}
    for part, files in (("train", spec.train_files), ("test", spec.test_files)):
        xs, ys = [], []
        for fname in files:
            batch = _str_keys(safe_loads(read(fname), where=fname), fname)
            key = _label_key(spec, labels, "labels")
            if "data" not in batch or key not in batch:
                raise DataError(
                    f"{fname} lacks 'data' or {key!r}; found {sorted(batch)}. Not a {spec.name} "
                    "batch?"
                )
            data = batch["data"]
            if (
                not isinstance(data, np.ndarray)
                or data.dtype != np.uint8
                or data.ndim != 2
                or (data.shape[1] != 3 * 32 * 32)
            ):
                shape = getattr(data, "shape", None)
                raise DataError(
                    f"{fname}: 'data' must be a uint8 array shaped (N, 3072); got "
                    f"{type(data).__name__} {getattr(data, 'dtype', '')} {shape}."
                )
            y = np.asarray(batch[key])
            if y.ndim != 1 or len(y) != len(data) or not np.issubdtype(y.dtype, np.integer):
                raise DataError(
                    f"{fname}: expected {len(data)} integer labels under {key!r}; got "
                    f"{y.dtype} shaped {y.shape}."
                )
            xs.append(data.reshape(-1, 3, 32, 32))
            ys.append(y.astype(np.int64))
        x = np.concatenate(xs).astype(np.float32)
        x /= np.float32(255.0)
        parts[part] = ArrayDataset(x, np.concatenate(ys))
    return DataBundle(
        name=spec.name,
        train=parts["train"],
        test=parts["test"],
        class_names=class_names,
        options=spec.options(labels),
    )


def _batch_folder(root: Path, spec: _CifarSpec) -> tuple[Path, list[str]]:
    """The folder that holds (or should hold) the batches, and the batch files missing there."""
    for folder in (root / spec.folder, root):
        if any((folder / f).is_file() for f in spec.files):
            return folder, [f for f in spec.files if not (folder / f).is_file()]
    return root / spec.folder, list(spec.files)


def _read_official_archive(path: Path, spec: _CifarSpec, labels: str) -> DataBundle:
    wanted = set(spec.files)
    found: dict[str, bytes] = {}

    def is_batch(parts: tuple[str, ...]) -> bool:  # other members are skipped, never read
        return parts[-1] in wanted and len(parts) >= 2 and parts[-2] == spec.folder

    for parts, data in iter_tar_files(path, is_batch, max_member_bytes=MAX_BATCH_BYTES):
        found[parts[-1]] = data
    missing = sorted(wanted - set(found))
    if missing:
        raise DataError(
            f"Archive {str(path)!r} lacks {', '.join(f'{spec.folder}/{m}' for m in missing)}."
        )
    return _read_batches(spec, found.__getitem__, labels)


def _image_tree_bundle(source: Path, spec: _CifarSpec, labels: str, cache: bool) -> DataBundle:
    if spec.has_coarse and labels != "fine":
        raise DataError(
            f"{str(source)!r} is an image-folder tree, whose folders give the fine classes only; "
            "labels='coarse' needs the official python version (cifar-100-python/)."
        )
    arrays, class_names = read_image_tree(source, name=spec.name, cache=cache)
    where = f"Dataset {spec.name!r} at {str(source)!r}"
    if spec.class_names is not None and class_names != spec.class_names:
        raise DataError(
            f"{where}: the class folders are {list(class_names)}; expected the {spec.name} "
            f"classes {list(spec.class_names)}. Use the 'imagefolder' dataset for other image "
            "trees."
        )
    if len(class_names) != spec.num_classes:
        raise DataError(
            f"{where}: found {len(class_names)} class folders, expected {spec.num_classes}. Use "
            "the 'imagefolder' dataset for other image trees."
        )
    if arrays["x_train"].shape[1:] != (32, 32, 3):
        h, w, c = arrays["x_train"].shape[1:]
        raise DataError(f"{where}: images are {w}x{h} with {c} channels; expected 32x32 RGB.")
    return bundle_from_arrays(spec.name, arrays, class_names, spec.options(labels))


def _load(
    spec: _CifarSpec,
    root: Path | None,
    download: bool,
    mirror: str | None,
    labels: str,
    cache: bool,
) -> DataBundle:
    cache = check_bool(cache, "cache", spec.name)
    if mirror is not None and not isinstance(mirror, str):
        raise InvalidParameterError(
            f"The 'mirror' option of {spec.name!r} must be a URL string. Got {mirror!r} instead."
        )
    root = Path(root) if root is not None else default_data_root() / spec.name
    if root.is_file():
        if not is_archive(root):
            raise DataError(
                f"Dataset {spec.name!r}: {str(root)!r} is a file but not a tar archive. Give the "
                f"folder holding {spec.folder}/, the official {spec.archive.filename}, or an "
                "image-folder tree (train/<class>/*, test/<class>/*) or a .tar.gz of one."
            )
        if any(spec.folder in n.split("/") for n in peek_member_names(root)):
            return _read_official_archive(root, spec, labels)
        return _image_tree_bundle(root, spec, labels, cache)
    folder, missing = _batch_folder(root, spec)
    if not missing:
        return _read_batches(spec, lambda f: (folder / f).read_bytes(), labels)
    if (root / "train").is_dir() and (root / "test").is_dir():
        return _image_tree_bundle(root, spec, labels, cache)
    archive = root / spec.archive.filename
    if not archive.is_file():
        ensure_files(
            spec.name,
            root,
            [spec.archive],
            default_bases=_BASES,
            download=download,
            mirror=mirror,
            hint=(
                f" Expected {str(folder)!r} with {', '.join(missing)} (the official python "
                f"version), the archive {spec.archive.filename}, or an image-folder tree "
                "train/<class>/*, test/<class>/*."
            ),
        )
    safe_extract(archive, root, max_member_bytes=MAX_BATCH_BYTES)
    folder, missing = _batch_folder(root, spec)
    if missing:
        raise DataError(
            f"Extracting {str(archive)!r} did not produce {', '.join(missing)} in "
            f"{str(folder)!r}: not the official {spec.name} archive?"
        )
    return _read_batches(spec, lambda f: (folder / f).read_bytes(), labels)


_FORMATS = (
    "official python version (pickled batches, read without running code)",
    "image folder train/<class>/*, test/<class>/* (folder or .tar.gz)",
)


@register_dataset(
    "cifar10",
    description="CIFAR-10, 32x32 colour images in 10 classes, 50,000 train / 10,000 test",
    num_classes=10,
    input_shape=(3, 32, 32),
    needs_root=True,
    formats=_FORMATS,
)
def load_cifar10(
    root: Path | None = None,
    download: bool = False,
    mirror: str | None = None,
    cache: bool = True,
) -> DataBundle:
    """CIFAR-10, scaled to [0, 1], shaped ``(N, 3, 32, 32)``; classes ``"airplane"`` ...
    ``"truck"``.

    Args:
        root: a folder holding ``cifar-10-batches-py/`` (or the batches themselves, or
            ``cifar-10-python.tar.gz``, or ``train/`` and ``test/`` image folders), or an archive
            (the official one, or a ``.tar.gz`` of an image-folder tree).
        download: fetch and extract the official archive into ``root`` if nothing is found.
        mirror: a base URL (``http(s)://`` or ``file://``) holding ``cifar-10-python.tar.gz``,
            used instead of the publisher's.
        cache: cache decoded images of an image-folder tree (batches need no decoding).

    Returns:
        The training and test images (50,000 / 10,000 for the full dataset).

    Raises:
        DataError: files missing (and ``download`` false), malformed, or unsafe to unpickle.
        DownloadError: a download failed or its checksum did not match.
    """
    return _load(_CIFAR10, root, download, mirror, "fine", cache)


@register_dataset(
    "cifar100",
    description="CIFAR-100, 32x32 colour images in 100 classes (or 20 superclasses)",
    num_classes=100,
    input_shape=(3, 32, 32),
    needs_root=True,
    formats=_FORMATS,
)
def load_cifar100(
    root: Path | None = None,
    download: bool = False,
    labels: Literal["fine", "coarse"] = "fine",
    mirror: str | None = None,
    cache: bool = True,
) -> DataBundle:
    """CIFAR-100, scaled to [0, 1], shaped ``(N, 3, 32, 32)``.

    Args:
        root: a folder holding ``cifar-100-python/`` (or its files, or
            ``cifar-100-python.tar.gz``, or ``train/`` and ``test/`` image folders), or an archive
            (the official one, or a ``.tar.gz`` of an image-folder tree).
        download: fetch and extract the official archive into ``root`` if nothing is found.
        labels: ``"fine"`` for the 100 classes, ``"coarse"`` for the 20 superclasses.
        mirror: a base URL (``http(s)://`` or ``file://``) holding ``cifar-100-python.tar.gz``,
            used instead of the publisher's.
        cache: cache decoded images of an image-folder tree (batches need no decoding).

    Returns:
        The training and test images (50,000 / 10,000 for the full dataset).

    Raises:
        DataError: files missing (and ``download`` false), malformed, or unsafe to unpickle.
        DownloadError: a download failed or its checksum did not match.
    """
    if labels not in ("fine", "coarse"):
        raise InvalidParameterError(
            f"The 'labels' option of 'cifar100' must be 'fine' or 'coarse'. Got {labels!r} instead."
        )
    return _load(_CIFAR100, root, download, mirror, labels, cache)
