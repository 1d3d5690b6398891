"""Checks of a sweep's input, run once before any training, each naming what to fix.

A fault the runner cannot see while training (a label −1 wraps to the last class, a NaN
input makes every cell "diverge", a loss in percent reads as an error above 100 %, a
bfloat16 weight that λ cannot move) would otherwise come out as a plausible number.
:func:`check_task` refuses the data, model and loss faults; :func:`lost_decay` finds the
cells whose decay the parameters' dtype cannot hold (the rule of
:func:`wdchain.check_decay_precision`).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import wdchain
from wdchain.ablate._arms import Arm
from wdchain.ablate._models import as_called, call_for

PROBE_EXAMPLES = 8  # examples the model and the loss are tried on before training
_DEFAULT_LOSS = ("the default loss (classification_loss: softmax cross entropy) expects "
                 "integer class labels of shape (N,) in [0, the model's outputs)")
_OTHER_LOSS = "or pass your own loss=(model, (x, y)) -> (loss, metrics) to Task"


@dataclasses.dataclass(frozen=True)
class Probe:
    """What the checks learnt: the loss's metrics and the decayed params' shapes/dtypes."""

    metrics: tuple[str, ...]
    decayed: list[Any]  # the params' ShapeDtypeStructs, undecayed ones as float32

    @property
    def selection(self) -> str:
        """What the error columns hold: ``"error"``, or ``"loss"`` without an error metric."""
        return "error" if "error" in self.metrics else "loss"


def check_devices(devices: Any) -> None:
    """``devices`` is None or a non-empty sequence of ``jax.Device``."""
    if devices is None:
        return
    listed = list(devices) if isinstance(devices, Sequence) else None
    if listed is not None and not listed:
        raise ValueError("sweep: devices is empty; give at least one device, or None for all")
    wrong = [d for d in (listed or [devices]) if not isinstance(d, jax.Device)]
    if listed is None or wrong:
        raise TypeError(
            f"sweep: devices must be a sequence of jax devices (e.g. jax.devices()[:2], or "
            f"jax.devices('cpu')), or None for all local devices; got {wrong[0]!r}"
        )


def check_grid_size(grid_size: Any) -> None:
    if isinstance(grid_size, bool) or not isinstance(grid_size, int | np.integer) or grid_size < 1:
        raise ValueError(f"sweep: grid_size must be an integer ≥ 1 (points of the default "
                         f"grids), got {grid_size!r}")


def check_grid_mapping(name: str, values: Any, arms: Sequence[str]) -> None:
    """A mapping of per-arm grids names every arm, and only arms of the sweep."""
    if not isinstance(values, Mapping):
        return
    missing = [arm for arm in arms if arm not in values]
    unknown = [key for key in values if key not in arms]
    if missing or unknown:
        what = (f"lacks the arm(s) {', '.join(map(repr, missing))}" if missing else
                f"names arm(s) not in the sweep: {', '.join(map(repr, unknown))}")
        raise ValueError(
            f"sweep: {name} as a mapping {what}; give a grid for each of {list(arms)}, or a "
            f"plain sequence for all of them, or None for the default grids"
        )


def check_batch(batch: Any, batch_size: int, index: int) -> None:
    """A batch function's ``index``-th batch is an (x, y) pair of ``batch_size`` examples."""
    if not (isinstance(batch, tuple | list) and len(batch) == 2):
        raise ValueError(f"Task: the batch function must yield (x, y) pairs; batch {index} is "
                         f"a {type(batch).__name__}")
    sizes = {len(np.asarray(part)) if np.ndim(part) else 0 for part in batch}
    if sizes != {batch_size}:
        raise ValueError(
            f"Task: the batch function yielded a batch of {sorted(sizes)} example(s) at batch "
            f"{index}, but batch_size is {batch_size}; yield full batches of batch_size "
            f"(drop the last partial one) or set batch_size to what it yields"
        )


