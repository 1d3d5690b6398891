"""The sweep's speed: achieved matmul FLOP/s against the matmul rate of the same shapes.

One arm's grid program (the runner's ``GridProgram``) trains a chunk of epochs; its
jaxpr is walked for every ``dot_general`` (inside the scan over steps, counted once per
step), which gives the matmul FLOPs of a step. A second program runs exactly those
``dot_general`` shapes and dimension numbers, nothing else, in a scan with fresh random
operands each step: its FLOP/s is the machine's rate for these shapes, in the same
process. A third, for reference, runs ``cells`` square (100×100)·(100×100) matmuls per
step (the layout XLA handles best). The ratio of the two is the share of the matmul rate the sweep
reaches; the rest goes to element-wise work (LayerNorm, ReLU, softmax, the optimizer).
Rounds alternate the programs (the machine may be shared); medians are reported.
The sweep's program runs as the runner builds it (on a CPU each cell gets its own copy
of the batch); a twin that shares the batch among the cells is timed beside it, alone
and as ``--parallel`` grids trained at once (as ``sweep`` runs them on a CPU), and the
medians of their paired ratios are reported (``per_cell_over_shared``,
``per_cell_over_shared_at_once``).

``--preset NAME`` also runs that preset end to end (``sweep``) and reports its wall
time, compile included.

``--layouts`` instead times each layout of a grid (``vmap``: all cells in one program,
``groups``, ``loop``: one cell per device at a time; :mod:`wdchain.ablate._layout`) on
three models: the runner's LayerNorm MLP on MNIST-1D, Flax's MNIST CNN (google/flax
``examples/mnist``, the NNX version: conv 32 and 64 with BatchNorm, Dropout, average
pooling, dense 256) on scikit-learn's digits upsampled to 28×28, and a small
transformer on MNIST-1D. Each layout trains ``--steps`` steps of every cell per round;
rounds alternate the layouts and medians are reported, with the layout the runner's
probe chooses (for a run of ``--run-epochs`` epochs) and its time over the fastest's.

``--joined-seeds K`` instead times K seeds joined in one program (cells × seeds, the
runner's ``seeds_per_program=K``) against the same K seeds' programs one after another
(``seeds_per_program=1``), on ``--task``'s grid of ``--cells`` cells, a chunk of
``--epochs`` epochs: alone (one program at a time), and as the runner trains them on a
CPU, ``--parallel`` programs at once in threads (the K seeds' programs, against
``--parallel`` joined programs, as for as many arms). Rounds alternate the ways; the
medians of the paired ratios per cell-step are reported (above 1: joined is slower).

Run: ``python benchmarks/sweep.py [--arm adamw-independent] [--cells 64] [--epochs 2]
[--rounds 5] [--preset paper]``, ``python benchmarks/sweep.py --layouts
[--models mlp,cnn,transformer] [--cells 9] [--steps 3] [--rounds 3]`` or
``python benchmarks/sweep.py --joined-seeds 3 [--cells 64] [--epochs 1] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wdchain.ablate import PRESETS, Task, _layout, sweep
from wdchain.ablate._arms import parse_arm
from wdchain.ablate._builtin import TASKS, digits_splits, mnist1d
from wdchain.ablate._engine import GridProgram, batch_per_cell, local_mesh


class MnistCNN(nnx.Module):
    """Flax's MNIST CNN (examples/mnist, NNX): conv 32 → BN → Dropout → ReLU → pool, conv 64
    → BN → ReLU → pool, dense 256 → Dropout → ReLU → 10; ``width`` divides the channels."""

    def __init__(self, rngs: nnx.Rngs, width: int = 1):
        c1, c2, dense = 32 // width, 64 // width, 256 // width
        self.conv1 = nnx.Conv(1, c1, kernel_size=(3, 3), rngs=rngs)
        self.batch_norm1 = nnx.BatchNorm(c1, rngs=rngs)
        self.dropout1 = nnx.Dropout(rate=0.025, rngs=rngs)
        self.conv2 = nnx.Conv(c1, c2, kernel_size=(3, 3), rngs=rngs)
        self.batch_norm2 = nnx.BatchNorm(c2, rngs=rngs)
        self.avg_pool = functools.partial(nnx.avg_pool, window_shape=(2, 2), strides=(2, 2))
        self.linear1 = nnx.Linear(7 * 7 * c2, dense, rngs=rngs)
        self.dropout2 = nnx.Dropout(rate=0.025, rngs=rngs)
        self.linear2 = nnx.Linear(dense, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.avg_pool(nnx.relu(self.batch_norm1(self.dropout1(self.conv1(x)))))
        x = self.avg_pool(nnx.relu(self.batch_norm2(self.conv2(x))))
        x = x.reshape(x.shape[0], -1)
        x = nnx.relu(self.dropout2(self.linear1(x)))
        return self.linear2(x)


class SmallTransformer(nnx.Module):
    """MNIST-1D's 40 values as 10 tokens of 4: embed 32, one pre-LN block (2 heads, MLP
    64), mean-pooled, → 10."""

    def __init__(self, rngs: nnx.Rngs, dim: int = 32):
        self.embed = nnx.Linear(4, dim, rngs=rngs)
        self.position = nnx.Param(0.02 * jax.random.normal(rngs.params(), (10, dim)))
        self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
        self.attention = nnx.MultiHeadAttention(2, dim, decode=False, rngs=rngs)
        self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
        self.up = nnx.Linear(dim, 2 * dim, rngs=rngs)
        self.down = nnx.Linear(2 * dim, dim, rngs=rngs)
        self.out = nnx.Linear(dim, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.embed(x.reshape(x.shape[0], 10, 4)) + self.position[...]
        h = h + self.attention(self.norm1(h))
        h = h + self.down(nnx.gelu(self.up(self.norm2(h))))
        return self.out(h.mean(axis=1))


def digits_28(batch_size: int = 100, width: int = 1) -> Task:
    """scikit-learn's digits, upsampled to 28×28 (bilinear), with the MNIST CNN."""
    def upsample(split):
        x, y = split
        x = np.asarray(jax.image.resize(x.reshape(-1, 8, 8, 1), (len(x), 28, 28, 1), "linear"))
        return x.astype(np.float32), y

    train, validation, test = (upsample(s) for s in digits_splits(0))
    return Task(functools.partial(MnistCNN, width=width), train, test, validation=validation,
                batch_size=batch_size, epochs=1, name="digits 28×28",
                model_name=f"MNIST CNN (width /{width})")


