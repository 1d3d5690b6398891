"""The built-in tasks: MNIST-1D (the default), scikit-learn's digits and a small transformer.

Both models put a LayerNorm after each hidden linear layer. That matters: Loshchilov &
Hutter's claim (the best λ does not depend on the learning rate when the decay is
scaled by the schedule multiplier η_t) is about scale-invariant weights, whose
function does not change when they are scaled, as in their BatchNorm ResNets. A weight
followed by a normalisation is scale-invariant; decay then only sets the effective
step size, through the angular update ≈ √(2·lr·λ) for torch's scaling and ≈ √(2·η_t·λ)
for the paper's. Without normalisation the function depends on ‖θ‖ itself and the
expected slopes change (the paper's scaling then couples λ* to lr, slope ≈ +1): a plain
MLP does not show the paper's Fig. 2.

Each seed re-splits the data (seed 0 keeps MNIST-1D's canonical test set), changes the
initialisation and the batch order.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import numpy as np
from flax import nnx

from wdchain.ablate import _lm
from wdchain.ablate._task import Arrays, Task, holdout, stratified_split

NUM_CLASSES = 10


class LayerNormMLP(nnx.Module):
    """inputs → hidden → LN → ReLU → hidden → LN → ReLU → 10 (LN with scale and bias)."""

    def __init__(self, inputs: int, rngs: nnx.Rngs, hidden: int = 100):
        self.hidden1 = nnx.Linear(inputs, hidden, rngs=rngs)
        self.norm1 = nnx.LayerNorm(hidden, rngs=rngs)
        self.hidden2 = nnx.Linear(hidden, hidden, rngs=rngs)
        self.norm2 = nnx.LayerNorm(hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, NUM_CLASSES, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        x = nnx.relu(self.norm1(self.hidden1(x)))
        x = nnx.relu(self.norm2(self.hidden2(x)))
        return self.out(x)


def mnist1d_model(rngs: nnx.Rngs, width: int = 100) -> LayerNormMLP:
    """MNIST-1D's model: 40 → 100 → LN → ReLU → 100 → LN → ReLU → 10 (``width`` hidden units)."""
    return LayerNormMLP(40, rngs, hidden=width)


def digits_model(rngs: nnx.Rngs, width: int = 100) -> LayerNormMLP:
    """The digits' model: 64 → 100 → LN → ReLU → 100 → LN → ReLU → 10 (``width`` hidden units)."""
    return LayerNormMLP(64, rngs, hidden=width)


