"""The operations a layer is made of, in two interchangeable implementations.

``native`` calls PyTorch's own kernels (oneDNN on a CPU, cuDNN on a GPU).
``explicit`` (when present) spells out each forward pass and its hand-derived
backward pass, so a learner can read how backpropagation changes for
convolution and pooling, and so the native path has an oracle to be tested against.

Both expose the same functions with the same signatures (see ``native.py``).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import SpecError

KERNELS = ("native", "explicit")


def get_ops(kernels: str) -> ModuleType:
    """The module of operations named ``kernels`` ("native" or "explicit")."""
    if kernels not in KERNELS:
        raise SpecError(f"unknown kernels {kernels!r}: choose one of {', '.join(KERNELS)}")
    return importlib.import_module(f"{__name__}.{kernels}")
