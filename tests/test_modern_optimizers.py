"""The five modern preconditioners of issue 20: ADOPT, AdEMAMix, LARS, Adan and
schedule-free AdamW.

Each is checked in float64 against optax's own implementation, at the weight decay
optax applies and with the ``build`` placement that reproduces it (named in each case),
and against a NumPy rule written from the paper or the authors' code where optax
departs from it (each departure shown to exist). Trajectories: 50 steps on a small,
badly scaled tree whose gradients depend on the parameters, so that a difference at one
step shows in all later ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import wdchain
from wdchain.ablate import parse_arm

STEPS = 50
EXACT = 1e-12  # largest |θ_wdchain − θ_oracle| over the trajectory, float64
LR, WD = 0.05, 0.1

# A dict, a nested dict and a tuple; scales from 0.1 to 3.
_RNG = np.random.default_rng(0)
PARAMS = {
    "dense": {"w": _RNG.normal(size=(3, 4)), "b": 0.1 * _RNG.normal(size=4)},
    "head": (3.0 * _RNG.normal(size=5),),
}
_LEAVES, _TREEDEF = jax.tree.flatten(PARAMS)
_CURVATURE = [np.logspace(-2, 1, x.size).reshape(x.shape) for x in _LEAVES]
_CENTRE = [np.linspace(-1.0, 1.0, x.size).reshape(x.shape) for x in _LEAVES]


def grads(leaves: list[np.ndarray], t: int) -> list[np.ndarray]:
    """g_t = a ⊙ (θ − c) + noise_t: a quadratic's gradient plus a fixed noise sequence."""
    noise = np.random.default_rng(100 + t)
    return [a * (x - c) + 0.3 * noise.normal(size=x.shape)
            for x, a, c in zip(leaves, _CURVATURE, _CENTRE)]


Trajectory = list[list[np.ndarray]]


def run(tx: optax.GradientTransformation, steps: int = STEPS) -> tuple[Trajectory, Any, Any]:
    """θ_1..θ_steps under ``tx`` (float64), its final state and params."""
    with jax.enable_x64(True):
        params = jax.tree.map(jnp.asarray, PARAMS)
        state = tx.init(params)
        update = jax.jit(tx.update)
        trajectory = []
        for t in range(steps):
            leaves = [np.asarray(x) for x in jax.tree.leaves(params)]
            g = jax.tree.unflatten(_TREEDEF, [jnp.asarray(x) for x in grads(leaves, t)])
            updates, state = update(g, state, params)
            params = optax.apply_updates(params, updates)
            trajectory.append([np.asarray(x) for x in jax.tree.leaves(params)])
    return trajectory, state, params


def rule(step: Callable[[list[np.ndarray], list[np.ndarray], int], list[np.ndarray]],
         steps: int = STEPS) -> Trajectory:
    """θ_1..θ_steps of a NumPy rule ``step(θ, g, t) -> θ'`` (t = 0 at the first)."""
    theta = [x.copy() for x in _LEAVES]
    trajectory = []
    for t in range(steps):
        theta = step(theta, grads(theta, t), t)
        trajectory.append([x.copy() for x in theta])
    return trajectory


def gap(a: Trajectory, b: Trajectory) -> float:
    """max |a − b| over every step and leaf."""
    return max(float(np.max(np.abs(x - y))) for xs, ys in zip(a, b) for x, y in zip(xs, ys))


def build(name: str, **kwargs: Any) -> optax.GradientTransformation:
    with jax.enable_x64(True):
        return wdchain.build(name, **kwargs)


# --------------------------------------------------------------------------------------
# Parity with optax, at the decay optax applies. Each row: (wdchain build, optax).


def _warmed_alpha(c: Any) -> Any:  # optax calls α(count) with count = t − 1
    return 5.0 * jnp.minimum((c.astype(jnp.float64) + 1) / 30, 1.0)


def _warmed_beta3(c: Any) -> Any:
    a = jnp.minimum((c.astype(jnp.float64) + 1) / 30, 1.0)
    inverse = (1 - a) / math.log(0.9) + a / math.log(0.9999)
    return jnp.where(a >= 1, 0.9999, jnp.exp(1 / inverse))


