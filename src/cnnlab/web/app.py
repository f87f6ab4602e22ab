"""The explorer's JSON API and its page; every answer comes from ``cnnlab.probe``.

Nothing a request sends can crash the server: bad input is a JSON error with
status 400 (404 for a name outside the served folder, 413 for a body over the
size limit), and anything unexpected is logged and answered with a 500.
The API is documented in docs/explorer.md.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flask import Flask, Response, jsonify, request, send_from_directory
from PIL import Image
from torch import Tensor
from werkzeug.exceptions import HTTPException

from .. import data as datasets
from .. import probe
from ..arch import format_arch
from ..data import Part
from ..errors import CnnlabError
from ..images import grey_levels, mnist_style
from ..network import Network
from ..predict import class_names
from .folder import NotServed, ServedFolder

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD = 2 * 1024 * 1024  # bytes of one request body
MAX_PIXELS = 4096 * 4096  # of an uploaded image, so a small file cannot decode to gigabytes
MAX_SAMPLES = 100
INPUT = (1, 28, 28)


def _numbers(values: Tensor, digits: int = 4) -> Any:
    """Nested lists of rounded floats: compact JSON for maps and weights."""
    return np.round(values.detach().double().numpy(), digits).tolist()


def decode_upload(data: bytes) -> np.ndarray:
    """Grey levels (0…255) of an uploaded image file; CnnlabError if it is none."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PIXELS:
                raise CnnlabError(f"the image has more than {MAX_PIXELS:,} pixels")
            return grey_levels(image)
    except CnnlabError:
        raise
    except Exception:  # PIL's decoders raise many kinds of error on a damaged file
        raise CnnlabError("the upload is not a readable image (send a PNG or JPEG)") from None


def _pixels_from_json(body: Any) -> np.ndarray:
    """A 28×28 input given as numbers in [0, 1] (light ink on black, as MNIST)."""
    pixels = body.get("pixels") if isinstance(body, dict) else None
    try:
        array = np.asarray(pixels, dtype=np.float32)
    except (TypeError, ValueError):
        array = np.empty(0)
    if array.shape != INPUT[1:] or not np.isfinite(array).all():
        raise CnnlabError('send {"pixels": 28 rows of 28 numbers in [0, 1]}')
    return np.clip(array, 0, 1)


def _network_input(network: Network) -> None:
    if network.input_shape != INPUT:
        raise CnnlabError(
            f"this network takes {network.input_shape} input; the explorer draws 28×28 grey digits"
        )


def _int_arg(name: str, default: int | None = None) -> int:
    text = request.args.get(name, "" if default is None else str(default))
    try:
        return int(text)
    except ValueError:
        raise CnnlabError(f"query parameter {name!r} must be a whole number") from None


def analysis(network: Network, meta: dict[str, Any], x: Tensor) -> dict[str, Any]:
    """What the page shows for one input (1, 28, 28): probabilities and every stage's values."""
    outputs = probe.stage_outputs(network, x[None])
    stages = probe.stages(network)
    probabilities = outputs[-1][0]
    best = int(probabilities.argmax())
    return {
        "input": _numbers(x[0]),
        "probabilities": _numbers(probabilities, 6),
        "predicted": best,
        "label": class_names(network, meta)[best],
        "stages": [
            {
                "name": stage.name,
                "kind": stage.kind,
                "shape": list(stage.shape),
                "min": float(values.min()),
                "max": float(values.max()),
                "values": _numbers(values[0]),
            }
            for stage, values in zip(stages, outputs)
        ],
    }


