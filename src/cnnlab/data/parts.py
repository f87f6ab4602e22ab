"""A data set as cnnlab holds it, and the train / validation / test splits made from it.

Every source — a built-in set or a folder of pictures — gives a ``Dataset``:
uint8 images (N, depth, height, width) and int64 labels for its training and
test parts (and a validation part if the source has one), with class names.
Splits are slices of it, never copies, so a memory-mapped folder stays on disk:

- ``nielsen``: the chapter's split of the MNIST family, 50,000 train /
  10,000 validation / 10,000 test (for other data sets, the same as standard);
- ``standard``: the training images minus a validation slice taken from their
  end (by default 10,000 for the MNIST family, 5,000 for CIFAR, a tenth of a
  picture folder or its own ``val/`` folder; 0 for none) / the test images.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import DataError

SPLITS = ("nielsen", "standard")
NIELSEN_VALIDATION = 10_000


@dataclass
class Part:
    """Images (N, depth, height, width) uint8 and labels (N,) int64 of one part of a split."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_arrays(cls, images: np.ndarray, labels: np.ndarray) -> Part:
        """A part over NumPy arrays (a memory map stays one); grey (N, H, W) images get depth 1."""
        if images.ndim == 3:
            images = images[:, None]
        return cls(torch.from_numpy(images), torch.from_numpy(np.asarray(labels, np.int64)))

    def head(self, n: int) -> Part:
        return Part(self.images[:n], self.labels[:n])

    def tail(self, n: int) -> Part:
        return Part(self.images[len(self) - n :], self.labels[len(self) - n :])


@dataclass
class Dataset:
    """A whole data set: its parts, class names and where it came from."""

    name: str
    classes: list[str]
    train: Part
    test: Part
    source: str
    validation: Part | None = None  # a source's own validation part (a folder's val/)
    default_validation: int = 0  # images the standard split holds out when none is asked for
    mnist_family: bool = False  # 60,000 + 10,000 images of 28×28: the nielsen split applies
    notes: list[str] = field(default_factory=list)  # for `cnnlab data info`: skipped files, …

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]


@dataclass
class Splits:
    train: Part
    validation: Part | None
    test: Part
    name: str
    classes: list[str]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]


def split(
    dataset: Dataset,
    split: str = "nielsen",
    validation: int | None = None,
    train_subset: int | None = None,
) -> Splits:
    """Train / validation / test parts of ``dataset`` (see the module doc for the splits)."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    train, held_out = dataset.train, dataset.validation
    if held_out is not None:
        if validation not in (None, len(held_out)):
            raise DataError(f"{dataset.name} has its own validation part: drop --validation")
    elif split == "nielsen" and dataset.mnist_family:
        if validation not in (None, NIELSEN_VALIDATION):
            raise DataError("the nielsen split has a fixed 10,000-image validation set")
        validation = NIELSEN_VALIDATION
    else:
        n_val = dataset.default_validation if validation is None else validation
        if isinstance(n_val, bool) or not isinstance(n_val, int) or not 0 <= n_val < len(train):
            raise DataError(f"validation size must be a whole number from 0 to {len(train) - 1:,}")
        held_out = train.tail(n_val) if n_val else None
        train = train.head(len(train) - n_val)
    if held_out is None and validation:
        held_out = train.tail(validation)
        train = train.head(len(train) - validation)
    if train_subset is not None:
        if isinstance(train_subset, bool) or not 1 <= train_subset <= len(train):
            raise DataError(f"--train-subset must be between 1 and {len(train):,}")
        train = train.head(train_subset)
    return Splits(train, held_out, dataset.test, dataset.name, list(dataset.classes))


def channel_statistics(images: torch.Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Mean and standard deviation of each channel over uint8 images, as fractions of 255.

    Summed chunk by chunk in float64, so a memory-mapped set larger than RAM is read once
    and never held whole.
    """
    depth = images.shape[1]
    total = torch.zeros(depth, dtype=torch.float64)
    squares = torch.zeros(depth, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].to(torch.float64).div_(255)
        total += x.sum((0, 2, 3))
        squares += x.square().sum((0, 2, 3))
    count = len(images) * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt().clamp_min(1e-3)
    return mean.tolist(), std.tolist()
