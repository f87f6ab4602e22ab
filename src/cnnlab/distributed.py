"""Data-parallel training on several processes, with PyTorch's own engine.

Launched by ``torchrun`` (or ``cnnlab train --processes N``, a thin front to it),
every process runs the same ``fit``; ``join()`` connects it to the others
through the environment torchrun sets (gloo between CPUs, NCCL between GPUs).

How the work is divided, so that N processes train the network one would:
every process holds the whole data set and draws the same seeded order each
epoch; each global mini-batch of m images is cut into N equal consecutive
shares, process r taking the r-th. Each computes the gradient of its share's
mean cost and DistributedDataParallel averages them, so every process takes
the step one process takes on the whole mini-batch: η, m and λ (decay η·λ·m/n)
mean the same whatever N is. Batch norm takes its mean and variance over the
whole mini-batch (``SyncedBatchNorm``), as in one process. What does differ
is random draws: each process draws its own share's augmentations and dropout
masks, so runs with augmentation or dropout are equal in distribution, not
bit for bit. Evaluation is shared the same way: each process scores a slice
of the test images and the counts are added.

Only the first process (rank 0) prints, draws progress bars and writes files.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .errors import CnnlabError

# Each process's random stream for augmentation and dropout: the epoch's seed plus this
# times the rank, far above any epoch seed (seed·100,003 + epoch < 2.2·10¹⁴).
RANK_SEED_STRIDE = 10**15


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one run: a single process by default."""

    rank: int = 0
    size: int = 1

    @property
    def leader(self) -> bool:
        """The one process that prints and writes."""
        return self.rank == 0

    def share(self, batch_size: int) -> tuple[int, int]:
        """(offset, length) of this process's share of every global mini-batch."""
        if batch_size % self.size:
            raise CnnlabError(
                f"a mini-batch of {batch_size} does not divide among {self.size} processes:"
                f" use a --batch-size that is a multiple of {self.size}"
            )
        length = batch_size // self.size
        return self.rank * length, length

    def slice_of(self, count: int) -> slice:
        """This process's slice of ``count`` items shared as evenly as possible (evaluation)."""
        return slice(count * self.rank // self.size, count * (self.rank + 1) // self.size)

    def total(self, value: Tensor) -> Tensor:
        """``value`` summed over all processes (itself in a single process)."""
        if self.size > 1:
            value = value.clone()
            dist.all_reduce(value)
        return value

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def world() -> World:
    """The process group this process belongs to, if one has been joined."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def launched_as() -> World:
    """This process's place as torchrun's environment gives it, before or after joining."""
    return World(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")))


def join(device: str = "auto") -> World:
    """Connect to the other processes torchrun started (a no-op when it started only this one).

    GPUs talk over NCCL, each process on the GPU of its local rank; CPUs over gloo.
    A SIGTERM (torchrun stopping the run because another process failed) becomes an
    ordinary interruption, so what was finished is kept and the message says how to resume.
    """
    if launched_as().size == 1 or dist.is_initialized():
        return world()
    gpu = device != "cpu" and torch.cuda.is_available()
    if gpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if gpu else "gloo")
    signal.signal(signal.SIGTERM, _interrupt)
    return world()


def _interrupt(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second one, while cleaning up, just ends it
    raise KeyboardInterrupt


def leave() -> None:
    """Leave the process group; a SIGTERM from now on (the process is exiting) ends it quietly
    instead of raising inside the interpreter's clean-up."""
    if dist.is_available() and dist.is_initialized():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        dist.destroy_process_group()


def parallel(network: nn.Module, device: torch.device) -> nn.Module:
    """``network`` trained data-parallel: batch norm synchronised, gradients averaged (DDP).

    Call before the optimizer is made: synchronised batch norm replaces modules.
    """
    ids = None
    if device.type == "cuda":
        network = nn.SyncBatchNorm.convert_sync_batchnorm(network)
        ids = [device.index if device.index is not None else torch.cuda.current_device()]
    else:
        _synchronise_batch_norm(network, dist.new_group())
    return nn.parallel.DistributedDataParallel(network, device_ids=ids)


class SyncedBatchNorm(nn.BatchNorm2d):
    """Batch norm whose training statistics are those of the global mini-batch, on any device.

    PyTorch's own SyncBatchNorm runs only on GPUs; this one adds each process's sums
    of x and x² with a differentiable all-reduce, so the gradient flows through the
    shared statistics exactly as it does in one process. Its parameters and buffers
    are nn.BatchNorm's, so a network saved from a distributed run loads anywhere.
    """

    def __init__(self, original: nn.modules.batchnorm._BatchNorm, group: Any) -> None:
        super().__init__(original.num_features, original.eps, original.momentum)
        self.load_state_dict(original.state_dict())
        self.group = group

    def _check_input_dim(self, x: Tensor) -> None:  # (N, C) after fc layers, (N, C, H, W) maps
        if x.dim() not in (2, 4):
            raise ValueError(f"expected 2-D or 4-D input, got {x.dim()}-D")

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        channels = x.shape[1]
        values = x.float()
        count = torch.full((1,), values.numel() // channels, dtype=torch.float32, device=x.device)
        sums = _SumOverProcesses.apply(
            torch.cat([values.sum(dims), values.square().sum(dims), count]), self.group
        )
        n = sums[-1]
        mean = sums[:channels] / n
        var = (sums[channels : 2 * channels] / n - mean.square()).clamp_min(0)
        with torch.no_grad():
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * n / (n - 1).clamp_min(1), self.momentum)
            self.num_batches_tracked += 1
        shape = (1, channels) + (1,) * (x.dim() - 2)
        scale = (torch.rsqrt(var + self.eps) * self.weight).view(shape)
        return (values - mean.view(shape)) * scale + self.bias.view(shape)


class _SumOverProcesses(torch.autograd.Function):
    """A tensor summed over all processes; its gradient is summed the same way, since every
    process's cost depends on every process's part of the sum."""

    @staticmethod
    def forward(ctx: Any, value: Tensor, group: Any) -> Tensor:
        ctx.group = group
        value = value.clone()
        dist.all_reduce(value, group=group)
        return value

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        grad = grad.clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


def _synchronise_batch_norm(module: nn.Module, group: Any) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, SyncedBatchNorm(child, group).to(child.weight.device))
        else:
            _synchronise_batch_norm(child, group)


