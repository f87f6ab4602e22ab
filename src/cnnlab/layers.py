"""Layers of a convolutional network, in the chapter's vocabulary.

A layer is created from its hyper-parameters alone (``Conv(20, 5)``) and
*built* by the Network once the shape of its input is known, Keras-style:
``build(in_shape)`` checks the geometry, creates the parameters and returns the
output shape. Every layer can also say how many parameters it has (and why),
how many FLOPs one forward pass costs, and how it grows the receptive field.

Shapes are (depth, height, width) for feature maps and (features,) for vectors,
always without the batch dimension. Operations come from ``cnnlab.kernels``
(``self.ops``), so the same layer runs on native or explicit kernels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import SpecError
from .kernels import get_ops

Shape = tuple[int, ...]

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": F.relu,
    "linear": lambda z: z,
    # LeNet-5's squashing function, f(a) = A·tanh(S·a) with A = 1.7159 and S = 2/3 (LeCun et
    # al. 1998, appendix A): f(±1) = ±1, and its second derivative peaks at ±1
    "lecun": lambda z: 1.7159 * torch.tanh(z * (2 / 3)),
}
# Sparse connections between maps: for each output map, the input maps it sees. LeNet-5's C3
# (LeCun et al. 1998, table I) joins its 16 maps to the 6 of S2 in 60 of the 96 possible ways,
# "to break the symmetry" and keep the parameter count down.
CONNECTION_TABLES = {
    "c3": (
        (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),
        (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5),
        (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
        (0, 1, 2, 3, 4, 5),
    ),
}  # fmt: skip
POOL_KINDS = ("max", "l2", "avg")
DROPOUT_STYLES = ("inverted", "network3")


def _check_activation(activation: str) -> str:
    if activation not in ACTIVATIONS:
        raise SpecError(
            f"unknown activation {activation!r}: choose one of {', '.join(ACTIVATIONS)}"
        )
    return activation


MAX_SIZE = 2**31 - 1  # of any count or side in a spec: far beyond any network that fits a machine


def _check_positive(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_SIZE:
        raise SpecError(
            f"{name} must be a whole number from {minimum} to {MAX_SIZE:,}, got {value!r}"
        )
    return value


def _check_dropout(p: Any) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise SpecError(f"dropout must be a number in [0, 1), got {p!r}")
    return float(p)


def _window_output(side: int, size: int, stride: int, padding: int, what: str) -> int:
    """Number of window positions along one side: (side + 2·padding − size) / stride + 1."""
    if size > side + 2 * padding:
        raise SpecError(
            f"{what}: a {size}×{size} window does not fit on a {side}-pixel side"
            f" (padding {padding}); use a smaller window or more padding"
        )
    return (side + 2 * padding - size) // stride + 1


def _expect_maps(in_shape: Shape, what: str) -> Shape:
    if len(in_shape) != 3:
        raise SpecError(
            f"{what} needs feature maps (depth×height×width) as input, got shape {in_shape};"
            " put it before any fully-connected layer"
        )
    return in_shape


def _init_uniform_like_torch(weight: Tensor, bias: Tensor | None, fan_in: int) -> None:
    """PyTorch's default for Linear/Conv2d: U(±1/√fan_in) for weights and biases."""
    bound = 1 / math.sqrt(fan_in)
    with torch.no_grad():
        weight.uniform_(-bound, bound)
        if bias is not None:
            bias.uniform_(-bound, bound)


def _init_network3(weight: Tensor, bias: Tensor, n_out: float) -> None:
    """network3.py's initialisation: w ~ N(0, 1/n_out), b ~ N(0, 1)."""
    with torch.no_grad():
        weight.normal_(0, math.sqrt(1 / n_out))
        bias.normal_(0, 1)


class Layer(nn.Module):
    """Base class: hyper-parameters at construction, parameters at ``build``."""

    kind: ClassVar[str]
    sees_whole_input: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self.in_shape: Shape = ()
        self.out_shape: Shape = ()
        self.ops: ModuleType = get_ops("native")

    def build(self, in_shape: Shape) -> Shape:
        """Create parameters for inputs of ``in_shape``; return the output shape."""
        raise NotImplementedError

    def describe(self) -> str:
        """A short name for summaries and messages, e.g. 'conv 20×5×5'."""
        return self.kind

    def spec(self) -> dict[str, Any]:
        """This layer as a JSON-able dict, the inverse of ``layer_from_spec``."""
        raise NotImplementedError

    def init_network3(self) -> None:
        """Re-initialise parameters as network3.py does (used by ``--faithful``)."""

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def parameter_formula(self) -> str:
        """How the parameter count arises, e.g. '20 × (5·5·1 + 1)'."""
        return ""

    def flops(self) -> int:
        """Floating-point operations of one forward pass on one input (a multiply-add is 2)."""
        return 0

    def windows(self) -> list[tuple[int, int]]:
        """(size, stride) of each window this layer slides, in order, for receptive fields."""
        return []


