"""Precision: hyperparameters that keep theirs, and decay that bfloat16 cannot hold.

wdchain's transforms compute in at least float32 whatever the params' dtype, with
hyperparameters as Python numbers, so β₂ = 0.999 stays 0.999 next to bfloat16
params. Two things can still lose precision, and this module deals with both:

* ``optax.inject_hyperparams`` casts numeric hyperparameters to the params' dtype
  (optax issue 1414): with bfloat16 params, 0.999 becomes 1.0.
  :func:`inject_hyperparams` keeps them in at least float32.
* The decay step ``θ ← θ − lr·λ·θ`` is lost when ``lr·λ`` is below half the
  resolution of the params' dtype (2⁻⁸ for bfloat16): ``θ(1 − lr·λ)`` rounds back
  to θ. :func:`check_decay_precision` warns about it once;
  :func:`compensate_rounding` makes it accumulate instead.
"""

from __future__ import annotations

import functools
import inspect
import warnings
import weakref
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from wdchain import _recipe, _tree, _validate

# Arguments that are never hyperparameters, though they may be callables (which optax
# would take for schedules) or dtypes.
_NEVER_INJECTED = ("mask", "schedule", "mu_dtype", "nu_dtype", "toward", "gate")
_NEVER_SUFFIXES = ("mask", "_dtype")  # corrected_mask, ns_dtype, ...
# Arguments whose zero switches a state slot off: a static zero stays static.
_SWITCHES = ("momentum",)


def _spelled_out(
    factory: Callable[..., Any], signature: inspect.Signature, args: tuple, kwargs: dict
) -> tuple[Callable[..., Any], tuple, dict]:
    """``factory`` and its call, with a ``**options`` argument spelled out by name.

    optax reads the factory's signature to find the hyperparameters; ``build``'s
    ``**options`` would hide them (and be passed on as ``options={}``).
    """
    bound = signature.bind(*args, **kwargs)  # a wrong argument fails here, not at init
    variadic = [p.name for p in signature.parameters.values() if p.kind is p.VAR_KEYWORD]
    if not variadic:
        return factory, args, kwargs
    flat = dict(bound.arguments)
    flat.update(flat.pop(variadic[0], {}))

    def call(**arguments: Any) -> Any:
        return factory(**arguments)

    call.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY) for name in flat]
    )
    return call, (), flat


def inject_hyperparams(
    inner_factory: Callable[..., optax.GradientTransformation],
    static_args: str | Iterable[str] = (),
) -> Callable[..., optax.GradientTransformationExtraArgs]:
    """``optax.inject_hyperparams`` that keeps hyperparameters in at least float32.

    The returned factory takes the same arguments as ``inner_factory``; numeric
    ones (and schedules) live in the state's ``hyperparams`` dict, where they can be
    read or changed between steps. They are held in float32, or in the params'
    dtype when that is wider (float64), never narrower: optax casts them to the
    params' dtype, so with bfloat16 params β = 0.999 becomes 1.0.

    Every numeric hyperparameter is injected, zeros included, and the state inside
    ``hyperparams`` has the plain optimizer's structure: an injected ``momentum=0``
    of ``sgd`` or ``rmsprop`` keeps no buffer, as the plain one (so it cannot be
    switched on later without a new ``init``: see the momentum note of
    :func:`wdchain.sgd`). ``mask``, ``schedule``, ``mu_dtype`` and ``nu_dtype`` are
    never injected (``optax.inject_hyperparams`` takes a callable mask or a dtype for
    a schedule, and wdchain refuses what arrives), and ``build``'s options are.

    Args:
      inner_factory: a wdchain alias or transform factory (any optax one works).
      static_args: names of arguments not to inject, as in optax.

    Returns:
      A factory of ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp
      >>> import wdchain
      >>> params = jnp.ones(2, jnp.bfloat16)
      >>> tx = inject_hyperparams(wdchain.rmsprop)(lr=0.1, alpha=0.999)
      >>> state = tx.init(params)
      >>> state.hyperparams["alpha"]
      Array(0.999, dtype=float32)
    """
    static = {static_args} if isinstance(static_args, str) else set(static_args)
    signature = inspect.signature(inner_factory)

    @functools.wraps(inner_factory)
    def factory(*args: Any, **kwargs: Any) -> optax.GradientTransformationExtraArgs:
        inner, inner_args, inner_kwargs = _spelled_out(inner_factory, signature, args, kwargs)
        names = set(inspect.signature(inner).parameters)
        never = static | {
            name for name in names if name in _NEVER_INJECTED or name.endswith(_NEVER_SUFFIXES)
        }
        # A momentum of 0 switches the buffer off: kept static, the state is the plain
        # optimizer's even under a jitted init (where an injected 0 is a tracer).
        bound = inspect.signature(inner).bind_partial(*inner_args, **inner_kwargs).arguments
        never |= {name for name in _SWITCHES if _validate.is_static_zero(bound.get(name))}

        def injected(dtype: Any) -> optax.GradientTransformationExtraArgs:
            return optax.inject_hyperparams(inner, never, dtype)(*inner_args, **inner_kwargs)

        def init_fn(params: Any) -> Any:
            return injected(_tree.scalar_dtype(params)).init(params)

        def update_fn(updates: Any, state: Any, params: Any = None, **extra_args: Any):
            dtype = _tree.scalar_dtype(updates if params is None else params)
            return injected(dtype).update(updates, state, params, **extra_args)

        tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
        steps = _recipe.recipe(inner_factory(*args, **kwargs))
        return tx if steps is None else _recipe.label(tx, *steps)

    return factory


