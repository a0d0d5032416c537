"""Image-folder datasets: ``train/<class>/*`` and ``test/<class>/*``, as a folder or a tar archive.

The class names are the sorted sub-folder names of ``train/``; ``test/`` must have the same
sub-folders. Within a class, files are taken in sorted order of their path, so a folder and an
archive of the same tree give the same samples in the same order. Images are decoded with
Pillow to RGB (or grayscale), optionally resized, and the decoded uint8 arrays are cached (see
:mod:`unlearnkit.data.cache`), so only the first load pays for decoding.

An archive (``.tar.gz``, ``.tgz``, ``.tar``, ...) is read member by member, never extracted;
the ``train/`` and ``test/`` folders may sit at its top level or inside one enclosing folder.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from unlearnkit.data.archives import is_archive, iter_tar_files
from unlearnkit.data.cache import cache_key, load_cached, save_cached
from unlearnkit.data.containers import ArrayDataset, DataBundle
from unlearnkit.data.registry import default_data_root, register_dataset
from unlearnkit.exceptions import DataError, InvalidParameterError

__all__ = [
    "IMAGE_EXTENSIONS",
    "bundle_from_arrays",
    "check_bool",
    "check_image_size",
    "decode_image",
    "load_image_folder",
    "read_image_tree",
]

#: File endings read as images (case-insensitive); other files are ignored.
IMAGE_EXTENSIONS = (
    ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm",
)  # fmt: skip

_SPLITS = ("train", "test")
_ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")

ImageSize = tuple[int, int]


def _is_image(parts: Sequence[str]) -> bool:
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return False
    return parts[-1].lower().endswith(IMAGE_EXTENSIONS)


def check_image_size(image_size: int | Sequence[int] | None, dataset: str) -> ImageSize | None:
    """``image_size`` as ``(height, width)``, or ``None``.

    Raises:
        InvalidParameterError: not a positive int or a pair of positive ints.
    """
    if image_size is None:
        return None
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        size = (int(image_size), int(image_size))
    elif (
        isinstance(image_size, (tuple, list))
        and len(image_size) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in image_size)
    ):
        size = (int(image_size[0]), int(image_size[1]))
    else:
        raise InvalidParameterError(
            f"The 'image_size' option of {dataset!r} must be an int or a (height, width) pair of "
            f"ints. Got {image_size!r} instead."
        )
    if min(size) < 1:
        raise InvalidParameterError(
            f"The 'image_size' option of {dataset!r} must be positive. Got {image_size!r} instead."
        )
    return size


def check_bool(value: object, option: str, dataset: str) -> bool:
    """``value`` if it is a bool.

    Raises:
        InvalidParameterError: any other value (a string ``"false"`` would otherwise be true).
    """
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidParameterError(
            f"The {option!r} option of {dataset!r} must be True or False. Got {value!r} instead."
        )
    return bool(value)


def decode_image(
    data: bytes | Path, *, grayscale: bool = False, size: ImageSize | None = None, where: str = ""
) -> np.ndarray:
    """Decode one image file to a uint8 array shaped ``(H, W, C)`` (C = 1 or 3).

    Args:
        data: the file's bytes, or its path.
        grayscale: convert to one channel ("L") instead of RGB.
        size: resize to ``(height, width)`` (bilinear) if given.
        where: a name for the image in error messages.

    Raises:
        DataError: the file is not a decodable image.
    """
    mode = "L" if grayscale else "RGB"
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
            if size is not None and im.format == "JPEG":
                im.draft(mode, (size[1], size[0]))
            if im.mode != mode:
                im = im.convert(mode)
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        raise DataError(f"Could not decode the image {where or 'data'}: {exc}") from None
    return arr[:, :, None] if arr.ndim == 2 else arr


def _stack(images: list[np.ndarray], names: list[str], where: str) -> np.ndarray:
    if not images:
        return np.zeros((0, 1, 1, 1), dtype=np.uint8)
    first = images[0].shape
    for img, name in zip(images, names, strict=True):
        if img.shape != first:
            raise DataError(
                f"Images of {where} differ in size: {names[0]} is {first[1]}x{first[0]} but "
                f"{name} is {img.shape[1]}x{img.shape[0]} (width x height). Pass the option "
                "image_size=(height, width) to resize them all."
            )
    return np.stack(images)


def _check_same_classes(train: list[str], test: list[str], where: str) -> None:
    if sorted(train) != sorted(test):
        only_train = sorted(set(train) - set(test))
        only_test = sorted(set(test) - set(train))
        raise DataError(
            f"{where}: the class folders of train/ and test/ differ: only in train/: "
            f"{only_train or 'none'}; only in test/: {only_test or 'none'}. Both must hold the "
            "same classes."
        )


def _from_records(
    records: dict[str, dict[str, list[tuple[str, np.ndarray]]]],
    where: str,
    declared: dict[str, list[str]] | None = None,
) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
    """``{split: {class: [(name, image)]}}`` -> arrays and class names.

    ``declared`` holds the class folders of each split where they are known (a folder tree);
    an archive's classes are those that hold images.
    """
    train_classes = sorted(declared["train"] if declared else records["train"])
    test_classes = sorted(declared["test"] if declared else records["test"])
    empty = [c for c in train_classes if not records["train"].get(c)]
    if empty:
        raise DataError(
            f"{where}: the class folders {', '.join(f'train/{c}/' for c in empty)} hold no "
            f"images (image endings: {', '.join(IMAGE_EXTENSIONS)}). Every class needs training "
            "images; remove the empty folders."
        )
    if not train_classes:
        raise DataError(
            f"{where}: no class folder with images under train/. Expected train/<class>/<image> "
            f"and test/<class>/<image> (image endings: {', '.join(IMAGE_EXTENSIONS)})."
        )
    _check_same_classes(train_classes, test_classes, where)
    arrays: dict[str, np.ndarray] = {}
    for split in _SPLITS:
        images, labels, names = [], [], []
        for label, cls in enumerate(train_classes):
            for name, img in sorted(records[split].get(cls, []), key=lambda r: r[0]):
                images.append(img)
                labels.append(label)
                names.append(name)
        arrays[f"x_{split}"] = _stack(images, names, where)
        arrays[f"y_{split}"] = np.asarray(labels, dtype=np.int64)
    if len(arrays["x_test"]) and arrays["x_test"].shape[1:] != arrays["x_train"].shape[1:]:
        raise DataError(
            f"{where}: train images are shaped {arrays['x_train'].shape[1:]} (H, W, C) but test "
            f"images {arrays['x_test'].shape[1:]}. Pass image_size=(height, width)."
        )
    if not len(arrays["x_test"]):
        arrays["x_test"] = np.zeros((0, *arrays["x_train"].shape[1:]), dtype=np.uint8)
    return arrays, tuple(train_classes)


def _class_folders(root: Path) -> dict[str, list[str]]:
    """The class sub-folders of ``root/train`` and ``root/test``."""
    out = {}
    for split in _SPLITS:
        base = root / split
        if not base.is_dir():
            raise DataError(
                f"{str(root)!r} has no {split}/ folder. Expected train/<class>/<image> and "
                "test/<class>/<image>."
            )
        out[split] = sorted(p.name for p in base.iterdir() if p.is_dir() and p.name[0] != ".")
    return out


def _folder_files(
    root: Path, declared: dict[str, list[str]]
) -> Iterator[tuple[str, str, str, Path]]:
    """``(split, class, relative name, path)`` for every image file of a folder tree."""
    for split in _SPLITS:
        for cls in declared[split]:
            cls_dir = root / split / cls
            for dirpath, dirnames, filenames in os.walk(cls_dir):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for fname in sorted(filenames):
                    path = Path(dirpath) / fname
                    rel = path.relative_to(cls_dir).as_posix()
                    if _is_image(rel.split("/")):
                        yield split, cls_dir.name, rel, path


def _archive_files(path: Path) -> Iterator[tuple[str, str, str, bytes]]:
    """``(split, class, relative name, bytes)`` for every image member of an archive."""
    prefix: tuple[str, ...] | None = None
    for parts, data in iter_tar_files(path, _is_tree_image):  # others are skipped, never read
        hit = _split_position(parts)
        if hit is None:  # not reached: _is_tree_image selected it
            continue
        if prefix is None:
            prefix = parts[:hit]
        elif parts[:hit] != prefix:
            raise DataError(
                f"{str(path)!r} holds train/ and test/ trees under different folders "
                f"({'/'.join(prefix) or 'top level'} and {'/'.join(parts[:hit]) or 'top level'}). "
                "Expected one train/ and one test/ tree."
            )
        yield parts[hit], parts[hit + 1], "/".join(parts[hit + 2 :]), data


def _is_tree_image(parts: tuple[str, ...]) -> bool:
    """Whether an archive member is an image under ``train|test/<class>/``."""
    return _split_position(parts) is not None and _is_image(parts)


def _split_position(parts: tuple[str, ...]) -> int | None:
    """Index of the ``train``/``test`` part followed by a class folder and a file, or ``None``."""
    for i in range(len(parts) - 2):
        if parts[i] in _SPLITS:
            return i
    return None


def _decode_all(
    items: Iterable[tuple[str, str, str, bytes | Path]],
    grayscale: bool,
    size: ImageSize | None,
) -> dict[str, dict[str, list[tuple[str, np.ndarray]]]]:
    records: dict[str, dict[str, list[tuple[str, np.ndarray]]]] = {s: {} for s in _SPLITS}
    for split, cls, name, data in items:
        img = decode_image(data, grayscale=grayscale, size=size, where=f"{split}/{cls}/{name}")
        records[split].setdefault(cls, []).append((name, img))
    return records


def read_image_tree(
    source: Path,
    *,
    name: str,
    image_size: int | Sequence[int] | None = None,
    grayscale: bool = False,
    cache: bool = True,
) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
    """Decode an image tree (folder or tar archive) to uint8 arrays, through the cache.

    Args:
        source: a folder holding ``train/`` and ``test/``, or a tar archive of that layout.
        name: the dataset's name (part of the cache key and of messages).
        image_size: resize every image to this ``(height, width)`` (or square) size.
        grayscale: decode to one channel instead of RGB.
        cache: read and write the decoded-image cache.

    Returns:
        ``{"x_train", "y_train", "x_test", "y_test"}`` (images uint8 ``(N, H, W, C)``, labels
        int64) and the class names.

    Raises:
        DataError: missing folders, mismatched classes, undecodable or differently sized images.
    """
    source = Path(source)
    size = check_image_size(image_size, name)
    where = f"Dataset {name!r} at {str(source)!r}"
    archive = source.is_file()
    if archive and not is_archive(source):
        raise DataError(
            f"{where}: a file that is not a tar archive (.tar.gz, .tgz, .tar, ...). Give a folder "
            "holding train/<class>/<image> and test/<class>/<image>, or an archive of one."
        )
    if not archive and not source.is_dir():
        raise DataError(
            f"{where}: no such folder or archive. Expected a folder holding train/<class>/<image> "
            "and test/<class>/<image>, or a .tar.gz of that layout."
        )
    key_options = {"image_size": size, "grayscale": bool(grayscale)}
    sources = [source] if archive else [source / s for s in _SPLITS]
    key = cache_key(name, sources, key_options) if cache else ""
    if cache:
        hit = load_cached(name, key)
        if hit is not None and {*_ARRAY_KEYS, "class_names"} <= set(hit):
            return (
                {k: hit[k] for k in _ARRAY_KEYS},
                tuple(str(c) for c in hit["class_names"].tolist()),
            )
    declared = None if archive else _class_folders(source)
    if declared is not None:
        _check_same_classes(declared["train"], declared["test"], where)
    items = _archive_files(source) if archive else _folder_files(source, declared or {})
    records = _decode_all(items, bool(grayscale), size)
    arrays, class_names = _from_records(records, where, declared)
    if cache:
        try:
            save_cached(name, key, {**arrays, "class_names": np.asarray(class_names, dtype=str)})
        except OSError as exc:
            warnings.warn(
                f"Could not write the decoded-image cache for {name!r}: {exc}", stacklevel=2
            )
    return arrays, class_names


def _to_nchw_float(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous()
    return t.to(torch.float32).div_(255.0)


def bundle_from_arrays(
    name: str, arrays: dict[str, np.ndarray], class_names: Sequence[str], options: dict
) -> DataBundle:
    """A :class:`DataBundle` from uint8 ``(N, H, W, C)`` images and int labels."""
    return DataBundle(
        name=name,
        train=ArrayDataset(_to_nchw_float(arrays["x_train"]), arrays["y_train"]),
        test=ArrayDataset(_to_nchw_float(arrays["x_test"]), arrays["y_test"]),
        class_names=tuple(class_names),
        options=options,
    )


@register_dataset(
    "imagefolder",
    description="your own images: train/<class>/* and test/<class>/*, as a folder or a .tar.gz",
    num_classes=None,
    input_shape=None,
    needs_root=True,
    formats=("folder train/<class>/*, test/<class>/*", ".tar.gz / .tgz / .tar of that layout"),
)
def load_image_folder(
    root: Path | None = None,
    download: bool = False,
    image_size: int | tuple[int, int] | None = None,
    grayscale: bool = False,
    cache: bool = True,
) -> DataBundle:
    """Images from a folder tree (or a tar archive of one), one sub-folder per class.

    Args:
        root: a folder holding ``train/<class>/<image>`` and ``test/<class>/<image>``, or a
            ``.tar.gz`` (``.tgz``, ``.tar``, ...) of that layout.
        download: not supported (the data is the user's own); raises if true and ``root`` is
            missing.
        image_size: resize every image to ``(height, width)`` (an int for a square); by default
            all images must already have one size.
        grayscale: decode to one channel instead of RGB.
        cache: keep the decoded images in the cache, so the next load skips decoding.

    Returns:
        A bundle with images shaped ``(N, C, H, W)`` in [0, 1] and class names from the folders.

    Raises:
        DataError: missing folders, mismatched classes, undecodable or differently sized images.
    """
    root = Path(root) if root is not None else default_data_root() / "imagefolder"
    if download and not root.exists():
        raise DataError(
            f"Dataset 'imagefolder' has no public address to download from: it reads your own "
            f"images. {str(root)!r} does not exist; give root= a folder holding "
            "train/<class>/<image> and test/<class>/<image>, or a .tar.gz of one."
        )
    size = check_image_size(image_size, "imagefolder")
    grayscale = check_bool(grayscale, "grayscale", "imagefolder")
    cache = check_bool(cache, "cache", "imagefolder")
    arrays, class_names = read_image_tree(
        root, name="imagefolder", image_size=size, grayscale=grayscale, cache=cache
    )
    options = {"image_size": list(size) if size else None, "grayscale": bool(grayscale)}
    return bundle_from_arrays("imagefolder", arrays, class_names, options)
