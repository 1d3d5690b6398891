"""Restoring optimizer state from a checkpoint, refusing one that does not fit.

Checkpoint libraries store containers, not types: orbax restores a
``ScaleByAdamState`` as a dict and the chain's tuple as a list; flax's msgpack as
dicts keyed ``"0"``, ``"1"``, ... So a restored state is matched against the state
``tx.init(params)`` would make, leaf by leaf, by path; and the state's *signature*
(its node types, in order), saved next to it, tells optimizers apart whose slots
happen to have the same names and shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from wdchain import _tree


def _mismatch(template: Any, path: tuple[str, ...], found: dict[tuple[str, ...], Any]) -> str:
    """What the checkpoint holds in the slot where the path is missing."""
    if not path:
        return "the checkpoint is empty" if not found else "the checkpoint is not a state"
    there = sorted({p[1] for p in found if len(p) > 1 and p[0] == path[0]})
    if not there:
        slots = sorted({p[0] for p in found}, key=lambda k: (len(k), k))
        return f"its slots are {', '.join(slots) or 'none'}"
    return f"its slot {path[0]} holds {', '.join(there)}"


def _template(tx: optax.GradientTransformation, params: Any) -> Any:
    return jax.eval_shape(tx.init, params)


def _node_types(node: Any) -> list[str]:
    if hasattr(node, "_fields"):  # a NamedTuple: one of the transforms' states
        names = [type(node).__name__]
        for child in node:
            names += _node_types(child)
        return names
    if isinstance(node, (tuple, list)):
        return [name for child in node for name in _node_types(child)]
    if isinstance(node, dict):
        return [name for key in sorted(node, key=str) for name in _node_types(node[key])]
    return []


def state_signature(tx: optax.GradientTransformation, params: Any) -> str:
    """The state's node types in order: which optimizer a state belongs to.

    Save it with the state; :func:`restore_state` checks it. It does not contain
    hyperparameter values, so a run may resume with another learning rate.

    Example:
      >>> import jax.numpy as jnp
      >>> import wdchain
      >>> state_signature(wdchain.adamw(), {"w": jnp.zeros(2)})
      'EmptyState ScaleByAdamState WeightDecayState ScaleByLearningRateState'
    """
    return " ".join(_node_types(_template(tx, params)))


def _by_path(tree: Any) -> dict[tuple[str, ...], Any]:
    """Leaves by container-independent path: ``state[2].mu["w"]`` -> ("2", "mu", "w").

    Flax NNX wraps each array in a Variable, which a checkpoint library stores as a
    ``{"value": array}`` dict: the ``value`` entries are left out, so a state saved
    from an ``nnx.Optimizer`` matches the plain one.
    """
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        tuple(name for name in map(_tree.key_name, path) if name != "value"): leaf
        for path, leaf in flat
    }


def _upgrade(found: dict[tuple[str, ...], Any],
             wanted: dict[tuple[str, ...], Any]) -> dict[tuple[str, ...], Any]:
    """A checkpoint of wdchain 0.1, whose every counter was named ``count``, read now.

    Since 0.2 only the learning-rate step's counter is ``count`` (so that
    ``optax.tree.get(state, "count")`` finds one); the others are ``step``. A slot
    that holds ``count`` where the optimizer now has ``step`` is read as ``step``:
    same value, same place, so old checkpoints still resume bit for bit.
    """
    renamed = {}
    for path, leaf in found.items():
        if path[-1:] == ("count",):
            new = path[:-1] + ("step",)
            if new in wanted and path not in wanted and new not in found:
                path = new
        renamed[path] = leaf
    return renamed


def _show(path: tuple[str, ...]) -> str:
    return "state" + "".join(f"[{key}]" if key.isdigit() else f".{key}" for key in path)


def _slot(template: Any, path: tuple[str, ...]) -> str:
    """Which slot of the chain a path is in, and that slot's state type."""
    if not path or not isinstance(template, (tuple, list)) or not path[0].isdigit():
        return ""
    index = int(path[0])
    if index >= len(template):
        return f" (slot {index}: this optimizer's chain has {len(template)} slots)"
    return f" (slot {index} of the chain, a {type(template[index]).__name__})"


_NNX = "the nnx.Optimizer's opt_state"


def _restore_nnx(optimizer: nnx.Optimizer, model: Any, restored: Any,
                 signature: str | None, allow_nonfinite: bool) -> nnx.Optimizer:
    """Writes a checkpoint of ``nnx.state(optimizer)`` (or of its ``opt_state``) back."""
    step = None
    if isinstance(restored, (Mapping, nnx.State)) and "opt_state" in restored:
        step, restored = restored.get("step"), restored["opt_state"]
    params = nnx.state(model, optimizer.wrt) if isinstance(model, nnx.Module) else model
    state = restore_state(optimizer.tx, params, restored, signature=signature,
                          allow_nonfinite=allow_nonfinite, _where=_NNX)
    variables = jax.tree.leaves(optimizer.opt_state, is_leaf=_is_variable)
    values = jax.tree.leaves(state)
    if len(variables) != len(values):  # the template is tx.init(params): cannot happen
        raise ValueError(f"restore_state: {_NNX} has {len(variables)} leaves, the restored "
                         f"state {len(values)}")
    for variable, value in zip(variables, values):
        variable.set_value(value)
    if step is not None:
        step = _by_path(step).get((), step)
        optimizer.step.set_value(jnp.asarray(step, optimizer.step.get_value().dtype))
    return optimizer


def _is_variable(node: Any) -> bool:
    return isinstance(node, nnx.Variable)


