"""torch.optim's Adadelta, ASGD, Adafactor and Muon as short chains: torch's names,
argument order, defaults and validation (as the eight in ``_aliases``)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import optax

from wdchain import _decay, _recipe, _validate
from wdchain._adadelta import scale_by_adadelta
from wdchain._adafactor import _check_eps, scale_by_adafactor
from wdchain._aliases import _check, _sign, torch_style
from wdchain._asgd import asgd_learning_rate, average_iterates, scale_by_asgd
from wdchain._learning_rate import scale_by_learning_rate
from wdchain._muon import (
    check_adjust_lr_fn,
    check_newton_schulz,
    orthogonalize_newton_schulz,
    scale_by_muon_momentum,
    scale_by_shape,
)

chain = _recipe.chain


@torch_style
def adadelta(
    lr: Any = 1.0,
    rho: Any = 0.9,
    eps: Any = 1e-6,
    weight_decay: Any = 0.0,
    *,
    maximize: bool = False,
    mask: Any = None,
) -> optax.GradientTransformation:
    r"""``torch.optim.Adadelta``: ``chain(add_l2_to_grad, scale_by_adadelta, lr)``.

    .. math::

        g \leftarrow g + \lambda\theta, \quad
        \theta \leftarrow \theta - \alpha_t
        \frac{\sqrt{\Delta_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}}\, g

    Args:
      lr: α ≥ 0, a number, JAX scalar or schedule (torch default 1.0).
      rho: ρ in [0, 1] (torch default 0.9). eps, weight_decay: ≥ 0 (L2).
      maximize, mask: as in :func:`wdchain.sgd` (keyword only).
    """
    where = "adadelta"
    _check(where, lr, weight_decay, maximize, mask)
    _validate.check_range(where, "rho", rho, high=1.0)
    _validate.check_range(where, "eps", eps)
    return chain(
        _sign(maximize),
        _decay.add_l2_to_grad(weight_decay, mask),
        scale_by_adadelta(rho, eps),
        scale_by_learning_rate(lr),
    )


@torch_style
def asgd(
    lr: Any = 1e-2,
    lambd: Any = 1e-4,
    alpha: Any = 0.75,
    t0: Any = 1e6,
    weight_decay: Any = 0.0,
    *,
    maximize: bool = False,
    mask: Any = None,
) -> optax.GradientTransformation:
    r"""``torch.optim.ASGD``: ``chain(add_l2_to_grad, scale_by_asgd, lr=η_t, average_iterates)``.

    .. math::

        g \leftarrow g + \lambda\theta, \quad
        \theta \leftarrow \theta(1 - \lambda_d\eta_t) - \eta_t g, \quad
        \eta_t = \frac{\ell}{(1 + \lambda_d \ell (t-1))^{\alpha}}, \quad
        \bar\theta_t = \bar\theta_{t-1} + \mu_t(\theta_t - \bar\theta_{t-1})

    with μ_t = 1/max(1, t − 1 − t₀) (μ₁ = 1). The average θ̄ (torch's ``ax``) is
    read from the state with :func:`wdchain.averaged_params`.

    Args:
      lr: ℓ ≥ 0, a number, JAX scalar or schedule (torch default 1e-2; under a
        schedule η_t uses the previous step's lr, as torch does).
      lambd: λ_d ≥ 0 (torch default 1e-4; torch does not check it).
      alpha: α, a finite number (torch default 0.75; unchecked in torch).
      t0: t₀, a finite number (torch default 1e6; unchecked in torch).
      weight_decay: λ ≥ 0 (L2; the mask applies to it, not to λ_d).
      maximize, mask: as in :func:`wdchain.sgd` (keyword only).
    """
    where = "asgd"
    _check(where, lr, weight_decay, maximize, mask)
    _validate.check_range(where, "lambd", lambd)
    _validate.check_range(where, "alpha", alpha, low=-float("inf"))
    _validate.check_range(where, "t0", t0, low=-float("inf"))
    return chain(
        _sign(maximize),
        _decay.add_l2_to_grad(weight_decay, mask),
        scale_by_asgd(lambd),
        scale_by_learning_rate(asgd_learning_rate(lr, lambd, alpha)),
        average_iterates(t0),
    )


@torch_style
def adafactor(
    lr: Any = 1e-2,
    beta2_decay: Any = -0.8,
    eps: tuple[Any, Any] = (None, 1e-3),
    d: Any = 1.0,
    weight_decay: Any = 0.0,
    *,
    maximize: bool = False,
    mask: Any = None,
) -> optax.GradientTransformation:
    r"""``torch.optim.Adafactor``: ``chain(scale_by_adafactor, decoupled_weight_decay, lr)``.

    .. math::

        \theta \leftarrow \theta(1 - \ell_t\lambda) - \min(\ell_t, 1/\sqrt t)\,
        \frac{\max(\epsilon_2, \operatorname{RMS}(\theta))}{\max(1, \operatorname{RMS}(x)/d)}\,x,
        \qquad x = g / \sqrt{\max(\hat V_t, \epsilon_1^2)}

    with V̂_t factored over the last two dimensions of leaves with two or more (see
    :func:`wdchain.scale_by_adafactor`). The decay is decoupled and uses ℓ_t, not the
    relative step, as torch.

    Args:
      lr: ℓ ≥ 0, a number, JAX scalar or schedule (torch default 1e-2).
      beta2_decay: ≤ 0 (torch default −0.8).
      eps: (ε₁, ε₂), ε₁ None (the dtype's machine epsilon) or ≥ 0, ε₂ ≥ 0.
      d: clipping threshold ≥ 1. weight_decay: λ ≥ 0 (decoupled, × ℓ_t).
      maximize, mask: as in :func:`wdchain.sgd` (keyword only).
    """
    where = "adafactor"
    _check(where, lr, weight_decay, maximize, mask)
    _validate.check_range(where, "beta2_decay", beta2_decay, low=-float("inf"), high=0.0)
    _check_eps(where, eps)
    _validate.check_range(where, "d", d, low=1.0)
    return chain(
        _sign(maximize),
        scale_by_adafactor(lr, beta2_decay, eps, d),
        _decay.decoupled_weight_decay(weight_decay, mask),
        scale_by_learning_rate(lr),
    )


@torch_style
def muon(
    lr: Any = 1e-3,
    weight_decay: Any = 0.1,
    momentum: Any = 0.95,
    nesterov: bool = True,
    ns_coefficients: tuple[Any, Any, Any] = (3.4445, -4.775, 2.0315),
    eps: Any = 1e-7,
    ns_steps: int = 5,
    adjust_lr_fn: str | None = None,
    *,
    mask: Any = None,
    ns_dtype: Any = jnp.bfloat16,
) -> optax.GradientTransformation:
    r"""``torch.optim.Muon``: ``chain(scale_by_muon_momentum, orthogonalize_newton_schulz,
    scale_by_shape, decoupled_weight_decay, lr)``.

    .. math::

        \theta \leftarrow \theta(1 - \alpha_t\lambda) - \alpha_t\, s(A, B)\,
        \mathrm{NS}_K(\tilde B_t)

    The decay uses the unadjusted lr α_t while the step uses α_t·s(A, B), as torch.
    2-D leaves only: others are refused at ``init``; give them to AdamW with
    ``optax.partition({"muon": muon(...), "adamw": adamw(...)}, wdchain.muon_labels)``.
    torch's Muon has no ``maximize``.

    Args:
      lr: α ≥ 0, a number, JAX scalar or schedule (torch default 1e-3).
      weight_decay: λ ≥ 0 (decoupled; torch default 0.1). momentum: μ ≥ 0 (0.95).
      nesterov: Nesterov momentum (True). ns_coefficients: (a, b, c).
      eps: ε ≥ 0 (1e-7). ns_steps: an int in [0, 100) (5).
      adjust_lr_fn: None/"original" (√max(1, A/B)) or "match_rms_adamw" (0.2√max(A, B)).
      mask: which leaves to decay (keyword only).
      ns_dtype: the Newton–Schulz iteration's dtype (keyword only; bfloat16 as torch).
    """
    where = "muon"
    _check(where, lr, weight_decay, False, mask)
    _validate.check_range(where, "momentum", momentum)
    _validate.check_flag(where, "nesterov", nesterov)
    check_adjust_lr_fn(where, adjust_lr_fn)
    check_newton_schulz(where, ns_coefficients, eps, ns_steps, ns_dtype)
    return chain(
        scale_by_muon_momentum(momentum, nesterov),
        orthogonalize_newton_schulz(ns_coefficients, eps, ns_steps, ns_dtype=ns_dtype),
        scale_by_shape(adjust_lr_fn),
        _decay.decoupled_weight_decay(weight_decay, mask),
        scale_by_learning_rate(lr),
    )
