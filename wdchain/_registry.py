"""The preconditioners of ``build``: one table, one entry each.

Each entry holds everything wdchain knows about a preconditioner: its options with
their defaults, their validation, the transforms that fill its chain slots, its
torch.optim name and alias when it has them, and a one-line summary. ``build``,
``describe``'s users, the ablation runner's arm parser and the contract suite all read
this table, so adding a preconditioner is one entry here (plus its tests).

Reading it::

    entry = REGISTRY["adam"]            # or lookup("build", "adam")
    entry.options                       # {"betas": (0.9, 0.999), "eps": 1e-8, ...}
    entry.torch, entry.alias            # "Adam", "adam"  (None where torch has none)

An entry fills up to three slots of the fixed chain ``build`` makes::

    chain(sign, add_l2_to_grad, *transforms, decoupled_weight_decay, *inside,
          scale_by_learning_rate(learning_rate(lr)), independent_weight_decay, *tail)

``inside`` sits between the decoupled decay and the learning rate (LAMB's trust ratio,
so that decoupled decay is inside the ratio); ``tail`` after everything (ASGD's
running average, which must see the final parameters).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
import optax

from wdchain import _recipe, _tree, _validate
from wdchain._adadelta import scale_by_adadelta
from wdchain._adafactor import _check_eps, scale_by_adafactor
from wdchain._adam_variants import scale_by_adamax, scale_by_nadam, scale_by_radam
from wdchain._adaptive import scale_by_adagrad, scale_by_adam, scale_by_rms
from wdchain._aliases import _adagrad_learning_rate
from wdchain._asgd import asgd_learning_rate, average_iterates, scale_by_asgd
from wdchain._lamb import scale_by_trust_ratio
from wdchain._lion import scale_by_lion
from wdchain._momentum import check_nesterov, scale_by_momentum
from wdchain._muon import (
    check_adjust_lr_fn,
    check_newton_schulz,
    orthogonalize_newton_schulz,
    scale_by_muon_momentum,
    scale_by_shape,
)

Transforms = tuple[optax.GradientTransformation, ...]


def _none(options: dict[str, Any]) -> Transforms:
    del options
    return ()


def _same_lr(lr: Any, options: dict[str, Any]) -> Any:
    del options
    return lr


def _no_check(where: str, options: dict[str, Any]) -> None:
    del where, options


@dataclasses.dataclass(frozen=True)
class Preconditioner:
    """One preconditioner of :func:`wdchain.build`.

    Attributes:
      name: its name in ``build`` and in arm names (``"adam"``).
      summary: one line: what it is, with its reference.
      options: its options and their defaults (torch's where torch has it).
      transforms: ``transforms(options, lr)`` → the transforms of its slot, before
        the decoupled decay. ``lr`` is build's learning rate (a number, JAX scalar or
        schedule), for a preconditioner whose step depends on it (Adafactor's
        relative step).
      check: ``check(where, options)`` validates the full options, raising a
        ValueError that names ``where``, the option, its value and the fix.
      inside: transforms between the decoupled decay and the learning rate.
      tail: transforms after the independent decay (they see the final update).
      learning_rate: ``learning_rate(lr, options)`` → the lr_t the learning-rate
        step uses (Adagrad's ``lr_decay``, ASGD's η_t); by default lr itself.
      eta: ``eta(η, options)`` → the multiplier of the independent placement, from
        the schedule's η (None when η is 1 throughout); by default η itself.
      torch: the ``torch.optim`` class that has this preconditioner, or None.
      alias: the wdchain alias with torch's signature, or None.
      hints: advice for an option this entry does not have, by option name.
      lr_span: log10 of a sensible learning-rate range for a grid search.
      matrices_only: it refuses leaves that are not 2-D (Muon).
      second_moment: ``second_moment(states, options)`` → the tree of the statistic
        whose square root divides the step (Adam's bias-corrected v̂_t), read from the
        new states of ``transforms``; None for a preconditioner without one. Stable
        weight decay (``decay="stable"``) needs it.
    """

    name: str
    summary: str
    options: Mapping[str, Any]
    transforms: Callable[[dict[str, Any], Any], Transforms]
    check: Callable[[str, dict[str, Any]], None] = _no_check
    inside: Callable[[dict[str, Any]], Transforms] = _none
    tail: Callable[[dict[str, Any]], Transforms] = _none
    learning_rate: Callable[[Any, dict[str, Any]], Any] = _same_lr
    eta: Callable[[Any, dict[str, Any]], Any] | None = None
    torch: str | None = None
    alias: str | None = None
    hints: Mapping[str, str] = dataclasses.field(default_factory=dict)
    lr_span: tuple[float, float] = (-3.5, -1.0)
    matrices_only: bool = False
    second_moment: Callable[[tuple[Any, ...], dict[str, Any]], Any] | None = None

    def full_options(self, where: str, given: Mapping[str, Any]) -> dict[str, Any]:
        """The defaults updated by ``given``, validated; unknown names are refused."""
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            valid = ", ".join(self.options) or "none"
            hints = [self.hints[name] for name in unknown if name in self.hints]
            raise ValueError(
                f"{where}: unknown option(s) {', '.join(unknown)} for preconditioner "
                f"{self.name!r}; its options are: {valid}"
                + "".join(f". {hint}" for hint in hints)
            )
        options = {**self.options, **given}
        self.check(where, options)
        return options

    def describe(self) -> str:
        """One line: name, options with defaults, torch name."""
        options = ", ".join(f"{k}={_format(v)}" for k, v in self.options.items())
        torch = f"torch.optim.{self.torch}" if self.torch else "no torch.optim counterpart"
        return f"{self.name}({options}): {self.summary} [{torch}]"


def _format(value: Any) -> str:
    if isinstance(value, type):  # a dtype such as jnp.bfloat16
        return jnp.dtype(value).name
    return _recipe.format_value(value)


# --------------------------------------------------------------------------------------
# Checks shared by several entries.


def _check_ranges(*names: str, high: dict[str, float] | None = None) -> Callable:
    bounds = high or {}

    def check(where: str, options: dict[str, Any]) -> None:
        for name in names:
            _validate.check_range(where, name, options[name], high=bounds.get(name))

    return check


def _check_adam_like(*extra: str) -> Callable:
    def check(where: str, options: dict[str, Any]) -> None:
        _validate.check_betas(where, options["betas"])
        _validate.check_range(where, "eps", options["eps"])
        for name in extra:
            _validate.check_range(where, name, options[name])

    return check


def _check_momentum(where: str, o: dict[str, Any]) -> None:
    _validate.check_range(where, "momentum", o["momentum"])
    _validate.check_range(where, "dampening", o["dampening"], low=-float("inf"))
    _validate.check_flag(where, "nesterov", o["nesterov"])
    check_nesterov(where, o["momentum"], o["dampening"], o["nesterov"])


def _check_rmsprop(where: str, o: dict[str, Any]) -> None:
    _validate.check_range(where, "alpha", o["alpha"], high=1.0)
    _validate.check_range(where, "eps", o["eps"])
    _validate.check_range(where, "momentum", o["momentum"])
    _validate.check_flag(where, "centered", o["centered"])


def _check_adam(where: str, o: dict[str, Any]) -> None:
    _check_adam_like()(where, o)
    _validate.check_flag(where, "amsgrad", o["amsgrad"])
    _validate.check_float_dtype(where, "mu_dtype", o["mu_dtype"])
    _validate.check_float_dtype(where, "nu_dtype", o["nu_dtype"])


def _check_lion(where: str, o: dict[str, Any]) -> None:
    _validate.check_betas(where, o["betas"])
    _validate.check_float_dtype(where, "mu_dtype", o["mu_dtype"])


def _check_asgd(where: str, o: dict[str, Any]) -> None:
    _validate.check_range(where, "lambd", o["lambd"])
    _validate.check_range(where, "alpha", o["alpha"], low=-float("inf"))
    _validate.check_range(where, "t0", o["t0"], low=-float("inf"))


def _check_adafactor(where: str, o: dict[str, Any]) -> None:
    _validate.check_range(where, "beta2_decay", o["beta2_decay"], low=-float("inf"), high=0.0)
    _check_eps(where, o["eps"])
    _validate.check_range(where, "d", o["d"], low=1.0)


def _check_muon(where: str, o: dict[str, Any]) -> None:
    _validate.check_range(where, "momentum", o["momentum"])
    _validate.check_flag(where, "nesterov", o["nesterov"])
    check_newton_schulz(where, o["ns_coefficients"], o["eps"], o["ns_steps"], o["ns_dtype"])
    check_adjust_lr_fn(where, o["adjust_lr_fn"])


def _muon(o: dict[str, Any], lr: Any) -> Transforms:
    del lr
    return (
        scale_by_muon_momentum(o["momentum"], o["nesterov"]),
        orthogonalize_newton_schulz(o["ns_coefficients"], o["eps"], o["ns_steps"],
                                    ns_dtype=o["ns_dtype"]),
        scale_by_shape(o["adjust_lr_fn"]),
    )


def _rmsprop(o: dict[str, Any], lr: Any) -> Transforms:
    del lr
    has_momentum = not _validate.is_static_zero(o["momentum"])
    return (
        scale_by_rms(o["alpha"], o["eps"], o["centered"]),
        scale_by_momentum(o["momentum"]) if has_momentum else _recipe.nothing(),
    )


def _adam_moment(states: tuple[Any, ...], o: dict[str, Any]) -> Any:
    """v̂_t = v_t / (1 − β₂^t), with AMSGrad's running max of v_t (the SWD reference's)."""
    state = states[0]
    v = state.nu_max if o.get("amsgrad") else state.nu
    beta2 = o["betas"][1]
    return jax.tree.map(
        lambda x: x / _tree.bias_correction(beta2, state.step, _tree.compute_dtype(x.dtype))
        if _tree.is_float(x) else x, v)


def _rms_moment(states: tuple[Any, ...], o: dict[str, Any]) -> Any:
    del o
    return states[0].nu  # torch's RMSprop has no bias correction


def _adagrad_moment(states: tuple[Any, ...], o: dict[str, Any]) -> Any:
    del o
    return states[0].sum_of_squares


_ENTRIES = [
    Preconditioner(
        "sgd", "no preconditioner: u = g", {},
        lambda o, lr: (_recipe.nothing(),),
        torch="SGD", alias="sgd", lr_span=(-2.5, 0.0),
        hints={name: "For SGD with momentum use build(\"momentum\", momentum=0.9, ...)"
               for name in ("momentum", "dampening", "nesterov")},
    ),
    Preconditioner(
        "momentum", "torch's SGD momentum buffer (μ = 0.9 by default: μ = 0 is \"sgd\")",
        {"momentum": 0.9, "dampening": 0.0, "nesterov": False},
        lambda o, lr: (scale_by_momentum(o["momentum"], o["dampening"], o["nesterov"]),),
        _check_momentum, torch="SGD", alias="sgd", lr_span=(-2.5, 0.0),
    ),
    Preconditioner(
        "adagrad", "Adagrad (Duchi et al. 2011), torch's arithmetic",
        {"eps": 1e-10, "initial_accumulator_value": 0.0, "lr_decay": 0.0},
        lambda o, lr: (scale_by_adagrad(o["eps"], o["initial_accumulator_value"]),),
        _check_ranges("eps", "initial_accumulator_value", "lr_decay"),
        learning_rate=lambda lr, o: _adagrad_learning_rate(lr, o["lr_decay"]),
        second_moment=_adagrad_moment,
        eta=lambda eta, o: eta if _validate.is_static_zero(o["lr_decay"]) else
        _adagrad_learning_rate(1.0 if eta is None else eta, o["lr_decay"]),
        torch="Adagrad", alias="adagrad", lr_span=(-2.5, 0.0),
    ),
    Preconditioner(
        "rmsprop", "RMSprop (Hinton 2012), torch's arithmetic",
        {"alpha": 0.99, "eps": 1e-8, "centered": False, "momentum": 0.0},
        _rmsprop, _check_rmsprop, torch="RMSprop", alias="rmsprop", second_moment=_rms_moment,
    ),
    Preconditioner(
        "adam", "Adam (Kingma & Ba 2015), AMSGrad as torch",
        {"betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False, "mu_dtype": None,
         "nu_dtype": None},
        lambda o, lr: (scale_by_adam(o["betas"], o["eps"], o["amsgrad"],
                                     mu_dtype=o["mu_dtype"], nu_dtype=o["nu_dtype"]),),
        _check_adam, torch="Adam", alias="adam", second_moment=_adam_moment,
    ),
    Preconditioner(
        "nadam", "NAdam (Dozat 2016) with torch's momentum-decay schedule ψ",
        {"betas": (0.9, 0.999), "eps": 1e-8, "momentum_decay": 4e-3},
        lambda o, lr: (scale_by_nadam(o["betas"], o["eps"], o["momentum_decay"]),),
        _check_adam_like("momentum_decay"), torch="NAdam", alias="nadam",
        second_moment=_adam_moment,
    ),
    Preconditioner(
        "radam", "RAdam (Liu et al. 2020), torch's rectification",
        {"betas": (0.9, 0.999), "eps": 1e-8},
        lambda o, lr: (scale_by_radam(o["betas"], o["eps"]),),
        _check_adam_like(), torch="RAdam", alias="radam", second_moment=_adam_moment,
    ),
    Preconditioner(
        "adamax", "Adamax (Kingma & Ba 2015, §7.1), eps inside the max as torch",
        {"betas": (0.9, 0.999), "eps": 1e-8},
        lambda o, lr: (scale_by_adamax(o["betas"], o["eps"]),),
        _check_adam_like(), torch="Adamax", alias="adamax",
    ),
    Preconditioner(
        "lion", "Lion (Chen et al. 2023): the sign of an interpolated momentum",
        {"betas": (0.9, 0.99), "mu_dtype": None},
        lambda o, lr: (scale_by_lion(o["betas"], mu_dtype=o["mu_dtype"]),),
        _check_lion, lr_span=(-4.5, -2.0),
    ),
    Preconditioner(
        "lamb", "LAMB (You et al. 2020): Adam's step scaled per leaf by ‖θ‖/‖r + λθ‖; "
        "decoupled decay inside the ratio",
        {"betas": (0.9, 0.999), "eps": 1e-6},
        lambda o, lr: (scale_by_adam(o["betas"], o["eps"]),),
        _check_adam_like(), inside=lambda o: (scale_by_trust_ratio(),), lr_span=(-3.5, -0.5),
        second_moment=_adam_moment,
    ),
    Preconditioner(
        "adadelta", "Adadelta (Zeiler 2012), torch's arithmetic",
        {"rho": 0.9, "eps": 1e-6},
        lambda o, lr: (scale_by_adadelta(o["rho"], o["eps"]),),
        _check_ranges("rho", "eps", high={"rho": 1.0}),
        torch="Adadelta", alias="adadelta", lr_span=(-1.5, 1.0),
    ),
    Preconditioner(
        "asgd", "averaged SGD (Polyak & Juditsky 1992) with torch's η_t; "
        "wdchain.averaged_params(state) reads the average",
        {"lambd": 1e-4, "alpha": 0.75, "t0": 1e6},
        lambda o, lr: (scale_by_asgd(o["lambd"]),), _check_asgd,
        learning_rate=lambda lr, o: asgd_learning_rate(lr, o["lambd"], o["alpha"]),
        tail=lambda o: (average_iterates(o["t0"]),),
        torch="ASGD", alias="asgd", lr_span=(-2.5, 0.0),
    ),
    Preconditioner(
        "adafactor", "Adafactor (Shazeer & Stern 2018) as torch: factored second moment, "
        "relative step min(lr_t, 1/√t), update clipping d",
        {"beta2_decay": -0.8, "eps": (None, 1e-3), "d": 1.0},
        lambda o, lr: (scale_by_adafactor(lr, o["beta2_decay"], o["eps"], o["d"]),),
        _check_adafactor, torch="Adafactor", alias="adafactor", lr_span=(-3.0, -0.5),
    ),
    Preconditioner(
        "muon", "Muon (Jordan et al. 2024) as torch: Newton–Schulz orthogonalised momentum "
        "× a shape factor; 2-D leaves only",
        {"momentum": 0.95, "nesterov": True, "ns_coefficients": (3.4445, -4.775, 2.0315),
         "eps": 1e-7, "ns_steps": 5, "adjust_lr_fn": None, "ns_dtype": jnp.bfloat16},
        _muon, _check_muon, torch="Muon", alias="muon", lr_span=(-3.5, -1.0),
        matrices_only=True,
    ),
]

REGISTRY: Mapping[str, Preconditioner] = MappingProxyType({e.name: e for e in _ENTRIES})
PRECONDITIONERS = tuple(REGISTRY)


def lookup(where: str, name: Any) -> Preconditioner:
    """The entry called ``name``; a ValueError listing the valid names otherwise."""
    entry = REGISTRY.get(name) if isinstance(name, str) else None
    if entry is None:
        raise ValueError(
            f"{where}: unknown preconditioner {name!r}; use one of "
            f"{', '.join(PRECONDITIONERS)}"
        )
    return entry
