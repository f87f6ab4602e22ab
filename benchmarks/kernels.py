"""Forward + backward time of the explicit kernels against PyTorch's native ones, on this machine.

    python benchmarks/kernels.py                          # every op, then the chapter's networks
    python benchmarks/kernels.py --batch-sizes 10 100 --rounds 30 --threads 1

Per operation (at the shapes of the chapter's networks) it times a forward and
a backward pass; per network (the chapter's presets) it times one training step
as ``fit`` takes it: forward, softmax log-likelihood cost, backward, SGD update.
Native and explicit are timed in alternating rounds, so that a busy machine
slows both alike; each round runs several calls and divides, after warm-up calls
that are not timed. The table gives the median over rounds, the interquartile
range in brackets, and the ratio explicit / native of the medians.

Whole training runs on both kernels, from the same seed, for a longer comparison:

    cnnlab train --preset conv2 --kernels native   --epochs 60 --out runs/conv2-native
    cnnlab train --preset conv2 --kernels explicit --epochs 60 --out runs/conv2-explicit
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from cnnlab.kernels import explicit, native
from cnnlab.network import Network
from cnnlab.presets import get_preset

NETWORKS = ("fc100", "conv1", "conv2", "conv2-relu", "lenet5")


def _leaf(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, requires_grad=True)


def _fields(side: int, size: int, stride: int = 1, padding: int = 0) -> int:
    return ((side + 2 * padding - size) // stride + 1) ** 2


def op_cases(batch: int) -> dict[str, Callable]:
    """name → (ops → forward + backward of that op), on inputs of the chapter's shapes."""
    image = torch.rand(batch, 1, 28, 28)  # the first layer needs no ∂C/∂a of its input
    maps20, pooled20 = _leaf(batch, 20, 24, 24), _leaf(batch, 20, 12, 12)
    conv1_w, conv2_w, lenet_w = _leaf(20, 1, 5, 5), _leaf(40, 20, 5, 5), _leaf(6, 1, 5, 5)
    bias20, bias40, bias6 = _leaf(20), _leaf(40), _leaf(6)
    local_w, local_b = _leaf(_fields(12, 5), 8, 20 * 25), _leaf(8, 8, 8)
    fc_in, fc_w, fc_b = _leaf(batch, 640), _leaf(100, 640), _leaf(100)
    out_in, out_w, out_b = _leaf(batch, 100), _leaf(10, 100), _leaf(10)
    targets = torch.randint(10, (batch,))
    upstream: dict[tuple[int, ...], torch.Tensor] = {}

    def backward(z: torch.Tensor) -> None:
        g = upstream.setdefault(tuple(z.shape), torch.randn(z.shape))
        z.backward(g)

    return {
        "conv 20×5×5 on 1×28×28": lambda ops: backward(ops.conv2d(image, conv1_w, bias20, 1, 0)),
        "conv 40×5×5 on 20×12×12": lambda ops: backward(
            ops.conv2d(pooled20, conv2_w, bias40, 1, 0)
        ),
        "conv 6×5×5 p2 on 1×28×28": lambda ops: backward(ops.conv2d(image, lenet_w, bias6, 1, 2)),
        "local 8×5×5 on 20×12×12": lambda ops: backward(
            ops.locally_connected(pooled20, local_w, local_b, 5, 1, 0)
        ),
        "max pool 2×2 on 20×24×24": lambda ops: backward(ops.max_pool(maps20, 2, 2)),
        "max pool 3×3 s2 on 20×24×24": lambda ops: backward(ops.max_pool(maps20, 3, 2)),
        "L2 pool 2×2 on 20×24×24": lambda ops: backward(ops.l2_pool(maps20, 2, 2)),
        "avg pool 2×2 on 20×24×24": lambda ops: backward(ops.avg_pool(maps20, 2, 2)),
        "fc 640→100": lambda ops: backward(ops.linear(fc_in, fc_w, fc_b)),
        "softmax 100→10 + cost": lambda ops: ops.softmax_cross_entropy(
            ops.linear(out_in, out_w, out_b), targets
        ).backward(),
    }


