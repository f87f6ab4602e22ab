"""`cnnlab show …`: PNG pictures of real size and content, and one clear line for bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab import plots, probe
from cnnlab.arch import parse_arch
from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.network import Network
from cnnlab.train import MODEL


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def assert_picture(path, min_width=500, min_height=200):
    """A real PNG of a sensible size that is not blank."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width >= min_width and image.height >= min_height
        pixels = np.asarray(image.convert("L"), dtype=np.float32)
    assert (pixels < 200).mean() > 0.01, "almost nothing drawn"
    assert pixels.std() > 20


@pytest.fixture(scope="module")
def digit_file(tmp_path_factory, mnist):
    path = tmp_path_factory.mktemp("digit") / "seven.png"
    Image.fromarray(255 - mnist.test.images[0, 0].numpy()).resize((112, 112)).save(path)
    return path


@pytest.mark.parametrize("picture", ["filters", "maps", "mistakes", "confusion", "curves"], ids=str)
def test_show_writes_each_picture(capsys, tmp_path, trained_run, digit_file, picture):
    out = tmp_path / f"{picture}.png"
    extra = [digit_file] if picture == "maps" else []
    status, printed, err = run(capsys, "show", picture, trained_run, *extra, "--out", out)
    assert status == 0, err
    assert printed.startswith(f"wrote {out}")
    assert_picture(out)


def test_show_maps_says_what_the_network_sees(capsys, tmp_path, trained_run, digit_file):
    status, printed, _ = run(
        capsys, "show", "maps", trained_run / MODEL, digit_file, "--out", tmp_path / "m.png"
    )
    assert status == 0 and "the network says 7" in printed


def test_filters_of_a_deep_layer_show_every_depth_slice():
    net = Network.create({"input": [3, 32, 32], "layers": parse_arch("conv6x5-conv4x3-softmax10")})
    figure = plots.filters_figure(probe.filters(net))
    images = [ax.get_images()[0].get_array() for ax in figure.axes if ax.get_images()]
    assert images[0].shape[-1] == 3  # the filters on an RGB input are drawn in colour
    assert images[1].shape == (6 * 4 - 1, 4 * 4 - 1)  # 6 slices of 3×3 down, 4 filters across


def test_mistakes_figure_needs_a_mistake(mnist):
    part = mnist.test
    nothing = probe.mistakes(part, part.labels.clone())
    with pytest.raises(CnnlabError, match="every test image correctly"):
        plots.mistakes_figure(nothing, [str(d) for d in range(10)], "none")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["show", "filters", "{fc}"], "no convolutional layer"),
        (["show", "filters", "{missing}"], "no such file"),
        (["show", "filters", "{run}", "--out", "{tmp}/x.unknown"], "cannot write .unknown"),
        (["show", "maps", "{run}", "{text}"], "not a readable image"),
        (["show", "maps", "{run}", "{missing}"], "no such file"),
        (["show", "curves", "{tmp}"], "no such file"),
        (["show", "mistakes", "{run}", "--count", "0"], "at least 1"),
    ],
)
def test_show_refuses_bad_input_in_one_line(capsys, tmp_path, trained_run, argv, message):
    fc = tmp_path / "fc.safetensors"
    Network.create({"input": [1, 28, 28], "layers": parse_arch("fc10-softmax10")}).save(fc)
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    names = {"fc": fc, "missing": tmp_path / "nope.png", "run": trained_run, "text": text,
             "tmp": tmp_path}  # fmt: skip
    argv = [a.format(**names) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out.png")]
    status, _, err = run(capsys, *argv)
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and message in err
    assert not (tmp_path / "out.png").exists()


def test_curves_of_a_run_without_validation(tmp_path):
    history = [
        {"epoch": e, "train_loss": 1 / e, "train_accuracy": 0.9, "validation_accuracy": None,
         "test_accuracy": 0.8 + e / 100}
        for e in (1, 2, 3)
    ]  # fmt: skip
    path = tmp_path / "curves.png"
    plots.save(plots.curves_figure(history, "run"), path)
    assert_picture(path)


def test_curves_axes_hold_whole_epochs_and_no_accuracy_above_100():
    one = [{"epoch": 1, "train_loss": 0.3, "train_accuracy": 1.0, "validation_accuracy": None,
            "test_accuracy": 0.99}]  # fmt: skip
    figure = plots.curves_figure(one, "one epoch")
    loss_ax, acc_ax = figure.axes[:2]
    assert loss_ax.get_xlim() == acc_ax.get_xlim() == (0.5, 1.5)
    assert [t for t in acc_ax.get_xticks() if 0.5 <= t <= 1.5] == [1]
    assert acc_ax.get_ylim()[1] == 100


def test_a_stage_of_units_is_drawn_as_a_strip():
    net = Network.create({"input": [1, 28, 28], "layers": parse_arch("conv4x5-fc30-softmax10")})
    image = torch.rand(1, 28, 28)
    outputs = probe.stage_outputs(net, image[None])
    figure = plots.maps_figure(probe.stages(net), outputs, image, list("0123456789"), "t")
    shapes = [ax.get_images()[0].get_array().shape for ax in figure.axes if ax.get_images()]
    assert (1, 30) in shapes
