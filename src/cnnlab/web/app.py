"""The explorer's JSON API and its page; every answer comes from ``cnnlab.probe``.

Nothing a request sends can crash the server: bad input is a JSON error with
status 400 (404 for a name outside the served folder, 413 for a body over the
size limit), and anything unexpected is logged and answered with a 500.
The API is documented in docs/explorer.md.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import torch
from flask import Flask, Response, jsonify, request, send_from_directory
from PIL import Image
from torch import Tensor
from werkzeug.exceptions import HTTPException

from .. import data as datasets
from .. import probe
from ..arch import format_arch
from ..arithmetic import unit_story
from ..config import TrainConfig
from ..data import Part
from ..errors import CnnlabError
from ..images import FORMATS, fit_picture, grey_levels, mnist_style
from ..layers import MAX_SIZE
from ..network import Network
from ..predict import class_names, labels, reads_digits
from ..runs import trained_config
from .folder import NotServed, ServedFolder
from .geometry import geometry

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD = 2 * 1024 * 1024  # bytes of one request body
MAX_PIXELS = 4096 * 4096  # of an uploaded image, so a small file cannot decode to gigabytes
MAX_SAMPLES = 100
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_BUSY = 2  # pictures analysed at once; each decode is bounded by MAX_PIXELS
BUSY_WAIT = 10.0  # seconds a request waits for its turn before a 503


def _numbers(values: Tensor, digits: int = 4) -> Any:
    """Nested lists of rounded floats: compact JSON for maps and weights."""
    return np.round(values.detach().double().numpy(), digits).tolist()


def _read_upload(data: bytes, read: Callable[[Image.Image], np.ndarray]) -> np.ndarray:
    """``read`` applied to an uploaded picture (the formats cnnlab reads); CnnlabError if it is
    none, or too large."""
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            if image.width * image.height > MAX_PIXELS:
                raise CnnlabError(f"the image has more than {MAX_PIXELS:,} pixels")
            return read(image)
    except CnnlabError:
        raise
    except Exception:  # PIL's decoders raise many kinds of error on a damaged file
        raise CnnlabError(
            "the upload is not a readable image (send a PNG, JPEG, BMP or WebP picture)"
        ) from None


def decode_upload(data: bytes) -> np.ndarray:
    """Grey levels (0…255) of an uploaded image file; CnnlabError if it is none."""
    return _read_upload(data, grey_levels)


def decode_picture(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """An uploaded picture as the (depth, height, width) input in [0, 1] of a network taking
    ``shape``: prepared as picture folders are (``images.fit_picture``), so as ``cnnlab predict``
    prepares a picture file for a network that does not read digits."""
    pixels = _read_upload(data, lambda image: fit_picture(image, shape[1:], colour=shape[0] == 3))
    return pixels.astype(np.float32) / 255


def _json_body() -> Any:
    """The request's JSON (None if it is not JSON); a body nested too deeply to parse is a 400,
    not a crash of the parser."""
    try:
        return request.get_json(silent=True)
    except RecursionError:
        raise CnnlabError("the JSON body is nested too deeply") from None


def _shape_text(shape: tuple[int, ...]) -> str:
    depth, height, width = shape
    return f"{height}×{width}" + ("×3" if depth == 3 else "")


def _pixels_from_json(body: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A ready input (depth, height, width) in [0, 1], sent as [H][W] numbers (one-channel
    networks) or [H][W][3] triples (colour networks)."""
    depth, height, width = shape
    pixels = body.get("pixels") if isinstance(body, dict) else None
    try:
        array = np.asarray(pixels, dtype=np.float32)
    except (TypeError, ValueError):
        array = np.empty(0)
    expected = (height, width, 3) if depth == 3 else (height, width)
    if array.shape != expected or not np.isfinite(array).all():
        values = "[r, g, b] triples" if depth == 3 else "numbers"
        raise CnnlabError(
            f'send {{"pixels": {height} rows of {width} {values} in [0, 1]}}'
            f" ({_shape_text(shape)}, the input of this network)"
        )
    array = np.clip(array, 0, 1)
    return np.ascontiguousarray(array.transpose(2, 0, 1)) if depth == 3 else array[None]


def _grey_from_bytes(data: bytes) -> np.ndarray:
    """Grey levels sent as raw bytes (row by row, ``width`` and ``height`` in the query): what
    the drawing pad sends, with no picture format to encode or decode."""
    width, height = _int_arg("width"), _int_arg("height")
    if not (width > 0 and height > 0 and width * height == len(data)):
        raise CnnlabError(
            f"send width × height bytes of grey levels: {len(data):,} bytes do not make"
            f" {width}×{height}"
        )
    return np.frombuffer(data, np.uint8).reshape(height, width).astype(np.float32)


