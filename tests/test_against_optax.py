"""wdchain against optax: equal where the semantics coincide, and each documented
difference (section 3 of torch_semantics.md) shown to exist and to be of its kind.

Trajectories: float64, 100 steps of the oracle's badly scaled gradients, all compiled
in one ``lax.scan``; errors are relative to each leaf's scale.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch_oracle as oracle

import wdchain

LR, WD, M = oracle.LR, oracle.WD, oracle.M
SCHEDULE = oracle.exponential(LR)
EXACT = 1e-12


def _torch_order_rmsprop(lr: object) -> optax.GradientTransformation:
    """RMSprop with momentum in torch's order, from optax parts: lr after the trace."""
    return optax.chain(
        optax.scale_by_rms(0.99, 1e-8, eps_in_sqrt=False), optax.trace(M),
        optax.scale_by_learning_rate(lr),
    )


# (wdchain, optax) pairs that must agree to rounding.
COINCIDE = {
    "adam": (wdchain.adam(LR), optax.adam(LR)),
    "adam+L2": (
        wdchain.adam(LR, weight_decay=WD),
        optax.chain(optax.add_decayed_weights(WD), optax.adam(LR)),
    ),
    "adamw": (wdchain.adamw(LR, weight_decay=WD), optax.adamw(LR, weight_decay=WD)),
    "adamw(default wd)=optax.adamw(wd=1e-2)": (
        wdchain.adamw(LR), optax.adamw(LR, weight_decay=1e-2)
    ),
    "adam(decoupled)": (
        wdchain.adam(LR, weight_decay=WD, decoupled_weight_decay=True),
        optax.adamw(LR, weight_decay=WD),
    ),
    "adamw+mask+schedule": (
        wdchain.adamw(SCHEDULE, weight_decay=WD, mask=oracle.MASK_TREE),
        optax.adamw(SCHEDULE, weight_decay=WD, mask=oracle.MASK_TREE),
    ),
    "sgd": (wdchain.sgd(LR), optax.sgd(LR)),
    "sgd+momentum+schedule": (wdchain.sgd(SCHEDULE, M), optax.sgd(SCHEDULE, M)),
    "sgd+nesterov": (wdchain.sgd(LR, M, nesterov=True), optax.sgd(LR, M, nesterov=True)),
    "sgd+L2": (
        wdchain.sgd(LR, M, weight_decay=WD),
        optax.chain(optax.add_decayed_weights(WD), optax.sgd(LR, M)),
    ),
    "sgd+maximize+L2+nesterov": (
        wdchain.sgd(LR, M, weight_decay=WD, nesterov=True, maximize=True),
        optax.chain(
            optax.scale(-1.0), optax.add_decayed_weights(WD), optax.sgd(LR, M, nesterov=True)
        ),
    ),
    "rmsprop": (wdchain.rmsprop(LR), optax.rmsprop(LR, decay=0.99, eps_in_sqrt=False)),
    "rmsprop+centered+momentum+L2": (
        wdchain.rmsprop(LR, momentum=M, centered=True, weight_decay=WD),
        optax.chain(
            optax.add_decayed_weights(WD),
            optax.rmsprop(LR, decay=0.99, eps_in_sqrt=False, centered=True, momentum=M),
        ),
    ),
    "rmsprop+momentum+schedule=optax parts in torch order": (
        wdchain.rmsprop(SCHEDULE, momentum=M), _torch_order_rmsprop(SCHEDULE)
    ),
    "adamax": (wdchain.adamax(LR), optax.adamax(LR)),
    "adamax+L2": (
        wdchain.adamax(LR, weight_decay=WD),
        optax.chain(optax.add_decayed_weights(WD), optax.adamax(LR)),
    ),
    "decoupled adamax chain=optax.adamaxw": (
        wdchain.chain(
            wdchain.scale_by_adamax(), wdchain.decoupled_weight_decay(WD),
            wdchain.scale_by_learning_rate(LR),
        ),
        optax.adamaxw(LR, weight_decay=WD),
    ),
    "nadam(momentum_decay=1e9)": (wdchain.nadam(LR, momentum_decay=1e9), optax.nadam(LR)),
    "nadam(momentum_decay=1e9, decoupled)": (
        wdchain.nadam(LR, weight_decay=WD, momentum_decay=1e9, decoupled_weight_decay=True),
        optax.nadamw(LR, weight_decay=WD),
    ),
    "radam(eps=0)": (wdchain.radam(LR, eps=0.0), optax.radam(LR, eps=0.0)),
}