PARITY: dict[str, Callable[[], tuple[Any, Any]]] = {
    # optax's adopt has no weight decay: none, then optax's decoupled term chained.
    "adopt none = optax.contrib.adopt": lambda: (
        build("adopt", decay="none", lr=LR), optax.contrib.adopt(LR)),
    "adopt decoupled = scale_by_adopt → add_decayed_weights → lr": lambda: (
        build("adopt", decay="decoupled", lr=LR, weight_decay=WD),
        optax.chain(optax.contrib.scale_by_adopt(), optax.add_decayed_weights(WD),
                    optax.scale_by_learning_rate(LR))),
    "adopt l2 = add_decayed_weights → adopt": lambda: (
        build("adopt", decay="l2", lr=LR, weight_decay=WD),
        optax.chain(optax.add_decayed_weights(WD), optax.contrib.adopt(LR))),
    "adopt unclipped": lambda: (
        build("adopt", decay="none", lr=LR, clip_exponent=None),
        optax.contrib.adopt(LR, use_clipping=False)),
    # optax's ademamix: add_decayed_weights after the scaling = decoupled.
    "ademamix decoupled = optax.contrib.ademamix": lambda: (
        build("ademamix", decay="decoupled", lr=LR, weight_decay=WD),
        optax.contrib.ademamix(LR, alpha=5.0, weight_decay=WD)),
    "ademamix warmups = optax with α, β₃ schedules": lambda: (
        build("ademamix", decay="decoupled", lr=LR, weight_decay=WD, alpha_warmup=30,
              beta3_warmup=30),
        optax.contrib.ademamix(LR, alpha=_warmed_alpha, b3=_warmed_beta3, weight_decay=WD)),
    # optax's lars: decay before the trust ratio = decoupled (and l2: nothing precedes).
    "lars decoupled = optax.lars": lambda: (
        build("lars", decay="decoupled", lr=2.0, weight_decay=WD),
        optax.lars(2.0, weight_decay=WD)),
    "lars l2 = optax.lars": lambda: (
        build("lars", decay="l2", lr=2.0, weight_decay=WD), optax.lars(2.0, weight_decay=WD)),
    "lars nesterov = optax.lars(nesterov=True)": lambda: (
        build("lars", decay="decoupled", lr=2.0, weight_decay=WD, nesterov=True,
              trust_coefficient=0.01),
        optax.lars(2.0, weight_decay=WD, nesterov=True, trust_coefficient=0.01)),
    # optax's adan: add_decayed_weights after the scaling = decoupled; optax weights the
    # gradient difference by 1 − β₂ and puts 1e-8 inside the root by default.
    "adan decoupled, diff_weight=1−β₂ = optax.adan(eps_root=0)": lambda: (
        build("adan", decay="decoupled", lr=LR, weight_decay=WD, diff_weight=1 - 0.92),
        optax.adan(LR, weight_decay=WD, eps_root=0.0)),
    # optax's schedule_free_adamw: decay in the base step (decoupled), taken at y,
    # bias correction in the second moment.
    "schedule_free_adam decoupled, y, moment = optax.contrib.schedule_free_adamw": lambda: (
        build("schedule_free_adam", decay="decoupled", lr=LR, weight_decay=WD,
              bias_correction="moment", decay_at="y"),
        optax.contrib.schedule_free_adamw(LR, weight_decay=WD)),
}


# Variants of a row above (another option, l2 ≡ decoupled): in the slow set.
_VARIANTS = {"adopt l2 = add_decayed_weights → adopt", "adopt unclipped", "lars l2 = optax.lars",
             "lars nesterov = optax.lars(nesterov=True)"}


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.slow) if name in _VARIANTS else name for name in PARITY])
def test_parity_with_optax(name: str) -> None:
    ours, theirs = PARITY[name]()
    assert gap(run(ours)[0], run(theirs)[0]) <= EXACT


