"""The training recipe of a Task: schedules, clipping, accumulation, moments' dtype.

Each option is checked against the same training written by hand: ``nnx.Optimizer`` with
``optax.chain(clip_by_global_norm, the arm's optimizer)`` and the schedule's formula
written out here, not taken from the runner.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import wdchain
from wdchain.ablate import (
    Task,
    _cli,
    constant,
    cosine,
    linear,
    parse_arm,
    parse_schedule,
    sweep,
    warmup_cosine,
    wsd,
)
from wdchain.ablate._builtin import digits, digits_splits
from wdchain.ablate._engine import GridProgram, local_mesh

# -- the schedules' formulas, written out --------------------------------------------------------


def ref_warmup_cosine(w, T):
    W = w * T
    return lambda t: (t + 1) / W if t < W else 0.5 * (1 + math.cos(math.pi * (t - W) / (T - W)))


def ref_wsd(w, d, T):
    W, S = w * T, T * (1 - d)
    return lambda t: (t + 1) / W if t < W else (1.0 if t < S else (T - t) / (T - S))


def ref_linear(w, T):
    W = w * T
    return lambda t: (t + 1) / W if t < W else (T - t) / (T - W)


REFERENCES = {
    "cosine": (cosine(), lambda T: lambda t: 0.5 * (1 + math.cos(math.pi * t / T))),
    "warmup_cosine:0.1": (warmup_cosine(0.1), lambda T: ref_warmup_cosine(0.1, T)),
    "wsd:0.05:0.2": (wsd(0.05, 0.2), lambda T: ref_wsd(0.05, 0.2, T)),
    "linear:0.25": (linear(0.25), lambda T: ref_linear(0.25, T)),
    "constant": (constant(), lambda T: lambda t: 1.0),
}


@pytest.mark.parametrize("name", REFERENCES)
def test_each_schedule_is_its_formula_at_every_step(name):
    schedule, reference = REFERENCES[name]
    total = 40
    eta, ref = schedule(total), reference(total)
    got = [float(eta(jnp.asarray(t))) for t in range(total + 1)]
    np.testing.assert_allclose(got, [ref(t) for t in range(total + 1)], atol=1e-6)
    assert parse_schedule(name) == schedule and repr(schedule) == name
    assert 0 < got[0] <= 1  # the first step is never wasted


@pytest.mark.parametrize(("text", "message"), [
    ("cosin", "unknown schedule 'cosin'"),
    ("warmup_cosine", "has 0 argument"),
    ("wsd:0.5:0.6", "warmup + decay must be at most 1"),
    ("linear:x", "must be numbers"),
    ("warmup_cosine:1.5", "warmup must be a fraction of the run in [0, 1), got 1.5"),
])
def test_bad_schedules_are_refused_naming_the_fix(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_schedule(text)


def test_task_refuses_a_bad_recipe():
    task = digits()
    with pytest.raises(TypeError, match="total_steps -> \\(step -> multiplier\\)"):
        dataclasses.replace(task, schedule=0.5)
    with pytest.raises(TypeError, match="returned 0.5, not a function of the step"):
        dataclasses.replace(task, schedule=lambda total: 0.5)
    with pytest.raises(ValueError, match="clip_norm must be None or a finite number > 0"):
        dataclasses.replace(task, clip_norm=0.0)
    with pytest.raises(ValueError, match="accumulate=3 must divide batch_size=64"):
        dataclasses.replace(task, accumulate=3)
    with pytest.raises(ValueError, match="has no moments' dtype option"):
        program = GridProgram(dataclasses.replace(task, moments_dtype=jnp.bfloat16),
                              parse_arm("momentum-l2"), np.array([0.1]), np.array([0.0]),
                              local_mesh(None))
        program.optimizer(0.1, 0.0)


# -- a cell equals the same training written by hand, for each option ---------------------------

def hand_eta(total):
    """warmup_cosine(0.25), written out for a traced step count."""
    warmup = 0.25 * total

    def eta(count):
        t = jnp.asarray(count, jnp.float32)
        return jnp.where(t < warmup, (t + 1) / warmup,
                         0.5 * (1 + jnp.cos(jnp.pi * (t - warmup) / (total - warmup))))

    return eta


OPTIONS = {
    "warmup_cosine": ({"schedule": warmup_cosine(0.25)}, "adamw-independent"),
    "clip": ({"clip_norm": 0.05, "schedule": warmup_cosine(0.25)}, "adam-l2"),
    "accumulate": ({"accumulate": 4, "schedule": warmup_cosine(0.25)}, "adamw"),
    "bf16 moments": ({"moments_dtype": jnp.bfloat16, "schedule": warmup_cosine(0.25)},
                     "adamw-independent"),
}


@pytest.mark.parametrize("option", OPTIONS)
def test_a_grid_cell_equals_the_same_recipe_written_by_hand(option):
    recipe, arm_name = OPTIONS[option]
    task = dataclasses.replace(digits(), epochs=2, **recipe)
    arm = parse_arm(arm_name)
    program = GridProgram(task, arm, np.array([3e-3, 1e-2]), np.array([1e-2, 1e-3]),
                          local_mesh(None))
    carry = program.initial_carry(seed=3)
    for epoch in range(task.epochs):
        carry, _ = program.train_chunk(carry, 3, epoch)
    grid = program.evaluate(carry, 3)

    total = task.epochs * program.steps_per_epoch
    dtype = {"mu_dtype": jnp.bfloat16, "nu_dtype": jnp.bfloat16} if "moments_dtype" in recipe \
        else {}
    parts = [optax.clip_by_global_norm(recipe["clip_norm"])] if "clip_norm" in recipe else []
    tx = optax.chain(*parts, wdchain.build(arm.preconditioner, decay=arm.decay, lr=1e-2,
                                           weight_decay=1e-3, schedule=hand_eta(total),
                                           mask=wdchain.decay_mask, **dtype))
    model = task.model(nnx.Rngs(3))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y):  # the whole batch at once: no accumulation
        grads = nnx.grad(lambda m: task.loss_fn(m, (x, y))[0])(model)
        optimizer.update(model, grads)

    for epoch in range(task.epochs):
        for x, y in zip(*program.batches(3, range(epoch, epoch + 1))):
            step(model, optimizer, x, y)
    model.eval()
    x_val, y_val = program.task_for(3).validation
    loss, _ = task.loss_fn(model, (jnp.asarray(x_val), jnp.asarray(y_val)))
    np.testing.assert_allclose(grid.validation_loss[1], loss, rtol=2e-5)
    assert grid.validation_loss[0] != grid.validation_loss[1]
    if "moments_dtype" in recipe:
        moments = [leaf for leaf in jax.tree.leaves(carry.opt_state)
                   if leaf.dtype == jnp.bfloat16]
        assert moments  # the moments are kept in bfloat16
    if "clip_norm" in recipe:  # the clip was active: without it the cell ends elsewhere
        unclipped = dataclasses.replace(task, clip_norm=None)
        other = GridProgram(unclipped, arm, np.array([1e-2]), np.array([1e-3]),
                            local_mesh(None))
        carry = other.initial_carry(3)
        for epoch in range(task.epochs):
            carry, _ = other.train_chunk(carry, 3, epoch)
        assert abs(other.evaluate(carry, 3).validation_loss[0] - loss) > 1e-3


def test_clipping_sees_the_gradient_before_l2_adds_the_decay():
    program = GridProgram(dataclasses.replace(digits(), clip_norm=1.0), parse_arm("sgd-l2"),
                          np.array([1.0]), np.array([0.5]), local_mesh(None))
    params = {"dense": {"kernel": jnp.full((2, 2), 10.0)}}
    tx = program.optimizer(1.0, 0.5)
    grads = {"dense": {"kernel": jnp.full((2, 2), 3.0)}}  # global norm 6: clipped to 1
    updates, _ = tx.update(grads, tx.init(params), params)
    # −lr·(clip(g) + λθ) = −(0.5 + 5): the decay is added after the clip, unclipped.
    np.testing.assert_allclose(updates["dense"]["kernel"], -(0.5 + 0.5 * 10.0), rtol=1e-6)
    assert "clip_by_global_norm(g) + λθ" in wdchain.describe(tx)


class Bf16Net(nnx.Module):
    """Computes in bfloat16, keeps float32 parameters."""

    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(64, 64, dtype=jnp.bfloat16, rngs=rngs)
        self.norm = nnx.LayerNorm(64, dtype=jnp.bfloat16, rngs=rngs)
        self.out = nnx.Linear(64, 10, dtype=jnp.bfloat16, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.norm(self.hidden(x)))).astype(jnp.float32)


def test_a_model_computing_in_bfloat16_with_float32_params_sweeps_as_it_is():
    train, validation, test = digits_splits(0)
    task = Task(Bf16Net, train, test, validation=validation, batch_size=64, epochs=2,
                schedule=warmup_cosine(0.1), clip_norm=1.0, moments_dtype=jnp.bfloat16)
    rows = sweep(task, arms=["adamw-independent"], lrs=[1e-2], weight_decays=[1e-3],
                 log=lambda line: None)
    assert not rows[0]["diverged"] and rows[0]["validation_error"] < 0.3
    params = nnx.state(Bf16Net(nnx.Rngs(0)), nnx.Param)
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype("float32")}


@pytest.mark.slow
def test_the_cli_recipe_flags_reach_the_run_and_its_report(tmp_path):
    _cli.main(["--task", "digits", "--arms", "adamw", "--lrs", "1e-3,1e-2", "--wds", "1e-3",
               "--epochs", "2", "--seeds", "0", "--schedule", "wsd:0.1:0.3", "--clip-norm", "2",
               "--accumulate", "2", "--no-trajectories", "--out", str(tmp_path)])
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["recipe"] == {"schedule": "wsd:0.1:0.3", "clip_norm": 2.0, "accumulate": 2,
                             "moments_dtype": None}
    summary = (tmp_path / "summary.md").read_text()
    assert "schedule wsd:0.1:0.3 · clip 2 · accumulate 2" in summary


@pytest.mark.parametrize(("args", "message"), [
    (["--schedule", "cosine:0.1"], "has 1 argument"),
    (["--clip-norm", "0"], "must be a finite number > 0"),
    (["--accumulate", "0"], "integer ≥ 1"),
    (["--accumulate", "3", "--task", "digits"], "accumulate=3 must divide batch_size=64"),
])
def test_bad_recipe_flags_fail_before_training(args, message, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(_cli, "sweep", None)
    with pytest.raises(SystemExit) as exit_info:
        _cli.main([*args, "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
