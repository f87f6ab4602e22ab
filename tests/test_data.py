"""Data: the strict IDX reader, the restricted unpickler, the cache and the splits."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct

import numpy as np
import pytest

from cnnlab import data
from cnnlab.data import idx, mnist
from cnnlab.data import mnist as mnist_module
from cnnlab.data.cache import read_arrays, write_arrays
from cnnlab.errors import DataError


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_idx_round_trip():
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(idx.parse_idx(idx_bytes(images)), images)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda b: b"\x01" + b[1:], "bad magic number"),
        (lambda b: b[:2] + b"\x42" + b[3:], "unknown IDX element type"),
        (lambda b: b[:3] + b"\x09" + b[4:], "claims 9 dimensions"),
        (lambda b: b[:-1], "truncated or corrupt"),
        (lambda b: b + b"\x00", "truncated or corrupt"),
        (lambda b: b[:6], "truncated IDX header"),
        (lambda b: b"", "bad magic number"),
    ],
)
def test_idx_reader_rejects_corrupt_files(mangle, message):
    good = idx_bytes(np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(DataError, match=message):
        idx.parse_idx(mangle(good))


def write_idx_dir(folder, n_train=60_000, n_test=10_000, compress=True, arrays=None):
    """IDX files of ``arrays``, or of made-up images of the full MNIST sizes (only the first
    images have content: fast to gzip)."""
    rng = np.random.default_rng(0)
    arrays = arrays or {
        "train_images": np.zeros((n_train, 28, 28), np.uint8),
        "train_labels": rng.integers(0, 10, n_train).astype(np.uint8),
        "test_images": np.zeros((n_test, 28, 28), np.uint8),
        "test_labels": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    arrays["train_images"][:5] = rng.integers(0, 256, (5, 28, 28))
    arrays["test_images"][:5] = rng.integers(0, 256, (5, 28, 28))
    for key, stem in mnist.IDX_FILES.items():
        raw = idx_bytes(arrays[key])
        if compress:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / stem).write_bytes(raw)
    return arrays


def canonical(name):
    arrays, _ = data.fetch(name)
    return {key: np.array(arrays[key]) for key in mnist.IDX_FILES}


@pytest.mark.parametrize("compress", [True, False])
def test_a_folder_of_idx_files_is_read_and_cached(tmp_path, monkeypatch, compress, mnist):
    arrays = canonical("mnist")
    arrays_dir = tmp_path / "files"
    arrays_dir.mkdir()
    for key, stem in mnist_module.IDX_FILES.items():
        raw = idx_bytes(arrays[key])
        path = arrays_dir / (f"{stem}.gz" if compress else stem)
        path.write_bytes(gzip.compress(raw, 1) if compress else raw)
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    got, source = data.fetch("mnist", from_path=arrays_dir)
    assert np.array_equal(got["test_images"], arrays["test_images"])
    cached, _ = data.fetch("mnist")  # now from the cache, no folder needed
    assert np.array_equal(cached["train_labels"], arrays["train_labels"])
    assert str(arrays_dir) in source


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("mnist", lambda folder: write_idx_dir(folder)),  # random pixels, random labels
        ("fashion-mnist", lambda folder: write_idx_dir(folder, arrays=canonical("mnist"))),
    ],
)
def test_files_that_are_not_the_data_set_are_refused_and_the_cache_kept(
    tmp_path, monkeypatch, name, make, mnist
):
    cache = tmp_path / "cache"
    cache.mkdir()
    good = b"the good cache, untouched"
    (cache / f"{name}.npz").write_bytes(good)
    monkeypatch.setenv("CNNLAB_CACHE", str(cache))
    make(tmp_path)
    with pytest.raises(DataError, match=f"are not {name}'s"):
        data.fetch(name, from_path=tmp_path)
    assert (cache / f"{name}.npz").read_bytes() == good


def test_labels_that_are_not_bytes_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    write_idx_dir(tmp_path, n_train=6, n_test=5)
    nan = np.full(5, np.nan, np.float32).astype(">f4")
    header = bytes([0, 0, 0x0D, 1]) + (5).to_bytes(4, "big")
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(header + nan.tobytes()))
    with pytest.raises(DataError, match="not one byte"):
        mnist_module.read_idx_dir(tmp_path)


def test_a_folder_with_too_few_images_is_refused_and_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    write_idx_dir(tmp_path, n_train=100, n_test=10)
    with pytest.raises(DataError, match="100 training and 10 test images"):
        data.fetch("mnist", from_path=tmp_path)
    assert not (tmp_path / "cache" / "mnist.npz").exists()


def test_a_truncated_file_in_the_folder_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    write_idx_dir(tmp_path, compress=False)
    stem = tmp_path / mnist.IDX_FILES["test_images"]
    stem.write_bytes(stem.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated or corrupt"):
        data.fetch("mnist", from_path=tmp_path)
    assert not (tmp_path / "cache" / "mnist.npz").exists()


def test_a_missing_file_is_named(tmp_path):
    write_idx_dir(tmp_path, n_train=6, n_test=5)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte"):
        mnist.read_idx_dir(tmp_path)


def test_a_damaged_cache_says_how_to_recover(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path))
    (tmp_path / "mnist.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="data fetch mnist --force"):
        data.fetch("mnist")


def test_the_cache_reads_back_what_was_written_as_memory_maps(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path))
    rng = np.random.default_rng(0)
    written = {
        "train_images": rng.integers(0, 256, (7, 5, 4), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, 7, dtype=np.uint8),
        "classes": np.array(["a cat", "a dog"]),
        "empty": np.zeros((0, 3), np.uint8),
    }
    write_arrays("mnist", written, "a test")
    arrays, source = read_arrays("mnist", ("train_images", "train_labels", "empty"))
    assert source == "a test"
    assert set(arrays) == set(written)
    for key, array in written.items():
        assert np.array_equal(arrays[key], array) and arrays[key].dtype == array.dtype
    assert isinstance(arrays["train_images"], np.memmap)
    arrays["train_images"][0] = 0  # copy-on-write: a run may write, the cache stays
    assert np.array_equal(read_arrays("mnist", ("train_images",))[0]["train_images"],
                          written["train_images"])  # fmt: skip


@pytest.mark.parametrize("cut", [0.5, 0.99])
def test_a_truncated_cache_says_how_to_recover(tmp_path, monkeypatch, cut):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path))
    images = np.zeros((100, 28, 28), np.uint8)
    write_arrays("mnist", {"train_images": images}, "a test")
    whole = (tmp_path / "mnist.npz").read_bytes()
    (tmp_path / "mnist.npz").write_bytes(whole[: int(len(whole) * cut)])
    with pytest.raises(DataError, match="data fetch mnist --force"):
        read_arrays("mnist", ("train_images",))


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_the_unpickler_refuses_anything_but_numpy_arrays():
    payload = pickle.dumps(_Exploit(), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        mnist._NumpyOnlyUnpickler(io.BytesIO(payload)).load()
    arrays = (np.arange(6, dtype=np.float32).reshape(2, 3), np.arange(3))
    loaded = mnist._NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(arrays, protocol=4))).load()
    assert np.array_equal(loaded[0], arrays[0])


def test_mnist_pkl_with_the_wrong_hash_is_refused():
    with pytest.raises(DataError, match="SHA-256"):
        mnist.read_mnist_pkl(gzip.compress(b"whatever"))


@pytest.mark.parametrize(
    ("split", "validation", "subset", "sizes"),
    [
        ("nielsen", None, None, (50_000, 10_000, 10_000)),
        ("standard", None, None, (50_000, 10_000, 10_000)),
        ("standard", 5_000, None, (55_000, 5_000, 10_000)),
        ("nielsen", None, 1_000, (1_000, 10_000, 10_000)),
    ],
)
def test_splits_have_the_documented_sizes(mnist, split, validation, subset, sizes):
    splits = data.load_splits("mnist", split, validation, subset)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == sizes
    assert splits.train.images.shape[1:] == (1, 28, 28)


def test_standard_split_without_validation_uses_all_60000(mnist):
    splits = data.load_splits("mnist", "standard", validation=0)
    assert len(splits.train) == 60_000 and splits.validation is None


def test_nielsen_split_is_the_chapter_order(mnist):
    # mnist.pkl.gz's first training labels and first test labels
    assert mnist.train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert mnist.test.labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert mnist.train.images.dtype.is_floating_point is False


def test_bad_split_arguments_are_refused(mnist):
    with pytest.raises(DataError, match="unknown split"):
        data.load_splits("mnist", "random")
    with pytest.raises(DataError, match="train-subset"):
        data.load_splits("mnist", train_subset=0)
    with pytest.raises(DataError, match="unknown data set"):
        data.fetch("cifar")
