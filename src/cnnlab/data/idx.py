"""The IDX format of MNIST's files: a magic number, the sizes of each dimension, then the data."""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# The largest file of the MNIST family decompresses to 47,040,016 bytes; anything that
# inflates much further is not one of them (a decompression bomb is stopped here).
MAX_IDX_BYTES = 64 * 2**20


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
    if 0 in dims:
        raise DataError(f"{what}: IDX file of shape {dims} holds nothing")
    dtype = np.dtype(IDX_DTYPES[type_code])
    expected = header + math.prod(dims) * dtype.itemsize
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
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return parse_idx(gunzip(raw, str(path)), str(path))


def gunzip(raw: bytes, what: str, limit: int = MAX_IDX_BYTES) -> bytes:
    """``raw`` decompressed if it is gzip data (else as it is), never to more than ``limit``
    bytes; a corrupt stream is a DataError."""
    if raw[:2] != b"\x1f\x8b":
        return raw
    inflater = zlib.decompressobj(wbits=31)  # 31: a gzip header and trailer
    try:
        data = inflater.decompress(raw, limit + 1)
        if len(data) > limit or inflater.unconsumed_tail:
            raise DataError(f"{what}: decompresses to more than {limit:,} bytes: not an IDX file")
        if not inflater.eof:
            raise DataError(f"{what}: the gzip data is cut short (fetch it again)")
    except zlib.error as exc:
        raise DataError(f"{what}: corrupt gzip data ({exc}): fetch it again") from None
    return data