def test_schedule_free_eval_params_match_optax() -> None:
    ours, theirs = PARITY["schedule_free_adam decoupled, y, moment = "
                          "optax.contrib.schedule_free_adamw"]()
    _, our_state, our_params = run(ours)
    _, their_state, their_params = run(theirs)
    with jax.enable_x64(True):
        x_ours = wdchain.schedule_free_eval_params(our_state, our_params)
        x_theirs = optax.contrib.schedule_free_eval_params(their_state, their_params)
        x_read_by_optax = optax.contrib.schedule_free_eval_params(our_state, our_params)
    assert gap([jax.tree.leaves(x_ours)], [jax.tree.leaves(x_theirs)]) <= EXACT
    assert gap([jax.tree.leaves(x_ours)], [jax.tree.leaves(x_read_by_optax)]) == 0
    assert gap([jax.tree.leaves(x_ours)], [jax.tree.leaves(our_params)]) > 1e-3  # x ≠ y


# --------------------------------------------------------------------------------------
# NumPy rules from the papers and the authors' code.


def adopt_rule(wd: float = 0.0, decouple: bool = False, decay_first: bool = False,
               betas: tuple[float, float] = (0.9, 0.9999), eps: float = 1e-6,
               clip: float = 0.25) -> Trajectory:
    """``iShohei220/adopt`` (Dec 2024): L2 (``decouple=False``) or θ ← θ(1 − lr·λ)
    before the step (``decouple=True``), which it skips on the first update, where it
    only fills ν; ``decay_first`` decays there too."""
    beta1, beta2 = betas
    s: dict[str, Any] = {"m": [np.zeros_like(x) for x in _LEAVES]}

    def step(theta: list, g: list, t: int) -> list:
        if wd and not decouple:
            g = [gi + wd * x for gi, x in zip(g, theta)]
        if t == 0:
            s["v"] = [gi * gi for gi in g]
            return [x - LR * wd * x for x in theta] if decouple and decay_first else theta
        if decouple:
            theta = [x - LR * wd * x for x in theta]
        n = [np.clip(gi / np.maximum(np.sqrt(vi), eps), -t**clip, t**clip)
             for gi, vi in zip(g, s["v"])]
        s["m"] = [m + (1 - beta1) * (ni - m) for m, ni in zip(s["m"], n)]
        s["v"] = [beta2 * vi + (1 - beta2) * gi * gi for vi, gi in zip(s["v"], g)]
        return [x - LR * m for x, m in zip(theta, s["m"])]

    return rule(step)


def test_adopt_l2_is_the_authors_l2() -> None:
    assert gap(run(build("adopt", decay="l2", lr=LR, weight_decay=WD))[0],
               adopt_rule(WD, decouple=False)) <= EXACT


def test_adopt_decoupled_is_the_authors_but_decays_at_the_first_update() -> None:
    """The one departure: the decoupled slot decays on every update; the authors' code
    skips the decay on the first (where ADOPT only fills ν and does not move)."""
    ours = run(build("adopt", decay="decoupled", lr=LR, weight_decay=WD))[0]
    assert gap(ours, adopt_rule(WD, decouple=True, decay_first=True)) <= EXACT
    assert gap(ours, adopt_rule(WD, decouple=True, decay_first=False)) > 1e-4


def ademamix_rule(wd: float, alpha_warmup: int, beta3_warmup: int,
                  betas: tuple[float, float, float] = (0.9, 0.999, 0.9999),
                  alpha: float = 5.0, eps: float = 1e-8) -> Trajectory:
    """Pagliardini et al. 2024, Algorithm 1, with its α and β₃ schedulers and AdamW's
    decay θ ← θ − η(u + λθ)."""
    beta1, beta2, beta3 = betas
    zeros = [np.zeros_like(x) for x in _LEAVES]
    s = {"m1": zeros, "m2": zeros, "nu": zeros}

    def step(theta: list, g: list, t0: int) -> list:
        t = t0 + 1
        alpha_t = min(t * alpha / alpha_warmup, alpha)
        a = t / beta3_warmup
        beta3_t = min(math.exp(math.log(beta1) * math.log(beta3)
                               / ((1 - a) * math.log(beta3) + a * math.log(beta1))), beta3)
        s["m1"] = [beta1 * m + (1 - beta1) * gi for m, gi in zip(s["m1"], g)]
        s["m2"] = [beta3_t * m + (1 - beta3_t) * gi for m, gi in zip(s["m2"], g)]
        s["nu"] = [beta2 * v + (1 - beta2) * gi * gi for v, gi in zip(s["nu"], g)]
        return [x - LR * ((m1 / (1 - beta1**t) + alpha_t * m2)
                          / (np.sqrt(v / (1 - beta2**t)) + eps) + wd * x)
                for x, m1, m2, v in zip(theta, s["m1"], s["m2"], s["nu"])]

    return rule(step)


