"""Arithmetic precision: fp32, or mixed bf16/fp16 with fp32 weights, and "auto".

Mixed precision runs the forward pass in 16-bit floats while the optimizer keeps
an fp32 master copy of every weight. bf16 is fast only where the hardware has
it (AVX-512 bf16 or AMX CPUs, recent GPUs); elsewhere it is emulated and slower
than fp32, which is why "auto" checks before choosing it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from .errors import CnnlabError

PRECISIONS = ("fp32", "bf16", "fp16", "auto")


def fast_bf16(device: torch.device) -> bool:
    """Does this device compute in bf16 natively (AVX-512 bf16 or AMX CPUs, recent GPUs)?"""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve(precision: str, device: torch.device) -> str:
    """What "auto" means on this device; other precisions mean themselves."""
    if precision == "auto":
        return "bf16" if fast_bf16(device) else "fp32"
    return precision


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """Mixed precision: bf16 (CPUs with AVX-512 bf16, recent GPUs) or fp16 (GPUs only).

    Weights stay fp32 (the optimizer's master copy); only the forward pass is cast.
    "auto" is bf16 where the device has it natively, else fp32 (emulated bf16 is slow).
    """
    precision = resolve(precision, device)
    if precision == "fp32":
        return nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise CnnlabError("fp16 needs a CUDA GPU; on a CPU use --precision bf16")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)
