"""The seed's experiment: AdamW with weight_decay=0 is Adam, step for step.

Trains a Flax NNX MLP on scikit-learn's 8×8 digits twice from the same initial
weights, once with ``wdchain.adam`` and once with ``wdchain.adamw(weight_decay=0)``,
and shows that the training losses are identical at every step (bit for bit: the two
optimizers are the same chain with the decay moved, and a decay of 0 is switched off).
Then it trains ``adam(weight_decay=λ)`` (L2: λθ enters Adam's moments) against
``adamw(weight_decay=λ)`` (decoupled) at the same λ, and shows that they differ.

Run: ``python examples/seed_experiment.py``
"""

import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits

import wdchain

NUM_STEPS = 200
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 0.1
SEED = 0


class MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(64, 64, rngs=rngs)
        self.out = nnx.Linear(64, 10, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.hidden(x)))


def train(tx: optax.GradientTransformation, num_steps: int) -> np.ndarray:
    """Full-batch training losses, one per step, from the same initial weights."""
    images, labels = load_digits(return_X_y=True)
    x, y = (images / 16.0).astype(np.float32), labels
    model = MLP(nnx.Rngs(SEED))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    return np.array([step(model, optimizer) for _ in range(num_steps)])


def main(num_steps: int = NUM_STEPS) -> dict[str, np.ndarray]:
    """Runs the four trainings; returns their losses by name."""
    losses = {
        "adam": train(wdchain.adam(LEARNING_RATE), num_steps),
        "adamw, λ=0": train(wdchain.adamw(LEARNING_RATE, weight_decay=0.0), num_steps),
        f"adam + L2, λ={WEIGHT_DECAY}": train(
            wdchain.adam(LEARNING_RATE, weight_decay=WEIGHT_DECAY), num_steps),
        f"adamw, λ={WEIGHT_DECAY}": train(
            wdchain.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY), num_steps),
    }
    names = list(losses)
    same = np.array_equal(losses[names[0]], losses[names[1]])
    print(f"{names[0]} vs {names[1]}: identical losses at all {num_steps} steps: {same}")
    gap = np.abs(losses[names[2]] - losses[names[3]])
    first = int(np.argmax(gap > 0)) if gap.any() else None
    print(f"{names[2]} vs {names[3]}: the losses first differ after {first} update(s); "
          f"max |Δloss| = {gap.max():.2e}")
    for name, loss in losses.items():
        print(f"  {name:<18} loss: step 1 {loss[0]:.4f}, step {num_steps} {loss[-1]:.4f}")
    return losses


if __name__ == "__main__":
    main()
