"""cnnlab: convolutional networks on small images, in the vocabulary of the classic chapter."""

from .config import TrainConfig
from .layers import BatchNorm, Conv, ConvPool, FullyConnected, LocallyConnected, Pool, Softmax
from .network import Network
from .runs import TrainResult
from .train import fit

__all__ = [
    "BatchNorm",
    "Conv",
    "ConvPool",
    "FullyConnected",
    "LocallyConnected",
    "Network",
    "Pool",
    "Softmax",
    "TrainConfig",
    "TrainResult",
    "fit",
]
__version__ = "0.1.0"
