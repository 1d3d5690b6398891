"""Everything a sweep writes after training, the same from Python and the command line:
``summary.md``, ``figure2.png``, ``heatmap_<arm>.png`` and, unless skipped, each arm's
selected cell retrained with diagnostics (``trajectories.csv`` / ``.png``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from wdchain.ablate._arms import parse_arm
from wdchain.ablate._report import AXIS_COLUMNS, analyse, write_report
from wdchain.ablate._task import Task
from wdchain.ablate._trajectories import trace, write_trajectories


def write_outputs(task: Task, rows: Sequence[dict[str, Any]], info: dict[str, Any],
                  out: str | Path, *, trajectories: bool = True) -> tuple[str, list[str]]:
    """Writes the report (and the trajectories, unless the rows have a train-size or width
    axis) into ``out``; (summary, files written)."""
    out = Path(out)
    summary = write_report(rows, out, info)
    written = ["results.csv", "summary.md", "figure2.png"]
    written += [path.name for path in sorted(out.glob("scaling_*.png"))]
    if trajectories and not any(name in row for row in rows for name in AXIS_COLUMNS):
        selected = [(grid.arm, m.selected_lr, m.selected_weight_decay)
                    for grid, m in analyse(rows) if np.isfinite(m.selected_lr)]
        seed = int(info["seeds"][0])
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # one cell each: ~1 core
            futures = {arm: pool.submit(trace, task, parse_arm(arm), lr, wd, seed)
                       for arm, lr, wd in selected}
            traces = {arm: future.result() for arm, future in futures.items()}
        write_trajectories(traces, info, out)
        written.append("trajectories.png")
    return summary, written
