"""The ablation grid as one vmapped program against the same cells one after another.

Both use the runner's ``GridProgram`` (digits, MLP, cosine schedule, one arm): the grid
trains all lr × λ cells in one call; the loop trains one cell per call, with the
program compiled once for one cell (the hyperparameters are traced, so no cell
recompiles). The first call of each includes compilation; then the two ways alternate
``--repeats`` times (the machine may be shared) and the median is the steady time.
For reference it also times the naive loop once: each cell a new program with its lr
and λ baked in as constants, so every cell compiles. Prints the wall-time ratios and
the largest difference between the ways' final metrics: in float32, where batched and
single matmuls round differently and training amplifies it in a few cells, and in
float64 (same grid, params and data upcast), where it shows they compute the same
function.

Run: ``python benchmarks/grid_vs_loop.py [--arm adamw] [--epochs 10]``
"""

import argparse
import time

import jax
import numpy as np

from wdchain.ablate._arms import parse_arm
from wdchain.ablate._grid import GridProgram
from wdchain.ablate._task import Digits, load_digits


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arm", default="adamw")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    arm = parse_arm(args.arm)
    data = load_digits(0)
    program = GridProgram(arm, "mlp", data, epochs=args.epochs, seed=0)
    lrs, wds = (g.ravel() for g in np.meshgrid(arm.default_lrs(), arm.default_wds(),
                                                indexing="ij"))
    ways = {"grid": lambda: grid(program, lrs, wds), "loop": lambda: loop(program, lrs, wds)}
    results, samples = {}, {name: [] for name in ways}
    for name, fn in ways.items():
        results[name], first = timed(fn)
        print(f"{name}: first call (compiles) {first:.2f} s")
    for _ in range(args.repeats):
        for name, fn in ways.items():
            samples[name].append(timed(fn)[1])
    times = {name: float(np.median(values)) for name, values in samples.items()}
    for name, values in samples.items():
        runs = ", ".join(f"{value:.2f}" for value in values)
        print(f"{name}: steady {times[name]:.2f} s (median of {runs})")
    print(f"{len(lrs)} cells × {args.epochs} epochs × {program.steps_per_epoch} steps, "
          f"{args.arm}, on {jax.devices()[0].platform}: the loop takes "
          f"{times['loop'] / times['grid']:.1f}× the grid's time")
    print(f"float32, max |grid − loop|: {largest_gap(results['grid'], results['loop'])}")

    baked, seconds = timed(lambda: baked_loop(arm, data, args.epochs, lrs, wds))
    print(f"loop with lr and λ baked in (compiles every cell): {seconds:.2f} s, "
          f"{seconds / times['grid']:.0f}× the grid's steady time; max |grid − baked|: "
          f"{largest_gap(results['grid'], baked)}")

    with jax.enable_x64(True):
        wide = Digits(*(a.astype(np.float64) if a.dtype == np.float32 else a for a in data))
        program = GridProgram(arm, "mlp", wide, epochs=args.epochs, seed=0)
        program.params = jax.tree.map(lambda p: p.astype(np.float64), program.params)
        gap = largest_gap(grid(program, lrs, wds), loop(program, lrs, wds))
    print(f"float64, max |grid − loop|: {gap}")


def grid(program, lrs, wds):
    return program.run(lrs, wds)


def loop(program, lrs, wds):
    cells = [program.run(lrs[i : i + 1], wds[i : i + 1]) for i in range(len(lrs))]
    return type(cells[0])(*(np.concatenate(field) for field in zip(*cells)))


class BakedProgram(GridProgram):
    """A program for one cell whose lr and λ are Python constants, not traced values."""

    def __init__(self, lr, weight_decay, *args, **kwargs):
        self.baked = (float(lr), float(weight_decay))
        super().__init__(*args, **kwargs)

    def optimizer(self, lr, weight_decay):
        del lr, weight_decay
        return super().optimizer(*self.baked)


def baked_loop(arm, data, epochs, lrs, wds):
    cells = [BakedProgram(lr, wd, arm, "mlp", data, epochs=epochs, seed=0).run([lr], [wd])
             for lr, wd in zip(lrs, wds)]
    return type(cells[0])(*(np.concatenate(field) for field in zip(*cells)))


def largest_gap(one, other):
    return ", ".join(f"{field} {np.max(np.abs(getattr(one, field) - getattr(other, field))):.1e}"
                     for field in one._fields)


if __name__ == "__main__":
    main()