class _Windowed(Layer):
    """Shared geometry of layers that slide a size×size window with a stride and zero padding."""

    def __init__(
        self, maps: int, size: int, stride: int = 1, padding: int = 0, activation: str = "relu"
    ) -> None:
        super().__init__()
        self.maps = _check_positive("maps", maps)
        self.size = _check_positive("size", size)
        self.stride = _check_positive("stride", stride)
        self.padding = _check_positive("padding", padding, minimum=0)
        self.activation = _check_activation(activation)

    def _conv_out_shape(self, in_shape: Shape) -> Shape:
        _, h, w = _expect_maps(in_shape, self.describe())
        out_h = _window_output(h, self.size, self.stride, self.padding, self.describe())
        out_w = _window_output(w, self.size, self.stride, self.padding, self.describe())
        return self.maps, out_h, out_w

    def describe(self) -> str:
        return f"{self.kind} {self.maps}×{self.size}×{self.size}"

    def windows(self) -> list[tuple[int, int]]:
        return [(self.size, self.stride)]

    def spec(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "maps": self.maps,
            "size": self.size,
            "stride": self.stride,
            "padding": self.padding,
            "activation": self.activation,
        }

    def _filter_len(self) -> int:
        return self.in_shape[0] * self.size * self.size


class Conv(_Windowed):
    """Convolutional layer: ``maps`` feature maps, each one shared size×size×depth filter + bias.

    a¹ = σ(b + w ∗ a⁰). A filter spans the whole depth of its input, so its
    parameters are size·size·depth weights and one bias, whatever the map size.
    With ``connections`` (a name in CONNECTION_TABLES) each map sees only some input
    maps, as LeNet-5's C3 does: the other weights are held at zero and not counted.
    """

    kind = "conv"

    def __init__(
        self,
        maps: int,
        size: int,
        stride: int = 1,
        padding: int = 0,
        activation: str = "relu",
        connections: str | None = None,
    ) -> None:
        super().__init__(maps, size, stride, padding, activation)
        if connections is not None and connections not in CONNECTION_TABLES:
            raise SpecError(
                f"unknown connection table {connections!r}: choose {', '.join(CONNECTION_TABLES)}"
            )
        self.connections = connections

    def build(self, in_shape: Shape) -> Shape:
        self.in_shape, self.out_shape = in_shape, self._conv_out_shape(in_shape)
        self.weight = nn.Parameter(torch.empty(self.maps, in_shape[0], self.size, self.size))
        self.bias = nn.Parameter(torch.empty(self.maps))
        _init_uniform_like_torch(self.weight, self.bias, self._filter_len())
        if self.connections is not None:
            self.register_buffer("mask", self._mask(in_shape[0]), persistent=False)
        return self.out_shape

    def _mask(self, depth: int) -> Tensor:
        """1 where output map m sees input map d (the connection table), else 0."""
        table = CONNECTION_TABLES[self.connections]
        if (self.maps, depth) != (len(table), max(map(max, table)) + 1):
            raise SpecError(
                f"the {self.connections} connection table joins {len(table)} maps to"
                f" {max(map(max, table)) + 1} input maps, not {self.maps} to {depth}"
            )
        mask = torch.zeros(self.maps, depth, 1, 1)
        for m, inputs in enumerate(table):
            mask[m, list(inputs)] = 1
        return mask

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight if self.connections is None else self.weight * self.mask
        z = self.ops.conv2d(x, weight, self.bias, self.stride, self.padding)
        return ACTIVATIONS[self.activation](z)

    def init_network3(self) -> None:
        _init_network3(self.weight, self.bias, self.maps * self.size * self.size)

    def spec(self) -> dict[str, Any]:
        spec = super().spec()
        return spec if self.connections is None else {**spec, "connections": self.connections}

    def _links(self) -> int:
        """Input maps joined to output maps: every pair, unless a connection table says."""
        if self.connections is None:
            return self.maps * self.in_shape[0]
        return sum(len(inputs) for inputs in CONNECTION_TABLES[self.connections])

    def parameter_count(self) -> int:
        return self._links() * self.size * self.size + self.maps

    def parameter_formula(self) -> str:
        if self.connections is not None:
            return f"{self._links()} map pairs × {self.size}·{self.size} + {self.maps} biases"
        depth = self.in_shape[0]
        return f"{self.maps} × ({self.size}·{self.size}·{depth} + 1)"

    def flops(self) -> int:
        positions = self.out_shape[1] * self.out_shape[2]
        return 2 * self._links() * self.size * self.size * positions


