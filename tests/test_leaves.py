"""Nothing is lost: leaves an optimizer must not touch pass through every alias.

* Integer and boolean leaves (step counters, flags kept in a params tree) get a zero
  update of their own dtype and are never decayed, even when the mask selects them.
* ``None`` leaves and ``optax.MaskedNode`` are empty subtrees: they come back as they
  went in, in the updates and in the state.
* An empty tree works.
* ``float0`` gradients (``jax.grad(..., allow_int=True)`` for integer leaves) are
  accepted and come back as ``float0`` updates.

Oracles: hand-computed values, and the same optimizer run on the tree without the
extra leaves (the float leaves must come out identical).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import wdchain

FLOATS = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([0.25, -1.5])}
EXTRAS = {
    # Large enough that a decay, once cast back to an integer, would show.
    "step": jnp.array(1000, jnp.int32),
    "flags": jnp.array([True, False]),
    "counts": jnp.array([100, -120, 50], jnp.int8),
    "none": None,
    "masked": optax.MaskedNode(),
}
MIXED = {**FLOATS, **EXTRAS}
NON_FLOAT = ("step", "flags", "counts")
STEPS = 3

# Every alias with its decay switched on (large, so a decayed leaf would show), and the
# placements only build makes.
OPTIMIZERS = {
    "sgd-momentum-l2": lambda: wdchain.sgd(lr=0.1, momentum=0.9, weight_decay=0.5),
    "sgd-nesterov-maximize": lambda: wdchain.sgd(
        lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.5, maximize=True
    ),
    "adagrad-lr_decay-l2": lambda: wdchain.adagrad(
        lr=0.1, lr_decay=0.1, weight_decay=0.5, initial_accumulator_value=0.1
    ),
    "rmsprop-centered-momentum-l2": lambda: wdchain.rmsprop(
        lr=0.01, momentum=0.5, centered=True, weight_decay=0.5
    ),
    "adam-amsgrad-l2": lambda: wdchain.adam(lr=0.1, weight_decay=0.5, amsgrad=True),
    "adam-decoupled": lambda: wdchain.adam(lr=0.1, weight_decay=0.5, decoupled_weight_decay=True),
    "adamw": lambda: wdchain.adamw(lr=0.1, weight_decay=0.5),
    "nadam-l2": lambda: wdchain.nadam(lr=0.1, weight_decay=0.5),
    "nadam-decoupled": lambda: wdchain.nadam(lr=0.1, weight_decay=0.5, decoupled_weight_decay=True),
    "radam-l2": lambda: wdchain.radam(lr=0.1, weight_decay=0.5),
    "radam-decoupled": lambda: wdchain.radam(lr=0.1, weight_decay=0.5, decoupled_weight_decay=True),
    "adamax-l2": lambda: wdchain.adamax(lr=0.1, weight_decay=0.5),
    "build-adam-independent": lambda: wdchain.build(
        "adam", decay="independent", lr=0.1, weight_decay=0.5
    ),
    "build-momentum-constant": lambda: wdchain.build(
        "momentum", decay="constant", lr=0.1, weight_decay=0.5
    ),
}

ALIASES = ("sgd", "adagrad", "rmsprop", "adam", "adamw", "nadam", "radam", "adamax")

def float_grads(step: int) -> Any:
    key = jax.random.fold_in(jax.random.key(1), step)
    return {
        "w": jax.random.normal(key, (2, 2)) * 10.0 ** (step - 1),
        "b": jax.random.normal(jax.random.fold_in(key, 1), (2,)),
    }


def mixed_grads(step: int) -> Any:
    """Float gradients, zeros of the leaf's own dtype elsewhere, empty leaves kept."""
    extras = {name: jnp.zeros_like(EXTRAS[name]) for name in NON_FLOAT}
    return {**float_grads(step), **extras, "none": None, "masked": optax.MaskedNode()}


def run(tx: optax.GradientTransformation, params: Any, grads: list[Any]) -> tuple[Any, Any, Any]:
    """(params, last updates, state) after one jitted update per gradient."""
    update = jax.jit(tx.update)
    state = tx.init(params)
    for g in grads:
        updates, state = update(g, state, params)
        params = optax.apply_updates(params, updates)
    return params, updates, state


@pytest.fixture(params=list(OPTIMIZERS), scope="module")
def mixed_and_floats_only(request):
    """The optimizer run on the mixed tree and on its float leaves alone."""
    mixed = run(OPTIMIZERS[request.param](), MIXED, [mixed_grads(i) for i in range(STEPS)])
    floats = run(OPTIMIZERS[request.param](), FLOATS, [float_grads(i) for i in range(STEPS)])
    return mixed, floats


