"""Layouts of a grid (vmap, groups, loop), convolutions in loops, cells per program, memory."""

from __future__ import annotations

import functools
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from wdchain.ablate import Task, _layout, parse_arm, sweep
from wdchain.ablate._convolutions import canonical_convolutions
from wdchain.ablate._engine import GridProgram, local_mesh


class TinyCNN(nnx.Module):
    """Flax's MNIST CNN in miniature: conv, BatchNorm, Dropout, avg_pool as a partial."""

    def __init__(self, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, 3, kernel_size=(3, 3), rngs=rngs)
        self.norm = nnx.BatchNorm(3, rngs=rngs)
        self.drop = nnx.Dropout(0.1, rngs=rngs)
        self.conv2 = nnx.Conv(3, 4, kernel_size=(3, 3), rngs=rngs)
        self.avg_pool = functools.partial(nnx.avg_pool, window_shape=(2, 2), strides=(2, 2))
        self.out = nnx.Linear(2 * 2 * 4, 3, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.avg_pool(nnx.relu(self.norm(self.drop(self.conv1(x)))))
        x = self.avg_pool(nnx.relu(self.conv2(x)))
        return self.out(x.reshape(x.shape[0], -1))


def cnn_task(epochs: int = 2) -> Task:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 8, 8, 1)).astype(np.float32)
    y = (x[:, :4].mean(axis=(1, 2, 3)) > 0).astype(np.int32) + (x[:, :, :4].mean(
        axis=(1, 2, 3)) > 0.1)
    y = y.astype(np.int32)
    return Task(TinyCNN, (x[:80], y[:80]), (x[100:], y[100:]), validation=(x[80:100], y[80:100]),
                batch_size=20, epochs=epochs, name="tiny cnn")


def quiet(line: str) -> None:
    del line


GRID = {"arms": ["adamw"], "lrs": [1e-3, 1e-2], "weight_decays": [0.0, 1e-2, 1e-1]}
METRICS = ("train_loss", "validation_loss", "validation_error", "test_loss", "test_error")


def metrics(rows):
    return np.array([[row[m] for m in METRICS] for row in rows])


# -- convolutions in loops --------------------------------------------------------------

def conv_loss(w, x):
    y = lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sum(jnp.tanh(y))


def test_convolution_gradients_in_a_scan_are_native_and_equal_jax():
    """Inside lax.scan XLA:CPU leaves JAX's gradient convolutions in their own layout
    (compiled as naive loops); rewritten, every one is NHWC/HWIO (Eigen's), same values."""
    w = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3, 2, 5)), jnp.float32) * 0.3
    xs = jnp.asarray(np.random.default_rng(2).normal(size=(3, 4, 6, 6, 2)), jnp.float32)

    def step(w, x):
        return w - 0.1 * jax.grad(conv_loss)(w, x)

    def run(step):
        return jax.jit(lambda w, xs: lax.scan(lambda w, x: (step(w, x), None), w, xs)[0])

    plain, rewritten = run(step), run(canonical_convolutions(step))

    def labels(f):
        return set(re.findall(r"dim_labels=(\S+?),", f.lower(w, xs).compile().as_text()))

    assert labels(plain) - {"b01f_01io->b01f"}, "XLA canonicalised every convolution in the loop"
    assert labels(rewritten) == {"b01f_01io->b01f"}
    np.testing.assert_allclose(rewritten(w, xs), plain(w, xs), rtol=1e-5, atol=1e-6)


def test_vmapped_convolutions_run_per_cell_not_grouped():
    """Vmapped over input and kernel, the rewritten convolution is not a grouped one, and
    gives what one cell at a time gives (the oracle: a Python loop over cells)."""
    rng = np.random.default_rng(3)
    w = jnp.asarray(rng.normal(size=(4, 3, 3, 2, 5)), jnp.float32)
    x = jnp.asarray(rng.normal(size=(4, 2, 6, 6, 2)), jnp.float32)
    grad = canonical_convolutions(jax.grad(conv_loss))
    batched = jax.jit(jax.vmap(grad))
    assert "feature_group_count" not in batched.lower(w, x).compile().as_text()
    expected = np.stack([jax.grad(conv_loss)(w[i], x[i]) for i in range(4)])
    np.testing.assert_allclose(batched(w, x), expected, rtol=1e-5, atol=1e-5)


