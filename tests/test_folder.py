"""Picture folders: layouts, sizes, colour, skipped files, the cache and its invalidation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab import data
from cnnlab.data.folder import _interleaved, default_size, list_folder
from cnnlab.errors import DataError

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (20, 40, 210)}


def picture(path: Path, colour: tuple[int, int, int], size=(24, 32), mode="RGB", seed=0) -> Path:
    """A noisy picture of one main colour, ``size`` = (height, width)."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 20, (*size, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    image = image.convert(mode) if mode != "RGB" else image
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def make_folder(root: Path, per_class: int = 10, layout: str = "flat", **options) -> Path:
    parts = {"flat": [root], "split": [root / "train", root / "test"]}[layout]
    for part in parts:
        for name, colour in COLOURS.items():
            for i in range(per_class):
                suffix = (".png", ".jpg", ".bmp", ".webp")[i % 4]
                picture(part / name / f"{i}{suffix}", colour, seed=i, **options)
    return root


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))


def test_one_subfolder_per_class_becomes_a_data_set_with_a_held_out_test_part(tmp_path):
    root = make_folder(tmp_path / "pictures")
    dataset = data.open_dataset(data=root, test_fraction=0.2)
    assert dataset.classes == ["blue", "green", "red"]
    assert dataset.input_shape == (3, 24, 32)  # the pictures' own size, under 64
    assert (len(dataset.train), len(dataset.test)) == (24, 6)
    assert sorted(np.bincount(dataset.test.labels.numpy()).tolist()) == [2, 2, 2]
    # the pictures' content survives: each class keeps its main colour
    for label, name in enumerate(dataset.classes):
        means = dataset.train.images[dataset.train.labels == label].float().mean((0, 2, 3))
        assert int(means.argmax()) == ["red", "green", "blue"].index(name)


def test_train_and_test_folders_are_used_as_they_are(tmp_path):
    root = make_folder(tmp_path / "pictures", per_class=4, layout="split")
    splits = data.load_splits(data=root, split_name="standard", validation=0)
    assert (len(splits.train), len(splits.test)) == (12, 12) and splits.validation is None


def test_a_val_folder_is_the_validation_part(tmp_path):
    root = make_folder(tmp_path / "pictures", per_class=4, layout="split")
    for name, colour in COLOURS.items():
        picture(root / "val" / name / "v.png", colour)
    splits = data.load_splits(data=root, split_name="standard")
    assert len(splits.validation) == 3
    with pytest.raises(DataError, match="its own validation part"):
        data.load_splits(data=root, split_name="standard", validation=1)


def test_grey_pictures_give_one_channel_and_any_colour_picture_makes_all_colour(tmp_path):
    grey = make_folder(tmp_path / "grey", per_class=3, mode="L")
    assert data.open_dataset(data=grey).input_shape == (1, 24, 32)
    picture(grey / "red" / "colour.png", COLOURS["red"])
    assert data.open_dataset(data=grey).input_shape[0] == 3


def test_image_size_resizes_keeping_the_aspect_ratio_and_crops_the_centre(tmp_path):
    root = tmp_path / "pictures"
    for name in ("left", "right"):
        for i in range(4):
            pixels = np.zeros((20, 40, 3), np.uint8)  # white in the middle half, black sides
            pixels[:, 10:30] = 255
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    dataset = data.open_dataset(data=root, image_size=(10, 10))
    assert dataset.input_shape == (3, 10, 10)
    # scaled to 10×20, the middle 10 columns kept: all white
    assert int(dataset.train.images.min()) > 200


def test_default_size_is_the_most_common_capped_at_64():
    from collections import Counter

    assert default_size(Counter({(24, 32): 5, (100, 100): 2})) == (24, 32)
    assert default_size(Counter({(480, 640): 3})) == (48, 64)


def test_unreadable_files_are_skipped_and_counted_not_fatal(tmp_path):
    root = make_folder(tmp_path / "pictures", per_class=4)
    (root / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    good = (root / "green" / "0.png").read_bytes()
    (root / "green" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "blue" / "notes.txt").write_text("not a picture, not counted as one")
    dataset = data.open_dataset(data=root)
    assert len(dataset.train) + len(dataset.test) == 12
    assert "pictures skipped, unreadable: 2" in dataset.notes
    assert any("broken.png" in note for note in dataset.notes)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda r: (r / "only").mkdir(parents=True), "at least 2 classes"),
        (lambda r: r.mkdir(), "at least 2 classes"),
        (lambda r: [(r / c).mkdir(parents=True) for c in ("a", "b")], "has no pictures"),
    ],
)
def test_folders_that_cannot_make_a_data_set_are_one_line_errors(tmp_path, build, message):
    root = tmp_path / "pictures"
    build(root)
    with pytest.raises(DataError, match=message):
        data.open_dataset(data=root)


