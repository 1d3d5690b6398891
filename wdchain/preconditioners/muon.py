"""Muon's pieces (Jordan et al. 2024) as ``torch.optim.Muon`` computes them.

``scale_by_muon_momentum`` → ``orthogonalize_newton_schulz`` → ``scale_by_shape``: the
momentum, its approximate orthogonalisation, and the shape factor torch applies to
the learning rate (but not to the weight decay). Muon works on 2-D leaves only; the
others go to another optimizer, e.g. AdamW, in one transformation::

    tx = optax.partition(
        {"muon": wdchain.muon(lr=0.02), "adamw": wdchain.adamw(lr=3e-4)},
        wdchain.muon_labels,   # "muon" for 2-D leaves, "adamw" for the others
    )
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from wdchain import _recipe, _tree, _validate
from wdchain.registry import register_preconditioner
from wdchain.types import Options

ADJUST_LR_FNS = (None, "original", "match_rms_adamw")

_PAIRING = (
    "pair Muon with AdamW for the other leaves in one transformation: "
    "optax.partition({'muon': wdchain.muon(...), 'adamw': wdchain.adamw(...)}, "
    "wdchain.muon_labels)"
)


def muon_labels(params: Any) -> Any:
    """``"muon"`` for the 2-D float leaves of ``params``, ``"adamw"`` for the others.

    The labels ``optax.partition`` needs to give Muon the matrices and AdamW the rest
    (biases, norm scales, embeddings of other ranks, convolution kernels).

    Example:
      >>> import jax.numpy as jnp
      >>> muon_labels({"w": jnp.ones((2, 3)), "b": jnp.ones(3)})
      {'b': 'adamw', 'w': 'muon'}
    """
    return jax.tree.map(
        lambda p: "muon" if _tree.is_float(p) and jnp.ndim(p) == 2 else "adamw", params
    )


def check_matrices(where: str, params: Any) -> None:
    """Refuses a float leaf that is not 2-D, naming it and showing the pairing."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if _tree.is_float(leaf) and jnp.ndim(leaf) != 2:
            raise ValueError(
                f"{where}: the leaf at {jax.tree_util.keystr(path) or '<root>'} has shape "
                f"{jnp.shape(leaf)}; Muon orthogonalises 2-D matrices only (as "
                f"torch.optim.Muon). {_PAIRING[0].upper()}{_PAIRING[1:]}, or with "
                "build('muon', ..., others='adam')"
            )


class ScaleByMuonMomentumState(NamedTuple):
    momentum_buffer: Any  # B, one per leaf


