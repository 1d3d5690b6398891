"""Construction-time checks of hyperparameters.

Only concrete numbers are checked (Python numbers, NumPy scalars, concrete JAX
scalars). Traced values and schedules pass through untouched: a jitted or vmapped
grid of hyperparameters is the caller's responsibility, and branching on a traced
value is impossible anyway.

Every error is a ``ValueError`` that names the function and the argument, shows the
value and states the valid range, e.g.::

    adam: betas[0] must be in [0, 1), got 1.5
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def concrete_number(value: Any) -> float | None:
    """Returns ``value`` as a float if it is a concrete real scalar, else None.

    Schedules (callables), tracers and non-scalar arrays give None: they cannot be
    checked at construction.
    """
    if isinstance(value, _Off):
        return 0.0
    if isinstance(value, bool) or callable(value) or isinstance(value, jax.core.Tracer):
        return None
    if isinstance(value, (int, float, np.number)):
        return float(value)
    if isinstance(value, (np.ndarray, jax.Array)) and value.ndim == 0:
        real = jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(
            value.dtype, jnp.integer
        )  # bfloat16 included, which NumPy does not count as a number
        if real:
            return float(value)
    return None


class _Off:
    """0 as a default that ``optax.inject_hyperparams`` leaves alone (it injects every
    int or float, and would turn a default ``momentum=0`` into an array that switches a
    momentum buffer on under ``jit``). It compares, converts and shows as 0.0."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "0.0"

    def __float__(self) -> float:
        return 0.0

    def __eq__(self, other: object) -> bool:
        return other == 0

    def __hash__(self) -> int:
        return hash(0.0)

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "OFF"  # pickled and copied as the one instance


OFF: Any = _Off()


def is_static_zero(value: Any) -> bool:
    """True for a Python or NumPy number equal to zero: it switches a chain slot off.

    A JAX array never does, even a concrete one: ``inject_hyperparams`` hands ``init``
    a concrete array and ``update`` a traced one, so a slot switched on by an array
    must not depend on its value, or the state's structure would change.
    """
    return isinstance(value, _Off) or (
        isinstance(value, (int, float, np.number))
        and not isinstance(value, (bool, np.bool_))
        and value == 0
    )


def is_concrete_zero(value: Any) -> bool:
    """True for a number or a concrete (not traced) scalar array equal to zero."""
    number = concrete_number(value)
    return number is not None and number == 0


def _interval(low: float | None, high: float | None, high_open: bool) -> str:
    if high is None:
        return f"[{low:g}, inf)"
    return f"[{low:g}, {high:g}{')' if high_open else ']'}"


def check_range(
    where: str,
    name: str,
    value: Any,
    *,
    low: float = 0.0,
    high: float | None = None,
    high_open: bool = False,
) -> None:
    """Checks ``low <= value (< or <=) high`` and finiteness for concrete numbers.

    Traced values are skipped; anything else that is not a real scalar is refused.
    """
    if isinstance(value, jax.core.Tracer):
        return
    number = concrete_number(value)
    if number is None:
        raise ValueError(
            f"{where}: {name} must be a real number or a scalar JAX array, got {value!r}"
        )
    valid = _interval(low, high, high_open)
    if not math.isfinite(number):
        raise ValueError(f"{where}: {name} must be a finite number in {valid}, got {value!r}")
    too_high = high is not None and (number >= high if high_open else number > high)
    if number < low or too_high:
        raise ValueError(f"{where}: {name} must be in {valid}, got {value!r}")


def check_betas(where: str, betas: Any) -> tuple[Any, Any]:
    """Checks a ``(beta1, beta2)`` pair: two values, each in [0, 1)."""
    try:
        beta1, beta2 = betas
    except (TypeError, ValueError):
        raise ValueError(
            f"{where}: betas must be a pair (beta1, beta2), each in [0, 1), got {betas!r}"
        ) from None
    check_range(where, "betas[0]", beta1, high=1.0, high_open=True)
    check_range(where, "betas[1]", beta2, high=1.0, high_open=True)
    return beta1, beta2


def check_triple(where: str, name: str, value: Any, members: str, *, low: float = 0.0,
                 high: float | None = None, high_open: bool = False) -> tuple[Any, Any, Any]:
    """Checks that ``value`` unpacks into three numbers (named ``members`` in the message),
    each in range as :func:`check_range` checks it; returns the three."""
    try:
        first, second, third = value
    except (TypeError, ValueError):
        valid = "" if math.isinf(low) and high is None else (
            f", each in {_interval(low, high, high_open)}")
        raise ValueError(
            f"{where}: {name} must be three numbers ({members}){valid}, got {value!r}"
        ) from None
    for i, member in enumerate((first, second, third)):
        check_range(where, f"{name}[{i}]", member, low=low, high=high, high_open=high_open)
    return first, second, third


