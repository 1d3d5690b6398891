"""Adafactor's scaling (Shazeer & Stern 2018) as ``torch.optim.Adafactor`` computes it."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from wdchain import _recipe, _tree, _validate
from wdchain.registry import register_preconditioner
from wdchain.types import Options


class ScaleByAdafactorState(NamedTuple):
    step: jax.Array  # int32 scalar: updates so far (t − 1)
    row: Any  # R, shape (..., n, 1) for leaves of ≥ 2 dims; shape (0,) otherwise
    col: Any  # C, shape (..., 1, m) for leaves of ≥ 2 dims; shape (0,) otherwise
    variance: Any  # V, the leaf's shape for leaves of < 2 dims; shape (0,) otherwise


def _rms(x: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(jnp.square(x))) / jnp.sqrt(jnp.asarray(max(x.size, 1), x.dtype))


def scale_by_adafactor(
    lr: Any = 1e-2,
    beta2_decay: Any = -0.8,
    eps: tuple[Any, Any] = (None, 1e-3),
    d: Any = 1.0,
) -> optax.GradientTransformation:
    r"""Adafactor's step before the learning rate, as ``torch.optim.Adafactor``.

    With t the step, :math:`\hat\beta_t = t^{\text{beta2\_decay}}` and, for a leaf of
    two or more dimensions (factored over its last two, :math:`G^2` elementwise):

    .. math::

        R_t \leftarrow R_{t-1} + \hat\beta_t(\overline{G^2}^{\,\text{row}} - R_{t-1}), \quad
        C_t \leftarrow C_{t-1} + \hat\beta_t(\overline{G^2}^{\,\text{col}} - C_{t-1}), \quad
        \hat V_t = \frac{R_t C_t}{\max(\overline{R_t}, \epsilon_1)}

    (a vector or scalar keeps :math:`V_t \leftarrow V_{t-1} + \hat\beta_t(g^2 - V_{t-1})`
    whole); then

    .. math::

        x = \frac{g}{\sqrt{\max(\hat V_t, \epsilon_1^2)}}, \quad
        u_t = \frac{\max(\epsilon_2, \operatorname{RMS}(\theta_{t-1}))}
                   {\max(1, \operatorname{RMS}(x)/d)}
              \cdot \min\Bigl(1, \frac{1}{\ell_t \sqrt t}\Bigr)\, x

    so that the learning-rate step after it, ×ℓ_t, gives torch's relative step
    :math:`\rho_t = \min(\ell_t, 1/\sqrt t)` while decay slots between the two still
    see ℓ_t (torch decays by :math:`1 - \ell_t\lambda`, not by ρ_t). ε₁ = None is the
    machine epsilon of the parameter's dtype, as in torch. There is no first moment.

    Args:
      lr: ℓ, the learning rate the step after this one multiplies by (a number, JAX
        scalar or schedule; torch default 1e-2).
      beta2_decay: ≤ 0 (torch default −0.8).
      eps: (ε₁, ε₂): ε₁ ≥ 0 or None, ε₂ ≥ 0 (torch default (None, 1e-3)).
      d: the update clipping threshold, ≥ 1 (torch default 1).

    Returns:
      An ``optax.GradientTransformation`` whose ``update`` needs ``params``.
    """
    where = "scale_by_adafactor"
    _validate.check_schedule_or_number(where, "lr", lr)
    check_options(where, {"beta2_decay": beta2_decay, "eps": eps, "d": d})
    eps1, eps2 = eps

    def init_fn(params: Any) -> ScaleByAdafactorState:
        _tree.require_real(where, params)

        def slots(p: Any) -> tuple:
            dtype = jnp.result_type(p)
            empty = jnp.zeros((0,), dtype)
            shape = jnp.shape(p)
            if not _tree.is_float(p) or len(shape) < 2:
                return empty, empty, jnp.zeros_like(p, dtype) if _tree.is_float(p) else empty
            # R and C take the type of the means the update stores in them (under explicit
            # sharding C keeps the params' sharded last axis), so init and update agree.
            row = jax.eval_shape(lambda q: jnp.mean(q, -1, keepdims=True), p)
            col = jax.eval_shape(lambda q: jnp.mean(q, -2, keepdims=True), p)
            return jnp.zeros_like(row, dtype), jnp.zeros_like(col, dtype), empty

        row, col, variance = _tree.unzip(params, jax.tree.map(slots, params), 3)
        return ScaleByAdafactorState(jnp.zeros([], jnp.int32), row, col, variance)

    def update_fn(updates: Any, state: ScaleByAdafactorState, params: Any = None):
        _tree.require_params(where, params)
        _tree.check_same_shapes(where, "params", params, "updates", updates)
        count = optax.safe_increment(state.step)
        lr_t = _tree.value_at(lr, state.step)

        def step(g: jax.Array, p: jax.Array, r: jax.Array, c: jax.Array, v: jax.Array) -> tuple:
            dtype = _tree.compute_dtype(g.dtype)
            e1 = jnp.finfo(p.dtype).eps if eps1 is None else eps1
            t = count.astype(dtype)
            weight = t**beta2_decay
            g_c = _tree.cast(g, dtype)
            g2 = g_c * g_c
            if g.ndim >= 2:
                r_new = _tree.cast(r, dtype) + weight * (jnp.mean(g2, -1, keepdims=True)
                                                         - _tree.cast(r, dtype))
                c_new = _tree.cast(c, dtype) + weight * (jnp.mean(g2, -2, keepdims=True)
                                                         - _tree.cast(c, dtype))
                v_hat = r_new * c_new / jnp.maximum(jnp.mean(r_new, -2, keepdims=True), e1)
                v_new = v
                r_new, c_new = _tree.cast(r_new, r.dtype), _tree.cast(c_new, c.dtype)
            else:
                v_hat = _tree.cast(v, dtype) + weight * (g2 - _tree.cast(v, dtype))
                r_new, c_new, v_new = r, c, _tree.cast(v_hat, v.dtype)
            x = jax.lax.rsqrt(jnp.maximum(v_hat, e1 * e1)) * g_c
            scale = jnp.maximum(eps2, _rms(_tree.cast(p, dtype)))
            clip = jnp.maximum(1.0, _rms(x) / d)
            relative = jnp.minimum(1.0, 1 / (lr_t * jnp.sqrt(t)))
            u = (scale / clip * relative) * x
            return _tree.cast(u, g.dtype), r_new, c_new, v_new

        def leaf(g: Any, p: Any, r: Any, c: Any, v: Any) -> tuple:
            if not _tree.is_float(g):
                return jnp.zeros_like(g), r, c, v
            return step(g, p, r, c, v)

        out = jax.tree.map(leaf, updates, params, state.row, state.col, state.variance)
        updates, row, col, variance = _tree.unzip(updates, out, 4)
        return updates, ScaleByAdafactorState(count, row, col, variance)

    tx = optax.GradientTransformation(init_fn, update_fn)
    hyperparams = (("β̂₂", f"t^{_recipe.format_value(beta2_decay)}"), ("ε", (eps1, eps2)),
                   ("d", d))
    return _recipe.label(tx, _recipe.Step("adafactor", _recipe.PRECONDITIONER, hyperparams))


def check_options(where: str, options: Options) -> None:
    """Adafactor's options: ``beta2_decay`` ≤ 0, ``eps`` a pair (ε₁ None or ≥ 0, ε₂ ≥ 0),
    ``d`` ≥ 1."""
    _validate.check_range(where, "beta2_decay", options["beta2_decay"], low=-float("inf"),
                          high=0.0)
    _check_eps(where, options["eps"])
    _validate.check_range(where, "d", options["d"], low=1.0)


def _check_eps(where: str, eps: Any) -> tuple[Any, Any]:
    try:
        eps1, eps2 = eps
    except (TypeError, ValueError):
        raise ValueError(
            f"{where}: eps must be a pair (eps1, eps2) with eps1 None or ≥ 0 and eps2 ≥ 0, "
            f"got {eps!r}"
        ) from None
    if eps1 is not None:
        _validate.check_range(where, "eps[0]", eps1)
    _validate.check_range(where, "eps[1]", eps2)
    return eps1, eps2


def _slot(
    beta2_decay: Any = -0.8, eps: tuple[Any, Any] = (None, 1e-3), d: Any = 1.0, *,
    learning_rate: Any,
) -> optax.GradientTransformation:
    """The relative step min(lr_t, 1/√t) needs build's learning rate."""
    return scale_by_adafactor(learning_rate, beta2_decay, eps, d)


register_preconditioner(
    "adafactor", _slot, check=check_options, adaptive=True, lr_span=(-3.0, -0.5),
    summary="Adafactor (Shazeer & Stern 2018) as torch: factored second moment, "
            "relative step min(lr_t, 1/√t), update clipping d",
    torch="Adafactor", alias="adafactor",
)
