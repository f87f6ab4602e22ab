"""The pictures of ``cnnlab show``, drawn from probe.py's data.

matplotlib's object API with the Agg canvas: no pyplot, no display, no global
state, so it runs headless and in threads. Colours follow one rule: learned
weights in grey (darker = larger, as the chapter draws its filters), digits dark
on light, activations that are never negative in a sequential map (viridis),
signed values in a diverging map centred on zero (RdBu_r).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap, PowerNorm
from matplotlib.figure import Figure, SubFigure
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from .errors import CnnlabError
from .probe import FilterBank, Mistakes, Stage

WEIGHTS_CMAP = "gray_r"
DIGIT_CMAP = "gray_r"
POSITIVE_CMAP = "viridis"
SIGNED_CMAP = "RdBu_r"
MAX_MAPS, MAX_DEPTH = 64, 32  # filters drawn per layer: maps × input depth
GROUP_STARTS = ("conv", "local")  # pooling and batch norm sit beside the maps they follow


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save(figure: Figure, path: str | Path) -> None:
    """Write ``figure`` to ``path`` in the format its extension names (.png, .pdf, .svg, …)."""
    suffix = Path(path).suffix.lower().lstrip(".")
    formats = figure.canvas.get_supported_filetypes()
    if suffix not in formats:
        raise CnnlabError(f"{path}: cannot write .{suffix}; end the name in .png, .svg or .pdf")
    try:
        figure.savefig(path, facecolor="white")
    except OSError as exc:
        raise CnnlabError(f"{path}: cannot write ({exc})") from None


def _grid_side(count: int) -> int:
    """Columns of a roughly square grid of ``count`` tiles, a little wider than tall."""
    return max(1, min(count, math.ceil(math.sqrt(count * 1.25))))


def mosaic(tiles: np.ndarray, columns: int, gap: int = 1, fill: float = np.nan) -> np.ndarray:
    """Tiles (n, h, w[, colour]) in rows of ``columns``, gaps of ``fill`` between (NaN: blank)."""
    count, height, width = tiles.shape[:3]
    rows = math.ceil(count / columns)
    shape = (rows * (height + gap) - gap, columns * (width + gap) - gap, *tiles.shape[3:])
    out = np.full(shape, fill)
    for index, tile in enumerate(tiles):
        top, left = (index // columns) * (height + gap), (index % columns) * (width + gap)
        out[top : top + height, left : left + width] = tile
    return out


def _bare(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _blank_gaps(name: str) -> Colormap:
    """The colour map ``name`` with NaN (the gaps between tiles) drawn white."""
    return colormaps[name].with_extremes(bad="white")


def _show_values(ax: Axes, image: np.ndarray, signed: bool | None = None) -> Any:
    """imshow with the colour rule of the module doc; NaN gaps stay white."""
    finite = image[np.isfinite(image)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if signed is None:
        signed = low < 0
    if signed:
        bound = max(abs(low), abs(high)) or 1.0
        low, high, cmap = -bound, bound, SIGNED_CMAP
    else:
        low, high, cmap = 0.0, (high or 1.0), POSITIVE_CMAP
    shown = ax.imshow(image, cmap=_blank_gaps(cmap), vmin=low, vmax=high, interpolation="nearest")
    _bare(ax)
    return shown


def _show_picture(ax: Axes, image: Tensor) -> None:
    """An input picture (depth, height, width), uint8 or in [0, 1]: in colour if it has three
    channels, else as dark ink on white (how digits are drawn)."""
    pixels = image.float() / (255 if image.dtype == torch.uint8 else 1)
    if len(pixels) == 3:
        ax.imshow(pixels.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
    else:
        ax.imshow(pixels[0].numpy(), cmap=DIGIT_CMAP, vmin=0, vmax=1, interpolation="nearest")


# ---- filters ------------------------------------------------------------------------------
def _filter_image(weights: np.ndarray) -> tuple[np.ndarray, str]:
    """A bank's weights (maps, depth, k, k) as one mosaic, and a note on how depth is shown."""
    maps, depth, k, _ = weights.shape
    if depth == 1:
        return mosaic(weights[:, 0], columns=min(maps, 10)), f"{maps} filters of {k}×{k}"
    shown_maps, shown_depth = min(maps, MAX_MAPS), min(depth, MAX_DEPTH)
    tiles = weights[:shown_maps, :shown_depth].transpose(1, 0, 2, 3).reshape(-1, k, k)
    note = (
        f"{maps} filters of {k}×{k}×{depth}: one column per filter,"
        f" its {k}×{k} slice for each of the {depth} input maps down the column"
    )
    if (shown_maps, shown_depth) != (maps, depth):
        note += f" (first {shown_maps} × {shown_depth} shown)"
    return mosaic(tiles, columns=shown_maps), note


