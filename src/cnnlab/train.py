"""fit(): mini-batch stochastic gradient descent with backpropagation, as in the chapter.

One loop for every network. Per epoch: shuffle (unless faithful), step through
mini-batches gathered by index from uint8 images already on the device (each
batch turned into floats in [0, 1] as it is used, so the data set takes a
quarter of the memory and a memory-mapped folder is never copied whole), then
measure validation and test accuracy. The reported result follows the chapter:
the test accuracy at the epoch of best validation accuracy. A run with ``ema``
measures and saves the moving average of the weights (``averaging.py``) instead
of the weights it trains; the loss and training accuracy are the trained ones'.

L2 regularisation means what it meant in network3.py: the cost is
C = mean log-likelihood + λ/(2·B)·Σw² over weights only (not biases), with B the
number of mini-batches per epoch. Its gradient adds (λ/B)·w, so each step shrinks
weights by η·λ/B = η·λ·m/n (mini-batch m, n training images): plain weight decay
with ``weight_decay = λ·m/n``. The chapter's λ = 0.1 with m = 10, n = 50,000 is
a weight decay of 2e-5.

Every epoch saves the run (``runs.py``); resuming reproduces the uninterrupted
run exactly: each epoch's randomness is derived from (seed, epoch), not carried over.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .allocator import keep_freed_memory
from .augment import augmenter, expand
from .averaging import WeightAverage, weight_average
from .config import TrainConfig
from .data import Part, Splits, channel_statistics
from .distributed import RANK_SEED_STRIDE, World, parallel, world
from .errors import CnnlabError
from .files import remove_leftovers
from .layers import WEIGHTED_LAYERS, BatchNorm
from .memory import check_fits
from .network import Network
from .precision import autocast
from .predict import labels
from .runs import (
    CHECKPOINT,
    MODEL,
    TrainResult,
    restore,
    save_checkpoint,
    write_metrics,
)
from .sgd import MomentumSGD, Optimizer


def network_spec(
    layers: list[dict[str, Any]], data: Splits, config: TrainConfig, fit_output: bool = False
) -> dict[str, Any]:
    """The spec of a network of ``layers`` for ``data``: its input shape, and its per-channel
    standardisation when ``config.normalize``. With ``fit_output`` (presets), an output layer
    of another size is given one unit per class of the data."""
    last = layers[-1]
    if fit_output and last.get("type") == "softmax":
        layers = [*layers[:-1], {**last, "units": len(data.classes)}]
    spec: dict[str, Any] = {"input": list(data.input_shape), "layers": layers}
    if config.normalize:
        mean, std = channel_statistics(data.train.images)
        spec["normalize"] = {"mean": mean, "std": std}
    return spec


def new_network(spec: dict[str, Any], config: TrainConfig, kernels: str = "native") -> Network:
    """The freshly initialised network a run of ``config`` starts from.

    Its memory needs are checked from the shapes first: a network that cannot be
    trained here is refused before any of its weights are allocated.
    """
    device = pick_device(config.device)
    check_fits(Network.shapes_only(spec), config.batch_size, device, averaged=config.ema > 0)
    return Network.create(spec, config.seed, config.faithful, kernels, config.init)


def pick_device(name: str = "auto") -> torch.device:
    """ "auto" is the GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CnnlabError("--device cuda: no CUDA GPU is available here; use --device cpu")
    if name not in ("cpu", "cuda"):
        raise CnnlabError(f"unknown device {name!r}: choose auto, cpu or cuda")
    return torch.device(name)


def _decayed_parameters(network: Network) -> tuple[list[Tensor], list[Tensor]]:
    """(weights, everything else): L2 decays the weights of conv, local and fc layers only."""
    weights = [m.weight for m in network.modules() if isinstance(m, WEIGHTED_LAYERS)]
    ids = {id(w) for w in weights}
    return weights, [p for p in network.parameters() if id(p) not in ids]


def make_optimizer(network: Network, config: TrainConfig, steps_per_epoch: int) -> Optimizer:
    weights, others = _decayed_parameters(network)
    groups = [
        {"params": weights, "weight_decay": config.l2 / steps_per_epoch},
        {"params": others, "weight_decay": 0.0},
    ]
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr)
    return MomentumSGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    """η at a given step: constant, one-cycle (linear warm-up, linear decay to 0) or cosine."""
    if config.schedule == "constant":
        return config.lr
    progress = step / max(total_steps, 1)
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * progress))
    if progress < config.warmup:
        return config.lr * progress / config.warmup
    return config.lr * (1 - progress) / (1 - config.warmup)


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def _batches(
    x: Tensor, y: Tensor, batch_size: int, order: Tensor | None, world: World
) -> Iterator[tuple[Tensor, Tensor]]:
    """This process's share of every whole mini-batch, a trailing partial batch dropped as in
    network3 (in a single process the share is the whole mini-batch).

    In ``order`` if given (gathered batch by batch: no shuffled copy of the whole
    set), else as slices in the stored order.
    """
    offset, length = world.share(batch_size)
    for start in range(offset, len(y) - batch_size + 1 + offset, batch_size):
        if order is None:
            yield x[start : start + length], y[start : start + length]
        else:
            index = order[start : start + length]
            yield x[index.to(x.device)], y[index]