# -- layouts give the same rows ------------------------------------------------------------

def test_every_layout_gives_the_same_rows_and_is_recorded(tmp_path):
    task = cnn_task()
    base = sweep(task, **GRID, layout="vmap", log=quiet)
    lines: list[str] = []
    for layout, per_program in (("loop", None), ("groups", 4)):
        out = tmp_path / layout
        rows = sweep(task, **GRID, layout=layout, cells_per_program=per_program, out=out,
                     log=lines.append)
        assert [(r["lr"], r["weight_decay"]) for r in rows] == [
            (r["lr"], r["weight_decay"]) for r in base]
        np.testing.assert_allclose(metrics(rows), metrics(base), rtol=2e-5, atol=1e-6)
        recorded = json.loads((out / "run.json").read_text())["layout"]
        assert recorded["layout"] == layout
        assert recorded["cells_per_program"] == (1 if layout == "loop" else 4)
    assert any(line.startswith("layout loop, 1 cells per program") for line in lines)


def test_groups_resume_per_group(tmp_path):
    """Stopped after the first group of 2, the same call trains only the rest and gives
    the rows of an uninterrupted run."""
    task = cnn_task(epochs=1)
    grid = dict(GRID, lrs=[1e-2], weight_decays=[0.0, 1e-2, 1e-1])
    whole = sweep(task, **grid, cells_per_program=2, log=quiet)
    calls = []

    def stop_after_first_group(arm, seed, epochs):
        calls.append(epochs)
        if len(calls) == 2:  # the second group's only chunk: the first one's rows are kept
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        sweep(task, **grid, cells_per_program=2, out=tmp_path, log=quiet,
              on_chunk=stop_after_first_group)
    saved = sorted(p.name for p in (tmp_path / ".wdchain-ablate").iterdir())
    assert saved == ["rows-adamw-seed0-cells0-2.json"]
    lines: list[str] = []
    resumed = sweep(task, **grid, out=tmp_path, log=lines.append)  # the layout as recorded
    assert "layout groups, 2 cells per program (as recorded in run.json)" in lines
    np.testing.assert_array_equal(metrics(resumed), metrics(whole))


# -- memory ---------------------------------------------------------------------------------

def test_cells_per_program_none_fits_the_memory(monkeypatch):
    """With the memory of about 2 cells (of the compiled program's analysis), the grid
    runs in groups of 2 and gives the rows of the whole grid."""
    task = cnn_task(epochs=1)
    program = GridProgram(task, parse_arm("adamw"), np.full(6, 1e-2), np.zeros(6),
                          local_mesh(jax.local_devices()[:1]))
    memory = _layout._Memory(program, 0, 1)
    assert memory.cell > 0 and memory.fit > 6
    monkeypatch.setattr(_layout, "_host_available", lambda: (
        2.5 * memory.cell + memory.batches) / (1 - _layout.MEMORY_MARGIN))
    lines: list[str] = []
    rows = sweep(task, **GRID, parallel=1, log=lines.append)
    assert any(line.startswith("layout groups, 2 cells per program") for line in lines), lines
    monkeypatch.undo()
    whole = sweep(task, **GRID, layout="vmap", log=quiet)
    np.testing.assert_allclose(metrics(rows), metrics(whole), rtol=2e-5, atol=1e-6)


def _plan_36_cells_with_probe_times(monkeypatch, measured: dict[int, float],
                                    cell_steps: float) -> _layout.Plan:
    """The plan of a 6 × 6 CNN grid whose probe measures ``measured`` seconds per cell-step
    for each size (compiling nothing)."""

    class Probe:  # the probe's measurement, fixed
        def __init__(self, task, arm, lrs, weight_decays, mesh, size, seed=0):
            self.size, self.compile_seconds = size, 0.0

        def seconds_per_cell_step(self):
            return measured[self.size]

    monkeypatch.setattr(_layout, "_Probe", Probe)
    lrs, wds = (g.ravel() for g in np.meshgrid(np.logspace(-3, -2, 6), np.logspace(-3, -1, 6)))
    plan, _ = _layout.plan(cnn_task(epochs=1), parse_arm("adamw"), lrs, wds,
                           local_mesh(jax.local_devices()[:1]), layout=None,
                           cells_per_program=None, cell_steps=cell_steps)
    return plan


