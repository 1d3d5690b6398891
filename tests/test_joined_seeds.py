"""Seeds joined on the cell axis (``seeds_per_program``): one program trains cells × seeds.

The oracle is the runner's own one-seed-at-a-time program (``seeds_per_program=1``): the
joined program must give each seed's rows to float tolerance, with the seeds' own initial
weights, batches, step keys (Dropout) and splits. The seeds' rows differ from each other,
so a joined program that fed every cell one seed's data would fail.
"""

from __future__ import annotations

import json
import re

import jax
import numpy as np
import pytest
from flax import nnx

from wdchain.ablate import Task, _layout, parse_arm, sweep
from wdchain.ablate._engine import GridProgram, local_mesh

GRID = {"arms": ["adamw"], "lrs": [1e-3, 1e-2], "weight_decays": [0.0, 1e-2, 1e-1]}
METRICS = ("train_loss", "validation_loss", "validation_error", "test_loss", "test_error")


def quiet(line: str) -> None:
    del line


def metrics(rows):
    return np.array([[row[m] for m in METRICS] for row in rows])


class DropNet(nnx.Module):
    """BatchNorm, a Dropout drawn from the model's own RNG stream (seeded by the model's
    Rngs) and one from the step's RNGs (``__call__(x, rngs)``, the runner's step keys)."""

    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(8, 16, rngs=rngs)
        self.own = nnx.Dropout(0.2, rngs=rngs)
        self.norm = nnx.BatchNorm(16, rngs=rngs)
        self.drop = nnx.Dropout(0.3)
        self.out = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x, rngs=None):
        h = nnx.relu(self.norm(self.own(self.hidden(x))))
        return self.out(self.drop(h, rngs=rngs))