def test_ademamix_is_the_papers_algorithm_with_its_warmups() -> None:
    ours = run(build("ademamix", decay="decoupled", lr=LR, weight_decay=WD,
                     alpha_warmup=30, beta3_warmup=20))[0]
    assert gap(ours, ademamix_rule(WD, 30, 20)) <= EXACT


def lars_rule(wd: float, lr: Callable[[int], float], *, lr_in_momentum: bool,
              paper_ratio: bool = False, independent: bool = False, c: float = 1e-3,
              momentum: float = 0.9) -> Trajectory:
    """LARS per leaf: the paper's (You et al. 2017, Algorithm 1) with ``lr_in_momentum``
    and ``paper_ratio`` (c‖θ‖/(‖g‖ + λ‖θ‖)); optax's ratio c‖θ‖/‖g + λθ‖ otherwise,
    and torch's SGD order (lr after the momentum) without ``lr_in_momentum``.
    ``independent``: the decay θ ← θ − λθ outside ratio and momentum instead."""
    s: dict[str, Any] = {"b": None}

    def step(theta: list, g: list, t: int) -> list:
        inner = 0.0 if independent else wd
        r = []
        for x, gi in zip(theta, g):
            u = gi + inner * x
            norm = (np.linalg.norm(gi) + inner * np.linalg.norm(x) if paper_ratio
                    else np.linalg.norm(u))
            r.append(c * np.linalg.norm(x) / norm * u)
        if lr_in_momentum:
            r = [lr(t) * ri for ri in r]
        s["b"] = r if s["b"] is None else [momentum * b + ri for b, ri in zip(s["b"], r)]
        scale = 1.0 if lr_in_momentum else lr(t)
        return [x - scale * b - (wd * x if independent else 0.0)
                for x, b in zip(theta, s["b"])]

    return rule(step)


def _decaying(count: Any) -> Any:
    return 2.0 * 0.95 ** count


def test_lars_without_decay_is_the_papers() -> None:
    """At λ = 0 and a constant lr the paper's ratio and order agree with wdchain's."""
    ours = run(build("lars", decay="none", lr=2.0))[0]
    assert gap(ours, lars_rule(0.0, lambda t: 2.0, lr_in_momentum=True,
                               paper_ratio=True)) <= EXACT


def test_lars_departures_from_the_paper_and_optax() -> None:
    """With decay, the ratio's norm is ‖g + λθ‖ (optax's), not ‖g‖ + λ‖θ‖; under a
    schedule the lr comes after the momentum (torch's SGD order, timm's Lars), where the
    paper and optax put it inside."""
    ours = run(build("lars", decay="decoupled", lr=_decaying, weight_decay=WD))[0]
    assert gap(ours, lars_rule(WD, _decaying, lr_in_momentum=False)) <= EXACT
    optax_order = run(optax.lars(_decaying, weight_decay=WD))[0]
    assert gap(optax_order, lars_rule(WD, _decaying, lr_in_momentum=True)) <= EXACT
    assert gap(ours, optax_order) > 1e-4
    paper = lars_rule(WD, _decaying, lr_in_momentum=True, paper_ratio=True)
    assert gap(optax_order, paper) > 1e-6


