"""AdEMAMix (Pagliardini et al. 2024): Adam's step plus a slow momentum, α·m₂."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from wdchain import _recipe, _tree, _validate
from wdchain.preconditioners import adam
from wdchain.registry import register_preconditioner
from wdchain.types import Options


class ScaleByAdemamixState(NamedTuple):
    # int32 scalar: updates so far; named step, not count: the optimizer's one
    # ``count`` is its learning-rate step's
    step: jax.Array
    m1: Any  # fast EMA of g (β₁), one per leaf
    m2: Any  # slow EMA of g (β₃), one per leaf
    nu: Any  # second moment ν (β₂), one per leaf


def check_options(where: str, options: Options) -> None:
    """AdEMAMix's options: three ``betas`` in [0, 1), ``alpha`` and ``eps`` ≥ 0, the
    warmups None or a whole number of updates > 0."""
    _validate.check_betas3(where, options["betas"])
    _validate.check_range(where, "alpha", options["alpha"])
    _validate.check_range(where, "eps", options["eps"])
    _check_warmup(where, "alpha_warmup", options["alpha_warmup"])
    _check_warmup(where, "beta3_warmup", options["beta3_warmup"])


def _check_warmup(where: str, name: str, value: Any) -> None:
    if isinstance(value, (jax.Array, np.ndarray)) and np.ndim(value) == 0:
        _validate.check_range(where, name, value, low=1.0)  # inject_hyperparams' array
        return
    if value is not None and not (_validate.is_whole_number(value) and value > 0):
        raise ValueError(
            f"{where}: {name} must be None (no warmup) or a whole number of steps > 0, "
            f"got {value!r}"
        )


def _warmed_alpha(alpha: Any, warmup: int | None, t: jax.Array) -> Any:
    """α_t = α·min(t/T_α, 1): the paper's linear warmup from 0."""
    return alpha if warmup is None else alpha * jnp.minimum(t / warmup, 1.0)


def _warmed_beta3(beta1: Any, beta3: Any, warmup: int | None, t: jax.Array) -> Any:
    """β₃(t) of the paper: the half-life 1/ln β interpolated linearly from β₁ to β₃.

    ln β₃(t) = 1 / ((1 − a)/ln β₁ + a/ln β₃), a = min(t/T_β₃, 1).
    """
    if warmup is None:
        return beta3
    a = jnp.minimum(t / warmup, 1.0)
    inverse_log = (1 - a) / _tree.log_decay(beta1, t.dtype) + a / _tree.log_decay(beta3, t.dtype)
    return jnp.where(a >= 1, jnp.asarray(beta3, t.dtype), jnp.exp(1 / inverse_log))


