"""Pictures as a camera would take them, for the tests of reading users' digits."""

from __future__ import annotations

import numpy as np
from PIL import Image


def shaded_photo(digit: np.ndarray, side: int = 280, seed: int = 0) -> np.ndarray:
    """A photograph (grey levels 0…255, uint8) of a 28×28 MNIST digit written in dark ink on
    paper lit from one corner: bright (235) there, dim (about 90) in the opposite corner, the
    ink absorbing 70% of the light that falls on it, plus the sensor's noise."""
    ink = Image.fromarray(digit.astype(np.uint8)).resize((side, side), Image.Resampling.BILINEAR)
    ink = np.asarray(ink, np.float32) / 255
    ys, xs = np.mgrid[0:side, 0:side] / (side - 1)
    paper = 235 - 110 * (xs + ys) / 2 - 35 * ((xs - 0.3) ** 2 + (ys - 0.3) ** 2)
    noise = np.random.default_rng(seed).normal(0, 4, (side, side))
    return np.clip(paper * (1 - 0.7 * ink) + noise, 0, 255).astype(np.uint8)
