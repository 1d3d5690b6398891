"""ADOPT (Taniguchi et al. 2024): Adam with the current gradient kept out of its own
normaliser, and the normalisation moved before the momentum."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from wdchain import _recipe, _tree, _validate
from wdchain.registry import register_preconditioner
from wdchain.types import Options


def check_options(where: str, options: Options) -> None:
    """ADOPT's options: ``betas`` in [0, 1), ``eps`` ≥ 0, ``clip_exponent`` ≥ 0 or None."""
    _validate.check_betas(where, options["betas"])
    _validate.check_range(where, "eps", options["eps"])
    if options["clip_exponent"] is not None:
        _validate.check_range(where, "clip_exponent", options["clip_exponent"])


class ScaleByAdoptState(NamedTuple):
    # int32 scalar: updates so far (the first only fills ν); named step, not count:
    # the optimizer's one ``count`` is its learning-rate step's
    step: jax.Array
    mu: Any  # momentum m of the normalised gradients, one per leaf
    nu: Any  # second moment ν, one per leaf


def scale_by_adopt(
    betas: tuple[Any, Any] = (0.9, 0.9999),
    eps: Any = 1e-6,
    clip_exponent: Any = 0.25,
) -> optax.GradientTransformation:
    r"""ADOPT's scaling, as the authors' code computes it.

    At the first update ν is filled and nothing moves; from the second on (t ≥ 1
    earlier updates):

    .. math::

        \nu_0 = g_0^2, \qquad
        n_t = \operatorname{clip}\Big(\frac{g_t}{\max(\sqrt{\nu_{t-1}}, \epsilon)},
        \pm t^{p}\Big), \qquad
        m_t \leftarrow \beta_1 m_{t-1} + (1-\beta_1)\, n_t, \qquad u_t = m_t,

    .. math::

        \nu_t \leftarrow \beta_2 \nu_{t-1} + (1-\beta_2)\, g_t^2

    with (β₁, β₂) = ``betas``, ε = ``eps`` (a floor on √ν, not an addend) and
    p = ``clip_exponent``. ν_{t−1} does not contain g_t: that is ADOPT's change to
    Adam, and why it converges for any β₂. No bias correction (m₀ = 0, ν₀ = g₀²).
    The clip is the authors' stabiliser of November 2024 (``clip_lambda = step**0.25``
    in ``iShohei220/adopt``); ``clip_exponent=None`` is the unclipped algorithm of
    the paper's first version. ``optax.contrib.scale_by_adopt`` computes the same
    (with ``clip_value_fn = lambda t: t**p``).

    Args:
      betas: (β₁, β₂), each in [0, 1) (the authors' default (0.9, 0.9999)).
      eps: ε ≥ 0 (default 1e-6, the authors'). With ε = 0 a coordinate whose ν is
        still zero divides by zero, as in their code.
      clip_exponent: p ≥ 0, or None for no clipping (default 0.25).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_adopt(betas=(0.5, 0.5))
      >>> state = tx.init(jnp.zeros(1))
      >>> u0, state = tx.update(jnp.array([2.0]), state)  # ν₀ = 4, no step
      >>> u1, state = tx.update(jnp.array([4.0]), state)  # n = clip(4/2, ±1) = 1
      >>> u0, u1
      (Array([0.], dtype=float32), Array([0.5], dtype=float32))
    """
    where = "scale_by_adopt"
    check_options(where, {"betas": betas, "eps": eps, "clip_exponent": clip_exponent})
    beta1, beta2 = betas

    def init_fn(params: Any) -> ScaleByAdoptState:
        _tree.require_real(where, params)
        return ScaleByAdoptState(
            step=jnp.zeros([], jnp.int32),
            mu=_tree.zeros_like_params(params),
            nu=_tree.zeros_like_params(params),
        )

    def update_fn(updates: Any, state: ScaleByAdoptState, params: Any = None):
        del params
        _tree.check_same_shapes(where, "state.mu", state.mu, "updates", updates)
        first = state.step == 0
        bound = _tree.per_dtype(lambda dtype: state.step.astype(dtype) ** clip_exponent)  # t^p

        def step(g: jax.Array, m: jax.Array, v: jax.Array) -> tuple:
            dtype = _tree.compute_dtype(g.dtype)
            g_c, m_c, v_c = (_tree.cast(x, dtype) for x in (g, m, v))
            normed = g_c / jnp.maximum(jnp.sqrt(v_c), eps)
            if clip_exponent is not None:
                normed = jnp.clip(normed, -bound(dtype), bound(dtype))
            m_new = jnp.where(first, m_c, m_c + (1 - beta1) * (normed - m_c))
            v_new = jnp.where(first, g_c * g_c, beta2 * v_c + (1 - beta2) * (g_c * g_c))
            return (_tree.cast(m_new, g.dtype), _tree.cast(m_new, m.dtype),
                    _tree.cast(v_new, v.dtype))

        updates, mu, nu = _tree.map_float(step, updates, state.mu, state.nu)
        return updates, ScaleByAdoptState(optax.safe_increment(state.step), mu, nu)

    tx = optax.GradientTransformation(init_fn, update_fn)
    hyperparams: tuple[tuple[str, Any], ...] = (("β", (beta1, beta2)), ("ε", eps))
    if clip_exponent is not None:
        hyperparams += (("clip", f"t^{_recipe.format_value(clip_exponent)}"),)
    return _recipe.label(tx, _recipe.Step("adopt", _recipe.PRECONDITIONER, hyperparams))


def second_moment(states: tuple[Any, ...], options: Options) -> Any:
    """ν_t, the statistic whose root divides ADOPT's next step (no bias correction)."""
    del options
    return states[0].nu


register_preconditioner(
    "adopt", scale_by_adopt, check=check_options, adaptive=True,
    second_moment=second_moment, lr_span=(-4.0, -1.5),
    summary="ADOPT (Taniguchi et al. 2024): the gradient normalised by the previous "
            "second moment, then averaged; clipped at t^0.25 as the authors' code",
)
