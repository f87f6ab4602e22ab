"""The folder the explorer serves: its checkpoints and training runs, and nothing outside it.

A checkpoint or run is named by its path relative to the folder, and a name is
accepted only if it is one the listing produced. The listing walks the folder
without following symlinked folders and drops files whose real path leaves it,
so '..', absolute paths and escaping symlinks can never name a file.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CnnlabError
from ..network import Network
from ..probe import training_history
from ..runs import CHECKPOINT, METRICS, MODEL, read_run

MAX_DEPTH = 4  # folders below the served one that are searched
MAX_FILES = 1000  # files looked at per listing, so a huge folder cannot stall a request


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
                if path.resolve().is_relative_to(self.root) and path.is_file():
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
                cached = (stamp, Network.load(entry.path))
                self._networks[entry.name] = cached
        network, meta = cached[1]
        return entry.name, network, meta

    def run(self, name: str | None) -> dict[str, Any]:
        """A run's metrics log and its planned number of epochs (None if not known yet)."""
        entry = self._find(name, self.runs(), "training run")
        return {
            "name": entry.name,
            "epochs": self._planned_epochs(entry.path),
            "history": training_history(entry.path),
        }

    def _planned_epochs(self, run: Path) -> int | None:
        path = run / CHECKPOINT
        if not path.is_file():
            return None
        stamp = path.stat().st_mtime_ns
        with self._lock:
            cached = self._epochs.get(str(run))
        if cached is None or cached[0] != stamp:
            cached = (stamp, read_run(run)[1].epochs)
            with self._lock:
                self._epochs[str(run)] = cached
        return cached[1]
