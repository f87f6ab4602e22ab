"""Network: a list of layers plus an input shape, described by one JSON-able spec.

The spec ``{"input": [1, 28, 28], "layers": [{"type": "conv", ...}, ...]}`` is
what presets are written in, what ``--arch`` is parsed into, and what a
checkpoint stores beside its weights, so a saved network rebuilds itself. An
optional ``"normalize": {"mean": [...], "std": [...]}`` (one number per input
channel, pixels as fractions of 255) standardises every input first, so
whoever uses the network — predict, the explorer, an exported model — feeds it
plain pixels.
Checkpoints are safetensors files whose header carries the spec as JSON:
no pickle anywhere.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as safetensors_load
from safetensors.torch import save_file
from torch import Tensor, nn

from .errors import CheckpointError, CnnlabError, SpecError
from .files import write_atomically
from .kernels import get_ops
from .layers import DROPOUT_STYLES, Conv, ConvPool, Layer, LocallyConnected, Shape, Softmax
from .layers import layer_from_spec as _layer_from_spec

INITS = ("default", "network3")
FORMAT_VERSION = 1
METADATA_KEY = "cnnlab"
MAX_DEPTH, MAX_SIDE = 4096, 65_536  # far beyond small images; larger sizes only overflow
# Names of the tensors in a run's checkpoint: the trained weights, and their moving average
# (``averaging.py``) when the run keeps one; a saved network's have no prefix.
WEIGHTS_PREFIX, AVERAGE_PREFIX = "model.", "average."


@dataclass(frozen=True)
class SummaryRow:
    """One line of ``Network.summary()``."""

    name: str
    output_shape: Shape
    parameters: int
    formula: str
    flops: int
    receptive_field: str


def _shape_text(shape: Shape) -> str:
    return "×".join(str(s) for s in shape)


class Network(nn.Module):
    """A feed-forward network of cnnlab layers; ``forward`` returns the output layer's logits."""

    def __init__(
        self,
        layers: list[Layer],
        input_shape: Shape = (1, 28, 28),
        kernels: str = "native",
        dropout_style: str = "inverted",
        normalize: dict[str, list[float]] | None = None,
    ) -> None:
        super().__init__()
        if not layers:
            raise SpecError("a network needs at least one layer")
        if dropout_style not in DROPOUT_STYLES:
            raise SpecError(f"unknown dropout style {dropout_style!r}")
        self.input_shape = tuple(input_shape)
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise SpecError(f"input shape must be depth×height×width, got {input_shape}")
        self.layers = nn.ModuleList(layers)
        shape: Shape = self.input_shape
        for index, layer in enumerate(layers, 1):
            try:
                shape = layer.build(shape)
            except SpecError as exc:
                raise SpecError(f"layer {index}: {exc}") from None
            except RuntimeError:  # PyTorch cannot even describe tensors of that many elements
                raise SpecError(
                    f"layer {index} ({layer.kind}): its weights would have more elements than"
                    " PyTorch can count: make it smaller"
                ) from None
            layer.dropout_style = dropout_style
        self.dropout_style = dropout_style
        self.normalize = _check_normalize(normalize, self.input_shape[0])
        if self.normalize is not None:  # from the spec, so not saved with the weights
            for key in ("mean", "std"):
                value = torch.tensor(self.normalize[key]).view(-1, 1, 1)
                self.register_buffer(key, value, persistent=False)
        self.channels_last = False
        self.use_kernels(kernels)

    # ---- the one description -------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: dict[str, Any], kernels: str = "native") -> Network:
        """Build a network from its spec dict; a SpecError says what is wrong."""
        if not isinstance(spec, dict) or "layers" not in spec or "input" not in spec:
            raise SpecError("a network spec needs 'input' (e.g. [1, 28, 28]) and 'layers'")
        layers = spec["layers"]
        if not isinstance(layers, list):
            raise SpecError("'layers' must be a list of layer objects")
        style = spec.get("dropout_style", "inverted")
        if not isinstance(style, str):
            raise SpecError(f"unknown dropout style {style!r}")
        return cls(
            [_layer_from_spec(layer) for layer in layers],
            _input_shape(spec["input"]),
            kernels=kernels,
            dropout_style=style,
            normalize=spec.get("normalize"),
        )

    @classmethod
    def shapes_only(cls, spec: dict[str, Any]) -> Network:
        """The network of ``spec`` with no memory behind its weights (PyTorch's meta device):
        shapes, parameter counts and FLOPs of any size, answered at once."""
        with torch.device("meta"):
            return cls.from_spec(spec)

    @classmethod
    def create(
        cls,
        spec: dict[str, Any],
        seed: int = 0,
        faithful: bool = False,
        kernels: str = "native",
        init: str = "default",
    ) -> Network:
        """A freshly initialised network, the same for the same seed.

        ``init="network3"`` starts from network3.py's initialisation instead of
        PyTorch's; ``faithful`` implies it and also uses network3's dropout
        (scaled at test time).
        """
        if init not in INITS:
            raise SpecError(f"unknown initialisation {init!r}: choose one of {', '.join(INITS)}")
        torch.manual_seed(seed)
        if faithful:
            spec = {**spec, "dropout_style": "network3"}
        network = cls.from_spec(spec, kernels=kernels)
        if faithful or init == "network3":
            network.init_network3()
        return network

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "input": list(self.input_shape),
            "layers": [layer.spec() for layer in self.layers],
        }
        if self.dropout_style != "inverted":
            spec["dropout_style"] = self.dropout_style
        if self.normalize is not None:
            spec["normalize"] = self.normalize
        return spec

    @property
    def classes(self) -> int:
        last = self.layers[-1]
        return last.units if isinstance(last, Softmax) else math.prod(last.out_shape)

    def use_kernels(self, kernels: str) -> None:
        """Switch every layer to "native" or "explicit" kernels; weights are unchanged."""
        ops = get_ops(kernels)
        self.kernels, self.ops = kernels, ops
        for layer in self.modules():
            if isinstance(layer, Layer):
                layer.ops = ops

    def init_network3(self) -> None:
        """Re-initialise all parameters as the chapter's network3.py does."""
        for layer in self.layers:
            layer.init_network3()

    # ---- running it ----------------------------------------------------------------------
    def use_channels_last(self, on: bool = True) -> Network:
        """Keep maps as (batch, height, width, depth): oneDNN's fastest convolutions on CPUs."""
        self.channels_last = on
        return self.to(memory_format=torch.channels_last if on else torch.contiguous_format)

    def standardised(self, x: Tensor) -> Tensor:
        """The input as the first layer sees it: (x − mean) / std for a network that
        standardises its inputs, else as it is."""
        return x if self.normalize is None else (x - self.mean) / self.std

    def forward(self, x: Tensor) -> Tensor:
        x = self.standardised(x)
        if self.channels_last and x.dim() == 4:  # a no-op when the input is laid out already
            x = x.contiguous(memory_format=torch.channels_last)
        for layer in self.layers:
            x = layer(x)
        return x

    # ---- describing it -------------------------------------------------------------------
    def summary_rows(self) -> list[SummaryRow]:
        """Per layer: output shape, parameters (and how they arise), FLOPs, receptive field.

        The receptive field is the size of the input region one unit of the
        layer depends on: r += (k − 1)·j and j *= s for each window of size k
        and stride s along the way (j = distance on the input between units).
        """
        rows = [SummaryRow("input", self.input_shape, 0, "", 0, "1×1")]
        field, jump, whole = 1, 1, False
        for layer in self.layers:
            for size, stride in layer.windows():
                field += (size - 1) * jump
                jump *= stride
            whole = whole or layer.sees_whole_input
            rf = "whole input" if whole else f"{field}×{field}"
            rows.append(
                SummaryRow(
                    layer.describe(),
                    layer.out_shape,
                    layer.parameter_count(),
                    layer.parameter_formula(),
                    layer.flops(),
                    rf,
                )
            )
        return rows

    def summary(self) -> str:
        """A table of the layers, their shapes, parameter counts, FLOPs and receptive fields."""
        rows = self.summary_rows()
        header = ("layer", "output", "parameters", "= how", "FLOPs", "receptive field")
        table = [header] + [
            (
                r.name,
                _shape_text(r.output_shape),
                f"{r.parameters:,}",
                r.formula,
                f"{r.flops:,}",
                r.receptive_field,
            )
            for r in rows
        ]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
        lines.insert(1, "  ".join("-" * w for w in widths))
        total_params = sum(r.parameters for r in rows)
        total_flops = sum(r.flops for r in rows)
        lines.append(
            f"total: {total_params:,} parameters, {total_flops:,} FLOPs per image"
            f" (forward pass; a multiply-add counts 2)"
        )
        lines.extend(self._depth_notes())
        return "\n".join(lines)

    def _depth_notes(self) -> list[str]:
        """Why a filter on a deep input has more weights than its window suggests."""
        notes = []
        for layer in self.layers:
            if getattr(layer, "connections", None) is not None:
                notes.append(
                    f"note: each map of {layer.describe()} sees only the input maps its"
                    f" {layer.connections} table names: {layer.parameter_count():,} weights and"
                    f" biases, not the {layer.maps * (layer.size**2 * layer.in_shape[0] + 1):,}"
                    " of joining every map to every input map"
                )
            elif isinstance(layer, (Conv, ConvPool, LocallyConnected)) and layer.in_shape[0] > 1:
                d, m, k = layer.in_shape[0], layer.maps, layer.size
                shared = "shared by every position" if layer.kind != "local" else "at each position"
                notes.append(
                    f"note: each filter of {layer.describe()} spans the whole input depth {d}:"
                    f" {m} × ({k}·{k}·{d} + 1) = {m * (k * k * d + 1):,} weights and biases"
                    f" {shared}, not {m} × ({k}·{k} + 1) = {m * (k * k + 1):,}"
                )
        return notes

    # ---- saving it -----------------------------------------------------------------------
    def save(self, path: str | Path, metadata: dict[str, Any] | None = None) -> None:
        """Write weights + spec (+ metadata) to a safetensors file, atomically."""
        tensors = {name: t.detach().contiguous().cpu() for name, t in self.state_dict().items()}
        save_tensors(path, tensors, {"spec": self.spec(), **(metadata or {})})

    @classmethod
    def load(
        cls, path: str | Path, kernels: str = "native", content: bytes | None = None
    ) -> tuple[Network, dict[str, Any]]:
        """Read a network saved by ``save``; returns it with the file's metadata.

        ``content``, if given, is the file's bytes, already read (by a caller that must
        check where they come from); ``path`` then only names it in messages. With native
        kernels the network comes laid out channels-last, for fast inference on CPUs. From a
        run's checkpoint it is the network the run evaluates: the weights' moving average
        when the run keeps one, else the weights.
        """
        tensors, meta = load_tensors(path, content)
        if not isinstance(meta.get("spec"), dict):
            raise CheckpointError(f"{path}: no network spec in this file")
        weights = tensors_named(tensors, AVERAGE_PREFIX) or tensors_named(tensors, WEIGHTS_PREFIX)
        _check_shapes(weights or tensors, meta["spec"], path)
        network = cls.from_spec(meta["spec"], kernels=kernels)
        _check_metadata(meta, network, path)
        _check_weights(weights or tensors, network.state_dict(), path)
        network.load_state_dict(weights or tensors)
        return network.use_channels_last(kernels == "native"), meta


