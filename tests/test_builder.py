"""``wdchain.build``: every preconditioner × every placement.

The oracle is torch.optim, in float64:

* where torch has the combination (every optimizer with L2 ``weight_decay``; Adam,
  NAdam and RAdam with ``decoupled_weight_decay=True``), torch itself;
* elsewhere, torch's optimizer with ``weight_decay=0`` followed by the decay written
  from its equation, ``θ ← θ_torch − c_k·λ·θ_{k−1}`` with c_k = lr_k (decoupled),
  η_k = lr_k / lr_peak (independent) or 1 (constant).

Every run uses an lr schedule (torch's ``LambdaLR``), so η_t is not constant.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from torch_oracle import (
    TORCH_OPTIMIZERS,
    assert_vmapped_grid_matches,
    make_grads,
    make_matrix_params,
    make_params,
    relative_error,
    torch_default_dtype,
    torch_newton_schulz_dtype,
    warmup_cosine,
    warmup_cosine_torch,
)

import wdchain

LR = 0.05
WD = 0.1
STEPS = 100
TOLERANCE = 1e-12

# preconditioner -> (torch optimizer, options given verbatim to both sides).
# Non-default options, so that each is exercised.
PRECONDITIONERS = {
    "sgd": ("sgd", {}),
    "momentum": ("sgd", {"momentum": 0.9, "dampening": 0.3}),
    "adagrad": ("adagrad", {"lr_decay": 0.1, "initial_accumulator_value": 0.2, "eps": 1e-6}),
    "rmsprop": ("rmsprop", {"momentum": 0.9, "centered": True}),
    "adam": ("adam", {"amsgrad": True}),
    "nadam": ("nadam", {"momentum_decay": 0.05}),
    "radam": ("radam", {"betas": (0.8, 0.99)}),
    "adamax": ("adamax", {"betas": (0.8, 0.99), "eps": 1e-3}),
    "adadelta": ("adadelta", {"rho": 0.8, "eps": 1e-4}),
    "asgd": ("asgd", {"lambd": 1e-2, "alpha": 0.5, "t0": 10.0}),
    "adafactor": ("adafactor", {"beta2_decay": -0.6, "d": 2.0, "eps": (1e-20, 1e-3)}),
    "muon": ("muon", {"momentum": 0.9, "adjust_lr_fn": "match_rms_adamw"}),
}
DECOUPLED_IN_TORCH = ("adam", "nadam", "radam")
# Where torch's weight_decay is not L2: decoupled, × the group's lr.
ONLY_DECOUPLED_IN_TORCH = ("adafactor", "muon")
# wdchain-only options: Muon's iteration in float64, as torch's is patched to run.
WDCHAIN_ONLY = {"muon": {"ns_dtype": jnp.float64}}


def native_placements(preconditioner: str) -> list[str]:
    """The placements torch has for this preconditioner."""
    if preconditioner in ONLY_DECOUPLED_IN_TORCH:
        return ["decoupled"]
    return ["l2"] + (["decoupled"] if preconditioner in DECOUPLED_IN_TORCH else [])


def problem(preconditioner: str, steps: int = STEPS) -> tuple[Any, Any]:
    """Params (2-D leaves only for Muon) and gradients."""
    params = make_matrix_params() if preconditioner == "muon" else make_params()
    return params, make_grads(params, steps)


def run_many(txs: list[optax.GradientTransformation], params: Any, grads: Any) -> list[Any]:
    """Final float64 params of each transformation, all in one jitted program."""
    with jax.enable_x64(True):
        p0 = jax.tree.map(jnp.asarray, params)
        g_seq = jax.tree.map(jnp.asarray, grads)

        @jax.jit
        def run(p: Any, gs: Any) -> list[Any]:
            finals = []
            for tx in txs:

                def body(carry: tuple, g: Any, tx: Any = tx) -> tuple:
                    p, state = carry
                    updates, state = tx.update(g, state, p)
                    return (optax.apply_updates(p, updates), state), None

                (final, _), _ = jax.lax.scan(body, (p, tx.init(p)), gs)
                finals.append(final)
            return finals

        return [jax.tree.map(np.asarray, final) for final in run(p0, g_seq)]


def run_torch(preconditioner: str, decay: str, params: Any, grads: Any) -> Any:
    """torch.optim for the cell: native where torch has it, else torch + the decay."""
    name, options = PRECONDITIONERS[preconditioner]
    native = decay in native_placements(preconditioner)
    kwargs = {"lr": LR, **options, "weight_decay": WD if native else 0.0}
    if native and decay == "decoupled" and preconditioner in DECOUPLED_IN_TORCH:
        kwargs["decoupled_weight_decay"] = True
    lr_decay = options.get("lr_decay", 0.0)
    leaves, treedef = jax.tree.flatten(params)
    grad_leaves = jax.tree.leaves(grads)
    with torch_default_dtype(np.float64), torch_newton_schulz_dtype(torch.float64):
        tensors = [torch.tensor(x, requires_grad=True) for x in leaves]
        optimizer = TORCH_OPTIMIZERS[name](tensors, **kwargs)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine_torch)
        for k in range(STEPS):
            lr_k = optimizer.param_groups[0]["lr"] / (1 + k * lr_decay)  # Adagrad's clr
            # The lr step's value: ASGD's is its η_t (torch's state "eta").
            state = optimizer.state[tensors[0]]
            step_size = float(state["eta"]) if "eta" in state else lr_k
            scale = {"decoupled": step_size, "independent": lr_k / LR, "constant": 1.0}
            previous = [t.detach().clone() for t in tensors]
            for tensor, g in zip(tensors, grad_leaves):
                l2 = WD * tensor.detach() if decay == "l2" and not native else 0.0
                tensor.grad = torch.tensor(g[k]) + l2
            optimizer.step()
            if not native and decay in scale:
                with torch.no_grad():
                    for tensor, old in zip(tensors, previous):
                        tensor -= scale[decay] * WD * old
            scheduler.step()
        return treedef.unflatten([t.detach().numpy().copy() for t in tensors])


def schedule(count: Any) -> Any:
    return warmup_cosine(count)


def built(preconditioner: str, decay: str, **kwargs: Any) -> optax.GradientTransformation:
    _, options = PRECONDITIONERS[preconditioner]
    return wdchain.build(
        preconditioner, decay=decay, lr=LR, weight_decay=WD, schedule=schedule,
        **options, **WDCHAIN_ONLY.get(preconditioner, {}), **kwargs,
    )


def alias(preconditioner: str, decay: str) -> optax.GradientTransformation:
    """The wdchain alias for an L2 or torch-decoupled cell."""
    name, options = PRECONDITIONERS[preconditioner]
    kwargs = {"lr": lambda count: LR * schedule(count), "weight_decay": WD, **options,
              **WDCHAIN_ONLY.get(preconditioner, {})}
    if decay == "decoupled" and preconditioner in DECOUPLED_IN_TORCH:
        kwargs["decoupled_weight_decay"] = True
    return getattr(wdchain, name)(**kwargs)


@pytest.mark.parametrize("preconditioner", list(PRECONDITIONERS))
def test_every_placement_matches_torch(preconditioner: str) -> None:
    params, grads = problem(preconditioner)
    native = native_placements(preconditioner)
    txs = [built(preconditioner, decay) for decay in wdchain.PLACEMENTS]
    txs += [alias(preconditioner, decay) for decay in native]
    finals = run_many(txs, params, grads)
    ours = dict(zip(wdchain.PLACEMENTS, finals))
    for decay in wdchain.PLACEMENTS:
        error = relative_error(ours[decay], run_torch(preconditioner, decay, params, grads))
        assert error < TOLERANCE, f"{preconditioner}-{decay}: {error:.2e}"
    # The builder's L2 and decoupled cells are the aliases, bit for bit.
    for decay, from_alias in zip(native, finals[len(wdchain.PLACEMENTS):]):
        jax.tree.map(np.testing.assert_array_equal, ours[decay], from_alias)
    # The placements really differ from one another.
    for i, a in enumerate(wdchain.PLACEMENTS):
        for b in wdchain.PLACEMENTS[i + 1:]:
            if preconditioner in ("sgd", "asgd") and {a, b} == {"l2", "decoupled"}:
                continue  # without a preconditioner's statistics they are the same update
            assert relative_error(ours[a], ours[b]) > 1e-6, (a, b)


def test_sgd_l2_and_decoupled_coincide() -> None:
    params = make_params()
    grads = make_grads(params, 20)
    l2, decoupled = run_many([built("sgd", "l2"), built("sgd", "decoupled")], params, grads)
    jax.tree.map(np.testing.assert_array_equal, l2, decoupled)


# --------------------------------------------------------------------------------------
# Lion and LAMB: no torch.optim counterpart. The oracle is NumPy from the papers'
# equations; optax.lion and optax.lamb are measured against the decoupled cell.

SIGN_AND_TRUST = {
    "lion": {"betas": (0.8, 0.95)},
    "lamb": {"betas": (0.8, 0.99), "eps": 1e-5},
}


def numpy_reference(preconditioner: str, decay: str, params: Any, grads: Any) -> Any:
    """Lion (Chen et al. 2023, Alg. 2) or LAMB (You et al. 2020, Alg. 2) with the decay
    of ``decay``, in float64, under the test's lr schedule."""
    options = SIGN_AND_TRUST[preconditioner]
    beta1, beta2 = options["betas"]
    leaves, treedef = jax.tree.flatten(params)
    theta = [np.array(x) for x in leaves]
    m = [np.zeros_like(x) for x in theta]
    v = [np.zeros_like(x) for x in theta]
    for k in range(jax.tree.leaves(grads)[0].shape[0]):
        eta = warmup_cosine_torch(k)
        lr = LR * eta
        for i, g in enumerate(jax.tree.leaves(grads)):
            g = g[k] + (WD * theta[i] if decay == "l2" else 0.0)
            if preconditioner == "lion":
                u = np.sign(beta1 * m[i] + (1 - beta1) * g)
                m[i] = beta2 * m[i] + (1 - beta2) * g
            else:
                m[i] = beta1 * m[i] + (1 - beta1) * g
                v[i] = beta2 * v[i] + (1 - beta2) * g * g
                m_hat, v_hat = m[i] / (1 - beta1 ** (k + 1)), v[i] / (1 - beta2 ** (k + 1))
                u = m_hat / (np.sqrt(v_hat) + options["eps"])
            if decay == "decoupled":
                u = u + WD * theta[i]
            if preconditioner == "lamb":
                p_norm, u_norm = np.linalg.norm(theta[i]), np.linalg.norm(u)
                u = u * (p_norm / u_norm if p_norm > 0 and u_norm > 0 else 1.0)
            after = {"independent": eta * WD, "constant": WD}.get(decay, 0.0)
            theta[i] = theta[i] - lr * u - after * theta[i]
    return treedef.unflatten(theta)


