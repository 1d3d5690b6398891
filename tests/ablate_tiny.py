"""A tiny synthetic classification task for the runner's fault and input tests."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wdchain.ablate import Task


class TinyNet(nnx.Module):
    """8 → width → ReLU → outputs."""

    def __init__(self, rngs: nnx.Rngs, width: int = 16, outputs: int = 3,
                 dtype: jnp.dtype = jnp.float32):
        self.hidden = nnx.Linear(8, width, rngs=rngs, param_dtype=dtype, dtype=dtype)
        self.out = nnx.Linear(width, outputs, rngs=rngs, param_dtype=dtype, dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(nnx.relu(self.hidden(x)))


def splits(seed: int = 0, n: int = 160) -> tuple:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    y = ((x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0.5)).astype(np.int32)
    return (x[:96], y[:96]), (x[96:128], y[96:128]), (x[128:], y[128:])


def tiny_task(epochs: int = 1, model=TinyNet, **changes) -> Task:
    train, validation, test = splits()
    task = Task(model, train, test, validation=validation, batch_size=16, epochs=epochs,
                name="tiny")
    return dataclasses.replace(task, **changes)


def quiet(line: str) -> None:
    del line


ARGS = {"arms": ["adamw"], "lrs": [1e-2], "weight_decays": [1e-3], "log": quiet}
