"""Arms of the ablation: an arm name is a preconditioner and a decay placement.

An arm is written ``<preconditioner>-<decay>``, e.g. ``adam-l2``, ``rmsprop-decoupled``
or ``sgd-independent``, with the builder's names (``wdchain.build``). In the runner
``sgd`` is SGD with momentum 0.9 (the builder's ``momentum``), as in the paper. Three
short names are the paper's optimizers:

=====================  =======================  ====================================
name                   is                       update
=====================  =======================  ====================================
``adamw``              ``adam-decoupled``       θ ← θ − lr_t·(u + λθ)  (torch, optax)
``adamw-independent``  ``adam-independent``     θ ← θ − lr_t·u − η_t·λθ  (paper, Alg. 2)
``sgdw``               ``sgd-independent``      θ ← θ − lr_t·b − η_t·λθ  (paper, Alg. 1)
=====================  =======================  ====================================

``sgdw`` uses the *independent* scaling because that is the paper's SGDW (Algorithm 1:
the decay is multiplied by the schedule multiplier η_t, not by the learning rate), the
scaling in which the paper claims the optimal λ no longer depends on the learning rate;
``sgd-decoupled`` gives torch's scaling.

Each arm has a default grid: the learning rates depend on the preconditioner (SGD takes
larger steps than the adaptive methods), the weight decays on the placement (λ means a
different thing in each: a gradient term for ``l2``, a fraction of lr_t per step for
``decoupled``, a fraction per step for ``independent`` and ``constant``). On the digits
MLP (60 epochs, seed 0) each of the five default arms has its best cell inside its
grid, not on an edge; the other adaptive preconditioners reuse Adam's grid, untuned.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import optax

import wdchain

# The builder's names; "sgd" stands for its "momentum" (μ = 0.9).
PRECONDITIONERS = tuple(name for name in wdchain.PRECONDITIONERS if name != "momentum")
DECAYS = wdchain.PLACEMENTS
SHORT_NAMES = {
    "adamw": "adam-decoupled",
    "adamw-independent": "adam-independent",
    "sgdw": "sgd-independent",
}
DEFAULT_ARMS = ("adam-l2", "adamw", "adamw-independent", "sgd-l2", "sgdw")
GRID_SIZE = 6

# log10 of the first and last grid value; GRID_SIZE log-spaced points in between.
_LR_SPAN = {"sgd": (-2.5, 0.0), "adagrad": (-2.5, 0.0)}
_ADAPTIVE_LR_SPAN = (-3.5, -1.0)
_WD_SPAN = {
    "none": (0.0, 0.0),
    "l2": (-6.0, -1.0),
    "decoupled": (-4.0, 1.0),
    "independent": (-6.0, -1.0),
    "constant": (-6.0, -1.0),
}


@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm: its name as given, its preconditioner and its decay placement."""

    name: str
    preconditioner: str
    decay: str

    def default_lrs(self) -> np.ndarray:
        """The arm's default learning-rate grid (log-spaced)."""
        low, high = _LR_SPAN.get(self.preconditioner, _ADAPTIVE_LR_SPAN)
        return np.logspace(low, high, GRID_SIZE)

    def default_wds(self) -> np.ndarray:
        """The arm's default weight-decay grid (log-spaced; zero for ``none``)."""
        if self.decay == "none":
            return np.zeros(1)
        return np.logspace(*_WD_SPAN[self.decay], GRID_SIZE)

    def optimizer(
        self, lr: Any, weight_decay: Any, schedule: Any, mask: Any
    ) -> optax.GradientTransformation:
        """The arm's optimizer; ``lr`` and ``weight_decay`` may be traced scalars."""
        options = {"momentum": 0.9} if self.preconditioner == "sgd" else {}
        preconditioner = "momentum" if self.preconditioner == "sgd" else self.preconditioner
        return wdchain.build(
            preconditioner,
            decay=self.decay,
            lr=lr,
            weight_decay=weight_decay,
            schedule=schedule,
            mask=mask,
            **options,
        )


def default_grids_text() -> str:
    """The default grids, for ``--help``."""

    def span(low: float, high: float) -> str:
        return f"{10**low:.2g}..{10**high:.2g}"

    lr_spans = [f"{name} {span(*_LR_SPAN.get(name, _ADAPTIVE_LR_SPAN))}"
                for name in PRECONDITIONERS]
    wd_spans = [f"{name} {span(*_WD_SPAN[name])}" for name in DECAYS if name != "none"]
    return (f"Default grids, {GRID_SIZE} log-spaced values each: learning rates by "
            f"preconditioner: {', '.join(lr_spans)}; weight decays by placement: "
            f"{', '.join(wd_spans)} (none: 0).")


def parse_arm(name: str) -> Arm:
    """The arm called ``name``; raises ``ValueError`` naming the valid arms.

    Example:
      >>> parse_arm("adamw")
      Arm(name='adamw', preconditioner='adam', decay='decoupled')
      >>> parse_arm("rmsprop-l2").decay
      'l2'
    """
    preconditioner, _, decay = SHORT_NAMES.get(name, name).partition("-")
    if preconditioner not in PRECONDITIONERS or decay not in DECAYS:
        raise ValueError(
            f"unknown arm {name!r}: use {', '.join(SHORT_NAMES)} or "
            f"<preconditioner>-<decay> with preconditioner in {{{', '.join(PRECONDITIONERS)}}} "
            f"and decay in {{{', '.join(DECAYS)}}}"
        )
    return Arm(name, preconditioner, decay)
