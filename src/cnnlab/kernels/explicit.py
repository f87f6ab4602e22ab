"""Explicit kernels: each operation's forward pass and its hand-derived backward pass.

The chapter derives backpropagation for fully-connected layers:

    (BP1) δᴸ = ∇ₐC ⊙ σ'(zᴸ)              (BP2) δˡ = ((wˡ⁺¹)ᵀ δˡ⁺¹) ⊙ σ'(zˡ)
    (BP3) ∂C/∂bˡⱼ = δˡⱼ                   (BP4) ∂C/∂wˡⱼₖ = aˡ⁻¹ₖ δˡⱼ

Every operation below computes a layer's weighted input z from the activations
a of the layer before, as a ``torch.autograd.Function`` whose ``backward``
receives δ = ∂C/∂z and returns ∂C/∂a (the (wᵀδ) factor of BP2; autograd of
the activation function then multiplies by σ'(z)) and the gradients of the
weights and biases (BP3, BP4). For a mini-batch, gradients of parameters are
summed over its images: the cost is a mean, so the 1/n is already in δᴸ.

Indices follow the chapter: feature map f, input depth d, output position
(j, k), offset (l, m) inside a size×size window that moves with stride s; a
convolution is z^f_{j,k} = b^f + Σ_{d,l,m} w^f_{d,l,m} a^d_{js+l, ks+m}.
Convolution and pooling both read their input one receptive field at a time
(``_fields``, im2col through a strided view) and send gradients back with its
adjoint (``_add_back``, col2im via ``F.fold``); no native convolution, pooling
or loss kernel is called. docs/backprop.md derives each backward pass.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function


# ---- receptive fields: the machinery convolution and pooling share ----------------------
def _fields(x: Tensor, size: int, stride: int, padding: int = 0) -> Tensor:
    """Every size×size receptive field of x as a column: (n, depth, size², out_h, out_w).

    A strided view of the (zero-padded) maps, copied once into a layout where a
    filter is one matrix product away (im2col); here several times faster than ``F.unfold``.
    """
    if padding:
        x = F.pad(x, (padding, padding, padding, padding))
    n, depth = x.shape[:2]
    windows = x.unfold(2, size, stride).unfold(3, size, stride)  # (n, depth, out_h, out_w, ·, ·)
    out_h, out_w = windows.shape[2:4]
    return windows.permute(0, 1, 4, 5, 2, 3).reshape(n, depth, size * size, out_h, out_w)


def _add_back(
    columns: Tensor, shape: torch.Size, size: int, stride: int, padding: int = 0
) -> Tensor:
    """The adjoint of ``_fields`` (col2im): each column added back onto the units it was read from.

    BP2 sums, for a unit of the input, over every unit of the output it feeds: a
    unit in several overlapping fields receives the sum of their gradients.
    """
    n, depth = shape[:2]
    columns = columns.reshape(n, depth * size * size, -1)
    return F.fold(columns, shape[2:], size, padding=padding, stride=stride)


def _in_precision_of(delta: Tensor, saved: tuple[Tensor, ...]) -> list[Tensor]:
    """The saved tensors in δ's dtype, for the backward products.

    Under autocast (bf16/fp16) the forward product ran in δ's lower precision;
    the backward products run in it too, as PyTorch's own do.
    """
    return [t.to(delta.dtype) for t in saved]


# ---- convolution: shared weights ---------------------------------------------------------
class _Convolution(Function):
    """z^f_{j,k} = b^f + Σ_{d,l,m} w^f_{d,l,m} a^d_{js+l, ks+m}, a zero-padded: shared w, b."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int
    ) -> Tensor:
        maps, _, size, _ = weight.shape
        fields = _fields(x, size, stride, padding)
        n, _, _, out_h, out_w = fields.shape
        fields = fields.reshape(n, -1, out_h * out_w)  # (n, depth·size², positions)
        filters = weight.view(1, maps, -1).expand(n, -1, -1)  # one row per map, every image
        z = filters @ fields  # (n, maps, positions): the same filter at every position
        if bias is not None:
            z += bias[:, None]
        ctx.save_for_backward(fields, weight)
        ctx.geometry = x.shape, stride, padding
        return z.view(n, maps, out_h, out_w)

    @staticmethod
    def backward(ctx: Any, delta: Tensor) -> tuple[Tensor | None, ...]:
        fields, weight = _in_precision_of(delta, ctx.saved_tensors)
        shape, stride, padding = ctx.geometry
        maps, _, size, _ = weight.shape
        n = shape[0]
        delta = delta.reshape(n, maps, -1)  # (n, maps, positions)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            # BP2: ∂C/∂a^d_{x,y} = Σ_{f,j,k} w^f_{d,l,m} δ^f_{j,k} over (x, y) = (js+l, ks+m):
            # wᵀδ per field, added back onto the input: δ ∗ rot180(w), a full convolution.
            filters_t = weight.view(1, maps, -1).transpose(1, 2).expand(n, -1, -1)
            grad_x = _add_back(filters_t @ delta, shape, size, stride, padding)
        if ctx.needs_input_grad[1]:
            # BP4: ∂C/∂w^f_{d,l,m} = Σ_{j,k} δ^f_{j,k} a^d_{js+l, ks+m}: the input correlated
            # with δ, summed over positions because every position shares w.
            grad_w = (delta @ fields.transpose(1, 2)).sum(0).view_as(weight)
        if ctx.needs_input_grad[2]:
            grad_b = delta.sum((0, 2))  # BP3: ∂C/∂b^f = Σ_{j,k} δ^f_{j,k}
        return grad_x, grad_w, grad_b, None, None


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int) -> Tensor:
    """Shared-weight convolution: every position of a feature map uses the same filter."""
    return _Convolution.apply(x, weight, bias, stride, padding)


