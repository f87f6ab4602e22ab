"""Freed buffers stay in the process, so the next training step does not fault them in anew."""

import ctypes
import os
import resource

import pytest
import torch

from cnnlab.allocator import LARGEST_HEAP_BLOCK, keep_freed_memory
from cnnlab.arch import parse_arch
from cnnlab.network import Network
from cnnlab.predict import chunk_images, probabilities
from cnnlab.presets import get_preset

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


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


@pytest.mark.skipif(not GLIBC.startswith("glibc"), reason="mallopt is glibc's")
def test_evaluation_chunks_of_a_wide_network_stay_on_the_heap():
    assert keep_freed_memory()
    torch.manual_seed(0)
    network = Network.from_spec(
        {"input": [1, 28, 28], "layers": parse_arch("conv64x3p1-softmax10")}
    )
    assert chunk_images(network) * 64 * 28 * 28 * 4 <= LARGEST_HEAP_BLOCK < 400 * 64 * 28 * 28 * 4
    images = torch.randint(0, 256, (400, 1, 28, 28), dtype=torch.uint8)

    def faults_and_result(batch_size: int | None) -> tuple[int, torch.Tensor]:
        probabilities(network, images, "fp32", "none", batch_size)  # warm: the heap grows once
        before = minor_faults()
        result = probabilities(network, images, "fp32", "none", batch_size)
        return minor_faults() - before, result

    one_chunk_faults, one_chunk = faults_and_result(400)  # an 80 MB map: fresh pages each time
    chunked_faults, chunked = faults_and_result(None)
    assert chunked_faults * 10 < one_chunk_faults
    torch.testing.assert_close(chunked, one_chunk)


def test_small_networks_keep_chunks_of_a_thousand():
    fast = Network.from_spec(get_preset("fast").spec())
    assert chunk_images(fast) == 1000