def per_leaf_statistics(state: Any) -> list[dict[str, Any]]:
    """The trees of a state that mirror the params (dicts with the key "w")."""
    if isinstance(state, dict):
        return [state] if "w" in state else []
    if isinstance(state, tuple):  # NamedTuple states and chains
        return [found for part in state for found in per_leaf_statistics(part)]
    return []


def test_integer_and_boolean_leaves_are_unchanged(mixed_and_floats_only):
    (params, updates, state), _ = mixed_and_floats_only
    statistics = per_leaf_statistics(state)
    assert statistics  # every row keeps per-leaf statistics (a momentum buffer at least)
    for name in NON_FLOAT:
        zeros = np.zeros_like(EXTRAS[name])
        assert params[name].dtype == EXTRAS[name].dtype
        np.testing.assert_array_equal(params[name], EXTRAS[name])
        assert updates[name].dtype == EXTRAS[name].dtype
        np.testing.assert_array_equal(updates[name], zeros)
        for statistic in statistics:  # their state slots keep their dtype and stay zero
            assert statistic[name].dtype == EXTRAS[name].dtype
            np.testing.assert_array_equal(statistic[name], zeros)


def test_float_leaves_are_those_of_the_tree_without_the_extras(mixed_and_floats_only):
    (params, _, _), (reference, _, _) = mixed_and_floats_only
    for name in FLOATS:
        assert not np.array_equal(params[name], FLOATS[name])  # the optimizer did move them
        np.testing.assert_allclose(params[name], reference[name], rtol=1e-6, atol=0)


def test_none_and_masked_node_pass_through(mixed_and_floats_only):
    (params, updates, state), _ = mixed_and_floats_only
    statistics = per_leaf_statistics(state)
    for tree in (params, updates, *statistics):
        assert tree["none"] is None
        assert isinstance(tree["masked"], optax.MaskedNode)


@pytest.mark.parametrize("name", ["sgd-momentum-l2", "adamw", "build-momentum-constant"])
def test_a_mask_that_selects_integer_leaves_does_not_decay_them(name):
    """Decay with an all-True mask, integer leaves included; they are still left alone."""
    tx = _with_mask(name, jax.tree.map(lambda _: True, MIXED))
    params, updates, _ = run(tx, MIXED, [mixed_grads(i) for i in range(STEPS)])
    for leaf in NON_FLOAT:
        np.testing.assert_array_equal(params[leaf], EXTRAS[leaf])
        np.testing.assert_array_equal(updates[leaf], np.zeros_like(EXTRAS[leaf]))


def _with_mask(name: str, mask: Any) -> optax.GradientTransformation:
    if name == "sgd-momentum-l2":
        return wdchain.sgd(lr=0.1, momentum=0.9, weight_decay=0.5, mask=mask)
    if name == "adamw":
        return wdchain.adamw(lr=0.1, weight_decay=0.5, mask=mask)
    return wdchain.build("momentum", decay="constant", lr=0.1, weight_decay=0.5, mask=mask)


# --------------------------------------------------------------------------------------
# Hand-computed single steps: θ = 2, g = 1, λ = 0.5, lr = 0.1, and an int leaf 1000
# (decayed, it would lose lr·λ·1000 = 50).

HAND = [
    # SGD with L2: θ − lr·(g + λθ) = 2 − 0.1·(1 + 1)
    ("sgd-l2", lambda: wdchain.sgd(lr=0.1, weight_decay=0.5), 1.8),
    # AdamW, first step m̂/(√v̂ + ε) = 1/(1 + 1e-8): θ − lr·(1 + λθ)
    ("adamw", lambda: wdchain.adamw(lr=0.1, weight_decay=0.5), 2 - 0.1 * (1 / (1 + 1e-8) + 1.0)),
    # Adagrad with L2: g' = 1 + 1 = 2, s = 4, θ − lr·g'/(√s + ε) = 2 − 0.1·1
    ("adagrad-l2", lambda: wdchain.adagrad(lr=0.1, weight_decay=0.5), 2 - 0.1 * 2 / (2 + 1e-10)),
]


@pytest.mark.parametrize("make, expected", [pytest.param(m, e, id=i) for i, m, e in HAND])
def test_hand_computed_step_with_an_integer_leaf(make, expected):
    tx = make()
    params = {"theta": jnp.array([2.0]), "n": jnp.array(1000, jnp.int32), "on": jnp.array(True)}
    grads = {"theta": jnp.array([1.0]), "n": jnp.array(0, jnp.int32), "on": jnp.array(False)}
    updates, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_allclose(new["theta"], [expected], rtol=1e-6)
    assert int(new["n"]) == 1000 and new["n"].dtype == jnp.int32
    assert bool(new["on"]) is True and new["on"].dtype == jnp.bool_


