"""What a sweep writes: ``results.csv``, ``summary.md``, ``figure2.png``, one heatmap per arm.

The summary states, in words, only what the measures of :mod:`._analysis` support:
a slope is called *axis-aligned* when |slope| ≤ 0.5 and *diagonal* when slope ≤ −0.5
(λ* falls as lr rises), with its spread over seeds; an arm is said to beat its L2
counterpart only when it is better in every seed and the mean gap exceeds one binomial
standard error of the test set.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wdchain.ablate import _checks, _figures, _scaling
from wdchain.ablate._analysis import (
    MIN_SLOPE_ROWS,
    ArmGrid,
    ArmMeasures,
    binomial_se,
    measure,
    paired_gap,
)
from wdchain.ablate._arms import parse_arm
from wdchain.ablate._resume import safe_name

CSV_COLUMNS = ("arm", "preconditioner", "decay", "lr", "weight_decay", "seed", "train_loss",
               "validation_loss", "validation_error", "test_loss", "test_error", "diverged")
AXIS_COLUMNS = ("train_size", "width")  # optional, after seed: a sweep's extra axes
ALIGNED = 0.5
_FLOATS = ("lr", "weight_decay", "train_loss", "validation_loss", "validation_error",
           "test_loss", "test_error")


def metric_columns(rows: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """The loss's other metrics (``validation_<name>``, ``test_<name>``), in the order the
    rows hold them."""
    fixed = set(CSV_COLUMNS) | set(AXIS_COLUMNS)
    return tuple(dict.fromkeys(key for row in rows for key in row if key not in fixed))


def csv_columns(rows: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """``CSV_COLUMNS``, with ``train_size`` and ``width`` after ``seed`` when rows have them,
    then one column per other metric of the loss."""
    extra = [name for name in AXIS_COLUMNS if any(name in row for row in rows)]
    at = CSV_COLUMNS.index("seed") + 1
    return (*CSV_COLUMNS[:at], *extra, *CSV_COLUMNS[at:], *metric_columns(rows))


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """One row per arm × lr × λ × seed (× size × width), the columns of :func:`csv_columns`
    (written atomically)."""
    columns = csv_columns(rows)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_format(row.get(column, math.nan)) for column in columns])
    os.replace(temporary, path)


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return str(value)


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``results.csv``, typed as :func:`wdchain.ablate.sweep` returns them
    (the loss's other metrics, in columns after ``CSV_COLUMNS``, as floats)."""
    with Path(path).open(newline="") as file:
        rows = list(csv.DictReader(file))
    for row in rows:
        for column in row:
            if column in _FLOATS or column not in (*CSV_COLUMNS, *AXIS_COLUMNS):
                row[column] = float(row[column])
        row["seed"] = int(row["seed"])
        for column in AXIS_COLUMNS:
            if column in row:
                row[column] = int(row[column])
        row["diverged"] = row["diverged"] == "true"
    return rows


def arm_names(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The arms in the order they first appear."""
    return list(dict.fromkeys(row["arm"] for row in rows))


def axis_points(rows: Sequence[dict[str, Any]]) -> list[tuple[tuple[str, int], ...]]:
    """The points of the extra axes (train_size, width) in the rows; [()] without them."""
    names = [name for name in AXIS_COLUMNS if any(name in row for row in rows)]
    return list(dict.fromkeys(tuple((name, row[name]) for name in names) for row in rows))


def analyse(rows: Sequence[dict[str, Any]]) -> list[tuple[ArmGrid, ArmMeasures]]:
    """Each arm's grid and measures (one per arm and point of the extra axes)."""
    points = sorted(axis_points(rows))
    grids = [ArmGrid.from_rows(rows, name, point) for name in arm_names(rows)
             for point in points
             if any(r["arm"] == name and all(r.get(k) == v for k, v in point) for r in rows)]
    return [(grid, measure(grid)) for grid in grids]


def _l2_partner(grid: ArmGrid, grids: Sequence[ArmGrid]) -> ArmGrid | None:
    if grid.decay in ("l2", "none"):
        return None
    for other in grids:
        if (other.preconditioner == grid.preconditioner and other.decay == "l2"
                and other.axes == grid.axes):
            return other
    return None


def _pct(value: float, digits: int = 1) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:.{digits}f}"


def _pm(mean: float, std: float, scale: float = 1.0, digits: int = 2, sign: bool = True) -> str:
    if not math.isfinite(mean):
        return "n/a"
    text = f"{scale * mean:{'+' if sign else ''}.{digits}f}"
    return text + (f" ± {scale * std:.{digits}f}" if math.isfinite(std) else "")


