"""Freed buffers stay in the process, so the next training step does not fault them in anew."""

import ctypes
import os

import pytest
import torch

from cnnlab.allocator import keep_freed_memory

GLIBC = os.confstr("CS_GNU_LIBC_VERSION") or ""


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
            "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def mapped_blocks() -> int:
    """How many allocations glibc currently serves with their own mmap."""
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    return libc.mallinfo2().hblks


@pytest.mark.skipif(not GLIBC.startswith("glibc"), reason="mallopt is glibc's")
def test_batch_sized_buffers_come_from_the_heap_not_fresh_mappings():
    assert keep_freed_memory()
    before = mapped_blocks()
    maps = torch.empty(256, 32, 24, 24)  # a training step's feature maps: 18 MiB
    assert mapped_blocks() == before
    del maps
