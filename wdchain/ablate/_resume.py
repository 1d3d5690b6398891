"""Resuming a sweep: a manifest, finished (arm, seed) rows, and orbax checkpoints.

The output folder holds ``run.json`` (what was asked for, with the fingerprint of the
model, loss and data: :mod:`._fingerprint`), and ``.wdchain-ablate/``: one JSON file of
rows per finished (arm, seed) and orbax checkpoints of the grid in progress, written
after every chunk of ceil(epochs / 10) epochs. Started again with the same
configuration, a sweep skips the finished (arm, seed) pairs and restarts the one in
progress from its last checkpoint; the same compiled program then runs on the same
state, so the CSV is the same as an uninterrupted run's. A folder holding another
configuration's run is refused, naming what differs, never overwritten.

Seeds trained joined in one program (``seeds_per_program``) checkpoint as one unit
(``checkpoint-<arm>-seeds0+1``; a group's rows ``rows-<arm>-seeds0+1-cells<a>-<b>.json``);
once it finishes, each seed's rows are stored as a seed's own and the unit's files dropped.

Every rows file and checkpoint carries the key of its own (arm, seed) configuration and
is refused under another (so a deleted ``run.json`` cannot let old results through).
The last two checkpoints are kept, each with a checksum of its arrays: a checkpoint that
does not read back or whose arrays fail their checksum is skipped, with a message, for
the one before it, or for the start of that (arm, seed). ``fresh=True`` discards
checkpoints and outputs but keeps the rows of finished (arm, seed) pairs whose
configuration is unchanged (the same program on the same state gives the same rows);
``fresh="all"`` discards those too. The folder is locked while a sweep runs
(:mod:`._lock`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from wdchain.ablate._fingerprint import differences
from wdchain.ablate._integrity import checksums
from wdchain.ablate._lock import FolderLock

MANIFEST = "run.json"
STATE = ".wdchain-ablate"
OUTPUTS = ("results.csv", "summary.md", "figure2.png", "trajectories.csv", "trajectories.png")
OWNED_GLOBS = ("heatmap_*.png", "scaling_*.png", "*.tmp")
KEEP_CHECKPOINTS = 2
_RUN_WIDE = ("seeds", "arms", "grids")  # the rest of the config applies to every (arm, seed)
RECORDED = ("layout",)  # how the run was laid out: in run.json, not part of its identity


Seeds = int | tuple[int, ...]
"""One seed, or the seeds trained joined in one program (one seed's tuple: that seed)."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written: the run stops rather than lose its progress."""


def _atomic_write(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def safe_name(text: str) -> str:
    """``text`` as one file-name component: no separator, no leading dot."""
    return re.sub(r"[^A-Za-z0-9+=,._-]", "_", text).lstrip(".") or "_"


def _read_json(path: Path, fix: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"sweep: cannot read {path} ({error}); it is damaged or truncated: "
                         f"{fix}") from None


class RunStore:
    """The output folder of one sweep configuration.

    Args:
      out: the folder.
      config: what determines the results (run.json).
      fresh: False, True (discard checkpoints and outputs, keep finished rows of an
        unchanged configuration) or ``"all"`` (discard everything the run owns).
      log: where messages go.
      lock: take the folder's lock (the primary process of a multi-process run).
    """

    def __init__(self, out: Path, config: dict[str, Any], *, fresh: bool | str,
                 log: Callable[[str], None], lock: bool = True, primary: bool = True):
        self.out, self.config, self.log = Path(out), config, log
        self._lock = threading.Lock()  # seeds may train (and checkpoint) in threads
        self._recorded: dict[str, Any] = {}
        self.primary = primary  # the others of a multi-process run read, never write
        self._folder_lock = None
        if not primary:
            return
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(f"sweep: cannot create out={str(out)!r}: {error}") from None
        self._folder_lock = FolderLock(self.out, log) if lock else None
        try:
            self._open(fresh)
        except BaseException:
            self.close()
            raise

    def _open(self, fresh: bool | str) -> None:
        out, config = self.out, self.config
        manifest = out / MANIFEST
        if fresh:
            self._discard(everything=fresh == "all")
        elif manifest.exists():
            previous = _read_json(manifest, "use fresh=True (--fresh) to start over (finished "
                                  "(arm, seed) rows whose configuration is unchanged are "
                                  "kept), or another out folder")
            if isinstance(previous, dict):
                self._recorded = {k: previous.pop(k) for k in RECORDED if k in previous}
            if previous != config:
                differ = differences(previous if isinstance(previous, dict) else {}, config)
                raise ValueError(
                    f"sweep: out={str(out)!r} holds another run (it differs in: "
                    f"{', '.join(differ)}); use another out folder, or fresh=True (--fresh) "
                    "to replace it"
                )
        elif any((out / name).exists() for name in OUTPUTS[:3]):
            raise ValueError(
                f"sweep: out={str(out)!r} holds results of a run with no {MANIFEST}; use "
                "another out folder, or fresh=True (--fresh) to replace them"
            )
        (out / STATE).mkdir(exist_ok=True)
        _atomic_write(manifest, json.dumps(config, indent=1, sort_keys=True))

    def _discard(self, *, everything: bool) -> None:
        """Removes what a run owns in ``out``; finished rows of this config stay unless
        ``everything``."""
        state = self.out / STATE
        if state.exists():
            for path in state.iterdir():
                keep = (not everything and path.name.startswith("rows-")
                        and self._rows_of_this_config(path))
                if not keep:
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
        for name in (MANIFEST, *OUTPUTS):
            (self.out / name).unlink(missing_ok=True)
        for pattern in OWNED_GLOBS:
            for path in self.out.glob(pattern):
                path.unlink()

    def _rows_of_this_config(self, path: Path) -> bool:
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        return (isinstance(stored, dict) and isinstance(stored.get("unit"), str)
                and stored.get("key") == self.key(stored["unit"]))

    def close(self) -> None:
        """Releases the folder's lock."""
        if self._folder_lock is not None:
            self._folder_lock.release()
            self._folder_lock = None

    def key(self, arm: str) -> str:
        """A hash of what determines (arm, any seed)'s rows: the config, this arm's grid."""
        mine = {k: v for k, v in self.config.items() if k not in _RUN_WIDE}
        # A sweep's extra axes name their units arm@train_size1000: the grid is the arm's.
        mine["grid"] = self.config.get("grids", {}).get(arm.split("@")[0])
        mine["arm"] = arm
        return hashlib.sha256(json.dumps(mine, sort_keys=True).encode()).hexdigest()[:16]

    def _rows_path(self, arm: str, seed: Seeds, cells: range | None = None) -> Path:
        return self.out / STATE / f"rows-{safe_name(arm)}-{_seed_name(seed)}{_part(cells)}.json"

    def _checkpoint_dir(self, arm: str, seed: Seeds, cells: range | None = None) -> Path:
        return (self.out / STATE
                / f"checkpoint-{safe_name(arm)}-{_seed_name(seed)}{_part(cells)}").absolute()

    def record(self, extra: dict[str, Any]) -> None:
        """Adds ``extra`` (how the run is laid out, ``RECORDED`` keys) to ``run.json``."""
        if self.primary:
            _atomic_write(self.out / MANIFEST,
                          json.dumps({**self.config, **extra}, indent=1, sort_keys=True))

    def recorded(self, name: str) -> Any:
        """A ``RECORDED`` entry of the ``run.json`` found on opening, or None."""
        return self._recorded.get(name)

    def finished(self, arm: str, seed: Seeds,
                 cells: range | None = None) -> list[dict[str, Any]] | None:
        """The rows of a finished (arm, seed), or of its ``cells``, or None (``seed``: a
        tuple for seeds trained joined, whose groups store rows of all of them)."""
        path = self._rows_path(arm, seed, cells)
        if not path.exists():
            return None
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            self.log(f"{path} is damaged ({error}): {arm} {seeds_text(seed)} trains again")
            path.unlink()
            return None
        if not isinstance(stored, dict) or stored.get("key") != self.key(arm):
            raise ValueError(
                f"sweep: {path} holds the rows of {arm} {seeds_text(seed)} under another "
                f"configuration than this run's ({MANIFEST} was changed or removed); use "
                "fresh=True (--fresh) to train it again, or another out folder"
            )
        return list(stored["rows"])

    def finish(self, arm: str, seed: Seeds, rows: list[dict[str, Any]],
               cells: range | None = None) -> None:
        """Stores the rows of a finished (arm, seed), or of its group of ``cells``, and
        drops its checkpoints (for a whole (arm, seed), its groups' files too)."""
        if not self.primary:
            return
        _atomic_write(self._rows_path(arm, seed, cells), json.dumps({"key": self.key(arm),
                                                                     "unit": arm, "rows": rows}))
        shutil.rmtree(self._checkpoint_dir(arm, seed, cells), ignore_errors=True)
        if cells is None:
            self.discard(arm, seed)

    def discard(self, arm: str, seed: Seeds) -> None:
        """Drops the checkpoints of (arm, seed) and its groups' files (for seeds trained
        joined, once each seed's rows are stored)."""
        if not self.primary:
            return
        shutil.rmtree(self._checkpoint_dir(arm, seed), ignore_errors=True)
        prefix = f"{safe_name(arm)}-{_seed_name(seed)}-cells"
        for path in (self.out / STATE).glob(f"*-{prefix}*"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()

    def save(self, arm: str, seed: Seeds, epoch: int, carry: Any,
             cells: range | None = None) -> None:
        """Checkpoints the grid in progress after ``epoch`` epochs (orbax), with its key and
        the checksums of its arrays; keeps the last ``KEEP_CHECKPOINTS``."""
        import orbax.checkpoint as ocp

        leaves = [_plain(leaf) for leaf in jax.tree.leaves(carry)]
        meta = {"key": self.key(arm), "epoch": epoch, "checksums": checksums(leaves)}
        directory = self._checkpoint_dir(arm, seed, cells)
        try:
            if self.primary:  # a damaged one, set aside
                shutil.rmtree(directory / str(epoch), ignore_errors=True)
            with self._lock, ocp.CheckpointManager(
                    directory, options=ocp.CheckpointManagerOptions(
                        max_to_keep=KEEP_CHECKPOINTS, enable_async_checkpointing=False)
            ) as manager:
                manager.save(epoch, args=ocp.args.Composite(
                    state=ocp.args.StandardSave({"leaves": leaves}),
                    meta=ocp.args.JsonSave(meta)), force=True)
                manager.wait_until_finished()
        except Exception as error:  # noqa: BLE001 - any failure: stop, say where and why
            raise CheckpointWriteError(
                f"cannot write the checkpoint of {arm} {seeds_text(seed)} after epoch {epoch} to "
                f"{directory}: {type(error).__name__}: {error}. The run stops here; make the "
                "folder writable (or free space) and run the same command to resume from "
                "the last checkpoint written"
            ) from error

    def restore(self, arm: str, seed: Seeds, template: Any,
                cells: range | None = None) -> tuple[int, Any] | None:
        """(epoch, carry) of the last sound checkpoint of (arm, seed) (or of its group of
        ``cells``), or None."""
        import orbax.checkpoint as ocp

        directory = self._checkpoint_dir(arm, seed, cells)
        if not directory.exists():
            return None
        leaves, treedef = jax.tree.flatten(template)
        abstract = [jax.ShapeDtypeStruct(np.shape(p), p.dtype, sharding=_sharding(p))
                    for p in map(_plain, leaves)]
        steps = sorted((int(p.name) for p in directory.iterdir() if p.name.isdigit()),
                       reverse=True)
        with ocp.CheckpointManager(directory) as manager:
            for epoch in steps:
                where = (f"checkpoint {directory / str(epoch)} ({arm} {seeds_text(seed)}, "
                         f"epoch {epoch})")
                try:
                    meta = manager.restore(epoch, args=ocp.args.Composite(
                        meta=ocp.args.JsonRestore()))["meta"]
                except Exception as error:  # noqa: BLE001 - damaged: fall back
                    self._set_aside(directory, epoch, f"{where} is unreadable "
                                    f"({type(error).__name__})")
                    continue
                if not isinstance(meta, dict) or meta.get("key") != self.key(arm):
                    raise ValueError(
                        f"sweep: {where} was written under another configuration than this "
                        f"run's ({MANIFEST} was changed or removed); use fresh=True (--fresh) "
                        "to discard checkpoints (finished rows of this configuration are kept)"
                    )
                try:
                    restored = manager.restore(epoch, args=ocp.args.Composite(
                        state=ocp.args.StandardRestore({"leaves": abstract})))["state"]
                    values = list(restored["leaves"])
                    sound = checksums(values) == meta.get("checksums")
                except Exception as error:  # noqa: BLE001 - damaged: fall back
                    self._set_aside(directory, epoch, f"{where} is unreadable "
                                    f"({type(error).__name__}: {str(error)[:200]})")
                    continue
                if not sound:
                    self._set_aside(directory, epoch, f"{where} fails its checksum (damaged "
                                    "on disk)")
                    continue
                values = [_like(value, leaf) for value, leaf in zip(values, leaves)]
                return epoch, jax.tree.unflatten(treedef, values)
        if steps:
            self.log(f"no sound checkpoint of {arm} {seeds_text(seed)}: it trains from the "
                     "start")
        return None

    def _set_aside(self, directory: Path, epoch: int, why: str) -> None:
        """Removes a damaged checkpoint, saying so: the one before it is tried next."""
        if self.primary:
            shutil.rmtree(directory / str(epoch), ignore_errors=True)
        self.log(f"{why}; removed it, trying the one before it")


def _seed_name(seed: Seeds) -> str:
    """``seed3`` for one seed, ``seeds0+1+2`` for seeds trained joined."""
    seeds = (seed,) if isinstance(seed, int) else seed
    return f"seed{seeds[0]}" if len(seeds) == 1 else "seeds" + "+".join(map(str, seeds))


def seeds_text(seed: Seeds) -> str:
    """``seed 3`` for one seed, ``seeds 0, 1, 2`` for seeds trained joined."""
    seeds = (seed,) if isinstance(seed, int) else seed
    return f"seed {seeds[0]}" if len(seeds) == 1 else "seeds " + ", ".join(map(str, seeds))


def _part(cells: range | None) -> str:
    """The file-name suffix of a group of cells (none for a whole grid)."""
    return "" if cells is None else f"-cells{cells.start}-{cells.stop}"


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
