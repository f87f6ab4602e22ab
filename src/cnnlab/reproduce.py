"""The chapter's results table, re-measured row by row and written beside the published figures.

Each row is a preset trained ``runs`` times (seeds 0, 1, …). As in the chapter,
a run's accuracy is its test accuracy at the epoch of best validation accuracy,
and a row's figure is the best of its runs; the mean ± std over runs is given
too. The ensemble row combines five networks of the ``dropout`` row by majority
vote (seeds 0–4; runs it can reuse are not trained again).

Modes: ``chapter`` (the chapter's settings with cnnlab's conventions),
``faithful`` (also network3's initialisation, order and dropout scaling),
``fast`` (each architecture kept, a better schedule: see FAST_CHANGES), and
``quick`` (a smoke test: 3,000 images, 2 epochs).

Progress is kept in ``results.json``: a finished row is not run again, and an
interrupted run resumes from its last finished epoch.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import TrainConfig
from .data import load_splits
from .ensemble import draw_mistakes, member_probabilities, scores
from .errors import CnnlabError
from .files import write_atomically
from .network import Network
from .presets import get_preset
from .probe import filters
from .runs import MODEL, continues
from .train import fit, network_spec, new_network

MODES = ("chapter", "faithful", "fast", "quick")
# What --fast changes in the chapter's settings (the architectures and η stay): mini-batch 32
# with Nesterov momentum (together a larger step per image than the chapter's), one-cycle
# annealing, and fewer epochs: 12 over 50,000 images, 4 over the 250,000 expanded ones.
FAST_CHANGES = {
    "batch_size": 32,
    "momentum": 0.9,
    "nesterov": True,
    "schedule": "onecycle",
    "epochs": 12,
}
FAST_EXPANDED_EPOCHS = 4
# The dropout networks (1.7 million weights, half their inputs dropped) are still improving
# after 10 expanded epochs, so --fast gives them 20, at the machine's fastest precision and
# layout to pay for it, with weight decay λ = 1 (their members scored best with it, see
# docs/measurements/dropout-ensemble-trials.txt), and evaluates them on the test digits and
# their one-pixel shifts; a row measured with other settings keeps them in results.json.
FAST_DROPOUT_CHANGES = {
    "epochs": 20,
    "l2": 1.0,
    "tta": "shifts",
    "precision": "auto",
    "channels_last": True,
}
QUICK_CHANGES = {"train_subset": 3000, "epochs": 2}
ENSEMBLE_MEMBERS = 5
MISTAKES = "mistakes.png"  # the ensemble's misclassified test digits, beside results.md
SHOWN_SETTINGS = (
    "epochs",
    "batch_size",
    "lr",
    "l2",
    "momentum",
    "schedule",
    "expand",
    "faithful",
    "precision",
    "tta",
)


@dataclass(frozen=True)
class Row:
    name: str
    preset: str
    published: float


ROWS = [
    Row("baseline", "fc100", 0.9780),
    Row("conv1", "conv1", 0.9878),
    Row("conv2", "conv2", 0.9906),
    Row("conv2-relu", "conv2-relu", 0.9923),
    Row("expanded", "conv2-relu-expanded", 0.9937),
    Row("extra-fc", "conv2-relu-expanded-fc", 0.9943),
    Row("dropout", "dropout", 0.9960),
    Row("ensemble", "dropout", 0.9967),
]
ROW_NAMES = [row.name for row in ROWS]


def settings_for(preset: str, mode: str, seed: int) -> TrainConfig:
    """The preset's settings, changed as ``mode`` says."""
    settings = {**get_preset(preset).settings, "seed": seed, "faithful": mode == "faithful"}
    if mode == "fast":
        epochs = FAST_EXPANDED_EPOCHS if settings.get("expand") else FAST_CHANGES["epochs"]
        settings.update(FAST_CHANGES, epochs=min(settings["epochs"], epochs))
        if preset == "dropout":
            settings.update(FAST_DROPOUT_CHANGES)
    if mode == "quick":
        settings.update(QUICK_CHANGES)
    return TrainConfig.from_dict(settings).check()


