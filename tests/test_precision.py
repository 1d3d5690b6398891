"""Precision: bfloat16 params, hyperparameters that keep their precision, decay
below bfloat16 resolution, and step counts over long runs and at the int32 limit."""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import wdchain

BF16 = jnp.bfloat16
ALIASES = {
    "sgd": lambda: wdchain.sgd(lr=0.1, momentum=0.9, weight_decay=0.1),
    "adagrad": lambda: wdchain.adagrad(lr=0.1, weight_decay=0.1),
    "rmsprop": lambda: wdchain.rmsprop(lr=0.01, centered=True, weight_decay=0.1),
    "adam": lambda: wdchain.adam(lr=0.01, weight_decay=0.1, amsgrad=True),
    "adamw": lambda: wdchain.adamw(lr=0.01, weight_decay=0.5),
    "nadam": lambda: wdchain.nadam(lr=0.01, weight_decay=0.1),
    "radam": lambda: wdchain.radam(lr=0.01, weight_decay=0.1),
    "adamax": lambda: wdchain.adamax(lr=0.01, weight_decay=0.1),
    "build-independent": lambda: wdchain.build("adam", decay="independent", weight_decay=0.1),
}


def grads_at(t, shape=(3,)):
    values = np.cos(0.7 * t + np.arange(math.prod(shape))) + 0.1 * (t % 3)
    return values.reshape(shape)


@pytest.mark.parametrize("name", sorted(ALIASES))
def test_bf16_params_get_bf16_updates_and_state(name):
    tx = ALIASES[name]()
    params = {"w": jnp.ones((2, 3), BF16), "step": jnp.array(7)}
    state = tx.init(params)
    step = jax.jit(tx.update)
    for t in range(3):
        grads = {"w": jnp.asarray(grads_at(t, (2, 3)), BF16), "step": jnp.array(0)}
        updates, state = step(grads, state, params)
        params = optax.apply_updates(params, updates)
    assert updates["w"].dtype == BF16 and params["w"].dtype == BF16
    assert bool(jnp.all(jnp.isfinite(params["w"])))
    assert int(params["step"]) == 7
    for leaf in jax.tree.leaves(state):
        if leaf.shape == (2, 3):
            assert leaf.dtype == BF16


def adam_reference(grads, betas=(0.9, 0.999), eps=1e-8):
    """Adam's equations in float64: the moments and the update at each step."""
    m = v = np.zeros_like(grads[0], np.float64)
    out = []
    for t, g in enumerate(grads, start=1):
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        bc1, bc2 = 1 - betas[0] ** t, 1 - betas[1] ** t
        out.append(((m / bc1) / (np.sqrt(v) / math.sqrt(bc2) + eps), m, v))
    return out


def test_beta2_keeps_its_precision_next_to_bf16_params():
    # In bfloat16, 0.999 rounds to 1.0: v would stay 0 and the update explode.
    assert float(jnp.asarray(0.999, BF16)) == 1.0
    tx = wdchain.scale_by_adam(betas=(0.9, 0.999), mu_dtype=jnp.float32, nu_dtype=jnp.float32)
    grads = [np.asarray(jnp.asarray(grads_at(t), BF16), np.float64) for t in range(6)]
    state = tx.init(jnp.zeros(3, BF16))
    for g, (u_ref, m_ref, v_ref) in zip(grads, adam_reference(grads)):
        u, state = tx.update(jnp.asarray(g, BF16), state)
        assert u.dtype == BF16 and state.nu.dtype == jnp.float32
        np.testing.assert_allclose(state.mu, m_ref, rtol=1e-6)
        np.testing.assert_allclose(state.nu, v_ref, rtol=1e-6)  # β₂ = 0.999, not 1.0
        np.testing.assert_allclose(np.asarray(u, np.float64), u_ref, rtol=2**-8)  # one rounding


def test_statistics_in_float32_are_closer_than_in_bf16():
    grads = [np.asarray(jnp.asarray(grads_at(t), BF16), np.float64) for t in range(30)]
    u_ref = adam_reference(grads)[-1][0]
    errors = {}
    for dtype in (None, jnp.float32):
        tx = wdchain.scale_by_adam(mu_dtype=dtype, nu_dtype=dtype)
        state = tx.init(jnp.zeros(3, BF16))
        for g in grads:
            u, state = tx.update(jnp.asarray(g, BF16), state)
        assert state.mu.dtype == (dtype or BF16)
        errors[dtype] = np.max(np.abs(np.asarray(u, np.float64) - u_ref) / np.abs(u_ref))
    assert errors[jnp.float32] <= 2**-8 < errors[None]


