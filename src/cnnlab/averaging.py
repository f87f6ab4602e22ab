"""An exponential moving average of a network's weights, kept beside it while it trains.

After every step the average moves a fraction 1 − decay of the way to the trained
weights (batch-norm statistics included), so it remembers the last 1/(1 − decay)
steps or so and smooths out the noise of the last steps' gradients. A run with
``ema`` evaluates and saves the average instead of the weights it trains.

The average starts from the initial weights, whose share after T steps is decayᵀ:
a decay that would still leave 1% of them at the end of the run is refused.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.optim.swa_utils import get_ema_multi_avg_fn

from .errors import CnnlabError
from .network import AVERAGE_PREFIX, Network, tensors_named

LARGEST_START_SHARE = 0.01  # of the initial weights, left in the average at the run's end


class WeightAverage:
    """The moving average of ``network``'s weights, starting from them, with ``decay`` per step."""

    def __init__(self, network: Network, decay: float) -> None:
        with torch.random.fork_rng(devices=[]):  # building draws initial weights, then discarded
            copy = Network.from_spec(network.spec(), kernels=network.kernels)
        copy.load_state_dict(network.state_dict())
        device = next(network.parameters()).device
        self.network = copy.to(device).use_channels_last(network.channels_last).eval()
        self._move = get_ema_multi_avg_fn(decay)

    def update(self, network: Network) -> None:
        """Move the average towards ``network``'s weights and statistics; counters are copied."""
        averaged, trained = self.network.state_dict(), network.state_dict()
        floats = [name for name, t in averaged.items() if t.is_floating_point()]
        self._move([averaged[n] for n in floats], [trained[n] for n in floats], None)
        for name, value in averaged.items():
            if not value.is_floating_point():
                value.copy_(trained[name])

    def tensors(self) -> dict[str, Tensor]:
        """Its state, named for a checkpoint."""
        state = self.network.state_dict()
        return {AVERAGE_PREFIX + k: v.detach().contiguous().cpu() for k, v in state.items()}

    def load(self, tensors: dict[str, Tensor]) -> None:
        """Its state from a checkpoint's tensors; a RuntimeError if they are not there."""
        self.network.load_state_dict(tensors_named(tensors, AVERAGE_PREFIX))


def weight_average(network: Network, decay: float, steps: int) -> WeightAverage | None:
    """The average a run of ``steps`` steps with ``ema = decay`` keeps, None for decay 0."""
    if not decay:
        return None
    if decay**steps > LARGEST_START_SHARE:
        longest = LARGEST_START_SHARE ** (1 / steps)
        raise CnnlabError(
            f"--ema {decay:g} would still hold {decay**steps:.0%} of the initial weights after"
            f" this run's {steps:,} steps: use --ema {math.floor(longest * 1e4) / 1e4:g} or less"
        )
    return WeightAverage(network, decay)
