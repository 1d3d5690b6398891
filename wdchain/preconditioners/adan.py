"""Adan (Xie et al. 2022): adaptive Nesterov momentum estimated from gradient
differences."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from wdchain import _recipe, _tree, _validate
from wdchain.registry import register_preconditioner
from wdchain.types import Options


def check_options(where: str, options: Options) -> None:
    """Adan's options: three ``betas`` in [0, 1), ``eps`` ≥ 0, ``diff_weight`` ≥ 0 or
    None."""
    _validate.check_betas3(where, options["betas"])
    _validate.check_range(where, "eps", options["eps"])
    if options["diff_weight"] is not None:
        _validate.check_range(where, "diff_weight", options["diff_weight"])


class ScaleByAdanState(NamedTuple):
    # int32 scalar: updates so far; named step, not count: the optimizer's one
    # ``count`` is its learning-rate step's
    step: jax.Array
    m: Any  # EMA of g (β₁), one per leaf
    v: Any  # EMA of the gradient differences g_t − g_{t−1} (β₂), one per leaf
    n: Any  # EMA of (g_t + κ(g_t − g_{t−1}))² (β₃), one per leaf
    prev_grad: Any  # g_{t−1}, one per leaf


def scale_by_adan(
    betas: tuple[Any, Any, Any] = (0.98, 0.92, 0.99),
    eps: Any = 1e-8,
    diff_weight: Any = None,
) -> optax.GradientTransformation:
    r"""Adan's scaling, as the authors' code (``sail-sg/Adan``) computes it.

    With Δ_t = g_t − g_{t−1} (0 at the first update) and κ = ``diff_weight``:

    .. math::

        m_t \leftarrow \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
        v_t \leftarrow \beta_2 v_{t-1} + (1-\beta_2) \Delta_t, \qquad
        n_t \leftarrow \beta_3 n_{t-1} + (1-\beta_3) (g_t + \kappa\Delta_t)^2

    .. math::

        u_t = \frac{m_t/(1-\beta_1^t) + \kappa\, v_t/(1-\beta_2^t)}
                   {\sqrt{n_t/(1-\beta_3^t)} + \epsilon}

    with (β₁, β₂, β₃) = ``betas`` as decay rates (the code's convention; the paper's
    β's are one minus these) and ε = ``eps``. κ defaults to β₂, which is the paper's
    1 − β₂ in its own convention and the authors' code. ``optax.scale_by_adan``
    weights Δ by 1 − β₂ instead (0.08 for 0.92): ``diff_weight=1 - betas[1]``
    reproduces it. The authors' ``max_grad_norm`` is a separate transform
    (``optax.clip_by_global_norm`` before this one).

    Args:
      betas: (β₁, β₂, β₃), each in [0, 1) (default (0.98, 0.92, 0.99), the authors').
      eps: ε ≥ 0 (default 1e-8).
      diff_weight: κ ≥ 0, or None for β₂ (default).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_adan(eps=0.0)
      >>> tx.update(jnp.array([2.0, -0.5]), tx.init(jnp.zeros(2)))[0]  # first: sign
      Array([ 1., -1.], dtype=float32)
    """
    where = "scale_by_adan"
    check_options(where, {"betas": betas, "eps": eps, "diff_weight": diff_weight})
    beta1, beta2, beta3 = betas
    kappa = beta2 if diff_weight is None else diff_weight

    def init_fn(params: Any) -> ScaleByAdanState:
        _tree.require_real(where, params)
        return ScaleByAdanState(
            step=jnp.zeros([], jnp.int32),
            m=_tree.zeros_like_params(params),
            v=_tree.zeros_like_params(params),
            n=_tree.zeros_like_params(params),
            prev_grad=_tree.zeros_like_params(params),
        )

    def update_fn(updates: Any, state: ScaleByAdanState, params: Any = None):
        del params
        _tree.check_same_shapes(where, "state.m", state.m, "updates", updates)
        count = optax.safe_increment(state.step)
        first = state.step == 0
        per_dtype = _tree.per_dtype(lambda dtype: (
            1 / _tree.bias_correction(beta1, count, dtype),
            1 / _tree.bias_correction(beta2, count, dtype),
            jax.lax.rsqrt(_tree.bias_correction(beta3, count, dtype)),
        ))

        def step(g: jax.Array, m: jax.Array, v: jax.Array, n: jax.Array,
                 prev: jax.Array) -> tuple:
            dtype = _tree.compute_dtype(g.dtype)
            inv_bc1, inv_bc2, inv_sqrt_bc3 = per_dtype(dtype)
            g_c, m_c, v_c, n_c = (_tree.cast(x, dtype) for x in (g, m, v, n))
            diff = jnp.where(first, 0, g_c - _tree.cast(prev, dtype))
            m_new = m_c + (1 - beta1) * (g_c - m_c)
            v_new = v_c + (1 - beta2) * (diff - v_c)
            s = g_c + kappa * diff
            n_new = beta3 * n_c + (1 - beta3) * (s * s)
            u = (m_new * inv_bc1 + kappa * v_new * inv_bc2) / (
                jnp.sqrt(n_new) * inv_sqrt_bc3 + eps)
            return (_tree.cast(u, g.dtype), _tree.cast(m_new, m.dtype),
                    _tree.cast(v_new, v.dtype), _tree.cast(n_new, n.dtype),
                    _tree.cast(g_c, prev.dtype))

        updates, m, v, n, prev = _tree.map_float(
            step, updates, state.m, state.v, state.n, state.prev_grad)
        return updates, ScaleByAdanState(step=count, m=m, v=v, n=n, prev_grad=prev)

    tx = optax.GradientTransformation(init_fn, update_fn)
    hyperparams: tuple[tuple[str, Any], ...] = (("β", (beta1, beta2, beta3)), ("ε", eps))
    if diff_weight is not None:
        hyperparams += (("κ", diff_weight),)
    return _recipe.label(tx, _recipe.Step("adan", _recipe.PRECONDITIONER, hyperparams))


def second_moment(states: tuple[Any, ...], options: Options) -> Any:
    """n̂_t = n_t / (1 − β₃^t), the statistic whose root divides Adan's step."""
    state = states[0]
    beta3 = options["betas"][2]
    return jax.tree.map(
        lambda x: x / _tree.bias_correction(beta3, state.step, _tree.compute_dtype(x.dtype))
        if _tree.is_float(x) else x, state.n)


register_preconditioner(
    "adan", scale_by_adan, check=check_options, adaptive=True, second_moment=second_moment,
    summary="Adan (Xie et al. 2022): adaptive Nesterov momentum from gradient "
            "differences, as the authors' code",
)
