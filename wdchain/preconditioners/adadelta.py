"""Adadelta's scaling (Zeiler 2012) with torch's arithmetic."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from wdchain import _recipe, _tree, _validate
from wdchain.registry import register_preconditioner
from wdchain.types import Options


def check_options(where: str, options: Options) -> None:
    """Adadelta's options: ρ in [0, 1], ε ≥ 0."""
    _validate.check_range(where, "rho", options["rho"], high=1.0)
    _validate.check_range(where, "eps", options["eps"])


class ScaleByAdadeltaState(NamedTuple):
    square_avg: Any  # v: running mean of g², one per leaf
    acc_delta: Any  # Δ: running mean of u², one per leaf


def scale_by_adadelta(rho: Any = 0.9, eps: Any = 1e-6) -> optax.GradientTransformation:
    r"""Adadelta's scaling, as torch computes it.

    .. math::

        v_t \leftarrow \rho v_{t-1} + (1-\rho) g_t^2, \qquad
        u_t = \frac{\sqrt{\Delta_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}}\, g_t, \qquad
        \Delta_t \leftarrow \rho \Delta_{t-1} + (1-\rho) u_t^2

    with ρ = ``rho`` and ε = ``eps`` *inside* both square roots, zero-initialised
    averages, and no learning rate (torch multiplies by ``lr``, 1.0 by default, after
    this). ``optax.scale_by_adadelta`` computes the same.

    Args:
      rho: ρ in [0, 1] (torch default 0.9).
      eps: ε ≥ 0 (torch default 1e-6).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_adadelta(rho=0.0, eps=1.0)
      >>> tx.update(jnp.array([0.0]), tx.init(jnp.zeros(1)))[0]  # √1/√1 · 0
      Array([0.], dtype=float32)
    """
    where = "scale_by_adadelta"
    check_options(where, {"rho": rho, "eps": eps})

    def init_fn(params: Any) -> ScaleByAdadeltaState:
        _tree.require_real(where, params)
        return ScaleByAdadeltaState(_tree.zeros_like_params(params),
                                    _tree.zeros_like_params(params))

    def update_fn(updates: Any, state: ScaleByAdadeltaState, params: Any = None):
        del params
        _tree.check_same_shapes(where, "state.square_avg", state.square_avg, "updates", updates)

        def step(g: jax.Array, v: jax.Array, delta: jax.Array) -> tuple:
            dtype = _tree.compute_dtype(g.dtype)
            g_c = _tree.cast(g, dtype)
            v_new = rho * _tree.cast(v, dtype) + (1 - rho) * (g_c * g_c)
            d_c = _tree.cast(delta, dtype)
            u = jnp.sqrt(d_c + eps) / jnp.sqrt(v_new + eps) * g_c
            d_new = rho * d_c + (1 - rho) * (u * u)
            return (_tree.cast(u, g.dtype), _tree.cast(v_new, v.dtype),
                    _tree.cast(d_new, delta.dtype))

        updates, square_avg, acc_delta = _tree.map_float(
            step, updates, state.square_avg, state.acc_delta
        )
        return updates, ScaleByAdadeltaState(square_avg, acc_delta)

    tx = optax.GradientTransformation(init_fn, update_fn)
    return _recipe.label(
        tx, _recipe.Step("adadelta", _recipe.PRECONDITIONER, (("ρ", rho), ("ε", eps)))
    )


register_preconditioner(
    "adadelta", scale_by_adadelta, check=check_options, adaptive=True, lr_span=(-1.5, 1.0),
    summary="Adadelta (Zeiler 2012), torch's arithmetic", torch="Adadelta", alias="adadelta",
)