def test_optax_inject_hyperparams_rounds_beta_to_one_and_ours_does_not():
    params = jnp.ones(3, BF16)
    theirs = optax.inject_hyperparams(wdchain.rmsprop)(lr=0.1, alpha=0.999).init(params)
    assert theirs.hyperparams["alpha"].dtype == BF16 and float(theirs.hyperparams["alpha"]) == 1
    ours = wdchain.inject_hyperparams(wdchain.rmsprop)(lr=0.1, alpha=0.999).init(params)
    assert ours.hyperparams["alpha"].dtype == jnp.float32
    assert float(ours.hyperparams["alpha"]) == pytest.approx(0.999, rel=1e-7)


def test_injected_optimizer_matches_the_plain_one_under_jit():
    params = {"w": jnp.asarray(grads_at(9, (2, 3)), BF16)}
    plain = wdchain.rmsprop(lr=0.1, alpha=0.999, weight_decay=0.01)
    injected = wdchain.inject_hyperparams(wdchain.rmsprop)(lr=0.1, alpha=0.999, weight_decay=0.01)
    plain_state, injected_state = plain.init(params), injected.init(params)
    for t in range(4):
        grads = {"w": jnp.asarray(grads_at(t, (2, 3)), BF16)}
        want, plain_state = jax.jit(plain.update)(grads, plain_state, params)
        got, injected_state = jax.jit(injected.update)(grads, injected_state, params)
        assert got["w"].dtype == BF16
        np.testing.assert_allclose(np.asarray(got["w"], np.float32),
                                   np.asarray(want["w"], np.float32), rtol=2**-7)
    injected_state.hyperparams["lr"] = jnp.zeros([], jnp.float32)  # changed between steps
    updates, _ = jax.jit(injected.update)(grads, injected_state, params)
    assert not bool(jnp.any(updates["w"]))


@pytest.mark.parametrize("inject", [wdchain.inject_hyperparams, optax.inject_hyperparams])
def test_an_injected_zero_keeps_the_state_structure_under_jit(inject):
    params = jnp.ones(3)
    tx = inject(wdchain.sgd)(lr=0.1)  # momentum off: no buffer, as the plain sgd
    state = tx.init(params)
    assert jax.tree.structure(state.inner_state) == jax.tree.structure(
        wdchain.sgd(lr=0.1).init(params))
    updates, new_state = jax.jit(tx.update)(params, state, params)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    np.testing.assert_allclose(updates, -0.1 * np.ones(3))
    assert "momentum" not in state.hyperparams  # the default (off) is not injected


def test_hyperparameters_follow_float64_params():
    with jax.enable_x64(True):
        tx = wdchain.inject_hyperparams(wdchain.adamw)(lr=0.1)
        state = tx.init(jnp.ones(2, jnp.float64))
        assert state.hyperparams["lr"].dtype == jnp.float64