@pytest.mark.parametrize("preconditioner", list(SIGN_AND_TRUST))
def test_lion_and_lamb_match_their_papers_for_every_placement(preconditioner: str) -> None:
    params = make_params()
    grads = make_grads(params, STEPS)
    options = SIGN_AND_TRUST[preconditioner]
    txs = [wdchain.build(preconditioner, decay=d, lr=LR, weight_decay=WD, schedule=schedule,
                         **options) for d in wdchain.PLACEMENTS]
    finals = dict(zip(wdchain.PLACEMENTS, run_many(txs, params, grads)))
    for decay, ours in finals.items():
        error = relative_error(ours, numpy_reference(preconditioner, decay, params, grads))
        assert error < 1e-11, f"{preconditioner}-{decay}: {error:.2e}"
    for i, a in enumerate(wdchain.PLACEMENTS):
        for b in wdchain.PLACEMENTS[i + 1:]:
            assert relative_error(finals[a], finals[b]) > 1e-6, (a, b)


def optax_counterpart(preconditioner: str) -> optax.GradientTransformation:
    options = SIGN_AND_TRUST[preconditioner]
    beta1, beta2 = options["betas"]

    def lr(count: Any) -> Any:
        return LR * schedule(count)

    if preconditioner == "lion":
        return optax.lion(lr, b1=beta1, b2=beta2, weight_decay=WD)
    return optax.lamb(lr, b1=beta1, b2=beta2, eps=options["eps"], weight_decay=WD)


