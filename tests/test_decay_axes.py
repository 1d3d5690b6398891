"""``build``'s decay axes beyond placement (issue 13): corrected and stable scales,
the cautious gate, decay toward θ₀ or a tree.

The oracle is NumPy in float64, written from each paper's equation,

    θ_t = θ_{t−1} − α_t·u_t − c_t·λ·G_t ⊙ (θ_{t−1} − θ*)

with u_t torch's Adam step (g + λ(θ − θ*) for l2), and, where an anchor library
defines the rule, its formula as that library writes it (timm's and levanter's
corrected decay, the SWD reference's AdamS). Every run goes through ``build`` with
an lr schedule, inside ``jax.jit`` with λ traced.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from torch_oracle import (
    assert_vmapped_grid_matches,
    make_grads,
    make_params,
    relative_error,
    warmup_cosine,
    warmup_cosine_torch,
)

import wdchain

LR = 0.05
WD = 0.3
STEPS = 100
BETAS = (0.9, 0.999)
EPS = 1e-8
TOLERANCE = 1e-12


def eta(k: int) -> float:
    return warmup_cosine_torch(k)


def run_built(params: Any, grads: Any, wd: float = WD, **kwargs: Any) -> Any:
    """Final float64 params of build('adam', ...) over the gradients, λ traced."""
    with jax.enable_x64(True):
        p0 = jax.tree.map(jnp.asarray, params)
        g_seq = jax.tree.map(jnp.asarray, grads)

        @jax.jit
        def run(lam: Any) -> Any:
            tx = wdchain.build("adam", lr=LR, weight_decay=lam, schedule=warmup_cosine,
                               **kwargs)

            def body(carry: tuple, g: Any) -> tuple:
                p, state = carry
                updates, state = tx.update(g, state, p)
                return (optax.apply_updates(p, updates), state), None

            (final, _), _ = jax.lax.scan(body, (p0, tx.init(p0)), g_seq)
            return final

        return jax.tree.map(np.asarray, run(jnp.asarray(wd, jnp.float64)))


def numpy_adam(params: Any, grads: Any, *, decay: str, gate: str | None = None,
               target: Any = None, amsgrad: bool = False, corrected: Any = None,
               wd: float = WD) -> Any:
    """The equations, leaf by leaf, in float64 (torch's Adam arithmetic for u_t)."""
    leaves, treedef = jax.tree.flatten(params)
    theta = [np.array(x, np.float64) for x in leaves]
    star = ([np.zeros_like(x) for x in theta] if target is None
            else [np.array(x, np.float64) for x in jax.tree.leaves(target)])
    flags = [True] * len(theta) if corrected is None else jax.tree.leaves(corrected)
    g_all = jax.tree.leaves(grads)
    m = [np.zeros_like(x) for x in theta]
    v = [np.zeros_like(x) for x in theta]
    v_max = [np.zeros_like(x) for x in theta]
    b1, b2 = BETAS
    for k in range(STEPS):
        t = k + 1
        alpha = LR * eta(k)
        offsets = [x - s for x, s in zip(theta, star)]
        grad = [np.array(g[k]) for g in g_all]
        raw = [g.copy() for g in grad]
        if decay == "l2":  # the gate of l2 reads the loss gradient g_t (before the term)
            grad = [g + wd * ((g * o >= 0) if gate == "cautious" else 1.0) * o
                    for g, o in zip(grad, offsets)]
        v_hats, us = [], []
        for i, g in enumerate(grad):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            v_max[i] = np.maximum(v_max[i], v[i])
            v_hat = (v_max[i] if amsgrad else v[i]) / (1 - b2**t)
            v_hats.append(v_hat)
            us.append((m[i] / (1 - b1**t)) / (np.sqrt(v_hat) + EPS))
        v_bar = sum(x.sum() for x in v_hats) / sum(x.size for x in v_hats)
        for i, (u, o) in enumerate(zip(us, offsets)):
            c = {"l2": 0.0, "none": 0.0, "decoupled": alpha, "independent": eta(k),
                 "constant": 1.0, "stable": alpha / np.sqrt(v_bar),
                 "corrected": alpha * eta(k) if flags[i] else alpha}[decay]
            direction = raw[i] if decay == "l2" else u
            gated = (direction * o >= 0) if gate == "cautious" else 1.0
            theta[i] = theta[i] - alpha * u - c * wd * gated * o
    return treedef.unflatten(theta)


def problem() -> tuple[Any, Any]:
    params = make_params()
    return params, make_grads(params, STEPS)


def pretrained(params: Any) -> Any:
    rng = np.random.default_rng(7)
    return jax.tree.map(lambda p: p + rng.standard_normal(np.shape(p)), params)


def corrected_leaves(params: Any) -> Any:
    """The 'normalised layers' of the paper's form: the 2-D and 3-D leaves."""
    return jax.tree.map(lambda p: np.ndim(p) >= 2, params)


CASES = {
    "corrected": ({"decay": "corrected"}, {"decay": "corrected"}),
    "corrected-amsgrad": ({"decay": "corrected", "amsgrad": True},
                          {"decay": "corrected", "amsgrad": True}),
    "corrected-normalised-only": ({"decay": "corrected", "corrected_mask": "leaves"},
                                  {"decay": "corrected", "corrected": "leaves"}),
    "stable": ({"decay": "stable"}, {"decay": "stable"}),
    "stable-amsgrad": ({"decay": "stable", "amsgrad": True},
                       {"decay": "stable", "amsgrad": True}),
    **{f"cautious-{d}": ({"decay": d, "gate": "cautious"}, {"decay": d, "gate": "cautious"})
       for d in ("l2", "decoupled", "independent", "constant", "corrected", "stable")},
    **{f"toward-init-{d}": ({"decay": d, "toward": "init"}, {"decay": d, "target": "init"})
       for d in ("l2", "decoupled", "independent", "constant", "corrected", "stable")},
    "toward-tree-l2": ({"decay": "l2", "toward": "tree"}, {"decay": "l2", "target": "tree"}),
    "toward-tree-decoupled-cautious": (
        {"decay": "decoupled", "toward": "tree", "gate": "cautious"},
        {"decay": "decoupled", "target": "tree", "gate": "cautious"}),
}


def _resolve(kwargs: dict, params: Any) -> dict:
    out = dict(kwargs)
    for key in ("toward", "target"):
        if out.get(key) == "init":
            out[key] = "init" if key == "toward" else params
        elif out.get(key) == "tree":
            out[key] = pretrained(params)
    for key in ("corrected_mask", "corrected"):
        if out.get(key) == "leaves":
            out[key] = corrected_leaves(params)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_new_values_match_their_equations(case: str) -> None:
    params, grads = problem()
    ours_kwargs, numpy_kwargs = CASES[case]
    ours = run_built(params, grads, **_resolve(ours_kwargs, params))
    expected = numpy_adam(params, grads, **_resolve(numpy_kwargs, params))
    error = relative_error(ours, expected)
    assert error < TOLERANCE, f"{case}: {error:.2e}"
    # and the new value changes the trajectory (the test could fail)
    plain = numpy_adam(params, grads, decay="none")
    assert relative_error(expected, plain) > 1e-6


def test_corrected_is_timm_and_levanter() -> None:
    """timm: p.mul_(1 − λ·lr²/max_lr) before Adam's step; levanter: λ·(lr/max_lr)·θ
    added to the update, then × lr. Both in float64 against build."""
    params, grads = problem()
    ours = run_built(params, grads, decay="corrected")
    leaves, treedef = jax.tree.flatten(params)
    b1, b2 = BETAS
    for form in ("timm", "levanter"):
        theta = [np.array(x) for x in leaves]
        m = [np.zeros_like(x) for x in theta]
        v = [np.zeros_like(x) for x in theta]
        for k in range(STEPS):
            lr, max_lr = LR * eta(k), LR
            for i, g in enumerate(jax.tree.leaves(grads)):
                m[i] = b1 * m[i] + (1 - b1) * g[k]
                v[i] = b2 * v[i] + (1 - b2) * g[k] ** 2
                step = (m[i] / (1 - b1 ** (k + 1))) / (
                    np.sqrt(v[i] / (1 - b2 ** (k + 1))) + EPS)
                if form == "timm":
                    theta[i] = theta[i] * (1 - WD * lr**2 / max_lr) - lr * step
                else:
                    theta[i] = theta[i] - lr * (step + WD * (lr / max_lr) * theta[i])
        error = relative_error(ours, treedef.unflatten(theta))
        assert error < TOLERANCE, f"{form}: {error:.2e}"


def swd_reference(params: Any, grads: Any, amsgrad: bool) -> Any:
    """AdamS as swd_optim/adams.py computes it: the mean of v̂ over every entry, then
    p ← p·(1 − λ·lr/√mean), then p ← p − lr/bc1 · m/(√v̂ + ε)."""
    leaves, treedef = jax.tree.flatten(params)
    theta = [np.array(x) for x in leaves]
    m = [np.zeros_like(x) for x in theta]
    v = [np.zeros_like(x) for x in theta]
    v_max = [np.zeros_like(x) for x in theta]
    b1, b2 = BETAS
    for k in range(STEPS):
        lr, step = LR * eta(k), k + 1
        total, size = 0.0, 0
        for i, g in enumerate(jax.tree.leaves(grads)):
            m[i] = b1 * m[i] + (1 - b1) * g[k]
            v[i] = b2 * v[i] + (1 - b2) * g[k] * g[k]
            v_max[i] = np.maximum(v_max[i], v[i])
            total += ((v_max[i] if amsgrad else v[i]) / (1 - b2**step)).sum()
            size += theta[i].size
        mean_sqrt = np.sqrt(total / size)
        for i in range(len(theta)):
            theta[i] = theta[i] * (1 - WD * lr / mean_sqrt)
            denom = np.sqrt((v_max[i] if amsgrad else v[i]) / (1 - b2**step)) + EPS
            theta[i] = theta[i] - lr / (1 - b1**step) * m[i] / denom
    return treedef.unflatten(theta)


@pytest.mark.parametrize("amsgrad", [False, True])
def test_stable_is_the_swd_reference(amsgrad: bool) -> None:
    params, grads = problem()
    ours = run_built(params, grads, decay="stable", amsgrad=amsgrad)
    error = relative_error(ours, swd_reference(params, grads, amsgrad))
    assert error < TOLERANCE, f"{error:.2e}"


@pytest.mark.parametrize("preconditioner", ["nadam", "radam", "lamb", "rmsprop", "adagrad"])
def test_stable_is_decoupled_with_lambda_over_root_mean_second_moment(preconditioner: str):
    """First step from a zero state: v̄ is known in closed form (the mean of v̂ = g² for
    the Adam family, (1 − α)g² for RMSprop, g² for Adagrad), and stable(λ) must be
    decoupled(λ/√v̄), LAMB's trust ratio included."""
    with jax.enable_x64(True):
        params = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array([0.3])}
        grads = {"w": jnp.array([0.2, 0.1, -0.4]), "b": jnp.array([1.0])}
        squares = np.concatenate([np.ravel(g) ** 2 for g in jax.tree.leaves(grads)])
        v_bar = {"rmsprop": 1 - 0.99}.get(preconditioner, 1.0) * np.mean(squares)
        stable = wdchain.build(preconditioner, decay="stable", lr=0.7, weight_decay=0.5)
        plain = wdchain.build(preconditioner, decay="decoupled", lr=0.7,
                              weight_decay=0.5 / np.sqrt(v_bar))
        none = wdchain.build(preconditioner, decay="none", lr=0.7)
        u_stable, _ = stable.update(grads, stable.init(params), params)
        u_plain, _ = plain.update(grads, plain.init(params), params)
        u_none, _ = none.update(grads, none.init(params), params)
        for key in params:
            np.testing.assert_allclose(u_stable[key], u_plain[key], rtol=1e-12)
        assert np.max(np.abs(u_stable["w"] - u_none["w"])) > 1e-3


