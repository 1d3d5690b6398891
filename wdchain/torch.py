"""torch.optim's optimizers as short chains: torch's names, argument order and defaults.

Each alias is one ``chain``; what differs between Adam and AdamW is *where the decay
transform sits*: before ``scale_by_adam`` (L2, the decay enters the moments) or after
it (decoupled). Each alias is generated from its registry entry by ``_torch_chain``:
the entry's factory fills the preconditioner slot, its ``check`` validates the options,
its ``learning_rate`` and ``tail`` give ASGD's η_t and average; the alias adds torch's
decay slots. torch's class names come from the entries, and a test holds every alias's
defaults to its entry's. Only ``sgd`` and ``rmsprop`` write their chain out: torch's
μ = 0 there means no momentum buffer in the state (``momentum_slot``).

The signatures stay written out (not generated): they are torch's public contract, which
type checkers, IDEs and the API docs read.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from wdchain import _recipe, _validate, registry
from wdchain import decay as _decay
from wdchain._learning_rate import maximize as _maximize
from wdchain._learning_rate import scale_by_learning_rate
from wdchain.preconditioners import momentum as _momentum
from wdchain.preconditioners import rmsprop as _rmsprop
from wdchain.preconditioners.momentum import momentum_slot
from wdchain.preconditioners.rmsprop import scale_by_rms

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
                f"(torch's optim.{_torch_name(name)}(params, lr=...)). Make the optimizer, "
                f"then give it the parameters: tx = wdchain.{name}(lr=1e-3); "
                "state = tx.init(params) (or nnx.Optimizer(model, tx, wrt=nnx.Param))."
            )
        return factory(*args, **kwargs)

    return cast(_Factory, checked)


def _torch_name(alias: str) -> str:
    """torch's class for an alias, from the registry (AdamW is Adam's decoupled alias)."""
    if alias == "adamw":
        return "AdamW"
    torch = [e.torch for e in registry.REGISTRY.values() if e.alias == alias and e.torch]
    return torch[0] if torch else alias


def _check(where: str, lr: Any, weight_decay: Any, maximize: bool, mask: Any) -> None:
    _validate.check_schedule_or_number(where, "lr", lr)
    _validate.check_schedule_or_number(where, "weight_decay", weight_decay)
    _validate.check_flag(where, "maximize", maximize)
    _validate.check_mask(where, mask)


def _sign(maximize: bool) -> optax.GradientTransformation:
    return _maximize() if maximize else _recipe.nothing()


def _torch_chain(where: str, preconditioner: str, slots: tuple[str, ...], placement: str,
                 lr: Any, weight_decay: Any, maximize: bool | None, mask: Any,
                 **options: Any) -> optax.GradientTransformationExtraArgs:
    """torch's chain for a registry entry, with the decay slots torch has::

        chain([sign], [add_l2_to_grad], *factory(**options), [decoupled_weight_decay],
              scale_by_learning_rate(lr_t), *tail)

    ``slots`` are the decay slots the chain has ("l2", "decoupled"), ``placement`` the one
    that holds λ (the other holds 0: its state, not its effect). ``maximize=None``: no
    sign slot (torch's Muon has no ``maximize``). The options are checked by the entry's
    ``check``, the one ``build`` uses.
    """
    _check(where, lr, weight_decay, False if maximize is None else maximize, mask)
    entry = registry.lookup(where, preconditioner)
    entry.check(where, options)
    learning_rate = entry.step_learning_rate(lr, options)

    def decay(slot: str, factory: Any) -> list[optax.GradientTransformation]:
        if slot not in slots:
            return []
        return [factory(weight_decay if slot == placement else 0.0, mask)]

    return chain(
        *([] if maximize is None else [_sign(maximize)]),
        *decay("l2", _decay.add_l2_to_grad),
        *entry.transforms(options, learning_rate),
        *decay("decoupled", _decay.decoupled_weight_decay),
        scale_by_learning_rate(learning_rate),
        *entry.tail_transforms(options),
    )


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
    _momentum.check_options(
        "sgd", {"momentum": momentum, "dampening": dampening, "nesterov": nesterov})
    return chain(
        _sign(maximize),
        _decay.add_l2_to_grad(weight_decay, mask),
        momentum_slot("sgd", momentum, dampening, nesterov),
        scale_by_learning_rate(lr),
    )


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
    return _torch_chain("adagrad", "adagrad", ("l2",), "l2", lr, weight_decay, maximize, mask,
                        eps=eps, initial_accumulator_value=initial_accumulator_value,
                        lr_decay=lr_decay)


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
    _rmsprop.check_options(
        where, {"alpha": alpha, "eps": eps, "momentum": momentum, "centered": centered})
    return chain(
        _sign(maximize),
        _decay.add_l2_to_grad(weight_decay, mask),
        scale_by_rms(alpha, eps, centered),
        momentum_slot(where, momentum),
        scale_by_learning_rate(lr),
    )


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
    _validate.check_flag("adam", "decoupled_weight_decay", decoupled_weight_decay)
    placement = "decoupled" if decoupled_weight_decay else "l2"  # then it is adamw's chain
    return _torch_chain("adam", "adam", (placement,), placement, lr, weight_decay, maximize,
                        mask, betas=betas, eps=eps, amsgrad=amsgrad, mu_dtype=mu_dtype,
                        nu_dtype=nu_dtype)


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
    return _torch_chain("adamw", "adam", ("decoupled",), "decoupled", lr, weight_decay,
                        maximize, mask, betas=betas, eps=eps, amsgrad=amsgrad, mu_dtype=mu_dtype,
                        nu_dtype=nu_dtype)


# NAdam's and RAdam's decay slots: both kept, so the state is the same for either placement.
_BOTH = ("l2", "decoupled")


def _l2_or_decoupled(decoupled: bool) -> str:
    return "decoupled" if decoupled else "l2"


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
    _validate.check_flag("nadam", "decoupled_weight_decay", decoupled_weight_decay)
    return _torch_chain("nadam", "nadam", _BOTH, _l2_or_decoupled(decoupled_weight_decay), lr,
                        weight_decay, maximize, mask, betas=betas, eps=eps,
                        momentum_decay=momentum_decay)


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
    _validate.check_flag("radam", "decoupled_weight_decay", decoupled_weight_decay)
    return _torch_chain("radam", "radam", _BOTH, _l2_or_decoupled(decoupled_weight_decay), lr,
                        weight_decay, maximize, mask, betas=betas, eps=eps)


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
    return _torch_chain("adamax", "adamax", ("l2",), "l2", lr, weight_decay, maximize, mask,
                        betas=betas, eps=eps)


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
    return _torch_chain("adadelta", "adadelta", ("l2",), "l2", lr, weight_decay, maximize, mask,
                        rho=rho, eps=eps)


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
    return _torch_chain("asgd", "asgd", ("l2",), "l2", lr, weight_decay, maximize, mask,
                        lambd=lambd, alpha=alpha, t0=t0)


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
    return _torch_chain("adafactor", "adafactor", ("decoupled",), "decoupled", lr,
                        weight_decay, maximize, mask, beta2_decay=beta2_decay, eps=eps, d=d)


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
    return _torch_chain("muon", "muon", ("decoupled",), "decoupled", lr, weight_decay, None, mask,
                        momentum=momentum, nesterov=nesterov, ns_coefficients=ns_coefficients,
                        eps=eps, ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn, ns_dtype=ns_dtype)
