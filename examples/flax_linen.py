"""A wdchain optimizer in a Flax linen ``TrainState``, biases and norm scales undecayed.

The same as ``flax_nnx.py`` for linen: ``TrainState.create(..., tx=wdchain.adamw(...,
mask=wdchain.decay_mask))``. The mask reads the parameter names in the linen tree
(``Dense_0/kernel`` decayed, ``Dense_0/bias`` and ``LayerNorm_0/scale`` not). The example
prints the mask, proves it with one update on zero gradients from θ = 1 (only the
decayed leaves shrink, to 1 − lr·λ), then trains on scikit-learn's digits.

Run: ``python examples/flax_linen.py``
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from flax.training.train_state import TrainState
from sklearn.datasets import load_digits

import wdchain

NUM_STEPS = 300
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 0.1
SEED = 0


class Classifier(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.LayerNorm()(nn.Dense(128)(x)))
        return nn.Dense(10)(x)


@jax.jit
def train_step(state, x, y):
    def loss_fn(params):
        logits = state.apply_fn({"params": params}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss


def shrink_factors(state):
    """From θ = 1, one update on zero gradients: θ_new per leaf, by path."""
    ones = jax.tree.map(jnp.ones_like, state.params)
    state = state.replace(params=ones, opt_state=state.tx.init(ones))
    state = state.apply_gradients(grads=jax.tree.map(jnp.zeros_like, ones))
    return {jax.tree_util.keystr(path): float(leaf.mean())
            for path, leaf in jax.tree_util.tree_leaves_with_path(state.params)}


def main(num_steps=NUM_STEPS):
    """Trains the classifier; returns the shrink factors and the test accuracy."""
    images, labels = load_digits(return_X_y=True)
    x, y = (images / 16.0).astype(np.float32), labels
    x_train, y_train, x_test, y_test = x[:1400], y[:1400], x[1400:], y[1400:]

    model = Classifier()
    params = model.init(jax.random.key(SEED), x_train[:1])["params"]
    tx = wdchain.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY, mask=wdchain.decay_mask)
    state = TrainState.create(apply_fn=model.apply, params=params, tx=tx)
    print(wdchain.mask_report(params, wdchain.decay_mask))
    shrink = shrink_factors(state)
    for path, value in shrink.items():
        print(f"θ = 1, one step on zero gradients: {path:<26} θ ← {value:.5f}")

    for step in range(1, num_steps + 1):
        state, loss = train_step(state, x_train, y_train)
        if step % 100 == 0 or step == num_steps:
            print(f"step {step:4d}  train loss {float(loss):.4f}")
    logits = model.apply({"params": state.params}, x_test)
    accuracy = float(jnp.mean(jnp.argmax(logits, -1) == y_test))
    print(f"test accuracy {accuracy:.3f}")
    return {"shrink": shrink, "test_accuracy": accuracy}


if __name__ == "__main__":
    main()
