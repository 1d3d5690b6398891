"""The open registry (issue 20 §2): a preconditioner registered from outside gets every
decay axis of ``build``, is an arm of the runner and is describe-able; a bad entry is
refused at registration with its reason.

The oracle is sign-SGD written by hand in NumPy (float64), u_t = sign(g_t):

    decoupled    θ ← θ − lr·sign(g) − lr·λ·θ
    independent  θ ← θ − lr·sign(g) − λ·θ               (η_t = 1: no schedule)
    l2           θ ← θ − lr·sign(g + λ·θ)
    cautious     the decay term only where sign(g)·θ ≥ 0 (Chen et al. 2025)
    toward init  θ replaced by θ − θ₀ in the decay term
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import wdchain
from wdchain.ablate import parse_arm

LR = 0.1
WD = 0.3
STEPS = 6


@pytest.fixture(autouse=True)
def signsgd() -> Iterator[None]:
    """sign-SGD, registered for one test and removed after it."""
    wdchain.register_preconditioner("signsgd", lambda: optax.scale_by_sign())
    yield
    for name in ("signsgd", "scaled", "relative", "averaged", "adaptive_sign"):
        if name in wdchain.registry.REGISTRY:
            wdchain.registry.unregister(name)


def _grads(step: int) -> np.ndarray:
    rng = np.random.default_rng(step)
    return rng.normal(size=5)


THETA0 = np.array([1.5, -2.0, 0.25, -0.5, 3.0])


def _run(tx: optax.GradientTransformation) -> np.ndarray:
    params = jnp.asarray(THETA0)
    state = tx.init(params)
    for step in range(STEPS):
        updates, state = tx.update(jnp.asarray(_grads(step)), state, params)
        params = optax.apply_updates(params, updates)
    return np.asarray(params)


def _oracle(decay: str, gate: str | None = None, toward: str | None = None) -> np.ndarray:
    theta = THETA0.copy()
    target = THETA0.copy() if toward == "init" else np.zeros_like(THETA0)
    for step in range(STEPS):
        g = _grads(step)
        offset = theta - target
        if decay == "l2":
            theta = theta - LR * np.sign(g + WD * offset)
            continue
        u = np.sign(g)
        gate_on = (u * offset >= 0) if gate == "cautious" else np.ones_like(theta, bool)
        scale = LR if decay == "decoupled" else 1.0
        theta = theta - LR * u - scale * WD * np.where(gate_on, offset, 0.0)
    return theta


@pytest.mark.parametrize("decay,gate,toward", [
    ("decoupled", None, None),
    ("independent", None, None),
    ("l2", None, None),
    ("decoupled", "cautious", None),
    ("independent", None, "init"),
    ("decoupled", "cautious", "init"),
])
def test_signsgd_with_every_axis_is_the_hand_rule(decay: str, gate: str | None,
                                                  toward: str | None) -> None:
    with jax.enable_x64(True):
        tx = wdchain.build("signsgd", decay=decay, lr=LR, weight_decay=WD, gate=gate,
                           toward=toward)
        np.testing.assert_allclose(_run(tx), _oracle(decay, gate, toward), rtol=1e-12)


def test_signsgd_first_step_by_hand() -> None:
    """One step, the numbers written out: θ = (2, −4), g = (3, 0.5), lr 0.1, λ 0.5."""
    tx = wdchain.build("signsgd", decay="decoupled", lr=0.1, weight_decay=0.5)
    params = jnp.array([2.0, -4.0])
    updates, _ = tx.update(jnp.array([3.0, 0.5]), tx.init(params), params)
    np.testing.assert_allclose(updates, [-0.1 - 0.1, -0.1 + 0.2], rtol=1e-6)


def test_registered_name_is_an_arm_and_describe_able() -> None:
    arm = parse_arm("signsgd-independent")
    assert (arm.preconditioner, arm.decay) == ("signsgd", "independent")
    assert parse_arm("signsgd-decoupled+cautious").gate == "cautious"
    assert "signsgd" in wdchain.PRECONDITIONERS
    np.testing.assert_allclose(arm.default_lrs(2), [10**-3.5, 10**-1.0])
    tx = arm.optimizer(LR, WD, None, None)
    params = jnp.ones(3)
    tx.update(jnp.ones(3), tx.init(params), params)
    text = wdchain.describe(wdchain.build("signsgd", decay="decoupled", weight_decay=WD))
    assert "decoupled(λ=0.3)" in text and "θ ← θ − lr_t·(" in text
    assert wdchain.registry.lookup("test", "signsgd").describe().startswith("signsgd(): ")
    wdchain.registry.unregister("signsgd")
    assert "signsgd" not in wdchain.PRECONDITIONERS
    with pytest.raises(ValueError, match="unknown arm 'signsgd-independent'"):
        parse_arm("signsgd-independent")


def test_every_mask_and_placement_builds() -> None:
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    mask = {"w": True, "b": False}
    for decay in wdchain.DECAYS:
        if decay == "stable":
            continue
        tx = wdchain.build("signsgd", decay=decay, lr=LR, weight_decay=WD, mask=mask)
        updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
        if decay != "l2":
            assert float(updates["b"][0]) == pytest.approx(-LR)  # masked: no decay
    with pytest.raises(ValueError, match="'signsgd' has none"):
        wdchain.build("signsgd", decay="stable")


def test_options_come_from_the_factory_and_are_checked() -> None:
    def check(where: str, options: dict) -> None:
        if options["factor"] <= 0:
            raise ValueError(f"{where}: factor must be > 0, got {options['factor']}")

    entry = wdchain.register_preconditioner(
        "scaled", lambda factor=2.0: optax.scale(factor), check=check, lr_span=(-2.0, 0.0))
    assert dict(entry.options) == {"factor": 2.0}
    params = jnp.ones(2)
    tx = wdchain.build("scaled", lr=1.0, factor=3.0)
    np.testing.assert_allclose(tx.update(jnp.ones(2), tx.init(params), params)[0], [-3.0, -3.0])
    with pytest.raises(ValueError, match="build: factor must be > 0, got -1"):
        wdchain.build("scaled", factor=-1.0)
    with pytest.raises(ValueError, match="unknown option.*eps.*'scaled'; its options are: factor"):
        wdchain.build("scaled", eps=1.0)


def test_a_factory_that_takes_learning_rate_is_given_it() -> None:
    seen = []

    def factory(*, learning_rate: float) -> optax.GradientTransformation:
        seen.append(learning_rate)
        return optax.identity()

    wdchain.register_preconditioner("relative", factory)
    wdchain.build("relative", lr=0.25)
    assert seen[-1] == 0.25


def test_wrap_and_stable_decay_of_a_registered_entry() -> None:
    calls = []

    def wrap(tx: optax.GradientTransformation, options: dict, lr: float):
        calls.append((dict(options), lr))
        return tx

    wdchain.register_preconditioner("averaged", lambda: optax.scale_by_sign(), wrap=wrap)
    wdchain.build("averaged", lr=0.5)
    assert calls == [({}, 0.5)]

    def second_moment(states: tuple, options: dict):
        return jax.tree.map(lambda nu: nu, states[0].nu)

    wdchain.register_preconditioner(
        "adaptive_sign", lambda: optax.scale_by_adam(b1=0.0), adaptive=True,
        second_moment=second_moment)
    tx = wdchain.build("adaptive_sign", decay="stable", lr=LR, weight_decay=WD)
    params = jnp.array([1.0, -1.0])
    updates, _ = tx.update(jnp.array([0.5, 0.5]), tx.init(params), params)
    # v = 0.001·g² = 2.5e-4 everywhere: 1/√v̄ = 63.2...; u = Adam's first step ≈ sign(g)
    expected = -LR * (np.sign([0.5, 0.5]) * 0.5 / (0.5 + 1e-8 * np.sqrt(1e-3))
                      + WD * np.array([1.0, -1.0]) / np.sqrt(2.5e-4))
    np.testing.assert_allclose(updates, expected, rtol=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    ({"name": "signsgd", "factory": lambda: optax.identity()},
     r"'signsgd' is already registered.*replace=True"),
    ({"name": "bad+name", "factory": lambda: optax.identity()}, "name must be a string"),
    ({"name": "nope", "factory": "scale_by_sign"}, "factory must be a callable"),
    ({"name": "nope", "factory": lambda: 1 / 0}, "factory raised ZeroDivisionError"),
    ({"name": "nope", "factory": lambda: "sign"}, "must return an optax.GradientTransformation"),
    ({"name": "nope", "factory": lambda b1: optax.identity()},
     "parameter 'b1' has no default"),
    ({"name": "nope", "factory": lambda b1=0.9: optax.identity(), "options": {"b2": 0.9}},
     r"options \['b2'\] do not fit the factory's signature"),
    ({"name": "nope", "factory": lambda: optax.identity(), "lr_span": (-1.0, -3.0)},
     r"lr_span must be \(low, high\).*got \(-1.0, -3.0\)"),
    ({"name": "nope", "factory": lambda: optax.identity(), "lr_span": "wide"},
     "lr_span must be"),
    ({"name": "nope", "factory": lambda: optax.identity(), "second_moment": lambda s, o: s},
     "pass adaptive=True"),
    ({"name": "nope", "factory": lambda x=-1: optax.identity(),
      "check": lambda w, o: (_ for _ in ()).throw(ValueError(f"{w}: x < 0"))},
     r"the default options fail check: register_preconditioner\('nope'\): x < 0"),
    ({"name": "nope", "factory": lambda: optax.identity(), "inside": 3}, "inside must be a call"),
])
def test_a_bad_entry_is_refused_with_its_reason(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        wdchain.register_preconditioner(**kwargs)
    assert "nope" not in wdchain.registry.REGISTRY


def test_replace_swaps_an_entry() -> None:
    entry = wdchain.register_preconditioner("signsgd", lambda: optax.identity(), replace=True,
                                            summary="identity")
    assert wdchain.registry.REGISTRY["signsgd"] is entry
    params = jnp.ones(1)
    tx = wdchain.build("signsgd", lr=1.0)
    np.testing.assert_allclose(tx.update(jnp.full(1, 4.0), tx.init(params), params)[0], [-4.0])


def test_built_in_entries_are_registered_through_the_same_function() -> None:
    """Each built-in entry is a Preconditioner whose factory builds with its defaults."""
    for name, entry in wdchain.registry.REGISTRY.items():
        assert isinstance(entry, wdchain.Preconditioner)
        assert entry.transforms(dict(entry.options), 1e-3), name


@pytest.mark.slow
def test_a_registered_preconditioner_runs_as_an_arm_of_the_runner() -> None:
    """The runner's arm parser reads the registry when it runs: sign-SGD, registered after
    import, trains as two arms (with the gate too), and is refused once removed."""
    import math

    from ablate_tiny import quiet, tiny_task

    from wdchain.ablate import sweep

    arms = ["signsgd-independent", "signsgd-decoupled+cautious"]
    rows = sweep(tiny_task(), arms=arms, lrs=[1e-2], weight_decays=[0.0, 1e-2], log=quiet)
    assert sorted({row["arm"] for row in rows}) == sorted(arms)
    assert {row["preconditioner"] for row in rows} == {"signsgd"}
    assert {row["decay"] for row in rows} == {"independent", "decoupled"}
    assert all(math.isfinite(row["train_loss"]) for row in rows)
    wdchain.registry.unregister("signsgd")
    with pytest.raises(ValueError, match="unknown arm 'signsgd-independent'"):
        sweep(tiny_task(), arms=arms[:1], lrs=[1e-2], weight_decays=[0.0], log=quiet)
