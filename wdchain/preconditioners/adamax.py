"""Adamax (Kingma & Ba 2015, §7.1), eps inside the max as torch."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from wdchain import _recipe, _tree
from wdchain.preconditioners import adam
from wdchain.registry import register_preconditioner


class ScaleByAdamaxState(NamedTuple):
    # int32 scalar: updates so far (t − 1); named step, not count: the optimizer's one
    # ``count`` is its learning-rate step's (see ScaleByLearningRateState)
    step: jax.Array
    mu: Any  # first moment m, one per leaf
    nu: Any  # infinity norm u, one per leaf


def scale_by_adamax(
    betas: tuple[Any, Any] = (0.9, 0.999), eps: Any = 1e-8
) -> optax.GradientTransformation:
    r"""Adamax's scaling (Adam with the infinity norm), as torch computes it.

    .. math::

        m_t \leftarrow \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
        n_t \leftarrow \max(\beta_2 n_{t-1},\ |g_t| + \epsilon), \qquad
        u_t = \frac{m_t}{(1-\beta_1^t)\, n_t}

    with ε *inside* the max, as in torch and ``optax.scale_by_adamax``.

    Args:
      betas: (β₁, β₂), each in [0, 1) (torch default (0.9, 0.999)).
      eps: ε ≥ 0 (torch default 1e-8).

    Returns:
      An ``optax.GradientTransformation``.
    """
    where = "scale_by_adamax"
    adam.check_options(where, {"betas": betas, "eps": eps})
    beta1, beta2 = betas

    def init_fn(params: Any) -> ScaleByAdamaxState:
        _tree.require_real(where, params)
        zeros = _tree.zeros_like_params  # one buffer per slot, so the state can be donated
        return ScaleByAdamaxState(jnp.zeros([], jnp.int32), zeros(params), zeros(params))

    def update_fn(updates: Any, state: ScaleByAdamaxState, params: Any = None):
        del params
        _tree.check_same_shapes(where, "state.mu", state.mu, "updates", updates)
        count = optax.safe_increment(state.step)
        inverse_correction = _tree.per_dtype(
            lambda dtype: 1 / _tree.bias_correction(beta1, count, dtype)
        )

        def step(g: jax.Array, m: jax.Array, n: jax.Array) -> tuple:
            dtype = _tree.compute_dtype(g.dtype)
            g_c = _tree.cast(g, dtype)
            m_new = _tree.lerp(_tree.cast(m, dtype), g_c, 1 - beta1)
            n_new = jnp.maximum(beta2 * _tree.cast(n, dtype), jnp.abs(g_c) + eps)
            u = (m_new / n_new) * inverse_correction(dtype)
            return _tree.cast(u, g.dtype), _tree.cast(m_new, m.dtype), _tree.cast(n_new, n.dtype)

        updates, mu, nu = _tree.map_float(step, updates, state.mu, state.nu)
        return updates, ScaleByAdamaxState(count, mu, nu)

    tx = optax.GradientTransformation(init_fn, update_fn)
    hyperparams = (("β", (beta1, beta2)), ("ε", eps))
    return _recipe.label(tx, _recipe.Step("adamax", _recipe.PRECONDITIONER, hyperparams))


register_preconditioner(
    "adamax", scale_by_adamax, check=adam.check_options, adaptive=True, torch="Adamax",
    alias="adamax", summary="Adamax (Kingma & Ba 2015, §7.1), eps inside the max as torch",
)
