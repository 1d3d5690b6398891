"""RMSprop (Hinton 2012) with torch's arithmetic."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from wdchain import _recipe, _tree, _validate
from wdchain.preconditioners.momentum import scale_by_momentum
from wdchain.registry import register_preconditioner
from wdchain.types import Options


def check_options(where: str, options: Options) -> None:
    """RMSprop's options: ``alpha`` in [0, 1], ``eps`` and ``momentum`` ≥ 0, ``centered``."""
    _validate.check_range(where, "alpha", options["alpha"], high=1.0)
    _validate.check_range(where, "eps", options["eps"])
    if "momentum" in options:
        _validate.check_range(where, "momentum", options["momentum"])
    _validate.check_flag(where, "centered", options["centered"])


class ScaleByRmsState(NamedTuple):
    nu: Any  # running mean of g², one per leaf
    mu: Any  # running mean of g (centered only; None otherwise)


def scale_by_rms(
    alpha: Any = 0.99, eps: Any = 1e-8, centered: bool = False
) -> optax.GradientTransformation:
    r"""RMSprop's scaling, as torch computes it.

    .. math::

        v_t \leftarrow \alpha v_{t-1} + (1-\alpha) g_t^2, \qquad
        \bar g_t \leftarrow \alpha \bar g_{t-1} + (1-\alpha) g_t, \qquad
        u_t = \frac{g_t}{\sqrt{v_t - [\text{centered}]\,\bar g_t^2} + \epsilon}

    with α = ``alpha``, ε = ``eps`` *outside* the square root, no bias correction and
    zero-initialised averages (torch's RMSprop). ``optax.scale_by_rms`` matches with
    ``decay=alpha, eps_in_sqrt=False``; its defaults (decay 0.9, ε inside) do not.

    Args:
      alpha: α in [0, 1] (torch default 0.99; torch also accepts α > 1, which makes
        the average of squares negative; wdchain refuses it).
      eps: ε ≥ 0 (torch default 1e-8).
      centered: subtract the squared running mean of g (the variance estimate).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_rms(alpha=0.75, eps=0.0)
      >>> tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))[0]  # 2 / sqrt(0.25·4)
      Array([2.], dtype=float32)
    """
    where = "scale_by_rms"
    check_options(where, {"alpha": alpha, "eps": eps, "centered": centered})

    def init_fn(params: Any) -> ScaleByRmsState:
        _tree.require_real(where, params)
        mean = _tree.zeros_like_params(params) if centered else None
        return ScaleByRmsState(nu=_tree.zeros_like_params(params), mu=mean)

    def update_fn(updates: Any, state: ScaleByRmsState, params: Any = None):
        del params
        _tree.check_same_shapes(where, "state.nu", state.nu, "updates", updates)

        def step(g: jax.Array, v: jax.Array, *mean: jax.Array) -> tuple:
            dtype = _tree.compute_dtype(g.dtype)
            g_c = _tree.cast(g, dtype)
            v_new = alpha * _tree.cast(v, dtype) + (1 - alpha) * (g_c * g_c)
            if centered:
                g_bar = _tree.lerp(_tree.cast(mean[0], dtype), g_c, 1 - alpha)
                denom = jnp.sqrt(v_new - g_bar * g_bar) + eps
                new_mean: tuple[jax.Array, ...] = (_tree.cast(g_bar, mean[0].dtype),)
            else:
                denom = jnp.sqrt(v_new) + eps
                new_mean = ()
            return (_tree.cast(g_c / denom, g.dtype), _tree.cast(v_new, v.dtype), *new_mean)

        if centered:
            updates, nu, mu = _tree.map_float(step, updates, state.nu, state.mu)
        else:
            (updates, nu), mu = _tree.map_float(step, updates, state.nu), None
        return updates, ScaleByRmsState(nu=nu, mu=mu)

    tx = optax.GradientTransformation(init_fn, update_fn)
    hyperparams: tuple[tuple[str, Any], ...] = (("α", alpha), ("ε", eps))
    if centered:
        hyperparams += (("centered", True),)
    return _recipe.label(tx, _recipe.Step("rmsprop", _recipe.PRECONDITIONER, hyperparams))


def _slot(
    alpha: Any = 0.99, eps: Any = 1e-8, centered: bool = False, momentum: Any = 0.0
) -> tuple[optax.GradientTransformation, ...]:
    """torch's RMSprop: the scaling, then the momentum buffer (none when μ is a static 0)."""
    has_momentum = not _validate.is_static_zero(momentum)
    return (scale_by_rms(alpha, eps, centered),
            scale_by_momentum(momentum) if has_momentum else _recipe.nothing())


def _second_moment(states: tuple[Any, ...], options: Options) -> Any:
    del options
    return states[0].nu  # torch's RMSprop has no bias correction


register_preconditioner(
    "rmsprop", _slot, check=check_options, adaptive=True, second_moment=_second_moment,
    summary="RMSprop (Hinton 2012), torch's arithmetic", torch="RMSprop", alias="rmsprop",
)
