"""Convolutions in XLA:CPU's native layout, also inside loops.

XLA:CPU runs a convolution with its fast (Eigen) kernel only when its operands are laid
out as input (batch, spatial…, feature), kernel (spatial…, in, out), output (batch,
spatial…, feature). Its ``convolution-canonicalization`` pass brings other convolutions
into that form with transposes, but it visits the entry computation only: a
convolution inside a ``while`` loop keeps its dimension numbers and is compiled as a
naive loop nest. The gradients of a convolution (JAX's transpose rules) have such
dimension numbers, e.g. ``f01b_i01o->01bf`` for the kernel's gradient, so inside
``lax.scan`` (where the sweep trains its steps) a CNN's backward pass ran about 100
times slower than in a single step: on a 2-core CPU, 4 steps of one 3×3 convolution's
gradient (batch 100, 14×14×32 → 64) took 16 s in a scan and 0.6 s unrolled.

:func:`canonical_convolutions` does what the pass would do, everywhere: it traces a
function to a jaxpr and evaluates it with every ``conv_general_dilated`` replaced by
transposes into the native layout, the same convolution, and a transpose back. The
arithmetic is the same (a transpose moves values, it does not round them).
Convolutions inside the function's own jitted calls are rewritten too; those inside
other higher-order primitives (a ``scan`` or ``cond`` of the model) are left alone.

Vmapped over the cells of a grid, a convolution whose input and kernel both belong to
the cell (every layer after the first) becomes a grouped convolution, which XLA:CPU
also runs slowly (even in the native layout); the rewritten function runs those one
cell at a time instead (``lax.map``), see ``_cellwise``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax import lax
from jax.extend import core

_CONV = core.primitives.conv_general_dilated_p
_CALLS = {"pjit": "jaxpr", "jit": "jaxpr", "closed_call": "call_jaxpr"}


def canonical_convolutions(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with every convolution in XLA:CPU's native layout (same values).

    Example:
      >>> import jax.numpy as jnp
      >>> def loss(w, x):
      ...     y = lax.conv_general_dilated(x, w, (1, 1), "SAME",
      ...                                  dimension_numbers=("NCHW", "OIHW", "NCHW"))
      ...     return (y ** 2).sum()
      >>> w, x = jnp.ones((4, 2, 3, 3)), jnp.ones((1, 2, 5, 5))
      >>> bool(jnp.allclose(canonical_convolutions(jax.grad(loss))(w, x), jax.grad(loss)(w, x)))
      True
    """

    def wrapped(*args: Any) -> Any:
        closed, shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        if not has_convolution(closed.jaxpr):
            return fn(*args)
        outs = _evaluate(closed.jaxpr, closed.consts, jax.tree.leaves(args))
        return jax.tree.unflatten(jax.tree.structure(shape), outs)

    return wrapped


def has_convolution(jaxpr: Any) -> bool:
    """Whether ``jaxpr`` (or a jaxpr nested in it) holds a convolution."""
    return any(eqn.primitive is _CONV for eqn in jaxpr.eqns) or any(
        has_convolution(sub) for sub in core.subjaxprs(jaxpr))


def _evaluate(jaxpr: Any, consts: list[Any], args: list[Any]) -> list[Any]:
    env: dict[Any, Any] = {}

    def read(var: Any) -> Any:
        return var.val if isinstance(var, core.Literal) else env[var]

    for var, value in zip(jaxpr.constvars, consts):
        env[var] = value
    for var, value in zip(jaxpr.invars, args):
        env[var] = value
    for eqn in jaxpr.eqns:
        values = [read(var) for var in eqn.invars]
        call = _CALLS.get(eqn.primitive.name)
        if eqn.primitive is _CONV:
            outs = [_cellwise(functools.partial(_native_convolution, **eqn.params))(*values)]
        elif call is not None and call in eqn.params:
            inner = eqn.params[call]
            outs = _evaluate(inner.jaxpr, inner.consts, values)
        else:
            with eqn.ctx.manager:
                result = eqn.primitive.bind(*values, **eqn.primitive.get_bind_params(eqn.params))
            outs = list(result) if eqn.primitive.multiple_results else [result]
        for var, value in zip(eqn.outvars, outs):
            env[var] = value
    return [read(var) for var in jaxpr.outvars]


def _native_convolution(lhs: Any, rhs: Any, *, dimension_numbers: Any, **params: Any) -> Any:
    """The convolution with input NH…WC, kernel H…WIO, output NH…WC, then transposed back."""
    lhs_spec, rhs_spec, out_spec = dimension_numbers
    spatial = len(lhs_spec) - 2
    lhs = lax.transpose(lhs, (lhs_spec[0], *lhs_spec[2:], lhs_spec[1]))
    rhs = lax.transpose(rhs, (*rhs_spec[2:], rhs_spec[1], rhs_spec[0]))
    native = lax.ConvDimensionNumbers(
        lhs_spec=(0, spatial + 1, *range(1, spatial + 1)),
        rhs_spec=(spatial + 1, spatial, *range(spatial)),
        out_spec=(0, spatial + 1, *range(1, spatial + 1)),
    )
    out = _CONV.bind(lhs, rhs, dimension_numbers=native, **params)
    order = (out_spec[0], *out_spec[2:], out_spec[1])  # native axis i is original axis order[i]
    return lax.transpose(out, tuple(int(i) for i in np.argsort(order)))


def _cellwise(conv: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """``conv``, which, vmapped over both operands, runs one convolution per cell.

    ``jax.vmap`` of a convolution whose input and kernel both carry the cell axis
    is a grouped convolution (``feature_group_count`` = cells), which XLA:CPU runs
    several times slower than the cells' convolutions one after another. Vmapped
    over one operand only (the first layer's shared batch), the cells fold into the
    batch or the output features of one ordinary convolution, as JAX does.
    """

    @jax.custom_batching.custom_vmap
    def one(lhs: Any, rhs: Any) -> Any:
        return conv(lhs, rhs)

    @one.def_vmap
    def rule(axis_size: int, in_batched: list[bool], lhs: Any,
             rhs: Any) -> tuple[Any, bool]:
        del axis_size
        if all(in_batched):
            return lax.map(lambda pair: conv(*pair), (lhs, rhs)), True
        axes = [0 if batched else None for batched in in_batched]
        return jax.vmap(conv, in_axes=axes)(lhs, rhs), True

    return one
