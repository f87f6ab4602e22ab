"""Ensembles: several networks trained from different seeds, deciding together.

Two ways to combine them: average the members' class probabilities and take
the most probable class, or let each member vote for its top class and take the
majority (a tie goes to the tied class with the higher average probability).
The chapter's ensemble of five is a vote.

Members train in parallel processes when there are cores for it, each in its
own run folder (``member-1``, ``member-2``, …) that resumes like any run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .config import TrainConfig
from .data import Part, load_splits
from .errors import CnnlabError
from .network import Network
from .predict import PRECISION, class_names, probabilities
from .probe import mistakes
from .runs import MODEL, continues, trained_config
from .train import fit, new_network

MISTAKES_SHOWN = 200


def average_vote(probabilities: Tensor) -> Tensor:
    """Predicted classes from member probabilities (members, images, classes): mean, then argmax."""
    return probabilities.mean(0).argmax(1)


def majority_vote(probabilities: Tensor) -> Tensor:
    """Each member votes for its top class; most votes win; a tie goes to the higher mean."""
    classes = probabilities.shape[2]
    votes = torch.nn.functional.one_hot(probabilities.argmax(2), classes).sum(0).float()
    # a tie-break smaller than one vote: the mean probability is at most 1 < one vote
    return (votes + probabilities.mean(0) / 2).argmax(1)


def member_probabilities(
    members: list[Network], images: Tensor, precision: str = PRECISION, tta: str = "none"
) -> Tensor:
    """(members, images, classes) probabilities of every member, as the members were evaluated."""
    return torch.stack([probabilities(member, images, precision, tta) for member in members])


def load_members(folder: str | Path) -> list[tuple[Network, dict[str, Any]]]:
    """The best-validation network (and its metadata) of every member run in ``folder``."""
    paths = sorted(Path(folder).glob(f"member-*/{MODEL}"))
    if not paths:
        raise CnnlabError(f"{folder}: no member-*/{MODEL}; train with `cnnlab ensemble train`")
    return [Network.load(path) for path in paths]


def scores(probabilities: Tensor, labels: Tensor) -> dict[str, Any]:
    """Accuracy of each member, of the averaged probabilities and of the majority vote.

    From member probabilities (members, images, classes) already computed.
    """

    def accuracy(predicted: Tensor) -> float:
        return (predicted == labels).float().mean().item()

    return {
        "members": [accuracy(p.argmax(1)) for p in probabilities],
        "average": accuracy(average_vote(probabilities)),
        "vote": accuracy(majority_vote(probabilities)),
    }


def evaluate_folder(folder: str | Path, mistakes_picture: str | Path | None = None) -> dict:
    """Test accuracy of each member saved in ``folder``, of their average and of their vote.

    The members are evaluated as they were in training: on their test set, at
    their precision, with test-time shifts if they used them. With
    ``mistakes_picture``, the test digits the vote gets wrong are drawn there.
    """
    loaded = load_members(folder)
    network, meta = loaded[0]
    shapes = {(member.input_shape, member.classes) for member, _ in loaded}
    if len(shapes) > 1:
        raise CnnlabError(f"{folder}: its members take different inputs or classes")
    config = trained_config(meta)
    test = load_splits(**config.data_options()).test
    found = member_probabilities(
        [member for member, _ in loaded], test.images, config.precision, config.tta
    )
    if mistakes_picture is not None:
        draw_mistakes(found, test, class_names(network, meta), mistakes_picture)
    return {**scores(found, test.labels), "dataset": meta.get("dataset", config.dataset)}


def draw_mistakes(
    probabilities: Tensor, test: Part, classes: list[str], picture: str | Path
) -> None:
    """The test images the majority vote of (members, images, classes) gets wrong, as a grid.

    At most ``MISTAKES_SHOWN`` of them: a weak ensemble's thousands would make an unreadable
    picture.
    """
    from . import plots  # matplotlib loads only when a picture is drawn

    predicted = majority_vote(probabilities)
    found = mistakes(test, predicted, MISTAKES_SHOWN)
    wrong = int((predicted != test.labels).sum())
    shown = "" if wrong == len(found.labels) else f" (the first {len(found.labels)})"
    title = f"the {wrong} test images the ensemble of {len(probabilities)} gets wrong{shown}"
    plots.save(plots.mistakes_figure(found, classes, title), picture)


def _train_member(
    spec: dict[str, Any], config: dict[str, Any], out: str, threads: int, epoch_lines: bool
) -> dict:
    """One member, in its own process: same network and settings, its own seed and folder.

    With ``epoch_lines`` it prints a line per finished epoch, named after its folder:
    members train for minutes each, and a progress bar per process would interleave.
    """
    torch.set_num_threads(threads)
    settings = TrainConfig.from_dict(config)
    network = new_network(spec, settings)
    resume = continues(out, network.spec(), settings)
    data = load_splits(**settings.data_options())
    name = Path(out).name
    result = fit(
        network,
        data,
        settings,
        out,
        resume=resume,
        progress=False,
        log=lambda line: print(f"{name}  {line}", flush=True) if epoch_lines else None,
    )
    return {
        "out": out,
        "seed": settings.seed,
        "train_seconds": result.train_seconds,
        **result.to_dict(),
    }


def train_members(
    spec: dict[str, Any],
    config: TrainConfig,
    members: int,
    out: str | Path,
    processes: int | None = None,
    log: Callable[[str], None] = print,
    epoch_lines: bool = False,
    starting: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """Train ``members`` networks with seeds seed, seed+1, …; returns each member's result.

    ``starting()`` is called once every member's folder is known to be new or to hold this
    very run (so that a refusal is the only thing said).
    """
    if members < 1:
        raise CnnlabError("an ensemble needs at least one member")
    cores = os.cpu_count() or 1
    processes = max(1, min(processes or cores, members))
    threads = max(1, cores // processes)
    jobs = [
        (spec, asdict(replace(config, seed=config.seed + k)), str(Path(out) / f"member-{k + 1}"))
        for k in range(members)
    ]
    built = Network.shapes_only(spec).spec()  # with defaults filled, as each member saves it
    for _, settings, member_out in jobs:
        continues(member_out, built, TrainConfig.from_dict(settings))
    if starting is not None:
        starting()
    results = []
    with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_train_member, *job, threads, epoch_lines) for job in jobs]
        for future in as_completed(futures):
            result = future.result()
            results.append(result)
            log(
                f"{result['out']}: seed {result['seed']}, test {result['test_accuracy']:.2%}"
                f" (epoch {result['best_epoch']}), {result['train_seconds']:.0f} s of training"
                f" — {len(results)}/{members} done"
            )
    return sorted(results, key=lambda r: r["out"])