# ---- the loop -----------------------------------------------------------------------------
@dataclass
class _Stepper:
    """What one epoch of mini-batch SGD needs: network, optimizer, schedule, data (uint8).

    ``model`` is what the batches go through: the network itself, or its data-parallel
    wrapper when several processes share the run.
    """

    network: Network
    model: nn.Module
    optimizer: Optimizer
    config: TrainConfig
    x: Tensor
    y: Tensor
    steps_per_epoch: int
    device: torch.device
    world: World
    average: WeightAverage | None = None
    every: StepHook | None = None

    def __post_init__(self) -> None:
        # fp16 gradients underflow without loss scaling; for fp32/bf16 the scaler is a no-op
        fp16 = self.config.precision == "fp16"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=fp16)
        self.augment = augmenter(self.config.augment)
        self.train_seconds = 0.0  # wall-clock time spent in training steps, hooks excluded

    def epoch(self, epoch: int, progress: bool) -> dict[str, float]:
        """One pass over the training data; returns mean loss, training accuracy, last η."""
        config, network = self.config, self.network
        torch.manual_seed(_epoch_seed(config.seed, epoch))  # this epoch's order and dropout
        order = None if config.faithful else torch.randperm(len(self.y), device=self.device)
        if self.world.rank:  # the same order everywhere; each process's own random draws
            torch.manual_seed(_epoch_seed(config.seed, epoch) + self.world.rank * RANK_SEED_STRIDE)
        network.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        total_steps = self.steps_per_epoch * config.epochs
        seconds_before = self.train_seconds
        started = time.perf_counter()
        bar = tqdm(
            total=self.steps_per_epoch,
            desc=f"epoch {epoch}/{config.epochs}",
            unit="batch",
            leave=False,
            disable=not progress,
        )
        batches = _batches(self.x, self.y, config.batch_size, order, self.world)
        for step, (x, y) in enumerate(batches):
            lr = learning_rate(config, (epoch - 1) * self.steps_per_epoch + step, total_steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            x = x.to(self.device, non_blocking=True).float().div_(255)
            if self.augment is not None:
                x = self.augment(x)
            with autocast(self.device, config.precision):
                logits = self.model(x)
            loss = network.ops.softmax_cross_entropy(logits.float(), y, config.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            done = (epoch - 1) * self.steps_per_epoch + step + 1
            if self.average is not None:
                self.average.update(network, done - 1)
            loss_sum += loss.detach()
            correct += (logits.argmax(1) == y).sum()
            bar.update()
            if progress and step % 100 == 0:
                bar.set_postfix_str(f"loss {loss.item():.4f}")
            if self.every is not None and done % self.every.steps == 0:
                started = self._call_hook(self.every, done, started)
        self._clock(started)
        bar.close()
        # every process's loss is the mean over its equal share of the mini-batch
        mean_loss = self.world.total(loss_sum).item() / (self.steps_per_epoch * self.world.size)
        correct = self.world.total(correct)
        if not math.isfinite(mean_loss):
            raise CnnlabError(
                f"training diverged at epoch {epoch} (the loss is not finite): lower --lr"
            )
        return {
            "train_loss": mean_loss,
            "train_accuracy": correct.item() / (self.steps_per_epoch * config.batch_size),
            "lr": lr,
            "train_seconds": self.train_seconds - seconds_before,
        }

    def _clock(self, since: float) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.train_seconds += time.perf_counter() - since

    def _call_hook(self, hook: StepHook, step: int, since: float) -> float:
        """Stop the clock, let the hook look at the network, resume training; the new start."""
        self._clock(since)
        hook.call(step, self.train_seconds)
        self.network.train()
        return time.perf_counter()


@dataclass(frozen=True)
class StepHook:
    """``call(step, train_seconds)`` after every ``steps`` training steps, off the clock.

    For measuring progress mid-epoch (e.g. time to a test accuracy): the time the
    hook takes is not counted as training time, and the network is returned to
    training mode afterwards.
    """

    steps: int
    call: Callable[[int, float], None]


def _improves(validation: float | None, best: float | None, ties_count: bool) -> bool:
    """Is this epoch the new best? Without a validation set, the latest epoch always is."""
    if validation is None or best is None:
        return True
    return validation >= best if ties_count else validation > best


def fit(
    network: Network,
    data: Splits,
    config: TrainConfig,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    every: StepHook | None = None,
    starting: Callable[[], None] | None = None,
) -> TrainResult:
    """Train ``network`` on ``data.train`` with the settings of ``config``; see the module doc.

    ``starting()`` is called once everything is checked and a resumed run restored, just
    before the first step (to announce the run: one that cannot start says only why).

    In a process group (torchrun, see ``distributed.py``) every process calls this alike
    and they train one network together; only the first writes ``out`` and logs.

    ``network`` ends with the trained weights; with ``config.ema`` the result and the saved
    model are those of their average, and ``every`` hooks still see ``network``.
    """
    config.check()
    keep_freed_memory()
    device = pick_device(config.device)
    team = world()
    if not team.leader:
        progress, log = False, _silent
    if network.classes != len(data.classes):
        raise CnnlabError(
            f"the output layer has {network.classes} classes but {data.name} has"
            f" {len(data.classes)}: end the network with softmax{len(data.classes)}"
        )
    if network.input_shape != data.input_shape:
        shape = "×".join(map(str, data.input_shape))
        raise CnnlabError(
            f"the network takes {'×'.join(map(str, network.input_shape))} input but the pictures"
            f" of {data.name} are {shape}: build it with input {shape}"
        )
    train = expand(data.train, config.seed) if config.expand else data.train
    steps_per_epoch = len(train) // config.batch_size
    if steps_per_epoch == 0:
        raise CnnlabError(
            f"{len(train)} training images make no mini-batch of {config.batch_size}:"
            f" use --batch-size {len(train)} or less"
        )
    if config.batch_size == 1 and any(isinstance(m, BatchNorm) for m in network.modules()):
        raise CnnlabError("batch normalisation needs mini-batches of 2 or more: raise --batch-size")
    network.to(device).use_channels_last(config.channels_last)
    team.share(config.batch_size)  # a mini-batch that does not divide is refused before any work
    model = parallel(network, device) if team.size > 1 else network
    optimizer = make_optimizer(network, config, steps_per_epoch)
    average = weight_average(network, config.ema)
    judged = network if average is None else average.network  # what is evaluated and saved
    out_dir = Path(out) if out is not None else None
    result = TrainResult()
    if resume:
        if out_dir is None:
            raise CnnlabError("resuming needs the run's output folder")
        result = restore(out_dir, network, optimizer, average)
    if not team.leader:
        out_dir = None  # read to resume, written by the leader alone
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_leftovers(out_dir)
        write_metrics(out_dir, result.history)
    stepper = _Stepper(
        network,
        model,
        optimizer,
        config,
        _resident(train.images, device),
        train.labels.to(device),
        steps_per_epoch,
        device,
        team,
        average,
        every,
    )

    measure = partial(_shared_accuracy, judged, config, team)
    if starting is not None:
        starting()
    for epoch in range(len(result.history) + 1, config.epochs + 1):
        row: dict[str, Any] = {"epoch": epoch, **stepper.epoch(epoch, progress)}
        started = time.perf_counter()
        held_out = data.validation
        validation = None if held_out is None else measure(held_out)
        row.update(
            validation_accuracy=validation,
            test_accuracy=measure(data.test),
            eval_seconds=time.perf_counter() - started,
        )
        result.history.append(row)
        improved = _improves(validation, result.best_validation, ties_count=config.faithful)
        if improved:
            result.best_epoch, result.best_validation = epoch, validation
            result.test_accuracy = row["test_accuracy"]
        log(_epoch_line(row, config.epochs, improved))
        if out_dir is not None:
            if improved:
                judged.save(
                    out_dir / MODEL,
                    {
                        "dataset": data.name,
                        "classes": data.classes,
                        "input": list(data.input_shape),
                        "config": asdict(config),
                        "epoch": epoch,
                        "validation_accuracy": validation,
                        "test_accuracy": row["test_accuracy"],
                    },
                )
            save_checkpoint(out_dir / CHECKPOINT, network, optimizer, config, result, average)
            write_metrics(out_dir, result.history)
    return result


def _silent(line: str) -> None:
    """The log of a process that is not the leader."""


def _shared_accuracy(network: Network, config: TrainConfig, team: World, part: Part) -> float:
    """Fraction of ``part`` classified correctly, each process scoring its own slice."""
    mine = team.slice_of(len(part))
    predicted = labels(network, part.images[mine], precision=config.precision, tta=config.tta)
    right = (predicted == part.labels[mine]).sum()
    right = team.total(right.to(next(network.parameters()).device))  # NCCL adds GPU tensors
    return right.item() / len(part)


def _resident(images: Tensor, device: torch.device) -> Tensor:
    """The training images where batches are gathered from: on a GPU when they fit in half its
    free memory, else where they are (a memory-mapped folder stays a memory map)."""
    if device.type == "cuda" and images.numel() < torch.cuda.mem_get_info(device)[0] // 2:
        return images.to(device)
    return images


def _epoch_line(row: dict[str, Any], epochs: int, improved: bool) -> str:
    val = row["validation_accuracy"]
    val_text = f"  validation {val:.2%}" if val is not None else ""
    return (
        f"epoch {row['epoch']:>3}/{epochs}  loss {row['train_loss']:.4f}"
        f"  train {row['train_accuracy']:.2%}{val_text}  test {row['test_accuracy']:.2%}"
        f"  ({row['train_seconds']:.1f} s){'  *' if improved and val is not None else ''}"
    )
