"""Shared fixtures: MNIST (fetched once into the cache) and a small trained run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cnnlab.arch import parse_arch
from cnnlab.data import Part, Splits, load_splits
from cnnlab.network import Network
from cnnlab.train import TrainConfig, fit

SMALL_ARCH = "conv8x5-pool2-fc32-softmax10"


@pytest.fixture(scope="session")
def mnist() -> Splits:
    return load_splits("mnist", "nielsen")


def small_splits(mnist: Splits, train: int, held_out: int = 2000) -> Splits:
    """The first ``train`` training images and the first ``held_out`` validation/test images."""

    def first(part: Part, n: int) -> Part:
        return Part(part.images[:n], part.labels[:n])

    return Splits(
        first(mnist.train, train),
        first(mnist.validation, held_out),
        first(mnist.test, held_out),
        mnist.name,
        mnist.classes,
    )


def small_network(seed: int = 0, arch: str = SMALL_ARCH) -> Network:
    return Network.create({"input": [1, 28, 28], "layers": parse_arch(arch)}, seed=seed)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, mnist: Splits) -> Path:
    """A run folder (checkpoint, model, metrics) of a small network trained on 3,000 images."""
    out = tmp_path_factory.mktemp("run")
    data = small_splits(mnist, 3000)
    config = TrainConfig(epochs=2, batch_size=20, lr=0.05, momentum=0.9, schedule="onecycle")
    fit(small_network(), data, config, out=out, progress=False, log=lambda line: None)
    return out


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses MNIST (directly or through another fixture) carries the ``mnist``
    marker, so ``pytest -m "not mnist"`` runs the rest with no data at all."""
    for item in items:
        if "mnist" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.mnist)


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    torch.set_num_threads(2)
