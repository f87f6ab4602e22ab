"""How much memory training a network needs, worked out from its shapes before anything is built.

Training keeps four numbers per parameter (the weight, its gradient and up to
two optimizer states), a fifth when it keeps the weights' moving average, and,
per image of a mini-batch, every layer's output twice (the value the backward
pass needs and its gradient). A network whose
need exceeds what the machine has free is refused with the numbers, instead of
failing half-way through allocating.
"""

from __future__ import annotations

import math
import os

import torch

from .errors import CnnlabError
from .layers import ConvPool
from .network import Network

BYTES = 4  # fp32
COPIES_PER_PARAMETER = 4
COPIES_PER_ACTIVATION = 2


def training_bytes(network: Network, batch_size: int, averaged: bool = False) -> tuple[int, int]:
    """(bytes for parameters and their training state, bytes of one mini-batch's activations);
    ``averaged``: the run keeps a moving average of the weights too."""
    parameters = sum(row.parameters for row in network.summary_rows())
    outputs = math.prod(network.input_shape)
    for layer in network.layers:
        outputs += math.prod(layer.out_shape)
        if isinstance(layer, ConvPool):  # its convolution's maps, before pooling
            outputs += math.prod(layer.pool.in_shape)
    return (
        parameters * BYTES * (COPIES_PER_PARAMETER + averaged),
        outputs * batch_size * BYTES * COPIES_PER_ACTIVATION,
    )


def available_bytes(device: torch.device) -> int:
    """Free memory of the device: the GPU's, or the machine's available RAM."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def _gb(n: int) -> str:
    return f"{n / 1e9:,.1f} GB"


def check_fits(
    network: Network, batch_size: int, device: torch.device, averaged: bool = False
) -> None:
    """CnnlabError naming the memory needed if training ``network`` cannot fit on ``device``."""
    weights, activations = training_bytes(network, batch_size, averaged)
    free = available_bytes(device)
    if weights + activations > free:
        raise CnnlabError(
            f"training this network needs about {_gb(weights + activations)}"
            f" ({_gb(weights)} for its parameters with their gradients and optimizer state,"
            f" {_gb(activations)} for a mini-batch of {batch_size}) but {device.type} has"
            f" {_gb(free)} free: use smaller layers or a smaller --batch-size"
        )