# --------------------------------------------------------------------------------------
# Decay below the params' resolution.


class DecayPrecisionWarning(UserWarning):
    """The decay step is below the resolution of the params' dtype and is lost."""


def _relative_decay(steps: tuple[_recipe.Step, ...]) -> list[tuple[str, float]]:
    """Each decay step's per-step relative shrinkage of θ, where it is a number."""
    values = {key: value for step in steps for key, value in step.hyperparams}
    lr = _validate.concrete_number(values.get("α"))
    found = []
    for step in steps:
        decay = _validate.concrete_number(dict(step.hyperparams).get("λ"))
        if decay is None or decay == 0:
            continue
        if step.role == _recipe.DECOUPLED and lr is not None:
            found.append((f"lr·λ = {lr:g}·{decay:g}", lr * decay))
        elif step.role == _recipe.INDEPENDENT:
            found.append((f"λ = {decay:g}", decay))
    return found


_WARNED: weakref.WeakSet[Any] = weakref.WeakSet()


def check_decay_precision(tx: optax.GradientTransformation, params: Any) -> bool:
    """Warns (once per optimizer) when the params' dtype cannot hold the decay step.

    With decoupled decay, ``θ ← θ − lr·(u + λθ)``; when ``lr·λ`` (λ for the
    independent placements) is below half the resolution ε/2 of a low-precision
    float leaf (ε = 2⁻⁷ for bfloat16, 2⁻¹⁰ for float16), ``θ·(1 − lr·λ)`` rounds
    to θ and the decay is lost on that leaf unless the gradient step happens to
    carry it. :func:`compensate_rounding` makes it accumulate (and this check
    passes for an optimizer it wraps); float32 master params, with a bfloat16 copy
    cast for the forward pass, work too. Only numbers are checked: a schedule or a
    traced value is not.

    Args:
      tx: a wdchain optimizer (its recipe holds lr and λ).
      params: the params, or ``jax.ShapeDtypeStruct`` s like them.

    Returns:
      True when the decay is below the resolution of some leaf (and a
      :class:`DecayPrecisionWarning` was issued the first time).

    Example:
      >>> import warnings
      >>> import jax.numpy as jnp
      >>> import wdchain
      >>> params = {"w": jnp.ones(4, jnp.bfloat16)}
      >>> with warnings.catch_warnings(record=True) as caught:
      ...     warnings.simplefilter("always")
      ...     check_decay_precision(wdchain.adamw(lr=1e-3, weight_decay=1e-2), params)
      True
      >>> caught[0].category.__name__
      'DecayPrecisionWarning'
    """
    steps = _recipe.recipe(tx) or ()
    decays = _relative_decay(steps)
    if not decays or any(step.name == COMPENSATED for step in steps):
        return False
    lost = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if not _is_low_precision(leaf):
            continue
        dtype = jnp.result_type(leaf)
        half_resolution = float(jnp.finfo(dtype).eps) / 2
        for term, value in decays:
            if value < half_resolution:
                lost.append((jax.tree_util.keystr(path) or "<root>", dtype, term, half_resolution))
    if not lost:
        return False
    if tx.init not in _WARNED:
        _WARNED.add(tx.init)
        where, dtype, term, half_resolution = lost[0]
        warnings.warn(
            f"weight decay is below {jnp.dtype(dtype).name} resolution: {term} < "
            f"{half_resolution:g} for the leaf {where} ({len(lost)} leaf/term pair(s) in "
            "all), so θ·(1 − decay) rounds back to θ and the decay is lost. Wrap the "
            "optimizer in wdchain.compensate_rounding, or keep float32 master params.",
            DecayPrecisionWarning,
            stacklevel=2,
        )
    return True