class LocallyConnected(_Windowed):
    """Unshared weights: the windows of a convolution, but a separate filter at every position.

    For inputs whose regions differ (a centred object), at the cost of
    positions × the parameters of the equivalent Conv.
    """

    kind = "local"

    def build(self, in_shape: Shape) -> Shape:
        self.in_shape, self.out_shape = in_shape, self._conv_out_shape(in_shape)
        positions = self.out_shape[1] * self.out_shape[2]
        self.weight = nn.Parameter(torch.empty(positions, self.maps, self._filter_len()))
        self.bias = nn.Parameter(torch.empty(self.out_shape))
        _init_uniform_like_torch(self.weight, self.bias, self._filter_len())
        return self.out_shape

    def forward(self, x: Tensor) -> Tensor:
        z = self.ops.locally_connected(
            x, self.weight, self.bias, self.size, self.stride, self.padding
        )
        return ACTIVATIONS[self.activation](z)

    def init_network3(self) -> None:
        _init_network3(self.weight, self.bias, self.maps * self.size * self.size)

    def parameter_formula(self) -> str:
        _, h, w = self.out_shape
        depth = self.in_shape[0]
        return f"{h}·{w} positions × {self.maps} × ({self.size}·{self.size}·{depth} + 1)"

    def flops(self) -> int:
        return 2 * self._filter_len() * math.prod(self.out_shape)


def _pool(ops: ModuleType, kind: str, x: Tensor, size: int, stride: int) -> Tensor:
    return getattr(ops, f"{kind}_pool")(x, size, stride)


class Pool(Layer):
    """Pooling: condenses each feature map separately over size×size regions.

    ``kind``: "max" (largest activation), "l2" (√Σa², the square root of the
    sum of squares) or "avg" (mean). ``stride`` defaults to ``size``, i.e.
    non-overlapping regions: 24×24 → 12×12 with size 2.
    """

    kind = "pool"

    def __init__(self, size: int = 2, kind: str = "max", stride: int | None = None) -> None:
        super().__init__()
        if kind not in POOL_KINDS:
            raise SpecError(f"unknown pooling {kind!r}: choose one of {', '.join(POOL_KINDS)}")
        self.pool_kind = kind
        self.size = _check_positive("pool size", size)
        self.stride = _check_positive("pool stride", size if stride is None else stride)

    def build(self, in_shape: Shape) -> Shape:
        what = f"{self.pool_kind} pool {self.size}×{self.size}"
        depth, h, w = _expect_maps(in_shape, what)
        out_h = _window_output(h, self.size, self.stride, 0, what)
        out_w = _window_output(w, self.size, self.stride, 0, what)
        self.in_shape, self.out_shape = in_shape, (depth, out_h, out_w)
        return self.out_shape

    def forward(self, x: Tensor) -> Tensor:
        return _pool(self.ops, self.pool_kind, x, self.size, self.stride)

    def describe(self) -> str:
        stride = f" stride {self.stride}" if self.stride != self.size else ""
        return f"{self.pool_kind} pool {self.size}×{self.size}{stride}"

    def spec(self) -> dict[str, Any]:
        return {"type": self.kind, "kind": self.pool_kind, "size": self.size, "stride": self.stride}

    def flops(self) -> int:
        per_window = {"max": 1, "avg": 1, "l2": 2}[self.pool_kind] * self.size * self.size
        return per_window * math.prod(self.out_shape)

    def windows(self) -> list[tuple[int, int]]:
        return [(self.size, self.stride)]