@pytest.mark.parametrize(
    "make, warns",
    [
        (lambda: wdchain.adamw(lr=1e-3, weight_decay=1e-2), True),  # lr·λ = 1e-5
        (lambda: wdchain.adamw(lr=0.1, weight_decay=0.1), False),  # 1e-2 > 2⁻⁸
        (lambda: wdchain.build("adam", decay="constant", weight_decay=1e-3), True),
        (lambda: wdchain.build("adam", decay="l2", weight_decay=1e-3), False),  # in the grads
        (lambda: wdchain.adamw(lr=optax.constant_schedule(1e-3)), False),  # not checked
    ],
)
def test_decay_below_bf16_resolution_warns_once(make, warns):
    tx = make()
    params = {"w": jnp.ones(4, BF16), "b": jnp.ones(2)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert wdchain.check_decay_precision(tx, params) is warns
        assert wdchain.check_decay_precision(tx, params) is warns
    assert len(caught) == int(warns)
    if warns:
        assert caught[0].category is wdchain.DecayPrecisionWarning
        assert "['w']" in str(caught[0].message) and "bfloat16" in str(caught[0].message)
    assert not wdchain.check_decay_precision(tx, {"w": jnp.ones(4)})  # float32: held


def test_init_warns_once_by_itself_and_not_when_compensated():
    params = {"w": jnp.ones(4, BF16)}
    tx = wdchain.adamw(lr=1e-3, weight_decay=1e-2)  # lr·λ = 1e-5 < 2⁻⁹
    with pytest.warns(wdchain.DecayPrecisionWarning, match=r"\['w'\]"):
        tx.init(params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tx.init(params)  # once per optimizer
        wdchain.adamw(lr=1e-3, weight_decay=1e-2).init({"w": jnp.ones(4)})  # float32 holds it
        wdchain.compensate_rounding(wdchain.adamw(lr=1e-3, weight_decay=1e-2)).init(params)


def test_the_warned_decay_is_indeed_lost_in_bf16():
    tx = wdchain.adamw(lr=1e-3, weight_decay=1e-2)
    step = jax.jit(lambda p, s: _apply(tx, p, s))
    for dtype, expect_change in ((BF16, False), (jnp.float32, True)):
        params = jnp.full(8, 1.5, dtype)
        state = tx.init(params)
        for _ in range(50):
            params, state = step(params, state)
        decayed = 1.5 * (1 - 1e-5) ** 50
        if expect_change:
            np.testing.assert_allclose(params, decayed, rtol=1e-6)
        else:
            assert bool(jnp.all(params == 1.5))  # 50 steps of decay, all rounded away


def _apply(tx, params, state):
    updates, state = tx.update(jnp.zeros_like(params), state, params)
    return optax.apply_updates(params, updates), state


LONG_RUN = 100_000


def long_reference(name, grads, betas=(0.9, 0.999), eps=1e-8):
    """float64 updates of the closed-form equations at every step (torch's rules)."""
    b1, b2 = betas
    m = v = np.zeros(grads.shape[1])
    rho_inf = 2 / (1 - b2) - 1
    mu_product = 1.0
    out = np.empty_like(grads)
    for t in range(1, len(grads) + 1):
        g = grads[t - 1]
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        bc1, bc2 = 1 - b1**t, 1 - b2**t
        if name == "adam":
            out[t - 1] = (m / bc1) / (np.sqrt(v) / math.sqrt(bc2) + eps)
        elif name == "radam":
            rho = rho_inf - 2 * t * b2**t / bc2
            if rho > 5:
                r = math.sqrt((rho - 4) * (rho - 2) * rho_inf
                              / ((rho_inf - 4) * (rho_inf - 2) * rho))
                out[t - 1] = (m / bc1) * r * math.sqrt(bc2) / (np.sqrt(v) + eps)
            else:
                out[t - 1] = m / bc1
        else:  # nadam, ψ = 4e-3
            mu = b1 * (1 - 0.5 * 0.96 ** (t * 4e-3))
            mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * 4e-3))
            mu_product *= mu
            denom = np.sqrt(v / bc2) + eps
            out[t - 1] = ((1 - mu) / (1 - mu_product)) * g / denom + (
                mu_next / (1 - mu_product * mu_next)) * m / denom
    return out


@pytest.mark.parametrize("name", ["adam", "radam", "nadam"])
def test_a_run_of_1e5_steps_keeps_correct_bias_corrections(name):
    t = np.arange(LONG_RUN)[:, None]
    grads = np.cos(0.001 * t * np.array([1.0, 7.0])) + 0.5  # slowly varying, tiny tree
    tx = {"adam": wdchain.scale_by_adam, "radam": wdchain.scale_by_radam,
          "nadam": wdchain.scale_by_nadam}[name]()

    def body(state, g):
        u, state = tx.update(g, state)
        return state, u

    state, updates = jax.jit(lambda s, g: jax.lax.scan(body, s, g))(
        tx.init(jnp.zeros(2)), jnp.asarray(grads, jnp.float32))
    assert int(state.step) == LONG_RUN
    reference = long_reference(name, grads)
    for t in (1, 10, 100, 1_000, 10_000, LONG_RUN):
        np.testing.assert_allclose(updates[t - 1], reference[t - 1], rtol=1e-4, err_msg=str(t))


def test_the_step_count_saturates_at_the_int32_limit():
    top = jnp.iinfo(jnp.int32).max
    tx = wdchain.adamw(lr=0.1, weight_decay=0.0)
    params = jnp.array([2.0, -3.0])
    state = tx.init(params)
    state = jax.tree.map(lambda x: jnp.full_like(x, top - 1) if x.dtype == jnp.int32 else x, state)
    for _ in range(3):
        updates, state = tx.update(params, state, params)
        counts = [int(x) for x in jax.tree.leaves(state) if x.dtype == jnp.int32]
        assert counts and all(c == top for c in counts)  # saturates, never wraps negative
    # At t ≈ 2³¹ the bias corrections are 1: u = m/(√v + ε) with m, v after 3 steps.
    m = 0.1 * params * (1 + 0.9 + 0.81)
    v = 0.001 * params**2 * (1 + 0.999 + 0.999**2)
    np.testing.assert_allclose(updates, -0.1 * m / (np.sqrt(v) + 1e-8), rtol=1e-5)


