"""A folder of the user's own pictures as a data set.

Layouts, as other toolkits use them:

- ``DIR/<class>/…``: one subfolder per class; a seeded ``test_fraction`` of
  each class is held out as the test part;
- ``DIR/train/<class>/…`` and ``DIR/test/<class>/…``, optionally
  ``DIR/val/<class>/…`` as the validation part.

PNG, JPEG, BMP and WebP pictures, grey or colour, of any size, are decoded
once — in parallel worker processes, with a progress bar — into uint8 arrays
(colour if any picture is, every picture resized keeping its aspect ratio and
centre-cropped to one size) and cached as ``.npy`` files that are memory-mapped
when read, so a folder larger than memory still trains. The cache is keyed by
the folder's file names, sizes and modification times and rebuilt when any of
them changes. A file that cannot be decoded is skipped and counted.

Each part is stored in a seeded, class-interleaved order: any slice from its
end holds about the same fraction of every class, so held-out test and
validation parts are slices of a memory map, never copies.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..errors import CnnlabError, DataError
from ..images import PICTURE_ERRORS, SUFFIXES, fit_picture, is_colour, open_picture
from .cache import cache_dir
from .parts import Dataset, Part

CACHE_VERSION = 1
MAX_DEFAULT_SIDE = 64
SPLIT_FOLDERS = ("train", "test", "val")
PARALLEL_FROM = 256  # pictures: fewer are decoded in this process, without workers' start-up
CHUNK = 64  # pictures per task sent to a worker
ORDER_SEED = 0


@dataclass(frozen=True)
class Listing:
    """The pictures of a folder: class names and (path, class index) per part."""

    root: Path
    classes: list[str]
    parts: dict[str, list[tuple[Path, int]]]  # "all" (one folder per class) or train/test/val
    ignored: int  # files that are not pictures by their name

    def fingerprint(self) -> str:
        """Changes whenever a picture is added, removed, renamed or rewritten."""
        digest = hashlib.sha256(f"v{CACHE_VERSION}".encode())
        for part, files in sorted(self.parts.items()):
            for path, label in files:
                stat = path.stat()
                name = path.relative_to(self.root).as_posix()
                digest.update(
                    f"{part}\0{name}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode()
                )
        return digest.hexdigest()


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p))


def _pictures(folder: Path) -> tuple[list[Path], int]:
    """Picture files anywhere below ``folder`` (by suffix), and how many other files there are."""
    pictures, others = [], 0
    for directory, subdirs, files in os.walk(folder, followlinks=False):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            if name.lower().endswith(SUFFIXES):
                pictures.append(Path(directory) / name)
            else:
                others += 1
    return pictures, others


def list_folder(root: str | Path) -> Listing:
    """Find the layout, the classes and the pictures of a folder; DataError if it has none."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (give a folder with one subfolder per class)")
    top = {p.name: p for p in _class_folders(root)}
    split_layout = "train" in top and ("test" in top or "val" in top)
    groups = {name: top[name] for name in SPLIT_FOLDERS if name in top} if split_layout else {}
    class_root = groups.get("train", root)
    classes = [p.name for p in _class_folders(class_root)]
    if len(classes) < 2:
        found = f"only {classes[0]!r}" if classes else "none"
        raise DataError(
            f"{class_root}: a data set needs at least 2 classes, one subfolder each ({found})"
        )
    parts: dict[str, list[tuple[Path, int]]] = {}
    ignored = 0
    for part, folder in (groups or {"all": root}).items():
        present = [p.name for p in _class_folders(folder)]
        unknown = sorted(set(present) - set(classes))
        if unknown:
            raise DataError(f"{folder}: classes {', '.join(unknown)} are not in {class_root}")
        files = []
        for label, name in enumerate(classes):
            pictures, others = _pictures(folder / name) if name in present else ([], 0)
            ignored += others
            if not pictures and part in ("all", "train"):
                raise DataError(
                    f"{folder / name}: class {name!r} has no pictures (PNG, JPEG, BMP, WebP)"
                )
            files += [(path, label) for path in pictures]
        if not files:
            raise DataError(f"{folder}: no pictures (PNG, JPEG, BMP or WebP) in its class folders")
        parts[part] = files
    return Listing(root, classes, parts, ignored)


# ---- decoding, in worker processes -------------------------------------------------------------
def _header(path: Path) -> tuple[int, int, bool] | str:
    """(height, width, colour) of a picture from its header, or why it cannot be read."""
    try:
        with open_picture(path) as image:
            return image.height, image.width, is_colour(image)
    except CnnlabError as exc:
        return str(exc)


def _headers(paths: list[Path]) -> list[tuple[int, int, bool] | str]:
    return [_header(path) for path in paths]


