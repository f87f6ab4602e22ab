"""An exponential moving average of a network's weights, kept beside it while it trains.

After every step the average moves a fraction 1 − decay of the way to the trained
weights (batch-norm statistics included), so it remembers the last 1/(1 − decay)
steps or so and smooths out the noise of the last steps' gradients. A run with
``ema`` evaluates and saves the average instead of the weights it trains.
"""

from __future__ import annotations

from itertools import chain

from torch import Tensor
from torch.optim.swa_utils import get_ema_multi_avg_fn

from .network import Network

PREFIX = "average."  # its tensors' names in a run's checkpoint


class WeightAverage:
    """The moving average of ``network``'s weights, starting from them, with ``decay`` per step."""

    def __init__(self, network: Network, decay: float) -> None:
        copy = Network.from_spec(network.spec(), kernels=network.kernels)
        copy.load_state_dict(network.state_dict())
        device = next(network.parameters()).device
        self.network = copy.to(device).use_channels_last(network.channels_last).eval()
        self._move = get_ema_multi_avg_fn(decay)

    def update(self, network: Network) -> None:
        """Move the average towards ``network``'s weights; counters are copied."""
        averaged, trained = _numbers(self.network), _numbers(network)
        floats = [i for i, t in enumerate(averaged) if t.is_floating_point()]
        self._move([averaged[i] for i in floats], [trained[i] for i in floats], None)
        for mine, theirs in zip(averaged, trained, strict=True):
            if not mine.is_floating_point():
                mine.copy_(theirs)

    def tensors(self) -> dict[str, Tensor]:
        """Its state, named for a checkpoint."""
        state = self.network.state_dict()
        return {PREFIX + k: v.detach().contiguous().cpu() for k, v in state.items()}

    def load(self, tensors: dict[str, Tensor]) -> None:
        """Its state from a checkpoint's tensors; a RuntimeError if they are not there."""
        self.network.load_state_dict(
            {k.removeprefix(PREFIX): v for k, v in tensors.items() if k.startswith(PREFIX)}
        )


def _numbers(network: Network) -> list[Tensor]:
    """Every weight and statistic of ``network``, detached, in a fixed order."""
    return [t.detach() for t in chain(network.parameters(), network.buffers())]


def weight_average(network: Network, decay: float) -> WeightAverage | None:
    """The average a run with ``ema = decay`` keeps, None when it keeps none (decay 0)."""
    return WeightAverage(network, decay) if decay else None
