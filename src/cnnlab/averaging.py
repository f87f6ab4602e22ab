"""An exponential moving average of a network's weights, kept beside it while it trains.

After every step the average moves a fraction 1 − decay of the way to the trained
weights (batch-norm statistics included), so it remembers the last 1/(1 − decay)
steps or so and smooths out the noise of the last steps' gradients. A run with
``ema`` evaluates and saves the average instead of the weights it trains.

Early on the decay is held at (1 + t)/(10 + t) after t steps (as timm's model EMA
warms up), so the average forgets its starting point at once: left at the initial
weights and statistics, a slowly moving average would keep, say, the initial
variance 1 of a batch norm whose maps vary by 0.01, and answer at chance for
thousands of steps.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim.swa_utils import get_ema_multi_avg_fn

from .network import AVERAGE_PREFIX, Network, tensors_named


class WeightAverage:
    """The moving average of ``network``'s weights, starting from them, with ``decay`` per step."""

    def __init__(self, network: Network, decay: float) -> None:
        with torch.random.fork_rng(devices=[]):  # building draws initial weights, then discarded
            copy = Network.from_spec(network.spec(), kernels=network.kernels)
        copy.load_state_dict(network.state_dict())
        device = next(network.parameters()).device
        self.network = copy.to(device).use_channels_last(network.channels_last).eval()
        self.decay = decay

    def update(self, network: Network, step: int) -> None:
        """Move the average towards ``network``'s weights and statistics after step ``step``
        (0 for the first) of the run; counters are copied."""
        move = get_ema_multi_avg_fn(min(self.decay, (1 + step) / (10 + step)))
        averaged, trained = self.network.state_dict(), network.state_dict()
        floats = [name for name, t in averaged.items() if t.is_floating_point()]
        move([averaged[n] for n in floats], [trained[n] for n in floats], None)
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


def weight_average(network: Network, decay: float) -> WeightAverage | None:
    """The average a run with ``ema = decay`` keeps, None when it keeps none (decay 0)."""
    return WeightAverage(network, decay) if decay else None
