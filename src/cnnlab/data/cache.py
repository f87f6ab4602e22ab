"""The cache of converted data sets: uint8 arrays written once, read on every run.

Built-in data sets live in ``<cache>/<name>.npz`` (their images, labels and,
where the archive names them, class names); picture folders in
``<cache>/folders/`` (see ``folder.py``). The cache folder is ``$CNNLAB_CACHE``
or the user cache folder.
"""

from __future__ import annotations

import os
import struct
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
        stored = _mapped_npz(path)
        arrays = {key: stored[f"{key}.npy"] for key in keys}
        if "classes.npy" in stored:
            arrays["classes"] = stored["classes.npy"]
        source = str(stored["source.npy"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"{path}: damaged cache ({exc}); run `cnnlab data fetch {name} --force`"
        ) from None
    return arrays, source


def _mapped_npz(path: Path) -> Arrays:
    """Every array of an uncompressed .npz (as ``np.savez`` writes), memory-mapped.

    Read on every run, the cache is mapped copy-on-write rather than copied: no
    allocation, no checksum pass, and a page costs nothing until a batch uses it.
    """
    arrays = {}
    with zipfile.ZipFile(path) as archive, path.open("rb") as f:
        for member in archive.infolist():
            if member.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"{member.filename} is compressed")
            f.seek(member.header_offset)
            header = f.read(30)  # the member's local header: its name and extra field follow
            if header[:4] != b"PK\x03\x04":
                raise ValueError(f"{member.filename} has no local header")
            name_length, extra_length = struct.unpack("<HH", header[26:30])
            f.seek(member.header_offset + 30 + name_length + extra_length)
            version = np.lib.format.read_magic(f)
            shape, fortran, dtype = (
                np.lib.format.read_array_header_1_0(f)
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0(f)
            )
            if dtype.hasobject or not shape or 0 in shape:  # small or empty: read as it is
                f.seek(member.header_offset + 30 + name_length + extra_length)
                arrays[member.filename] = np.lib.format.read_array(f, allow_pickle=False)
                continue
            order = "F" if fortran else "C"
            arrays[member.filename] = np.memmap(
                path, dtype, "c", offset=f.tell(), shape=shape, order=order
            )
    return arrays
