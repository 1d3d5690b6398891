"""``step_count``: the number of updates, read from any wdchain state.

Every wdchain transform that needs the step keeps its own counter (the
learning-rate step for its schedule, Adam for its bias correction, each decay step
for its schedule). They count the same updates. Only the learning-rate step's is
named ``count``, and every wdchain optimizer has exactly one learning-rate step, so
``optax.tree.get(state, "count")`` finds one value, as for optax's own optimizers;
the others are named ``step``. :func:`step_count` reads the same value through
wrappers that add counters of their own (``skip_nonfinite``,
``inject_hyperparams``, ``optax.MultiSteps``), ``optax.partition`` (one optimizer
per part) and Flax NNX variables, and falls back to a bare transform's ``step``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import jax
import optax
from flax import nnx

from wdchain._learning_rate import ScaleByLearningRateState

# Where the count is read, best first: the learning-rate step (every optimizer), then
# any other wdchain or optax state with a ``count`` or ``step`` field (a bare
# transform, or an optimizer wdchain did not build), then an untyped ``"count"`` key
# (a state a checkpoint library turned into dicts).
_LEARNING_RATE, _TYPED, _UNTYPED = 0, 1, 2


def _value(node: Any) -> Any:
    return node.get_value() if isinstance(node, nnx.Variable) else node


def _counts(node: Any) -> Iterator[tuple[int, Any]]:
    node = _value(node)
    if isinstance(node, optax.MultiStepsState):  # the inner optimizer's steps only
        yield from _counts(node.inner_opt_state)
        return
    if isinstance(node, ScaleByLearningRateState):
        yield _LEARNING_RATE, _value(node.count)
        return
    if hasattr(node, "_fields"):  # a NamedTuple state
        for name in ("count", "step"):
            if name in node._fields:
                yield _TYPED, _value(getattr(node, name))
        for field in node._fields:
            yield from _counts(getattr(node, field))
    elif isinstance(node, (tuple, list)):
        for child in node:
            yield from _counts(child)
    elif isinstance(node, (Mapping, nnx.State)):
        for key in node:
            if key == "count":
                yield _UNTYPED, _value(node[key])
            else:
                yield from _counts(node[key])


def step_count(state: Any) -> jax.Array:
    """The number of updates the optimizer has made: the step count of its state.

    Works for the state of every wdchain optimizer and transform that counts, also
    inside ``skip_nonfinite`` (skipped steps are not counted), ``inject_hyperparams``
    (optax's or wdchain's), ``optax.chain``, ``optax.partition`` and ``optax.masked``,
    for an ``nnx.Optimizer`` (or its ``opt_state``) and for a state restored as
    dicts. Under ``optax.MultiSteps`` it is the number of optimizer steps, not of
    micro-batches. It is a JAX int32 scalar, so it can be read inside ``jit``; it
    saturates at 2³¹ − 1 as the counts do.

    For a single wdchain optimizer ``optax.tree.get(state, "count")`` gives the same
    value (its learning-rate step's ``count``); under a wrapper with a counter of
    its own, or ``optax.partition`` of two optimizers, it finds several and raises
    ("Found multiple values for 'count'"): this function reads the right one.

    Args:
      state: an optimizer state, or an ``nnx.Optimizer``.

    Returns:
      The count, an int32 scalar array.

    Raises:
      ValueError: if nothing in ``state`` counts steps (e.g. ``sgd``'s state has a
        count, but a bare ``scale_by_adagrad`` state has none).

    Example:
      >>> import jax.numpy as jnp
      >>> import wdchain
      >>> tx = wdchain.adamw(lr=0.1)
      >>> params = jnp.ones(2)
      >>> state = tx.init(params)
      >>> for _ in range(3):
      ...     _, state = tx.update(params, state, params)
      >>> step_count(state)
      Array(3, dtype=int32)
    """
    if isinstance(state, nnx.Optimizer):
        state = state.opt_state
    found = sorted(_counts(state), key=lambda pair: pair[0])  # stable: first in tree order
    if not found:
        raise ValueError(
            f"step_count: this state ({type(_value(state)).__name__}) holds no step count: "
            "give the state of a whole optimizer (every wdchain optimizer counts in its "
            "learning-rate step); a bare scale_by_adagrad, scale_by_rms or maximize "
            "state does not count."
        )
    return found[0][1]
