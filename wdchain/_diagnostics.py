"""Seeing decay at work: per-leaf (or per-group) norms and ratios of one step.

Call :func:`decay_diagnostics` inside a jitted training step, after the optimizer's
update; it returns a flat dict of scalars, ready to log::

    updates, state = tx.update(grads, state, params)
    plain, _ = undecayed.update(grads, state, params)   # optional, see below
    stats = wdchain.decay_diagnostics(params, updates, grads, undecayed=plain)
    params = optax.apply_updates(params, updates)

The decay's share of the update needs the update the same step would make without
decay. ``build`` gives every placement, scale and gate of a preconditioner one state
structure, so ``build(preconditioner, decay="none", <same lr, options, toward>)``
takes the decayed optimizer's state as it is: its update from that state is the
undecayed step (the state is not advanced: discard its new state).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from wdchain import _tree

METRICS = ("param_norm", "update_ratio", "angular_update", "grad_ratio", "decay_share")


def _name(path: Any) -> str:
    return "/".join(_tree.key_name(entry) for entry in path) or "params"


def _groups(params: Any, groups: Any) -> dict[str, list[int]]:
    """Leaf indices by group name (each float leaf its own group by default)."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    if groups is None:
        labels = [_name(path) for path, _ in flat]
    else:
        tree = groups(params) if callable(groups) else groups
        labels = [str(label) for label in jax.tree.leaves(
            jax.tree.map(lambda g, sub: jax.tree.map(lambda _: g, sub), tree, params))]
    out: dict[str, list[int]] = {}
    for i, ((_, leaf), label) in enumerate(zip(flat, labels)):
        if _tree.is_float(leaf):
            out.setdefault(label, []).append(i)
    return out


def decay_diagnostics(
    params: Any,
    updates: Any,
    grads: Any = None,
    *,
    undecayed: Any = None,
    groups: Any | Callable[[Any], Any] = None,
) -> dict[str, jax.Array]:
    r"""Per leaf or group: ‖θ‖, ‖Δθ‖/‖θ‖, the angular update, ‖g‖/‖θ‖, the decay's share.

    With θ the params before the step, Δθ = ``updates`` (what ``optax.apply_updates``
    adds), θ' = θ + Δθ, g = ``grads`` and Δθ₀ = ``undecayed`` (the same step's update
    without decay):

    * ``param_norm``: ‖θ‖
    * ``update_ratio``: ‖Δθ‖/‖θ‖
    * ``angular_update``: the angle between θ and θ', in radians,
      2·atan2(‖θ/‖θ‖ − θ'/‖θ'‖‖, ‖θ/‖θ‖ + θ'/‖θ'‖‖) (accurate for small angles);
      Kosson et al. 2024 predict √(2αλ) at AdamW's equilibrium
    * ``grad_ratio``: ‖g‖/‖θ‖ (only with ``grads``); Defazio 2025 predicts
      √(2λ/α_t) for normalised layers under SGD-like steps, rising as α_t → 0
    * ``decay_share``: ‖Δθ − Δθ₀‖/‖Δθ‖ (only with ``undecayed``)

    Norms of a group are taken over all its leaves together. Everything is
    ``jax.numpy``: call it inside ``jax.jit``; the keys are static.

    Args:
      params: θ, before the step.
      updates: Δθ, the optimizer's updates of this step.
      grads: g, optional.
      undecayed: Δθ₀, optional (see the module docstring for how to get it).
      groups: None (one entry per float leaf, named by its path), or a pytree of
        labels that is a prefix of the params (or a callable of the params returning
        one): leaves with the same label are one group.

    Returns:
      ``{"<group>/<metric>": scalar}``.

    Example:
      >>> import jax.numpy as jnp
      >>> params = {"w": jnp.array([3.0, 4.0])}
      >>> stats = decay_diagnostics(params, {"w": jnp.array([-0.3, -0.4])})
      >>> float(stats["w/param_norm"]), round(float(stats["w/update_ratio"]), 6)
      (5.0, 0.1)
      >>> float(stats["w/angular_update"])
      0.0
    """
    leaves = jax.tree.leaves(params)
    u_leaves = jax.tree.leaves(updates)
    g_leaves = jax.tree.leaves(grads) if grads is not None else None
    z_leaves = jax.tree.leaves(undecayed) if undecayed is not None else None
    out: dict[str, jax.Array] = {}

    def sq(xs: list[Any]) -> jax.Array:
        total = jnp.zeros([], jnp.result_type(float))
        for x in xs:
            wide = x.astype(jnp.promote_types(x.dtype, jnp.float32))  # bf16: sum in f32
            total = total + jnp.sum(jnp.square(wide))
        return total

    tiny = jnp.finfo(jnp.result_type(float)).tiny
    for name, index in _groups(params, groups).items():
        theta = [leaves[i] for i in index]
        delta = [u_leaves[i] for i in index]
        new = [t + d for t, d in zip(theta, delta)]
        norm, new_norm = jnp.sqrt(sq(theta)), jnp.sqrt(sq(new))
        step = jnp.sqrt(sq(delta))
        a = [t / jnp.maximum(norm, tiny) for t in theta]
        b = [t / jnp.maximum(new_norm, tiny) for t in new]
        angle = 2 * jnp.arctan2(jnp.sqrt(sq([x - y for x, y in zip(a, b)])),
                                jnp.sqrt(sq([x + y for x, y in zip(a, b)])))
        out[f"{name}/param_norm"] = norm
        out[f"{name}/update_ratio"] = step / jnp.maximum(norm, tiny)
        out[f"{name}/angular_update"] = angle
        if g_leaves is not None:
            out[f"{name}/grad_ratio"] = jnp.sqrt(sq([g_leaves[i] for i in index])) / \
                jnp.maximum(norm, tiny)
        if z_leaves is not None:
            decay = [u_leaves[i] - z_leaves[i] for i in index]
            out[f"{name}/decay_share"] = jnp.sqrt(sq(decay)) / jnp.maximum(step, tiny)
    return out
