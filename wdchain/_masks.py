"""Ready-made weight-decay masks for Flax parameter trees, by path rules.

The usual practice (and torch's param-group idiom) is to decay the weight matrices
and kernels, and not the biases or the normalisation layers' scales. Flax names them
consistently, in linen and in nnx alike: ``bias`` for every bias, ``scale`` for the
gain of ``LayerNorm``, ``RMSNorm``, ``BatchNorm`` and ``GroupNorm``, ``embedding``
for ``Embed``'s table, ``kernel`` for ``Dense``/``Linear``/``Conv``. The rules look at
these path names only, never at ``ndim``: a LayerNorm scale in a layer stacked by
``nn.scan`` or ``nnx.vmap`` is 2-D, and a stacked bias is 2-D too.

A mask built from a tree keeps that tree's type (dict, ``FrozenDict``, ``nnx.State``),
so it can be passed as ``mask=`` of every wdchain optimizer, as a tree of booleans or
as the callable :func:`decay_mask` itself.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from wdchain import _tree, _validate

# Leaf names that are never decayed, and why.
_NO_DECAY = {"bias": "bias", "scale": "normalisation scale"}
_EMBEDDING = "embedding"


def _is_variable(node: Any) -> bool:
    return isinstance(node, nnx.Variable)


def _value(leaf: Any) -> Any:
    """The array of a leaf, seen through an nnx Variable."""
    return leaf.get_value() if _is_variable(leaf) else leaf


def _leaf_name(path: tuple) -> str:
    names = [_tree.key_name(key) for key in path]
    while names and names[-1] == "value":  # an nnx Variable seen through its value
        names.pop()
    return names[-1] if names else ""


def _path_text(path: tuple) -> str:
    """``('encoder', 0, 'kernel')`` as ``encoder/0/kernel`` (nnx's ``value`` left out)."""
    names = [_tree.key_name(key) for key in path]
    while names and names[-1] == "value":
        names.pop()
    return "/".join(names)


def _matches(pattern: str, path: tuple) -> bool:
    """A glob on the whole path (``encoder/*/pos_embed``) or on the leaf's name."""
    return fnmatch.fnmatchcase(_path_text(path), pattern) or fnmatch.fnmatchcase(
        _leaf_name(path), pattern
    )


def _patterns(where: str, name: str, value: Any) -> tuple[str, ...]:
    patterns = (value,) if isinstance(value, str) else tuple(value)
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(
                f"{where}: {name} must be path patterns (strings such as 'pos_embedding' "
                f"or 'encoder/*/bias'), got {value!r}"
            )
    return patterns


def _rule(
    path: tuple, embeddings: bool, exclude: tuple[str, ...] = (), include: tuple[str, ...] = ()
) -> tuple[bool, str]:
    """Whether the leaf at ``path`` is decayed, and the rule that decided it."""
    for pattern in exclude:
        if _matches(pattern, path):
            return False, f"excluded by {pattern!r}"
    for pattern in include:
        if _matches(pattern, path):
            return True, f"included by {pattern!r}"
    name = _leaf_name(path)
    if name in _NO_DECAY:
        return False, _NO_DECAY[name]
    if name == _EMBEDDING:
        return embeddings, "embedding"
    return True, "weight"


def _check_every_pattern_matches(
    where: str, paths: list[tuple], exclude: tuple[str, ...], include: tuple[str, ...]
) -> None:
    """A pattern that matches no leaf is a typo that would silently decay it: refused."""
    for name, patterns in (("exclude", exclude), ("include", include)):
        for pattern in patterns:
            if not any(_matches(pattern, path) for path in paths):
                shown = ", ".join(repr(_path_text(p)) for p in paths[:3])
                raise ValueError(
                    f"{where}: the {name} pattern {pattern!r} matches no parameter; the "
                    f"paths look like {shown} (a glob on the whole path or on the leaf's "
                    "name)"
                )


def _refuse_step_count(where: str, params: Any) -> None:
    """A mask function called with an integer scalar was called with a step count."""
    if (
        isinstance(params, (jax.Array, np.ndarray, np.integer, int))
        and not isinstance(params, bool)
        and np.ndim(params) == 0
        and np.issubdtype(np.result_type(params), np.integer)
    ):
        raise ValueError(
            f"{where}: got an integer scalar ({params!r}), not a parameter tree: it was "
            "called with a step count. "
            + _validate.injected_hint("mask", "a callable mask")
            + " Under optax's, mask=wdchain.decay_mask would decay every leaf."
        )


def decay_mask(
    params: Any,
    *,
    embeddings: bool = True,
    exclude: str | Sequence[str] = (),
    include: str | Sequence[str] = (),
) -> Any:
    """The weight-decay mask of a Flax parameter tree: True = decay this leaf.

    Biases (``bias``) and normalisation scales (``scale``: LayerNorm, RMSNorm,
    BatchNorm, GroupNorm) are not decayed; embedding tables (``embedding``) are
    decayed unless ``embeddings=False``; every other leaf is. The rules read the leaf's
    name in its path, so they hold for layers stacked by ``nn.scan`` or ``nnx.vmap``.

    Parameters the rules cannot know by name (a positional embedding that is an
    ``nnx.Param`` called ``weight``, a learned temperature) are named by path
    patterns: ``exclude`` leaves are never decayed, ``include`` leaves always are
    (``exclude`` wins). A pattern is a glob (``fnmatch``) on the leaf's path joined by
    ``/`` (``encoder/pos_embed/weight``, ``blocks/*/attn/*``) or on its name alone; a
    pattern that matches no leaf is refused, so a typo cannot silently decay it.

    Pass the function itself as a wdchain ``mask=`` (it is called on the params at
    each update), or :func:`decay_mask_with` for one with options, or the tree it
    returns. For an ``nnx.State`` of ``nnx.Param`` variables the booleans stand in
    place of the variables, so the tree is a prefix both of that state and of the
    plain state ``nnx.Optimizer`` passes to the optimizer.

    Args:
      params: a dict, ``flax.core.FrozenDict`` or ``nnx.State`` of parameters
        (e.g. ``variables["params"]`` or ``nnx.state(model, nnx.Param)``).
      embeddings: decay embedding tables (keyword only).
      exclude: path patterns of leaves never to decay (keyword only).
      include: path patterns of leaves always to decay (keyword only).

    Returns:
      A tree of Python booleans of the same type and structure as ``params``.

    Examples:
      >>> import jax.numpy as jnp
      >>> params = {"Dense_0": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3)},
      ...           "LayerNorm_0": {"scale": jnp.ones((4, 3)), "bias": jnp.zeros((4, 3))}}
      >>> decay_mask(params)
      {'Dense_0': {'bias': False, 'kernel': True}, 'LayerNorm_0': {'bias': False, 'scale': False}}
      >>> decay_mask(params, exclude="Dense_0/kernel", include="LayerNorm_0/scale")
      {'Dense_0': {'bias': False, 'kernel': False}, 'LayerNorm_0': {'bias': False, 'scale': True}}
    """
    where = "decay_mask"
    _refuse_step_count(where, params)
    excluded = _patterns(where, "exclude", exclude)
    included = _patterns(where, "include", include)
    if excluded or included:
        paths = [path for path, _ in
                 jax.tree_util.tree_flatten_with_path(params, is_leaf=_is_variable)[0]]
        _check_every_pattern_matches(where, paths, excluded, included)
    return jax.tree_util.tree_map_with_path(
        lambda path, _: _rule(path, embeddings, excluded, included)[0],
        params,
        is_leaf=_is_variable,
    )


def decay_mask_with(
    *,
    embeddings: bool = True,
    exclude: str | Sequence[str] = (),
    include: str | Sequence[str] = (),
) -> Callable[[Any], Any]:
    """:func:`decay_mask` with options, as a callable for a wdchain ``mask=``.

    Examples:
      >>> import jax.numpy as jnp
      >>> import wdchain
      >>> mask = decay_mask_with(exclude=["pos_embed/*"])
      >>> mask({"pos_embed": {"weight": jnp.ones((8, 4))}, "dense": {"kernel": jnp.ones(2)}})
      {'dense': {'kernel': True}, 'pos_embed': {'weight': False}}
      >>> tx = wdchain.adamw(1e-3, mask=mask)
    """
    where = "decay_mask_with"
    excluded = _patterns(where, "exclude", exclude)
    included = _patterns(where, "include", include)
    _validate.check_flag(where, "embeddings", embeddings)

    def mask(params: Any) -> Any:
        return decay_mask(params, embeddings=embeddings, exclude=excluded, include=included)

    return mask


def mask_report(
    params: Any,
    mask: Any = None,
    *,
    embeddings: bool = True,
    exclude: str | Sequence[str] = (),
    include: str | Sequence[str] = (),
) -> str:
    """A printable table: each leaf's path and shape, and whether it is decayed.

    Args:
      params: the parameter tree.
      mask: the mask to report (None, a tree of booleans or a callable of the params,
        as the ``mask=`` of a wdchain optimizer); default: :func:`decay_mask`'s rules,
        with the rule that decided each leaf.
      embeddings, exclude, include: passed to :func:`decay_mask` when ``mask`` is
        None (the rule column then names the pattern that decided a leaf).

    Returns:
      One line per leaf, then a total of decayed and not decayed parameters.

    Examples:
      >>> import jax.numpy as jnp
      >>> params = {"Dense_0": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3)}}
      >>> print(mask_report(params))
      off    ['Dense_0']['bias']    (3,)    bias
      decay  ['Dense_0']['kernel']  (2, 3)  weight
      decayed: 6 parameters; not decayed: 3 parameters
    """
    leaves = jax.tree_util.tree_flatten_with_path(params, is_leaf=_is_variable)[0]
    if mask is None:
        excluded = _patterns("mask_report", "exclude", exclude)
        included = _patterns("mask_report", "include", include)
        _check_every_pattern_matches("mask_report", [p for p, _ in leaves], excluded, included)
        decisions = [_rule(path, embeddings, excluded, included) for path, _ in leaves]
    else:
        plain = jax.tree.map(_value, params, is_leaf=_is_variable)
        flags = jax.tree.leaves(_tree.resolve_mask("mask_report", mask, plain))
        decisions = [(bool(flag), "") for flag in flags]
    rows = []
    totals = {True: 0, False: 0}
    for (path, leaf), (decayed, why) in zip(leaves, decisions):
        shape = tuple(np.shape(_value(leaf)))
        totals[decayed] += int(np.prod(shape))
        path_text = jax.tree_util.keystr(path)
        rows.append(("decay" if decayed else "off", path_text, str(shape), why))
    widths = [max(len(row[i]) for row in rows) for i in range(3)] if rows else [0, 0, 0]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3]
        for row in rows
    ]
    lines.append(
        f"decayed: {totals[True]:,} parameters; not decayed: {totals[False]:,} parameters"
    )
    return "\n".join(line.rstrip() for line in lines)
