"""skip_nonfinite: non-finite steps are skipped, counted, and leave no trace."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import wdchain

OPTIMIZERS = {
    "sgd": lambda: wdchain.sgd(lr=0.05, momentum=0.9, weight_decay=1e-2),
    "adagrad": lambda: wdchain.adagrad(lr=0.05, weight_decay=1e-2),
    "rmsprop": lambda: wdchain.rmsprop(lr=0.01, momentum=0.5, weight_decay=1e-2),
    "adam": lambda: wdchain.adam(lr=0.01, weight_decay=1e-2),
    "adamw": lambda: wdchain.adamw(lr=optax.cosine_decay_schedule(0.01, 50)),
    "nadam": lambda: wdchain.nadam(lr=0.01, weight_decay=1e-2),
    "radam": lambda: wdchain.radam(lr=0.01, weight_decay=1e-2, decoupled_weight_decay=True),
    "adamax": lambda: wdchain.adamax(lr=0.01, weight_decay=1e-2),
}
NUM_STEPS = 40


def init_params():
    key_w, key_b = jax.random.split(jax.random.key(0))
    return {"w": jax.random.normal(key_w, (4, 3)), "b": jax.random.normal(key_b, (3,))}


def loss(params, x):
    return jnp.mean((x @ params["w"] + params["b"] - 1.0) ** 2)


def separable_loss(params, x):
    """Each gradient entry depends on its own parameter entry only."""
    return sum(jnp.sum(jnp.mean(x) * p**2 + jnp.sin(p)) for p in jax.tree.leaves(params))


def batch(step):
    return jax.random.normal(jax.random.key(100 + step), (8, 4))


def injections(seed):
    """Steps at which a NaN or an Inf is put into one gradient entry."""
    rng = np.random.default_rng(seed)
    steps = sorted(rng.choice(np.arange(1, NUM_STEPS), size=7, replace=False).tolist())
    return {s: (float(rng.choice([np.nan, np.inf, -np.inf])), int(rng.integers(12))) for s in steps}


def poison(grads, value, entry):
    return {**grads, "w": grads["w"].reshape(-1).at[entry].set(value).reshape(4, 3)}


def make_step(tx):
    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_guard_skips_injected_steps_and_matches_a_run_without_them(name):
    bad = injections(seed=len(name))
    tx = wdchain.skip_nonfinite(OPTIMIZERS[name]())
    step, grad_fn = make_step(tx), jax.jit(jax.grad(loss))
    params = init_params()
    state = tx.init(params)
    for t in range(NUM_STEPS):
        grads = grad_fn(params, batch(t))
        if t in bad:
            grads = poison(grads, *bad[t])
        params, state = step(params, state, grads)
        assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(params)), t
    assert int(wdchain.skipped_steps(state)) == len(bad)

    oracle_tx = OPTIMIZERS[name]()  # unguarded, and the injected steps simply omitted
    oracle_step = make_step(oracle_tx)
    oracle = init_params()
    oracle_state = oracle_tx.init(oracle)
    for t in range(NUM_STEPS):
        grads = grad_fn(oracle, batch(t))
        if t not in bad:
            oracle, oracle_state = oracle_step(oracle, oracle_state, grads)
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(oracle)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    for got, want in zip(jax.tree.leaves(state.inner_state), jax.tree.leaves(oracle_state)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_without_a_guard_the_entry_becomes_nan_and_stays_nan(name, value):
    tx = OPTIMIZERS[name]()
    step, grad_fn = make_step(tx), jax.jit(jax.grad(separable_loss))
    params = init_params()
    state = tx.init(params)
    for t in range(4):
        grads = grad_fn(params, batch(t))
        params, state = step(params, state, poison(grads, value, 0) if t == 1 else grads)
    flat = params["w"].reshape(-1)
    assert bool(jnp.isnan(flat[0]))
    assert bool(jnp.all(jnp.isfinite(flat[1:])))  # element-wise: the rest trains on
    # The entry's statistics are non-finite too, so the NaN would never wash out.
    stats = [leaf for leaf in jax.tree.leaves(state) if jnp.shape(leaf) == (4, 3)]
    assert stats and all(not bool(jnp.isfinite(s.reshape(-1)[0])) for s in stats)


def test_max_consecutive_errors_lets_the_next_bad_step_through():
    tx = wdchain.skip_nonfinite(wdchain.sgd(lr=0.1), max_consecutive_errors=2)
    params = jnp.ones(2)
    state = tx.init(params)
    bad = jnp.array([jnp.nan, 1.0])
    for expected_zero in (True, True, False):
        updates, state = tx.update(bad, state, params)
        assert bool(jnp.all(updates == 0)) is expected_zero
    assert bool(jnp.isnan(updates[0])) and float(updates[1]) == pytest.approx(-0.1)
    assert int(wdchain.skipped_steps(state)) == 3
    updates, state = tx.update(jnp.ones(2), state, params)  # a finite step resets the streak
    assert int(state.notfinite_count) == 0 and int(wdchain.skipped_steps(state)) == 3


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_max_consecutive_errors_is_validated(bad):
    with pytest.raises(ValueError, match="max_consecutive_errors"):
        wdchain.skip_nonfinite(wdchain.sgd(), max_consecutive_errors=bad)


def test_skipped_steps_needs_a_guarded_state():
    tx = wdchain.sgd()
    with pytest.raises(TypeError, match="skip_nonfinite"):
        wdchain.skipped_steps(tx.init(jnp.ones(2)))
