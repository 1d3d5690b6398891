"""A task: a Flax NNX model, its data splits, a loss, and how long to train.

``Task`` is what :func:`wdchain.ablate.sweep` trains for every cell of a grid. The
data come as ``(x, y)`` arrays held in memory (the whole split on the device), or, for
the training split, as a batch function (see ``Task``). Hyperparameters are selected
on the validation split; the test split is only reported.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from wdchain.ablate._schedules import Schedule, check_schedule, cosine, schedule_name

Arrays = tuple[Any, Any]
LossFn = Callable[[nnx.Module, Arrays], tuple[jax.Array, dict[str, jax.Array]]]
BatchFn = Callable[[int, int], Iterable[Arrays]]

VALIDATION_FRACTION = 0.2
"""Share of ``train`` held out for selection when a Task has no validation split."""

HOLDOUT_SEED = 0
"""The hold-out is drawn once with this seed, so a user's split stays fixed across seeds."""


def classification_loss(model: nnx.Module, batch: Arrays) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Softmax cross entropy on integer labels; the metric is the error rate.

    Example:
      >>> class Const(nnx.Module):
      ...     def __call__(self, x):
      ...         return jnp.tile(jnp.array([2.0, 0.0]), (x.shape[0], 1))
      >>> loss, metrics = classification_loss(Const(), (jnp.zeros((4, 1)), jnp.array([0, 0, 0, 1])))
      >>> round(float(metrics["error"]), 2)
      0.25
    """
    x, y = batch
    logits = model(x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, {"error": jnp.mean(jnp.argmax(logits, axis=-1) != y)}


@dataclasses.dataclass(frozen=True)
class Task:
    """What to train in each cell of a sweep.

    Args:
      model: a callable ``rngs -> nnx.Module`` (e.g. the model's class). The module may
        hold state besides ``nnx.Param`` (BatchNorm statistics, Dropout RNGs): it is
        carried through training, and the module is put in ``eval()`` mode to be
        evaluated. Only ``nnx.Param`` leaves are optimised; :func:`wdchain.decay_mask`
        decides which are decayed (biases and norm scales are not).
      train: ``(x, y)`` arrays with the examples on the first axis, or a batch
        function ``batches(seed, epoch) -> iterable of (x, y)`` that yields the epoch's
        batches of ``batch_size`` examples each, for data that does not fit in memory.
      test: ``(x, y)`` arrays; reported, never used to select.
      validation: ``(x, y)`` arrays used to select hyperparameters. ``None`` holds out
        a stratified ``VALIDATION_FRACTION`` (20 %) of ``train`` (arrays only), drawn
        once with a fixed seed, so the split is the same for every seed of a sweep.
      loss: ``(model, (x, y)) -> (loss, metrics)``, a scalar loss to minimise and a dict
        of scalar metrics (means over the batch). Selection uses ``metrics["error"]``
        when it is there, the loss otherwise. Default: :func:`classification_loss`.
      batch_size: examples per step; the last partial batch of an epoch is dropped.
      epochs: passes over ``train`` (the schedule spans all of them).
      name: shown in reports and figures.
      model_name: shown in reports and figures (default: the model's name).
      splits: for tasks that re-split their data per seed (the built-in ones):
        ``splits(seed) -> (train, validation, test)`` replaces the three splits for
        that seed. ``None``: the same splits for every seed.
      steps_per_epoch: with a batch function for ``train``, the number of batches it
        yields per epoch (needed to lay out the schedule); ignored for arrays.
      schedule: the learning-rate multiplier η(t) of every cell, a callable
        ``total_steps -> (step -> multiplier)``: :func:`wdchain.ablate.cosine` (None, the
        default), ``warmup_cosine(warmup)``, ``wsd(warmup, decay)``, ``linear(warmup)``,
        ``constant()`` or one of your own. lr_t = lr·η_t, and the ``independent`` and
        ``corrected`` decays follow η_t.
      clip_norm: None, or clip the gradient to this global norm before the optimizer
        (``optax.clip_by_global_norm``). Clipping sees the loss's gradient *before* an
        ``l2`` arm adds λθ to it, so it never clips the decay.
      accumulate: k ≥ 1: each optimizer step averages the gradients of k micro-batches of
        ``batch_size / k`` examples (``batch_size`` must be a multiple of k), for batches
        that do not fit. Without batch statistics this equals ``accumulate=1`` to float
        tolerance; BatchNorm sees micro-batches.
      call: how the model is called, ``call(model, x, rngs) -> outputs``, when it needs
        more than ``model(x)``. None: ``model(x)``, or ``model(x, rngs=rngs)`` when the
        model's ``__call__`` takes an ``rngs`` argument (the Flax examples' Dropout style).
        ``rngs`` is an ``nnx.Rngs`` made for each training step from the seed and the
        step (every cell of a seed gets the same one, as they share the batch), and
        ``None`` in evaluation (the model is in ``eval()`` mode).
      mask: which parameters are decayed: a tree of booleans, or a function of the
        params returning one. None: :func:`wdchain.decay_mask` (not biases or norm
        scales); e.g. ``wdchain.decay_mask_with(embeddings=False)`` also spares
        embedding tables.
      moments_dtype: the dtype of the optimizer's moments (``mu_dtype`` and ``nu_dtype``
        of the arms that have them, e.g. ``jnp.bfloat16``); None: the params' dtype.

    With arrays, a seed changes the initialisation, the batch order and the Dropout
    RNGs (and, with ``splits``, the split).
    """

    model: Callable[[nnx.Rngs], nnx.Module]
    train: Arrays | BatchFn
    test: Arrays
    validation: Arrays | None = None
    loss: LossFn | None = None
    batch_size: int = 100
    epochs: int = 100
    name: str = "task"
    model_name: str | None = None
    splits: Callable[[int], tuple[Arrays, Arrays, Arrays]] | None = None
    steps_per_epoch: int | None = None
    schedule: Schedule | None = None
    clip_norm: float | None = None
    accumulate: int = 1
    call: Callable[[nnx.Module, Any, Any], Any] | None = None
    mask: Any = None
    moments_dtype: Any = None

    def __post_init__(self) -> None:
        if not callable(self.model):
            raise TypeError(
                f"Task: model must be a callable rngs -> nnx.Module (e.g. the model's class), "
                f"got {self.model!r}"
            )
        for field in ("batch_size", "epochs", "accumulate"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"Task: {field} must be an integer ≥ 1, got {value!r}")
        _check_recipe(self)
        if callable(self.train):
            if self.validation is None:
                raise ValueError(
                    "Task: with a batch function for train, give validation= arrays too "
                    "(a hold-out can only be drawn from arrays)"
                )
            if not isinstance(self.steps_per_epoch, int) or self.steps_per_epoch < 1:
                raise ValueError(
                    "Task: with a batch function for train, give steps_per_epoch= (the number "
                    f"of batches it yields per epoch), got {self.steps_per_epoch!r}"
                )
        for field in ("train", "validation", "test"):
            value = getattr(self, field)
            if value is None or (field == "train" and callable(value)):
                continue
            _check_split(field, value)

    @property
    def schedule_fn(self) -> Schedule:
        """The schedule, :func:`wdchain.ablate.cosine` by default."""
        return self.schedule or cosine()

    def recipe(self) -> dict[str, Any]:
        """The training recipe as reports state it (schedule, clipping, accumulation)."""
        return {"schedule": schedule_name(self.schedule_fn), "clip_norm": self.clip_norm,
                "accumulate": self.accumulate,
                "moments_dtype": None if self.moments_dtype is None
                else str(np.dtype(self.moments_dtype))}

    @property
    def loss_fn(self) -> LossFn:
        """The loss, :func:`classification_loss` by default."""
        return self.loss or classification_loss

    @property
    def label(self) -> str:
        """The model's name for reports."""
        return str(self.model_name or getattr(self.model, "__name__", type(self.model).__name__))

    def for_seed(self, seed: int) -> Task:
        """This task's splits for ``seed``, with a validation split in place."""
        task = self
        if self.splits is not None:
            train, validation, test = self.splits(seed)
            task = dataclasses.replace(self, train=train, validation=validation, test=test,
                                       splits=None)
        if task.validation is None:
            train, validation = holdout(task.train, VALIDATION_FRACTION)  # type: ignore[arg-type]
            task = dataclasses.replace(task, train=train, validation=validation)
        return task

    def train_steps_per_epoch(self) -> int:
        """Steps per epoch: full batches of ``train``."""
        if callable(self.train):
            assert self.steps_per_epoch is not None
            return self.steps_per_epoch
        steps = len(self.train[0]) // self.batch_size
        if steps < 1:
            raise ValueError(
                f"Task: batch_size {self.batch_size} exceeds the {len(self.train[0])} training "
                "examples; lower batch_size"
            )
        return steps