def test_lars_ratio_of_a_zero_leaf_is_the_trust_coefficient() -> None:
    """A zero-initialised leaf (a bias): wdchain's ratio is c there, optax's 1."""
    params = {"b": jnp.zeros(2), "w": jnp.array([3.0, 4.0])}
    grads = {"b": jnp.array([1.0, -2.0]), "w": jnp.array([0.0, 2.0])}
    ours = wdchain.build("lars", decay="none", lr=1.0, trust_coefficient=0.1, momentum=0.0)
    theirs = optax.lars(1.0, trust_coefficient=0.1, momentum=0.0)
    u_ours = ours.update(grads, ours.init(params), params)[0]
    u_theirs = theirs.update(grads, theirs.init(params), params)[0]
    np.testing.assert_allclose(u_ours["b"], [-0.1, 0.2])  # −lr·c·g
    np.testing.assert_allclose(u_theirs["b"], [-1.0, 2.0])  # −lr·g
    np.testing.assert_allclose(u_ours["w"], [0.0, -0.5])  # −lr·c·(5/2)·g, both
    np.testing.assert_allclose(u_theirs["w"], [0.0, -0.5])


def test_lars_independent_decay_is_outside_ratio_and_momentum() -> None:
    ours = run(build("lars", decay="constant", lr=2.0, weight_decay=1e-3))[0]
    assert gap(ours, lars_rule(1e-3, lambda t: 2.0, lr_in_momentum=False,
                               independent=True)) <= EXACT


def adan_rule(wd: float, no_prox: bool,
              betas: tuple[float, float, float] = (0.98, 0.92, 0.99),
              eps: float = 1e-8) -> Trajectory:
    """``sail-sg/Adan``'s ``_single_tensor_adan``: β₂ weights the gradient difference;
    ``no_prox`` θ ← θ(1 − lr·λ) − lr·u, else the paper's proximal
    θ ← (θ − lr·u)/(1 + lr·λ)."""
    beta1, beta2, beta3 = betas
    zeros = [np.zeros_like(x) for x in _LEAVES]
    s: dict[str, Any] = {"m": zeros, "v": zeros, "n": zeros, "prev": None}

    def step(theta: list, g: list, t0: int) -> list:
        t = t0 + 1
        prev = g if s["prev"] is None else s["prev"]
        diff = [gi - pi for gi, pi in zip(g, prev)]
        s["prev"] = g
        s["m"] = [beta1 * m + (1 - beta1) * gi for m, gi in zip(s["m"], g)]
        s["v"] = [beta2 * v + (1 - beta2) * d for v, d in zip(s["v"], diff)]
        s["n"] = [beta3 * n + (1 - beta3) * (gi + beta2 * d) ** 2
                  for n, gi, d in zip(s["n"], g, diff)]
        out = []
        for x, m, v, n in zip(theta, s["m"], s["v"], s["n"]):
            denom = np.sqrt(n) / math.sqrt(1 - beta3**t) + eps
            u = m / (1 - beta1**t) / denom + beta2 * v / (1 - beta2**t) / denom
            out.append(x * (1 - LR * wd) - LR * u if no_prox else (x - LR * u) / (1 + LR * wd))
        return out

    return rule(step)


def test_adan_decoupled_is_the_authors_no_prox() -> None:
    ours = run(build("adan", decay="decoupled", lr=LR, weight_decay=WD))[0]
    assert gap(ours, adan_rule(WD, no_prox=True)) <= EXACT


def test_adan_departures_optax_weight_and_proximal_decay() -> None:
    """optax weights the gradient difference by 1 − β₂ (0.08), the paper and its code by
    β₂ (0.92); the authors' default decay is proximal, which no wdchain placement is:
    (θ − lr·u)/(1 + lr·λ) = θ − lr(u + λθ)/(1 + lr·λ), decoupled with lr/(1 + lr·λ)."""
    ours = run(build("adan", decay="decoupled", lr=LR, weight_decay=WD))[0]
    assert gap(ours, run(optax.adan(LR, weight_decay=WD, eps_root=0.0))[0]) > 1e-3
    proximal = adan_rule(WD, no_prox=False)
    assert 1e-5 < gap(ours, proximal) < 5e-2  # second order in lr·λ


