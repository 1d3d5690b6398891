"""Helpers the transforms share: dtypes, masks, tree checks, bias correction.

Conventions, applied by every transform:

* Only floating-point leaves are optimised. Integer and boolean leaves get a zero
  update and are never decayed; their state slots are kept but never change.
* ``None`` leaves and ``optax.MaskedNode`` are empty subtrees for JAX, so they pass
  through every map untouched.
* Arithmetic runs in at least float32 (``compute_dtype``); results are cast back to
  the dtype of the update, and statistics to the dtype they are stored in. So
  hyperparameters keep their precision with bfloat16 parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from wdchain import _validate


def is_float(x: Any) -> bool:
    """True for floating-point leaves: the ones an optimizer updates."""
    return jnp.issubdtype(jnp.result_type(x), jnp.floating)


def compute_dtype(dtype: Any) -> Any:
    """The dtype arithmetic runs in: the leaf's own dtype, but at least float32."""
    return jnp.promote_types(dtype, jnp.float32)


def cast(x: jax.Array, dtype: Any) -> jax.Array:
    """``x`` in ``dtype``; no operation when it already is one (short traces on
    trees of thousands of leaves)."""
    if x.dtype == dtype and not getattr(jax.typeof(x), "weak_type", False):
        return x
    return x.astype(dtype)


def lerp(start: jax.Array, end: jax.Array, weight: Any) -> jax.Array:
    """``start + weight·(end − start)``: a running mean as torch's ``lerp_`` forms it."""
    return start + weight * (end - start)


def per_dtype(make: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``make(dtype)``, formed once per compute dtype and shared by every leaf.

    Scalars such as bias corrections do not depend on the leaf: forming them once
    per update instead of once per leaf keeps the trace and the compile time of a
    tree of n leaves from growing with n times their cost.
    """
    cache: dict[Any, Any] = {}

    def get(dtype: Any) -> Any:
        key = jnp.dtype(dtype)
        if key not in cache:
            cache[key] = make(key)
        return cache[key]

    return get


def scalar_dtype(tree: Any) -> Any:
    """float32, or a wider float dtype (float64) when a leaf of ``tree`` has one: the
    dtype of scalar state and hyperparameters, never narrower than float32."""
    dtypes = [jnp.result_type(leaf) for leaf in jax.tree.leaves(tree) if is_float(leaf)]
    return jnp.result_type(jnp.float32, *dtypes)


def key_name(entry: Any) -> str:
    """A path entry (dict key, attribute, index) as plain text."""
    for attribute in ("key", "name", "idx"):
        if hasattr(entry, attribute):
            return str(getattr(entry, attribute))
    return str(entry)


def value_at(value: Any, count: jax.Array) -> Any:
    """A hyperparameter's value at a step: ``value(count)`` for a schedule."""
    return value(count) if callable(value) else value


def zeros_like_params(params: Any, dtype: Any = None) -> Any:
    """Zero statistics, one per leaf, in ``dtype`` (default: the leaf's own dtype).

    Non-float leaves keep their own dtype; their slot is never updated.
    """

    def zeros(p: Any) -> jax.Array:
        use_dtype = dtype if dtype is not None and is_float(p) else jnp.result_type(p)
        return jnp.zeros_like(p, use_dtype)  # *_like: the slot keeps the leaf's sharding

    return jax.tree.map(zeros, params)


def full_like_params(params: Any, value: Any) -> Any:
    """Statistics initialised to ``value`` on float leaves (zero elsewhere)."""

    def full(p: Any) -> jax.Array:
        if not is_float(p):
            return jnp.zeros_like(p, jnp.result_type(p))
        return jnp.full_like(p, value, jnp.result_type(p))

    return jax.tree.map(full, params)


def unzip(like: Any, tree_of_tuples: Any, n: int) -> tuple[Any, ...]:
    """Splits a tree whose leaves became n-tuples into n trees shaped like ``like``."""
    return tuple(
        jax.tree.map(lambda _, t, i=i: t[i], like, tree_of_tuples) for i in range(n)
    )


def map_float(step: Callable[..., tuple], updates: Any, *states: Any) -> tuple[Any, ...]:
    """Maps ``step(u, *s) -> (u', *s')`` over the float leaves.

    Non-float leaves get a zero update and keep their state. Returns the new updates
    followed by the new state trees.
    """

    def leaf(u: Any, *s: Any) -> tuple:
        if not is_float(u):
            return (jnp.zeros_like(u), *s)
        return step(u, *s)

    return unzip(updates, jax.tree.map(leaf, updates, *states), 1 + len(states))


# --------------------------------------------------------------------------------------
# Errors that name the offending path.


NO_PARAMS_MESSAGE = (
    "{where} needs the current parameters to compute the decay term λ·θ, but "
    "update() was called without them. Call tx.update(updates, state, params)."
)


def require_params(where: str, params: Any) -> None:
    if params is None:
        raise ValueError(NO_PARAMS_MESSAGE.format(where=where))


def _paths(tree: Any) -> list[str]:
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is None)[0]
    return [jax.tree_util.keystr(path) or "<root>" for path, _ in leaves]


