"""Timescales, equilibria and per-leaf diagnostics (issue 13), against NumPy."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import wdchain


def test_timescale_conversions_are_inverse() -> None:
    lr, wd, batch, n = 3e-4, 0.05, 128, 60000
    tau = wdchain.ema_timescale(lr, wd)
    assert tau == pytest.approx(1 / (lr * wd), rel=1e-15)
    tau_epoch = wdchain.timescale_in_epochs(tau, batch, n)
    assert tau_epoch == pytest.approx(tau * batch / n, rel=1e-15)
    assert wdchain.weight_decay_for_timescale(lr, tau_iter=tau) == pytest.approx(wd, rel=1e-14)
    assert wdchain.weight_decay_for_timescale(
        lr, tau_epoch=tau_epoch, batch_size=batch, dataset_size=n) == pytest.approx(wd, rel=1e-14)


def test_ema_timescale_is_the_decay_of_theta_under_decoupled_decay() -> None:
    """With u = 0, build('sgd', decay='decoupled') shrinks θ by (1 − αλ)^t, so after τ
    steps θ/θ₀ ≈ e^{−1} (for small αλ)."""
    lr, wd = 0.01, 0.1
    tau = int(wdchain.ema_timescale(lr, wd))
    tx = wdchain.build("sgd", decay="decoupled", lr=lr, weight_decay=wd)
    p = jnp.ones(1)
    state = tx.init(p)
    for _ in range(tau):
        u, state = tx.update(jnp.zeros(1), state, p)
        p = p + u
    assert float(p[0]) == pytest.approx((1 - lr * wd) ** tau, rel=1e-4)
    assert float(p[0]) == pytest.approx(math.exp(-1), rel=1e-3)


@pytest.mark.parametrize("decay", ["decoupled", "independent", "constant", "corrected"])
def test_integrated_decay_is_the_sum_of_the_scales(decay: str) -> None:
    steps, peak, wd = 200, 0.1, 0.01
    schedule = optax.cosine_decay_schedule(peak, steps)
    with jax.enable_x64(True):
        ours = float(wdchain.integrated_decay(schedule, wd, steps, decay=decay, lr_peak=peak))
        alpha = np.array([peak * 0.5 * (1 + math.cos(math.pi * t / steps)) for t in range(steps)])
    eta = alpha / peak
    c = {"decoupled": alpha, "independent": eta, "constant": np.ones(steps),
         "corrected": alpha * eta}[decay]
    assert ours == pytest.approx(float(np.sum(c * wd)), rel=1e-12)


def test_integrated_decay_predicts_the_shrinkage_of_a_schedule() -> None:
    """θ_T = θ₀·Π(1 − c_tλ) ≈ θ₀·exp(−Σc_tλ) for build(decay='corrected') with u = 0."""
    steps, peak, wd = 300, 0.5, 0.02
    schedule = optax.cosine_decay_schedule(1.0, steps)
    tx = wdchain.build("sgd", decay="corrected", lr=peak, schedule=schedule, weight_decay=wd)
    p, state = jnp.ones(1), None
    state = tx.init(p)
    for _ in range(steps):
        u, state = tx.update(jnp.zeros(1), state, p)
        p = p + u
    total = float(wdchain.integrated_decay(lambda t: peak * schedule(t), wd, steps,
                                           decay="corrected", lr_peak=peak))
    alpha = np.array([peak * 0.5 * (1 + math.cos(math.pi * t / steps)) for t in range(steps)])
    product = np.prod(1 - alpha * (alpha / peak) * wd)
    assert float(p[0]) == pytest.approx(product, rel=1e-5)
    # exp(−Σ c_tλ) is the first-order form: the gap is ½Σ(c_tλ)² ≈ 0.4 % here
    assert float(p[0]) == pytest.approx(math.exp(-total), rel=1e-2)


def test_equilibria_formulas() -> None:
    assert wdchain.equilibrium_norm(1e-3, 0.1, 512) == pytest.approx(
        math.sqrt(1e-3 * 512 / 0.2), rel=1e-15)
    assert wdchain.equilibrium_angular_update(1e-3, 0.1) == pytest.approx(
        math.sqrt(2e-4), rel=1e-15)
    traced = jax.jit(wdchain.equilibrium_angular_update)(jnp.float32(1e-3), jnp.float32(0.1))
    assert float(traced) == pytest.approx(math.sqrt(2e-4), rel=1e-6)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        wdchain.ema_timescale(0.0, 0.1)
    with pytest.raises(ValueError, match="exactly one of tau_iter and tau_epoch"):
        wdchain.weight_decay_for_timescale(1e-3)
    with pytest.raises(ValueError, match="tau_epoch needs batch_size"):
        wdchain.weight_decay_for_timescale(1e-3, tau_epoch=3.0)
    with pytest.raises(ValueError, match="unknown decay"):
        wdchain.integrated_decay(1e-3, 0.1, 10, decay="l2")
    with pytest.raises(ValueError, match="steps must be a positive int"):
        wdchain.integrated_decay(1e-3, 0.1, 0)


def test_diagnostics_against_numpy() -> None:
    rng = np.random.default_rng(0)
    params = {"a": {"w": rng.standard_normal((4, 3)), "b": rng.standard_normal(3)},
              "n": np.arange(3)}
    updates = jax.tree.map(lambda p: 0.1 * rng.standard_normal(np.shape(p)), params)
    grads = jax.tree.map(lambda p: rng.standard_normal(np.shape(p)), params)
    plain = jax.tree.map(lambda u: 0.9 * u, updates)
    with jax.enable_x64(True):
        stats = jax.jit(lambda p, u, g, z: wdchain.decay_diagnostics(p, u, g, undecayed=z))(
            params, updates, grads, plain)
        grouped = wdchain.decay_diagnostics(params, updates, grads,
                                            groups={"a": "dense", "n": "ints"})
    assert "n/param_norm" not in stats  # integer leaves are skipped
    for name, index in (("a/w", ("a", "w")), ("a/b", ("a", "b"))):
        t, u = params[index[0]][index[1]], updates[index[0]][index[1]]
        g = grads[index[0]][index[1]]
        new = t + u
        cos = np.sum(t * new) / (np.linalg.norm(t) * np.linalg.norm(new))
        np.testing.assert_allclose(stats[f"{name}/param_norm"], np.linalg.norm(t), rtol=1e-12)
        np.testing.assert_allclose(stats[f"{name}/update_ratio"],
                                   np.linalg.norm(u) / np.linalg.norm(t), rtol=1e-12)
        np.testing.assert_allclose(stats[f"{name}/angular_update"], np.arccos(cos), rtol=1e-7)
        np.testing.assert_allclose(stats[f"{name}/grad_ratio"],
                                   np.linalg.norm(g) / np.linalg.norm(t), rtol=1e-12)
        np.testing.assert_allclose(stats[f"{name}/decay_share"], 0.1, rtol=1e-12)
    both = np.sqrt(np.sum(params["a"]["w"] ** 2) + np.sum(params["a"]["b"] ** 2))
    np.testing.assert_allclose(grouped["dense/param_norm"], both, rtol=1e-12)
    assert set(grouped) == {f"dense/{m}" for m in wdchain._diagnostics.METRICS[:-1]}


def test_decay_share_from_the_undecayed_build_sharing_the_state() -> None:
    """decay='none' takes the decayed optimizer's state; the difference is the decay."""
    params = {"w": jnp.array([1.0, -2.0, 0.5])}
    grads = {"w": jnp.array([0.2, 0.1, -0.4])}
    tx = wdchain.build("adam", decay="decoupled", lr=0.1, weight_decay=0.5)
    plain = wdchain.build("adam", decay="none", lr=0.1)
    state = tx.init(params)
    updates, _ = tx.update(grads, state, params)
    undecayed, _ = plain.update(grads, state, params)
    stats = wdchain.decay_diagnostics(params, updates, undecayed=undecayed)
    decay = 0.1 * 0.5 * np.asarray(params["w"])
    np.testing.assert_allclose(stats["w/decay_share"],
                               np.linalg.norm(decay) / np.linalg.norm(updates["w"]), rtol=1e-5)