def schedule_free_rule(wd: float, point: str, warmup: int,
                       betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                       r: float = 0.0, power: float = 2.0) -> Trajectory:
    """``facebookresearch/schedule_free``'s AdamWScheduleFreeReference: γ_k =
    lr·min((k+1)/warmup, 1)·√(1 − β₂^{k+1}), z ← z − γ_k(g/(√v + ε) + λ·point), the
    average's weight (k+1)^r·max(γ)^p; point y or z (its ``decay_at_z``), or x."""
    beta1, beta2 = betas
    s: dict[str, Any] = {"z": [x.copy() for x in _LEAVES], "x": [x.copy() for x in _LEAVES],
                         "v": [np.zeros_like(x) for x in _LEAVES], "lr_max": -1.0,
                         "weight_sum": 0.0}

    def step(y: list, g: list, k: int) -> list:
        sched = (k + 1) / warmup if k < warmup else 1.0
        lr = LR * sched * math.sqrt(1 - beta2 ** (k + 1))
        s["lr_max"] = max(lr, s["lr_max"])
        weight = (k + 1) ** r * s["lr_max"] ** power
        s["weight_sum"] += weight
        ck = weight / s["weight_sum"] if s["weight_sum"] else 0.0
        at = {"y": y, "z": s["z"], "x": s["x"]}[point]
        s["v"] = [beta2 * v + (1 - beta2) * gi * gi for v, gi in zip(s["v"], g)]
        s["z"] = [z - lr * (gi / (np.sqrt(v) + eps) + wd * p)
                  for z, gi, v, p in zip(s["z"], g, s["v"], at)]
        s["x"] = [(1 - ck) * x + ck * z for x, z in zip(s["x"], s["z"])]
        return [beta1 * x + (1 - beta1) * z for x, z in zip(s["x"], s["z"])]

    return rule(step)


def _warmup10(count: Any) -> Any:  # the reference's min((k + 1)/warmup, 1), in float64
    return jnp.minimum((count.astype(jnp.float64) + 1) / 10, 1.0)


@pytest.mark.parametrize("point", ["y", "z", "x"])
def test_schedule_free_decay_points_are_the_reference_rule(point: str) -> None:
    """y: Defazio's default and optax's; z: the reference's ``decay_at_z``; x: the third
    answer, the decay taken at the evaluated average."""
    ours = run(build("schedule_free_adam", decay="decoupled", lr=LR, weight_decay=WD,
                     schedule=_warmup10, decay_at=point))[0]
    assert gap(ours, schedule_free_rule(WD, point, warmup=10)) <= EXACT


def test_schedule_free_decay_points_differ_and_the_reference_is_not_optax() -> None:
    rules = {p: schedule_free_rule(WD, p, warmup=10) for p in ("y", "z", "x")}
    assert min(gap(rules["y"], rules["z"]), gap(rules["y"], rules["x"]),
               gap(rules["z"], rules["x"])) > 1e-5
    # Defazio's bias correction (in the step size) is not optax's (in the moment).
    ours = run(build("schedule_free_adam", decay="decoupled", lr=LR, weight_decay=WD))[0]
    theirs = run(optax.contrib.schedule_free_adamw(LR, weight_decay=WD))[0]
    assert gap(ours, theirs) > 1e-4


# --------------------------------------------------------------------------------------
# Every axis, describe, runner arms, options refused.

# Each preconditioner and the step describe shows for it.
NAMES = {"adopt": "adopt(", "ademamix": "ademamix(", "lars": "trust_ratio(c=0.001) → momentum(",
         "adan": "adan(", "schedule_free_adam": "schedule_free_adam("}
_LR = {"lars": 1.0}


def _two_steps(tx: optax.GradientTransformation) -> Any:
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), PARAMS)
    state = tx.init(params)
    for t in range(2):
        g = jax.tree.unflatten(_TREEDEF, [jnp.asarray(x, jnp.float32) for x in grads(
            [np.asarray(p) for p in jax.tree.leaves(params)], t)])
        updates, state = tx.update(g, state, params)
        assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))
        params = optax.apply_updates(params, updates)
    return state