# (wdchain, optax) pairs that must differ: the documented differences.
DIFFER = {
    "adamw default wd (1e-2 vs 1e-4)": (wdchain.adamw(LR), optax.adamw(LR)),
    "adam L2 vs optax.adamw": (wdchain.adam(LR, weight_decay=WD), optax.adamw(LR, weight_decay=WD)),
    "adagrad defaults": (wdchain.adagrad(LR), optax.adagrad(LR)),
    "adagrad eps in sqrt": (
        wdchain.adagrad(LR), optax.adagrad(LR, initial_accumulator_value=0.0, eps=1e-10)
    ),
    "rmsprop defaults": (wdchain.rmsprop(LR), optax.rmsprop(LR)),
    "rmsprop eps in sqrt": (wdchain.rmsprop(LR), optax.rmsprop(LR, decay=0.99)),
    "rmsprop lr before trace": (
        wdchain.rmsprop(SCHEDULE, momentum=M),
        optax.rmsprop(SCHEDULE, decay=0.99, eps_in_sqrt=False, momentum=M),
    ),
    "amsgrad": (wdchain.adam(LR, amsgrad=True), optax.amsgrad(LR)),
    "dampening vs trace": (wdchain.sgd(LR, M, dampening=0.3), optax.sgd(LR, M)),
    "dampening vs scaled trace": (
        wdchain.sgd(LR, M, dampening=0.3), optax.chain(optax.scale(0.7), optax.sgd(LR, M))
    ),
    "nadam momentum schedule": (wdchain.nadam(LR), optax.nadam(LR)),
    "radam eps=1e-3": (wdchain.radam(LR, eps=1e-3), optax.radam(LR, eps=1e-3)),
    "radam eps=1e-8": (wdchain.radam(LR), optax.radam(LR)),
    "adamax L2 vs optax.adamaxw": (
        wdchain.adamax(LR, weight_decay=WD), optax.adamaxw(LR, weight_decay=WD)
    ),
}


@functools.cache
def _errors() -> dict[str, float]:
    """Relative error between the two sides of every pair, one compilation in all."""
    pairs = {**COINCIDE, **DIFFER}
    txs = [tx for pair in pairs.values() for tx in pair]
    params = oracle.make_params()
    finals = oracle.run_wdchain(txs, params, oracle.make_grads(params), np.float64)
    return {
        name: oracle.relative_error(finals[2 * i], finals[2 * i + 1])
        for i, name in enumerate(pairs)
    }


@pytest.mark.parametrize("name", list(COINCIDE))
def test_same_updates_as_optax(name: str) -> None:
    error = _errors()[name]
    assert error <= EXACT, f"{name}: {error:.3g}"


# Lower bounds on each documented difference after 100 steps (the measured values are
# at least 20 times larger), so a change that hides a difference fails.
DIFFERENCE_AT_LEAST = {
    "adamw default wd (1e-2 vs 1e-4)": 1e-3,
    "adam L2 vs optax.adamw": 1e-2,
    "adagrad defaults": 1e-2,
    "adagrad eps in sqrt": 1e-9,
    "rmsprop defaults": 1e-2,
    "rmsprop eps in sqrt": 1e-3,
    "rmsprop lr before trace": 1e-2,
    "amsgrad": 1e-3,
    "dampening vs trace": 1e-2,
    "dampening vs scaled trace": 1e-3,
    "nadam momentum schedule": 1e-2,
    "radam eps=1e-3": 1e-5,
    "radam eps=1e-8": 1e-14,
    "adamax L2 vs optax.adamaxw": 1e-2,
}


@pytest.mark.parametrize("name", list(DIFFER))
def test_documented_difference_exists(name: str) -> None:
    error = _errors()[name]
    assert error >= DIFFERENCE_AT_LEAST[name], f"{name}: only {error:.3g}"


def test_radam_eps_difference_scales_with_eps() -> None:
    """The eps placement (ε on √v, before the √(1 − β₂ᵗ) factor, vs on √v̂) is the
    whole RAdam difference: none at ε = 0, tiny at 1e-8, and growing with ε."""
    errors = _errors()
    assert errors["radam(eps=0)"] <= EXACT
    assert errors["radam eps=1e-8"] < 1e-6
    assert errors["radam eps=1e-3"] > 1e3 * errors["radam eps=1e-8"]


# --------------------------------------------------------------------------------------
# The kind of each difference, on hand-computed steps (float64).

G = np.array([0.5, -2.0, 1e-3, 0.0])


def _steps(tx: optax.GradientTransformation, grads: list, params: object = None) -> list:
    """Updates of successive ``tx.update`` calls, as NumPy arrays."""
    params = jnp.zeros(np.shape(grads[0])) if params is None else params
    state, out = tx.init(params), []
    for g in grads:
        updates, state = tx.update(jnp.asarray(g), state, params)
        out.append(np.asarray(updates))
    return out


