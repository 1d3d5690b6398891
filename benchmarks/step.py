"""Times one optimizer step: wdchain against optax, and torch.optim where CUDA is.

One step is ``update`` + ``apply_updates``, jitted, with params and state donated,
timed with ``block_until_ready`` as the median of many steps. The implementations
of one optimizer run interleaved (round after round, in rotating order) in one
process, so the ratios between them hold even on a shared, noisy machine; they are
built twice, in forward and reversed order (``--orders``), because on XLA:CPU the
executable compiled first runs a many-leaf step up to 10 % faster. Next to
each time: the bytes per parameter of a fully fused fp32 step, the achieved GB/s and
its fraction of a copy (``x + 1`` over all the parameters) timed in the same
process; the compile time (trace + compile + first call − a steady step, the fastest
of ``--compile-repeats``); and the
peak memory of the compiled step from XLA's memory analysis, as a multiple of
params + grads + state (with donation, 1.0 is ideal).

Trees (``--trees``): ``huge`` (one leaf of 2^28 parameters), ``gpt2`` (GPT-2 small's
148 leaves, 124.4 M parameters), ``tiny`` (2,000 leaves of 4,096). On a CPU
(``--size cpu``, the default there) the huge leaf is 2^24 and GPT-2's width is 192
instead of 768 (15.2 M parameters, still 148 leaves); the tiny tree is unchanged.
``--size smoke`` shrinks all three to a few thousand parameters (GPT-2 still has 148
leaves): it checks that the script runs, in seconds, and its times mean nothing.

Usage::

    python benchmarks/step.py --out results/step                 # everything
    python benchmarks/step.py --trees tiny --optimizers adamw --rounds 3 --steps 5

Writes ``step.json`` and ``step.md`` into ``--out``. Runs unchanged on CPU, GPU and
TPU; torch.optim (foreach and fused) joins when ``torch.cuda.is_available()``
(``--torch on`` adds it on CPU as well).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

# Allocate on demand, so torch.optim has room on the same GPU and the device's peak
# bytes in use mean something; must be set before JAX starts its backend.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import wdchain  # noqa: E402

LR, WD = 1e-3, 1e-2

# --------------------------------------------------------------------------------------
# Trees


def gpt2_shapes(width: int = 768, vocab: int = 50257, context: int = 1024, layers: int = 12):
    """GPT-2 small's parameter shapes: 148 leaves, 124.4 M parameters at width 768."""
    shapes = {"wte": (vocab, width), "wpe": (context, width)}
    block = {
        "ln_1.g": (width,), "ln_1.b": (width,),
        "attn.c_attn.w": (width, 3 * width), "attn.c_attn.b": (3 * width,),
        "attn.c_proj.w": (width, width), "attn.c_proj.b": (width,),
        "ln_2.g": (width,), "ln_2.b": (width,),
        "mlp.c_fc.w": (width, 4 * width), "mlp.c_fc.b": (4 * width,),
        "mlp.c_proj.w": (4 * width, width), "mlp.c_proj.b": (width,),
    }
    for i in range(layers):
        shapes.update({f"h{i:02d}.{name}": shape for name, shape in block.items()})
    shapes.update({"ln_f.g": (width,), "ln_f.b": (width,)})
    return shapes


def tree_shapes(name: str, size: str) -> dict[str, tuple[int, ...]]:
    if name == "huge":
        return {"w": ({"full": 2**28, "cpu": 2**24, "smoke": 2**12}[size],)}
    if name == "gpt2":
        if size == "smoke":
            return gpt2_shapes(width=8, vocab=64, context=16)
        return gpt2_shapes(width=192 if size == "cpu" else 768)
    if name == "tiny":
        if size == "smoke":
            return {f"leaf{i:04d}": (64,) for i in range(20)}
        return {f"leaf{i:04d}": (4096,) for i in range(2000)}
    raise ValueError(f"--trees: unknown tree {name!r}; choose from huge, gpt2, tiny")


def random_tree(shapes: dict[str, tuple[int, ...]], seed: int, scale: float = 1.0):
    key = jax.random.PRNGKey(seed)
    return {
        name: scale * jax.random.normal(jax.random.fold_in(key, i), shape, jnp.float32)
        for i, (name, shape) in enumerate(shapes.items())
    }


# --------------------------------------------------------------------------------------
# Optimizers: wdchain, the optax chain with the same math, torch.optim, bytes/param


