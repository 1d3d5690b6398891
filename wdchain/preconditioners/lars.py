"""LARS (You et al. 2017): SGD with momentum, each leaf's step scaled by its trust
ratio c·‖θ‖/‖u‖."""

from __future__ import annotations

from typing import Any

import optax

from wdchain import _recipe, _validate
from wdchain.preconditioners.lamb import scale_by_trust_ratio
from wdchain.preconditioners.momentum import check_nesterov, scale_by_momentum
from wdchain.registry import register_preconditioner
from wdchain.types import Options


def check_options(where: str, options: Options) -> None:
    """LARS's options: ``trust_coefficient`` and ``momentum`` ≥ 0, ``nesterov`` a bool
    (and μ > 0 with it)."""
    _validate.check_range(where, "trust_coefficient", options["trust_coefficient"])
    _validate.check_range(where, "momentum", options["momentum"])
    _validate.check_flag(where, "nesterov", options["nesterov"])
    check_nesterov(where, options["momentum"], 0.0, options["nesterov"])


def scale_by_lars(
    trust_coefficient: Any = 1e-3, momentum: Any = 0.9, nesterov: bool = False
) -> optax.GradientTransformation:
    r"""LARS's scaling: the layer-wise trust ratio, then torch's SGD momentum.

    .. math::

        r_t = c\,\frac{\lVert\theta_t\rVert}{\lVert u_t\rVert}\, u_t
        \ \text{per leaf}, \qquad
        b_t \leftarrow \mu\, b_{t-1} + r_t \ (b_1 = r_1), \qquad
        \text{out} = b_t \text{ or, Nesterov, } r_t + \mu b_t

    with c = ``trust_coefficient``, μ = ``momentum``, and u_t the update that reaches
    it: the gradient, plus λθ when the decay sits before it (``build``'s ``"l2"``
    and ``"decoupled"``, which are the same for LARS: it has nothing before the
    ratio). Where ‖θ‖ or ‖u‖ is 0 the ratio is c (optax: 1). It is
    :func:`wdchain.scale_by_trust_ratio` followed by :func:`wdchain.scale_by_momentum`;
    the learning rate comes after both, as in torch's SGD (and timm's ``Lars``), so
    the momentum holds unscaled steps. optax's ``lars`` and the paper apply the lr
    before the momentum: the same at a constant lr, not under a schedule.

    Args:
      trust_coefficient: c ≥ 0 (default 1e-3, the paper's η and optax's).
      momentum: μ ≥ 0 (default 0.9).
      nesterov: Nesterov's momentum (needs μ > 0).

    Returns:
      An ``optax.GradientTransformation`` whose ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_lars(trust_coefficient=0.1, momentum=0.0)
      >>> params = jnp.array([3.0, 4.0])
      >>> tx.update(jnp.array([0.0, 2.0]), tx.init(params), params)[0]  # 0.1·5/2·u
      Array([0. , 0.5], dtype=float32)
    """
    check_options("scale_by_lars", {"trust_coefficient": trust_coefficient,
                                     "momentum": momentum, "nesterov": nesterov})
    return _recipe.chain(
        scale_by_trust_ratio(trust_coefficient),
        scale_by_momentum(momentum, nesterov=nesterov),
    )


def _slot(trust_coefficient: Any = 1e-3, momentum: Any = 0.9,
          nesterov: bool = False) -> optax.GradientTransformation:
    """Nothing before the decoupled decay: LARS's ratio and momentum sit ``inside``."""
    del trust_coefficient, momentum, nesterov
    return _recipe.nothing()


register_preconditioner(
    "lars", _slot, check=check_options, lr_span=(-1.0, 1.5),
    inside=lambda o: scale_by_lars(o["trust_coefficient"], o["momentum"], o["nesterov"]),
    summary="LARS (You et al. 2017): SGD momentum on steps scaled per leaf by "
            "c·‖θ‖/‖g + λθ‖; decoupled decay inside the ratio",
)
