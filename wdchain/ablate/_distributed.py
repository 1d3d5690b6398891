"""One grid across processes: ``jax.distributed`` and what every process must agree on.

After :func:`initialize` (``jax.distributed.initialize``, with Gloo's collectives
selected first on a CPU), ``jax.devices()`` lists every process's devices and the
sweep's mesh spans them all. Every process runs the same programs in the same order:
it builds the same batches (they are a function of the seed), trains the cells on its
own devices, and gathers every cell's metrics, so every process returns all rows. Only
the primary process (``jax.process_index() == 0``) writes files and prints; decisions
that could differ between processes (a measured time, the free memory of a host) are
taken on the primary and broadcast (:func:`agree`).
"""

from __future__ import annotations

import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

AGREE_BYTES = 1 << 16
"""The largest JSON value :func:`agree` carries."""


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, timeout_s: int = 300) -> None:
    """Joins a multi-process run (``jax.distributed.initialize``'s arguments; all None:
    the environment says, on a TPU pod, under SLURM or Open MPI). On a CPU the
    collectives are Gloo's, selected before the runtime starts."""
    current = getattr(jax.config, "jax_cpu_collectives_implementation", None)
    if current in (None, "", "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id, initialization_timeout=timeout_s)


def primary() -> bool:
    """Whether this process writes the run's files and prints its messages."""
    return jax.process_index() == 0


def several() -> bool:
    """Whether the run spans several processes."""
    return jax.process_count() > 1


def agree(value: Any) -> Any:
    """The primary process's ``value`` (JSON), on every process."""
    if not several():
        return value
    from jax.experimental import multihost_utils

    data = json.dumps(value).encode() if primary() else b""
    if len(data) > AGREE_BYTES:
        raise ValueError(f"agree: {len(data)} bytes exceed {AGREE_BYTES}")
    buffer = np.zeros(AGREE_BYTES + 4, np.uint8)
    buffer[:4] = np.frombuffer(np.uint32(len(data)).tobytes(), np.uint8)
    buffer[4:4 + len(data)] = np.frombuffer(data, np.uint8)
    buffer = np.asarray(multihost_utils.broadcast_one_to_all(buffer))
    size = int(np.frombuffer(buffer[:4].tobytes(), np.uint32)[0])
    return json.loads(buffer[4:4 + size].tobytes().decode())


def to_host(array: Any) -> np.ndarray:
    """A (possibly sharded over processes) array's whole value, on every process."""
    if several() and isinstance(array, jax.Array) and not array.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(array, tiled=True))
    return np.asarray(array)


def put(tree: Any, sharding: Any, cells: int | None = None) -> Any:
    """``tree`` (the same value on every process) as arrays laid out by ``sharding``;
    with ``cells``, each leaf repeated along a new leading axis of that length (on
    several processes a view: each process copies only its own devices' part)."""
    if not several():
        if cells is not None:
            tree = jax.tree.map(lambda a: jnp.broadcast_to(a, (cells, *jnp.shape(a))), tree)
        return jax.device_put(tree, sharding)

    def host(value: Any) -> Any:
        value = np.asarray(value)
        return value if cells is None else np.broadcast_to(value, (cells, *value.shape))

    def one(leaf: Any) -> Any:
        if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
            impl = jax.random.key_impl(leaf)
            data = host(jax.random.key_data(leaf))
            data = jax.make_array_from_callback(data.shape, sharding, lambda i: data[i])
            return jax.jit(lambda d: jax.random.wrap_key_data(d, impl=impl),
                           out_shardings=sharding)(data)
        value = host(leaf)
        return jax.make_array_from_callback(value.shape, sharding, lambda i: value[i])

    return jax.tree.map(one, tree)


def barrier(name: str) -> None:
    """Waits until every process gets here."""
    if several():
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
