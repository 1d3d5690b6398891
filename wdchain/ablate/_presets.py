"""Named runs: what ``python -m wdchain.ablate`` runs with no arguments, and the paper's Fig. 2."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from wdchain.ablate._arms import parse_arm


@dataclasses.dataclass(frozen=True)
class Preset:
    """A run: task, arms, seeds, grid size and epochs (and grids or axes where they are fixed)."""

    task: str
    arms: tuple[str, ...]
    seeds: tuple[int, ...]
    grid_size: int
    epochs: int
    about: str
    lrs: Sequence[float] | Mapping[str, Sequence[float]] | None = None
    weight_decays: Sequence[float] | Mapping[str, Sequence[float]] | None = None
    train_sizes: tuple[int, ...] | None = None
    widths: tuple[int, ...] | None = None
    layout: str | None = None
    """How the grids' cells run unless ``--layout``, ``--cells-per-program`` or ``--task`` is
    given (None: measured by the probe). Fixed, it makes the preset's CSV the same byte for
    byte from run to run: a layout chosen by timing may differ between runs, and two layouts
    round the same sums differently."""


PRESETS = {
    "default": Preset(
        task="mnist1d",
        arms=("adam-l2", "adamw-independent"),
        seeds=(0, 1, 2, 3),
        grid_size=8,
        epochs=50,
        # Adam + L2's good region is a diagonal that ran past the corner of the arm's
        # default λ grid (10^-6 … 1): one decade more puts its end inside.
        # A mapping names every arm's grid (a missing arm is refused): AdamW's is its default.
        weight_decays={"adam-l2": tuple(np.logspace(-6.0, 1.0, 9)),
                       "adamw-independent": tuple(
                           parse_arm("adamw-independent").default_weight_decays(8))},
        layout="vmap",  # its grids fit in one program; fixed for byte-identical reruns
        about="the headline in minutes: Adam + L2 against AdamW with the paper's scaling on "
        "MNIST-1D, 4 seeds, 8 × 9 and 8 × 8 grids, 50 epochs",
    ),
    "paper": Preset(
        task="mnist1d",
        arms=("adam-l2", "adamw", "adamw-independent", "momentum-l2", "momentum-decoupled",
              "sgdw"),
        seeds=(0, 1, 2),
        grid_size=8,
        epochs=100,
        layout="vmap",  # its grids fit in one program; fixed for byte-identical reruns
        about="Loshchilov & Hutter's Fig. 2: Adam and SGD-momentum × L2, torch-scaled and "
        "paper-scaled decoupled decay, 3 seeds, 8 × 8 grids, 100 epochs",
    ),
    "scaling": Preset(
        task="mnist1d-scaling",
        arms=("adamw", "adamw-independent"),
        seeds=(0, 1, 2),
        grid_size=13,
        epochs=40,
        lrs=(3e-3, 1e-2),
        weight_decays={"adamw": tuple(np.logspace(-2.0, 2.5, 13)),
                       "adamw-independent": tuple(np.logspace(-4.5, 0.0, 13))},
        train_sizes=(1000, 2000, 4000, 8000),
        layout="vmap",  # its grids fit in one program; fixed for byte-identical reruns
        about="Wang & Aitchison's rule, λ* ∝ 1/N: torch- and paper-scaled AdamW at lr 3e-3 "
        "and 1e-2, 13 λ, on nested MNIST-1D training sets of 1,000 to 8,000, 3 seeds, 40 "
        "epochs",
    ),
    "lm": Preset(
        task="transformer",
        arms=("adamw", "adam-l2"),
        seeds=(0,),
        grid_size=6,
        epochs=12,
        lrs=tuple(np.logspace(-2.75, -1.25, 6)),
        weight_decays={"adamw": tuple(np.logspace(-1.5, 1.5, 6)),
                       "adam-l2": tuple(np.logspace(-5.0, 0.0, 6))},
        # One cell at a time: as fast per cell-step as the probe's other sizes on a 2-core
        # CPU (within its noise), no probe, and 1.4 GB at peak instead of up to 9 GB (a
        # vmapped evaluation needs 118 MB per cell).
        layout="loop",
        about="a small transformer: AdamW against Adam + L2 on a character-level model of the "
        "standard library's docstrings (2 layers of width 32, warmup_cosine(0.05), clipping "
        "to norm 1, matrices decayed), 1 seed, 6 × 6 grids, 12 epochs",
    ),
}