def layout_tasks(models: list[str], width: int) -> dict[str, Task]:
    """The models of ``--layouts``."""
    base = mnist1d(epochs=1)
    make = {
        "mlp": lambda: base,
        "cnn": lambda: digits_28(width=width),
        "transformer": lambda: dataclasses.replace(base, model=SmallTransformer,
                                                   model_name="transformer 1×32"),
    }
    return {name: make[name]() for name in models}


def time_layouts(task: Task, arm_name: str, cells: int, steps: int, rounds: int,
                 run_epochs: int) -> dict[str, Any]:
    """Seconds per step of the whole grid for each layout, and what the probe chooses."""
    arm = parse_arm(arm_name)
    side = max(1, round(math.sqrt(cells)))
    lrs, wds = (g.ravel() for g in np.meshgrid(arm.default_lrs(side),
                                                arm.default_weight_decays(side), indexing="ij"))
    mesh = local_mesh(None)
    devices = mesh.devices.size
    sizes = {"loop": devices, "groups": max(devices, len(lrs) // 3 // devices * devices),
             "vmap": len(lrs)}
    task = dataclasses.replace(task, epochs=1)
    runners = {}
    for name, size in sizes.items():
        program = GridProgram(task, arm, lrs, wds, mesh, cells_per_program=size)
        x, y = program.batches(0, range(1))
        batches = jax.device_put((x[:steps], y[:steps]), program._replicated)
        carries = [program.initial_carry(0, g) for g in range(len(program.groups))]
        hyper = [program.cell_hyperparams(g) for g in range(len(program.groups))]
        keys = program.step_keys(0, range(1))[:steps]

        def run(program=program, carries=carries, hyper=hyper, batches=batches,
                keys=keys) -> None:
            for g in range(len(program.groups)):
                carries[g] = program._run_chunk(carries[g], *hyper[g], batches, keys)
            jax.block_until_ready(carries)

        start = time.perf_counter()
        run()
        print(f"  {name} ({size} cells per program): first run {time.perf_counter() - start:.1f} s",
              flush=True)
        runners[name] = run
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            samples[name].append((time.perf_counter() - start) / steps)
    seconds = {name: float(np.median(v)) for name, v in samples.items()}
    run_steps = run_epochs * GridProgram(task, arm, lrs[:1], wds[:1], mesh).steps_per_epoch
    start = time.perf_counter()
    plan, _ = _layout.plan(task, arm, lrs, wds, mesh, layout=None, cells_per_program=None,
                           cell_steps=len(lrs) * run_steps, parallel=1)
    fastest = min(seconds, key=seconds.__getitem__)
    ratios = [s / f for s, f in zip(samples[plan.layout], samples[fastest])]
    return {"cells": len(lrs), "steps": steps, "seconds_per_grid_step": seconds,
            "fastest": fastest, "chosen": plan.layout,
            "chosen_cells_per_program": plan.cells_per_program,
            "chosen_over_fastest": float(np.median(ratios)),
            "loop_over_chosen": float(np.median([lp / c for lp, c in zip(
                samples["loop"], samples[plan.layout])])),
            "probe_seconds": plan.probe_seconds, "probe_reason": plan.reason,
            "probe_time_s": time.perf_counter() - start,
            "run_seconds_estimate": seconds[plan.layout] * run_steps}


def main_layouts(args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {"device": f"{jax.devices()[0].platform} × {len(jax.devices())}"}
    for name, task in layout_tasks(args.models.split(","), args.width).items():
        print(f"{name}: {task.model_name}, batch {task.batch_size}", flush=True)
        result = time_layouts(task, args.arm, args.cells, args.steps, args.rounds,
                              args.run_epochs)
        figures[name] = result
        times = ", ".join(f"{k} {1e3 * v:.0f} ms" for k, v in
                          result["seconds_per_grid_step"].items())
        print(f"{name}: per grid step {times}; fastest {result['fastest']}; chosen "
              f"{result['chosen']} ({result['chosen_cells_per_program']} cells per program), "
              f"{result['chosen_over_fastest']:.2f}× the fastest, the loop "
              f"{result['loop_over_chosen']:.2f}× the chosen; probe {result['probe_seconds']:.1f}"
              f" s ({result['probe_reason']})", flush=True)
    return figures


def main_joined_seeds(args: argparse.Namespace) -> dict[str, Any]:
    """K seeds joined in one program against one seed per program (see the module)."""
    arm = parse_arm(args.arm)
    side = max(1, round(math.sqrt(args.cells)))
    lrs, wds = (g.ravel() for g in np.meshgrid(arm.default_lrs(side),
                                                arm.default_weight_decays(side), indexing="ij"))
    task = dataclasses.replace(TASKS[args.task](), epochs=10 * args.epochs)  # chunks of epochs
    seeds = tuple(range(args.joined_seeds))

    program = GridProgram(task, arm, lrs, wds, local_mesh(None))  # as sweep: one per arm

    def runner(jobs: list[tuple[int, ...]], threads: int) -> Any:
        """Trains one chunk of each job (a tuple of seeds), ``threads`` programs at once."""
        carries = [program.initial_carry(job) for job in jobs]

        def train(i: int) -> None:
            carries[i], _ = program.train_chunk(carries[i], jobs[i], 0)

        def run() -> None:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(train, range(len(jobs))))

        return run

    apart = [(seed,) for seed in seeds]
    ways = {"apart": (runner(apart, 1), 1), "joined": (runner([seeds], 1), 1),
            "apart_at_once": (runner(apart, args.parallel), 1),
            "joined_at_once": (runner([seeds] * args.parallel, args.parallel), args.parallel)}
    for run, _ in ways.values():  # compile and warm up
        run()
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, (run, _) in ways.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    steps = program.chunk * program.steps_per_epoch
    cell_steps = {name: copies * len(seeds) * len(lrs) * steps
                  for name, (_, copies) in ways.items()}
    per = {name: [t / cell_steps[name] for t in values] for name, values in times.items()}

    def ratio(a: str, b: str) -> float:
        return float(np.median([x / y for x, y in zip(per[a], per[b])]))

    figures = {
        "task": args.task, "arm": args.arm, "cells": len(lrs), "seeds": len(seeds),
        "steps": steps, "parallel": args.parallel, "rounds": args.rounds,
        "device": f"{jax.devices()[0].platform} × {len(jax.devices())}",
        "us_per_cell_step": {name: 1e6 * float(np.median(v)) for name, v in per.items()},
        "joined_over_apart": ratio("joined", "apart"),
        "joined_over_apart_at_once": ratio("joined_at_once", "apart_at_once"),
    }
    times_text = ", ".join(f"{name} {value:.2f} µs"
                           for name, value in figures["us_per_cell_step"].items())
    print(f"{len(lrs)} cells × {len(seeds)} seeds, {steps} steps per chunk; per cell-step: "
          f"{times_text}; joined / apart {figures['joined_over_apart']:.2f} alone, "
          f"{figures['joined_over_apart_at_once']:.2f} with {args.parallel} programs at once")
    return figures


def dot_generals(jaxpr: Any, repeat: int = 1) -> list[tuple[Any, Any, Any, int]]:
    """Every dot_general of ``jaxpr`` as (lhs aval, rhs aval, dimension numbers, times run)."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append((eqn.invars[0].aval, eqn.invars[1].aval,
                          eqn.params["dimension_numbers"], repeat))
        times = repeat * (eqn.params["length"] if eqn.primitive.name == "scan" else 1)
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                inner = getattr(sub, "jaxpr", None)
                if inner is not None:
                    found += dot_generals(getattr(inner, "jaxpr", inner), times)
    return found


def dot_flops(lhs: Any, rhs: Any, numbers: Any) -> float:
    """2 · batch · lhs-free · rhs-free · contracted."""
    (lhs_contract, rhs_contract), (lhs_batch, _) = numbers
    contracted = math.prod(lhs.shape[d] for d in lhs_contract)
    batch = math.prod(lhs.shape[d] for d in lhs_batch)
    lhs_free = math.prod(lhs.shape) // (contracted * batch)
    rhs_free = math.prod(rhs.shape) // (math.prod(rhs.shape[d] for d in rhs_contract) * batch)
    return 2.0 * batch * lhs_free * rhs_free * contracted


def matmul_only(dots: list[tuple[Any, Any, Any, int]], steps: int, variants: int = 8):
    """A jitted scan doing exactly the per-step dot_generals, ``variants`` steps long.

    Each step takes fresh operands (stacked scan inputs), as training does: with the
    same operands every step XLA would hoist the products out of the loop. Returns a
    function that runs it, and the number of steps it runs.
    """
    per_step = [(lhs, rhs, numbers) for lhs, rhs, numbers, times in dots if times == steps]
    keys = jax.random.split(jax.random.key(0), 2 * len(per_step))
    operands = [(jax.random.normal(keys[2 * i], (variants, *lhs.shape), lhs.dtype),
                 jax.random.normal(keys[2 * i + 1], (variants, *rhs.shape), rhs.dtype))
                for i, (lhs, rhs, _) in enumerate(per_step)]

    def run(operands):
        def body(carry, step_operands):
            outs = [jax.lax.dot_general(a, b, numbers)
                    for (a, b), (_, _, numbers) in zip(step_operands, per_step)]
            return [c + o for c, o in zip(carry, outs)], None

        zeros = [jnp.zeros(jax.eval_shape(lambda a, b, n=n: jax.lax.dot_general(a, b, n),
                                          a[0], b[0]).shape)
                 for (a, b), (_, _, n) in zip(operands, per_step)]
        return jax.lax.scan(body, zeros, operands)[0]

    compiled = jax.jit(run)
    return (lambda: jax.block_until_ready(compiled(operands))), variants


def square_batched(cells: int, size: int = 100, steps: int = 8):
    """A reference: ``cells`` × (size × size)·(size × size) matmuls per step, fresh operands."""
    keys = jax.random.split(jax.random.key(1), 2)
    a = jax.random.normal(keys[0], (steps, cells, size, size))
    b = jax.random.normal(keys[1], (steps, cells, size, size))

    def run(a, b):
        def body(carry, ab):
            return carry + jnp.einsum("cij,cjk->cik", *ab), None

        return jax.lax.scan(body, jnp.zeros((cells, size, size)), (a, b))[0]

    compiled = jax.jit(run)
    return (lambda: jax.block_until_ready(compiled(a, b))), 2.0 * steps * cells * size**3


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mnist1d", choices=sorted(TASKS))
    parser.add_argument("--arm", default="adamw-independent")
    parser.add_argument("--cells", type=int, default=64, help="cells of the grid (a square)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per timed chunk")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--parallel", type=int, default=os.cpu_count() or 1,
                        help="grids trained at once, as sweep does (default: the cores)")
    parser.add_argument("--preset", default=None, choices=sorted(PRESETS),
                        help="also run this preset end to end and time it")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    parser.add_argument("--layouts", action="store_true",
                        help="time each layout (vmap, groups, loop) on --models instead")
    parser.add_argument("--models", default="mlp,cnn,transformer")
    parser.add_argument("--steps", type=int, default=3, help="--layouts: steps per round")
    parser.add_argument("--width", type=int, default=1,
                        help="--layouts: divide the CNN's channels and width by this")
    parser.add_argument("--run-epochs", type=int, default=10,
                        help="--layouts: the run the probe plans for")
    parser.add_argument("--joined-seeds", type=int, default=None, metavar="K",
                        help="time K seeds joined in one program against one seed per "
                        "program instead")
    args = parser.parse_args(argv)
    if args.joined_seeds is not None and args.joined_seeds < 2:
        parser.error("--joined-seeds must be ≥ 2 (the seeds joined in one program)")
    if args.layouts or args.joined_seeds:
        figures = main_layouts(args) if args.layouts else main_joined_seeds(args)
        if args.json:
            with open(args.json, "w") as file:
                json.dump(figures, file, indent=1)
        return figures
    if args.rounds < 1 or args.cells < 1 or args.epochs < 1 or args.parallel < 1:
        parser.error("--rounds, --cells, --epochs and --parallel must be ≥ 1")

    arm = parse_arm(args.arm)
    side = max(1, round(math.sqrt(args.cells)))
    lrs, wds = (g.ravel() for g in np.meshgrid(arm.default_lrs(side),
                                                arm.default_weight_decays(side), indexing="ij"))
    task = dataclasses.replace(TASKS[args.task](), epochs=10 * args.epochs)  # chunks of epochs
    program = GridProgram(task, arm, lrs, wds, local_mesh(None))
    carry = program.initial_carry(0)
    batches = program.batches(0, range(program.chunk))
    steps = len(batches[0])
    hyper = program.cell_hyperparams()
    keys = program.step_keys(0, range(program.chunk))
    jaxpr = jax.make_jaxpr(program._run_chunk)(carry, *hyper, batches, keys)
    dots = dot_generals(jaxpr.jaxpr)
    flops = sum(dot_flops(lhs, rhs, numbers) * times for lhs, rhs, numbers, times in dots)
    matmuls, matmul_steps = matmul_only(dots, steps)

    def sweep_chunk():
        nonlocal carry
        carry, _ = program.train_chunk(carry, 0, 0)

    shared = GridProgram(task, arm, lrs, wds, local_mesh(None), per_cell_batch=False)
    shared_carry = shared.initial_carry(0)

    def shared_chunk():
        nonlocal shared_carry
        shared_carry, _ = shared.train_chunk(shared_carry, 0, 0)

    def at_once(per_cell_batch: bool) -> Any:
        """``--parallel`` grids training side by side in threads, as ``sweep`` runs them."""
        grids = [GridProgram(task, arm, lrs, wds, local_mesh(None), per_cell_batch=per_cell_batch)
                 for _ in range(args.parallel)]
        carries = [grid.initial_carry(0) for grid in grids]

        def train(i: int) -> None:
            carries[i], _ = grids[i].train_chunk(carries[i], 0, 0)

        def run() -> None:
            with ThreadPoolExecutor(args.parallel) as pool:
                list(pool.map(train, range(args.parallel)))

        return run

    square, square_flops = square_batched(len(lrs))
    ways = (("sweep", sweep_chunk), ("shared", shared_chunk), ("matmuls", matmuls),
            ("square", square), ("sweep_at_once", at_once(True)),
            ("shared_at_once", at_once(False)))
    for _, fn in ways:  # compile and warm up
        fn()
    times: dict[str, list[float]] = {name: [] for name, _ in ways}
    for _ in range(args.rounds):
        for name, fn in ways:
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    median = {name: float(np.median(values)) for name, values in times.items()}
    # Seconds per step of each, then the sweep's rate as a share of the matmuls' rate.
    ratios = [(m / matmul_steps) / (s / steps) for s, m in zip(times["sweep"], times["matmuls"])]
    per_cell = [s / b for s, b in zip(times["sweep"], times["shared"])]
    per_cell_at_once = [s / b for s, b in zip(times["sweep_at_once"], times["shared_at_once"])]
    figures: dict[str, Any] = {
        "task": args.task, "arm": args.arm, "cells": len(lrs), "steps": steps,
        "device": f"{jax.devices()[0].platform} × {len(jax.devices())}",
        "matmul_gflop_per_step": flops / steps / 1e9,
        "sweep_gflops": flops / median["sweep"] / 1e9,
        "matmul_only_gflops": flops / steps * matmul_steps / median["matmuls"] / 1e9,
        "square_batched_gflops": square_flops / median["square"] / 1e9,
        "share_of_matmul_rate": float(np.median(ratios)),
        "share_quartiles": [float(q) for q in np.quantile(ratios, [0.25, 0.75])],
        "ms_per_step": 1e3 * median["sweep"] / steps,
        "batch": "per cell" if batch_per_cell(batches, program.padded) else "shared",
        "shared_batch_ms_per_step": 1e3 * median["shared"] / steps,
        "per_cell_over_shared": float(np.median(per_cell)),
        "per_cell_over_shared_quartiles": [float(q) for q in np.quantile(per_cell, [0.25, 0.75])],
        "parallel": args.parallel,
        "per_cell_over_shared_at_once": float(np.median(per_cell_at_once)),
        "per_cell_over_shared_at_once_quartiles": [
            float(q) for q in np.quantile(per_cell_at_once, [0.25, 0.75])],
        "at_once_ms_per_step": 1e3 * median["sweep_at_once"] / steps,
    }
    print(f"{len(lrs)} cells, {steps} steps per chunk, {len(dots)} dot_generals, "
          f"{figures['matmul_gflop_per_step']:.3f} GFLOP of matmuls per step")
    print(f"sweep: {figures['ms_per_step']:.2f} ms/step, {figures['sweep_gflops']:.1f} GFLOP/s; "
          f"the same matmuls alone: {figures['matmul_only_gflops']:.1f} GFLOP/s; "
          f"share {figures['share_of_matmul_rate']:.2f} "
          f"(quartiles {figures['share_quartiles'][0]:.2f}–{figures['share_quartiles'][1]:.2f})")
    print(f"the batch {figures['batch']}; sharing it instead: "
          f"{figures['shared_batch_ms_per_step']:.2f} ms/step; per cell / shared "
          f"{figures['per_cell_over_shared']:.3f} (quartiles "
          f"{figures['per_cell_over_shared_quartiles'][0]:.3f}–"
          f"{figures['per_cell_over_shared_quartiles'][1]:.3f})")
    print(f"{args.parallel} grids at once: {figures['at_once_ms_per_step']:.2f} ms per step of "
          f"each; per cell / shared {figures['per_cell_over_shared_at_once']:.3f} (quartiles "
          f"{figures['per_cell_over_shared_at_once_quartiles'][0]:.3f}–"
          f"{figures['per_cell_over_shared_at_once_quartiles'][1]:.3f})")
    print(f"reference: {len(lrs)} × (100×100)·(100×100) matmuls: "
          f"{figures['square_batched_gflops']:.1f} GFLOP/s; the sweep reaches "
          f"{figures['sweep_gflops'] / figures['square_batched_gflops']:.2f} of it")
    if args.preset:
        preset = PRESETS[args.preset]
        full = dataclasses.replace(TASKS[preset.task](), epochs=preset.epochs)
        start = time.perf_counter()
        sweep(full, arms=preset.arms, seeds=preset.seeds, grid_size=preset.grid_size,
              log=lambda line: None)
        figures["preset"] = args.preset
        figures["preset_wall_s"] = time.perf_counter() - start
        print(f"preset {args.preset}: {figures['preset_wall_s']:.0f} s wall "
              f"({len(preset.arms)} arms × {len(preset.seeds)} seeds × "
              f"{preset.grid_size}² cells × {preset.epochs} epochs)")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(figures, file, indent=1)
    return figures


if __name__ == "__main__":
    main()
