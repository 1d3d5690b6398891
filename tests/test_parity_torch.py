"""Parity with torch.optim, step for step.

* The optimizer × option grid of ``torch_oracle.PARITY_CASES``: 100 steps of badly
  scaled gradients on a nested pytree, the same keyword arguments on both sides;
  within 1e-12 of torch in float64 and 1e-5 in float32, relative to each leaf's scale.
* A real-loss trajectory per optimizer: a small MLP regression written in both
  frameworks, each differentiated by its own autodiff, 60 steps in float64.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch_oracle as oracle

import wdchain

TOLERANCE = {np.float64: 1e-12, np.float32: 1e-5}
# Muon with torch's bfloat16 Newton–Schulz on both sides: the iterations agree bit for bit
# but for an occasional last-place rounding of a bfloat16 product (measured 4e-6 after
# 100 steps); 2⁻¹⁰ leaves room for other CPUs' accumulation orders.
BF16_TOLERANCE = 2.0**-10


@functools.cache
def _grid_errors(dtype: type) -> dict[str, float]:
    """Errors of every case: the wdchain side of the grid is compiled once per dtype."""
    return oracle.compare(oracle.PARITY_CASES, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", oracle.PARITY_CASES, ids=lambda case: case.id)
def test_grid_matches_torch(case: oracle.Case, dtype: type) -> None:
    error = _grid_errors(dtype)[case.id]
    assert error <= TOLERANCE[dtype], f"{case.id} ({dtype.__name__}): {error:.3g}"


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_muon_bfloat16_iteration_matches_torch(dtype: type) -> None:
    errors = oracle.compare(oracle.MUON_BF16_CASES, dtype)
    for case_id, error in errors.items():
        assert error <= BF16_TOLERANCE, f"{case_id} ({dtype.__name__}): {error:.3g}"
    # ... and the bfloat16 iteration is not the float one: the test can tell them apart.
    exact = oracle.compare([dataclasses.replace(oracle.MUON_BF16_CASES[0], ns_dtype=None)],
                           dtype)
    assert next(iter(exact.values())) <= TOLERANCE[dtype]
    ours = oracle.MUON_BF16_CASES[0]
    params = oracle.make_matrix_params()
    grads = oracle.make_grads(params, 20)
    bf16, wide = oracle.run_wdchain(
        [ours.wdchain_tx(dtype), dataclasses.replace(ours, ns_dtype=None).wdchain_tx(dtype)],
        params, grads, dtype)
    assert oracle.relative_error(bf16, wide) > 1e-4


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_asgd_averaged_params_match_torch_ax(dtype: type) -> None:
    """wdchain.averaged_params(state) is torch's state["ax"], averaging from t₀ = 10."""
    kwargs = {"lr": 0.05, "lambd": 1e-3, "t0": 10.0, "weight_decay": 0.1}
    params = oracle.make_params()
    grads = oracle.make_grads(params, 60)
    tx = wdchain.asgd(**kwargs)
    with jax.enable_x64(dtype == np.float64):
        p = jax.tree.map(lambda x: jnp.asarray(x, dtype), params)
        state = tx.init(p)
        update = jax.jit(tx.update)
        for k in range(60):
            g = jax.tree.map(lambda x, k=k: jnp.asarray(x[k], dtype), grads)
            updates, state = update(g, state, p)
            p = optax.apply_updates(p, updates)
        ours = jax.tree.map(np.asarray, wdchain.averaged_params(state))
    leaves, treedef = jax.tree.flatten(params)
    with oracle.torch_default_dtype(dtype):
        tensors = [torch.tensor(x, dtype=oracle.TORCH_DTYPES[dtype]) for x in leaves]
        for t in tensors:
            t.requires_grad_(True)
        optimizer = torch.optim.ASGD(tensors, **kwargs)
        for k in range(60):
            for t, g in zip(tensors, jax.tree.leaves(grads)):
                t.grad = torch.tensor(g[k], dtype=oracle.TORCH_DTYPES[dtype])
            optimizer.step()
        theirs = treedef.unflatten([optimizer.state[t]["ax"].numpy().copy() for t in tensors])
    error = oracle.relative_error(ours, theirs)
    assert error <= TOLERANCE[dtype], f"{error:.3g}"
    # The average lags the iterate (the test would notice a copy of θ).
    assert oracle.relative_error(ours, jax.tree.map(np.asarray, p)) > 1e-3


