"""``describe``: what an optimizer built by wdchain does with weight decay.

The rule is read off the recipe, from *where* each decay step sits: before a
preconditioner step it enters that preconditioner's statistics; before the
learning-rate step it is multiplied by lr_t; after it, by the step's own scale (η_t,
the schedule multiplier, or 1). The decay steps' names play no part.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import optax

from wdchain import _recipe

_DECAY_ROLES = (_recipe.L2, _recipe.DECOUPLED, _recipe.INDEPENDENT)


def _scaled(term: str, scale: str) -> str:
    return term if scale == "1" else f"{scale}·{term}"


def _wrap(expression: str) -> str:
    """Parenthesises a sum (a `` + `` or `` − `` outside any parentheses)."""
    depth = 0
    for i, char in enumerate(expression):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and expression[i : i + 3] in (" + ", " − "):
            return f"({expression})"
    return expression


def _term(step: _recipe.Step) -> str:
    """The decay term of a step: λθ, or with its scale, gate and target (issue 13)."""
    options = dict(step.hyperparams)
    offset = "(θ − θ*)" if "toward" in options else "θ"
    gate = "G_t⊙" if options.get("gate") == "cautious" else ""
    stable = "/√v̄_t" if options.get("scale") == "1/√v̄_t" else ""
    return f"λ{stable}·{gate}{offset}" if gate or stable or offset != "θ" else "λθ"


def _axes(step: _recipe.Step) -> str:
    """The scale, gate and target of a decay step, in words ('' for none)."""
    options = dict(step.hyperparams)
    words = []
    if options.get("scale") == "1/√v̄_t":
        words.append("and divided by √v̄_t, v̄_t the mean of the optimizer's bias-corrected "
                     "second moment over all parameters (stable weight decay, Xie et al. 2023)")
    if "η_t on" in options:
        words.append("η_t on the leaves corrected_mask selects, 1 on the others")
    if options.get("gate") == "cautious":
        words.append("gated: only entries where the update moves θ toward θ* "
                     "(u_t⊙(θ − θ*) ≥ 0; cautious weight decay, Chen et al. 2025)")
    if options.get("toward") == "θ₀":
        words.append("toward θ* = θ₀, the params at init (one copy held in the state)")
    elif options.get("toward") == "tree":
        words.append("toward θ* = the given tree (held in the state)")
    return "".join(f"; {w}" for w in words)


def _update_rule(steps: tuple[_recipe.Step, ...]) -> str:
    """The update as an equation, built by applying the steps in order."""
    u = "g"
    negated = False  # whether u already carries the descent sign
    for step in steps:
        if step.role == _recipe.SIGN:
            u = f"−{u}"
        elif step.role in _DECAY_ROLES:
            if negated:
                u = f"{u} − {_scaled(_term(step), step.decay_scale or '1')}"
            else:
                u = f"{u} + {_scaled(_term(step), step.decay_scale or '1')}"
        elif step.role == _recipe.LEARNING_RATE:
            u, negated = f"−lr_t·{_wrap(u)}", True
        else:  # a preconditioner, or a transform wdchain did not build
            u = f"{step.name}({u})"
    if u.startswith("−"):
        return f"θ ← θ − {u[1:]}"
    return f"θ ← θ + {u}"


def _decay_rule(steps: tuple[_recipe.Step, ...], index: int) -> str:
    """How the decay of ``steps[index]`` acts, from its position in the chain."""
    step = steps[index]
    before = steps[:index]
    after = steps[index + 1 :]
    preconditioners = [s.name for s in steps if s.role == _recipe.PRECONDITIONER]
    entered = [s.name for s in after if s.role == _recipe.PRECONDITIONER]
    if entered:
        statistics = f"enters the optimizer's statistics ({', '.join(entered)})"
    elif preconditioners:
        bypassed = [s.name for s in before if s.role == _recipe.PRECONDITIONER]
        statistics = f"bypasses the optimizer's statistics (placed after {', '.join(bypassed)})"
    else:
        statistics = "no preconditioner, so L2 and decoupled decay are the same update"
    if any(s.role == _recipe.LEARNING_RATE for s in after):
        scale = "multiplied by lr_t"
        if step.decay_scale == "η_t":  # corrected (AdamC): c_t = lr_t·η_t = lr_t²/lr_peak
            scale = "multiplied by lr_t·η_t = lr_t²/lr_peak (corrected, Defazio 2025)"
    elif step.decay_scale == "η_t":
        scale = "multiplied by η_t = lr_t / lr_peak, not by lr_t"
    elif step.decay_scale in (None, "1"):
        scale = "multiplied by 1, neither by lr_t nor by η_t"
    else:
        scale = f"multiplied by 1, not by lr_t; λ_t follows its schedule ({step.decay_scale})"
    return f"decay {step}: {statistics}; {scale}{_axes(step)}"


def _recipe_lines(steps: tuple[_recipe.Step, ...]) -> list[str]:
    """The description of one chain of steps (wdchain's, and foreign ones by name)."""
    lines = [" → ".join(str(step) for step in steps) or "identity", _update_rule(steps)]
    decays = [i for i, step in enumerate(steps) if step.role in _DECAY_ROLES]
    foreign = [step.name for step in steps if not step.role]
    lines += [_decay_rule(steps, i) for i in decays] or (
        [] if foreign else ["no weight decay"]
    )
    if foreign:
        lines.append(
            f"not built by wdchain: {', '.join(foreign)}; what it does with weight decay "
            "is unknown"
        )
    return lines


# --------------------------------------------------------------------------------------
# optax's compositions, seen through their init functions' closures: a chain is a list
# of steps; a wrapper (MultiSteps, inject_hyperparams, masked, partition,
# apply_if_finite) is a header and the parts it wraps.


@dataclasses.dataclass
class _Wrapper:
    header: str
    parts: list[tuple[str, Any]]  # (label, node); a node is a step tuple or a _Wrapper


def _foreign_name(tx: Any) -> str:
    """A foreign transformation's name, from its update function (optax shares one
    ``init_empty_state`` between stateless transforms), seen through optax's
    ``with_extra_args_support`` wrapper."""
    update = tx.update
    while getattr(update, "__qualname__", "").startswith("with_extra_args_support."):
        inner = _nonlocals(update).get("tx")
        if inner is None:
            break
        update = inner.update
    return getattr(update, "__qualname__", type(tx).__name__).split(".")[0]


def _nonlocals(init: Any) -> dict[str, Any]:
    try:
        return dict(inspect.getclosurevars(init).nonlocals)
    except TypeError:  # not a Python function
        return {}


def _injected_inner(names: dict[str, Any]) -> optax.GradientTransformation | None:
    """The transformation optax.inject_hyperparams wraps, rebuilt from its arguments."""
    schedules = {key: getattr(s, "schedule_fn", s) for key, s in names["sched_hps"].items()}
    try:
        return names["inner_factory"](**names["other_hps"], **names["numeric_hps"], **schedules)
    except Exception:  # a factory that refuses its own arguments: shown as unknown
        return None


def _node(tx: Any) -> Any:
    """The structure of ``tx``: a tuple of steps, or a _Wrapper."""
    if isinstance(tx, optax.MultiSteps):
        tx = tx.gradient_transformation()
    init = tx.init
    steps = _recipe.recipe(tx)
    if steps is not None:
        return steps
    owner = getattr(init, "__self__", None)
    if isinstance(owner, optax.MultiSteps):
        try:  # optax keeps k as a schedule of the step; show its first value
            shown = str(int(owner._every_k_schedule(0)))
        except Exception:
            shown = "schedule"
        mean = "averaged" if owner._use_grad_mean else "summed"
        return _Wrapper(
            f"optax.MultiSteps(every_k_schedule={shown}): the gradients of k calls are "
            f"accumulated ({mean}), then one step of:",
            [("", _node(owner._opt))],
        )
    qualname = getattr(init, "__qualname__", "")
    names = _nonlocals(init)
    if qualname.startswith("chain.") and "init_fns" in names:
        updates = _nonlocals(tx.update).get("update_fns", names["init_fns"])
        parts = [_node(optax.GradientTransformation(init_fn, update_fn))
                 for init_fn, update_fn in zip(names["init_fns"], updates)]
        if all(isinstance(part, tuple) for part in parts):
            return tuple(step for part in parts for step in part)
        return _Wrapper(f"optax.chain of {len(parts)} parts, in order:",
                        [(f"part {i}", part) for i, part in enumerate(parts)])
    if qualname.startswith("masked.") and "inner" in names:
        kind = "callable" if callable(names.get("mask")) else "tree"
        return _Wrapper(
            f"optax.masked (mask={kind}): the leaves the mask selects get the updates of "
            "what follows; the others pass through unchanged:",
            [("", _node(names["inner"]))],
        )
    if qualname.startswith("partition.") and "transforms" in names:
        return _Wrapper(
            "optax.partition: each leaf gets the updates of its label's transformation:",
            [(f"{label!r}:", _node(part)) for label, part in names["transforms"].items()],
        )
    if qualname.startswith("apply_if_finite.") and "inner" in names:
        return _Wrapper("optax.apply_if_finite: steps with non-finite gradients are "
                        "skipped; otherwise:", [("", _node(names["inner"]))])
    if qualname.startswith("inject_hyperparams.") and "inner_factory" in names:
        injected = sorted({*names["numeric_hps"], *names["sched_hps"]})
        scheduled = sorted(names["sched_hps"])
        header = "optax.inject_hyperparams: " + (
            f"{', '.join(injected)} held in the state" if injected else "nothing injected")
        if scheduled:
            header += f" ({', '.join(scheduled)} scheduled)"
        inner = _injected_inner(names)
        part = _node(inner) if inner is not None else (_recipe.Step(
            getattr(names["inner_factory"], "__name__", "factory"), ""),)
        return _Wrapper(header + "; values as given:", [("", part)])
    return (_recipe.Step(_foreign_name(tx), ""),)


def _any_wdchain(node: Any) -> bool:
    if isinstance(node, tuple):
        return any(step.role for step in node)
    return any(_any_wdchain(part) for _, part in node.parts)


def _render(node: Any, indent: str = "") -> list[str]:
    if isinstance(node, tuple):
        return [indent + line for line in _recipe_lines(node)]
    lines = [indent + node.header]
    for label, part in node.parts:
        if label:
            lines.append(f"{indent}  {label}")
        lines += _render(part, indent + ("    " if label else "  "))
    return lines


def describe(tx: Any) -> str:
    """A readable recipe of an optimizer built by wdchain, and its weight-decay rule.

    The first line is the chain (decay steps with a static λ of 0 are left out), the
    second the update it makes, then one line per decay step: whether the decay
    enters the optimizer's statistics and whether it is multiplied by lr_t, by η_t
    (the schedule multiplier lr_t / lr_peak) or by 1. All of it is derived from the
    *position* of each decay step relative to the preconditioner and the
    learning-rate steps.

    optax's compositions are looked into: in ``optax.chain`` the parts wdchain did
    not build are named (``clip_by_global_norm``); ``optax.MultiSteps``,
    ``optax.inject_hyperparams``, ``optax.masked``, ``optax.partition`` and
    ``optax.apply_if_finite`` get a header line, and the parts they wrap are
    described below it, indented.

    Args:
      tx: a transformation from a wdchain alias, :func:`wdchain.build`,
        :func:`wdchain.chain` or a wdchain transform, or an optax composition (or an
        ``optax.MultiSteps``) with such a part.

    Returns:
      A multi-line string.

    Raises:
      TypeError: if no part of ``tx`` was built by wdchain.

    Example:
      >>> import optax
      >>> import wdchain
      >>> print(describe(wdchain.adam(weight_decay=0.01)))
      l2(λ=0.01) → adam(β=(0.9, 0.999), ε=1e-08) → lr(α=0.001)
      θ ← θ − lr_t·adam(g + λθ)
      decay l2(λ=0.01): enters the optimizer's statistics (adam); multiplied by lr_t
      >>> print(describe(wdchain.build("adam", decay="constant", weight_decay=1e-4)))
      adam(β=(0.9, 0.999), ε=1e-08) → lr(α=0.001) → independent(λ=0.0001)
      θ ← θ − lr_t·adam(g) − λθ
      decay independent(λ=0.0001): bypasses the optimizer's statistics (placed after adam);
      multiplied by 1, neither by lr_t nor by η_t
      >>> print(describe(optax.MultiSteps(wdchain.sgd(0.1, momentum=0.9), 4)))
      optax.MultiSteps(every_k_schedule=4): the gradients of k calls are accumulated
      (averaged), then one step of:
        momentum(μ=0.9) → lr(α=0.1)
        θ ← θ − lr_t·momentum(g)
        no weight decay
    """
    if not isinstance(tx, (optax.GradientTransformation, optax.MultiSteps)):
        raise TypeError(
            f"describe: this {type(tx).__name__} was not built by wdchain, so its recipe "
            "is unknown. Build it with wdchain.build, a wdchain optimizer "
            "(wdchain.adamw, ...) or wdchain.chain."
        )
    node = _node(tx)
    if not _any_wdchain(node) and not (isinstance(node, tuple) and _recipe.recipe(tx)):
        raise TypeError(
            f"describe: this {type(tx).__name__} was not built by wdchain (nor any part of "
            "it), so its recipe is unknown. Build it with wdchain.build, a wdchain "
            "optimizer (wdchain.adamw, ...) or wdchain.chain."
        )
    return "\n".join(_render(node))
