"""Decay at work: four demonstrations of issue 13's axes, each on a CPU in seconds.

1. ``gradient_ratio``: on the runner's MNIST-1D LayerNorm MLP with a cosine schedule,
   AdamW's ‖g‖/‖θ‖ of the LayerNorm-followed weights rises over the last part of
   training; with ``decay="corrected"`` (AdamC) it stays flat (Defazio 2025).
2. ``rotational_equilibrium``: AdamW at a constant lr on the same weights: the angular
   update per step settles near √(2αλ) and the norm near √(αC/(2λ)) (Kosson et al.
   2024; the constants assume ‖u‖² ≈ C, i.e. β₁ = 0, see ``momentum``).
3. ``cautious_toy``: f(x, y) = (xy − 1)² from a point off the curve: AdamW stops at
   xy < 1 (biased toward the origin); cautious decay ends on xy = 1 (Chen et al. 2025).
4. ``toward_anchor``: decay toward θ₀, or toward a given tree, with a large λ keeps the
   params near it (L2-SP, Li et al. 2018).

Run ``python examples/decay_at_work.py`` for the figures; ``tests/test_decay_demos.py``
checks them.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import wdchain
from wdchain.ablate._builtin import mnist1d_model, mnist1d_splits

NORMALISED = ("hidden1", "hidden2")  # the kernels a LayerNorm follows: scale-invariant


def _mnist1d_setup(seed: int = 0) -> tuple[Any, Any, Any]:
    graphdef, params = nnx.split(mnist1d_model(nnx.Rngs(seed)), nnx.Param)
    (x, y), _, _ = mnist1d_splits(0)
    return graphdef, params, (jnp.asarray(x), jnp.asarray(y))


def _kernels(params: Any) -> dict[str, Any]:
    return {name: params[name]["kernel"].get_value() for name in NORMALISED}


def _train(tx: Any, steps: int, batch: int = 128, seed: int = 0,
           label_noise: float = 0.0) -> dict[str, np.ndarray]:
    """Trains the MLP; returns per-step ‖g‖/‖θ‖, ‖θ‖ and angular update of the two
    LayerNorm-followed kernels (from :func:`wdchain.decay_diagnostics`).

    ``label_noise``: the fraction of each batch's labels replaced by uniform random
    ones, drawn afresh every step, so the training loss cannot reach 0 and the
    gradient noise persists (the regime of one-pass LLM training)."""
    graphdef, params, (x, y) = _mnist1d_setup(seed)
    params = jax.tree.map(jnp.asarray, nnx.to_pure_dict(params))

    def loss(p: Any, xb: Any, yb: Any) -> Any:
        model = nnx.merge(graphdef, nnx.State(p))
        return optax.softmax_cross_entropy_with_integer_labels(model(xb), yb).mean()

    def step(carry: tuple, key: Any) -> tuple:
        p, state = carry
        pick, flip, label = jax.random.split(key, 3)
        index = jax.random.randint(pick, (batch,), 0, x.shape[0])
        labels = jnp.where(jax.random.uniform(flip, (batch,)) < label_noise,
                           jax.random.randint(label, (batch,), 0, 10), y[index])
        grads = jax.grad(loss)(p, x[index], labels)
        updates, state = tx.update(grads, state, p)
        stats = wdchain.decay_diagnostics(
            {k: p[k]["kernel"] for k in NORMALISED},
            {k: updates[k]["kernel"] for k in NORMALISED},
            {k: grads[k]["kernel"] for k in NORMALISED})
        return (optax.apply_updates(p, updates), state), stats

    keys = jax.random.split(jax.random.key(seed + 1), steps)
    run = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), keys)[1])
    return {k: np.asarray(v) for k, v in run(params).items()}


def _mask(params: Any) -> Any:
    """Decay the hidden kernels only (the normalised layers), as the paper."""
    return {k: jax.tree.map(lambda _, k=k: k in NORMALISED, v) for k, v in params.items()}


def gradient_ratio(steps: int = 4000, lr: float = 1e-2, weight_decay: float = 0.5,
                   label_noise: float = 0.5) -> dict[str, dict[str, float]]:
    """‖g‖/‖θ‖ late in a cosine schedule, AdamW vs corrected.

    Returns, per arm and kernel, ``rise`` = mean ratio over the last 10 % of steps /
    mean ratio over 40–50 %, the two means and the norm ‖θ‖ at the end. With
    ``label_noise=0`` the MLP fits the 3,200 training examples and ‖g‖ collapses in
    both arms, which hides the effect (see the docs for the figures).
    """
    schedule = optax.cosine_decay_schedule(1.0, steps)
    out: dict[str, dict[str, float]] = {}
    for decay in ("decoupled", "corrected"):
        tx = wdchain.build("adam", decay=decay, lr=lr, schedule=schedule,
                           weight_decay=weight_decay, mask=_mask)
        stats = _train(tx, steps, label_noise=label_noise)
        for name in NORMALISED:
            ratio = stats[f"{name}/grad_ratio"]
            middle = float(ratio[int(0.4 * steps):int(0.5 * steps)].mean())
            late = float(ratio[int(0.9 * steps):].mean())
            out[f"{decay}/{name}"] = {"middle": middle, "late": late, "rise": late / middle,
                                      "norm_end": float(stats[f"{name}/param_norm"][-1])}
    return out


def rotational_equilibrium(steps: int = 3000, lr: float = 1e-2, weight_decay: float = 0.5,
                           momentum: float = 0.0) -> dict[str, dict[str, float]]:
    """Measured vs predicted angular update and norm over the last third of steps."""
    tx = wdchain.build("adam", decay="decoupled", lr=lr, weight_decay=weight_decay,
                       mask=_mask, betas=(momentum, 0.999))
    stats = _train(tx, steps)
    _, params, _ = _mnist1d_setup()
    out = {}
    for name, kernel in _kernels(params).items():
        tail = slice(2 * steps // 3, None)
        angle = float(stats[f"{name}/angular_update"][tail].mean())
        norm = float(stats[f"{name}/param_norm"][tail].mean())
        out[name] = {
            "angle": angle, "angle_predicted": wdchain.equilibrium_angular_update(
                lr, weight_decay),
            "norm": norm, "norm_predicted": wdchain.equilibrium_norm(
                lr, weight_decay, kernel.size),
            "initial_norm": float(jnp.linalg.norm(kernel)),
        }
        out[name]["angle_ratio"] = out[name]["angle"] / out[name]["angle_predicted"]
        out[name]["norm_ratio"] = out[name]["norm"] / out[name]["norm_predicted"]
    return out


def cautious_toy(steps: int = 5000, lr: float = 1e-3, weight_decay: float = 0.5,
                 start: tuple[float, float] = (2.0, 0.1)) -> dict[str, dict[str, float]]:
    """f(x, y) = (xy − 1)²: xy and f at the end (and xy at 20 % of the steps) of Adam,
    AdamW and AdamW + cautious, and of SGD-momentum with decoupled decay (SGDW, lr × 10)
    with and without the gate.

    SGDW has a true fixed point, ∇f·1/(1 − μ) + λθ = 0, so xy = 1 − λ(1 − μ)/2 there.
    AdamW's bias is not a fixed point: Adam's u = m̂/√v̂ can only balance λθ while v̂
    is still large, and v̂ decays (β₂ = 0.999), so its xy creeps back toward 1 over
    ~10⁴ steps; at a fixed horizon it is biased.
    """

    def f(theta: Any) -> Any:
        return (theta[0] * theta[1] - 1.0) ** 2

    common = {"weight_decay": weight_decay}
    arms = {
        "adam": wdchain.build("adam", decay="none", lr=lr),
        "adamw": wdchain.build("adam", decay="decoupled", lr=lr, **common),
        "adamw+cautious": wdchain.build("adam", decay="decoupled", lr=lr, gate="cautious",
                                        **common),
        "sgdw": wdchain.build("momentum", decay="decoupled", lr=10 * lr, **common),
        "sgdw+cautious": wdchain.build("momentum", decay="decoupled", lr=10 * lr,
                                       gate="cautious", **common),
    }
    out = {}
    for name, tx in arms.items():
        def step(carry: tuple, _: Any, tx: Any = tx) -> tuple:
            theta, state = carry
            updates, state = tx.update(jax.grad(f)(theta), state, theta)
            theta = optax.apply_updates(theta, updates)
            return (theta, state), theta[0] * theta[1]

        theta0 = jnp.asarray(start)
        (theta, _), xy = jax.jit(lambda t, tx=tx, step=step: jax.lax.scan(
            step, (t, tx.init(t)), None, length=steps))(theta0)
        out[name] = {"x": float(theta[0]), "y": float(theta[1]),
                     "xy": float(theta[0] * theta[1]), "f": float(f(theta)),
                     "xy_at_20%": float(xy[steps // 5 - 1])}
    return out


def toward_anchor(steps: int = 2000, lr: float = 1e-2, weight_decay: float = 20.0
                  ) -> dict[str, float]:
    """Least squares from θ₀; distances at the end to θ₀, to a given tree θ_p and to
    the unregularised solution, for no decay, toward θ₀ and toward θ_p."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((256, 16)), jnp.float32)
    w_true = jnp.asarray(rng.standard_normal(16), jnp.float32)
    y = x @ w_true
    theta0 = {"w": jnp.asarray(rng.standard_normal(16), jnp.float32)}
    pretrained = {"w": theta0["w"] + jnp.asarray(rng.standard_normal(16), jnp.float32)}

    def loss(p: Any) -> Any:
        return jnp.mean((x @ p["w"] - y) ** 2)

    def fit(tx: Any) -> Any:
        def step(carry: tuple, _: Any) -> tuple:
            p, state = carry
            updates, state = tx.update(jax.grad(loss)(p), state, p)
            return (optax.apply_updates(p, updates), state), None

        (p, _), _ = jax.lax.scan(step, (theta0, tx.init(theta0)), None, length=steps)
        return p

    def distance(a: Any, b: Any) -> float:
        return float(jnp.linalg.norm(a["w"] - b["w"]))

    out = {"distance θ₀→θ_p": distance(theta0, pretrained),
           "distance θ₀→solution": distance(theta0, {"w": w_true})}
    arms = {
        "none": wdchain.build("adam", decay="none", lr=lr),
        "toward θ₀": wdchain.build("adam", decay="decoupled", lr=lr,
                                   weight_decay=weight_decay, toward="init"),
        "toward θ_p": wdchain.build("adam", decay="decoupled", lr=lr,
                                    weight_decay=weight_decay, toward=pretrained),
    }
    for name, tx in arms.items():
        p = fit(tx)
        out[f"{name}: to θ₀"] = distance(p, theta0)
        out[f"{name}: to θ_p"] = distance(p, pretrained)
        out[f"{name}: to solution"] = distance(p, {"w": w_true})
    return out