# Measured float64 differences of build(<p>, decay="decoupled") from optax after 100 steps
# (README, "Lion and LAMB"): the rules coincide; what is left is rounding.
OPTAX_DIFFERENCE = {"lion": 1e-13, "lamb": 1e-13}


@pytest.mark.parametrize("preconditioner", list(SIGN_AND_TRUST))
def test_decoupled_lion_and_lamb_are_optax_lion_and_lamb(preconditioner: str) -> None:
    params = make_params()
    grads = make_grads(params, STEPS)
    ours, theirs = run_many(
        [wdchain.build(preconditioner, decay="decoupled", lr=LR, weight_decay=WD,
                       schedule=schedule, **SIGN_AND_TRUST[preconditioner]),
         optax_counterpart(preconditioner)], params, grads)
    assert relative_error(ours, theirs) < OPTAX_DIFFERENCE[preconditioner]


def test_lamb_trust_ratio_is_one_where_a_norm_is_zero() -> None:
    """θ = 0 on one leaf, a zero gradient on another: both take the unscaled step."""
    params = {"zero": jnp.zeros(3), "w": jnp.array([3.0, 4.0])}
    grads = {"zero": jnp.array([1.0, -1.0, 0.5]), "w": jnp.zeros(2)}
    tx = wdchain.build("lamb", decay="decoupled", lr=1.0, weight_decay=0.0)
    updates, _ = tx.update(grads, tx.init(params), params)
    adam = wdchain.build("adam", decay="decoupled", lr=1.0, eps=1e-6)
    expected, _ = adam.update(grads, adam.init(params), params)
    jax.tree.map(np.testing.assert_array_equal, updates, expected)
    # With λ > 0 the decayed leaf's update is λθ scaled to ‖θ‖: −θ·‖θ‖/‖λθ‖ = −θ/λ·λ.
    tx = wdchain.build("lamb", decay="decoupled", lr=1.0, weight_decay=0.5)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], -params["w"], rtol=1e-6)


