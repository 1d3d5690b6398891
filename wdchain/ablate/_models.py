"""How the runner holds a model: its structure, and how it is called.

**Structure.** Every seed's model must have the same variables as seed 0's, since one
compiled program trains them all. Two models are the same when their variables have the
same paths, types, shapes and dtypes (:func:`structure`); other attributes do not count
(Flax's MNIST CNN keeps ``functools.partial(nnx.avg_pool, ...)`` as an attribute, and two
``partial`` objects never compare equal). A real difference is named, with the seeds.

**Calls.** A loss calls ``model(x)``. Models in the Flax examples' style take their
Dropout RNGs as an argument, ``model(x, rngs)``; for those (or for any ``Task.call``) the
loss is handed a :class:`Called` model, whose ``__call__`` passes the step's ``rngs``
and whose other attributes are the module's.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx

Structure = tuple[tuple[str, str, tuple[int, ...], str], ...]


def structure(*states: Any) -> Structure:
    """(path, variable type, shape, dtype) of every variable in ``states``, sorted."""
    entries = []
    for state in states:
        for path, variable in nnx.to_flat_state(state):
            value = variable.get_value() if hasattr(variable, "get_value") else variable.value
            entries.append(("/".join(map(str, path)), type(variable).__name__,
                            tuple(np.shape(value)), str(getattr(value, "dtype", type(value)))))
    return tuple(sorted(entries))


def first_difference(expected: Structure, got: Structure) -> str:
    """The first variable that differs between two structures, in words."""
    mine = {entry[0]: entry[1:] for entry in expected}
    theirs = {entry[0]: entry[1:] for entry in got}
    for path in sorted(set(mine) | set(theirs)):
        a, b = mine.get(path), theirs.get(path)
        if a == b:
            continue
        if a is None:
            return f"{path} is new ({_entry(b)})"
        if b is None:
            return f"{path} is missing (seed 0: {_entry(a)})"
        return f"{path} is {_entry(b)}, seed 0's is {_entry(a)}"
    return "the variables are the same"


def _entry(entry: Any) -> str:
    kind, shape, dtype = entry
    return f"{kind} of shape {shape}, {dtype}"


def wants_rngs(model: Any) -> bool:
    """Whether ``model.__call__`` takes an ``rngs`` argument (the Flax examples' style)."""
    try:
        parameters = inspect.signature(type(model).__call__).parameters
    except (TypeError, ValueError):
        return False
    return "rngs" in parameters


def pass_rngs(model: Any, x: Any, rngs: Any) -> Any:
    """The default call of a model that takes its RNGs: ``model(x, rngs=rngs)``."""
    return model(x, rngs=rngs)


CallFn = Callable[[Any, Any, Any], Any]


def call_for(model: Any, call: CallFn | None) -> CallFn | None:
    """The call to use: the Task's, ``pass_rngs`` for a model that asks, else None."""
    if call is not None:
        return call
    return pass_rngs if wants_rngs(model) else None


class Called:
    """A model as a loss sees it when it is called with the step's RNGs.

    ``called(x)`` is ``call(module, x, rngs)``; every other attribute is the module's.
    """

    def __init__(self, module: nnx.Module, call: CallFn, rngs: Any):
        self.module, self._call, self._rngs = module, call, rngs

    def __call__(self, x: Any) -> Any:
        return self._call(self.module, x, self._rngs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.module, name)


def as_called(module: nnx.Module, call: CallFn | None, key: jax.Array | None) -> Any:
    """What the loss receives: the module, or a :class:`Called` one with ``nnx.Rngs(key)``
    (``rngs=None`` when ``key`` is None, in evaluation)."""
    if call is None:
        return module
    return Called(module, call, None if key is None else nnx.Rngs(key))