def test_stable_refuses_a_preconditioner_without_a_second_moment() -> None:
    for name in ("sgd", "momentum", "lion", "muon", "adafactor", "adadelta"):
        with pytest.raises(ValueError, match="decay='stable'.*has none; use one of"):
            wdchain.build(name, decay="stable", weight_decay=0.1)


DECAYS = wdchain.DECAYS


@pytest.mark.parametrize("preconditioner", [p for p in wdchain.PRECONDITIONERS if p != "muon"])
@pytest.mark.parametrize("toward", [None, "init", "tree"])
def test_one_state_structure_per_preconditioner_and_target(preconditioner: str, toward):
    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    target = jax.tree.map(lambda p: p + 1, params) if toward == "tree" else toward
    stable_ok = wdchain.registry.REGISTRY[preconditioner].second_moment is not None
    structures = set()
    for decay in DECAYS:
        if decay == "stable" and not stable_ok:
            continue
        for gate in wdchain.GATES:
            tx = wdchain.build(preconditioner, decay=decay, weight_decay=0.1, gate=gate,
                               toward=target, lr=0.1, schedule=lambda c: 1.0 / (1 + c))
            state = tx.init(params)
            _, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
            structures.add(jax.tree.structure(state))
    if toward is None:  # the same as before issue 13
        structures.add(jax.tree.structure(wdchain.build(preconditioner).init(params)))
    assert len(structures) == 1


