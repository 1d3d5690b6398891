r"""Converting weight-decay coefficients between conventions.

torch, optax and Keras multiply the decoupled decay by the learning rate:
:math:`\theta \leftarrow \theta - \alpha_t\lambda_{\text{torch}}\theta`. Loshchilov &
Hutter (2019, Alg. 2) multiply it by the schedule multiplier only:
:math:`\theta \leftarrow \theta - \eta_t\lambda_{\text{paper}}\theta`, with
:math:`\eta_t = \alpha_t/\alpha_{\text{peak}}`. The two agree at every step when
:math:`\lambda_{\text{torch}} = \lambda_{\text{paper}}/\alpha_{\text{peak}}`.
"""

from __future__ import annotations

import math
from typing import Any

from wdchain import _validate


def paper_to_torch(weight_decay: Any, lr_peak: Any) -> Any:
    r"""λ_torch = λ_paper / lr_peak: the paper's decay as torch's (decoupled) coefficient.

    ``build(p, decay="independent", weight_decay=λ_paper, ...)`` and
    ``build(p, decay="decoupled", weight_decay=paper_to_torch(λ_paper, lr_peak), ...)``
    make the same update at every step of the same schedule.

    Args:
      weight_decay: λ_paper ≥ 0 (a number or JAX scalar).
      lr_peak: the peak learning rate, > 0.

    Example:
      >>> paper_to_torch(0.05, lr_peak=1e-3)
      50.0
    """
    _validate.check_range("paper_to_torch", "weight_decay", weight_decay)
    _validate.check_positive_number("paper_to_torch", "lr_peak", lr_peak)
    return weight_decay / lr_peak


def torch_to_paper(weight_decay: Any, lr_peak: Any) -> Any:
    r"""λ_paper = λ_torch · lr_peak: torch's (decoupled) coefficient in the paper's terms.

    Args:
      weight_decay: λ_torch ≥ 0 (a number or JAX scalar).
      lr_peak: the peak learning rate, > 0.

    Example:
      >>> torch_to_paper(0.01, lr_peak=1e-3)  # torch's AdamW default at lr 1e-3
      1e-05
    """
    _validate.check_range("torch_to_paper", "weight_decay", weight_decay)
    _validate.check_positive_number("torch_to_paper", "lr_peak", lr_peak)
    return weight_decay * lr_peak


def _check_count(where: str, name: str, value: Any) -> None:
    if not _validate.is_whole_number(value) or value < 1:
        raise ValueError(f"{where}: {name} must be a positive integer, got {value!r}")


def normalized_weight_decay(
    normalized: Any, batch_size: int, train_size: int, epochs: int
) -> Any:
    r"""The paper's normalised weight decay: :math:`\lambda = \lambda_{\text{norm}}\sqrt{b/(BT)}`.

    Loshchilov & Hutter (2019, App. B.1) make the best λ less dependent on the run's
    length by setting it from λ_norm, the batch size b, the number of training points
    B and the number of epochs T. The result is the paper's λ (multiplied by η_t):
    use it with ``decay="independent"``, or convert it with :func:`paper_to_torch`.

    Args:
      normalized: λ_norm ≥ 0 (a number or JAX scalar).
      batch_size: b, a positive integer.
      train_size: B, the number of training points, a positive integer.
      epochs: T, a positive integer.

    Example:
      >>> normalized_weight_decay(0.05, batch_size=128, train_size=50_000, epochs=200)
      0.000179
    """
    where = "normalized_weight_decay"
    _validate.check_range(where, "normalized", normalized)
    _check_count(where, "batch_size", batch_size)
    _check_count(where, "train_size", train_size)
    _check_count(where, "epochs", epochs)
    if batch_size > train_size:
        raise ValueError(
            f"{where}: batch_size ({batch_size}) cannot exceed train_size ({train_size})"
        )
    return normalized * math.sqrt(batch_size / (train_size * epochs))
