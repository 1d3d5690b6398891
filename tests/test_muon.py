"""Muon on the leaves it takes (2-D), AdamW on the others, in one transformation.

torch's Muon refuses parameters that are not matrices; wdchain refuses them at
``init`` with an error that names the leaf and shows the pairing, and
``wdchain.muon_labels`` gives ``optax.partition`` its labels. A small Flax NNX model
(kernels, biases, a LayerNorm scale) trains that way.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import wdchain

MIXED = {"dense": {"kernel": jnp.ones((3, 4)), "bias": jnp.zeros(4)}, "scale": jnp.ones(())}
PAIRING = re.escape("optax.partition({'muon': wdchain.muon(...), 'adamw': wdchain.adamw(...)}, "
                    "wdchain.muon_labels)")


@pytest.mark.parametrize("make", [
    lambda: wdchain.muon(),
    lambda: wdchain.build("muon", decay="independent", weight_decay=0.1),
    lambda: wdchain.orthogonalize_newton_schulz(),
], ids=["muon", "build-muon", "orthogonalize_newton_schulz"])
def test_a_leaf_that_is_not_a_matrix_is_refused_at_init(make):
    tx = make()
    with pytest.raises(ValueError, match=r"muon: the leaf at \['dense'\]\['bias'\] has shape "
                                         r"\(4,\); Muon orthogonalises 2-D matrices only .*"
                                         + PAIRING):
        tx.init(MIXED)
    tx.init({"kernel": jnp.ones((3, 4))})  # matrices only: fine


def test_muon_labels_split_matrices_from_the_rest():
    assert wdchain.muon_labels(MIXED) == {
        "dense": {"kernel": "muon", "bias": "adamw"}, "scale": "adamw"}
    assert wdchain.muon_labels({"w": jnp.ones((2, 2, 2))}) == {"w": "adamw"}


class MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(4, 16, rngs=rngs)
        self.norm = nnx.LayerNorm(16, rngs=rngs)
        self.out = nnx.Linear(16, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(jnp.tanh(self.norm(self.hidden(x))))


def _train(tx: optax.GradientTransformation, steps: int = 150) -> tuple[float, float, object]:
    graphdef, params = nnx.split(MLP(nnx.Rngs(0)), nnx.Param)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((64, 4)), jnp.float32)
    y = jnp.sin(x @ jnp.array([[1.0], [-0.5], [0.3], [2.0]]))

    def loss(p):
        return jnp.mean((nnx.merge(graphdef, p)(x) - y) ** 2)

    @jax.jit
    def step(p, state):
        value, grads = jax.value_and_grad(loss)(p)
        updates, state = tx.update(grads, state, p)
        return optax.apply_updates(p, updates), state, value

    state = tx.init(params)
    first = float(loss(params))
    for _ in range(steps):
        params, state, _ = step(params, state)
    return first, float(loss(params)), state


def test_a_flax_model_trains_with_muon_and_adamw_partitioned():
    tx = optax.partition(
        {"muon": wdchain.muon(lr=0.02, weight_decay=0.01),
         "adamw": wdchain.adamw(lr=3e-3, weight_decay=0.0)},
        wdchain.muon_labels,
    )
    first, last, state = _train(tx)
    assert last < 0.1 * first, (first, last)
    # Muon kept a momentum buffer for the two kernels, AdamW the moments of the rest.
    buffers = [
        leaf.shape for node in jax.tree.leaves(
            state, is_leaf=lambda n: isinstance(n, wdchain.ScaleByMuonMomentumState))
        if isinstance(node, wdchain.ScaleByMuonMomentumState)
        for leaf in jax.tree.leaves(node.momentum_buffer)
    ]
    assert sorted(buffers) == [(4, 16), (16, 1)]
    # Muon does something AdamW alone does not.
    _, adamw_only, _ = _train(wdchain.adamw(lr=3e-3, weight_decay=0.0))
    assert abs(adamw_only - last) > 1e-4 * first


@pytest.mark.parametrize("injector", [optax.inject_hyperparams, wdchain.inject_hyperparams])
def test_inject_hyperparams_of_muon_gives_the_plain_result(injector):
    params = {"a": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.ones((5, 2))}
    kwargs = {"lr": 0.05, "weight_decay": 0.1, "momentum": 0.9, "ns_dtype": jnp.float32}
    plain = wdchain.muon(**kwargs)
    injected = injector(wdchain.muon, static_args=("ns_dtype", "ns_steps"))(**kwargs)
    p_plain, s_plain = params, plain.init(params)
    p_inj, s_inj = params, injected.init(params)
    for k in range(4):
        grads = jax.tree.map(lambda p, k=k: jnp.cos(p * (k + 1)), params)
        u_plain, s_plain = plain.update(grads, s_plain, p_plain)
        u_inj, s_inj = injected.update(grads, s_inj, p_inj)
        # Injected values are float32 (μ = 0.9 rounded); the iteration amplifies that a little.
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                     u_inj, u_plain)
        p_plain = optax.apply_updates(p_plain, u_plain)
        p_inj = optax.apply_updates(p_inj, u_inj)
    with pytest.raises(ValueError, match=r"muon: ns_steps must be a Python int .*"
                                         r"static_args=\('ns_steps', 'ns_dtype'\)"):
        injector(wdchain.muon, static_args=("ns_dtype",))(**kwargs).init(params)


def test_the_decay_uses_the_unadjusted_lr():
    """torch: θ ← θ(1 − lr·λ) − lr·s·O with s = √max(1, A/B): on a tall matrix s = 2, and
    a zero gradient leaves only the decay, −lr·λ·θ (no s)."""
    theta = {"w": jnp.ones((8, 2))}
    tx = wdchain.muon(lr=0.1, weight_decay=0.5, ns_dtype=jnp.float32)
    updates, _ = tx.update({"w": jnp.zeros((8, 2))}, tx.init(theta), theta)
    np.testing.assert_allclose(updates["w"], -0.1 * 0.5 * theta["w"], rtol=1e-6)
    assert wdchain.preconditioners.muon.shape_factor((8, 2), None) == 2.0
    assert wdchain.preconditioners.muon.shape_factor((8, 2), "match_rms_adamw") == pytest.approx(0.2 * 8**0.5)


def test_build_with_others_partitions_by_rank_with_one_placement():
    """build("muon", others="adam"): Muon on the matrices, Adam on the rest, each with the
    arm's placement; it equals the two builds applied to their own leaves."""
    grads = jax.tree.map(lambda p: jnp.cos(3.0 * p + 1.0) + 0.1, MIXED)
    structures = set()
    for decay in wdchain.PLACEMENTS:
        kwargs = {"decay": decay, "lr": 0.05, "weight_decay": 0.2, "ns_dtype": jnp.float32}
        tx = wdchain.build("muon", others="adam", **kwargs)
        state = tx.init(MIXED)
        structures.add(jax.tree.structure(state))
        updates, _ = tx.update(grads, state, MIXED)
        matrices = {"kernel": MIXED["dense"]["kernel"]}
        muon = wdchain.build("muon", **kwargs)
        expected, _ = muon.update({"kernel": grads["dense"]["kernel"]}, muon.init(matrices),
                                  matrices)
        np.testing.assert_allclose(updates["dense"]["kernel"], expected["kernel"], rtol=1e-6)
        rest = {"bias": MIXED["dense"]["bias"], "scale": MIXED["scale"]}
        kwargs.pop("ns_dtype")
        adam = wdchain.build("adam", **kwargs)
        expected, _ = adam.update({"bias": grads["dense"]["bias"], "scale": grads["scale"]},
                                  adam.init(rest), rest)
        np.testing.assert_allclose(updates["dense"]["bias"], expected["bias"], rtol=1e-6)
        np.testing.assert_allclose(updates["scale"], expected["scale"], rtol=1e-6)
    assert len(structures) == 1
    with pytest.raises(ValueError, match=r"build: others= is for a preconditioner that takes "
                                         r"2-D leaves only \(muon\); 'adam' takes every leaf"):
        wdchain.build("adam", others="sgd")
    with pytest.raises(ValueError, match=r"build: others: unknown preconditioner 'adamw'"):
        wdchain.build("muon", others="adamw")
