"""How close training comes to the machine's arithmetic peak, for the chapter's networks.

    python benchmarks/efficiency.py                      # conv2 and dropout
    python benchmarks/efficiency.py fast --images 20000

First the peak: the median GFLOP/s of a large square matrix product (fp32, and
bf16 where the CPU has it), measured in the same run. Then, per preset and
setting (its own mini-batch in fp32, and mini-batch 128 in fp32 and bf16 with
channels-last), one epoch over ``--images`` training images through ``fit``,
timed as fit times it (evaluation excluded), extrapolated to the preset's full
epoch, and turned into achieved GFLOP/s. Training FLOPs per image are taken as
3 × the forward FLOPs of ``Network.summary()`` (forward, plus backward to the
inputs and to the weights), the usual estimate.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from cnnlab.data import load_splits
from cnnlab.network import Network
from cnnlab.precision import fast_bf16
from cnnlab.presets import get_preset
from cnnlab.train import TrainConfig, fit, new_network

PEAK_SIDE = 2048


def matmul_gflops(dtype: torch.dtype, rounds: int = 10) -> float:
    a = torch.randn(PEAK_SIDE, PEAK_SIDE).to(dtype)
    b = torch.randn(PEAK_SIDE, PEAK_SIDE).to(dtype)
    a @ b  # warm-up
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - started)
    return 2 * PEAK_SIDE**3 / statistics.median(times) / 1e9


def matmul_peaks() -> dict[str, float]:
    """The fp32 peak, and the bf16 one where the CPU has bf16 natively: emulated bf16 takes
    minutes for one product and is not a peak of anything."""
    peaks = {"fp32": matmul_gflops(torch.float32)}
    if fast_bf16(torch.device("cpu")):
        peaks["bf16"] = matmul_gflops(torch.bfloat16)
    return peaks


def describe_peaks(peaks: dict[str, float]) -> str:
    text = ", ".join(f"{kind} {gflops:,.0f} GFLOP/s" for kind, gflops in peaks.items())
    return text if "bf16" in peaks else text + ", bf16 not native on this CPU (not measured)"


def training_flops_per_image(preset: str) -> int:
    network = Network.from_spec(get_preset(preset).spec())
    return 3 * sum(row.flops for row in network.summary_rows())


def epoch_time(preset: str, images: int, changes: dict) -> tuple[float, int, int]:
    """(seconds for ``images`` images, images actually stepped through, full-epoch images)."""
    settings = {**get_preset(preset).settings, "epochs": 1, "train_subset": images, **changes}
    config = TrainConfig.from_dict(settings).check()
    data = load_splits(config.dataset, config.split, config.validation, config.train_subset)
    full = load_splits(config.dataset, config.split, config.validation)
    per_epoch = len(full.train) * (5 if config.expand else 1)
    result = fit(
        new_network(get_preset(preset).spec(), config),
        data,
        config,
        progress=False,
        log=lambda _: None,
    )
    stepped = len(data.train) * (5 if config.expand else 1) // config.batch_size * config.batch_size
    return result.history[0]["train_seconds"], stepped, per_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("presets", nargs="*", default=["conv2", "dropout"])
    parser.add_argument("--images", type=int, default=10_000, help="training images timed")
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads,"
        f" CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    peaks = matmul_peaks()
    print(f"matmul peak ({PEAK_SIDE}×{PEAK_SIDE}): {describe_peaks(peaks)}")
    print(f"\n{'preset':<10}{'setting':<34}{'epoch':>10}{'GFLOP/s':>10}{'of peak':>9}")
    for preset in args.presets:
        flops = training_flops_per_image(preset)
        own = get_preset(preset).settings.get("batch_size", 10)
        settings = [
            (f"mini-batch {own}, fp32", {}, "fp32"),
            (
                "mini-batch 128, fp32, channels-last",
                {"batch_size": 128, "channels_last": True},
                "fp32",
            ),
            (
                "mini-batch 128, bf16, channels-last",
                {"batch_size": 128, "channels_last": True, "precision": "bf16"},
                "bf16",
            ),
        ]
        for label, changes, kind in settings:
            if kind not in peaks:  # bf16 emulated: its time would say nothing about the network
                continue
            seconds, stepped, per_epoch = epoch_time(preset, args.images, changes)
            gflops = flops * stepped / seconds / 1e9
            print(
                f"{preset:<10}{label:<34}{seconds * per_epoch / stepped:>8.1f} s"
                f"{gflops:>10.1f}{gflops / peaks[kind]:>9.1%}",
                flush=True,
            )
    print(
        f"\nepoch = the preset's full epoch ({'/'.join(args.presets)}), extrapolated from"
        f" {args.images:,} training images; training FLOPs = 3 × forward FLOPs"
    )


if __name__ == "__main__":
    main()