def _decode(
    task: tuple[str, list[tuple[int, Path]], tuple[int, int], bool],
) -> list[tuple[int, str]]:
    """Decode pictures into rows of the memory-mapped array; returns (row, why) of failures."""
    array_path, jobs, size, colour = task
    array = np.load(array_path, mmap_mode="r+")
    failures = []
    for row, path in jobs:
        try:
            with open_picture(path) as image:
                array[row] = fit_picture(image, size, colour)
        except CnnlabError as exc:
            failures.append((row, str(exc)))
        except PICTURE_ERRORS as exc:
            failures.append((row, f"{path}: damaged picture ({exc})"))
    array.flush()
    del array
    return failures


def _chunks(items: list, size: int = CHUNK) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _run(work: Callable, tasks: list, total: int, desc: str, progress: bool) -> Iterator:
    """Results of ``work`` over ``tasks`` (each counting ``len(task)`` pictures), in order."""
    bar = tqdm(total=total, desc=desc, unit="picture", disable=not progress, leave=False)
    workers = min(os.cpu_count() or 1, len(tasks))
    with bar:
        if total < PARALLEL_FROM or workers < 2:
            for task in tasks:
                yield work(task)
                bar.update(_count(task))
            return
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for task, result in zip(tasks, pool.map(work, tasks)):
                bar.update(_count(task))
                yield result


def _count(task: list | tuple) -> int:
    return len(task[1]) if isinstance(task, tuple) else len(task)


# ---- the cache ---------------------------------------------------------------------------------
def _interleaved(labels: np.ndarray) -> np.ndarray:
    """A seeded order in which every slice holds each class in proportion (see the module doc)."""
    rng = np.random.default_rng(ORDER_SEED)
    keys = np.empty(len(labels))
    for label in np.unique(labels):
        where = np.flatnonzero(labels == label)
        keys[where] = (rng.permutation(len(where)) + rng.random(len(where))) / len(where)
    return np.argsort(keys, kind="stable")


def _cache_folder(root: Path, image_size: tuple[int, int] | None) -> Path:
    where = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    size = "auto" if image_size is None else f"{image_size[0]}x{image_size[1]}"
    return cache_dir() / "folders" / f"{root.resolve().name}-{where}-{size}"


