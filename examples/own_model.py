"""Sweep weight decay on your own Flax model: a Task, then ``sweep``.

The model here is a small MLP with BatchNorm and Dropout (state besides the params:
running statistics and an RNG stream), on scikit-learn's digits with a split of our
own. Nothing in it is special to wdchain: any ``rngs -> nnx.Module`` works, with any
``(model, (x, y)) -> (loss, metrics)`` loss. No validation split is given, so the
sweep holds out a stratified 20 % of ``train`` for selection; ``test`` is only
reported.

Run: ``python examples/own_model.py`` (about a minute on a 2-core CPU).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from flax import nnx
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from wdchain.ablate import Task, sweep


class Net(nnx.Module):
    """64 → 64 → BatchNorm → ReLU → Dropout → 10."""

    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(64, 64, rngs=rngs)
        self.norm = nnx.BatchNorm(64, rngs=rngs)
        self.drop = nnx.Dropout(0.2, rngs=rngs)
        self.out = nnx.Linear(64, 10, rngs=rngs)

    def __call__(self, x):
        return self.out(self.drop(nnx.relu(self.norm(self.hidden(x)))))


def make_task(epochs: int = 20) -> Task:
    """Digits in [0, 1], a fixed 75 / 25 train / test split."""
    images, labels = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        (images / 16).astype(np.float32), labels.astype(np.int32), test_size=0.25,
        stratify=labels, random_state=0)
    return Task(Net, (x_train, y_train), (x_test, y_test), batch_size=64, epochs=epochs,
                name="digits (own split)", model_name="Net: BatchNorm + Dropout MLP")


def main(epochs: int = 20, out: str | Path = "results/own_model") -> list[dict]:
    task = make_task(epochs)
    # With out=, the sweep writes what the command line writes: results.csv, summary.md,
    # figure2.png, a heatmap per arm (trajectories skipped here, to keep it quick).
    rows = sweep(task, arms=["adam-l2", "adamw-independent"],
                 lrs=[1e-3, 3e-3, 1e-2, 3e-2], weight_decays=[0, 1e-4, 1e-3, 1e-2, 1e-1],
                 seeds=(0, 1), out=out, fresh=True, trajectories=False)
    print((Path(out) / "summary.md").read_text())
    return rows


if __name__ == "__main__":
    main(epochs=int(sys.argv[1]) if len(sys.argv) > 1 else 20)
