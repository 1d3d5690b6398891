"""Arms of an ablation: an arm is a preconditioner and a decay placement of ``build``.

An arm is written ``<preconditioner>-<decay>`` with the builder's names
(:func:`wdchain.build`): ``adam-l2``, ``rmsprop-decoupled``, ``momentum-independent``…
An arm means exactly the optimizer ``build(preconditioner, decay=decay)`` makes, with
the builder's defaults: ``sgd`` is plain SGD and ``momentum`` is SGD with momentum 0.9,
the paper's SGD. Three short names are the paper's optimizers:

=====================  ==========================  ====================================
name                   is                          update
=====================  ==========================  ====================================
``adamw``              ``adam-decoupled``          θ ← θ − lr_t·(u + λθ)  (torch, optax)
``adamw-independent``  ``adam-independent``        θ ← θ − lr_t·u − η_t·λθ  (paper, Alg. 2)
``sgdw``               ``momentum-independent``    θ ← θ − lr_t·b − η_t·λθ  (paper, Alg. 1)
=====================  ==========================  ====================================

Each arm has a default grid: the learning rates depend on the preconditioner (SGD takes
larger steps than the adaptive methods), the weight decays on the placement, since λ
means a different thing in each (a gradient term for ``l2``, a fraction of lr_t per step
for ``decoupled``, a fraction of η_t per step for ``independent``). The spans are those
that put every arm's optimum inside its grid on the MNIST-1D LayerNorm MLP.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import optax

import wdchain
from wdchain.registry import REGISTRY

DECAYS: tuple[str, ...] = tuple(wdchain.DECAYS)
MODIFIERS = {"cautious": ("gate", "cautious"), "init": ("toward", "init")}
SHORT_NAMES = {
    "adamw": "adam-decoupled",
    "adamw-independent": "adam-independent",
    "sgdw": "momentum-independent",
}
# Their λθ enters an unnormalised step (LARS: g + λθ before its ratio, l2 ≡ decoupled).
SGD_FAMILY = ("sgd", "momentum", "lars")

# log10 of the first and last grid value; log-spaced points in between. The learning
# rates come from the builder's registry (each preconditioner's ``lr_span``).
_WD_SPAN_ADAPTIVE = {
    "l2": (-6.0, 0.0),
    "decoupled": (-3.0, 2.0),
    "independent": (-6.5, -1.5),
    "constant": (-6.5, -1.5),
    "corrected": (-3.0, 2.0),  # λ in AdamW's units at the peak: as decoupled
    "stable": (-7.0, -2.0),  # λ·α_t/√v̄: untuned, v̄ is the mean second moment
}
_WD_SPAN_SGD = {
    "l2": (-6.0, -1.0),
    "decoupled": (-5.0, 0.0),
    "independent": (-6.5, -1.5),
    "constant": (-6.5, -1.5),
    "corrected": (-5.0, 0.0),
    "stable": (-7.0, -2.0),
}


def preconditioners() -> tuple[str, ...]:
    """The builder's preconditioners, read from the registry now (so a preconditioner
    registered after import is an arm)."""
    return wdchain.registry.names()


@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm: its name as given, its preconditioner, its decay and build's other axes."""

    name: str
    preconditioner: str
    decay: str
    gate: str | None = None
    toward: str | None = None

    def default_lrs(self, size: int = 8) -> np.ndarray:
        """The arm's default learning-rate grid (log-spaced)."""
        low, high = REGISTRY[self.preconditioner].lr_span
        return np.logspace(low, high, size)

    def default_weight_decays(self, size: int = 8, *, zero: bool = False) -> np.ndarray:
        """The arm's default weight-decay grid (log-spaced; ``zero`` adds λ = 0)."""
        if self.decay == "none":
            return np.zeros(1)
        spans = _WD_SPAN_SGD if self.preconditioner in SGD_FAMILY else _WD_SPAN_ADAPTIVE
        grid = np.logspace(*spans[self.decay], size)
        return np.concatenate([[0.0], grid]) if zero else grid

    def optimizer(
        self, lr: Any, weight_decay: Any, schedule: Any, mask: Any, **extra: Any
    ) -> optax.GradientTransformation:
        """The arm's optimizer; ``lr`` and ``weight_decay`` may be traced scalars.

        A preconditioner for 2-D leaves only (Muon) runs on the matrices, with Adam on the
        other leaves (biases, norm scales), under the same placement, lr and λ. ``extra``
        are more options of :func:`wdchain.build` (e.g. ``mu_dtype``).
        """
        options: dict[str, Any] = dict(extra)
        if REGISTRY[self.preconditioner].matrices_only:
            options["others"] = "adam"
        if self.gate is not None:
            options["gate"] = self.gate
        if self.toward is not None:
            options["toward"] = self.toward
        return wdchain.build(self.preconditioner, decay=self.decay, lr=lr,
                             weight_decay=weight_decay, schedule=schedule, mask=mask, **options)


def default_grids_text() -> str:
    """The default grids, for ``--help``."""

    def span(low: float, high: float) -> str:
        return f"{10**low:.2g}..{10**high:.2g}"

    lr_spans = [f"{name} {span(*REGISTRY[name].lr_span)}" for name in preconditioners()]
    wd_spans = [f"{name} {span(*_WD_SPAN_ADAPTIVE[name])} (sgd, momentum: "
                f"{span(*_WD_SPAN_SGD[name])})" for name in _WD_SPAN_ADAPTIVE]
    return (f"Default grids, log-spaced: learning rates by preconditioner: "
            f"{', '.join(lr_spans)}; weight decays by placement: {', '.join(wd_spans)}; "
            "none: 0.")


def parse_arm(name: str) -> Arm:
    """The arm called ``name``; raises ``ValueError`` naming the valid arms.

    ``<preconditioner>-<decay>``, optionally followed by ``+cautious`` (build's
    ``gate="cautious"``) and/or ``+init`` (``toward="init"``).

    Example:
      >>> parse_arm("adamw")
      Arm(name='adamw', preconditioner='adam', decay='decoupled', gate=None, toward=None)
      >>> parse_arm("sgdw").preconditioner
      'momentum'
    """
    base, *modifiers = name.split("+")
    preconditioner, _, decay = SHORT_NAMES.get(base, base).rpartition("-")
    names = preconditioners()
    if base in names:
        raise ValueError(
            f"arm {name!r} needs a decay placement: {base}-l2 is torch's {base} with "
            f"weight_decay=λ (L2, the gradient gets + λθ; torch.optim.Adam's is adam-l2), "
            f"{base}-decoupled decays like AdamW (adamw = adam-decoupled), "
            f"{base}-independent as Loshchilov & Hutter, {base}-none has no decay"
        )
    unknown = [m for m in modifiers if m not in MODIFIERS]
    if preconditioner not in names or decay not in DECAYS or unknown:
        raise ValueError(
            f"unknown arm {name!r}: use {', '.join(SHORT_NAMES)} or "
            f"<preconditioner>-<decay>[+cautious][+init] with preconditioner in "
            f"{{{', '.join(names)}}} and decay in {{{', '.join(DECAYS)}}} "
            "(e.g. adam-l2, momentum-independent, adamw+cautious)"
        )
    axes = dict(MODIFIERS[m] for m in modifiers)
    return Arm(name, preconditioner, decay, gate=axes.get("gate"), toward=axes.get("toward"))
