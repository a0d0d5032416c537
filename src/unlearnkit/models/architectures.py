"""The built-in architectures: ``mlp``, ``cnn`` and a CIFAR-style ``resnet18``."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

from torch import nn

from unlearnkit.exceptions import InvalidParameterError, short_repr

__all__ = ["CNN", "MAX_WIDTH", "MLP", "ResNet18"]

#: The most units or channels one layer may have: larger sizes overflow torch's integers long
#: before they fit in memory (the model's total size is bounded by ``build_model`` too).
MAX_WIDTH = 2**24


def _sizes(arch: str, name: str, value: object) -> tuple[int, ...]:
    """``value`` as a tuple of layer sizes, each an int in [1, MAX_WIDTH]; else a one-line
    :class:`InvalidParameterError`."""
    items = value if isinstance(value, (tuple, list)) else None
    if items is None or not all(_is_size(v) for v in items):
        raise InvalidParameterError(
            f"The {name!r} argument of model {arch!r} must be a list of layer sizes, each an int "
            f"in the range [1, {MAX_WIDTH}]. Got {short_repr(value)} instead."
        )
    return tuple(int(v) for v in items)


def _size(arch: str, name: str, value: object) -> int:
    if not _is_size(value):
        raise InvalidParameterError(
            f"The {name!r} argument of model {arch!r} must be an int in the range "
            f"[1, {MAX_WIDTH}]. Got {short_repr(value)} instead."
        )
    return int(value)  # type: ignore[call-overload]


def _is_size(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_WIDTH


class MLP(nn.Module):
    """Flatten, then fully connected layers with ReLU."""

    def __init__(
        self, *, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (256, 128)
    ) -> None:
        super().__init__()
        dims = [math.prod(input_shape), *_sizes("mlp", "hidden", hidden)]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in itertools.pairwise(dims):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class CNN(nn.Module):
    """A small conv net for 8x8 to 32x32 images.

    Two blocks of two 3x3 convolutions with ReLU, each block followed by 2x2 max-pooling, an
    adaptive average pool to 2x2, and a two-layer classifier head. No batch normalisation, so
    that per-sample gradients and importances are exact in one batched pass.
    """

    def __init__(
        self,
        *,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (32, 64),
        hidden: int = 128,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise InvalidParameterError(
                f"'cnn' needs image inputs shaped (C, H, W); got input_shape {tuple(input_shape)}."
            )
        c_in, h, w = input_shape
        if min(h, w) < 4:
            raise InvalidParameterError(f"'cnn' needs images of at least 4x4; got {h}x{w}.")
        channels = _sizes("cnn", "channels", channels)
        hidden = _size("cnn", "hidden", hidden)
        blocks: list[nn.Module] = []
        for c in channels:
            blocks += [
                nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU(),
                nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            c_in = c
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(c_in * 4, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)))


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 with the usual CIFAR stem (3x3 conv, stride 1, no max-pool).

    ``width`` multiplies every layer's channels (64, 128, 256, 512); ``width=0.25`` is a narrow
    net that trains on a CPU.
    """

    def __init__(
        self, *, input_shape: Sequence[int], num_classes: int, width: float = 1.0
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise InvalidParameterError(
                f"'resnet18' needs image inputs shaped (C, H, W); got {tuple(input_shape)}."
            )
        if (isinstance(width, bool) or not isinstance(width, (int, float))
                or not math.isfinite(width) or not width > 0):
            raise InvalidParameterError(
                f"The 'width' parameter must be > 0. Got {short_repr(width)}"
                f"{' (it must be a finite number)' if width == math.inf else ''}.")
        widths = [max(1, round(c * width)) for c in (64, 128, 256, 512)]
        if widths[-1] > MAX_WIDTH:
            raise InvalidParameterError(
                f"The 'width' parameter of model 'resnet18' must be at most "
                f"{MAX_WIDTH / 512:g} (at most {MAX_WIDTH} channels a layer). Got {width!r}.")
        self.conv1 = nn.Conv2d(input_shape[0], widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        layers: list[nn.Module] = []
        c_in = widths[0]
        for i, c in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(c_in, c, stride), BasicBlock(c, c, 1)))
            c_in = c
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.pool(x).flatten(1))


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "cnn": CNN,
    "resnet18": ResNet18,
}