def describe(name: str, network: Network, meta: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's network: layers, stages, classes, how it scored, its first filters."""
    try:
        first = probe.filters(network)[0]
        shape, weights = list(first.weights.shape), _numbers(first.weights)
        filters = {"name": first.name, "shape": shape, "weights": weights}
    except CnnlabError:
        filters = None
    return {
        "checkpoint": name,
        "arch": format_arch(network.spec()["layers"]),
        "input": list(network.input_shape),
        "classes": class_names(network, meta),
        "dataset": meta.get("dataset"),
        "epoch": meta.get("epoch"),
        "test_accuracy": meta.get("test_accuracy"),
        "summary": network.summary(),
        "stages": [
            {"name": s.name, "kind": s.kind, "shape": list(s.shape)} for s in probe.stages(network)
        ],
        "filters": filters,
    }


class _TestImages:
    """The test images of each data set, read from the cache once (never downloaded here)."""

    def __init__(self) -> None:
        self._parts: dict[str, Part] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Part:
        with self._lock:
            if name not in self._parts:
                if name not in datasets.DATASETS or not datasets.cache_path(name).exists():
                    raise NotServed(
                        f"no {name} test images here: run `cnnlab data fetch {name}` first"
                    )
                self._parts[name] = datasets.load_splits(name).test
            return self._parts[name]


def create_app(folder: ServedFolder, max_upload: int = MAX_UPLOAD) -> Flask:
    """The explorer for the checkpoints and runs of ``folder``."""
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = max_upload
    app.json.sort_keys = False
    test_images = _TestImages()

    @app.errorhandler(CnnlabError)
    def user_error(exc: CnnlabError) -> tuple[Response, int]:
        return jsonify(error=str(exc)), 404 if isinstance(exc, NotServed) else 400

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        message = exc.description or exc.name
        if exc.code == 413:
            message = f"the request is larger than the limit of {max_upload:,} bytes"
        return jsonify(error=message), exc.code or 500

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> tuple[Response, int]:
        app.logger.exception("internal error")
        return jsonify(error=f"internal error: {type(exc).__name__}: {exc}"), 500

    @app.get("/")
    def page() -> Response:
        return send_from_directory(STATIC, "index.html")

    @app.get("/static/<path:name>")
    def static_file(name: str) -> Response:
        return send_from_directory(STATIC, name)

    @app.get("/api/checkpoints")
    def checkpoints() -> Response:
        return jsonify(
            folder=str(folder.root),
            default=folder.default_checkpoint(),
            checkpoints=[{"name": e.name, "modified": e.modified} for e in folder.checkpoints()],
        )

    @app.get("/api/network")
    def network_info() -> Response:
        name, network, meta = folder.network(request.args.get("checkpoint"))
        return jsonify(describe(name, network, meta))

    @app.post("/api/analyze")
    def analyze() -> Response:
        name, network, meta = folder.network(request.args.get("checkpoint"))
        _network_input(network)
        upload = request.files.get("image")
        if upload is not None:
            x = mnist_style(decode_upload(upload.read()), "the image")
        elif request.is_json:
            x = _pixels_from_json(request.get_json(silent=True))
        else:
            raise CnnlabError(
                "send an image file (multipart field 'image') or JSON {\"pixels\": 28×28}"
            )
        return jsonify(checkpoint=name, **analysis(network, meta, torch.from_numpy(x)[None]))

    @app.get("/api/receptive-field")
    def receptive_field() -> Response:
        _, network, _ = folder.network(request.args.get("checkpoint"))
        top, left, bottom, right = probe.receptive_field(
            network, _int_arg("stage"), _int_arg("row", 0), _int_arg("col", 0)
        )
        return jsonify(top=top, left=left, bottom=bottom, right=right)

    @app.get("/api/samples")
    def samples() -> Response:
        _, network, meta = folder.network(request.args.get("checkpoint"))
        count, seed = _int_arg("count", 12), _int_arg("seed", 0)
        if not 1 <= count <= MAX_SAMPLES:
            raise CnnlabError(f"count must be between 1 and {MAX_SAMPLES}")
        name = meta.get("dataset", "mnist")
        part = test_images.get(name)
        generator = torch.Generator().manual_seed(seed % 2**63)
        indices = torch.randperm(len(part), generator=generator)[:count]
        classes = class_names(network, meta)
        return jsonify(
            dataset=name,
            indices=indices.tolist(),
            labels=[classes[i] for i in part.labels[indices].tolist()],
            pixels=_numbers(part.images[indices, 0].float() / 255, 6),
        )

    @app.get("/api/runs")
    def runs() -> Response:
        return jsonify(runs=[{"name": e.name, "modified": e.modified} for e in folder.runs()])

    @app.get("/api/metrics")
    def metrics() -> Response:
        return jsonify(folder.run(request.args.get("run")))

    return app
