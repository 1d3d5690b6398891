"""Loshchilov & Hutter (ICLR 2019), "Decoupled Weight Decay Regularization", as exact tests.

* Prop. 1: for plain SGD, L2 with λ' = λ/α is decay λ not scaled by the lr.
* Prop. 2: for Adam, no L2 coefficient λ' reproduces decoupled decay (AdamW).
* Prop. 3: with a fixed preconditioner diag(s)⁻¹, decoupled decay λ is L2 on
  ‖θ ⊙ √s‖² with λ' = λ/α.
* SGD with momentum and L2 is not SGDW: the decay enters the momentum buffer.

Plus the conventions that follow from them (``paper_to_torch`` and friends).
All in float64, compared to rounding.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from torch_oracle import make_grads, make_params, relative_error, warmup_cosine

import wdchain

ALPHA = 0.05
LAMBDA = 0.02
STEPS = 100
ROUNDING = 1e-12


def final_params(tx: optax.GradientTransformation, params: Any, grads: Any) -> Any:
    """Params after one update per stacked gradient (traceable: jit or vmap it)."""

    def body(carry: tuple, g: Any) -> tuple:
        p, state = carry
        updates, state = tx.update(g, state, p)
        return (optax.apply_updates(p, updates), state), None

    return jax.lax.scan(body, (params, tx.init(params)), grads)[0][0]


def trajectory(tx: optax.GradientTransformation, params: Any, grads: Any) -> Any:
    """Final float64 params after one update per stacked gradient (jit + scan)."""
    with jax.enable_x64(True):
        final = jax.jit(lambda p, g: final_params(tx, p, g))(
            jax.tree.map(jnp.asarray, params), jax.tree.map(jnp.asarray, grads)
        )
        return jax.tree.map(np.asarray, final)


@pytest.fixture(scope="module")
def problem() -> tuple[Any, Any]:
    params = make_params()
    return params, make_grads(params, STEPS)


# --------------------------------------------------------------------------------------
# Proposition 1.


def test_prop1_sgd_l2_is_weight_decay_not_scaled_by_lr(problem: tuple) -> None:
    params, grads = problem
    l2 = wdchain.build("sgd", decay="l2", lr=ALPHA, weight_decay=LAMBDA / ALPHA)
    unscaled = wdchain.build("sgd", decay="constant", lr=ALPHA, weight_decay=LAMBDA)
    assert relative_error(trajectory(l2, params, grads), trajectory(unscaled, params, grads)) \
        < ROUNDING
    # ... and L2 with λ' = λ doesn't: it decays by αλ per step, not λ.
    naive = wdchain.build("sgd", decay="l2", lr=ALPHA, weight_decay=LAMBDA)
    assert relative_error(trajectory(naive, params, grads),
                          trajectory(unscaled, params, grads)) > 1e-3


def test_prop1_with_a_schedule_is_the_papers_independent_decay(problem: tuple) -> None:
    """Under an lr schedule α_t = α·η_t, SGD with L2 λ' = λ/α (= paper_to_torch) is
    θ ← θ − α_t g − η_t λθ: the paper's Algorithm 1 decay."""
    params, grads = problem
    l2 = wdchain.build("sgd", decay="l2", lr=ALPHA, schedule=warmup_cosine,
                       weight_decay=wdchain.paper_to_torch(LAMBDA, lr_peak=ALPHA))
    paper = wdchain.build("sgd", decay="independent", lr=ALPHA, schedule=warmup_cosine,
                          weight_decay=LAMBDA)
    assert relative_error(trajectory(l2, params, grads), trajectory(paper, params, grads)) \
        < ROUNDING


# --------------------------------------------------------------------------------------
# Proposition 2.


