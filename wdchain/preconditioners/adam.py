"""Adam (Kingma & Ba 2015) with torch's arithmetic, AMSGrad included."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from wdchain import _recipe, _tree, _validate
from wdchain.registry import register_preconditioner
from wdchain.types import Options


def check_options(where: str, options: Options) -> None:
    """Adam's options: ``betas`` in [0, 1), ``eps`` ≥ 0, and, where given, ``amsgrad``
    and the moments' dtypes (NAdam, RAdam, Adamax and LAMB share the first two)."""
    _validate.check_betas(where, options["betas"])
    _validate.check_range(where, "eps", options["eps"])
    if "amsgrad" in options:
        _validate.check_flag(where, "amsgrad", options["amsgrad"])
    for name in ("mu_dtype", "nu_dtype"):
        if name in options:
            _validate.check_float_dtype(where, name, options[name])


class ScaleByAdamState(NamedTuple):
    # int32 scalar: updates so far (t − 1); named step, not count: the optimizer's one
    # ``count`` is its learning-rate step's (see ScaleByLearningRateState)
    step: jax.Array
    mu: Any  # first moment m, one per leaf
    nu: Any  # second moment v, one per leaf
    nu_max: Any  # running max of the raw v (AMSGrad only; None otherwise)


def scale_by_adam(
    betas: tuple[Any, Any] = (0.9, 0.999),
    eps: Any = 1e-8,
    amsgrad: bool = False,
    *,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformation:
    r"""Adam's scaling, as torch computes it (AMSGrad included).

    .. math::

        m_t \leftarrow \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
        v_t \leftarrow \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \qquad
        \hat v_t = \max(\hat v_{t-1}, v_t) \text{ (AMSGrad) or } v_t

    .. math::

        u_t = \frac{m_t / (1-\beta_1^t)}{\sqrt{\hat v_t} / \sqrt{1-\beta_2^t} + \epsilon}

    with (β₁, β₂) = ``betas`` and ε = ``eps``, added after the bias correction.
    AMSGrad keeps the max of the *raw* second moment and bias-corrects after it, as
    torch does; ``optax.amsgrad`` takes the max of the corrected moment instead.

    Args:
      betas: (β₁, β₂), each in [0, 1) (torch default (0.9, 0.999)).
      eps: ε ≥ 0 (torch default 1e-8).
      amsgrad: use the running max of the second moment.
      mu_dtype: dtype to store m in (keyword only; default: the parameter's dtype).
        ``jnp.bfloat16`` halves the memory of m; see docs/packed.md for its effect.
      nu_dtype: dtype to store v (and its max) in (keyword only; default as above).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_adam()
      >>> tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))[0]  # first step ≈ sign
      Array([ 1., -1.], dtype=float32)
    """
    where = "scale_by_adam"
    check_options(where, {"betas": betas, "eps": eps, "amsgrad": amsgrad,
                          "mu_dtype": mu_dtype, "nu_dtype": nu_dtype})
    beta1, beta2 = betas

    def init_fn(params: Any) -> ScaleByAdamState:
        _tree.require_real(where, params)
        # One fresh buffer per slot: a shared one could not be donated to a jitted step.
        return ScaleByAdamState(
            step=jnp.zeros([], jnp.int32),
            mu=_tree.zeros_like_params(params, mu_dtype),
            nu=_tree.zeros_like_params(params, nu_dtype),
            nu_max=_tree.zeros_like_params(params, nu_dtype) if amsgrad else None,
        )

    def update_fn(updates: Any, state: ScaleByAdamState, params: Any = None):
        del params
        _tree.check_same_shapes(where, "state.mu", state.mu, "updates", updates)
        count = optax.safe_increment(state.step)
        # Reciprocals of the corrections, once per dtype: every element then multiplies.
        inverse_corrections = _tree.per_dtype(lambda dtype: (
            1 / _tree.bias_correction(beta1, count, dtype),
            jax.lax.rsqrt(_tree.bias_correction(beta2, count, dtype)),
        ))

        def step(g: jax.Array, m: jax.Array, v: jax.Array, *v_max: jax.Array) -> tuple:
            dtype = _tree.compute_dtype(g.dtype)
            inv_bc1, inv_sqrt_bc2 = inverse_corrections(dtype)
            g_c = _tree.cast(g, dtype)
            m_new = _tree.lerp(_tree.cast(m, dtype), g_c, 1 - beta1)
            v_new = beta2 * _tree.cast(v, dtype) + (1 - beta2) * (g_c * g_c)
            v_hat = jnp.maximum(_tree.cast(v_max[0], dtype), v_new) if amsgrad else v_new
            u = (m_new * inv_bc1) / (jnp.sqrt(v_hat) * inv_sqrt_bc2 + eps)
            new_max = (_tree.cast(v_hat, v_max[0].dtype),) if amsgrad else ()
            new = (_tree.cast(u, g.dtype), _tree.cast(m_new, m.dtype), _tree.cast(v_new, v.dtype))
            return (*new, *new_max)

        if amsgrad:
            updates, mu, nu, nu_max = _tree.map_float(
                step, updates, state.mu, state.nu, state.nu_max
            )
        else:
            (updates, mu, nu), nu_max = _tree.map_float(step, updates, state.mu, state.nu), None
        return updates, ScaleByAdamState(step=count, mu=mu, nu=nu, nu_max=nu_max)

    tx = optax.GradientTransformation(init_fn, update_fn)
    hyperparams: tuple[tuple[str, Any], ...] = (("β", (beta1, beta2)), ("ε", eps))
    if amsgrad:
        hyperparams += (("amsgrad", True),)
    return _recipe.label(tx, _recipe.Step("adam", _recipe.PRECONDITIONER, hyperparams))


def second_moment(states: tuple[Any, ...], options: Options) -> Any:
    """v̂_t = v_t / (1 − β₂^t), with AMSGrad's running max of v_t (the SWD reference's),
    from the first state of the slot (Adam's, NAdam's, RAdam's: each has ``step`` and
    ``nu``)."""
    state = states[0]
    v = state.nu_max if options.get("amsgrad") else state.nu
    beta2 = options["betas"][1]
    return jax.tree.map(
        lambda x: x / _tree.bias_correction(beta2, state.step, _tree.compute_dtype(x.dtype))
        if _tree.is_float(x) else x, v)


register_preconditioner(
    "adam", scale_by_adam, check=check_options, adaptive=True, second_moment=second_moment,
    summary="Adam (Kingma & Ba 2015), AMSGrad as torch", torch="Adam", alias="adam",
)
