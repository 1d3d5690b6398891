"""How a grid's cells run, chosen by measuring: one program, groups, or one cell at a time.

A grid of cells can train as

- ``vmap``: every cell in one vmapped program (the fastest for small dense models,
  whose per-cell matmuls batch well);
- ``groups``: programs of ``cells_per_program`` cells, one group after another, each
  group trained for all its epochs before the next starts (only one group's state is
  held at a time, so a grid larger than the memory still runs);
- ``loop``: one cell per device per program, the cells one after another (the program
  compiles once: lr and λ are traced values).

The three train the same cells on the same batches from the same initial weights, so
they give the same results to float tolerance. Each can also train several seeds joined
(``seeds_per_program``: one program of cells × seeds, each cell on its own seed's
batches; :class:`~wdchain.ablate._engine.GridProgram`), rather than one seed after
another. Which is fastest depends on the model, so with ``layout=None`` :func:`plan`
measures: it compiles a short program of each candidate size (one cell per device, then 4×, 16×… as many, up to all the cells or
as many as fit in memory), times ``PROBE_STEPS`` steps of it, and keeps the fastest per
grid (its padding counted), preferring fewer programs within ``PROBE_TOLERANCE``. The probe stops before it would exceed ``PROBE_SHARE`` of the run's
estimated time; runs too short to probe keep the largest size that fits. On the
backends of ``JOIN_BACKENDS``, a run of several seeds then probes the fastest size with
all its seeds joined, when they fit and the budget allows, and keeps whichever is
faster per cell and step. A CPU is not among them: there one seed per program was the
faster (three seeds joined took 1.02–1.28× as long per cell and step, 1.03–1.21× with
two programs at once; 64 cells of the MNIST-1D MLP, ``benchmarks/sweep.py
--joined-seeds 3``); ``seeds_per_program`` still selects it there.

Memory: the largest group that fits is read from the compiled program's own memory
analysis (``.compile().memory_analysis()``: arguments, outputs and temporaries, less
what is aliased), scaled per cell (the larger of training a chunk and evaluating
``EVAL_BATCH`` examples), against the free memory of each device
(``memory_stats()``) or, on a CPU, the memory the machine has available, of which
``MEMORY_MARGIN`` is left unused.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from wdchain.ablate import _distributed
from wdchain.ablate._arms import Arm
from wdchain.ablate._engine import EVAL_BATCH, GridProgram
from wdchain.ablate._task import Task

LAYOUTS = ("vmap", "groups", "loop")
PROBE_SHARE = 0.10
"""The probe may take at most this share of the run's estimated time."""
PROBE_STEPS = 2
PROBE_TOLERANCE = 0.10
"""A smaller program size must be faster per grid than a larger one by more than this
share to be chosen (see :func:`fewest_programs_within`)."""
NOMINAL_FLOPS = 5e9
"""FLOP/s per device assumed to estimate a run's time before anything is measured (small
models reach 1-30 GFLOP/s on a CPU core; the probe then re-estimates from what it measures)."""
MEMORY_MARGIN = 0.25
"""Share of the available memory left unused when choosing how many cells fit."""
JOIN_BACKENDS = ("gpu", "cuda", "rocm", "tpu")
"""Backends on which the probe measures seeds joined in one program (see the module)."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """How each arm's grid runs, and why.

    Attributes:
      layout: ``vmap``, ``groups`` or ``loop``.
      cells_per_program: cells trained by one program run.
      seconds_per_cell_step: measured for each probed size (empty when not probed).
      probe_seconds: what the probe took (compiles included).
      cell_bytes: memory per cell from the compiled program's analysis (0: not read).
      available_bytes: the memory the choice was made against (0: not read).
      reason: one line on how the layout was chosen.
      seeds_per_program: seeds trained joined by one program (1: one seed at a time).
      joined_seconds_per_cell_step: the probe's time with every seed joined (None: not
        probed).
    """

    layout: str
    cells_per_program: int
    seconds_per_cell_step: dict[int, float]
    probe_seconds: float
    cell_bytes: float
    available_bytes: float
    reason: str
    seeds_per_program: int = 1
    joined_seconds_per_cell_step: float | None = None

    def as_json(self) -> dict[str, Any]:
        """What ``run.json`` records."""
        return {
            "layout": self.layout, "cells_per_program": self.cells_per_program,
            "probe": {str(k): v for k, v in self.seconds_per_cell_step.items()},
            "probe_seconds": round(self.probe_seconds, 3),
            "cell_megabytes": round(self.cell_bytes / 2**20, 3),
            "available_megabytes": round(self.available_bytes / 2**20, 1),
            "reason": self.reason, "seeds_per_program": self.seeds_per_program,
            **({} if self.joined_seconds_per_cell_step is None else
               {"probe_joined": self.joined_seconds_per_cell_step}),
        }

    def describe(self) -> str:
        """The line the log shows."""
        probe = ", ".join(f"{size} cells {1e3 * seconds:.2f} ms"
                          for size, seconds in self.seconds_per_cell_step.items())
        if self.joined_seconds_per_cell_step is not None:
            probe += f", seeds joined {1e3 * self.joined_seconds_per_cell_step:.2f} ms"
        probed = f"; per cell-step: {probe} (probe {self.probe_seconds:.1f} s)" if probe else ""
        return (f"layout {self.layout}, {self.cells_per_program} cells per program"
                f"{joined_text(self.seeds_per_program)}: {self.reason}{probed}")


def joined_text(seeds_per_program: int) -> str:
    """`` × 3 seeds`` for seeds joined in one program, nothing for one seed."""
    return f" × {seeds_per_program} seeds" if seeds_per_program > 1 else ""


def layout_name(size: int, cells: int, devices: int) -> str:
    """``vmap`` (all the cells), ``loop`` (one per device) or ``groups``."""
    if size >= cells:
        return "vmap"
    return "loop" if size <= devices else "groups"


def available_memory(device: Any, parallel: int) -> tuple[float, bool]:
    """(bytes free for one grid, whether the devices share them): a device's own free
    memory (``memory_stats()``), or the host's available memory (a CPU)."""
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - backends without the statistics
        stats = None
    if stats and "bytes_limit" in stats:
        return float(stats["bytes_limit"] - stats.get("bytes_in_use", 0)) / parallel, False
    return _host_available() / parallel, True


