"""Lion's scaling (Chen et al. 2023): the sign of an interpolated momentum."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from wdchain import _recipe, _tree, _validate
from wdchain.registry import register_preconditioner
from wdchain.types import Options


def check_options(where: str, options: Options) -> None:
    """Lion's options: ``betas`` in [0, 1), ``mu_dtype`` a float dtype or None."""
    _validate.check_betas(where, options["betas"])
    _validate.check_float_dtype(where, "mu_dtype", options["mu_dtype"])


class ScaleByLionState(NamedTuple):
    mu: Any  # momentum m, one per leaf


def scale_by_lion(
    betas: tuple[Any, Any] = (0.9, 0.99), *, mu_dtype: Any = None
) -> optax.GradientTransformation:
    r"""Lion's update direction (Chen et al. 2023, Algorithm 2).

    .. math::

        c_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad u_t = \operatorname{sign}(c_t),
        \qquad m_t \leftarrow \beta_2 m_{t-1} + (1-\beta_2) g_t

    with (β₁, β₂) = ``betas`` and m₀ = 0; sign(0) = 0. Every entry of the update is
    ±1 (or 0), so the learning rate sets the step's size alone. The same as
    ``optax.scale_by_lion``.

    Args:
      betas: (β₁, β₂), each in [0, 1) (the paper's default (0.9, 0.99)).
      mu_dtype: dtype to keep m in (keyword only; default the params' dtype).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_lion()
      >>> tx.update(jnp.array([0.5, -2.0, 0.0]), tx.init(jnp.zeros(3)))[0]
      Array([ 1., -1.,  0.], dtype=float32)
    """
    where = "scale_by_lion"
    check_options(where, {"betas": betas, "mu_dtype": mu_dtype})
    beta1, beta2 = betas

    def init_fn(params: Any) -> ScaleByLionState:
        _tree.require_real(where, params)
        return ScaleByLionState(_tree.zeros_like_params(params, mu_dtype))

    def update_fn(updates: Any, state: ScaleByLionState, params: Any = None):
        del params
        _tree.check_same_shapes(where, "state.mu", state.mu, "updates", updates)

        def step(g: jax.Array, m: jax.Array) -> tuple[jax.Array, jax.Array]:
            dtype = _tree.compute_dtype(g.dtype)
            g_c, m_c = _tree.cast(g, dtype), _tree.cast(m, dtype)
            u = jnp.sign(beta1 * m_c + (1 - beta1) * g_c)
            m_new = beta2 * m_c + (1 - beta2) * g_c
            return _tree.cast(u, g.dtype), _tree.cast(m_new, m.dtype)

        updates, mu = _tree.map_float(step, updates, state.mu)
        return updates, ScaleByLionState(mu)

    tx = optax.GradientTransformation(init_fn, update_fn)
    return _recipe.label(
        tx, _recipe.Step("lion", _recipe.PRECONDITIONER, (("β", (beta1, beta2)),))
    )


register_preconditioner(
    "lion", scale_by_lion, check=check_options, lr_span=(-4.5, -2.0),
    summary="Lion (Chen et al. 2023): the sign of an interpolated momentum",
)
