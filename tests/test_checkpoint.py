"""Checkpoints: a run resumed in a fresh process from orbax or flax bytes continues
bit for bit; a checkpoint of another optimizer or another tree is refused.

Run as a script (``python tests/test_checkpoint.py DIR``), this file is the fresh
process: it restores every checkpoint in DIR and finishes the runs.
"""

import os
import subprocess
import sys

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import wdchain

SAVE_AT, NUM_STEPS = 4, 8
SCHEDULE = optax.cosine_decay_schedule(1.0, NUM_STEPS)
OPTIMIZERS = {
    "sgd": lambda: wdchain.sgd(lr=0.05, momentum=0.9, weight_decay=1e-2, nesterov=True),
    "adagrad": lambda: wdchain.adagrad(lr=0.05, lr_decay=0.01, weight_decay=1e-2),
    "rmsprop": lambda: wdchain.rmsprop(lr=0.01, momentum=0.5, centered=True),
    "adam": lambda: wdchain.adam(lr=0.01, weight_decay=1e-2, amsgrad=True),
    "adamw": lambda: wdchain.adamw(lr=optax.cosine_decay_schedule(0.01, NUM_STEPS)),
    "nadam": lambda: wdchain.nadam(lr=0.01, weight_decay=1e-2),
    "radam": lambda: wdchain.radam(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
    "adamax": lambda: wdchain.adamax(lr=0.01, weight_decay=1e-2),
    "build-none": lambda: wdchain.build("rmsprop", decay="none", lr=0.01, momentum=0.9),
    "build-l2": lambda: wdchain.build("momentum", decay="l2", lr=0.05, weight_decay=0.1),
    "build-decoupled": lambda: wdchain.build(
        "adam", decay="decoupled", lr=0.01, weight_decay=0.1, schedule=SCHEDULE
    ),
    "build-independent": lambda: wdchain.build(
        "radam", decay="independent", lr=0.01, weight_decay=0.01, schedule=SCHEDULE
    ),
    "build-constant": lambda: wdchain.build("nadam", decay="constant", lr=0.01, weight_decay=1e-3),
}


def init_params():
    key_w, key_b = jax.random.split(jax.random.key(0))
    return {"w": jax.random.normal(key_w, (4, 3)), "b": jax.random.normal(key_b, (3,))}


def loss(params, x):
    return jnp.mean((x @ params["w"] + params["b"] - 1.0) ** 2)


def make_step(tx):
    """One training step, run eagerly: op by op, each op compiled once and shared by all
    13 optimizers, which is faster here than compiling 13 jitted steps per process."""

    def step(params, state, t):
        x = jax.random.normal(jax.random.fold_in(jax.random.key(1), t), (8, 4))
        grads = jax.grad(loss)(params, x)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def run(step, params, state, start, stop):
    for t in range(start, stop):
        params, state = step(params, state, t)
    return params, state


def flat(params, state):
    return [np.asarray(leaf) for leaf in jax.tree.leaves((params, state))]


def resume(directory):
    """The fresh process: restore each checkpoint, finish the run, save the result."""
    for name, make in OPTIMIZERS.items():
        tx, like = make(), init_params()
        step = make_step(tx)
        with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
            loaded = checkpointer.restore(
                os.path.join(directory, f"orbax-{name}"),
                ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()),
            )
        with open(os.path.join(directory, f"flax-{name}.msgpack"), "rb") as f:
            from_bytes = flax.serialization.msgpack_restore(f.read())
        for kind, params, raw_state, signature in [
            ("orbax", loaded["state"]["params"], loaded["state"]["opt_state"],
             loaded["meta"]["signature"]),
            ("flax", from_bytes["params"], from_bytes["opt_state"], from_bytes["signature"]),
        ]:
            params = jax.tree.map(jnp.asarray, params)
            state = wdchain.restore_state(tx, like, raw_state, signature=signature)
            params, state = run(step, params, state, SAVE_AT, NUM_STEPS)
            np.savez(os.path.join(directory, f"resumed-{kind}-{name}.npz"), *flat(params, state))


