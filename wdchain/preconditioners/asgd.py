"""Averaged SGD (Polyak & Juditsky 1992; Bottou 2012) with torch's step sizes.

torch's ASGD is three small pieces here: ASGD's own shrinkage term
(:func:`scale_by_asgd`), its decaying step size η_t (:func:`asgd_learning_rate`, a
schedule for :func:`wdchain.scale_by_learning_rate`), and the running average of the
iterates (:func:`average_iterates`), read back with :func:`averaged_params`.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from wdchain import _recipe, _tree, _validate, decay
from wdchain.registry import register_preconditioner
from wdchain.types import Options


def check_options(where: str, options: Options) -> None:
    """ASGD's options: λ_d ≥ 0, α and t₀ finite numbers."""
    _validate.check_range(where, "lambd", options["lambd"])
    _validate.check_range(where, "alpha", options["alpha"], low=-float("inf"))
    _validate.check_range(where, "t0", options["t0"], low=-float("inf"))


def scale_by_asgd(lambd: Any = 1e-4) -> optax.GradientTransformation:
    r"""ASGD's shrinkage term: :math:`u = g + \lambda_d\,\theta`.

    torch's ASGD shrinks every parameter by :math:`1 - \lambda_d\eta_t` each step
    (``lambd`` λ_d, on every leaf: a param group's ``weight_decay=0`` does not switch
    it off), so with the step size η_t applied after it the update is
    :math:`\theta \leftarrow \theta - \eta_t (g + \lambda_d\theta)`. It is part of
    ASGD's step, not its weight decay: ``weight_decay`` is L2, before this.

    Args:
      lambd: λ_d ≥ 0 (torch default 1e-4).

    Returns:
      An ``optax.GradientTransformation`` whose ``update`` needs ``params``.
    """
    where = "scale_by_asgd"
    _validate.check_range(where, "lambd", lambd)
    shrink = functools.partial(decay.add_decay_term, coefficient=lambd)

    def init_fn(params: Any) -> optax.EmptyState:
        _tree.require_real(where, params)
        return optax.EmptyState()

    def update_fn(updates: Any, state: optax.EmptyState, params: Any = None):
        _tree.require_params(where, params)
        _tree.check_same_shapes(where, "params", params, "updates", updates)

        return jax.tree.map(shrink, updates, params), state

    tx = optax.GradientTransformation(init_fn, update_fn)
    return _recipe.label(tx, _recipe.Step("asgd", _recipe.PRECONDITIONER, (("λ_d", lambd),)))


def asgd_learning_rate(lr: Any, lambd: Any = 1e-4, alpha: Any = 0.75) -> Any:
    r"""ASGD's step size η_t as torch forms it, as a schedule of the count c.

    .. math::

        \eta_c = \frac{\ell_{c'}}{(1 + \lambda_d\, \ell_{c'}\, c)^{\alpha}},
        \qquad c' = \max(c - 1, 0)

    with ℓ the learning rate (a number or a schedule). torch recomputes η at the end of
    each step from the group's lr *before* the scheduler changes it, so under a
    schedule η lags the lr by one step (ℓ_{c−1}); with a constant lr, c' plays no
    part and η_0 = lr.

    Args:
      lr: ℓ ≥ 0, a number, JAX scalar or schedule.
      lambd: λ_d ≥ 0 (torch default 1e-4). alpha: α (torch default 0.75).

    Returns:
      A schedule of the count.
    """

    def schedule(count: Any) -> Any:
        previous = jnp.maximum(count - 1, 0) if callable(lr) else count
        lr_c = _tree.value_at(lr, previous)
        t = jnp.asarray(count).astype(jnp.result_type(lr_c, float))
        return lr_c / (1 + lambd * lr_c * t) ** alpha

    schedule.wdchain_name = "lr/(1 + λ_d·lr·t)^α"  # type: ignore[attr-defined]
    return schedule


class AverageIteratesState(NamedTuple):
    step: jax.Array  # int32 scalar: updates so far
    ax: Any  # the averaged parameters, one per leaf


