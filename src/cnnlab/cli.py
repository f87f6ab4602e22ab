"""`cnnlab …`: the command line. It parses, calls the library and prints; nothing more.

Bad input of any kind ends in one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

from . import data as datasets
from . import distributed, masks, probe
from .allocator import keep_freed_memory
from .arch import HELP as ARCH_HELP
from .arch import format_arch, parse_arch
from .augment import AUGMENTATIONS
from .config import SCHEDULES, TrainConfig
from .ensemble import evaluate_folder, train_members
from .errors import CnnlabError, Interrupted
from .network import INITS, Network
from .precision import PRECISIONS
from .precision import resolve as resolve_precision
from .predict import TTA, accuracy, class_names, prepare_picture, probabilities
from .presets import PRESETS, default_preset, get_preset
from .reproduce import ROW_NAMES, reproduce
from .runs import CHECKPOINT, MODEL, resumed_settings, trained_config
from .train import fit, network_spec, new_network, pick_device

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line, pointing to --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not DEPTHxHEIGHTxWIDTH") from None
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not DEPTHxHEIGHTxWIDTH")
    return shape


def _size(text: str) -> list[int]:
    try:
        size = [int(s) for s in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HEIGHTxWIDTH, e.g. 32x32") from None
    if len(size) != 2 or not 1 <= min(size) <= max(size) <= 4096:
        raise argparse.ArgumentTypeError(f"{text!r} is not HEIGHTxWIDTH from 1x1 to 4096x4096")
    return size


# ---- train --------------------------------------------------------------------------------
DATA_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    (
        "--dataset",
        {
            "choices": datasets.DATASETS,
            "help": "a built-in data set (default mnist): "
            + "; ".join(f"{b.name}, {b.description}" for b in datasets.BUILTINS.values()),
        },
    ),
    (
        "--data",
        {
            "metavar": "DIR",
            "help": "a folder of your pictures: DIR/CLASS/*.png|jpg|bmp|webp, or DIR/train/CLASS/…"
            " and DIR/test/CLASS/… (and DIR/val/CLASS/…)",
        },
    ),
    (
        "--image-size",
        {
            "type": _size,
            "metavar": "HxW",
            "help": "--data: resize (keeping the aspect ratio) and centre-crop every picture to"
            " this (default: the folder's most common size, at most 64 on a side)",
        },
    ),
    (
        "--test-fraction",
        {
            "type": float,
            "metavar": "F",
            "help": "--data without a test/ folder: hold out this share of each class for testing"
            " (default 0.2, the same pictures every run)",
        },
    ),
]
TRAIN_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    *DATA_OPTIONS,
    (
        "--split",
        {
            "choices": datasets.SPLITS,
            "help": "nielsen: 50k/10k/10k as the chapter; standard: 60k minus --validation",
        },
    ),
    (
        "--validation",
        {
            "type": int,
            "metavar": "N",
            "help": "standard split: hold out the last N training images (0: none)",
        },
    ),
    ("--train-subset", {"type": int, "metavar": "N", "help": "train on the first N images only"}),
    (
        "--normalize",
        {
            "action": argparse.BooleanOptionalAction,
            "help": "standardise each input channel by the training pictures' mean and std"
            " (kept with the network)",
        },
    ),
    ("--epochs", {"type": int}),
    ("--batch-size", {"type": int, "help": "mini-batch size m"}),
    ("--lr", {"type": float, "help": "learning rate η"}),
    ("--schedule", {"choices": SCHEDULES, "help": "learning-rate schedule"}),
    ("--optimizer", {"choices": ("sgd", "adam")}),
    ("--momentum", {"type": float}),
    ("--l2", {"type": float, "help": "L2 regularisation λ, as in the chapter (decay η·λ·m/n)"}),
    ("--label-smoothing", {"type": float}),
    (
        "--ema",
        {
            "type": float,
            "metavar": "DECAY",
            "help": "evaluate and save a moving average of the weights, moved 1 − DECAY of the"
            " way after every step (e.g. 0.999 remembers about 1,000 steps; 0: none)",
        },
    ),
    (
        "--expand",
        {
            "action": "store_const",
            "const": True,
            "help": "the chapter's 5× expansion: every image shifted 1 pixel 4 ways",
        },
    ),
    (
        "--augment",
        {
            "metavar": "A,B",
            "help": "random changes to every mini-batch, joined by commas: shift, affine or"
            f" elastic distortions (digits); {', '.join(list(AUGMENTATIONS)[3:])} (pictures)",
        },
    ),
    ("--seed", {"type": int}),
    ("--init", {"choices": INITS, "help": "initial weights: PyTorch's, or network3.py's"}),
    ("--device", {"choices": ("auto", "cpu", "cuda")}),
    (
        "--precision",
        {
            "choices": PRECISIONS,
            "help": "bf16/fp16 mixed precision (fp32 weights); auto: bf16 where the device has it",
        },
    ),
    (
        "--channels-last",
        {
            "action": argparse.BooleanOptionalAction,
            "help": "store maps as (batch, height, width, depth): faster convolutions on CPUs",
        },
    ),
    (
        "--tta",
        {
            "choices": TTA,
            "help": "evaluate on the mean prediction over each image and its 1-pixel shifts"
            " and/or its mirror image",
        },
    ),
]


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """What a training run is: the network (preset or arch) and its settings."""
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--preset",
        help="a named network with its settings (default: one tuned for the data: fast for"
        " MNIST, fashion for Fashion-MNIST, cifar10 for CIFAR, pictures for --data)",
    )
    which.add_argument("--arch", metavar="SPEC", help="a network in the short form")
    for flag, options in TRAIN_OPTIONS:
        p.add_argument(flag, **options)
    p.add_argument("--dropout", type=float, help="dropout on the input of every fc/softmax layer")
    p.add_argument(
        "--faithful",
        action="store_true",
        help="network3.py's conventions: its init, no reshuffle, dropout scaled at test",
    )


def _add_train(commands: argparse._SubParsersAction) -> None:
    presets = "\n".join(f"  {p.name}: {p.description}" for p in PRESETS.values())
    p = commands.add_parser(
        "train",
        help="train a network and report its test accuracy",
        description="Train a network with mini-batch SGD on MNIST, another built-in data set"
        " (--dataset) or a folder of your own pictures (--data). The last line printed is the"
        " test accuracy at the epoch of best validation accuracy.",
        epilog=f"presets:\n{presets}\n\n--arch, the short form of a network:\n\n{ARCH_HELP}\n"
        "With --arch and no --preset, settings start from the chapter's: SGD, mini-batch 10,"
        " η = 0.1, 10 epochs, the nielsen split.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_options(p)
    p.add_argument(
        "--kernels",
        choices=("native", "explicit"),
        default="native",
        help="native PyTorch ops, or the readable explicit backprop kernels",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="folder for checkpoint, model and metrics log (default runs/NAME-TIME)",
    )
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--processes",
        type=int,
        metavar="N",
        help="train data-parallel in N processes on this machine (the cores shared among them),"
        " as `torchrun --standalone --nproc-per-node N -m cnnlab train …` does; see"
        " docs/distributed.md for several machines",
    )
    p.set_defaults(run=_train)


@dataclass
class _Plan:
    """A training run the arguments ask for: its name, settings and how its spec is made."""

    name: str
    config: TrainConfig
    layers: list[dict[str, Any]]
    from_preset: bool  # a preset's output layer is sized to the data's classes
    saved_spec: dict[str, Any] | None = None  # a resumed run's

    def spec(self, data: datasets.Splits) -> dict[str, Any]:
        if self.saved_spec is not None:
            return self.saved_spec
        return network_spec(self.layers, data, self.config, fit_output=self.from_preset)


def _option_values(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig values given on the command line."""
    values = {
        flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_"))
        for flag, _ in TRAIN_OPTIONS
    }
    values = {k: v for k, v in values.items() if v is not None}
    if args.faithful:
        values["faithful"] = True
    if "dataset" in values and "data" in values:
        raise CnnlabError("--dataset names a built-in data set, --data a folder: give one")
    return values