@pytest.mark.parametrize(("sixteen", "chosen"), [(0.9, 36), (0.7, 36), (0.6, 16)])
def test_the_probe_counts_the_padding_of_the_last_group(monkeypatch, sixteen, chosen):
    """36 cells in groups of 16 train 3 × 16 = 48 cell slots: 16 per program wins only when
    its time per cell-step × 48 beats all 36 in one program (1.0 × 36) by more than the 10 %
    tolerance (hand count: 0.9 × 48 = 43.2 > 36; 0.7 × 48 = 33.6, faster but within 10 %:
    one program kept; 0.6 × 48 = 28.8 < 36 / 1.1 = 32.7)."""
    measured = {1: 1.2, 4: 1.1, 16: sixteen, 36: 1.0}
    plan = _plan_36_cells_with_probe_times(monkeypatch, measured, cell_steps=1e12)
    assert plan.seconds_per_cell_step == measured and plan.cells_per_program == chosen


def test_the_probe_budget_follows_the_measured_time_not_the_nominal_rate(monkeypatch):
    """An absurdly slow nominal rate lets the probe start; once one cell per program is
    measured (1 s per cell-step × 10 cell-steps: a 10 s run, a 1 s budget), the next size's
    probe (3 runs × 2 steps × 4 cells × 1 s) would exceed it, so no larger size is probed.
    With the nominal estimate kept as the budget, all four sizes were probed."""
    monkeypatch.setattr(_layout, "NOMINAL_FLOPS", 1.0)
    measured = {1: 1.0, 4: 0.5, 16: 0.4, 36: 0.3}
    plan = _plan_36_cells_with_probe_times(monkeypatch, measured, cell_steps=10)
    assert plan.seconds_per_cell_step == {1: 1.0} and plan.cells_per_program == 1


class Wide(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden, self.out = nnx.Linear(4, 4096, rngs=rngs), nnx.Linear(4096, 2, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(nnx.relu(self.hidden(x)))


def test_the_memory_per_cell_counts_the_evaluation_of_a_chunk():
    """Training on batches of 2 needs well under 1 MB per cell (24k parameters, Adam's two
    moments, 2 × 4,096 activations); evaluating the 1,000 test examples materialises their
    1,000 × 4,096 float32 hidden activations, 16.4 MB per cell: the fit must count that."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1200, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    task = Task(Wide, (x[:40], y[:40]), (x[200:], y[200:]), validation=(x[40:200], y[40:200]),
                batch_size=2, epochs=1, name="wide")
    program = GridProgram(task, parse_arm("adamw"), np.full(2, 1e-2), np.zeros(2),
                          local_mesh(jax.local_devices()[:1]))
    memory = _layout._Memory(program, 0, 1)
    assert memory.cell >= 1000 * 4096 * 4


def test_a_grid_of_which_one_cell_does_not_fit_is_refused_before_training(monkeypatch):
    monkeypatch.setattr(_layout, "_host_available", lambda: 1000.0)
    monkeypatch.setattr("wdchain.ablate._engine.GridProgram.train_chunk", None)  # would crash
    with pytest.raises(ValueError, match=r"one cell per device does not fit: a cell needs "
                                         r"[\d.,]+ MB .* MB are available"):
        sweep(cnn_task(), **GRID, log=quiet)


@pytest.mark.parametrize(("layout", "per_program", "message"), [
    ("fast", None, "layout must be one of vmap, groups, loop or None"),
    (None, 0, "cells_per_program must be an integer ≥ 1 or None"),
    ("vmap", 2, "layout='vmap' contradicts cells_per_program=2"),
])
def test_bad_layout_arguments_are_refused(layout, per_program, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        sweep(cnn_task(), **GRID, layout=layout, cells_per_program=per_program, log=quiet)