def scale_by_muon_momentum(
    momentum: Any = 0.95, nesterov: bool = True
) -> optax.GradientTransformation:
    r"""Muon's momentum, as torch's Muon keeps it (an average, not a sum).

    .. math::

        B_t \leftarrow B_{t-1} + (1-\mu)(g_t - B_{t-1}), \qquad
        u_t = \begin{cases} g_t + \mu (B_t - g_t) & \text{Nesterov} \\
                            B_t & \text{otherwise} \end{cases}

    with μ = ``momentum`` and B₀ = 0 (torch's ``lerp_``; its docstring writes
    B_t = μB_{t−1} + g_t, its code does this).

    Args:
      momentum: μ ≥ 0 (torch default 0.95).
      nesterov: use the Nesterov form (torch default True).

    Returns:
      An ``optax.GradientTransformation``.
    """
    where = "scale_by_muon_momentum"
    _validate.check_range(where, "momentum", momentum)
    _validate.check_flag(where, "nesterov", nesterov)  # (check_options checks them so too)

    def init_fn(params: Any) -> ScaleByMuonMomentumState:
        _tree.require_real(where, params)
        return ScaleByMuonMomentumState(_tree.zeros_like_params(params))

    def update_fn(updates: Any, state: ScaleByMuonMomentumState, params: Any = None):
        del params
        _tree.check_same_shapes(where, "state", state.momentum_buffer, "updates", updates)

        def step(g: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
            dtype = _tree.compute_dtype(g.dtype)
            g_c = _tree.cast(g, dtype)
            b_c = _tree.cast(b, dtype)
            b_new = b_c + (1 - momentum) * (g_c - b_c)
            u = g_c + momentum * (b_new - g_c) if nesterov else b_new
            return _tree.cast(u, g.dtype), _tree.cast(b_new, b.dtype)

        updates, buffers = _tree.map_float(step, updates, state.momentum_buffer)
        return updates, ScaleByMuonMomentumState(buffers)

    tx = optax.GradientTransformation(init_fn, update_fn)
    hyperparams: tuple[tuple[str, Any], ...] = (("μ", momentum),)
    if nesterov:
        hyperparams += (("nesterov", True),)
    return _recipe.label(tx, _recipe.Step("muon_momentum", _recipe.PRECONDITIONER, hyperparams))


def check_newton_schulz(where: str, ns_coefficients: Any, eps: Any, ns_steps: Any,
                        ns_dtype: Any) -> tuple[Any, Any, Any]:
    """Checks the iteration's options; returns the coefficients (a, b, c)."""
    coefficients = _validate.check_triple(where, "ns_coefficients", ns_coefficients, "a, b, c",
                                          low=-float("inf"))
    _validate.check_range(where, "eps", eps)
    if not _validate.is_whole_number(ns_steps) or not 0 <= ns_steps < 100:
        hint = ""
        if isinstance(ns_steps, (jax.Array, np.ndarray)):
            hint = " " + _validate.injected_hint("ns_steps", "an int option")
        raise ValueError(
            f"{where}: ns_steps must be a Python int in [0, 100), got {ns_steps!r} (it is "
            "the iteration count, fixed when the step is traced: with inject_hyperparams, "
            f"give static_args=('ns_steps', 'ns_dtype')).{hint}"
        )
    _validate.check_float_dtype(where, "ns_dtype", ns_dtype)
    if ns_dtype is None:
        raise ValueError(f"{where}: ns_dtype must be a floating dtype (e.g. jnp.bfloat16), "
                         "got None")
    return coefficients


def _newton_schulz(g: jax.Array, coefficients: tuple, steps: int, eps: Any,
                   dtype: Any) -> jax.Array:
    """torch's ``_zeropower_via_newtonschulz`` in ``dtype``; in a low-precision dtype
    each matrix product accumulates in float32 and rounds once, with its ``addmm``
    term, as torch's CPU kernels do."""
    a, b, c = coefficients
    low = jnp.finfo(dtype).bits < 32
    acc = jnp.float32 if low else dtype
    precision = jax.lax.Precision.HIGHEST

    def mm(x: jax.Array, y: jax.Array) -> jax.Array:
        return jnp.matmul(x, y, precision=precision, preferred_element_type=acc)

    x = g.astype(dtype)
    tall = g.shape[0] > g.shape[1]
    if tall:
        x = x.T
    norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(acc)))).astype(dtype)  # no reshape: shards
    x = (x.astype(acc) / jnp.maximum(norm, jnp.asarray(eps, dtype)).astype(acc)).astype(dtype)
    for _ in range(steps):
        gram = mm(x, x.T).astype(dtype)
        update = (b * gram.astype(acc) + c * mm(gram, gram)).astype(dtype)
        x = (a * x.astype(acc) + mm(update, x)).astype(dtype)
    return x.T if tall else x


def orthogonalize_newton_schulz(
    ns_coefficients: tuple[Any, Any, Any] = (3.4445, -4.775, 2.0315),
    eps: Any = 1e-7,
    ns_steps: int = 5,
    *,
    ns_dtype: Any = jnp.bfloat16,
) -> optax.GradientTransformation:
    r"""Replaces each 2-D update by an approximate orthogonalisation, as torch's Muon.

    .. math::

        X_0 = \frac{G}{\max(\lVert G\rVert_F, \epsilon)}, \qquad
        A_k = X_k X_k^\top, \qquad
        X_{k+1} = a X_k + (b A_k + c A_k^2) X_k, \qquad u = X_K

    with (a, b, c) = ``ns_coefficients``, K = ``ns_steps``, on the transpose of a tall
    G (so the Gram matrix is the smaller one). The iteration runs in ``ns_dtype``:
    bfloat16 by default, as torch (which has no such option); float32 or float64 give
    torch's iteration run in that dtype. Only 2-D leaves are accepted, at ``init``.

    Args:
      ns_coefficients: (a, b, c) (torch default (3.4445, −4.775, 2.0315)).
      eps: ε ≥ 0 (torch default 1e-7).
      ns_steps: K, an int in [0, 100) (torch default 5).
      ns_dtype: the iteration's floating dtype (keyword only; default bfloat16).

    Returns:
      An ``optax.GradientTransformation``.
    """
    where = "orthogonalize_newton_schulz"
    coefficients = check_newton_schulz(where, ns_coefficients, eps, ns_steps, ns_dtype)
    dtype = jnp.dtype(ns_dtype)

    def init_fn(params: Any) -> optax.EmptyState:
        _tree.require_real(where, params)
        check_matrices("muon", params)
        return optax.EmptyState()

    def update_fn(updates: Any, state: optax.EmptyState, params: Any = None):
        del params

        def orthogonalize(u: jax.Array) -> jax.Array:
            if not _tree.is_float(u):
                return jnp.zeros_like(u)
            if u.ndim != 2:
                raise ValueError(f"{where}: updates must be 2-D matrices, got shape {u.shape}")
            x = _newton_schulz(u, coefficients, ns_steps, eps, dtype)
            return _tree.cast(x, u.dtype)

        return jax.tree.map(orthogonalize, updates), state

    tx = optax.GradientTransformation(init_fn, update_fn)
    hyperparams = (("(a, b, c)", coefficients), ("K", ns_steps), ("dtype", dtype.name))
    return _recipe.label(tx, _recipe.Step("newton_schulz", _recipe.PRECONDITIONER, hyperparams))


