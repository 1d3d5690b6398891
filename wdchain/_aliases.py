"""torch.optim's optimizers as short chains: torch's names, argument order and defaults.

Each alias is one ``chain``; what differs between Adam and AdamW is *where the decay
transform sits*: before ``scale_by_adam`` (L2, the decay enters the moments) or after
it (decoupled).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar, cast

import jax
import numpy as np
import optax
from flax import nnx

from wdchain import _decay, _recipe, _tree, _validate
from wdchain._adam_variants import scale_by_adamax, scale_by_nadam, scale_by_radam
from wdchain._adaptive import scale_by_adagrad, scale_by_adam, scale_by_rms
from wdchain._learning_rate import maximize as _maximize
from wdchain._learning_rate import scale_by_learning_rate
from wdchain._momentum import check_nesterov, momentum_slot

chain = _recipe.chain

_Factory = TypeVar("_Factory", bound=Callable[..., optax.GradientTransformation])


def _looks_like_params(value: Any, lr_given: bool) -> bool:
    """A model or a parameter tree (an array too when lr is also given by name):
    what torch's optimizers take first."""
    if isinstance(value, (nnx.Module, nnx.Variable, nnx.State, Mapping, list, Iterator)):
        return True
    if isinstance(value, (jax.Array, np.ndarray)):
        return lr_given and np.ndim(value) > 0
    return isinstance(value, tuple) and bool(value)


def _summary(value: Any) -> str:
    if isinstance(value, (jax.Array, np.ndarray)):
        return f"an array of shape {np.shape(value)}"
    leaves = jax.tree.leaves(value) if not isinstance(value, Iterator) else []
    shown = f"a {type(value).__name__}"
    return f"{shown} with {len(leaves)} leaves" if leaves else shown


def torch_style(factory: _Factory) -> _Factory:
    """Refuses torch's ``Optimizer(params, lr=...)`` habit with the optax idiom.

    torch takes the parameters first; a wdchain optimizer takes its hyperparameters
    only (``lr`` first) and sees the parameters at ``tx.init(params)``. Without this,
    ``adamw(params, lr=1e-3)`` fails with "got multiple values for argument 'lr'" and
    ``adamw(params)`` prints the whole tree.
    """
    name = factory.__name__

    @functools.wraps(factory)
    def checked(*args: Any, **kwargs: Any) -> optax.GradientTransformation:
        given = args[0] if args else kwargs.get("lr")
        if _looks_like_params(given, lr_given=bool(args) and "lr" in kwargs):
            raise ValueError(
                f"{name}: lr (the first argument) got {_summary(given)}: the "
                "parameters are not an argument of a wdchain optimizer, as in optax "
                f"(torch's optim.{_TORCH.get(name, name)}(params, lr=...)). Make the optimizer, "
                f"then give it the parameters: tx = wdchain.{name}(lr=1e-3); "
                "state = tx.init(params) (or nnx.Optimizer(model, tx, wrt=nnx.Param))."
            )
        return factory(*args, **kwargs)

    return cast(_Factory, checked)


_TORCH = {"sgd": "SGD", "adagrad": "Adagrad", "rmsprop": "RMSprop", "adam": "Adam",
          "adamw": "AdamW", "nadam": "NAdam", "radam": "RAdam", "adamax": "Adamax",
          "adadelta": "Adadelta", "asgd": "ASGD", "adafactor": "Adafactor", "muon": "Muon"}


def _check(where: str, lr: Any, weight_decay: Any, maximize: bool, mask: Any) -> None:
    _validate.check_schedule_or_number(where, "lr", lr)
    _validate.check_schedule_or_number(where, "weight_decay", weight_decay)
    _validate.check_flag(where, "maximize", maximize)
    _validate.check_mask(where, mask)


def _sign(maximize: bool) -> optax.GradientTransformation:
    return _maximize() if maximize else _recipe.nothing()


