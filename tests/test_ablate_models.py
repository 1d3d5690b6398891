"""Models nobody here wrote, as they are written: Flax's MNIST CNN verbatim, linen with
BatchNorm and Dropout; every metric a loss returns; what a sweep writes from Python."""

from __future__ import annotations

import csv
import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen, nnx
from flax_mnist_cnn import CNN

import wdchain
from wdchain.ablate import (
    CSV_COLUMNS,
    Task,
    from_linen,
    parse_arm,
    read_csv,
    run_info,
    sweep,
    write_report,
)
from wdchain.ablate._builtin import digits, digits_splits
from wdchain.ablate._engine import GridProgram, local_mesh
from wdchain.ablate._models import pass_rngs
from wdchain.ablate._report import summary_markdown
from wdchain.ablate._step import step_keys


def quiet(line: str) -> None:
    del line


def digits_28(count: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as 28×28×1 images (each pixel 3×3, padded by 2): the CNN's input."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x, y = x[start:start + count], y[start:start + count]
    images = np.kron((x / 16).reshape(-1, 8, 8), np.ones((3, 3)))
    return (np.pad(images, ((0, 0), (2, 2), (2, 2)))[..., None].astype(np.float32),
            y.astype(np.int32))


def cnn_task(epochs: int = 1) -> Task:
    return Task(CNN, digits_28(40), digits_28(20, 100), validation=digits_28(20, 60),
                batch_size=20, epochs=epochs, name="digits 28x28", model_name="Flax MNIST CNN")


# -- §0: the Flax CNN, verbatim ---------------------------------------------------------------

def test_the_flax_mnist_cnn_verbatim_is_accepted_and_called_with_the_steps_rngs():
    program = GridProgram(cnn_task(), parse_arm("adamw"), np.array([1e-3]), np.array([1e-2]),
                          local_mesh(None))
    assert program.call is pass_rngs  # its __call__(x, rngs) asks for the RNGs
    first, other = program.initial_carry(0), program.initial_carry(1)  # partial() attributes
    kernels = [(a, b) for a, b in zip(jax.tree.leaves(first.params),
                                      jax.tree.leaves(other.params)) if a.ndim > 2]
    assert kernels and all(not np.array_equal(a, b) for a, b in kernels)


class SeedWidth(nnx.Module):
    """A model whose width depends on the seed: a real difference of structure."""

    def __init__(self, rngs: nnx.Rngs):
        width = 8 + int(jax.random.randint(rngs.params(), (), 0, 2))
        self.pool = partial(nnx.avg_pool, window_shape=(2,))  # never compared
        self.hidden = nnx.Linear(64, width, rngs=rngs)
        self.out = nnx.Linear(width, 10, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.hidden(x)))


def test_a_real_difference_of_structure_is_named_with_its_path_shapes_and_seeds():
    train, validation, test = digits_splits(0)
    task = Task(SeedWidth, train, test, validation=validation, batch_size=64, epochs=1)
    program = GridProgram(task, parse_arm("adamw"), np.array([1e-3]), np.array([0.0]),
                          local_mesh(None))
    widths = {seed: SeedWidth(nnx.Rngs(seed)).hidden.out_features for seed in range(6)}
    other = next(seed for seed, width in widths.items() if width != widths[0])
    with pytest.raises(ValueError) as error:
        program.initial_carry(other)
    message = str(error.value)
    assert f"model(nnx.Rngs({other})) has other variables than model(nnx.Rngs(0))" in message
    assert (f"hidden/bias is Param of shape ({widths[other]},), float32, seed 0's is Param "
            f"of shape ({widths[0]},), float32") in message


@pytest.mark.slow
def test_a_cell_of_the_flax_cnn_equals_the_flax_examples_train_step_written_by_hand():
    """Oracle: the Flax example's own style of training (``model(x, rngs)`` with a fresh
    ``nnx.Rngs`` per step, ``nnx.Optimizer``), with the runner's per-step keys."""
    task = cnn_task(epochs=1)
    program = GridProgram(task, parse_arm("adamw"), np.array([1e-3]), np.array([1e-2]),
                          local_mesh(None))
    carry, _ = program.train_chunk(program.initial_carry(2), 2, 0)
    grid = program.evaluate(carry, 2)

    model = CNN(nnx.Rngs(2))
    optimizer = nnx.Optimizer(model, wdchain.build("adam", decay="decoupled", lr=1e-3,
                                                   weight_decay=1e-2,
                                                   schedule=program.schedule,
                                                   mask=wdchain.decay_mask), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, x, y, key):
        def loss_fn(model):
            logits = model(x, nnx.Rngs(key))
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        optimizer.update(model, nnx.grad(loss_fn)(model))

    xs, ys = program.batches(2, range(1))
    for x, y, key in zip(xs, ys, step_keys(2, range(len(xs)))):
        train_step(model, optimizer, x, y, key)
    model.eval()
    x_val, y_val = task.validation
    logits = model(jnp.asarray(x_val), None)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y_val).mean()
    np.testing.assert_allclose(grid.validation_loss[0], loss, rtol=1e-4)
    # Dropout was on in training: the same steps without it end elsewhere.
    assert np.isfinite(grid.validation_loss[0])