# --------------------------------------------------------------------------------------
# One state structure for every placement.


OPTION_VARIANTS = [
    ("momentum", {"nesterov": True}),
    ("rmsprop", {"centered": True, "momentum": 0.5}),
    ("adam", {"amsgrad": True}),
    ("adagrad", {"lr_decay": 0.01}),
    ("muon", {"nesterov": False, "ns_dtype": jnp.float32}),
    ("adafactor", {"eps": (1e-30, 1e-3)}),
]


@pytest.mark.parametrize(
    "preconditioner, options",
    [(p, {}) for p in wdchain.PRECONDITIONERS] + OPTION_VARIANTS,
    ids=lambda x: x if isinstance(x, str) else ",".join(x) or "defaults",
)
def test_state_structure_is_the_same_for_every_placement(preconditioner: str, options: dict):
    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    if wdchain.registry.REGISTRY[preconditioner].matrices_only:
        params = {"w": jnp.ones((2, 3)), "v": jnp.zeros((4, 3))}
    shapes = {
        jax.tree.structure(jax.eval_shape(
            wdchain.build(preconditioner, decay=d, weight_decay=0.1, **options).init, params
        ))
        for d in wdchain.PLACEMENTS
    }
    assert len(shapes) == 1
    # ... and the same leaves: shapes and dtypes.
    leaves = {
        tuple((x.shape, x.dtype) for x in jax.tree.leaves(jax.eval_shape(
            wdchain.build(preconditioner, decay=d, weight_decay=0.1, **options).init, params
        )))
        for d in wdchain.PLACEMENTS
    }
    assert len(leaves) == 1


