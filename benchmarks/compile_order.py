"""Does the order executables are compiled in change how fast they run?

Compiles the *same* donated optax SGD-momentum step ``--copies`` times on a tree of
many small leaves (buffers allocated afterwards, in reverse order, so allocation
order cannot explain the result), times the copies interleaved as ``step.py`` does,
and prints each copy's median step time in compile order. On the 2-core CPU machine
the first-compiled copy was fastest (27.5, 29.3, 30.3 ms for the 2,000-leaf tree),
which is why ``step.py`` and ``end_to_end.py`` build their implementations in
forward and reversed order (``--orders``).

Usage::

    python benchmarks/compile_order.py --copies 3 --rounds 30
"""

from __future__ import annotations

import argparse
import statistics

import jax
import jax.numpy as jnp
import optax
from step import median_step, per_round_ratios, random_tree, require_at_least_one, time_interleaved  # noqa: E402  (benchmarks/ is the script's folder)


class CompiledFirst:
    """A donated, jitted step compiled at construction; buffers allocated by ``allocate``."""

    def __init__(self, params, grads):
        self.tx = optax.chain(optax.add_decayed_weights(1e-2), optax.sgd(1e-3, momentum=0.9))
        self.source, self.grads = params, grads

        def step(params, state, grads):
            updates, state = self.tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        shapes = jax.eval_shape(lambda: (params, self.tx.init(params)))
        self.compiled = jax.jit(step, donate_argnums=(0, 1)).lower(*shapes, grads).compile()

    def allocate(self) -> None:
        self.params = jax.tree.map(jnp.copy, self.source)
        self.state = jax.block_until_ready(self.tx.init(self.params))

    def step(self) -> None:
        self.params, self.state = self.compiled(self.params, self.state, self.grads)
        jax.block_until_ready((self.params, self.state))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--leaves", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args(argv)
    require_at_least_one(parser, args, ("copies", "leaves", "rounds", "steps"))
    shapes = {f"leaf{i:05d}": (4096,) for i in range(args.leaves)}
    params, grads = random_tree(shapes, seed=0), random_tree(shapes, seed=1, scale=1e-3)
    copies = {f"compiled #{i + 1}": CompiledFirst(params, grads) for i in range(args.copies)}
    for copy in reversed(list(copies.values())):
        copy.allocate()
    times = time_interleaved(copies, args.rounds, args.steps)
    first = next(iter(copies))
    for name, rounds in times.items():
        ratios = per_round_ratios(times, name, first)
        print(f"{name}: {1e3 * median_step(rounds):.2f} ms, "
              f"{statistics.median(ratios):.3f}× the first")


if __name__ == "__main__":
    main()
