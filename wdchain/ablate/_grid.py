"""One arm's learning-rate × weight-decay grid as one jitted, vmapped program.

Every cell starts from the same initial weights and sees the same batches in the same
order; cells differ only by their (lr, λ), which enter the compiled program as traced
values. The model is split once (``nnx.split``) so that training is a pure function
of the parameters; ``jax.vmap`` runs the cells side by side and ``lax.scan`` runs the
steps of an epoch, so a grid of any size compiles once per arm.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import wdchain
from wdchain.ablate._arms import Arm
from wdchain.ablate._task import MODELS, Digits

BATCH_SIZE = 64


class CellMetrics(NamedTuple):
    """Final metrics, one entry per cell."""

    train_loss: np.ndarray
    test_loss: np.ndarray
    test_accuracy: np.ndarray


def cosine_multiplier(total_steps: int) -> Callable[[Any], jax.Array]:
    """η(t) = (1 + cos(π·t / T)) / 2: the schedule's multiplier, 1 at the start, 0 at T.

    Example:
      >>> eta = cosine_multiplier(10)
      >>> float(eta(0)), float(eta(5)), float(eta(10))
      (1.0, 0.5, 0.0)
    """

    def eta(count: Any) -> jax.Array:
        progress = jnp.minimum(count, total_steps) / total_steps
        return 0.5 * (1.0 + jnp.cos(jnp.pi * progress))

    eta.wdchain_name = f"cosine(T={total_steps})"  # type: ignore[attr-defined]
    return eta


class GridProgram:
    """Trains one arm on the digits for every (lr, λ) cell it is given, side by side.

    Build it once; :meth:`run` compiles once per number of cells.
    """

    def __init__(self, arm: Arm, model: str, data: Digits, *, epochs: int, seed: int):
        self.arm = arm
        self.data = data
        self.epochs = epochs
        self.seed = seed
        self.steps_per_epoch = len(data.x_train) // BATCH_SIZE
        self.schedule = cosine_multiplier(epochs * self.steps_per_epoch)
        # The models hold only nnx.Param variables: params is their whole state.
        graphdef, self.params = nnx.split(MODELS[model](nnx.Rngs(seed)), nnx.Param)
        make_tx = self.optimizer

        def logits_of(params: Any, x: jax.Array) -> jax.Array:
            return nnx.merge(graphdef, params)(x)

        def loss_of(params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
            return optax.softmax_cross_entropy_with_integer_labels(logits_of(params, x), y).mean()

        def init_cell(lr: jax.Array, weight_decay: jax.Array) -> Any:
            return make_tx(lr, weight_decay).init(self.params)

        def train_cell(params, opt_state, lr, weight_decay, x_batches, y_batches):
            tx = make_tx(lr, weight_decay)

            def step(carry, batch):
                params, opt_state = carry
                grads = jax.grad(loss_of)(params, *batch)
                updates, opt_state = tx.update(grads, opt_state, params)
                return (optax.apply_updates(params, updates), opt_state), None

            (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), (x_batches, y_batches))
            return params, opt_state

        def evaluate_cell(params: Any, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
            logits = logits_of(params, x)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, jnp.mean(jnp.argmax(logits, axis=-1) == y)

        self._init = jax.jit(jax.vmap(init_cell))
        self._epoch = jax.jit(jax.vmap(train_cell, in_axes=(0, 0, 0, 0, None, None)))
        self._evaluate = jax.jit(jax.vmap(evaluate_cell, in_axes=(0, None, None)))

    def optimizer(self, lr: Any, weight_decay: Any) -> optax.GradientTransformation:
        """The arm's optimizer for one cell: cosine schedule, biases not decayed."""
        return self.arm.optimizer(lr, weight_decay, self.schedule, wdchain.decay_mask)

    def batches(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """The epoch's shuffled batches, (steps, batch, ...); the last partial batch is dropped."""
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.data.x_train))
        order = order[: self.steps_per_epoch * BATCH_SIZE].reshape(self.steps_per_epoch, -1)
        return self.data.x_train[order], self.data.y_train[order]

    def run(
        self,
        lrs: Any,
        weight_decays: Any,
        on_epoch: Callable[[], None] | None = None,
    ) -> CellMetrics:
        """Trains the cells ``(lrs[i], weight_decays[i])`` for all epochs; final metrics."""
        lrs = jnp.asarray(lrs, jnp.float32)
        weight_decays = jnp.asarray(weight_decays, jnp.float32)
        cells = lrs.shape[0]
        params = jax.tree.map(lambda p: jnp.broadcast_to(p, (cells, *p.shape)), self.params)
        opt_state = self._init(lrs, weight_decays)
        for epoch in range(self.epochs):
            params, opt_state = self._epoch(params, opt_state, lrs, weight_decays,
                                            *self.batches(epoch))
            jax.block_until_ready(params)
            if on_epoch is not None:
                on_epoch()
        train_loss, _ = self._evaluate(params, self.data.x_train, self.data.y_train)
        test_loss, test_accuracy = self._evaluate(params, self.data.x_test, self.data.y_test)
        return CellMetrics(*(np.asarray(a, np.float64) for a in (train_loss, test_loss,
                                                                 test_accuracy)))