def test_grid_covers_every_option() -> None:
    """Some case sets each keyword argument of each torch optimizer (other than
    torch-only ones) to a non-default value, and every alias has a mask case and a
    schedule case."""
    not_options = {"params", "lr", "foreach", "capturable", "differentiable", "fused"}
    for name in oracle.OPTIMIZERS:
        cases = oracle.cases_of(name)
        defaults = inspect.signature(oracle.TORCH_OPTIMIZERS[name]).parameters
        changed = {
            key for case in cases for key, value in case.kwargs.items()
            if value != defaults[key].default
        }
        missing = set(defaults) - not_options - changed
        assert not missing, f"{name}: no case changes {sorted(missing)}"
        assert any(case.mask is not None for case in cases), name
        assert any(case.schedule is not None for case in cases), name


# --------------------------------------------------------------------------------------
# Real-loss trajectories: each framework's own autodiff.

STEPS = 60
_rng = np.random.default_rng(7)
X = _rng.standard_normal((32, 3))
Y = np.sin(X @ np.array([1.0, -2.0, 0.5]))[:, None]
PARAMS = {
    "hidden": {"w": 0.7 * _rng.standard_normal((3, 8)), "b": 0.1 * _rng.standard_normal(8)},
    "out": [0.7 * _rng.standard_normal((8, 1)), np.zeros(1)],
}

TRAJECTORIES = {
    "sgd": {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2},
    "adagrad": {"lr": 0.1, "lr_decay": 1e-2, "weight_decay": 1e-2},
    "rmsprop": {"lr": 1e-2, "momentum": 0.5, "centered": True, "weight_decay": 1e-2},
    "adam": {"lr": 1e-2, "weight_decay": 1e-2, "amsgrad": True},
    "adamw": {"lr": 1e-2, "weight_decay": 0.1},
    "nadam": {"lr": 1e-2, "weight_decay": 1e-2, "decoupled_weight_decay": True},
    "radam": {"lr": 1e-2, "weight_decay": 1e-2},
    "adamax": {"lr": 1e-2, "weight_decay": 1e-2},
    "adadelta": {"lr": 1.0, "rho": 0.8, "weight_decay": 1e-2},
    "asgd": {"lr": 0.1, "lambd": 1e-2, "t0": 5.0, "weight_decay": 1e-2},
    "adafactor": {"lr": 0.05, "weight_decay": 0.1},
}


