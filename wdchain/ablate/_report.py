"""What the runner writes: results.csv, one heatmap per arm, summary.md.

The summary's measures, per arm, on the test accuracy A over the lr × λ grid:

- **best**: the cell with the highest accuracy (ties: the lower test loss).
- **basin**: the number of cells within 0.5 accuracy points of the best, a measure of
  how forgiving the arm is to its two hyperparameters.
- **separability**: for each learning rate, λ*(lr) is that row's best weight decay
  (same tie rule); the slope of log λ* against log lr, fitted by least squares over the
  rows whose own best is within 2 points of the overall best (rows where training
  failed say nothing about λ). About −1: the optimum lies on a diagonal where lr·λ is
  constant; about +1: on the other diagonal, λ/lr constant; either way lr and λ are
  coupled. About 0: it is axis-aligned, they can be tuned one after the other.
- **vs L2**: for a decoupled, independent or constant arm whose preconditioner was also
  run with L2, the relative reduction of the best test error, (e_L2 − e) / e_L2.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from wdchain.ablate._arms import Arm

BASIN_POINTS = 0.5
SEPARABILITY_POINTS = 2.0
CSV_COLUMNS = ("arm", "lr", "weight_decay", "train_loss", "test_loss", "test_accuracy")


class ArmResult(NamedTuple):
    """One arm's grid: metrics of shape (len(lrs), len(wds))."""

    arm: Arm
    lrs: np.ndarray
    wds: np.ndarray
    train_loss: np.ndarray
    test_loss: np.ndarray
    test_accuracy: np.ndarray
    recipe: str


def _best_index(accuracy: np.ndarray, loss: np.ndarray) -> int:
    """Index of the highest accuracy, ties broken by the lower loss (NaN loss last)."""
    loss = np.where(np.isfinite(loss), loss, np.inf)
    return int(np.lexsort((loss, -accuracy))[0])


def best_cell(result: ArmResult) -> tuple[int, int]:
    """(lr index, λ index) of the best cell."""
    flat = _best_index(result.test_accuracy.ravel(), result.test_loss.ravel())
    return divmod(flat, len(result.wds))


def basin_width(accuracy: np.ndarray) -> int:
    """Cells within 0.5 accuracy points of the best.

    Example:
      >>> basin_width(np.array([[0.980, 0.976], [0.974, 0.5]]))
      2
    """
    return int(np.sum(accuracy >= accuracy.max() - BASIN_POINTS / 100 - 1e-9))


def separability(result: ArmResult) -> float:
    """Slope of log λ*(lr) against log lr (NaN with fewer than 3 usable rows or one λ)."""
    row_best = result.test_accuracy.max(axis=1)
    rows = np.flatnonzero(row_best >= row_best.max() - SEPARABILITY_POINTS / 100 - 1e-9)
    if len(rows) < 3 or len(result.wds) < 2 or np.any(result.wds <= 0):
        return math.nan
    best_wds = [
        result.wds[_best_index(result.test_accuracy[i], result.test_loss[i])] for i in rows
    ]
    slope, _ = np.polyfit(np.log10(result.lrs[rows]), np.log10(best_wds), 1)
    return float(slope)


def write_csv(results: list[ArmResult], path: Path) -> None:
    """One row per cell, the columns of ``CSV_COLUMNS``."""
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(CSV_COLUMNS)
        for result in results:
            for i, lr in enumerate(result.lrs):
                for j, weight_decay in enumerate(result.wds):
                    writer.writerow([
                        result.arm.name, f"{lr:.6g}", f"{weight_decay:.6g}",
                        *(f"{metric[i, j]:.6f}" for metric in
                          (result.train_loss, result.test_loss, result.test_accuracy)),
                    ])


def write_heatmap(result: ArmResult, path: Path) -> None:
    """Test error (%) over lr × λ, the best cell outlined; colours clipped at best + 5."""
    from matplotlib.figure import Figure  # Agg canvas: no display needed

    error = 100 * (1 - result.test_accuracy.T)  # rows: λ, columns: lr
    best_lr, best_wd = best_cell(result)
    figure = Figure(figsize=(6.4, 5.2), layout="constrained")
    ax = figure.add_subplot()
    image = ax.imshow(error, origin="lower", cmap="viridis_r",
                      vmin=error.min(), vmax=error.min() + 5)
    for (j, i), value in np.ndenumerate(error):
        ax.text(i, j, f"{value:.1f}", ha="center", va="center", fontsize=8,
                color="white" if value > error.min() + 2.5 else "black")
    ax.add_patch(_outline(best_lr, best_wd))
    ax.set_xticks(range(len(result.lrs)), [f"{v:.2g}" for v in result.lrs])
    ax.set_yticks(range(len(result.wds)), [f"{v:.2g}" for v in result.wds])
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel(f"weight decay λ ({result.arm.decay})")
    ax.set_title(f"{result.arm.name}: test error %, best "
                 f"{error[best_wd, best_lr]:.2f} (outlined)")
    figure.colorbar(image, ax=ax, extend="max", label="test error %")
    figure.savefig(path, dpi=100)


def _outline(column: int, row: int):
    from matplotlib.patches import Rectangle

    return Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5)


def _improvement_over_l2(result: ArmResult, results: list[ArmResult]) -> str:
    if result.arm.decay not in ("decoupled", "independent", "constant"):
        return ""
    for other in results:
        if other.arm.preconditioner == result.arm.preconditioner and other.arm.decay == "l2":
            error_l2 = 1 - other.test_accuracy.max()
            error = 1 - result.test_accuracy.max()
            if error_l2 == 0:
                return f"vs {other.arm.name}: both 0 error" if error == 0 else ""
            return f"{100 * (error_l2 - error) / error_l2:+.0f}% vs {other.arm.name}"
    return ""


def summary_markdown(results: list[ArmResult], command: str) -> str:
    """The summary table, with the measures' definitions."""
    lines = [
        "# Weight-decay ablation: learning rate × weight decay",
        "",
        f"Command: `{command}`",
        "",
        "| arm | best test acc. % | at lr | at λ | basin (cells ≤ 0.5 pt) | "
        "separability (slope log λ* vs log lr) | best-error reduction vs L2 |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        i, j = best_cell(result)
        slope = separability(result)
        lines.append(
            f"| {result.arm.name} | {100 * result.test_accuracy[i, j]:.2f} | "
            f"{result.lrs[i]:.3g} | {result.wds[j]:.3g} | "
            f"{basin_width(result.test_accuracy)} / {result.test_accuracy.size} | "
            f"{'n/a' if math.isnan(slope) else f'{slope:+.2f}'} | "
            f"{_improvement_over_l2(result, results) or '–'} |"
        )
    lines += ["", "Recipes (at each arm's best cell):", ""]
    lines += [f"- `{result.arm.name}`: {result.recipe}" for result in results]
    lines += ["", "Measures:", "", *_MEASURES]
    return "\n".join(lines) + "\n"


_MEASURES = [
    "- *basin*: cells whose test accuracy is within 0.5 points of the arm's best.",
    "- *separability*: λ*(lr) is each learning rate's best weight decay; the slope of "
    "log λ* against log lr over the learning rates whose best is within 2 points of the "
    "arm's best. About −1: the optimum lies on the diagonal lr·λ = const; about +1: on "
    "λ/lr = const (either way lr and λ are coupled); about 0: axis-aligned (tune one, "
    "then the other). With a few grid values per axis the slope moves in coarse steps.",
    "- *reduction vs L2*: (e_L2 − e) / e_L2 for the best test errors e of the arm and of "
    "the same preconditioner with L2 decay.",
]
