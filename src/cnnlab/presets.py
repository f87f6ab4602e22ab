"""Named networks with their training settings: the chapter's rows, LeNet-5, ``fast`` and recipes
for Fashion-MNIST, CIFAR and the user's own pictures.

The chapter's presets use its hyper-parameters (network3.py: mini-batch 10,
60 epochs, η and λ as in the text, the 50k/10k/10k split) and report, as the
chapter does, the test accuracy at the epoch of best validation accuracy.
``--faithful`` adds network3's remaining conventions (see ``train.py``).
Published accuracies are MNIST test accuracies from Nielsen, *Neural Networks
and Deep Learning*, chapter 6.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .arch import parse_arch
from .errors import SpecError

CHAPTER = {"epochs": 60, "batch_size": 10, "split": "nielsen", "schedule": "constant"}
# The chapter's sigmoid networks start from network3's initialisation: from PyTorch's default
# (small fully-connected weights) they sit on a plateau at chance for their first epoch at η = 0.1.
SIGMOID_START = {"init": "network3"}
# What makes `fast` fast (docs/performance.md measures each part): resident data, one-cycle
# Nesterov SGD, batch norm, bf16 where native, channels-last, test-time shifts.
FAST_RECIPE = {
    "epochs": 1,
    "batch_size": 256,
    "lr": 0.4,
    "momentum": 0.9,
    "nesterov": True,
    "schedule": "onecycle",
    "l2": 0.05,
    "label_smoothing": 0.1,
    "split": "standard",
    "validation": 0,
    "precision": "auto",
    "channels_last": True,
    "tta": "shifts",
}

# The recipe of the CIFAR-10 speed records, in cnnlab's layers: a VGG-like net of 3×3 convolutions
# with batch norm, flips and padded crops of every batch, label smoothing, one-cycle Nesterov SGD,
# each channel standardised, and the mirror image averaged in at test time.
PICTURES_RECIPE = {
    **FAST_RECIPE,
    "epochs": 10,
    "batch_size": 256,
    "lr": 0.2,
    "l2": 80.0,  # weight decay 80·256/50,000 ≈ 4e-4
    "label_smoothing": 0.2,
    "augment": "crop,flip",
    "normalize": True,
    "tta": "flip",
}
PICTURES_ARCH = (
    "conv32x3p1-bn-conv64x3p1-bn-pool2-conv128x3p1-bn-conv128x3p1-bn-pool2"
    "-conv256x3p1-bn-pool2-conv256x3p1-bn-pool2-softmax10d0.2"
)


@dataclass(frozen=True)
class Preset:
    name: str
    arch: str
    description: str
    published: float | None = None  # the chapter's MNIST test accuracy, if it reports one
    settings: dict[str, Any] = field(default_factory=dict)  # TrainConfig values

    def layers(self) -> list[dict[str, Any]]:
        return parse_arch(self.arch)

    def spec(self, input_shape: tuple[int, ...] = (1, 28, 28)) -> dict[str, Any]:
        """The preset's network for inputs of ``input_shape``, without data-derived settings."""
        return {"input": list(input_shape), "layers": self.layers()}