@pytest.mark.parametrize("decay,gate,toward", [
    ("corrected", None, None), ("stable", None, None), ("decoupled", "cautious", None),
    ("independent", "cautious", "init"), ("l2", None, "init"), ("stable", "cautious", "init"),
])
def test_vmapped_lr_and_weight_decay(decay: str, gate, toward) -> None:
    params = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array([0.3])}
    lrs = jnp.array([0.01, 0.1, 0.3])
    wds = jnp.array([0.0, 0.05, 0.2])

    def final(lr: Any, wd: Any) -> Any:
        tx = wdchain.build("adam", decay=decay, lr=lr, weight_decay=wd, gate=gate,
                           toward=toward, schedule=lambda c: 1.0 / (1.0 + c))
        p, state = params, tx.init(params)
        for k in range(4):
            grads = jax.tree.map(lambda x, k=k: jnp.sin(3 * x + k), p)
            updates, state = tx.update(grads, state, p)
            p = optax.apply_updates(p, updates)
        return p

    assert_vmapped_grid_matches(final, lrs, wds)


def test_cautious_gate_uses_the_orthogonalised_update_for_muon() -> None:
    """Muon: G_t from the final (orthogonalised, shape-scaled) update, not from g."""
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.standard_normal((4, 3)), jnp.float32)}
    grads = {"w": jnp.asarray(rng.standard_normal((4, 3)), jnp.float32)}
    plain = wdchain.build("muon", decay="none", lr=1.0, ns_dtype=jnp.float32)
    gated = wdchain.build("muon", decay="decoupled", lr=1.0, weight_decay=0.5,
                          gate="cautious", ns_dtype=jnp.float32)
    u, _ = plain.update(grads, plain.init(params), params)
    v, _ = gated.update(grads, gated.init(params), params)
    final_u = -np.asarray(u["w"])  # lr 1: the update is −u_t
    gate = final_u * np.asarray(params["w"]) >= 0
    expected = np.asarray(u["w"]) - 0.5 * gate * np.asarray(params["w"])
    np.testing.assert_allclose(np.asarray(v["w"]), expected, rtol=1e-6, atol=1e-7)
    by_gradient = np.asarray(grads["w"]) * np.asarray(params["w"]) >= 0
    assert (gate != by_gradient).any()  # the orthogonalised sign differs from g's somewhere