def scale_by_ademamix(
    betas: tuple[Any, Any, Any] = (0.9, 0.999, 0.9999),
    alpha: Any = 5.0,
    eps: Any = 1e-8,
    alpha_warmup: int | None = None,
    beta3_warmup: int | None = None,
) -> optax.GradientTransformation:
    r"""AdEMAMix's scaling: Adam's step plus α times a slow, uncorrected momentum.

    .. math::

        m_{1,t} \leftarrow \beta_1 m_{1,t-1} + (1-\beta_1) g_t, \qquad
        m_{2,t} \leftarrow \beta_3(t)\, m_{2,t-1} + (1-\beta_3(t))\, g_t, \qquad
        \nu_t \leftarrow \beta_2 \nu_{t-1} + (1-\beta_2) g_t^2

    .. math::

        u_t = \frac{m_{1,t}/(1-\beta_1^t) + \alpha(t)\, m_{2,t}}
                   {\sqrt{\nu_t/(1-\beta_2^t)} + \epsilon}

    with (β₁, β₂, β₃) = ``betas``, α = ``alpha`` and ε = ``eps``. The slow EMA m₂ is
    not bias-corrected, on purpose (it fills slowly). The paper's warmups (Algorithm 1,
    for large β₃): α(t) = α·min(t/T_α, 1) and β₃(t) with a half-life 1/ln β that
    grows linearly from β₁'s to β₃'s, ln β₃(t) = 1/((1 − a)/ln β₁ + a/ln β₃),
    a = min(t/T_β₃, 1), with t the update's number (1 at the first);
    T_α = ``alpha_warmup``, T_β₃ = ``beta3_warmup``, None for none (the paper sets
    both to the run's length).

    Args:
      betas: (β₁, β₂, β₃), each in [0, 1) (default (0.9, 0.999, 0.9999), the paper's).
      alpha: α ≥ 0, the weight of the slow EMA (default 5, as
        ``optax.contrib.ademamix``; the paper's range is 4 to 10, the authors' torch
        code defaults to 2).
      eps: ε ≥ 0 (default 1e-8).
      alpha_warmup: T_α, a whole number of updates > 0, or None (default).
      beta3_warmup: T_β₃, a whole number of updates > 0, or None (default).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_ademamix(betas=(0.5, 0.5, 0.5), alpha=2.0, eps=0.0)
      >>> tx.update(jnp.array([3.0]), tx.init(jnp.zeros(1)))[0]  # (1 + 2·0.5·3/3)
      Array([2.], dtype=float32)
    """
    where = "scale_by_ademamix"
    check_options(where, {"betas": betas, "alpha": alpha, "eps": eps,
                          "alpha_warmup": alpha_warmup, "beta3_warmup": beta3_warmup})
    beta1, beta2, beta3 = betas

    def init_fn(params: Any) -> ScaleByAdemamixState:
        _tree.require_real(where, params)
        return ScaleByAdemamixState(
            step=jnp.zeros([], jnp.int32),
            m1=_tree.zeros_like_params(params),
            m2=_tree.zeros_like_params(params),
            nu=_tree.zeros_like_params(params),
        )

    def update_fn(updates: Any, state: ScaleByAdemamixState, params: Any = None):
        del params
        _tree.check_same_shapes(where, "state.m1", state.m1, "updates", updates)
        count = optax.safe_increment(state.step)

        def scalars(dtype: Any) -> tuple[Any, ...]:
            t = count.astype(dtype)
            return (
                1 / _tree.bias_correction(beta1, count, dtype),
                jax.lax.rsqrt(_tree.bias_correction(beta2, count, dtype)),
                _warmed_alpha(alpha, alpha_warmup, t),
                _warmed_beta3(beta1, beta3, beta3_warmup, t),
            )

        per_dtype = _tree.per_dtype(scalars)

        def step(g: jax.Array, m1: jax.Array, m2: jax.Array, v: jax.Array) -> tuple:
            dtype = _tree.compute_dtype(g.dtype)
            inv_bc1, inv_sqrt_bc2, alpha_t, beta3_t = per_dtype(dtype)
            g_c = _tree.cast(g, dtype)
            m1_new = _tree.lerp(_tree.cast(m1, dtype), g_c, 1 - beta1)
            m2_new = _tree.lerp(_tree.cast(m2, dtype), g_c, 1 - beta3_t)
            v_new = beta2 * _tree.cast(v, dtype) + (1 - beta2) * (g_c * g_c)
            u = (m1_new * inv_bc1 + alpha_t * m2_new) / (jnp.sqrt(v_new) * inv_sqrt_bc2 + eps)
            return (_tree.cast(u, g.dtype), _tree.cast(m1_new, m1.dtype),
                    _tree.cast(m2_new, m2.dtype), _tree.cast(v_new, v.dtype))

        updates, m1, m2, nu = _tree.map_float(step, updates, state.m1, state.m2, state.nu)
        return updates, ScaleByAdemamixState(step=count, m1=m1, m2=m2, nu=nu)

    tx = optax.GradientTransformation(init_fn, update_fn)
    hyperparams: tuple[tuple[str, Any], ...] = (
        ("β", (beta1, beta2, beta3)), ("α", alpha), ("ε", eps))
    if alpha_warmup is not None:
        hyperparams += (("T_α", alpha_warmup),)
    if beta3_warmup is not None:
        hyperparams += (("T_β₃", beta3_warmup),)
    return _recipe.label(tx, _recipe.Step("ademamix", _recipe.PRECONDITIONER, hyperparams))


register_preconditioner(
    "ademamix", scale_by_ademamix, check=check_options, adaptive=True,
    second_moment=adam.second_moment,
    summary="AdEMAMix (Pagliardini et al. 2024): Adam's step plus α times a slow EMA "
            "of the gradients, with the paper's α and β₃ warmups",
)