def _colour_filters(weights: np.ndarray) -> np.ndarray:
    """Filters on an RGB input as colour tiles, 0 mid-grey, scaled by the bank's largest |w|."""
    bound = float(np.abs(weights).max()) or 1.0
    tiles = (weights.transpose(0, 2, 3, 1) / bound + 1) / 2  # (maps, k, k, 3) in 0…1
    return mosaic(tiles, columns=min(len(tiles), 10), fill=1.0)


def filters_figure(banks: list[FilterBank]) -> Figure:
    """Every conv layer's filters as a grid of small blocks, darker = larger weight."""
    images = []
    for bank in banks:
        weights = bank.weights.float().numpy()
        if weights.shape[1] == 3 and bank.layer == 0:
            note = f"{len(weights)} colour filters on RGB input (grey = 0)"
            images.append((_colour_filters(weights), note))
        else:
            images.append(_filter_image(weights))
    width = 10.0
    heights = [0.8 * width * image.shape[0] / image.shape[1] for image, _ in images]
    figure = _figure(width, 0.6 + sum(heights) + 0.7 * len(banks))
    axes = figure.subplots(len(banks), 1, height_ratios=heights, squeeze=False)[:, 0]
    for ax, bank, (image, note) in zip(axes, banks, images):
        if image.ndim == 3:
            ax.imshow(image, interpolation="nearest")
            _bare(ax)
        else:
            bound = float(np.nanmax(np.abs(image))) or 1.0
            cmap = _blank_gaps(WEIGHTS_CMAP)
            shown = ax.imshow(image, cmap=cmap, vmin=-bound, vmax=bound, interpolation="nearest")
            _bare(ax)
            figure.colorbar(shown, ax=ax, shrink=0.8, label="weight")
        ax.set_title(f"{bank.name}\n{note}", fontsize=10)
    figure.suptitle("Learned filters (shared weights): darker = larger weight", fontsize=12)
    return figure


# ---- feature maps -------------------------------------------------------------------------
def _groups(stages: list[Stage]) -> list[list[int]]:
    """Stage indices in rows: a conv (or units) starts a row, its pooling and batch norm follow."""
    groups: list[list[int]] = []
    for index, stage in enumerate(stages):
        if not groups or stage.kind in GROUP_STARTS or not stage.is_map:
            groups.append([index])
        else:
            groups[-1].append(index)
    return groups


def _draw_stage(panel: SubFigure, stage: Stage, values: np.ndarray) -> None:
    ax = panel.subplots()
    shape = "×".join(str(s) for s in stage.shape)
    if stage.is_map:
        shown = _show_values(ax, mosaic(values, _grid_side(len(values))))
    else:  # a layer of units: a strip of coloured cells across the figure
        columns = min(len(values), 50)
        padded = np.full(math.ceil(len(values) / columns) * columns, np.nan)
        padded[: len(values)] = values
        shown = _show_values(ax, padded.reshape(-1, columns))
        ax.set_aspect("auto")
    panel.colorbar(shown, ax=ax, shrink=0.8, aspect=12)
    ax.set_title(f"{stage.name} → {shape}", fontsize=9)


def _draw_probabilities(ax: Axes, probabilities: np.ndarray, classes: list[str]) -> None:
    best = int(probabilities.argmax())
    colours = ["tab:orange" if i == best else "tab:blue" for i in range(len(probabilities))]
    ax.bar(range(len(probabilities)), probabilities, color=colours)
    long_names = max(map(len, classes)) > 2
    ax.set_xticks(range(len(probabilities)), classes, rotation=30 if long_names else 0)
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"output: {classes[best]} ({probabilities[best]:.1%})", fontsize=10)


def maps_figure(
    stages: list[Stage], outputs: list[Tensor], image: Tensor, classes: list[str], title: str
) -> Figure:
    """The input, the feature maps of every stage (pooled maps beside their conv maps), the answer.

    ``outputs`` are ``probe.stage_outputs`` for a batch of one; the last stage
    holds the class probabilities.
    """
    values = [output[0].float().numpy() for output in outputs]
    groups = _groups(stages[:-1])
    rows = [2.0] + [2.4 if stages[g[0]].is_map else 0.8 for g in groups]
    figure = _figure(12, 1.0 + sum(rows))
    panels = figure.subfigures(len(rows), 1, height_ratios=rows)
    top = panels[0].subplots(1, 2, width_ratios=[1, 2])
    _show_picture(top[0], image)
    _bare(top[0])
    top[0].set_title("input " + "×".join(str(s) for s in image.shape[1:]), fontsize=10)
    _draw_probabilities(top[1], values[-1], classes)
    for panel, group in zip(panels[1:], groups):
        cells = panel.subfigures(1, len(group), wspace=0.02) if len(group) > 1 else [panel]
        for cell, index in zip(cells, group):
            _draw_stage(cell, stages[index], values[index])
    figure.suptitle(title, fontsize=12)
    return figure


