"""``sweep``: train a Task for every arm × lr × λ × seed and return one row per cell."""

from __future__ import annotations

import functools
import math
import os
import sys
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import numpy as np

import wdchain
from wdchain.ablate import _checks, _distributed, _layout
from wdchain.ablate._arms import Arm, parse_arm
from wdchain.ablate._axes import Variant, axis_values, task_for, variants
from wdchain.ablate._engine import GridProgram, local_mesh
from wdchain.ablate._fingerprint import fingerprint
from wdchain.ablate._interrupt import Interrupted, stop_on_sigint
from wdchain.ablate._report import CSV_COLUMNS, write_csv
from wdchain.ablate._resume import RunStore, seeds_text
from wdchain.ablate._task import Task

Grid = Sequence[float] | Mapping[str, Sequence[float]] | None


def _grid(name: str, values: Any, arm: Arm, default: np.ndarray, *, allow_zero: bool) -> np.ndarray:
    if isinstance(values, Mapping):
        values = values.get(arm.name)
    if values is None:
        return default
    try:
        grid = np.asarray([float(v) for v in values], np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"sweep: {name} must be a sequence of numbers, got {values!r}") from None
    if grid.size == 0:
        raise ValueError(f"sweep: {name} for arm {arm.name!r} is empty; give at least one value")
    low = "≥ 0" if allow_zero else "> 0"
    bad = [v for v in grid if not (math.isfinite(v) and (v >= 0 if allow_zero else v > 0))]
    if bad:
        raise ValueError(f"sweep: {name} must be finite and {low}, got {bad[0]!r} "
                         f"(arm {arm.name!r})")
    return np.unique(grid)


