"""The ablation runner: the Task/sweep API, selection, measures, resume, sharding, CLI."""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import wdchain
from wdchain.ablate import CSV_COLUMNS, Task, _analysis, _cli, _report, parse_arm, sweep
from wdchain.ablate._builtin import digits, digits_splits, mnist1d_splits
from wdchain.ablate._engine import GridProgram, local_mesh

ROOT = Path(__file__).resolve().parent.parent


def small_digits(epochs: int = 1) -> Task:
    return dataclasses.replace(digits(), epochs=epochs)


def quiet(line: str) -> None:
    del line


# -- the public API ---------------------------------------------------------------------

@pytest.mark.slow
def test_sweep_returns_one_row_per_arm_lr_lambda_seed_with_the_csv_columns(tmp_path):
    rows = sweep(small_digits(), arms=["adam-l2", "adamw"], lrs=[1e-3, 1e-2],
                 weight_decays=[0.0, 1e-3], seeds=(0, 1), out=tmp_path, log=quiet)
    assert len(rows) == 2 * 2 * 2 * 2
    assert all(tuple(row) == CSV_COLUMNS for row in rows)
    cells = {(r["arm"], r["lr"], r["weight_decay"], r["seed"]) for r in rows}
    assert len(cells) == 16 and {r["weight_decay"] for r in rows} == {0.0, 1e-3}
    for row in rows:
        assert 0 <= row["validation_error"] <= 1 and 0 <= row["test_error"] <= 1
        assert row["diverged"] is False
    # One epoch of Adam at lr 1e-2 beats chance (10 classes) by far.
    assert min(r["test_error"] for r in rows if r["lr"] == 1e-2) < 0.5
    # λ = 0 is the same optimizer for every placement: identical rows.
    zero = {(r["arm"], r["seed"]): r["test_loss"] for r in rows
            if r["weight_decay"] == 0 and r["lr"] == 1e-2}
    assert zero[("adam-l2", 0)] == zero[("adamw", 0)]
    with open(tmp_path / "results.csv", newline="") as file:
        written = list(csv.DictReader(file))
    assert tuple(written[0]) == CSV_COLUMNS and len(written) == 16
    assert _report.read_csv(tmp_path / "results.csv") == rows


@pytest.mark.parametrize("per_cell_batch", [None, True, False],
                         ids=["as-the-runner-does", "batch-per-cell", "batch-shared"])
def test_a_grid_cell_equals_the_same_training_written_with_nnx_optimizer(per_cell_batch):
    """Independent oracle: one cell of the vmapped grid against a plain NNX loop, whether
    each cell gets its own copy of the batch (the runner's choice on a CPU) or shares it."""
    task = small_digits(epochs=2)
    arm = parse_arm("adamw-independent")
    program = GridProgram(task, arm, np.array([3e-3, 1e-2]), np.array([1e-2, 0.0]),
                          local_mesh(None), per_cell_batch=per_cell_batch)
    carry = program.initial_carry(seed=3)
    for epoch in range(task.epochs):
        carry, _ = program.train_chunk(carry, 3, epoch)
    grid = program.evaluate(carry, 3)

    model = task.model(nnx.Rngs(3))
    optimizer = nnx.Optimizer(model, program.optimizer(1e-2, 0.0), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y):
        grads = nnx.grad(lambda m: task.loss_fn(m, (x, y))[0])(model)
        optimizer.update(model, grads)

    for epoch in range(task.epochs):
        xs, ys = program.batches(3, range(epoch, epoch + 1))
        for x, y in zip(xs, ys):
            step(model, optimizer, x, y)
    model.eval()
    x_val, y_val = program.task_for(3).validation
    loss, metrics = task.loss_fn(model, (jnp.asarray(x_val), jnp.asarray(y_val)))
    np.testing.assert_allclose(grid.validation_loss[1], loss, rtol=2e-5)
    assert grid.validation_error[1] == pytest.approx(float(metrics["error"]), abs=1e-6)
    assert grid.validation_loss[0] != grid.validation_loss[1]  # the cells differ


