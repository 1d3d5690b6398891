"""The three weight-decay transforms. They compute the same term, λ·θ; where they
sit in a chain decides what it means.

======================  =============================  ===================================
transform               sits                           effect on θ
======================  =============================  ===================================
add_l2_to_grad          before the preconditioner      λθ enters the statistics (L2)
decoupled_weight_decay  after it, before the lr        θ ← θ − lr_t·(u + λθ)  (AdamW)
independent_weight_     after the learning rate        θ ← θ − lr_t·u − λ_t·θ
decay                                                  (Loshchilov & Hutter, Alg. 2)
======================  =============================  ===================================
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from wdchain import _recipe, _tree, _validate


class WeightDecayState(NamedTuple):
    """State of every decay transform, whatever its placement."""

    # int32 scalar: updates so far, the weight-decay schedule's step (named step: the
    # optimizer's one ``count`` is the learning-rate step's)
    step: jax.Array


def _decay_transform(
    where: str,
    role: str,
    weight_decay: Any,
    mask: Any,
    sign: float,
) -> optax.GradientTransformation:
    """``u ← u + sign·λ_t·θ`` on the float leaves the mask selects."""
    _validate.check_schedule_or_number(where, "weight_decay", weight_decay)
    _validate.check_mask(where, mask)
    switched_off = _validate.is_static_zero(weight_decay)

    def init_fn(params: Any) -> WeightDecayState:
        _tree.require_real(where, params)
        if mask is not None and not callable(mask) and not switched_off:
            _tree.resolve_mask(where, mask, params)  # a mask that does not fit: at init
        return WeightDecayState(step=jnp.zeros([], jnp.int32))

    def update_fn(updates: Any, state: WeightDecayState, params: Any = None):
        next_state = WeightDecayState(step=optax.safe_increment(state.step))
        if switched_off:
            return updates, next_state
        _tree.require_params(where, params)
        _tree.check_same_shapes(where, "params", params, "updates", updates)
        coefficient = sign * _tree.value_at(weight_decay, state.step)
        masks = _tree.resolve_mask(where, mask, params)
        if masks is None:
            masks = jax.tree.map(lambda _: True, params)

        def decay(u: jax.Array, p: jax.Array, m: Any) -> jax.Array:
            if not _tree.is_float(u) or _tree.is_static_false(m):
                return u
            scale = coefficient if _tree.is_static_true(m) else jnp.where(m, coefficient, 0)
            dtype = _tree.compute_dtype(u.dtype)
            return _tree.cast(_tree.cast(u, dtype) + scale * _tree.cast(p, dtype), u.dtype)

        return jax.tree.map(decay, updates, params, masks), next_state

    tx = optax.GradientTransformation(init_fn, update_fn)
    if switched_off:
        return _recipe.label(tx)
    hyperparams: tuple[tuple[str, Any], ...] = (("λ", weight_decay),)
    if mask is not None:
        hyperparams += (("mask", "callable" if callable(mask) else "tree"),)
    decay_scale = None
    if role == _recipe.INDEPENDENT:
        decay_scale = "λ_t schedule" if callable(weight_decay) else "1"
    return _recipe.label(tx, _recipe.Step(role, role, hyperparams, decay_scale))


def add_l2_to_grad(weight_decay: Any, mask: Any = None) -> optax.GradientTransformation:
    r"""Adds an L2 penalty's gradient, to be placed *before* the preconditioner.

    .. math::

        u \leftarrow u + \lambda_t\,\theta

    where :math:`\lambda_t` is ``weight_decay`` (or its schedule at step t) and
    :math:`\theta` the current parameters. Placed first in the chain, the term is the
    gradient of :math:`\tfrac{\lambda}{2}\lVert\theta\rVert^2` added to the loss, so it
    enters the preconditioner's statistics. This is torch's ``weight_decay`` for SGD,
    Adagrad, RMSprop and Adam.

    Args:
      weight_decay: λ ≥ 0: a number, a JAX scalar or a schedule of the step count.
      mask: None (decay every float leaf), a pytree of booleans that is a prefix of
        the params (True = decay), or a callable of the params returning one.
        Masked-out leaves are left as they are, as torch param groups with
        ``weight_decay=0``.

    Returns:
      An ``optax.GradientTransformation`` whose ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = add_l2_to_grad(0.1)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> updates, _ = tx.update({"w": jnp.zeros(2)}, tx.init(params), params)
      >>> updates["w"]
      Array([ 0.1, -0.2], dtype=float32)
    """
    return _decay_transform("add_l2_to_grad", _recipe.L2, weight_decay, mask, 1.0)


def decoupled_weight_decay(weight_decay: Any, mask: Any = None) -> optax.GradientTransformation:
    r"""Decoupled weight decay, to be placed *after* the preconditioner, before the lr.

    .. math::

        u \leftarrow u + \lambda_t\,\theta

    The same term as :func:`add_l2_to_grad`, but placed after the preconditioner the
    decay bypasses its statistics; the learning-rate step then gives
    :math:`\theta \leftarrow \theta - \alpha_t (u + \lambda\theta)
    = \theta(1 - \alpha_t\lambda) - \alpha_t u`, torch's AdamW. The decay is
    multiplied by the current learning rate :math:`\alpha_t`, as in torch and optax.

    Args:
      weight_decay: λ ≥ 0: a number, a JAX scalar or a schedule of the step count.
      mask: as in :func:`add_l2_to_grad`.

    Returns:
      An ``optax.GradientTransformation`` whose ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = decoupled_weight_decay(0.5, mask={"w": True, "b": False})
      >>> params = {"w": jnp.array([2.0]), "b": jnp.array([2.0])}
      >>> updates, _ = tx.update({"w": jnp.ones(1), "b": jnp.ones(1)}, tx.init(params), params)
      >>> updates["w"], updates["b"]
      (Array([2.], dtype=float32), Array([1.], dtype=float32))
    """
    return _decay_transform(
        "decoupled_weight_decay", _recipe.DECOUPLED, weight_decay, mask, 1.0
    )


def independent_weight_decay(weight_decay: Any, mask: Any = None) -> optax.GradientTransformation:
    r"""Weight decay independent of the learning rate, placed *after* the lr step.

    .. math::

        u \leftarrow u - \lambda_t\,\theta

    so that :math:`\theta \leftarrow \theta - \alpha_t u - \lambda_t\theta`. With
    :math:`\lambda_t = \eta_t\lambda`, :math:`\eta_t` the schedule multiplier
    :math:`\alpha_t/\alpha_{\max}`, this is Loshchilov & Hutter's Algorithm 2 (the
    paper's AdamW); with a constant :math:`\lambda_t = \lambda` it is t5x's Adafactor
    decay. ``wdchain.build`` makes both (placements ``"independent"``, ``"constant"``).

    Args:
      weight_decay: λ_t ≥ 0: a number, a JAX scalar or a schedule of the step count.
      mask: as in :func:`add_l2_to_grad`.

    Returns:
      An ``optax.GradientTransformation`` whose ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = independent_weight_decay(0.1)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> updates, _ = tx.update({"w": jnp.zeros(2)}, tx.init(params), params)
      >>> updates["w"]
      Array([-0.1,  0.2], dtype=float32)
    """
    return _decay_transform(
        "independent_weight_decay", _recipe.INDEPENDENT, weight_decay, mask, -1.0
    )