def _run_fixed_grads(tx, params, num_steps):
    """num_steps of tx on gradients that do not depend on the params (a fair comparison
    across dtypes), as one jitted scan."""
    grads = jnp.asarray(0.1 * np.cos(0.05 * np.arange(num_steps)[:, None] * np.arange(1, 9)))

    def body(carry, g):
        params, state = carry
        updates, state = tx.update(g.astype(params.dtype), state, params)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.jit(lambda c: jax.lax.scan(body, c, grads))((params, tx.init(params)))
    return params


def test_compensated_decay_accumulates_in_bf16():
    make = lambda: wdchain.adamw(lr=1e-3, weight_decay=1e-2)  # noqa: E731
    start = jnp.full(8, 1.5)
    exact = np.asarray(_run_fixed_grads(make(), start, 1000), np.float64)  # float32 run
    plain = _run_fixed_grads(make(), start.astype(BF16), 1000)
    compensated = _run_fixed_grads(wdchain.compensate_rounding(make()), start.astype(BF16), 1000)
    assert compensated.dtype == BF16
    spacing = 2.0**-7  # bfloat16's spacing in [1, 2)
    plain_error = np.max(np.abs(np.asarray(plain, np.float64) - exact))
    compensated_error = np.max(np.abs(np.asarray(compensated, np.float64) - exact))
    assert compensated_error <= spacing  # within one step of bfloat16 of the float32 run
    assert plain_error > 2 * spacing  # the decay (and the small Adam steps) got lost


def test_compensation_is_a_no_op_for_float32_and_stops_the_warning():
    tx = wdchain.adamw(lr=1e-3, weight_decay=1e-2)
    wrapped = wdchain.compensate_rounding(wdchain.adamw(lr=1e-3, weight_decay=1e-2))
    params = jnp.linspace(-1.0, 1.0, 8)
    np.testing.assert_array_equal(_run_fixed_grads(wrapped, params, 20),
                                  _run_fixed_grads(tx, params, 20))
    assert not wdchain.check_decay_precision(wrapped, {"w": jnp.ones(4, BF16)})
    with pytest.raises(ValueError, match="compensate_rounding needs the current parameters"):
        wrapped.update(params, wrapped.init(params))


@pytest.mark.parametrize("alias", ["adam", "adamw"])
def test_aliases_hold_the_moments_in_the_dtypes_asked_for(alias):
    params = {"w": jnp.ones((2, 3))}
    tx = getattr(wdchain, alias)(lr=0.1, weight_decay=0.01, mu_dtype=jnp.bfloat16)
    state = tx.init(params)
    _, state = jax.jit(tx.update)({"w": jnp.full((2, 3), 0.3)}, state, params)
    (adam_state,) = [s for s in state if isinstance(s, wdchain.ScaleByAdamState)]
    assert adam_state.mu["w"].dtype == jnp.bfloat16 and adam_state.nu["w"].dtype == jnp.float32
    grad_seen = 0.3 + (0.01 if alias == "adam" else 0.0)  # L2 enters m; decoupled does not
    np.testing.assert_allclose(np.asarray(adam_state.mu["w"], np.float32), 0.1 * grad_seen,
                               rtol=2**-8)


def test_nested_and_wrapped_optimizers_warn_once_and_compensated_ones_never():
    params = {"w": jnp.ones(4, BF16)}

    def warnings_on_init(make):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            make().init(params)
        return len(caught)

    adamw = lambda: wdchain.adamw(lr=1e-3, weight_decay=1e-2)  # noqa: E731
    assert warnings_on_init(lambda: wdchain.chain(adamw())) == 1
    assert warnings_on_init(lambda: wdchain.skip_nonfinite(adamw())) == 1
    assert warnings_on_init(lambda: wdchain.compensate_rounding(wdchain.chain(adamw()))) == 0
    assert warnings_on_init(
        lambda: wdchain.compensate_rounding(wdchain.skip_nonfinite(adamw()))) == 0


