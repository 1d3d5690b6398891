"""``build``: any registered preconditioner with any weight decay, as one fixed chain.

Every optimizer ``build`` makes is the same named slots::

    chain([target], sign, l2, *preconditioner, decoupled, *inside, learning_rate,
          independent, *tail)

The placement only decides which decay slot holds λ; the others hold a decay of 0.0,
which is switched off but keeps its state. So the optimizer state has the same tree
structure for every placement of a given preconditioner, and a checkpoint or a
sharding spec carries across the arms of an ablation. The preconditioner's slots come
from its entry in :mod:`wdchain.registry`; the decay slots are :func:`wdchain.decay.decay_term`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from wdchain import _recipe, _tree, _validate
from wdchain import decay as _decay
from wdchain import registry as _registry
from wdchain._learning_rate import maximize as _maximize
from wdchain._learning_rate import scale_by_learning_rate

PLACEMENTS = ("none", "l2", "decoupled", "independent", "constant")
# Every value of build's decay=: the placements, and two scales of the decoupled decay.
DECAYS = (*PLACEMENTS, "corrected", "stable")
GATES = _decay.GATES


def _with_others(entry: _registry.Preconditioner, others: Any, common: dict[str, Any],
                 options: dict[str, Any]) -> optax.GradientTransformation:
    """``entry`` on the 2-D leaves, ``others`` on the rest, one placement for both."""
    where = "build"
    if not entry.matrices_only:
        raise ValueError(
            f"{where}: others= is for a preconditioner that takes 2-D leaves only (muon); "
            f"{entry.name!r} takes every leaf, got others={others!r}"
        )
    other = _registry.lookup(f"{where}: others", others)
    if other.matrices_only:
        raise ValueError(f"{where}: others={others!r} takes 2-D leaves only too; "
                         "give one that takes every leaf, e.g. others='adam'")
    matrices = build(entry.name, **common, **options)
    rest = build(other.name, **common)
    tx = _nothing_decays_said_once(
        optax.partition({"matrices": matrices, "others": rest}, _matrix_labels))
    return _recipe.label(tx, *(_recipe.recipe(matrices) or ()))


def _nothing_decays_said_once(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """``optax.partition`` inits each part on its own leaves: a part whose leaves the mask
    leaves alone (the biases and norms under ``decay_mask``) is not "nothing decays". The
    warning is given once, and only when no part decays anything."""

    def init(params: Any) -> Any:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            state = tx.init(params)
        nothing = [w for w in caught if "reaches no leaf" in str(w.message)]
        passed_on = [w for w in caught if w not in nothing]
        if nothing and len(nothing) == 2:  # both parts: nothing decays at all
            passed_on.append(nothing[0])
        for caught_warning in passed_on:
            warnings.warn(caught_warning.message, stacklevel=2)
        return state

    return tx._replace(init=init)


def _matrix_labels(params: Any) -> Any:
    return jax.tree.map(
        lambda p: "matrices" if _tree.is_float(p) and jnp.ndim(p) == 2 else "others", params
    )


def _named(fn: Callable[[Any], Any], name: str) -> Callable[[Any], Any]:
    fn.wdchain_name = name  # type: ignore[attr-defined]
    return fn


def _multiplier(
    lr: Any, schedule: Any, lr_peak: Any, decay: str
) -> tuple[Any, Callable[[Any], Any] | None]:
    """The learning rate to scale by, and η_t (None when it is 1 at every step)."""
    where = "build"
    if schedule is not None:
        if not callable(schedule):
            raise ValueError(
                f"{where}: schedule must be a callable of the step count (the lr "
                f"multiplier η(count)), got {schedule!r}"
            )
        if callable(lr):
            raise ValueError(
                f"{where}: with a schedule, lr must be the peak learning rate (a number "
                "or JAX scalar), not a schedule: lr_t = lr·schedule(count)"
            )
        if lr_peak is not None:
            raise ValueError(
                f"{where}: lr_peak is lr when a schedule is given; leave lr_peak out "
                f"(got lr_peak={lr_peak!r})"
            )
        name = getattr(schedule, "wdchain_name", "η(t)")
        learning_rate = _named(lambda count: lr * schedule(count),
                               f"{_recipe.format_value(lr)}·{name}")
        return learning_rate, schedule
    if lr_peak is None:
        if callable(lr) and decay in ("independent", "corrected"):
            raise ValueError(
                f"{where}: decay={decay!r} scales the decay by η_t = lr_t / lr_peak; "
                "with lr a schedule, give lr_peak= (its peak value), or give lr as a "
                "number and the multiplier as schedule="
            )
        return lr, None
    _validate.check_positive_number(where, "lr_peak", lr_peak)
    return lr, _named(lambda count: _tree.value_at(lr, count) / lr_peak, "lr_t/lr_peak")


# The slot each decay value puts λ in; the others hold 0.0 (switched off, same state).
_SLOT_OF = {"none": None, "l2": "l2", "decoupled": "decoupled", "corrected": "decoupled",
            "stable": "decoupled", "independent": "independent", "constant": "independent"}
# Each slot's role and sign: +1 before the learning rate, −1 after it.
_TRANSFORM_OF = {"l2": (_recipe.L2, 1.0), "decoupled": (_recipe.DECOUPLED, 1.0),
                 "independent": (_recipe.INDEPENDENT, -1.0)}


def _decay_slot(slot: str, decay: str, weight_decay: Any, mask: Any, gate: str | None,
                toward: Any, eta: Any, corrected_mask: Any) -> optax.GradientTransformation:
    """The decay term of one slot: λ where ``decay`` puts it (scaled as it says), else 0."""
    role, sign = _TRANSFORM_OF[slot]
    lam = weight_decay if _SLOT_OF[decay] == slot else 0.0
    scale: dict[str, Any] = {}
    if slot == "decoupled" and decay == "corrected" and eta is not None:
        scale = {"eta": eta, "eta_mask": corrected_mask, "decay_scale": "η_t"}
    elif slot == "decoupled" and decay == "stable":
        scale = {"stable": True}
    elif slot == "independent" and decay == "independent":
        scale = {"eta": eta, "decay_scale": "η_t"}
    return _decay.decay_term("build", role, lam, mask, sign, gate=gate, toward=toward, **scale)


def build(
    preconditioner: str,
    *,
    decay: str = "l2",
    lr: Any = 1e-3,
    weight_decay: Any = 0.0,
    schedule: Any = None,
    lr_peak: Any = None,
    mask: Any = None,
    maximize: bool = False,
    others: str | None = None,
    gate: str | None = None,
    toward: Any = None,
    corrected_mask: Any = None,
    **options: Any,
) -> optax.GradientTransformation:
    r"""Any preconditioner with any weight-decay placement, in one fixed chain.

    With :math:`u_t` the preconditioned gradient, :math:`\alpha_t` the learning rate
    and :math:`\eta_t = \alpha_t / \alpha_{\text{peak}}` the schedule multiplier:

    * ``"none"``: :math:`\theta \leftarrow \theta - \alpha_t u_t(g)`
    * ``"l2"``: :math:`\theta \leftarrow \theta - \alpha_t u_t(g + \lambda\theta)`
    * ``"decoupled"``: :math:`\theta \leftarrow \theta - \alpha_t (u_t(g) + \lambda\theta)`
    * ``"independent"``: :math:`\theta \leftarrow \theta - \alpha_t u_t(g) - \eta_t\lambda\theta`
    * ``"constant"``: :math:`\theta \leftarrow \theta - \alpha_t u_t(g) - \lambda\theta`

    * ``"corrected"``: :math:`\theta \leftarrow \theta - \alpha_t (u_t(g) + \eta_t\lambda\theta)`,
      so :math:`c_t = \alpha_t\eta_t = \alpha_t^2/\alpha_{\text{peak}}` (AdamC, Defazio 2025)
    * ``"stable"``:
      :math:`\theta \leftarrow \theta - \alpha_t (u_t(g) + \lambda\theta/\sqrt{\bar v_t})`,
      :math:`\bar v_t` the mean over all parameters of the bias-corrected second
      moment (SWD/AdamS, Xie et al. 2023); adaptive preconditioners only

    ``"l2"`` is torch's ``weight_decay``; ``"decoupled"`` torch's AdamW (and NAdamW,
    RAdamW); ``"independent"`` Loshchilov & Hutter's Algorithm 2; ``"constant"`` t5x's
    Adafactor decay. Every placement is the chain
    ``(sign, add_l2_to_grad, preconditioner, decoupled_weight_decay,
    scale_by_learning_rate, independent_weight_decay)`` with λ in one decay slot and
    0.0 in the others, so the state has the same structure for every placement.

    Two more axes apply to every placement. ``gate="cautious"`` (cautious weight decay,
    Chen et al. 2025, arXiv 2510.12402) multiplies the decay term by
    :math:`G_t = \mathbb{1}(u_t \odot (\theta - \theta^*) \ge 0)`, :math:`u_t` the
    *final* update direction at the decay's slot (for Muon the orthogonalised one; for
    ``"l2"``, which sits before the preconditioner, the gradient g_t); ties decay. It
    is not "Cautious Optimizers" (Liang et al. 2024, timm ``caution=True``), which
    masks the update. ``toward`` replaces θ by θ − θ* in the decay term: θ* = θ₀, the
    params at ``init`` (``"init"``), or a given tree (L2-SP, Li et al. 2018); for
    ``"l2"`` the term is the gradient of :math:`\tfrac{\lambda}{2}\lVert\theta -
    \theta^*\rVert^2`. θ* costs one copy of the params in the state (a first chain
    slot); otherwise the state is the same for every placement, scale and gate.

    ``"corrected"`` uses λ in AdamW's units at the peak: c_t·λ = α_t·η_t·λ equals
    AdamW's α_max·λ at the peak (timm ``corrected_weight_decay``, levanter
    ``adamc_weight_decay``); schedule_free's AdamC writes c_t = α_t², so its λ is
    λ_sf = λ/α_max. Without a schedule (η_t = 1) it is ``"decoupled"``. By default it
    applies to every decayed leaf, as timm does; the paper corrects only normalised
    layers and keeps c_t = α_t elsewhere: pass those leaves as ``corrected_mask``.

    Some preconditioners fill two more slots: LAMB's trust ratio sits between the
    decoupled decay and the lr (so ``"decoupled"`` is *inside* the ratio, as in the
    paper and ``optax.lamb``), ASGD's running average after everything. Muon's shape
    factor sits before the decoupled decay, which therefore uses the unadjusted lr, as
    torch's Muon.

    Args:
      preconditioner: a name of ``PRECONDITIONERS``, each one entry of the registry
        (:mod:`wdchain.registry`, which holds its options and their defaults; add one
        with :func:`wdchain.register_preconditioner`):
        ``"sgd"`` (none), ``"momentum"`` (``momentum`` = 0.9, ``dampening`` = 0,
        ``nesterov`` = False), ``"adagrad"`` (``eps`` = 1e-10,
        ``initial_accumulator_value`` = 0, ``lr_decay`` = 0), ``"rmsprop"``
        (``alpha`` = 0.99, ``eps`` = 1e-8, ``centered`` = False, ``momentum`` = 0),
        ``"adam"`` (``betas`` = (0.9, 0.999), ``eps`` = 1e-8, ``amsgrad`` = False,
        ``mu_dtype`` = ``nu_dtype`` = None),
        ``"nadam"`` (``betas``, ``eps``, ``momentum_decay`` = 4e-3), ``"radam"`` and
        ``"adamax"`` (``betas``, ``eps``), ``"lion"`` (``betas`` = (0.9, 0.99),
        ``mu_dtype`` = None),
        ``"lamb"`` (``betas`` = (0.9, 0.999), ``eps`` = 1e-6), ``"adadelta"``
        (``rho`` = 0.9, ``eps`` = 1e-6), ``"asgd"`` (``lambd`` = 1e-4, ``alpha`` =
        0.75, ``t0`` = 1e6), ``"adafactor"`` (``beta2_decay`` = −0.8, ``eps`` =
        (None, 1e-3), ``d`` = 1) and ``"muon"`` (``momentum`` = 0.95, ``nesterov`` =
        True, ``ns_coefficients``, ``eps`` = 1e-7, ``ns_steps`` = 5,
        ``adjust_lr_fn`` = None, ``ns_dtype`` = bfloat16; 2-D leaves only),
        ``"adopt"`` (``betas`` = (0.9, 0.9999), ``eps`` = 1e-6, ``clip_exponent`` =
        0.25), ``"ademamix"`` (``betas`` = (0.9, 0.999, 0.9999), ``alpha`` = 5, ``eps``
        = 1e-8, ``alpha_warmup`` = ``beta3_warmup`` = None), ``"lars"``
        (``trust_coefficient`` = 1e-3, ``momentum`` = 0.9, ``nesterov`` = False),
        ``"adan"`` (``betas`` = (0.98, 0.92, 0.99), ``eps`` = 1e-8, ``diff_weight`` =
        None) and ``"schedule_free_adam"`` (``betas`` = (0.9, 0.999), ``eps`` = 1e-8,
        ``weight_lr_power`` = 2, ``r`` = 0, ``decay_at`` = "y", ``bias_correction`` =
        "lr"; it wraps the whole chain in its iterate average). Defaults are torch's
        where torch has the optimizer, else the authors' code's or the paper's.
      decay: the placement (and scale), one of ``"none"``, ``"l2"``, ``"decoupled"``,
        ``"independent"``, ``"constant"``, ``"corrected"``, ``"stable"``.
      lr: the learning rate: a number, a JAX scalar (it may be traced, e.g. vmapped
        over a grid) or a schedule of the step count.
      weight_decay: λ ≥ 0: a number, a JAX scalar (may be traced) or a schedule.
      schedule: optional lr multiplier η(count); then lr_t = lr·η(count) and
        lr_peak = lr.
      lr_peak: the peak learning rate, needed (only) for ``decay="independent"``
        when ``lr`` is itself a schedule, to form η_t = lr_t / lr_peak. With a
        constant lr and no schedule, η_t = 1 (or lr / lr_peak if lr_peak is given).
        Adagrad's ``lr_decay`` is part of lr_t, so it is part of η_t too.
      mask: which leaves to decay (None, a pytree of bools, or a callable of the
        params, e.g. :func:`wdchain.decay_mask`); masked-out leaves are still
        preconditioned, as torch param groups with ``weight_decay=0``.
      maximize: ascend instead; the gradient is negated before any decay.
      others: for a preconditioner that takes 2-D leaves only (``"muon"``): the
        preconditioner (with its default options) for the other leaves, with the same
        placement, lr, λ, schedule and mask, in one ``optax.partition``. None (the
        default): other leaves are refused at ``init``.
      gate: None or ``"cautious"`` (see above).
      toward: None (decay toward 0), ``"init"`` (toward θ₀) or a pytree shaped like
        the params (toward it).
      corrected_mask: with ``decay="corrected"`` only: the leaves (a mask as ``mask``)
        whose decay is scaled by lr_t·η_t; the other decayed leaves get lr_t (the
        paper's normalised-layers-only form). None: every decayed leaf.
      **options: the preconditioner's options listed above.

    Returns:
      An ``optax.GradientTransformation`` whose ``update`` needs ``params``.

    Raises:
      ValueError: for an unknown preconditioner, placement, gate or option, a
        ``toward`` that is not a tree of arrays, ``decay="independent"`` or
        ``"corrected"`` with an lr schedule and no ``lr_peak``, or ``decay="stable"``
        with a preconditioner that has no second moment.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> params = jnp.array([1.0, -2.0])
      >>> arms = [build("adam", decay=d, lr=0.1, weight_decay=0.5) for d in PLACEMENTS]
      >>> states = [tx.init(params) for tx in arms]
      >>> len({jax.tree.structure(s) for s in states})  # one state structure
      1
      >>> tx = build("sgd", decay="constant", lr=0.1, weight_decay=0.5)
      >>> tx.update(jnp.ones(2), tx.init(params), params)[0]  # −0.1·1 − 0.5·θ
      Array([-0.6,  0.9], dtype=float32)
    """
    where = "build"
    entry = _registry.lookup(where, preconditioner)
    if others is not None:
        common = {"decay": decay, "lr": lr, "weight_decay": weight_decay,
                  "schedule": schedule, "lr_peak": lr_peak, "mask": mask, "maximize": maximize,
                  "gate": gate, "toward": toward, "corrected_mask": corrected_mask}
        return _with_others(entry, others, common, options)
    if decay not in DECAYS:
        raise ValueError(
            f"{where}: unknown decay {decay!r}; use one of {', '.join(DECAYS)}"
        )
    nested = options.pop("options", None)
    if isinstance(nested, dict):  # optax.inject_hyperparams passes **options as one dict
        options = {**nested, **options}
    elif nested is not None:
        options["options"] = nested  # refused below as an unknown option
    full_options = entry.full_options(where, options)
    _validate.check_schedule_or_number(where, "lr", lr)
    _validate.check_flag(where, "maximize", maximize)
    _decay.check_gate(where, gate)
    _decay.check_toward(where, toward)
    if corrected_mask is not None:
        if decay != "corrected":
            raise ValueError(
                f"{where}: corrected_mask selects the leaves of decay='corrected' that get "
                f"c_t = lr_t·η_t (the others keep lr_t); got decay={decay!r}. Leave "
                "corrected_mask out, or use decay='corrected'"
            )
        _validate.check_mask(where, corrected_mask)
    if decay == "stable" and entry.second_moment is None:
        adaptive = [e.name for e in _registry.REGISTRY.values() if e.second_moment]
        raise ValueError(
            f"{where}: decay='stable' divides the decay by √v̄_t, the root mean of an "
            f"adaptive second moment, and {entry.name!r} has none; use one of "
            f"{', '.join(adaptive)}, or decay='decoupled'"
        )

    learning_rate, eta = _multiplier(lr, schedule, lr_peak, decay)
    learning_rate = entry.step_learning_rate(learning_rate, full_options)
    if entry.eta is not None:
        eta = entry.eta(eta, full_options)
        if callable(eta):
            eta.wdchain_name = "η_t"

    slots = [
        *([("target", _decay.decay_target(toward))] if toward is not None else []),
        ("sign", _maximize() if maximize else _recipe.nothing()),
        ("l2", _decay_slot("l2", decay, weight_decay, mask, gate, toward, eta, corrected_mask)),
        *(("preconditioner", tx) for tx in entry.transforms(full_options, learning_rate)),
        ("decoupled", _decay_slot("decoupled", decay, weight_decay, mask, gate, toward, eta,
                                  corrected_mask)),
        *(("inside", tx) for tx in entry.inside_transforms(full_options)),
        ("learning_rate", scale_by_learning_rate(learning_rate)),
        ("independent", _decay_slot("independent", decay, weight_decay, mask, gate, toward,
                                    eta, corrected_mask)),
        *(("tail", tx) for tx in entry.tail_transforms(full_options)),
    ]
    second_moment = entry.second_moment if decay == "stable" else None
    tx = _named_chain(slots, second_moment, full_options)
    if entry.wrap is None:
        return tx
    wrapped = entry.wrap(tx, full_options, learning_rate)
    if _recipe.recipe(wrapped) is None:
        _recipe.label(wrapped, *(_recipe.recipe(tx) or ()))
    return wrapped


_DECAY_SLOTS = ("l2", "decoupled", "independent")


def _named_chain(slots: list[tuple[str, optax.GradientTransformation]],
                 second_moment: Any, options: dict[str, Any]) -> optax.GradientTransformation:
    """``chain`` of the slots, whose ``update`` hands θ* (from the ``target`` slot) to
    the decay slots and 1/√v̄_t (from the preconditioner slots' new states) to the
    decoupled one; the state is ``chain``'s, a tuple with one entry per slot."""
    names = [name for name, _ in slots]
    tx = _recipe.chain(*(part for _, part in slots))
    if "target" not in names and second_moment is None:
        return tx
    updates = [optax.with_extra_args_support(part).update for _, part in slots]

    def update_fn(grads: Any, state: tuple, params: Any = None, **extra: Any):
        target = state[0].target if names[0] == "target" else None
        new_state: list[Any] = []
        for name, update, inner in zip(names, updates, state):
            kwargs = dict(extra)
            if name in _DECAY_SLOTS and target is not None:
                kwargs["decay_target"] = target
            if name == "decoupled" and second_moment is not None:
                moments = tuple(s for n, s in zip(names, new_state) if n == "preconditioner")
                v = second_moment(moments, options)
                kwargs["decay_multiplier"] = jax.lax.rsqrt(_decay.mean_second_moment(v))
            grads, inner = update(grads, inner, params, **kwargs)
            new_state.append(inner)
        return grads, tuple(new_state)

    # The same init (so the same recipe and the same state) with an update that hands
    # θ* and 1/√v̄_t to the decay slots.
    return optax.GradientTransformationExtraArgs(tx.init, update_fn)