def _seeds(seeds: Any) -> tuple[int, ...]:
    values = tuple(seeds) if not isinstance(seeds, int) else (seeds,)
    if not values or any(isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 0
                         for s in values):
        raise ValueError(f"sweep: seeds must be integers ≥ 0 (at least one), got {seeds!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"sweep: seeds repeat, got {seeds!r}")
    return tuple(int(s) for s in values)


def run_info(task: Task, seeds: Sequence[int], devices: int | None = None) -> dict[str, Any]:
    """What :func:`write_report` prints as provenance: task, model, epochs, seeds, version,
    the training recipe and what the selection uses."""
    devices = len(jax.local_devices()) if devices is None else devices
    first = task.for_seed(seeds[0])
    assert first.validation is not None
    probe = _checks.check_task(task, seeds[:1])
    return {
        "task": task.name, "model": task.label, "epochs": task.epochs,
        "batch_size": task.batch_size, "seeds": list(seeds), "version": wdchain.__version__,
        "train_examples": None if callable(first.train) else len(first.train[0]),
        "validation_examples": len(first.validation[0]), "test_examples": len(first.test[0]),
        "environment": f"jax {jax.__version__}, {jax.default_backend()} × {devices}",
        "selection": probe.selection, "recipe": task.recipe(),
        "decay_dtype": _checks.low_precision_dtype(probe.decayed),
    }


def sweep(
    task: Task,
    *,
    arms: Sequence[str],
    lrs: Grid = None,
    weight_decays: Grid = None,
    seeds: Sequence[int] = (0,),
    train_sizes: Sequence[int] | None = None,
    widths: Sequence[int] | None = None,
    devices: Sequence[Any] | None = None,
    out: str | Path | None = None,
    fresh: bool | str = False,
    grid_size: int = 8,
    parallel: int | None = None,
    log: Callable[[str], None] | None = None,
    on_chunk: Callable[[str, int, int], None] | None = None,
    report: bool = True,
    trajectories: bool = True,
    layout: str | None = None,
    cells_per_program: int | None = None,
    seeds_per_program: int | None = None,
) -> list[dict[str, Any]]:
    """Trains ``task`` for every arm × lr × λ × seed; one row (a dict) per cell.

    Args:
      task: a :class:`wdchain.ablate.Task`.
      arms: arm names, ``<preconditioner>-<decay>`` of :func:`wdchain.build`
        (``adam-l2``, ``momentum-independent``…) or ``adamw``, ``adamw-independent``,
        ``sgdw``.
      lrs: peak learning rates (> 0): one sequence for every arm, a mapping from arm
        name to a sequence, or None for each arm's default grid.
      weight_decays: λ values (≥ 0; λ = 0 is the no-decay baseline), as for ``lrs``.
      seeds: each changes the initialisation, the batch order, the model's RNGs (and
        the split, for tasks with ``splits``).
      train_sizes: train every grid once per size N, on the first N examples of one
        stratified order of the seed's training split: nested subsets (the smaller
        inside the larger), drawn once, so the same in every seed for a task whose
        splits do not change with the seed. Validation and test are not cut. Rows get
        a ``train_size`` column. None: the whole training split.
      widths: train every grid once per width w, the model built as
        ``task.model(rngs, width=w)``; rows get a ``width`` column.
      devices: the devices to spread each grid's cells over (a 1-D mesh); None: all
        devices, those of every process after ``jax.distributed.initialize`` (then every
        process returns all rows and only process 0 writes files and prints).
      out: a folder: write ``results.csv`` (updated after each arm and seed) and keep
        checkpoints there, so that the same call resumes an interrupted sweep.
      fresh: with ``out``, discard the checkpoints and outputs there and start over,
        keeping the rows of finished (arm, seed) pairs whose configuration is unchanged
        (retraining them would give the same rows); ``"all"`` discards those too.
      grid_size: points of the default grids.
      parallel: how many (arm, seed) grids train at once, each from its own thread.
        None: as many as the CPU has cores on a CPU backend (XLA runs a grid's small
        kernels on about one core, so two grids at once use a 2-core machine fully), one
        on an accelerator. The results do not depend on it.
      log: called with a line of text on resuming (default: print to stderr).

    Before training, the data, the model's output and the loss are checked
    (:mod:`wdchain.ablate._checks`): labels out of range, non-finite inputs, a loss that
    does not return ``(scalar, {name: scalar})`` or an error metric outside [0, 1] are
    refused naming the split, the value and its index. Cells whose decay the params'
    dtype cannot hold (bfloat16) raise a ``wdchain.DecayPrecisionWarning``. With ``out``,
    the first Ctrl-C stops at the end of the chunk in progress (checkpointed, so the same
    call resumes) and raises ``KeyboardInterrupt``; a second one stops at once.
      on_chunk: called as ``on_chunk(arm, seed, epochs)`` after each chunk, with the
        number of epochs it trained (or skipped, on resuming); with ``train_sizes`` or
        ``widths`` ``arm`` names the point too, e.g. ``"adamw (N=1000)"``. With groups of
        cells, the epochs count in proportion to the group's share of the grid (a float).
      layout: how each grid's cells run: ``"vmap"`` (all in one program), ``"groups"``
        (programs of ``cells_per_program`` cells, one after another), ``"loop"`` (one
        cell per device at a time), or None: measured before training by a probe that
        takes at most 10 % of the run's estimated time (:mod:`wdchain.ablate._layout`).
        The choice is logged and recorded in ``run.json``; the results do not depend on
        it (to float tolerance).
      cells_per_program: the most cells one program trains; None: as many as fit in the
        memory (the compiled program's memory analysis against the device's free
        memory, or on a CPU the machine's available memory, 25 % kept free). A grid of
        which not even one cell per device fits is refused before training.
      seeds_per_program: how many seeds one program trains joined (cells × seeds, each
        cell on its own seed's batches; the rows are those of one seed at a time, to
        float tolerance). 1: one seed after another; None: measured by the same probe on
        a GPU or TPU when the joined program fits in memory (1 on a CPU, where one seed
        per program is the faster: :mod:`wdchain.ablate._layout`). Recorded in
        ``run.json`` with the layout.
      report: with ``out``, also write what the command line writes: ``summary.md``,
        ``figure2.png`` and ``heatmap_<arm>.png`` (with no "Command:" line).
      trajectories: with ``out`` and ``report``, also retrain each arm's selected cell
        (first seed) with diagnostics: ``trajectories.csv`` and ``trajectories.png``
        (skipped when the sweep has a train-size or width axis).

    Returns:
      A list of dicts with the keys of ``CSV_COLUMNS``: ``arm`` (the name given),
      ``preconditioner``, ``decay``, ``lr``, ``weight_decay``, ``seed``, ``train_loss``,
      ``validation_loss``, ``validation_error``, ``test_loss``, ``test_error`` (errors
      as fractions in [0, 1]; NaN for a diverged cell) and ``diverged``; with
      ``train_sizes`` or ``widths``, also ``train_size`` or ``width`` (after ``seed``);
      then one key per other metric of the loss on validation and test,
      ``validation_<name>`` and ``test_<name>`` (e.g. ``validation_perplexity``).
    """
    if not isinstance(task, Task):
        raise TypeError(f"sweep: task must be a wdchain.ablate.Task, got {task!r}")
    if isinstance(arms, str):
        arms = [a.strip() for a in arms.split(",") if a.strip()]
    parsed = [parse_arm(name) for name in dict.fromkeys(arms)]
    if not parsed:
        raise ValueError("sweep: arms is empty; give at least one arm, e.g. ['adam-l2', 'adamw']")
    seeds = _seeds(seeds)
    sizes, widths = axis_values("train_sizes", train_sizes), axis_values("widths", widths)
    tasks = {variant: task_for(task, variant, seeds) for variant in variants(sizes, widths)}
    log = log or (lambda line: print(line, file=sys.stderr))
    _checks.check_grid_size(grid_size)
    _checks.check_devices(devices)
    _layout.check_seeds_per_program(seeds_per_program)
    if fresh not in (False, True, "all"):
        raise ValueError(f"sweep: fresh must be False, True or 'all', got {fresh!r}")
    for name, values in (("lrs", lrs), ("weight_decays", weight_decays)):
        _checks.check_grid_mapping(name, values, [arm.name for arm in parsed])
    grids = {arm.name: (_grid("lrs", lrs, arm, arm.default_lrs(grid_size), allow_zero=False),
                        _grid("weight_decays", weight_decays, arm,
                              arm.default_weight_decays(grid_size), allow_zero=True))
             for arm in parsed}
    mesh = local_mesh(devices)
    if parallel is None:
        parallel = (os.cpu_count() or 1) if jax.default_backend() == "cpu" else 1
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
        raise ValueError(f"sweep: parallel must be an integer ≥ 1, got {parallel!r}")
    if _distributed.several():
        # Every process must launch the same programs in the same order: one grid at a
        # time; only the primary process prints.
        parallel = 1
        if not _distributed.primary():
            log, on_chunk = (lambda line: None), None
    if out is not None and not str(out).strip():
        raise ValueError("sweep: out is empty; give a folder (e.g. 'results'), or None to "
                         "write nothing")
    probe = _checks.check_task(task, seeds)
    for variant_task in tasks.values():  # another width may have other outputs
        if variant_task is not task:
            _checks.check_task(variant_task, seeds)
    _warn_lost_decay(parsed, grids, probe)
    store = None
    if out is not None:
        config = {
            "task": task.name, "model": task.label, "epochs": task.epochs,
            "batch_size": task.batch_size, "seeds": list(seeds), **fingerprint(task),
            "recipe": task.recipe(), "arms": [arm.name for arm in parsed], "wdchain": wdchain.__version__,
            "grids": {name: [list(map(float, g)) for g in pair] for name, pair in grids.items()},
        }
        if sizes is not None:
            config["train_sizes"] = list(sizes)
        if widths is not None:
            config["widths"] = list(widths)
        store = _open_store(Path(out), config, fresh, log)
    try:
        plan = functools.partial(_plan, tasks, parsed, seeds, grids, mesh, store, parallel,
                                 log, layout, cells_per_program, seeds_per_program)
        rows = _sweep(tasks, parsed, seeds, grids, mesh, store, out, parallel, log, on_chunk,
                      plan)
    finally:
        if store is not None:
            store.close()
    if out is not None and report:
        from wdchain.ablate._outputs import write_outputs

        write_outputs(task, rows, run_info(task, seeds, mesh.devices.size), out,
                      trajectories=trajectories)
    return rows


def _warn_lost_decay(parsed: Sequence[Arm], grids: dict[str, tuple[np.ndarray, np.ndarray]],
                     probe: _checks.Probe) -> None:
    dtype = _checks.low_precision_dtype(probe.decayed)
    if dtype is None:
        return
    for arm in parsed:
        cell_lrs, cell_wds = (g.ravel() for g in np.meshgrid(*grids[arm.name], indexing="ij"))
        lost = _checks.lost_decay(arm, cell_lrs, cell_wds, probe.decayed)
        if lost:
            warnings.warn(_checks.decay_lost_message(arm.name, lost, len(cell_lrs), dtype),
                          wdchain.DecayPrecisionWarning, stacklevel=3)


def _sweep(tasks: dict[Variant, Task], parsed: list[Arm], seeds: tuple[int, ...],
           grids: dict[str, tuple[np.ndarray, np.ndarray]], mesh: Any, store: RunStore | None,
           out: str | Path | None, parallel: int, log: Callable[[str], None],
           on_chunk: Callable[[str, int, int], None] | None,
           plan: Callable[[dict[Any, GridProgram]], tuple[int | None, int]] = (
               lambda programs: (None, 1)),
           ) -> list[dict[str, Any]]:
    lock = threading.Lock()
    stop = threading.Event()

    def locked(fn: Callable[..., None] | None) -> Any:
        if fn is None:
            return None

        def call(*args: Any) -> None:
            with lock:
                fn(*args)

        return call

    points = list(tasks)
    done: dict[tuple[str, Variant, int], list[dict[str, Any]]] = {}
    pending: list[tuple[Arm, Variant, list[int]]] = []
    for arm in parsed:
        for variant in points:
            unit = arm.name + variant.key()
            pending.append((arm, variant, []))
            for seed in seeds:
                finished = store.finished(unit, seed) if store else None
                if finished is None:
                    pending[-1][2].append(seed)
                else:
                    done[arm.name, variant, seed] = finished

    def ordered() -> list[dict[str, Any]]:
        return [row for arm in parsed for variant in points for seed in seeds
                for row in done.get((arm.name, variant, seed), [])]

    programs: dict[tuple[str, Variant], GridProgram] = {}
    cells_per_program, seeds_per_program = (
        plan(programs) if any(left for *_, left in pending) else (None, 1))
    # A job: an arm and variant for up to seeds_per_program seeds, trained joined.
    todo = [(arm, variant, tuple(left[i:i + seeds_per_program]))
            for arm, variant, left in pending for i in range(0, len(left), seeds_per_program)]
    # The largest training sets first, so that the threads finish together.
    todo.sort(key=lambda job: -(job[1].train_size or 0))

    def program_for(arm: Arm, variant: Variant) -> GridProgram:
        with lock:
            if (arm.name, variant) not in programs:
                cell_lrs, cell_wds = (g.ravel() for g in np.meshgrid(*grids[arm.name],
                                                                      indexing="ij"))
                programs[arm.name, variant] = GridProgram(
                    tasks[variant], arm, cell_lrs, cell_wds, mesh,
                    cells_per_program=cells_per_program)
            return programs[arm.name, variant]

    def train(arm: Arm, variant: Variant, joined: tuple[int, ...]) -> None:
        unit = arm.name + variant.key()
        if stop.is_set():
            raise Interrupted(f"stopped before {unit} {seeds_text(joined)}")
        try:
            seed_rows = _train(program_for(arm, variant), arm, variant, joined, store,
                               locked(log), locked(on_chunk), stop)
        except BaseException:
            stop.set()  # the others stop at their next chunk boundary
            raise
        with lock:
            for seed in joined:
                if store:
                    store.finish(unit, seed, seed_rows[seed])
                done[arm.name, variant, seed] = seed_rows[seed]
            if store and len(joined) > 1:
                store.discard(unit, joined)
            if out is not None and _distributed.primary():
                write_csv(ordered(), Path(out) / "results.csv")

    if todo:
        with stop_on_sigint(log, stop) if store is not None else _nothing():
            with ThreadPoolExecutor(min(parallel, len(todo))) as pool:
                futures = [pool.submit(train, *job) for job in todo]
            failures = [error for f in futures if (error := f.exception()) is not None]
            if failures:  # a fault before an interruption it caused
                raise min(failures, key=lambda e: isinstance(e, Interrupted))
    rows = ordered()
    if out is not None and _distributed.primary():
        write_csv(rows, Path(out) / "results.csv")
    _distributed.barrier("wdchain-sweep-end")
    return rows


def _open_store(out: Path, config: dict[str, Any], fresh: bool | str,
                log: Callable[[str], None]) -> RunStore:
    """The run's folder: opened (checked, cleared, locked) by the primary process; the
    others open it once the primary has, and stop with its error if it could not."""
    if not _distributed.several():
        return RunStore(out, config, fresh=fresh, log=log)
    store, error = None, None
    if _distributed.primary():
        try:
            store = RunStore(out, config, fresh=fresh, log=log)
        except ValueError as failure:
            error = str(failure)
    error = _distributed.agree(error)
    if error is not None:
        if store is not None:
            store.close()
        raise ValueError(error)
    _distributed.barrier("wdchain-store-open")
    return store or RunStore(out, config, fresh=fresh, log=log, primary=False)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: Any) -> None:
        return None


