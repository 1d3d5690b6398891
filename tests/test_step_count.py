"""``wdchain.step_count``: the number of updates, for every optimizer and wrapper.

The oracle is the number of ``update`` calls made (minus the ones skipped, or over
``every_k`` for MultiSteps). ``optax.tree.get(state, "count")`` is what optax users
try first; it raises for a wdchain state (one count per slot), which is why this
function exists.
"""

from __future__ import annotations

import inspect

import flax.serialization
import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx

import wdchain

PARAMS = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(3, 2), "v": jnp.ones((2, 2))}


def _aliases() -> list[str]:
    """Every public optimizer that takes torch's ``lr`` first (and a weight decay)."""
    names = []
    for name in sorted(wdchain.__all__):
        obj = getattr(wdchain, name)
        if inspect.isfunction(obj) and "GradientTransformation" in str(
            inspect.signature(obj).return_annotation
        ) and list(inspect.signature(obj).parameters)[:1] == ["lr"] and (
            "weight_decay" in inspect.signature(obj).parameters
        ):
            names.append(name)
    return names


ALIASES = _aliases()


def _run(tx, n, grads=None, jit=True):
    state = tx.init(PARAMS)
    update = jax.jit(tx.update) if jit else tx.update
    for i in range(n):
        g = grads[i] if grads is not None else jax.tree.map(lambda p: 0.1 * p, PARAMS)
        _, state = update(g, state, PARAMS)
    return state


def test_the_aliases_are_found():
    assert {"sgd", "adagrad", "rmsprop", "adam", "adamw", "nadam", "radam", "adamax"} <= set(
        ALIASES)


@pytest.mark.parametrize("name", ALIASES)
def test_step_count_is_the_number_of_updates_for_every_alias(name):
    tx = getattr(wdchain, name)(lr=0.01)
    assert int(wdchain.step_count(tx.init(PARAMS))) == 0
    state = _run(tx, 3)
    count = wdchain.step_count(state)
    assert count.dtype == jnp.int32 and int(count) == 3
    assert int(jax.jit(wdchain.step_count)(state)) == 3  # readable inside jit


@pytest.mark.parametrize("name", ALIASES)
def test_optax_tree_get_finds_the_one_count_of_every_alias(name):
    """As for optax's own optimizers: one field named ``count``, the number of updates."""
    tx = getattr(wdchain, name)(lr=0.01, weight_decay=0.1)
    assert int(optax.tree.get(tx.init(PARAMS), "count")) == 0
    state = _run(tx, 3)
    assert int(optax.tree.get(state, "count")) == 3 == int(wdchain.step_count(state))


@pytest.mark.parametrize("preconditioner", wdchain.PRECONDITIONERS)
def test_optax_tree_get_finds_the_one_count_of_every_build_arm(preconditioner):
    for decay in wdchain.PLACEMENTS:
        tx = wdchain.build(preconditioner, decay=decay, lr=0.01, weight_decay=0.01)
        assert int(optax.tree.get(_run(tx, 2, jit=False), "count")) == 2, decay


def test_optax_tree_get_finds_one_count_also_with_schedules():
    """Where optax's own would find two (a schedule adds a ScaleByScheduleState count)."""
    tx = wdchain.adamw(lr=optax.linear_schedule(0.1, 0.0, 10),
                       weight_decay=optax.linear_schedule(0.1, 0.0, 10))
    assert int(optax.tree.get(_run(tx, 3), "count")) == 3
    with pytest.raises(KeyError, match="multiple values for 'count'"):
        optax.tree.get(_run(optax.adamw(optax.linear_schedule(0.1, 0.0, 10)), 3), "count")


def test_wrappers_with_their_own_counter_are_why_step_count_exists():
    state = _run(optax.inject_hyperparams(wdchain.adamw)(lr=0.01), 2)
    with pytest.raises(KeyError, match="multiple values for 'count'"):
        optax.tree.get(state, "count")
    assert int(wdchain.step_count(state)) == 2


@pytest.mark.parametrize("make", [wdchain.scale_by_adam, wdchain.scale_by_radam,
                                  lambda: wdchain.scale_by_momentum(0.9),
                                  lambda: wdchain.decoupled_weight_decay(0.1)])
def test_step_count_of_a_bare_transform_reads_its_step(make):
    state = _run(make(), 3)
    assert int(state.step) == 3 and int(wdchain.step_count(state)) == 3


@pytest.mark.parametrize("preconditioner", wdchain.PRECONDITIONERS)
def test_step_count_of_every_build_arm(preconditioner):
    for decay in wdchain.PLACEMENTS:
        tx = wdchain.build(preconditioner, decay=decay, lr=0.01, weight_decay=0.01)
        assert int(wdchain.step_count(_run(tx, 2, jit=False))) == 2


def test_step_count_through_wrappers():
    grads = [jax.tree.map(lambda p: 0.1 * p, PARAMS)] * 5
    grads[2] = jax.tree.map(lambda p: jnp.full_like(p, jnp.nan), PARAMS)
    guarded = wdchain.skip_nonfinite(wdchain.adamw(lr=0.01))
    assert int(wdchain.step_count(_run(guarded, 5, grads))) == 4  # the NaN step is skipped
    for inject in (optax.inject_hyperparams, wdchain.inject_hyperparams):
        assert int(wdchain.step_count(_run(inject(wdchain.adam)(lr=0.01), 3))) == 3
    multi = optax.MultiSteps(wdchain.adamw(lr=0.01), every_k_schedule=2)
    assert int(wdchain.step_count(_run(multi, 6))) == 3  # optimizer steps, not micro-batches
    clipped = optax.chain(optax.clip_by_global_norm(1.0), wdchain.radam(lr=0.01))
    assert int(wdchain.step_count(_run(clipped, 4))) == 4
    scheduled = wdchain.adamw(lr=optax.linear_schedule(0.1, 0.0, 10),
                              weight_decay=optax.linear_schedule(0.1, 0.0, 10))
    assert int(wdchain.step_count(_run(scheduled, 3))) == 3
    partitioned = optax.partition({"a": wdchain.adamw(lr=0.01), "b": wdchain.sgd(lr=0.1)},
                                  {"w": "a", "v": "b"})
    assert int(wdchain.step_count(_run(partitioned, 2))) == 2


def test_step_count_of_an_nnx_optimizer_and_of_a_restored_state():
    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, wdchain.adamw(lr=0.01), wrt=nnx.Param)
    for _ in range(2):
        grads = nnx.grad(lambda m: jnp.sum(m(jnp.ones((1, 2))) ** 2))(model)
        optimizer.update(model, grads)
    assert int(wdchain.step_count(optimizer)) == 2
    assert int(wdchain.step_count(optimizer.opt_state)) == 2
    state = _run(wdchain.nadam(lr=0.01), 3)
    restored = flax.serialization.msgpack_restore(flax.serialization.to_bytes(state))
    assert int(wdchain.step_count(restored)) == 3  # dicts keyed "0", "1", ...


def test_a_state_without_a_count_is_refused():
    tx = wdchain.scale_by_adagrad()
    with pytest.raises(ValueError, match=r"step_count: this state \(ScaleByAdagradState\) "
                       r"holds no step count"):
        wdchain.step_count(tx.init(PARAMS))