# ---- misclassified images, confusion, training curves -----------------------------------
def mistakes_figure(found: Mistakes, classes: list[str], title: str) -> Figure:
    """A grid of misclassified images: the true label top right, the network's guess below it."""
    count = len(found.labels)
    if count == 0:
        raise CnnlabError("the network classifies every test image correctly: nothing to show")
    columns = min(count, 11)
    rows = math.ceil(count / columns)
    figure = _figure(1.0 * columns + 0.4, 1.05 * rows + 0.8)
    axes = figure.subplots(rows, columns, squeeze=False).flatten()
    for ax in axes:
        ax.axis("off")
    for ax, image, truth, guess in zip(axes, found.images, found.labels, found.predicted):
        ax.axis("on")
        _show_picture(ax, image)
        _bare(ax)
        for y, label, align, colour in ((1.0, truth, "top", "tab:green"),
                                        (0.0, guess, "bottom", "tab:red")):  # fmt: skip
            ax.text(1.04, y, classes[label], transform=ax.transAxes, va=align, color=colour,
                    fontsize=9, fontweight="bold")  # fmt: skip
    figure.suptitle(
        f"{title}\ntop right: the true label; bottom right: the network's guess", fontsize=11
    )
    return figure


def confusion_figure(matrix: Tensor, classes: list[str], title: str) -> Figure:
    """Counts of (true, predicted) pairs, coloured by row fraction, squashed to show rare errors."""
    counts = matrix.numpy()
    fractions = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = len(classes)
    figure = _figure(2.0 + 0.62 * size, 1.6 + 0.55 * size)
    ax = figure.subplots()
    shown = ax.imshow(fractions, cmap="Blues", norm=PowerNorm(0.3, 0, 1))
    for (row, col), count in np.ndenumerate(counts):
        if count:
            dark = fractions[row, col] > 0.3
            ax.text(
                col,
                row,
                f"{count:,}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if dark else "black",
            )
    ax.set_xticks(range(size), classes, rotation=45 if max(map(len, classes)) > 2 else 0)
    ax.set_yticks(range(size), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    right, total = int(np.trace(counts)), int(counts.sum())
    ax.set_title(f"{title}\n{right:,} of {total:,} right ({right / max(total, 1):.2%})")
    figure.colorbar(shown, ax=ax, shrink=0.8, label="fraction of the true class")
    return figure


def curves_figure(history: list[dict[str, Any]], title: str) -> Figure:
    """Training loss, and train / validation / test accuracy, per epoch."""
    if not history:
        raise CnnlabError("the metrics log has no finished epoch yet")
    epochs = [row["epoch"] for row in history]
    figure = _figure(11, 4.2)
    loss_ax, acc_ax = figure.subplots(1, 2)
    loss_ax.plot(epochs, [row["train_loss"] for row in history], "o-", color="tab:purple")
    loss_ax.set_title("training loss (mean cost per mini-batch)")
    loss_ax.set_ylabel("loss")
    for key, label, colour in [
        ("train_accuracy", "train", "tab:blue"),
        ("validation_accuracy", "validation", "tab:orange"),
        ("test_accuracy", "test", "tab:green"),
    ]:
        points = [(row["epoch"], row[key]) for row in history if row.get(key) is not None]
        if points:
            xs, ys = zip(*points)
            acc_ax.plot(xs, [100 * y for y in ys], "o-", label=label, color=colour, markersize=4)
    validated = [row for row in history if row.get("validation_accuracy") is not None]
    if validated:
        best = max(validated, key=lambda row: row["validation_accuracy"])
        acc_ax.axvline(best["epoch"], color="grey", linestyle="--", linewidth=1)
        acc_ax.annotate(
            f"best validation: epoch {best['epoch']}\ntest {best['test_accuracy']:.2%}",
            (best["epoch"], 100 * best["test_accuracy"]),
            textcoords="axes fraction",
            xytext=(0.96, 0.5),
            ha="right",
            fontsize=9,
            bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "grey"},
            arrowprops={"arrowstyle": "->", "color": "grey"},
        )
    acc_ax.set_title("accuracy")
    acc_ax.set_ylabel("accuracy (%)")
    acc_ax.legend(loc="lower right")
    low, high = acc_ax.get_ylim()
    acc_ax.set_ylim(low, min(high, 100))  # no accuracy lies above 100%
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)  # whole epochs, one run a point
    figure.suptitle(title, fontsize=12)
    return figure
