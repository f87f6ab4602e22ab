"""Reading pictures: one reader for picture folders, ``predict``, ``show`` and the explorer.

``open_picture`` accepts the formats cnnlab documents (PNG, JPEG, BMP, WebP);
``levels`` turns any of their modes into 8-bit grey or RGB (16-bit grey scaled,
not clipped; transparency composited on white paper; camera rotation applied);
``fit_picture`` resizes keeping the aspect ratio and crops the centre, the way
picture folders are cached, so a picture given to a trained network is prepared
exactly as its training pictures were.

Digits are a special case. MNIST's digits were size-normalised to fit a 20×20
box (keeping their aspect ratio) and centred by centre of mass in a 28×28
field, light ink on black. ``load_digit`` does the same to any picture: grey,
inverted if the background is light, cropped to the ink, fitted into 20×20,
centred by mass.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import CnnlabError

SIDE, BOX = 28, 20
FORMATS = ("PNG", "JPEG", "BMP", "WEBP")
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
DEEP_GREY = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
# what Pillow raises on a damaged file: its PNG reader says SyntaxError for a broken chunk
PICTURE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
)
# Pictures are used at 64×64 at most and digits fitted into 20×20: a larger picture is shrunk
# to this side right after decoding, so its copies while converting stay small.
MAX_DECODED_SIDE = 1024


def open_picture(path: str | Path) -> Image.Image:
    """A picture file opened lazily (header only); CnnlabError if it is not one cnnlab reads."""
    try:
        return Image.open(path, formats=FORMATS)
    except FileNotFoundError:
        raise CnnlabError(f"{path}: no such file") from None
    except PICTURE_ERRORS as exc:
        raise CnnlabError(
            f"{path}: not a readable image (cnnlab reads PNG, JPEG, BMP and WebP: {exc})"
        ) from None


def is_colour(image: Image.Image) -> bool:
    return image.mode not in GREY_MODES


def levels(image: Image.Image, colour: bool) -> Image.Image:
    """The picture as 8-bit "RGB" (``colour``) or "L", whatever its mode (see the module doc)."""
    image.load()
    ImageOps.exif_transpose(image, in_place=True)  # in place: no copy of a large picture
    image = _shrunk(image)
    if image.mode in DEEP_GREY:
        pixels = np.asarray(image, dtype=np.float32)
        if image.mode == "F":
            pixels = pixels * 255 if pixels.max() <= 1 else pixels
        else:  # 16-bit levels 0…65535
            pixels = pixels / 257
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "La", "PA", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    return image.convert("RGB" if colour else "L")


def _shrunk(image: Image.Image) -> Image.Image:
    """``image`` reduced by a whole factor (box filter) to at most MAX_DECODED_SIDE a side."""
    factor = -(-max(image.size) // MAX_DECODED_SIDE)
    if factor <= 1:
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    try:
        return image.reduce(factor)
    except ValueError:  # a mode Pillow cannot reduce (rare 16-bit variants): keep it whole
        return image


def fit_picture(image: Image.Image, size: tuple[int, int], colour: bool) -> np.ndarray:
    """(depth, height, width) uint8: resized keeping the aspect ratio, then the centre cropped.

    A JPEG is decoded at a reduced scale when it is much larger than ``size``.
    """
    height, width = size
    image.draft("RGB" if colour else "L", (width * 2, height * 2))
    fitted = ImageOps.fit(levels(image, colour), (width, height), Image.Resampling.LANCZOS)
    pixels = np.array(fitted, dtype=np.uint8)  # writable, so torch can share it
    return pixels.transpose(2, 0, 1) if colour else pixels[None]


def load_picture(path: str | Path, shape: tuple[int, int, int]) -> np.ndarray:
    """A picture file as a (depth, height, width) uint8 array, prepared as picture folders are."""
    with open_picture(path) as image:
        try:
            return fit_picture(image, shape[1:], shape[0] == 3)
        except PICTURE_ERRORS as exc:
            raise CnnlabError(f"{path}: damaged picture ({exc})") from None


def grey_levels(image: Image.Image) -> np.ndarray:
    """Grey levels in [0, 255] as floats; transparent parts count as white paper."""
    return np.asarray(levels(image, colour=False), dtype=np.float32)


def read_grey(path: str | Path) -> np.ndarray:
    """The image as a float array of grey levels in [0, 255]; CnnlabError if it is not one."""
    with open_picture(path) as image:
        try:
            return grey_levels(image)
        except PICTURE_ERRORS as exc:
            raise CnnlabError(f"{path}: damaged picture ({exc})") from None


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