def _train(program: GridProgram, arm: Arm, variant: Variant, seeds: tuple[int, ...],
           store: RunStore | None, log: Callable[[str], None],
           on_chunk: Callable[[str, int, int], None] | None,
           stop: threading.Event | None = None) -> dict[int, list[dict[str, Any]]]:
    """Trains ``seeds`` (several: joined in one program) group by group; each seed's rows."""
    whole = len(program.groups) == 1
    unit = arm.name + variant.key()
    shown = arm.name + (f" ({variant.label()})" if variant.label() else "")
    rows: dict[int, list[dict[str, Any]]] = {seed: [] for seed in seeds}
    for group, cells in enumerate(program.groups):
        part = None if whole else cells
        share = len(cells) / program.cells

        def progress(epochs: int, share: float = share) -> None:
            if on_chunk is not None and epochs:
                for seed in seeds:
                    on_chunk(shown, seed, epochs if whole else epochs * share)  # type: ignore[arg-type]

        finished = store.finished(unit, seeds, part) if store and part else None
        if finished is not None:
            progress(program.task.epochs)
            for row in finished:
                rows[row["seed"]].append(row)
            continue
        group_rows = _train_group(program, arm, variant, seeds, group, part, store, log,
                                  progress, stop)
        if store is not None and part is not None:
            store.finish(unit, seeds, [row for seed in seeds for row in group_rows[seed]], part)
        for seed in seeds:
            rows[seed] += group_rows[seed]
    return rows


