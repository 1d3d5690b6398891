"""Weight decay as a timescale and as an equilibrium: small formulas, cited.

EMA view (Wang & Aitchison, "How to set AdamW's weight decay as you scale model and
dataset size", arXiv 2405.13698): with a constant lr α and torch-style decay λ,
θ_t = (1 − αλ)θ_{t−1} − αu_t is an exponential moving average of −u/λ with rate αλ,
so its memory is

.. math::

    \\tau_{\\text{iter}} = \\frac{1}{\\alpha\\lambda}, \\qquad
    \\tau_{\\text{epoch}} = \\tau_{\\text{iter}} \\cdot \\frac{B}{N}

(B the batch size, N the dataset size, N/B iterations per epoch). With a schedule,
the decay integrated over training, :math:`\\sum_t c_t\\lambda`, is the number of
timescales the run spans.

Rotational equilibrium (Kosson, Messmer & Jaggi, "Rotational Equilibrium: How Weight
Decay Balances Learning Across Neural Networks", ICML 2024, arXiv 2305.17212): a
scale-invariant weight (e.g. followed by a normalisation) of C entries under AdamW
settles, after O(1/(αλ)) steps, where the decay's shrinking balances the update's
growth, ‖θ‖² = (1 − αλ)²‖θ‖² + α²‖u‖² with ‖u‖² ≈ C:

.. math::

    \\lVert\\theta\\rVert \\to \\sqrt{\\frac{\\alpha C}{2\\lambda}}, \\qquad
    \\text{angular update per step} \\to \\sqrt{2\\alpha\\lambda}
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from wdchain import _validate


def _positive(where: str, **values: Any) -> None:
    for name, value in values.items():
        number = _validate.concrete_number(value)
        if number is not None and not number > 0:
            raise ValueError(f"{where}: {name} must be > 0, got {value!r}")


def ema_timescale(learning_rate: Any, weight_decay: Any) -> Any:
    r"""The EMA timescale of decoupled (torch-style) decay, in iterations.

    .. math:: \tau_{\text{iter}} = 1/(\alpha\lambda)

    (Wang & Aitchison 2024). λ is torch's ``weight_decay`` (the decay per step is
    α·λ). Numbers or JAX scalars (traceable).

    Example:
      >>> ema_timescale(1e-3, 0.1)
      10000.0
    """
    _positive("ema_timescale", learning_rate=learning_rate, weight_decay=weight_decay)
    return 1.0 / (learning_rate * weight_decay)


def timescale_in_epochs(tau_iter: Any, batch_size: Any, dataset_size: Any) -> Any:
    r"""τ_epoch = τ_iter·B/N: the timescale in epochs of N/B iterations each.

    Example:
      >>> timescale_in_epochs(10000.0, batch_size=100, dataset_size=50000)
      20.0
    """
    _positive("timescale_in_epochs", tau_iter=tau_iter, batch_size=batch_size,
              dataset_size=dataset_size)
    return tau_iter * batch_size / dataset_size


def weight_decay_for_timescale(
    learning_rate: Any,
    *,
    tau_iter: Any = None,
    tau_epoch: Any = None,
    batch_size: Any = None,
    dataset_size: Any = None,
) -> Any:
    r"""The torch-style λ that gives a timescale: the inverse of :func:`ema_timescale`.

    .. math:: \lambda = \frac{1}{\alpha\,\tau_{\text{iter}}}
              = \frac{B}{\alpha\,\tau_{\text{epoch}}\,N}

    Give ``tau_iter``, or ``tau_epoch`` with ``batch_size`` and ``dataset_size``.
    Wang & Aitchison find the best τ_epoch roughly constant across model and dataset
    sizes, so λ ∝ 1/N at a fixed lr and batch size.

    Example:
      >>> weight_decay_for_timescale(1e-3, tau_epoch=20.0, batch_size=100,
      ...                            dataset_size=50000)
      0.1
    """
    where = "weight_decay_for_timescale"
    if (tau_iter is None) == (tau_epoch is None):
        raise ValueError(f"{where}: give exactly one of tau_iter and tau_epoch "
                         f"(got tau_iter={tau_iter!r}, tau_epoch={tau_epoch!r})")
    if tau_epoch is not None:
        if batch_size is None or dataset_size is None:
            raise ValueError(f"{where}: tau_epoch needs batch_size and dataset_size "
                             "(τ_iter = τ_epoch·N/B)")
        _positive(where, tau_epoch=tau_epoch, batch_size=batch_size,
                  dataset_size=dataset_size)
        tau_iter = tau_epoch * dataset_size / batch_size
    _positive(where, learning_rate=learning_rate, tau_iter=tau_iter)
    return 1.0 / (learning_rate * tau_iter)


_SCALES = ("decoupled", "independent", "constant", "corrected")


def integrated_decay(
    learning_rate: Any,
    weight_decay: Any,
    steps: int,
    *,
    decay: str = "decoupled",
    lr_peak: Any = None,
) -> Any:
    r"""The decay summed over a run, :math:`\sum_{t<T} c_t\lambda_t`.

    c_t is α_t (``"decoupled"``, torch's AdamW), η_t = α_t/α_peak
    (``"independent"``), 1 (``"constant"``) or α_t·η_t (``"corrected"``, AdamC).
    With θ* = 0 and no update, θ_T ≈ θ₀·exp(−Σ c_tλ): the number of EMA timescales the
    run spans (Wang & Aitchison's τ for a schedule).

    Args:
      learning_rate: α_t: a number or a schedule of the step count.
      weight_decay: λ: a number or a schedule of the step count.
      steps: T, the number of steps.
      decay: which c_t.
      lr_peak: α_peak for η_t; default: the largest α_t over the run.

    Example:
      >>> round(float(integrated_decay(1e-3, 0.1, 10000)), 6)
      1.0
    """
    where = "integrated_decay"
    if decay not in _SCALES:
        raise ValueError(f"{where}: unknown decay {decay!r}; use one of {', '.join(_SCALES)}")
    if not (isinstance(steps, int) and steps > 0):
        raise ValueError(f"{where}: steps must be a positive int, got {steps!r}")
    t = jnp.arange(steps)
    alpha = _series(learning_rate, t)
    lam = _series(weight_decay, t)
    peak = jnp.max(alpha) if lr_peak is None else lr_peak
    eta = alpha / peak
    c = {"decoupled": alpha, "independent": eta, "constant": jnp.ones_like(alpha),
         "corrected": alpha * eta}[decay]
    return jnp.sum(c * lam)


def _series(value: Any, t: Any) -> Any:
    if callable(value):
        fn: Callable[[Any], Any] = value
        return jnp.broadcast_to(jnp.asarray(fn(t)), t.shape).astype(jnp.result_type(float))
    return jnp.full(t.shape, value, jnp.result_type(float))


def equilibrium_norm(learning_rate: Any, weight_decay: Any, size: Any) -> Any:
    r"""‖θ‖ at AdamW's rotational equilibrium for a scale-invariant weight of C entries.

    .. math:: \lVert\theta\rVert \to \sqrt{\alpha C / (2\lambda)}

    (Kosson et al. 2024; the update's RMS is taken as 1, as for Adam with β₁ = 0 or
    in steady state, so ‖u‖² ≈ C). Reached after O(1/(αλ)) steps.

    Example:
      >>> round(equilibrium_norm(1e-2, 0.5, 100), 6)
      1.0
    """
    _positive("equilibrium_norm", learning_rate=learning_rate, weight_decay=weight_decay,
              size=size)
    value = learning_rate * size / (2 * weight_decay)
    return math.sqrt(value) if isinstance(value, (int, float)) else jnp.sqrt(value)


def equilibrium_angular_update(learning_rate: Any, weight_decay: Any) -> Any:
    r"""The angle θ turns per step at AdamW's rotational equilibrium, in radians.

    .. math:: \eta_r \to \sqrt{2\alpha\lambda}

    (Kosson et al. 2024), for a scale-invariant weight; independent of its size.

    Example:
      >>> round(equilibrium_angular_update(1e-2, 0.5), 6)
      0.1
    """
    _positive("equilibrium_angular_update", learning_rate=learning_rate,
              weight_decay=weight_decay)
    value = 2 * learning_rate * weight_decay
    return math.sqrt(value) if isinstance(value, (int, float)) else jnp.sqrt(value)
