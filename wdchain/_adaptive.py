"""Diagonal preconditioners with torch's arithmetic: Adagrad, RMSprop, Adam."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from wdchain import _recipe, _tree, _validate


def _lerp(start: jax.Array, end: jax.Array, weight: Any) -> jax.Array:
    """``start + weight·(end − start)``: a running mean as torch's ``lerp_`` forms it."""
    return start + weight * (end - start)


class ScaleByAdagradState(NamedTuple):
    sum_of_squares: Any  # s, one per leaf


def scale_by_adagrad(
    eps: Any = 1e-10, initial_accumulator_value: Any = 0.0
) -> optax.GradientTransformation:
    r"""Adagrad's scaling, as torch computes it.

    .. math::

        s_t \leftarrow s_{t-1} + g_t^2, \qquad u_t = \frac{g_t}{\sqrt{s_t} + \epsilon}

    with :math:`s_0` = ``initial_accumulator_value`` and ε = ``eps``, *outside* the
    square root. ``optax.scale_by_rss`` puts ε inside it and starts from 0.1; no
    setting of it reproduces torch. torch's ``lr_decay`` is a learning-rate schedule:
    see :func:`wdchain.adagrad`.

    Args:
      eps: ε ≥ 0 (torch default 1e-10). With ε = 0 an entry whose sum is still zero
        gives 0/0 = NaN, as in torch.
      initial_accumulator_value: s₀ ≥ 0 (torch default 0).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_adagrad(eps=0.0)
      >>> tx.update(jnp.array([3.0, -4.0]), tx.init(jnp.zeros(2)))[0]
      Array([ 1., -1.], dtype=float32)
    """
    where = "scale_by_adagrad"
    _validate.check_range(where, "eps", eps)
    _validate.check_range(where, "initial_accumulator_value", initial_accumulator_value)

    def init_fn(params: Any) -> ScaleByAdagradState:
        _tree.require_real(where, params)
        return ScaleByAdagradState(_tree.full_like_params(params, initial_accumulator_value))

    def update_fn(updates: Any, state: ScaleByAdagradState, params: Any = None):
        del params
        _tree.check_same_shapes(where, "state", state.sum_of_squares, "updates", updates)

        def step(g: jax.Array, s: jax.Array) -> tuple[jax.Array, jax.Array]:
            dtype = _tree.compute_dtype(g.dtype)
            g_c = _tree.cast(g, dtype)
            s_new = _tree.cast(s, dtype) + g_c * g_c
            u = g_c / (jnp.sqrt(s_new) + eps)
            return _tree.cast(u, g.dtype), _tree.cast(s_new, s.dtype)

        updates, sums = _tree.map_float(step, updates, state.sum_of_squares)
        return updates, ScaleByAdagradState(sums)

    tx = optax.GradientTransformation(init_fn, update_fn)
    hyperparams = (("ε", eps), ("s₀", initial_accumulator_value))
    return _recipe.label(tx, _recipe.Step("adagrad", _recipe.PRECONDITIONER, hyperparams))


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
    _validate.check_range(where, "alpha", alpha, high=1.0)
    _validate.check_range(where, "eps", eps)
    _validate.check_flag(where, "centered", centered)

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
                g_bar = _lerp(_tree.cast(mean[0], dtype), g_c, 1 - alpha)
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
    beta1, beta2 = _validate.check_betas(where, betas)
    _validate.check_range(where, "eps", eps)
    _validate.check_flag(where, "amsgrad", amsgrad)
    _validate.check_float_dtype(where, "mu_dtype", mu_dtype)
    _validate.check_float_dtype(where, "nu_dtype", nu_dtype)

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
            m_new = _lerp(_tree.cast(m, dtype), g_c, 1 - beta1)
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