def check_betas3(where: str, betas: Any) -> tuple[Any, Any, Any]:
    """Checks a ``(beta1, beta2, beta3)`` triple: three values, each in [0, 1)."""
    return check_triple(where, "betas", betas, "beta1, beta2, beta3", high=1.0, high_open=True)


def check_flag(where: str, name: str, value: Any) -> None:
    """Checks that a switch is a Python bool (not a traced value or a number)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{where}: {name} must be True or False, got {value!r}")


def check_float_dtype(where: str, name: str, dtype: Any) -> None:
    """Checks a dtype to hold statistics in: None or a floating dtype."""
    if dtype is None:
        return
    if isinstance(dtype, (jax.Array, np.ndarray)):
        raise ValueError(
            f"{where}: {name} must be a floating dtype (e.g. jnp.bfloat16) or None, got "
            f"an array, {dtype!r}. {injected_hint(name, 'a dtype')}"
        )
    try:
        floating = jnp.issubdtype(jnp.dtype(dtype), jnp.floating)
    except (TypeError, ValueError):
        floating = False
    if not floating:
        raise ValueError(
            f"{where}: {name} must be a floating dtype (e.g. jnp.bfloat16) or None, "
            f"got {dtype!r}"
        )


def is_whole_number(value: Any) -> bool:
    """A Python or NumPy integer (not a bool)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_positive_number(where: str, name: str, value: Any) -> None:
    """Checks a number (or JAX scalar) > 0; a schedule is refused."""
    number = concrete_number(value)
    if callable(value) or (number is not None and not number > 0):
        raise ValueError(f"{where}: {name} must be a number > 0, not a schedule, got {value!r}")
    check_schedule_or_number(where, name, value)


def check_schedule_or_number(where: str, name: str, value: Any) -> None:
    """Checks a value that may be a number, a JAX scalar or a schedule (callable)."""
    if callable(value):
        return
    if isinstance(value, bool) or value is None:
        raise ValueError(
            f"{where}: {name} must be a number, a JAX scalar or a schedule, got {value!r}"
        )
    if isinstance(value, (np.ndarray, jax.Array)) and value.ndim != 0:
        raise ValueError(
            f"{where}: {name} must be a scalar, got an array of shape {value.shape}"
        )
    check_range(where, name, value)


def injected_hint(name: str, what: str) -> str:
    """Why a non-number option arrived as an array, and the two ways out."""
    return (
        f"This is what optax.inject_hyperparams does to {what}: it takes every callable "
        "argument for a schedule of the step count, and every number for a "
        "hyperparameter, and passes the factory an array in its place. Use "
        f"wdchain.inject_hyperparams, which leaves {name} alone, or "
        f"optax.inject_hyperparams(..., static_args=({name!r},))."
    )


def check_mask(where: str, mask: Any, *, resolved: bool = False, name: str = "mask") -> None:
    """A mask is None, a callable of the params, or a pytree of booleans.

    A mask given to a factory (not ``resolved`` from a callable) may not be a single
    boolean or scalar array for the whole tree: that is what a callable mask turns
    into under ``optax.inject_hyperparams``, which calls it with the step count and
    would silently decay every leaf (or none).
    """
    if mask is None or callable(mask):
        return
    if not resolved and (isinstance(mask, (bool, np.bool_)) or np.ndim(mask) == 0):
        if isinstance(mask, (bool, np.bool_, np.ndarray, jax.Array, np.generic)):
            raise ValueError(
                f"{where}: {name} must be a pytree of booleans (True = decay this leaf) or "
                f"a callable of the params, got a single value for the whole tree, "
                f"{mask!r}. {injected_hint(name, 'a callable mask')} (To decay every "
                f"leaf, leave {name}=None; to decay none, set weight_decay=0.)"
            )
    for leaf in jax.tree.leaves(mask):
        if not (isinstance(leaf, (bool, np.bool_)) or _is_bool_array(leaf)):
            hint = ""
            if isinstance(leaf, (jax.Array, np.ndarray)) and np.ndim(leaf) == 0:
                hint = " " + injected_hint(name, "a callable mask")
            raise ValueError(
                f"{where}: {name} leaves must be booleans (True = decay this leaf), "
                f"got {leaf!r}.{hint}"
            )


def _is_bool_array(leaf: Any) -> bool:
    return isinstance(leaf, (np.ndarray, jax.Array)) and leaf.dtype == np.bool_