def main() -> None:
    np.set_printoptions(precision=4)
    for noise in (0.5, 0.0):
        print(f"1. ‖g‖/‖θ‖ late in a cosine schedule (rise = last 10 % / 40–50 %), "
              f"label noise {noise}:")
        for key, row in gradient_ratio(label_noise=noise).items():
            print(f"   {key:24s} middle {row['middle']:.4f}  late {row['late']:.4f}  "
                  f"rise {row['rise']:.2f}  ‖θ‖ at the end {row['norm_end']:.2f}")
    for beta1 in (0.0, 0.9):
        print(f"2. rotational equilibrium, AdamW β₁ = {beta1}:")
        for key, row in rotational_equilibrium(momentum=beta1).items():
            print(f"   {key}: angle {row['angle']:.4f} vs √(2αλ) {row['angle_predicted']:.4f} "
                  f"(×{row['angle_ratio']:.2f}); norm {row['norm']:.3f} vs √(αC/2λ) "
                  f"{row['norm_predicted']:.3f} (×{row['norm_ratio']:.2f}); "
                  f"init {row['initial_norm']:.2f}")
        if beta1:
            factor = math.sqrt((1 - beta1) / (1 + beta1))
            print(f"   (momentum factor √((1−β₁)/(1+β₁)) = {factor:.3f})")
    for start in ((2.0, 0.1), (2.0, 1.0)):
        print(f"3. f(x, y) = (xy − 1)² from {start}, λ = 0.5, 5000 steps:")
        for key, row in cautious_toy(start=start).items():
            print(f"   {key:16s} x {row['x']:.4f} y {row['y']:.4f} xy {row['xy']:.6f} "
                  f"(at 20 %: {row['xy_at_20%']:.4f}) f {row['f']:.2e}")
    print("4. toward an anchor, λ = 20:")
    for key, value in toward_anchor().items():
        print(f"   {key:28s} {value:.4f}")


if __name__ == "__main__":
    main()
