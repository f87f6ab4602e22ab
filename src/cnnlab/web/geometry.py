"""The geometry playground's answers: one convolutional layer's sizes and parameter counts.

Worked out by the layers themselves (``Network.shapes_only``, no memory behind
the weights), so every number is the one ``cnnlab summary`` prints for the same
layer: a window sliding over a side × side picture gives (side + 2·padding −
size) / stride + 1 positions a side; its maps share size·size·depth weights and
a bias each, where a locally connected layer would need them at every position
and a fully-connected layer of ``hidden`` units a weight per pixel per unit.
"""

from __future__ import annotations

from typing import Any

from ..errors import CnnlabError
from ..network import Network

# Small enough to draw cell by cell, large enough for the chapter's and CIFAR's pictures.
LIMITS = {"side": (1, 64), "depth": (1, 64), "maps": (1, 256), "size": (1, 64),
          "stride": (1, 64), "padding": (0, 32), "pool": (1, 8), "hidden": (1, 10_000)}  # fmt: skip


def _check(values: dict[str, int]) -> None:
    for name, value in values.items():
        low, high = LIMITS[name]
        if not low <= value <= high:
            raise CnnlabError(f"{name} must be from {low} to {high}, got {value}")


def _row(spec: dict[str, Any], layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = Network.shapes_only({**spec, "layers": layers}).summary_rows()[1:]
    return [
        {
            "name": r.name,
            "shape": list(r.output_shape),
            "parameters": r.parameters,
            "formula": r.formula,
        }
        for r in rows
    ]


def geometry(
    side: int, depth: int, maps: int, size: int, stride: int, padding: int, pool: int, hidden: int
) -> dict[str, Any]:
    """Shapes and parameter counts of a conv layer (and its pooling) on a side × side × depth
    input, beside the locally connected and fully-connected layers it could have been."""
    _check(locals())
    spec = {"input": [depth, side, side]}
    window = {"maps": maps, "size": size, "stride": stride, "padding": padding}
    layers = [{"type": "conv", **window}]
    if pool > 1:
        layers.append({"type": "pool", "size": pool})
    conv = _row(spec, layers)
    return {
        "input": [depth, side, side],
        "conv": conv[0],
        "pool": conv[1] if pool > 1 else None,
        "local": _row(spec, [{"type": "local", **window}])[0],
        "fc": _row(spec, [{"type": "fc", "units": hidden}])[0],
    }
