"""The learning-rate step and the sign flip of ``maximize``."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from wdchain import _recipe, _tree, _validate


class ScaleByLearningRateState(NamedTuple):
    # int32 scalar: updates so far, the schedule's step. Every wdchain optimizer has
    # exactly one learning-rate step, so this is the optimizer's one field named
    # ``count`` (the other transforms call theirs ``step``), the one
    # ``optax.tree.get(state, "count")`` finds. (The field shadows tuple.count.)
    count: jax.Array  # type: ignore[assignment]


def scale_by_learning_rate(learning_rate: Any) -> optax.GradientTransformation:
    r"""The descent step: multiplies the updates by minus the learning rate.

    .. math::

        u \leftarrow -\alpha_t\, u

    with :math:`\alpha_t` = ``learning_rate`` or, for a schedule, ``learning_rate(t)``
    where t counts from 0 on the first update (a torch LR scheduler's initial lr is
    used on step 1 too). Unlike ``optax.scale_by_learning_rate``, the state has the
    same structure for a constant and a schedule, and the product is formed in at
    least float32, so a bfloat16 update is not scaled by a bfloat16-rounded lr.

    Args:
      learning_rate: α ≥ 0: a number, a JAX scalar or a schedule of the step count.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_learning_rate(0.5)
      >>> updates, _ = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
      >>> updates
      Array([-1.], dtype=float32)
    """
    _validate.check_schedule_or_number("scale_by_learning_rate", "learning_rate", learning_rate)

    def init_fn(params: Any) -> ScaleByLearningRateState:
        _tree.require_real("scale_by_learning_rate", params)
        return ScaleByLearningRateState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates: Any, state: ScaleByLearningRateState, params: Any = None):
        del params
        step_size = -_tree.value_at(learning_rate, state.count)

        def scale(u: jax.Array) -> jax.Array:
            if not _tree.is_float(u):
                return jnp.zeros_like(u)
            return _tree.cast(step_size * _tree.cast(u, _tree.compute_dtype(u.dtype)), u.dtype)

        next_state = ScaleByLearningRateState(count=optax.safe_increment(state.count))
        return jax.tree.map(scale, updates), next_state

    tx = optax.GradientTransformation(init_fn, update_fn)
    step = _recipe.Step("lr", _recipe.LEARNING_RATE, (("α", learning_rate),))
    return _recipe.label(tx, step)


def maximize() -> optax.GradientTransformation:
    r"""Negates the gradient, to climb the objective: :math:`u \leftarrow -u`.

    Placed first in a chain, before any decay, as torch's ``maximize=True``; weight
    decay then still shrinks the parameters.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = maximize()
      >>> tx.update(jnp.array([1.0, -2.0]), tx.init(None))[0]
      Array([-1.,  2.], dtype=float32)
    """

    def init_fn(params: Any) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update_fn(updates: Any, state: optax.EmptyState, params: Any = None):
        del params
        return jax.tree.map(lambda u: -u if _tree.is_float(u) else u, updates), state

    tx = optax.GradientTransformation(init_fn, update_fn)
    return _recipe.label(tx, _recipe.Step("maximize", _recipe.SIGN))