def check_task(task: Any, seeds: Sequence[int]) -> Probe:
    """Refuses faulty data, model output or loss for every seed's splits; see the module."""
    default_loss = task.loss is None
    first = task.for_seed(seeds[0])
    x, y = (np.asarray(part) for part in first.validation)
    batch = (x[:PROBE_EXAMPLES], y[:PROBE_EXAMPLES])
    model = task.model(nnx.Rngs(0))
    if not isinstance(model, nnx.Module):
        raise TypeError(f"Task: model(rngs) must return an nnx.Module, got {model!r}")
    model.eval()
    called = as_called(model, call_for(model, task.call), None)  # as evaluation calls it
    outputs = _check_output(called, batch) if default_loss else None
    for seed in seeds:
        seeded = task.for_seed(seed)
        for split in ("train", "validation", "test"):
            pair = getattr(seeded, split)
            if split == "train" and callable(pair):
                continue
            if pair is None:
                raise ValueError(f"Task: {split} is None (seed {seed}); give (x, y) arrays: "
                                 "the test split is reported at the selected cells")
            _check_inputs(split, seed, np.asarray(pair[0]))
            if default_loss:
                assert outputs is not None
                _check_labels(split, seed, np.asarray(pair[1]), outputs)
    metrics = _check_loss(task.loss_fn, called, batch)
    params = nnx.state(model, nnx.Param)
    leaves = jax.tree.leaves(params)
    mask = wdchain.decay_mask if task.mask is None else task.mask
    keeps = jax.tree.leaves(mask(params) if callable(mask) else mask)
    assert len(keeps) == len(leaves)
    decayed = [jax.ShapeDtypeStruct(np.shape(leaf), leaf.dtype if keep else jnp.float32)
               for leaf, keep in zip(leaves, keeps)]
    return Probe(tuple(metrics), decayed)


def _check_output(model: Any, batch: tuple[np.ndarray, np.ndarray]) -> int:
    """The model's number of outputs, checked to be logits of shape (N, classes)."""
    logits = model(jnp.asarray(batch[0]))
    if not isinstance(logits, jax.Array):
        raise TypeError(
            f"Task: the model returns a {type(logits).__name__}, but {_DEFAULT_LOSS}, so the "
            f"model must return one array of logits (N, classes); return the logits only, "
            f"{_OTHER_LOSS} that unpacks what the model returns"
        )
    if logits.ndim != 2 or logits.shape[0] != len(batch[0]) or logits.shape[1] < 2:
        raise ValueError(
            f"Task: the model maps {len(batch[0])} examples to an array of shape "
            f"{tuple(logits.shape)}, but {_DEFAULT_LOSS}: it must return logits of shape "
            f"({len(batch[0])}, classes) with at least 2 classes; {_OTHER_LOSS}"
        )
    return int(logits.shape[1])


def _check_inputs(split: str, seed: int, x: np.ndarray) -> None:
    if not np.issubdtype(x.dtype, np.inexact):
        return
    bad = np.argwhere(~np.isfinite(x))
    if len(bad):
        where = tuple(int(i) for i in bad[0])
        raise ValueError(
            f"Task: the {split} split (seed {seed}) holds {len(bad)} non-finite input(s); the "
            f"first is x[{', '.join(map(str, where))}] = {x[where]} (example {where[0]}). Every "
            "cell would read as diverged: drop or repair those examples"
        )


def _check_labels(split: str, seed: int, y: np.ndarray, outputs: int) -> None:
    where = f"the {split} labels (seed {seed})"
    if y.ndim == 2 and y.shape[1] == 1:
        raise ValueError(f"Task: {where} have shape {y.shape}, but {_DEFAULT_LOSS}; pass "
                         f"y[:, 0] (or y.ravel()), {_OTHER_LOSS}")
    if y.ndim == 2:
        raise ValueError(f"Task: {where} have shape {y.shape} (one-hot or soft labels?), but "
                         f"{_DEFAULT_LOSS}; pass y.argmax(-1), {_OTHER_LOSS}")
    if y.ndim != 1:
        raise ValueError(f"Task: {where} have shape {y.shape}, but {_DEFAULT_LOSS}; "
                         f"{_OTHER_LOSS}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"Task: {where} are {y.dtype}, but {_DEFAULT_LOSS}; pass "
                         f"y.astype(np.int32) if they are class numbers, {_OTHER_LOSS}")
    bad = np.flatnonzero((y < 0) | (y >= outputs))
    if len(bad):
        raise ValueError(
            f"Task: {where} hold {len(bad)} label(s) outside [0, {outputs}) (the model has "
            f"{outputs} outputs); the first is {int(y[bad[0]])} at index {int(bad[0])}. "
            "A negative label would wrap to the last class and one ≥ outputs turns every "
            "cell into NaN: fix the labels or the model's number of outputs"
        )


