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
they give the same results to float tolerance. Which is fastest depends on the model,
so with ``layout=None`` :func:`plan` measures: it compiles a short program of each
candidate size (one cell per device, then 4×, 16×… as many, up to all the cells or
as many as fit in memory), times ``PROBE_STEPS`` steps of it, and keeps the fastest per
cell and step. The probe stops before it would exceed ``PROBE_SHARE`` of the run's
estimated time; runs too short to probe keep the largest size that fits.

Memory: the largest group that fits is read from the compiled program's own memory
analysis (``.compile().memory_analysis()``: arguments, outputs and temporaries, less
what is aliased), scaled per cell, against the free memory of each device
(``memory_stats()``) or, on a CPU, the memory the machine has available, of which
``MEMORY_MARGIN`` is left unused.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from wdchain.ablate import _distributed
from wdchain.ablate._arms import Arm
from wdchain.ablate._engine import GridProgram
from wdchain.ablate._task import Task

LAYOUTS = ("vmap", "groups", "loop")
PROBE_SHARE = 0.10
"""The probe may take at most this share of the run's estimated time."""
PROBE_STEPS = 2
NOMINAL_FLOPS = 5e9
"""FLOP/s per device assumed to estimate a run's time before anything is measured (small
models reach 1-30 GFLOP/s on a CPU core; the probe then re-estimates from what it measures)."""
MEMORY_MARGIN = 0.25
"""Share of the available memory left unused when choosing how many cells fit."""


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
    """

    layout: str
    cells_per_program: int
    seconds_per_cell_step: dict[int, float]
    probe_seconds: float
    cell_bytes: float
    available_bytes: float
    reason: str

    def as_json(self) -> dict[str, Any]:
        """What ``run.json`` records."""
        return {
            "layout": self.layout, "cells_per_program": self.cells_per_program,
            "probe": {str(k): v for k, v in self.seconds_per_cell_step.items()},
            "probe_seconds": round(self.probe_seconds, 3),
            "cell_megabytes": round(self.cell_bytes / 2**20, 3),
            "available_megabytes": round(self.available_bytes / 2**20, 1),
            "reason": self.reason,
        }

    def describe(self) -> str:
        """The line the log shows."""
        probe = ", ".join(f"{size} cells {1e3 * seconds:.2f} ms"
                          for size, seconds in self.seconds_per_cell_step.items())
        probed = f"; per cell-step: {probe} (probe {self.probe_seconds:.1f} s)" if probe else ""
        return (f"layout {self.layout}, {self.cells_per_program} cells per program: "
                f"{self.reason}{probed}")


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
    """A compiled ``PROBE_STEPS``-step program of ``size`` cells, ready to time."""

    def __init__(self, task: Task, arm: Arm, lrs: np.ndarray, weight_decays: np.ndarray,
                 mesh: Any, size: int, seed: int = 0):
        start = time.perf_counter()
        take = np.arange(size) % len(lrs)
        self.program = GridProgram(task, arm, lrs[take], weight_decays[take], mesh)
        program = self.program
        self.carry = program.initial_carry(seed)
        x, y = program.batches(seed, range(1))
        steps = min(PROBE_STEPS, len(x))
        self.step_bytes = sum(a[0].nbytes for a in (x, y))
        self.batches = _distributed.put((x[:steps], y[:steps]), program._replicated)
        self.steps = steps
        self.hyper = program.cell_hyperparams()
        self.keys = program.step_keys(seed, range(1))[:steps]
        self.compiled = program._run_chunk.lower(self.carry, *self.hyper, self.batches,
                                                 self.keys).compile()
        self.compile_seconds = time.perf_counter() - start

    def seconds_per_cell_step(self) -> float:
        """Runs the program twice; the second run's time per cell and step."""
        for _ in range(2):
            start = time.perf_counter()
            self.carry = self.compiled(self.carry, *self.hyper, self.batches, self.keys)
            jax.block_until_ready(self.carry)
            seconds = time.perf_counter() - start
        return seconds / (self.steps * self.program.padded)