def restore_state(
    tx: optax.GradientTransformation | nnx.Optimizer,
    params: Any,
    restored: Any,
    *,
    signature: str | None = None,
    allow_nonfinite: bool = False,
    _where: str = "this optimizer",
) -> Any:
    """Checks a restored optimizer state against ``tx`` and ``params`` and rebuilds it.

    ``restored`` may be the state itself or what a checkpoint library gives back
    without a target: orbax's ``StandardCheckpointer().restore(path)`` or
    ``flax.serialization.msgpack_restore(data)``. Its leaves are matched by path to
    ``jax.eval_shape(tx.init, params)``; a missing or extra slot, or a leaf of
    another shape or dtype, raises a ``ValueError`` naming the first such path.

    Flax NNX: give the ``nnx.Optimizer`` and the model (or its params) instead of
    ``tx`` and ``params``, and what a checkpoint of ``nnx.state(optimizer)`` gives
    back without a target: the restored values (and nnx's own ``step``) are written
    into the optimizer, which is returned. The recipe is in ``docs/reliability.md``
    (Checkpoints, Flax NNX)::

        checkpointer.save(path, nnx.state(optimizer))          # save
        loaded = checkpointer.restore(path)                    # a fresh process
        wdchain.restore_state(optimizer, model, loaded, signature=sig)

    Args:
      tx: the optimizer the state is for (or an ``nnx.Optimizer``).
      params: the parameters (or ``jax.ShapeDtypeStruct`` s like them), or the
        ``nnx.Module`` when ``tx`` is an ``nnx.Optimizer``.
      restored: the state as loaded.
      signature: the :func:`state_signature` saved with the checkpoint. Checked when
        given: it is what tells apart two optimizers whose states have the same
        slot names and shapes (``build("radam", ...)`` and ``build("adamax", ...)``).
      allow_nonfinite: accept a state with NaN or ±inf entries (keyword only). By
        default such a state is refused, naming the first slot that has them: an
        optimizer state that diverged (or a corrupt file) would otherwise resume silently.

    Returns:
      The state, with ``tx.init``'s tree structure and the restored values.

    Example:
      >>> import flax.serialization, jax.numpy as jnp
      >>> import wdchain
      >>> params = {"w": jnp.ones(2)}
      >>> data = flax.serialization.to_bytes(wdchain.adam().init(params))
      >>> loaded = flax.serialization.msgpack_restore(data)
      >>> state = restore_state(wdchain.adam(), params, loaded)
      >>> restore_state(wdchain.sgd(momentum=0.9), params, loaded)  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      ValueError: restore_state: the checkpoint has no slot state[2].trace.w...
    """
    where = "restore_state"
    if not isinstance(allow_nonfinite, bool):
        raise ValueError(f"{where}: allow_nonfinite must be True or False, got "
                         f"{allow_nonfinite!r}")
    if isinstance(tx, nnx.Optimizer):
        return _restore_nnx(tx, params, restored, signature, allow_nonfinite)
    template = _template(tx, params)
    if signature is not None:
        expected = " ".join(_node_types(template))
        if signature.split() != expected.split():  # a saved file may add a newline
            pairs = zip(signature.split() + ["nothing"], expected.split() + ["nothing"])
            saved, needed = next((a, b) for a, b in pairs if a != b)
            raise ValueError(
                f"{where}: the checkpoint was written for another optimizer: it has "
                f"{saved} where this optimizer has {needed}. Its state is ({signature}); "
                f"this optimizer's is ({expected})."
            )
    if isinstance(restored, (Mapping, nnx.State)) and set(restored) == {"opt_state", "step"}:
        raise ValueError(
            f"{where}: this checkpoint is the state of an nnx.Optimizer (keys 'opt_state' "
            "and 'step'): pass the optimizer and the model, restore_state(optimizer, "
            "model, loaded), or restored['opt_state'] with tx and params."
        )
    wanted = _by_path(template)
    found = _upgrade(_by_path(restored), wanted)
    for path in wanted:
        if path not in found:
            raise ValueError(
                f"{where}: the checkpoint has no slot {_show(path)}{_slot(template, path)}, "
                f"which {_where} needs: it was written for another optimizer or another "
                f"params tree ({_mismatch(template, path, found)})."
            )
    for path in found:
        if path not in wanted:
            raise ValueError(
                f"{where}: the checkpoint has a slot {_show(path)}{_slot(template, path)} "
                f"that {_where} does not have: it was written for another optimizer or "
                "another params tree."
            )
    leaves = []
    for path, spec in wanted.items():
        leaf = found[path]
        shape, dtype = np.shape(leaf), jnp.result_type(leaf)
        if shape != spec.shape or dtype != spec.dtype:
            raise ValueError(
                f"{where}: {_show(path)}{_slot(template, path)} is "
                f"{dtype.name}{list(shape)} in the checkpoint, but {_where} needs "
                f"{spec.dtype.name}{list(spec.shape)} there."
            )
        leaf = leaf if isinstance(leaf, jax.Array) else jnp.asarray(leaf)
        if not allow_nonfinite and jnp.issubdtype(dtype, jnp.inexact):
            bad = int(jnp.sum(~jnp.isfinite(leaf)))
            if bad:
                raise ValueError(
                    f"{where}: {_show(path)}{_slot(template, path)} has {bad} non-finite "
                    f"(NaN or inf) entr{'y' if bad == 1 else 'ies'} of {leaf.size} in the "
                    "checkpoint: the state it was saved from had diverged, or the file is "
                    "corrupt. Restore an earlier checkpoint, or pass allow_nonfinite=True "
                    "to resume from it anyway."
                )
        leaves.append(leaf)
    return jax.tree.unflatten(jax.tree.structure(template), leaves)

