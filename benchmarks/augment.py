"""What each random change of a batch costs, and what building the affine grid by hand saves.

    python benchmarks/augment.py [--batch 256] [--rounds 9]

Times every augmentation of ``cnnlab.augment`` on a batch of MNIST-sized (1×28×28)
or CIFAR-sized (3×32×32) float images, and the affine distortion twice: as cnnlab
does it (``augment.affine_grid``, by broadcasting) and with ``F.affine_grid``
(a batched matrix product against a base grid), both followed by the same
``F.grid_sample``. Each figure is the median of ``--rounds`` timings of 20 calls.
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
import torch.nn.functional as F
from timing import at_least_one, median_seconds

from cnnlab.augment import AUGMENTATIONS, DISTORTIONS


def distort_with_torchs_grid(images: torch.Tensor) -> torch.Tensor:
    """``distort`` with its grid from ``F.affine_grid``: the cost the hand-built grid removes."""
    n = len(images)
    theta = torch.eye(2, 3).expand(n, 2, 3) + 0.05 * torch.randn(n, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=at_least_one, default=256)
    parser.add_argument("--rounds", type=at_least_one, default=9)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
    digits = torch.rand(args.batch, 1, 28, 28)
    pictures = torch.rand(args.batch, 3, 32, 32)
    rows = [("affine, grid by F.affine_grid", digits, distort_with_torchs_grid)]
    for name, change in AUGMENTATIONS.items():
        rows.append((name, digits if name in DISTORTIONS else pictures, change))
    print(f"{'augmentation':<28}{'images':>10}{'ms per batch':>14}")
    for label, images, change in rows:
        ms = median_seconds(partial(change, images), args.rounds, calls=20) * 1e3
        print(f"{label:<28}{'x'.join(map(str, images.shape[1:])):>10}{ms:>14.2f}")
    print(f"medians of {args.rounds} timings of 20 calls each, after 3 warm-up calls")


if __name__ == "__main__":
    main()