# -- §0: linen, with BatchNorm and Dropout ------------------------------------------------------

class LinenNet(linen.Module):
    """A linen MLP in the Flax examples' style: BatchNorm and Dropout follow ``train``.

    The layer before BatchNorm has no bias (BatchNorm removes it: its gradient is
    rounding noise, which Adam would turn into full steps)."""

    rate: float = 0.2

    @linen.compact
    def __call__(self, x, train: bool):
        x = linen.Dense(32, use_bias=False)(x)
        x = linen.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = linen.Dropout(self.rate, deterministic=not train)(linen.relu(x))
        return linen.Dense(10)(x)


def linen_task(rate: float, epochs: int = 2) -> Task:
    train, validation, test = digits_splits(0)
    return Task(from_linen(LinenNet(rate), train[0][:2]), train, test, validation=validation,
                batch_size=64, epochs=epochs, name="digits", model_name="linen BN + Dropout")


def test_a_linen_model_with_batchnorm_trains_like_linen_apply_written_by_hand():
    """Oracle: linen's own ``apply(..., train=True, mutable=["batch_stats"])`` and the same
    optax transformation on the plain params dict (Dropout off, so the runs coincide)."""
    task = linen_task(rate=0.0)
    program = GridProgram(task, parse_arm("adamw"), np.array([1e-2]), np.array([1e-2]),
                          local_mesh(None))
    carry = program.initial_carry(1)
    for epoch in range(task.epochs):
        carry, _ = program.train_chunk(carry, 1, epoch)
    grid = program.evaluate(carry, 1)

    start = task.model(nnx.Rngs(1))
    params = nnx.state(start, nnx.Param).to_pure_dict()["linen"]
    stats = nnx.state(start, nnx.BatchStat).to_pure_dict()["linen"]
    tx = wdchain.build("adam", decay="decoupled", lr=1e-2, weight_decay=1e-2,
                       schedule=program.schedule, mask=wdchain.decay_mask)
    state = tx.init(params)
    module = LinenNet(0.0)

    @jax.jit
    def step(params, stats, state, x, y):
        def loss_fn(params):
            logits, updated = module.apply({"params": params, "batch_stats": stats}, x,
                                           train=True, mutable=["batch_stats"])
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, updated["batch_stats"]

        (_, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), stats, state

    for epoch in range(task.epochs):
        for x, y in zip(*program.batches(1, range(epoch, epoch + 1))):
            params, stats, state = step(params, stats, state, x, y)
    x_val, y_val = task.validation
    logits = module.apply({"params": params, "batch_stats": stats}, x_val, train=False)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y_val).mean()
    np.testing.assert_allclose(grid.validation_loss[0], loss, rtol=2e-5)
    assert grid.validation_error[0] < 0.3


def test_a_linen_models_dropout_draws_a_new_mask_each_step_and_is_off_in_eval():
    task = linen_task(rate=0.5, epochs=1)
    program = GridProgram(task, parse_arm("adamw"), np.array([1e-2]), np.array([1e-3]),
                          local_mesh(None))
    carry = program.initial_carry(0)
    stream = np.asarray(carry.rest["linen"]["to_nnx__rngs"]["dropout"]["count"][...])
    start_mean = np.asarray(carry.rest["linen"]["BatchNorm_0"]["mean"][...])
    carry, _ = program.train_chunk(carry, 0, 0)
    steps = program.steps_per_epoch
    assert int(carry.rest["linen"]["to_nnx__rngs"]["dropout"]["count"][...][0]) == (
        int(stream[0]) + steps)  # one key per step
    assert not np.allclose(carry.rest["linen"]["BatchNorm_0"]["mean"][...], start_mean)
    first, again = program.evaluate(carry, 0), program.evaluate(carry, 0)
    assert first.validation_loss == again.validation_loss  # eval: no dropout, running stats
    model = task.model(nnx.Rngs(0))
    model.train()
    x = jnp.asarray(task.validation[0][:50])
    assert not np.allclose(model(x), model(x))  # train: a new mask each call
    mask = wdchain.decay_mask(nnx.state(model, nnx.Param))
    flat = {"/".join(map(str, path)): value for path, value in nnx.to_flat_state(mask)}
    assert flat["linen/Dense_0/kernel"] and not flat["linen/Dense_1/bias"]
    assert not flat["linen/BatchNorm_0/scale"]