# Every wdchain chain runs it on init (once, for the outermost optimizer).
_recipe.register_init_check(check_decay_precision)


# --------------------------------------------------------------------------------------
# Compensated summation.

COMPENSATED = "compensate_rounding"


class CompensateRoundingState(NamedTuple):
    compensation: Any  # c: what the params' dtype could not hold yet, one per leaf
    inner_state: Any


def _is_low_precision(leaf: Any) -> bool:
    return _tree.is_float(leaf) and jnp.finfo(jnp.result_type(leaf)).bits <= 16


def compensate_rounding(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    r"""Kahan-compensated updates for bfloat16 and float16 params: small steps accumulate.

    .. math::

        s = \theta + u + c, \qquad \theta' = \operatorname{round}(s), \qquad
        c' = s - \theta'

    on each low-precision float leaf, in float32, where u is ``tx``'s update and c
    the compensation kept in the state (in the leaf's dtype, so it costs one more
    copy of those params). The returned update is ``θ' − θ``, which
    ``optax.apply_updates`` adds back exactly, so the params follow the float32 sum
    to within their resolution: a decay step ``lr·λ·θ`` below half of it (see
    :func:`check_decay_precision`) is no longer lost but builds up in c until it
    moves θ. Other leaves pass through unchanged. ``tx``'s own update is still
    rounded to the params' dtype before it gets here.

    Args:
      tx: the optimizer to wrap. Apply its updates with ``optax.apply_updates``.

    Returns:
      An ``optax.GradientTransformation`` whose ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> import wdchain
      >>> tx = compensate_rounding(wdchain.adamw(lr=1e-3, weight_decay=1e-2))
      >>> params = jnp.full(2, 1.5, jnp.bfloat16)
      >>> state = tx.init(params)
      >>> for _ in range(1000):  # lr·λ = 1e-5 a step, far below bfloat16's 2⁻⁸
      ...     updates, state = tx.update(jnp.zeros(2, jnp.bfloat16), state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> params  # 1.5·(1 − 1e-5)^1000 = 1.48508, to bfloat16's resolution
      Array([1.48438, 1.48438], dtype=bfloat16)
    """
    where = "compensate_rounding"

    def init_fn(params: Any) -> CompensateRoundingState:
        compensation = jax.tree.map(
            lambda p: jnp.zeros_like(p) if _is_low_precision(p) else jnp.zeros([], jnp.float32),
            params,
        )
        with _recipe.outermost_init(wrapped, params):  # passes: the decay accumulates here
            return CompensateRoundingState(compensation, tx.init(params))

    def update_fn(updates: Any, state: CompensateRoundingState, params: Any = None):
        _tree.require_params(where, params)
        updates, inner_state = tx.update(updates, state.inner_state, params)
        _tree.check_same_shapes(where, "params", params, "updates", updates)

        def step(u: jax.Array, p: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
            if not _is_low_precision(p):
                return u, c
            target = p.astype(jnp.float32) + u.astype(jnp.float32) + c.astype(jnp.float32)
            rounded = target.astype(p.dtype)
            delta = (rounded.astype(jnp.float32) - p.astype(jnp.float32)).astype(p.dtype)
            applied = (p + delta).astype(p.dtype)  # what optax.apply_updates will give
            return delta, (target - applied.astype(jnp.float32)).astype(c.dtype)

        new_updates, compensation = _tree.unzip(
            updates, jax.tree.map(step, updates, params, state.compensation), 2
        )
        return new_updates, CompensateRoundingState(compensation, inner_state)

    wrapped = optax.GradientTransformation(init_fn, update_fn)
    inner = _recipe.recipe(tx)
    if inner is None:  # not built by wdchain: leave it unlabelled, so describe says so
        return wrapped
    return _recipe.label(wrapped, *inner, _recipe.Step(COMPENSATED, "precision"))