def test_adamw_default_weight_decay_is_torchs() -> None:
    """With zero gradients one step only decays: θ·lr·λ, λ = 1e-2 (torch) vs 1e-4."""
    with jax.enable_x64(True):
        params = jnp.asarray([1.0, -3.0])
        zeros = np.zeros(2)
        ours = _steps(wdchain.adamw(lr=0.5), [zeros], params)[0]
        theirs = _steps(optax.adamw(0.5), [zeros], params)[0]
    np.testing.assert_allclose(ours, -0.5 * 1e-2 * np.asarray(params), rtol=1e-15)
    np.testing.assert_allclose(theirs, -0.5 * 1e-4 * np.asarray(params), rtol=1e-15)


def test_adagrad_eps_outside_sqrt_and_zero_initial_accumulator() -> None:
    """torch/wdchain: g/(√(s₀+g²) + ε), s₀ = 0, ε = 1e-10; optax: g/√(s₀+g²+ε), s₀ = 0.1,
    ε = 1e-7 (0 where s = 0). A large ε shows the placement on its own."""
    with jax.enable_x64(True):
        ours = _steps(wdchain.adagrad(lr=1.0), [G])[0]
        theirs = _steps(optax.adagrad(1.0), [G])[0]
        eps_ours = _steps(wdchain.scale_by_adagrad(eps=0.25), [G])[0]
        eps_theirs = _steps(optax.scale_by_rss(initial_accumulator_value=0.0, eps=0.25), [G])[0]
    np.testing.assert_allclose(ours, -G / (np.abs(G) + 1e-10), rtol=1e-15)
    np.testing.assert_allclose(theirs, -G / np.sqrt(0.1 + G**2 + 1e-7), rtol=1e-15)
    np.testing.assert_allclose(eps_ours, G / (np.abs(G) + 0.25), rtol=1e-15)
    np.testing.assert_allclose(eps_theirs, G / np.sqrt(G**2 + 0.25), rtol=1e-15)


def test_rmsprop_default_decay_and_eps_in_sqrt() -> None:
    """First step: torch/wdchain g/(√(0.01g²) + ε); optax g/√(0.1g² + ε)."""
    with jax.enable_x64(True):
        ours = _steps(wdchain.rmsprop(lr=1.0), [G])[0]
        theirs = _steps(optax.rmsprop(1.0), [G])[0]
        same_decay = _steps(optax.rmsprop(1.0, decay=0.99), [G])[0]
    np.testing.assert_allclose(ours, -G / (np.sqrt(0.01 * G**2) + 1e-8), rtol=1e-15)
    np.testing.assert_allclose(theirs, -G / np.sqrt(0.1 * G**2 + 1e-8), rtol=1e-15)
    np.testing.assert_allclose(same_decay, -G / np.sqrt(0.01 * G**2 + 1e-8), rtol=1e-15)


def test_rmsprop_lr_after_momentum_under_a_schedule() -> None:
    """With lr₀ = 1, lr₁ = 0.5 and x_k the normalised gradients: torch/wdchain's second
    update is −lr₁(μx₁ + x₂); optax.rmsprop's is −(μ·lr₀x₁ + lr₁x₂)."""
    schedule = lambda count: 1.0 / (1.0 + count)  # noqa: E731
    g2 = np.array([-1.0, 0.5, 3.0, 2.0])
    with jax.enable_x64(True):
        x1, x2 = _steps(optax.scale_by_rms(0.99, 1e-8, eps_in_sqrt=False), [G, g2])
        ours = _steps(wdchain.rmsprop(schedule, momentum=M), [G, g2])[1]
        theirs = _steps(
            optax.rmsprop(schedule, decay=0.99, eps_in_sqrt=False, momentum=M), [G, g2]
        )[1]
    np.testing.assert_allclose(ours, -0.5 * (M * x1 + x2), rtol=1e-14)
    np.testing.assert_allclose(theirs, -(M * 1.0 * x1 + 0.5 * x2), rtol=1e-14)
    assert np.max(np.abs(ours - theirs)) > 0.1


