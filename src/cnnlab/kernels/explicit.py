"""Explicit kernels: each operation's forward pass and its hand-derived backward pass.

The chapter derives backpropagation for fully-connected layers:

    (BP1) δᴸ = ∇ₐC ⊙ σ'(zᴸ)              (BP2) δˡ = ((wˡ⁺¹)ᵀ δˡ⁺¹) ⊙ σ'(zˡ)
    (BP3) ∂C/∂bˡⱼ = δˡⱼ                   (BP4) ∂C/∂wˡⱼₖ = aˡ⁻¹ₖ δˡⱼ

Every function below computes a layer's weighted input z from the activations
a of the layer before, as a ``torch.autograd.Function`` whose ``backward``
receives δ = ∂C/∂z and returns ∂C/∂a (the (wᵀδ) factor of BP2; autograd of
the activation function then multiplies by σ'(z)) and the gradients of the
weights and biases (BP3, BP4). For a mini-batch, gradients of parameters are
summed over its images: the cost is a mean, so the 1/n is already in δᴸ.

Convolutions see their input through ``F.unfold``, which lays every receptive
field out as a column (im2col); ``F.fold`` is its adjoint and adds columns back
onto the positions they came from. Pooling windows are strided views of the
map. No native convolution or pooling kernel is called. docs/backprop.md
derives each backward pass.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function


# ---- convolution: shared weights ---------------------------------------------------------
class _Convolution(Function):
    """z[m, j, k] = b[m] + Σ_{d,p,q} w[m, d, p, q] · a[d, j·s + p, k·s + q] (a zero-padded)."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int
    ) -> Tensor:
        n, _, h, w = x.shape
        maps, _, size, _ = weight.shape
        fields = F.unfold(x, size, padding=padding, stride=stride)  # (n, depth·size², positions)
        z = weight.reshape(maps, -1) @ fields  # (n, maps, positions): one matmul, shared w
        if bias is not None:
            z += bias[:, None]
        ctx.save_for_backward(fields, weight)
        ctx.geometry = (h, w), size, stride, padding
        ctx.has_bias = bias is not None
        out_h = (h + 2 * padding - size) // stride + 1
        return z.view(n, maps, out_h, -1)

    @staticmethod
    def backward(ctx: Any, delta: Tensor) -> tuple[Tensor | None, ...]:
        fields, weight = ctx.saved_tensors
        (h, w), size, stride, padding = ctx.geometry
        maps = weight.shape[0]
        delta = delta.reshape(delta.shape[0], maps, -1)  # (n, maps, positions)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            # BP2: ∂C/∂a = Σ_m wᵀδ over every field a unit sees; fold adds the fields back up,
            # which is the full convolution of δ with the flipped (rot180) kernel.
            columns = weight.reshape(maps, -1).t() @ delta
            grad_x = F.fold(columns, (h, w), size, padding=padding, stride=stride)
        if ctx.needs_input_grad[1]:
            # BP4: ∂C/∂w[m, d, p, q] = Σ_positions δ[m, j, k] · a[d, j·s + p, k·s + q]: the input
            # correlated with δ, summed over positions because every position shares w.
            grad_w = (delta @ fields.transpose(1, 2)).sum(0).view_as(weight)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = delta.sum((0, 2))  # BP3: ∂C/∂b[m] = Σ_positions δ[m, j, k]
        return grad_x, grad_w, grad_b, None, None


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int) -> Tensor:
    """Shared-weight convolution: every position of a feature map uses the same filter."""
    return _Convolution.apply(x, weight, bias, stride, padding)


