"""The preconditioners of ``build``: one open table, one typed entry each.

An entry holds everything wdchain knows about a preconditioner: the factory of the
transforms that fill its slot, its options with their defaults and their check, the
extra slots it needs, its torch.optim name and alias when it has them, its learning-rate
span for a grid search and a one-line summary. ``build``, ``describe``'s users, the
ablation runner's arm parser and the contract suite all read this table, and every entry
(the built-in ones included, each in its own file of ``wdchain/preconditioners/``) is
made by :func:`register_preconditioner`.

Reading it::

    entry = wdchain.registry.lookup("where", "adam")   # or REGISTRY["adam"]
    entry.options                       # {"betas": (0.9, 0.999), "eps": 1e-8, ...}
    entry.torch, entry.alias            # "Adam", "adam"  (None where torch has none)

An entry fills up to three slots of the fixed chain ``build`` makes::

    chain(sign, add_l2_to_grad, *factory(**options), decoupled_weight_decay, *inside,
          scale_by_learning_rate(learning_rate(lr)), independent_weight_decay, *tail)

``inside`` sits between the decoupled decay and the learning rate (LAMB's trust ratio,
so that decoupled decay is inside the ratio); ``tail`` after everything (ASGD's running
average, which must see the final parameters); ``wrap`` wraps the whole chain.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import jax.numpy as jnp
import optax

from wdchain import _recipe
from wdchain.types import (
    EvalParamsFn,
    Factory,
    LearningRateFn,
    Options,
    OptionsCheck,
    SecondMomentFn,
    SlotFactory,
    Transforms,
    WrapFn,
)

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
_TRIAL_LR = 1e-3  # the learning rate a factory that takes one is tried with


def _no_check(where: str, options: Options) -> None:
    del where, options


@dataclasses.dataclass(frozen=True)
class Preconditioner:
    """One preconditioner of :func:`wdchain.build`, made by :func:`register_preconditioner`.

    Attributes:
      name: its name in ``build`` and in arm names (``"adam"``).
      factory: ``factory(**options)`` → the transform(s) of its slot, before the
        decoupled decay; called with ``learning_rate=`` too when it declares that
        parameter (``takes_learning_rate``).
      options: its options and their defaults (torch's where torch has it).
      check: ``check(where, options)`` validates the full options, raising a ValueError
        that names ``where``, the option, its value and the fix.
      adaptive: it divides by the square root of a statistic (a second moment).
      second_moment: ``second_moment(states, options)`` → the tree of that statistic
        (Adam's bias-corrected v̂_t), read from the new states of the factory's
        transforms; None without one. ``decay="stable"`` needs it.
      inside: ``inside(options)`` → transforms between the decoupled decay and the lr.
      tail: ``tail(options)`` → transforms after the independent decay (they see the
        final update).
      wrap: ``wrap(tx, options, lr)`` → a transformation wrapping the whole chain.
      eval_params: ``eval_params(opt_state, params)`` → the parameters a model is
        evaluated at, for a preconditioner whose trained iterate is not its answer
        (schedule-free's average x); None: the parameters themselves. The ablation
        runner evaluates every cell at them.
      learning_rate: ``learning_rate(lr, options)`` → the lr_t the learning-rate step
        uses (Adagrad's ``lr_decay``, ASGD's η_t); None: lr itself.
      eta: ``eta(η, options)`` → the multiplier of the independent placement, from the
        schedule's η (None when η is 1 throughout); None: η itself.
      lr_span: log10 of a sensible learning-rate range for a grid search.
      summary: one line: what it is, with its reference.
      torch: the ``torch.optim`` class that has this preconditioner, or None.
      alias: the wdchain alias with torch's signature, or None.
      matrices_only: it refuses leaves that are not 2-D (Muon).
      hints: advice for an option this entry does not have, by option name.
      takes_learning_rate: the factory declares a ``learning_rate`` parameter.
    """

    name: str
    factory: Factory
    options: Mapping[str, Any]
    check: OptionsCheck = _no_check
    adaptive: bool = False
    second_moment: SecondMomentFn | None = None
    inside: SlotFactory | None = None
    tail: SlotFactory | None = None
    wrap: WrapFn | None = None
    eval_params: EvalParamsFn | None = None
    learning_rate: LearningRateFn | None = None
    eta: Callable[[Any, Options], Any] | None = None
    lr_span: tuple[float, float] = (-3.5, -1.0)
    summary: str = ""
    torch: str | None = None
    alias: str | None = None
    matrices_only: bool = False
    hints: Mapping[str, str] = dataclasses.field(default_factory=dict)
    takes_learning_rate: bool = False

    def full_options(self, where: str, given: Mapping[str, Any]) -> Options:
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

    def transforms(self, options: Options, lr: Any) -> Transforms:
        """The preconditioner slot: ``factory(**options)`` (with ``learning_rate=lr``
        for a factory that takes it), as a tuple."""
        extra = {"learning_rate": lr} if self.takes_learning_rate else {}
        return _as_transforms(self.factory(**options, **extra))

    def inside_transforms(self, options: Options) -> Transforms:
        """The slot between the decoupled decay and the learning rate."""
        return _as_transforms(self.inside(options)) if self.inside else ()

    def tail_transforms(self, options: Options) -> Transforms:
        """The slot after the independent decay."""
        return _as_transforms(self.tail(options)) if self.tail else ()

    def step_learning_rate(self, lr: Any, options: Options) -> Any:
        """The lr_t of the learning-rate step."""
        return self.learning_rate(lr, options) if self.learning_rate else lr

    def describe(self) -> str:
        """One line: name, options with defaults, torch name."""
        options = ", ".join(f"{k}={_format(v)}" for k, v in self.options.items())
        torch = f"torch.optim.{self.torch}" if self.torch else "no torch.optim counterpart"
        return f"{self.name}({options}): {self.summary} [{torch}]"


def _format(value: Any) -> str:
    if isinstance(value, type):  # a dtype such as jnp.bfloat16
        return jnp.dtype(value).name
    return _recipe.format_value(value)


def _as_transforms(made: Any) -> Transforms:
    if isinstance(made, optax.GradientTransformation):
        return (made,)
    return tuple(made)


_ENTRIES: dict[str, Preconditioner] = {}
REGISTRY: Mapping[str, Preconditioner] = MappingProxyType(_ENTRIES)
"""Every registered preconditioner by name, in registration order (a live, read-only view)."""


def names() -> tuple[str, ...]:
    """The registered preconditioners' names, in registration order (read now)."""
    return tuple(_ENTRIES)


def lookup(where: str, name: Any) -> Preconditioner:
    """The entry called ``name``; a ValueError naming ``where`` and the valid names otherwise."""
    entry = _ENTRIES.get(name) if isinstance(name, str) else None
    if entry is None:
        raise ValueError(
            f"{where}: unknown preconditioner {name!r}; use one of {', '.join(_ENTRIES)}, "
            "or register it with wdchain.register_preconditioner"
        )
    return entry


def unregister(name: str) -> Preconditioner:
    """Removes the entry called ``name`` and returns it (for tests and notebooks)."""
    return _ENTRIES.pop(lookup("unregister", name).name)


# --------------------------------------------------------------------------------------
# Registration: every field checked once, here, so a bad entry fails with its reason
# when it is registered, not when an arm is built.


def _refuse(name: Any, reason: str) -> ValueError:
    return ValueError(f"register_preconditioner({name!r}): {reason}")


def _factory_parameters(name: str, factory: Any) -> tuple[inspect.Signature | None, bool]:
    """The factory's signature (None when Python cannot read it) and whether it takes
    ``learning_rate``."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return None, False
    takes_lr = "learning_rate" in signature.parameters
    if takes_lr and signature.parameters["learning_rate"].kind is inspect.Parameter.POSITIONAL_ONLY:
        raise _refuse(name, "the factory's learning_rate parameter must be a keyword parameter")
    return signature, takes_lr


def _defaults_of(name: str, signature: inspect.Signature | None) -> dict[str, Any]:
    if signature is None:
        raise _refuse(name, "cannot read the factory's signature; give options= (its "
                            "options and their defaults, {} for none)")
    defaults = {}
    for parameter in signature.parameters.values():
        if parameter.name == "learning_rate" or parameter.kind in (
                inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        if parameter.default is inspect.Parameter.empty:
            raise _refuse(name, f"the factory's parameter {parameter.name!r} has no default, "
                                "so options cannot be read from it; give it a default or "
                                "pass options={...}")
        if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise _refuse(name, f"the factory's parameter {parameter.name!r} is positional "
                                "only; options are passed by name")
        defaults[parameter.name] = parameter.default
    return defaults


def _check_callable(name: str, field: str, value: Any) -> None:
    if value is not None and not callable(value):
        raise _refuse(name, f"{field} must be a callable or None, got {value!r}")


def _check_lr_span(name: str, lr_span: Any) -> tuple[float, float]:
    try:
        low, high = (float(x) for x in lr_span)
    except (TypeError, ValueError):
        low = high = math.nan
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise _refuse(name, f"lr_span must be (low, high), two finite log10 learning rates "
                            f"with low < high, e.g. (-3.5, -1.0); got {lr_span!r}")
    return low, high


def _trial(name: str, field: str, make: Callable[[], Any]) -> None:
    """Calls ``make`` once with the defaults: it must give transforms."""
    try:
        made = make()
    except Exception as error:  # the reason is the caller's to read: say it whole
        raise _refuse(name, f"{field} raised {type(error).__name__}: {error} (called with "
                            "the default options)") from error
    parts = (made,) if isinstance(made, optax.GradientTransformation) else made
    if not isinstance(parts, (tuple, list)) or not all(
            isinstance(p, optax.GradientTransformation) for p in parts):
        raise _refuse(name, f"{field} must return an optax.GradientTransformation or a tuple "
                            f"of them, got {type(made).__name__}")


def register_preconditioner(
    name: str,
    factory: Factory,
    *,
    options: Mapping[str, Any] | None = None,
    check: OptionsCheck | None = None,
    adaptive: bool = False,
    second_moment: SecondMomentFn | None = None,
    inside: SlotFactory | None = None,
    tail: SlotFactory | None = None,
    wrap: WrapFn | None = None,
    learning_rate: LearningRateFn | None = None,
    lr_span: tuple[float, float] = (-3.5, -1.0),
    summary: str = "",
    torch: str | None = None,
    alias: str | None = None,
    matrices_only: bool = False,
    replace: bool = False,
    eta: Callable[[Any, Options], Any] | None = None,
    hints: Mapping[str, str] | None = None,
    eval_params: EvalParamsFn | None = None,
) -> Preconditioner:
    r"""Makes ``name`` a preconditioner of :func:`wdchain.build`, with every decay axis.

    After registration, ``build(name, decay=..., gate=..., toward=..., mask=...)``
    places the decay around ``factory``'s transforms, the ablation runner accepts the
    arms ``<name>-<decay>``, and ``describe`` reads the chain. Each field is checked here:
    a bad entry is refused with its reason, now rather than when it is built.

    Args:
      name: a new name (letters, digits, ``_``; it becomes part of arm names).
      factory: ``factory(**options)`` → an ``optax.GradientTransformation`` or a tuple
        of them, the preconditioner slot. A factory that needs build's learning rate
        declares a keyword parameter ``learning_rate`` and is given it. It is called once
        here with the default options; an error there refuses the entry.
      options: the options and their defaults; None: the factory's keyword defaults.
      check: ``check(where, options)`` raises a ValueError naming ``where``, the
        option, its value and the fix; run on every ``build`` (and here, on the
        defaults). None: no check beyond the factory's own.
      adaptive: the preconditioner divides by the root of a statistic (Adam, not SGD).
      second_moment: ``second_moment(states, options)`` → that statistic's tree, from
        the slot's new states; needed for ``decay="stable"`` (needs ``adaptive``).
      inside: ``inside(options)`` → transforms between the decoupled decay and the lr
        step (a trust ratio, so that decoupled decay is inside it).
      tail: ``tail(options)`` → transforms after the independent decay.
      wrap: ``wrap(tx, options, lr)`` → a transformation wrapping the whole built chain
        (an iterate average, say).
      learning_rate: ``learning_rate(lr, options)`` → the lr_t of the lr step.
      lr_span: (low, high), log10 of the runner's default learning-rate grid.
      summary: one line for ``describe()`` and ``--help``.
      torch: the ``torch.optim`` class name, if torch has it. alias: wdchain's alias.
      matrices_only: the factory's transforms take 2-D leaves only (``others=`` then
        applies).
      replace: replace an entry of the same name (refused otherwise).
      eta: ``eta(η, options)`` → the independent placement's multiplier.
      hints: advice shown when an unknown option of this name is given.
      eval_params: ``eval_params(opt_state, params)`` → the parameters to evaluate a
        model at (schedule-free's average x); the ablation runner uses it.

    Returns:
      The new :class:`Preconditioner`, which ``wdchain.registry.REGISTRY[name]`` holds.

    Raises:
      ValueError: for a name already taken (without ``replace``) or not a name, a
        factory that is not callable, raises or returns no transform, options that do
        not fit the factory's signature or fail ``check``, or a bad ``lr_span``.

    Example:
      Sign-SGD, ``u = sign(g)``, with decoupled decay, θ ← θ − lr·sign(g) − lr·λ·θ:

      >>> import jax.numpy as jnp, optax, wdchain
      >>> entry = wdchain.register_preconditioner("signsgd", lambda: optax.scale_by_sign())
      >>> tx = wdchain.build("signsgd", decay="decoupled", lr=0.1, weight_decay=0.5)
      >>> params = jnp.array([2.0, -4.0])
      >>> tx.update(jnp.array([3.0, 0.5]), tx.init(params), params)[0]  # −0.1·(±1) − 0.05·θ
      Array([-0.2,  0.1], dtype=float32)
      >>> _ = wdchain.registry.unregister("signsgd")
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise _refuse(name, "name must be a string of letters, digits and _ that starts with "
                            "a letter (it becomes part of arm names such as "
                            "'signsgd-decoupled')")
    if name in _ENTRIES and not replace:
        raise _refuse(name, f"{name!r} is already registered ({_ENTRIES[name].summary}); "
                            "pass replace=True to replace it, or choose another name")
    if not callable(factory):
        raise _refuse(name, f"factory must be a callable returning the slot's transform(s), "
                            f"got {factory!r}")
    for field, value in (("check", check), ("second_moment", second_moment),
                         ("inside", inside), ("tail", tail), ("wrap", wrap),
                         ("eval_params", eval_params),
                         ("learning_rate", learning_rate), ("eta", eta)):
        _check_callable(name, field, value)
    for field, flag in (("adaptive", adaptive), ("matrices_only", matrices_only),
                        ("replace", replace)):
        if not isinstance(flag, bool):
            raise _refuse(name, f"{field} must be True or False, got {flag!r}")
    if second_moment is not None and not adaptive:
        raise _refuse(name, "second_moment is given but adaptive=False; a preconditioner "
                            "with a second moment is adaptive: pass adaptive=True")
    for field, text in (("summary", summary), ("torch", torch), ("alias", alias)):
        if text is not None and not isinstance(text, str):
            raise _refuse(name, f"{field} must be a string, got {text!r}")
    span = _check_lr_span(name, lr_span)

    signature, takes_lr = _factory_parameters(name, factory)
    if options is None:
        defaults = _defaults_of(name, signature)
    elif not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
        raise _refuse(name, f"options must be a mapping of option names to defaults, "
                            f"got {options!r}")
    else:
        defaults = dict(options)
        if signature is not None:
            try:
                signature.bind(**defaults, **({"learning_rate": _TRIAL_LR} if takes_lr else {}))
            except TypeError as error:
                raise _refuse(name, f"options {sorted(defaults)} do not fit the factory's "
                                    f"signature {signature}: {error}") from None
    if check is not None:
        try:
            check(f"register_preconditioner({name!r})", dict(defaults))
        except Exception as error:
            raise _refuse(name, f"the default options fail check: {error}") from error

    entry = Preconditioner(
        name=name, factory=factory, options=MappingProxyType(defaults),
        check=check or _no_check, adaptive=adaptive, second_moment=second_moment,
        inside=inside, tail=tail, wrap=wrap, eval_params=eval_params, learning_rate=learning_rate, eta=eta,
        lr_span=span, summary=summary or _first_line(factory), torch=torch, alias=alias,
        matrices_only=matrices_only, hints=MappingProxyType(dict(hints or {})),
        takes_learning_rate=takes_lr,
    )
    _trial(name, "factory", lambda: entry.transforms(dict(defaults), _TRIAL_LR))
    if inside is not None:
        _trial(name, "inside", lambda: inside(dict(defaults)))
    if tail is not None:
        _trial(name, "tail", lambda: tail(dict(defaults)))
    _ENTRIES[name] = entry
    return entry


def _first_line(factory: Any) -> str:
    doc = inspect.getdoc(factory) if not getattr(factory, "__name__", "") == "<lambda>" else None
    return doc.strip().splitlines()[0] if doc else "a registered preconditioner"