def request_input(network: Network, meta: dict[str, Any]) -> np.ndarray:
    """The picture a request sends, as the network's (depth, H, W) input in [0, 1]: an image
    file (multipart field 'image'), grey levels as raw bytes (digit networks), or JSON pixels
    that are the input already."""
    shape = _check_input(network)
    digits = reads_digits(network, meta)
    upload = request.files.get("image")
    if upload is not None:
        if digits:
            return mnist_style(decode_upload(upload.read()), "the image")[None]
        return decode_picture(upload.read(), shape)
    if request.mimetype == "application/octet-stream" and digits:
        return mnist_style(_grey_from_bytes(request.get_data()), "the drawing")[None]
    if request.is_json:
        return _pixels_from_json(_json_body(), shape)
    raw = " or grey levels as application/octet-stream" if digits else ""
    raise CnnlabError(
        f"send an image file (multipart field 'image'){raw} or JSON"
        f' {{"pixels": {_shape_text(shape)}}}'
    )


def _check_input(network: Network) -> tuple[int, ...]:
    """The network's input shape, if the explorer can show it (grey or colour pictures)."""
    shape = tuple(network.input_shape)
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise CnnlabError(
            f"this network takes {shape} input; the explorer shows grey or colour pictures"
        )
    return shape


def _picture(values: Tensor) -> Tensor:
    """(depth, H, W) values as the page draws them: (H, W) grey, (H, W, 3) colour."""
    return values[0] if values.shape[0] == 1 else values.permute(1, 2, 0)


def _int_arg(name: str, default: int | None = None) -> int:
    text = request.args.get(name, "" if default is None else str(default))
    try:
        value = int(text)
    except ValueError:
        raise CnnlabError(f"query parameter {name!r} must be a whole number") from None
    if abs(value) > MAX_SIZE:
        raise CnnlabError(f"query parameter {name!r} is out of range")
    return value


def _name(names: list[str], index: int) -> str:
    return names[index] if index < len(names) else str(index)


