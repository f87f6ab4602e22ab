"""TrainConfig: every setting of a training run, saved with its checkpoint, set from the CLI.

L2 regularisation (``l2``, λ) means what it meant in the chapter's
network3.py: cost + λ/(2·B)·Σw² over weights only, B = mini-batches per epoch,
i.e. a weight decay of λ·m/n per step (see ``train.py``).
"""

from __future__ import annotations

import types
from dataclasses import dataclass, fields
from typing import Any, Union, get_args, get_origin, get_type_hints

from .augment import augmentation_names
from .errors import CnnlabError
from .network import INITS
from .precision import PRECISIONS
from .predict import TTA, tta_name

SCHEDULES = ("constant", "onecycle", "cosine")
OPTIMIZERS = ("sgd", "adam")
MAX_LR = 100.0  # far beyond any useful η; larger ones only overflow
MAX_SEED = 2**31  # each epoch's seed, seed·100,003 + epoch, must fit torch's 64-bit seed


@dataclass
class TrainConfig:
    """Every setting of a training run; saved with the checkpoint, overridable from the CLI."""

    dataset: str = "mnist"  # a built-in data set, unless ``data`` names a picture folder
    data: str | None = None  # a folder of pictures, one subfolder per class
    image_size: list[int] | None = None  # picture folders: [height, width] (None: from the folder)
    test_fraction: float = 0.2  # picture folders without test/: the share held out for testing
    split: str = "nielsen"
    validation: int | None = None  # standard split: images held out for validation
    train_subset: int | None = None  # train on the first N training images only
    normalize: bool = False  # standardise each input channel by the training data's mean and std
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
    ema: float = 0.0  # decay per step of a moving average of the weights, evaluated and saved
    init: str = "default"  # initial weights: PyTorch's (default) or network3's
    expand: bool = False  # the chapter's 5× expansion by one-pixel shifts
    augment: str = "none"  # random changes per batch, comma-separated (see augment.py)
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    channels_last: bool = False  # lay maps out (batch, height, width, depth): faster oneDNN convs
    tta: str = (
        "none"  # test-time views averaged when evaluating: none | shifts | flip | flip+shifts
    )
    faithful: bool = False  # network3's conventions: its init, no reshuffle, ties count

    def check(self) -> TrainConfig:
        """Raise CnnlabError for settings that cannot work."""
        rules = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch size must be >= 1"),
            (0 < self.lr <= MAX_LR, f"learning rate must be > 0 and at most {MAX_LR:g}"),
            (0 <= self.seed < MAX_SEED, f"seed must be a whole number from 0 to {MAX_SEED - 1:,}"),
            (self.l2 >= 0, "l2 must be >= 0"),
            (0 <= self.momentum < 1, "momentum must be in [0, 1)"),
            (self.momentum > 0 or not self.nesterov, "Nesterov's momentum needs --momentum > 0"),
            (0 <= self.label_smoothing < 1, "label smoothing must be in [0, 1)"),
            (0 <= self.ema < 1, "ema must be in [0, 1): the decay per step (0: no average)"),
            (0 < self.warmup < 1, "warmup must be in (0, 1)"),
            (0 < self.test_fraction < 1, "test fraction must be between 0 and 1"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}"),
            (self.init in INITS, f"init must be one of {', '.join(INITS)}"),
            (self.tta in TTA, f"tta must be one of {', '.join(TTA)}"),
        ]
        for ok, message in rules:
            if not ok:
                raise CnnlabError(message)
        augmentation_names(self.augment)
        return self

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Settings from a dict (a preset's, a checkpoint's); unknown keys are ignored, a value
        of the wrong type is a CnnlabError naming it."""
        if not isinstance(values, dict):
            raise CnnlabError(f"settings must be a JSON object, got {values!r}"[:200])
        kinds = get_type_hints(cls)
        known = {}
        for f in fields(cls):
            if f.name in values:
                value = values[f.name]
                if f.name == "tta":
                    value = tta_name(value)  # checkpoints before flips saved True/False
                if not _fits(value, kinds[f.name]):
                    raise CnnlabError(
                        f"setting {f.name!r} has a value of the wrong type: {value!r}"
                    )
                known[f.name] = value
        return cls(**known)

    def data_options(self) -> dict[str, Any]:
        """The arguments of ``data.load_splits`` that give this run's data."""
        return {
            "dataset": self.dataset,
            "split_name": self.split,
            "validation": self.validation,
            "train_subset": self.train_subset,
            "data": self.data,
            "image_size": self.image_size,
            "test_fraction": self.test_fraction,
        }


def _fits(value: Any, kind: Any) -> bool:
    """Is ``value`` (from JSON) of the annotated ``kind``? A whole number is also a float; a bool
    is neither."""
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind in (bool, str):
        return isinstance(value, kind)
    if kind is type(None):
        return value is None
    if get_origin(kind) is list:
        return isinstance(value, list) and all(_fits(v, get_args(kind)[0]) for v in value)
    if get_origin(kind) in (Union, types.UnionType):
        return any(_fits(value, k) for k in get_args(kind))
    return False