def _host_available() -> float:
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def program_bytes(compiled: Any) -> float:
    """Arguments + outputs − aliased + temporaries of a compiled program (0: unknown)."""
    try:
        stats = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - backends without the analysis
        return 0.0
    if stats is None:
        return 0.0
    return float(stats.argument_size_in_bytes + stats.output_size_in_bytes
                 - stats.alias_size_in_bytes + stats.temp_size_in_bytes)


class _Probe:
    """A compiled ``PROBE_STEPS``-step program of ``size`` cells (× the seeds of a
    tuple, joined), ready to time."""

    def __init__(self, task: Task, arm: Arm, lrs: np.ndarray, weight_decays: np.ndarray,
                 mesh: Any, size: int, seed: int | tuple[int, ...] = 0):
        start = time.perf_counter()
        take = np.arange(size) % len(lrs)
        self.program = GridProgram(task, arm, lrs[take], weight_decays[take], mesh)
        program = self.program
        seeds = (seed,) if isinstance(seed, int) else seed
        self.seeds = len(seeds)
        self.carry = program.initial_carry(seed)
        joined = self.seeds > 1
        x, y = (program.joined_batches(seeds, range(1)) if joined else
                program.batches(seeds[0], range(1)))
        steps = min(PROBE_STEPS, len(x))
        self.batches = _distributed.put((x[:steps], y[:steps]), program._replicated)
        self.steps = steps
        self.hyper = program.cell_hyperparams(0, self.seeds)
        self.keys = program.step_keys(seed, range(1))[:steps]
        run = program._run_joined if joined else program._run_chunk
        self.compiled = run.lower(self.carry, *self.hyper, self.batches, self.keys).compile()
        self.compile_seconds = time.perf_counter() - start

    def seconds_per_cell_step(self) -> float:
        """Runs the program three times; the faster of the last two runs' time per cell
        and step (the first warms the caches; the minimum is the least disturbed by
        other work on the machine)."""
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            self.carry = self.compiled(self.carry, *self.hyper, self.batches, self.keys)
            jax.block_until_ready(self.carry)
            runs.append(time.perf_counter() - start)
        return min(runs[1:]) / (self.steps * self.program.padded * self.seeds)