def average_iterates(t0: Any = 1e6) -> optax.GradientTransformation:
    r"""ASGD's running average of the parameters; the updates pass through.

    .. math::

        \bar\theta_t = \begin{cases} \theta_t & \mu_t = 1 \\
        \bar\theta_{t-1} + \mu_t(\theta_t - \bar\theta_{t-1}) & \text{otherwise}
        \end{cases}, \qquad \mu_1 = 1,\ \mu_t = \frac{1}{\max(1,\ t - 1 - t_0)}

    where θ_t = θ_{t−1} + u_t is the parameter after this update: put it last in a
    chain. Averaging starts after t₀ steps, as torch's ``t0``. Read the average with
    :func:`wdchain.averaged_params`.

    Args:
      t0: t₀, the step after which averaging starts (torch default 1e6).

    Returns:
      An ``optax.GradientTransformation`` whose ``update`` needs ``params``.
    """
    where = "average_iterates"
    _validate.check_range(where, "t0", t0, low=-float("inf"))  # the one check of t₀

    def init_fn(params: Any) -> AverageIteratesState:
        _tree.require_real(where, params)
        return AverageIteratesState(jnp.zeros([], jnp.int32), _tree.zeros_like_params(params))

    def update_fn(updates: Any, state: AverageIteratesState, params: Any = None):
        _tree.require_params(where, params)
        _tree.check_same_shapes(where, "params", params, "updates", updates)

        def average(u: jax.Array, p: jax.Array, ax: jax.Array) -> jax.Array:
            if not _tree.is_float(u):
                return ax
            new = optax.apply_updates(p, u)  # what the caller's apply_updates gives
            dtype = _tree.compute_dtype(ax.dtype)
            c = state.step.astype(dtype)
            mu = jnp.where(state.step == 0, 1, 1 / jnp.maximum(1, c - t0))
            ax_c, new_c = _tree.cast(ax, dtype), _tree.cast(new, dtype)
            return _tree.cast(jnp.where(mu == 1, new_c, ax_c + (new_c - ax_c) * mu), ax.dtype)

        ax = jax.tree.map(average, updates, params, state.ax)
        return updates, AverageIteratesState(optax.safe_increment(state.step), ax)

    return _recipe.label(optax.GradientTransformation(init_fn, update_fn))


def averaged_params(state: Any) -> Any:
    """The averaged parameters (torch's ``ax``) held in an ASGD state.

    Args:
      state: the state of :func:`wdchain.asgd`, of ``build("asgd", ...)``, or of any
        chain holding one :func:`average_iterates` (wrapped in ``inject_hyperparams``
        or ``skip_nonfinite`` too).

    Returns:
      A tree shaped like the params.

    Raises:
      ValueError: if the state holds no average, or more than one.

    Example:
      >>> import jax.numpy as jnp
      >>> import wdchain
      >>> tx = wdchain.asgd(lr=0.1)
      >>> params = jnp.array([1.0])
      >>> updates, state = tx.update(jnp.array([1.0]), tx.init(params), params)
      >>> averaged_params(state)  # μ_1 = 1: the average is the new iterate
      Array([0.89999], dtype=float32)
    """
    found = [
        node.ax
        for node in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, AverageIteratesState))
        if isinstance(node, AverageIteratesState)
    ]
    if len(found) != 1:
        raise ValueError(
            f"averaged_params: the state holds {len(found)} ASGD averages "
            "(AverageIteratesState); give the state of wdchain.asgd or build('asgd', ...)"
        )
    return found[0]


def _slot(lambd: Any = 1e-4, alpha: Any = 0.75, t0: Any = 1e6) -> optax.GradientTransformation:
    del alpha, t0  # η_t's exponent (the learning rate) and the average's start (the tail)
    return scale_by_asgd(lambd)


register_preconditioner(
    "asgd", _slot, check=check_options, lr_span=(-2.5, 0.0),
    learning_rate=lambda lr, o: asgd_learning_rate(lr, o["lambd"], o["alpha"]),
    tail=lambda o: average_iterates(o["t0"]),
    summary="averaged SGD (Polyak & Juditsky 1992) with torch's η_t; "
            "wdchain.averaged_params(state) reads the average",
    torch="ASGD", alias="asgd",
)