def first_then_others(world: World, work: Callable[[], Any]) -> Any:
    """Run ``work`` in the leader first, then in the others: a data set is fetched, decoded and
    cached once, and the other processes read the cache."""
    if not world.leader:
        world.barrier()
    result = work()
    if world.leader:
        world.barrier()
    return result


def peer_failure(error: BaseException) -> bool:
    """Is this what a collective raises when another process of the run has gone away?
    (gloo raises a plain RuntimeError naming its transport.)"""
    text = str(error)
    return isinstance(error, dist.DistError) or (
        isinstance(error, RuntimeError) and any(w in text for w in ("gloo", "NCCL", "peer"))
    )


def from_leader(world: World, value: Any) -> Any:
    """The leader's ``value`` in every process (e.g. a run folder named after the clock)."""
    if world.size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def launch_here(processes: int, argv: list[str], resume: str) -> int:
    """Run ``cnnlab ARGV`` in ``processes`` processes on this machine, as ``torchrun
    --standalone --nproc-per-node PROCESSES -m cnnlab ARGV`` does; returns the exit status.

    The cores are divided among the processes (OMP_NUM_THREADS, unless set). The
    processes report their own errors; this adds a line only for one that was killed,
    saying how to continue (``resume``: the command).
    """
    import logging
    import sys
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=processes,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
    )
    try:
        elastic_launch(config, sys.executable)("-m", "cnnlab", *argv)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        if failure.exitcode < 0:  # killed: it could not say so itself
            print(
                f"cnnlab: error: process {rank} of {processes} was killed"
                f" ({failure.signal_name()}); finished epochs are saved: continue with"
                f" `{resume}`",
                file=sys.stderr,
            )
        return failure.exitcode if failure.exitcode > 0 else 1
    return 0
