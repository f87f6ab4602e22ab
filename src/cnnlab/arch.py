"""The short, human-writable form of a network: ``convpool20x5-convpool40x5-fc100-softmax10``.

Tokens, joined by ``-`` (M maps, K window size, S stride, P padding, N units):

  conv{M}x{K}[s{S}][p{P}]       Conv: M feature maps of K×K shared weights
  conv16x5+c3                   … each map joined to some input maps only (LeNet-5's C3)
  local{M}x{K}[s{S}][p{P}]      LocallyConnected: the same windows, unshared weights
  convpool{M}x{K}[...][+POOL]   ConvPool: conv, pool (max 2×2 unless +POOL), bias, σ
  pool{K}[s{S}]                 max pooling K×K (stride S, default K)
  maxpool… l2pool… avgpool…     the three kinds of pooling, same options
  subsample{K}                  LeNet-5's subsampling: K×K sums × a learned coefficient
                                + a learned bias per map, then σ (default :lecun)
  fc{N}[d{D}]                   FullyConnected, N units, dropout D on its input
  softmax{N}[d{D}]              the Softmax output layer with N classes
  bn                            batch normalisation

Any conv, local, convpool, subsample or fc token takes ``:sigmoid``, ``:tanh``,
``:relu`` (the default), ``:linear`` or ``:lecun`` (LeNet-5's 1.7159·tanh(2a/3)).
Example: ``convpool20x5:sigmoid-fc100:sigmoid-softmax10``.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import SpecError

_WINDOWED = re.compile(
    r"(?P<kind>convpool|conv|local)(?P<maps>\d+)x(?P<size>\d+)(?:s(?P<stride>\d+))?"
    r"(?:p(?P<padding>\d+))?(?:\+(?P<pool>(?:max|l2|avg)?pool\d+(?:s\d+)?|c3))?"
)
_SUBSAMPLE = re.compile(r"subsample(?P<size>\d+)")
_POOL = re.compile(r"(?P<kind>max|l2|avg)?pool(?P<size>\d+)(?:s(?P<stride>\d+))?")
_DENSE = re.compile(r"(?P<kind>fc|softmax)(?P<units>\d+)(?:d(?P<dropout>\d*\.?\d+))?")

HELP = __doc__.split("\n\n", 1)[1]


def _parse_pool(text: str) -> dict[str, Any]:
    m = _POOL.fullmatch(text)
    if m is None:
        raise SpecError(f"cannot read pooling {text!r}")
    size = int(m["size"])
    return {"kind": m["kind"] or "max", "size": size, "stride": int(m["stride"] or size)}


def _parse_token(token: str) -> dict[str, Any]:
    body, _, activation = token.partition(":")
    if m := _WINDOWED.fullmatch(body):
        layer: dict[str, Any] = {
            "type": m["kind"],
            "maps": int(m["maps"]),
            "size": int(m["size"]),
            "stride": int(m["stride"] or 1),
            "padding": int(m["padding"] or 0),
        }
        if m["pool"] == "c3":
            if m["kind"] != "conv":
                raise SpecError(f"{token!r}: only conv takes a connection table (+c3)")
            layer["connections"] = "c3"
        elif m["pool"]:
            if m["kind"] != "convpool":
                raise SpecError(f"{token!r}: only convpool takes +POOL")
            pool = _parse_pool(m["pool"])
            if pool["stride"] != pool["size"]:
                raise SpecError(f"{token!r}: a convpool pools without overlap; drop the stride")
            layer.update(pool=pool["size"], pool_kind=pool["kind"])
    elif m := _POOL.fullmatch(body):
        layer = {"type": "pool", **_parse_pool(body)}
    elif m := _SUBSAMPLE.fullmatch(body):
        layer = {"type": "subsample", "size": int(m["size"]), "activation": "lecun"}
    elif m := _DENSE.fullmatch(body):
        layer = {"type": m["kind"], "units": int(m["units"])}
        if m["dropout"]:
            layer["dropout"] = float(m["dropout"])
    elif body == "bn":
        layer = {"type": "batchnorm"}
    else:
        raise SpecError(
            f"cannot read layer {token!r} (try e.g. conv20x5, pool2, fc100, softmax10;"
            " see `cnnlab train --help`)"
        )
    if activation:
        if layer["type"] in ("pool", "softmax", "batchnorm"):
            raise SpecError(f"{token!r}: a {layer['type']} layer takes no activation")
        layer["activation"] = activation
    return layer


def parse_arch(text: str) -> list[dict[str, Any]]:
    """Layer specs from the short form; raises SpecError naming the token it cannot read."""
    tokens = [t.strip() for t in text.strip().lower().split("-")]
    if not text.strip() or any(not t for t in tokens):
        raise SpecError(f"empty layer in architecture {text!r}")
    return [_parse_token(t) for t in tokens]


def _activation(layer: dict[str, Any]) -> str:
    act = layer.get("activation", "relu")
    return "" if act == "relu" else f":{act}"


def _format_layer(layer: dict[str, Any]) -> str:
    kind = layer["type"]
    if kind in ("conv", "local", "convpool"):
        text = f"{kind}{layer['maps']}x{layer['size']}"
        text += f"s{layer['stride']}" if layer.get("stride", 1) != 1 else ""
        text += f"p{layer['padding']}" if layer.get("padding", 0) else ""
        if kind == "convpool" and (layer.get("pool", 2), layer.get("pool_kind", "max")) != (
            2,
            "max",
        ):
            text += f"+{layer.get('pool_kind', 'max')}pool{layer.get('pool', 2)}"
        if layer.get("connections"):
            text += f"+{layer['connections']}"
        return text + _activation(layer)
    if kind == "subsample":
        act = layer.get("activation", "lecun")
        return f"subsample{layer.get('size', 2)}" + ("" if act == "lecun" else f":{act}")
    if kind == "pool":
        size = layer.get("size", 2)
        stride = layer.get("stride", size)
        prefix = "" if layer.get("kind", "max") == "max" else layer["kind"]
        return f"{prefix}pool{size}" + (f"s{stride}" if stride != size else "")
    if kind in ("fc", "softmax"):
        text = f"{kind}{layer['units']}"
        text += f"d{layer['dropout']:g}" if layer.get("dropout") else ""
        return text + (_activation(layer) if kind == "fc" else "")
    if kind == "batchnorm":
        return "bn"
    raise SpecError(f"unknown layer type {kind!r}")


def format_arch(layers: list[dict[str, Any]]) -> str:
    """The short form of a list of layer specs (the inverse of ``parse_arch``)."""
    return "-".join(_format_layer(layer) for layer in layers)
