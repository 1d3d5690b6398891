"""Flax linen models in the runner: ``from_linen(module, example)``.

Most existing Flax code is linen. :func:`from_linen` turns a linen module into what a
:class:`wdchain.ablate.Task` takes, a factory ``rngs -> nnx.Module``, through Flax's own
bridge (``nnx.bridge.ToNNX``): the linen ``params`` become ``nnx.Param`` (optimised and
decayed by name, as in linen: ``Dense_0/kernel`` decayed, ``bias`` and ``scale`` not),
``batch_stats`` become ``nnx.BatchStat`` (carried through training, updated in place),
and the module's train flag follows the runner's ``train()`` / ``eval()``:

- training: ``module.apply(variables, x, train=True, mutable=["batch_stats"],
  rngs={"dropout": …})``, the Dropout key drawn from a stream held in the model (so a
  seed changes it, and it advances every step);
- evaluation: ``module.apply(variables, x, train=False)``.

``train`` names the call's flag (``"train"``, as in the Flax examples); for a module
whose flag means the opposite (``deterministic=True`` in evaluation) give
``deterministic="deterministic"`` instead; a module whose ``__call__`` has neither is
called with ``x`` alone.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
from flax import linen, nnx
from flax.nnx import bridge


class LinenModel(nnx.Module):
    """A linen module held as an NNX module (see :func:`from_linen`)."""

    def __init__(self, module: linen.Module, example: Any, rngs: nnx.Rngs, *,
                 train: str | None, deterministic: str | None):
        self.train_flag = train
        self.deterministic_flag = deterministic
        self.deterministic = False  # nnx's train() / eval() set this
        streams = nnx.Rngs(params=rngs.params(), dropout=rngs.dropout())
        self.linen = bridge.ToNNX(module, rngs=streams)
        self.linen.lazy_init(np.asarray(example), **self._flags(training=False))
        has_stats = bool(nnx.to_flat_state(nnx.state(self.linen, nnx.BatchStat)))
        self.mutable = ["batch_stats"] if has_stats else []

    def _flags(self, *, training: bool) -> dict[str, Any]:
        flags: dict[str, Any] = {}
        if self.train_flag is not None:
            flags[self.train_flag] = training
        if self.deterministic_flag is not None:
            flags[self.deterministic_flag] = not training
        return flags

    def __call__(self, x: Any) -> Any:
        training = not self.deterministic
        mutable: Any = self.mutable if training and self.mutable else False
        return self.linen(x, mutable=mutable, **self._flags(training=training))


def from_linen(module: linen.Module, example: Any, *, train: str | None = "train",
               deterministic: str | None = None) -> Callable[[nnx.Rngs], nnx.Module]:
    """A linen module as a Task's model: a factory ``rngs -> nnx.Module``.

    Args:
      module: a ``flax.linen.Module`` instance, e.g. ``CNN()``.
      example: an input batch (a few examples suffice) to initialise the variables, as
        linen's ``init`` needs one.
      train: the name of the module's boolean call argument that is True in training
        (``train`` in the Flax examples), or None. Dropped when ``__call__`` has no such
        argument.
      deterministic: the name of a call argument that is True in evaluation
        (``deterministic``), or None.

    Returns:
      ``rngs -> nnx.Module``: the variables are initialised from ``rngs`` (a seed
      changes them and the Dropout stream); ``batch_stats`` are updated in training.

    Example:
      >>> import jax.numpy as jnp
      >>> class Net(linen.Module):
      ...     @linen.compact
      ...     def __call__(self, x, train: bool):
      ...         x = linen.BatchNorm(use_running_average=not train)(linen.Dense(8)(x))
      ...         x = linen.Dropout(0.1, deterministic=not train)(linen.relu(x))
      ...         return linen.Dense(3)(x)
      >>> model = from_linen(Net(), jnp.ones((2, 4)))(nnx.Rngs(0))
      >>> model(jnp.ones((5, 4))).shape
      (5, 3)
    """
    if not isinstance(module, linen.Module):
        raise TypeError(f"from_linen: module must be a flax.linen.Module instance, got "
                        f"{module!r}")
    try:
        parameters = inspect.signature(module.__call__).parameters
    except (TypeError, ValueError):  # pragma: no cover - linen modules have a signature
        parameters = {}  # type: ignore[assignment]
    flags = {name: (value if value in parameters else None)
             for name, value in (("train", train), ("deterministic", deterministic))}

    def model(rngs: nnx.Rngs) -> nnx.Module:
        return LinenModel(module, example, rngs, train=flags["train"],
                          deterministic=flags["deterministic"])

    model.__name__ = type(module).__name__
    return model
