"""The task: scikit-learn's 8×8 handwritten digits and two small Flax NNX models."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

NUM_CLASSES = 10
TEST_FRACTION = 0.25


class Digits(NamedTuple):
    """Images in [0, 1] of shape (n, 8, 8, 1) and integer labels, split in two."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits(seed: int) -> Digits:
    """The 1,797 digits (shipped with scikit-learn), stratified 75 / 25 split by ``seed``.

    Example:
      >>> data = load_digits(0)
      >>> data.x_train.shape, data.x_test.shape
      ((1347, 8, 8, 1), (450, 8, 8, 1))
    """
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    images, labels = sklearn_digits(return_X_y=True)
    images = (images / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels.astype(np.int32), test_size=TEST_FRACTION, stratify=labels,
        random_state=seed,
    )
    return Digits(x_train, y_train, x_test, y_test)


class MLP(nnx.Module):
    """64 → 128 → 10 with a ReLU."""

    def __init__(self, rngs: nnx.Rngs, hidden: int = 128):
        self.hidden = nnx.Linear(64, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, NUM_CLASSES, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(nnx.relu(self.hidden(x.reshape(x.shape[0], -1))))


class Conv3x3(nnx.Module):
    """A 3×3 'same' convolution as nine shifted slices and one matmul.

    The same function as ``nnx.Conv(in_features, out_features, (3, 3))``, written so that
    under ``jax.vmap`` over cells (one kernel per cell) it is a batched matmul: XLA on
    CPU runs a vmapped ``nnx.Conv`` as a grouped convolution, about 9× slower here.
    """

    def __init__(self, in_features: int, out_features: int, rngs: nnx.Rngs):
        init = nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (3, 3, in_features, out_features)))
        self.bias = nnx.Param(jnp.zeros(out_features))

    def __call__(self, x: jax.Array) -> jax.Array:
        _, height, width, _ = x.shape
        padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        patches = jnp.concatenate(
            [padded[:, i : i + height, j : j + width] for i in range(3) for j in range(3)],
            axis=-1,
        )
        return patches @ self.kernel[...].reshape(-1, self.kernel.shape[-1]) + self.bias[...]


class CNN(nnx.Module):
    """Two 3×3 convolutions (16 and 32 channels), each followed by 2×2 average pooling."""

    def __init__(self, rngs: nnx.Rngs):
        self.conv1 = Conv3x3(1, 16, rngs)
        self.conv2 = Conv3x3(16, 32, rngs)
        self.out = nnx.Linear(2 * 2 * 32, NUM_CLASSES, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.avg_pool(nnx.relu(self.conv1(x)), (2, 2), strides=(2, 2))
        x = nnx.avg_pool(nnx.relu(self.conv2(x)), (2, 2), strides=(2, 2))
        return self.out(x.reshape(x.shape[0], -1))


MODELS = {"mlp": MLP, "cnn": CNN}
