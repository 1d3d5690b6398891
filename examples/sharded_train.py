"""A wdchain optimizer on FSDP-sharded params: JAX's own SPMD, nothing of wdchain's.

The params are split along their first axis over a 1-D mesh of every device
(``NamedSharding(mesh, P("fsdp"))``); ``tx.init`` makes each optimizer slot like its
param, so the state is split the same way, and a plain ``jax.jit`` train step keeps
it so. The example prints the state's bytes on one device against its total and
the largest difference to the same run on one device.

On a CPU it fakes 8 devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``,
set before JAX starts); on GPUs or TPUs it uses the devices there are.

Run: ``python examples/sharded_train.py``
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402  (after XLA_FLAGS)
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import wdchain  # noqa: E402

NUM_STEPS = 50
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 0.1
WIDTH = 256  # every first axis is a multiple of the device count (8, 16, ... 256)


def init_params(key):
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (WIDTH, WIDTH)) / WIDTH**0.5, "b1": jnp.zeros(WIDTH),
        "w2": jax.random.normal(k2, (WIDTH, 16)) / WIDTH**0.5, "b2": jnp.zeros(16),
    }


def loss_fn(params, x):
    hidden = jax.nn.gelu(x @ params["w1"] + params["b1"])
    return jnp.mean((hidden @ params["w2"] + params["b2"] - jnp.cos(x[:, :16])) ** 2)


def fsdp_sharding(mesh, leaf):
    """Split the first axis over the mesh when it divides evenly, else replicate."""
    size = mesh.shape["fsdp"]
    return NamedSharding(mesh, P("fsdp") if leaf.ndim and leaf.shape[0] % size == 0 else P())


def train(tx, params, num_steps):
    @jax.jit
    def step(params, state, t):
        x = jax.random.normal(jax.random.fold_in(jax.random.key(1), t), (64, WIDTH))
        loss, grads = jax.value_and_grad(loss_fn)(params, x)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    state = tx.init(params)  # each slot is made like its param: same sharding
    for t in range(num_steps):
        params, state, loss = step(params, state, t)
    return params, state, float(loss)


def main(num_steps=NUM_STEPS):
    mesh = jax.make_mesh((jax.device_count(),), ("fsdp",), axis_types=(AxisType.Auto,))
    tx = wdchain.adamw(lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    params = init_params(jax.random.key(0))
    sharded = jax.tree.map(lambda p: jax.device_put(p, fsdp_sharding(mesh, p)), params)

    params_1, _, loss_1 = train(tx, params, num_steps)
    params_n, state_n, loss_n = train(tx, sharded, num_steps)

    leaves = jax.tree.leaves(state_n)
    result = {
        "devices": jax.device_count(),
        "state_bytes_total": sum(leaf.nbytes for leaf in leaves),
        "state_bytes_per_device": sum(leaf.addressable_shards[0].data.nbytes for leaf in leaves),
        "max_difference": max(float(jnp.max(jnp.abs(a - b)))
                              for a, b in zip(jax.tree.leaves(params_n),
                                              jax.tree.leaves(params_1))),
        "loss": (loss_1, loss_n),
    }
    print(f"{result['devices']} devices; optimizer state: {result['state_bytes_per_device']:,} "
          f"bytes per device of {result['state_bytes_total']:,}")
    print(f"w1's second moment: {state_n[1].nu['w1'].sharding.spec}, "
          f"shards of {state_n[1].nu['w1'].addressable_shards[0].data.shape}")
    print(f"final loss {loss_n:.5f} (one device: {loss_1:.5f}); largest difference in the "
          f"params: {result['max_difference']:.2e}")
    return result


if __name__ == "__main__":
    main()
