"""Adagrad (Duchi et al. 2011) with torch's arithmetic."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from wdchain import _recipe, _tree, _validate
from wdchain.registry import register_preconditioner
from wdchain.types import Options


def check_options(where: str, options: Options) -> None:
    """Adagrad's options: ``eps``, ``initial_accumulator_value`` and ``lr_decay`` ≥ 0."""
    for name in ("eps", "initial_accumulator_value", "lr_decay"):
        if name in options:
            _validate.check_range(where, name, options[name])


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
    check_options(where, {"eps": eps, "initial_accumulator_value": initial_accumulator_value})

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


def adagrad_learning_rate(lr: Any, lr_decay: Any) -> Any:
    """torch's ``lr / (1 + (t − 1)·lr_decay)``, composed with any lr schedule."""
    if _validate.is_static_zero(lr_decay):
        return lr

    def schedule(count: Any) -> Any:
        return _tree.value_at(lr, count) / (1 + count * lr_decay)

    schedule.wdchain_name = "lr/(1 + t·lr_decay)"  # type: ignore[attr-defined]
    return schedule


def _slot(
    eps: Any = 1e-10, initial_accumulator_value: Any = 0.0, lr_decay: Any = 0.0
) -> optax.GradientTransformation:
    del lr_decay  # a learning-rate schedule: see adagrad_learning_rate
    return scale_by_adagrad(eps, initial_accumulator_value)


def _second_moment(states: tuple[Any, ...], options: Options) -> Any:
    del options
    return states[0].sum_of_squares


def _eta(eta: Any, options: Options) -> Any:
    """η_t with lr_decay's factor: it is part of lr_t, so part of lr_t/lr_peak."""
    if _validate.is_static_zero(options["lr_decay"]):
        return eta
    return adagrad_learning_rate(1.0 if eta is None else eta, options["lr_decay"])


register_preconditioner(
    "adagrad", _slot, check=check_options, adaptive=True, second_moment=_second_moment,
    learning_rate=lambda lr, o: adagrad_learning_rate(lr, o["lr_decay"]), eta=_eta,
    lr_span=(-2.5, 0.0), summary="Adagrad (Duchi et al. 2011), torch's arithmetic",
    torch="Adagrad", alias="adagrad",
)
