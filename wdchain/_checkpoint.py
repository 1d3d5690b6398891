"""Restoring optimizer state from a checkpoint, refusing one that does not fit.

Checkpoint libraries store containers, not types: orbax restores a
``ScaleByAdamState`` as a dict and the chain's tuple as a list; flax's msgpack as
dicts keyed ``"0"``, ``"1"``, ... So a restored state is matched against the state
``tx.init(params)`` would make, leaf by leaf, by path; and the state's *signature*
(its node types, in order), saved next to it, tells optimizers apart whose slots
happen to have the same names and shapes.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from wdchain import _tree


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
    """Leaves by container-independent path: ``state[2].mu["w"]`` -> ("2", "mu", "w")."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {tuple(_tree.key_name(entry) for entry in path): leaf for path, leaf in flat}


def _show(path: tuple[str, ...]) -> str:
    return "state" + "".join(f"[{key}]" if key.isdigit() else f".{key}" for key in path)


def restore_state(
    tx: optax.GradientTransformation,
    params: Any,
    restored: Any,
    *,
    signature: str | None = None,
) -> Any:
    """Checks a restored optimizer state against ``tx`` and ``params`` and rebuilds it.

    ``restored`` may be the state itself or what a checkpoint library gives back
    without a target: orbax's ``StandardCheckpointer().restore(path)`` or
    ``flax.serialization.msgpack_restore(data)``. Its leaves are matched by path to
    ``jax.eval_shape(tx.init, params)``; a missing or extra slot, or a leaf of
    another shape or dtype, raises a ``ValueError`` naming the first such path.

    Args:
      tx: the optimizer the state is for.
      params: the parameters (or ``jax.ShapeDtypeStruct`` s like them).
      restored: the state as loaded.
      signature: the :func:`state_signature` saved with the checkpoint. Checked when
        given: it is what tells apart two optimizers whose states have the same
        slot names and shapes (``build("radam", ...)`` and ``build("adamax", ...)``).

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
    wanted, found = _by_path(template), _by_path(restored)
    for path in wanted:
        if path not in found:
            raise ValueError(
                f"{where}: the checkpoint has no slot {_show(path)}, which this "
                "optimizer's state needs: it was written for another optimizer or "
                "another params tree."
            )
    for path in found:
        if path not in wanted:
            raise ValueError(
                f"{where}: the checkpoint has a slot {_show(path)} that this optimizer's "
                "state does not have: it was written for another optimizer or another "
                "params tree."
            )
    leaves = []
    for path, spec in wanted.items():
        leaf = found[path]
        shape, dtype = np.shape(leaf), jnp.result_type(leaf)
        if shape != spec.shape or dtype != spec.dtype:
            raise ValueError(
                f"{where}: {_show(path)} is {dtype.name}{list(shape)} in the checkpoint, "
                f"but this optimizer needs {spec.dtype.name}{list(spec.shape)} there."
            )
        leaves.append(leaf if isinstance(leaf, jax.Array) else jnp.asarray(leaf))
    return jax.tree.unflatten(jax.tree.structure(template), leaves)

