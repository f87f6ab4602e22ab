"""Classic image filtering: a fixed convolution mask slid over a picture.

This is what a convolutional layer does with *learned* weights; here the
weights are chosen by hand. A mask is applied to every colour channel on its
own (a depthwise ``conv2d``), the border is extended by repeating edge pixels
so the output keeps the input's size without a false frame, and, as in a
convnet, the mask is not flipped (strictly, a cross-correlation).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import CnnlabError

MAX_MASK = 31
SCALINGS = ("auto", "clip", "abs", "signed")


@dataclass(frozen=True)
class Mask:
    """A named mask with a line saying what it finds."""

    name: str
    description: str
    weights: tuple[tuple[float, ...], ...]

    def tensor(self) -> Tensor:
        return torch.tensor(self.weights, dtype=torch.float32)


def _gaussian5() -> tuple[tuple[float, ...], ...]:
    row = (1, 4, 6, 4, 1)  # binomial weights: a small Gaussian
    return tuple(tuple(a * b / 256 for b in row) for a in row)


MASKS = {
    mask.name: mask
    for mask in [
        Mask(
            "edges",
            "edges in every direction (Laplacian-like)",
            ((0, -4, 0), (-4, 16, -4), (0, -4, 0)),
        ),
        Mask(
            "horizontal",
            "horizontal edges: light above dark is positive",
            ((2, 4, 8, 4, 2), (0, 0, 0, 0, 0), (-2, -4, -8, -4, -2)),
        ),
        Mask(
            "vertical",
            "vertical edges: light left of dark is positive",
            ((2, 0, -2), (4, 0, -4), (8, 0, -8), (4, 0, -4), (2, 0, -2)),
        ),
        Mask("sobel-horizontal", "Sobel's horizontal edges", ((1, 2, 1), (0, 0, 0), (-1, -2, -1))),
        Mask("sobel-vertical", "Sobel's vertical edges", ((1, 0, -1), (2, 0, -2), (1, 0, -1))),
        Mask("blur", "5×5 Gaussian blur (binomial weights, sum 1)", _gaussian5()),
        Mask(
            "sharpen",
            "sharpen: the pixel minus its neighbours",
            ((0, -1, 0), (-1, 5, -1), (0, -1, 0)),
        ),
    ]
}


def get_mask(name: str) -> Tensor:
    """A named mask as a 2-D tensor."""
    if name not in MASKS:
        raise CnnlabError(f"unknown mask {name!r}: choose one of {', '.join(MASKS)}")
    return MASKS[name].tensor()


def parse_kernel(text: str) -> Tensor:
    """A mask from text: JSON rows ``[[0,-1,0],[-1,5,-1],[0,-1,0]]`` or ``"0 -1 0; -1 5 -1; …"``."""
    try:
        if text.strip().startswith("["):
            rows = json.loads(text)
        else:
            rows = [
                [float(v) for v in re.split(r"[\s,]+", row.strip()) if v] for row in text.split(";")
            ]
    except (json.JSONDecodeError, ValueError, RecursionError):
        raise CnnlabError(
            f"cannot read the mask {text[:40]!r}: write rows like '1 2 1; 0 0 0'"
        ) from None
    valid = (
        isinstance(rows, list)
        and rows
        and all(isinstance(row, list) and row for row in rows)
        and all(len(row) == len(rows[0]) for row in rows)
        and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for row in rows
            for v in row
        )
    )
    if not valid:
        raise CnnlabError(
            f"the mask {text!r} is not a rectangle of numbers: write rows like '1 2 1; 0 0 0'"
        )
    if len(rows) > MAX_MASK or len(rows[0]) > MAX_MASK:
        raise CnnlabError(f"the mask is {len(rows)}×{len(rows[0])}; at most {MAX_MASK}×{MAX_MASK}")
    return torch.tensor(rows, dtype=torch.float32)


def convolve(image: Tensor, mask: Tensor) -> Tensor:
    """Filter a (channels, height, width) image with a 2-D mask, each channel on its own.

    The output has the input's size: the border is padded by repeating edge pixels.
    """
    channels = image.shape[0]
    kh, kw = mask.shape
    padded = F.pad(image[None], ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2), mode="replicate")
    weight = mask.to(image.dtype).expand(channels, 1, kh, kw)
    return F.conv2d(padded, weight, groups=channels)[0]


def to_display(response: Tensor, mask: Tensor, scaling: str = "auto") -> np.ndarray:
    """Filter responses → uint8 pixels (channels last).

    "clip": divide by the mask's sum (brightness kept) and clip to 0…255;
    "abs": |response|, the strongest 0.5% white (edge strength, light on dark);
    "signed": 0 is mid-grey, dark and light show the sign.
    "auto" is "clip" for masks that sum to more than 0 (blur, sharpen), else "abs".
    """
    if scaling not in SCALINGS:
        raise CnnlabError(f"unknown scaling {scaling!r}: choose one of {', '.join(SCALINGS)}")
    total = float(mask.sum())
    if scaling == "auto":
        scaling = "clip" if total > 1e-6 else "abs"
    if scaling == "clip":
        out = response / total if total > 1e-6 else response
    else:
        magnitude = response.abs()
        sample = magnitude.flatten()[:: max(1, magnitude.numel() // 1_000_000)]  # quantile's limit
        top = float(torch.quantile(sample, 0.995)) or 1.0
        out = magnitude / top * 255 if scaling == "abs" else 127.5 + response / top * 127.5
    return out.clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).squeeze(2).numpy()


def read_image(path: str | Path, grey: bool = False) -> Tensor:
    """An image file as a float (channels, height, width) tensor of 0…255: grey or RGB.

    Pillow is imported by the two functions that read and write files, so that
    importing the masks (every command's parser lists them) does not load it.
    """
    from .images import PICTURE_ERRORS, is_colour, levels, open_picture

    with open_picture(path) as image:
        try:
            pixels = np.asarray(levels(image, colour=is_colour(image) and not grey), np.float32)
        except PICTURE_ERRORS as exc:
            raise CnnlabError(f"{path}: damaged picture ({exc})") from None
    tensor = torch.from_numpy(pixels.copy())
    return tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)


def filter_file(
    source: str | Path,
    out: str | Path,
    mask: Tensor,
    scaling: str = "auto",
    grey: bool = False,
) -> tuple[int, int, int]:
    """Filter image file ``source`` with ``mask`` and write the result to ``out``.

    Returns the image's (channels, height, width).
    """
    from PIL import Image

    image = read_image(source, grey)
    pixels = to_display(convolve(image, mask), mask, scaling)
    try:
        Image.fromarray(pixels).save(out)
    except (ValueError, KeyError):
        raise CnnlabError(f"{out}: unknown image format; end the name in .png or .jpg") from None
    except OSError as exc:
        raise CnnlabError(f"{out}: cannot write ({exc})") from None
    return tuple(image.shape)
