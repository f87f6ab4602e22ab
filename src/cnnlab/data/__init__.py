"""Data sets: built-in ones (MNIST, Fashion-MNIST, CIFAR-10/100) and folders of the user's pictures.

One interface for every source: ``open_dataset`` gives a ``Dataset`` (uint8
images N×depth×height×width, labels, class names), ``load_splits`` the train /
validation / test ``Splits`` of it. A new source is one module that returns a
``Dataset``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .builtin import BUILTINS, DATASETS, fetch, get_builtin, load_builtin
from .cache import cache_dir, cache_path
from .parts import SPLITS, Dataset, Part, Splits, channel_statistics, split

__all__ = [
    "BUILTINS",
    "DATASETS",
    "SPLITS",
    "Dataset",
    "Part",
    "Splits",
    "cache_dir",
    "cache_path",
    "channel_statistics",
    "fetch",
    "get_builtin",
    "load_splits",
    "open_dataset",
]


def open_dataset(
    dataset: str = "mnist",
    data: str | Path | None = None,
    image_size: tuple[int, int] | list[int] | None = None,
    test_fraction: float = 0.2,
    log: Callable[[str], None] = lambda message: None,
    progress: bool = False,
) -> Dataset:
    """The picture folder ``data`` if given, else the built-in data set ``dataset``."""
    if data is not None:
        # Imported here: reading pictures needs Pillow and worker pools, which the
        # built-in sets never use, and every command would pay for their import.
        from .folder import load_folder

        size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        return load_folder(data, size, test_fraction, log, progress)
    return load_builtin(dataset, log)


def load_splits(
    dataset: str = "mnist",
    split_name: str = "nielsen",
    validation: int | None = None,
    train_subset: int | None = None,
    *,
    data: str | Path | None = None,
    image_size: tuple[int, int] | list[int] | None = None,
    test_fraction: float = 0.2,
    log: Callable[[str], None] = lambda message: None,
    progress: bool = False,
) -> Splits:
    """Train / validation / test parts of a data set (``parts.py`` describes the splits)."""
    whole = open_dataset(dataset, data, image_size, test_fraction, log, progress)
    return split(whole, split_name, validation, train_subset)
