"""Atomic file writes: a reader (or a crash) never sees a half-written file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield Path(tmp)
        # after the write (a writer may replace the file): mkstemp's 0600 would make outputs
        # private to their maker
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb") as written:  # on disk before the rename, so a crash keeps one copy
            os.fsync(written.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def remove_leftovers(folder: str | Path) -> None:
    """Delete the temporary files of writes a killed process never finished (``.NAME.*.tmp``)."""
    for leftover in Path(folder).glob(".*.tmp"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)


def write_atomically(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` and move the result into place only if it succeeded."""
    with atomic_path(path) as tmp:
        write(tmp)