def _check_recipe(task: Task) -> None:
    if task.schedule is not None:
        check_schedule(task.schedule)
    clip = task.clip_norm
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, int | float)
                             or not math.isfinite(clip) or clip <= 0):
        raise ValueError(f"Task: clip_norm must be None or a finite number > 0 (the global "
                         f"norm to clip the gradient to), got {clip!r}")
    if task.batch_size % task.accumulate:
        raise ValueError(
            f"Task: accumulate={task.accumulate} must divide batch_size={task.batch_size} "
            f"(each step averages {task.accumulate} micro-batches of batch_size / accumulate "
            "examples); choose a divisor of batch_size")
    if task.call is not None and not callable(task.call):
        raise TypeError(f"Task: call must be a callable (model, x, rngs) -> outputs, got "
                        f"{task.call!r}")
    if task.moments_dtype is not None:
        try:
            np.dtype(task.moments_dtype)
        except TypeError:
            raise TypeError(f"Task: moments_dtype must be a dtype (e.g. jnp.bfloat16), got "
                            f"{task.moments_dtype!r}") from None


def _check_split(field: str, value: Any) -> None:
    if not (isinstance(value, tuple | list) and len(value) == 2):
        raise ValueError(f"Task: {field} must be a pair (x, y) of arrays, got {type(value).__name__}")
    x, y = value
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(
            f"Task: {field} needs as many labels as examples (and at least one), got "
            f"{len(x)} examples and {len(y)} labels"
        )