def _train_setup(args: argparse.Namespace) -> _Plan:
    """The run the arguments ask for (a new one, or the one in --out to resume)."""
    values = _option_values(args)
    if args.resume:
        if args.out is None:
            raise CnnlabError("--resume needs --out DIR, the folder of the run to continue")
        extra = ["arch"] * (args.arch is not None) + ["preset"] * (args.preset is not None)
        extra += ["dropout"] * (args.dropout is not None)
        spec, config = resumed_settings(args.out, {**values, **dict.fromkeys(extra)})
        return _Plan(Path(args.out).name, config, spec["layers"], False, spec)
    if args.arch is not None:
        name, settings, layers = "arch", {}, parse_arch(args.arch)
    else:
        preset = get_preset(args.preset or default_preset(values.get("dataset"), "data" in values))
        name, settings, layers = preset.name, preset.settings, preset.layers()
    if "data" in values:  # a folder replaces the preset's built-in data set
        settings = {k: v for k, v in settings.items() if k != "dataset"}
    if args.dropout is not None:
        layers = [
            {**layer, "dropout": args.dropout} if layer["type"] in ("fc", "softmax") else layer
            for layer in layers
        ]
    config = TrainConfig.from_dict({**settings, **values}).check()
    return _Plan(name, config, layers, args.arch is None)