def resplit_task(epochs: int = 2) -> Task:
    """150 examples re-split by seed: each seed trains and is evaluated on its own split."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0.5)

    def splits(seed: int):
        order = np.random.default_rng(100 + seed).permutation(150)
        train, validation, test = order[:90], order[90:120], order[120:]
        return (x[train], y[train]), (x[validation], y[validation]), (x[test], y[test])

    return Task(DropNet, (x[:90], y[:90]), (x[120:], y[120:]),
                validation=(x[90:120], y[90:120]), splits=splits, batch_size=15,
                epochs=epochs, name="resplit")


def keys(rows):
    return [(r["seed"], r["lr"], r["weight_decay"]) for r in rows]


def test_seeds_joined_give_the_rows_of_one_seed_at_a_time():
    """Seeds joined two per program (of 3 seeds: 0 and 1 joined, then 2 alone) against
    one at a time, which a CPU keeps by default (a short run: not probed)."""
    task, seeds = resplit_task(), (0, 1, 2)
    lines: list[str] = []
    apart = sweep(task, **GRID, seeds=seeds, log=lines.append)
    assert lines[-1].startswith("layout vmap, 6 cells per program: "), lines  # no × seeds
    # Estimated from the FLOPs of a cell's step (given a step key for DropNet's Dropout).
    assert "too short to probe" in lines[-1], lines
    joined = sweep(task, **GRID, seeds=seeds, seeds_per_program=2, log=quiet)
    assert keys(joined) == keys(apart)
    np.testing.assert_allclose(metrics(joined), metrics(apart), rtol=2e-5, atol=1e-6)
    by_seed = metrics(apart).reshape(len(seeds), 6, len(METRICS))
    assert not any(np.allclose(a, b) for a, b in zip(by_seed, by_seed[1:]))


def test_a_joined_run_in_groups_interrupted_resumes_to_the_same_csv(tmp_path):
    """Two seeds joined, in groups of 3 cells: the rows of one seed at a time, logged and
    recorded. Stopped in the second group (the first group's rows of both seeds stored,
    the second checkpointed), the same call resumes as recorded and writes the CSV of the
    uninterrupted run."""
    task = resplit_task(epochs=2)
    grid = dict(GRID, seeds=(0, 1), seeds_per_program=2, cells_per_program=3, report=False)
    apart = sweep(task, **GRID, seeds=(0, 1), seeds_per_program=1, log=quiet)
    lines: list[str] = []
    whole = sweep(task, **grid, out=tmp_path / "whole", log=lines.append)
    np.testing.assert_allclose(metrics(whole), metrics(apart), rtol=2e-5, atol=1e-6)
    assert any(line.startswith("layout groups, 3 cells per program × 2 seeds: ")
               for line in lines), lines
    recorded = json.loads((tmp_path / "whole" / "run.json").read_text())["layout"]
    assert (recorded["layout"], recorded["cells_per_program"],
            recorded["seeds_per_program"]) == ("groups", 3, 2)
    stored = sorted(p.name for p in (tmp_path / "whole" / ".wdchain-ablate").iterdir())
    assert stored == ["rows-adamw-seed0.json", "rows-adamw-seed1.json"]  # joined files dropped
    calls = []

    def stop_in_the_second_group(arm, seed, epochs):
        calls.append(seed)
        if len(calls) == 5:  # 2 chunks × 2 seeds of the first group, then the second's first
            raise RuntimeError("stop")

    out = tmp_path / "stopped"
    with pytest.raises(RuntimeError, match="stop"):
        sweep(task, **grid, out=out, log=quiet, on_chunk=stop_in_the_second_group)
    stored = sorted(p.name for p in (out / ".wdchain-ablate").iterdir())
    assert stored == ["checkpoint-adamw-seeds0+1-cells3-6", "rows-adamw-seeds0+1-cells0-3.json"]
    lines.clear()
    resume = {k: v for k, v in grid.items() if k not in ("seeds_per_program", "cells_per_program")}
    sweep(task, **resume, out=out, log=lines.append)
    assert "layout groups, 3 cells per program × 2 seeds (as recorded in run.json)" in lines
    assert ("resumed adamw seeds 0, 1 cells 3-5 from its checkpoint after epoch 1 of 2"
            in lines), lines
    assert (out / "results.csv").read_text() == (tmp_path / "whole" / "results.csv").read_text()


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2"])
def test_bad_seeds_per_program_is_refused(value):
    message = ("seeds_per_program must be an integer ≥ 1 (1: one seed at a time) or None "
               f"(measured), got {value!r}")
    with pytest.raises(ValueError, match=re.escape(message)):
        sweep(resplit_task(), **GRID, seeds=(0, 1), seeds_per_program=value, log=quiet)


def test_seeds_that_do_not_fit_together_are_refused_before_training(monkeypatch):
    """Memory for about 2 cells (from the compiled program's analysis): one seed's cells
    fit one at a time, 3 seeds joined do not."""
    task = resplit_task(epochs=1)
    program = GridProgram(task, parse_arm("adamw"), np.full(6, 1e-2), np.zeros(6),
                          local_mesh(jax.local_devices()[:1]))
    memory = _layout._Memory(program, 0, 1)
    monkeypatch.setattr(_layout, "_host_available", lambda: (
        2.5 * memory.cell + memory.batches) / (1 - _layout.MEMORY_MARGIN))
    monkeypatch.setattr("wdchain.ablate._engine.GridProgram.train_chunk", None)  # would crash
    with pytest.raises(ValueError, match=re.escape(
            "seeds_per_program=3 does not fit: 3 seeds × one cell per device need 3 cells' "
            "memory, about 2 cells fit; use seeds_per_program=1 (one seed at a time) or None")):
        sweep(task, **GRID, seeds=(0, 1, 2), seeds_per_program=3, parallel=1, log=quiet)


def test_the_command_line_passes_seeds_per_program(tmp_path, cli_sweep_arguments):
    seen = cli_sweep_arguments(["--task", "digits", "--arms", "adamw", "--seeds", "0,1",
                                "--seeds-per-program", "2", "--out", str(tmp_path / "out")])
    assert seen["seeds_per_program"] == 2


def test_the_probe_measures_seeds_joined_where_allowed(monkeypatch):
    """Where the backend is in JOIN_BACKENDS (made so here, on a CPU) and the run is long
    enough, the probe times all the seeds joined and keeps the faster per cell-step."""
    monkeypatch.setattr(_layout, "JOIN_BACKENDS", (jax.default_backend(),))
    monkeypatch.setattr(_layout, "NOMINAL_FLOPS", 1.0)  # a long run: the probe may run
    arm = parse_arm("adamw")
    lrs, wds = np.array([1e-3, 1e-2]), np.array([1e-2, 1e-2])  # probed: 1 and 2 cells
    # A run so long that the probe's budget (10 % of it) never binds, however loaded the
    # machine: with 1e6 cell-steps a probe slowed by other tests skipped the joined timing.
    plan, _ = _layout.plan(resplit_task(), arm, lrs, wds, local_mesh(jax.local_devices()[:1]),
                           layout=None, cells_per_program=None, cell_steps=1e12,
                           seeds_per_program=None, seeds=(0, 1, 2))
    joined = plan.joined_seconds_per_cell_step
    assert joined is not None and plan.as_json()["probe_joined"] == joined
    apart = plan.seconds_per_cell_step[plan.cells_per_program]
    assert plan.seeds_per_program == (3 if joined < apart else 1)
    assert "seeds joined" in plan.describe()