def test_toward_with_others_partition() -> None:
    """Muon on matrices, Adam on the rest, both toward θ₀: a huge λ holds θ₀."""
    params = {"w": jnp.ones((4, 3)), "b": jnp.full(3, 2.0)}
    tx = wdchain.build("muon", others="adam", decay="independent", lr=0.01,
                       weight_decay=1.0, toward="init", ns_dtype=jnp.float32)
    state, p = tx.init(params), params
    for k in range(20):
        grads = jax.tree.map(lambda x, k=k: jnp.cos(x + k), p)
        updates, state = tx.update(grads, state, p)
        p = optax.apply_updates(p, updates)
    # with λ = 1 the independent decay resets θ to θ₀ each step, then one lr step
    for key in params:
        assert float(jnp.max(jnp.abs(p[key] - params[key]))) <= 0.011


def test_describe_states_each_axis() -> None:
    text = wdchain.describe(wdchain.build(
        "adam", decay="corrected", lr=0.1, weight_decay=0.1,
        schedule=lambda c: 1.0 / (1 + c), gate="cautious", toward="init"))
    assert "lr_t·η_t = lr_t²/lr_peak" in text
    assert "cautious weight decay" in text and "θ₀" in text
    assert "λ·G_t⊙(θ − θ*)" in text
    text = wdchain.describe(wdchain.build("adam", decay="stable", weight_decay=0.1))
    assert "√v̄_t" in text and "stable weight decay" in text


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown gate 'caution'"):
        wdchain.build("adam", decay="decoupled", gate="caution")
    with pytest.raises(ValueError, match="toward must be None"):
        wdchain.build("adam", toward="zero")
    with pytest.raises(ValueError, match="corrected_mask"):
        wdchain.build("adam", decay="decoupled", corrected_mask=lambda p: p)
    with pytest.raises(ValueError, match="lr_peak"):
        wdchain.build("adam", decay="corrected", lr=lambda c: 0.1)
    tx = wdchain.build("adam", decay="decoupled", weight_decay=0.1,
                       toward={"w": jnp.zeros(2)})
    with pytest.raises(ValueError, match="toward"):
        tx.init({"w": jnp.zeros(3)})
    with pytest.raises(ValueError, match="toward does not have the structure"):
        tx.init({"v": jnp.zeros(2)})


