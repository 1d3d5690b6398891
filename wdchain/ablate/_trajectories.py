"""Decay at work: the selected cell of each arm retrained, with diagnostics every step.

:func:`trace` trains one cell (an arm at one lr and λ, one seed) exactly as the grid
does, and records :func:`wdchain.decay_diagnostics` of the decayed weights taken as
one group: ‖θ‖, the angular update per step, ‖g‖/‖θ‖ and the decay's share of the
update (against the same step without decay: ``build(..., decay="none")`` from the
same state). Per-epoch means come back as arrays; the runner plots them beside the
heatmaps (``trajectories.png``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx

import wdchain
from wdchain.ablate import _step
from wdchain.ablate._arms import Arm
from wdchain.ablate._engine import GridProgram, _split, local_mesh
from wdchain.ablate._task import Task

METRICS = ("param_norm", "angular_update", "grad_ratio", "decay_share")
GROUP = "decayed"


def trace(task: Task, arm: Arm, lr: float, weight_decay: float, seed: int = 0
          ) -> dict[str, np.ndarray]:
    """Per-epoch means of the decayed weights' diagnostics for one cell.

    Returns ``{metric: array of shape (epochs,)}`` for the metrics of ``METRICS``
    (``decay_share`` is left out for an arm that decays toward a target, whose
    undecayed twin has another state).
    """
    program = GridProgram(task, arm, np.array([lr]), np.array([weight_decay]),
                          local_mesh(jax.local_devices()[:1]))
    tx = program.optimizer(lr, weight_decay)
    plain_arm = dataclasses.replace(arm, decay="none", gate=None)
    plain = None if arm.toward is not None else _step.optimizer(
        task, plain_arm, lr, 0.0, program.schedule)
    model = task.model(nnx.Rngs(seed))
    model.train()
    graph, params, rest = _split(model)
    mask = wdchain.decay_mask if task.mask is None else task.mask
    mask_tree = mask(params) if callable(mask) else mask
    groups = jax.tree.map(lambda keep: GROUP if keep else "other", mask_tree)
    gradient = _step.gradient(task, graph, program.call)

    def step(carry, inputs):
        params, opt_state, rest = carry
        batch, key = inputs
        _, grads, rest = gradient(params, rest, batch, key)
        updates, new_state = tx.update(grads, opt_state, params)
        undecayed = None if plain is None else plain.update(grads, opt_state, params)[0]
        stats = wdchain.decay_diagnostics(params, updates, grads, undecayed=undecayed,
                                          groups=groups)
        stats = {key.split("/")[-1]: value for key, value in stats.items()
                 if key.startswith(GROUP + "/")}
        return (optax.apply_updates(params, updates), new_state, rest), stats

    epoch_fn = jax.jit(lambda carry, batches: jax.lax.scan(step, carry, batches))
    carry = (params, tx.init(params), rest)
    means: dict[str, list[float]] = {}
    for epoch in range(task.epochs):
        steps = range(epoch * program.steps_per_epoch, (epoch + 1) * program.steps_per_epoch)
        carry, stats = epoch_fn(carry, (program.batches(seed, range(epoch, epoch + 1)),
                                        _step.step_keys(seed, steps)))
        for key, values in stats.items():
            means.setdefault(key, []).append(float(np.mean(values)))
    return {key: np.asarray(means[key]) for key in METRICS if key in means}


def write_trajectories(traces: dict[str, dict[str, np.ndarray]], info: dict[str, Any],
                       out: Path) -> None:
    """``trajectories.csv`` (arm, epoch, metric, value) and ``trajectories.png``."""
    from matplotlib.figure import Figure

    from wdchain.ablate._figures import provenance

    with (out / "trajectories.csv").open("w") as file:
        file.write("arm,epoch,metric,value\n")
        for arm, metrics in traces.items():
            for metric, values in metrics.items():
                for epoch, value in enumerate(values, 1):
                    file.write(f"{arm},{epoch},{metric},{float(value)!r}\n")
    titles = {"param_norm": "‖θ‖ of the decayed weights",
              "angular_update": "angular update per step (rad)",
              "grad_ratio": "‖g‖ / ‖θ‖", "decay_share": "decay's share of the update"}
    figure = Figure(figsize=(12, 3.4), layout="constrained")
    axes: Sequence[Any] = figure.subplots(1, len(METRICS))
    for ax, metric in zip(axes, METRICS):
        for arm, metrics in traces.items():
            if metric in metrics:
                ax.plot(np.arange(1, len(metrics[metric]) + 1), metrics[metric], label=arm)
        ax.set_title(titles[metric], fontsize=9)
        ax.set_xlabel("epoch")
        if metric in ("angular_update", "grad_ratio"):
            ax.set_yscale("log")
    axes[0].legend(fontsize=7)
    figure.suptitle("Each arm's selected cell retrained (seed 0): the decayed weights over "
                    "training", fontsize=10)
    figure.supxlabel(provenance(info), fontsize=7, color="0.3")
    figure.savefig(out / "trajectories.png", dpi=100)