@functools.cache
def _mnist1d_arrays(num_samples: int = 5000) -> dict[str, np.ndarray]:
    """MNIST-1D generated locally by the ``mnist1d`` package (never downloaded)."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as error:  # pragma: no cover - the examples extra installs it
        raise ImportError(
            "the mnist1d task needs the mnist1d package: pip install 'wdchain[examples]'"
        ) from error
    # make_dataset generates sequences from the package's templates with a fixed seed
    # (the canonical 5,000 by default); get_dataset (which downloads) is never called.
    args = get_dataset_args()
    args.num_samples = num_samples
    data = make_dataset(args)
    return {key: np.asarray(data[key]) for key in ("x", "y", "x_test", "y_test")}


def mnist1d_splits(seed: int) -> tuple[Arrays, Arrays, Arrays]:
    """Train 3,200 / validation 800 / test 1,000, stratified.

    Seed 0 keeps the canonical 4,000 / 1,000 train / test split and holds out 800 of the
    training examples for validation; other seeds re-split all 5,000 at random.

    Example:
      >>> train, validation, test = mnist1d_splits(0)
      >>> len(train[0]), len(validation[0]), len(test[0]), train[0].shape[1]
      (3200, 800, 1000, 40)
    """
    data = _mnist1d_arrays()
    x_train, y_train = data["x"].astype(np.float32), data["y"].astype(np.int32)
    x_test, y_test = data["x_test"].astype(np.float32), data["y_test"].astype(np.int32)
    if seed == 0:
        train, validation = holdout((x_train, y_train), 0.2, seed=0)
        return train, validation, (x_test, y_test)
    x, y = np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])
    train, validation, test = stratified_split(x, y, (3200, 800, 1000), seed)
    return train, validation, test


@functools.cache
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    return (images / 16.0).astype(np.float32), labels.astype(np.int32)


def digits_splits(seed: int) -> tuple[Arrays, Arrays, Arrays]:
    """scikit-learn's 1,797 8×8 digits: train 1,078 / validation 359 / test 360, stratified.

    Example:
      >>> train, validation, test = digits_splits(1)
      >>> len(train[0]), len(validation[0]), len(test[0])
      (1078, 359, 360)
    """
    x, y = _digits_arrays()
    train, validation, test = stratified_split(x, y, (1078, 359, 360), seed)
    return train, validation, test


SCALING_SAMPLES = 12500
"""MNIST-1D sequences generated for the scaling task: 8,000 to train on, the rest to select
and report."""


def mnist1d_scaling_splits() -> tuple[Arrays, Arrays, Arrays]:
    """MNIST-1D with 12,500 sequences: train 8,000 / validation 2,000 / test 2,500.

    ``make_dataset``'s own 80 / 20 split gives the test set; 2,000 of its 10,000 training
    sequences are held out for validation (stratified, fixed). The same for every seed,
    so the nested training subsets of a ``train_sizes`` sweep are too.

    Example:
      >>> train, validation, test = mnist1d_scaling_splits()
      >>> len(train[0]), len(validation[0]), len(test[0])
      (8000, 2000, 2500)
    """
    data = _mnist1d_arrays(SCALING_SAMPLES)
    x_train, y_train = data["x"].astype(np.float32), data["y"].astype(np.int32)
    x_test, y_test = data["x_test"].astype(np.float32), data["y_test"].astype(np.int32)
    train, validation = holdout((x_train, y_train), 0.2, seed=0)
    return train, validation, (x_test, y_test)


def mnist1d_scaling(epochs: int = 40, batch_size: int = 100) -> Task:
    """MNIST-1D with 8,000 training sequences and the LayerNorm MLP: the scaling preset's task."""
    train, validation, test = mnist1d_scaling_splits()
    return Task(mnist1d_model, train, test, validation=validation, batch_size=batch_size,
                epochs=epochs, name="mnist1d-scaling", model_name="MLP 40-100-LN-100-LN-10")


def mnist1d(epochs: int = 100, batch_size: int = 100) -> Task:
    """MNIST-1D with the LayerNorm MLP: the default task of the runner."""
    train, validation, test = mnist1d_splits(0)
    return Task(mnist1d_model, train, test, validation=validation, batch_size=batch_size,
                epochs=epochs, name="mnist1d", model_name="MLP 40-100-LN-100-LN-10",
                splits=mnist1d_splits)


def digits(epochs: int = 60, batch_size: int = 64) -> Task:
    """scikit-learn's digits with a LayerNorm MLP."""
    train, validation, test = digits_splits(0)
    return Task(digits_model, train, test, validation=validation, batch_size=batch_size,
                epochs=epochs, name="digits", model_name="MLP 64-100-LN-100-LN-10",
                splits=digits_splits)


TRANSFORMER_CHARACTERS = 50_000
"""Characters of the ``transformer`` task's text: train 40,000 / validation 5,000 / test 5,000."""


def transformer(epochs: int = 12, batch_size: int = 32, width: int = 32) -> Task:
    """A causal character-level transformer (2 pre-norm layers of width 32, 4 heads, context
    32) on the first 50,000 characters of the standard library's docstrings, with
    ``warmup_cosine(0.05)``, clipping to norm 1 and decay on its matrices only
    (:mod:`wdchain.ablate._lm`): small enough for a 6 × 6 grid in minutes on a CPU, and it
    overfits in 12 epochs (the lm preset's selected cell: validation loss 0.9 nat above
    the training loss), so λ matters."""
    return _lm.make_task(epochs, width=width, batch_size=batch_size,
                         characters=TRANSFORMER_CHARACTERS, name="transformer")


TASKS: dict[str, Callable[..., Task]] = {"mnist1d": mnist1d, "digits": digits,
                                        "mnist1d-scaling": mnist1d_scaling,
                                        "transformer": transformer}