@torch_style
def sgd(
    lr: Any = 1e-3,
    momentum: Any = _validate.OFF,
    dampening: Any = 0.0,
    weight_decay: Any = 0.0,
    nesterov: bool = False,
    *,
    maximize: bool = False,
    mask: Any = None,
) -> optax.GradientTransformation:
    r"""``torch.optim.SGD``: ``chain(add_l2_to_grad, scale_by_momentum, lr)``.

    .. math::

        g \leftarrow g + \lambda\theta, \quad
        b_t \leftarrow \mu b_{t-1} + (1-\tau) g \;(b_1 = g), \quad
        \theta \leftarrow \theta - \alpha_t \cdot (g + \mu b_t \text{ if Nesterov else } b_t)

    The momentum step is left out when ``momentum`` is 0. With plain SGD, L2 and
    decoupled decay coincide; with momentum the decay enters the buffer. Under
    ``inject_hyperparams`` (optax's or wdchain's) a momentum that is 0 at ``init``
    keeps no buffer either, so the state is the plain optimizer's; making it
    non-zero later needs a new ``init`` (a concrete value is refused, a traced one
    makes the update NaN rather than silently run without momentum). One case keeps a
    (zero-momentum) buffer: an explicit ``momentum=0`` given to optax's injector with a
    jitted ``init``, where the value is a tracer; the default, or wdchain's injector,
    has none.

    Args:
      lr: α ≥ 0, a number, JAX scalar or schedule (torch default 1e-3).
      momentum: μ ≥ 0. dampening: τ. weight_decay: λ ≥ 0 (L2).
      nesterov: Nesterov momentum (needs μ > 0, τ = 0).
      maximize: ascend instead (keyword only): the gradient is negated before decay.
      mask: which leaves to decay (keyword only), as in :func:`wdchain.add_l2_to_grad`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = sgd(lr=0.1, weight_decay=0.5)
      >>> params = jnp.array([2.0])
      >>> tx.update(jnp.array([1.0]), tx.init(params), params)[0]  # −0.1·(1 + 0.5·2)
      Array([-0.2], dtype=float32)
    """
    _check("sgd", lr, weight_decay, maximize, mask)
    _validate.check_range("sgd", "momentum", momentum)
    _validate.check_range("sgd", "dampening", dampening, low=-float("inf"))
    _validate.check_flag("sgd", "nesterov", nesterov)
    check_nesterov("sgd", momentum, dampening, nesterov)
    return chain(
        _sign(maximize),
        _decay.add_l2_to_grad(weight_decay, mask),
        momentum_slot("sgd", momentum, dampening, nesterov),
        scale_by_learning_rate(lr),
    )


def _adagrad_learning_rate(lr: Any, lr_decay: Any) -> Any:
    """torch's ``lr / (1 + (t − 1)·lr_decay)``, composed with any lr schedule."""
    if _validate.is_static_zero(lr_decay):
        return lr

    def schedule(count: Any) -> Any:
        return _tree.value_at(lr, count) / (1 + count * lr_decay)

    schedule.wdchain_name = "lr/(1 + t·lr_decay)"  # type: ignore[attr-defined]
    return schedule


@torch_style
def adagrad(
    lr: Any = 1e-2,
    lr_decay: Any = 0.0,
    weight_decay: Any = 0.0,
    initial_accumulator_value: Any = 0.0,
    eps: Any = 1e-10,
    *,
    maximize: bool = False,
    mask: Any = None,
) -> optax.GradientTransformation:
    r"""``torch.optim.Adagrad``: ``chain(add_l2_to_grad, scale_by_adagrad, lr)``.

    .. math::

        g \leftarrow g + \lambda\theta, \quad s \leftarrow s + g^2, \quad
        \theta \leftarrow \theta - \frac{\alpha_t}{1 + (t-1)\,\text{lr\_decay}}
        \cdot \frac{g}{\sqrt{s} + \epsilon}

    Args:
      lr: α ≥ 0, a number, JAX scalar or schedule (torch default 1e-2); ``lr_decay``
        multiplies it as torch does.
      lr_decay, weight_decay, initial_accumulator_value, eps: each ≥ 0 (torch
        defaults 0, 0, 0, 1e-10).
      maximize, mask: as in :func:`sgd` (keyword only).
    """
    where = "adagrad"
    _check(where, lr, weight_decay, maximize, mask)
    _validate.check_range(where, "lr_decay", lr_decay)
    _validate.check_range(where, "initial_accumulator_value", initial_accumulator_value)
    _validate.check_range(where, "eps", eps)
    return chain(
        _sign(maximize),
        _decay.add_l2_to_grad(weight_decay, mask),
        scale_by_adagrad(eps, initial_accumulator_value),
        scale_by_learning_rate(_adagrad_learning_rate(lr, lr_decay)),
    )


