"""How the best λ moves with the training-set size N (or the width): Wang & Aitchison's rule.

Wang & Aitchison ("How to set AdamW's weight decay as you scale model and dataset
size", arXiv 2405.13698) read AdamW's weights as an exponential moving average of the
updates with timescale τ_iter = 1/(η·λ) steps and find the best timescale a fixed
number of *epochs*, τ_epoch = τ_iter·B/N. At a fixed lr, batch and number of epochs,
λ* then falls as 1/N (a slope of −1 on log–log axes). For the width, the same paper
scales the lr as μP does (η ∝ 1/width): a fixed τ then needs λ ∝ width; at a fixed lr
the timescale does not involve the width at all.

Measured per arm and lr, along the axis (the other axes held):

- **λ\\***: the argmin over λ > 0 of the seed-mean validation error at that lr and
  axis value, refined by the vertex of a parabola in log λ through it and its two
  neighbours (:func:`wdchain.ablate._analysis.row_optima`); *edge* when it is the
  smallest or largest λ of the grid (not refined; extend the grid). Per seed the same
  on each seed's errors.
- **slope**: least squares of log10 λ* on log10 N over the interior optima (at least
  two), on the seed-mean grid and per seed (mean ± std).
- **τ_epoch at the optimum**: τ_iter = T / Σ_t c_t·λ*, the run's T steps over its
  integrated decay (:func:`wdchain.integrated_decay`, with c_t = α_t for torch's
  decoupled decay and η_t = α_t/α_peak for the paper's independent decay, whose
  per-step rate is λ·η_t, not lr·λ), then :func:`wdchain.timescale_in_epochs`. For a
  constant schedule τ_iter is Wang & Aitchison's 1/(αλ); under the runner's cosine
  schedule, whose mean multiplier is about 1/2, it is twice that. Undefined for L2
  (not an EMA) and for decays whose rate is not a schedule of the step.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from wdchain._timescales import integrated_decay, timescale_in_epochs
from wdchain.ablate._analysis import ArmGrid, row_optima
from wdchain.ablate._schedules import parse_schedule

TIMESCALE_DECAYS = ("decoupled", "independent", "constant", "corrected")
CONSTANT_TAU = 0.5
"""|slope of log τ_epoch on log N| up to which the optimum's timescale counts as constant
(halfway between a constant τ_epoch, slope 0, and a constant λ*, slope −1)."""

AXIS_NAMES = {"train_size": "N", "width": "width"}


@dataclasses.dataclass(frozen=True)
class Optimum:
    """λ* of one arm at one lr and one value of the axis."""

    value: int
    log_lambda: float
    error: float
    interior: bool
    per_seed: tuple[float, ...]
    per_seed_interior: tuple[bool, ...]
    tau_epoch: float

    @property
    def weight_decay(self) -> float:
        return 10.0 ** self.log_lambda if math.isfinite(self.log_lambda) else math.nan


@dataclasses.dataclass(frozen=True)
class Trend:
    """λ* of one arm at one lr along one axis (the other axes held at ``others``)."""

    arm: str
    decay: str
    lr: float
    axis: str
    others: tuple[tuple[str, int], ...]
    optima: tuple[Optimum, ...]
    slope: float
    slope_points: int
    per_seed_slopes: tuple[float, ...]
    tau_slope: float

    @property
    def label(self) -> str:
        others = "".join(f", {AXIS_NAMES.get(k, k)}={v}" for k, v in self.others)
        return f"{self.arm}, lr {self.lr:.3g}{others}"

    @property
    def edges(self) -> tuple[int, ...]:
        """Axis values whose seed-mean optimum is on the λ grid's edge."""
        return tuple(o.value for o in self.optima if not o.interior)

    @property
    def slope_mean(self) -> float:
        finite = [v for v in self.per_seed_slopes if math.isfinite(v)]
        return float(np.mean(finite)) if finite else math.nan

    @property
    def slope_std(self) -> float:
        finite = [v for v in self.per_seed_slopes if math.isfinite(v)]
        return float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan


def fit_slope(values: Sequence[float], logs: Sequence[float],
              keep: Sequence[bool]) -> tuple[float, int]:
    """(slope of log10 λ* on log10 value over the kept finite points, points used).

    Example:
      >>> slope, points = fit_slope([1000, 10000, 100000], [1.0, 0.0, 9.0], [True, True, False])
      >>> round(slope, 6), points   # the third point (on the grid's edge) is left out
      (-1.0, 2)
    """
    points = [(math.log10(v), y) for v, y, k in zip(values, logs, keep) if k and math.isfinite(y)]
    if len(points) < 2:
        return math.nan, len(points)
    x, y = np.array(points).T
    return float(np.polyfit(x, y, 1)[0]), len(points)


