"""Property tests: random valid hyperparameters and trees give finite updates equal to
NumPy references written from the equations; random invalid ones give a ValueError
that names the argument."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import wdchain

NUM_STEPS = 3
SETTINGS = settings(max_examples=20, deadline=None, derandomize=True)

unit = st.floats(0.0, 0.999)
positive = st.floats(1e-4, 1.0)
decay = st.one_of(st.just(0.0), st.floats(1e-4, 0.5))
epsilon = st.floats(1e-8, 1e-3)
shapes = st.lists(st.lists(st.integers(1, 4), max_size=2).map(tuple), min_size=1, max_size=3)


def make_tree(shape_list, seed):
    rng = np.random.default_rng(seed)
    return {f"leaf{i}": rng.normal(size=shape) for i, shape in enumerate(shape_list)}


# --- NumPy references, one line per equation, on one float64 array each. ------------


def sgd_reference(p, grads, lr, momentum, dampening, weight_decay, nesterov):
    b = None
    for g in grads:
        g = g + weight_decay * p
        if momentum:
            b = g if b is None else momentum * b + (1 - dampening) * g
            g = g + momentum * b if nesterov else b
        p = p - lr * g
    return p


def adagrad_reference(p, grads, lr, lr_decay, weight_decay, initial_accumulator_value, eps):
    s = np.full_like(p, initial_accumulator_value)
    for t, g in enumerate(grads, start=1):
        g = g + weight_decay * p
        s = s + g * g
        p = p - lr / (1 + (t - 1) * lr_decay) * g / (np.sqrt(s) + eps)
    return p


def rmsprop_reference(p, grads, lr, alpha, eps, weight_decay, momentum, centered):
    v, g_bar, b = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for g in grads:
        g = g + weight_decay * p
        v = alpha * v + (1 - alpha) * g * g
        g_bar = alpha * g_bar + (1 - alpha) * g
        denom = np.sqrt(v - g_bar**2 if centered else v) + eps
        b = momentum * b + g / denom
        p = p - lr * (b if momentum else g / denom)
    return p


def adam_reference(p, grads, lr, betas, eps, weight_decay, amsgrad, decoupled):
    m, v, v_max = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        v_max = np.maximum(v_max, v) if amsgrad else v
        m_hat = m / (1 - betas[0] ** t)
        p = p - lr * m_hat / (np.sqrt(v_max) / math.sqrt(1 - betas[1] ** t) + eps)
    return p


def run(tx, params, grads):
    state = tx.init(params)
    for g in grads:
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
    return params


def check(tx, reference, shape_list, seed):
    with jax.enable_x64(True):
        params = make_tree(shape_list, seed)
        grads = [make_tree(shape_list, seed + 1 + t) for t in range(NUM_STEPS)]
        got = run(tx, jax.tree.map(jnp.asarray, params), [jax.tree.map(jnp.asarray, g)
                                                          for g in grads])
        for name, p in params.items():
            want = reference(p, [g[name] for g in grads])
            assert got[name].dtype == jnp.float64
            assert bool(jnp.all(jnp.isfinite(got[name])))
            np.testing.assert_allclose(got[name], want, rtol=1e-9, atol=1e-12)


@SETTINGS
@given(shapes, st.integers(0, 10**6), positive, st.one_of(st.just(0.0), unit),
       st.floats(0.0, 0.9), decay, st.booleans())
def test_sgd(shape_list, seed, lr, momentum, dampening, weight_decay, nesterov):
    if nesterov:
        momentum, dampening = max(momentum, 0.1), 0.0
    tx = wdchain.sgd(lr, momentum, dampening, weight_decay, nesterov)
    check(tx, lambda p, g: sgd_reference(p, g, lr, momentum, dampening, weight_decay, nesterov),
          shape_list, seed)


@SETTINGS
@given(shapes, st.integers(0, 10**6), positive, st.floats(0.0, 0.1), decay,
       st.floats(0.0, 1.0), epsilon)
def test_adagrad(shape_list, seed, lr, lr_decay, weight_decay, initial, eps):
    tx = wdchain.adagrad(lr, lr_decay, weight_decay, initial, eps)
    check(tx, lambda p, g: adagrad_reference(p, g, lr, lr_decay, weight_decay, initial, eps),
          shape_list, seed)


@SETTINGS
@given(shapes, st.integers(0, 10**6), positive, st.floats(0.5, 0.999), epsilon, decay,
       st.one_of(st.just(0.0), unit), st.booleans())
def test_rmsprop(shape_list, seed, lr, alpha, eps, weight_decay, momentum, centered):
    tx = wdchain.rmsprop(lr, alpha, eps, weight_decay, momentum, centered)
    check(tx, lambda p, g: rmsprop_reference(p, g, lr, alpha, eps, weight_decay, momentum,
                                             centered), shape_list, seed)


@SETTINGS
@given(shapes, st.integers(0, 10**6), positive, st.tuples(unit, unit), epsilon, decay,
       st.booleans(), st.booleans())
def test_adam_and_adamw(shape_list, seed, lr, betas, eps, weight_decay, amsgrad, decoupled):
    make = wdchain.adamw if decoupled else wdchain.adam
    tx = make(lr, betas, eps, weight_decay, amsgrad)
    check(tx, lambda p, g: adam_reference(p, g, lr, betas, eps, weight_decay, amsgrad,
                                          decoupled), shape_list, seed)


@SETTINGS
@given(shapes, st.integers(0, 10**6), positive, st.tuples(unit, unit), decay)
def test_float32_updates_are_finite_and_close_to_float64(shape_list, seed, lr, betas,
                                                         weight_decay):
    params = make_tree(shape_list, seed)
    grads = [make_tree(shape_list, seed + 1 + t) for t in range(NUM_STEPS)]
    tx = wdchain.adamw(lr, betas, 1e-8, weight_decay)
    got = run(tx, jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params),
              [jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), g) for g in grads])
    for name, p in params.items():
        want = adam_reference(p, [g[name] for g in grads], lr, betas, 1e-8, weight_decay,
                              False, True)
        assert got[name].dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(got[name])))
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-5 * lr * NUM_STEPS)


# --- Invalid hyperparameters. -------------------------------------------------------

negative = st.floats(-1e3, -1e-6)
not_finite = st.sampled_from([math.nan, math.inf, -math.inf])
bad_unit = st.one_of(negative, st.floats(1.0, 1e3), not_finite)
bad_nonnegative = st.one_of(negative, not_finite)
INVALID = [
    # (factory, argument as it is named in the error, strategy of bad values)
    ("sgd", "lr", bad_nonnegative),
    ("sgd", "momentum", bad_nonnegative),
    ("sgd", "weight_decay", bad_nonnegative),
    ("adagrad", "lr_decay", bad_nonnegative),
    ("adagrad", "initial_accumulator_value", bad_nonnegative),
    ("adagrad", "eps", bad_nonnegative),
    ("rmsprop", "alpha", st.one_of(negative, st.floats(1.0001, 1e3), not_finite)),
    ("rmsprop", "momentum", bad_nonnegative),
    ("adam", "betas[0]", bad_unit),
    ("adam", "betas[1]", bad_unit),
    ("adamw", "eps", bad_nonnegative),
    ("adamw", "weight_decay", bad_nonnegative),
    ("nadam", "momentum_decay", bad_nonnegative),
    ("radam", "lr", bad_nonnegative),
    ("adamax", "betas[1]", bad_unit),
]


@pytest.mark.parametrize("factory, argument, values", INVALID,
                         ids=[f"{f}-{a}" for f, a, _ in INVALID])
@settings(max_examples=10, deadline=None, derandomize=True)
@given(data=st.data())
def test_invalid_hyperparameters_raise_naming_the_argument(factory, argument, values, data):
    value = data.draw(values)
    if argument.startswith("betas"):
        index = int(argument[-2])
        betas = [0.9, 0.999]
        betas[index] = value
        kwargs = {"betas": tuple(betas)}
    else:
        kwargs = {argument: value}
    with pytest.raises(ValueError, match=rf"^{factory}: {re.escape(argument)} must be"):
        getattr(wdchain, factory)(**kwargs)