def test_a_state_carries_across_arms() -> None:
    """A checkpoint of one arm (flattened leaves) restores into another arm, and the
    other arm resumes from it: with λ = 0 every arm is the same optimizer, so the
    resumed run equals an uninterrupted one."""
    params = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([0.1, -0.1])}
    grads = [jax.tree.map(lambda p, k=k: jnp.sin(p + k), params) for k in range(6)]

    def run(tx: Any, p: Any, state: Any, gs: list) -> tuple:
        for g in gs:
            updates, state = tx.update(g, state, p)
            p = optax.apply_updates(p, updates)
        return p, state

    for preconditioner, options in (("nadam", {}), ("rmsprop", {"centered": True,
                                                                "momentum": 0.9})):
        arms = {d: wdchain.build(preconditioner, decay=d, lr=0.1, weight_decay=0.0, **options)
                for d in wdchain.PLACEMENTS}
        whole, _ = run(arms["none"], params, arms["none"].init(params), grads)
        half, saved = run(arms["l2"], params, arms["l2"].init(params), grads[:3])
        checkpoint = [np.asarray(x) for x in jax.tree.leaves(saved)]
        for decay in ("decoupled", "independent", "constant"):
            tx = arms[decay]
            restored = jax.tree.unflatten(jax.tree.structure(tx.init(params)), checkpoint)
            resumed, _ = run(tx, half, restored, grads[3:])
            jax.tree.map(np.testing.assert_array_equal, resumed, whole)


# --------------------------------------------------------------------------------------
# Traced hyperparameters, η_t and lr_peak.


@pytest.mark.parametrize("decay", wdchain.PLACEMENTS)
def test_vmapped_lr_and_weight_decay_equal_concrete_ones(decay: str) -> None:
    params = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array([0.3])}
    grads = {"w": jnp.array([0.2, 0.1, -0.4]), "b": jnp.array([1.0])}
    lrs = jnp.array([0.01, 0.1, 0.3])
    wds = jnp.array([0.0, 0.05, 0.2])

    def final(lr: Any, wd: Any) -> Any:
        tx = wdchain.build("adam", decay=decay, lr=lr, weight_decay=wd,
                           schedule=lambda c: 1.0 / (1.0 + c))
        p, state = params, tx.init(params)
        for _ in range(3):
            updates, state = tx.update(grads, state, p)
            p = optax.apply_updates(p, updates)
        return p

    assert_vmapped_grid_matches(final, lrs, wds)


NEW = ("lion", "lamb", "adadelta", "asgd", "adafactor", "muon")


@pytest.mark.parametrize("preconditioner", NEW)
def test_vmapped_lr_and_weight_decay_of_every_placement(preconditioner: str) -> None:
    """A vmapped (lr, λ) grid gives what each (lr, λ) gives alone, for every placement."""
    params = {"w": jnp.array([[1.0, -2.0, 0.5], [0.3, 0.2, -1.0]]), "v": jnp.ones((3, 2))}
    grads = jax.tree.map(lambda p: jnp.sin(3 * p + 1), params)
    lrs = jnp.array([0.01, 0.1, 0.3])
    wds = jnp.array([0.0, 0.05, 0.2])
    options = {"ns_dtype": jnp.float32} if preconditioner == "muon" else {}

    def finals(lr: Any, wd: Any) -> list:
        out = []
        for decay in wdchain.PLACEMENTS:
            tx = wdchain.build(preconditioner, decay=decay, lr=lr, weight_decay=wd,
                               schedule=lambda c: 1.0 / (1.0 + c), **options)
            p, state = params, tx.init(params)
            for _ in range(3):
                updates, state = tx.update(grads, state, p)
                p = optax.apply_updates(p, updates)
            out.append(p)
        return out

    grid = jax.jit(jax.vmap(finals))(lrs, wds)
    single = jax.jit(finals)
    for i in range(len(lrs)):
        expected = single(float(lrs[i]), float(wds[i]))
        jax.tree.map(
            lambda g, e, i=i: np.testing.assert_allclose(g[i], e, rtol=2e-5, atol=1e-6),
            grid, expected,
        )


