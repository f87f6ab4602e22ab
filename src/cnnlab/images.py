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
inverted if the background is light, the paper's shading removed, cropped to the
ink, fitted into 20×20, centred by mass.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

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


SHADING_SIDE = 64  # the background's shading is estimated on a copy this size: it varies slowly


def background(ink: np.ndarray) -> np.ndarray:
    """The slowly varying part of ``ink`` (levels 0…255): what is left once every stroke
    narrower than a quarter of the picture is removed (a grey-level opening, then a blur).

    On a photograph of paper lit unevenly, this is the shading that would otherwise pass
    for ink; on a clean scan or a drawing it is about zero.
    """
    height, width = ink.shape
    scale = min(1.0, SHADING_SIDE / max(height, width))
    small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = Image.fromarray(np.clip(ink, 0, 255).astype(np.uint8)).resize(
        small_size, Image.Resampling.BOX
    )
    window = max(3, max(small_size) // 4 | 1)  # odd, as Pillow's rank filters want
    opened = small.filter(ImageFilter.MinFilter(window)).filter(ImageFilter.MaxFilter(window))
    smooth = opened.filter(ImageFilter.GaussianBlur(window / 2))
    return np.asarray(smooth.resize((width, height), Image.Resampling.BILINEAR), np.float32)


def otsu_threshold(levels: np.ndarray) -> float:
    """The level that best splits ``levels`` (0…255) into two classes (Otsu's method: the
    largest variance between the classes)."""
    counts = np.bincount(np.clip(levels, 0, 255).astype(np.int64).ravel(), minlength=256)
    weight = np.cumsum(counts)
    mass = np.cumsum(counts * np.arange(256))
    total, total_mass = weight[-1], mass[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_mass * weight - total * mass) ** 2 / (weight * (total - weight))
    return float(np.nanargmax(between[:-1]))


def _unshaded(ink: np.ndarray) -> np.ndarray:
    """``ink`` (0…255) as it would be on evenly lit paper.

    A photograph shows the paper's brightness times the ink's reflectance; with the paper
    estimated (``background``), ink = 255·(ink − paper's)/(255 − paper's) undoes the
    product. Where there was shading worth the name (over a tenth of the ink), the sensor's
    noise is then smoothed (a 3×3 median) and what is left below half Otsu's threshold cleared.
    """
    shading = background(ink)
    ink = np.clip(255 * (ink - shading) / np.maximum(255 - shading, 1), 0, 255)
    if ink.max() > 0 and shading.max() > 0.1 * ink.max():  # (an empty page has no ink at all)
        smooth = Image.fromarray(ink.astype(np.uint8)).filter(ImageFilter.MedianFilter(3))
        ink = np.asarray(smooth, np.float32).copy()
        ink[ink < otsu_threshold(ink) / 2] = 0
    return ink


def mnist_style(grey: np.ndarray, what: str = "image") -> np.ndarray:
    """A 28×28 float array in [0, 1], preprocessed as MNIST was (see the module doc)."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    ink = 255 - grey if np.median(border) > 127 else grey
    ink = _unshaded(ink)
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
