"""fit(): mini-batch stochastic gradient descent with backpropagation, as in the chapter.

One loop for every network. Per epoch: shuffle (unless faithful), step through
mini-batches that are index slices of tensors already on the device, then
measure validation and test accuracy. The reported result follows the chapter:
the test accuracy at the epoch of best validation accuracy.

L2 regularisation means what it meant in network3.py: the cost is
C = mean log-likelihood + λ/(2·B)·Σw² over weights only (not biases), with B the
number of mini-batches per epoch. Its gradient adds (λ/B)·w, so each step shrinks
weights by η·λ/B = η·λ·m/n (mini-batch m, n training images): plain weight decay
with ``weight_decay = λ·m/n``. The chapter's λ = 0.1 with m = 10, n = 50,000 is
a weight decay of 2e-5.

Every epoch writes, atomically, ``checkpoint.safetensors`` (everything needed to
resume), ``model.safetensors`` (the best-validation network so far) and a line
of ``metrics.jsonl``. Resuming reproduces the uninterrupted run exactly: each
epoch's randomness is derived from (seed, epoch), not carried over.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .augment import augmentation_names, augmenter, expand, shifted_views
from .data import Part, Splits
from .errors import CheckpointError, CnnlabError
from .files import write_atomically
from .layers import BatchNorm
from .network import INITS, Network, load_tensors, save_tensors
from .precision import PRECISIONS, autocast

CHECKPOINT = "checkpoint.safetensors"
MODEL = "model.safetensors"
METRICS = "metrics.jsonl"
SCHEDULES = ("constant", "onecycle", "cosine")
OPTIMIZERS = ("sgd", "adam")


@dataclass
class TrainConfig:
    """Every setting of a training run; saved with the checkpoint, overridable from the CLI."""

    dataset: str = "mnist"
    split: str = "nielsen"
    validation: int | None = None  # standard split: images held out for validation
    train_subset: int | None = None  # train on the first N training images only
    epochs: int = 10
    batch_size: int = 10
    lr: float = 0.1  # η
    schedule: str = "constant"  # constant | onecycle (linear up, then down) | cosine
    warmup: float = 0.2  # onecycle: fraction of steps spent rising to lr
    optimizer: str = "sgd"
    momentum: float = 0.0
    nesterov: bool = False
    l2: float = 0.0  # λ, in the chapter's convention (see module doc)
    label_smoothing: float = 0.0
    init: str = "default"  # initial weights: PyTorch's (default) or network3's
    expand: bool = False  # the chapter's 5× expansion by one-pixel shifts
    augment: str = "none"  # random distortions per batch: none | shift | affine | elastic
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    channels_last: bool = False  # lay maps out (batch, height, width, depth): faster oneDNN convs
    tta: bool = False  # evaluate on the mean probabilities over each image and its 1-pixel shifts
    faithful: bool = False  # network3's conventions: its init, no reshuffle, ties count
    eval_batch_size: int = 1000

    def check(self) -> TrainConfig:
        """Raise CnnlabError for settings that cannot work."""
        rules = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch size must be >= 1"),
            (self.lr > 0 and math.isfinite(self.lr), "learning rate must be > 0"),
            (self.l2 >= 0, "l2 must be >= 0"),
            (0 <= self.momentum < 1, "momentum must be in [0, 1)"),
            (0 <= self.label_smoothing < 1, "label smoothing must be in [0, 1)"),
            (0 < self.warmup < 1, "warmup must be in (0, 1)"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}"),
            (self.init in INITS, f"init must be one of {', '.join(INITS)}"),
        ]
        for ok, message in rules:
            if not ok:
                raise CnnlabError(message)
        augmentation_names(self.augment)
        return self

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class TrainResult:
    """What a run measured; ``test_accuracy`` is the chapter's number (at best validation)."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_validation: float | None = None
    test_accuracy: float = 0.0

    @property
    def train_seconds(self) -> float:
        """Time spent training, over all epochs (resumed runs included; evaluation excluded)."""
        return sum(row["train_seconds"] for row in self.history)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def new_network(spec: dict[str, Any], config: TrainConfig, kernels: str = "native") -> Network:
    """The freshly initialised network a run of ``config`` starts from."""
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


def to_inputs(images: Tensor, device: torch.device) -> Tensor:
    """uint8 images → float in [0, 1] on ``device``, once, so batches are just slices."""
    return images.to(device).float().div_(255)


