"""Native kernels: every operation of cnnlab's layers on PyTorch's optimised ops.

Each function here has a twin of the same signature in ``explicit.py``.
Tensors are laid out as (batch, depth, height, width) for maps and
(batch, features) for fully-connected layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int) -> Tensor:
    """Shared-weight convolution: every position of a feature map uses the same filter."""
    return F.conv2d(x, weight, bias, stride=stride, padding=padding)


def locally_connected(
    x: Tensor, weight: Tensor, bias: Tensor, size: int, stride: int, padding: int
) -> Tensor:
    """Unshared weights: position l of map m has its own filter ``weight[l, m]``.

    weight: (positions, maps, depth·size·size); bias: (maps, out_h, out_w).
    """
    n, _, h, w = x.shape
    out_h = (h + 2 * padding - size) // stride + 1
    out_w = (w + 2 * padding - size) // stride + 1
    windows = F.unfold(x, size, padding=padding, stride=stride)  # (n, depth·size², positions)
    out = torch.einsum("ncl,lmc->nml", windows, weight)
    return out.reshape(n, -1, out_h, out_w) + bias


def max_pool(x: Tensor, size: int, stride: int) -> Tensor:
    return F.max_pool2d(x, size, stride)


def avg_pool(x: Tensor, size: int, stride: int) -> Tensor:
    return F.avg_pool2d(x, size, stride)


def l2_pool(x: Tensor, size: int, stride: int) -> Tensor:
    """Square root of the sum of squares of each window.

    Where a window is all zeros the value is 0 and its gradient is taken as 0
    (the limit a/‖a‖ is undefined there); the clamp keeps sqrt's derivative finite.
    """
    sum_sq = F.avg_pool2d(x * x, size, stride) * (size * size)
    return torch.where(sum_sq > 0, sum_sq.clamp_min(1e-30).sqrt(), torch.zeros_like(sum_sq))


def linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    return F.linear(x, weight, bias)


def softmax_cross_entropy(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean log-likelihood cost of a softmax output layer: −mean log p(target)."""
    return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