def test_prop2_no_l2_coefficient_gives_adamw_first_step() -> None:
    """Exact on step 1: Adam's step is α·g̃/(|g̃| + ε) for g̃ = g + λ'θ, so |Δθ| < α for
    every λ'; AdamW's step is α·(g/(|g| + ε) + λθ), of size ≈ α(1 + λθ) when g and θ
    have the same sign."""
    with jax.enable_x64(True):
        theta = jnp.array([2.0, -3.0])
        g = jnp.array([1.0, -0.5])
        weight_decay = 0.5
        adamw = wdchain.build("adam", decay="decoupled", lr=ALPHA, weight_decay=weight_decay)
        target = adamw.update(g, adamw.init(theta), theta)[0]
        np.testing.assert_allclose(np.abs(target), ALPHA * (1 + weight_decay * np.abs(theta)),
                                   rtol=1e-7)

        def adam_step(l2: Any) -> Any:
            tx = wdchain.build("adam", decay="l2", lr=ALPHA, weight_decay=l2)
            return tx.update(g, tx.init(theta), theta)[0]

        grid = jnp.concatenate([jnp.zeros(1), jnp.logspace(-6, 6, 121)])
        steps = np.asarray(jax.vmap(adam_step)(grid))
        target = np.asarray(target)
    assert np.max(np.abs(steps)) <= ALPHA * (1 + 1e-15)
    assert np.min(np.max(np.abs(steps - target), axis=1)) > 0.25 * ALPHA


def test_prop2_no_l2_coefficient_reproduces_adamw_trajectory(problem: tuple) -> None:
    params, grads = problem
    adamw = trajectory(wdchain.build("adam", decay="decoupled", lr=ALPHA, weight_decay=1.0),
                       params, grads)
    # λ' over eight decades, with the natural candidates λ' = λ and λ/α among them.
    grid = np.concatenate([[0.0, 1.0, 1.0 / ALPHA], np.logspace(-4, 4, 33)])

    def final(l2: Any) -> Any:
        tx = wdchain.build("adam", decay="l2", lr=ALPHA, weight_decay=l2)
        return final_params(tx, params, grads)

    with jax.enable_x64(True):
        stacked = jax.jit(jax.vmap(final))(jnp.asarray(grid))
        finals = [jax.tree.map(lambda x, i=i: np.asarray(x[i]), stacked)
                  for i in range(len(grid))]
    errors = [relative_error(f, adamw) for f in finals]
    assert min(errors) > 1e-2, dict(zip(grid, errors))


# --------------------------------------------------------------------------------------
# Proposition 3.