def _check_loss(loss_fn: Any, model: Any, batch: tuple[np.ndarray, np.ndarray]) -> list[str]:
    """The loss returns (scalar, {name: scalar}); an ``error`` metric lies in [0, 1]."""
    result = loss_fn(model, (jnp.asarray(batch[0]), jnp.asarray(batch[1])))
    shape = "(loss, metrics)"
    if not (isinstance(result, tuple) and len(result) == 2):
        raise TypeError(
            f"Task: the loss must return a pair {shape}: a scalar to minimise and a dict of "
            f"scalar metrics, e.g. (loss, {{'error': error_rate}}); it returned "
            f"{_describe(result)}"
        )
    loss, metrics = result
    if np.shape(loss) != ():
        raise ValueError(f"Task: the loss's first value must be a scalar (a mean over the "
                         f"batch), got shape {np.shape(loss)}")
    if not isinstance(metrics, Mapping):
        raise TypeError(f"Task: the loss's metrics must be a dict of scalars, got "
                        f"{_describe(metrics)}")
    for name, value in metrics.items():
        if np.shape(value) != ():
            raise ValueError(
                f"Task: the loss's metric {name!r} has shape {np.shape(value)}; metrics must "
                f"be scalars, means over the batch (e.g. jnp.mean(...))"
            )
    if "error" in metrics:
        error = float(metrics["error"])
        if not (0.0 <= error <= 1.0):
            raise ValueError(
                f"Task: the loss's 'error' metric must be a fraction in [0, 1] (it selects "
                f"hyperparameters and is reported in %); on {len(batch[0])} validation "
                f"examples at initialisation it is {error:g}. Divide a percentage by 100"
            )
    return list(metrics)


def _describe(value: Any) -> str:
    if isinstance(value, tuple | list):
        return f"a {type(value).__name__} of {len(value)}"
    shape = np.shape(value) if hasattr(value, "shape") else None
    return f"{type(value).__name__}" + (f" of shape {shape}" if shape is not None else "")


def lost_decay(arm: Arm, lrs: Sequence[float], weight_decays: Sequence[float],
               params: Any) -> list[tuple[float, float]]:
    """The (lr, λ) cells whose decay step is below the resolution of the decayed params.

    :func:`wdchain.check_decay_precision`'s rule at the peak learning rate (the schedule
    only lowers it): a decay it finds lost there is lost for the whole run.
    """
    lost = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", wdchain.DecayPrecisionWarning)
        for lr, wd in zip(lrs, weight_decays):
            if wd > 0 and wdchain.check_decay_precision(
                    arm.optimizer(float(lr), float(wd), None, wdchain.decay_mask), params):
                lost.append((float(lr), float(wd)))
    return lost


def decay_lost_message(arm: str, lost: Sequence[tuple[float, float]], cells: int,
                       dtype: str) -> str:
    """The warning for an arm's cells whose decay rounds away."""
    largest = max(wd for _, wd in lost)
    return (
        f"sweep: with {dtype} parameters, weight decay is lost to rounding in {len(lost)} of "
        f"{cells} cells of {arm} (λ up to {largest:g}): θ·(1 − decay) rounds back to θ, so "
        "those cells train as with λ = 0 (marked in summary.md). Keep the model's parameters "
        "in float32 (float32 master weights: param_dtype=jnp.float32, dtype=jnp.bfloat16 for "
        "the computation), or wrap the optimizer in wdchain.compensate_rounding"
    )


def low_precision_dtype(params: Any) -> str | None:
    """The name of the narrowest float dtype (≤ 16 bits) among ``params``, or None."""
    names = [jnp.dtype(leaf.dtype) for leaf in jax.tree.leaves(params)
             if jnp.issubdtype(leaf.dtype, jnp.floating) and jnp.finfo(leaf.dtype).bits <= 16]
    return min(names, key=lambda d: jnp.finfo(d).bits).name if names else None

