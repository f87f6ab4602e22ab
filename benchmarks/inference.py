"""Inference speed: images per second at batch 1000 and single-image latency, per preset.

    python benchmarks/inference.py                 # fast and conv2
    python benchmarks/inference.py fast --rounds 50

Networks are freshly initialised from each preset (speed does not depend on the
weights), saved and loaded back with ``Network.load``, and run through
``cnnlab.predict.probabilities`` (bf16 where the CPU has it natively), the call behind
``cnnlab predict``. Times are medians over
``--rounds`` repetitions after a warm-up. The single-image figure is reported
twice: the network alone, and with ``mnist_style`` preprocessing of a 28×28
grey picture in front, which is what ``cnnlab predict`` does per file.

The same network is also exported (``cnnlab export``'s ``export_onnx``, verified
on the test images) and run by onnxruntime in fp32; cnnlab in fp32 is shown
beside it, since its default path uses bf16 where the CPU has it.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from timing import median_seconds

from cnnlab.data import load_splits
from cnnlab.export import OnnxModel, export_onnx
from cnnlab.images import mnist_style
from cnnlab.network import Network
from cnnlab.predict import probabilities
from cnnlab.presets import get_preset


def loaded(name: str, folder: Path) -> Network:
    """A fresh network of the preset, saved and read back as `cnnlab predict` reads it."""
    Network.from_spec(get_preset(name).spec()).save(folder / f"{name}.safetensors")
    return Network.load(folder / f"{name}.safetensors")[0]


def measure(
    score: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, rounds: int
) -> dict[str, float]:
    batch = images[:1000]
    one = images[:1]
    picture = (images[0, 0].numpy() * 255).astype(np.float32)  # a grey digit as a user gives it
    batch_seconds = median_seconds(lambda: score(batch), rounds)
    single_seconds = median_seconds(lambda: score(one), rounds * 10)
    with_preprocessing = median_seconds(
        lambda: score(torch.from_numpy(mnist_style(picture))[None, None]), rounds * 10
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
    header = f"{'preset':<12}{'path':<22}{'images/s (batch 1000)':>24}{'1 image':>12}"
    print(header + f"{'1 image + preprocessing':>26}")
    folder = Path(tempfile.mkdtemp())
    for name in args.presets:
        network = loaded(name, folder)
        export_onnx(network, {}, folder / f"{name}.onnx", test.images[:1000])
        network = loaded(name, folder)  # laid out for inference again after the export
        paths = {
            "cnnlab (auto: bf16)": partial(probabilities, network),
            "cnnlab fp32": partial(probabilities, network, precision="fp32"),
            "onnxruntime fp32": OnnxModel(folder / f"{name}.onnx").probabilities,
        }
        for path, score in paths.items():
            r = measure(score, images, args.rounds)
            print(
                f"{name:<12}{path:<22}{r['images_per_second']:>24,.0f}{r['single_ms']:>10.3f} ms"
                f"{r['single_with_preprocessing_ms']:>24.3f} ms",
                flush=True,
            )


if __name__ == "__main__":
    main()