def test_hand_computed_constant_decay_with_an_integer_leaf():
    # θ − lr·g − λθ = 2 − 0.1 − 1
    tx = wdchain.build("sgd", decay="constant", lr=0.1, weight_decay=0.5)
    params = {"theta": jnp.array([2.0]), "n": jnp.array(1000, jnp.int32)}
    grads = {"theta": jnp.array([1.0]), "n": jnp.array(0, jnp.int32)}
    new = optax.apply_updates(params, tx.update(grads, tx.init(params), params)[0])
    np.testing.assert_allclose(new["theta"], [0.9], rtol=1e-6)
    assert int(new["n"]) == 1000


# --------------------------------------------------------------------------------------
# Empty trees, MaskedNode from optax.masked, float0 gradients.


@pytest.mark.parametrize("alias", ALIASES)
@pytest.mark.parametrize("empty", [{}, {"layer": {}, "skip": None}], ids=["{}", "nested"])
def test_an_empty_tree_works(alias, empty):
    tx = getattr(wdchain, alias)(weight_decay=0.1)
    state = tx.init(empty)
    for update in (tx.update, jax.jit(tx.update)):
        updates, new_state = update(empty, state, empty)
        assert updates == empty
        assert jax.tree.structure(new_state) == jax.tree.structure(state)
        assert optax.apply_updates(empty, updates) == empty


def test_inside_optax_masked_the_masked_node_passes_through():
    """optax.masked hands wdchain MaskedNode leaves; the others are the plain result."""
    mask = {"w": True, "b": False}
    tx = optax.masked(wdchain.adamw(lr=0.1, weight_decay=0.5), mask)
    _, updates, _ = run(tx, FLOATS, [float_grads(i) for i in range(STEPS)])
    _, reference, _ = run(
        wdchain.adamw(lr=0.1, weight_decay=0.5),
        {"w": FLOATS["w"]},
        [{"w": float_grads(i)["w"]} for i in range(STEPS)],
    )
    np.testing.assert_allclose(updates["w"], reference["w"], rtol=1e-6)
    np.testing.assert_array_equal(updates["b"], float_grads(STEPS - 1)["b"])  # untouched


def _loss(params: Any) -> jax.Array:
    scale = params["step"].astype(jnp.float32)  # the int leaf is used, not trained
    return jnp.sum(params["w"] ** 2) + scale * jnp.sum(params["b"] ** 2)


FLOAT0_ROWS = [
    *(pytest.param(alias, False, id=alias) for alias in ALIASES),
    pytest.param("adam", True, id="adam-maximize"),
]


@pytest.mark.parametrize("alias, maximize", FLOAT0_ROWS)
def test_float0_gradients_of_integer_leaves_are_accepted(alias, maximize):
    params = {**FLOATS, "step": EXTRAS["step"], "flags": EXTRAS["flags"]}
    grads = jax.grad(_loss, allow_int=True)(params)
    assert grads["step"].dtype == jax.dtypes.float0
    tx = getattr(wdchain, alias)(weight_decay=0.1, maximize=maximize)
    floats_only = {name: grads[name] for name in FLOATS}
    reference, _ = jax.jit(tx.update)(floats_only, tx.init(FLOATS), FLOATS)
    for update in (tx.update, jax.jit(tx.update)):
        updates, _ = update(grads, tx.init(params), params)
        for name in ("step", "flags"):
            assert updates[name].dtype == jax.dtypes.float0
            assert updates[name].shape == params[name].shape
        for name in FLOATS:
            np.testing.assert_allclose(updates[name], reference[name], rtol=1e-6)


def test_float0_updates_must_be_zeros_before_optax_apply_updates():
    """optax.apply_updates refuses float0; the documented conversion makes it work."""
    params = {**FLOATS, "step": EXTRAS["step"]}
    grads = jax.grad(_loss, allow_int=True)(params)
    tx = wdchain.adamw(lr=0.1)
    updates, _ = tx.update(grads, tx.init(params), params)
    with pytest.raises(TypeError, match="float0"):
        optax.apply_updates(params, updates)
    zeros = jax.tree.map(
        lambda u, p: jnp.zeros_like(p) if u.dtype == jax.dtypes.float0 else u, updates, params
    )
    new = optax.apply_updates(params, zeros)
    assert int(new["step"]) == int(EXTRAS["step"])
