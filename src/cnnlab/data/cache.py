"""The cache of converted data sets: uint8 arrays written once, read on every run.

Built-in data sets live in ``<cache>/<name>.npz`` (their images, labels and,
where the archive names them, class names); picture folders in
``<cache>/folders/`` (see ``folder.py``). The cache folder is ``$CNNLAB_CACHE``
or the user cache folder.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
from platformdirs import user_cache_dir

from ..errors import DataError
from ..files import write_atomically

Arrays = dict[str, np.ndarray]


def cache_dir() -> Path:
    """Where converted data sets live: $CNNLAB_CACHE, or the user cache folder."""
    return Path(os.environ.get("CNNLAB_CACHE") or user_cache_dir("cnnlab"))


def cache_path(name: str) -> Path:
    return cache_dir() / f"{name}.npz"


def write_arrays(name: str, arrays: Arrays, source: str) -> None:
    """Cache a built-in data set's arrays with a note of where they came from (atomically)."""

    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:
            np.savez(f, source=np.array(source), **arrays)

    write_atomically(cache_path(name), write)


def read_arrays(name: str, keys: tuple[str, ...]) -> tuple[Arrays, str] | None:
    """The cached arrays ``keys`` (plus optional "classes") and their source; None if not cached."""
    path = cache_path(name)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {key: f[key] for key in keys}
            if "classes" in f.files:
                arrays["classes"] = f["classes"]
            source = str(f["source"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"{path}: damaged cache ({exc}); run `cnnlab data fetch {name} --force`"
        ) from None
    return arrays, source
