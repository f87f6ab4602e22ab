"""The folder the explorer serves: its checkpoints and training runs, and nothing outside it.

A checkpoint or run is named by its path relative to the folder, and a name is
accepted only if it is one the listing produced. The listing walks the folder
without following symlinks (symlinked files and folders are not served), so
'..', absolute paths and symlinks can never name a file. A file is then read
by opening each part of its path relative to the folder, none of them a
symlink: one swapped for a symlink after the listing is refused, not followed.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CnnlabError
from ..network import Network, load_tensors
from ..probe import parse_history
from ..runs import CHECKPOINT, METRICS, MODEL, run_parts

MAX_DEPTH = 4  # folders below the served one that are searched
MAX_FILES = 1000  # files looked at per listing, so a huge folder cannot stall a request
MAX_READ = 512 * 2**20  # bytes of one file read for a request


class NotServed(CnnlabError):
    """A name that is not a checkpoint or run inside the served folder."""


@dataclass(frozen=True)
class Entry:
    """A file the folder serves: its name (relative path, '/'-separated) and where it is."""

    name: str
    path: Path
    modified: float


class ServedFolder:
    """The checkpoints (``*.safetensors``) and runs (folders with a metrics log) under ``root``."""

    def __init__(self, root: str | Path, default: str | None = None) -> None:
        self.root = Path(root).resolve()
        self.default = default
        self._lock = threading.Lock()
        self._networks: dict[str, tuple[int, tuple[Network, dict[str, Any]]]] = {}
        self._epochs: dict[str, tuple[int, int]] = {}

    @classmethod
    def open(cls, target: str | Path) -> ServedFolder:
        """Serve a checkpoint file's folder (that file first), or a folder of checkpoints."""
        path = Path(target)
        if path.is_file():
            if path.suffix != ".safetensors":
                raise CnnlabError(f"{path} is not a checkpoint (a .safetensors file)")
            return cls(path.parent, path.name)
        if not path.is_dir():
            raise CnnlabError(
                f"{path}: no such checkpoint or folder; train a network first (`cnnlab train`"
                " writes runs/NAME-TIME/) or name one: `cnnlab serve PATH`"
            )
        folder = cls(path)
        if not folder.checkpoints() and not folder.runs():
            raise CnnlabError(
                f"{path} holds no checkpoint (*.safetensors) or training run: train one with"
                " `cnnlab train`, or name a checkpoint: `cnnlab serve PATH`"
            )
        return folder

    def _walk(self) -> list[Path]:
        """Files under the root, without leaving it (see the module doc)."""
        found: list[Path] = []
        for directory, subdirs, files in os.walk(self.root, followlinks=False):
            depth = len(Path(directory).relative_to(self.root).parts)
            if depth >= MAX_DEPTH:
                subdirs.clear()
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            for name in sorted(files):
                path = Path(directory) / name
                if not path.is_symlink() and path.is_file():
                    found.append(path)
                if len(found) >= MAX_FILES:
                    return found
        return found

    def _entry(self, path: Path) -> Entry:
        return Entry(path.relative_to(self.root).as_posix(), path, path.stat().st_mtime)

    def checkpoints(self) -> list[Entry]:
        """Every ``*.safetensors``, except a run's resume checkpoint when its model is beside it."""
        files = [p for p in self._walk() if p.suffix == ".safetensors"]
        present = set(files)
        return [
            self._entry(p)
            for p in files
            if not (p.name == CHECKPOINT and p.with_name(MODEL) in present)
        ]

    def runs(self) -> list[Entry]:
        """Training runs: folders with a metrics log (named by the folder, '.' for the root)."""
        return [
            Entry(p.parent.relative_to(self.root).as_posix(), p.parent, p.stat().st_mtime)
            for p in self._walk()
            if p.name == METRICS
        ]

    def default_checkpoint(self) -> str | None:
        """The file named at start, else the most recently written checkpoint."""
        entries = self.checkpoints()
        names = {e.name for e in entries}
        if self.default in names:
            return self.default
        return max(entries, key=lambda e: e.modified).name if entries else None

    def _find(self, name: str | None, entries: list[Entry], what: str) -> Entry:
        for entry in entries:
            if entry.name == name:
                return entry
        raise NotServed(f"no {what} named {name!r} in the served folder")

    def network(self, name: str | None) -> tuple[str, Network, dict[str, Any]]:
        """(name, network, metadata) of a checkpoint; reloaded when its file changes."""
        name = name or self.default_checkpoint()
        entry = self._find(name, self.checkpoints(), "checkpoint")
        stamp = entry.path.stat().st_mtime_ns
        with self._lock:
            cached = self._networks.get(entry.name)
            if cached is None or cached[0] != stamp:
                cached = (stamp, Network.load(entry.name, content=self.read(entry.path)))
                self._networks[entry.name] = cached
        network, meta = cached[1]
        return entry.name, network, meta

    def run(self, name: str | None) -> dict[str, Any]:
        """A run's metrics log and its planned number of epochs (None if not known yet)."""
        entry = self._find(name, self.runs(), "training run")
        return {
            "name": entry.name,
            "epochs": self._planned_epochs(entry.path),
            "history": parse_history(self.read(entry.path / METRICS).decode(), entry.name),
        }

    def read(self, path: Path) -> bytes:
        """The bytes of ``path``, a file below the root, opened part by part without following
        any symlink (see the module doc)."""
        parts = path.relative_to(self.root).parts
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
        descriptor = os.open(self.root, flags | getattr(os, "O_DIRECTORY", 0))
        try:
            for part in parts[:-1]:
                inner = os.open(part, flags | getattr(os, "O_DIRECTORY", 0), dir_fd=descriptor)
                os.close(descriptor)
                descriptor = inner
            inner = os.open(parts[-1], flags, dir_fd=descriptor)
        except OSError:
            raise NotServed(f"{path.name}: not a file inside the served folder") from None
        finally:
            os.close(descriptor)
        with os.fdopen(inner, "rb") as file:
            content = file.read(MAX_READ + 1)
        if len(content) > MAX_READ:
            raise NotServed(f"{path.name}: larger than the explorer reads ({MAX_READ:,} bytes)")
        return content

    def _planned_epochs(self, run: Path) -> int | None:
        path = run / CHECKPOINT
        if not path.is_file():
            return None
        stamp = path.stat().st_mtime_ns
        with self._lock:
            cached = self._epochs.get(str(run))
        if cached is None or cached[0] != stamp:
            _, meta = load_tensors(path.relative_to(self.root), self.read(path))
            cached = (stamp, run_parts(meta, path.relative_to(self.root))[1].epochs)
            with self._lock:
                self._epochs[str(run)] = cached
        return cached[1]
