"""wdchain under JAX's SPMD: FSDP-sharded params on 8 (CPU) devices.

The test runs this file as a script in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (the device count is fixed
when JAX starts) and checks the figures it prints.
"""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # 8 simulated devices in a subprocess: `pytest -m slow`, run in CI

NUM_DEVICES, NUM_STEPS = 8, 6
OPTIMIZERS = {
    "adamw": "wdchain.adamw(lr=1e-2, weight_decay=0.1)",
    "adam-amsgrad": "wdchain.adam(lr=1e-2, weight_decay=1e-2, amsgrad=True)",
    "sgd-nesterov": "wdchain.sgd(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2)",
    "rmsprop": "wdchain.rmsprop(lr=1e-3, momentum=0.5)",
    "nadam-independent": (
        "wdchain.build('nadam', decay='independent', lr=1e-2, weight_decay=1e-3,"
        " schedule=optax.linear_schedule(1.0, 0.1, 10))"
    ),
}


def worker():
    """Runs in the subprocess: prints one JSON line of figures per optimizer."""
    import jax
    import jax.numpy as jnp
    import optax
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    import wdchain

    assert jax.device_count() == NUM_DEVICES
    mesh = jax.make_mesh((NUM_DEVICES,), ("fsdp",), axis_types=(AxisType.Auto,))
    fsdp = NamedSharding(mesh, P("fsdp"))  # first axis split over the 8 devices

    def init_params():
        k1, k2 = jax.random.split(jax.random.key(0))
        return {
            "w1": jax.random.normal(k1, (16, 64)) / 4, "b1": jnp.zeros(64),
            "w2": jax.random.normal(k2, (64, 8)) / 8, "b2": jnp.zeros(8),
        }

    def loss(params, x):
        hidden = jnp.tanh(x @ params["w1"] + params["b1"])
        return jnp.mean((hidden @ params["w2"] + params["b2"] - jnp.sin(x[:, :8])) ** 2)

    def batch(t):
        return jax.random.normal(jax.random.fold_in(jax.random.key(1), t), (32, 16))

    def train(tx, params, unpack=lambda p: p):
        step = jax.jit(lambda p, s, x: _step(tx, p, s, x, unpack))
        state = tx.init(params)  # eager init: every slot is made *_like its param
        initial = state
        for t in range(NUM_STEPS):
            params, state = step(params, state, batch(t))
        return params, state, initial

    def _step(tx, params, state, x, unpack):
        grads = jax.grad(lambda p: loss(unpack(p), x))(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    def figures(params, states):
        """Checks every array slot of the states against its param's sharding."""
        by_shape = {leaf.shape: leaf.sharding for leaf in jax.tree.leaves(params)}
        per_device = total = 0
        for state in states:
            for leaf in jax.tree.leaves(state):
                shards = leaf.addressable_shards
                if leaf.ndim == 0:  # step counts: 4 bytes, one copy per device
                    continue
                assert leaf.sharding.is_equivalent_to(by_shape[leaf.shape], leaf.ndim), leaf
                assert len(shards) == NUM_DEVICES and not leaf.sharding.is_fully_replicated
                assert all(s.data.nbytes * NUM_DEVICES == leaf.nbytes for s in shards)
                assert len({str(s.index) for s in shards}) == NUM_DEVICES  # no copies
        last = states[-1]
        for leaf in jax.tree.leaves(last):
            total += leaf.nbytes
            per_device += max(s.data.nbytes for s in leaf.addressable_shards)
        return per_device, total

    def max_error(a, b):
        return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a),
                                                                  jax.tree.leaves(b)))

    for name, expression in OPTIMIZERS.items():
        tx = eval(expression)
        single, _, _ = train(tx, init_params())
        sharded_params = jax.device_put(init_params(), fsdp)
        params, state, initial = train(tx, sharded_params)
        per_device, total = figures(sharded_params, [initial, state])
        for leaf in jax.tree.leaves(params):
            assert leaf.sharding.is_equivalent_to(fsdp, leaf.ndim)
        print(json.dumps({"name": name, "per_device": per_device, "total": total,
                          "error": max_error(params, single)}))

    # The packed path: a few flat buffers, each split over the devices.
    layout = wdchain.PackedLayout.from_params(init_params(), mask={"w1": True, "b1": False,
                                                                   "w2": True, "b2": False})
    tx = wdchain.adamw(lr=1e-2, weight_decay=0.1, mask=layout.mask)
    single, _, _ = train(tx, layout.pack(init_params()), layout.unpack)
    sharded_params = jax.device_put(layout.pack(init_params()), fsdp)
    params, state, initial = train(tx, sharded_params, layout.unpack)
    per_device, total = figures(sharded_params, [initial, state])
    unsharded = wdchain.adamw(lr=1e-2, weight_decay=0.1, mask={"w1": True, "b1": False,
                                                               "w2": True, "b2": False})
    tree_params, _, _ = train(unsharded, init_params())
    print(json.dumps({"name": "packed-adamw", "per_device": per_device, "total": total,
                      "error": max_error(params, single),
                      "error_vs_tree": max_error(layout.unpack(params), tree_params)}))


@pytest.fixture(scope="module")
def results():
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={NUM_DEVICES}",
           "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return {row["name"]: row for row in map(json.loads, done.stdout.splitlines())}


@pytest.mark.parametrize("name", [*OPTIMIZERS, "packed-adamw"])
def test_state_is_sharded_like_the_params_and_matches_one_device(results, name):
    row = results[name]
    # Array slots hold 1/8 per device; only the int32 step counts (4 bytes) are copied.
    assert row["per_device"] * NUM_DEVICES <= row["total"] + NUM_DEVICES * 64
    assert row["per_device"] < row["total"] / 7
    assert row["error"] <= 1e-6
    assert row.get("error_vs_tree", 0.0) <= 1e-6


if __name__ == "__main__":
    worker()
