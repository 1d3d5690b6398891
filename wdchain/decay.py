"""The one weight-decay term, and the transforms that place it.

Every decay method since 2019 is one choice on four axes, and :func:`decay_term` takes
all four: its placement (the role and sign of its slot in the chain), its scale c_t,
its gate G_t and its target θ*. The generic decoupled rule is

.. math::

    \\theta \\leftarrow \\theta - \\alpha_t u_t - c_t\\,\\lambda\\,G_t \\odot (\\theta - \\theta^*)

========================  =============================================  =====================
axis, value               rule                                           source
========================  =============================================  =====================
placement ``l2``          u ← u + λθ before the preconditioner           torch ``weight_decay``
placement ``decoupled``   u ← u + λθ after it, before the lr             torch AdamW
placement ``independent`` u ← u − λ_tθ after the lr                      Loshchilov & Hutter
scale ``"corrected"``     c_t = α_t·η_t = α_t²/α_max                     Defazio 2025 (AdamC)
scale ``"stable"``        c_t = α_t/√v̄_t, v̄_t = mean of Adam's v̂_t      Xie et al. 2023 (SWD)
gate ``"cautious"``       G_t = 𝕀(u_t ⊙ (θ − θ*) ≥ 0), u_t the final     Chen et al. 2025 (CWD)
                          update direction; ties decay
target ``toward``         θ* = θ₀ (captured at init) or a given tree     Li et al. 2018 (L2-SP)
========================  =============================================  =====================

:func:`add_l2_to_grad`, :func:`decoupled_weight_decay` and
:func:`independent_weight_decay` are :func:`decay_term` at one placement with no scale,
gate or target; :func:`decay_target` is the one slot that holds θ* (one copy of the
params). ``build`` hands θ* and 1/√v̄_t to the decay slots through keyword arguments of
their ``update``. ASGD's shrinkage computes the same per-leaf sum,
:func:`add_decay_term`.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from wdchain import _recipe, _tree, _validate

GATES = (None, "cautious")


class WeightDecayState(NamedTuple):
    """State of every decay transform, whatever its placement."""

    # int32 scalar: updates so far, the weight-decay schedule's step (named step: the
    # optimizer's one ``count`` is the learning-rate step's)
    step: jax.Array


def add_decay_term(u: jax.Array, p: jax.Array, coefficient: Any, target: Any = None,
                   gate_sign: float | None = None) -> jax.Array:
    """``u + c·G·(θ − θ*)`` on one float leaf, in its compute dtype; other leaves pass.

    θ* = 0 when ``target`` is None; G = 1 when ``gate_sign`` is None, else the cautious
    gate 𝕀(s·u ⊙ (θ − θ*) ≥ 0) with s = ``gate_sign``.
    """
    if not _tree.is_float(u):
        return u
    dtype = _tree.compute_dtype(u.dtype)
    u_c = _tree.cast(u, dtype)
    offset = _tree.cast(p, dtype)
    if target is not None:
        offset = offset - _tree.cast(target, dtype)
    term = coefficient * offset
    if gate_sign is not None:
        term = jnp.where(gate_sign * u_c * offset >= 0, term, jnp.zeros_like(term))
    return _tree.cast(u_c + term, u.dtype)


def _warn_if_nothing_decays(where: str, weight_decay: Any, mask: Any, params: Any) -> None:
    """Warns (at init) when λ is not zero but the mask selects no float leaf. A traced λ
    (a grid's cell under ``vmap``) may be zero: its caller knows, so nothing is said."""
    if isinstance(weight_decay, jax.core.Tracer):
        return
    try:
        masks = _tree.resolve_mask(where, mask, params)
    except Exception:  # a callable mask that needs concrete params: its update will say
        return
    float_masks = [m for m, p in zip(jax.tree.leaves(masks), jax.tree.leaves(params))
                   if _tree.is_float(p)]
    if not float_masks or all(_tree.is_static_false(m) or _is_concrete_false(m)
                              for m in float_masks):
        warnings.warn(
            f"{where}: weight_decay={_recipe.format_value(weight_decay)} reaches no leaf: the "
            f"mask selects none of the {len(float_masks)} float leaves, so nothing decays. "
            "Check the mask (wdchain.mask_report shows what it selects), or set "
            "weight_decay=0 if no decay is meant.",
            UserWarning, stacklevel=4,
        )


def _is_concrete_false(m: Any) -> bool:
    if isinstance(m, jax.core.Tracer):
        return False
    try:
        return not bool(np.any(np.asarray(m)))
    except (TypeError, ValueError):
        return False


def _is_masked(node: Any) -> bool:
    return isinstance(node, optax.MaskedNode)


class DecayTargetState(NamedTuple):
    """θ*, the point the decay pulls toward: one copy of the params."""

    target: Any


def check_toward(where: str, toward: Any) -> None:
    """``toward`` is None, ``"init"`` or a pytree of arrays."""
    if toward is None or (isinstance(toward, str) and toward == "init"):
        return
    if isinstance(toward, str) or callable(toward):
        raise ValueError(
            f"{where}: toward must be None (decay toward 0), 'init' (toward the params "
            f"at init) or a pytree of arrays shaped like the params, got {toward!r}"
        )
    leaves = jax.tree.leaves(toward)
    if not leaves or not all(hasattr(leaf, "shape") or isinstance(leaf, (int, float))
                             for leaf in leaves):
        raise ValueError(
            f"{where}: toward must be None, 'init' or a pytree of arrays shaped like the "
            f"params (a pretrained model, say), got {type(toward).__name__} {toward!r:.80}"
        )


def check_gate(where: str, gate: Any) -> None:
    if not (gate is None or (isinstance(gate, str) and gate in GATES)):
        raise ValueError(
            f"{where}: unknown gate {gate!r}; use None (decay every selected entry) or "
            "'cautious' (decay only where the update moves θ toward θ*, Chen et al. 2025)"
        )


def decay_target(toward: Any) -> optax.GradientTransformation:
    r"""Holds θ*, the point a decay pulls toward; its update is the identity.

    .. math::

        \theta^* = \theta_0 \ (\text{toward="init"}) \quad\text{or}\quad
        \theta^* = \text{toward} \ (\text{a pytree})

    θ₀ is copied at ``init``; a given tree is cast to the params' dtypes. Either
    way the state holds one copy of the params.

    Args:
      toward: ``"init"`` or a pytree shaped like the params.

    Returns:
      An ``optax.GradientTransformation`` with a ``DecayTargetState``.
    """
    where = "build(toward=...)"
    check_toward(where, toward)

    def init_fn(params: Any) -> DecayTargetState:
        if isinstance(toward, str):
            return DecayTargetState(jax.tree.map(
                lambda p: p if _is_masked(p) else jnp.array(p, copy=True), params,
                is_leaf=_is_masked))

        def cast(p: Any, t: Any) -> Any:
            if _is_masked(p):
                return p
            if jnp.shape(t) != jnp.shape(p):
                raise ValueError(
                    f"{where}: a leaf of toward has shape {jnp.shape(t)} where the params "
                    f"have {jnp.shape(p)}; give a tree shaped like the params"
                )
            return jnp.asarray(t, jnp.result_type(p))

        try:
            target = jax.tree.map(cast, params, toward, is_leaf=_is_masked)
        except (ValueError, TypeError) as error:
            if str(error).startswith(where):
                raise
            raise ValueError(
                f"{where}: toward does not have the structure of the params: "
                f"{_tree.first_difference(params, toward, 'the params', 'toward')}"
            ) from None
        return DecayTargetState(target)

    def update_fn(updates: Any, state: DecayTargetState, params: Any = None):
        del params
        return updates, state

    return _recipe.label(optax.GradientTransformation(init_fn, update_fn))


def decay_term(
    where: str,
    role: str,
    weight_decay: Any,
    mask: Any,
    sign: float,
    *,
    eta: Any = None,
    eta_mask: Any = None,
    stable: bool = False,
    gate: str | None = None,
    toward: Any = None,
    decay_scale: str | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""A decay slot with a scale, a gate and a target.

    .. math::

        u \leftarrow u + s\,\lambda_t\,k_t\,G_t \odot (\theta - \theta^*), \qquad
        G_t = \mathbb{1}\big(s\,u \odot (\theta - \theta^*) \ge 0\big)

    with s = ``sign`` (+1 before the learning rate, −1 after it, so that s·u is the
    descent direction u_t there), k_t = η_t (``eta``, on the leaves ``eta_mask``
    selects) or 1/√v̄_t (``stable``, passed to ``update`` as ``decay_multiplier``),
    G_t = 1 without a gate, and θ* = 0 or ``decay_target`` (passed to ``update``).
    The state is the plain decay's ``WeightDecayState``, whatever the options.
    ``decay_scale`` labels how a decay after the lr is scaled (default: ``"1"``, or
    ``"λ_t schedule"`` for a schedule).
    """
    _validate.check_schedule_or_number(where, "weight_decay", weight_decay)
    _validate.check_mask(where, mask)
    switched_off = _validate.is_static_zero(weight_decay)

    def init_fn(params: Any) -> WeightDecayState:
        _tree.require_real(where, params)
        if mask is not None and not callable(mask) and not switched_off:
            _tree.resolve_mask(where, mask, params)  # a mask that does not fit: at init
        if mask is not None and not switched_off:
            _warn_if_nothing_decays(where, weight_decay, mask, params)
        return WeightDecayState(step=jnp.zeros([], jnp.int32))

    def update_fn(updates: Any, state: WeightDecayState, params: Any = None, *,
                  decay_target: Any = None, decay_multiplier: Any = None, **extra: Any):
        del extra
        next_state = WeightDecayState(step=optax.safe_increment(state.step))
        if switched_off:
            return updates, next_state
        _tree.require_params(where, params)
        _tree.check_same_shapes(where, "params", params, "updates", updates)
        coefficient = sign * _tree.value_at(weight_decay, state.step)
        if stable:
            coefficient = coefficient * decay_multiplier
        scaled = coefficient if eta is None else coefficient * eta(state.step)
        masks = _tree.resolve_mask(where, mask, params)
        if masks is None:
            masks = jax.tree.map(lambda _: True, params)
        scale_masks = _tree.resolve_mask(where, eta_mask, params)
        if scale_masks is None:
            scale_masks = jax.tree.map(lambda _: True, params)
        targets = decay_target if toward is not None else params  # (unused without toward)

        def decay(u: jax.Array, p: jax.Array, m: Any, e: Any, t: Any) -> jax.Array:
            if not _tree.is_float(u) or _tree.is_static_false(m):
                return u
            c = scaled if _tree.is_static_true(e) else jnp.where(e, scaled, coefficient)
            c = c if _tree.is_static_true(m) else jnp.where(m, c, 0)
            return add_decay_term(u, p, c, t if toward is not None else None,
                                  sign if gate == "cautious" else None)

        return jax.tree.map(decay, updates, params, masks, scale_masks, targets), next_state

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    if switched_off:
        return _recipe.label(tx)
    if role == _recipe.INDEPENDENT and decay_scale is None:
        decay_scale = "λ_t schedule" if callable(weight_decay) else "1"
    hyperparams: tuple[tuple[str, Any], ...] = (("λ", weight_decay),)
    if mask is not None:
        hyperparams += (("mask", "callable" if callable(mask) else "tree"),)
    if stable:
        hyperparams += (("scale", "1/√v̄_t"),)
    if eta_mask is not None:
        hyperparams += (("η_t on", "callable" if callable(eta_mask) else "tree"),)
    if gate is not None:
        hyperparams += (("gate", gate),)
    if toward is not None:
        hyperparams += (("toward", "θ₀" if isinstance(toward, str) else "tree"),)
    return _recipe.label(tx, _recipe.Step(role, role, hyperparams, decay_scale))


def mean_second_moment(second_moments: Any) -> jax.Array:
    """v̄: the mean of every float entry of a tree of second moments (one all-reduce
    under sharding)."""
    leaves = [v for v in jax.tree.leaves(second_moments) if _tree.is_float(v)]
    dtype = jnp.result_type(*leaves)
    total = sum(jnp.sum(v.astype(dtype)) for v in leaves)
    size = sum(v.size for v in leaves)
    return total / size


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
    return decay_term("add_l2_to_grad", _recipe.L2, weight_decay, mask, 1.0)


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
    return decay_term("decoupled_weight_decay", _recipe.DECOUPLED, weight_decay, mask, 1.0)


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
    return decay_term("independent_weight_decay", _recipe.INDEPENDENT, weight_decay, mask, -1.0)
