"""Inference speed: images per second at batch 1000 and single-image latency, per preset.

    python benchmarks/inference.py                 # fast and conv2
    python benchmarks/inference.py fast --rounds 50

Networks are freshly initialised from each preset (speed does not depend on the
weights), saved and loaded back with ``Network.load``, and run through
``cnnlab.predict.probabilities`` (bf16 where the CPU has it natively), the call behind
``cnnlab predict`` and the explorer's probabilities. Times are medians over
``--rounds`` repetitions after a warm-up. The single-image figure is reported
twice: the network alone, and with ``mnist_style`` preprocessing of a 28×28
grey picture in front, which is what ``cnnlab predict`` does per file.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from cnnlab.data import load_splits
from cnnlab.images import mnist_style
from cnnlab.network import Network
from cnnlab.predict import probabilities
from cnnlab.presets import get_preset


def median_seconds(work: Callable[[], object], rounds: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        work()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def loaded(name: str, folder: Path) -> Network:
    """A fresh network of the preset, saved and read back as `cnnlab predict` reads it."""
    Network.from_spec(get_preset(name).spec()).save(folder / f"{name}.safetensors")
    return Network.load(folder / f"{name}.safetensors")[0]


def measure(network: Network, images: torch.Tensor, rounds: int) -> dict[str, float]:
    batch = images[:1000]
    one = images[:1]
    picture = (images[0, 0].numpy() * 255).astype(np.float32)  # a grey digit as a user gives it
    batch_seconds = median_seconds(lambda: probabilities(network, batch), rounds)
    single_seconds = median_seconds(lambda: probabilities(network, one), rounds * 10)
    with_preprocessing = median_seconds(
        lambda: probabilities(network, torch.from_numpy(mnist_style(picture))[None, None]),
        rounds * 10,
    )
    return {
        "images_per_second": len(batch) / batch_seconds,
        "batch_ms": batch_seconds * 1e3,
        "single_ms": single_seconds * 1e3,
        "single_with_preprocessing_ms": with_preprocessing * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("presets", nargs="*", default=["fast", "conv2"])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads,"
        f" CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    test = load_splits("mnist", "standard", 0).test
    images = test.images[:1000].float() / 255
    header = f"{'preset':<12}{'images/s (batch 1000)':>24}{'1 image':>12}"
    print(header + f"{'1 image + preprocessing':>26}")
    folder = Path(tempfile.mkdtemp())
    for name in args.presets:
        r = measure(loaded(name, folder), images, args.rounds)
        print(
            f"{name:<12}{r['images_per_second']:>24,.0f}{r['single_ms']:>10.3f} ms"
            f"{r['single_with_preprocessing_ms']:>24.3f} ms"
        )


if __name__ == "__main__":
    main()