# --------------------------------------------------------------------------------------
# The stable scale under sharding: v̄ is one all-reduce over the 8 shards.

NUM_DEVICES = 8


def worker() -> None:
    import jax
    import jax.numpy as jnp
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    jax.config.update("jax_enable_x64", True)
    assert jax.device_count() == NUM_DEVICES
    mesh = jax.make_mesh((NUM_DEVICES,), ("fsdp",), axis_types=(AxisType.Auto,))
    fsdp = NamedSharding(mesh, P("fsdp"))
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.standard_normal((16, 8))),
              "v": jnp.asarray(10 * rng.standard_normal((8, 4)))}
    grads = [jax.tree.map(lambda p, k=k: jnp.asarray(
        np.random.default_rng(k).standard_normal(p.shape) * (1 + k)), params)
        for k in range(5)]
    tx = wdchain.build("adam", decay="stable", lr=0.1, weight_decay=0.5, gate="cautious",
                       toward="init")

    def train(p, shard):
        if shard:
            p = jax.device_put(p, fsdp)
        state = tx.init(p)
        step = jax.jit(lambda p, s, g: _apply(tx, p, s, g))
        for g in grads:
            g = jax.device_put(g, fsdp) if shard else g
            p, state = step(p, state, g)
        return p

    single, sharded = train(params, False), train(params, True)
    spec = str(sharded["w"].sharding.spec)
    error = max(float(jnp.max(jnp.abs(single[k] - sharded[k]))) for k in params)
    print(json.dumps({"error": error, "spec": spec,
                      "moved": float(jnp.max(jnp.abs(single["w"] - params["w"])))}))


def _apply(tx, p, s, g):
    updates, s = tx.update(g, s, p)
    return optax.apply_updates(p, updates), s


@pytest.mark.slow
def test_stable_scale_under_eight_device_sharding() -> None:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={NUM_DEVICES}",
           "JAX_PLATFORMS": "cpu"}
    here = os.path.dirname(__file__)
    result = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
         "import test_decay_axes as t; t.worker()", here],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert "fsdp" in figures["spec"]
    assert figures["moved"] > 1e-3
    assert figures["error"] < 1e-12, figures