PRESETS = {
    p.name: p
    for p in [
        Preset(
            "fast",
            "conv16x5s2-bn-convpool32x3-bn-fc64-softmax10",
            "the default: a small batch-norm convnet, 1 epoch of one-cycle SGD, bf16 where native",
            settings=FAST_RECIPE,
        ),
        Preset(
            "fast-long",
            "conv16x5s2-bn-convpool32x3-bn-fc256-softmax10",
            "the fast network with four times the fc units, random affine distortions, 4 epochs:"
            " past 99.5%",
            settings={**FAST_RECIPE, "epochs": 4, "lr": 0.3, "augment": "affine"},
        ),
        Preset(
            "best",
            "conv32x3-bn-conv32x3-bn-conv32x5s2p2-bn-conv64x3-bn-conv64x3-bn-conv64x5s2p2-bn"
            "-conv128x4-bn-softmax10d0.4",
            "past the chapter: seven conv layers with batch norm (strided 5×5 convs instead of"
            " pooling), random affine distortions, 30 epochs of one-cycle SGD, test-time shifts",
            settings={
                **FAST_RECIPE,
                "epochs": 30,
                "batch_size": 128,
                "lr": 0.1,
                "nesterov": False,
                "augment": "affine",
            },
        ),
        Preset(
            "fashion",
            "conv32x3p1-bn-pool2-conv64x3p1-bn-conv64x3p1-bn-pool2-conv128x3p1-bn-conv128x3p1-bn"
            "-pool2-softmax10",
            "Fashion-MNIST: five batch-norm 3×3 conv layers, crops and flips, 15 epochs,"
            " test-time flips and shifts",
            settings={
                **FAST_RECIPE,
                "dataset": "fashion-mnist",
                "epochs": 15,
                "batch_size": 128,
                "lr": 0.1,
                "l2": 0.25,
                "augment": "crop,flip",
                "tta": "flip+shifts",
            },
        ),
        Preset(
            "fashion-best",
            "conv64x3p1-bn-conv64x3p1-bn-pool2-conv128x3p1-bn-conv128x3p1-bn-pool2"
            "-conv256x3p1-bn-pool2-fc256-bn-softmax10d0.3",
            "Fashion-MNIST, longer: wider conv layers, crops, flips and cutout, 40 epochs,"
            " test-time flips and shifts",
            settings={
                **FAST_RECIPE,
                "dataset": "fashion-mnist",
                "epochs": 40,
                "batch_size": 128,
                "lr": 0.1,
                "l2": 0.25,
                "augment": "crop,flip,cutout",
                "tta": "flip+shifts",
            },
        ),
        Preset(
            "cifar10",
            PICTURES_ARCH,
            "CIFAR-10 in the spirit of its speed records: batch norm, crops and flips, label"
            " smoothing, one-cycle SGD, flips at test time, 10 epochs",
            settings={**PICTURES_RECIPE, "dataset": "cifar10"},
        ),
        Preset(
            "pictures",
            PICTURES_ARCH,
            "your own pictures (--data DIR): the cifar10 recipe over 30 epochs in mini-batches of"
            " 32, a tenth of the training pictures held out for validation",
            settings={
                **PICTURES_RECIPE,
                "split": "standard",
                "validation": None,
                "epochs": 30,
                "batch_size": 32,
                "lr": 0.02,
                "l2": 0.0,  # λ·m/n would decay a small folder's weights far too fast
            },
        ),
        Preset(
            "fc100",
            "fc100:sigmoid-softmax10",
            "the shallow baseline: one fully-connected hidden layer of 100 sigmoid units",
            0.9780,
            {**CHAPTER, **SIGMOID_START, "lr": 0.1},
        ),
        Preset(
            "conv1",
            "convpool20x5:sigmoid-fc100:sigmoid-softmax10",
            "one conv-pool layer (20 maps of 5×5, max-pool 2×2), FC-100 sigmoid",
            0.9878,
            {**CHAPTER, **SIGMOID_START, "lr": 0.1},
        ),
        Preset(
            "conv2",
            "convpool20x5:sigmoid-convpool40x5:sigmoid-fc100:sigmoid-softmax10",
            "two conv-pool layers (20 and 40 maps), FC-100 sigmoid",
            0.9906,
            {**CHAPTER, **SIGMOID_START, "lr": 0.1},
        ),
        Preset(
            "conv2-relu",
            "convpool20x5-convpool40x5-fc100-softmax10",
            "conv2 with rectified linear units, η = 0.03, λ = 0.1",
            0.9923,
            {**CHAPTER, "lr": 0.03, "l2": 0.1},
        ),
        Preset(
            "conv2-relu-expanded",
            "convpool20x5-convpool40x5-fc100-softmax10",
            "conv2-relu on the expanded training data (each image shifted by one pixel 4 ways)",
            0.9937,
            {**CHAPTER, "lr": 0.03, "l2": 0.1, "expand": True},
        ),
        Preset(
            "conv2-relu-expanded-fc",
            "convpool20x5-convpool40x5-fc100-fc100-softmax10",
            "conv2-relu-expanded with an extra fully-connected layer of 100 ReLUs",
            0.9943,
            {**CHAPTER, "lr": 0.03, "l2": 0.1, "expand": True},
        ),
        Preset(
            "dropout",
            "convpool20x5-convpool40x5-fc1000d0.5-fc1000d0.5-softmax10d0.5",
            "two FC-1000 ReLU layers, dropout 0.5 on the fully-connected layers, expanded data,"
            " 40 epochs",
            0.9960,
            {**CHAPTER, "epochs": 40, "lr": 0.03, "expand": True},
        ),
        Preset(
            "lenet5",
            "conv6x5p2:lecun-subsample2-conv16x5+c3:lecun-subsample2-conv120x5:lecun-fc84:lecun"
            "-softmax10",
            "LeNet-5 as published (LeCun et al. 1998; test error 0.95% without distortions):"
            " C1, S2 and S4 subsampling with a trainable coefficient and bias, C3 joined to S2 by"
            " the paper's table, C5, F6, all through 1.7159·tanh(2a/3), 20 passes over the"
            " 60,000 training digits, inputs standardised to mean 0 and variance 1 (as the"
            " paper's levels -0.1 and 1.175 intend). Differences: the 28×28 digits are"
            " zero-padded to 32×32 after standardising (the padding is the mean level, not the"
            " background's), a softmax output with the log-likelihood cost instead of 10 RBF"
            " units, mini-batch SGD with momentum and L2 regularisation (λ = 1) instead of"
            " stochastic diagonal Levenberg-Marquardt, PyTorch's initialisation instead of"
            " U(±2.4/fan-in)",
            None,
            {
                "epochs": 20,
                "batch_size": 32,
                "lr": 0.01,
                "momentum": 0.9,
                "l2": 1.0,  # weight decay 1·32/60,000 ≈ 5e-4
                "normalize": True,
                "schedule": "cosine",
                "split": "standard",
                "validation": 0,
            },
        ),
    ]
}
DEFAULT = "fast"
DEFAULT_FOR = {
    "mnist": "fast",
    "fashion-mnist": "fashion",
    "cifar10": "cifar10",
    "cifar100": "cifar10",
}


def default_preset(dataset: str | None = None, folder: bool = False) -> str:
    """The preset a run uses when none is named: one tuned for its data."""
    if folder:
        return "pictures"
    return DEFAULT_FOR.get(dataset or "mnist", DEFAULT)


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise SpecError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