def summary_markdown(rows: Sequence[dict[str, Any]], info: dict[str, Any],
                     analysed: Sequence[tuple[ArmGrid, ArmMeasures]] | None = None) -> str:
    """The summary: provenance, the table, what the numbers say, the measures.

    ``analysed`` is ``analyse(rows)`` when the caller has it already.
    """
    analysed = analyse(rows) if analysed is None else analysed
    grids = [grid for grid, _ in analysed]
    by_arm = {grid.arm: measures for grid, measures in analysed}
    test_size = int(info.get("test_examples") or 0)
    on_loss = info.get("selection") == "loss"
    measure_name = "loss (%)" if on_loss else "error"
    lines = ["# Weight-decay ablation: learning rate × weight decay", ""]
    if info.get("command"):
        lines += [f"Command: `{info['command']}`", ""]
    lines += [
        _figures.provenance(info) + f" · {info.get('environment', '')}".rstrip(" ·"),
        "",
        ("Hyperparameters are selected on the validation split (seed-mean error); the test "
        "error is reported at the selected cell, mean ± std over seeds. Errors in %."
         if not on_loss else
         "Hyperparameters are selected on the validation split (seed-mean **loss**: the task's "
         "loss returns no 'error' metric, so the error columns of results.csv hold the loss); "
         "the test loss is reported at the selected cell, mean ± std over seeds. The "
         "columns below marked % hold 100 × the loss."),
        "",
        (f"| arm | selected lr | selected λ | val. {measure_name} | test {measure_name} | edge "
         "| slope (mean grid, rows) | slope per seed | regret (per seed) | test gap vs L2, per "
         "seed | diverged |"),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for grid, m in analysed:
        partner = _l2_partner(grid, grids)
        gap = "–"
        if partner is not None:
            mean, std, gaps = paired_gap(m, by_arm[partner.arm])
            gap = (f"{_pm(mean, std, 100)} vs {partner.arm} "
                   f"({', '.join(f'{100 * g:+.1f}' for g in gaps)})")
        lines.append(
            f"| {grid.arm} | {m.selected_lr:.3g} | {m.selected_weight_decay:.3g} | "
            f"{_pct(m.selected_validation_error)} | {_pm(m.test_error_mean, m.test_error_std, 100, 1, False)} | "
            f"{m.edge or '–'} | {_pm(m.slope, math.nan)} ({m.slope_rows}) | "
            f"{_pm(m.slope_mean, m.slope_std)} ({m.slope_seeds} of {len(m.per_seed_slopes)}) | "
            f"{_pm(m.regret_mean, m.regret_std, 100, 1, False)} | {gap} | "
            f"{m.diverged_cells} / {m.cells} |"
        )
    extra = metric_columns(rows)
    if extra:
        lines += ["", "The loss's other metrics are in results.csv, one column each: "
                  + ", ".join(extra) + "."]
    lines += ["", "## What this run shows", "", *findings(analysed, test_size),
              *lost_decay_findings(analysed, info.get("decay_dtype")), ""]
    for axis, title in _AXIS_TITLES.items():
        trends = _scaling.trends(grids, info, axis)
        if trends:
            lines += [f"## {title}", "", *_scaling.table(trends), "",
                      *_scaling.findings(trends), ""]
    lines += ["## Measures", "", *_MEASURES]
    if any(grid.axes for grid in grids):
        lines += _SCALING_MEASURES
    return "\n".join(lines) + "\n"


_AXIS_TITLES = {
    "train_size": "The best λ against the training-set size N (Wang & Aitchison's rule)",
    "width": "The best λ against the model's width",
}


def _shape(m: ArmMeasures) -> str:
    value = m.slope_mean if m.slope_seeds >= 2 else m.slope
    if not math.isfinite(value):
        return "undetermined (fewer than 3 lr rows with an interior optimum near the best)"
    spread = (f"slope {m.slope_mean:+.2f} ± {m.slope_std:.2f} over {m.slope_seeds} seeds, "
              if m.slope_seeds >= 2 else
              f"slope defined in {m.slope_seeds} of {len(m.per_seed_slopes)} seeds, ")
    spread += f"{m.slope:+.2f} on the mean grid" if math.isfinite(m.slope) else "mean grid n/a"
    if abs(value) <= ALIGNED:
        kind = "axis-aligned: the best λ hardly moves with lr"
    elif value < 0:
        kind = "diagonal: the best λ falls as lr rises (lr and λ coupled)"
    else:
        kind = "anti-diagonal: the best λ rises with lr (lr and λ coupled)"
    return f"{kind} ({spread})"


def findings(analysed: Sequence[tuple[ArmGrid, ArmMeasures]], test_size: int) -> list[str]:
    """Sentences on separability, the paired gaps, edges and divergence."""
    grids = [grid for grid, _ in analysed]
    by_arm = {grid.arm: m for grid, m in analysed}
    lines = []
    for grid, m in analysed:
        if grid.decay != "none" and len(grid.lrs) >= MIN_SLOPE_ROWS:
            lines.append(f"- **{grid.arm}**: {_shape(m)}; single-λ regret "
                         f"{_pm(m.regret_mean, m.regret_std, 100, 1, False)} points.")
    for grid, m in analysed:
        partner = _l2_partner(grid, grids)
        if partner is None:
            continue
        mean, std, gaps = paired_gap(m, by_arm[partner.arm])
        finite = [g for g in gaps if math.isfinite(g)]
        if not finite:
            continue
        se = binomial_se(by_arm[partner.arm].test_error_mean, test_size)
        lower = sum(g < 0 for g in finite)
        text = (f"- **{grid.arm} vs {partner.arm}**: test error {_pm(mean, std, 100)} points, "
                f"lower in {lower} of {len(finite)} seeds")
        verdict = _gap_verdict(gaps, se)
        if verdict == "better":
            text += (f"; larger than one binomial standard error of the test set "
                     f"({100 * se:.1f} points): {grid.arm} is better here.")
        elif verdict == "worse":
            text += f"; {partner.arm} is better here (gap above one SE, {100 * se:.1f} points)."
        elif len(finite) >= 2 and _sign_in_every_seed(finite):
            text += (f"; the same sign in every seed, but within one binomial standard error "
                     f"of the test set ({100 * se:.1f} points): too small to call here.")
        else:
            text += "; no consistent difference at this number of seeds."
        if len(finite) < 2:
            text += " One seed only: no spread to judge by."
        lines.append(text)
    edges = [f"{grid.arm} ({m.edge})" for grid, m in analysed if m.edge]
    if edges:
        lines.append(f"- Selected cell on the grid's edge: {'; '.join(edges)}. A wider grid "
                     "might find a better cell there.")
    diverged = [f"{grid.arm} {m.diverged_cells}" for grid, m in analysed if m.diverged_cells]
    if diverged:
        lines.append(f"- Diverged cells (non-finite loss in some seed; left out of every "
                     f"measure): {', '.join(diverged)}.")
    return lines


def _sign_in_every_seed(gaps: Sequence[float]) -> int:
    """-1 when every gap is below zero, +1 when every gap is above it, else 0 (a tie counts
    as neither)."""
    if all(g < 0 for g in gaps):
        return -1
    if all(g > 0 for g in gaps):
        return 1
    return 0


def _gap_verdict(gaps: Sequence[float], se: float) -> str:
    """'better' (lower in every seed, mean beyond one SE), 'worse' (the mirror) or 'no
    consistent difference'."""
    finite = [g for g in gaps if math.isfinite(g)]
    if not finite or not math.isfinite(se):
        return "no consistent difference"
    mean = float(sum(finite) / len(finite))
    sign = _sign_in_every_seed(finite)
    if sign < 0 and -mean > se:
        return "better"
    if sign > 0 and mean > se:
        return "worse"
    return "no consistent difference"


def _shape_kind(m: ArmMeasures) -> str:
    value = m.slope_mean if m.slope_seeds >= 2 else m.slope
    if not math.isfinite(value):
        return "undetermined"
    if abs(value) <= ALIGNED:
        return "axis-aligned"
    return "diagonal" if value < 0 else "anti-diagonal"


def verdicts(analysed: Sequence[tuple[ArmGrid, ArmMeasures]], test_size: int) -> dict[str, str]:
    """The summary's verdicts as words, to compare two runs of one configuration.

    ``{"<arm> shape": "diagonal" | "axis-aligned" | "anti-diagonal" | "undetermined",
    "<arm> selected cell": "interior" | its edges, "<arm> vs <L2 arm>": "better" |
    "worse" | "no consistent difference"}``. A verdict that changes when only the
    rounding changes (the cells split over two devices, say) is not a result.
    """
    grids = [grid for grid, _ in analysed]
    by_arm = {grid.arm: m for grid, m in analysed}
    out: dict[str, str] = {}
    for grid, m in analysed:
        if grid.decay != "none" and len(grid.lrs) >= MIN_SLOPE_ROWS:
            out[f"{grid.arm} shape"] = _shape_kind(m)
        out[f"{grid.arm} selected cell"] = m.edge or "interior"
    for grid, m in analysed:
        partner = _l2_partner(grid, grids)
        if partner is not None:
            gaps = paired_gap(m, by_arm[partner.arm])[2]
            se = binomial_se(by_arm[partner.arm].test_error_mean, test_size)
            out[f"{grid.arm} vs {partner.arm}"] = _gap_verdict(gaps, se)
    return out


def lost_decay_findings(analysed: Sequence[tuple[ArmGrid, ArmMeasures]],
                        dtype: str | None) -> list[str]:
    """A sentence per arm with cells whose decay the params' dtype rounds away."""
    if not dtype:
        return []
    import jax

    params = [jax.ShapeDtypeStruct((2, 2), dtype)]
    lines = []
    for grid, _ in analysed:
        try:
            arm = parse_arm(grid.arm)
        except ValueError:
            continue
        cells = [(lr, wd) for lr in grid.lrs for wd in grid.weight_decays]
        lost = _checks.lost_decay(arm, [c[0] for c in cells], [c[1] for c in cells], params)
        if lost:
            lines.append(
                f"- **{grid.arm}: decay lost to {dtype} rounding** in {len(lost)} of "
                f"{len(cells)} cells (λ up to {max(wd for _, wd in lost):.3g}): they trained "
                "as with λ = 0. Keep float32 master weights or use wdchain.compensate_rounding."
            )
    return lines


_MEASURES = [
    "- *val. error*: seed-mean validation error of the selected cell (the lowest on the grid).",
    "- *edge*: the selected cell lies on the first/last lr, the smallest/largest λ or λ = 0.",
    ("- *slope*: per lr row, λ* = argmin over λ > 0 of the validation error, refined by a "
    "parabola in log λ; a line log λ* = a + slope·log lr is fitted over the rows whose minimum "
    "is within 8 points of the best and whose argmin is interior (number of rows in brackets). "
    "About −1: the optimum lies on lr·λ = const (coupled); about 0: axis-aligned (tune λ once). "
    "Per seed: mean ± std of the slopes of each seed's grid."),
    ("- *regret*: over the rows within 3 points of the best, the error at the best cell's λ minus "
    "the row's own minimum, averaged; per seed mean ± std. 0: one λ serves every good lr."),
    ("- *test gap vs L2*: per seed, test error at this arm's selected cell minus that of the same "
    "preconditioner with L2 (each selected on that seed's validation error); mean ± std."),
    "- Test cross entropy is not used: it follows the output layer's scale, which decay sets.",
]


def heatmap_path(out: Path, arm: str) -> Path:
    """``out/heatmap_<arm>.png``, the arm's name made a safe file name (never outside out).

    An arm at a point of a sweep's extra axes, ``adamw, N=1000``, is ``heatmap_adamw_N1000``.
    """
    return Path(out) / f"heatmap_{safe_name(arm.replace(', ', '_').replace('=', ''))}.png"


_SCALING_MEASURES = [
    ("- *λ\\* against N or width*: per arm and lr, the argmin over λ > 0 of the seed-mean "
     "validation error, refined by a parabola in log λ (per seed: the same on each seed's "
     "errors); *edge*: the smallest or largest λ of the grid (not refined, left out of the "
     "slope). Slope: least squares of log λ* on log N over the interior optima. Wang & "
     "Aitchison's rule (a fixed best EMA timescale in epochs) predicts −1 against N at a fixed "
     "lr, batch and number of epochs."),
    ("- *τ_epoch at λ\\**: τ_iter = T / Σ_t c_t·λ* (T steps, c_t = α_t for torch's decoupled "
     "decay, η_t for the paper's independent decay: wdchain.integrated_decay), in epochs of "
     "N/B steps (wdchain.timescale_in_epochs); with the cosine schedule twice the 1/(α·λ) of a "
     "constant one. *Roughly constant* when the slope of log τ_epoch on log N is within ±0.5."),
]


def write_report(rows: Sequence[dict[str, Any]], out: str | Path,
                 info: dict[str, Any]) -> str:
    """Writes summary.md, figure2.png and heatmap_<arm>.png into ``out`` (created if need
    be); returns the summary. ``info`` is :func:`wdchain.ablate.run_info`'s, with a
    ``command`` to print (none is printed without one)."""

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    analysed = analyse(rows)
    grids = [grid for grid, _ in analysed]
    measures = [m for _, m in analysed]
    validation = int(info.get("validation_examples") or 0)
    tie = 100 * binomial_se(min((m.selected_validation_error for m in measures
                                 if math.isfinite(m.selected_validation_error)),
                                default=math.nan), validation)
    tie = tie if math.isfinite(tie) else 0.0
    _figures.figure2(grids, measures, info, out / "figure2.png", tie)
    for axis in _AXIS_TITLES:
        trends = _scaling.trends(grids, info, axis)
        if trends:
            _figures.scaling_figure(trends, info, out / f"scaling_{axis}.png")
    colour = _figures.colour_range(grids)
    for grid, m in analysed:
        _figures.heatmap(grid, m, info, heatmap_path(out, grid.arm), tie, colour)
    summary = summary_markdown(rows, info, analysed)
    (out / "summary.md").write_text(summary)
    return summary
