"""Accuracy and training time of cnnlab's presets, measured on this machine.

    python benchmarks/presets.py fast --seeds 5
    python benchmarks/presets.py conv2-relu            # the chapter's settings: 60 epochs
    python benchmarks/presets.py conv2-relu --faithful
    python benchmarks/presets.py fashion --seeds 3

For each preset and seed it trains with the preset's own settings (the chapter's
for the chapter's rows) and prints the test accuracy at the best-validation
epoch (the chapter's protocol), the wall time of training (evaluation excluded)
and, per preset, the median and range over seeds beside the published figure.
Results are also written as JSON (--json FILE).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from cnnlab.config import TrainConfig
from cnnlab.data import load_splits
from cnnlab.presets import get_preset
from cnnlab.train import fit, network_spec, new_network


def run(name: str, seed: int, faithful: bool, epochs: int | None) -> dict:
    preset = get_preset(name)
    settings = {**preset.settings, "seed": seed, "faithful": faithful}
    if epochs is not None:
        settings["epochs"] = epochs
    config = TrainConfig.from_dict(settings)
    data = load_splits(**config.data_options())
    network = new_network(network_spec(preset.layers(), data, config, fit_output=True), config)
    started = time.perf_counter()
    result = fit(network, data, config, progress=False, log=lambda line: None)
    wall = time.perf_counter() - started
    return {"preset": name, "seed": seed, "faithful": faithful, "epochs": config.epochs,
            "test_accuracy": result.test_accuracy, "best_epoch": result.best_epoch,
            "train_seconds": result.train_seconds, "wall_seconds": wall}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("presets", nargs="+")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--faithful", action="store_true")
    parser.add_argument("--epochs", type=int, help="override the preset's epochs (quick looks)")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = []
    for name in args.presets:
        for seed in range(args.seeds):
            row = run(name, seed, args.faithful, args.epochs)
            rows.append(row)
            print(f"{name:<12} seed {seed}: test {row['test_accuracy']:.2%} (epoch"
                  f" {row['best_epoch']}/{row['epochs']}), training {row['train_seconds']:.1f} s",
                  flush=True)  # fmt: skip
        accs = [r["test_accuracy"] for r in rows if r["preset"] == name]
        secs = [r["train_seconds"] for r in rows if r["preset"] == name]
        published = get_preset(name).published
        print(
            f"{name:<12} median test {statistics.median(accs):.2%},"
            f" mean {statistics.fmean(accs):.2%} (range {min(accs):.2%}–"
            f"{max(accs):.2%}), median training {statistics.median(secs):.1f} s over"
            f" {len(accs)} seeds" + (f"; published {published:.2%}" if published else "")
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
