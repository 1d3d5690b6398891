"""One cell's training step: the Task's recipe around the arm's optimizer.

- the optimizer: ``optax.chain(clip_by_global_norm(clip_norm), arm)`` when the Task
  clips (the clip sees the loss's gradient, before an ``l2`` arm adds λθ), the arm built
  with the Task's schedule η(t), decay mask and moments' dtype;
- the gradient: of the Task's loss, with the model called as the Task says (the step's
  ``nnx.Rngs`` for a model that takes them), averaged over ``accumulate`` micro-batches.

Used by the grid program and by :func:`wdchain.ablate.trace`, so both train alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import wdchain
from wdchain.ablate._arms import Arm
from wdchain.ablate._models import CallFn, as_called
from wdchain.ablate._task import Task
from wdchain.registry import REGISTRY

MOMENT_DTYPES = ("mu_dtype", "nu_dtype")


def moment_options(task: Task, arm: Arm) -> dict[str, Any]:
    """The arm's moment-dtype options for ``task.moments_dtype`` (refused if it has none)."""
    if task.moments_dtype is None:
        return {}
    names = [n for n in MOMENT_DTYPES if n in REGISTRY[arm.preconditioner].options]
    if not names:
        having = [name for name, entry in REGISTRY.items()
                  if any(n in entry.options for n in MOMENT_DTYPES)]
        raise ValueError(
            f"Task: moments_dtype={task.moments_dtype!r} but arm {arm.name!r} "
            f"({arm.preconditioner}) has no moments' dtype option; it applies to "
            f"{', '.join(having)}: leave moments_dtype=None for this arm")
    return {name: task.moments_dtype for name in names}


def optimizer(task: Task, arm: Arm, lr: Any, weight_decay: Any,
              schedule: Callable[[Any], jax.Array]) -> optax.GradientTransformation:
    """The arm's optimizer for one cell, with the Task's clipping, mask and moments."""
    mask = wdchain.decay_mask if task.mask is None else task.mask
    tx = arm.optimizer(lr, weight_decay, schedule, mask, **moment_options(task, arm))
    if task.clip_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(task.clip_norm), tx)
    return tx


def split(model: nnx.Module) -> tuple[Any, Any, Any]:
    """(graph, params, everything else) of a module."""
    graph, params, rest = nnx.split(model, nnx.Param, ...)  # type: ignore[misc]
    return graph, params, rest


def gradient(task: Task, graph: Any, call: CallFn | None) -> Callable[..., Any]:
    """``(params, rest, batch, key) -> (loss, grads, rest)`` for one cell.

    ``key`` is the step's PRNG key (used only with a ``call``); with
    ``task.accumulate = k`` the batch is cut into k micro-batches, the gradients and
    losses are averaged, and the other state (BatchNorm, RNG streams) is carried from
    one micro-batch to the next.
    """
    loss_fn = task.loss_fn

    def single(params: Any, rest: Any, batch: Any, key: Any) -> tuple[Any, Any, Any]:
        def loss_of(p: Any) -> tuple[jax.Array, Any]:
            # Fresh Variables for this trace: BatchNorm and RNG streams mutate them.
            model = nnx.merge(graph, p, jax.tree.map(lambda leaf: leaf, rest))
            loss, _ = loss_fn(as_called(model, call, key), batch)
            return loss, split(model)[2]

        (loss, rest), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
        return loss, grads, rest

    k = task.accumulate
    if k == 1:
        return single

    def accumulated(params: Any, rest: Any, batch: Any, key: Any) -> tuple[Any, Any, Any]:
        micro = jax.tree.map(lambda a: a.reshape(k, a.shape[0] // k, *a.shape[1:]), batch)
        keys = None if key is None else jax.random.split(key, k)

        def body(carry: Any, part: Any) -> tuple[Any, None]:
            rest, loss_sum, grad_sum = carry
            loss, grads, rest = single(params, rest, *part)
            return (rest, loss_sum + loss.astype(jnp.float32),
                    jax.tree.map(jnp.add, grad_sum, grads)), None

        start = (rest, jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
        (rest, loss, grads), _ = jax.lax.scan(body, start, (micro, keys))
        return loss / k, jax.tree.map(lambda g: g / k, grads), rest

    return accumulated


def step_keys(seed: int, steps: range) -> jax.Array:
    """The PRNG keys of ``steps`` for ``seed``: fold_in(key(seed), step), one per step."""
    base = jax.random.key(seed)
    return jax.vmap(lambda step: jax.random.fold_in(base, step))(jnp.arange(steps.start,
                                                                              steps.stop))