def plan(task: Task, arm: Arm, lrs: np.ndarray, weight_decays: np.ndarray, mesh: Any, *,
         layout: str | None, cells_per_program: int | None, cell_steps: float,
         parallel: int = 1, seed: int = 0, seeds_per_program: int | None = 1,
         seeds: Sequence[int] | None = None,
         log: Callable[[str], None] | None = None) -> tuple[Plan, GridProgram | None]:
    """How ``arm``'s grid of ``lrs × weight_decays`` cells runs (see the module).

    Args:
      layout: ``vmap``, ``groups``, ``loop`` or None (measure).
      cells_per_program: the cells one program trains; None: as many as fit.
      cell_steps: the run's training steps summed over every cell, arm and seed.
      parallel: grids trained at once (they share the memory).
      seed: the first seed to train.
      seeds_per_program: the seeds one program trains joined; None: measured on the
        backends of ``JOIN_BACKENDS``, else 1.
      seeds: the run's seeds (None: ``seed`` alone).

    Returns:
      The plan, and the all-cells program of ``arm`` (its first chunk compiled, to read
      its memory analysis) when the plan keeps all the cells in one program, else None.
    """
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"sweep: layout must be one of {', '.join(LAYOUTS)} or None "
                         f"(measure), got {layout!r}")
    if cells_per_program is not None and (
            isinstance(cells_per_program, bool) or not isinstance(cells_per_program, int)
            or cells_per_program < 1):
        raise ValueError(f"sweep: cells_per_program must be an integer ≥ 1 or None (as many "
                         f"as fit), got {cells_per_program!r}")
    check_seeds_per_program(seeds_per_program)
    run_seeds = tuple(seeds) if seeds is not None else (seed,)
    joined = min(seeds_per_program or 1, len(run_seeds))  # given, else 1 unless measured
    cells, devices = len(lrs), mesh.devices.size
    started = time.perf_counter()
    full = GridProgram(task, arm, lrs, weight_decays, mesh)
    memory = _Memory(full, seed, parallel)
    # On several processes the primary's figures decide, so that all take the same path.
    memory.fit, memory.cell, memory.available = _distributed.agree(
        [memory.fit, memory.cell, memory.available])
    if memory.fit < devices:
        raise ValueError(
            f"sweep: one cell per device does not fit: a cell needs "
            f"{memory.cell / 2**20:,.1f} MB (parameters, optimizer state and a step's "
            f"activations, from the compiled program's memory analysis) and a chunk's "
            f"batches {memory.batches / 2**20:,.1f} MB; {memory.available / 2**20:,.0f} MB "
            f"are available per device ({MEMORY_MARGIN:.0%} kept free, {parallel} grid(s) at "
            "once); use a smaller model or batch, fewer grids at once (parallel=1), or a "
            "device with more memory")
    fit = memory.fit // joined  # cells of each joined seed
    if fit < devices:
        raise ValueError(
            f"sweep: seeds_per_program={seeds_per_program} does not fit: {joined} seeds × "
            f"one cell per device need {joined * devices} cells' memory, about "
            f"{memory.fit} cells fit; use seeds_per_program=1 (one seed at a time) or None")
    largest = min(cells, fit)
    times: dict[int, float] = {}
    seeds_probed: list[float] = []

    def done(size: int, reason: str, seeds_joined: int = joined) -> tuple[Plan, GridProgram | None]:
        chosen = Plan(layout_name(size, cells, devices), size, times,
                      time.perf_counter() - started, memory.cell, memory.available, reason,
                      seeds_joined, seeds_probed[0] if seeds_probed else None)
        return chosen, (full if size >= cells else None)

    def probe(size: int, seeds: int | tuple[int, ...]) -> _Probe:
        return _Probe(task, arm, lrs, weight_decays, mesh, size, seeds)

    if cells_per_program is not None:
        size = min(cells_per_program, cells)
        if layout is not None and layout_name(size, cells, devices) != layout and not (
                layout == "groups" and size < cells):
            raise ValueError(
                f"sweep: layout={layout!r} contradicts cells_per_program={cells_per_program} "
                f"for a grid of {cells} cells over {devices} device(s); give one of them")
        if size > fit:
            _warn(log, f"cells_per_program={cells_per_program} may not fit: about "
                       f"{fit} cells fit in the available memory"
                       + (f" with {joined} seeds per program" if joined > 1 else ""))
        return done(size, f"cells_per_program={cells_per_program} was given")
    if layout == "vmap":
        if cells > fit:
            raise ValueError(
                f"sweep: layout='vmap' needs all {cells} cells in one program, about "
                f"{memory.need(cells * joined) / 2**20:,.0f} MB per device, but "
                f"{memory.available / 2**20:,.0f} MB are available ({MEMORY_MARGIN:.0%} kept "
                f"free); about {fit} cells fit"
                + (f" with {joined} seeds per program" if joined > 1 else "")
                + ": use layout='groups' or None")
        return done(cells, "layout='vmap' was given")
    if layout == "loop":
        return done(devices, "layout='loop' was given")
    sizes = _candidates(cells, devices, largest)
    if layout == "groups":
        sizes = [size for size in sizes if devices < size < cells] or [largest]
    if len(sizes) == 1:
        return done(sizes[0], "the only size that fits" if sizes[0] < cells else
                    "one cell per device is all the cells")
    estimate = _estimated_seconds(full, memory, cell_steps, devices)
    budget = PROBE_SHARE * estimate
    if layout is None and _distributed.agree(
            time.perf_counter() - started + 3 * memory.compile_seconds > budget):
        return done(largest, f"the run is estimated at {estimate:.0f} s (its FLOPs at "
                    f"{NOMINAL_FLOPS / 1e9:.0f} GFLOP/s per device), too short to probe "
                    f"within {PROBE_SHARE:.0%} of it; the largest size that fits")
    reason = "the fastest per cell and step of those probed"
    probed = run_seeds[:joined] if joined > 1 else seed
    for size in sizes:
        first = probe(size, probed)
        times[size] = _distributed.agree(first.seconds_per_cell_step())
        best = min(times.values())
        # From now on the run is estimated from what was measured, not the nominal rate
        # (which may be far off either way: 14x slow for a 33M-parameter MLP on a CPU).
        budget = PROBE_SHARE * best * cell_steps
        spent = time.perf_counter() - started
        following = [s for s in sizes if s > size]
        if following and _distributed.agree(
                spent + first.compile_seconds * 1.5 + 3 * PROBE_STEPS * best * following[0]
                > budget):
            reason = (f"probed up to {size} cells within {PROBE_SHARE:.0%} of the run's "
                      f"estimated {best * cell_steps:.0f} s; the fastest per cell")
            break
    fastest = fewest_programs_within(PROBE_TOLERANCE, {
        # A grid of 36 cells in groups of 16 trains 3 groups of 16: time the padding too.
        size: seconds * padded_cells(size, cells, devices) for size, seconds in times.items()})
    every = len(run_seeds)
    if (seeds_per_program is None and every > 1 and jax.default_backend() in JOIN_BACKENDS
            and fastest * every <= memory.fit and not _distributed.agree(
                time.perf_counter() - started + first.compile_seconds * 1.5
                + 3 * PROBE_STEPS * times[fastest] * fastest * every > budget)):
        seeds_probed.append(_distributed.agree(
            probe(fastest, run_seeds).seconds_per_cell_step()))
        if seeds_probed[0] < times[fastest]:
            return done(fastest, f"{reason}; all {every} seeds joined were faster",
                        seeds_joined=every)
        reason += f"; one seed per program was faster than all {every} joined"
    return done(fastest, reason)


