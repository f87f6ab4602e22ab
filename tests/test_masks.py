"""masks.py and `cnnlab filter`: fixed convolution masks on grey and colour images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from cnnlab import masks
from cnnlab.cli import main
from cnnlab.errors import CnnlabError


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def photo(tmp_path):
    """A small colour picture: a sky gradient, a dark house with a red roof, a sun."""
    image = Image.new("RGB", (160, 120))
    draw = ImageDraw.Draw(image)
    for y in range(120):
        draw.line([(0, y), (159, y)], fill=(90 + y, 140 + y // 2, 230))
    draw.rectangle([40, 60, 110, 119], fill=(60, 50, 40))
    draw.polygon([(30, 60), (75, 25), (120, 60)], fill=(200, 30, 30))
    draw.ellipse([125, 10, 150, 35], fill=(255, 220, 0))
    path = tmp_path / "photo.jpg"
    image.save(path, quality=95)
    return path


def test_the_chapters_masks_are_there():
    assert masks.get_mask("edges").tolist() == [[0, -4, 0], [-4, 16, -4], [0, -4, 0]]
    assert masks.get_mask("horizontal").tolist() == [[2, 4, 8, 4, 2], [0] * 5, [-2, -4, -8, -4, -2]]
    assert torch.equal(masks.get_mask("vertical"), masks.get_mask("horizontal").T)
    for name in ("sobel-horizontal", "sobel-vertical", "blur", "sharpen"):
        assert masks.get_mask(name).ndim == 2
    with pytest.raises(CnnlabError, match="unknown mask"):
        masks.get_mask("emboss")


def test_convolve_is_the_mask_slid_over_the_image():
    torch.manual_seed(0)
    image = torch.rand(2, 9, 11) * 255
    mask = torch.randn(3, 5)
    out = masks.convolve(image, mask)
    assert out.shape == image.shape
    c, y, x = 1, 4, 6  # away from the border, the plain weighted sum of the window
    expected = (image[c, y - 1 : y + 2, x - 2 : x + 3] * mask).sum()
    torch.testing.assert_close(out[c, y, x], expected)


def test_edge_masks_answer_edges_and_nothing_else():
    flat = torch.full((1, 12, 12), 80.0)
    assert masks.convolve(flat, masks.get_mask("edges")).abs().max() == 0
    torch.testing.assert_close(masks.convolve(flat, masks.get_mask("blur")), flat)
    light_above_dark = torch.cat([torch.full((1, 6, 12), 200.0), torch.full((1, 6, 12), 20.0)], 1)
    horizontal = masks.convolve(light_above_dark, masks.get_mask("horizontal"))
    vertical = masks.convolve(light_above_dark, masks.get_mask("vertical"))
    assert horizontal[0, 5:7].min() > 0 and horizontal[0, :4].abs().max() == 0
    assert vertical.abs().max() == 0


def test_display_scaling():
    mask = masks.get_mask("edges")
    response = torch.tensor([[[-50.0, 0.0, 100.0]]])  # the strongest 0.5% are white (or black)
    np.testing.assert_allclose(masks.to_display(response, mask, "signed"), [[64, 128, 255]], atol=1)
    np.testing.assert_allclose(masks.to_display(response, mask, "abs"), [[127, 0, 255]], atol=1)
    blur = masks.get_mask("blur")
    assert masks.to_display(torch.tensor([[[-3.0, 90.2, 300.0]]]), blur).tolist() == [[0, 90, 255]]


def test_a_16_bit_grey_image_is_scaled_not_saturated(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)).save(path)
    image = masks.read_image(path)
    assert image.shape == (1, 32, 32) and image.max() == 255
    assert (image == 255).float().mean() < 0.01


@pytest.mark.parametrize(
    ("text", "rows"),
    [
        ("[[0,-1,0],[-1,5,-1],[0,-1,0]]", [[0, -1, 0], [-1, 5, -1], [0, -1, 0]]),
        ("1 2 1; 0 0 0; -1 -2 -1", [[1, 2, 1], [0, 0, 0], [-1, -2, -1]]),
        ("0.5, 0.5", [[0.5, 0.5]]),
    ],
)
def test_parse_kernel_reads_rows(text, rows):
    assert masks.parse_kernel(text).tolist() == rows


@pytest.mark.parametrize(
    "text", ["", "1 2; 3", "[[1, 2], [3]]", "a b; c d", "[1, 2]", "[[true]]", "nan 1", "[[1e999]]"]
)
def test_parse_kernel_refuses_what_is_not_a_rectangle_of_numbers(text):
    with pytest.raises(CnnlabError):
        masks.parse_kernel(text)


def test_filter_command_on_a_colour_photo(capsys, tmp_path, photo):
    out = tmp_path / "edges.png"
    status, printed, err = run(capsys, "filter", photo, "--mask", "edges", "--out", out)
    assert status == 0, err
    assert "160×120 colour image" in printed
    with Image.open(out) as image:
        assert image.size == (160, 120) and image.mode == "RGB"
        pixels = np.asarray(image)
    assert pixels.max() == 255 and (pixels.max(axis=2) < 40).mean() > 0.5  # edges light on dark


def test_filter_command_grey_and_own_kernel(capsys, tmp_path, photo):
    out = tmp_path / "sobel.png"
    status, _, err = run(
        capsys, "filter", photo, "--kernel", "1 2 1; 0 0 0; -1 -2 -1", "--grey", "--scale",
        "signed", "--out", out,
    )  # fmt: skip
    assert status == 0, err
    with Image.open(out) as image:
        assert image.mode == "L" and image.size == (160, 120)
        assert np.median(np.asarray(image)) == pytest.approx(128, abs=3)  # flat sky is 0: grey


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{photo}", "--mask", "emboss"], "unknown mask"),
        (["{photo}", "--kernel", "1 2; 3"], "not a rectangle"),
        (["{text}", "--mask", "edges"], "not a readable image"),
        (["{tmp}/none.png", "--mask", "edges"], "no such file"),
        (["{photo}", "--mask", "edges", "--out", "{tmp}/x.nope"], "unknown image format"),
        (["{photo}"], "one of the arguments --mask --kernel is required"),
    ],
)
def test_filter_refuses_bad_input_in_one_line(capsys, tmp_path, photo, argv, message):
    text = tmp_path / "text.png"
    text.write_text("hello")
    argv = [a.format(photo=photo, text=text, tmp=tmp_path) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out.png")]
    status, _, err = run(capsys, "filter", *argv)
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and message in err
    assert not (tmp_path / "out.png").exists()
