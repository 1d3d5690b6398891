"""Parity with torch.optim, step for step.

* The optimizer × option grid of ``torch_oracle.PARITY_CASES``: 100 steps of badly
  scaled gradients on a nested pytree, the same keyword arguments on both sides;
  within 1e-12 of torch in float64 and 1e-5 in float32, relative to each leaf's scale.
* A real-loss trajectory per optimizer: a small MLP regression written in both
  frameworks, each differentiated by its own autodiff, 60 steps in float64.
"""

from __future__ import annotations

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


@functools.cache
def _grid_errors(dtype: type) -> dict[str, float]:
    """Errors of every case: the wdchain side of the grid is compiled once per dtype."""
    return oracle.compare(oracle.PARITY_CASES, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", oracle.PARITY_CASES, ids=lambda case: case.id)
def test_grid_matches_torch(case: oracle.Case, dtype: type) -> None:
    error = _grid_errors(dtype)[case.id]
    assert error <= TOLERANCE[dtype], f"{case.id} ({dtype.__name__}): {error:.3g}"


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