def command_for(row: Row, mode: str) -> str:
    flag = "" if mode == "chapter" else f" --{mode}"
    return f"cnnlab reproduce --rows {row.name}{flag}"


def train_run(preset: str, mode: str, seed: int, out: Path) -> dict[str, Any]:
    """One training run of a preset (resumed if its folder holds an unfinished one)."""
    config = settings_for(preset, mode, seed)
    data = load_splits(**config.data_options())
    network = new_network(network_spec(get_preset(preset).layers(), data, config), config)
    resume = continues(out, network.spec(), config)
    result = fit(
        network,
        data,
        config,
        out,
        resume=resume,
        progress=sys.stderr.isatty(),
        log=lambda line: None,
    )
    return {
        "seed": seed,
        "test_accuracy": result.test_accuracy,
        "best_epoch": result.best_epoch,
        "epochs": config.epochs,
        # training time from the run's own log: a run resumed or reused still counts in full
        "seconds": result.train_seconds,
    }


def _summarise(row: Row, mode: str, runs: list[dict[str, Any]], extra: dict) -> dict[str, Any]:
    accuracies = [r["test_accuracy"] for r in runs]
    config = settings_for(row.preset, mode, 0)
    return {
        "row": row.name,
        "preset": row.preset,
        "architecture": get_preset(row.preset).arch,
        "settings": {k: getattr(config, k) for k in SHOWN_SETTINGS},
        "published": row.published,
        "measured": max(accuracies),
        "mean": statistics.fmean(accuracies),
        "std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
        "runs": runs,
        "seconds": sum(r["seconds"] for r in runs),
        "command": command_for(row, mode),
        **extra,
    }


def reproduce_row(row: Row, mode: str, runs: int, out: Path, log: Callable[[str], None]) -> dict:
    """Train (or reuse) what a row needs and summarise it."""
    if row.name != "ensemble":
        results = []
        for seed in range(runs):
            results.append(train_run(row.preset, mode, seed, out / row.preset / f"seed-{seed}"))
            log(f"{row.name}: seed {seed} test {results[-1]['test_accuracy']:.2%}")
        best = max(results, key=lambda r: r["test_accuracy"])
        model = out / row.preset / f"seed-{best['seed']}" / MODEL
        _draw_filters(model, out / f"filters-{row.name}.png")
        return _summarise(row, mode, results, {})
    members = ENSEMBLE_MEMBERS if mode != "quick" else 2
    results = [
        train_run(row.preset, mode, seed, out / row.preset / f"seed-{seed}")
        for seed in range(members)
    ]
    networks = [Network.load(out / row.preset / f"seed-{s}" / MODEL)[0] for s in range(members)]
    config = settings_for(row.preset, mode, 0)
    data = load_splits(**config.data_options())
    probabilities = member_probabilities(networks, data.test.images, config.precision, config.tta)
    draw_mistakes(probabilities, data.test, data.classes, out / MISTAKES)
    result = scores(probabilities, data.test.labels)
    extra = {"members": result["members"], "average": result["average"]}
    summary = _summarise(row, mode, results, extra)
    summary.update(measured=result["vote"], mean=result["vote"], std=0.0)
    return summary


def _draw_filters(model: Path, picture: Path) -> None:
    """The learned filters of a row's best network, if it has conv layers."""
    from . import plots  # matplotlib loads only when a picture is drawn

    try:
        banks = filters(Network.load(model)[0])
    except CnnlabError:  # no shared filters to draw (the fully-connected baseline)
        return
    plots.save(plots.filters_figure(banks), picture)


