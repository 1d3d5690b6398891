"""The measures of an ablation, computed from its rows (NumPy only).

Every measure uses the **validation** error (the split hyperparameters are selected on);
the test error is only reported, at the cells the validation error selected. Errors are
fractions in [0, 1]. A diverged cell (non-finite loss in any seed) is left out of every
selection and fit.

- **selected cell**: the cell with the lowest seed-mean validation error after a light
  smoothing over the grid (:func:`smoothed`: two thirds the cell's own value, one third
  the mean of its lr and λ neighbours), so that no lone cell, lucky in the rounding or
  the seeds, decides; reported with its test error, mean ± std over seeds. ``edge`` says
  it lies on an edge of the grid (the first or last lr, the smallest or largest λ, or
  λ = 0), where a wider grid might find a better cell.
- **slope** (separability): for each lr row, λ*(lr) is the argmin over λ > 0 of the
  error, refined by a parabola through it and its two neighbours in log λ. A line
  log10 λ* = a + slope·log10 lr is fitted by least squares over the rows whose minimum
  is within ``SLOPE_POINTS`` of the best cell and whose argmin is interior (not on a λ
  edge). About −1: the optimum lies on a diagonal where lr·λ is constant (lr and λ are
  coupled); about 0: it is axis-aligned (tune λ once for every lr). Reported for the
  seed-mean grid and as mean ± std of the per-seed slopes. Needs 3 rows.
- **regret**: the cost of one λ for every good lr: over the rows within
  ``REGRET_POINTS`` of the best cell, the error at the best cell's λ minus the row's own
  minimum, averaged.
- **paired gap**: per seed, the test error at this arm's selected cell minus the same for
  the same preconditioner with L2, both cells selected once on all seeds (not per seed:
  a seed's own argmin is one noisy cell); mean ± std over seeds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

SLOPE_POINTS = 0.08
REGRET_POINTS = 0.03
MIN_SLOPE_ROWS = 3


@dataclasses.dataclass(frozen=True)
class ArmGrid:
    """One arm's results: arrays of shape (seeds, lrs, weight decays).

    With the extra axes of a sweep (``train_size``, ``width``), one grid per arm and
    point of those axes: ``axes`` holds the point, ``arm`` names both
    (``"adamw, N=1000"``) and ``base`` is the arm alone.
    """

    arm: str
    preconditioner: str
    decay: str
    lrs: np.ndarray
    weight_decays: np.ndarray
    seeds: tuple[int, ...]
    validation_error: np.ndarray
    test_error: np.ndarray
    diverged: np.ndarray
    axes: tuple[tuple[str, int], ...] = ()
    base: str = ""

    @classmethod
    def from_rows(cls, rows: Sequence[dict[str, Any]], arm: str,
                  axes: tuple[tuple[str, int], ...] = ()) -> ArmGrid:
        """The grid of ``arm`` (at the point ``axes`` of the extra axes) from the rows."""
        mine = [row for row in rows
                if row["arm"] == arm and all(row.get(name) == value for name, value in axes)]
        lrs = np.array(sorted({row["lr"] for row in mine}))
        wds = np.array(sorted({row["weight_decay"] for row in mine}))
        seeds = tuple(sorted({row["seed"] for row in mine}))
        shape = (len(seeds), len(lrs), len(wds))
        arrays = {name: np.full(shape, np.nan) for name in ("validation_error", "test_error")}
        diverged = np.ones(shape, bool)
        for row in mine:
            index = (seeds.index(row["seed"]), int(np.searchsorted(lrs, row["lr"])),
                     int(np.searchsorted(wds, row["weight_decay"])))
            for name, values in arrays.items():
                values[index] = row[name]
            diverged[index] = row["diverged"]
        names = {"train_size": "N", "width": "width"}
        label = ", ".join([arm, *(f"{names.get(name, name)}={value}" for name, value in axes)])
        return cls(label, mine[0]["preconditioner"], mine[0]["decay"], lrs, wds, seeds,
                   arrays["validation_error"], arrays["test_error"], diverged, axes, arm)

    def usable(self) -> np.ndarray:
        """(lrs, wds): cells that converged in every seed."""
        return np.asarray(~self.diverged.any(axis=0))

    def mean_validation(self) -> np.ndarray:
        """Seed-mean validation error, +inf where a seed diverged."""
        values = np.where(self.diverged, 0.0, self.validation_error).mean(axis=0)
        return np.where(self.usable(), values, np.inf)


@dataclasses.dataclass(frozen=True)
class ArmMeasures:
    """The measures of one arm (NaN where undefined)."""

    arm: str
    selected_lr: float
    selected_weight_decay: float
    selected_validation_error: float
    test_error_mean: float
    test_error_std: float
    per_seed_test_error: tuple[float, ...]
    edge: str
    slope: float
    slope_rows: int
    per_seed_slopes: tuple[float, ...]
    regret: float
    per_seed_regret: tuple[float, ...]
    diverged_cells: int
    cells: int
    row_optima: tuple[tuple[float, float, bool], ...]
    selected: tuple[int, int] | None = None

    @property
    def slope_seeds(self) -> int:
        """Seeds whose own grid gives a slope."""
        return sum(math.isfinite(v) for v in self.per_seed_slopes)

    @property
    def slope_mean(self) -> float:
        return _nanmean(self.per_seed_slopes)

    @property
    def slope_std(self) -> float:
        return _nanstd(self.per_seed_slopes)

    @property
    def regret_mean(self) -> float:
        return _nanmean(self.per_seed_regret)

    @property
    def regret_std(self) -> float:
        return _nanstd(self.per_seed_regret)


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _nanstd(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan


def best_index(error: np.ndarray) -> tuple[int, int] | None:
    """(lr, λ) index of the lowest finite error; None when no cell is finite."""
    if not np.isfinite(error).any():
        return None
    flat = int(np.argmin(np.where(np.isfinite(error), error, np.inf)))
    i, j = divmod(flat, error.shape[1])
    return i, j


NEIGHBOUR_WEIGHT = 1 / 3
"""The share of a cell's smoothed error that its neighbours' mean makes up."""


def smoothed(error: np.ndarray) -> np.ndarray:
    """(lrs, wds) errors: 2/3 each cell's own plus 1/3 the mean of its finite lr and λ neighbours.

    Non-finite cells (diverged) stay NaN and are no one's neighbour; a cell without a
    finite neighbour keeps its own value.

    Example:
      >>> lone = np.array([[0.6, 0.6, 0.6], [0.6, 0.3, 0.6], [0.6, 0.6, 0.6],
      ...                  [0.6, 0.36, 0.6], [0.36, 0.36, 0.36]])
      >>> best_index(lone), best_index(smoothed(lone))   # a lone dip loses to a good region
      ((1, 1), (4, 1))
    """
    error = np.where(np.isfinite(error), error, np.nan)
    padded = np.pad(error, 1, constant_values=np.nan)
    neighbours = np.stack([padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2],
                           padded[1:-1, 2:]])
    count = np.isfinite(neighbours).sum(axis=0)
    total = np.nansum(neighbours, axis=0)
    mean = np.divide(total, count, out=error.copy(), where=count > 0)
    return (1 - NEIGHBOUR_WEIGHT) * error + NEIGHBOUR_WEIGHT * mean


def row_optima(error: np.ndarray, wds: np.ndarray) -> list[tuple[float, float, bool]]:
    """Per lr row: (refined log10 λ*, row minimum, interior?) over λ > 0.

    The argmin over the positive λ is refined by the vertex of the parabola through it
    and its two neighbours in log10 λ (kept within half a grid step); an argmin at the
    first or last positive λ is not interior and is not refined.

    Example:
      >>> wds = np.logspace(-4, 0, 5)
      >>> error = np.array([[0.5, 0.3, 0.2, 0.3, 0.5]])   # symmetric: λ* = 1e-2
      >>> [(round(l, 6), e, inside) for l, e, inside in row_optima(error, wds)]
      [(-2.0, 0.2, True)]
    """
    positive = np.flatnonzero(wds > 0)
    logs = np.log10(wds[positive])
    out = []
    for row in error[:, positive]:
        finite = np.isfinite(row)
        if not finite.any():
            out.append((math.nan, math.inf, False))
            continue
        k = int(np.argmin(np.where(finite, row, np.inf)))
        interior = 0 < k < len(row) - 1 and bool(finite[k - 1] and finite[k + 1])
        log_star = float(logs[k])
        if interior:
            log_star = _parabola_vertex(logs[k - 1 : k + 2], row[k - 1 : k + 2])
        out.append((log_star, float(row[k]), interior))
    return out


def _parabola_vertex(x: np.ndarray, y: np.ndarray) -> float:
    """Vertex of the parabola through three points, clipped to ± half a step of x[1]."""
    denominator = (y[0] - 2 * y[1] + y[2])
    step = (x[2] - x[0]) / 2
    if denominator <= 0:
        return float(x[1])
    offset = 0.5 * step * (y[0] - y[2]) / denominator
    return float(x[1] + np.clip(offset, -step / 2, step / 2))


def slope(error: np.ndarray, lrs: np.ndarray, wds: np.ndarray,
          points: float = SLOPE_POINTS) -> tuple[float, int]:
    """(slope of log10 λ* on log10 lr, rows used); NaN with fewer than 3 rows.

    Example:
      >>> lrs, wds = np.logspace(-3, -1, 3), np.logspace(-5, 0, 6)
      >>> diagonal = np.array([[abs(j - (4 - i)) for j in range(6)] for i in range(3)]) / 100
      >>> slope(diagonal, lrs, wds)   # λ* falls one decade per decade of lr
      (-1.0, 3)
    """
    optima = row_optima(error, wds)
    if not optima or len(np.flatnonzero(wds > 0)) < 3:
        return math.nan, 0
    best = min(value for _, value, _ in optima)
    rows = [i for i, (_, value, interior) in enumerate(optima)
            if interior and value <= best + points + 1e-12]
    if len(rows) < MIN_SLOPE_ROWS:
        return math.nan, len(rows)
    fit = np.polyfit(np.log10(lrs[rows]), [optima[i][0] for i in rows], 1)
    return float(fit[0]), len(rows)


def regret(error: np.ndarray, points: float = REGRET_POINTS) -> float:
    """Mean, over rows within ``points`` of the best, of error(best λ) − row minimum.

    Example:
      >>> regret(np.array([[0.20, 0.30], [0.31, 0.21]]))  # each row wants its own λ
      0.05
    """
    index = best_index(error)
    if index is None:
        return math.nan
    finite = np.where(np.isfinite(error), error, np.inf)
    row_min = finite.min(axis=1)
    rows = np.flatnonzero(row_min <= finite[index] + points + 1e-12)
    costs = finite[rows, index[1]] - row_min[rows]
    return float(np.round(np.mean(costs), 12)) if np.all(np.isfinite(costs)) else math.inf


def edge_of(index: tuple[int, int], lrs: np.ndarray, wds: np.ndarray) -> str:
    """Which edges of the grid a cell lies on ('' when interior)."""
    i, j = index
    edges = []
    if len(lrs) > 1 and i in (0, len(lrs) - 1):
        edges.append("smallest lr" if i == 0 else "largest lr")
    if wds[j] == 0:
        edges.append("λ = 0")
    elif len(wds) > 1:
        positive = np.flatnonzero(wds > 0)
        if j == positive[0]:
            edges.append("smallest λ")
        elif j == positive[-1]:
            edges.append("largest λ")
    return ", ".join(edges)


def measure(grid: ArmGrid) -> ArmMeasures:
    """Every measure of one arm."""
    mean = grid.mean_validation()
    mean_finite = np.where(np.isfinite(mean), mean, np.nan)
    index = best_index(smoothed(mean_finite))
    per_seed_slopes, per_seed_regret = [], []
    for s in range(len(grid.seeds)):
        error = np.where(grid.diverged[s], np.nan, grid.validation_error[s])
        per_seed_slopes.append(slope(error, grid.lrs, grid.weight_decays)[0])
        per_seed_regret.append(regret(error))
    per_seed_errors = ([math.nan] * len(grid.seeds) if index is None else
                       [float(v) for v in grid.test_error[:, index[0], index[1]]])
    grid_slope, rows = slope(mean_finite, grid.lrs, grid.weight_decays)
    if index is None:
        selected = (math.nan, math.nan, math.nan, math.nan, math.nan)
        edge = "every cell diverged"
    else:
        tests = grid.test_error[:, index[0], index[1]]
        selected = (float(grid.lrs[index[0]]), float(grid.weight_decays[index[1]]),
                    float(mean[index]), float(np.mean(tests)),
                    float(np.std(tests, ddof=1)) if len(tests) > 1 else math.nan)
        edge = edge_of(index, grid.lrs, grid.weight_decays)
    return ArmMeasures(
        grid.arm, *selected, tuple(per_seed_errors), edge, grid_slope, rows,
        tuple(per_seed_slopes), regret(mean_finite), tuple(per_seed_regret),
        int((~grid.usable()).sum()), grid.usable().size,
        tuple(row_optima(mean_finite, grid.weight_decays)), index,
    )


def paired_gap(arm: ArmMeasures, baseline: ArmMeasures) -> tuple[float, float, tuple[float, ...]]:
    """Per-seed test-error differences arm − baseline at their selected cells: (mean, std, per seed)."""
    gaps = tuple(a - b for a, b in zip(arm.per_seed_test_error, baseline.per_seed_test_error))
    return _nanmean(gaps), _nanstd(gaps), gaps


def binomial_se(error: float, examples: int) -> float:
    """Standard error of an error rate measured on ``examples`` examples."""
    if not math.isfinite(error) or examples <= 0:
        return math.nan
    return math.sqrt(max(error * (1 - error), 1e-12) / examples)