def _load_data(config: TrainConfig, quiet: bool = False) -> datasets.Splits:
    """The run's data, with a progress bar while a picture folder is decoded."""
    progress = not quiet and sys.stderr.isatty()
    return datasets.load_splits(**config.data_options(), log=_info, progress=progress)


def _train(args: argparse.Namespace) -> int:
    plan = _train_setup(args)  # bad settings are refused here, before any process starts
    if args.processes is not None:
        if not 1 <= args.processes <= 1024:
            raise CnnlabError("--processes must be a whole number from 1 to 1,024")
        distributed.World(0, args.processes).share(plan.config.batch_size)
        resume = f"cnnlab train --out {args.out or 'RUN_FOLDER'} --resume --processes N"
        return distributed.launch_here(args.processes, _without(args.argv, "--processes"), resume)
    team = distributed.join(plan.config.device)
    try:
        _train_run(args, plan, team)
    finally:
        distributed.leave()
    return 0


def _without(argv: list[str], flag: str) -> list[str]:
    """``argv`` without ``flag`` and its value (``--flag N`` or ``--flag=N``)."""
    kept, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word == flag:
            skip = True
        elif not word.startswith(flag + "="):
            kept.append(word)
    return kept


def _train_run(args: argparse.Namespace, plan: _Plan, team: distributed.World) -> None:
    config = plan.config
    named = args.out or f"runs/{plan.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = Path(distributed.from_leader(team, named))  # the leader's clock names the folder
    if team.leader:
        if not args.resume and (out / CHECKPOINT).exists():
            raise CnnlabError(
                f"{out} already holds a run: add --resume to continue it, or pick another --out"
            )
        out.mkdir(parents=True, exist_ok=True)  # an unwritable --out fails here, before any work
    data = distributed.first_then_others(team, lambda: _load_data(config, args.quiet))
    spec = plan.spec(data)
    network = new_network(spec, config, kernels=args.kernels)
    device = pick_device(config.device)
    val = f"{len(data.validation):,} validation, " if data.validation else ""
    shape = "×".join(map(str, data.input_shape))
    parameters = sum(layer.parameter_count() for layer in network.layers)
    processes = f" in {team.size} processes" if team.size > 1 else ""
    resume = f"continue with `cnnlab train --out {out} --resume`" + (
        " (with --processes N or torchrun, any N)" if team.size > 1 else ""
    )
    header = (
        f"{plan.name}: {format_arch(spec['layers'])}  ({parameters:,}"
        f" parameters)\n{data.name}: {len(data.classes)} classes, {shape} pictures;"
        f" {len(data.train):,} train, {val}{len(data.test):,} test;"
        f" {_epochs(config.epochs)} of mini-batch {config.batch_size},"
        f" η={config.lr:g}, λ={config.l2:g}{_ema_text(config.ema)} on {device.type}"
        f" ({resolve_precision(config.precision, device)}, {args.kernels} kernels){processes};"
        f" saving to {out}"
    )
    try:
        result = fit(
            network,
            data,
            config,
            out,
            resume=args.resume,
            progress=not args.quiet and sys.stderr.isatty(),
            log=print,
            starting=partial(_info, header),
        )
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; the last finished epoch is saved: {resume}") from None
    except RuntimeError as exc:
        if not distributed.peer_failure(exc):
            raise
        raise CnnlabError(
            f"another process of this run stopped ({str(exc).splitlines()[0][:100]});"
            f" the last finished epoch is saved: {resume}"
        ) from None
    if not team.leader:
        return
    chosen = (
        f"at epoch {result.best_epoch}, best validation {result.best_validation:.2%}"
        if result.best_validation is not None
        else f"after epoch {result.best_epoch}"
    )
    print(f"test accuracy: {result.test_accuracy:.2%} ({chosen}; model in {out / MODEL})")


def _epochs(n: int) -> str:
    return f"{n} epoch{'s' * (n != 1)}"


def _ema_text(decay: float) -> str:
    """What the header says of a run that evaluates a moving average of its weights."""
    return f", evaluating the weights' moving average (decay {decay:g})" if decay else ""


# ---- ensembles and the chapter's table ------------------------------------------------------
def _ensemble_train(args: argparse.Namespace) -> None:
    if args.members < 1:
        raise CnnlabError("--members must be at least 1")
    plan = _train_setup(args)
    config = plan.config
    out = Path(args.out or f"runs/{plan.name}-ensemble")
    spec = plan.spec(_load_data(config))
    header = (
        f"{args.members} × {plan.name}: {format_arch(spec['layers'])}, seeds {config.seed}–"
        f"{config.seed + args.members - 1}, {_epochs(config.epochs)} each; saving to {out}"
    )
    try:
        train_members(
            spec, config, args.members, out, args.processes, log=print, epoch_lines=True,
            starting=partial(_info, header),
        )  # fmt: skip
    except KeyboardInterrupt:
        raise Interrupted(
            "interrupted; finished epochs are saved: run the same command to continue"
        ) from None
    _ensemble_report(out)