def test_independent_with_lr_schedule_and_lr_peak_equals_schedule_form() -> None:
    params = make_params()
    grads = make_grads(params, 30)
    with_schedule = wdchain.build("adam", decay="independent", lr=LR, weight_decay=WD,
                                  schedule=schedule)
    with_peak = wdchain.build("adam", decay="independent", weight_decay=WD,
                              lr=lambda count: LR * schedule(count), lr_peak=LR)
    a, b = run_many([with_schedule, with_peak], params, grads)
    assert relative_error(a, b) < 1e-14


def test_independent_with_a_constant_lr_is_constant_decay() -> None:
    params = make_params()
    grads = make_grads(params, 20)
    a, b = run_many(
        [wdchain.build("radam", decay=d, lr=LR, weight_decay=WD) for d in
         ("independent", "constant")],
        params, grads,
    )
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_independent_decay_is_eta_times_lambda_on_one_step() -> None:
    """Hand check: zero gradient, plain SGD, lr schedule α_k = 0.5·0.8^k, λ = 0.1:
    θ_{k+1} = θ_k − 0.8^k·0.1·θ_k."""
    tx = wdchain.build("sgd", decay="independent", lr=lambda c: 0.5 * 0.8**c,
                       lr_peak=0.5, weight_decay=0.1)
    theta = jnp.array([2.0])
    state = tx.init(theta)
    expected = 2.0
    for k in range(4):
        updates, state = tx.update(jnp.zeros(1), state, theta)
        theta = optax.apply_updates(theta, updates)
        expected -= 0.8**k * 0.1 * expected
        np.testing.assert_allclose(theta, [expected], rtol=1e-6)


def test_lr_peak_with_a_constant_lr_sets_eta() -> None:
    """η_t = lr_t / lr_peak = 0.1 / 0.4 at every step: the update is −0.25·λ·θ."""
    theta = jnp.array([2.0])
    tx = wdchain.build("sgd", decay="independent", lr=0.1, lr_peak=0.4, weight_decay=0.5)
    updates, _ = tx.update(jnp.zeros(1), tx.init(theta), theta)
    np.testing.assert_allclose(updates, [-0.25 * 0.5 * 2.0], rtol=1e-6)


def test_maximize_negates_the_gradient_before_decay() -> None:
    theta = jnp.array([2.0])
    tx = wdchain.build("sgd", decay="l2", lr=0.1, weight_decay=0.5, maximize=True)
    updates, _ = tx.update(jnp.array([1.0]), tx.init(theta), theta)
    np.testing.assert_allclose(updates, [-0.1 * (-1.0 + 0.5 * 2.0)])


def test_mask_reaches_every_decay_slot() -> None:
    params = {"w": jnp.array([1.0]), "b": jnp.array([1.0])}
    mask = {"w": True, "b": False}
    for decay in ("l2", "decoupled", "independent", "constant"):
        tx = wdchain.build("sgd", decay=decay, lr=1.0, weight_decay=0.5, mask=mask)
        updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
        assert float(updates["w"][0]) == -0.5 and float(updates["b"][0]) == 0.0, decay


# --------------------------------------------------------------------------------------
# Errors.


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown preconditioner 'sophia'.*sgd, momentum, "
                                         "adagrad, rmsprop, adam, nadam, radam, adamax, lion, "
                                         "lamb, adadelta, asgd, adafactor, muon, adopt, "
                                         "ademamix, lars, adan, schedule_free_adam"):
        wdchain.build("sophia")
    with pytest.raises(ValueError, match="unknown decay 'adamw'.*none, l2, decoupled, "
                                         "independent, constant"):
        wdchain.build("adam", decay="adamw")
    with pytest.raises(ValueError, match="unknown option.*nesterov.*'adam'.*betas, eps, amsgrad"):
        wdchain.build("adam", nesterov=True)
    with pytest.raises(ValueError, match="preconditioner 'sgd'; its options are: none. "
                                         r"For SGD with momentum use build\(\"momentum\""):
        wdchain.build("sgd", momentum=0.9)