def test_amsgrad_keeps_the_max_of_the_raw_second_moment() -> None:
    """wdchain's state holds max_t v_t (torch's max_exp_avg_sq); optax.amsgrad's holds
    max_t v_t/(1 − β₂ᵗ)."""
    params = oracle.make_params()
    grads = oracle.make_grads(params, steps=20)
    with jax.enable_x64(True):
        txs = {"ours": wdchain.scale_by_adam(amsgrad=True), "theirs": optax.scale_by_amsgrad()}
        nu_max = {}
        for name, tx in txs.items():
            p = jax.tree.map(jnp.asarray, params)
            state = tx.init(p)
            for t in range(20):
                _, state = tx.update(jax.tree.map(lambda g, t=t: jnp.asarray(g[t]), grads), state)
            nu_max[name] = state.nu_max
    for g, ours, theirs in zip(
        jax.tree.leaves(grads), jax.tree.leaves(nu_max["ours"]), jax.tree.leaves(nu_max["theirs"])
    ):
        v, raw_max, corrected_max = np.zeros(g.shape[1:]), 0.0, 0.0
        for t in range(1, 21):
            v = 0.999 * v + 0.001 * g[t - 1] ** 2
            raw_max = np.maximum(raw_max, v)
            corrected_max = np.maximum(corrected_max, v / (1 - 0.999**t))
        np.testing.assert_allclose(np.asarray(ours), raw_max, rtol=1e-13)
        np.testing.assert_allclose(np.asarray(theirs), corrected_max, rtol=1e-13)


def test_dampening_skips_the_first_step() -> None:
    """torch/wdchain: b₁ = g₁, b₂ = μg₁ + (1−τ)g₂. optax.trace: b₂ = μg₁ + g₂; scaling the
    gradient by 1−τ first gives b₁ = (1−τ)g₁."""
    g2 = np.array([-1.0, 0.5, 3.0, 2.0])
    with jax.enable_x64(True):
        ours = _steps(wdchain.scale_by_momentum(M, dampening=0.3), [G, g2])
        trace = _steps(optax.trace(M), [G, g2])
        scaled = _steps(optax.chain(optax.scale(0.7), optax.trace(M)), [G, g2])
    np.testing.assert_allclose(ours[0], G, rtol=1e-15)
    np.testing.assert_allclose(ours[1], M * G + 0.7 * g2, rtol=1e-15)
    np.testing.assert_allclose(trace[1], M * G + g2, rtol=1e-15)
    np.testing.assert_allclose(scaled[0], 0.7 * G, rtol=1e-15)


def test_nadam_momentum_schedule() -> None:
    """First step, d = |g| + ε: torch/wdchain u = g/d·(1 + 0.1·μ₂/(1 − μ₁μ₂)) with
    μ_t = β₁(1 − ½·0.96^{tψ}); optax.nadam u = g/d·(1 + β₁·0.1/(1 − β₁²)), i.e. μ_t = β₁."""
    mu1 = 0.9 * (1 - 0.5 * 0.96 ** (1 * 4e-3))
    mu2 = 0.9 * (1 - 0.5 * 0.96 ** (2 * 4e-3))
    with jax.enable_x64(True):
        ours = _steps(wdchain.scale_by_nadam(), [G])[0]
        theirs = _steps(optax.scale_by_adam(nesterov=True), [G])[0]
    d = np.abs(G) + 1e-8
    np.testing.assert_allclose(ours, G / d * (1 + 0.1 * mu2 / (1 - mu1 * mu2)), rtol=1e-14)
    np.testing.assert_allclose(theirs, G / d * (1 + 0.9 * 0.1 / (1 - 0.81)), rtol=1e-14)


# β₂ for which ρ₇ evaluates to exactly 5.0 in double precision (found by bisection and
# a scan of neighbouring floats): torch's strict ρ_t > 5 leaves step 7 un-rectified,
# optax's ρ_t ≥ 5 rectifies it.
RADAM_BOUNDARY_BETA2 = 0.7678067796924252


def test_radam_threshold_is_strict_like_torch() -> None:
    g = np.array([0.3, -2.0, 1e-3])
    with jax.enable_x64(True):
        ours = _steps(wdchain.scale_by_radam((0.9, RADAM_BOUNDARY_BETA2), eps=0.0), [g] * 8)
        theirs = _steps(optax.scale_by_radam(0.9, RADAM_BOUNDARY_BETA2, eps=0.0), [g] * 8)
    with oracle.torch_default_dtype(np.float64):
        param = torch.zeros(3, requires_grad=True)
        opt = torch.optim.RAdam([param], lr=1.0, betas=(0.9, RADAM_BOUNDARY_BETA2), eps=0.0)
        torch_steps = []
        for _ in range(8):
            before = param.detach().clone()
            param.grad = torch.tensor(g)
            opt.step()
            torch_steps.append((before - param.detach()).numpy())
    # A constant gradient: the un-rectified update is m̂ = g, the rectified one r·sign(g).
    np.testing.assert_allclose(ours[6], g, rtol=1e-14)
    np.testing.assert_allclose(torch_steps[6], g, rtol=1e-14)
    assert np.allclose(np.abs(theirs[6]), np.abs(theirs[6][0])) and not np.allclose(theirs[6], g)
    np.testing.assert_allclose(ours[7], theirs[7], rtol=1e-14)
    np.testing.assert_allclose(np.stack(ours), np.stack(torch_steps), rtol=1e-14)