def tensors_named(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The tensors whose names start with ``prefix``, named without it."""
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}


def _input_shape(value: Any) -> Shape:
    """A spec's input: three whole numbers, depth ≤ MAX_DEPTH and sides ≤ MAX_SIDE."""
    ok = (
        isinstance(value, list)
        and len(value) == 3
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in value)
    )
    if not ok or value[0] > MAX_DEPTH or max(value[1:]) > MAX_SIDE:
        raise SpecError(
            f"bad input shape {value!r}: give [depth, height, width], whole numbers with depth"
            f" at most {MAX_DEPTH:,} and sides at most {MAX_SIDE:,}"
        )
    return tuple(value)


def _check_metadata(meta: dict[str, Any], network: Network, path: Any) -> None:
    """What a checkpoint says beside its spec must fit it: a wrong class list or data set name
    would make every answer about the network wrong."""
    classes = meta.get("classes")
    if classes is not None and not (
        isinstance(classes, list)
        and len(classes) == network.classes
        and all(isinstance(c, (str, int)) and not isinstance(c, bool) for c in classes)
    ):
        raise CheckpointError(
            f"{path}: its class names do not fit the network's {network.classes} outputs"
            " (a damaged or hand-edited file)"
        )
    if meta.get("input") not in (None, list(network.input_shape)):
        raise CheckpointError(f"{path}: its input shape does not match its spec (a damaged file)")
    for key, kinds in (("dataset", str), ("config", dict)):
        if meta.get(key) is not None and not isinstance(meta[key], kinds):
            raise CheckpointError(f"{path}: its {key!r} entry is damaged ({meta[key]!r})")