class ConvPool(_Windowed):
    """The chapter's ConvPoolLayer: convolution, then pooling, then bias and activation.

    As in network3.py, the bias and σ are applied *after* pooling, so the
    layer is a = σ(pool(w ∗ a⁰) + b). With max pooling and a monotonic σ this
    equals conv → σ → pool; with L2 or average pooling it does not.
    """

    kind = "convpool"

    def __init__(
        self,
        maps: int,
        size: int,
        pool: int = 2,
        pool_kind: str = "max",
        stride: int = 1,
        padding: int = 0,
        activation: str = "relu",
    ) -> None:
        super().__init__(maps, size, stride, padding, activation)
        self.pool = Pool(pool, pool_kind)

    def build(self, in_shape: Shape) -> Shape:
        conv_shape = self._conv_out_shape(in_shape)
        self.in_shape, self.out_shape = in_shape, self.pool.build(conv_shape)
        self.weight = nn.Parameter(torch.empty(self.maps, in_shape[0], self.size, self.size))
        self.bias = nn.Parameter(torch.empty(self.maps))
        _init_uniform_like_torch(self.weight, self.bias, self._filter_len())
        return self.out_shape

    def forward(self, x: Tensor) -> Tensor:
        z = self.ops.conv2d(x, self.weight, None, self.stride, self.padding)
        pooled = _pool(self.ops, self.pool.pool_kind, z, self.pool.size, self.pool.stride)
        # the bias in the pooled maps' precision: an fp32 bias would lift a bf16 layer to fp32
        return ACTIVATIONS[self.activation](pooled + self.bias.to(pooled.dtype)[:, None, None])

    def describe(self) -> str:
        return f"{super().describe()} + {self.pool.describe()}"

    def init_network3(self) -> None:
        # network3: n_out = maps · size² / pool area
        pool_area = self.pool.size * self.pool.size
        _init_network3(self.weight, self.bias, self.maps * self.size * self.size / pool_area)

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "pool": self.pool.size, "pool_kind": self.pool.pool_kind}

    def parameter_formula(self) -> str:
        depth = self.in_shape[0]
        return f"{self.maps} × ({self.size}·{self.size}·{depth} + 1)"

    def flops(self) -> int:
        conv = 2 * self._filter_len() * math.prod(self.pool.in_shape)
        return conv + self.pool.flops()

    def windows(self) -> list[tuple[int, int]]:
        return [(self.size, self.stride), (self.pool.size, self.pool.stride)]


class Subsample(Layer):
    """LeNet-5's subsampling layer (S2, S4): each map's size×size sums, times a trainable
    coefficient, plus a trainable bias, through the activation: 2 parameters a map.

    Average pooling with a learned scale and offset per map: a = σ(c·Σ a⁰ + b).
    """

    kind = "subsample"

    def __init__(self, size: int = 2, activation: str = "lecun") -> None:
        super().__init__()
        self.size = _check_positive("subsampling size", size)
        self.activation = _check_activation(activation)

    def build(self, in_shape: Shape) -> Shape:
        depth, h, w = _expect_maps(in_shape, self.describe())
        out_h = _window_output(h, self.size, self.size, 0, self.describe())
        out_w = _window_output(w, self.size, self.size, 0, self.describe())
        self.in_shape, self.out_shape = in_shape, (depth, out_h, out_w)
        self.coefficient = nn.Parameter(torch.empty(depth))
        self.bias = nn.Parameter(torch.empty(depth))
        _init_uniform_like_torch(self.coefficient, self.bias, self.size * self.size)
        return self.out_shape

    def forward(self, x: Tensor) -> Tensor:
        sums = self.ops.avg_pool(x, self.size, self.size) * (self.size * self.size)
        z = sums * self.coefficient[:, None, None] + self.bias[:, None, None]
        return ACTIVATIONS[self.activation](z)

    def describe(self) -> str:
        return f"subsample {self.size}×{self.size}"

    def spec(self) -> dict[str, Any]:
        return {"type": self.kind, "size": self.size, "activation": self.activation}

    def parameter_formula(self) -> str:
        return f"2 × {self.in_shape[0]} (a coefficient and a bias per map)"

    def flops(self) -> int:
        return (self.size * self.size + 2) * math.prod(self.out_shape)

    def windows(self) -> list[tuple[int, int]]:
        return [(self.size, self.size)]


def _apply_dropout(x: Tensor, p: float, style: str, training: bool) -> Tensor:
    """Dropout on a layer's *input*.

    "inverted": drop with probability p and scale the kept units by 1/(1−p)
    while training; nothing at test time. "network3": drop without scaling
    while training, and scale by (1−p) at test time, as the chapter's code does
    (it scales the weights, which is the same thing).
    """
    if p == 0:
        return x
    if style == "inverted":
        return F.dropout(x, p, training)
    if training:
        return x * torch.bernoulli(torch.full_like(x, 1 - p))
    return x * (1 - p)


