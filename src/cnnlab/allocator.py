"""Keep freed memory in the process: glibc's defaults fault every batch's buffers in anew.

A training step or a chunk of evaluation allocates maps of a few megabytes and frees
them a moment later. glibc serves such sizes with fresh ``mmap`` pages (or trims them
off the heap on free), so the next step pays a page fault for every 4 KiB it touches
again: a quarter of the default `fast` run went to that (docs/performance.md). Raising
the thresholds once keeps those buffers on the heap, ready for the next step.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
LARGEST_HEAP_BLOCK = 32 << 20  # glibc refuses a larger mmap threshold on 64-bit systems
NEVER_TRIM = (1 << 31) - 1  # mallopt takes an int


def keep_freed_memory() -> bool:
    """Tell glibc to reuse freed buffers up to 32 MiB instead of returning them to the system.

    Returns whether it applied: only glibc has mallopt; elsewhere nothing changes.
    """
    try:
        glibc = os.confstr("CS_GNU_LIBC_VERSION")  # "glibc 2.41" on glibc, an error elsewhere
    except (AttributeError, ValueError, OSError):
        return False
    if not glibc or not glibc.startswith("glibc"):
        return False
    libc = ctypes.CDLL(None)  # the running program, glibc included
    return bool(
        libc.mallopt(M_MMAP_THRESHOLD, LARGEST_HEAP_BLOCK)
        and libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM)
    )