def test_from_linen_refuses_what_is_not_a_linen_module():
    with pytest.raises(TypeError, match="flax.linen.Module instance"):
        from_linen(LinenNet, np.ones((1, 64)))


# -- §0: every metric of the loss, and what the selection uses --------------------------------

def top2_loss(model, batch):
    x, y = batch
    logits = model(x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    top2 = jnp.argsort(logits, axis=-1)[:, -2:]
    return loss, {"error": jnp.mean(jnp.argmax(logits, -1) != y),
                  "error_top2": jnp.mean(~jnp.any(top2 == y[:, None], axis=-1)),
                  "perplexity": jnp.exp(loss)}


def test_every_metric_the_loss_returns_is_a_column_of_its_own(tmp_path):
    task = dataclasses.replace(digits(), epochs=1, loss=top2_loss)
    rows = sweep(task, arms=["adamw"], lrs=[1e-2], weight_decays=[1e-3], out=str(tmp_path),
                 log=quiet, trajectories=False)
    extra = ("validation_error_top2", "validation_perplexity", "test_error_top2",
             "test_perplexity")
    assert tuple(rows[0]) == CSV_COLUMNS + extra
    row = rows[0]
    assert 0 <= row["validation_error_top2"] <= row["validation_error"]
    # One evaluation chunk: the perplexity is exp of the split's mean loss.
    assert row["validation_perplexity"] == pytest.approx(np.exp(row["validation_loss"]),
                                                         rel=1e-5)
    with open(tmp_path / "results.csv", newline="") as file:
        assert tuple(next(csv.reader(file))) == CSV_COLUMNS + extra
    assert read_csv(str(tmp_path / "results.csv")) == rows
    summary = (tmp_path / "summary.md").read_text()
    assert "selected on the validation split (seed-mean error)" in summary
    assert "one column each: " + ", ".join(extra) in summary


def test_a_loss_without_an_error_metric_is_selected_on_and_says_so():
    def loss_only(model, batch):
        loss, metrics = top2_loss(model, batch)
        return loss, {"perplexity": metrics["perplexity"]}

    task = dataclasses.replace(digits(), epochs=1, loss=loss_only)
    rows = sweep(task, arms=["adamw"], lrs=[1e-2], weight_decays=[1e-3], log=quiet)
    assert rows[0]["validation_error"] == rows[0]["validation_loss"]  # the loss selects
    assert rows[0]["validation_perplexity"] == pytest.approx(np.exp(rows[0]["validation_loss"]),
                                                             rel=1e-5)
    info = run_info(task, (0,))
    assert info["selection"] == "loss"
    text = summary_markdown(rows, info)
    assert "seed-mean **loss**" in text
    assert "one column each: validation_perplexity, test_perplexity." in text


# -- §0: one call from Python writes what the command line writes ------------------------------

def test_sweep_from_python_writes_the_summary_figures_and_trajectories(tmp_path):
    out = tmp_path / "new" / "folder"
    rows = sweep(dataclasses.replace(digits(), epochs=1), arms=["adam-l2", "adamw"],
                 lrs=[1e-3, 1e-2], weight_decays=[1e-4, 1e-2], out=str(out), log=quiet)
    for name in ("figure2.png", "heatmap_adam-l2.png", "heatmap_adamw.png",
                 "trajectories.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    summary = (out / "summary.md").read_text()
    assert "Command:" not in summary and "| adamw |" in summary
    assert "schedule cosine" in summary  # the recipe is stated
    assert len(read_csv(out / "results.csv")) == len(rows) == 8


def test_write_report_creates_its_folder_and_prints_a_real_command_or_none(tmp_path):
    task = dataclasses.replace(digits(), epochs=1)
    rows = sweep(task, arms=["adamw"], lrs=[1e-3, 1e-2], weight_decays=[1e-4, 1e-2], log=quiet)
    info = run_info(task, (0,))
    text = write_report(rows, str(tmp_path / "a" / "b"), info)
    assert (tmp_path / "a" / "b" / "figure2.png").exists() and "Command:" not in text
    text = write_report(rows, tmp_path / "c", info | {"command": "python run.py --fast"})
    assert "Command: `python run.py --fast`" in text