def check_seeds_per_program(seeds_per_program: Any) -> None:
    """Refuses a ``seeds_per_program`` that is not None or an integer ≥ 1."""
    if seeds_per_program is not None and (
            isinstance(seeds_per_program, bool)
            or not isinstance(seeds_per_program, int | np.integer) or seeds_per_program < 1):
        raise ValueError(f"sweep: seeds_per_program must be an integer ≥ 1 (1: one seed at a "
                         f"time) or None (measured), got {seeds_per_program!r}")


def fewest_programs_within(tolerance: float, seconds: dict[int, float]) -> int:
    """The largest program size whose time is within ``1 + tolerance`` of the fastest's.

    Each extra group adds what the probe's steps do not see (its evaluation, checkpoints and
    dispatches), and a probe's time moves by several per cent with other work on the
    machine: a smaller size is chosen only when it is clearly faster.

    Example:
      >>> fewest_programs_within(0.10, {4: 30.2, 16: 34.4, 72: 32.4})
      72
      >>> fewest_programs_within(0.10, {4: 20.0, 72: 32.4})
      4
    """
    best = min(seconds.values())
    return max(size for size, value in seconds.items() if value <= (1 + tolerance) * best)


def padded_cells(size: int, cells: int, devices: int) -> int:
    """Cell slots trained for ``cells`` cells in programs of ``size`` (every group has the
    same size, rounded up to a multiple of the devices).

    Example:
      >>> padded_cells(16, 36, 1), padded_cells(36, 36, 1), padded_cells(3, 8, 2)
      (48, 36, 12)
    """
    size = min(size, cells)
    return math.ceil(cells / size) * math.ceil(size / devices) * devices


