"""Weight-decay schedules advance: the value used at step k is the schedule's value at k.

optax 0.2.6 shipped ``add_decayed_weights`` with a schedule whose counter never
advanced, so the decay stayed at its step-0 value. Here every decay transform, alone
and inside ``build``'s chain, is run under ``jit`` and ``lax.scan`` for K steps with
zero gradients and fixed parameters, so the update at step k reveals the λ used.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import wdchain

K = 12
THETA = {"w": jnp.array([[2.0, -1.0], [0.5, 4.0]]), "b": jnp.array([-3.0])}


def ramp(count: Any) -> Any:
    """λ_k = 0.01·(k + 1)²: distinct at every step, zero at none."""
    return 0.01 * (jnp.asarray(count, jnp.float32) + 1) ** 2


EXPECTED = 0.01 * (np.arange(K) + 1.0) ** 2


def updates_over_steps(tx: optax.GradientTransformation) -> Any:
    """The update of each of K steps at fixed params and zero gradients (jit + scan)."""
    zeros = jax.tree.map(jnp.zeros_like, THETA)

    @jax.jit
    def run(state: Any) -> Any:
        def body(state: Any, _: Any) -> tuple:
            updates, state = tx.update(zeros, state, THETA)
            return state, updates

        return jax.lax.scan(body, state, None, length=K)[1]

    return run(tx.init(THETA))


def assert_decay_used(updates: Any, coefficients: np.ndarray) -> None:
    """updates at step k == coefficients[k]·θ, on every leaf."""
    for leaf, theta in zip(jax.tree.leaves(updates), jax.tree.leaves(THETA)):
        expected = coefficients.reshape((-1,) + (1,) * theta.ndim) * np.asarray(theta)
        np.testing.assert_allclose(leaf, expected, rtol=1e-6)


@pytest.mark.parametrize(
    "transform, sign",
    [
        (wdchain.add_l2_to_grad, 1.0),
        (wdchain.decoupled_weight_decay, 1.0),
        (wdchain.independent_weight_decay, -1.0),
    ],
    ids=["add_l2_to_grad", "decoupled_weight_decay", "independent_weight_decay"],
)
def test_each_decay_transform_uses_the_value_at_step_k(transform: Any, sign: float) -> None:
    assert_decay_used(updates_over_steps(transform(ramp)), sign * EXPECTED)


@pytest.mark.parametrize(
    "transform", [wdchain.add_l2_to_grad, wdchain.decoupled_weight_decay,
                  wdchain.independent_weight_decay]
)
def test_the_counter_advances_in_the_state(transform: Any) -> None:
    tx = transform(ramp)
    state = tx.init(THETA)
    for k in range(3):
        assert int(state.step) == k
        _, state = jax.jit(tx.update)(THETA, state, THETA)
    assert int(state.step) == 3


# In a full chain: plain SGD with lr α_k = 0.5·0.9^k (lr_peak 0.5), so the update at
# step k is −c_k·λ_k·θ with c_k = α_k (l2, decoupled), η_k = 0.9^k (independent), 1.
LR_FACTORS = 0.9 ** np.arange(K)
CHAIN_SCALES = {
    "l2": 0.5 * LR_FACTORS,
    "decoupled": 0.5 * LR_FACTORS,
    "independent": LR_FACTORS,
    "constant": np.ones(K),
}


@pytest.mark.parametrize("decay", list(CHAIN_SCALES))
def test_builder_placements_use_the_value_at_step_k(decay: str) -> None:
    tx = wdchain.build("sgd", decay=decay, lr=0.5, weight_decay=ramp,
                       schedule=lambda count: 0.9 ** jnp.asarray(count, jnp.float32))
    assert_decay_used(updates_over_steps(tx), -CHAIN_SCALES[decay] * EXPECTED)


@pytest.mark.parametrize("preconditioner", ["momentum", "adam", "adagrad"])
def test_schedule_advances_after_a_preconditioner(preconditioner: str) -> None:
    """Decoupled decay after a stateful preconditioner: with zero gradients the
    preconditioner outputs zero (its statistics stay zero), so only the decay moves."""
    tx = wdchain.build(preconditioner, decay="decoupled", lr=1.0, weight_decay=ramp)
    assert_decay_used(updates_over_steps(tx), -EXPECTED)


def test_optax_schedule_objects_work() -> None:
    schedule = optax.linear_schedule(0.0, 1.0, transition_steps=K)
    tx = wdchain.decoupled_weight_decay(schedule)
    assert_decay_used(updates_over_steps(tx), np.arange(K) / K)