@torch.inference_mode()
def predict_probabilities(
    network: Network,
    images: Tensor,
    precision: str = "fp32",
    batch_size: int = 1000,
    tta: bool = False,
) -> Tensor:
    """Class probabilities (N, classes) of images (uint8 or float, N×depth×H×W), on the CPU.

    With ``tta``, the mean probabilities over the image and its four one-pixel shifts.
    """
    network.eval()
    device = next(network.parameters()).device
    chunks = [torch.empty(0, network.classes)]
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size].to(device)
        x = chunk.float().div_(255) if chunk.dtype == torch.uint8 else chunk
        views = shifted_views(x) if tta else [x]
        with autocast(device, precision):
            scores = sum(network(view).float().softmax(1) for view in views) / len(views)
        chunks.append(scores.cpu())
    return torch.cat(chunks)


def predict_labels(network: Network, images: Tensor, **options: Any) -> Tensor:
    """The most probable class of every image; ``options`` as for ``predict_probabilities``."""
    return predict_probabilities(network, images, **options).argmax(1)


def accuracy(network: Network, part: Part, precision: str = "fp32", tta: bool = False) -> float:
    """Fraction of ``part`` classified correctly."""
    predicted = predict_labels(network, part.images, precision=precision, tta=tta)
    return (predicted == part.labels).float().mean().item()


def _decayed_parameters(network: Network) -> tuple[list[Tensor], list[Tensor]]:
    """(weights, everything else): L2 applies to the weights of conv/fc/softmax layers only."""
    weights = [m.weight for m in network.modules() if hasattr(m, "ops") and hasattr(m, "weight")]
    ids = {id(w) for w in weights}
    return weights, [p for p in network.parameters() if id(p) not in ids]


def make_optimizer(
    network: Network, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.Optimizer:
    weights, others = _decayed_parameters(network)
    groups = [
        {"params": weights, "weight_decay": config.l2 / steps_per_epoch},
        {"params": others, "weight_decay": 0.0},
    ]
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)


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
    x: Tensor, y: Tensor, batch_size: int, order: Tensor | None
) -> Iterator[tuple[Tensor, Tensor]]:
    """Whole mini-batches, a trailing partial batch dropped as in network3.

    In ``order`` if given (gathered batch by batch: no shuffled copy of the whole
    set), else as slices in the stored order.
    """
    for start in range(0, len(y) - batch_size + 1, batch_size):
        if order is None:
            yield x[start : start + batch_size], y[start : start + batch_size]
        else:
            index = order[start : start + batch_size]
            yield x[index], y[index]


# ---- checkpoints --------------------------------------------------------------------------
def _optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    state = optimizer.state_dict()
    tensors, plain = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                plain[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "plain": plain}


