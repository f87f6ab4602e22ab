"""Time to a test accuracy on MNIST: cnnlab against the classic PyTorch example, in one run.

    python benchmarks/time_to_accuracy.py                  # the full comparison (~30 min)
    python benchmarks/time_to_accuracy.py --quick          # one seed each, short runs

Every contestant trains on the standard split (all 60,000 training images) and
is evaluated on the 10,000 test images every ``--eval-every`` training images
(and at the end of each epoch). Training time is wall-clock time spent in
training steps; evaluation is off the clock and reported separately. For each
target accuracy the script reports the first training time at which the test
accuracy reached it: median and range over seeds, how many seeds got there, and
the ratio baseline / cnnlab computed seed by seed (seed i against seed i).

Contestants:
  fast          cnnlab's default preset, as ``cnnlab train`` runs it
  fast-long     cnnlab's preset for 99.5%: the fast network with four times the fc units,
                random affine distortions, 4 epochs
  pytorch-mnist the model, optimiser and schedule of PyTorch's classic MNIST example
                (github.com/pytorch/examples, mnist/main.py): conv 32×3×3, conv 64×3×3,
                max-pool 2, dropout 0.25, FC-128, dropout 0.5, Adadelta lr 1.0, StepLR γ 0.7,
                batch 64, inputs normalised with mean 0.1307 and std 0.3081. Re-implemented
                here with the data resident as tensors (no DataLoader), which makes it
                faster than the original, never slower.
  conv2-relu    the chapter's preset (mini-batch 10, η 0.03, λ 0.1), capped in epochs
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnlab.data import Splits, load_splits
from cnnlab.predict import accuracy
from cnnlab.presets import get_preset
from cnnlab.train import StepHook, TrainConfig, fit, new_network

TARGETS = (0.98, 0.99, 0.992, 0.995)
WARM_UP_IMAGES = 2048


@dataclass
class Trace:
    """(training seconds, test accuracy) at each evaluation of one run."""

    contestant: str
    seed: int
    points: list[tuple[float, float]] = field(default_factory=list)
    eval_seconds: float = 0.0

    def first_reach(self, target: float) -> float | None:
        return next((t for t, acc in self.points if acc >= target), None)


Runner = Callable[[int, Splits], Trace]


class _Evaluator:
    """Measures test accuracy off the training clock and records it in a trace."""

    def __init__(self, trace: Trace, measure: Callable[[], float]) -> None:
        self.trace, self.measure = trace, measure

    def __call__(self, _step: int, train_seconds: float) -> None:
        started = time.perf_counter()
        self.trace.points.append((train_seconds, self.measure()))
        self.trace.eval_seconds += time.perf_counter() - started


def run_cnnlab(
    name: str, preset: str, seed: int, data: Splits, eval_every: int, epochs: int | None
) -> Trace:
    settings = {**get_preset(preset).settings, "seed": seed, "split": "standard", "validation": 0}
    if epochs is not None:
        settings["epochs"] = epochs
    config = TrainConfig.from_dict(settings).check()
    network = new_network(get_preset(preset).spec(), config)
    trace = Trace(name, seed)
    evaluate = _Evaluator(trace, lambda: accuracy(network, data.test, config.precision, config.tta))
    steps = max(1, eval_every // config.batch_size)
    result = fit(
        network, data, config, progress=False, log=lambda _: None, every=StepHook(steps, evaluate)
    )
    elapsed = sum(row["train_seconds"] for row in result.history)
    trace.points.append((elapsed, result.history[-1]["test_accuracy"]))
    trace.eval_seconds += sum(row["eval_seconds"] for row in result.history)
    return trace


class PyTorchExampleNet(nn.Module):
    """The network of PyTorch's classic MNIST example, layer for layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        x = self.dropout1(F.max_pool2d(x, 2)).flatten(1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)