def first_difference(
    a: Any, b: Any, name_a: str = "the first tree", name_b: str = "the second tree"
) -> str:
    """A short description of where two trees first differ."""
    paths_a, paths_b = _paths(a), _paths(b)
    for path_a, path_b in zip(paths_a, paths_b):
        if path_a != path_b:
            return f"{name_a} has {path_a} where {name_b} has {path_b}"
    if len(paths_a) != len(paths_b):
        longer, name = (paths_a, name_a) if len(paths_a) > len(paths_b) else (paths_b, name_b)
        return f"{name} has an extra leaf at {longer[min(len(paths_a), len(paths_b))]}"
    return (
        "same leaf paths but different node types: "
        f"{jax.tree.structure(a)} vs {jax.tree.structure(b)}"
    )


def check_same_tree(where: str, name_a: str, a: Any, name_b: str, b: Any) -> None:
    """Raises a ValueError naming the first path where ``a`` and ``b`` differ."""
    structure_a: Any = jax.tree.structure(a)  # jaxlib's PyTreeDef has no type stubs
    if structure_a != jax.tree.structure(b):
        raise ValueError(
            f"{where}: {name_b} does not have the structure of {name_a}: "
            f"{first_difference(a, b, name_a, name_b)}."
        )


def check_same_shapes(where: str, name_a: str, a: Any, name_b: str, b: Any) -> None:
    """Raises a ValueError naming the first leaf whose shape differs."""
    check_same_tree(where, name_a, a, name_b, b)
    flat_a = jax.tree_util.tree_flatten_with_path(a)[0]
    for (path, leaf_a), leaf_b in zip(flat_a, jax.tree.leaves(b)):
        if jnp.shape(leaf_a) != jnp.shape(leaf_b):
            raise ValueError(
                f"{where}: {name_b}{jax.tree_util.keystr(path)} has shape "
                f"{jnp.shape(leaf_b)}, but {name_a} has shape {jnp.shape(leaf_a)} there."
            )