def _ensemble_report(folder: Path | str, mistakes: str | None = None) -> None:
    scores = evaluate_folder(folder, mistakes)
    members = scores["members"]
    for index, member in enumerate(members, 1):
        print(f"member {index}: test accuracy {member:.2%}")
    spread = f" ± {statistics.stdev(members):.2%}" if len(members) > 1 else ""
    print(f"members' mean: {statistics.mean(members):.2%}{spread}")
    print(f"averaged probabilities: test accuracy {scores['average']:.2%}")
    print(f"majority vote: test accuracy {scores['vote']:.2%} ({len(members)} members)")


def _ensemble_evaluate(args: argparse.Namespace) -> None:
    _ensemble_report(args.folder, args.mistakes)
    if args.mistakes:
        print(f"the test digits the majority vote gets wrong: {args.mistakes}")


def _add_ensemble(commands: argparse._SubParsersAction) -> None:
    ensemble = commands.add_parser("ensemble", help="train and evaluate ensembles of networks")
    sub = ensemble.add_subparsers(
        dest="ensemble_command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    p = sub.add_parser(
        "train",
        help="train several networks with different seeds (in parallel processes)",
        description="Train --members copies of a network, seeds seed, seed+1, …, each in its own"
        " run folder under --out; then report each member, the averaged probabilities and the"
        " majority vote. Running the same command again continues unfinished members.",
    )
    _add_run_options(p)
    p.add_argument("--members", type=int, default=5, help="how many networks (default 5)")
    p.add_argument("--processes", type=int, help="parallel processes (default: one per core)")
    p.add_argument(
        "--out", metavar="DIR", help="folder for the members (default runs/NAME-ensemble)"
    )
    p.set_defaults(run=_ensemble_train, resume=False)
    p = sub.add_parser("evaluate", help="test accuracy of members, average and vote")
    p.add_argument("folder", help="the folder given to `cnnlab ensemble train --out`")
    p.add_argument(
        "--mistakes", metavar="FILE", help="draw the test images the majority vote gets wrong (PNG)"
    )
    p.set_defaults(run=_ensemble_evaluate)


def _reproduce(args: argparse.Namespace) -> None:
    chosen = [mode for mode in ("faithful", "fast", "quick") if getattr(args, mode)]
    mode = chosen[0] if chosen else "chapter"
    rows = [r.strip() for r in args.rows.split(",")] if args.rows else None
    out = Path(args.out or f"reproduce-{mode}")
    reproduce(out, rows, mode, args.runs, log=_info)
    print((out / "results.md").read_text(), end="")


