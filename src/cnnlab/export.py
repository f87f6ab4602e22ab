"""A trained network as an ONNX model, to run where cnnlab is not installed.

The model takes float32 pixels in [0, 1], shaped (batch, depth, height, width)
with any batch size, and gives the class probabilities (batch, classes). The
network's own per-channel standardisation, if it has one, is part of the
graph, and so are the test-time views it is scored with (``tta``: by default
the run's own, so the model answers as ``cnnlab evaluate`` and ``predict``
do), so a user feeds it plain pixels prepared as ``cnnlab predict`` prepares
them (see ``PREPARATION``). Class names, input shape, standardisation, data set
and spec travel as the model's metadata (``cnnlab.*`` keys).

An export is verified, not assumed: onnxruntime scores test images and the
file is kept only if every probability is within ``TOLERANCE`` of cnnlab's
and every predicted class is the same.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .errors import CnnlabError
from .files import write_atomically
from .network import Network
from .predict import class_names, probabilities, reads_digits, tta_name, views

TOLERANCE = 1e-4
INPUT, OUTPUT = "pixels", "probabilities"
PREPARATION = {
    "digits": "grey, 0 = white paper and 1 = ink (inverted if the background is light), the"
    " digit fitted into 20×20 and centred by its mass in 28×28, as MNIST's digits were",
    "pictures": "resized keeping the aspect ratio to cover the input size, centre-cropped,"
    " grey or RGB as the input depth says, values divided by 255",
}


def _needs(module: str) -> Any:
    try:
        return __import__(module)
    except ModuleNotFoundError:
        raise CnnlabError(
            f'ONNX export and inference need {module}: pip install "cnnlab[export]"'
        ) from None


class _Probabilities(nn.Module):
    """The exported graph: the network's softmax in fp32, averaged over the test-time views."""

    def __init__(self, network: Network, tta: str) -> None:
        super().__init__()
        self.network, self.tta = network, tta

    def forward(self, pixels: Tensor) -> Tensor:
        shown = views(pixels, self.tta)
        scores = self.network(torch.cat(shown)).float().softmax(1)
        return scores.view(len(shown), pixels.shape[0], -1).mean(0)


def metadata(network: Network, meta: dict[str, Any], tta: str = "none") -> dict[str, str]:
    """What a user of the ONNX file needs besides the graph, as string metadata."""
    kind = "digits" if reads_digits(network, meta) else "pictures"
    return {
        "cnnlab.tta": tta,
        "cnnlab.classes": json.dumps(class_names(network, meta)),
        "cnnlab.input": json.dumps(list(network.input_shape)),
        "cnnlab.normalize": json.dumps(network.normalize),
        "cnnlab.dataset": json.dumps(meta.get("dataset")),
        "cnnlab.preparation": kind,
        "cnnlab.preparation_text": PREPARATION[kind],
        "cnnlab.spec": json.dumps(network.spec()),
    }


@dataclass(frozen=True)
class Verification:
    images: int
    largest_difference: float
    classes_differing: int


def export_onnx(
    network: Network, meta: dict[str, Any], out: str | Path, images: Tensor, tta: str = "none"
) -> Verification:
    """Write ``network`` to ``out`` as ONNX, answering over the test-time views ``tta``, and
    verify it on ``images`` (uint8, N×D×H×W).

    Nothing is left at ``out`` unless onnxruntime agrees with cnnlab on every image.
    """
    tta = tta_name(tta)
    onnx = _needs("onnx")
    _needs("onnxscript")  # the torch.export-based exporter writes the graph with it
    network = network.cpu().use_channels_last(False).eval()
    example = torch.zeros(2, *network.input_shape)
    batch = torch.export.Dim("batch", min=1)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            _Probabilities(network, tta),
            (example,),
            dynamo=True,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
    model = program.model_proto
    for key, value in metadata(network, meta, tta).items():
        model.metadata_props.add(key=key, value=value)
    model.doc_string = "cnnlab network: float32 pixels in [0, 1] -> class probabilities"
    serialized = model.SerializeToString()
    result = verify(serialized, network, images, tta)
    if result.largest_difference > TOLERANCE or result.classes_differing:
        raise CnnlabError(
            f"the exported model disagrees with cnnlab on {images.shape[0]:,} test images (largest"
            f" probability difference {result.largest_difference:.1e}, {result.classes_differing}"
            " classes differ); nothing was written: please report this network's spec"
        )
    write_atomically(out, lambda tmp: tmp.write_bytes(serialized))
    onnx.checker.check_model(str(out))
    return result


def verify(serialized: bytes, network: Network, images: Tensor, tta: str = "none") -> Verification:
    """How far onnxruntime's probabilities for ``images`` are from cnnlab's (fp32)."""
    theirs = OnnxModel(serialized).probabilities(images)
    ours = probabilities(network, images, precision="fp32", tta=tta)
    difference = float((theirs - ours).abs().max()) if len(images) else 0.0
    differing = int((theirs.argmax(1) != ours.argmax(1)).sum())
    return Verification(len(images), difference, differing)


class OnnxModel:
    """An exported network run by onnxruntime, with the attributes ``predict`` needs of one
    (``input_shape``, ``classes``, ``metadata``)."""

    def __init__(self, source: str | Path | bytes) -> None:
        ort = _needs("onnxruntime")
        where = "the exported model" if isinstance(source, bytes) else str(source)
        try:
            self.session = ort.InferenceSession(
                source if isinstance(source, bytes) else str(source),
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc:  # onnxruntime's own error types are not importable stably
            raise CnnlabError(f"{where} is not a readable ONNX model ({exc})") from None
        props = self.session.get_modelmeta().custom_metadata_map
        try:
            self.input_shape = tuple(int(n) for n in json.loads(props["cnnlab.input"]))
            self.names = [str(c) for c in json.loads(props["cnnlab.classes"])]
            dataset = json.loads(props.get("cnnlab.dataset", "null"))
        except (KeyError, TypeError, ValueError):
            raise CnnlabError(f"{where} is not an ONNX model that cnnlab exported") from None
        if len(self.input_shape) != 3 or not self.names:
            raise CnnlabError(f"{where}: its cnnlab metadata is damaged")
        self.classes = len(self.names)
        self.metadata = {"dataset": dataset, "classes": self.names}

    def probabilities(self, images: Tensor, batch_size: int = 1000) -> Tensor:
        """Class probabilities (N, classes) of uint8 or [0, 1] float images."""
        chunks = [torch.empty(0, self.classes)]
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            x = chunk.float().div(255) if chunk.dtype == torch.uint8 else chunk.float()
            (p,) = self.session.run([OUTPUT], {INPUT: np.ascontiguousarray(x.numpy())})
            chunks.append(torch.from_numpy(p))
        return torch.cat(chunks)
