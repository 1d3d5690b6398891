"""An opt-in guard against non-finite gradients.

Without a guard, a NaN or Inf in a gradient entry goes where the arithmetic takes
it, as in torch: every wdchain transform is element-wise, so the entry's statistics
(m, v, s, the momentum buffer) become NaN or Inf and stay so (``β·NaN = NaN``, and
an infinite moment gives ``Inf/Inf = NaN`` in the update). That parameter entry is
NaN from then on; the other entries and the step counts go on normally.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from wdchain import _recipe, _validate

NEVER = int(jnp.iinfo(jnp.int32).max)


def skip_nonfinite(
    tx: optax.GradientTransformation, max_consecutive_errors: int | None = None
) -> optax.GradientTransformationExtraArgs:
    r"""Skips every step whose gradients hold a NaN or an Inf.

    .. math::

        (u_t, s_t) = \begin{cases} \text{tx.update}(g_t, s_{t-1}, \theta) &
            g_t \text{ finite} \\ (0,\ s_{t-1}) & \text{otherwise} \end{cases}

    A skipped step returns zero updates and leaves the inner state untouched, step
    counts and schedules included: the run equals one in which the skipped steps
    never happened. This is ``optax.apply_if_finite``; its state
    (``optax.ApplyIfFiniteState``) counts the skipped steps in ``total_notfinite``
    (read it with :func:`skipped_steps`) and the current streak in
    ``notfinite_count``.

    The guard checks the incoming gradients only: a transform that makes a NaN from
    finite input (Adagrad with ``eps=0`` on an all-zero entry) is not caught.

    Args:
      tx: the optimizer to guard.
      max_consecutive_errors: None (default): never let a non-finite step through.
        A number n ≥ 0: after n consecutive skipped steps, apply the next non-finite
        one anyway (optax's behaviour, which makes a run that cannot recover fail
        visibly instead of stalling). The int32 streak counter saturates at
        2³¹ − 1, so None is the largest n.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp
      >>> import wdchain
      >>> tx = skip_nonfinite(wdchain.sgd(lr=0.1))
      >>> params = jnp.array([1.0, 2.0])
      >>> state = tx.init(params)
      >>> updates, state = tx.update(jnp.array([jnp.nan, 1.0]), state, params)
      >>> updates, skipped_steps(state)
      (Array([0., 0.], dtype=float32), Array(1, dtype=int32))
    """
    where = "skip_nonfinite"
    if max_consecutive_errors is None:
        limit = NEVER
    else:
        if not _validate.is_whole_number(max_consecutive_errors):
            raise ValueError(
                f"{where}: max_consecutive_errors must be None or an int in "
                f"[0, {NEVER}], got {max_consecutive_errors!r}"
            )
        _validate.check_range(where, "max_consecutive_errors", max_consecutive_errors,
                              high=float(NEVER))
        limit = max_consecutive_errors
    guarded = optax.apply_if_finite(tx, limit)
    inner = _recipe.recipe(tx)
    if inner is None:  # not built by wdchain: leave it unlabelled, so describe says so
        return guarded
    shown = () if limit == NEVER else (("max_consecutive_errors", limit),)
    return _recipe.label(guarded, _recipe.Step("skip_nonfinite", "guard", shown), *inner)


def skipped_steps(state: Any) -> jax.Array:
    """The number of steps :func:`skip_nonfinite` found non-finite so far.

    ``state`` is the guarded optimizer's state (an ``optax.ApplyIfFiniteState``).
    With ``max_consecutive_errors`` set, steps let through after the streak limit
    are counted too.
    """
    if not isinstance(state, optax.ApplyIfFiniteState):
        raise TypeError(
            "skipped_steps: state must be the state of a skip_nonfinite optimizer "
            f"(an optax.ApplyIfFiniteState), got {type(state).__name__}"
        )
    return state.total_notfinite