def shape_factor(shape: tuple[int, ...], adjust_lr_fn: str | None) -> float:
    """torch's ``_adjust_lr`` ratio: √max(1, A/B) ("original", the default) or
    0.2·√max(A, B) ("match_rms_adamw") for a leaf of shape (A, B)."""
    rows, cols = shape[:2]
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return math.sqrt(max(1, rows / cols))


def check_adjust_lr_fn(where: str, adjust_lr_fn: Any) -> None:
    if adjust_lr_fn not in ADJUST_LR_FNS:
        raise ValueError(
            f"{where}: adjust_lr_fn must be None, 'original' or 'match_rms_adamw', got "
            f"{adjust_lr_fn!r}"
        )


def scale_by_shape(adjust_lr_fn: str | None = None) -> optax.GradientTransformation:
    r"""Muon's shape factor: :math:`u \leftarrow s(A, B)\, u` for a leaf of shape (A, B).

    .. math::

        s = \sqrt{\max(1, A/B)} \;(\text{None or "original"}), \qquad
        s = 0.2\sqrt{\max(A, B)} \;(\text{"match\_rms\_adamw"})

    torch applies it to the learning rate of the orthogonalised step only; placed
    before ``decoupled_weight_decay`` it does the same (the decay keeps the
    unadjusted lr).

    Args:
      adjust_lr_fn: None, ``"original"`` or ``"match_rms_adamw"`` (torch's names).

    Returns:
      An ``optax.GradientTransformation``.
    """
    where = "scale_by_shape"
    check_adjust_lr_fn(where, adjust_lr_fn)

    def init_fn(params: Any) -> optax.EmptyState:
        _tree.require_real(where, params)
        return optax.EmptyState()

    def update_fn(updates: Any, state: optax.EmptyState, params: Any = None):
        del params

        def scale(u: jax.Array) -> jax.Array:
            if not _tree.is_float(u) or u.ndim < 2:
                return u
            factor = shape_factor(u.shape, adjust_lr_fn)
            return _tree.cast(factor * _tree.cast(u, _tree.compute_dtype(u.dtype)), u.dtype)

        return jax.tree.map(scale, updates), state

    tx = optax.GradientTransformation(init_fn, update_fn)
    name = adjust_lr_fn or "original"
    return _recipe.label(tx, _recipe.Step("shape", _recipe.PRECONDITIONER, (("fn", name),)))


def check_options(where: str, options: Options) -> None:
    """Muon's options: μ ≥ 0, ``nesterov``, the Newton–Schulz ones, ``adjust_lr_fn``."""
    o = options
    _validate.check_range(where, "momentum", o["momentum"])
    _validate.check_flag(where, "nesterov", o["nesterov"])
    check_newton_schulz(where, o["ns_coefficients"], o["eps"], o["ns_steps"], o["ns_dtype"])
    check_adjust_lr_fn(where, o["adjust_lr_fn"])


def muon_transforms(
    momentum: Any = 0.95,
    nesterov: bool = True,
    ns_coefficients: tuple[Any, Any, Any] = (3.4445, -4.775, 2.0315),
    eps: Any = 1e-7,
    ns_steps: int = 5,
    adjust_lr_fn: str | None = None,
    ns_dtype: Any = jnp.bfloat16,
) -> tuple[optax.GradientTransformation, ...]:
    """Muon's slot: momentum, Newton–Schulz orthogonalisation, the shape factor."""
    return (
        scale_by_muon_momentum(momentum, nesterov),
        orthogonalize_newton_schulz(ns_coefficients, eps, ns_steps, ns_dtype=ns_dtype),
        scale_by_shape(adjust_lr_fn),
    )


register_preconditioner(
    "muon", muon_transforms, check=check_options, lr_span=(-3.5, -1.0), matrices_only=True,
    summary="Muon (Jordan et al. 2024) as torch: Newton–Schulz orthogonalised momentum "
            "× a shape factor; 2-D leaves only",
    torch="Muon", alias="muon",
)