# ---- locally connected: unshared weights -------------------------------------------------
class _LocallyConnected(Function):
    """z^f_{j,k} = b^f_{j,k} + Σ_{d,l,m} w^{f;j,k}_{d,l,m} a^d_{js+l, ks+m}: unshared w and b.

    Position (j, k) is stored flattened as p; ``weight[p, f]`` is its filter for map f.
    """

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, size: int, stride: int, padding: int
    ) -> Tensor:
        fields = _fields(x, size, stride, padding).flatten(1, 2).flatten(2)  # (n, c, positions)
        z = torch.einsum("ncp,pfc->nfp", fields, weight)  # a batch of matmuls, one per position
        ctx.save_for_backward(fields, weight)
        ctx.geometry = x.shape, size, stride, padding
        return z.view(-1, *bias.shape) + bias

    @staticmethod
    def backward(ctx: Any, delta: Tensor) -> tuple[Tensor | None, ...]:
        fields, weight = _in_precision_of(delta, ctx.saved_tensors)
        shape, size, stride, padding = ctx.geometry
        delta_p = delta.reshape(shape[0], weight.shape[1], -1)  # (n, maps, positions)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            # BP2: as for a convolution, but the field at p is multiplied by its own wᵀ.
            columns = torch.einsum("pfc,nfp->ncp", weight, delta_p)
            grad_x = _add_back(columns, shape, size, stride, padding)
        if ctx.needs_input_grad[1]:
            # BP4: ∂C/∂w^{f;j,k}_{d,l,m} = δ^f_{j,k} a^d_{js+l, ks+m}, no sum over positions.
            grad_w = torch.einsum("nfp,ncp->pfc", delta_p, fields)
        if ctx.needs_input_grad[2]:
            grad_b = delta.sum(0)  # BP3: ∂C/∂b^f_{j,k} = δ^f_{j,k}, one bias per unit
        return grad_x, grad_w, grad_b, None, None, None


def locally_connected(
    x: Tensor, weight: Tensor, bias: Tensor, size: int, stride: int, padding: int
) -> Tensor:
    """Unshared weights: position l of map m has its own filter ``weight[l, m]``.

    weight: (positions, maps, depth·size·size); bias: (maps, out_h, out_w).
    """
    return _LocallyConnected.apply(x, weight, bias, size, stride, padding)