# ---- locally connected: unshared weights -------------------------------------------------
class _LocallyConnected(Function):
    """z[m, l] = b[m, l] + Σ_c w[l, m, c] · field_l[c]: a filter of its own at each position l."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, size: int, stride: int, padding: int
    ) -> Tensor:
        h, w = x.shape[2:]
        fields = F.unfold(x, size, padding=padding, stride=stride)  # (n, depth·size², positions)
        z = torch.einsum("ncl,lmc->nml", fields, weight)
        ctx.save_for_backward(fields, weight)
        ctx.geometry = (h, w), size, stride, padding
        return z.view(-1, *bias.shape) + bias

    @staticmethod
    def backward(ctx: Any, delta: Tensor) -> tuple[Tensor | None, ...]:
        fields, weight = ctx.saved_tensors
        (h, w), size, stride, padding = ctx.geometry
        delta_l = delta.reshape(delta.shape[0], weight.shape[1], -1)  # (n, maps, positions)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            # BP2: as for a convolution, but each field is multiplied by its own wᵀ.
            columns = torch.einsum("lmc,nml->ncl", weight, delta_l)
            grad_x = F.fold(columns, (h, w), size, padding=padding, stride=stride)
        if ctx.needs_input_grad[1]:
            # BP4: ∂C/∂w[l, m, c] = δ[m, l] · field_l[c], with no sum over positions.
            grad_w = torch.einsum("nml,ncl->lmc", delta_l, fields)
        if ctx.needs_input_grad[2]:
            grad_b = delta.sum(0)  # BP3: ∂C/∂b[m, j, k] = δ[m, j, k], one bias per unit
        return grad_x, grad_w, grad_b, None, None, None


def locally_connected(
    x: Tensor, weight: Tensor, bias: Tensor, size: int, stride: int, padding: int
) -> Tensor:
    """Unshared weights: position l of map m has its own filter ``weight[l, m]``.

    weight: (positions, maps, depth·size·size); bias: (maps, out_h, out_w).
    """
    return _LocallyConnected.apply(x, weight, bias, size, stride, padding)


# ---- pooling -----------------------------------------------------------------------------
def _windows(x: Tensor, size: int, stride: int) -> Tensor:
    """Every pooling window of x as a strided view, (n, depth, out_h, out_w, size, size): no copy."""
    return x.unfold(2, size, stride).unfold(3, size, stride)


def _spread(window_grads: Tensor, shape: torch.Size, size: int, stride: int) -> Tensor:
    """∂C/∂a of the input: each window's gradient added back onto the units it covers.

    A unit in several (overlapping) windows receives the sum, as BP2 sums over every
    unit a unit feeds. Without overlap each unit is in at most one window, so writing
    through the same strided view is enough, and cheaper than ``fold``.
    """
    if stride >= size:
        grad = window_grads.new_zeros(shape)
        _windows(grad, size, stride).copy_(window_grads)
        return grad
    n, depth, out_h, out_w = window_grads.shape[:4]
    columns = window_grads.permute(0, 1, 4, 5, 2, 3).reshape(n, depth * size * size, -1)
    return F.fold(columns, shape[2:], size, stride=stride)


class _MaxPool(Function):
    """a' = max over the window; δ goes to the unit that was the maximum, nothing to the rest."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, size: int, stride: int) -> Tensor:
        out, winner = _windows(x, size, stride).flatten(-2).max(-1)  # ties: the first, row-major
        ctx.save_for_backward(winner)
        ctx.geometry = x.shape, size, stride
        return out

    @staticmethod
    def backward(ctx: Any, delta: Tensor) -> tuple[Tensor | None, ...]:
        (winner,) = ctx.saved_tensors
        shape, size, stride = ctx.geometry
        # BP2: ∂a'/∂a = 1 for the arg-max of the window, 0 elsewhere.
        routed = delta.new_zeros(*delta.shape, size * size)
        routed.scatter_(-1, winner[..., None], delta[..., None])
        return _spread(routed.unflatten(-1, (size, size)), shape, size, stride), None, None


class _L2Pool(Function):
    """a' = √(Σ a²) over the window: its length as a vector."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, size: int, stride: int) -> Tensor:
        windows = _windows(x, size, stride)
        out = windows.square().sum((-2, -1)).sqrt()
        ctx.save_for_backward(x, out)
        ctx.geometry = size, stride
        return out

    @staticmethod
    def backward(ctx: Any, delta: Tensor) -> tuple[Tensor | None, ...]:
        x, out = ctx.saved_tensors
        size, stride = ctx.geometry
        # BP2: ∂a'/∂a = a/a' = a/‖a‖, taken as 0 for an all-zero window (a' = 0).
        scale = torch.where(out > 0, delta / out, 0.0)
        window_grads = _windows(x, size, stride) * scale[..., None, None]
        return _spread(window_grads, x.shape, size, stride), None, None


class _AvgPool(Function):
    """a' = mean over the window."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, size: int, stride: int) -> Tensor:
        ctx.geometry = x.shape, size, stride
        return _windows(x, size, stride).mean((-2, -1))

    @staticmethod
    def backward(ctx: Any, delta: Tensor) -> tuple[Tensor | None, ...]:
        shape, size, stride = ctx.geometry
        # BP2: ∂a'/∂a = 1/size² for every unit of the window.
        shared = (delta / (size * size))[..., None, None].expand(*delta.shape, size, size)
        return _spread(shared, shape, size, stride), None, None


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
        x, weight = ctx.saved_tensors
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
