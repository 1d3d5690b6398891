"""Heavy-ball and Nesterov momentum with torch's buffer semantics."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from wdchain import _recipe, _tree, _validate
from wdchain.registry import register_preconditioner
from wdchain.types import Options


def check_options(where: str, options: Options) -> None:
    """Momentum's options: μ ≥ 0, τ finite, ``nesterov`` (which needs μ > 0, τ = 0)."""
    momentum, dampening, nesterov = (options[k] for k in ("momentum", "dampening", "nesterov"))
    _validate.check_range(where, "momentum", momentum)
    _validate.check_range(where, "dampening", dampening, low=-float("inf"))
    _validate.check_flag(where, "nesterov", nesterov)
    check_nesterov(where, momentum, dampening, nesterov)


class ScaleByMomentumState(NamedTuple):
    # int32 scalar: updates so far (the first fills the buffer); named step, not
    # count: the optimizer's one ``count`` is its learning-rate step's (see
    # ScaleByLearningRateState)
    step: jax.Array
    trace: Any  # momentum buffer b, one per leaf


def scale_by_momentum(
    momentum: Any, dampening: Any = 0.0, nesterov: bool = False
) -> optax.GradientTransformation:
    r"""Momentum as torch's SGD keeps it.

    .. math::

        b_1 = g_1, \qquad b_t \leftarrow \mu\, b_{t-1} + (1 - \tau)\, g_t, \qquad
        u_t = \begin{cases} g_t + \mu\, b_t & \text{Nesterov} \\
                            b_t & \text{otherwise} \end{cases}

    with μ = ``momentum`` and τ = ``dampening``. The first buffer is the gradient
    itself, undampened (torch's ``clone`` on the first step); ``optax.trace`` starts
    from zero and has no dampening, so the two agree only when τ = 0. With μ = 0 the
    update is the gradient, whatever τ, as torch's ``momentum=0``.

    Args:
      momentum: μ ≥ 0 (torch accepts μ > 1 and so does this).
      dampening: τ, any finite number (torch default 0).
      nesterov: use Nesterov's update; needs μ > 0 and τ = 0 (checked when they are
        concrete numbers).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_momentum(0.9, dampening=0.5)
      >>> state = tx.init(jnp.zeros(1))
      >>> u1, state = tx.update(jnp.array([1.0]), state)
      >>> u2, state = tx.update(jnp.array([1.0]), state)
      >>> u1, u2  # b1 = g1; b2 = 0.9·1 + 0.5·1
      (Array([1.], dtype=float32), Array([1.4], dtype=float32))
    """
    where = "scale_by_momentum"
    check_options(where, {"momentum": momentum, "dampening": dampening, "nesterov": nesterov})
    undamped = _validate.is_static_zero(dampening)  # then (1 − τ) = 1 on every step

    def init_fn(params: Any) -> ScaleByMomentumState:
        _tree.require_real(where, params)
        return ScaleByMomentumState(
            step=jnp.zeros([], jnp.int32), trace=_tree.zeros_like_params(params)
        )

    def update_fn(updates: Any, state: ScaleByMomentumState, params: Any = None):
        del params
        _tree.check_same_shapes(where, "state.trace", state.trace, "updates", updates)
        # b starts at zero, so b_1 = μ·0 + 1·g_1 = g_1 exactly: only the gradient's
        # coefficient changes on the first step (and when μ = 0, as in torch).
        undampened = (state.step == 0) | (jnp.asarray(momentum) == 0)
        grad_coefficient = jnp.where(undampened, 1.0, 1.0 - jnp.asarray(dampening))
        coefficient_in = _tree.per_dtype(lambda dtype: grad_coefficient.astype(dtype))

        def step(g: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
            dtype = _tree.compute_dtype(g.dtype)
            g_c = _tree.cast(g, dtype)
            b_new = momentum * _tree.cast(b, dtype) + (
                g_c if undamped else coefficient_in(dtype) * g_c  # no ×1 per leaf
            )
            u = g_c + momentum * b_new if nesterov else b_new
            return _tree.cast(u, g.dtype), _tree.cast(b_new, b.dtype)

        updates, trace = _tree.map_float(step, updates, state.trace)
        return updates, ScaleByMomentumState(optax.safe_increment(state.step), trace)

    tx = optax.GradientTransformation(init_fn, update_fn)
    hyperparams: tuple[tuple[str, Any], ...] = (("μ", momentum),)
    if not _validate.is_static_zero(dampening):
        hyperparams += (("τ", dampening),)
    if nesterov:
        hyperparams += (("nesterov", True),)
    return _recipe.label(tx, _recipe.Step("momentum", _recipe.PRECONDITIONER, hyperparams))


def momentum_slot(
    where: str, momentum: Any, dampening: Any = 0.0, nesterov: bool = False
) -> optax.GradientTransformation:
    r"""The momentum step of an optimizer whose momentum may be 0 (``sgd``, ``rmsprop``).

    With μ = 0 (torch's default) the plain optimizer has no buffer. A Python or
    NumPy 0 leaves the slot empty; a non-zero number makes :func:`scale_by_momentum`.
    A JAX array is what ``optax.inject_hyperparams`` hands the factory: concrete at
    ``init``, traced at a jitted ``update``. Its slot follows the state it was
    given: a μ that is 0 at ``init`` keeps no buffer (``optax.EmptyState``, the
    plain optimizer's state, so a checkpoint of one loads into the other), any
    other μ keeps one. A μ that becomes non-zero after an ``init`` with μ = 0 has
    no buffer to use: it is refused when concrete, and makes the update NaN when
    traced, never silently dropped. Re-``init`` the optimizer, or start a momentum
    schedule above 0.
    """
    if _validate.is_static_zero(momentum):
        return _recipe.nothing()
    inner = scale_by_momentum(momentum, dampening, nesterov)
    if not isinstance(momentum, jax.Array):
        return inner

    def init_fn(params: Any) -> Any:
        if _validate.is_concrete_zero(momentum):
            return optax.EmptyState()
        return inner.init(params)

    def update_fn(updates: Any, state: Any, params: Any = None):
        if not isinstance(state, optax.EmptyState):
            return inner.update(updates, state, params)
        number = _validate.concrete_number(momentum)
        if number is not None and number != 0:
            raise ValueError(
                f"{where}: momentum is {number:g}, but the state was made with momentum 0 "
                "and has no momentum buffer (the plain optimizer's state). Call tx.init "
                "again with the new momentum, or start a momentum schedule above 0."
            )
        if number is not None:
            return updates, state
        # Traced: unknown here. A momentum switched on after init would have no buffer;
        # the update is NaN then, so the mistake cannot pass unnoticed.
        off = jnp.asarray(momentum) == 0
        return jax.tree.map(
            lambda u: jnp.where(off, u, jnp.nan).astype(u.dtype) if _tree.is_float(u) else u,
            updates,
        ), state

    tx = optax.GradientTransformation(init_fn, update_fn)
    return _recipe.label(tx, *(_recipe.recipe(inner) or ()))


def check_nesterov(where: str, momentum: Any, dampening: Any, nesterov: bool) -> None:
    """torch's rule: Nesterov momentum needs μ > 0 and τ = 0."""
    if not nesterov:
        return
    mu = _validate.concrete_number(momentum)
    tau = _validate.concrete_number(dampening)
    if (mu is not None and mu <= 0) or (tau is not None and tau != 0):
        raise ValueError(
            f"{where}: nesterov=True needs momentum > 0 and dampening = 0, got "
            f"momentum={momentum!r}, dampening={dampening!r}"
        )


register_preconditioner(
    "momentum", scale_by_momentum, options={"momentum": 0.9, "dampening": 0.0, "nesterov": False},
    check=check_options, lr_span=(-2.5, 0.0),
    summary="torch's SGD momentum buffer (μ = 0.9 by default: μ = 0 is \"sgd\")",
    torch="SGD", alias="sgd",
)