def _train_group(program: GridProgram, arm: Arm, variant: Variant, seeds: tuple[int, ...],
                 group: int, part: range | None, store: RunStore | None,
                 log: Callable[[str], None], progress: Callable[[int], None],
                 stop: threading.Event | None) -> dict[int, list[dict[str, Any]]]:
    carry = program.initial_carry(seeds, group)
    epoch = 0
    unit = arm.name + variant.key()
    where = f" ({variant.label()})" if variant.label() else ""
    what = f"{arm.name}{where} {seeds_text(seeds)}" + (
        f" cells {part.start}-{part.stop - 1}" if part else "")
    if store is not None:
        restored = store.restore(unit, seeds, carry, part)
        if restored is not None:
            epoch, carry = restored
            log(f"resumed {what} from its checkpoint after epoch {epoch} "
                f"of {program.task.epochs}")
    progress(epoch)
    while epoch < program.task.epochs:
        start = epoch
        carry, epoch = program.train_chunk(carry, seeds, epoch, group)
        if store is not None and epoch < program.task.epochs:
            store.save(unit, seeds, epoch, carry, part)
        progress(epoch - start)
        if stop is not None and stop.is_set() and epoch < program.task.epochs:
            raise Interrupted(f"stopped {what} after epoch {epoch}")
    rows: dict[int, list[dict[str, Any]]] = {}
    for seed, metrics in zip(seeds, program.evaluate_seeds(carry, seeds, group)):
        rows[seed] = []
        for k, cell in enumerate(program.groups[group]):
            row = dict(zip(CSV_COLUMNS, (
                arm.name, arm.preconditioner, arm.decay, float(program.cell_lrs[cell]),
                float(program.cell_weight_decays[cell]), seed,
                *(float(getattr(metrics, field)[k]) for field in (
                    "train_loss", "validation_loss", "validation_error", "test_loss",
                    "test_error")),
                bool(metrics.diverged[k]),
            ))) | {name: float(values[k]) for name, values in metrics.extra.items()}
            rows[seed].append(with_axes(row, variant.columns()))
    return rows