# ---- pooling: a reduction over each field, each map separately ---------------------------
class _MaxPool(Function):
    """z^f_{j,k} = max_{l,m} a^f_{js+l, ks+m}: the largest activation of the window."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, size: int, stride: int) -> Tensor:
        out, winner = _fields(x, size, stride).max(2)  # ties: the first in row-major order
        ctx.save_for_backward(winner)
        ctx.geometry = x.shape, size, stride
        return out

    @staticmethod
    def backward(ctx: Any, delta: Tensor) -> tuple[Tensor | None, ...]:
        (winner,) = ctx.saved_tensors
        shape, size, stride = ctx.geometry
        # BP2: ∂C/∂a_{js+l, ks+m} = δ_{j,k} for the (l, m) that was the maximum, 0 for the rest.
        routed = delta.new_zeros(*shape[:2], size * size, *delta.shape[2:])
        routed.scatter_(2, winner[:, :, None], delta[:, :, None])
        return _add_back(routed, shape, size, stride), None, None


class _L2Pool(Function):
    """z^f_{j,k} = √(Σ_{l,m} (a^f_{js+l, ks+m})²): the length of the window as a vector."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, size: int, stride: int) -> Tensor:
        fields = _fields(x, size, stride)
        out = fields.square().sum(2).sqrt()
        ctx.save_for_backward(fields, out)
        ctx.geometry = x.shape, size, stride
        return out

    @staticmethod
    def backward(ctx: Any, delta: Tensor) -> tuple[Tensor | None, ...]:
        fields, out = ctx.saved_tensors
        shape, size, stride = ctx.geometry
        # BP2: ∂C/∂a_{js+l, ks+m} = δ_{j,k} · a_{js+l, ks+m} / z_{j,k}, i.e. δ·a/‖a‖;
        # 0 for an all-zero window, where z = ‖a‖ = 0 and a/‖a‖ has no limit.
        scale = torch.where(out > 0, delta / out, 0.0)
        return _add_back(fields * scale[:, :, None], shape, size, stride), None, None


class _AvgPool(Function):
    """z^f_{j,k} = (1/size²) Σ_{l,m} a^f_{js+l, ks+m}: the mean of the window."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, size: int, stride: int) -> Tensor:
        ctx.geometry = x.shape, size, stride
        return _fields(x, size, stride).mean(2)

    @staticmethod
    def backward(ctx: Any, delta: Tensor) -> tuple[Tensor | None, ...]:
        shape, size, stride = ctx.geometry
        # BP2: ∂C/∂a_{js+l, ks+m} = δ_{j,k} / size² for every (l, m) of the window.
        shared = (delta / (size * size))[:, :, None].expand(-1, -1, size * size, -1, -1)
        return _add_back(shared, shape, size, stride), None, None


def max_pool(x: Tensor, size: int, stride: int) -> Tensor:
    return _MaxPool.apply(x, size, stride)


def avg_pool(x: Tensor, size: int, stride: int) -> Tensor:
    return _AvgPool.apply(x, size, stride)


def l2_pool(x: Tensor, size: int, stride: int) -> Tensor:
    """Square root of the sum of squares of each window; 0, with gradient 0, on all-zero windows."""
    return _L2Pool.apply(x, size, stride)


# ---- fully connected ---------------------------------------------------------------------
class _Linear(Function):
    """z = w a + b, one row of w per unit, one row of a per image (zᵀ = aᵀ wᵀ + bᵀ)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight)
        return torch.addmm(bias, x, weight.t())

    @staticmethod
    def backward(ctx: Any, delta: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = _in_precision_of(delta, ctx.saved_tensors)
        grad_x = delta @ weight if ctx.needs_input_grad[0] else None  # BP2: wᵀδ
        grad_w = delta.t() @ x if ctx.needs_input_grad[1] else None  # BP4: δⱼ aₖ
        grad_b = delta.sum(0) if ctx.needs_input_grad[2] else None  # BP3: δⱼ
        return grad_x, grad_w, grad_b


def linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    return _Linear.apply(x, weight, bias)


# ---- softmax output with the log-likelihood cost -----------------------------------------
class _SoftmaxLogLikelihood(Function):
    """C = −mean Σⱼ yⱼ ln aᴸⱼ with aᴸ = softmax(zᴸ); y is one-hot, or smoothed towards 1/classes."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, targets: Tensor, label_smoothing: float) -> Tensor:
        log_a = logits - logits.logsumexp(1, keepdim=True)  # ln softmax, without overflow
        classes = logits.shape[1]
        one_hot = F.one_hot(targets, classes).to(logits.dtype)
        y = one_hot * (1 - label_smoothing) + label_smoothing / classes
        ctx.save_for_backward(log_a, y)
        return -(y * log_a).sum(1).mean()

    @staticmethod
    def backward(ctx: Any, grad_cost: Tensor) -> tuple[Tensor | None, ...]:
        log_a, y = ctx.saved_tensors
        # BP1 for softmax with the log-likelihood cost: δᴸ = aᴸ − y (divided by n: C is a mean).
        delta = (log_a.exp() - y) * (grad_cost / log_a.shape[0])
        return delta, None, None


def softmax_cross_entropy(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean log-likelihood cost of a softmax output layer: −mean log p(target)."""
    return _SoftmaxLogLikelihood.apply(logits, targets, label_smoothing)
