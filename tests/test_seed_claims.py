"""The seed document's claims, checked.

1. ``adamw(weight_decay=0)`` *is* ``adam``: bit-identical parameters under jit.
2. Adam with L2 is not AdamW at the same λ: L2 is normalised by the preconditioner,
   decoupled decay is not.
3. SGD (with or without momentum) with ``weight_decay=λ`` is SGD on the loss plus
   ``λ/2·‖θ‖²``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch_oracle as oracle

import wdchain

STEPS = 300


def _run_pair(tx_a: optax.GradientTransformation, tx_b: optax.GradientTransformation,
              dtype: type) -> tuple:
    """Final params of each, from separate jitted scans (so XLA cannot merge them)."""
    params = oracle.make_params()
    grads = oracle.make_grads(params, STEPS)
    return tuple(oracle.run_wdchain([tx], params, grads, dtype)[0] for tx in (tx_a, tx_b))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"amsgrad": True, "maximize": True, "betas": (0.8, 0.99), "eps": 1e-3}],
    ids=["defaults", "amsgrad+maximize+betas+eps"],
)
def test_adamw_without_decay_is_adam_bit_for_bit(kwargs: dict, dtype: type) -> None:
    adam, adamw = _run_pair(
        wdchain.adam(0.05, **kwargs), wdchain.adamw(0.05, weight_decay=0.0, **kwargs), dtype
    )
    assert oracle.relative_error(oracle.make_params(), adam) > 0.1  # it did move
    for a, b in zip(jax.tree.leaves(adam), jax.tree.leaves(adamw)):
        assert np.array_equal(a, b)


def test_adam_l2_is_not_adamw() -> None:
    """Same λ, different trajectories: with λ = 0.1 they end far apart."""
    l2, decoupled = _run_pair(
        wdchain.adam(0.05, weight_decay=0.1), wdchain.adamw(0.05, weight_decay=0.1), np.float64
    )
    assert oracle.relative_error(l2, decoupled) > 0.1


def test_on_a_param_without_gradient_l2_is_normalised_and_decoupled_decay_is_not() -> None:
    """With a zero gradient, AdamW shrinks θ geometrically, θ_T = θ₀(1 − lr·λ)^T, so
    1000× the λ is about 1000× the shrinkage. Adam's L2 gradient λθ is divided by
    √v̂ ∝ λ|θ|: θ moves by a fraction of lr per step, whatever λ is."""
    lr, steps = 0.01, 50
    theta0 = np.array([1.0, -2.0])
    shrink = {}
    for weight_decay in (1e-3, 1.0):
        adamw, adam = oracle.run_wdchain(
            [wdchain.adamw(lr, weight_decay=weight_decay),
             wdchain.adam(lr, weight_decay=weight_decay)],
            theta0, np.zeros((steps, 2)), np.float64,
        )
        np.testing.assert_allclose(adamw, theta0 * (1 - lr * weight_decay) ** steps, rtol=1e-13)
        shrink[weight_decay] = np.abs(theta0) - np.abs(adam)
        assert np.all(shrink[weight_decay] > 0.5 * lr * steps)
        assert np.all(shrink[weight_decay] < lr * steps)
    np.testing.assert_allclose(shrink[1e-3], shrink[1.0], rtol=1e-4)


def _loss(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    hidden = jnp.tanh(x @ params["w1"] + params["b1"])
    return jnp.mean((hidden @ params["w2"] - y) ** 2)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"momentum": 0.9}, {"momentum": 0.9, "dampening": 0.3},
     {"momentum": 0.9, "nesterov": True}],
    ids=["plain", "momentum", "momentum+dampening", "nesterov"],
)
def test_sgd_weight_decay_is_the_l2_penalty(kwargs: dict) -> None:
    """sgd(weight_decay=λ) on L equals sgd() on L + λ/2·‖θ‖², step for step."""
    weight_decay, steps = 0.05, 50
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((16, 3)), rng.standard_normal((16, 1))
    params = {"w1": rng.standard_normal((3, 5)), "b1": rng.standard_normal(5),
              "w2": rng.standard_normal((5, 1))}

    def penalised(p: dict, x: jax.Array, y: jax.Array) -> jax.Array:
        squares = sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(p))
        return _loss(p, x, y) + weight_decay / 2 * squares

    def trajectory(tx: optax.GradientTransformation, loss) -> list:
        def body(carry: tuple, _: None) -> tuple:
            p, state = carry
            updates, state = tx.update(jax.grad(loss)(p, x, y), state, p)
            p = optax.apply_updates(p, updates)
            return (p, state), p

        p0 = jax.tree.map(jnp.asarray, params)
        return jax.lax.scan(body, (p0, tx.init(p0)), None, steps)[1]

    @jax.jit
    def trajectories() -> tuple:
        return (
            trajectory(wdchain.sgd(0.1, weight_decay=weight_decay, **kwargs), _loss),
            trajectory(wdchain.sgd(0.1, **kwargs), penalised),
            trajectory(wdchain.sgd(0.1, **kwargs), _loss),
        )

    with jax.enable_x64(True):
        decayed, augmented, undecayed = trajectories()
    for a, b, c in zip(*map(jax.tree.leaves, (decayed, augmented, undecayed))):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)
        assert np.max(np.abs(a - c)) > 1e-3  # the decay did something
