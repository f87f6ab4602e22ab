"""Where one training step of a preset goes: data, each layer's kernels, loss, optimizer, the rest.

    python benchmarks/step_profile.py                 # fast, at its own mini-batch
    python benchmarks/step_profile.py fast-long --rounds 9

The whole step is timed as ``fit`` runs it (a real epoch through ``fit``, divided
by its steps) and as a replica of its loop body. Then each part alone, at the
preset's mini-batch, precision and layout:

- **data**: gathering a shuffled mini-batch from the uint8 images and making it
  floats in [0, 1] (plus the preset's random distortions, if any);
- **each layer**: its forward and backward pass on an input of its real shape,
  with its achieved GFLOP/s (training FLOPs = 3 × forward FLOPs);
- **loss**: softmax, cross-entropy and their gradient;
- **optimizer**: one SGD update of every parameter;
- **the rest** is the full step less the parts: autograd's bookkeeping between
  layers, autocast's weight casts and Python.

It also times the step at a mini-batch of 8, where arithmetic is negligible: the
fixed cost of a step. Every figure is the median of ``--rounds`` timings, after
a warm-up; the matrix-product peak of this machine is measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from functools import partial

import torch
from efficiency import describe_peaks, matmul_peaks
from timing import at_least_one, median_seconds
from torch import Tensor

from cnnlab.augment import CHAPTER_SHIFTS, augmenter
from cnnlab.data import load_splits
from cnnlab.layers import Layer
from cnnlab.precision import autocast, resolve
from cnnlab.presets import PRESETS, get_preset
from cnnlab.train import TrainConfig, fit, make_optimizer, network_spec, new_network

CPU = torch.device("cpu")
CALLS = 20  # per timing, after as many untimed
timed = partial(median_seconds, warmup=CALLS, calls=CALLS)


class Profile:
    """The parts of one training step of ``config``'s network, each callable on its own."""

    def __init__(self, preset: str, config: TrainConfig) -> None:
        self.config = config
        self.data = load_splits("mnist", "standard", 0)
        spec = network_spec(get_preset(preset).layers(), self.data, config, fit_output=True)
        self.network = new_network(spec, config).use_channels_last(config.channels_last)
        steps_per_epoch = len(self.data.train) // config.batch_size
        self.optimizer = make_optimizer(self.network, config, steps_per_epoch)
        self.augment = augmenter(config.augment)
        self.images, self.labels = self.data.train.images, self.data.train.labels

    def batch(self, size: int) -> tuple[Tensor, Tensor]:
        index = torch.randint(0, len(self.labels), (size,))
        x = self.images[index].float().div_(255)
        return (x if self.augment is None else self.augment(x)), self.labels[index]

    def step(self, size: int) -> None:
        """What fit does per step, without its bookkeeping."""
        x, y = self.batch(size)
        with autocast(CPU, self.config.precision):
            logits = self.network(x)
        loss = self.network.ops.softmax_cross_entropy(
            logits.float(), y, self.config.label_smoothing
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def layer_inputs(self, size: int) -> list[tuple[Layer, Tensor]]:
        """Every layer with an input of its real shape, dtype and layout (detached)."""
        captured: list[tuple[Layer, Tensor]] = []
        hooks = [
            layer.register_forward_pre_hook(
                lambda module, inputs: captured.append((module, inputs[0].detach()))
            )
            for layer in self.network.layers
        ]
        with autocast(CPU, self.config.precision):
            self.network(self.batch(size)[0])
        for hook in hooks:
            hook.remove()
        return captured

    def layer_pass(self, layer: Layer, x: Tensor, first: bool) -> Callable[[], None]:
        """Forward and backward through one layer: to its parameters, and to its input unless it
        is the first (the gradients are returned, not added up across calls)."""
        x = x if first else x.clone().requires_grad_()
        wrt = [*layer.parameters(), *([] if first else [x])]
        with autocast(CPU, self.config.precision):
            gradient = torch.randn_like(layer(x))

        def run() -> None:
            with autocast(CPU, self.config.precision):
                out = layer(x)
            torch.autograd.grad(out, wrt, gradient)

        return run

    def loss_pass(self, size: int) -> Callable[[], None]:
        logits = torch.randn(size, self.network.classes, requires_grad=True)
        y = self.labels[:size]

        def run() -> None:
            cost = self.network.ops.softmax_cross_entropy(logits, y, self.config.label_smoothing)
            torch.autograd.grad(cost, [logits])

        return run

    def optimizer_step(self) -> Callable[[], None]:
        self.step(self.config.batch_size)  # every parameter has a gradient and a momentum
        return self.optimizer.step


def fit_step_seconds(preset: str, config: TrainConfig, data_images: int) -> float:
    """The mean step of a real ``fit`` epoch over ``data_images`` training images (five times
    as many for a preset on the expanded data)."""
    data = load_splits("mnist", "standard", 0, train_subset=data_images)
    spec = network_spec(get_preset(preset).layers(), data, config, fit_output=True)
    result = fit(new_network(spec, config), data, config, progress=False, log=lambda _: None)
    images = data_images * (1 + len(CHAPTER_SHIFTS)) if config.expand else data_images
    return result.history[0]["train_seconds"] / (images // config.batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mnist = [name for name, p in PRESETS.items() if p.settings.get("dataset", "mnist") == "mnist"]
    parser.add_argument("preset", nargs="?", default="fast", choices=mnist)
    parser.add_argument("--rounds", type=at_least_one, default=7, help="timings per figure")
    parser.add_argument("--images", type=at_least_one, default=30_000, help="of the fit epoch")
    args = parser.parse_args()
    batch_size = get_preset(args.preset).settings.get("batch_size", 10)
    if args.images < batch_size:
        parser.error(f"--images {args.images}: less than one mini-batch of {batch_size}")
    settings = {**get_preset(args.preset).settings, "epochs": 1, "validation": 0}
    config = TrainConfig.from_dict({**settings, "split": "standard"}).check()
    size, precision = config.batch_size, resolve(config.precision, CPU)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.preset}:"
        f" mini-batch {size}, {precision}, channels-last {config.channels_last}"
    )
    peak = matmul_peaks()
    print(f"matmul peak: {describe_peaks(peak)}\n")

    fit_step = statistics.median(
        fit_step_seconds(args.preset, config, args.images) for _ in range(3)
    )
    profile = Profile(args.preset, config)
    whole = timed(lambda: profile.step(size), args.rounds)
    fixed = timed(lambda: profile.step(8), args.rounds)
    parts: list[tuple[str, float, int]] = [
        ("data: gather, to floats" + (", distort" if profile.augment else ""),
         timed(lambda: profile.batch(size), args.rounds), 0),
    ]  # fmt: skip
    for i, (layer, x) in enumerate(profile.layer_inputs(size)):
        seconds = timed(profile.layer_pass(layer, x, first=i == 0), args.rounds)
        parts.append((f"layer {i + 1}: {layer.describe()}", seconds, 3 * layer.flops() * size))
    parts.append(("loss: softmax, cross-entropy", timed(profile.loss_pass(size), args.rounds), 0))
    parts.append(("optimizer: SGD update", timed(profile.optimizer_step(), args.rounds), 0))
    rest = whole - sum(s for _, s, _ in parts)

    print(f"one step as fit runs it: {fit_step * 1e3:.2f} ms (an epoch of {args.images:,})")
    print(
        f"one step, the loop body alone: {whole * 1e3:.2f} ms;"
        f" at mini-batch 8: {fixed * 1e3:.2f} ms"
    )
    print(f"\n{'part':<58}{'ms':>8}{'share':>8}{'GFLOP/s':>10}{'of peak':>9}")
    for name, seconds, flops in parts:
        rate = f"{flops / seconds / 1e9:>10.0f}{flops / seconds / 1e9 / peak[precision]:>9.0%}"
        print(f"{name:<58}{seconds * 1e3:>8.2f}{seconds / whole:>8.0%}{rate if flops else ''}")
    if rest > 0:
        print(
            f"{'the rest: autograd between layers, casts, Python':<58}"
            f"{rest * 1e3:>8.2f}{rest / whole:>8.0%}"
        )
    else:  # each part alone pays its own launch costs, which the whole step shares
        print(f"(the parts alone add up to {1 - rest / whole:.0%} of the step: no rest to show)")
    total_flops = sum(f for _, _, f in parts)
    rate = total_flops / whole / 1e9
    shares = ", ".join(f"{rate / gflops:.0%} of the {kind} peak" for kind, gflops in peak.items())
    print(
        f"\nthe whole step: {total_flops / 1e9:.2f} GFLOP in {whole * 1e3:.2f} ms = {rate:.0f}"
        f" GFLOP/s, {shares}"
    )
    print(f"medians of {args.rounds} timings of {CALLS} calls each, after {CALLS} warm-up calls")


if __name__ == "__main__":
    main()