@pytest.mark.parametrize("name", list(NAMES))
def test_every_decay_gate_and_target_builds_runs_and_is_described(name: str) -> None:
    lr = _LR.get(name, 0.01)
    structures = set()
    for decay in wdchain.PLACEMENTS:
        tx = wdchain.build(name, decay=decay, lr=lr, weight_decay=1e-3)
        structures.add(jax.tree.structure(_two_steps(tx)))
        assert NAMES[name] in wdchain.describe(tx)
    assert len(structures) == 1  # one state structure for every placement
    mask = {"dense": {"w": True, "b": False}, "head": (True,)}
    for decay in ("corrected", "stable") if name != "lars" else ("corrected",):  # not adaptive
        _two_steps(wdchain.build(name, decay=decay, lr=lr, lr_peak=2 * lr, weight_decay=1e-3,
                                 gate="cautious", toward="init", mask=mask))
    arm = parse_arm(f"{name}-independent+cautious")
    assert (arm.preconditioner, arm.decay, arm.gate) == (name, "independent", "cautious")
    # the runner's default λ grid: SGD's for LARS (λθ joins g before the ratio)
    decoupled = parse_arm(f"{name}-decoupled").default_weight_decays(2)
    assert decoupled[-1] == (1.0 if name == "lars" else 100.0)


def test_schedule_free_describes_its_average_and_decay_point() -> None:
    text = wdchain.describe(wdchain.build("schedule_free_adam", decay="decoupled", lr=0.01,
                                          weight_decay=0.1, decay_at="z"))
    assert "schedule_free(β=0.9" in text and "decay_at=z" in text
    assert "not built by wdchain" not in text


@pytest.mark.parametrize("name, option, value, message", [
    ("adopt", "clip_exponent", -1.0, "clip_exponent must be in"),
    ("ademamix", "betas", (0.9, 0.999), "betas must be three numbers"),
    ("ademamix", "alpha_warmup", 2.5, "alpha_warmup must be None"),
    ("lars", "nesterov", 1, "nesterov must be True or False"),
    ("adan", "diff_weight", -0.1, "diff_weight must be in"),
    ("schedule_free_adam", "decay_at", "w", "decay_at must be 'y'"),
    ("schedule_free_adam", "bias_correction", "none", "bias_correction must be 'lr'"),
    ("schedule_free_adam", "betas", (0.0, 0.999), r"betas\[0\].*must be in \(0, 1\]"),
])
def test_bad_options_are_refused_naming_option_value_and_fix(name, option, value, message):
    with pytest.raises(ValueError, match=f"build: {message}"):
        wdchain.build(name, lr=0.01, **{option: value})


@pytest.mark.parametrize("name", ["lars", "schedule_free_adam"])
def test_runner_arm_takes_a_vmapped_grid_of_lr_and_weight_decay(name: str) -> None:
    """The runner vmaps (lr, λ) over a grid: the wrapped and the inside slots take traced
    values and give what each pair gives alone."""
    arm = parse_arm(f"{name}-decoupled")
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), PARAMS)

    def final(lr: Any, weight_decay: Any) -> Any:
        tx = arm.optimizer(lr, weight_decay, None, None)
        p, state = params, tx.init(params)
        for t in range(3):
            g = jax.tree.map(lambda x, t=t: jnp.sin(x + t), p)
            updates, state = tx.update(g, state, p)
            p = optax.apply_updates(p, updates)
        return p

    lrs, wds = jnp.array([0.5, 0.01]), jnp.array([0.0, 0.1])
    grid = jax.jit(jax.vmap(final))(lrs, wds)
    for i in range(2):
        expected = jax.jit(final)(float(lrs[i]), float(wds[i]))
        jax.tree.map(lambda g, e, i=i: np.testing.assert_allclose(g[i], e, rtol=1e-6, atol=1e-7),
                     grid, expected)
