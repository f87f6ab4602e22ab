"""A run folder: its files, its checkpoint, and the one rule for continuing a run.

A run writes, atomically, ``checkpoint.safetensors`` (everything needed to
resume: weights, their moving average if the run keeps one, optimizer state,
settings, history), ``model.safetensors`` (the best-validation network so far, the
average if there is one, with the class names, input shape and settings) and
``metrics.jsonl`` (a line per finished epoch).

Resuming continues a run exactly as if it had not stopped. Only ``epochs``
(for a constant schedule) and ``device`` may differ from the saved settings;
``train --resume``, ensemble members and ``reproduce`` all follow this rule.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from torch import Tensor

from .averaging import WeightAverage
from .config import TrainConfig
from .data import DATASETS
from .errors import CheckpointError, CnnlabError
from .files import write_atomically
from .network import WEIGHTS_PREFIX, Network, load_tensors, save_tensors, tensors_named
from .sgd import Optimizer

CHECKPOINT = "checkpoint.safetensors"
MODEL = "model.safetensors"
METRICS = "metrics.jsonl"
RESUMABLE = ("epochs", "device")  # settings a resumed run may change


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


def _optimizer_to_tensors(optimizer: Optimizer) -> tuple[dict[str, Tensor], dict]:
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
    optimizer: Optimizer,
    config: TrainConfig,
    result: TrainResult,
    average: WeightAverage | None = None,
) -> None:
    """Everything a run needs to continue: weights, their average, optimizer state, settings,
    history."""
    state = network.state_dict()
    tensors = {WEIGHTS_PREFIX + k: v.detach().contiguous().cpu() for k, v in state.items()}
    if average is not None:
        tensors.update(average.tensors())
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
    path = _checkpoint_in(out)
    _, meta = load_tensors(path)
    return run_parts(meta, path)[:2]


def run_parts(meta: dict[str, Any], path: Path) -> tuple[dict[str, Any], TrainConfig, TrainResult]:
    """Spec, settings and results of a run's checkpoint, each checked for its type."""
    missing = [key for key in ("spec", "config", "result", "optimizer") if key not in meta]
    if missing or not isinstance(meta["spec"], dict) or not isinstance(meta["optimizer"], dict):
        raise CheckpointError(
            f"{path} is not a run's checkpoint (no {', '.join(missing) or 'valid spec'}): resume"
            f" from the {CHECKPOINT} a `cnnlab train` run wrote"
        )
    try:
        config = TrainConfig.from_dict(meta["config"]).check()
        result = _result(meta["result"])
    except CnnlabError as exc:
        raise CheckpointError(f"{path}: {exc} (a damaged or hand-edited checkpoint)") from None
    return meta["spec"], config, result


def _result(values: Any) -> TrainResult:
    """A saved TrainResult, refused unless its history is a list of rows with the numbers that
    resuming and the reports read."""
    if not isinstance(values, dict) or not isinstance(values.get("history"), list):
        raise CnnlabError("its results are not a history of epochs")
    for row in values["history"]:
        if not isinstance(row, dict) or not all(
            isinstance(row.get(k), (int, float)) and not isinstance(row.get(k), bool)
            for k in ("epoch", "train_seconds", "train_loss", "test_accuracy")
        ):
            raise CnnlabError("an epoch in its history lacks its numbers")
    try:
        return TrainResult(**values)
    except TypeError:
        raise CnnlabError("its results have unknown fields") from None


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


def restore(
    out: Path, network: Network, optimizer: Optimizer, average: WeightAverage | None = None
) -> TrainResult:
    path = _checkpoint_in(out)
    tensors, meta = load_tensors(path)
    spec, _, result = run_parts(meta, path)
    if spec != network.spec():
        raise CheckpointError(f"{out}: the saved run is of a different network")
    try:
        network.load_state_dict(tensors_named(tensors, WEIGHTS_PREFIX))
        optimizer.load_state_dict(_optimizer_from_tensors(tensors, meta["optimizer"]))
        if average is not None:
            average.load(tensors)
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError):
        raise CheckpointError(
            f"{path}: its weights or optimizer state do not fit the run (a damaged or"
            " hand-edited checkpoint): start a new run, or restore the file from a copy"
        ) from None
    return result


def write_metrics(out: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite the metrics log from the history (atomic; drops lines of unfinished epochs)."""
    text = "".join(json.dumps(row) + "\n" for row in history)
    write_atomically(out / METRICS, lambda tmp: tmp.write_text(text))


def trained_config(meta: dict[str, Any]) -> TrainConfig:
    """The settings a saved network was trained with, its data named as ``fit`` saw it.

    ``fit`` records the data set's name (a built-in one, or a picture folder's path) even
    when the settings did not say it (a network trained through the Python API), and older
    checkpoints carry no settings at all.
    """
    values = meta.get("config")
    try:
        config = TrainConfig.from_dict(values if isinstance(values, dict) else {})
    except CnnlabError as exc:
        raise CheckpointError(f"this network's saved settings are damaged: {exc}") from None
    trained_on = meta.get("dataset")
    if config.data is None and isinstance(trained_on, str):
        if trained_on in DATASETS:
            config.dataset = trained_on
        elif Path(trained_on).is_dir():
            config.data = trained_on
    return config


def resumed_settings(
    out: str | Path, changes: dict[str, Any]
) -> tuple[dict[str, Any], TrainConfig]:
    """The spec and settings of the run in ``out``, with ``changes`` to the resumable ones."""
    spec, config = read_run(out)
    fixed = sorted(set(changes) - set(RESUMABLE))
    if fixed:
        flags = ", ".join("--" + k.replace("_", "-") for k in fixed)
        raise CnnlabError(
            "--resume continues with the run's saved settings; only --epochs and --device"
            f" may change (drop {flags})"
        )
    check_epochs_change(config, changes.get("epochs", config.epochs))
    for key, value in changes.items():
        setattr(config, key, value)
    return spec, config


def continues(out: str | Path, spec: dict[str, Any], config: TrainConfig) -> bool:
    """Does ``out`` hold a run of this network and these settings to continue?

    False for a fresh folder; CnnlabError for a run of something else.
    """
    if not (Path(out) / CHECKPOINT).exists():
        return False
    saved_spec, saved = read_run(out)
    differs = [
        f.name
        for f in fields(TrainConfig)
        if f.name not in RESUMABLE and getattr(saved, f.name) != getattr(config, f.name)
    ]
    if saved_spec != spec or differs:
        what = "network" if saved_spec != spec else ", ".join(differs)
        raise CnnlabError(f"{out} holds a run with a different {what}; use another --out")
    check_epochs_change(saved, config.epochs)
    return True