@pytest.mark.slow
def test_resumed_runs_continue_bit_for_bit(tmp_path):
    expected = {}
    for name, make in OPTIMIZERS.items():
        tx, params = make(), init_params()
        step = make_step(tx)
        params, state = run(step, params, tx.init(params), 0, SAVE_AT)
        signature = wdchain.state_signature(tx, params)
        with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
            checkpointer.save(
                tmp_path / f"orbax-{name}",
                ocp.args.Composite(
                    state=ocp.args.StandardSave({"params": params, "opt_state": state}),
                    meta=ocp.args.JsonSave({"signature": signature}),
                ),
            )
        data = {"params": params, "opt_state": state, "signature": signature}
        (tmp_path / f"flax-{name}.msgpack").write_bytes(flax.serialization.to_bytes(data))
        expected[name] = flat(*run(step, params, state, SAVE_AT, NUM_STEPS))

    subprocess.run([sys.executable, __file__, str(tmp_path)], check=True, timeout=300)
    for name, want in expected.items():
        for kind in ("orbax", "flax"):
            with np.load(tmp_path / f"resumed-{kind}-{name}.npz") as got:
                assert len(got.files) == len(want), (kind, name)
                for i, leaf in enumerate(want):
                    resumed = got[f"arr_{i}"]
                    assert resumed.dtype == leaf.dtype and np.array_equal(resumed, leaf), (
                        kind, name, i)


def saved(tx, params):
    """A state as a checkpoint library gives it back: flax's msgpack, no target."""
    return flax.serialization.msgpack_restore(flax.serialization.to_bytes(tx.init(params)))


def test_another_optimizer_is_refused_naming_the_slot():
    params = init_params()
    with pytest.raises(ValueError, match=r"no slot state\[2\]\.trace\.b"):
        wdchain.restore_state(wdchain.sgd(momentum=0.9), params, saved(wdchain.adam(), params))
    with pytest.raises(ValueError, match=r"has a slot state\[2\]\.nu_max\.b"):
        wdchain.restore_state(wdchain.adam(), params, saved(wdchain.adam(amsgrad=True), params))


def test_another_tree_is_refused_naming_the_path():
    params = init_params()
    bigger = {**params, "w": jnp.zeros((5, 3))}
    with pytest.raises(ValueError, match=r"state\[2\]\.mu\.w \(slot 2 of the chain, a "
                                         r"ScaleByAdamState\) is float32\[4, 3\] in the "
                                         r"checkpoint, but this optimizer needs float32\[5, 3\]"):
        wdchain.restore_state(wdchain.adam(), bigger, saved(wdchain.adam(), params))
    renamed = {"kernel": params["w"], "b": params["b"]}
    with pytest.raises(ValueError, match=r"no slot state\[2\]\.mu\.kernel"):
        wdchain.restore_state(wdchain.adam(), renamed, saved(wdchain.adam(), params))
    half = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
    with pytest.raises(ValueError, match=r"state\[2\]\.mu\.b .* is float32\[3\] .* bfloat16\[3\]"):
        wdchain.restore_state(wdchain.adam(), half, saved(wdchain.adam(), params))


def test_the_signature_tells_apart_states_with_the_same_slots():
    params = init_params()
    radam = wdchain.build("radam", decay="l2", weight_decay=0.1)
    adamax = wdchain.build("adamax", decay="l2", weight_decay=0.1)
    raw = saved(radam, params)
    wdchain.restore_state(adamax, params, raw)  # same slot names and shapes: undetectable
    with pytest.raises(ValueError, match="has ScaleByRadamState where this optimizer has "
                                         "ScaleByAdamaxState"):
        wdchain.restore_state(adamax, params, raw, signature=wdchain.state_signature(radam, params))


