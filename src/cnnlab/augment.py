"""More training data from the same images: the chapter's expansion and random distortions.

``expand`` is the chapter's algorithmic expansion (its expand_mnist.py): every
training image plus four copies shifted by one pixel up, down, left and right,
the uncovered border filled with zeros (50,000 → 250,000 images).

``distort`` makes new variants of a whole batch on the fly, as the best MNIST
results do: random translations, rotations and scaling (one affine map per
image), optionally followed by elastic distortion (a random displacement field
smoothed by a Gaussian, Simard et al. 2003). Everything is batched tensor work
(``affine_grid``/``grid_sample``); there is no Python loop over images. The
randomness comes from torch's generator, so a seeded run repeats itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .data import Part


def shift(images: Tensor, down: int, right: int) -> Tensor:
    """Images (N, C, H, W) moved by whole pixels; what moves out is lost, what comes in is 0."""
    out = torch.zeros_like(images)
    h, w = images.shape[-2:]
    out[..., max(down, 0) : h + min(down, 0), max(right, 0) : w + min(right, 0)] = images[
        ..., max(-down, 0) : h + min(-down, 0), max(-right, 0) : w + min(-right, 0)
    ]
    return out


CHAPTER_SHIFTS = ((-1, 0), (1, 0), (0, -1), (0, 1))  # up, down, left, right


def shifted_views(images: Tensor) -> list[Tensor]:
    """The images and their four one-pixel shifts: the chapter's expansion, for one batch.

    Averaging a network's probabilities over these views is test-time augmentation:
    a digit drawn a pixel off centre still meets a view it is centred in.
    """
    return [images] + [shift(images, d, r) for d, r in CHAPTER_SHIFTS]


def expand(part: Part, seed: int = 0) -> Part:
    """The chapter's 5× expansion, shuffled once (as its expanded file is) with ``seed``."""
    images = torch.cat([part.images] + [shift(part.images, d, r) for d, r in CHAPTER_SHIFTS])
    labels = part.labels.repeat(1 + len(CHAPTER_SHIFTS))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    return Part(images[order], labels[order])


@dataclass(frozen=True)
class Distortion:
    """Ranges of the random distortions; each image draws its own values uniformly."""

    max_shift: float = 0.0  # pixels
    max_rotation: float = 0.0  # degrees
    max_scale: float = 0.0  # relative: 0.1 means ×0.9 … ×1.1
    elastic_pixels: float = 0.0  # largest displacement of the elastic field, in pixels
    elastic_sigma: float = 4.0  # pixels: the Gaussian that smooths the field


DISTORTIONS = {
    "none": None,
    "shift": Distortion(max_shift=2),
    "affine": Distortion(max_shift=2, max_rotation=10, max_scale=0.1),
    "elastic": Distortion(max_shift=2, max_rotation=10, max_scale=0.1, elastic_pixels=2),
}


def _uniform(n: int, bound: float, like: Tensor) -> Tensor:
    return (torch.rand(n, device=like.device, dtype=like.dtype) * 2 - 1) * bound


def _gaussian_kernel(sigma: float, like: Tensor) -> Tensor:
    radius = math.ceil(3 * sigma)
    t = torch.arange(-radius, radius + 1, device=like.device, dtype=like.dtype)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    return g / g.sum()


def _elastic_offsets(n: int, h: int, w: int, d: Distortion, like: Tensor) -> Tensor:
    """A random field, smoothed by a separable Gaussian, at most ``elastic_pixels`` long."""
    field = torch.rand(n * 2, 1, h, w, device=like.device, dtype=like.dtype) * 2 - 1
    g = _gaussian_kernel(d.elastic_sigma, like)
    pad = len(g) // 2
    field = F.conv2d(F.pad(field, (pad, pad, 0, 0), mode="reflect"), g.view(1, 1, 1, -1))
    field = F.conv2d(F.pad(field, (0, 0, pad, pad), mode="reflect"), g.view(1, 1, -1, 1))
    field = field / field.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    field = field.view(n, 2, h, w).permute(0, 2, 3, 1) * d.elastic_pixels
    # pixels → grid units (the grid spans 2 across W and H)
    return field * torch.tensor([2 / w, 2 / h], device=like.device, dtype=like.dtype)


def distort(images: Tensor, d: Distortion) -> Tensor:
    """A randomly distorted copy of a float batch (N, C, H, W); values stay within their range."""
    n, _, h, w = images.shape
    angle = _uniform(n, math.radians(d.max_rotation), images)
    scale = 1 + _uniform(n, d.max_scale, images)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos, -sin, _uniform(n, d.max_shift * 2 / w, images)], 1),
            torch.stack([sin, cos, _uniform(n, d.max_shift * 2 / h, images)], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    if d.elastic_pixels > 0:
        grid = grid + _elastic_offsets(n, h, w, d, images)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
