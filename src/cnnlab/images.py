"""Turning a user's picture of a digit into the 28×28 input an MNIST network expects.

MNIST's digits were size-normalised to fit a 20×20 box (keeping their aspect
ratio) and centred by centre of mass in a 28×28 field, light ink on black.
``load_digit`` does the same to any PNG/JPEG: grey, inverted if the background
is light, cropped to the ink, fitted into 20×20, centred by mass.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import CnnlabError

SIDE, BOX = 28, 20


def grey_levels(image: Image.Image) -> np.ndarray:
    """Grey levels in [0, 255] as floats; transparent parts count as white paper."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    return np.asarray(image.convert("L"), dtype=np.float32)


def read_grey(path: str | Path) -> np.ndarray:
    """The image as a float array of grey levels in [0, 255]; CnnlabError if it is not one."""
    try:
        with Image.open(path) as image:
            return grey_levels(image)
    except FileNotFoundError:
        raise CnnlabError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise CnnlabError(f"{path}: not a readable image ({exc})") from None


def mnist_style(grey: np.ndarray, what: str = "image") -> np.ndarray:
    """A 28×28 float array in [0, 1], preprocessed as MNIST was (see the module doc)."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    ink = 255 - grey if np.median(border) > 127 else grey
    ink = ink - np.median(np.concatenate([ink[0], ink[-1], ink[:, 0], ink[:, -1]]))
    ink = np.clip(ink, 0, None)
    if ink.max() <= 0:
        raise CnnlabError(f"{what}: no digit found (the image is blank)")
    rows = np.flatnonzero(ink.max(axis=1) > 0.1 * ink.max())
    cols = np.flatnonzero(ink.max(axis=0) > 0.1 * ink.max())
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    scale = BOX / max(crop.shape)
    height = max(1, round(crop.shape[0] * scale))
    width = max(1, round(crop.shape[1] * scale))
    patch = Image.fromarray((crop / crop.max() * 255).astype(np.uint8))
    small = np.asarray(patch.resize((width, height), Image.Resampling.LANCZOS), np.float32) / 255
    ys, xs = np.indices(small.shape)
    mass = small.sum()
    top = int(np.clip(round((SIDE - 1) / 2 - (ys * small).sum() / mass), 0, SIDE - height))
    left = int(np.clip(round((SIDE - 1) / 2 - (xs * small).sum() / mass), 0, SIDE - width))
    canvas = np.zeros((SIDE, SIDE), np.float32)
    canvas[top : top + height, left : left + width] = small
    return canvas


def load_digit(path: str | Path) -> torch.Tensor:
    """A (1, 28, 28) float tensor in [0, 1] from an image file of a digit."""
    return torch.from_numpy(mnist_style(read_grey(path), str(path))).unsqueeze(0)