def require_real(where: str, params: Any) -> None:
    """wdchain optimizes real leaves only: a complex one is refused, never skipped."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if jnp.iscomplexobj(leaf):
            raise TypeError(
                f"{where}: the leaf at {jax.tree_util.keystr(path)} is complex. torch "
                "treats real and imaginary parts as separate parameters; wrap the "
                "optimizer in optax.contrib.split_real_and_imaginary to do the same."
            )


# --------------------------------------------------------------------------------------
# Masks.


Mask = Any  # None | pytree of bools (a prefix of the params) | Callable[[params], pytree]


def resolve_mask(where: str, mask: Mask, params: Any) -> Any:
    """The mask as a full tree of booleans shaped like ``params``, or None.

    ``mask`` may be a prefix of the params tree (``{"encoder": False}`` switches a
    whole subtree), or a callable of the params returning such a tree.
    """
    if mask is None:
        return None
    tree = mask(params) if callable(mask) else mask
    _validate.check_mask(where, tree, resolved=True)
    check_mask_container(where, tree, params)
    try:
        return jax.tree.map(
            lambda m, sub: jax.tree.map(lambda _: m, sub), tree, params
        )
    except ValueError:
        raise ValueError(
            f"{where}: the mask is not a prefix of the params tree: "
            f"{_mask_mismatch(tree, params)}."
        ) from None


def _is_nnx_state(node: Any) -> bool:
    from flax import nnx  # flax is a dependency; imported here to keep this module light

    return isinstance(node, nnx.State)


def check_mask_container(where: str, mask_tree: Any, params: Any) -> None:
    """A plain dict mask for an ``nnx.State`` of params: refused with the fix.

    ``nnx.Optimizer`` passes the params as an ``nnx.State``; a dict with the same keys
    is not a prefix of it (another node type), and the mismatch would otherwise show
    as two whole tree structures.
    """
    if not (_is_nnx_state(params) and isinstance(mask_tree, Mapping)):
        return
    if _is_nnx_state(mask_tree):
        return
    raise ValueError(
        f"{where}: the mask is a {type(mask_tree).__name__} but the params are an "
        "nnx.State (as nnx.Optimizer passes them), and a plain dict is not a prefix of "
        "an nnx.State. Pass mask=wdchain.decay_mask (a callable), or the tree it "
        "returns for nnx.state(model, nnx.Param), or nnx.State(your_dict)."
    )


def _mask_mismatch(mask_tree: Any, params: Any) -> str:
    """The first path one of the two trees has and the other lacks, for error messages."""
    for path, _ in jax.tree_util.tree_flatten_with_path(mask_tree)[0]:
        if _missing_prefix(params, path) is not None:
            return f"the mask has {jax.tree_util.keystr(path)}, the params do not"
    for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
        missing = _missing_prefix(mask_tree, path, stop=_is_mask_leaf)
        if missing is not None:
            return f"the params have {jax.tree_util.keystr(missing)}, the mask does not"
    return f"mask {jax.tree.structure(mask_tree)} vs params {jax.tree.structure(params)}"


def _missing_prefix(
    tree: Any, path: tuple, stop: Callable[[Any], bool] = lambda node: False
) -> tuple | None:
    """The shortest prefix of ``path`` that ``tree`` does not have (None: it has the
    path, or reaches a node where ``stop`` holds first)."""
    node = tree
    for depth, key in enumerate(path):
        if stop(node):
            return None
        try:
            node = _child(node, key)
        except (KeyError, IndexError, TypeError, AttributeError):
            return path[: depth + 1]
    return None


def _is_mask_leaf(node: Any) -> bool:
    return node is None or isinstance(node, (bool, np.bool_, np.ndarray, jax.Array))


def _child(node: Any, key: Any) -> Any:
    if isinstance(key, jax.tree_util.GetAttrKey):
        return getattr(node, key.name)
    if isinstance(key, jax.tree_util.DictKey):
        return node[key.key]
    if isinstance(key, jax.tree_util.SequenceKey):
        return node[key.idx]
    raise KeyError(key)


def is_static_true(m: Any) -> bool:
    return isinstance(m, (bool, np.bool_)) and bool(m)


def is_static_false(m: Any) -> bool:
    return isinstance(m, (bool, np.bool_)) and not bool(m)


# --------------------------------------------------------------------------------------
# Bias correction.


def log_decay(decay: Any, dtype: Any) -> jax.Array:
    """log(decay) in ``dtype``, taken in double precision for a concrete number."""
    number = _validate.concrete_number(decay)
    if number is None:
        return jnp.log(jnp.asarray(decay, dtype))
    return jnp.asarray(math.log(number) if number > 0 else -math.inf, dtype)


def power(decay: Any, count: jax.Array, dtype: Any) -> jax.Array:
    """``decay**count`` in ``dtype``: torch's double expression in float64, else
    ``exp(count·log(decay))`` with the log in double precision."""
    t = jnp.asarray(count).astype(dtype)
    if jnp.dtype(dtype) == jnp.float64:
        return jnp.asarray(decay, dtype) ** t
    return jnp.exp(t * log_decay(decay, dtype))


def bias_correction(decay: Any, count: jax.Array, dtype: Any) -> jax.Array:
    """``1 − decay**count`` in ``dtype``.

    In float64 this is the expression torch evaluates in Python doubles. In lower
    precision it is ``−expm1(count·log(decay))`` with ``log(decay)`` taken in double
    precision when ``decay`` is a concrete number: ``1 − 0.999**t`` in float32 both
    rounds β to 0.99900001 and cancels catastrophically (1.5e-5 relative at t = 1).
    """
    if jnp.dtype(dtype) == jnp.float64:
        return 1 - power(decay, count, dtype)
    return -jnp.expm1(jnp.asarray(count).astype(dtype) * log_decay(decay, dtype))