def _read_results(path: Path) -> dict[str, Any]:
    """results.json as ``reproduce`` wrote it, or a CnnlabError saying it is damaged."""
    try:
        results = json.loads(path.read_text())
        ok = isinstance(results, dict) and isinstance(results.get("mode"), str)
        rows = results.get("rows") if ok else None
        ok = isinstance(rows, dict) and all(_is_row(row) for row in rows.values())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        ok = False
    if not ok:
        raise CnnlabError(
            f"{path} is damaged: delete it and run again (finished runs in the seed folders are"
            " reused, not trained again)"
        )
    return results


def _is_row(row: Any) -> bool:
    """A finished row of results.json, with the numbers results.md shows."""
    numbers = ("published", "measured", "mean", "std", "seconds")
    return (
        isinstance(row, dict)
        and all(isinstance(row.get(k), (int, float)) for k in numbers)
        and isinstance(row.get("runs"), list)
        and isinstance(row.get("settings"), dict)
        and isinstance(row["settings"].get("epochs"), int)
        and all(isinstance(row.get(k), str) for k in ("architecture", "command"))
    )


def results_table(results: dict[str, Any]) -> str:
    """results.md: the chapter's table with cnnlab's figures beside the published ones."""
    lines = [
        f"# The chapter's MNIST results, re-measured ({results['mode']} mode)",
        "",
        "Test accuracy at the epoch of best validation accuracy; *measured* is the best of"
        " the runs (the chapter's protocol), *mean ± std* over the same runs.",
        "",
        "| row | architecture | published | measured | mean ± std | runs | epochs | time"
        " | command |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in ROW_NAMES:
        r = results["rows"].get(name)
        if r is None:
            continue
        lines.append(
            f"| {name} | `{r['architecture']}` | {r['published']:.2%} | {r['measured']:.2%} |"
            f" {r['mean']:.2%} ± {r['std']:.2%} | {len(r['runs'])} |"
            f" {r['settings']['epochs']} | {r['seconds'] / 60:.1f} min | `{r['command']}` |"
        )
    if results["mode"] == "fast":
        changes = ", ".join(f"{k}={v}" for k, v in FAST_CHANGES.items())
        lines += [
            "",
            f"--fast changed the chapter's settings: {changes}"
            f" ({FAST_EXPANDED_EPOCHS} epochs on expanded data); η is the chapter's. The"
            f" dropout networks: {', '.join(f'{k}={v}' for k, v in FAST_DROPOUT_CHANGES.items())}.",
        ]
    return "\n".join(lines) + "\n"


def reproduce(
    out: str | Path,
    rows: list[str] | None = None,
    mode: str = "chapter",
    runs: int = 3,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the chosen rows (all by default), skipping finished ones; write results.md/.json."""
    if runs < 1:
        raise CnnlabError("--runs must be at least 1")
    if mode not in MODES:
        raise CnnlabError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
    chosen = rows or ROW_NAMES
    unknown = sorted(set(chosen) - set(ROW_NAMES))
    if unknown:
        raise CnnlabError(f"unknown rows {', '.join(unknown)}: choose from {', '.join(ROW_NAMES)}")
    out = Path(out)
    path = out / "results.json"
    results = _read_results(path) if path.exists() else {"mode": mode, "rows": {}}
    if results["mode"] != mode:
        raise CnnlabError(f"{out} holds {results['mode']} results; use another --out for {mode}")
    for row in ROWS:
        if row.name not in chosen or row.name in results["rows"]:
            continue
        log(f"row {row.name}: preset {row.preset}, published {row.published:.2%}")
        finished = reproduce_row(row, mode, runs, out, log)
        if path.exists():  # another process may have finished other rows meanwhile
            results = _read_results(path)
        results["rows"][row.name] = finished
        text = json.dumps(results, indent=1)
        write_atomically(path, lambda tmp, text=text: tmp.write_text(text))
        table = results_table(results)
        write_atomically(out / "results.md", lambda tmp, table=table: tmp.write_text(table))
    return results
