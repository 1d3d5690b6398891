"""Heatmaps of the seed-mean validation error over lr × λ, as in the paper's Fig. 2.

One figure shows every arm side by side on one colour scale; one figure per arm shows
the same panel larger. Each panel marks the selected cell (red), the cells tied with it
(within one binomial standard error of the validation set, dotted), diverged cells
(grey, "div") and the per-row optimum λ*(lr) of the rows whose argmin is interior
(white dots, joined). A λ = 0 row, when the grid has one, is drawn at the
bottom, labelled "0". Every figure carries its provenance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wdchain.ablate._analysis import ArmGrid, ArmMeasures, best_index

SCALE_POINTS = 15.0
"""Colours span best … best + 15 points: enough that a few points above the best stay distinct."""


def colour_range(grids: Sequence[ArmGrid]) -> tuple[float, float]:
    """(vmin, vmax) in percent, shared by all panels."""
    means = [100 * g.mean_validation() for g in grids]
    finite = np.concatenate([m[np.isfinite(m)] for m in means]) if means else np.array([])
    if finite.size == 0:
        return 0.0, 100.0
    low = float(finite.min())
    return low, min(float(finite.max()), low + SCALE_POINTS) if finite.max() > low else low + 1


def _panel(ax: Any, grid: ArmGrid, measures: ArmMeasures, vmin: float, vmax: float,
           tie_points: float, annotate: bool) -> Any:
    from matplotlib.patches import Rectangle

    error = 100 * grid.mean_validation().T  # rows: λ, columns: lr
    shown = np.where(np.isfinite(error), error, np.nan)
    image = ax.imshow(shown, origin="lower", cmap="viridis_r", vmin=vmin, vmax=vmax,
                      aspect="auto", interpolation="nearest")
    ax.set_facecolor("0.75")  # diverged cells (NaN) show the background
    index = measures.selected or best_index(np.where(np.isfinite(error.T), error.T, np.nan))
    best = error[index[1], index[0]] if index is not None else math.nan
    for (j, i), value in np.ndenumerate(error):
        if not np.isfinite(value):
            ax.text(i, j, "div", ha="center", va="center", fontsize=7, color="0.2")
            continue
        if annotate:
            ax.text(i, j, f"{value:.1f}", ha="center", va="center", fontsize=6.5,
                    color="white" if value > vmin + 0.55 * (vmax - vmin) else "black")
        if index is not None and (i, j) != index and value <= best + tie_points:
            ax.add_patch(Rectangle((i - 0.5, j - 0.5), 1, 1, fill=False, edgecolor="red",
                                   linewidth=1.0, linestyle=":"))
    if index is not None:
        ax.add_patch(Rectangle((index[0] - 0.5, index[1] - 0.5), 1, 1, fill=False,
                               edgecolor="red", linewidth=2.2))
    _draw_lambda_star(ax, grid, measures)
    wds = grid.weight_decays
    ax.set_xticks(range(len(grid.lrs)), [f"{v:.1e}" for v in grid.lrs], rotation=60,
                  fontsize=7)
    ax.set_yticks(range(len(wds)), ["0" if v == 0 else f"{v:.1e}" for v in wds], fontsize=7)
    if wds[0] == 0 and len(wds) > 1:
        ax.axhline(0.5, color="white", linewidth=2)
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel(f"λ ({grid.decay})")
    slope = ("slope n/a" if math.isnan(measures.slope) else
             f"slope {measures.slope:+.2f}")
    ax.set_title(f"{grid.arm}: best {best:.1f} %, {slope}", fontsize=9)
    return image


def _draw_lambda_star(ax: Any, grid: ArmGrid, measures: ArmMeasures) -> None:
    """λ*(lr) per row in grid coordinates (log λ interpolated onto the λ indices)."""
    positive = np.flatnonzero(grid.weight_decays > 0)
    if len(positive) < 2:
        return
    logs = np.log10(grid.weight_decays[positive])
    xs, ys = [], []
    for i, (log_star, _, interior) in enumerate(measures.row_optima):
        if interior and math.isfinite(log_star):
            xs.append(i)
            ys.append(float(np.interp(log_star, logs, positive)))
    if xs:
        ax.plot(xs, ys, "o-", color="white", markersize=3, linewidth=1, alpha=0.9)


def provenance(info: dict[str, Any]) -> str:
    """One line: task, model, epochs, the recipe (schedule, clipping, accumulation), seeds,
    wdchain version."""
    seeds = ",".join(str(s) for s in info.get("seeds", ()))
    return (f"task {info.get('task')} · model {info.get('model')} · {info.get('epochs')} epochs"
            f" · batch {info.get('batch_size')}{recipe_text(info.get('recipe'))} · seeds {seeds}"
            f" · selection on validation · wdchain {info.get('version')}")


def recipe_text(recipe: dict[str, Any] | None) -> str:
    """`` · schedule cosine`` and the options that differ from the defaults, or ''."""
    if not recipe:
        return ""
    text = f" · schedule {recipe.get('schedule', 'cosine')}"
    if recipe.get("clip_norm") is not None:
        text += f" · clip {recipe['clip_norm']:g}"
    if recipe.get("accumulate", 1) != 1:
        text += f" · accumulate {recipe['accumulate']}"
    if recipe.get("moments_dtype"):
        text += f" · moments {recipe['moments_dtype']}"
    return text


def figure2(grids: Sequence[ArmGrid], measures: Sequence[ArmMeasures], info: dict[str, Any],
            path: Path, tie_points: float) -> None:
    """All arms side by side, one colour scale (the paper's Fig. 2)."""
    from matplotlib.figure import Figure

    vmin, vmax = colour_range(grids)
    columns = min(len(grids), 3)
    rows = math.ceil(len(grids) / columns)
    figure = Figure(figsize=(4.6 * columns, 4.2 * rows + 0.6), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    image = None
    for ax, grid, measure in zip(axes, grids, measures):
        image = _panel(ax, grid, measure, vmin, vmax, tie_points, annotate=True)
    for ax in axes[len(grids):]:
        ax.set_visible(False)
    if image is not None:
        figure.colorbar(image, ax=list(axes[: len(grids)]), extend="max",
                        label=colour_label(info), shrink=0.8)
    figure.suptitle(f"Validation {_measure(info)} over lr × λ (red: selected; dotted: tied "
                    "within 1 SE; dots: λ*(lr))", fontsize=10)
    figure.supxlabel(provenance(info), fontsize=7, color="0.3")
    figure.savefig(path, dpi=110)


def _measure(info: dict[str, Any]) -> str:
    return "loss" if info.get("selection") == "loss" else "error"


def colour_label(info: dict[str, Any]) -> str:
    """What the colours show: the error in %, or 100 × the loss when the loss selects."""
    if _measure(info) == "loss":
        return "validation loss × 100 (no 'error' metric), mean over seeds"
    return "validation error %, mean over seeds"


def heatmap(grid: ArmGrid, measures: ArmMeasures, info: dict[str, Any], path: Path,
            tie_points: float, colour: tuple[float, float]) -> None:
    """One arm's panel, larger, on the shared colour scale."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 5.6), layout="constrained")
    ax = figure.add_subplot()
    image = _panel(ax, grid, measures, *colour, tie_points, annotate=True)
    figure.colorbar(image, ax=ax, extend="max", label=colour_label(info))
    figure.supxlabel(provenance(info), fontsize=6, color="0.3")
    figure.savefig(path, dpi=100)


def scaling_figure(trends: Sequence[Any], info: dict[str, Any], path: Path) -> None:
    """λ* against N (or width), log–log, one line per arm and lr, the −1 slope drawn.

    One panel per arm (λ means another thing in each placement); per seed the range of
    λ* as a bar; hollow markers where λ* is on the grid's edge. A second row shows
    τ_epoch at the optimum, where defined.
    """
    from matplotlib.figure import Figure

    from wdchain.ablate._scaling import AXIS_NAMES

    arms = list(dict.fromkeys(t.arm for t in trends))
    with_tau = any(math.isfinite(o.tau_epoch) for t in trends for o in t.optima)
    rows = 2 if with_tau and trends[0].axis == "train_size" else 1
    figure = Figure(figsize=(4.8 * len(arms), 3.9 * rows + 0.5), layout="constrained")
    axes = np.atleast_2d(figure.subplots(rows, len(arms), squeeze=False))
    axis_name = AXIS_NAMES.get(trends[0].axis, trends[0].axis)
    for column, arm in enumerate(arms):
        ax = axes[0, column]
        for k, trend in enumerate(t for t in trends if t.arm == arm):
            colour = f"C{k}"
            values = np.array([o.value for o in trend.optima], float)
            stars = np.array([o.weight_decay for o in trend.optima])
            seeds = np.array([[10.0 ** v if math.isfinite(v) else np.nan for v in o.per_seed]
                              for o in trend.optima])
            low, high = np.nanmin(seeds, axis=1), np.nanmax(seeds, axis=1)
            ax.vlines(values, low, high, color=colour, alpha=0.5, linewidth=3)
            ax.plot(values, stars, "-", color=colour,
                    label=f"lr {trend.lr:.3g}" + (f" (slope {trend.slope:+.2f})"
                                                  if math.isfinite(trend.slope) else ""))
            interior = np.array([o.interior for o in trend.optima])
            ax.plot(values[interior], stars[interior], "o", color=colour)
            ax.plot(values[~interior], stars[~interior], "o", color=colour, fillstyle="none")
            finite = np.isfinite(stars)
            if finite.any() and trend.axis == "train_size":
                anchor = np.exp(np.mean(np.log(stars[finite] * values[finite])))
                ax.plot(values, anchor / values, ":", color=colour, linewidth=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(axis_name)
        ax.set_ylabel("λ* (refined argmin of validation error)")
        guide = "; dotted: slope −1" if trends[0].axis == "train_size" else ""
        ax.set_title(f"{arm}{guide}", fontsize=9)
        ax.legend(fontsize=7)
        if rows == 2:
            tax = axes[1, column]
            for k, trend in enumerate(t for t in trends if t.arm == arm):
                taus = [o.tau_epoch for o in trend.optima]
                if any(math.isfinite(t) for t in taus):
                    tax.plot([o.value for o in trend.optima], taus, "o-", color=f"C{k}",
                             label=f"lr {trend.lr:.3g}")
            tax.set_xscale("log")
            tax.set_yscale("log")
            tax.set_xlabel(axis_name)
            tax.set_ylabel("τ_epoch at λ* (epochs)")
            tax.set_title("the rule: constant", fontsize=9)
            if tax.lines:
                tax.legend(fontsize=7)
    figure.suptitle(f"The best λ against {axis_name} (bars: range over seeds; hollow: on the "
                    "grid's edge)", fontsize=10)
    figure.supxlabel(provenance(info), fontsize=7, color="0.3")
    figure.savefig(path, dpi=110)
