"""Expansion and augmentation: exact shifts, and distortions that keep what they must."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlab.augment import (
    CHAPTER_SHIFTS,
    DISTORTIONS,
    Distortion,
    _gaussian_kernel,
    _smoothing_matrix,
    affine_grid,
    augmentation_names,
    augmenter,
    colour_jitter,
    cutout,
    distort,
    expand,
    random_crop,
    random_flip,
    shift,
)
from cnnlab.data import Part
from cnnlab.errors import CnnlabError


def test_shift_moves_pixels_and_fills_the_border_with_zeros():
    image = torch.arange(1, 17, dtype=torch.uint8).reshape(1, 1, 4, 4)
    down = shift(image, 1, 0)[0, 0]
    assert down[0].tolist() == [0, 0, 0, 0]
    assert torch.equal(down[1:], image[0, 0, :3])
    left = shift(image, 0, -1)[0, 0]
    assert left[:, -1].tolist() == [0, 0, 0, 0]
    assert torch.equal(left[:, :3], image[0, 0, :, 1:])


def test_expand_is_the_chapter_five_fold_expansion(mnist):
    part = Part(mnist.train.images[:50], mnist.train.labels[:50])
    expanded = expand(part, seed=1)
    assert len(expanded) == 250
    expected = [part.images] + [shift(part.images, d, r) for d, r in CHAPTER_SHIFTS]
    pool = torch.cat(expected)
    # every expanded image is exactly one of the originals or their one-pixel shifts, with its label
    flat_pool = pool.flatten(1)
    for image, label in zip(expanded.images[:60], expanded.labels[:60]):
        matches = (flat_pool == image.flatten()).all(1).nonzero().flatten()
        assert len(matches) >= 1
        assert label == part.labels[matches[0] % 50]
    assert sorted(expanded.labels.tolist()) == sorted(part.labels.repeat(5).tolist())


@pytest.mark.parametrize("name", [n for n, d in DISTORTIONS.items() if d is not None])
def test_distortions_keep_shape_and_range_and_repeat_under_a_seed(mnist, name):
    x = mnist.test.images[:64].float() / 255
    torch.manual_seed(5)
    a = distort(x, DISTORTIONS[name])
    torch.manual_seed(5)
    b = distort(x, DISTORTIONS[name])
    assert a.shape == x.shape and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    assert not torch.allclose(a, x)
    # the digit survives: most of its ink is still there
    assert (a.sum((1, 2, 3)) / x.sum((1, 2, 3))).min() > 0.7


@pytest.mark.parametrize("side", [1, 2, 5, 28])
def test_elastic_smoothing_is_a_gaussian_blur_with_reflected_borders(side):
    """The blur matrix against NumPy's reflect padding and convolution, also for sides shorter
    than the Gaussian's radius (12 pixels at σ 4), where the border reflects more than once."""
    values = torch.randn(side, dtype=torch.float64, generator=torch.Generator().manual_seed(side))
    g = _gaussian_kernel(4.0, values).numpy()
    radius = len(g) // 2
    expected = np.convolve(np.pad(values.numpy(), radius, mode="reflect"), g, mode="valid")
    blurred = _smoothing_matrix(side, 4.0, values) @ values
    np.testing.assert_allclose(blurred.numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("shape", [(4, 3, 8, 8), (2, 1, 5, 12), (1, 1, 1, 1)])
def test_elastic_distortion_works_on_pictures_smaller_than_its_gaussian(shape):
    x = torch.rand(shape)
    out = distort(x, DISTORTIONS["elastic"])
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("shape", [(5, 28, 28), (3, 20, 33), (1, 1, 7), (2, 7, 1), (1, 1, 1)])
def test_affine_grid_matches_torchs(shape):
    n, h, w = shape
    theta = torch.eye(2, 3) + 0.3 * torch.randn(n, 2, 3, generator=torch.Generator().manual_seed(h))
    expected = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    assert torch.allclose(affine_grid(theta, h, w), expected, atol=1e-6)


def test_no_distortion_is_the_identity(mnist):
    x = mnist.test.images[:8].float() / 255
    assert torch.allclose(distort(x, Distortion()), x, atol=1e-5)


def test_random_shifts_stay_within_their_range(mnist):
    x = mnist.test.images[:200].float() / 255
    moved = distort(x, Distortion(max_shift=2))
    rows = torch.arange(28.0).view(1, 1, 28, 1)

    def centre(t):
        return (t * rows).sum((1, 2, 3)) / t.sum((1, 2, 3))

    assert (centre(moved) - centre(x)).abs().max() <= 2.5


def test_crop_with_padding_is_a_whole_pixel_shift_of_each_image():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 32, 32) + 0.1  # no zeros: the padding's zeros show where it shifted
    cropped = random_crop(x)
    for original, out in zip(x, cropped):
        found = [
            (d, r)
            for d in range(-4, 5)
            for r in range(-4, 5)
            if torch.equal(shift(original[None], d, r)[0], out)
        ]
        assert len(found) == 1


def test_flip_mirrors_about_half_the_images_and_leaves_the_rest():
    torch.manual_seed(0)
    x = torch.rand(400, 1, 8, 8)
    out = random_flip(x)
    mirrored = (out == x.flip(3)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert bool((mirrored | kept).all())
    assert 150 < int(mirrored.sum()) < 250


def test_cutout_erases_one_square_of_half_the_side_to_the_channel_mean():
    torch.manual_seed(0)
    x = torch.rand(32, 3, 16, 16)
    out = cutout(x)
    changed = (out != x).any(1)  # (n, h, w)
    for mask in changed:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert len(rows) <= 8 and len(cols) <= 8
        assert int(mask.sum()) == len(rows) * len(cols)  # one rectangle
    assert torch.allclose(out[changed[:, None].expand_as(out)].unique().sort().values,
                          x.mean((0, 2, 3)).sort().values)  # fmt: skip


def test_colour_jitter_stays_in_range_and_keeps_grey_pictures_grey():
    torch.manual_seed(0)
    x = torch.rand(8, 3, 8, 8)
    assert float(colour_jitter(x).min()) >= 0 and float(colour_jitter(x).max()) <= 1
    grey = x[:, :1].expand(-1, 3, -1, -1)
    out = colour_jitter(grey)
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 1], out[:, 2])


def test_augmentations_are_named_in_a_list_and_apply_in_a_fixed_order():
    assert augmentation_names("flip, crop,cutout") == ["crop", "flip", "cutout"]
    assert augmentation_names("none") == [] and augmenter("") is None
    with pytest.raises(CnnlabError, match="unknown augmentation 'mirror'"):
        augmentation_names("crop,mirror")
    with pytest.raises(CnnlabError, match="choose one of"):
        augmentation_names("shift,affine")
    x = torch.rand(4, 3, 8, 8)
    torch.manual_seed(1)
    a = augmenter("crop,flip")(x)
    torch.manual_seed(1)
    assert torch.equal(a, random_flip(random_crop(x)))


def test_no_digit_preset_flips_its_pictures():
    from cnnlab.augment import augmentation_names
    from cnnlab.presets import PRESETS

    digits = [p for p in PRESETS.values() if p.settings.get("dataset", "mnist") == "mnist"]
    assert {"fast", "best", "conv2"} <= {p.name for p in digits}
    for preset in digits:
        if preset.name == "pictures":  # a user's folder: flips are the user's call
            continue
        assert "flip" not in augmentation_names(preset.settings.get("augment", "none"))