def _optimizer_from_tensors(tensors: dict[str, Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for name, value in meta["plain"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    path: Path,
    network: Network,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    result: TrainResult,
) -> None:
    """Everything a run needs to continue: weights, optimizer state, settings, history."""
    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in network.state_dict().items()}
    optim_tensors, optim_meta = _optimizer_to_tensors(optimizer)
    meta = {
        "spec": network.spec(),
        "config": asdict(config),
        "result": result.to_dict(),
        "optimizer": optim_meta,
    }
    save_tensors(path, {**tensors, **optim_tensors}, meta)


def read_run(out: str | Path) -> tuple[dict[str, Any], TrainConfig]:
    """The network spec and settings of the run saved in folder ``out`` (for --resume)."""
    _, meta = load_tensors(_checkpoint_in(out))
    return meta["spec"], TrainConfig.from_dict(meta["config"])


def check_epochs_change(saved: TrainConfig, epochs: int) -> None:
    """Refuse to continue a run over a new number of epochs unless its schedule is constant.

    One-cycle and cosine schedules were laid out for the run's length: changing it
    would reshape them mid-run.
    """
    if epochs != saved.epochs and saved.schedule != "constant":
        raise CnnlabError(
            f"this run's {saved.schedule} schedule was laid out for {saved.epochs} epochs;"
            " changing --epochs would reshape it: start a new run instead"
        )


def _checkpoint_in(out: str | Path) -> Path:
    path = Path(out) / CHECKPOINT
    if not path.exists():
        raise CheckpointError(f"{out}: no {CHECKPOINT} to resume from")
    return path


def _restore(out: Path, network: Network, optimizer: torch.optim.Optimizer) -> TrainResult:
    tensors, meta = load_tensors(_checkpoint_in(out))
    if meta["spec"] != network.spec():
        raise CheckpointError(f"{out}: the saved run is of a different network")
    network.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    optimizer.load_state_dict(_optimizer_from_tensors(tensors, meta["optimizer"]))
    return TrainResult(**meta["result"])


def _write_metrics(out: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite the metrics log from the history (atomic; drops lines of unfinished epochs)."""
    text = "".join(json.dumps(row) + "\n" for row in history)
    write_atomically(out / METRICS, lambda tmp: tmp.write_text(text))


# ---- the loop -----------------------------------------------------------------------------
@dataclass
class _Stepper:
    """What one epoch of mini-batch SGD needs: network, optimizer, schedule, data on the device."""

    network: Network
    optimizer: torch.optim.Optimizer
    config: TrainConfig
    x: Tensor
    y: Tensor
    steps_per_epoch: int
    device: torch.device
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
        for step, (x, y) in enumerate(_batches(self.x, self.y, config.batch_size, order)):
            lr = learning_rate(config, (epoch - 1) * self.steps_per_epoch + step, total_steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            if self.augment is not None:
                x = self.augment(x)
            with autocast(self.device, config.precision):
                logits = network(x)
            loss = network.ops.softmax_cross_entropy(logits.float(), y, config.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            loss_sum += loss.detach()
            correct += (logits.argmax(1) == y).sum()
            bar.update()
            if progress and step % 100 == 0:
                bar.set_postfix_str(f"loss {loss.item():.4f}")
            done = (epoch - 1) * self.steps_per_epoch + step + 1
            if self.every is not None and done % self.every.steps == 0:
                started = self._call_hook(self.every, done, started)
        self._clock(started)
        bar.close()
        mean_loss = loss_sum.item() / self.steps_per_epoch
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
) -> TrainResult:
    """Train ``network`` on ``data.train`` with the settings of ``config``; see the module doc."""
    config.check()
    device = pick_device(config.device)
    if network.classes != len(data.classes):
        raise CnnlabError(
            f"the output layer has {network.classes} classes but {data.name} has"
            f" {len(data.classes)}: end the network with softmax{len(data.classes)}"
        )
    train = expand(data.train, config.seed) if config.expand else data.train
    steps_per_epoch = len(train) // config.batch_size
    if steps_per_epoch == 0:
        raise CnnlabError(f"{len(train)} training images make no mini-batch of {config.batch_size}")
    if config.batch_size == 1 and any(isinstance(m, BatchNorm) for m in network.modules()):
        raise CnnlabError("batch normalisation needs mini-batches of 2 or more: raise --batch-size")
    network.to(device).use_channels_last(config.channels_last)
    optimizer = make_optimizer(network, config, steps_per_epoch)
    out_dir = Path(out) if out is not None else None
    result = TrainResult()
    if resume:
        if out_dir is None:
            raise CnnlabError("resuming needs the run's output folder")
        result = _restore(out_dir, network, optimizer)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_metrics(out_dir, result.history)
    stepper = _Stepper(
        network,
        optimizer,
        config,
        to_inputs(train.images, device),
        train.labels.to(device),
        steps_per_epoch,
        device,
        every,
    )

    measure = partial(accuracy, network, precision=config.precision, tta=config.tta)
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
                network.save(
                    out_dir / MODEL,
                    {
                        "dataset": data.name,
                        "classes": data.classes,
                        "config": asdict(config),
                        "epoch": epoch,
                        "validation_accuracy": validation,
                        "test_accuracy": row["test_accuracy"],
                    },
                )
            save_checkpoint(out_dir / CHECKPOINT, network, optimizer, config, result)
            _write_metrics(out_dir, result.history)
    return result


def _epoch_line(row: dict[str, Any], epochs: int, improved: bool) -> str:
    val = row["validation_accuracy"]
    val_text = f"  validation {val:.2%}" if val is not None else ""
    return (
        f"epoch {row['epoch']:>3}/{epochs}  loss {row['train_loss']:.4f}"
        f"  train {row['train_accuracy']:.2%}{val_text}  test {row['test_accuracy']:.2%}"
        f"  ({row['train_seconds']:.1f} s){'  *' if improved and val is not None else ''}"
    )