def test_inject_hyperparams_keeps_masks_dtypes_and_build_options_static():
    params = {"w": jnp.ones((2, 2)), "bias": jnp.ones(2)}
    zeros = jax.tree.map(jnp.zeros_like, params)
    tx = wdchain.inject_hyperparams(wdchain.adamw)(lr=0.1, weight_decay=0.5,
                                                   mask=wdchain.decay_mask)
    state = tx.init(params)
    assert "mask" not in state.hyperparams
    updates, _ = jax.jit(tx.update)(zeros, state, params)
    assert not bool(jnp.any(updates["bias"]))  # the bias stays undecayed
    np.testing.assert_allclose(updates["w"], -0.1 * 0.5, rtol=1e-6)
    tx = wdchain.inject_hyperparams(wdchain.adam)(lr=0.1, mu_dtype=jnp.bfloat16)
    assert tx.init(params).inner_state[2].mu["w"].dtype == jnp.bfloat16
    injected = wdchain.inject_hyperparams(wdchain.build)(
        "adam", decay="decoupled", lr=0.1, weight_decay=0.1, betas=(0.8, 0.9))
    plain = wdchain.build("adam", decay="decoupled", lr=0.1, weight_decay=0.1, betas=(0.8, 0.9))
    state = injected.init(params)
    assert {"lr", "weight_decay"} <= set(state.hyperparams)
    grads = jax.tree.map(lambda p: 0.3 * p, params)
    got = jax.jit(injected.update)(grads, state, params)[0]
    want = plain.update(grads, plain.init(params), params)[0]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, want)


def test_nadam_state_keeps_its_dtype_with_float64_hyperparameters():
    with jax.enable_x64(True):
        tx = wdchain.nadam(betas=(np.float64(0.9), 0.999))
        params = jnp.ones(3, jnp.float32)
        state = tx.init(params)
        _, new_state = tx.update(params, state, params)
        assert jax.tree.map(lambda x: x.dtype, new_state) == jax.tree.map(lambda x: x.dtype, state)


@pytest.mark.parametrize("beta2", [0.999, 0.9999, 0.99999])
def test_radam_sma_length_is_accurate_in_float32(beta2):
    from wdchain.preconditioners.radam import _rho_t

    t = np.arange(1, 200)
    exact = 2 / (1 - beta2) - 1 - 2 * t * beta2**t / (1 - beta2**t)  # float64 closed form
    got = np.asarray(_rho_t(beta2, jnp.asarray(t, jnp.int32), jnp.float32), np.float64)
    np.testing.assert_allclose(got, exact, rtol=1e-6)  # the naive float32 form: 4e-4 to 1e-2


_EXTREME_BETA2 = [0.0, 1 / 3, 0.6, 5 / 7, 0.9, 0.999, 1 - 1e-6, 1 - 1e-10, 1 - 1e-13,
                  1 - 1e-15, float(np.nextafter(1.0, 0.0))]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("beta2", _EXTREME_BETA2)
def test_radam_rectifies_exactly_where_rho_t_exceeds_5(beta2, dtype):
    """The compiled step picks the rectified update where ρ_t > 5 and m̂ elsewhere, at
    every step count, for β₂ from 0 to the last double below 1 (once, a folded constant
    overflowed float32 for β₂ within 1e-13 of 1 and the step fell back to m̂)."""
    from wdchain.preconditioners.radam import ScaleByRadamState, _rho_t

    counts = np.unique(np.concatenate([
        np.arange(1, 40), np.geomspace(1, 2**31 - 1, 60).astype(np.int64), [2**31 - 1]]))
    with jax.enable_x64(dtype == "float64"):
        tx = wdchain.scale_by_radam((0.9, beta2), eps=0.0)
        ones = jnp.ones(2, dtype)

        def update_at(count):  # m = 0.5, v = 4 before the step; g = 1
            state = ScaleByRadamState(count - 1, 0.5 * ones, 4.0 * ones)
            return tx.update(ones, state)[0][0], _rho_t(beta2, count, dtype)

        updates, rho = jax.jit(jax.vmap(update_at))(jnp.asarray(counts, jnp.int32))
        updates, rho = np.asarray(updates, np.float64), np.asarray(rho, np.float64)
    m_hat = (0.9 * 0.5 + 0.1) / (1 - 0.9 ** counts.astype(np.float64))
    unrectified = np.isclose(updates, m_hat, rtol=1e-6, atol=0)
    # Rectified: m̂·r_t·√(1−β₂ᵗ)/√v, with r_t ≤ 1 and √v ≥ 1 here, never within 1e-6 of m̂
    # unless r_t·√(1−β₂ᵗ)/√v rounds to 1; the test below is about which branch runs.
    v = beta2 * 4.0 + (1 - beta2)
    rectified_is_m_hat = np.isclose(np.sqrt(1 - beta2 ** counts.astype(np.float64)) / np.sqrt(v),
                                    1.0, rtol=1e-6)
    decisive = ~rectified_is_m_hat
    np.testing.assert_array_equal(unrectified[decisive], (rho <= 5)[decisive])
    assert np.all(np.isfinite(updates))
