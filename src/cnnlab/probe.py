"""Looking inside a network: the data behind the pictures of ``cnnlab show`` and the explorer.

A *stage* is one step of the forward pass worth looking at: the output of a
layer, and for the chapter's ConvPool layer also its convolution before the
pooling condenses it. For every stage this module gives its feature maps for an
input, and for every unit of a map its receptive field on the input. It also
collects the learned filters, the misclassified test images and the confusion
matrix. Everything here returns tensors and plain data; ``plots.py`` draws them
and the web explorer sends them as JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .data import Part
from .errors import CnnlabError
from .layers import ACTIVATIONS, Conv, ConvPool, Layer, Shape
from .network import Network
from .predict import PRECISION, labels
from .runs import METRICS

# (size, stride, padding) of one sliding window
Window = tuple[int, int, int]


@dataclass(frozen=True)
class Stage:
    """One picture-able step of the forward pass.

    ``windows`` are the windows this stage slides over the previous stage's
    maps (none for batch norm); ``whole_input`` is true once a fully-connected
    layer has mixed every position.
    """

    name: str
    kind: str  # conv | local | pool | batchnorm | fc | softmax
    layer: int  # index into network.layers
    shape: Shape
    windows: tuple[Window, ...]
    whole_input: bool

    @property
    def is_map(self) -> bool:
        return len(self.shape) == 3


def _windows(layer: Layer) -> tuple[Window, ...]:
    """A layer's windows with their padding: only the first (the convolution's) is padded."""
    pads = [getattr(layer, "padding", 0)] + [0] * len(layer.windows())
    return tuple((size, stride, pad) for (size, stride), pad in zip(layer.windows(), pads))


def stages(network: Network) -> list[Stage]:
    """The stages of ``network`` in forward order (see the module doc)."""
    names = [row.name for row in network.summary_rows()[1:]]
    result, whole = [], False
    for index, layer in enumerate(network.layers):
        whole = whole or layer.sees_whole_input
        if isinstance(layer, ConvPool):
            conv, pool = _windows(layer)
            name = f"conv {layer.maps}×{layer.size}×{layer.size}"
            result.append(Stage(name, "conv", index, layer.pool.in_shape, (conv,), whole))
            pool_name = f"{layer.pool.pool_kind} pool {layer.pool.size}×{layer.pool.size}"
            result.append(Stage(pool_name, "pool", index, layer.out_shape, (pool,), whole))
        else:
            result.append(
                Stage(names[index], layer.kind, index, layer.out_shape, _windows(layer), whole)
            )
    return result


@torch.inference_mode()
def stage_outputs(network: Network, x: Tensor) -> list[Tensor]:
    """The values of every stage for a batch ``x``, aligned with ``stages(network)``.

    Everything is float32, so each value can be recomputed by hand from the one below
    (``arithmetic.unit_story``); the last stage holds the class probabilities, the
    softmax of the output. A ConvPool adds bias and σ after pooling, so its convolution
    stage is shown as σ(w ∗ a + b): with max pooling (the chapter's) the pooled stage is
    exactly the max-pool of it, since every σ cnnlab has is monotonic.
    """
    network.eval()
    outputs = []
    x = network.standardised(x.float())
    for layer in network.layers:
        if isinstance(layer, ConvPool):
            z = layer.ops.conv2d(x, layer.weight, layer.bias, layer.stride, layer.padding)
            outputs.append(ACTIVATIONS[layer.activation](z))
        x = layer(x)
        outputs.append(x)
    outputs[-1] = x.softmax(1)
    return outputs


def receptive_field(network: Network, stage: int, row: int, col: int) -> tuple[int, int, int, int]:
    """(top, left, bottom, right), inclusive, of the input pixels unit (row, col) of a stage sees.

    Walking back through the windows, a unit at position i of a window of size
    k, stride s and padding p sees positions i·s − p … i·s − p + k − 1 below
    it, clipped to the maps that are there (padding adds no units). A unit
    after a fully-connected layer sees the whole input.
    """
    all_stages = stages(network)
    if not 0 <= stage < len(all_stages):
        raise CnnlabError(f"stage {stage} does not exist: this network has {len(all_stages)}")
    chosen = all_stages[stage]
    _, height, width = network.input_shape
    if not chosen.is_map or chosen.whole_input:
        return 0, 0, height - 1, width - 1
    _, rows, cols = chosen.shape
    if not (0 <= row < rows and 0 <= col < cols):
        raise CnnlabError(f"unit ({row}, {col}) is outside the {rows}×{cols} maps of {chosen.name}")
    below = [network.input_shape] + [s.shape for s in all_stages[:stage]]
    top, left, bottom, right = row, col, row, col
    for step, (_, rows_below, cols_below) in reversed(list(zip(all_stages, below))):
        for size, stride, pad in reversed(step.windows):
            top, left = top * stride - pad, left * stride - pad
            bottom, right = bottom * stride - pad + size - 1, right * stride - pad + size - 1
        top, left = max(top, 0), max(left, 0)
        bottom, right = min(bottom, rows_below - 1), min(right, cols_below - 1)
    return top, left, bottom, right


@dataclass(frozen=True)
class FilterBank:
    """The shared weights of one convolutional layer: (maps, depth, size, size)."""

    name: str
    layer: int
    weights: Tensor


def filters(network: Network) -> list[FilterBank]:
    """The filters of every shared-weight (conv or ConvPool) layer, first layer first."""
    names = [row.name for row in network.summary_rows()[1:]]
    banks = [
        FilterBank(f"layer {index + 1}: {names[index]}", index, layer.weight.detach().cpu())
        for index, layer in enumerate(network.layers)
        if isinstance(layer, (Conv, ConvPool))
    ]
    if not banks:
        kinds = ", ".join(layer.kind for layer in network.layers)
        raise CnnlabError(
            f"this network has no convolutional layer with shared filters (its layers: {kinds})"
        )
    return banks


def predictions(
    network: Network, part: Part, progress: bool = False, precision: str = PRECISION
) -> Tensor:
    """The predicted class of every image of ``part``, with a progress bar if asked."""
    chunk = 1000
    starts = range(0, len(part), chunk)
    return torch.cat(
        [
            labels(network, part.images[start : start + chunk], precision=precision)
            for start in tqdm(starts, desc="classifying", unit="k images", disable=not progress)
        ]
    )


@dataclass(frozen=True)
class Mistakes:
    """Misclassified images: indices into the part, images, true and predicted labels."""

    indices: Tensor
    images: Tensor
    labels: Tensor
    predicted: Tensor
    total: int  # images classified


def mistakes(part: Part, predicted: Tensor, limit: int | None = None) -> Mistakes:
    """The images of ``part`` whose prediction is wrong, in order, at most ``limit`` of them."""
    wrong = torch.nonzero(predicted != part.labels).flatten()
    shown = wrong[:limit]
    return Mistakes(shown, part.images[shown], part.labels[shown], predicted[shown], len(part))


def confusion_matrix(labels: Tensor, predicted: Tensor, classes: int) -> Tensor:
    """Counts[true, predicted] as a classes×classes int64 tensor."""
    flat = labels.long() * classes + predicted.long()
    return torch.bincount(flat, minlength=classes * classes).reshape(classes, classes)


def training_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch rows of a run's metrics log (``metrics.jsonl``)."""
    path = Path(run_dir)
    path = path / METRICS if path.is_dir() else path
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CnnlabError(f"{path}: no such file (a run folder holds {METRICS})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CnnlabError(f"{path}: cannot read ({exc})") from None
    return parse_history(text, path)


def parse_history(text: str, path: str | Path) -> list[dict[str, Any]]:
    """The rows of a metrics log's ``text``; CnnlabError unless every row is an epoch's."""
    try:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CnnlabError(f"{path}: not a metrics log ({str(exc)[:80]})") from None
    if not all(isinstance(row, dict) and _is_epoch(row) for row in rows):
        raise CnnlabError(
            f"{path}: not a metrics log (an epoch without its loss and accuracies): a run"
            " folder's metrics.jsonl is written by `cnnlab train`"
        )
    return rows


def _is_epoch(row: dict[str, Any]) -> bool:
    """A metrics row with the numbers the curves draw (validation may be absent)."""

    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    needed = ("epoch", "train_loss", "train_accuracy", "test_accuracy")
    return all(number(row.get(k)) for k in needed) and (
        row.get("validation_accuracy") is None or number(row["validation_accuracy"])
    )
