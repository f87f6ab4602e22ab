"""CIFAR-10 and CIFAR-100: 60,000 colour pictures of 32×32 from the publisher's binary archive.

The binary version (``cifar-10-binary.tar.gz``, ``cifar-100-binary.tar.gz``)
is documented on the data set's page and needs no unpickling: each picture is
one fixed-length record, its label byte(s) then 3,072 bytes — the 1,024 red
values, then green, then blue, each a 32×32 image row by row. CIFAR-10 files
hold 10,000 records with one label byte; CIFAR-100's ``train.bin`` (50,000)
and ``test.bin`` (10,000) have two, the coarse (superclass) label and the fine
one, which is the one used here. Class names come from the archive's text file.

The archive is checked against the publisher's MD5 before anything is read;
inside it, only the expected regular files are read, each at its exact size.
"""

from __future__ import annotations

import hashlib
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .cache import Arrays

PIXELS = 3 * 32 * 32
MAX_NAMES_BYTES = 64 * 1024


@dataclass(frozen=True)
class CifarFormat:
    """What one of the two archives holds, as its publisher documents it."""

    archive: str  # file name of the archive
    md5: str  # the publisher's checksum of the archive
    folder: str  # the folder inside it
    train_files: tuple[str, ...]
    test_file: str
    label_bytes: int  # bytes before the pixels of each record
    names_file: str
    classes: int

    def record_bytes(self) -> int:
        return self.label_bytes + PIXELS


FORMATS = {
    "cifar10": CifarFormat(
        "cifar-10-binary.tar.gz",
        "c32a1d4ab5d03f1284b67883e8d87530",
        "cifar-10-batches-bin",
        tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
        "test_batch.bin",
        1,
        "batches.meta.txt",
        10,
    ),
    "cifar100": CifarFormat(
        "cifar-100-binary.tar.gz",
        "03b5dce01913d631647c71ecec9e9cb8",
        "cifar-100-binary",
        ("train.bin",),
        "test.bin",
        2,
        "fine_label_names.txt",
        100,
    ),
}
URL = "https://www.cs.toronto.edu/~kriz/"
COUNTS = (50_000, 10_000)


def parse_records(raw: bytes, fmt: CifarFormat, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) of a file of fixed-length records."""
    size = fmt.record_bytes()
    if not raw or len(raw) % size:
        raise DataError(f"{what}: {len(raw):,} bytes is not a whole number of {size}-byte records")
    records = np.frombuffer(raw, np.uint8).reshape(-1, size)
    labels = records[:, fmt.label_bytes - 1].astype(np.int64)  # the last label byte: fine
    if labels.max() >= fmt.classes:
        raise DataError(f"{what}: label {labels.max()} is out of range for {fmt.classes} classes")
    return records[:, fmt.label_bytes :].reshape(-1, 3, 32, 32).copy(), labels


def parse_names(raw: bytes, fmt: CifarFormat, what: str) -> list[str]:
    names = [line.strip() for line in raw.decode("utf-8", "replace").splitlines() if line.strip()]
    if len(names) != fmt.classes:
        raise DataError(f"{what}: {len(names)} class names, expected {fmt.classes}")
    return names


def read_members(read: Callable[[str, int], bytes], fmt: CifarFormat, origin: str) -> Arrays:
    """The arrays of a CIFAR data set from ``read(name, max_bytes)`` of each file in it."""
    biggest = COUNTS[0] * fmt.record_bytes()
    parts = [parse_records(read(name, biggest), fmt, name) for name in fmt.train_files]
    test_images, test_labels = parse_records(read(fmt.test_file, biggest), fmt, fmt.test_file)
    names = parse_names(read(fmt.names_file, MAX_NAMES_BYTES), fmt, fmt.names_file)
    return {
        "train_images": np.concatenate([images for images, _ in parts]),
        "train_labels": np.concatenate([labels for _, labels in parts]),
        "test_images": test_images,
        "test_labels": test_labels,
        "classes": np.array(names),
    }


def read_archive(path: Path, fmt: CifarFormat, verify: bool = True) -> Arrays:
    """The arrays inside the publisher's archive, its MD5 verified first."""
    if verify:
        digest = hashlib.md5()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != fmt.md5:
            raise DataError(
                f"{path}: MD5 {digest.hexdigest()} is not the publisher's {fmt.md5}"
                f" for {fmt.archive} (damaged or a different file: download it again)"
            )
    try:
        with tarfile.open(path, "r:gz") as archive:

            def read(name: str, limit: int) -> bytes:
                member = archive.getmember(f"{fmt.folder}/{name}")
                if not member.isfile() or member.size > limit:
                    raise DataError(f"{path}: {name} is not a regular file of at most {limit:,} B")
                return archive.extractfile(member).read()  # type: ignore[union-attr]

            return read_members(read, fmt, str(path))
    except KeyError as exc:
        raise DataError(f"{path}: {exc.args[0]} is missing from the archive") from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable {fmt.archive} ({exc})") from None


def read_folder(path: Path, fmt: CifarFormat) -> Arrays:
    """The arrays of an extracted archive (its folder, or the folder holding it)."""
    folder = path / fmt.folder if (path / fmt.folder).is_dir() else path

    def read(name: str, limit: int) -> bytes:
        file = folder / name
        if not file.is_file():
            raise DataError(f"{folder}: missing {name}")
        if file.stat().st_size > limit:
            raise DataError(f"{file}: larger than the {limit:,} bytes it can be")
        return file.read_bytes()

    return read_members(read, fmt, str(folder))


def check_counts(arrays: Arrays, origin: str) -> Arrays:
    found = (len(arrays["train_labels"]), len(arrays["test_labels"]))
    if found != COUNTS:
        raise DataError(
            f"{origin}: {found[0]:,} training and {found[1]:,} test pictures; CIFAR has 50,000"
            " and 10,000"
        )
    return arrays


def read_from(name: str, path: str | Path) -> Arrays:
    """A CIFAR data set from the archive, a folder holding the archive, or the extracted folder."""
    fmt, path = FORMATS[name], Path(path)
    if path.is_dir() and (path / fmt.archive).is_file():
        path = path / fmt.archive
    if path.is_file():
        return check_counts(read_archive(path, fmt), str(path))
    if path.is_dir():
        return check_counts(read_folder(path, fmt), str(path))
    raise DataError(f"{path}: no such file or folder (name {fmt.archive} or its extracted folder)")


def download(name: str, directory: Path, timeout: float = 60) -> Arrays:
    """The publisher's archive, downloaded into ``directory`` and verified."""
    fmt = FORMATS[name]
    target = directory / fmt.archive
    try:
        with (
            urllib.request.urlopen(URL + fmt.archive, timeout=timeout) as response,
            target.open("wb") as f,
        ):
            for block in iter(lambda: response.read(1 << 20), b""):
                f.write(block)
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(
            f"download of {URL + fmt.archive} failed ({getattr(exc, 'reason', exc)})"
        ) from None
    return check_counts(read_archive(target, fmt), URL + fmt.archive)