def _add_reproduce(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "reproduce",
        help="re-measure the chapter's results table, row by row",
        description="Train every row of the chapter's table (best of --runs, as the chapter"
        " reports, and mean ± std), writing results.md and results.json to --out. A finished"
        " row is not run again; an interrupted run resumes. The full table at the chapter's"
        " settings takes many hours on a CPU.",
    )
    p.add_argument(
        "--rows", metavar="A,B", help=f"rows to run (default all: {', '.join(ROW_NAMES)})"
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--faithful", action="store_true", help="network3.py's exact conventions")
    mode.add_argument("--fast", action="store_true", help="same architectures, a faster schedule")
    mode.add_argument("--quick", action="store_true", help="a smoke test on 3,000 images")
    p.add_argument("--runs", type=int, default=3, help="runs per row (default 3)")
    p.add_argument("--out", metavar="DIR", help="results folder (default reproduce-MODE)")
    p.set_defaults(run=_reproduce)


# ---- evaluate, predict, summary, presets ------------------------------------------------------
def _checkpoint(path: str) -> Path:
    """A checkpoint file, or the model file of a run folder."""
    candidate = Path(path)
    return candidate / MODEL if candidate.is_dir() else candidate


def _saved_data(meta: dict[str, Any], network: Network, args: argparse.Namespace) -> Any:
    """The data a saved network was trained on (or the one the arguments name instead)."""
    config = trained_config(meta)
    if getattr(args, "dataset", None) is not None:
        config.dataset, config.data = args.dataset, None
    if getattr(args, "data", None) is not None:  # another folder: at the size the network takes
        config.data, config.image_size = args.data, list(network.input_shape[1:])
    data = datasets.load_splits(**config.data_options(), log=_info, progress=sys.stderr.isatty())
    if data.input_shape != network.input_shape or len(data.classes) != network.classes:
        raise CnnlabError(
            f"this network takes {'×'.join(map(str, network.input_shape))} input with"
            f" {network.classes} classes; {data.name} has {'×'.join(map(str, data.input_shape))}"
            f" pictures in {len(data.classes)} classes"
        )
    return config, data


def _evaluate(args: argparse.Namespace) -> None:
    network, meta = Network.load(_checkpoint(args.checkpoint))
    network.to(pick_device(args.device))
    config, data = _saved_data(meta, network, args)
    measure = partial(accuracy, network, precision=config.precision, tta=config.tta)
    how = "" if config.tta == "none" else f", averaged over test-time views ({config.tta})"
    if data.validation is not None:
        print(f"validation accuracy: {measure(data.validation):.2%}")
    print(f"test accuracy: {measure(data.test):.2%} ({data.name}, {len(data.test):,} images{how})")


def _predict(args: argparse.Namespace) -> None:
    import torch

    if args.top < 1:
        raise CnnlabError("--top must be at least 1")
    if args.checkpoint.endswith(".onnx"):
        from .export import OnnxModel

        model = OnnxModel(args.checkpoint)
        network, meta, score = model, model.metadata, model.probabilities
    else:
        network, meta = Network.load(_checkpoint(args.checkpoint))
        score = partial(probabilities, network)
    classes = class_names(network, meta)
    images = torch.stack([prepare_picture(path, network, meta) for path in args.images])
    for path, p in zip(args.images, score(images)):
        top = p.topk(min(args.top, len(p)))
        ranked = ", ".join(f"{classes[i]} {v:.1%}" for v, i in zip(top.values, top.indices))
        print(f"{path}: {classes[top.indices[0]]}  ({ranked})")


def _export(args: argparse.Namespace) -> None:
    from .export import TOLERANCE, export_onnx

    network, meta = Network.load(_checkpoint(args.checkpoint))
    config, data = _saved_data(meta, network, args)
    tta = args.tta or config.tta
    test = data.test.images[: args.verify]
    check = export_onnx(network, meta, args.out, test, tta)
    views = "" if tta == "none" else f", averaged over test-time views ({tta}) as evaluate does"
    print(
        f"wrote {args.out}: ONNX, input float32 pixels in [0, 1] of batch ×"
        f" {'×'.join(map(str, network.input_shape))},"
        f" output probabilities of {network.classes} classes{views}; onnxruntime agrees with"
        " cnnlab on"
        f" {check.images:,} test images of {data.name} (largest difference"
        f" {check.largest_difference:.1e} ≤ {TOLERANCE:g}, no class differs)"
    )


def _add_export(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "export",
        help="write a trained network as an ONNX model (verified with onnxruntime)",
        description="Write a trained network as an ONNX model that takes float32 pixels in"
        " [0, 1], (batch, depth, height, width) with any batch size, and gives class"
        " probabilities; its standardisation is inside the graph, its class names, input shape"
        " and preparation are in the model's metadata. The file is written only if"
        " onnxruntime's probabilities on the network's test images are within 1e-4 of cnnlab's"
        ' and every class agrees. Needs pip install "cnnlab[export]".',
    )
    p.add_argument("checkpoint", help="a .safetensors file, or a run folder")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="default onnx")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write, e.g. model.onnx")
    p.add_argument(
        "--verify",
        type=_positive,
        default=1000,
        metavar="N",
        help="test images to verify on (default 1000)",
    )
    p.add_argument(
        "--tta",
        choices=TTA,
        help="test-time views averaged inside the model (default: the run's own, as `cnnlab"
        " evaluate` scores it; none: one view, the fastest)",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--dataset", choices=datasets.DATASETS, help="verify on this data set's test images"
    )
    which.add_argument("--data", metavar="DIR", help="verify on this folder's test pictures")
    p.set_defaults(run=_export)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError(f"{text!r} is not from 1 to 1,000,000")
    return value


def _summary(args: argparse.Namespace) -> None:
    if args.checkpoint:
        network, _ = Network.load(_checkpoint(args.checkpoint))
    else:
        layers = (
            parse_arch(args.arch)
            if args.arch is not None
            else get_preset(args.preset or default_preset()).layers()
        )
        network = Network.shapes_only({"input": list(args.input), "layers": layers})
    print(network.summary())


def _presets(args: argparse.Namespace) -> None:
    width = max(len(name) for name in PRESETS)
    for p in PRESETS.values():
        published = f"published {p.published:.2%}" if p.published else "no chapter figure"
        print(f"{p.name:<{width}}  {published:<17}  {p.arch}\n{'':<{width}}  {p.description}")