def scale_by_fixed_preconditioner(s: Any) -> optax.GradientTransformation:
    """u ← u / s: the fixed diagonal preconditioner diag(s)⁻¹ (test-local)."""

    def update_fn(updates: Any, state: Any, params: Any = None) -> tuple:
        del params
        return jax.tree.map(jnp.divide, updates, s), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def test_prop3_decoupled_decay_is_scale_adjusted_l2() -> None:
    rng = np.random.default_rng(3)
    with jax.enable_x64(True):
        s = {"a": jnp.asarray(10.0 ** rng.uniform(-2, 2, (4, 3))),
             "b": jnp.asarray(10.0 ** rng.uniform(-2, 2, (5,)))}
        curvature = jax.tree.map(lambda x: jnp.asarray(rng.uniform(0.1, 2.0, x.shape)), s)
        theta0 = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape)), s)

        def loss(theta: Any) -> Any:  # f(θ) = ½ Σ c (θ − 1)²
            return sum(jnp.sum(0.5 * c * (t - 1.0) ** 2)
                       for c, t in zip(jax.tree.leaves(curvature), jax.tree.leaves(theta)))

        def scaled_l2(theta: Any, l2: float) -> Any:  # (λ'/2)‖θ ⊙ √s‖²
            return 0.5 * l2 * sum(jnp.sum(w * t**2) for w, t in
                                  zip(jax.tree.leaves(s), jax.tree.leaves(theta)))

        def run(tx: optax.GradientTransformation, objective: Any) -> Any:
            @jax.jit
            def go(theta: Any) -> Any:
                def body(carry: tuple, _: Any) -> tuple:
                    theta, state = carry
                    updates, state = tx.update(jax.grad(objective)(theta), state, theta)
                    return (optax.apply_updates(theta, updates), state), None

                return jax.lax.scan(body, (theta, tx.init(theta)), None, length=STEPS)[0][0]

            return jax.tree.map(np.asarray, go(theta0))

        preconditioner = scale_by_fixed_preconditioner(s)
        # The paper's decoupled decay: θ ← θ − α·s⁻¹∇f − λθ.
        decoupled = wdchain.chain(preconditioner, wdchain.scale_by_learning_rate(ALPHA),
                                  wdchain.independent_weight_decay(LAMBDA))
        # L2 on ‖θ ⊙ √s‖² with λ' = λ/α: θ ← θ − α·s⁻¹(∇f + λ'·s⊙θ).
        adjusted = wdchain.chain(preconditioner, wdchain.scale_by_learning_rate(ALPHA))
        expected = run(decoupled, loss)
        got = run(adjusted, lambda t: loss(t) + scaled_l2(t, LAMBDA / ALPHA))
        assert relative_error(got, expected) < ROUNDING
        # torch's decoupled form (decay scaled by α) is the same with λ' = λ.
        torch_style = wdchain.chain(preconditioner, wdchain.decoupled_weight_decay(LAMBDA),
                                    wdchain.scale_by_learning_rate(ALPHA))
        got = run(adjusted, lambda t: loss(t) + scaled_l2(t, LAMBDA))
        assert relative_error(got, run(torch_style, loss)) < ROUNDING
        # Plain (not scale-adjusted) L2 is a different regulariser.
        plain_l2 = wdchain.chain(wdchain.add_l2_to_grad(LAMBDA / ALPHA), preconditioner,
                                 wdchain.scale_by_learning_rate(ALPHA))
        assert relative_error(run(plain_l2, loss), expected) > 1e-2


# --------------------------------------------------------------------------------------
# SGD with momentum: L2 ≠ SGDW.


def momentum_trace(state: Any) -> Any:
    traces = [s.trace for s in jax.tree.leaves(
        state, is_leaf=lambda x: isinstance(x, wdchain.ScaleByMomentumState))
        if isinstance(s, wdchain.ScaleByMomentumState)]
    assert len(traces) == 1
    return traces[0]


def test_momentum_l2_puts_the_decay_in_the_buffer() -> None:
    """Zero gradients, μ = 0.9, α = 0.1, λ = 0.5. L2: b₁ = λθ₀, b₂ = μb₁ + λθ₁.
    SGDW (decoupled): the buffer stays zero and θ shrinks by (1 − αλ) per step."""
    mu, alpha, lam = 0.9, 0.1, 0.5
    theta0 = jnp.array([2.0, -4.0])
    zero = jnp.zeros(2)
    l2 = wdchain.build("momentum", decay="l2", lr=alpha, weight_decay=lam, momentum=mu)
    sgdw = wdchain.build("momentum", decay="decoupled", lr=alpha, weight_decay=lam, momentum=mu)

    theta, state = theta0, l2.init(theta0)
    thetas = [theta0]
    for _ in range(2):
        updates, state = l2.update(zero, state, theta)
        theta = optax.apply_updates(theta, updates)
        thetas.append(theta)
    b1 = lam * theta0
    np.testing.assert_allclose(thetas[1], theta0 - alpha * b1, rtol=1e-6)
    np.testing.assert_allclose(momentum_trace(state), mu * b1 + lam * thetas[1], rtol=1e-6)

    theta, state = theta0, sgdw.init(theta0)
    for _ in range(2):
        updates, state = sgdw.update(zero, state, theta)
        theta = optax.apply_updates(theta, updates)
    np.testing.assert_array_equal(momentum_trace(state), zero)
    np.testing.assert_allclose(theta, theta0 * (1 - alpha * lam) ** 2, rtol=1e-6)


