"""``describe``: what an optimizer built by wdchain does with weight decay.

The rule is read off the recipe, from *where* each decay step sits: before a
preconditioner step it enters that preconditioner's statistics; before the
learning-rate step it is multiplied by lr_t; after it, by the step's own scale (η_t,
the schedule multiplier, or 1). The decay steps' names play no part.
"""

from __future__ import annotations

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


def _update_rule(steps: tuple[_recipe.Step, ...]) -> str:
    """The update as an equation, built by applying the steps in order."""
    u = "g"
    negated = False  # whether u already carries the descent sign
    for step in steps:
        if step.role == _recipe.SIGN:
            u = f"−{u}"
        elif step.role in _DECAY_ROLES:
            if negated:
                u = f"{u} − {_scaled('λθ', step.decay_scale or '1')}"
            else:
                u = f"{u} + λθ"
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
    elif step.decay_scale == "η_t":
        scale = "multiplied by η_t = lr_t / lr_peak, not by lr_t"
    elif step.decay_scale in (None, "1"):
        scale = "multiplied by 1, neither by lr_t nor by η_t"
    else:
        scale = f"multiplied by 1, not by lr_t; λ_t follows its schedule ({step.decay_scale})"
    return f"decay {step}: {statistics}; {scale}"


def describe(tx: optax.GradientTransformation) -> str:
    """A readable recipe of an optimizer built by wdchain, and its weight-decay rule.

    The first line is the chain (decay steps with a static λ of 0 are left out), the
    second the update it makes, then one line per decay step: whether the decay
    enters the optimizer's statistics and whether it is multiplied by lr_t, by η_t
    (the schedule multiplier lr_t / lr_peak) or by 1. All of it is derived from the
    *position* of each decay step relative to the preconditioner and the
    learning-rate steps.

    Args:
      tx: a transformation from a wdchain alias, :func:`wdchain.build`,
        :func:`wdchain.chain` or a wdchain transform.

    Returns:
      A multi-line string.

    Raises:
      TypeError: if ``tx`` was not built by wdchain.

    Example:
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
    """
    steps = _recipe.recipe(tx) if isinstance(tx, optax.GradientTransformation) else None
    if steps is None:
        raise TypeError(
            f"describe: this {type(tx).__name__} was not built by wdchain, so its recipe "
            "is unknown. "
            "Build it with wdchain.build, a wdchain optimizer (wdchain.adamw, ...) or "
            "wdchain.chain."
        )
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
    return "\n".join(lines)
