"""What determines a sweep's results, as short hashes: the resume key of ``out``.

A folder is resumed only when every entry matches; otherwise the run is refused naming
the entries that differ (``WHAT`` says what each one covers). The model is fingerprinted
at seed 0: its parameters' paths, shapes and dtypes (``params``), the values of its whole
initial state (``init``), its module structure with every static attribute (``graph``),
the loss's identity, its qualified name and a hash of its code (``loss``), and the
computation of loss and model traced on two validation examples (``computation``, the
jaxpr: catches an edited ``__call__`` that keeps the parameters). ``data`` hashes seed
0's splits.
"""

from __future__ import annotations

import functools
import hashlib
import re
import types
from typing import Any

import jax
import numpy as np
from flax import nnx

WHAT = {
    "data": "the data (a hash of seed 0's train, validation and test arrays)",
    "params": "the model's parameters: their paths, shapes or dtypes (e.g. another width)",
    "init": "the model's initial values at seed 0 (e.g. another initialiser)",
    "graph": "the model's structure (its submodules and static attributes)",
    "loss": "the loss function (its name or code)",
    "computation": "the computation of the model and loss (e.g. an edited __call__)",
}
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _digest(*parts: Any) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else _ADDRESS.sub("", str(part)).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def data_digest(task: Any) -> str:
    """A hash of seed 0's splits (a batch function's batches are not read)."""
    first = task.for_seed(0)
    parts: list[Any] = []
    for split in (first.train, first.validation, first.test):
        if split is None or callable(split):
            continue
        parts += [np.ascontiguousarray(np.asarray(array)).tobytes() for array in split]
    return _digest(*parts)


def _code_parts(code: types.CodeType) -> list[Any]:
    parts: list[Any] = [code.co_code, code.co_names]
    for const in code.co_consts:
        parts += _code_parts(const) if isinstance(const, types.CodeType) else [repr(const)]
    return parts


def function_identity(fn: Any) -> str:
    """Qualified name and a hash of the code of a function, partial or callable object."""
    if isinstance(fn, functools.partial):
        return _digest(function_identity(fn.func), repr(fn.args), repr(sorted(fn.keywords.items())))
    target = fn if isinstance(fn, types.FunctionType | types.MethodType) else type(fn).__call__
    code = getattr(target, "__code__", None)
    name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"
    return _digest(name, *(_code_parts(code) if code is not None else [repr(fn)]))


def model_fingerprint(task: Any) -> dict[str, str]:
    """The entries of ``WHAT`` for ``task`` (the model built once, at seed 0)."""
    model = task.model(nnx.Rngs(0))
    if not isinstance(model, nnx.Module):
        raise TypeError(f"Task: model(rngs) must return an nnx.Module, got {model!r}")
    model.train()
    graph, params, rest = nnx.split(model, nnx.Param, ...)  # type: ignore[misc]
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    shapes = [(jax.tree_util.keystr(path), np.shape(leaf), str(np.asarray(leaf).dtype))
              for path, leaf in flat]
    values = [np.ascontiguousarray(np.asarray(leaf)).tobytes()
              for leaf in jax.tree.leaves((params, rest))
              if not jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)]
    loss_fn = task.loss_fn
    x, y = task.for_seed(0).validation
    probe = (np.asarray(x[:2]), np.asarray(y[:2]))
    state = nnx.state(model)

    def run(state: Any, batch: Any) -> Any:
        return loss_fn(nnx.merge(graph_all, state), batch)

    graph_all = nnx.graphdef(model)
    try:
        computation = _digest(jax.make_jaxpr(run)(state, probe))
    except Exception:  # noqa: BLE001 - the checks before training name the fault
        computation = "untraceable"
    return {
        "params": _digest(repr(shapes)),
        "init": _digest(*values),
        "graph": _digest(repr(graph)),
        "loss": function_identity(loss_fn),
        "computation": computation,
    }


def fingerprint(task: Any) -> dict[str, str]:
    """Every entry of ``WHAT`` for ``task``."""
    return {"data": data_digest(task), **model_fingerprint(task)}


def differences(previous: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The keys whose values differ, each with what it covers when ``WHAT`` knows it."""
    keys = sorted(key for key in set(previous) | set(current)
                  if previous.get(key) != current.get(key))
    return [f"{key} ({WHAT[key]})" if key in WHAT else key for key in keys]
