"""Colour networks end to end: trained on a folder of pictures, saved, loaded, evaluated, shown."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from cnnlab.cli import main
from cnnlab.network import Network
from cnnlab.predict import prepare_picture, probabilities

from .test_folder import COLOURS, make_folder, picture

ARCH = "conv8x3-pool2-fc16-softmax3"


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory):
    """A folder of 240 generated 16×24 colour pictures in 3 classes, and a network trained on it."""
    root = tmp_path_factory.mktemp("pictures")
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CNNLAB_CACHE", str(cache))
        make_folder(root, per_class=80, size=(16, 24))
        out = root.parent / "run"
        status = main(["train", "--data", str(root), "--arch", ARCH, "--epochs", "3",
                       "--batch-size", "16", "--lr", "0.05", "--momentum", "0.9", "--normalize",
                       "--augment", "crop,flip", "--tta", "flip", "--split", "standard",
                       "--validation", "0", "--out", str(out), "--quiet"])  # fmt: skip
        assert status == 0
        yield root, out, cache


@pytest.fixture(autouse=True)
def _cache(colour_run, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(colour_run[2]))


def test_the_checkpoint_keeps_classes_input_shape_and_normalisation(colour_run):
    _, out, _ = colour_run
    network, meta = Network.load(out / "model.safetensors")
    assert network.input_shape == (3, 16, 24) and meta["input"] == [3, 16, 24]
    assert meta["classes"] == ["blue", "green", "red"]
    normalize = network.spec()["normalize"]
    assert len(normalize["mean"]) == 3 and all(s > 0 for s in normalize["std"])
    # the red channel's mean is about a third red pictures' 220 plus two thirds' ~25
    assert normalize["mean"][0] == pytest.approx((220 + 30 + 20) / 3 / 255, abs=0.03)


def test_evaluate_reports_what_training_measured(capsys, colour_run):
    _, out, _ = colour_run
    status, text, _ = run(capsys, "evaluate", out)
    assert status == 0
    accuracy = float(text.splitlines()[-1].split()[2].rstrip("%"))
    assert accuracy > 90
    trained = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert accuracy == pytest.approx(100 * trained["test_accuracy"], abs=0.006)


def test_predict_prints_class_names_for_colour_pictures_of_any_size(capsys, colour_run, tmp_path):
    _, out, _ = colour_run
    paths = [picture(tmp_path / f"{name}.jpg", colour, size=(40, 30), seed=7)
             for name, colour in COLOURS.items()]  # fmt: skip
    status, text, _ = run(capsys, "predict", out, *paths, "--top", 2)
    assert status == 0
    for line, name in zip(text.splitlines(), COLOURS):
        assert line.split(": ")[1].split()[0] == name


def test_a_picture_is_prepared_as_the_folder_was(colour_run):
    root, out, _ = colour_run
    network, meta = Network.load(out / "model.safetensors")
    x = prepare_picture(root / "red" / "0.png", network, meta)
    assert x.shape == (3, 16, 24) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert int(probabilities(network, x[None]).argmax()) == 2  # red


@pytest.mark.parametrize("picture_kind", ["filters", "maps", "mistakes", "confusion"])
def test_show_draws_colour_networks(capsys, colour_run, tmp_path, picture_kind):
    root, out, _ = colour_run
    extra = [root / "green" / "1.jpg"] if picture_kind == "maps" else []
    target = tmp_path / f"{picture_kind}.png"
    status, _text, err = run(capsys, "show", picture_kind, out, *extra, "--out", target)
    if picture_kind == "mistakes" and status == 2:
        assert "classifies every test image correctly" in err
        return
    assert status == 0 and target.stat().st_size > 1000, err


def test_data_info_describes_a_folder(capsys, colour_run):
    root, _, _ = colour_run
    status, text, _ = run(capsys, "data", "info", root)
    assert status == 0
    assert "3 classes, pictures of 16×24 colour" in text
    assert "per class: blue 64, green 64, red 64" in text


def test_the_default_preset_for_a_folder_trains_on_it(capsys, colour_run, tmp_path):
    root, _, _ = colour_run
    status, _text, err = run(capsys, "train", "--data", root, "--epochs", 1, "--out",
                            tmp_path / "p", "--quiet")  # fmt: skip
    assert status == 0, err
    assert "pictures: " in err and "3 classes, 3×16×24 pictures" in err


def test_summary_of_a_huge_input_needs_no_memory_for_weights(capsys):
    status, text, _ = run(capsys, "summary", "--arch", "fc4704", "--input", "3x1000x1000")
    assert status == 0
    assert f"{3_000_000 * 4704 + 4704:,}" in text


def test_a_network_too_large_to_train_is_refused_with_the_memory_it_needs(capsys):
    status, _, err = run(capsys, "train", "--arch", "fc100000000-softmax10", "--epochs", 1)
    assert status == 2 and "training this network needs about" in err and "GB" in err


def test_channel_statistics_match_numpy():
    from cnnlab.data import channel_statistics

    images = torch.randint(0, 256, (50, 3, 5, 7), dtype=torch.uint8)
    mean, std = channel_statistics(images, chunk=7)
    pixels = images.numpy().astype(np.float64) / 255
    assert np.allclose(mean, pixels.mean((0, 2, 3)))
    assert np.allclose(std, pixels.std((0, 2, 3)))
    assert all(math.isfinite(s) for s in std)


def test_a_colour_network_trained_through_the_python_api_evaluates_from_the_cli(
    capsys, colour_run, tmp_path
):
    from cnnlab.arch import parse_arch
    from cnnlab.config import TrainConfig
    from cnnlab.data import load_splits
    from cnnlab.train import fit

    root, _, _ = colour_run
    data = load_splits(data=root, split_name="standard", validation=0)
    network = Network.create({"input": [3, 16, 24], "layers": parse_arch(ARCH)}, seed=1)
    config = TrainConfig(epochs=1, batch_size=16, lr=0.05)  # says nothing about the data
    fit(network, data, config, out=tmp_path / "api", progress=False, log=lambda line: None)
    status, text, err = run(capsys, "evaluate", tmp_path / "api")
    assert status == 0, err
    assert f"({root}, 48 images)" in text


def test_an_ensemble_of_colour_networks_trains_and_votes(capsys, colour_run, tmp_path):
    root, _, _ = colour_run
    status, text, err = run(capsys, "ensemble", "train", "--data", root, "--arch", ARCH,
                            "--members", 2, "--processes", 1, "--epochs", 1, "--batch-size", 16,
                            "--lr", 0.05, "--split", "standard", "--validation", 0,
                            "--out", tmp_path / "ens")  # fmt: skip
    assert status == 0, err
    assert text.splitlines()[-1].startswith("majority vote: test accuracy")
    status, again, err = run(capsys, "ensemble", "evaluate", tmp_path / "ens")
    assert status == 0, err
    assert again.splitlines()[-4:] == text.splitlines()[-4:]
