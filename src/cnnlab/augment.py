"""More training data from the same images: the chapter's expansion and random distortions.

``expand`` is the chapter's algorithmic expansion (its expand_mnist.py): every
training image plus four copies shifted by one pixel up, down, left and right,
the uncovered border filled with zeros (50,000 → 250,000 images).

``distort`` makes new variants of a whole batch on the fly, as the best MNIST
results do: random translations, rotations and scaling (one affine map per
image), optionally followed by elastic distortion (a random displacement field
smoothed by a Gaussian, Simard et al. 2003).

For natural pictures there are the augmentations of the CIFAR-10 speed
records: ``crop`` (pad by an eighth of the side, cut a random window of the
original size), ``flip`` (mirror left–right, half the images), ``cutout``
(erase a random square of half the side, DeVries & Taylor 2017) and ``jitter``
(random brightness, contrast and, on colour, saturation). A flip turns a 2 into
a mirrored 2, so no digit preset uses it.

``Augmenter.parse("crop,flip,cutout")`` chains them. Everything is batched
tensor work; there is no Python loop over images. The randomness comes from
torch's generator, so a seeded run repeats itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor

from .data import Part
from .errors import CnnlabError


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


def _reflected(positions: Tensor, n: int) -> Tensor:
    """Positions beyond 0 … n−1 mirrored back in, as ``F.pad(mode="reflect")`` does (the edge
    not repeated), however far out: pictures smaller than the Gaussian bounce more than once."""
    if n == 1:
        return torch.zeros_like(positions)
    period = 2 * (n - 1)
    positions = positions.remainder(period)
    return torch.where(positions < n, positions, period - positions)


def _smoothing_matrix(n: int, sigma: float, like: Tensor) -> Tensor:
    """The (n, n) matrix of a Gaussian blur along one side with reflected borders.

    One matrix product blurs every row of a batch at once: several times faster on a CPU
    than a one-channel convolution of the padded field, and defined for any side.
    """
    g = _gaussian_kernel(sigma, like)
    radius = len(g) // 2
    taps = torch.arange(-radius, radius + 1, device=like.device)
    sources = _reflected(torch.arange(n, device=like.device)[:, None] + taps, n)
    blur = torch.zeros(n, n, device=like.device, dtype=like.dtype)
    return blur.scatter_add_(1, sources, g.expand(n, -1))


def _elastic_offsets(n: int, h: int, w: int, d: Distortion, like: Tensor) -> Tensor:
    """A random field, smoothed by a separable Gaussian, at most ``elastic_pixels`` long."""
    field = torch.rand(n * 2, h, w, device=like.device, dtype=like.dtype) * 2 - 1
    across = _smoothing_matrix(w, d.elastic_sigma, like)
    field = _smoothing_matrix(h, d.elastic_sigma, like) @ field @ across.t()
    field = field / field.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1)
    field = field.view(n, 2, h, w).permute(0, 2, 3, 1) * d.elastic_pixels
    # pixels → grid units (the grid spans 2 across W and H)
    return field * torch.tensor([2 / w, 2 / h], device=like.device, dtype=like.dtype)


def affine_grid(theta: Tensor, h: int, w: int) -> Tensor:
    """``F.affine_grid(theta, (N, C, h, w), align_corners=False)``, by broadcasting.

    Equal to it to rounding, and several times faster on CPU for MNIST batches (see
    benchmarks/augment.py), where torch's version (a batched matmul against a base grid)
    costs more than the sampling.
    """

    def centres(n: int) -> Tensor:  # of n pixels, in grid units (-1 … 1 across the side)
        return (torch.arange(n, device=theta.device, dtype=theta.dtype) * 2 + 1) / n - 1

    xs, ys = centres(w), centres(h).view(h, 1)
    t = theta[..., None, None]  # (N, 2, 3, 1, 1)
    grid = t[:, :, 0] * xs + (t[:, :, 1] * ys + t[:, :, 2])  # (N, 2, h, w): x and y to sample
    return grid.permute(0, 2, 3, 1)


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
    grid = affine_grid(theta, h, w)
    if d.elastic_pixels > 0:
        grid = grid + _elastic_offsets(n, h, w, d, images)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# ---- natural pictures -----------------------------------------------------------------------
def random_crop(images: Tensor, padding: int | None = None) -> Tensor:
    """Each image zero-padded by ``padding`` (default: an eighth of the side), then a random
    window of the original size cut from it: a random shift of up to ``padding`` pixels.

    The windows are read with one gather over each padded map's pixels in a row, one index
    per output pixel shared by the channels: on a CPU about five times faster than indexing
    batch, channel, row and column at once (docs/performance.md).
    """
    n, c, h, w = images.shape
    pad = max(1, round(min(h, w) / 8)) if padding is None else padding
    padded = F.pad(images, (pad, pad, pad, pad))
    top = torch.randint(0, 2 * pad + 1, (n, 1), device=images.device)
    left = torch.randint(0, 2 * pad + 1, (n, 1), device=images.device)
    rows = (top + torch.arange(h, device=images.device))[:, :, None]
    cols = (left + torch.arange(w, device=images.device))[:, None, :]
    pixels = (rows * (w + 2 * pad) + cols).view(n, 1, h * w).expand(n, c, h * w)
    return padded.view(n, c, -1).gather(2, pixels).view(n, c, h, w)


def random_flip(images: Tensor) -> Tensor:
    """Half the images (chosen at random) mirrored left to right."""
    flipped = torch.rand(len(images), device=images.device) < 0.5
    return torch.where(flipped[:, None, None, None], images.flip(3), images)


def cutout(images: Tensor, size: int | None = None) -> Tensor:
    """A random size×size square (default half the side; clipped at the border) of each image
    set to the batch's mean of each channel, so the network learns from every part."""
    n, _, h, w = images.shape
    side = max(1, min(h, w) // 2) if size is None else size
    centre_y = torch.randint(0, h, (n, 1), device=images.device)
    centre_x = torch.randint(0, w, (n, 1), device=images.device)
    rows = (torch.arange(h, device=images.device) - centre_y + side // 2).clamp(min=-1)
    cols = (torch.arange(w, device=images.device) - centre_x + side // 2).clamp(min=-1)
    inside = ((rows >= 0) & (rows < side))[:, :, None] & ((cols >= 0) & (cols < side))[:, None, :]
    mean = images.mean((0, 2, 3), keepdim=True)
    return torch.where(inside[:, None], mean, images)


def colour_jitter(images: Tensor, strength: float = 0.2) -> Tensor:
    """Brightness, contrast and (with 3 channels) saturation each scaled by a random factor in
    1 ± ``strength`` per image; values stay in [0, 1]."""
    n = len(images)

    def factor() -> Tensor:
        return (1 + _uniform(n, strength, images)).view(n, 1, 1, 1)

    x = images * factor()
    grey = x.mean(1, keepdim=True) if x.shape[1] == 3 else x
    x = (x - grey.mean((2, 3), keepdim=True)) * factor() + grey.mean((2, 3), keepdim=True)
    if x.shape[1] == 3:
        grey = x.mean(1, keepdim=True)
        x = grey + (x - grey) * factor()
    return x.clamp(0, 1)


# In the order they apply, whatever order they are named in; cutout last, on the final picture.
AUGMENTATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    **{name: partial(distort, d=d) for name, d in DISTORTIONS.items() if d is not None},
    "crop": random_crop,
    "flip": random_flip,
    "jitter": colour_jitter,
    "cutout": cutout,
}


def augmentation_names(text: str) -> list[str]:
    """The augmentations a comma-separated list names ("none" or "" for none), checked."""
    names = [name.strip() for name in text.split(",") if name.strip() not in ("", "none")]
    unknown = [name for name in names if name not in AUGMENTATIONS]
    if unknown:
        raise CnnlabError(
            f"unknown augmentation {unknown[0]!r}: choose from none, {', '.join(AUGMENTATIONS)}"
            " (several joined by commas, e.g. crop,flip,cutout)"
        )
    distortions = [name for name in names if name in DISTORTIONS]
    if len(distortions) > 1:
        raise CnnlabError(f"choose one of {', '.join(distortions)}: each includes the ones before")
    return [name for name in AUGMENTATIONS if name in names]


def augmenter(text: str) -> Callable[[Tensor], Tensor] | None:
    """One function applying every augmentation ``text`` names to a float batch, or None."""
    steps = [AUGMENTATIONS[name] for name in augmentation_names(text)]
    if not steps:
        return None

    def apply(images: Tensor) -> Tensor:
        for step in steps:
            images = step(images)
        return images

    return apply