def with_axes(row: dict[str, Any], axes: dict[str, int]) -> dict[str, Any]:
    """``row`` with the extra axes' columns right after ``seed``."""
    if not axes:
        return row
    items = list(row.items())
    at = [key for key, _ in items].index("seed") + 1
    return dict(items[:at] + list(axes.items()) + items[at:])


def _plan(tasks: dict[Variant, Task], parsed: list[Arm], seeds: tuple[int, ...],
          grids: dict[str, tuple[np.ndarray, np.ndarray]], mesh: Any,
          store: RunStore | None, parallel: int, log: Callable[[str], None],
          layout: str | None, cells_per_program: int | None, seeds_per_program: int | None,
          programs: dict[tuple[str, Variant], GridProgram]) -> tuple[int | None, int]:
    """The cells per program of every arm (None: all) and the seeds per program, chosen
    by ``_layout.plan`` for the largest arm's grid (of the widest variant), logged and
    recorded in ``run.json``; its compiled program joins ``programs``."""
    recorded = _distributed.agree(store.recorded("layout") if store is not None else None)
    processes = jax.process_count()
    if isinstance(recorded, dict) and recorded.get("processes", 1) != processes:
        raise ValueError(
            f"sweep: the run in this out folder was started with {recorded.get('processes', 1)} "
            f"process(es) over {recorded.get('devices')} device(s); this one has {processes} "
            f"over {mesh.devices.size}. Resume it with {recorded.get('processes', 1)} "
            "process(es) (the checkpoints are laid out for those devices), or start over "
            "with fresh=True (--fresh)")
    if (layout is None and cells_per_program is None and seeds_per_program is None
            and isinstance(recorded, dict)):
        size = int(recorded["cells_per_program"])
        joined = int(recorded.get("seeds_per_program", 1))
        log(f"layout {recorded['layout']}, {size} cells per program"
            f"{_layout.joined_text(joined)} (as recorded in run.json)")
        if store is not None:
            store.record({"layout": recorded})
        return (None if recorded["layout"] == "vmap" else size), joined
    variant = max(tasks, key=lambda v: (v.width or 0, v.train_size or 0))
    task = tasks[variant]
    cells = {arm.name: np.meshgrid(*grids[arm.name], indexing="ij")[0].size for arm in parsed}
    steps = sum(t.epochs * t.for_seed(seeds[0]).train_steps_per_epoch() for t in tasks.values())
    largest = max(parsed, key=lambda arm: cells[arm.name])
    cell_lrs, cell_wds = (g.ravel() for g in np.meshgrid(*grids[largest.name], indexing="ij"))
    chosen, program = _layout.plan(
        task, largest, cell_lrs, cell_wds, mesh, layout=layout,
        cells_per_program=cells_per_program, cell_steps=sum(cells.values()) * len(seeds) * steps,
        parallel=min(parallel, len(parsed) * len(seeds)), seed=seeds[0],
        seeds_per_program=seeds_per_program, seeds=seeds, log=log)
    log(chosen.describe())
    if store is not None:
        store.record({"layout": {**chosen.as_json(), "processes": processes,
                                 "devices": int(mesh.devices.size)}})
    if program is not None:
        programs[largest.name, variant] = program
    return (None if chosen.layout == "vmap" else chosen.cells_per_program,
            chosen.seeds_per_program)