def _estimated_seconds(program: GridProgram, memory: _Memory, cell_steps: float,
                       devices: int) -> float:
    """The run's time from one cell's step's FLOPs at ``NOMINAL_FLOPS`` per device."""
    one = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), memory.carry)
    batch = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), memory.batch)
    scalar = jax.ShapeDtypeStruct((), np.float32)
    try:
        # With a step key: a model that draws Dropout from the step's RNGs needs one.
        analysis: Any = jax.jit(program.cell_step).lower(
            one.params, one.opt_state, one.rest, scalar, scalar, batch,
            jax.random.key(0)).cost_analysis()
        flops = float(analysis["flops"])
    except Exception:  # noqa: BLE001 - backends without the analysis
        return math.inf
    return flops * cell_steps / (NOMINAL_FLOPS * devices)


class _Memory:
    """What one program of all the cells needs per device, and how many cells fit."""

    def __init__(self, program: GridProgram, seed: int, parallel: int):
        start = time.perf_counter()
        compiled = program.compile_chunk(seed)
        self.compile_seconds = time.perf_counter() - start
        self.carry = program.carry_shapes(seed)
        x, y = program.batches(seed, range(min(program.chunk, program.task.epochs)))
        self.batch = (x, y)
        devices = program.mesh.devices.size
        self.batches = float(x.nbytes + y.nbytes)  # replicated: every device holds them
        per_device = program_bytes(compiled)
        cells_per_device = program.padded // devices
        self.cell = max(per_device - self.batches, 0.0) / cells_per_device
        # Evaluating a chunk of examples can need more per cell than training (a
        # transformer's 1,000 windows: 118 MB per cell against 12 MB to train).
        self.cell = max(self.cell, _evaluation_bytes(program, seed) / cells_per_device)
        available, shared = available_memory(program.mesh.devices.flat[0], parallel)
        self.available = available / (devices if shared else 1)
        usable = (1 - MEMORY_MARGIN) * self.available - self.batches
        if per_device <= 0:
            self.fit = 2**62
        else:
            self.fit = max(0, int(usable // max(self.cell, 1.0))) * devices

    def need(self, cells: int) -> float:
        """Bytes per device for ``cells`` cells in one program."""
        return self.batches + self.cell * cells


def _evaluation_bytes(program: GridProgram, seed: int) -> float:
    """Bytes per device of evaluating the largest chunk of examples, less the chunk."""
    task = program.task_for(seed)
    splits: list[Any] = [split for split in (task.validation, task.test, task.train)
                         if split is not None and not callable(split)]
    count = min(EVAL_BATCH, max(len(split[0]) for split in splits))
    chunk = tuple(jax.ShapeDtypeStruct((count, *np.shape(a)[1:]), np.asarray(a).dtype,
                                       sharding=program._replicated) for a in splits[0])
    carry = program.carry_shapes(seed)
    compiled = program._evaluate.lower(carry.params, carry.opt_state, carry.rest,
                                       chunk).compile()
    return max(program_bytes(compiled) - sum(c.size * c.dtype.itemsize for c in chunk), 0.0)


def _candidates(cells: int, devices: int, largest: int) -> list[int]:
    """One cell per device, then ×4 each, up to ``largest`` (itself included)."""
    sizes, size = [], devices
    while size < largest:
        sizes.append(size)
        size *= 4
    sizes.append(largest)
    return sorted({min(s, cells) for s in sizes})


def _warn(log: Callable[[str], None] | None, line: str) -> None:
    if log is not None:
        log(line)
