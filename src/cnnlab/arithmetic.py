"""One unit's arithmetic: how a single value of a stage comes from the stage below, in numbers.

The explorer's "story" of a unit, in the source material's notation. A
convolutional unit is σ(b + Σ w·a) over its local receptive field, with the
weights and bias its whole feature map shares; a pooled unit condenses a
window of the map below (max, L2 or average); a fully-connected unit weighs
every activation below; the output layer's softmax turns weighted inputs into
probabilities. Every number is computed here, in float32, step by step from
the layer's own parameters, and ``value`` is what the network itself computed
for that unit (``probe.stage_outputs``), so the two can be compared.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import CnnlabError
from .layers import (
    ACTIVATIONS,
    BatchNorm,
    Conv,
    ConvPool,
    FullyConnected,
    Layer,
    LocallyConnected,
    Pool,
    Softmax,
    Subsample,
)
from .network import Network
from .probe import Stage, stage_outputs, stages

TOP_INPUTS = 12  # a fully-connected unit's largest contributions shown one by one


def _numbers(values: Tensor, digits: int = 6) -> Any:
    return torch.round(values.detach().double(), decimals=digits).tolist()


def _layer_inputs(network: Network, x: Tensor) -> list[Tensor]:
    """The input of every layer for one picture ``x`` (depth, H, W), as a batch of one."""
    inputs, a = [], network.standardised(x[None].float())
    with torch.inference_mode():
        for layer in network.layers:
            inputs.append(a)
            a = layer(a)
    return inputs


def _window(a: Tensor, row: int, col: int, size: int, stride: int, padding: int) -> Tensor:
    """The (depth, size, size) window of maps ``a`` (1, depth, H, W) under unit (row, col),
    zeros where it hangs over the padding."""
    padded = F.pad(a[0], (padding,) * 4)
    top, left = row * stride, col * stride
    return padded[:, top : top + size, left : left + size]


def _placed(row: int, col: int, size: int, stride: int, padding: int, shape: tuple) -> dict:
    """Where a window lies on the maps below: its top-left corner (may be negative, in the
    padding), its size, and which of its cells are real units rather than padding."""
    _, height, width = shape
    top, left = row * stride - padding, col * stride - padding
    inside = [
        [0 <= top + i < height and 0 <= left + j < width for j in range(size)] for i in range(size)
    ]
    return {"top": top, "left": left, "size": size, "stride": stride, "padding": padding,
            "inside": inside}  # fmt: skip


def _activation(name: str, z: float) -> float:
    return float(ACTIVATIONS[name](torch.tensor(z, dtype=torch.float32)))


def _weighted_window(layer: Layer, a: Tensor, map_: int, row: int, col: int) -> dict[str, Any]:
    """Σ w·a + b over the window of a conv, ConvPool or locally connected unit."""
    size, stride, padding = layer.size, layer.stride, layer.padding
    window = _window(a, row, col, size, stride, padding)
    if isinstance(layer, LocallyConnected):
        position = row * layer.out_shape[2] + col
        weights = layer.weight[position, map_].reshape(window.shape)
        bias = layer.bias[map_, row, col]
    else:
        weights = layer.weight[map_]
        if getattr(layer, "connections", None) is not None:
            weights = weights * layer.mask[map_]
        bias = layer.bias[map_]
    products = weights * window
    total = products.sum(dtype=torch.float64)
    z = float(total) + float(bias)
    story = {
        "window": _placed(row, col, size, stride, padding, layer.in_shape),
        "inputs": _numbers(window),
        "weights": _numbers(weights),
        "products": _numbers(products),
        "channel_sums": _numbers(products.sum((1, 2))),
        "sum": float(total),
        "bias": float(bias),
        "z": z,
        "shared": not isinstance(layer, LocallyConnected),
    }
    if getattr(layer, "connections", None) is not None:
        story["connected"] = torch.nonzero(layer.mask[map_].flatten()).flatten().tolist()
    return story


def _pooled(kind: str, window: Tensor) -> tuple[float, list[int] | None]:
    """A pooling window's value, and for max pooling which cell (row, col) won."""
    if kind == "max":
        index = int(window.flatten().argmax())
        return float(window.flatten()[index]), [index // window.shape[1], index % window.shape[1]]
    if kind == "l2":
        return float(window.double().square().sum().sqrt()), None
    return float(window.double().mean()), None


def _pool_story(layer: Layer, below: Tensor, map_: int, row: int, col: int) -> dict[str, Any]:
    """A pooled unit: the window of map ``map_`` below it, and how it was condensed."""
    pool = layer.pool if isinstance(layer, ConvPool) else layer
    window = _window(below, row, col, pool.size, pool.stride, 0)[map_]
    pooled, winner = _pooled(pool.pool_kind, window)
    story = {
        "pool": pool.pool_kind,
        "window": _placed(row, col, pool.size, pool.stride, 0, below.shape[1:]),
        "inputs": _numbers(window),
        "pooled": pooled,
        "winner": winner,
    }
    if isinstance(layer, ConvPool):  # network3's order: pool w∗a first, then bias and σ
        bias = float(layer.bias[map_])
        story |= {"bias": bias, "z": pooled + bias, "activation": layer.activation}
        story["a"] = _activation(layer.activation, pooled + bias)
    else:
        story["a"] = pooled
    return story


def _subsample_story(layer: Subsample, a: Tensor, map_: int, row: int, col: int) -> dict:
    window = _window(a, row, col, layer.size, layer.size, 0)[map_]
    total = float(window.double().sum())
    coefficient, bias = float(layer.coefficient[map_]), float(layer.bias[map_])
    z = coefficient * total + bias
    return {
        "window": _placed(row, col, layer.size, layer.size, 0, layer.in_shape),
        "inputs": _numbers(window),
        "sum": total,
        "coefficient": coefficient,
        "bias": bias,
        "z": z,
        "activation": layer.activation,
        "a": _activation(layer.activation, z),
    }


def _batchnorm_story(layer: BatchNorm, a: Tensor, index: tuple[int, ...]) -> dict[str, Any]:
    norm = layer.norm
    channel = index[0]
    value = float(a[0][index])
    mean, var = float(norm.running_mean[channel]), float(norm.running_var[channel])
    scale, shift = float(norm.weight[channel]), float(norm.bias[channel])
    normalised = (value - mean) / math.sqrt(var + norm.eps)
    return {
        "input": value,
        "mean": mean,
        "variance": var,
        "eps": norm.eps,
        "normalised": normalised,
        "scale": scale,
        "shift": shift,
        "a": scale * normalised + shift,
    }


def _input_position(shape: tuple[int, ...], index: int) -> list[int]:
    """A flattened input's index as (map, row, col) when the layer below has maps."""
    if len(shape) != 3:
        return [index]
    _, height, width = shape
    return [index // (height * width), index // width % height, index % width]


def _dense_story(layer: FullyConnected, a: Tensor, unit: int) -> dict[str, Any]:
    """Σ w·a + b over every input of a fully-connected unit: the largest terms one by one."""
    inputs = a[0].flatten()
    scale = 1.0
    if layer.dropout > 0 and layer.dropout_style == "network3":
        scale = 1 - layer.dropout  # network3 scales its inputs at test time
    weights = layer.weight[unit]
    products = weights * inputs * scale
    total = products.sum(dtype=torch.float64)
    top = products.abs().argsort(descending=True)[:TOP_INPUTS]
    shown = products[top].sum(dtype=torch.float64)
    z = float(total) + float(layer.bias[unit])
    return {
        "count": len(inputs),
        "input_scale": scale,
        "top": [
            {
                "at": _input_position(layer.in_shape, int(i)),
                "input": float(inputs[i]),
                "weight": float(weights[i]),
                "product": float(products[i]),
            }
            for i in top
        ],
        "rest": float(total - shown),
        "sum": float(total),
        "bias": float(layer.bias[unit]),
        "z": z,
    }


def _softmax_story(layer: FullyConnected, a: Tensor, unit: int) -> dict[str, Any]:
    """The output layer: every class's weighted input z, then e^z / Σ e^z."""
    story = _dense_story(layer, a, unit)
    with torch.inference_mode():
        logits = layer(a)[0].double()
    shifted = (logits - logits.max()).exp()  # e^(z − max z): the same ratios, no overflow
    story |= {
        "logits": _numbers(logits),
        "exponentials": _numbers(shifted),
        "exp_sum": float(shifted.sum()),
        "probabilities": _numbers(shifted / shifted.sum()),
    }
    story["a"] = float(shifted[unit] / shifted.sum())
    return story


def _check_unit(stage: Stage, map_: int, row: int, col: int) -> tuple[int, ...]:
    """The unit's index into the stage's values; CnnlabError if it is not one of them."""
    if stage.is_map:
        maps, rows, cols = stage.shape
        if not (0 <= map_ < maps and 0 <= row < rows and 0 <= col < cols):
            raise CnnlabError(
                f"unit (map {map_}, {row}, {col}) is outside {stage.name}'s"
                f" {maps} maps of {rows}×{cols}"
            )
        return map_, row, col
    if not 0 <= map_ < stage.shape[0]:
        raise CnnlabError(f"unit {map_} is outside {stage.name}'s {stage.shape[0]} units")
    return (map_,)


def unit_story(
    network: Network, x: Tensor, stage_index: int, map_: int, row: int = 0, col: int = 0
) -> dict[str, Any]:
    """How unit (map, row, col) of stage ``stage_index`` is computed for the picture ``x``
    (depth, H, W); for a stage of units (fc, softmax), ``map_`` is the unit."""
    network.eval()
    all_stages = stages(network)
    if not 0 <= stage_index < len(all_stages):
        raise CnnlabError(f"stage {stage_index} does not exist: this network has {len(all_stages)}")
    stage = all_stages[stage_index]
    index = _check_unit(stage, map_, row, col)
    layer = network.layers[stage.layer]
    a = _layer_inputs(network, x)[stage.layer]
    with torch.inference_mode():
        if isinstance(layer, (Conv, LocallyConnected)) or (
            isinstance(layer, ConvPool) and stage.kind == "conv"
        ):
            story = _weighted_window(layer, a, map_, row, col)
            story |= {"activation": layer.activation}
            story["a"] = _activation(layer.activation, story["z"])
        elif isinstance(layer, ConvPool):
            z = layer.ops.conv2d(a, layer.weight, None, layer.stride, layer.padding)
            story = _pool_story(layer, z, map_, row, col)
        elif isinstance(layer, Pool):
            story = _pool_story(layer, a, map_, row, col)
        elif isinstance(layer, Subsample):
            story = _subsample_story(layer, a, map_, row, col)
        elif isinstance(layer, BatchNorm):
            story = _batchnorm_story(layer, a, index)
        elif isinstance(layer, Softmax) or stage_index == len(all_stages) - 1:
            story = _softmax_story(layer, a, map_)  # the last stage holds the probabilities
        else:
            story = _dense_story(layer, a, map_)
            story |= {"activation": layer.activation}
            story["a"] = _activation(layer.activation, story["z"])
    value = stage_outputs(network, x[None])[stage_index][0][index]
    return {
        "stage": stage_index,
        "name": stage.name,
        "kind": stage.kind,
        "unit": {"map": map_, "row": row, "col": col},
        "below": stage_index - 1,
        "standardised": stage.layer == 0 and network.normalize is not None,
        "value": float(value),
        **story,
    }
