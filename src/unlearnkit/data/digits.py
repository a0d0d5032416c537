"""scikit-learn's bundled 8x8 handwritten digits: the embedded default dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unlearnkit.data.containers import ArrayDataset, DataBundle
from unlearnkit.data.registry import register_dataset
from unlearnkit.exceptions import InvalidParameterError


@register_dataset(
    "digits",
    description="scikit-learn's bundled 8x8 handwritten digits (1,797 images); no download",
    num_classes=10,
    input_shape=(1, 8, 8),
    needs_root=False,
    formats=("bundled with scikit-learn",),
)
def load_digits_dataset(
    root: Path | None = None,
    download: bool = False,
    test_size: float = 0.2,
    split_seed: int = 0,
) -> DataBundle:
    """The digits, scaled to [0, 1], with a seeded, stratified train/test split
    (default: 1,437 train / 360 test)."""
    if not 0.0 < test_size < 1.0:
        raise InvalidParameterError(
            f"The 'test_size' option of 'digits' must be a float in (0, 1). Got {test_size!r}."
        )
    # imported here, not at the top: scikit-learn takes ~2 s to import, which every
    # `unlearnkit` command (and `import unlearnkit`) would otherwise pay
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_size, random_state=split_seed, stratify=y
    )
    return DataBundle(
        name="digits",
        train=ArrayDataset(x_tr, y_tr),
        test=ArrayDataset(x_te, y_te),
        class_names=tuple(str(i) for i in range(10)),
        options={"test_size": test_size, "split_seed": split_seed},
    )
