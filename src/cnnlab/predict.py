"""Inference: class probabilities, test-time views, and the user's pictures prepared for a network.

The one path for ``evaluate``, ``predict``, ``show``, ensembles and the
explorer. Images go in as uint8 (N, depth, height, width) or floats in [0, 1];
a network that standardises its inputs does so itself (see ``network.py``).

Test-time augmentation (``tta``) averages the probabilities over views of
every image: ``shifts`` adds its four one-pixel shifts (the chapter's
expansion), ``flip`` its mirror image (for networks trained with flips),
``flip+shifts`` both.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .allocator import LARGEST_HEAP_BLOCK
from .augment import shifted_views
from .data import Part
from .errors import CnnlabError
from .layers import ConvPool
from .network import Network
from .precision import autocast

TTA = ("none", "shifts", "flip", "flip+shifts")
PRECISION = "auto"  # bf16 where the hardware has it: twice the images per second on such CPUs
DIGIT_SETS = ("mnist",)


def tta_name(value: bool | str | None) -> str:
    """A checkpoint's ``tta`` setting, old (True/False) or new, as one of ``TTA``."""
    if value is None or value is False:
        return "none"
    if value is True:
        return "shifts"
    if value not in TTA:
        raise CnnlabError(f"tta must be one of {', '.join(TTA)}, got {value!r}")
    return value


def views(images: Tensor, tta: str) -> list[Tensor]:
    """The views of a float batch that test-time augmentation ``tta`` averages over."""
    base = [images, images.flip(3)] if "flip" in tta else [images]
    if "shifts" not in tta:
        return base
    return [view for image in base for view in shifted_views(image)]


def chunk_images(network: Network, most: int = 1000) -> int:
    """Images per evaluation chunk: at most ``most``, and few enough that the largest map fits one
    heap block kept by ``cnnlab.allocator``.

    glibc serves a larger block with fresh mmap pages every chunk, one page fault per 4 KiB:
    `best` in chunks of 1,000 faulted 286,000 times per 1,000 images and ran 1.3 times slower.
    """
    shapes = [network.input_shape] + [
        layer.pool.in_shape if isinstance(layer, ConvPool) else layer.out_shape
        for layer in network.layers
    ]
    largest = max(math.prod(shape) for shape in shapes) * 4  # bytes per image in fp32
    return max(1, min(most, LARGEST_HEAP_BLOCK // largest))


@torch.inference_mode()
def probabilities(
    network: Network,
    images: Tensor,
    precision: str = PRECISION,
    tta: bool | str = "none",
    batch_size: int | None = None,
) -> Tensor:
    """Class probabilities (N, classes) on the CPU, in chunks of ``batch_size`` images
    (by default ``chunk_images(network)``)."""
    network.eval()
    batch_size = chunk_images(network) if batch_size is None else batch_size
    tta = tta_name(tta)
    device = next(network.parameters()).device
    chunks = [torch.empty(0, network.classes)]
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size].to(device)
        x = chunk.float().div_(255) if chunk.dtype == torch.uint8 else chunk.float()
        shown = views(x, tta)
        with autocast(device, precision):
            scores = sum(network(view).float().softmax(1) for view in shown) / len(shown)
        chunks.append(scores.cpu())
    return torch.cat(chunks)


def labels(network: Network, images: Tensor, **options: Any) -> Tensor:
    """The most probable class of every image; ``options`` as for ``probabilities``."""
    return probabilities(network, images, **options).argmax(1)


def accuracy(
    network: Network, part: Part, precision: str = PRECISION, tta: bool | str = "none"
) -> float:
    """Fraction of ``part`` classified correctly."""
    predicted = labels(network, part.images, precision=precision, tta=tta)
    return (predicted == part.labels).float().mean().item()


def class_names(network: Network, meta: dict[str, Any]) -> list[str]:
    """The output classes' names: as saved with the checkpoint, else "0", "1", …"""
    names = meta.get("classes")
    if isinstance(names, list) and len(names) == network.classes:
        return [str(name) for name in names]
    return [str(i) for i in range(network.classes)]


def reads_digits(network: Network, meta: dict[str, Any]) -> bool:
    """Was this network trained on handwritten digits (so pictures get MNIST's preprocessing)?"""
    dataset = meta.get("dataset", "mnist" if network.input_shape == (1, 28, 28) else None)
    return dataset in DIGIT_SETS and network.input_shape == (1, 28, 28)


def prepare_picture(path: str | Path, network: Network, meta: dict[str, Any]) -> Tensor:
    """A picture file as the (depth, height, width) float input ``network`` expects.

    Digits as MNIST's were prepared (see ``images.py``); any other picture as the
    pictures of a folder are: grey or colour as the network's depth, resized
    keeping its aspect ratio, centre-cropped. Pillow is imported here, not with
    the module, since evaluating a test set never needs it.
    """
    from .images import load_digit, load_picture

    if reads_digits(network, meta):
        return load_digit(path)
    pixels = load_picture(path, network.input_shape)
    return torch.from_numpy(pixels).float().div_(255)
