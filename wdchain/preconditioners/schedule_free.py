"""Schedule-free AdamW (Defazio et al. 2024): the iterate is an average.

Three sequences: z, the base optimizer's iterate; x, a running average of the z's
(the point to evaluate); y = β·x + (1 − β)·z, the point where the gradient is taken
(the parameters the model trains with)::

    z_{t+1} = z_t + Δ_t            Δ_t: the base chain's update (lr, decay included)
    x_{t+1} = (1 − c_{t+1}) x_t + c_{t+1} z_{t+1}
    y_{t+1} = β x_{t+1} + (1 − β) z_{t+1}

The base chain computes Δ_t from the gradient at y_t; it is handed one of y_t, z_t,
x_t as its ``params``, which is where its weight decay (of any placement) is taken:
``decay_at``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from wdchain import _recipe, _tree, _validate
from wdchain.preconditioners import adam
from wdchain.registry import register_preconditioner
from wdchain.types import Options

DECAY_POINTS = ("y", "z", "x")
BIAS_CORRECTIONS = ("lr", "moment")


class ScaleByScheduleFreeAdamState(NamedTuple):
    # int32 scalar: updates so far; named step, not count: the optimizer's one
    # ``count`` is its learning-rate step's
    step: jax.Array
    nu: Any  # second moment ν (β₂), one per leaf


def check_options(where: str, options: Options) -> None:
    """The options of ``build("schedule_free_adam")``: ``betas`` = (β, β₂) with β in
    (0, 1) and β₂ in [0, 1), ``eps``, ``weight_lr_power`` and ``r`` ≥ 0, ``decay_at``
    one of y, z, x, ``bias_correction`` "lr" or "moment"."""
    beta, _ = _validate.check_betas(where, options["betas"])
    _check_b1(where, "betas[0]", beta)
    _validate.check_range(where, "eps", options["eps"])
    _validate.check_range(where, "weight_lr_power", options["weight_lr_power"])
    _validate.check_range(where, "r", options["r"])
    _check_decay_at(where, options["decay_at"])
    _check_bias_correction(where, options["bias_correction"])


def _check_b1(where: str, name: str, b1: Any) -> None:
    _validate.check_range(where, name, b1, high=1.0)
    if _validate.concrete_number(b1) == 0:
        raise ValueError(
            f"{where}: {name} (β, the interpolation of y between x and z) must be in "
            f"(0, 1]: x = (y − (1 − β)z)/β; got {b1!r}")


def _check_decay_at(where: str, decay_at: Any) -> None:
    if decay_at not in DECAY_POINTS:
        raise ValueError(
            f"{where}: decay_at must be 'y' (the gradient's point, as Defazio's code and "
            f"optax), 'z' (the base iterate) or 'x' (the average), got {decay_at!r}"
        )


def _check_bias_correction(where: str, value: Any) -> None:
    if value not in BIAS_CORRECTIONS:
        raise ValueError(
            f"{where}: bias_correction must be 'lr' (the step size carries "
            "√(1 − β₂^t), as Defazio's code) or 'moment' (ν is divided by 1 − β₂^t, "
            f"as optax), got {value!r}"
        )


def scale_by_schedule_free_adam(
    b2: Any = 0.999, eps: Any = 1e-8, bias_correction: str = "lr"
) -> optax.GradientTransformation:
    r"""Schedule-free AdamW's base step: Adam without its first moment.

    .. math::

        \nu_t \leftarrow \beta_2 \nu_{t-1} + (1-\beta_2) g_t^2, \qquad
        u_t = \frac{g_t}{\sqrt{\nu_t} + \epsilon} \ (\texttt{"lr"}) \quad\text{or}\quad
        u_t = \frac{g_t}{\sqrt{\nu_t/(1-\beta_2^t)} + \epsilon} \ (\texttt{"moment"})

    with β₂ = ``b2`` and ε = ``eps``. With ``"lr"`` (Defazio's code and the paper)
    the bias correction is in the step size instead, γ_t = γ·√(1 − β₂^t)
    (:func:`schedule_free_learning_rate`), so it also scales the decay and the
    averaging weights; ``"moment"`` is ``optax.contrib.schedule_free_adamw``'s. The
    momentum is replaced by :func:`schedule_free`'s averaging.

    Args:
      b2: β₂ in [0, 1) (default 0.999).
      eps: ε ≥ 0 (default 1e-8).
      bias_correction: ``"lr"`` (default) or ``"moment"``.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_schedule_free_adam(b2=0.75, eps=0.0, bias_correction="moment")
      >>> tx.update(jnp.array([2.0, -3.0]), tx.init(jnp.zeros(2)))[0]
      Array([ 1., -1.], dtype=float32)
    """
    where = "scale_by_schedule_free_adam"
    _validate.check_range(where, "b2", b2, high=1.0, high_open=True)
    _validate.check_range(where, "eps", eps)
    _check_bias_correction(where, bias_correction)
    corrected = bias_correction == "moment"

    def init_fn(params: Any) -> ScaleByScheduleFreeAdamState:
        _tree.require_real(where, params)
        return ScaleByScheduleFreeAdamState(
            step=jnp.zeros([], jnp.int32), nu=_tree.zeros_like_params(params))

    def update_fn(updates: Any, state: ScaleByScheduleFreeAdamState, params: Any = None):
        del params
        _tree.check_same_shapes(where, "state.nu", state.nu, "updates", updates)
        count = optax.safe_increment(state.step)
        inv_sqrt_bc2 = _tree.per_dtype(
            lambda dtype: jax.lax.rsqrt(_tree.bias_correction(b2, count, dtype)))

        def step(g: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array]:
            dtype = _tree.compute_dtype(g.dtype)
            g_c = _tree.cast(g, dtype)
            v_new = b2 * _tree.cast(v, dtype) + (1 - b2) * (g_c * g_c)
            root = jnp.sqrt(v_new) * inv_sqrt_bc2(dtype) if corrected else jnp.sqrt(v_new)
            return _tree.cast(g_c / (root + eps), g.dtype), _tree.cast(v_new, v.dtype)

        updates, nu = _tree.map_float(step, updates, state.nu)
        return updates, ScaleByScheduleFreeAdamState(step=count, nu=nu)

    tx = optax.GradientTransformation(init_fn, update_fn)
    hyperparams = (("β₂", b2), ("ε", eps), ("bias_correction", bias_correction))
    return _recipe.label(
        tx, _recipe.Step("schedule_free_adam", _recipe.PRECONDITIONER, hyperparams))


def schedule_free_learning_rate(learning_rate: Any, b2: Any) -> Any:
    r"""γ_t = lr_t·√(1 − β₂^{t+1}) at count t: Defazio's bias-corrected step size."""

    def schedule(count: Any) -> Any:
        dtype = jnp.result_type(float)
        correction = jnp.sqrt(_tree.bias_correction(b2, optax.safe_increment(count), dtype))
        return _tree.value_at(learning_rate, count) * correction

    schedule.wdchain_name = "lr_t·√(1−β₂^t)"  # type: ignore[attr-defined]
    return schedule


class ScheduleFreeState(NamedTuple):
    """The averaging's state; field names as optax's, so that
    ``optax.contrib.schedule_free_eval_params`` reads it too."""

    # int32 scalar: updates so far; named step, not count: the optimizer's one
    # ``count`` is its learning-rate step's (in base_optimizer_state)
    step: jax.Array
    b1: jax.Array  # β, the interpolation of y between x and z
    weight_sum: jax.Array  # Σ of the averaging weights so far
    max_lr: jax.Array  # the largest step size so far
    base_optimizer_state: Any  # the wrapped chain's state
    z: Any  # the base iterate z, one per leaf


def schedule_free(
    tx: optax.GradientTransformation,
    learning_rate: Any,
    b1: Any = 0.9,
    weight_lr_power: Any = 2.0,
    r: Any = 0.0,
    decay_at: str = "y",
) -> optax.GradientTransformationExtraArgs:
    r"""Makes ``tx`` schedule-free: its iterate becomes z, the averaged x is evaluated.

    .. math::

        z_{t+1} = z_t + \Delta_t, \qquad
        x_{t+1} = (1 - c_{t+1})\, x_t + c_{t+1} z_{t+1}, \qquad
        y_{t+1} = \beta x_{t+1} + (1-\beta) z_{t+1},

    .. math::

        c_{t+1} = \frac{w_t}{\sum_{i \le t} w_i}, \qquad
        w_t = (t+1)^r \big(\max_{i \le t} \gamma_i\big)^{p}

    where Δ_t is ``tx``'s update (learning rate included) from the gradient at
    y_t = the parameters, β = ``b1``, γ_t = ``learning_rate`` at the step, p =
    ``weight_lr_power``. ``tx`` is handed y_t, z_t or x_t as its ``params``
    (``decay_at``): its weight decay is taken there. Defazio's code and optax take
    it at y (``"y"``); Defazio's reference also offers z. The update returned moves
    the parameters from y_t to y_{t+1}; :func:`schedule_free_eval_params` gives x.

    Args:
      tx: the base optimizer, with its learning rate and decay, and no momentum.
      learning_rate: γ_t, the step size ``tx`` uses (a number or a schedule of the
        update count), for the averaging weights.
      b1: β in (0, 1] (default 0.9).
      weight_lr_power: p ≥ 0 (default 2).
      r: the polynomial weighting power ≥ 0 (default 0).
      decay_at: ``"y"`` (default), ``"z"`` or ``"x"``.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose ``update`` needs ``params``.
    """
    where = "schedule_free"
    _check_b1(where, "b1", b1)
    _validate.check_schedule_or_number(where, "learning_rate", learning_rate)
    _validate.check_range(where, "weight_lr_power", weight_lr_power)
    _validate.check_range(where, "r", r)
    _check_decay_at(where, decay_at)
    base = optax.with_extra_args_support(tx)

    def init_fn(params: Any) -> ScheduleFreeState:
        dtype = _tree.scalar_dtype(params)
        return ScheduleFreeState(
            step=jnp.zeros([], jnp.int32),
            b1=jnp.asarray(b1, dtype),
            weight_sum=jnp.zeros([], dtype),
            max_lr=jnp.zeros([], dtype),
            base_optimizer_state=base.init(params),
            z=jax.tree.map(_copy, params),
        )

    def update_fn(updates: Any, state: ScheduleFreeState, params: Any = None, **extra: Any):
        if params is None:
            raise ValueError(
                f"{where} needs the current parameters (y_t: the average x_t is formed "
                "from y_t and z_t), but update() was called without them. Call "
                "tx.update(updates, state, params)."
            )
        _tree.check_same_shapes(where, "state.z", state.z, "params", params)
        beta = state.b1
        lr = jnp.asarray(_tree.value_at(learning_rate, state.step), state.max_lr.dtype)
        max_lr = jnp.maximum(state.max_lr, lr)
        weight = (state.step + 1).astype(max_lr.dtype) ** r * max_lr**weight_lr_power
        weight_sum = state.weight_sum + weight
        c = jnp.where(weight_sum > 0, weight / jnp.where(weight_sum > 0, weight_sum, 1), 0)

        x = _average(params, state.z, beta)
        point = {"y": params, "z": state.z, "x": x}[decay_at]
        steps, base_state = base.update(updates, state.base_optimizer_state, point, **extra)

        def move(u: jax.Array, y: jax.Array, z: jax.Array, x_t: jax.Array,
                 dz: jax.Array) -> tuple[jax.Array, jax.Array]:
            if not _tree.is_float(y):
                return jnp.zeros_like(u), z
            dtype = _tree.compute_dtype(y.dtype)
            b, c_t = beta.astype(dtype), c.astype(dtype)
            z_new = _tree.cast(z, dtype) + _tree.cast(dz, dtype)
            x_new = (1 - c_t) * _tree.cast(x_t, dtype) + c_t * z_new
            y_new = b * x_new + (1 - b) * z_new
            return _tree.cast(y_new - _tree.cast(y, dtype), u.dtype), _tree.cast(z_new, z.dtype)

        moved = jax.tree.map(move, updates, params, state.z, x, steps)
        new_updates, z = _tree.unzip(updates, moved, 2)
        return new_updates, ScheduleFreeState(
            step=optax.safe_increment(state.step), b1=state.b1, weight_sum=weight_sum,
            max_lr=max_lr, base_optimizer_state=base_state, z=z)

    wrapped = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    hyperparams = (("β", b1), ("p", weight_lr_power), ("r", r), ("decay_at", decay_at))
    # Its own role: describe shows it around the base chain's rule, not as a foreign part.
    return _recipe.label(wrapped, *(_recipe.recipe(tx) or ()),
                         _recipe.Step("schedule_free", "average", hyperparams))


def _copy(p: Any) -> jax.Array:
    """z₀ = θ₀ in a buffer of its own (so params and state can both be donated); an
    abstract input (shape and dtype only, as for a checkpoint template) gives zeros."""
    if isinstance(p, jax.ShapeDtypeStruct):
        return jnp.zeros_like(p)
    return jnp.array(p, copy=True)


def schedule_free_eval_params(state: Any, params: Any) -> Any:
    r"""The averaged point x = (y − (1 − β)·z)/β, to evaluate a schedule-free model at.

    Args:
      state: the state of a :func:`schedule_free` optimizer (``build`` with
        ``"schedule_free_adam"``), also inside wrappers (``skip_nonfinite``,
        ``inject_hyperparams``, ``optax.chain``...).
      params: the parameters trained with (y).

    Returns:
      x, shaped like ``params``.

    Raises:
      ValueError: when ``state`` holds no schedule-free state, or more than one.
    """
    found = [s for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, ScheduleFreeState))
             if isinstance(s, ScheduleFreeState)]
    if len(found) != 1:
        raise ValueError(
            "schedule_free_eval_params: the state holds "
            f"{'no' if not found else len(found)} schedule-free state(s); pass the state "
            "of one optimizer built with build('schedule_free_adam', ...) or "
            "schedule_free(...)"
        )
    return _average(params, found[0].z, found[0].b1)