# ---- data ---------------------------------------------------------------------------------
def _data_fetch(args: argparse.Namespace) -> None:
    arrays, source = datasets.fetch(
        args.name, from_path=args.from_path, force=args.force, log=_info
    )
    print(
        f"{args.name}: {len(arrays['train_labels']):,} train + {len(arrays['test_labels']):,}"
        f" test images from {source}, cached in {datasets.cache_path(args.name)}"
    )


def _data_info(args: argparse.Namespace) -> None:
    import numpy as np

    folder = args.name not in datasets.DATASETS
    dataset = datasets.open_dataset(
        args.name if not folder else "mnist",
        data=args.name if folder else None,
        image_size=args.image_size,
        log=_info,
        progress=sys.stderr.isatty(),
    )
    depth, height, width = dataset.input_shape
    kind = "colour" if depth == 3 else "grey"
    print(f"{dataset.name}  (source: {dataset.source})")
    print(f"  {len(dataset.classes)} classes, pictures of {height}×{width} {kind} (uint8)")
    parts = [("train", dataset.train), ("val", dataset.validation), ("test", dataset.test)]
    for name, part in parts:
        if part is None:
            continue
        counts = np.bincount(part.labels.numpy(), minlength=len(dataset.classes))
        mean = float(part.images[:10_000].float().mean()) / 255
        print(f"  {name}: {len(part):,} pictures, mean pixel {mean:.3f}")
        print("    per class: " + ", ".join(f"{c} {n:,}" for c, n in zip(dataset.classes, counts)))
    for note in dataset.notes:
        print(f"  {note}")
    if dataset.mnist_family:
        print(
            "  splits: nielsen = 50,000 train / 10,000 validation / 10,000 test;"
            " standard = 60,000 − validation / 10,000 test"
        )


# ---- show, filter, serve: looking inside ----------------------------------------------------
def _picture(
    draw: Callable[[argparse.Namespace, Any], tuple[Any, str]],
) -> Callable[[argparse.Namespace], None]:
    """A `show` handler: ``draw(args, plots)`` gives (figure, what it shows); save it, say so.

    matplotlib is imported here, only for the commands that draw.
    """

    def run(args: argparse.Namespace) -> None:
        from . import plots

        figure, what = draw(args, plots)
        plots.save(figure, args.out)
        print(f"wrote {args.out}: {what}")

    return run


def _show_filters(args: argparse.Namespace, plots: Any) -> tuple[Any, str]:
    network, _ = Network.load(_checkpoint(args.checkpoint))
    banks = probe.filters(network)
    return plots.filters_figure(banks), f"the filters of {len(banks)} conv layer(s)"


def _show_maps(args: argparse.Namespace, plots: Any) -> tuple[Any, str]:
    network, meta = Network.load(_checkpoint(args.checkpoint))
    image = prepare_picture(args.image, network, meta)
    outputs = probe.stage_outputs(network, image[None])
    classes = class_names(network, meta)
    guess = classes[int(outputs[-1].argmax())]
    title = f"{Path(args.image).name} through {format_arch(network.spec()['layers'])}"
    figure = plots.maps_figure(probe.stages(network), outputs, image, classes, title)
    return figure, f"the feature maps of every layer (the network says {guess})"


def _test_predictions(args: argparse.Namespace) -> tuple[Network, dict[str, Any], Any, Any]:
    """The network, its metadata, its data set's test part and the predicted class of each image."""
    network, meta = Network.load(_checkpoint(args.checkpoint))
    _, data = _saved_data(meta, network, args)
    test = data.test
    return network, meta, test, probe.predictions(network, test, progress=sys.stderr.isatty())


def _show_mistakes(args: argparse.Namespace, plots: Any) -> tuple[Any, str]:
    if args.count < 1:
        raise CnnlabError("--count must be at least 1")
    network, meta, test, predicted = _test_predictions(args)
    found = probe.mistakes(test, predicted, args.count)
    wrong = int((predicted != test.labels).sum())
    title = f"{wrong:,} of {len(test):,} test images misclassified; the first {len(found.labels)}"
    figure = plots.mistakes_figure(found, class_names(network, meta), title)
    return figure, f"{len(found.labels)} of the {wrong:,} misclassified test images"


def _show_confusion(args: argparse.Namespace, plots: Any) -> tuple[Any, str]:
    network, meta, test, predicted = _test_predictions(args)
    matrix = probe.confusion_matrix(test.labels, predicted, network.classes)
    title = f"confusion matrix of {Path(args.checkpoint).name} on the test set"
    figure = plots.confusion_figure(matrix, class_names(network, meta), title)
    return figure, f"the confusion matrix ({int(matrix.trace()):,} right)"