def test_a_schedule_free_cell_is_evaluated_at_its_average_x_not_at_y():
    """Oracle: the same training by hand with nnx.Optimizer, evaluated at
    schedule_free_eval_params(state, params) (x); evaluating at y gives another loss."""
    task = small_digits(epochs=1)
    program = GridProgram(task, parse_arm("schedule_free_adam-decoupled"), np.array([1e-2]),
                          np.array([1e-2]), local_mesh(None))
    carry, _ = program.train_chunk(program.initial_carry(seed=0), 0, 0)
    grid = program.evaluate(carry, 0)

    model = task.model(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, program.optimizer(1e-2, 1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y):
        grads = nnx.grad(lambda m: task.loss_fn(m, (x, y))[0])(model)
        optimizer.update(model, grads)

    for x, y in zip(*program.batches(0, range(1))):
        step(model, optimizer, x, y)
    model.eval()
    validation = tuple(jnp.asarray(a) for a in program.task_for(0).validation)
    at_y = task.loss_fn(model, validation)[0]
    def pure(tree):
        return jax.tree.map(lambda v: v[...], tree, is_leaf=lambda v: isinstance(v, nnx.Variable))

    params = nnx.state(model, nnx.Param)
    x = wdchain.schedule_free_eval_params(pure(optimizer.opt_state), pure(params))
    nnx.replace_by_pure_dict(params, nnx.to_pure_dict(x))
    nnx.update(model, params)
    at_x = task.loss_fn(model, validation)[0]
    np.testing.assert_allclose(grid.validation_loss[0], at_x, rtol=2e-5)
    assert abs(float(at_x) - float(at_y)) > 1e-3 * abs(float(at_x))  # y would be wrong


def test_cells_get_their_own_batch_on_a_cpu_unless_the_copies_are_large():
    from wdchain.ablate._engine import PER_CELL_BATCH_BYTES, batch_per_cell

    steps = np.zeros((32, 100, 40), np.float32), np.zeros((32, 100), np.int32)
    assert jax.default_backend() == "cpu" and batch_per_cell(steps, 64)
    per_step = 100 * 40 * 4 + 100 * 4
    assert batch_per_cell(steps, PER_CELL_BATCH_BYTES // per_step)
    assert not batch_per_cell(steps, PER_CELL_BATCH_BYTES // per_step + 1)


class BatchNormDropoutNet(nnx.Module):
    """Non-Param state: BatchNorm statistics and a Dropout RNG stream."""

    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(64, 32, rngs=rngs)
        self.norm = nnx.BatchNorm(32, rngs=rngs)
        self.drop = nnx.Dropout(0.3, rngs=rngs)
        self.out = nnx.Linear(32, 10, rngs=rngs)

    def __call__(self, x):
        return self.out(self.drop(nnx.relu(self.norm(self.hidden(x)))))


def test_a_model_with_batchnorm_and_dropout_carries_its_state_and_evaluates_in_eval_mode():
    train, validation, test = digits_splits(0)
    task = Task(BatchNormDropoutNet, train, test, validation=validation, batch_size=64, epochs=2)
    program = GridProgram(task, parse_arm("adamw"), np.array([1e-2]), np.array([1e-2]),
                          local_mesh(None))
    carry = program.initial_carry(0)
    start_mean = np.asarray(carry.rest["norm"]["mean"][...])
    carry, _ = program.train_chunk(carry, 0, 0)
    assert not np.allclose(carry.rest["norm"]["mean"][...], start_mean)  # stats updated
    assert int(carry.rest["drop"]["rngs"]["count"][...][0]) > 0  # the RNG stream advanced
    first = program.evaluate(carry, 0)
    again = program.evaluate(carry, 0)
    assert first.validation_loss == again.validation_loss  # eval mode: no dropout
    assert first.validation_error[0] < 0.5


def test_a_task_without_validation_holds_out_a_fixed_stratified_fifth_of_train():
    train, _, test = digits_splits(0)
    task = Task(BatchNormDropoutNet, train, test)
    first, other = task.for_seed(0), task.for_seed(5)
    assert len(first.validation[0]) == round(0.2 * len(train[0]))
    assert len(first.train[0]) + len(first.validation[0]) == len(train[0])
    np.testing.assert_array_equal(first.validation[1], other.validation[1])  # seed-independent
    counts = np.bincount(first.validation[1], minlength=10) / len(first.validation[1])
    expected = np.bincount(train[1], minlength=10) / len(train[1])
    np.testing.assert_allclose(counts, expected, atol=0.01)  # stratified


def test_builtin_tasks_resplit_by_seed_and_never_download(monkeypatch):
    import mnist1d.data
    import requests

    def no_network(*args, **kwargs):
        raise AssertionError("mnist1d must be generated locally, not downloaded")

    monkeypatch.setattr(mnist1d.data, "get_dataset", no_network)
    monkeypatch.setattr(requests, "get", no_network)
    (x0, y0), (xv, _), (xt, _) = mnist1d_splits(0)
    (x1, _), _, _ = mnist1d_splits(1)
    assert x0.shape == (3200, 40) and xv.shape == (800, 40) and xt.shape == (1000, 40)
    assert not np.array_equal(x0, x1)
    assert set(np.unique(y0)) == set(range(10))


def test_a_batch_function_task_trains_like_the_same_arrays():
    train, validation, test = digits_splits(0)
    arrays = Task(BatchNormDropoutNet, train, test, validation=validation, batch_size=64,
                  epochs=1)
    probe = GridProgram(arrays, parse_arm("adam-l2"), np.array([1e-2]), np.array([1e-4]),
                        local_mesh(None))

    def batches(seed, epoch):
        xs, ys = probe.batches(seed, range(epoch, epoch + 1))
        return list(zip(xs, ys))

    streamed = dataclasses.replace(arrays, train=batches,
                                   steps_per_epoch=probe.steps_per_epoch)
    a = sweep(arrays, arms=["adam-l2"], lrs=[1e-2], weight_decays=[1e-4], log=quiet)
    b = sweep(streamed, arms=["adam-l2"], lrs=[1e-2], weight_decays=[1e-4], log=quiet)
    assert a[0]["validation_loss"] == b[0]["validation_loss"]


def test_runner_arm_names_mean_the_builders_optimizers():
    params = {"w": jnp.array([[0.5, -1.0]]), "b": jnp.array([0.3])}
    grads = jax.tree.map(jnp.ones_like, params)
    for name, preconditioner, decay, axes in [
        ("sgd-l2", "sgd", "l2", {}),
        ("sgdw", "momentum", "independent", {}),
        ("adamw", "adam", "decoupled", {}),
        ("adamw+cautious", "adam", "decoupled", {"gate": "cautious"}),
        ("adam-l2+init", "adam", "l2", {"toward": "init"}),
        ("adam-corrected+cautious+init", "adam", "corrected",
         {"gate": "cautious", "toward": "init"}),
        ("adam-stable", "adam", "stable", {}),
    ]:
        arm = parse_arm(name)
        assert (arm.preconditioner, arm.decay, arm.gate, arm.toward) == (
            preconditioner, decay, axes.get("gate"), axes.get("toward"))
        ours = arm.optimizer(0.1, 0.5, None, None)
        reference = wdchain.build(preconditioner, decay=decay, lr=0.1, weight_decay=0.5, **axes)
        for tx in (ours, reference):
            state = tx.init(params)
            for _ in range(2):
                updates, state = tx.update(grads, state, params)
            tx.result = updates
        for leaf_a, leaf_b in zip(jax.tree.leaves(ours.result), jax.tree.leaves(reference.result)):
            np.testing.assert_array_equal(leaf_a, leaf_b)
    with pytest.raises(ValueError, match="momentum-independent"):
        parse_arm("sgd-momentum")
    with pytest.raises(ValueError, match=r"\[\+cautious\]\[\+init\]"):
        parse_arm("adamw+careful")


class Linear(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.out = nnx.Linear(64, 10, rngs=rngs)

    def __call__(self, x):
        return self.out(x)


def test_diverged_cells_are_flagged_not_read_as_errors():
    train, validation, test = digits_splits(0)
    task = Task(Linear, train, test, validation=validation, batch_size=64, epochs=2)
    rows = sweep(task, arms=["momentum-l2"], lrs=[1e-2, 1e30], weight_decays=[1e-4], log=quiet)
    good, bad = sorted(rows, key=lambda r: r["lr"])
    assert not good["diverged"] and bad["diverged"]
    assert math.isnan(bad["test_error"]) and math.isnan(bad["validation_error"])
    measures = _analysis.measure(_analysis.ArmGrid.from_rows(rows, "momentum-l2"))
    assert measures.selected_lr == 1e-2 and measures.diverged_cells == 1


@pytest.mark.parametrize(("bad", "message"), [
    ({"arms": ["adam-l3"]}, "unknown arm 'adam-l3'"),
    ({"arms": []}, "arms is empty"),
    ({"lrs": [0.0]}, "lrs must be finite and > 0"),
    ({"weight_decays": [-1e-3]}, "weight_decays must be finite and ≥ 0"),
    ({"weight_decays": []}, "is empty"),
    ({"seeds": ()}, "seeds must be integers"),
    ({"seeds": (0, 0)}, "seeds repeat"),
    ({"parallel": 0}, "parallel must be an integer ≥ 1"),
    ({"devices": []}, "devices is empty"),
])
def test_sweep_refuses_bad_arguments_naming_them(bad, message):
    kwargs = {"arms": ["adamw"], "lrs": [1e-2], "weight_decays": [1e-3], "log": quiet}
    with pytest.raises(ValueError, match=message):
        sweep(small_digits(), **{**kwargs, **bad})


def test_task_refuses_bad_arguments():
    train, validation, test = digits_splits(0)
    with pytest.raises(ValueError, match="batch_size must be an integer ≥ 1, got 0"):
        Task(BatchNormDropoutNet, train, test, batch_size=0)
    with pytest.raises(ValueError, match="pair"):
        Task(BatchNormDropoutNet, train[0], test)
    with pytest.raises(ValueError, match="as many labels"):
        Task(BatchNormDropoutNet, (train[0], train[1][:5]), test)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        Task(BatchNormDropoutNet, lambda s, e: [], test, validation=validation)


# -- measures -----------------------------------------------------------------------------

def _rows(errors, lrs, wds, arm="adam-l2", test=None):
    errors = np.asarray(errors, float)
    if errors.ndim == 2:
        errors = errors[None]
    test = errors if test is None else np.asarray(test, float).reshape(errors.shape)
    arm_ = parse_arm(arm)
    return [{"arm": arm, "preconditioner": arm_.preconditioner, "decay": arm_.decay, "lr": float(lr),
                 "weight_decay": float(wd), "seed": s, "validation_error": float(errors[s, i, j]),
                 "test_error": float(test[s, i, j]), "diverged": False}
            for s in range(errors.shape[0]) for i, lr in enumerate(lrs)
            for j, wd in enumerate(wds)]


def test_selection_uses_validation_never_test():
    lrs, wds = [1e-3, 1e-2], [1e-4, 1e-3, 1e-2]
    validation = [[0.30, 0.20, 0.30], [0.40, 0.35, 0.40]]
    test = [[0.30, 0.25, 0.30], [0.40, 0.10, 0.40]]  # test would pick another cell
    m = _analysis.measure(_analysis.ArmGrid.from_rows(_rows(validation, lrs, wds, test=test),
                                                      "adam-l2"))
    assert (m.selected_lr, m.selected_weight_decay) == (1e-3, 1e-3)
    assert m.test_error_mean == pytest.approx(0.25)


def test_slope_of_a_diagonal_an_axis_aligned_and_a_refined_optimum():
    lrs, wds = np.logspace(-4, -1, 4), np.logspace(-6, 0, 7)
    diagonal = [[abs(j - (5 - i)) / 100 for j in range(7)] for i in range(4)]
    assert _analysis.slope(np.array(diagonal), lrs, wds)[0] == pytest.approx(-1.0)
    aligned = [[abs(j - 3) / 100 + i / 1000 for j in range(7)] for i in range(4)]
    assert _analysis.slope(np.array(aligned), lrs, wds)[0] == pytest.approx(0.0, abs=1e-12)
    # A parabola in log λ with its vertex between grid points is found there.
    centre = np.array([-3.3, -3.1, -2.9, -2.7])
    parabola = (np.log10(wds)[None, :] - centre[:, None]) ** 2 / 100
    optima = _analysis.row_optima(parabola, wds)
    np.testing.assert_allclose([o[0] for o in optima], centre, atol=1e-9)
    assert _analysis.slope(parabola, lrs, wds)[0] == pytest.approx(0.2 / 1.0, abs=1e-9)


def test_slope_ignores_rows_far_from_the_best_and_edge_argmins():
    lrs, wds = np.logspace(-4, -1, 4), np.logspace(-6, 0, 7)
    rows = [[abs(j - (5 - i)) / 100 for j in range(7)] for i in range(4)]
    rows[0] = [0.9] * 6 + [0.5]  # a bad row whose argmin is the largest λ
    grid = np.array(rows)
    value, used = _analysis.slope(grid, lrs, wds)
    assert used == 3 and value == pytest.approx(-1.0)


def test_regret_edge_and_paired_gap():
    lrs, wds = [1e-3, 1e-2, 1e-1], [0.0, 1e-4, 1e-3]
    errors = [[0.30, 0.31, 0.32], [0.30, 0.25, 0.33], [0.40, 0.40, 0.40]]
    m = _analysis.measure(_analysis.ArmGrid.from_rows(_rows(errors, lrs, wds), "adam-l2"))
    assert m.edge == "smallest λ"
    assert m.regret == pytest.approx(0.0)  # only the best row is within 3 points
    l2 = _analysis.measure(_analysis.ArmGrid.from_rows(
        _rows([errors, errors], lrs, wds), "adam-l2"))
    better = _analysis.measure(_analysis.ArmGrid.from_rows(
        _rows([np.subtract(errors, 0.02), np.subtract(errors, 0.04)], lrs, wds,
              arm="adamw-independent"), "adamw-independent"))
    mean, std, gaps = _analysis.paired_gap(better, l2)
    assert gaps == pytest.approx((-0.02, -0.04)) and mean == pytest.approx(-0.03)
    assert std == pytest.approx(np.std([-0.02, -0.04], ddof=1))


def test_summary_says_only_what_the_numbers_support():
    lrs, wds = np.logspace(-4, -1, 4), np.logspace(-6, 0, 7)
    diagonal = np.array([[abs(j - (5 - i)) / 100 + 0.2 for j in range(7)] for i in range(4)])
    aligned = np.array([[abs(j - 3) / 100 + 0.1 for j in range(7)] for i in range(4)])

    def seeds(grid, shift):
        return np.stack([grid, grid + shift])

    rows = (_rows(seeds(diagonal, 0.01), lrs, wds, "adam-l2")
            + _rows(seeds(aligned, 0.0), lrs, wds, "adamw-independent"))
    text = _report.summary_markdown(rows, {"test_examples": 1000, "command": "x"})
    assert "**adam-l2**: diagonal" in text
    assert "**adamw-independent**: axis-aligned" in text
    assert "lower in 2 of 2 seeds" in text and "adamw-independent is better here" in text
    tie = _rows(seeds(diagonal, 0.0), lrs, wds, "adam-l2") + _rows(
        np.stack([diagonal - 0.001, diagonal + 0.001]), lrs, wds, "adamw")
    text = _report.summary_markdown(tie, {"test_examples": 1000, "command": "x"})
    assert "no consistent difference" in text
    # Lower in every seed, by 0.5 points: less than one standard error of 1,000 test
    # examples (1.3 points at about 20 % error), so a consistent sign but no verdict.
    small = _rows(seeds(diagonal, 0.0), lrs, wds, "adam-l2") + _rows(
        np.stack([diagonal - 0.004, diagonal - 0.006]), lrs, wds, "adamw")
    text = _report.summary_markdown(small, {"test_examples": 1000, "command": "x"})
    assert "lower in 2 of 2 seeds; the same sign in every seed, but within one binomial " \
        "standard error of the test set (1.3 points): too small to call here." in text, text
    # The same errors in every seed: a gap of 0, which has no sign.
    same = _rows(seeds(diagonal, 0.0), lrs, wds, "adam-l2") + _rows(
        seeds(diagonal, 0.0), lrs, wds, "adamw")
    text = _report.summary_markdown(same, {"test_examples": 1000, "command": "x"})
    assert "lower in 0 of 2 seeds; no consistent difference at this number of seeds." in text


# -- outputs, resume, sharding ---------------------------------------------------------------

@pytest.mark.slow
def test_report_writes_figures_with_provenance(tmp_path, capsys):
    _cli.main(["--task", "digits", "--arms", "adam-l2,adamw-independent", "--lrs", "1e-3,1e-2",
               "--wds", "0,1e-4,1e-2", "--epochs", "1", "--seeds", "0,1", "--out", str(tmp_path)])
    for name in ("figure2.png", "heatmap_adam-l2.png", "heatmap_adamw-independent.png",
                 "trajectories.png"):
        png = (tmp_path / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert (tmp_path / "trajectories.csv").read_text().startswith("arm,epoch,metric,value\n")
    summary = (tmp_path / "summary.md").read_text()
    assert "task digits" in summary and "seeds 0,1" in summary and f"wdchain {wdchain.__version__}" in summary
    assert "| adamw-independent |" in summary and "vs adam-l2" in summary
    assert "## What this run shows" in capsys.readouterr().out


def test_another_runs_folder_is_refused_and_fresh_replaces_it(tmp_path):
    args = {"arms": ["adamw"], "lrs": [1e-2], "weight_decays": [1e-3], "out": tmp_path, "log": quiet}
    sweep(small_digits(), **args)
    with pytest.raises(ValueError, match=r"holds another run \(it differs in: seeds\)"):
        sweep(small_digits(), **{**args, "seeds": (1,)})
    rows = sweep(small_digits(), **{**args, "seeds": (1,), "fresh": True})
    assert {r["seed"] for r in _report.read_csv(tmp_path / "results.csv")} == {1} == {
        r["seed"] for r in rows}


def test_a_finished_sweep_run_again_trains_nothing(tmp_path, monkeypatch):
    args = {"arms": ["adamw"], "lrs": [1e-2], "weight_decays": [1e-3], "out": tmp_path, "log": quiet,
            "report": False}
    first = sweep(small_digits(), **args)
    monkeypatch.setattr("wdchain.ablate._sweep.GridProgram", None)  # training would crash
    assert sweep(small_digits(), **args) == first


RESUME_COMMAND = ["-m", "wdchain.ablate", "--task", "digits", "--arms", "adamw,adam-l2",
                  "--lrs", "3e-3,3e-2", "--wds", "0,1e-2", "--epochs", "30", "--seeds", "0,1"]


@pytest.mark.slow
def test_a_killed_sweep_resumes_from_its_checkpoint_and_writes_the_same_csv(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    complete = subprocess.run([sys.executable, *RESUME_COMMAND, "--out", str(tmp_path / "a")],
                              check=False, capture_output=True, text=True, timeout=600, env=env)
    assert complete.returncode == 0, complete.stderr[-2000:]
    out = tmp_path / "b"
    run = subprocess.Popen([sys.executable, *RESUME_COMMAND, "--out", str(out)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    state = out / ".wdchain-ablate"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and run.poll() is None:
        checkpoints = list(state.glob("checkpoint-adamw-seed*/*")) if state.exists() else []
        if any(path.name.isdigit() for path in checkpoints):
            break
        time.sleep(0.01)
    assert run.poll() is None, "the run ended before a checkpoint could be interrupted"
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert not (out / "summary.md").exists()
    resumed = subprocess.run([sys.executable, *RESUME_COMMAND, "--out", str(out)],
                             check=False, capture_output=True, text=True, timeout=600, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed adamw seed" in resumed.stderr and "after epoch" in resumed.stderr
    assert (out / "results.csv").read_bytes() == (tmp_path / "a" / "results.csv").read_bytes()


SHARDED = textwrap.dedent("""
    import os, sys, dataclasses
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax, numpy as np
    from wdchain.ablate import sweep
    from wdchain.ablate._builtin import digits
    from wdchain.ablate._engine import GridProgram, local_mesh
    assert len(jax.devices()) == 8
    task = dataclasses.replace(digits(), epochs=2)
    args = dict(arms=["adamw", "sgdw"], lrs=[1e-3, 1e-2, 1e-1], weight_decays=[0, 1e-3],
                seeds=(0, 1), log=lambda line: None)
    sharded = sweep(task, **args)               # 6 cells padded to 8, over 8 devices
    single = sweep(task, devices=jax.devices()[:1], **args)
    worst = max(abs(a[k] - b[k]) / abs(b[k]) for a, b in zip(sharded, single)
                for k in ("train_loss", "validation_loss", "test_loss"))
    program = GridProgram(task, sharded and __import__("wdchain.ablate._arms",
                          fromlist=["parse_arm"]).parse_arm("adamw"),
                          np.ones(6) * 1e-2, np.zeros(6), local_mesh(None))
    carry = program.initial_carry(0)
    leaf = jax.tree.leaves(carry.params)[0]
    print("devices", len(leaf.sharding.device_set), "shard", leaf.addressable_shards[0].data.shape[0])
    print("worst", worst)
""")


@pytest.mark.slow
def test_cells_spread_over_eight_devices_agree_with_one_device():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", SHARDED], check=False, capture_output=True, text=True,
                            timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())
    assert lines["devices"] == "8 shard 1"  # 8 cells (6 + padding), one per device
    assert float(lines["worst"]) < 1e-5


# -- the command line ---------------------------------------------------------------------------

@pytest.mark.slow
def test_cli_runs_a_users_task_given_as_module_and_factory(tmp_path):
    (tmp_path / "my_task.py").write_text(textwrap.dedent("""
        from wdchain.ablate import Task
        from wdchain.ablate._builtin import digits_model, digits_splits

        def factory():
            train, validation, test = digits_splits(0)
            return Task(digits_model, train, test, validation=validation, batch_size=32,
                        epochs=5, name="mine")
    """))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    result = subprocess.run(
        [sys.executable, "-m", "wdchain.ablate", "--task", "my_task:factory", "--arms", "adamw",
         "--lrs", "1e-2", "--wds", "1e-3", "--epochs", "1", "--out", str(tmp_path / "out")],
        check=False, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "task mine" in summary and "1 epochs · batch 32" in summary


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--arms", "adam-l3"], "unknown arm 'adam-l3'"),
        (["--arms", ","], "at least one arm"),
        (["--lrs", ""], "the grid is empty"),
        (["--lrs=-1e-3,1e-2"], "> 0"),
        (["--lrs", "0,1e-2"], "> 0"),
        (["--wds=-1,1e-3"], "≥ 0"),
        (["--wds", "abc"], "comma-separated numbers"),
        (["--epochs", "0"], "integer ≥ 1"),
        (["--seeds=-1"], "integer ≥ 0"),
        (["--preset", "huge"], "invalid choice"),
        (["--task", "resnet"], "unknown task 'resnet'"),
        (["--task", "no_such_module:factory"], "cannot load task"),
    ],
)
def test_bad_arguments_fail_before_training(args, message, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(_cli, "sweep", None)  # training would crash differently
    with pytest.raises(SystemExit) as exit_info:
        _cli.main([*args, "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_unwritable_output_folder_fails_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(_cli, "sweep", None)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(SystemExit):
        _cli.main(["--out", str(blocker / "results")])
    assert "cannot write to output folder" in capsys.readouterr().err


def test_module_entry_point_reports_an_unknown_arm(tmp_path):
    run = subprocess.run([sys.executable, "-m", "wdchain.ablate", "--arms", "adamv"],
                         check=False, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 2
    assert "unknown arm 'adamv'" in run.stderr and "adamw" in run.stderr
    assert not list(tmp_path.iterdir())  # not even the default output folder


def test_optimizer_of_a_cell_decays_weights_not_biases():
    program = GridProgram(small_digits(), parse_arm("adamw"), np.array([0.1]), np.array([0.5]),
                          local_mesh(None))
    model = program.task.model(nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    tx = program.optimizer(0.1, 0.5)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    flat = dict(nnx.to_flat_state(updates))
    kernel = flat[("hidden1", "kernel")][...]
    np.testing.assert_allclose(kernel, -0.1 * 0.5 * flat_value(params, ("hidden1", "kernel")),
                               rtol=1e-6)
    assert not np.any(flat[("hidden1", "bias")][...])
    assert not np.any(flat[("norm1", "scale")][...])


def flat_value(state, path):
    return dict(nnx.to_flat_state(state))[path][...]


def test_a_seed_changes_the_initialisation_the_batch_order_and_the_builtin_split():
    program = GridProgram(small_digits(), parse_arm("adamw"), np.array([1e-2]), np.array([0.0]),
                          local_mesh(None))
    first, other = program.initial_carry(0), program.initial_carry(1)
    kernels = [(a, b) for a, b in zip(jax.tree.leaves(first.params), jax.tree.leaves(other.params))
               if a.ndim == 3]  # (cells, in, out)
    assert kernels and all(not np.array_equal(a, b) for a, b in kernels)
    assert not np.array_equal(program.batches(0, range(1))[1], program.batches(1, range(1))[1])
    np.testing.assert_array_equal(program.batches(0, range(1))[1], program.batches(0, range(1))[1])
    assert not np.array_equal(program.task_for(0).test[1], program.task_for(1).test[1])


@pytest.mark.slow
def test_every_registry_preconditioner_is_an_arm_muon_paired_with_adam():
    arms = ["lion-decoupled", "muon-independent", "lamb-l2"]
    rows = sweep(small_digits(epochs=2), arms=arms, grid_size=3, weight_decays=[1e-3],
                 log=quiet)  # each arm's default lr grid: the ends of its registry span
    for arm in arms:
        mine = [row for row in rows if row["arm"] == arm]
        assert len(mine) == 3 and not any(row["diverged"] for row in mine)
        assert min(row["validation_error"] for row in mine) < 0.5, arm  # chance is 0.9
    for name in wdchain.PRECONDITIONERS:
        arm = parse_arm(f"{name}-decoupled")
        assert len(arm.default_lrs()) == 8  # the registry gives every preconditioner a span


def test_trajectories_of_a_cell_record_the_decay_at_work():
    from wdchain.ablate._trajectories import METRICS, trace

    task = small_digits(epochs=2)
    without = trace(task, parse_arm("adamw"), 1e-2, 0.0)
    with_decay = trace(task, parse_arm("adamw"), 1e-2, 5.0)
    assert set(without) == set(METRICS) and all(len(v) == 2 for v in without.values())
    np.testing.assert_array_equal(without["decay_share"], 0.0)  # no decay: Δθ = Δθ₀
    assert np.all(with_decay["decay_share"] > 0.05)
    assert with_decay["param_norm"][-1] < without["param_norm"][-1]  # decay shrinks ‖θ‖