def analysis(network: Network, meta: dict[str, Any], x: Tensor) -> dict[str, Any]:
    """What the page shows for one input (depth, H, W): probabilities and every stage's values."""
    outputs = probe.stage_outputs(network, x[None])
    stages = probe.stages(network)
    probabilities = outputs[-1][0]
    best = int(probabilities.argmax())
    return {
        "input": _numbers(_picture(x), 6),  # precise enough to be sent back for a unit's story
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
        filters = {"name": first.name, "layer": first.layer, "shape": shape, "weights": weights}
    except CnnlabError:
        filters = None
    return {
        "checkpoint": name,
        "arch": format_arch(network.spec()["layers"]),
        "input": list(network.input_shape),
        "digits": reads_digits(network, meta),
        "classes": class_names(network, meta),
        "dataset": meta.get("dataset"),
        "epoch": meta.get("epoch"),
        "test_accuracy": meta.get("test_accuracy"),
        "summary": network.summary(),
        "layers": [
            {
                "name": row.name,
                "shape": list(row.output_shape),
                "parameters": row.parameters,
                "formula": row.formula,
                "flops": row.flops,
                "receptive_field": row.receptive_field,
            }
            for row in network.summary_rows()
        ],
        "stages": [
            {"name": s.name, "kind": s.kind, "shape": list(s.shape), "layer": s.layer}
            for s in probe.stages(network)
        ],
        "filters": filters,
    }


class _TestImages:
    """The test part of each run's data, read once: a built-in data set from the cache (never
    downloaded here), a picture folder from its cache (decoded first if need be)."""

    def __init__(self) -> None:
        self._parts: dict[str, Part] = {}
        self._lock = threading.Lock()

    def get(self, config: TrainConfig) -> Part:
        options = config.data_options()
        if config.data is not None:
            if not Path(config.data).is_dir():
                raise NotServed(
                    f"no test pictures here: the folder {config.data} this network was trained"
                    " on no longer exists"
                )
        elif (
            config.dataset not in datasets.DATASETS
            or not datasets.cache_path(config.dataset).exists()
        ):
            name = config.dataset
            raise NotServed(f"no {name} test images here: run `cnnlab data fetch {name}` first")
        key = json.dumps(options, sort_keys=True)
        with self._lock:
            if key not in self._parts:
                self._parts[key] = datasets.load_splits(**options).test
            return self._parts[key]


def create_app(
    folder: ServedFolder,
    max_upload: int = MAX_UPLOAD,
    hosts: frozenset[str] | None = LOOPBACK_NAMES,
    max_busy: int = MAX_BUSY,
) -> Flask:
    """The explorer for the checkpoints and runs of ``folder``.

    Only requests naming one of ``hosts`` in their Host header are answered (None: any), so a
    web page whose own name resolves to this machine (DNS rebinding) cannot read the API; and
    at most ``max_busy`` pictures are decoded and analysed at once, the rest told to retry
    (503), so a burst of uploads cannot take the memory of the machine. The API is for the
    page it serves: no CORS headers are sent, and a POST whose Origin is another site is
    refused (403), so another page open in the browser cannot make it work.
    """
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = max_upload
    app.json.sort_keys = False
    test_images = _TestImages()
    busy = threading.BoundedSemaphore(max_busy)
    predictions: dict[str, tuple[Network, Part, Tensor]] = {}
    predictions_lock = threading.Lock()

    @app.before_request
    def check_host() -> tuple[Response, int] | None:
        if hosts is not None and urlsplit("//" + request.host).hostname not in hosts:
            return jsonify(error=f"this explorer answers requests for {sorted(hosts)[0]} only"), 400
        origin = request.headers.get("Origin")
        if (
            request.method == "POST"
            and origin is not None
            and urlsplit(origin).netloc != request.host
        ):
            return jsonify(error="requests from other web sites are refused"), 403
        return None

    def heavy(work: Callable[[], Response]) -> Response | tuple[Response, int]:
        if not busy.acquire(timeout=BUSY_WAIT):
            return jsonify(error="the explorer is busy with other pictures: try again"), 503
        try:
            return work()
        finally:
            busy.release()

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
    def analyze() -> Response | tuple[Response, int]:
        return heavy(analyse_request)

    def analyse_request() -> Response:
        name, network, meta = folder.network(request.args.get("checkpoint"))
        x = request_input(network, meta)
        return jsonify(checkpoint=name, **analysis(network, meta, torch.from_numpy(x)))

    @app.post("/api/unit")
    def unit() -> Response | tuple[Response, int]:
        return heavy(unit_request)

    def unit_request() -> Response:
        _, network, meta = folder.network(request.args.get("checkpoint"))
        x = torch.from_numpy(request_input(network, meta))
        where = [_int_arg(name, 0) for name in ("map", "row", "col")]
        return jsonify(unit_story(network, x, _int_arg("stage"), *where))

    @app.get("/api/geometry")
    def window_geometry() -> Response:
        names = ("side", "depth", "maps", "size", "stride", "padding", "pool", "hidden")
        return jsonify(geometry(**{name: _int_arg(name) for name in names}))

    @app.get("/api/receptive-field")
    def receptive_field() -> Response:
        _, network, _ = folder.network(request.args.get("checkpoint"))
        top, left, bottom, right = probe.receptive_field(
            network, _int_arg("stage"), _int_arg("row", 0), _int_arg("col", 0)
        )
        return jsonify(top=top, left=left, bottom=bottom, right=right)

    @app.get("/api/samples")
    def samples() -> Response | tuple[Response, int]:
        return heavy(samples_request)

    def samples_request() -> Response:
        name, network, meta = folder.network(request.args.get("checkpoint"))
        count, seed = _int_arg("count", 12), _int_arg("seed", 0)
        if not 1 <= count <= MAX_SAMPLES:
            raise CnnlabError(f"count must be between 1 and {MAX_SAMPLES}")
        config = trained_config(meta)
        part = test_images.get(config)
        generator = torch.Generator().manual_seed(seed)
        if request.args.get("mistakes") == "1":
            wrong = torch.nonzero(test_predictions(name, network, part) != part.labels).flatten()
            indices = wrong[torch.randperm(len(wrong), generator=generator)[:count]]
        else:
            indices = torch.randperm(len(part), generator=generator)[:count]
        names = class_names(network, meta)
        images = part.images[indices]
        # in float32, as the page's own answers are (bf16 could tip a close call either way)
        predicted = labels(network, images, precision="fp32").tolist() if len(indices) else []
        pictures = images.float() / 255
        pictures = pictures[:, 0] if pictures.shape[1] == 1 else pictures.permute(0, 2, 3, 1)
        return jsonify(
            dataset=config.dataset if config.data is None else config.data,
            indices=indices.tolist(),
            labels=[_name(names, i) for i in part.labels[indices].tolist()],
            predicted=[_name(names, i) for i in predicted],
            pixels=_numbers(pictures, 6),
        )

    def test_predictions(name: str, network: Network, part: Part) -> Tensor:
        """The network's label for every test image, worked out once per loaded network (a
        reloaded checkpoint is another network object, so its labels are worked out again)."""
        with predictions_lock:
            kept = predictions.get(name)
            if kept is None or kept[0] is not network or kept[1] is not part:
                predictions.clear()  # only the current network's are worth keeping
                kept = predictions[name] = (
                    network,
                    part,
                    probe.predictions(network, part, precision="fp32"),
                )
            return kept[2]

    @app.get("/api/runs")
    def runs() -> Response:
        return jsonify(runs=[{"name": e.name, "modified": e.modified} for e in folder.runs()])

    @app.get("/api/metrics")
    def metrics() -> Response:
        return jsonify(folder.run(request.args.get("run")))

    return app
