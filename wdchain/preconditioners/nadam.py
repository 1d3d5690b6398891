"""NAdam (Dozat 2016) with torch's momentum-decay schedule and arithmetic."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from wdchain import _recipe, _tree, _validate
from wdchain.preconditioners import adam
from wdchain.registry import register_preconditioner
from wdchain.types import Options


def check_options(where: str, options: Options) -> None:
    """NAdam's options: Adam's ``betas`` and ``eps``, ``momentum_decay`` ψ ≥ 0."""
    adam.check_options(where, options)
    _validate.check_range(where, "momentum_decay", options["momentum_decay"])


class ScaleByNadamState(NamedTuple):
    # int32 scalar: updates so far (t − 1); named step, not count: the optimizer's one
    # ``count`` is its learning-rate step's (see ScaleByLearningRateState)
    step: jax.Array
    mu_product: jax.Array  # scalar ∏ μ_k: float32, float64 for float64 params (torch: its default dtype)
    mu: Any  # first moment m, one per leaf
    nu: Any  # second moment v, one per leaf


def scale_by_nadam(
    betas: tuple[Any, Any] = (0.9, 0.999), eps: Any = 1e-8, momentum_decay: Any = 4e-3
) -> optax.GradientTransformation:
    r"""NAdam's scaling with torch's momentum schedule.

    .. math::

        \mu_t = \beta_1\bigl(1 - \tfrac12\, 0.96^{t\psi}\bigr), \quad
        \Pi_t = \textstyle\prod_{k\le t}\mu_k, \quad
        d_t = \sqrt{v_t / (1-\beta_2^t)} + \epsilon

    .. math::

        u_t = \frac{1-\mu_t}{1-\Pi_t}\,\frac{g_t}{d_t}
              + \frac{\mu_{t+1}}{1-\Pi_t\mu_{t+1}}\,\frac{m_t}{d_t}

    with m, v Adam's moments and ψ = ``momentum_decay``. ``optax.nadam`` is the
    constant-momentum limit ψ → ∞; pass a large ψ (1e9) to get it.

    Args:
      betas: (β₁, β₂), each in [0, 1) (torch default (0.9, 0.999)).
      eps: ε ≥ 0 (torch default 1e-8).
      momentum_decay: ψ ≥ 0 (torch default 4e-3).

    Returns:
      An ``optax.GradientTransformation``.
    """
    where = "scale_by_nadam"
    check_options(where, {"betas": betas, "eps": eps, "momentum_decay": momentum_decay})
    beta1, beta2 = betas

    def init_fn(params: Any) -> ScaleByNadamState:
        _tree.require_real(where, params)
        return ScaleByNadamState(
            step=jnp.zeros([], jnp.int32),
            mu_product=jnp.ones([], _tree.scalar_dtype(params)),
            mu=_tree.zeros_like_params(params),
            nu=_tree.zeros_like_params(params),
        )

    def update_fn(updates: Any, state: ScaleByNadamState, params: Any = None):
        del params
        _tree.check_same_shapes(where, "state.mu", state.mu, "updates", updates)
        count = optax.safe_increment(state.step)
        dtype = state.mu_product.dtype
        t = count.astype(dtype)
        mu_t = beta1 * (1 - 0.5 * _tree.power(0.96, t * momentum_decay, dtype))
        mu_next = beta1 * (1 - 0.5 * _tree.power(0.96, (t + 1) * momentum_decay, dtype))
        mu_product = (state.mu_product * mu_t).astype(dtype)
        grad_weight = (1 - mu_t) / (1 - mu_product)
        momentum_weight = mu_next / (1 - mu_product * mu_next)
        scalars = _tree.per_dtype(lambda leaf_dtype: (
            1 / _tree.bias_correction(beta2, count, leaf_dtype),
            grad_weight.astype(leaf_dtype),
            momentum_weight.astype(leaf_dtype),
        ))

        def step(g: jax.Array, m: jax.Array, v: jax.Array) -> tuple:
            leaf_dtype = _tree.compute_dtype(g.dtype)
            inv_bc2, g_weight, m_weight = scalars(leaf_dtype)
            g_c = _tree.cast(g, leaf_dtype)
            m_new = _tree.lerp(_tree.cast(m, leaf_dtype), g_c, 1 - beta1)
            v_new = beta2 * _tree.cast(v, leaf_dtype) + (1 - beta2) * (g_c * g_c)
            denom = jnp.sqrt(v_new * inv_bc2) + eps
            # One division: with two, XLA keeps the decayed gradient as a temporary.
            u = (g_weight * g_c + m_weight * m_new) / denom
            return _tree.cast(u, g.dtype), _tree.cast(m_new, m.dtype), _tree.cast(v_new, v.dtype)

        updates, mu, nu = _tree.map_float(step, updates, state.mu, state.nu)
        return updates, ScaleByNadamState(count, mu_product, mu, nu)

    tx = optax.GradientTransformation(init_fn, update_fn)
    hyperparams = (("β", (beta1, beta2)), ("ε", eps), ("ψ", momentum_decay))
    return _recipe.label(tx, _recipe.Step("nadam", _recipe.PRECONDITIONER, hyperparams))


register_preconditioner(
    "nadam", scale_by_nadam, check=check_options, adaptive=True,
    second_moment=adam.second_moment, torch="NAdam", alias="nadam",
    summary="NAdam (Dozat 2016) with torch's momentum-decay schedule ψ",
)
