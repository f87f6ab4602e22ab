"""Expansion and augmentation: exact shifts, and distortions that keep what they must."""

from __future__ import annotations

import pytest
import torch

from cnnlab.augment import CHAPTER_SHIFTS, DISTORTIONS, Distortion, distort, expand, shift
from cnnlab.data import Part


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