def training_step(preset: str, kernels: str, batch: int) -> Callable[[], None]:
    """One mini-batch step of ``fit`` for a preset's network, on random images."""
    network = Network.create(get_preset(preset).spec(), seed=0, kernels=kernels)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01)
    x, y = torch.rand(batch, 1, 28, 28), torch.randint(10, (batch,))

    def step() -> None:
        cost = network.ops.softmax_cross_entropy(network(x), y)
        optimizer.zero_grad(set_to_none=True)
        cost.backward()
        optimizer.step()

    return step


def compare(native_call: Callable, explicit_call: Callable, rounds: int, calls: int) -> tuple:
    """Median and quartiles (ms per call) of each, timed in alternating rounds."""
    times: dict[str, list[float]] = {"native": [], "explicit": []}
    for call in (native_call, explicit_call):
        for _ in range(max(3, calls)):  # warm-up: allocator, thread pool, caches
            call()
    for _ in range(rounds):
        for name, call in (("native", native_call), ("explicit", explicit_call)):
            started = time.perf_counter()
            for _ in range(calls):
                call()
            times[name].append((time.perf_counter() - started) / calls * 1e3)
    return tuple(_summary(times[name]) for name in ("native", "explicit"))


def _summary(ms: list[float]) -> tuple[float, float, float]:
    q1, median, q3 = statistics.quantiles(ms, n=4)
    return median, q1, q3


def _row(name: str, batch: int, native_ms: tuple, explicit_ms: tuple) -> str:
    def cell(m: tuple) -> str:
        return f"{m[0]:8.3f} [{m[1]:.3f}–{m[2]:.3f}]"

    ratio = explicit_ms[0] / native_ms[0]
    return f"{name:<32} {batch:>5}  {cell(native_ms):>28}  {cell(explicit_ms):>28}  {ratio:5.2f}×"


def _calls_for(seconds_per_call: float) -> int:
    """Enough calls per round to last ~20 ms, so the timer's resolution does not matter."""
    return max(1, min(50, int(0.02 / max(seconds_per_call, 1e-6))))


def _probe(call: Callable) -> float:
    call()
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        return f"{os.cpu_count()} × {names[0]}"
    except (OSError, IndexError):
        return platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--rounds", type=int, default=21, help="timed rounds per figure")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--networks", nargs="*", default=list(NETWORKS), help="presets to time")
    parser.add_argument("--no-ops", action="store_true", help="time only the networks")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s) on {_cpu()},"
        f" load average {os.getloadavg()[0]:.2f} at start"
    )
    print(
        f"median over {args.rounds} alternating rounds (interquartile range), ms per forward +"
        " backward (ops) or per training step (networks)\n"
    )
    header = f"{'':<32} {'batch':>5}  {'native ms':>28}  {'explicit ms':>28}  ratio"
    print(header + "\n" + "-" * len(header))
    network_ratios = []
    for batch in args.batch_sizes:
        cases = {} if args.no_ops else op_cases(batch)
        for name, case in cases.items():
            on_native, on_explicit = (lambda c=case: c(native)), (lambda c=case: c(explicit))
            calls = _calls_for(_probe(on_native))
            result = compare(on_native, on_explicit, args.rounds, calls)
            print(_row(name, batch, *result), flush=True)
        for preset in args.networks:
            steps = {k: training_step(preset, k, batch) for k in ("native", "explicit")}
            calls = _calls_for(_probe(steps["native"]))
            result = compare(steps["native"], steps["explicit"], args.rounds, calls)
            network_ratios.append(result[1][0] / result[0][0])
            print(_row(f"network {preset} (train step)", batch, *result), flush=True)
    if network_ratios:
        print(
            f"\ntraining a network with explicit kernels takes {min(network_ratios):.2f}–"
            f"{max(network_ratios):.2f}× as long as with native ones (goal: at most 3×)"
        )
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
