"""What each ingredient of the ``fast`` recipe is worth: leave one out, measure time and accuracy.

    python benchmarks/tricks.py              # 3 seeds per variant (~3 min)
    python benchmarks/tricks.py --seeds 5

Each variant is the ``fast`` preset (one epoch over all 60,000 training images)
with one thing changed; it is trained ``--seeds`` times after an untimed
warm-up, and the script prints the median training time (evaluation excluded),
the median and lowest test accuracy, and the change against the full recipe
measured in the same run. The last line measures what a DataLoader would add:
the time to fetch one epoch of shuffled batches through
``torch.utils.data.DataLoader`` against slicing tensors already in memory.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from cnnlab.arch import parse_arch
from cnnlab.data import Splits, load_splits
from cnnlab.errors import CnnlabError
from cnnlab.presets import get_preset
from cnnlab.train import TrainConfig, fit, new_network

FAST = get_preset("fast")
OLD_FAST = "conv20x5-bn-pool2-conv40x5-bn-pool2-fc100-softmax10"  # the earlier default network
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("the full fast recipe", {}),
    ("fp32 instead of bf16", {"precision": "fp32"}),
    ("no channels-last", {"channels_last": False}),
    ("fp32 and no channels-last", {"precision": "fp32", "channels_last": False}),
    ("no test-time shifts", {"tta": "none"}),
    ("constant η instead of one-cycle", {"schedule": "constant", "lr": 0.05}),
    ("no label smoothing", {"label_smoothing": 0.0}),
    ("no momentum", {"momentum": 0.0, "nesterov": False, "lr": 0.8}),
    ("mini-batch 128", {"batch_size": 128, "lr": 0.2}),
    ("mini-batch 512", {"batch_size": 512, "lr": 0.6}),
    ("no batch norm", {"arch": FAST.arch.replace("-bn", ""), "lr": 0.1}),
    ("pool after σ, not before", {"arch": "conv16x5s2-bn-conv32x3-pool2-bn-fc64-softmax10"}),
    ("the earlier, larger fast network", {"arch": OLD_FAST, "batch_size": 128, "lr": 0.1}),
    ("1 thread instead of 2", {"threads": 1}),
]


def train_once(changes: dict[str, Any], seed: int, data: Splits) -> tuple[float, float]:
    settings = {**FAST.settings, **changes, "seed": seed}
    spec = {"input": [1, 28, 28], "layers": parse_arch(settings.pop("arch", FAST.arch))}
    threads = settings.pop("threads", torch.get_num_threads())
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        config = TrainConfig.from_dict(settings).check()
        result = fit(new_network(spec, config), data, config, progress=False, log=lambda _: None)
    finally:
        torch.set_num_threads(before)
    return result.history[0]["train_seconds"], result.test_accuracy


def fetch_seconds(data: Splits, batch_size: int, loader: bool) -> float:
    """Time to produce one epoch of shuffled (images, labels) batches, nothing else."""
    x = data.train.images.float().div(255)
    y = data.train.labels
    started = time.perf_counter()
    if loader:
        dataset = TensorDataset(x, y)
        for _ in DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True):
            pass
    else:
        order = torch.randperm(len(y))
        for start in range(0, len(y) - batch_size + 1, batch_size):
            index = order[start : start + batch_size]
            x[index], y[index]
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    data = load_splits("mnist", "standard", 0)
    warm_up = load_splits("mnist", "standard", 0, train_subset=2048)
    rows = []
    for name, changes in VARIANTS:
        train_once(changes, 0, warm_up)  # oneDNN builds kernels for new shapes: not timed
        try:
            runs = [train_once(changes, seed, data) for seed in range(args.seeds)]
        except CnnlabError as exc:  # a variant whose η is too large for it
            print(f"{name:<38} {exc}")
            continue
        seconds = statistics.median(r[0] for r in runs)
        accuracies = [r[1] for r in runs]
        rows.append((name, seconds, statistics.median(accuracies), min(accuracies)))
        full_seconds, full_accuracy = rows[0][1], rows[0][2]
        print(
            f"{name:<38} {seconds:6.2f} s ({seconds / full_seconds:4.2f}×)"
            f"  test {rows[-1][2]:.2%} (lowest {rows[-1][3]:.2%},"
            f" {100 * (rows[-1][2] - full_accuracy):+.2f} points)",
            flush=True,
        )
    batch = FAST.settings["batch_size"]
    loader, sliced = (
        statistics.median(fetch_seconds(data, batch, loader) for _ in range(3))
        for loader in (True, False)
    )
    print(
        f"\nfetching one epoch of batches of {batch}: DataLoader {loader:.2f} s,"
        f" slicing resident tensors {sliced:.2f} s"
    )
    print(f"medians over {args.seeds} seeds; one epoch of 60,000 images; evaluation not timed")


if __name__ == "__main__":
    main()