def test_a_folder_of_only_broken_pictures_is_an_error(tmp_path):
    for name in ("a", "b"):
        (tmp_path / "p" / name).mkdir(parents=True)
        (tmp_path / "p" / name / "x.png").write_bytes(b"nope")
    with pytest.raises(DataError, match="none of its 2 pictures could be read"):
        data.open_dataset(data=tmp_path / "p")


def test_the_cache_is_reused_and_rebuilt_when_a_file_changes(tmp_path):
    root = make_folder(tmp_path / "pictures", per_class=3)
    logs: list[str] = []
    data.open_dataset(data=root, log=logs.append)
    data.open_dataset(data=root, log=logs.append)
    assert sum("decoded" in line for line in logs) == 1
    picture(root / "red" / "new.png", COLOURS["red"], seed=99)
    dataset = data.open_dataset(data=root, log=logs.append)
    assert sum("decoded" in line for line in logs) == 2
    assert len(dataset.train) + len(dataset.test) == 10
    stamp = (root / "red" / "0.png").stat().st_mtime_ns
    os.utime(root / "red" / "0.png", ns=(stamp + 10**9, stamp + 10**9))
    data.open_dataset(data=root, log=logs.append)
    assert sum("decoded" in line for line in logs) == 3


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux's /proc")
def test_the_cache_is_memory_mapped_not_read_into_memory(tmp_path):
    root = make_folder(tmp_path / "pictures", per_class=3)
    dataset = data.open_dataset(data=root)
    mapped = Path("/proc/self/maps").read_text()
    assert str(tmp_path / "cache") in mapped and "all.npy" in mapped
    assert int(dataset.train.images.sum()) > 0


def test_many_pictures_are_decoded_by_worker_processes_into_the_same_arrays(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "pictures", per_class=6)
    serial = data.open_dataset(data=root)
    monkeypatch.setattr("cnnlab.data.folder.PARALLEL_FROM", 1)
    monkeypatch.setattr("cnnlab.data.folder.CHUNK", 5)
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "other-cache"))
    parallel = data.open_dataset(data=root)
    assert np.array_equal(serial.train.images.numpy(), parallel.train.images.numpy())
    assert np.array_equal(serial.test.labels.numpy(), parallel.test.labels.numpy())


def test_interleaved_order_puts_every_class_in_proportion_in_any_tail():
    labels = np.repeat(np.arange(3), [50, 30, 20])
    order = _interleaved(labels)
    tail = np.bincount(labels[order][-20:], minlength=3)
    assert np.all(np.abs(tail - np.array([10, 6, 4])) <= 1)
    assert sorted(order.tolist()) == list(range(100))


def test_listing_ignores_hidden_files_and_counts_other_files(tmp_path):
    root = make_folder(tmp_path / "pictures", per_class=2)
    (root / ".hidden").mkdir()
    (root / "red" / ".DS_Store").write_text("x")
    (root / "red" / "readme.txt").write_text("x")
    listing = list_folder(root)
    assert listing.classes == ["blue", "green", "red"] and listing.ignored == 1


def test_sixteen_bit_and_palette_pictures_are_read_at_their_true_levels(tmp_path):
    from cnnlab.images import is_colour, levels, open_picture

    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((4, 4), 128 * 257, np.uint16)).save(deep)
    with open_picture(deep) as image:
        assert not is_colour(image)
        assert np.asarray(levels(image, colour=False)).tolist() == [[128] * 4] * 4
    palette = tmp_path / "palette.png"
    Image.fromarray(np.full((4, 4, 3), (200, 10, 10), np.uint8)).quantize(2).save(palette)
    with open_picture(palette) as image:
        assert np.asarray(levels(image, colour=True))[0, 0].tolist() == [200, 10, 10]


def test_a_damaged_cache_is_a_one_line_error_that_says_how_to_rebuild(tmp_path):
    root = make_folder(tmp_path / "pictures", per_class=2)
    data.open_dataset(data=root)
    (array,) = (tmp_path / "cache").glob("folders/*/all.npy")
    array.write_bytes(b"not an array")
    with pytest.raises(DataError, match="delete the folder to rebuild it"):
        data.open_dataset(data=root)
