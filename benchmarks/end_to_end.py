"""A whole train step of a deep Flax MLP: packed params against the ordinary tree.

The model is ``--layers`` blocks of Dense + LayerNorm + GELU (default 128 blocks, so
512 parameter leaves), trained with ``wdchain.adamw`` decaying the kernels only. A
step is forward, backward, optimizer update and ``apply_updates``, jitted with the
params and optimizer state donated. Three implementations run interleaved in one
process:

* ``tree``: the params as Flax makes them; ``optax.adamw`` with the same mask as a
  reference (``optax tree``).
* ``packed``: the params as a ``wdchain.PackedLayout`` (one buffer per decay group);
  the loss unpacks views of the buffers, ``jax.grad`` returns flat gradients, and
  the same ``wdchain.adamw`` runs on a dict of two leaves.

Usage::

    python benchmarks/end_to_end.py --out results/e2e
    python benchmarks/end_to_end.py --layers 100 --width 128 --rounds 3 --steps 5

Reports the median step time, the ratio to the tree path, the compile time (trace +
compile + first call − a steady step) and XLA's peak-memory estimate; writes
``end_to_end.json`` and ``end_to_end.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from step import (  # noqa: E402  (benchmarks/ is the script's folder)
    median_step,
    per_round_ratios,
    require_at_least_one,
    rounds_per_order,
    time_in_orders,
)

import wdchain


class DeepMLP(nn.Module):
    layers: int
    width: int

    @nn.compact
    def __call__(self, x):
        for _ in range(self.layers):
            x = nn.gelu(nn.LayerNorm()(nn.Dense(self.width)(x)))
        return nn.Dense(1)(x)


def kernels_only(params: Any) -> Any:
    return jax.tree_util.tree_map_with_path(
        lambda path, _: jax.tree_util.keystr(path).endswith("['kernel']"), params
    )


class TrainStep:
    """One donated, jitted train step, compiled ahead of time; holds its arrays."""

    def __init__(self, model, tx, params, batch, layout=None):
        x, y = batch

        def loss_fn(params):
            tree = params if layout is None else layout.unpack(params)
            return jnp.mean((model.apply({"params": tree}, x) - y) ** 2)

        def step(params, state):
            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state, loss

        params = jax.tree.map(jnp.copy, params)
        self.params = params if layout is None else layout.pack(params)
        self.state = jax.block_until_ready(tx.init(self.params))
        start = time.perf_counter()
        self.compiled = jax.jit(step, donate_argnums=(0, 1)).lower(
            self.params, self.state).compile()
        self.step()
        self.first_call_s = time.perf_counter() - start
        stats = self.compiled.memory_analysis()
        self.peak_bytes = None if stats is None else (
            stats.argument_size_in_bytes + stats.output_size_in_bytes
            - stats.alias_size_in_bytes + stats.temp_size_in_bytes)

    def step(self) -> None:
        self.params, self.state, self.loss = self.compiled(self.params, self.state)
        jax.block_until_ready((self.params, self.state))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=128, help="Dense+LayerNorm blocks")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=6, help="in all, split between orders")
    parser.add_argument("--orders", type=int, default=2,
                        help="build the implementations in forward and reversed order "
                             "(see step.py)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW's learning rate")
    parser.add_argument("--weight-decay", type=float, default=1e-2,
                        help="AdamW's decay, on the kernels only")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    require_at_least_one(parser, args, ("layers", "width", "batch", "rounds", "orders", "steps"))
    lr, wd = args.lr, args.weight_decay

    model = DeepMLP(args.layers, args.width)
    key_x, key_y, key_init = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(key_x, (args.batch, args.width))
    y = jax.random.normal(key_y, (args.batch, 1))
    params = jax.jit(model.init)(key_init, x)["params"]
    leaves = jax.tree.leaves(params)
    n = sum(p.size for p in leaves)
    layout = wdchain.PackedLayout.from_params(params, mask=kernels_only)
    print(f"{args.layers} blocks, width {args.width}: {n / 1e6:.2f} M params in "
          f"{len(leaves)} leaves; packed: {layout.sizes}", flush=True)

    makers = {
        "tree": lambda: TrainStep(
            model, wdchain.adamw(lr, weight_decay=wd, mask=kernels_only), params, (x, y)),
        "optax tree": lambda: TrainStep(
            model, optax.adamw(lr, weight_decay=wd, mask=kernels_only), params, (x, y)),
        "packed": lambda: TrainStep(
            model, wdchain.adamw(lr, weight_decay=wd, mask=layout.mask), params, (x, y),
            layout),
    }
    times, built = time_in_orders(makers, args.rounds, args.steps, args.orders)
    medians = {name: median_step(rounds) for name, rounds in times.items()}
    rows = {}
    for name, impl in built.items():
        per_round = per_round_ratios(times, name, "tree")
        rows[name] = {
            "median_ms": medians[name] * 1e3,
            "time_vs_tree": statistics.median(per_round),
            "compile_s": max(impl["first_call_s"] - medians[name], 0.0),
            "peak_bytes": impl["peak_bytes"],
            "loss": float(impl["loss"]),
            "rounds": len(times[name]),
        }
    for row in rows.values():
        row["compile_vs_tree"] = row["compile_s"] / max(rows["tree"]["compile_s"], 1e-9)
    lines = [
        f"Device: {jax.devices()[0].device_kind}; jax {jax.__version__}; {args.layers} blocks "
        f"of width {args.width} ({n / 1e6:.2f} M params, {len(leaves)} leaves), batch "
        f"{args.batch}; {args.orders * rounds_per_order(args.rounds, args.orders)} rounds × "
        f"{args.steps} steps, interleaved, over "
        f"{args.orders} construction orders.",
        "",
        "| implementation | step (ms) | × tree | compile (s) | compile × tree | peak (MB) |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        peak = "–" if row["peak_bytes"] is None else f"{row['peak_bytes'] / 1e6:.1f}"
        lines.append(f"| {name} | {row['median_ms']:.2f} | {row['time_vs_tree']:.2f} | "
                     f"{row['compile_s']:.2f} | {row['compile_vs_tree']:.2f} | {peak} |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "end_to_end.json"), "w") as f:
            json.dump({"args": vars(args), "params": n, "leaves": len(leaves),
                       "device": jax.devices()[0].device_kind, "rows": rows}, f, indent=1)
        with open(os.path.join(args.out, "end_to_end.md"), "w") as f:
            f.write(table)


if __name__ == "__main__":
    main()