def test_restore_rebuilds_the_state_types_and_values():
    params = init_params()
    tx = wdchain.nadam(weight_decay=0.1)  # mu_product sorts before nu: matched by path
    _, state = run(make_step(tx), params, tx.init(params), 0, 2)
    raw = flax.serialization.msgpack_restore(flax.serialization.to_bytes(state))
    restored = wdchain.restore_state(tx, params, raw, signature=wdchain.state_signature(tx, params))
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        assert got.dtype == want.dtype and np.array_equal(got, want)


if __name__ == "__main__":
    resume(sys.argv[1])


def test_a_signature_read_back_with_a_newline_still_matches():
    params = {"w": jnp.ones(3)}
    tx = wdchain.adamw()
    signature = wdchain.state_signature(tx, params) + "\n"
    loaded = flax.serialization.msgpack_restore(flax.serialization.to_bytes(tx.init(params)))
    state = wdchain.restore_state(tx, params, loaded, signature=signature)
    assert jax.tree.structure(state) == jax.tree.structure(tx.init(params))


# Written by wdchain 0.1.0 (where every counter was named ``count``; since 0.2 only
# the learning-rate step's is) after three updates of these optimizers on this tree:
# restored now, each continues exactly as a run made by this version.
V0_1 = {
    "adamw": lambda: wdchain.adamw(lr=0.01, weight_decay=0.1),
    "sgd_momentum": lambda: wdchain.sgd(lr=0.1, momentum=0.9, weight_decay=0.01),
    "nadam": lambda: wdchain.nadam(lr=0.01, weight_decay=0.1),
}
V0_1_PARAMS = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(3, 2), "v": jnp.ones((2, 2))}


def _v0_1_run(tx, state, steps):
    update = jax.jit(tx.update)
    for i in steps:
        grads = jax.tree.map(lambda p, i=i: (0.1 * (i + 1)) * p, V0_1_PARAMS)
        _, state = update(grads, state, V0_1_PARAMS)
    return state


@pytest.mark.parametrize("name", sorted(V0_1))
def test_a_checkpoint_of_wdchain_0_1_resumes_bit_for_bit(name):
    tx = V0_1[name]()
    path = os.path.join(os.path.dirname(__file__), "data", f"v0_1_{name}.msgpack")
    with open(path, "rb") as f:
        loaded = flax.serialization.msgpack_restore(f.read())
    assert "count" in loaded["1"] and "step" not in loaded["1"]  # the old field name
    state = wdchain.restore_state(tx, V0_1_PARAMS, loaded)
    uninterrupted = _v0_1_run(tx, tx.init(V0_1_PARAMS), range(5))
    resumed = _v0_1_run(tx, state, range(3, 5))
    for a, b in zip(jax.tree.leaves(uninterrupted), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(a, b)
    assert int(optax.tree.get(resumed, "count")) == 5


def test_a_nonfinite_state_is_refused_unless_asked() -> None:
    """A restored state with NaN or inf is refused, naming the slot (issue 17 §6), unless
    ``allow_nonfinite=True``; the restored values are then kept as they are."""
    params = {"w": jnp.ones(3)}
    tx = wdchain.adam()
    state = tx.init(params)
    loaded = flax.serialization.msgpack_restore(flax.serialization.to_bytes(state))
    loaded = jax.tree.map(np.array, loaded)
    loaded["2"]["nu"]["w"][1] = np.nan
    with pytest.raises(ValueError, match=r"restore_state: state\[2\]\.nu\.w.* has 1 non-finite "
                                         r"\(NaN or inf\) entry of 3.*allow_nonfinite=True"):
        wdchain.restore_state(tx, params, loaded)
    restored = wdchain.restore_state(tx, params, loaded, allow_nonfinite=True)
    assert np.isnan(np.asarray(restored[2].nu["w"][1]))
    loaded["2"]["nu"]["w"][1] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        wdchain.restore_state(tx, params, loaded)
