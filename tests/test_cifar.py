"""CIFAR-10/100: the strict binary reader, on small archives built in the exact published format."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from cnnlab import data
from cnnlab.data import cifar
from cnnlab.errors import DataError


def records(labels: list[tuple[int, ...]], seed: int = 0) -> tuple[bytes, np.ndarray]:
    """Fixed-length records: label byte(s), then 1,024 red, 1,024 green, 1,024 blue values."""
    rng = np.random.default_rng(seed)
    pictures = rng.integers(0, 256, (len(labels), 3, 32, 32), dtype=np.uint8)
    raw = b"".join(bytes(label) + picture.tobytes() for label, picture in zip(labels, pictures))
    return raw, pictures


def archive(path: Path, fmt: cifar.CifarFormat, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(f"{fmt.folder}/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


def cifar10_members(per_file: int = 4) -> tuple[dict[str, bytes], np.ndarray, np.ndarray]:
    fmt = cifar.FORMATS["cifar10"]
    members, pictures, labels = {}, [], []
    for i, name in enumerate([*fmt.train_files, fmt.test_file]):
        label_list = [((i + k) % 10,) for k in range(per_file)]
        raw, pics = records(label_list, seed=i)
        members[name] = raw
        pictures.append(pics)
        labels += [label[0] for label in label_list]
    names = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n"
    members[fmt.names_file] = names.encode()
    return members, np.concatenate(pictures), np.array(labels)


def test_cifar10_records_are_read_channel_by_channel_with_their_names(tmp_path):
    fmt = cifar.FORMATS["cifar10"]
    members, pictures, labels = cifar10_members()
    path = archive(tmp_path / fmt.archive, fmt, members)
    arrays = cifar.read_archive(path, fmt, verify=False)
    assert arrays["train_images"].shape == (20, 3, 32, 32)
    assert np.array_equal(arrays["train_images"], pictures[:20])
    assert np.array_equal(arrays["test_images"], pictures[20:])
    assert arrays["train_labels"].tolist() == labels[:20].tolist()
    assert arrays["classes"][3] == "cat" and len(arrays["classes"]) == 10


def test_cifar100_uses_the_fine_label_of_its_two_label_bytes(tmp_path):
    fmt = cifar.FORMATS["cifar100"]
    train, pictures = records([(3, 99), (19, 0), (0, 42)])
    test, _ = records([(1, 7)], seed=1)
    names = "\n".join(f"class{i}" for i in range(100)).encode()
    path = archive(
        tmp_path / fmt.archive, fmt, {"train.bin": train, "test.bin": test, fmt.names_file: names}
    )
    arrays = cifar.read_archive(path, fmt, verify=False)
    assert arrays["train_labels"].tolist() == [99, 0, 42]
    assert arrays["test_labels"].tolist() == [7]
    assert np.array_equal(arrays["train_images"], pictures)


def test_the_publishers_checksum_is_checked_before_reading(tmp_path):
    fmt = cifar.FORMATS["cifar10"]
    members, _, _ = cifar10_members()
    path = archive(tmp_path / fmt.archive, fmt, members)
    with pytest.raises(DataError, match="is not the publisher's c32a1d4ab5d03f1284b67883e8d87530"):
        cifar.read_archive(path, fmt)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda m: {**m, "data_batch_2.bin": m["data_batch_2.bin"][:-1]}, "whole number of 3073"),
        (lambda m: {**m, "test_batch.bin": b""}, "whole number"),
        (lambda m: {**m, "data_batch_1.bin": b"\x0a" + m["data_batch_1.bin"][1:]}, "out of range"),
        (lambda m: {k: v for k, v in m.items() if k != "data_batch_5.bin"}, "missing"),
        (lambda m: {**m, "batches.meta.txt": b"cat\ndog\n"}, "2 class names, expected 10"),
    ],
)
def test_malformed_archives_are_refused_with_the_reason(tmp_path, mangle, message):
    fmt = cifar.FORMATS["cifar10"]
    members, _, _ = cifar10_members()
    path = archive(tmp_path / fmt.archive, fmt, mangle(members))
    with pytest.raises(DataError, match=message):
        cifar.read_archive(path, fmt, verify=False)


def test_a_file_that_is_not_an_archive_is_refused(tmp_path):
    fmt = cifar.FORMATS["cifar10"]
    path = tmp_path / fmt.archive
    path.write_bytes(b"not a tar.gz at all")
    with pytest.raises(DataError, match="not a readable"):
        cifar.read_archive(path, fmt, verify=False)


def test_fetch_from_a_verified_archive_caches_a_builtin_data_set(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cifar, "COUNTS", (20, 4))  # the small archive stands for the real one
    fmt = cifar.FORMATS["cifar10"]
    members, pictures, _labels = cifar10_members()
    path = archive(tmp_path / fmt.archive, fmt, members)
    small = cifar.CifarFormat(**{**fmt.__dict__, "md5": hashlib.md5(path.read_bytes()).hexdigest()})
    monkeypatch.setitem(cifar.FORMATS, "cifar10", small)
    data.fetch("cifar10", from_path=tmp_path)  # the folder holding the archive
    splits = data.load_splits("cifar10", "standard", validation=5)
    assert splits.input_shape == (3, 32, 32)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (15, 5, 4)
    assert splits.classes[0] == "airplane"
    assert np.array_equal(splits.test.images.numpy(), pictures[20:])
