"""Recipes: what a wdchain transformation is made of, for ``describe`` and logs.

Every wdchain factory labels the transformation it returns with a ``Step``; ``chain``
concatenates the steps of its parts. The label lives in a weak map keyed by the
transformation's ``init`` function, so the returned object is a plain
``optax.GradientTransformation`` and labels vanish with it.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import jax
import optax

from wdchain import _validate

# Roles, in the order they sit in a chain.
SIGN = "sign"
L2 = "l2"
PRECONDITIONER = "preconditioner"
DECOUPLED = "decoupled"
LEARNING_RATE = "learning_rate"
INDEPENDENT = "independent"


@dataclasses.dataclass(frozen=True)
class Step:
    """One transform of a chain: its short name, its role and its hyperparameters.

    ``decay_scale`` is set on decay steps placed after the learning rate: how the
    decay is scaled there (``"η_t"`` for the schedule multiplier, ``"1"`` for none).
    """

    name: str
    role: str
    hyperparams: tuple[tuple[str, Any], ...] = ()
    decay_scale: str | None = None

    def __str__(self) -> str:
        args = [f"{key}={format_value(value)}" for key, value in self.hyperparams]
        if self.decay_scale == "η_t":  # the schedule multiplier, shown: it sets the arm
            args.append("×η_t")
        return f"{self.name}({', '.join(args)})" if args else self.name


_RECIPES: weakref.WeakKeyDictionary[Any, tuple[Step, ...]] = weakref.WeakKeyDictionary()


def label(tx: optax.GradientTransformation, *steps: Step) -> optax.GradientTransformation:
    """Records ``steps`` as the recipe of ``tx`` and returns ``tx``.

    A transformation labelled with no step (a decay of exactly zero, say) is shown as
    nothing in the recipe.
    """
    _RECIPES[tx.init] = steps
    return tx


def recipe(tx: optax.GradientTransformation) -> tuple[Step, ...] | None:
    """The steps of ``tx``, or None when wdchain did not build it."""
    return _RECIPES.get(tx.init)


def chain(*transforms: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """``optax.chain`` that keeps the recipe of its parts.

    A part wdchain did not build appears in the recipe under its function's name. On
    ``init`` the chain warns once (``wdchain.DecayPrecisionWarning``) when a decay step
    is below the resolution of a low-precision parameter and would be lost.
    """
    steps: list[Step] = []
    for tx in transforms:
        part = recipe(tx)
        if part is None:
            part = (Step(getattr(tx.update, "__qualname__", "transform").split(".")[0], ""),)
        steps.extend(part)
    inner = optax.chain(*transforms)

    def init_fn(params: Any) -> Any:
        with outermost_init(chained, params):
            return inner.init(params)

    chained = optax.GradientTransformationExtraArgs(init_fn, inner.update)
    return label(chained, *steps)


# --------------------------------------------------------------------------------------
# Checks on init, run once by the outermost wdchain optimizer. They are registered by
# the modules that define them (the decay-precision check, in _precision), so this
# module imports none of them.

InitCheck = Callable[[optax.GradientTransformation, Any], Any]
_INIT_CHECKS: list[InitCheck] = []

# True while an outer optimizer's init runs: its recipe holds every inner step, so
# the inner chains need not check (and warn) again.
_INSIDE_INIT: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "wdchain_inside_init", default=False
)


def register_init_check(check: InitCheck) -> InitCheck:
    """Adds ``check(tx, params)`` to what the outermost wdchain ``init`` runs."""
    if check not in _INIT_CHECKS:
        _INIT_CHECKS.append(check)
    return check


@contextlib.contextmanager
def outermost_init(tx: optax.GradientTransformation, params: Any) -> Iterator[None]:
    """Runs the registered init checks on ``tx`` unless an enclosing init already did."""
    if not _INSIDE_INIT.get():
        for check in _INIT_CHECKS:
            check(tx, params)
    token = _INSIDE_INIT.set(True)
    try:
        yield
    finally:
        _INSIDE_INIT.reset(token)


def nothing() -> optax.GradientTransformation:
    """A fresh identity transformation with an empty recipe (an unused chain slot).

    ``optax.identity()`` shares one ``init`` function between instances, so it cannot
    carry a label of its own.
    """

    def init_fn(params: Any) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update_fn(updates: Any, state: optax.EmptyState, params: Any = None):
        del params
        return updates, state

    return label(optax.GradientTransformation(init_fn, update_fn))


def format_value(value: Any) -> str:
    """A short, readable rendering of a hyperparameter."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, tuple):
        return "(" + ", ".join(format_value(v) for v in value) + ")"
    if isinstance(value, jax.core.Tracer):
        return "traced"
    if callable(value):
        return getattr(value, "wdchain_name", "schedule")
    if isinstance(value, str):
        return value
    number = _validate.concrete_number(value)
    if number is not None:
        return f"{number:g}"
    return repr(value)