@dataclasses.dataclass(frozen=True)
class Optimizer:
    wdchain: Callable[[], optax.GradientTransformation]
    optax: Callable[[], optax.GradientTransformation]
    torch: Callable[..., Any] | None  # (params, **impl kwargs) -> torch optimizer
    bytes_per_param: int  # a fully fused fp32 step: arrays read + written, 4 bytes each


def _l2(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    return optax.chain(optax.add_decayed_weights(WD), tx)


def _torch(name: str, **kwargs: Any) -> Callable[..., Any]:
    def make(params, **impl):
        import torch

        return getattr(torch.optim, name)(params, lr=LR, weight_decay=WD, **kwargs, **impl)

    return make


OPTIMIZERS = {
    "sgd_momentum": Optimizer(
        lambda: wdchain.sgd(LR, momentum=0.9, weight_decay=WD),
        lambda: _l2(optax.sgd(LR, momentum=0.9)),
        _torch("SGD", momentum=0.9), 20),
    "adagrad": Optimizer(
        lambda: wdchain.adagrad(LR, weight_decay=WD),
        lambda: _l2(optax.adagrad(LR, initial_accumulator_value=0.0, eps=1e-10)),
        _torch("Adagrad"), 20),
    "rmsprop": Optimizer(
        lambda: wdchain.rmsprop(LR, weight_decay=WD),
        lambda: _l2(optax.rmsprop(LR, decay=0.99, eps=1e-8, eps_in_sqrt=False)),
        _torch("RMSprop"), 20),
    "adam": Optimizer(
        lambda: wdchain.adam(LR, weight_decay=WD),
        lambda: _l2(optax.adam(LR)),
        _torch("Adam"), 28),
    "adamw": Optimizer(
        lambda: wdchain.adamw(LR, weight_decay=WD),
        lambda: optax.adamw(LR, weight_decay=WD),
        _torch("AdamW"), 28),
    "amsgrad": Optimizer(
        lambda: wdchain.adam(LR, weight_decay=WD, amsgrad=True),
        lambda: _l2(optax.amsgrad(LR)),
        _torch("Adam", amsgrad=True), 36),
    "nadam": Optimizer(
        lambda: wdchain.nadam(LR, weight_decay=WD),
        lambda: _l2(optax.nadam(LR)),
        _torch("NAdam"), 28),
    "radam": Optimizer(
        lambda: wdchain.radam(LR, weight_decay=WD),
        lambda: _l2(optax.radam(LR)),
        _torch("RAdam"), 28),
    "adamax": Optimizer(
        lambda: wdchain.adamax(LR, weight_decay=WD),
        lambda: _l2(optax.adamax(LR)),
        _torch("Adamax"), 28),
}


# --------------------------------------------------------------------------------------
# Implementations: each holds its arrays and runs one blocking step at a time


def nbytes(tree: Any) -> int:
    return sum(int(x.nbytes) for x in jax.tree.leaves(tree))


class JaxStep:
    """A donated, jitted ``update + apply_updates``, compiled ahead of time."""

    def __init__(self, tx: optax.GradientTransformation, params: Any, grads: Any,
                 compile_repeats: int = 1):
        def step(params, state, grads):
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        self.grads = grads
        self.params = jax.tree.map(jnp.copy, params)
        self.state = jax.block_until_ready(tx.init(self.params))
        self.live_bytes = nbytes((self.params, self.state, self.grads))
        compile_s = []
        for _ in range(compile_repeats):  # a fresh function each time: no cached trace
            start = time.perf_counter()
            fresh = functools.partial(step)
            lowered = jax.jit(fresh, donate_argnums=(0, 1)).lower(self.params, self.state, grads)
            self.compiled = lowered.compile()
            compile_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        self.step()
        self.first_call_s = min(compile_s) + time.perf_counter() - start
        stats = self.compiled.memory_analysis()
        self.peak_bytes = None
        if stats is not None:
            self.peak_bytes = (stats.argument_size_in_bytes + stats.output_size_in_bytes
                               - stats.alias_size_in_bytes + stats.temp_size_in_bytes)

    def step(self) -> None:
        self.params, self.state = self.compiled(self.params, self.state, self.grads)
        jax.block_until_ready((self.params, self.state))


class TorchStep:
    """``torch.optim`` with ``foreach=True`` or ``fused=True`` on the same shapes."""

    def __init__(self, make: Callable[..., Any], shapes: dict, device: str, **impl: Any):
        import torch

        self.torch, self.device = torch, device
        if device == "cuda":  # the peak of this step alone, whatever else is allocated
            torch.cuda.reset_peak_memory_stats()
            already = torch.cuda.memory_allocated()
        generator = torch.Generator(device="cpu").manual_seed(0)
        self.params = []
        for shape in shapes.values():
            p = torch.randn(shape, generator=generator).to(device).requires_grad_(True)
            p.grad = 1e-3 * torch.randn(shape, generator=generator).to(device)
            self.params.append(p)
        self.optimizer = make(self.params, **impl)
        start = time.perf_counter()
        self.step()
        self.first_call_s = time.perf_counter() - start
        self.live_bytes = 2 * sum(p.nbytes for p in self.params) + sum(
            t.nbytes for s in self.optimizer.state.values() for t in s.values()
            if torch.is_tensor(t) and t.dim() > 0)
        self.peak_bytes = None
        if device == "cuda":
            self.peak_bytes = torch.cuda.max_memory_allocated() - already

    def step(self) -> None:
        self.optimizer.step()
        if self.device == "cuda":
            self.torch.cuda.synchronize()


def time_interleaved(
    impls: dict[str, Any], rounds: int, steps: int
) -> dict[str, list[list[float]]]:
    """Per implementation, per round, the seconds of each of ``steps`` steps."""
    names = list(impls)
    times: dict[str, list[list[float]]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            impl, samples = impls[name], []
            impl.step()  # warm-up after the others ran
            for _ in range(steps):
                start = time.perf_counter()
                impl.step()
                samples.append(time.perf_counter() - start)
            times[name].append(samples)
    return times


def median_step(rounds: list[list[float]]) -> float:
    """The median of every step of every round."""
    return statistics.median(s for samples in rounds for s in samples)


def per_round_ratios(times: dict[str, list[list[float]]], name: str, reference: str) -> list[float]:
    """Per round, ``name``'s median step over ``reference``'s: a ratio of neighbours in time."""
    return [statistics.median(a) / statistics.median(b)
            for a, b in zip(times[name], times[reference])]


def require_at_least_one(parser: argparse.ArgumentParser, args: argparse.Namespace,
                         options: tuple[str, ...]) -> None:
    """Stops with the parser's usage error when a count option is below 1."""
    for option in options:
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1, got {getattr(args, option)}")


def construction_orders(names: list[str], count: int) -> list[list[str]]:
    """``count`` orders to build the implementations in: the k-th rotation of ``names``
    (k = 0, 1, …), forward and then reversed, so an even count puts every
    implementation first and last equally often (two: forward, reversed)."""
    orders = []
    for k in range(count):
        shift = (k // 2) % len(names)
        rotated = names[shift:] + names[:shift]
        orders.append(rotated if k % 2 == 0 else rotated[::-1])
    return orders


def rounds_per_order(rounds: int, orders: int) -> int:
    """``--rounds`` split between the orders, rounded up: orders × this many run."""
    return max(1, -(-rounds // orders))


def time_in_orders(
    makers: dict[str, Callable[[], Any]], rounds: int, steps: int, orders: int
) -> tuple[dict[str, list[list[float]]], dict[str, dict[str, Any]]]:
    """Builds the implementations ``orders`` times, each time in another order, and times them.

    On XLA:CPU, of several executables of the same size compiled in one process, the
    one compiled first runs a many-leaf step up to 10 % faster than the last (the same
    optimizer compiled three times: 27.5, 29.3 and 30.3 ms, and the reverse when built
    in reverse), whatever the order the buffers were allocated in. Building in
    forward and reversed order and pooling the rounds cancels that bias
    (``benchmarks/compile_order.py`` measures it). Returns the per-round step times
    (:func:`rounds_per_order` rounds per order, ratios to be taken within a round) and,
    per implementation, the record (first call, peak and live bytes, last loss, where
    the implementation has them) of its fastest first call.
    """
    per_order = rounds_per_order(rounds, orders)
    times: dict[str, list[list[float]]] = {name: [] for name in makers}
    built: dict[str, dict[str, Any]] = {}
    for order in construction_orders(list(makers), orders):
        impls = {}
        for name in order:
            impls[name] = makers[name]()
        impls = {name: impls[name] for name in makers}  # time in the table's order
        for name, samples in time_interleaved(impls, per_order, steps).items():
            times[name] += samples
        for name in makers:
            record = {key: getattr(impls[name], key, None) for key in
                      ("first_call_s", "peak_bytes", "live_bytes", "loss")}
            if name not in built or record["first_call_s"] < built[name]["first_call_s"]:
                built[name] = record
        del impls  # free this order's buffers before the next order builds its own
        release_memory()
    return times, built


def release_memory() -> None:
    """Frees what dropped implementations held, torch's cached CUDA blocks included."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def copy_seconds(n: int, rounds: int, steps: int) -> float:
    """Median time of ``x + 1`` over n float32s (reads and writes each element once)."""
    add_one = jax.jit(lambda x: x + 1.0, donate_argnums=0)  # in place, as a donated step
    x = jax.block_until_ready(add_one(jnp.zeros((n,), jnp.float32)))
    samples = []
    for _ in range(rounds * steps):
        start = time.perf_counter()
        x = jax.block_until_ready(add_one(x))
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


# --------------------------------------------------------------------------------------


def torch_device(mode: str) -> str | None:
    if mode == "off":
        return None
    try:
        import torch
    except ImportError:
        return None
    if torch.cuda.is_available():
        return "cuda"
    return "cpu" if mode == "on" else None


def process_peak_bytes() -> dict[str, Any]:
    stats = jax.devices()[0].memory_stats() or {}
    peak = {"max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if "peak_bytes_in_use" in stats:
        peak["device_peak_bytes_in_use"] = stats["peak_bytes_in_use"]
    return peak


def bench_tree(tree: str, args: argparse.Namespace, device: str | None) -> dict[str, Any]:
    shapes = tree_shapes(tree, args.size)
    params = random_tree(shapes, seed=0)
    grads = random_tree(shapes, seed=1, scale=1e-3)
    n = sum(int(np.prod(s)) for s in shapes.values())
    copy_s = copy_seconds(n, args.rounds, args.steps)
    copy_gbps = 8 * n / copy_s / 1e9
    print(f"\n{tree}: {n / 1e6:.1f} M params, {len(shapes)} leaves; copy {copy_s * 1e3:.2f} ms "
          f"= {copy_gbps:.1f} GB/s", flush=True)
    result: dict[str, Any] = {"params": n, "leaves": len(shapes), "copy_ms": copy_s * 1e3,
                              "copy_GBps": copy_gbps, "optimizers": {}}
    packed_params = packed_grads = None
    if args.packed:
        layout = wdchain.PackedLayout.from_params(params)
        packed_params, packed_grads = layout.pack(params), layout.pack(grads)
    repeats = args.compile_repeats
    for name in args.optimizers:
        spec = OPTIMIZERS[name]
        makers: dict[str, Callable[[], Any]] = {
            "optax": lambda spec=spec: JaxStep(spec.optax(), params, grads, repeats),
            "wdchain": lambda spec=spec: JaxStep(spec.wdchain(), params, grads, repeats),
        }
        if args.packed:
            makers["wdchain packed"] = lambda spec=spec: JaxStep(
                spec.wdchain(), packed_params, packed_grads, repeats)
        if device is not None and spec.torch is not None:
            for label, kwargs in (("torch foreach", {"foreach": True}),
                                  ("torch fused", {"fused": True})):
                try:  # is this option supported here? Probed on one small tensor
                    TorchStep(spec.torch, {"probe": (8,)}, device, **kwargs)
                except (RuntimeError, TypeError, ValueError) as error:
                    print(f"  {name} {label}: skipped ({error})".splitlines()[0])
                    continue
                makers[label] = functools.partial(TorchStep, spec.torch, shapes, device,
                                                  **kwargs)
        times, built = time_in_orders(makers, args.rounds, args.steps, args.orders)
        result["optimizers"][name] = summarize(built, times, n, spec.bytes_per_param, copy_gbps)
        for label, row in result["optimizers"][name].items():
            print(f"  {name:13s} {label:15s} {row['median_ms']:9.3f} ms  "
                  f"x{row['time_vs_optax']:.3f}"
                  f"  {row['GBps']:7.1f} GB/s ({100 * row['fraction_of_copy']:.0f}% of copy)"
                  f"  compile {row['compile_s']:.2f} s  peak/arrays {row['peak_vs_arrays']}",
                  flush=True)
    result["process_memory"] = process_peak_bytes()
    return result


def summarize(built, times, n, bytes_per_param, copy_gbps) -> dict[str, dict[str, Any]]:
    medians = {name: median_step(rounds) for name, rounds in times.items()}
    rows = {}
    for name, impl in built.items():
        per_round = per_round_ratios(times, name, "optax")
        gbps = bytes_per_param * n / medians[name] / 1e9
        compile_s = max(impl["first_call_s"] - medians[name], 0.0)
        optax_compile = max(built["optax"]["first_call_s"] - medians["optax"], 1e-9)
        peak = impl["peak_bytes"]
        rows[name] = {
            "median_ms": medians[name] * 1e3,
            "time_vs_optax": statistics.median(per_round),
            "time_vs_optax_quartiles": [float(q) for q in np.percentile(per_round, [25, 75])],
            "time_vs_optax_per_round": per_round,
            "GBps": gbps,
            "fraction_of_copy": gbps / copy_gbps,
            "compile_s": compile_s,
            "compile_vs_optax": compile_s / optax_compile,
            "peak_bytes": peak,
            "arrays_bytes": impl["live_bytes"],
            "peak_vs_arrays": None if peak is None else round(peak / impl["live_bytes"], 3),
        }
    return rows


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    lines = [
        f"Device: {env['device']} ({env['platform']}); jax {env['jax']}, optax {env['optax']}, "
        f"torch {env['torch']}; size {env['size']}; {env['rounds_run']} rounds × "
        f"{env['steps']} steps, interleaved, over {env['orders']} construction orders.",
        "",
        "| tree | optimizer | implementation | step (ms) | × optax (quartiles over rounds) | "
        "GB/s | % of copy | compile (s) | compile × optax | peak / (p+g+state) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for tree, result in results["trees"].items():
        where = (f"{tree} ({result['params'] / 1e6:.1f} M, {result['leaves']} leaves; "
                 f"copy {result['copy_GBps']:.0f} GB/s)")
        for opt, rows in result["optimizers"].items():
            for impl, row in rows.items():
                peak = "–" if row["peak_vs_arrays"] is None else f"{row['peak_vs_arrays']:.2f}"
                q25, q75 = row["time_vs_optax_quartiles"]
                lines.append(
                    f"| {where} | {opt} | {impl} | {row['median_ms']:.3f} | "
                    f"{row['time_vs_optax']:.2f} ({q25:.2f}–{q75:.2f}) | {row['GBps']:.1f} | "
                    f"{100 * row['fraction_of_copy']:.0f}% | {row['compile_s']:.2f} | "
                    f"{row['compile_vs_optax']:.2f} | {peak} |")
    return "\n".join(lines) + "\n"


def bf16_moments_effect(steps: int = 1000) -> dict[str, Any]:
    """AdamW with Adam's moments stored in bfloat16 against float32 moments.

    Same random gradient stream (float32, per-leaf scales from 1e-4 to 1); the
    figure is the relative L2 distance between the parameter changes θ_T − θ_0 of
    the two runs, and the bytes of optimizer state.
    """
    shapes = {"embed": (512, 64), "w1": (64, 256), "b1": (256,), "w2": (256, 64), "b2": (64,)}
    params = random_tree(shapes, seed=0)
    key = jax.random.PRNGKey(2)

    def adamw(mu_dtype, nu_dtype):
        return wdchain.chain(
            wdchain.scale_by_adam(mu_dtype=mu_dtype, nu_dtype=nu_dtype),
            wdchain.decoupled_weight_decay(WD),
            wdchain.scale_by_learning_rate(LR),
        )

    def train(tx):
        def body(carry, i):
            p, s = carry
            g = {name: 10.0 ** (-4 + 4 * j / len(shapes)) * jax.random.normal(
                jax.random.fold_in(key, i * 16 + j), p[name].shape) for j, name in enumerate(p)}
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(body, (params, tx.init(params)), jnp.arange(steps))
        return p

    def state_bytes(tx):
        state = jax.eval_shape(tx.init, params)
        return sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(state))

    reference = jax.jit(lambda: train(adamw(None, None)))()
    reference_bytes = state_bytes(adamw(None, None))
    delta_ref = jnp.concatenate([(reference[k] - params[k]).ravel() for k in shapes])
    rows = {"float32 m, v": {"relative_error": 0.0, "state_bytes": reference_bytes}}
    for label, dtypes in (("bfloat16 m", (jnp.bfloat16, None)),
                          ("bfloat16 v", (None, jnp.bfloat16)),
                          ("bfloat16 m, v", (jnp.bfloat16, jnp.bfloat16))):
        result = jax.jit(lambda d=dtypes: train(adamw(*d)))()
        delta = jnp.concatenate([(result[k] - params[k]).ravel() for k in shapes])
        error = float(jnp.linalg.norm(delta - delta_ref) / jnp.linalg.norm(delta_ref))
        rows[label] = {"relative_error": error, "state_bytes": state_bytes(adamw(*dtypes))}
    return {"steps": steps, "rows": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trees", default="huge,gpt2,tiny",
                        help="comma-separated: huge, gpt2, tiny (default: all)")
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS),
                        help=f"comma-separated, from {', '.join(OPTIMIZERS)} (default: all)")
    parser.add_argument("--rounds", type=int, default=6,
                        help="interleaved rounds in all, split between the orders (default 6)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round (default 10)")
    on_cpu = jax.default_backend() == "cpu"
    parser.add_argument("--size", choices=("full", "cpu", "smoke"),
                        default="cpu" if on_cpu else "full",
                        help="full-size trees, trees scaled down for a CPU (default on a "
                             "CPU backend), or toy trees that only check the script runs")
    parser.add_argument("--torch", choices=("auto", "on", "off"), default="auto",
                        help="torch.optim: auto = only with CUDA; on = on CPU too")
    parser.add_argument("--no-packed", dest="packed", action="store_false",
                        help="leave out wdchain on a PackedLayout")
    parser.add_argument("--orders", type=int, default=2,
                        help="build the implementations this many times, in rotated "
                             "orders, each forward then reversed, and pool the rounds: cancels "
                             "the advantage of the first-compiled executable (default 2)")
    parser.add_argument("--compile-repeats", type=int, default=1,
                        help="compile each step this many times and keep the fastest")
    parser.add_argument("--bf16-moments", action="store_true",
                        help="also measure AdamW with bfloat16 moments against float32 ones")
    parser.add_argument("--out", default=None, help="folder for step.json and step.md")
    args = parser.parse_args(argv)
    require_at_least_one(parser, args, ("rounds", "steps", "orders", "compile_repeats"))
    args.trees = [t for t in args.trees.split(",") if t]
    args.optimizers = [o for o in args.optimizers.split(",") if o]
    unknown = [o for o in args.optimizers if o not in OPTIMIZERS]
    if unknown:
        parser.error(f"--optimizers: unknown {unknown}; choose from {list(OPTIMIZERS)}")
    device = torch_device(args.torch)
    torch_version = None
    if device is not None or args.torch != "off":
        try:
            import torch

            torch_version = torch.__version__
        except ImportError:
            pass
    results: dict[str, Any] = {
        "environment": {
            "device": str(jax.devices()[0].device_kind), "platform": jax.default_backend(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "jax": jax.__version__, "optax": optax.__version__, "torch": torch_version,
            "torch_device": device, "size": args.size, "rounds": args.rounds,
            "steps": args.steps, "orders": args.orders,
            "rounds_run": args.orders * rounds_per_order(args.rounds, args.orders),
            "argv": sys.argv[1:],
        },
        "trees": {},
    }
    for tree in args.trees:
        results["trees"][tree] = bench_tree(tree, args, device)
    table = markdown(results)
    if args.bf16_moments:
        effect = bf16_moments_effect()
        results["bf16_moments"] = effect
        table += (f"\nAdamW after {effect['steps']} steps, moments in bfloat16 vs float32 "
                  "(relative L2 distance of θ_T − θ_0):\n\n| moments | relative error | "
                  "state bytes |\n|---|---|---|\n")
        for label, row in effect["rows"].items():
            table += f"| {label} | {row['relative_error']:.1e} | {row['state_bytes']} |\n"
    print("\n" + table)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "step.json"), "w") as f:
            json.dump(results, f, indent=1)
        with open(os.path.join(args.out, "step.md"), "w") as f:
            f.write(table)
        print(f"wrote {args.out}/step.json and step.md")


if __name__ == "__main__":
    main()
