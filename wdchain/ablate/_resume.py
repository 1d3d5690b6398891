"""Resuming a sweep: a manifest, finished (arm, seed) rows, and orbax checkpoints.

The output folder holds ``run.json`` (what was asked for), and ``.wdchain-ablate/``:
one JSON file of rows per finished (arm, seed) and an orbax checkpoint of the grid in
progress, written after every chunk of ceil(epochs / 10) epochs. Started again with
the same configuration, a sweep skips the finished (arm, seed) pairs and restarts the
one in progress from its last checkpoint; the same compiled program then runs on the
same state, so the CSV is the same as an uninterrupted run's. A folder holding another
configuration's run is refused, never overwritten; ``fresh=True`` clears it first.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

MANIFEST = "run.json"
STATE = ".wdchain-ablate"
OUTPUTS = ("results.csv", "summary.md", "figure2.png", "trajectories.csv", "trajectories.png")


def _atomic_write(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


class RunStore:
    """The output folder of one sweep configuration."""

    def __init__(self, out: Path, config: dict[str, Any], *, fresh: bool,
                 log: Callable[[str], None]):
        self.out, self.config, self.log = Path(out), config, log
        self._lock = threading.Lock()  # seeds may train (and checkpoint) in threads
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(f"sweep: cannot create out={str(out)!r}: {error}") from None
        manifest = self.out / MANIFEST
        if fresh:
            shutil.rmtree(self.out / STATE, ignore_errors=True)
            for name in (MANIFEST, *OUTPUTS):
                (self.out / name).unlink(missing_ok=True)
            for png in self.out.glob("heatmap_*.png"):
                png.unlink()
        elif manifest.exists():
            previous = json.loads(manifest.read_text())
            if previous != config:
                differ = sorted(key for key in set(previous) | set(config)
                                if previous.get(key) != config.get(key))
                raise ValueError(
                    f"sweep: out={str(out)!r} holds another run (it differs in: "
                    f"{', '.join(differ)}); use another out folder, or fresh=True (--fresh) "
                    "to replace it"
                )
        elif any((self.out / name).exists() for name in OUTPUTS):
            raise ValueError(
                f"sweep: out={str(out)!r} holds results of a run with no {MANIFEST}; use "
                "another out folder, or fresh=True (--fresh) to replace them"
            )
        (self.out / STATE).mkdir(exist_ok=True)
        _atomic_write(manifest, json.dumps(config, indent=1, sort_keys=True))

    def _rows_path(self, arm: str, seed: int) -> Path:
        return self.out / STATE / f"rows-{arm}-seed{seed}.json"

    def _checkpoint_dir(self, arm: str, seed: int) -> Path:
        return (self.out / STATE / f"checkpoint-{arm}-seed{seed}").absolute()

    def finished(self, arm: str, seed: int) -> list[dict[str, Any]] | None:
        """The rows of a finished (arm, seed), or None."""
        path = self._rows_path(arm, seed)
        return json.loads(path.read_text()) if path.exists() else None

    def finish(self, arm: str, seed: int, rows: list[dict[str, Any]]) -> None:
        """Stores the rows of a finished (arm, seed) and drops its checkpoint."""
        _atomic_write(self._rows_path(arm, seed), json.dumps(rows))
        shutil.rmtree(self._checkpoint_dir(arm, seed), ignore_errors=True)

    def save(self, arm: str, seed: int, epoch: int, carry: Any) -> None:
        """Checkpoints the grid in progress after ``epoch`` epochs (orbax)."""
        import orbax.checkpoint as ocp

        leaves = [_plain(leaf) for leaf in jax.tree.leaves(carry)]
        with self._lock, ocp.CheckpointManager(self._checkpoint_dir(arm, seed),
                                   options=ocp.CheckpointManagerOptions(max_to_keep=1)) as manager:
            manager.save(epoch, args=ocp.args.StandardSave({"leaves": leaves}))
            manager.wait_until_finished()

    def restore(self, arm: str, seed: int, template: Any) -> tuple[int, Any] | None:
        """(epoch, carry) of the last checkpoint of (arm, seed), or None."""
        import orbax.checkpoint as ocp

        directory = self._checkpoint_dir(arm, seed)
        if not directory.exists():
            return None
        with ocp.CheckpointManager(directory) as manager:
            epoch = manager.latest_step()
            if epoch is None:
                return None
            leaves, treedef = jax.tree.flatten(template)
            abstract = [jax.ShapeDtypeStruct(np.shape(p), p.dtype, sharding=_sharding(p))
                        for p in map(_plain, leaves)]
            restored = manager.restore(epoch, args=ocp.args.StandardRestore({"leaves": abstract}))
        values = [_like(value, leaf) for value, leaf in zip(restored["leaves"], leaves)]
        return int(epoch), jax.tree.unflatten(treedef, values)


def _plain(leaf: Any) -> Any:
    """PRNG key arrays as their raw data (orbax stores plain arrays)."""
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(leaf)
    return leaf


def _like(value: Any, template: Any) -> Any:
    if jax.dtypes.issubdtype(template.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(value, impl=jax.random.key_impl(template))
    return value


def _sharding(leaf: Any) -> Any:
    return getattr(leaf, "sharding", None)
