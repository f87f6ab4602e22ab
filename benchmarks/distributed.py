"""Data-parallel training on one machine, and what communication would cost on many.

    python benchmarks/distributed.py                 # fast, 3 seeds each way (~3 min)
    python benchmarks/distributed.py --seeds 5 --preset fast

Part 1 trains ``--preset`` with ``cnnlab train`` as a user would, alternating
two ways of using this machine's cores, seed by seed: one process with all
threads, and ``--processes N`` (N processes of cores/N threads, gloo). It
reports, per way, the median training time (from metrics.jsonl: training
steps only), training images per second, the test accuracy, the median wall
clock of the whole command, and the ratio one/N measured seed by seed.

Part 2 says when communication would dominate on a cluster. Per step, data
parallelism all-reduces every gradient (4 bytes a parameter, fp32); a ring
all-reduce sends 2·(N−1)/N of those bytes from each process, plus the batch-norm
sums (3 numbers a channel, forward and backward) and running averages (2 a
channel, broadcast before each forward). The compute time of a step
is measured here (one process, all threads, the preset's mini-batch and
precision, on random inputs of the preset's shape); on N such machines each
computes 1/N of it. Communication dominates below the bandwidth at which
sending takes as long as computing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from cnnlab.config import TrainConfig
from cnnlab.layers import BatchNorm
from cnnlab.presets import get_preset
from cnnlab.train import make_optimizer, new_network

PRESETS = ("fast", "fast-long", "best", "fashion", "fashion-best", "cifar10")
INPUT = {"cifar10": (3, 32, 32)}


def train_once(preset: str, seed: int, processes: int, folder: Path) -> dict[str, float]:
    out = folder / f"{preset}-{processes}-{seed}"
    command = [
        sys.executable,
        "-m",
        "cnnlab",
        "train",
        "--preset",
        preset,
        "--seed",
        str(seed),
        "--out",
        str(out),
        "--quiet",
    ]
    threads = os.cpu_count() or 1
    env = dict(os.environ)
    if processes > 1:
        command += ["--processes", str(processes)]
        env["OMP_NUM_THREADS"] = str(max(1, threads // processes))
    else:
        env["OMP_NUM_THREADS"] = str(threads)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    seconds = sum(row["train_seconds"] for row in rows)
    last = done.stdout.strip().splitlines()[-1]
    return {
        "train_seconds": seconds,
        "wall_seconds": wall,
        "test": rows[-1]["test_accuracy"],
        "images": 60_000 * len(rows),
        "line": last,
    }


def part_one(preset: str, seeds: int, processes: int) -> None:
    cores = os.cpu_count() or 1
    ways = {
        1: f"1 process × {cores} threads",
        processes: f"{processes} processes × {max(1, cores // processes)} thread(s)",
    }
    results: dict[int, list[dict[str, float]]] = {1: [], processes: []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(seeds):
            for n in (1, processes):
                r = train_once(preset, seed, n, Path(tmp))
                results[n].append(r)
                print(
                    f"  seed {seed}, {ways[n]}: training {r['train_seconds']:.2f} s, test"
                    f" {r['test']:.2%}, whole command {r['wall_seconds']:.1f} s",
                    flush=True,
                )
    for n, rows in results.items():
        secs = statistics.median(r["train_seconds"] for r in rows)
        rate = statistics.median(r["images"] / r["train_seconds"] for r in rows)
        reached = sum(r["test"] >= 0.99 for r in rows)
        print(
            f"{preset}, {ways[n]}: median training {secs:.2f} s ({rate:,.0f} images/s), test"
            f" {statistics.median(r['test'] for r in rows):.2%} (≥ 99.0% in {reached} of"
            f" {len(rows)}), median whole command"
            f" {statistics.median(r['wall_seconds'] for r in rows):.1f} s"
        )
    ratios = [a["train_seconds"] / b["train_seconds"] for a, b in zip(*results.values())]
    print(
        f"training time, 1 process / {processes} processes, seed by seed: median"
        f" {statistics.median(ratios):.2f} (range {min(ratios):.2f}–{max(ratios):.2f})"
    )


def step_seconds(preset: str, steps: int = 8) -> tuple[float, int, int, int]:
    """Median seconds of one training step; parameters; batch-norm channels; mini-batch."""
    p = get_preset(preset)
    shape = INPUT.get(preset, (1, 28, 28))
    config = TrainConfig.from_dict({**p.settings, "device": "cpu"})
    network = new_network(p.spec(shape), config).use_channels_last(config.channels_last)
    optimizer = make_optimizer(network, config, 100)
    x = torch.rand(config.batch_size, *shape)
    y = torch.randint(0, network.classes, (config.batch_size,))
    times = []
    for _ in range(steps + 2):
        started = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16, enabled=config.precision != "fp32"):
            logits = network(x)
        loss = network.ops.softmax_cross_entropy(logits.float(), y, config.label_smoothing)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    parameters = sum(q.numel() for q in network.parameters())
    channels = sum(m.in_shape[0] for m in network.modules() if isinstance(m, BatchNorm))
    return statistics.median(times[2:]), parameters, channels, config.batch_size


def part_two(presets: list[str], processes: list[int]) -> None:
    print("\ncommunication per step against computation (step times measured here, 1 process):")
    print(
        f"{'preset':<13}{'batch':>6}{'parameters':>12}{'step':>10}"
        + "".join(f"{f'sent/step N={n}':>17}{f'dominates N={n}':>18}" for n in processes)
    )
    for preset in presets:
        seconds, parameters, channels, batch = step_seconds(preset)
        cells = []
        for n in processes:
            # gradients (ring all-reduce), batch-norm sums (3 a channel, forward and backward),
            # running averages broadcast before each forward (2 a channel)
            sent = 2 * (n - 1) / n * 4 * parameters + 4 * channels * (3 * 2 + 2)
            bandwidth = sent / (seconds / n)  # bytes/s at which sending takes as long as computing
            cells.append(f"{sent / 1e6:>14.2f} MB{bandwidth * 8 / 1e9:>12.2f} Gbit/s")
        print(
            f"{preset:<13}{batch:>6}{parameters:>12,}{seconds * 1e3:>8.1f} ms"
            + "".join(f"{c:>35}" for c in cells)
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--skip-training", action="store_true", help="part 2 only")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {os.cpu_count()} cores")
    if not args.skip_training:
        part_one(args.preset, args.seeds, args.processes)
    part_two(list(PRESETS), [2, 8])


if __name__ == "__main__":
    main()
