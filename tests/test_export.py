"""ONNX export: the file runs in plain onnxruntime, agrees with cnnlab, carries what a user needs,
and is not written when it would disagree."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest
import torch

from cnnlab import export
from cnnlab.arch import parse_arch
from cnnlab.cli import main
from cnnlab.data import load_splits
from cnnlab.network import Network

from .test_folder import COLOURS, make_folder, picture
from .test_pictures import run

ARCH = "conv6x3p1-bn-pool2-fc16-softmax3"


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory):
    """A network trained on 16×24 colour pictures, with standardised inputs."""
    root = tmp_path_factory.mktemp("pictures")
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CNNLAB_CACHE", str(cache))
        make_folder(root, per_class=40, size=(16, 24))
        out = tmp_path_factory.mktemp("export-run") / "run"
        status = main(["train", "--data", str(root), "--arch", ARCH, "--epochs", "2",
                       "--batch-size", "16", "--lr", "0.05", "--normalize", "--tta", "flip",
                       "--split", "standard",
                       "--validation", "0", "--out", str(out), "--quiet"])  # fmt: skip
        assert status == 0
        yield root, out, cache


@pytest.fixture(autouse=True)
def _cache(colour_run, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(colour_run[2]))


@pytest.fixture(scope="module")
def exported(colour_run, tmp_path_factory):
    model = tmp_path_factory.mktemp("export") / "model.onnx"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CNNLAB_CACHE", str(colour_run[2]))
        assert main(["export", str(colour_run[1]), "--out", str(model)]) == 0
    return model


def test_plain_onnxruntime_scores_the_test_set_as_cnnlab_evaluate_does(
    capsys, colour_run, exported
):
    root, out, _ = colour_run
    session = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    test = load_splits(data=str(root), split_name="standard", validation=0).test
    pixels = test.images.numpy().astype(np.float32) / 255
    (probabilities,) = session.run(None, {"pixels": pixels})
    accuracy = float((probabilities.argmax(1) == test.labels.numpy()).mean())
    status, printed, _ = run(capsys, "evaluate", out)  # with the run's test-time flips
    assert status == 0 and f"test accuracy: {accuracy:.2%}" in printed
    assert session.get_modelmeta().custom_metadata_map["cnnlab.tta"] == "flip"
    np.testing.assert_allclose(probabilities.sum(1), 1, atol=1e-5)


def test_the_model_takes_any_batch_size_and_carries_its_metadata(exported):
    session = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    for batch in (1, 7):
        (p,) = session.run(None, {"pixels": np.random.rand(batch, 3, 16, 24).astype(np.float32)})
        assert p.shape == (batch, 3)
    props = session.get_modelmeta().custom_metadata_map
    assert json.loads(props["cnnlab.classes"]) == ["blue", "green", "red"]
    assert json.loads(props["cnnlab.input"]) == [3, 16, 24]
    assert len(json.loads(props["cnnlab.normalize"])["std"]) == 3
    assert props["cnnlab.preparation"] == "pictures"


def test_predict_through_onnxruntime_says_what_the_checkpoint_says(
    capsys, colour_run, exported, tmp_path
):
    photo = picture(tmp_path / "photo.jpg", COLOURS["green"], size=(40, 50))
    _, from_checkpoint, _ = run(capsys, "predict", colour_run[1], photo)
    status, from_onnx, _ = run(capsys, "predict", exported, photo)
    assert status == 0 and from_onnx.split("  (")[0] == from_checkpoint.split("  (")[0]
    assert from_onnx.startswith(f"{photo}: green")


@pytest.mark.parametrize(
    "arch",
    [
        "conv6x3p1-bn-maxpool2-local4x3:tanh-convpool8x3+l2pool2:sigmoid-fc12d0.2-bn-softmax5",
        "conv4x5s2p2-avgpool2-fc10:linear-softmax5",
    ],
)
@pytest.mark.parametrize("tta", ["none", "flip+shifts"])
def test_every_kind_of_layer_exports_and_agrees(arch, tta, tmp_path):
    spec = {"input": [3, 20, 18], "layers": parse_arch(arch),
            "normalize": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}}  # fmt: skip
    network = Network.create(spec, seed=1)
    images = torch.randint(0, 256, (40, 3, 20, 18), dtype=torch.uint8)
    meta = {"classes": list("abcde")}
    check = export.export_onnx(network, meta, tmp_path / "m.onnx", images, tta)
    assert check.images == 40 and check.classes_differing == 0
    assert check.largest_difference <= export.TOLERANCE


def test_an_export_that_disagrees_is_refused_and_not_written(
    capsys, colour_run, monkeypatch, tmp_path
):
    monkeypatch.setattr(export, "verify", lambda *a: export.Verification(60, 3e-3, 2))
    status, _, err = run(capsys, "export", colour_run[1], "--out", tmp_path / "model.onnx")
    assert status == 2 and len(err.strip().splitlines()) == 1 and "disagrees" in err
    assert not (tmp_path / "model.onnx").exists()


def test_a_file_that_is_not_an_exported_network_is_refused(capsys, colour_run, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    photo = picture(tmp_path / "photo.png", COLOURS["red"])
    status, _, err = run(capsys, "predict", bad, photo)
    assert status == 2 and err.startswith("cnnlab: error:") and len(err.splitlines()) == 1
