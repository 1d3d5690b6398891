"""Named runs: what ``python -m wdchain.ablate`` runs with no arguments, and the paper's Fig. 2."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Preset:
    """A run: task, arms, seeds, grid size and epochs."""

    task: str
    arms: tuple[str, ...]
    seeds: tuple[int, ...]
    grid_size: int
    epochs: int
    about: str


PRESETS = {
    "default": Preset(
        task="mnist1d",
        arms=("adam-l2", "adamw-independent"),
        seeds=(0, 1, 2),
        grid_size=8,
        epochs=60,
        about="the headline in minutes: Adam + L2 against AdamW with the paper's scaling on "
        "MNIST-1D, 3 seeds, 8 × 8 grids, 60 epochs",
    ),
    "paper": Preset(
        task="mnist1d",
        arms=("adam-l2", "adamw", "adamw-independent", "momentum-l2", "momentum-decoupled",
              "sgdw"),
        seeds=(0, 1, 2),
        grid_size=8,
        epochs=100,
        about="Loshchilov & Hutter's Fig. 2: Adam and SGD-momentum × L2, torch-scaled and "
        "paper-scaled decoupled decay, 3 seeds, 8 × 8 grids, 100 epochs",
    ),
}
