"""A wdchain optimizer in Flax NNX, with biases and norm scales left undecayed.

``nnx.Optimizer(model, tx, wrt=nnx.Param)`` takes any wdchain optimizer. The mask
``wdchain.decay_mask`` decays kernels but not biases or LayerNorm scales; it is passed
as a function, so it is applied to whatever parameter tree the optimizer sees. The
example prints the mask, proves it with one update on zero gradients from θ = 1 (only
the decayed leaves shrink, to 1 − lr·λ), then trains an MLP with LayerNorm on
scikit-learn's digits.

Run: ``python examples/flax_nnx.py``
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits

import wdchain

NUM_STEPS = 300
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 0.1
SEED = 0


class Classifier(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(64, 128, rngs=rngs)
        self.norm = nnx.LayerNorm(128, rngs=rngs)
        self.out = nnx.Linear(128, 10, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.norm(self.hidden(x))))


def loss_fn(model, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


@nnx.jit
def train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads)
    return loss


def params_by_path(model):
    state = nnx.state(model, nnx.Param)
    return {jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(state)}


def shrink_factors(model, tx):
    """Sets a copy's params to 1, takes one update on zero gradients: θ_new per leaf."""
    model = nnx.clone(model)
    nnx.update(model, jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param)))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    optimizer.update(model, jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param)))
    return {path: float(value.mean()) for path, value in params_by_path(model).items()}


def main(num_steps=NUM_STEPS):
    """Trains the classifier; returns the shrink factors and the test accuracy."""
    images, labels = load_digits(return_X_y=True)
    x, y = (images / 16.0).astype(np.float32), labels
    x_train, y_train, x_test, y_test = x[:1400], y[:1400], x[1400:], y[1400:]

    model = Classifier(nnx.Rngs(SEED))
    tx = wdchain.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY, mask=wdchain.decay_mask)
    print(wdchain.mask_report(nnx.state(model, nnx.Param), wdchain.decay_mask))
    shrink = shrink_factors(model, tx)
    for path, ratio in shrink.items():
        print(f"θ = 1, one step on zero gradients: {path:<26} θ ← {ratio:.5f}")

    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    for step in range(1, num_steps + 1):
        loss = train_step(model, optimizer, x_train, y_train)
        if step % 100 == 0 or step == num_steps:
            print(f"step {step:4d}  train loss {float(loss):.4f}")
    accuracy = float(jnp.mean(jnp.argmax(model(x_test), -1) == y_test))
    print(f"test accuracy {accuracy:.3f}")
    return {"shrink": shrink, "test_accuracy": accuracy}


if __name__ == "__main__":
    main()