def test_momentum_l2_and_sgdw_trajectories_differ(problem: tuple) -> None:
    params, grads = problem
    l2, sgdw = (trajectory(wdchain.build("momentum", decay=d, lr=ALPHA, weight_decay=0.5),
                           params, grads) for d in ("l2", "decoupled"))
    assert relative_error(l2, sgdw) > 1e-2


# --------------------------------------------------------------------------------------
# Conventions.


def test_paper_and_torch_coefficients_convert() -> None:
    assert wdchain.paper_to_torch(0.05, lr_peak=1e-3) == pytest.approx(50.0)
    assert wdchain.torch_to_paper(50.0, lr_peak=1e-3) == pytest.approx(0.05)
    for value in (0.0, 1e-4, 0.3):
        back = wdchain.torch_to_paper(wdchain.paper_to_torch(value, 0.007), 0.007)
        assert back == pytest.approx(value, rel=1e-15)
    with jax.enable_x64(False):
        converted = jax.jit(wdchain.paper_to_torch)(jnp.float32(0.05), jnp.float32(0.5))
    assert float(converted) == pytest.approx(0.1)


def test_paper_decay_equals_torch_decay_after_conversion(problem: tuple) -> None:
    """decay='independent' with λ_paper is decay='decoupled' with λ_paper / lr_peak."""
    params, grads = problem
    lam_paper = 1e-3
    paper = wdchain.build("adam", decay="independent", lr=ALPHA, schedule=warmup_cosine,
                          weight_decay=lam_paper)
    torch_style = wdchain.build("adam", decay="decoupled", lr=ALPHA, schedule=warmup_cosine,
                                weight_decay=wdchain.paper_to_torch(lam_paper, ALPHA))
    assert relative_error(trajectory(paper, params, grads),
                          trajectory(torch_style, params, grads)) < ROUNDING


def test_normalized_weight_decay_by_hand() -> None:
    # 0.025·√(128 / (50 000·100)) = 0.025·√(2.56e-5) = 0.025·0.00505964… = 1.2649111e-4
    assert wdchain.normalized_weight_decay(0.025, batch_size=128, train_size=50_000,
                                           epochs=100) == pytest.approx(1.2649111e-4, rel=1e-7)
    # Full-batch, one epoch: λ = λ_norm.
    assert wdchain.normalized_weight_decay(0.3, 10, 10, 1) == 0.3
    # Four times the epochs halves λ.
    four = wdchain.normalized_weight_decay(0.1, 32, 1000, 40)
    assert four == pytest.approx(0.5 * wdchain.normalized_weight_decay(0.1, 32, 1000, 10))
    assert math.isclose(four, 0.1 * math.sqrt(32 / 40_000))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: wdchain.paper_to_torch(0.1, lr_peak=0.0), "lr_peak must be a number > 0"),
        (lambda: wdchain.paper_to_torch(-0.1, lr_peak=1.0), r"weight_decay must be in \[0"),
        (lambda: wdchain.torch_to_paper(0.1, lr_peak=lambda c: 1.0), "not a schedule"),
        (lambda: wdchain.torch_to_paper(0.1, lr_peak=-2.0), "lr_peak must be a number > 0, .*-2.0"),
        (lambda: wdchain.normalized_weight_decay(0.1, 0, 10, 1), "batch_size must be a positive"),
        (lambda: wdchain.normalized_weight_decay(0.1, 2.0, 10, 1), "batch_size must be a posit"),
        (lambda: wdchain.normalized_weight_decay(0.1, 2, 10, True), "epochs must be a positive"),
        (lambda: wdchain.normalized_weight_decay(0.1, 20, 10, 1), "cannot exceed train_size"),
        (lambda: wdchain.normalized_weight_decay(-1, 2, 10, 1), r"normalized must be in \[0"),
    ],
)
def test_conversion_arguments_are_checked(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