class FullyConnected(Layer):
    """Every unit sees every activation of the layer below (flattened), with its own weights."""

    kind = "fc"
    sees_whole_input = True

    def __init__(self, units: int, activation: str = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        self.units = _check_positive("units", units)
        self.activation = _check_activation(activation)
        self.dropout = _check_dropout(dropout)
        self.dropout_style = "inverted"

    def build(self, in_shape: Shape) -> Shape:
        n_in = math.prod(in_shape)
        self.in_shape, self.out_shape = in_shape, (self.units,)
        self.weight = nn.Parameter(torch.empty(self.units, n_in))
        self.bias = nn.Parameter(torch.empty(self.units))
        _init_uniform_like_torch(self.weight, self.bias, n_in)
        return self.out_shape

    def _flattened(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(x as one row per input, the weights in the same column order).

        Maps stored channels-last are read in their own order, with the weights' columns
        permuted to match: the same function, but neither the maps nor their gradient is
        copied to the other layout (a gradient of the other layout sends batch norm's backward
        down a path five times slower).
        """
        laid_out = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
        if laid_out and not x.is_contiguous():
            maps, height, width = x.shape[1:]
            weight = self.weight.view(self.units, maps, height, width).permute(0, 2, 3, 1)
            return x.permute(0, 2, 3, 1).flatten(1), weight.flatten(1)
        return x.flatten(1), self.weight

    def _affine(self, x: Tensor) -> Tensor:
        x, weight = self._flattened(x)
        x = _apply_dropout(x, self.dropout, self.dropout_style, self.training)
        return self.ops.linear(x, weight, self.bias)

    def forward(self, x: Tensor) -> Tensor:
        return ACTIVATIONS[self.activation](self._affine(x))

    def describe(self) -> str:
        return f"{self.kind} {self.units}"

    def init_network3(self) -> None:
        _init_network3(self.weight, self.bias, self.units)

    def spec(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "units": self.units,
            "activation": self.activation,
            "dropout": self.dropout,
        }

    def parameter_formula(self) -> str:
        return f"{math.prod(self.in_shape)}·{self.units} + {self.units}"

    def flops(self) -> int:
        return 2 * math.prod(self.in_shape) * self.units


class Softmax(FullyConnected):
    """Output layer: ``units`` classes with softmax probabilities and the log-likelihood cost.

    ``forward`` returns the weighted inputs z (logits); probabilities are
    softmax(z), and the cost −log softmax(z)[y] is computed from z directly.
    """

    kind = "softmax"

    def __init__(self, units: int, dropout: float = 0.0) -> None:
        super().__init__(units, "linear", dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self._affine(x)

    def init_network3(self) -> None:
        with torch.no_grad():  # network3 starts its softmax layer at zero
            self.weight.zero_()
            self.bias.zero_()

    def spec(self) -> dict[str, Any]:
        return {"type": self.kind, "units": self.units, "dropout": self.dropout}


class BatchNorm(Layer):
    """Batch normalisation of each feature map or unit (not in the chapter; fast presets use it)."""

    kind = "batchnorm"

    def build(self, in_shape: Shape) -> Shape:
        self.in_shape = self.out_shape = in_shape
        self.norm = (nn.BatchNorm2d if len(in_shape) == 3 else nn.BatchNorm1d)(in_shape[0])
        return in_shape

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x)

    def spec(self) -> dict[str, Any]:
        return {"type": self.kind}

    def parameter_formula(self) -> str:
        return f"2 × {self.in_shape[0]} (scale and shift per map)"

    def flops(self) -> int:
        return 2 * math.prod(self.out_shape)


# Layers whose weights L2 regularisation decays (not biases, not batch norm's scale and shift).
WEIGHTED_LAYERS = (Conv, LocallyConnected, ConvPool, FullyConnected)
LAYER_TYPES: dict[str, type[Layer]] = {
    cls.kind: cls
    for cls in (
        Conv,
        LocallyConnected,
        Pool,
        ConvPool,
        FullyConnected,
        Softmax,
        BatchNorm,
        Subsample,
    )
}


def layer_from_spec(spec: dict[str, Any]) -> Layer:
    """Create a layer from its ``spec()`` dict; a SpecError says what is wrong."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise SpecError(f"a layer must be an object with a 'type', got {spec!r}")
    params = dict(spec)
    kind = params.pop("type")
    if not isinstance(kind, str) or kind not in LAYER_TYPES:
        raise SpecError(f"unknown layer type {kind!r}: choose one of {', '.join(LAYER_TYPES)}")
    try:
        return LAYER_TYPES[kind](**params)
    except TypeError as exc:
        raise SpecError(f"bad parameters for a {kind} layer {params}: {exc}") from None
