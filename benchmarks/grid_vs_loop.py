"""The ablation grid as one vmapped program against the same cells one after another.

Both use the runner's ``GridProgram`` (digits, LayerNorm MLP, cosine schedule, one arm,
one seed): the grid trains all lr × λ cells in one program; the loop trains one cell
per program run, compiled once for one cell (lr and λ are traced, so no cell
recompiles). The first run of each includes compilation; then the two alternate
``--repeats`` times (the machine may be shared) and the median is the steady time. For
reference it also times the naive loop once: each cell a new program with its lr and λ
baked in as constants, so every cell compiles. Prints the ratios and the largest
difference between the final validation losses (float32: batched and single matmuls
round differently).

Run: ``python benchmarks/grid_vs_loop.py [--arm adamw] [--epochs 10]``
"""

import argparse
import dataclasses
import time

import jax
import numpy as np

from wdchain.ablate._arms import parse_arm
from wdchain.ablate._builtin import digits
from wdchain.ablate._engine import GridProgram, local_mesh


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def train(program, seed=0):
    carry, epoch = program.initial_carry(seed), 0
    while epoch < program.task.epochs:
        carry, epoch = program.train_chunk(carry, seed, epoch)
    return program.evaluate(carry, seed).validation_loss


def loop(program, lrs, wds):
    losses = []
    for lr, wd in zip(lrs, wds):
        program.lrs, program.weight_decays = (np.array([[v]], np.float32) for v in (lr, wd))
        losses.append(train(program)[0])
    return np.array(losses)


class BakedProgram(GridProgram):
    """A one-cell program whose lr and λ are Python constants, not traced values."""

    def optimizer(self, lr, weight_decay):
        del lr, weight_decay
        return super().optimizer(float(self.lrs[0, 0]), float(self.weight_decays[0, 0]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arm", default="adamw")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=6, help="grid points per axis")
    args = parser.parse_args()
    if min(args.epochs, args.repeats, args.size) < 1:
        parser.error("--epochs, --repeats and --size must be ≥ 1")

    arm = parse_arm(args.arm)
    task = dataclasses.replace(digits(), epochs=args.epochs)
    lrs, wds = (g.ravel() for g in np.meshgrid(arm.default_lrs(args.size),
                                                arm.default_weight_decays(args.size),
                                                indexing="ij"))
    mesh = local_mesh(None)
    grid_program = GridProgram(task, arm, lrs, wds, mesh)
    cell_program = GridProgram(task, arm, lrs[:1], wds[:1], mesh)
    ways = {"grid": lambda: train(grid_program), "loop": lambda: loop(cell_program, lrs, wds)}
    results, samples = {}, {name: [] for name in ways}
    for name, fn in ways.items():
        results[name], first = timed(fn)
        print(f"{name}: first run (compiles) {first:.2f} s")
    for _ in range(args.repeats):
        for name, fn in ways.items():
            samples[name].append(timed(fn)[1])
    times = {name: float(np.median(values)) for name, values in samples.items()}
    for name, values in samples.items():
        print(f"{name}: steady {times[name]:.2f} s (runs {', '.join(f'{v:.2f}' for v in values)})")
    print(f"{len(lrs)} cells × {args.epochs} epochs × {grid_program.steps_per_epoch} steps, "
          f"{args.arm}, on {jax.devices()[0].platform}: the loop takes "
          f"{times['loop'] / times['grid']:.1f}× the grid's time")
    print(f"float32, validation loss: {relative_gap(results['grid'], results['loop'])}")
    baked, seconds = timed(lambda: np.array([
        train(BakedProgram(task, arm, np.array([lr]), np.array([wd]), mesh))[0]
        for lr, wd in zip(lrs, wds)]))
    print(f"loop with lr and λ baked in (compiles every cell): {seconds:.2f} s, "
          f"{seconds / times['grid']:.0f}× the grid's steady time; "
          f"{relative_gap(results['grid'], baked)}")


def relative_gap(one, other):
    """The largest relative difference over converged cells; diverged cells must match."""
    finite = np.isfinite(one) & np.isfinite(other)
    same = np.array_equal(np.isfinite(one), np.isfinite(other))
    gap = np.max(np.abs(one[finite] - other[finite]) / np.abs(other[finite]))
    return (f"max relative gap {gap:.1e} over {finite.sum()} converged cells; diverged cells "
            f"{'the same' if same else 'DIFFER'} ({(~np.isfinite(one)).sum()})")


if __name__ == "__main__":
    main()