def tau_epoch(decay: str, lr: float, weight_decay: float, *, train_size: int, batch_size: int,
              epochs: int, schedule: Callable[[int], Callable[[Any], Any]] | None = None
              ) -> float:
    """τ_epoch of a run at (lr, λ): T / (integrated decay) steps, in epochs (see the module).

    ``schedule`` maps the number of steps to the multiplier η(t) (default: the runner's
    cosine). NaN for a decay that is not an EMA of the updates (``l2``, ``none``…).

    Example (a constant schedule gives Wang & Aitchison's 1/(αλ)):
      >>> constant = lambda total: (lambda t: 1.0)
      >>> tau_epoch("decoupled", 1e-2, 0.1, train_size=1000, batch_size=100, epochs=40,
      ...           schedule=constant)   # 1/(αλ) = 1000 steps, 10 steps per epoch
      100.0
    """
    if decay not in TIMESCALE_DECAYS or not (weight_decay > 0 and math.isfinite(weight_decay)):
        return math.nan
    if schedule is None:
        from wdchain.ablate._engine import cosine_multiplier

        schedule = cosine_multiplier
    steps = epochs * (train_size // batch_size)
    eta = schedule(steps)
    total = float(integrated_decay(lambda t: lr * eta(t), weight_decay, steps, decay=decay,
                                   lr_peak=lr))
    if not total > 0:
        return math.nan
    return float(timescale_in_epochs(steps / total, batch_size, train_size))


def trends(grids: Sequence[ArmGrid], info: dict[str, Any], axis: str = "train_size",
           schedule: Callable[[int], Callable[[Any], Any]] | None = None) -> list[Trend]:
    """λ* along ``axis`` per arm, lr and point of the other axes (see the module).

    ``info`` gives ``batch_size`` and ``epochs`` (and ``train_examples``, the training
    set's size, when the axis is not the size) for τ_epoch, and the run's schedule
    (``info["recipe"]["schedule"]``); a schedule that is not a built-in one (a callable
    of the user's, known here only by its name) leaves τ_epoch undefined (NaN), never
    computed under another schedule.
    """
    known = True
    if schedule is None:
        schedule, known = _schedule_of(info)
    groups: dict[tuple[str, tuple[tuple[str, int], ...]], list[ArmGrid]] = {}
    for grid in grids:
        values = dict(grid.axes)
        if axis not in values:
            continue
        others = tuple((k, v) for k, v in grid.axes if k != axis)
        groups.setdefault((grid.base or grid.arm, others), []).append(grid)
    out = []
    for (arm, others), members in groups.items():
        members.sort(key=lambda g: dict(g.axes)[axis])
        if len(members) < 2:
            continue
        for lr in members[0].lrs:
            out.append(_trend(arm, lr, axis, others, members, info, schedule, known))
    return out


def _schedule_of(info: dict[str, Any]) -> tuple[Any, bool]:
    """The run's schedule from its recorded name (cosine when none is recorded)."""
    name = (info.get("recipe") or {}).get("schedule", "cosine")
    try:
        return parse_schedule(str(name)), True
    except ValueError:
        return None, False


def _trend(arm: str, lr: float, axis: str, others: tuple[tuple[str, int], ...],
           members: list[ArmGrid], info: dict[str, Any],
           schedule: Callable[[int], Callable[[Any], Any]] | None,
           known: bool = True) -> Trend:
    optima = []
    seeds_all = sorted(set().union(*(grid.seeds for grid in members)))
    for grid in members:
        value = dict(grid.axes)[axis]
        i = int(np.argmin(np.abs(np.log(grid.lrs) - math.log(lr))))
        mean = grid.mean_validation()[i:i + 1]
        mean = np.where(np.isfinite(mean), mean, np.nan)
        log_star, error, interior = row_optima(mean, grid.weight_decays)[0]
        own = {seed: row_optima(np.where(grid.diverged[s, i:i + 1], np.nan,
                                         grid.validation_error[s, i:i + 1]),
                                grid.weight_decays)[0]
               for s, seed in enumerate(grid.seeds)}
        # A seed missing at this size (a partial run) counts as no optimum there.
        seeds = [own.get(seed, (math.nan, math.inf, False)) for seed in seeds_all]
        size = value if axis == "train_size" else info.get("train_examples")
        tau = math.nan
        if size and known and math.isfinite(log_star):
            tau = tau_epoch(grid.decay, float(lr), 10.0 ** log_star, train_size=int(size),
                            batch_size=int(info["batch_size"]), epochs=int(info["epochs"]),
                            schedule=schedule)
        optima.append(Optimum(value, log_star, error, interior, tuple(s[0] for s in seeds),
                              tuple(s[2] for s in seeds), tau))
    values = [o.value for o in optima]
    slope, points = fit_slope(values, [o.log_lambda for o in optima],
                              [o.interior for o in optima])
    per_seed = tuple(
        fit_slope(values, [o.per_seed[s] for o in optima],
                  [o.per_seed_interior[s] for o in optima])[0]
        for s in range(len(seeds_all)))
    taus = [math.log10(o.tau_epoch) if o.tau_epoch > 0 else math.nan for o in optima]
    tau_slope = fit_slope(values, taus, [o.interior for o in optima])[0]
    return Trend(arm, members[0].decay, float(lr), axis, others, tuple(optima), slope, points,
                 per_seed, tau_slope)


def _number(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.2g}"


def _signed(value: float) -> str:
    """``+0.00`` rather than ``-0.00`` for a value that rounds to zero."""
    return f"{round(value, 2) + 0.0:+.2f}" if math.isfinite(value) else "n/a"


def _slope_text(trend: Trend) -> str:
    text = _signed(trend.slope)
    if math.isfinite(trend.slope_mean):
        spread = f" ± {trend.slope_std:.2f}" if math.isfinite(trend.slope_std) else ""
        seeds = sum(math.isfinite(v) for v in trend.per_seed_slopes)
        text += (f" (per seed {_signed(trend.slope_mean)}{spread}, {seeds} "
                 f"seed{'s' if seeds > 1 else ''})")
    return text


def table(trends_: Sequence[Trend]) -> list[str]:
    """Markdown: one row per arm, lr and axis value, then the slope."""
    if not trends_:
        return []
    axis = AXIS_NAMES.get(trends_[0].axis, trends_[0].axis)
    lines = [f"| arm | lr | {axis} | λ* (seed-mean grid) | λ* per seed | val. error | "
             "τ_epoch at λ* | edge |", "|---|---|---|---|---|---|---|---|"]
    for trend in trends_:
        others = "".join(f", {AXIS_NAMES.get(k, k)}={v}" for k, v in trend.others)
        for o in trend.optima:
            seeds = ", ".join(_number(10.0 ** v) if math.isfinite(v) else "n/a"
                              for v in o.per_seed)
            lines.append(f"| {trend.arm}{others} | {trend.lr:.3g} | {o.value} | "
                         f"{_number(o.weight_decay)} | {seeds} | {100 * o.error:.1f} | "
                         f"{_number(o.tau_epoch)} | {'–' if o.interior else 'yes'} |")
        lines.append(f"| {trend.arm}{others} | {trend.lr:.3g} | slope d log λ*/d log {axis} | "
                     f"{_slope_text(trend)} | | | | |")
    return lines


def findings(trends_: Sequence[Trend]) -> list[str]:
    """Sentences: the slope against the rule's −1, whether τ_epoch stays constant, edges."""
    lines = []
    for trend in trends_:
        axis = AXIS_NAMES.get(trend.axis, trend.axis)
        first, last = trend.optima[0], trend.optima[-1]
        text = (f"- **{trend.label}**: λ* {_number(first.weight_decay)} → "
                f"{_number(last.weight_decay)} as {axis} goes {first.value} → {last.value}, "
                f"slope {_slope_text(trend)}")
        if trend.axis == "train_size":
            text += "; the rule predicts −1"
            taus = [o.tau_epoch for o in trend.optima]
            if all(math.isfinite(t) for t in taus):
                ratio = max(taus) / min(taus)
                numbers = ", ".join(_number(t) for t in taus)
                if math.isfinite(trend.tau_slope) and abs(trend.tau_slope) <= CONSTANT_TAU:
                    verdict = "roughly constant, as the rule says"
                elif math.isfinite(trend.tau_slope):
                    verdict = ("not constant: it " +
                               ("grows" if trend.tau_slope > 0 else "falls") +
                               " with N")
                else:
                    verdict = "undetermined (fewer than two interior optima)"
                slope = (f", slope {_signed(trend.tau_slope)}" if math.isfinite(trend.tau_slope)
                         else "")
                text += (f". τ_epoch at the optimum: {numbers} epochs (a factor "
                         f"{ratio:.1f} over a {last.value / first.value:.0f}× range of N"
                         f"{slope}): {verdict}")
            else:
                text += f". τ_epoch: not defined for {trend.decay} decay (not an EMA)"
        else:
            text += ("; at a fixed lr the EMA timescale does not involve the width (the "
                     "paper's width rule, λ ∝ width, is for μP-scaled learning rates)")
        if trend.edges:
            text += (f". λ* on the grid's edge at {axis} = "
                     f"{', '.join(map(str, trend.edges))}: extend the λ grid there")
        lines.append(text + ".")
    return lines