def _average(params: Any, z: Any, beta: jax.Array) -> Any:
    """x = (y − (1 − β)·z)/β, leaf by leaf (y: the params)."""

    def average(y: jax.Array, z_leaf: jax.Array) -> jax.Array:
        if not _tree.is_float(y):
            return y
        dtype = _tree.compute_dtype(y.dtype)
        b = beta.astype(dtype)
        x = (_tree.cast(y, dtype) - (1 - b) * _tree.cast(z_leaf, dtype)) / b
        return _tree.cast(x, y.dtype)

    return jax.tree.map(average, params, z)


def _slot(
    betas: tuple[Any, Any] = (0.9, 0.999), eps: Any = 1e-8, weight_lr_power: Any = 2.0,
    r: Any = 0.0, decay_at: str = "y", bias_correction: str = "lr",
) -> optax.GradientTransformation:
    """The base step; β, p, r and decay_at are the wrapper's, bias_correction both's."""
    del weight_lr_power, r, decay_at
    return scale_by_schedule_free_adam(betas[1], eps, bias_correction)


def _learning_rate(lr: Any, options: Options) -> Any:
    if options["bias_correction"] == "lr":
        return schedule_free_learning_rate(lr, options["betas"][1])
    return lr


def _wrap(tx: optax.GradientTransformation, options: Options,
          learning_rate: Any) -> optax.GradientTransformation:
    return schedule_free(tx, learning_rate, options["betas"][0], options["weight_lr_power"],
                         options["r"], options["decay_at"])


register_preconditioner(
    "schedule_free_adam", _slot, check=check_options, adaptive=True,
    second_moment=adam.second_moment, learning_rate=_learning_rate, wrap=_wrap,
    eval_params=schedule_free_eval_params,
    lr_span=(-3.5, -1.0),
    summary="schedule-free AdamW (Defazio et al. 2024): Adam without momentum, its "
            "iterate averaged; decay_at y (Defazio's, optax's), z or x; "
            "wdchain.schedule_free_eval_params(state, params) reads x",
)