def default_size(sizes: Counter) -> tuple[int, int]:
    """The most common picture size, scaled down (keeping its shape) to at most 64 on a side."""
    (height, width), _ = sizes.most_common(1)[0]
    scale = min(1.0, MAX_DEFAULT_SIDE / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _build(
    listing: Listing, image_size: tuple[int, int] | None, target: Path, progress: bool
) -> dict:
    """Decode every picture of the listing into ``target`` (a fresh folder); the manifest."""
    everything = [
        (part, path, label) for part, files in listing.parts.items() for path, label in files
    ]
    tasks = list(_chunks([path for _, path, _ in everything]))
    headers = [
        h
        for result in _run(_headers, tasks, len(everything), "reading headers", progress)
        for h in result
    ]
    skipped = [(str(h), path) for (_, path, _), h in zip(everything, headers) if isinstance(h, str)]
    readable = [(item, h) for item, h in zip(everything, headers) if not isinstance(h, str)]
    if not readable:
        raise DataError(f"{listing.root}: none of its {len(everything):,} pictures could be read")
    sizes = Counter((h[0], h[1]) for _, h in readable)
    size = image_size or default_size(sizes)
    colour = any(h[2] for _, h in readable)
    depth = 3 if colour else 1
    manifest = {
        "version": CACHE_VERSION,
        "classes": listing.classes,
        "size": list(size),
        "depth": depth,
        "sizes": {f"{h}x{w}": n for (h, w), n in sizes.most_common()},
        "ignored": listing.ignored,
        "parts": {},
    }
    failures: list[str] = [why for why, _ in skipped]
    for part in listing.parts:
        items = [(path, label) for (p, path, label), _ in readable if p == part]
        labels = np.array([label for _, label in items], np.int64)
        order = _interleaved(labels)
        array_path = target / f"{part}.npy"
        array = np.lib.format.open_memmap(array_path, "w+", np.uint8, (len(items), depth, *size))
        del array
        jobs = [(int(row), items[index][0]) for row, index in enumerate(order)]
        tasks = [(str(array_path), chunk, size, colour) for chunk in _chunks(jobs)]
        bad = [
            f
            for result in _run(_decode, tasks, len(jobs), f"decoding {part}", progress)
            for f in result
        ]
        failures += [why for _, why in bad]
        keep = np.ones(len(order), bool)
        keep[[row for row, _ in bad]] = False
        if not keep.all():
            _compact(array_path, keep)
        np.save(target / f"{part}-labels.npy", labels[order][keep])
        manifest["parts"][part] = int(keep.sum())
    manifest["skipped"] = failures
    return manifest


def _compact(array_path: Path, keep: np.ndarray) -> None:
    """Drop the rows of pictures that failed to decode, chunk by chunk."""
    old = np.load(array_path, mmap_mode="r")
    tmp = array_path.with_suffix(".tmp.npy")
    new = np.lib.format.open_memmap(tmp, "w+", np.uint8, (int(keep.sum()), *old.shape[1:]))
    kept = np.flatnonzero(keep)
    for start in range(0, len(kept), 4096):
        rows = kept[start : start + 4096]
        new[start : start + len(rows)] = old[rows]
    new.flush()
    del old, new
    os.replace(tmp, array_path)


def cached_folder(
    root: str | Path,
    image_size: tuple[int, int] | None = None,
    log: Callable[[str], None] = lambda message: None,
    progress: bool = False,
) -> tuple[Path, dict]:
    """The cache folder of a picture folder and its manifest, decoding it first if needed."""
    listing = list_folder(root)
    fingerprint = listing.fingerprint()
    folder = _cache_folder(listing.root, image_size)
    manifest_path = folder / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("fingerprint") == fingerprint:
            return folder, manifest
    except (OSError, ValueError):
        pass
    total = sum(len(files) for files in listing.parts.values())
    tmp = folder.with_name(folder.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        manifest = {**_build(listing, image_size, tmp, progress), "fingerprint": fingerprint}
        (tmp / "manifest.json").write_text(json.dumps(manifest))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # said once it worked: a folder that cannot be used gets its one-line error alone
    log(f"decoded {total:,} pictures of {listing.root} into {folder}")
    if manifest["skipped"]:
        skipped = manifest["skipped"]
        log(f"pictures skipped, unreadable: {len(skipped):,} (e.g. {skipped[0]})")
    return folder, manifest


def _notes(manifest: dict) -> list[str]:
    """What `cnnlab data info` says about a folder beyond its counts."""
    sizes = list(manifest["sizes"].items())
    shown = ", ".join(f"{size} ({count:,})" for size, count in sizes[:5])
    more = f" and {len(sizes) - 5} more" if len(sizes) > 5 else ""
    notes = [f"sizes found (height×width): {shown}{more}"]
    if manifest["ignored"]:
        notes.append(
            f"other files ignored (not PNG, JPEG, BMP or WebP by name): {manifest['ignored']:,}"
        )
    skipped = manifest["skipped"]
    if skipped:
        notes.append(f"pictures skipped, unreadable: {len(skipped):,}")
        notes += [f"  {why}" for why in skipped[:10]]
        notes += [f"  … and {len(skipped) - 10:,} more"] * (len(skipped) > 10)
    return notes


def _part(folder: Path, name: str) -> Part:
    try:
        images = np.load(folder / f"{name}.npy", mmap_mode="c")
        labels = np.load(folder / f"{name}-labels.npy")
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(
            f"{folder}: damaged cache ({exc}); delete the folder to rebuild it"
        ) from None
    if images.ndim != 4 or images.dtype != np.uint8 or labels.shape != (len(images),):
        raise DataError(f"{folder}: damaged cache; delete the folder to rebuild it")
    return Part.from_arrays(images, labels)


def load_folder(
    root: str | Path,
    image_size: tuple[int, int] | None = None,
    test_fraction: float = 0.2,
    log: Callable[[str], None] = lambda message: None,
    progress: bool = False,
) -> Dataset:
    """A picture folder as a ``Dataset`` (see the module doc), decoded and cached on first use."""
    if not 0 < test_fraction < 1:
        raise DataError(f"--test-fraction must be between 0 and 1, got {test_fraction}")
    folder, manifest = cached_folder(root, image_size, log, progress)
    parts = manifest["parts"]
    validation = _part(folder, "val") if "val" in parts else None
    if "all" in parts:
        everything = _part(folder, "all")
        n_test = round(test_fraction * len(everything))
        if not 1 <= n_test < len(everything):
            raise DataError(
                f"{root}: {len(everything):,} pictures cannot be split into train and test with"
                f" --test-fraction {test_fraction}"
            )
        train, test = everything.head(len(everything) - n_test), everything.tail(n_test)
    else:
        train = _part(folder, "train")
        if "test" not in parts:
            raise DataError(f"{root}: a train/ folder needs a test/ folder beside it")
        test = _part(folder, "test")
    notes = _notes(manifest)
    return Dataset(
        name=str(root),
        classes=manifest["classes"],
        train=train,
        test=test,
        source=f"pictures in {Path(root).resolve()} (cache {folder})",
        validation=validation,
        default_validation=0 if validation is not None else len(train) // 10,
        notes=notes,
    )
