"""Training throughput of the colour-picture recipes, on pictures of CIFAR-10's shape.

    python benchmarks/pictures.py                      # cifar10, 3 rounds of 2,048 pictures
    python benchmarks/pictures.py --preset pictures --images 4096 --rounds 5
    python benchmarks/pictures.py --threads 1

CIFAR-10 itself cannot be fetched on every machine, and throughput does not
depend on what the pictures show, so the pictures here are random 3×32×32
uint8 in 10 classes. Each round trains one epoch over ``--images`` of them
through ``fit`` with the preset's own settings (its mini-batch, precision,
augmentation), timed as ``fit`` times it (evaluation excluded), after one
warm-up round. It prints the median images/s, the achieved GFLOP/s (training
FLOPs per image taken as 3 × the forward FLOPs of ``Network.summary()``) and
the machine's matrix-product peak in fp32 and bf16, measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from efficiency import describe_peaks, matmul_peaks

from cnnlab.config import TrainConfig
from cnnlab.data import Part, Splits
from cnnlab.network import Network
from cnnlab.presets import get_preset
from cnnlab.train import fit, network_spec, new_network


def random_pictures(count: int, classes: int = 10) -> Splits:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, classes, (count,), generator=generator)
    test = Part(images[:256], labels[:256])
    return Splits(Part(images, labels), None, test, "random 3×32×32", [str(i) for i in range(10)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cifar10")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: one per core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = get_preset(args.preset)
    config = TrainConfig.from_dict({**preset.settings, "epochs": 1, "tta": "none"}).check()
    data = random_pictures(args.images)
    spec = network_spec(preset.layers(), data, config, fit_output=True)
    flops = 3 * sum(row.flops for row in Network.shapes_only(spec).summary_rows())
    seconds = []
    for round_ in range(args.rounds + 1):
        result = fit(new_network(spec, config), data, config, progress=False, log=lambda _: None)
        if round_:  # the first round warms up
            seconds.append(result.train_seconds)
    stepped = args.images // config.batch_size * config.batch_size
    per_second = stepped / statistics.median(seconds)
    print(
        f"{args.preset} ({preset.arch}), mini-batch {config.batch_size}, {config.precision},"
        f" augment {config.augment}, {torch.get_num_threads()} threads"
    )
    print(
        f"training: {per_second:,.0f} pictures/s (median of {args.rounds} epochs of"
        f" {stepped:,}: {', '.join(f'{s:.2f}' for s in seconds)} s),"
        f" {per_second * flops / 1e9:,.0f} GFLOP/s at {flops / 1e6:,.0f} MFLOP per picture"
    )
    print(f"peak in the same run (2048² matrix product): {describe_peaks(matmul_peaks())}")
    print(f"one epoch of CIFAR-10's 50,000 pictures: about {50_000 / per_second / 60:.1f} min")


if __name__ == "__main__":
    main()