@torch_style
def rmsprop(
    lr: Any = 1e-2,
    alpha: Any = 0.99,
    eps: Any = 1e-8,
    weight_decay: Any = 0.0,
    momentum: Any = _validate.OFF,
    centered: bool = False,
    *,
    maximize: bool = False,
    mask: Any = None,
) -> optax.GradientTransformation:
    r"""``torch.optim.RMSprop``: ``chain(add_l2_to_grad, scale_by_rms, scale_by_momentum, lr)``.

    .. math::

        g \leftarrow g + \lambda\theta, \quad
        v \leftarrow \alpha v + (1-\alpha) g^2, \quad
        b \leftarrow \mu b + \frac{g}{\sqrt{v - [\text{centered}]\,\bar g^2} + \epsilon}, \quad
        \theta \leftarrow \theta - \alpha_t b

    The learning rate comes *after* the momentum buffer, as in torch (``optax.rmsprop``
    applies it before, which differs under an lr schedule).

    Args:
      lr: α ≥ 0, a number, JAX scalar or schedule (torch default 1e-2).
      alpha: in [0, 1] (torch default 0.99). eps, weight_decay, momentum: each ≥ 0.
      centered: normalise by the variance estimate.
      maximize, mask: as in :func:`sgd` (keyword only).
    """
    where = "rmsprop"
    _check(where, lr, weight_decay, maximize, mask)
    _validate.check_flag(where, "centered", centered)
    _validate.check_range(where, "eps", eps)
    _validate.check_range(where, "momentum", momentum)
    _validate.check_range(where, "alpha", alpha, high=1.0)
    return chain(
        _sign(maximize),
        _decay.add_l2_to_grad(weight_decay, mask),
        scale_by_rms(alpha, eps, centered),
        momentum_slot(where, momentum),
        scale_by_learning_rate(lr),
    )


def _check_adam_family(where: str, lr: Any, betas: Any, eps: Any, weight_decay: Any,
                       maximize: bool, mask: Any, mu_dtype: Any = None,
                       nu_dtype: Any = None) -> None:
    _check(where, lr, weight_decay, maximize, mask)
    _validate.check_range(where, "eps", eps)
    _validate.check_betas(where, betas)
    _validate.check_float_dtype(where, "mu_dtype", mu_dtype)
    _validate.check_float_dtype(where, "nu_dtype", nu_dtype)