def _jax_loss(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    hidden = jnp.tanh(x @ params["hidden"]["w"] + params["hidden"]["b"])
    w, b = params["out"]
    return jnp.mean((hidden @ w + b - y) ** 2)


@functools.cache
def _jax_trajectories() -> dict[str, dict]:
    """Final params of every optimizer in TRAJECTORIES, from one jitted scan."""
    txs = {name: getattr(wdchain, name)(**kwargs) for name, kwargs in TRAJECTORIES.items()}
    with jax.enable_x64(True):
        x, y = jnp.asarray(X), jnp.asarray(Y)

        @jax.jit
        def run(params: dict) -> dict:
            def body(carry: tuple, _: None) -> tuple:
                ps, states = carry
                for name, tx in txs.items():
                    grads = jax.grad(_jax_loss)(ps[name], x, y)
                    updates, states[name] = tx.update(grads, states[name], ps[name])
                    ps[name] = optax.apply_updates(ps[name], updates)
                return (ps, states), None

            init = ({name: params for name in txs}, {n: tx.init(params) for n, tx in txs.items()})
            return jax.lax.scan(body, init, None, STEPS)[0][0]

        return jax.tree.map(np.asarray, run(jax.tree.map(jnp.asarray, PARAMS)))


def _torch_trajectory(name: str, kwargs: dict) -> dict:
    leaves, treedef = jax.tree.flatten(PARAMS)
    with oracle.torch_default_dtype(np.float64):
        tensors = [torch.tensor(leaf, requires_grad=True) for leaf in leaves]
        params = treedef.unflatten(tensors)
        optimizer = oracle.TORCH_OPTIMIZERS[name](tensors, **kwargs)
        x, y = torch.tensor(X), torch.tensor(Y)
        for _ in range(STEPS):
            optimizer.zero_grad()
            hidden = torch.tanh(x @ params["hidden"]["w"] + params["hidden"]["b"])
            w, b = params["out"]
            torch.mean((hidden @ w + b - y) ** 2).backward()
            optimizer.step()
        return treedef.unflatten([t.detach().numpy().copy() for t in tensors])


@pytest.mark.parametrize("name", list(TRAJECTORIES))
def test_real_loss_trajectory_matches_torch(name: str) -> None:
    ours = _jax_trajectories()[name]
    theirs = _torch_trajectory(name, TRAJECTORIES[name])
    for start, end in zip(jax.tree.leaves(PARAMS), jax.tree.leaves(theirs)):
        assert np.max(np.abs(end - start)) > 1e-2 * np.max(np.abs(end)), f"{name}: stuck"
    error = oracle.relative_error(ours, theirs)
    assert error <= TOLERANCE[np.float64], f"{name}: {error:.3g}"


def test_muon_real_loss_trajectory_matches_torch() -> None:
    """Muon on a bias-free MLP (2-D leaves only), each framework's autodiff, 60 float64 steps,
    the Newton–Schulz iteration in float64 on both sides."""
    params = {"hidden": PARAMS["hidden"]["w"], "out": PARAMS["out"][0]}
    kwargs = {"lr": 0.05, "weight_decay": 0.1, "momentum": 0.9}

    def loss(p: dict, x: jax.Array, y: jax.Array) -> jax.Array:
        return jnp.mean((jnp.tanh(x @ p["hidden"]) @ p["out"] - y) ** 2)

    with jax.enable_x64(True):
        tx = wdchain.muon(**kwargs, ns_dtype=jnp.float64)
        x, y = jnp.asarray(X), jnp.asarray(Y)

        @jax.jit
        def run(p: dict) -> dict:
            def body(carry: tuple, _: None) -> tuple:
                p, state = carry
                updates, state = tx.update(jax.grad(loss)(p, x, y), state, p)
                return (optax.apply_updates(p, updates), state), None

            return jax.lax.scan(body, (p, tx.init(p)), None, STEPS)[0][0]

        ours = jax.tree.map(np.asarray, run(jax.tree.map(jnp.asarray, params)))
    with oracle.torch_default_dtype(np.float64), oracle.torch_newton_schulz_dtype(torch.float64):
        tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
        optimizer = torch.optim.Muon(list(tensors.values()), **kwargs)
        x, y = torch.tensor(X), torch.tensor(Y)
        for _ in range(STEPS):
            optimizer.zero_grad()
            torch.mean((torch.tanh(x @ tensors["hidden"]) @ tensors["out"] - y) ** 2).backward()
            optimizer.step()
        theirs = {k: t.detach().numpy().copy() for k, t in tensors.items()}
    for k, start in params.items():
        assert np.max(np.abs(theirs[k] - start)) > 1e-2 * np.max(np.abs(theirs[k])), "stuck"
    error = oracle.relative_error(ours, theirs)
    assert error <= TOLERANCE[np.float64], f"{error:.3g}"
