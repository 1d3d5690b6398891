"""The named types of wdchain's signatures (as optax's ``base`` names its own).

They are aliases for reading: a ``Params`` is any pytree of arrays, a ``Mask`` what
every ``mask=`` argument takes, an ``Options`` dict a preconditioner's options by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union

import optax

Params = Any
"""A pytree of arrays: the parameters (or anything shaped like them)."""

Updates = Any
"""A pytree of arrays shaped like the params: gradients or updates."""

ScalarOrSchedule = Union[float, Any, Callable[[Any], Any]]
"""A number, a JAX scalar (possibly traced) or a schedule of the step count."""

Mask = Union[None, Any, Callable[[Params], Any]]
"""None (every float leaf), a pytree of booleans that is a prefix of the params
(True = decay), or a callable of the params returning one."""

Options = dict[str, Any]
"""A preconditioner's options by name, defaults filled in (``{"betas": ..., "eps": ...}``)."""

Transforms = tuple[optax.GradientTransformation, ...]
"""The transforms that fill one slot of a chain, in order."""

Factory = Callable[..., Union[optax.GradientTransformation, Transforms]]
"""``factory(**options)`` → the preconditioner slot's transform(s)."""

OptionsCheck = Callable[[str, Options], None]
"""``check(where, options)``: raises a ValueError naming ``where``, the option, its value
and the fix."""

SlotFactory = Callable[[Options], Union[optax.GradientTransformation, Transforms]]
"""``slot(options)`` → the transform(s) of an extra slot (``inside``, ``tail``)."""

LearningRateFn = Callable[[Any, Options], Any]
"""``learning_rate(lr, options)`` → the lr_t the learning-rate step uses."""

SecondMomentFn = Callable[[tuple[Any, ...], Options], Any]
"""``second_moment(states, options)`` → the tree of the statistic whose square root
divides the step, read from the preconditioner slot's new states."""

WrapFn = Callable[[optax.GradientTransformation, Options, Any], optax.GradientTransformation]
# eval_params(opt_state, params) -> the parameters to evaluate a model at (an average).
EvalParamsFn = Callable[[Any, Any], Any]
"""``wrap(tx, options, lr)`` → a transformation that wraps the whole built chain."""