def _show_curves(args: argparse.Namespace, plots: Any) -> tuple[Any, str]:
    history = probe.training_history(args.run_dir)
    title = f"training run {Path(args.run_dir).resolve().name}"
    return plots.curves_figure(history, title), _epochs(len(history))


def _add_show(commands: argparse._SubParsersAction) -> None:
    show = commands.add_parser(
        "show",
        help="pictures of a network: filters, feature maps, mistakes, confusion, curves",
        description="Draw what a trained network learned and does, as PNG (or SVG/PDF) files.",
    )
    pictures = show.add_subparsers(
        dest="show_command", required=True, metavar="PICTURE", parser_class=_Parser
    )
    checkpoint_help = "a .safetensors file, or a run folder"
    for name, draw, help_text in [
        ("filters", _show_filters, "every conv layer's filters as grids of light/dark blocks"),
        ("maps", _show_maps, "the feature maps of every layer for one input image"),
        ("mistakes", _show_mistakes, "a grid of misclassified test images, true and guessed"),
        ("confusion", _show_confusion, "the confusion matrix on the test set"),
    ]:
        p = pictures.add_parser(name, help=help_text, description=help_text)
        p.add_argument("checkpoint", help=checkpoint_help)
        if name == "maps":
            p.add_argument("image", help="a picture, prepared as `cnnlab predict` does")
        if name == "mistakes":
            p.add_argument("--count", type=int, default=44, help="how many to show (default 44)")
        p.add_argument("--out", default=f"{name}.png", metavar="FILE", help=f"default {name}.png")
        p.set_defaults(run=_picture(draw))
    p = pictures.add_parser(
        "curves", help="loss and accuracy per epoch of a training run (its metrics.jsonl)"
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder, or its metrics.jsonl")
    p.add_argument("--out", default="curves.png", metavar="FILE", help="default curves.png")
    p.set_defaults(run=_picture(_show_curves))


def _filter(args: argparse.Namespace) -> None:
    mask = masks.get_mask(args.mask) if args.mask else masks.parse_kernel(args.kernel)
    channels, height, width = masks.filter_file(args.image, args.out, mask, args.scale, args.grey)
    kind = "colour" if channels == 3 else "grey"
    name = f"the {args.mask} mask" if args.mask else "your mask"
    print(f"wrote {args.out}: {width}×{height} {kind} image filtered with {name}")


def _add_filter(commands: argparse._SubParsersAction) -> None:
    listing = "\n".join(f"  {m.name:<17} {m.description}" for m in masks.MASKS.values())
    p = commands.add_parser(
        "filter",
        help="filter an image with a classic convolution mask (edges, blur, …)",
        description="Slide a fixed mask over an image, each colour channel on its own: what a"
        " conv layer does with learned weights. The output keeps the input's size.",
        epilog=f"masks:\n{listing}\n\n--kernel takes rows such as '0 -1 0; -1 5 -1; 0 -1 0'"
        " or JSON '[[0,-1,0],[-1,5,-1],[0,-1,0]]'.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("image", help="a PNG/JPEG (grey or colour)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--mask", metavar="NAME", help="a named mask (see below)")
    which.add_argument("--kernel", metavar="MATRIX", help="your own mask")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the result")
    p.add_argument(
        "--scale",
        choices=masks.SCALINGS,
        default="auto",
        help="how responses become pixels: clip (blur, sharpen), abs (edge strength),"
        " signed (0 is grey); auto picks clip or abs from the mask's sum",
    )
    p.add_argument("--grey", action="store_true", help="convert a colour image to grey first")
    p.set_defaults(run=_filter)


def _serve(args: argparse.Namespace) -> None:
    try:
        from .web import serve
    except ModuleNotFoundError as exc:
        if exc.name not in ("flask", "werkzeug"):
            raise
        raise CnnlabError('the explorer needs Flask: pip install "cnnlab[web]"') from None
    serve(args.checkpoint or "runs", host=args.host, port=args.port, log=_info)


def _add_serve(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "serve",
        help="a web page to draw digits and watch the network look at them",
        description="Serve the explorer: draw a digit and see its 28×28 input, the class"
        " probabilities and every feature map; switch checkpoints; follow a running"
        " `cnnlab train`.",
    )
    p.add_argument(
        "checkpoint",
        nargs="?",
        help="a checkpoint, or a folder of runs and checkpoints (default runs/)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free one)")
    p.set_defaults(run=_serve)


# ---- the parser and main --------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cnnlab",
        description="Convolutional networks on small images: train the chapter's networks,"
        " look inside them, use them.",
        epilog="Start with `cnnlab train` (the default network, about a minute on a laptop CPU),"
        " then `cnnlab presets`. `cnnlab COMMAND --help` explains each command.",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    _add_train(commands)
    _add_ensemble(commands)
    _add_reproduce(commands)

    p = commands.add_parser("evaluate", help="test accuracy of a saved network")
    p.add_argument("checkpoint", help="a .safetensors file, or a run folder")
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--dataset", choices=datasets.DATASETS, help="default: the one it was trained on"
    )
    which.add_argument(
        "--data", metavar="DIR", help="a folder of pictures in the classes it was trained on"
    )
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.set_defaults(run=_evaluate)

    p = commands.add_parser(
        "predict",
        help="classify pictures (PNG, JPEG, BMP, WebP) and print class names",
        description="Each picture is prepared as the network's training pictures were: for a"
        " network trained on MNIST, as MNIST's digits (grey, inverted if the background is light,"
        " fitted into 20×20, centred by mass in 28×28); for any other, grey or colour as the"
        " network takes it, resized keeping its aspect ratio and centre-cropped.",
    )
    p.add_argument(
        "checkpoint", help="a .safetensors file, a run folder, or an exported .onnx model"
    )
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--top", type=int, default=3, help="how many classes to show per image")
    p.set_defaults(run=_predict)

    p = commands.add_parser(
        "summary",
        help="layers, shapes, parameters, FLOPs, receptive fields",
        epilog=ARCH_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("checkpoint", nargs="?", help="a .safetensors file, or a run folder")
    which.add_argument("--preset")
    which.add_argument("--arch", metavar="SPEC")
    p.add_argument(
        "--input",
        type=_shape,
        default=(1, 28, 28),
        metavar="DxHxW",
        help="input shape for --arch/--preset (default 1x28x28; e.g. 3x32x32)",
    )
    p.set_defaults(run=_summary)

    p = commands.add_parser("presets", help="list the named networks")
    p.set_defaults(run=_presets)

    data = commands.add_parser("data", help="fetch and describe data sets")
    data_commands = data.add_subparsers(
        dest="data_command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    p = data_commands.add_parser(
        "fetch",
        help="get a built-in data set into the cache (verified)",
        description="Fetch a built-in data set once (the canonical files, checksum-verified, or"
        " local package files), convert it to uint8 and cache it.",
    )
    p.add_argument("name", choices=datasets.DATASETS)
    p.add_argument(
        "--from",
        dest="from_path",
        metavar="PATH",
        help="files you downloaded: the folder of MNIST's 4 IDX files, or CIFAR's binary archive"
        " (cifar-10-binary.tar.gz, cifar-100-binary.tar.gz) or its folder",
    )
    p.add_argument("--force", action="store_true", help="fetch again even if cached")
    p.set_defaults(run=_data_fetch)
    p = data_commands.add_parser(
        "info",
        help="classes, counts, sizes and source of a data set or picture folder",
        description="Describe a built-in data set or a folder of pictures (decoding and caching"
        " it first): classes, pictures per class and part, size and colour, skipped files.",
    )
    p.add_argument("name", metavar="NAME|DIR", help=f"{', '.join(datasets.DATASETS)}, or a folder")
    p.add_argument("--image-size", type=_size, metavar="HxW", help="for a folder, as in train")
    p.set_defaults(run=_data_info)
    _add_export(commands)
    _add_show(commands)
    _add_filter(commands)
    _add_serve(commands)
    return parser


def _info(message: str) -> None:
    if distributed.launched_as().leader:
        print(message, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `cnnlab` command; returns the exit status."""
    keep_freed_memory()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already reported in one line
        return int(exc.code or 0)
    args.argv = argv
    try:
        return args.run(args) or 0
    except CnnlabError as exc:
        team = distributed.launched_as()
        if team.leader:
            print(f"cnnlab: error: {exc}", file=sys.stderr)
        elif not isinstance(exc, Interrupted):
            print(f"cnnlab: error (process {team.rank} of {team.size}): {exc}", file=sys.stderr)
        return getattr(exc, "exit_status", EXIT_USAGE)
    except KeyboardInterrupt:
        print("cnnlab: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a path the user gave that cannot be read or written
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"cnnlab: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # a bug, not the user's fault: still no traceback unless asked
        if os.environ.get("CNNLAB_DEBUG"):
            raise
        print(
            f"cnnlab: internal error: {type(exc).__name__}: {exc}"
            " (run with CNNLAB_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1


def command() -> NoReturn:
    """The `cnnlab` command itself: ``main``, then an exit without the interpreter's teardown.

    Unloading torch's modules at exit takes about half a second, a quarter of what
    `cnnlab train` spends outside training. Every file cnnlab writes is closed before
    ``main`` returns, so only the standard streams are left to flush.
    """
    status = main()
    for stream in (sys.stdout, sys.stderr):
        # a closed pipe (`cnnlab … | head`) leaves nothing to say it to
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    command()
