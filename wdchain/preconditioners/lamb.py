"""LAMB's layer-wise trust ratio (You et al. 2020)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from wdchain import _recipe, _tree, _validate
from wdchain.preconditioners import adam
from wdchain.registry import register_preconditioner


def scale_by_trust_ratio(trust_coefficient: Any = 1.0) -> optax.GradientTransformation:
    r"""Scales each leaf's update by the ratio of the parameter's norm to the update's.

    .. math::

        u \leftarrow c\,\frac{\lVert\theta\rVert}{\lVert u\rVert}\, u
        \quad\text{per leaf, with ratio 1 where either norm is 0}

    (You et al. 2020, φ the identity; c = ``trust_coefficient``, 1 in LAMB, LARS's
    η (e.g. 1e-3) otherwise). Placed after ``decoupled_weight_decay`` the
    update is :math:`r + \lambda\theta` and the decay sits *inside* the ratio, as in
    the paper and ``optax.lamb``. Norms are taken in at least float32.

    Args:
      trust_coefficient: c ≥ 0 (default 1, LAMB's).

    Returns:
      An ``optax.GradientTransformation`` whose ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_trust_ratio()
      >>> params = jnp.array([3.0, 4.0])
      >>> tx.update(jnp.array([0.0, 2.0]), tx.init(params), params)[0]  # ‖θ‖/‖u‖ = 5/2
      Array([0., 5.], dtype=float32)
    """
    where = "scale_by_trust_ratio"
    _validate.check_range(where, "trust_coefficient", trust_coefficient)

    def init_fn(params: Any) -> optax.EmptyState:
        _tree.require_real(where, params)
        return optax.EmptyState()

    def update_fn(updates: Any, state: optax.EmptyState, params: Any = None):
        _tree.require_params(where, params)
        _tree.check_same_shapes(where, "params", params, "updates", updates)

        def scale(u: jax.Array, p: jax.Array) -> jax.Array:
            if not _tree.is_float(u):
                return u
            dtype = _tree.compute_dtype(u.dtype)
            u_c, p_c = _tree.cast(u, dtype), _tree.cast(p, dtype)
            p_norm, u_norm = (jnp.sqrt(jnp.sum(jnp.square(t))) for t in (p_c, u_c))  # no reshape: shards
            zero = (p_norm == 0) | (u_norm == 0)
            ratio = jnp.where(zero, 1, p_norm / jnp.where(zero, 1, u_norm))
            if not _validate.is_static_zero(trust_coefficient - 1):
                ratio = trust_coefficient * ratio
            return _tree.cast(ratio * u_c, u.dtype)

        return jax.tree.map(scale, updates, params), state

    tx = optax.GradientTransformation(init_fn, update_fn)
    hyperparams = () if _validate.is_static_zero(trust_coefficient - 1) else (
        ("c", trust_coefficient),)
    return _recipe.label(tx, _recipe.Step("trust_ratio", _recipe.PRECONDITIONER, hyperparams))


def _slot(betas: tuple[Any, Any] = (0.9, 0.999), eps: Any = 1e-6) -> optax.GradientTransformation:
    """LAMB's direction is Adam's (ε = 1e-6 as the paper); the ratio sits ``inside``."""
    return adam.scale_by_adam(betas, eps)


register_preconditioner(
    "lamb", _slot, check=adam.check_options, adaptive=True,
    second_moment=adam.second_moment, inside=lambda o: scale_by_trust_ratio(),
    lr_span=(-3.5, -0.5),
    summary="LAMB (You et al. 2020): Adam's step scaled per leaf by ‖θ‖/‖r + λθ‖; "
            "decoupled decay inside the ratio",
)