@torch_style
def adam(
    lr: Any = 1e-3,
    betas: tuple[Any, Any] = (0.9, 0.999),
    eps: Any = 1e-8,
    weight_decay: Any = 0.0,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
    mask: Any = None,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformation:
    r"""``torch.optim.Adam``: ``chain(add_l2_to_grad, scale_by_adam, lr)``.

    .. math::

        g \leftarrow g + \lambda\theta, \quad
        \theta \leftarrow \theta - \alpha_t \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}

    The decay is L2: it enters both moments. With ``decoupled_weight_decay=True`` this
    is :func:`adamw`, as in torch.

    Args:
      lr: α ≥ 0, a number, JAX scalar or schedule (torch default 1e-3).
      betas: (β₁, β₂) in [0, 1). eps, weight_decay: ≥ 0. amsgrad: torch's AMSGrad.
      maximize, mask: as in :func:`sgd` (keyword only).
      decoupled_weight_decay: move the decay after the preconditioner (keyword only).
      mu_dtype, nu_dtype: dtypes to hold the moments in (keyword only; default the
        params' dtype), e.g. ``jnp.bfloat16`` for m: see :func:`scale_by_adam`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> params = jnp.array([1.0, -1.0])
      >>> grads = jnp.array([0.3, 0.1])
      >>> def step(tx):
      ...     return tx.update(grads, tx.init(params), params)[0]
      >>> bool(jnp.all(step(adam(weight_decay=0.0)) == step(adamw(weight_decay=0.0))))
      True
      >>> bool(jnp.all(step(adam(weight_decay=0.1)) == step(adamw(weight_decay=0.1))))
      False
    """
    where = "adam"
    _check_adam_family(where, lr, betas, eps, weight_decay, maximize, mask, mu_dtype, nu_dtype)
    _validate.check_flag(where, "amsgrad", amsgrad)
    _validate.check_flag(where, "decoupled_weight_decay", decoupled_weight_decay)
    if decoupled_weight_decay:
        return adamw(lr, betas, eps, weight_decay, amsgrad, maximize=maximize, mask=mask,
                     mu_dtype=mu_dtype, nu_dtype=nu_dtype)
    return chain(
        _sign(maximize),
        _decay.add_l2_to_grad(weight_decay, mask),
        scale_by_adam(betas, eps, amsgrad, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
        scale_by_learning_rate(lr),
    )


@torch_style
def adamw(
    lr: Any = 1e-3,
    betas: tuple[Any, Any] = (0.9, 0.999),
    eps: Any = 1e-8,
    weight_decay: Any = 1e-2,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
    mask: Any = None,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformation:
    r"""``torch.optim.AdamW``: ``chain(scale_by_adam, decoupled_weight_decay, lr)``.

    .. math::

        \theta \leftarrow \theta - \alpha_t \Bigl(\frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}
        + \lambda\theta\Bigr) = \theta(1 - \alpha_t\lambda) - \alpha_t \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}

    The same transforms as :func:`adam`; only the decay has moved past the
    preconditioner. With λ = 0 it is Adam, bit for bit. The default λ is torch's 1e-2
    (optax: 1e-4; the seed document says 1e-3).

    Args:
      lr: α ≥ 0, a number, JAX scalar or schedule (torch default 1e-3).
      betas: (β₁, β₂) in [0, 1). eps, weight_decay: ≥ 0. amsgrad: torch's AMSGrad.
      maximize, mask: as in :func:`sgd` (keyword only).
      mu_dtype, nu_dtype: as in :func:`adam` (keyword only).
    """
    _check_adam_family("adamw", lr, betas, eps, weight_decay, maximize, mask, mu_dtype, nu_dtype)
    _validate.check_flag("adamw", "amsgrad", amsgrad)
    return chain(
        _sign(maximize),
        scale_by_adam(betas, eps, amsgrad, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
        _decay.decoupled_weight_decay(weight_decay, mask),
        scale_by_learning_rate(lr),
    )


def _l2_or_decoupled(
    scaler: optax.GradientTransformation, weight_decay: Any, decoupled: bool, mask: Any
) -> tuple[optax.GradientTransformation, ...]:
    """``(l2, scaler, decoupled)`` with the decay in one of the two slots."""
    return (
        _decay.add_l2_to_grad(0.0 if decoupled else weight_decay, mask),
        scaler,
        _decay.decoupled_weight_decay(weight_decay if decoupled else 0.0, mask),
    )


@torch_style
def nadam(
    lr: Any = 2e-3,
    betas: tuple[Any, Any] = (0.9, 0.999),
    eps: Any = 1e-8,
    weight_decay: Any = 0.0,
    momentum_decay: Any = 4e-3,
    decoupled_weight_decay: bool = False,
    *,
    maximize: bool = False,
    mask: Any = None,
) -> optax.GradientTransformation:
    r"""``torch.optim.NAdam``: ``chain(add_l2_to_grad, scale_by_nadam, decoupled_weight_decay, lr)``.

    One decay slot is used: the first (L2) by default, the second with
    ``decoupled_weight_decay=True`` (torch's NAdamW).

    Args:
      lr: α ≥ 0 (torch default 2e-3). betas, eps, weight_decay: as in :func:`adam`.
      momentum_decay: ψ ≥ 0 (torch default 4e-3).
      decoupled_weight_decay: decoupled instead of L2 decay.
      maximize, mask: as in :func:`sgd` (keyword only).
    """
    where = "nadam"
    _check_adam_family(where, lr, betas, eps, weight_decay, maximize, mask)
    _validate.check_range(where, "momentum_decay", momentum_decay)
    _validate.check_flag(where, "decoupled_weight_decay", decoupled_weight_decay)
    return chain(
        _sign(maximize),
        *_l2_or_decoupled(
            scale_by_nadam(betas, eps, momentum_decay), weight_decay, decoupled_weight_decay, mask
        ),
        scale_by_learning_rate(lr),
    )


@torch_style
def radam(
    lr: Any = 1e-3,
    betas: tuple[Any, Any] = (0.9, 0.999),
    eps: Any = 1e-8,
    weight_decay: Any = 0.0,
    decoupled_weight_decay: bool = False,
    *,
    maximize: bool = False,
    mask: Any = None,
) -> optax.GradientTransformation:
    r"""``torch.optim.RAdam``: ``chain(add_l2_to_grad, scale_by_radam, decoupled_weight_decay, lr)``.

    Args:
      lr: α ≥ 0 (torch default 1e-3). betas, eps, weight_decay: as in :func:`adam`.
      decoupled_weight_decay: decoupled instead of L2 decay (torch's RAdamW).
      maximize, mask: as in :func:`sgd` (keyword only).
    """
    where = "radam"
    _check_adam_family(where, lr, betas, eps, weight_decay, maximize, mask)
    _validate.check_flag(where, "decoupled_weight_decay", decoupled_weight_decay)
    return chain(
        _sign(maximize),
        *_l2_or_decoupled(scale_by_radam(betas, eps), weight_decay, decoupled_weight_decay, mask),
        scale_by_learning_rate(lr),
    )


@torch_style
def adamax(
    lr: Any = 2e-3,
    betas: tuple[Any, Any] = (0.9, 0.999),
    eps: Any = 1e-8,
    weight_decay: Any = 0.0,
    *,
    maximize: bool = False,
    mask: Any = None,
) -> optax.GradientTransformation:
    r"""``torch.optim.Adamax``: ``chain(add_l2_to_grad, scale_by_adamax, lr)``.

    torch's Adamax has L2 decay only; ``wdchain.build("adamax", decay=...)`` gives
    the other placements.

    Args:
      lr: α ≥ 0 (torch default 2e-3). betas, eps, weight_decay: as in :func:`adam`.
      maximize, mask: as in :func:`sgd` (keyword only).
    """
    _check_adam_family("adamax", lr, betas, eps, weight_decay, maximize, mask)
    return chain(
        _sign(maximize),
        _decay.add_l2_to_grad(weight_decay, mask),
        scale_by_adamax(betas, eps),
        scale_by_learning_rate(lr),
    )