def _check_shapes(found: dict[str, Tensor], spec: dict[str, Any], path: Any) -> None:
    """The saved tensors must be the spec's, compared on shapes alone: a spec that says more than
    the file holds is refused before the memory for it is taken."""
    expected = {k: tuple(v.shape) for k, v in Network.shapes_only(spec).state_dict().items()}
    shapes = {k: tuple(v.shape) for k, v in found.items()}
    wrong = sorted(k for k in expected.keys() | shapes.keys() if expected.get(k) != shapes.get(k))
    if wrong:
        listed = ", ".join(
            f"{k} {_shape_text(shapes[k]) if k in shapes else 'missing'}"
            f" (spec: {_shape_text(expected[k]) if k in expected else 'none'})"
            for k in wrong[:4]
        )
        raise CheckpointError(f"{path}: weights do not match the spec ({listed})")


def _check_weights(found: dict[str, Tensor], expected: dict[str, Tensor], path: Any) -> None:
    """Saved weights must have the type the network gives them and be finite numbers: a NaN or
    a relabelled integer tensor would otherwise give confident nonsense."""
    for name, value in found.items():
        want = expected.get(name)
        if want is not None and value.dtype != want.dtype:
            raise CheckpointError(
                f"{path}: {name} is {value.dtype}, not {want.dtype}: not weights cnnlab saved"
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(
                f"{path}: {name} holds NaN or infinite values (a run that diverged, or a damaged"
                " file): train it again or use an earlier checkpoint"
            )


def _check_normalize(normalize: Any, depth: int) -> dict[str, list[float]] | None:
    """The spec's input standardisation: a mean and a positive std for each of the channels."""
    if normalize is None:
        return None
    try:
        values = {key: [float(v) for v in normalize[key]] for key in ("mean", "std")}
    except (TypeError, KeyError, ValueError):
        raise SpecError('"normalize" must be {"mean": [...], "std": [...]}') from None
    ok = all(len(v) == depth and all(math.isfinite(x) for x in v) for v in values.values())
    if not ok or min(values["std"]) <= 0:
        raise SpecError(
            f'"normalize" needs {depth} finite means and {depth} positive standard deviations'
        )
    return values


def _header_metadata(content: bytes) -> dict[str, str]:
    """The ``__metadata__`` of safetensors bytes: an 8-byte little-endian header length, then
    the header's JSON (the format's specification)."""
    length = int.from_bytes(content[:8], "little")
    if len(content) < 8 + length:
        raise ValueError("the header runs past the end of the file")
    try:
        header = json.loads(content[8 : 8 + length])
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise ValueError("the header is not JSON") from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def save_tensors(path: str | Path, tensors: dict[str, Tensor], metadata: dict[str, Any]) -> None:
    """safetensors file with JSON metadata, written to a temp file and renamed into place."""
    header = {METADATA_KEY: json.dumps({"format": FORMAT_VERSION, **metadata})}
    try:
        write_atomically(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))
    except (OSError, SafetensorError) as exc:  # a full disk, a folder that went away, …
        raise CnnlabError(
            f"could not write {path} ({str(exc)[:120]}); the file it would have replaced is"
            " unchanged: make room, then continue with --resume"
        ) from None


def load_tensors(
    path: str | Path, content: bytes | None = None
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors and metadata of a cnnlab safetensors file (or of its ``content``, already read);
    CheckpointError if it is not one."""
    path = Path(path)
    if content is None and path.is_dir():
        raise CheckpointError(f"{path} is a folder: name a .safetensors file in it")
    if content is None and not path.exists():
        raise CheckpointError(f"{path}: no such file")
    try:
        if content is None:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
                tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
        else:
            tensors, header = safetensors_load(content), _header_metadata(content)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable cnnlab checkpoint ({exc})") from None
    try:
        meta = json.loads(header[METADATA_KEY])
    except (KeyError, json.JSONDecodeError, RecursionError):
        meta = None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} is a safetensors file but not a cnnlab checkpoint")
    return tensors, meta