def run_pytorch_example(seed: int, data: Splits, eval_every: int, epochs: int) -> Trace:
    """The example's training loop (batch 64, Adadelta, StepLR each epoch), timed like fit()."""
    torch.manual_seed(seed)
    normalise = lambda images: (images.float() / 255 - 0.1307) / 0.3081  # noqa: E731
    x, y = normalise(data.train.images), data.train.labels
    test_x, test_y = normalise(data.test.images), data.test.labels
    model = PyTorchExampleNet()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    batch, trace, clock, step = 64, Trace("pytorch-mnist", seed), 0.0, 0

    @torch.inference_mode()
    def test_accuracy() -> float:
        model.eval()
        hits = sum(
            (model(test_x[i : i + 1000]).argmax(1) == test_y[i : i + 1000]).sum().item()
            for i in range(0, len(test_y), 1000)
        )
        model.train()
        return hits / len(test_y)

    evaluate = _Evaluator(trace, test_accuracy)
    every = max(1, eval_every // batch)
    for _ in range(epochs):
        started = time.perf_counter()
        order = torch.randperm(len(y))
        for start in range(0, len(y), batch):
            index = order[start : start + batch]
            optimizer.zero_grad()
            F.nll_loss(model(x[index]), y[index]).backward()
            optimizer.step()
            step += 1
            if step % every == 0:
                clock += time.perf_counter() - started
                evaluate(step, clock)
                started = time.perf_counter()
        scheduler.step()
        clock += time.perf_counter() - started
        evaluate(step, clock)
        if trace.points[-1][1] >= TARGETS[-1]:
            break
    return trace


def summarise(traces: list[Trace], baseline: str) -> dict:
    """Per contestant and target: median, range and seeds reaching it; ratios against baseline."""
    by_name: dict[str, list[Trace]] = {}
    for trace in traces:
        by_name.setdefault(trace.contestant, []).append(trace)
    summary: dict[str, dict] = {}
    for name, runs in by_name.items():
        rows = {}
        for target in TARGETS:
            times = [t for t in (run.first_reach(target) for run in runs) if t is not None]
            row = {"reached": len(times), "seeds": len(runs)}
            if times:
                row.update(median=statistics.median(times), min=min(times), max=max(times))
            reference = {r.seed: r.first_reach(target) for r in by_name.get(baseline, [])}
            ratios = [
                reference[run.seed] / mine
                for run in runs
                if (mine := run.first_reach(target)) and reference.get(run.seed)
            ]
            if ratios and name != baseline:
                row.update(
                    ratio_median=statistics.median(ratios),
                    ratio_min=min(ratios),
                    ratio_max=max(ratios),
                    ratio_pairs=len(ratios),
                )
            rows[f"{target:.1%}"] = row
        final = [run.points[-1][1] for run in runs]
        summary[name] = {
            "targets": rows,
            "final_accuracy_median": statistics.median(final),
            "final_accuracy_min": min(final),
            "training_seconds_median": statistics.median(run.points[-1][0] for run in runs),
            "eval_seconds_median": statistics.median(run.eval_seconds for run in runs),
        }
    return summary


def print_table(summary: dict, baseline: str) -> None:
    ratio = f"; ratio = {baseline} / contestant, seed by seed" if baseline in summary else ""
    print(f"\ntime to first reach each test accuracy (median [min–max] over seeds{ratio})")
    header = f"{'contestant':<14}" + "".join(f"{f'{t:.1%}':>30}" for t in TARGETS)
    print(header + f"{'final acc.':>14}{'eval s':>8}")
    for name, entry in summary.items():
        cells = []
        for target in TARGETS:
            row = entry["targets"][f"{target:.1%}"]
            if not row["reached"]:
                cells.append("not reached")
                continue
            text = f"{row['median']:.1f} s [{row['min']:.1f}–{row['max']:.1f}]"
            if row["reached"] < row["seeds"]:
                text += f" {row['reached']}/{row['seeds']}"
            if "ratio_median" in row:
                text += f" ×{row['ratio_median']:.0f}"
            cells.append(text)
        print(
            f"{name:<14}"
            + "".join(f"{c:>30}" for c in cells)
            + f"{entry['final_accuracy_median']:>13.2%}{entry['eval_seconds_median']:>8.1f}"
        )


CONTESTANTS = ("fast", "fast-long", "pytorch-mnist", "conv2-relu")


def contestants(args: argparse.Namespace) -> list[tuple[str, int, Runner]]:
    """(name, seeds, run(seed, data)) of everything raced, in the order they run."""
    every = args.eval_every
    return [
        ("fast", args.fast_seeds, lambda s, d: run_cnnlab("fast", "fast", s, d, every, None)),
        (
            "fast-long",
            args.seeds,
            lambda s, d: run_cnnlab("fast-long", "fast-long", s, d, every, args.long_epochs),
        ),
        (
            "pytorch-mnist",
            args.seeds,
            lambda s, d: run_pytorch_example(s, d, every, args.baseline_epochs),
        ),
        (
            "conv2-relu",
            args.seeds,
            lambda s, d: run_cnnlab("conv2-relu", "conv2-relu", s, d, every, args.conv2_epochs),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast-seeds", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the other contestants")
    parser.add_argument("--eval-every", type=int, default=5_000, metavar="IMAGES")
    parser.add_argument("--long-epochs", type=int, help="epochs of fast-long (default its own)")
    parser.add_argument("--baseline-epochs", type=int, default=6)
    parser.add_argument("--conv2-epochs", type=int, default=6, help="epochs of conv2-relu")
    parser.add_argument("--quick", action="store_true", help="1 seed each, 1 epoch")
    parser.add_argument(
        "--skip", nargs="+", default=[], choices=CONTESTANTS, help="contestants not to run"
    )
    parser.add_argument("--json", default="time_to_accuracy.json", help="where to write results")
    args = parser.parse_args()
    if args.quick:
        args.fast_seeds = args.seeds = 1
        args.long_epochs = args.baseline_epochs = args.conv2_epochs = 1
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads,"
        f" CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    data = load_splits("mnist", "standard", 0)
    warm_up = load_splits("mnist", "standard", 0, train_subset=WARM_UP_IMAGES)
    traces = []
    for name, seeds, run in contestants(args):
        if name in args.skip:
            continue
        run(0, warm_up)  # oneDNN builds its kernels for each shape on first use: not timed
        for seed in range(seeds):
            trace = run(seed, data)
            traces.append(trace)
            reached = {f"{t:.1%}": trace.first_reach(t) for t in TARGETS}
            shown = ", ".join(f"{k} at {v:.1f} s" for k, v in reached.items() if v is not None)
            print(
                f"{name:<14} seed {seed}: final {trace.points[-1][1]:.2%} after"
                f" {trace.points[-1][0]:.1f} s of training; {shown or 'no target reached'}",
                flush=True,
            )
    summary = summarise(traces, "pytorch-mnist")
    print_table(summary, "pytorch-mnist")
    with open(args.json, "w") as out:
        record = {"summary": summary, "traces": [t.__dict__ for t in traces]}
        json.dump({**record, "settings": vars(args), "threads": torch.get_num_threads()}, out)
    print(
        f"\nwritten to {args.json}; evaluation every {args.eval_every:,} training images,"
        f" off the clock, after one untimed warm-up run of each contestant"
        f" on {WARM_UP_IMAGES:,} images"
    )


if __name__ == "__main__":
    main()