def plan(task: Task, arm: Arm, lrs: np.ndarray, weight_decays: np.ndarray, mesh: Any, *,
         layout: str | None, cells_per_program: int | None, cell_steps: float,
         parallel: int = 1, seed: int = 0,
         log: Callable[[str], None] | None = None) -> tuple[Plan, GridProgram | None]:
    """How ``arm``'s grid of ``lrs × weight_decays`` cells runs (see the module).

    Args:
      layout: ``vmap``, ``groups``, ``loop`` or None (measure).
      cells_per_program: the cells one program trains; None: as many as fit.
      cell_steps: the run's training steps summed over every cell, arm and seed.
      parallel: grids trained at once (they share the memory).
      seed: the first seed to train.

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
    cells, devices = len(lrs), mesh.devices.size
    started = time.perf_counter()
    full = GridProgram(task, arm, lrs, weight_decays, mesh)
    memory = _Memory(full, seed, parallel)
    # On several processes the primary's figures decide, so that all take the same path.
    memory.fit, memory.cell, memory.available = _distributed.agree(
        [memory.fit, memory.cell, memory.available])
    fit = memory.fit
    if fit < devices:
        raise ValueError(
            f"sweep: one cell per device does not fit: a cell needs "
            f"{memory.cell / 2**20:,.1f} MB (parameters, optimizer state and a step's "
            f"activations, from the compiled program's memory analysis) and a chunk's "
            f"batches {memory.batches / 2**20:,.1f} MB; {memory.available / 2**20:,.0f} MB "
            f"are available per device ({MEMORY_MARGIN:.0%} kept free, {parallel} grid(s) at "
            "once); use a smaller model or batch, fewer grids at once (parallel=1), or a "
            "device with more memory")
    largest = min(cells, fit)
    times: dict[int, float] = {}

    def done(size: int, reason: str) -> tuple[Plan, GridProgram | None]:
        chosen = Plan(layout_name(size, cells, devices), size, times,
                      time.perf_counter() - started, memory.cell, memory.available, reason)
        return chosen, (full if size >= cells else None)

    if cells_per_program is not None:
        size = min(cells_per_program, cells)
        if layout is not None and layout_name(size, cells, devices) != layout and not (
                layout == "groups" and size < cells):
            raise ValueError(
                f"sweep: layout={layout!r} contradicts cells_per_program={cells_per_program} "
                f"for a grid of {cells} cells over {devices} device(s); give one of them")
        if size > fit:
            _warn(log, f"cells_per_program={cells_per_program} may not fit: about "
                       f"{fit} cells fit in the available memory")
        return done(size, f"cells_per_program={cells_per_program} was given")
    if layout == "vmap":
        if cells > fit:
            raise ValueError(
                f"sweep: layout='vmap' needs all {cells} cells in one program, about "
                f"{memory.need(cells) / 2**20:,.0f} MB per device, but "
                f"{memory.available / 2**20:,.0f} MB are available ({MEMORY_MARGIN:.0%} kept "
                f"free); about {fit} cells fit: use layout='groups' or None")
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
    for size in sizes:
        probe = _Probe(task, arm, lrs, weight_decays, mesh, size, seed)
        times[size] = _distributed.agree(probe.seconds_per_cell_step())
        best = min(times.values())
        budget = max(budget, PROBE_SHARE * best * cell_steps)
        spent = time.perf_counter() - started
        following = [s for s in sizes if s > size]
        if following and _distributed.agree(
                spent + probe.compile_seconds * 1.5 + 3 * PROBE_STEPS * best * following[0]
                > budget):
            reason = (f"probed up to {size} cells within {PROBE_SHARE:.0%} of the run's "
                      f"estimated {best * cell_steps:.0f} s; the fastest per cell")
            break
    # A grid of 36 cells in groups of 16 trains 3 groups of 16: time the padding too.
    fastest = min(times, key=lambda size: times[size] * padded_cells(size, cells, devices))
    return done(fastest, reason)


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
        analysis: Any = jax.jit(program.cell_step).lower(
            one.params, one.opt_state, one.rest, scalar, scalar, batch).cost_analysis()
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