def test_registry_defaults_are_the_aliases_defaults() -> None:
    """An entry with a torch alias has the alias's defaults (torch's) for every option
    the alias shares; the momentum entry's μ = 0.9 is the one deliberate exception."""
    for name, entry in wdchain.registry.REGISTRY.items():
        if entry.alias is None:
            assert entry.torch is None, name
            continue
        assert entry.torch in TORCH_OPTIMIZERS[entry.alias].__name__, name
        signature = inspect.signature(getattr(wdchain, entry.alias)).parameters
        for option, default in entry.options.items():
            if option in signature and (name, option) != ("momentum", "momentum"):
                assert signature[option].default == default, (name, option)


def test_optax_inject_hyperparams_of_build_equals_build() -> None:
    """optax binds ``**options`` as one argument named ``options``; build unpacks it."""
    params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array([0.5])}
    grads = {"w": jnp.array([0.3, 0.1]), "b": jnp.array([-1.0])}
    kwargs = {"decay": "decoupled", "lr": 0.1, "weight_decay": 0.2, "betas": (0.8, 0.99),
              "eps": 1e-6}
    injected = optax.inject_hyperparams(wdchain.build)("adam", **kwargs)
    plain = wdchain.build("adam", **kwargs)
    state = injected.init(params)
    assert set(state.hyperparams) >= {"lr", "weight_decay"}
    ours, _ = injected.update(grads, state, params)
    theirs, _ = plain.update(grads, plain.init(params), params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), ours, theirs)
    with pytest.raises(ValueError, match="unknown option.*nesterov"):
        optax.inject_hyperparams(wdchain.build)("adam", nesterov=True).init(params)


def test_registry_is_what_build_reads() -> None:
    """Every entry's defaults are build's defaults, and PRECONDITIONERS is its keys."""
    assert wdchain.PRECONDITIONERS == tuple(wdchain.registry.REGISTRY)
    for name, entry in wdchain.registry.REGISTRY.items():
        assert entry.name == name
        with pytest.raises(ValueError, match=f"options are: {', '.join(entry.options) or 'none'}"):
            wdchain.build(name, not_an_option=1)


def test_schedule_arguments_are_checked() -> None:
    lr_schedule = optax.cosine_decay_schedule(0.1, 100)
    with pytest.raises(ValueError, match="lr_peak"):
        wdchain.build("adam", decay="independent", lr=lr_schedule, weight_decay=0.1)
    with pytest.raises(ValueError, match="lr must be the peak learning rate"):
        wdchain.build("adam", lr=lr_schedule, schedule=lambda c: 1.0)
    with pytest.raises(ValueError, match="leave lr_peak out"):
        wdchain.build("adam", lr=0.1, schedule=lambda c: 1.0, lr_peak=0.1)
    with pytest.raises(ValueError, match="schedule must be a callable"):
        wdchain.build("adam", schedule=0.5)
    with pytest.raises(ValueError, match="lr_peak must be a number > 0"):
        wdchain.build("adam", decay="independent", lr=lr_schedule, lr_peak=0.0)
    with pytest.raises(ValueError, match=r"weight_decay must be in \[0, inf\)"):
        wdchain.build("adam", weight_decay=-1.0)
    with pytest.raises(ValueError, match=r"betas\[0\] must be in \[0, 1\)"):
        wdchain.build("adam", betas=(1.5, 0.9))
    # Other placements need no lr_peak with an lr schedule.
    wdchain.build("adam", decay="decoupled", lr=lr_schedule, weight_decay=0.1)


def test_torch_learning_rate_default_is_kept() -> None:
    """lr defaults to 1e-3 whatever the preconditioner (the contract of the runner)."""
    theta = jnp.array([1.0])
    tx = wdchain.build("sgd")
    updates, _ = tx.update(jnp.array([1.0]), tx.init(theta), theta)
    assert math.isclose(float(updates[0]), -1e-3, rel_tol=1e-6)
