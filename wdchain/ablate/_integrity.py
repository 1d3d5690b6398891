"""Checksums of a checkpoint's arrays, so that a damaged checkpoint is never resumed.

Each leaf's bits are read as 32-bit words, mixed with their position and summed modulo
2³² inside one jitted program: integer arithmetic, so the sum does not depend on the
order of the reduction or on how the arrays are sharded, and every process of a
multi-process run computes the same numbers. A flipped bit changes the sum of its leaf.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _words(leaf: jax.Array) -> jax.Array:
    """The leaf's bits as a flat uint32 vector (one word per 1-, 2- or 4-byte entry)."""
    if leaf.dtype == jnp.bool_:
        leaf = leaf.astype(jnp.uint8)
    size = jnp.dtype(leaf.dtype).itemsize
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[size]
    return jax.lax.bitcast_convert_type(leaf, unsigned).astype(jnp.uint32).ravel()


@jax.jit
def _checksums(leaves: list[jax.Array]) -> jax.Array:
    sums = []
    for leaf in leaves:
        words = _words(leaf)
        index = jnp.arange(words.size, dtype=jnp.uint32)
        mixed = (words ^ (index * jnp.uint32(0x9E3779B9))) * jnp.uint32(0x85EBCA6B)
        sums.append(jnp.sum(mixed ^ (mixed >> 13), dtype=jnp.uint32))
    return jnp.stack(sums) if sums else jnp.zeros(0, jnp.uint32)


def checksums(leaves: list[Any]) -> list[int]:
    """One 32-bit checksum per leaf (plain arrays: PRNG keys as their key data)."""
    result = _checksums(list(leaves))
    return [int(v) for v in np.asarray(result.addressable_data(0))]
