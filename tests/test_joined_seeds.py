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
from wdchain.ablate._cli import main as cli_main
from wdchain.ablate._engine import local_mesh

GRID = {"arms": ["adamw"], "lrs": [1e-3, 1e-2], "weight_decays": [0.0, 1e-2, 1e-1]}
METRICS = ("train_loss", "validation_loss", "validation_error", "test_loss", "test_error")


def quiet(line: str) -> None:
    del line


def metrics(rows):
    return np.array([[row[m] for m in METRICS] for row in rows])


class TinyCNN(nnx.Module):
    """A convolution, BatchNorm and Dropout drawn from the model's own RNG stream."""

    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(1, 3, kernel_size=(3, 3), rngs=rngs)
        self.norm = nnx.BatchNorm(3, rngs=rngs)
        self.drop = nnx.Dropout(0.1, rngs=rngs)
        self.out = nnx.Linear(4 * 4 * 3, 3, rngs=rngs)

    def __call__(self, x):
        x = nnx.avg_pool(nnx.relu(self.norm(self.drop(self.conv(x)))), (2, 2), (2, 2))
        return self.out(x.reshape(x.shape[0], -1))


def cnn_task(epochs: int = 2) -> Task:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 8, 8, 1)).astype(np.float32)
    y = (x[:, :4].mean(axis=(1, 2, 3)) > 0).astype(np.int32) + (x[:, :, :4].mean(
        axis=(1, 2, 3)) > 0.1)
    return Task(TinyCNN, (x[:80], y[:80]), (x[100:], y[100:]), validation=(x[80:100], y[80:100]),
                batch_size=20, epochs=epochs, name="tiny cnn")


class DropNet(nnx.Module):
    """BatchNorm, and Dropout drawn from the step's RNGs (``__call__(x, rngs)``)."""

    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(8, 16, rngs=rngs)
        self.norm = nnx.BatchNorm(16, rngs=rngs)
        self.drop = nnx.Dropout(0.3)
        self.out = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x, rngs=None):
        return self.out(self.drop(nnx.relu(self.norm(self.hidden(x))), rngs=rngs))


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


@pytest.mark.parametrize("make", [cnn_task, resplit_task], ids=["cnn", "resplit"])
def test_seeds_joined_give_the_rows_of_one_seed_at_a_time(make):
    """Seeds 0 and 1 joined, seed 2 alone (3 seeds, 2 per program) against one at a time."""
    task = make()
    apart = sweep(task, **GRID, seeds=(0, 1, 2), seeds_per_program=1, log=quiet)
    joined = sweep(task, **GRID, seeds=(0, 1, 2), seeds_per_program=2, log=quiet)
    assert keys(joined) == keys(apart)
    np.testing.assert_allclose(metrics(joined), metrics(apart), rtol=2e-5, atol=1e-6)
    by_seed = metrics(apart).reshape(3, 6, len(METRICS))
    assert not np.allclose(by_seed[0], by_seed[1]) and not np.allclose(by_seed[1], by_seed[2])


def test_seeds_joined_in_groups_of_cells_are_logged_and_recorded(tmp_path):
    task = resplit_task(epochs=1)
    apart = sweep(task, **GRID, seeds=(0, 1, 2), log=quiet)
    lines: list[str] = []
    joined = sweep(task, **GRID, seeds=(0, 1, 2), seeds_per_program=3, cells_per_program=4,
                   out=tmp_path, report=False, log=lines.append)
    np.testing.assert_allclose(metrics(joined), metrics(apart), rtol=2e-5, atol=1e-6)
    assert any(line.startswith("layout groups, 4 cells per program × 3 seeds: ")
               for line in lines), lines
    recorded = json.loads((tmp_path / "run.json").read_text())["layout"]
    assert (recorded["layout"], recorded["cells_per_program"],
            recorded["seeds_per_program"]) == ("groups", 4, 3)
    stored = sorted(p.name for p in (tmp_path / ".wdchain-ablate").iterdir())
    assert stored == [f"rows-adamw-seed{s}.json" for s in range(3)]  # joined files dropped


def test_a_joined_run_interrupted_in_its_second_group_resumes_to_the_same_csv(tmp_path):
    """Stopped in the second group of cells (the first group's rows of both seeds stored,
    the second checkpointed), the same call resumes as recorded and writes the CSV of an
    uninterrupted run."""
    task = resplit_task(epochs=2)
    grid = dict(GRID, seeds=(0, 1), seeds_per_program=2, cells_per_program=3, report=False)
    sweep(task, **grid, out=tmp_path / "whole", log=quiet)
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
    lines: list[str] = []
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


def test_the_command_line_passes_seeds_per_program(tmp_path, monkeypatch):
    seen = {}

    def fake_sweep(task, **kwargs):
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr("wdchain.ablate._cli.sweep", fake_sweep)
    with pytest.raises(SystemExit):
        cli_main(["--task", "digits", "--arms", "adamw", "--seeds", "0,1",
                  "--seeds-per-program", "2", "--out", str(tmp_path / "out")])
    assert seen["seeds_per_program"] == 2


@pytest.mark.parametrize("joinable", [True, False])
def test_the_probe_measures_seeds_joined_only_where_allowed(monkeypatch, joinable):
    """Where the backend is in JOIN_BACKENDS (made so here, on a CPU) and the run is long
    enough, the probe times all the seeds joined and keeps the faster per cell-step."""
    monkeypatch.setattr(_layout, "JOIN_BACKENDS",
                        (jax.default_backend(),) if joinable else ())
    monkeypatch.setattr(_layout, "NOMINAL_FLOPS", 1.0)  # a long run: the probe may run
    arm = parse_arm("adamw")
    lrs, wds = np.repeat([1e-3, 1e-2], 3), np.tile([0.0, 1e-2, 1e-1], 2)
    plan, _ = _layout.plan(resplit_task(), arm, lrs, wds, local_mesh(jax.local_devices()[:1]),
                           layout=None, cells_per_program=None, cell_steps=1e6,
                           seeds_per_program=None, seeds=(0, 1, 2))
    if not joinable:
        assert plan.joined_seconds_per_cell_step is None and plan.seeds_per_program == 1
        return
    joined = plan.joined_seconds_per_cell_step
    assert joined is not None and plan.as_json()["probe_joined"] == joined
    apart = plan.seconds_per_cell_step[plan.cells_per_program]
    assert plan.seeds_per_program == (3 if joined < apart else 1)
    assert "seeds joined" in plan.describe()
