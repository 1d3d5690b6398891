"""The packed path: layout, round trip, and packed steps equal to tree steps.

Oracles: NumPy concatenation of the raveled leaves (the layout), the same optimizer
run on the ordinary tree (the updates), and a Flax model trained on the tree (the
training loop). The optimizers themselves are checked against torch elsewhere.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import wdchain


def _mixed_tree():
    rng = np.random.default_rng(0)
    return {
        "dense": {
            "kernel": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
            "bias": jnp.asarray(rng.normal(size=(4,)), jnp.float32),
        },
        "scale": jnp.asarray(1.5, jnp.float32),  # a scalar leaf
        "empty": jnp.zeros((0, 5), jnp.float32),  # an empty leaf
        "half": jnp.asarray(rng.normal(size=(2, 2)), jnp.bfloat16),
        "steps": jnp.arange(3, dtype=jnp.int32),
        "nothing": None,
        "layers": [jnp.asarray(rng.normal(size=(5,)), jnp.float32), jnp.zeros((2, 0))],
    }


DECAY_MASK = {
    "dense": {"kernel": True, "bias": False},
    "scale": False,
    "empty": True,
    "half": True,
    "steps": True,  # non-float: never decayed, grouped by dtype alone
    "nothing": None,
    "layers": [True, False],
}


def _assert_same_tree(actual, expected):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        assert a.shape == e.shape and a.dtype == e.dtype
        np.testing.assert_array_equal(np.asarray(a, np.float64), np.asarray(e, np.float64))


@pytest.mark.parametrize("mask", [None, DECAY_MASK], ids=["no_mask", "mask"])
def test_round_trip_keeps_values_shapes_and_dtypes(mask):
    tree = _mixed_tree()
    layout = wdchain.PackedLayout.from_params(tree, mask=mask)
    flat = layout.pack(tree)
    assert all(buffer.ndim == 1 for buffer in flat.values())
    _assert_same_tree(layout.unpack(flat), tree)
    # unpack inside jit, with the layout closed over
    _assert_same_tree(jax.jit(layout.unpack)(flat), tree)


def test_buffers_are_the_leaves_end_to_end_per_group():
    tree = _mixed_tree()
    layout = wdchain.PackedLayout.from_params(tree, mask=DECAY_MASK)
    flat = layout.pack(tree)
    leaves = jax.tree.leaves(tree)  # tree order: dense.bias, dense.kernel, empty, half, ...
    by_key = dict(zip(
        ["bias", "kernel", "empty", "half", "layer0", "layer1", "scale", "steps"], leaves
    ))

    def cat(*names):
        return np.concatenate([np.asarray(by_key[n], np.float64).ravel() for n in names])

    expected = {
        "float32/decay": cat("kernel", "empty", "layer0"),
        "float32/no_decay": cat("bias", "layer1", "scale"),
        "bfloat16/decay": cat("half"),
        "int32": cat("steps"),
    }
    assert sorted(flat) == sorted(expected)
    for name, values in expected.items():
        np.testing.assert_array_equal(np.asarray(flat[name], np.float64), values)
    assert layout.mask == {
        "bfloat16/decay": True, "float32/decay": True, "float32/no_decay": False, "int32": False
    }
    assert layout.sizes == {
        "bfloat16/decay": 4, "float32/decay": 17, "float32/no_decay": 5, "int32": 3
    }
    assert layout.dtypes["bfloat16/decay"] == jnp.bfloat16


def test_without_mask_one_buffer_per_dtype_and_no_mask():
    layout = wdchain.PackedLayout.from_params(_mixed_tree())
    assert layout.mask is None
    assert layout.sizes == {"bfloat16": 4, "float32": 22, "int32": 3}


def test_layout_reads_shapes_only_and_is_hashable():
    tree = _mixed_tree()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
    layout = wdchain.PackedLayout.from_params(abstract, mask=DECAY_MASK)
    assert layout == wdchain.PackedLayout.from_params(tree, mask=DECAY_MASK)
    assert hash(layout) == hash(wdchain.PackedLayout.from_params(tree, mask=DECAY_MASK))


def test_callable_mask_and_empty_tree():
    tree = _mixed_tree()
    layout = wdchain.PackedLayout.from_params(
        tree, mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)
    )
    assert layout.sizes["float32/decay"] == 12  # the kernel and the two empty leaves
    empty = wdchain.PackedLayout.from_params({})
    assert empty.pack({}) == {} and empty.unpack({}) == {}


def test_errors_name_the_leaf_and_the_fix():
    tree = _mixed_tree()
    layout = wdchain.PackedLayout.from_params(tree)
    wrong_shape = {**tree, "scale": jnp.zeros(2)}
    with pytest.raises(ValueError, match=r"\['scale'\] has shape \(2,\)"):
        layout.pack(wrong_shape)
    wrong_dtype = {**tree, "scale": jnp.asarray(1.0, jnp.bfloat16)}
    with pytest.raises(TypeError, match=r"\['scale'\] is bfloat16.*cast"):
        layout.pack(wrong_dtype)
    with pytest.raises(ValueError, match="structure"):
        layout.pack({"dense": tree["dense"]})
    with pytest.raises(ValueError, match="expected a dict with the buffers"):
        layout.unpack({"float32": jnp.zeros(22)})
    flat = layout.pack(tree)
    with pytest.raises(ValueError, match=r"'float32' has shape \(21,\).*\(22,\)"):
        layout.unpack({**flat, "float32": flat["float32"][1:]})
    with pytest.raises(TypeError, match="Python booleans"):
        wdchain.PackedLayout.from_params(tree, mask=jax.tree.map(lambda x: jnp.array(True), tree))


def _float_tree():
    rng = np.random.default_rng(1)
    shapes = {"w1": (7, 5), "b1": (5,), "w2": (5, 3), "b2": (3,), "gain": ()}
    return {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in shapes.items()}


FLOAT_MASK = {"w1": True, "b1": False, "w2": True, "b2": False, "gain": False}

OPTIMIZERS = {
    "sgd_nesterov": lambda mask: wdchain.sgd(0.05, momentum=0.9, nesterov=True,
                                             weight_decay=0.1, mask=mask),
    "adagrad": lambda mask: wdchain.adagrad(0.05, lr_decay=0.01, weight_decay=0.1, mask=mask),
    "rmsprop": lambda mask: wdchain.rmsprop(0.01, momentum=0.9, centered=True,
                                            weight_decay=0.1, mask=mask),
    "adam_l2": lambda mask: wdchain.adam(0.05, weight_decay=0.1, amsgrad=True, mask=mask),
    "adamw": lambda mask: wdchain.adamw(0.05, weight_decay=0.1, mask=mask),
    "nadamw": lambda mask: wdchain.nadam(0.05, weight_decay=0.1, decoupled_weight_decay=True,
                                         mask=mask),
    "radam": lambda mask: wdchain.radam(0.05, weight_decay=0.1, mask=mask),
    "adamax": lambda mask: wdchain.adamax(0.05, weight_decay=0.1, mask=mask),
}


def _run(tx, params, grads, steps):
    state = tx.init(params)

    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for g in grads[:steps]:
        params, state = step(params, state, g)
    return params, state


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_packed_step_equals_tree_step_with_a_mask(name):
    params = _float_tree()
    rng = np.random.default_rng(2)
    grads = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
             for _ in range(8)]
    layout = wdchain.PackedLayout.from_params(params, mask=FLAT_MASK_FN)
    tree_params, _ = _run(OPTIMIZERS[name](FLOAT_MASK), params, grads, 8)
    packed_params, _ = _run(
        OPTIMIZERS[name](layout.mask), layout.pack(params), [layout.pack(g) for g in grads], 8
    )
    result = layout.unpack(packed_params)
    for key in params:
        np.testing.assert_allclose(result[key], tree_params[key], rtol=1e-6, atol=1e-7)
    # the mask really acts per segment: undecayed leaves differ from a fully decayed run
    all_decayed, _ = _run(OPTIMIZERS[name](None), params, grads, 8)
    assert not np.allclose(all_decayed["b1"], tree_params["b1"], rtol=1e-6, atol=0)
    np.testing.assert_allclose(all_decayed["w1"], tree_params["w1"], rtol=1e-6, atol=1e-7)


def FLAT_MASK_FN(params):  # noqa: N802 - a mask given as a function of the params
    return {k: v.ndim == 2 for k, v in params.items()}


def test_bfloat16_moments_stay_bfloat16_in_the_buffers():
    params = _float_tree()
    layout = wdchain.PackedLayout.from_params(params, mask=FLOAT_MASK)
    tx = wdchain.chain(wdchain.scale_by_adam(mu_dtype=jnp.bfloat16),
                       wdchain.decoupled_weight_decay(0.1, mask=layout.mask),
                       wdchain.scale_by_learning_rate(0.01))
    flat = layout.pack(params)
    state = tx.init(flat)
    _, state = jax.jit(tx.update)(flat, state, flat)
    adam_state = state[0]
    assert all(m.dtype == jnp.bfloat16 for m in adam_state.mu.values())
    mu = layout.unpack(adam_state.mu)
    assert mu["w1"].dtype == jnp.bfloat16 and mu["w1"].shape == (7, 5)
    # m_1 = (1 − β₁)·g with g = θ here
    np.testing.assert_allclose(np.asarray(mu["w1"], np.float32), 0.1 * np.asarray(params["w1"]),
                               rtol=1e-2)


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        for width in (16, 16):
            x = nn.relu(nn.LayerNorm()(nn.Dense(width)(x)))
        return nn.Dense(1)(x)


def _kernels_only(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: jax.tree_util.keystr(path).endswith("['kernel']"), params
    )


def test_flax_model_trained_on_packed_params_equals_training_on_the_tree():
    model = _MLP()
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(32, 6)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(32, 1)), jnp.float32)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), x)["params"]

    def loss_of_tree(tree):
        return jnp.mean((model.apply({"params": tree}, x) - y) ** 2)

    tree_tx = wdchain.adamw(1e-2, weight_decay=0.1, mask=_kernels_only)

    @jax.jit
    def tree_step(params, state):
        loss, grads = jax.value_and_grad(loss_of_tree)(params)
        updates, state = tree_tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    layout = wdchain.PackedLayout.from_params(params, mask=_kernels_only)
    packed_tx = wdchain.adamw(1e-2, weight_decay=0.1, mask=layout.mask)

    @jax.jit
    def packed_step(flat, state):
        loss, flat_grads = jax.value_and_grad(lambda f: loss_of_tree(layout.unpack(f)))(flat)
        updates, state = packed_tx.update(flat_grads, state, flat)
        return optax.apply_updates(flat, updates), state, loss

    flat = layout.pack(params)
    # the gradient w.r.t. the buffers is the packed tree gradient
    flat_grads = jax.jit(jax.grad(lambda f: loss_of_tree(layout.unpack(f))))(flat)
    tree_grads = jax.jit(jax.grad(loss_of_tree))(params)
    for name, buffer in layout.pack(tree_grads).items():
        np.testing.assert_allclose(flat_grads[name], buffer, rtol=1e-6, atol=1e-8)

    tree_state, packed_state = tree_tx.init(params), packed_tx.init(flat)
    for _ in range(10):
        params, tree_state, tree_loss = tree_step(params, tree_state)
        flat, packed_state, packed_loss = packed_step(flat, packed_state)
        np.testing.assert_allclose(packed_loss, tree_loss, rtol=1e-6)
    trained = layout.unpack(flat)
    for a, e in zip(jax.tree.leaves(trained), jax.tree.leaves(params)):
        np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-7)


def test_donated_packed_step_needs_no_memory_beyond_its_arrays():
    """Peak of the compiled step ≤ params + grads + state + 5% (aliased outputs)."""
    params = {f"layer{i}": jnp.zeros((64, 32)) for i in range(50)}
    layout = wdchain.PackedLayout.from_params(params)
    tx = wdchain.adamw(1e-3)
    flat = layout.pack(params)
    state = tx.init(flat)

    def step(flat, state, grads):
        updates, state = tx.update(grads, state, flat)
        return optax.apply_updates(flat, updates), state

    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(flat, state, flat).compile()
    stats = compiled.memory_analysis()
    nbytes = sum(x.nbytes for x in jax.tree.leaves((flat, state, flat)))
    assert stats.argument_size_in_bytes == nbytes
    # every output reuses a donated input buffer
    assert stats.alias_size_in_bytes >= stats.output_size_in_bytes - 64
    peak = (stats.argument_size_in_bytes + stats.output_size_in_bytes
            - stats.alias_size_in_bytes + stats.temp_size_in_bytes)
    assert peak <= 1.05 * nbytes


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_state_can_be_donated(name):
    """Each state slot is its own buffer: a donated step runs (twice) and equals an
    undonated one. (AMSGrad's v_max, RAdam's and Adamax's moments once shared one.)"""
    params = _float_tree()
    grads = jax.tree.map(lambda p: 0.5 * p + 0.1, params)
    tx = OPTIMIZERS[name](FLOAT_MASK)

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    donated = jax.jit(step, donate_argnums=(0, 1))
    plain = jax.jit(step)
    p_d, s_d = jax.tree.map(jnp.copy, params), tx.init(params)
    p_p, s_p = params, tx.init(params)
    for _ in range(2):
        p_d, s_d = donated(p_d, s_d, grads)
        p_p, s_p = plain(p_p, s_p, grads)
    for a, e in zip(jax.tree.leaves((p_d, s_d)), jax.tree.leaves((p_p, s_p))):
        np.testing.assert_array_equal(a, e)
