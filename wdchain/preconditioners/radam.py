"""RAdam (Liu et al. 2020) with torch's rectification and arithmetic."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from wdchain import _recipe, _tree, _validate
from wdchain.preconditioners import adam
from wdchain.registry import register_preconditioner


def _rho_inf(beta2: Any, dtype: Any) -> jax.Array:
    """ρ∞ = 2/(1 − β₂) − 1, in double precision when β₂ is a number: in float32,
    1 − β₂ loses four digits and moves ρ_t by 0.02 (ρ_5 = 5.02 for β₂ = 0.999, so the
    ρ_t > 5 test flips a step early)."""
    number = _validate.concrete_number(beta2)
    if number is None:
        return 2 / (1 - jnp.asarray(beta2, dtype)) - 1
    return jnp.asarray(2 / (1 - number) - 1, dtype)


def _rho_t(beta2: Any, count: jax.Array, dtype: Any) -> jax.Array:
    """ρ_t = ρ∞ − 2tβ₂ᵗ/(1 − β₂ᵗ), the length of the approximated SMA.

    In float64, torch's expression. In lower precision, for a concrete β₂, the two
    terms (each ≈ 2/(1 − β₂)) would cancel, so with L = −log β₂ and x = tL it is
    ``c + (2/L)·(1 − x/expm1(x))``, where ``c = 2/(1 − β₂) − 2/L − 1`` is formed in
    double precision: float32's error in ρ_t drops from 4e-4 to 1e-7 relative.
    """
    number = _validate.concrete_number(beta2)
    t = count.astype(dtype)
    if jnp.dtype(dtype) == jnp.float64 or number is None or number == 0.0:
        decayed = _tree.power(beta2, count, dtype) / _tree.bias_correction(beta2, count, dtype)
        return _rho_inf(beta2, dtype) - 2 * t * decayed
    log_rate = -math.log(number)
    offset = 2 / (1 - number) - 2 / log_rate - 1
    x = t * jnp.asarray(log_rate, dtype)
    x2 = x * x  # 1 − x/expm1(x) = x/2 − Σ B₂ₖ x²ᵏ/(2k)!, to x¹⁰ (error < 6e-10 for x < 1)
    series = x / 2 - x2 * (1 / 12 - x2 * (1 / 720 - x2 * (1 / 30240 - x2 * (
        1 / 1209600 - x2 / 47900160))))
    h = jnp.where(x < 1, series, 1 - x / jnp.expm1(x))
    return jnp.asarray(offset, dtype) + jnp.asarray(2 / log_rate, dtype) * h


class ScaleByRadamState(NamedTuple):
    # int32 scalar: updates so far (t − 1); named step, not count: the optimizer's one
    # ``count`` is its learning-rate step's (see ScaleByLearningRateState)
    step: jax.Array
    mu: Any  # first moment m, one per leaf
    nu: Any  # second moment v, one per leaf


def scale_by_radam(
    betas: tuple[Any, Any] = (0.9, 0.999), eps: Any = 1e-8
) -> optax.GradientTransformation:
    r"""RAdam's rectified scaling, as torch computes it.

    .. math::

        \rho_\infty = \frac{2}{1-\beta_2} - 1, \quad
        \rho_t = \rho_\infty - \frac{2t\beta_2^t}{1-\beta_2^t}, \quad
        r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}
                         {(\rho_\infty-4)(\rho_\infty-2)\rho_t}}

    .. math::

        u_t = \hat m_t \cdot \begin{cases}
            r_t \sqrt{1-\beta_2^t} / (\sqrt{v_t} + \epsilon) & \rho_t > 5 \\
            1 & \text{otherwise} \end{cases}

    with :math:`\hat m_t = m_t/(1-\beta_1^t)`. As in torch, ε is added to the
    *uncorrected* :math:`\sqrt{v_t}` and the test is strict (ρ_t > 5); optax adds ε
    to the corrected root and tests ρ_t ≥ 5. The unselected branch is never a
    square root of a negative number.

    Args:
      betas: (β₁, β₂), each in [0, 1) (torch default (0.9, 0.999)).
      eps: ε ≥ 0 (torch default 1e-8).

    Returns:
      An ``optax.GradientTransformation``.
    """
    where = "scale_by_radam"
    adam.check_options(where, {"betas": betas, "eps": eps})
    beta1, beta2 = betas

    def init_fn(params: Any) -> ScaleByRadamState:
        _tree.require_real(where, params)
        zeros = _tree.zeros_like_params  # one buffer per slot, so the state can be donated
        return ScaleByRadamState(jnp.zeros([], jnp.int32), zeros(params), zeros(params))

    def update_fn(updates: Any, state: ScaleByRadamState, params: Any = None):
        del params
        _tree.check_same_shapes(where, "state.mu", state.mu, "updates", updates)
        count = optax.safe_increment(state.step)

        def rectification(dtype: Any) -> tuple[jax.Array, ...]:
            bc1 = _tree.bias_correction(beta1, count, dtype)
            bc2 = _tree.bias_correction(beta2, count, dtype)
            rho_inf = _rho_inf(beta2, dtype)
            rho_t = _rho_t(beta2, count, dtype)
            # r_t² as three bounded factors: the product (ρ∞−4)(ρ∞−2)ρ_t overflows
            # float32 for β₂ within ~1e-13 of 1 once XLA folds its constants.
            ratio = ((rho_t - 4) / (rho_inf - 4)) * ((rho_t - 2) / (rho_inf - 2)) * (
                rho_inf / rho_t)
            # w = r_t·√(1−β₂ᵗ) where ρ_t > 5, else 0; held at or above the smallest normal
            # number where ρ_t > 5, so w > 0 exactly there. One scalar ending in a square
            # root: XLA computes it once, where it copies cheap scalar arithmetic (ρ_t's
            # ~30 operations, a ρ_t > 5 test) into every leaf's kernel.
            tiny = jnp.finfo(dtype).tiny
            return 1 / bc1, jnp.sqrt(jnp.where(rho_t > 5, jnp.maximum(ratio * bc2, tiny), 0.0))

        scalars = _tree.per_dtype(rectification)

        def step(g: jax.Array, m: jax.Array, v: jax.Array) -> tuple:
            dtype = _tree.compute_dtype(g.dtype)
            inv_bc1, weight = scalars(dtype)
            g_c = _tree.cast(g, dtype)
            m_new = _tree.lerp(_tree.cast(m, dtype), g_c, 1 - beta1)
            v_new = beta2 * _tree.cast(v, dtype) + (1 - beta2) * (g_c * g_c)
            m_hat = m_new * inv_bc1
            u = jnp.where(weight > 0, m_hat * (weight / (jnp.sqrt(v_new) + eps)), m_hat)
            return _tree.cast(u, g.dtype), _tree.cast(m_new, m.dtype), _tree.cast(v_new, v.dtype)

        updates, mu, nu = _tree.map_float(step, updates, state.mu, state.nu)
        return updates, ScaleByRadamState(count, mu, nu)

    tx = optax.GradientTransformation(init_fn, update_fn)
    hyperparams = (("β", (beta1, beta2)), ("ε", eps))
    return _recipe.label(tx, _recipe.Step("radam", _recipe.PRECONDITIONER, hyperparams))


register_preconditioner(
    "radam", scale_by_radam, check=adam.check_options, adaptive=True,
    second_moment=adam.second_moment, torch="RAdam", alias="radam",
    summary="RAdam (Liu et al. 2020), torch's rectification",
)
