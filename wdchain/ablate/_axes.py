"""Two axes beyond lr × λ: the training-set size N and the model's width.

``sweep(..., train_sizes=(1000, 2000, 4000, 8000))`` trains every grid once per size,
each on a subset of the seed's training split: the first N examples of one stratified
order of it (:func:`wdchain.ablate._task.stratified_order`, drawn with
``SUBSET_SEED``), so the subsets are nested (the smaller inside the larger), every
class keeps its share, and for a task whose splits do not change with the seed the
subsets are the same in every seed. The validation and test splits are never cut:
every size is selected and reported on the same examples. ``widths=(64, 128, 256)``
builds the model as ``task.model(rngs, width=w)``.

Wang & Aitchison's rule (a fixed best EMA timescale in epochs) predicts, at a fixed lr,
batch and number of epochs, λ* ∝ 1/N; :mod:`wdchain.ablate._scaling` measures it.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from wdchain.ablate._task import Task, stratified_order

AXES = ("train_size", "width")
"""The optional columns of a sweep's rows, in the order they follow ``seed``."""

SUBSET_SEED = 0
"""The training subsets are drawn once with this seed: the same for every seed of a sweep."""


@dataclasses.dataclass(frozen=True)
class Variant:
    """One point of the extra axes: a training-set size and/or a width (None: not swept)."""

    train_size: int | None = None
    width: int | None = None

    def columns(self) -> dict[str, int]:
        """The row's extra columns: only the swept axes."""
        return {axis: value for axis in AXES if (value := getattr(self, axis)) is not None}

    def key(self) -> str:
        """A suffix naming the variant in checkpoints: ``@train_size1000`` ('' without axes)."""
        return "".join(f"@{axis}{value}" for axis, value in self.columns().items())

    def label(self) -> str:
        """How reports name the variant: ``N=1000, width=64`` ('' without extra axes)."""
        names = {"train_size": "N", "width": "width"}
        return ", ".join(f"{names[axis]}={value}" for axis, value in self.columns().items())


def axis_values(name: str, values: Any) -> tuple[int, ...] | None:
    """``values`` as sorted distinct integers ≥ 1, or None; raises naming ``name``."""
    if values is None:
        return None
    items = (values,) if isinstance(values, int | np.integer) else tuple(values)
    if not items or any(isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1
                        for v in items):
        raise ValueError(f"sweep: {name} must be integers ≥ 1 (at least one), got {values!r}")
    return tuple(sorted({int(v) for v in items}))


def variants(train_sizes: tuple[int, ...] | None,
             widths: tuple[int, ...] | None) -> list[Variant]:
    """Every (size, width) pair; one plain variant when neither axis is swept."""
    return [Variant(size, width) for size in (train_sizes or (None,))
            for width in (widths or (None,))]


def nested_subset(labels: np.ndarray, size: int) -> np.ndarray:
    """The sorted indices of the training subset of ``size`` examples (see the module).

    Example:
      >>> labels = np.array([0, 1] * 10)
      >>> small, large = nested_subset(labels, 4), nested_subset(labels, 10)
      >>> set(small) <= set(large), np.bincount(labels[small]).tolist()
      (True, [2, 2])
    """
    return np.sort(stratified_order(np.asarray(labels), SUBSET_SEED)[:size])


def _accepts_width(model: Any) -> bool:
    try:
        parameters = inspect.signature(model).parameters.values()
    except (TypeError, ValueError):
        return True  # cannot tell: the call will say
    return any(p.name == "width" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def task_for(task: Task, variant: Variant, seeds: Sequence[int]) -> Task:
    """``task`` at ``variant``: its training split cut to the size, its model at the width.

    Checks every seed's training split is large enough before anything trains.
    """
    if variant.width is not None:
        if not _accepts_width(task.model):
            raise ValueError(
                f"sweep: widths needs a model that takes a width, called as "
                f"model(rngs, width=w); {task.label!r} does not (give e.g. "
                "def model(rngs, width=100): return MyModel(rngs, hidden=width))"
            )
        task = dataclasses.replace(task, model=functools.partial(cast(Any, task.model), width=variant.width),
                                   model_name=f"{task.label}, width {variant.width}")
    size = variant.train_size
    if size is None:
        return task
    if callable(task.train):
        raise ValueError("sweep: train_sizes needs train as (x, y) arrays, not a batch "
                         "function (a subset can only be drawn from arrays)")
    if size < task.batch_size:
        raise ValueError(f"sweep: train_sizes holds {size}, fewer examples than one batch "
                         f"(batch_size {task.batch_size}); give sizes ≥ {task.batch_size}")
    for seed in seeds:
        available = len(task.for_seed(seed).train[0])  # type: ignore[index]
        if size > available:
            raise ValueError(
                f"sweep: train_sizes holds {size}, more than the {available} training "
                f"examples of seed {seed} (after the validation split); give sizes ≤ {available}"
            )
    return dataclasses.replace(task, splits=functools.partial(_sized_splits, task, size),
                               name=task.name)


def _sized_splits(task: Task, size: int, seed: int) -> tuple[Any, Any, Any]:
    full = task.for_seed(seed)
    x, y = (np.asarray(a) for a in full.train)  # type: ignore[union-attr]
    chosen = nested_subset(y, size)
    return (x[chosen], y[chosen]), full.validation, full.test