def holdout(train: Arrays, fraction: float, seed: int = HOLDOUT_SEED) -> tuple[Arrays, Arrays]:
    """Splits ``fraction`` of ``train`` off for validation, stratified by integer labels.

    Example:
      >>> x, y = np.arange(20.0), np.array([0] * 10 + [1] * 10)
      >>> (x_fit, y_fit), (x_val, y_val) = holdout((x, y), 0.2)
      >>> len(x_fit), len(x_val), sorted(y_val.tolist())
      (16, 4, [0, 0, 1, 1])
    """
    x, y = (np.asarray(a) for a in train)
    validation = stratified_indices(y, round(fraction * len(y)), seed)
    keep = np.setdiff1d(np.arange(len(y)), validation)
    return (x[keep], y[keep]), (x[validation], y[validation])


def stratified_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """Every index once, in a random order whose every prefix holds each class in proportion.

    The classes are interleaved (the k-th example of each class in turn, shuffled
    within), so the first ``count`` indices are a stratified draw of ``count`` and the
    draws of two counts are nested. Labels that are not 1-D integers are shuffled only.

    Example:
      >>> order = stratified_order(np.array([0] * 6 + [1] * 3), seed=0)
      >>> sorted(np.array([0] * 6 + [1] * 3)[order[:3]].tolist())
      [0, 0, 1]
    """
    rng = np.random.default_rng(seed)
    if not np.issubdtype(labels.dtype, np.integer) or labels.ndim != 1:
        return rng.permutation(len(labels))
    classes, inverse = np.unique(labels, return_inverse=True)
    order = rng.permutation(len(labels))
    rank = np.empty(len(labels))
    for c in range(len(classes)):
        members = order[inverse[order] == c]
        rank[members] = (np.arange(len(members)) + rng.random()) / len(members)
    return np.argsort(rank, kind="stable")


def stratified_indices(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` indices drawn at random with each class in proportion (any labels), sorted."""
    return np.sort(stratified_order(labels, seed)[:count])


def stratified_split(x: np.ndarray, y: np.ndarray, sizes: tuple[int, ...],
                     seed: int) -> list[Arrays]:
    """``x, y`` cut into stratified parts of the given sizes (they must sum to len(y))."""
    if sum(sizes) != len(y):
        raise ValueError(f"stratified_split: sizes {sizes} do not sum to {len(y)}")
    remaining = np.arange(len(y))
    parts: list[Arrays] = []
    for size in sizes[:-1]:
        chosen = remaining[stratified_indices(y[remaining], size, seed + len(parts))]
        parts.append((x[chosen], y[chosen]))
        remaining = np.setdiff1d(remaining, chosen)
    parts.append((x[remaining], y[remaining]))
    return parts
