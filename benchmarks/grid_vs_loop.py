"""The ablation grid as one vmapped program against the same cells one after another.

Both use the runner's ``GridProgram`` (digits, MLP, cosine schedule, one arm): the grid
trains all lr × λ cells in one call; the loop trains one cell per call, with the
program compiled once for one cell (the hyperparameters are traced, so no cell
recompiles). The first call of each includes compilation; then the two ways alternate
``--repeats`` times (the machine may be shared) and the median is the steady time.
Prints the largest difference between the two ways' final metrics and the wall-time
ratio.

Run: ``python benchmarks/grid_vs_loop.py [--arm adamw] [--epochs 10]``
"""

import argparse
import time

import jax
import numpy as np

from wdchain.ablate._arms import parse_arm
from wdchain.ablate._grid import GridProgram
from wdchain.ablate._task import load_digits


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arm", default="adamw")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    arm = parse_arm(args.arm)
    program = GridProgram(arm, "mlp", load_digits(0), epochs=args.epochs, seed=0)
    lrs, wds = (g.ravel() for g in np.meshgrid(arm.default_lrs(), arm.default_wds(),
                                                indexing="ij"))

    def grid():
        return program.run(lrs, wds)

    def loop():
        cells = [program.run(lrs[i : i + 1], wds[i : i + 1]) for i in range(len(lrs))]
        return type(cells[0])(*(np.concatenate(field) for field in zip(*cells)))

    ways = {"grid": grid, "loop": loop}
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
    for field in results["grid"]._fields:
        gap = np.max(np.abs(getattr(results["grid"], field) - getattr(results["loop"], field)))
        print(f"max |grid − loop| {field}: {gap:.1e}")
    print(f"{len(lrs)} cells × {args.epochs} epochs × {program.steps_per_epoch} steps, "
          f"{args.arm}, on {jax.devices()[0].platform}: the loop takes "
          f"{times['loop'] / times['grid']:.1f}× the grid's time")


if __name__ == "__main__":
    main()
