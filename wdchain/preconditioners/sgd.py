"""Plain SGD: no preconditioner, u = g (torch's ``SGD`` with ``momentum=0``)."""

from __future__ import annotations

import optax

from wdchain import _recipe
from wdchain.registry import register_preconditioner


def _slot() -> optax.GradientTransformation:
    return _recipe.nothing()


register_preconditioner(
    "sgd", _slot, lr_span=(-2.5, 0.0), summary="no preconditioner: u = g",
    torch="SGD", alias="sgd",
    hints={name: "For SGD with momentum use build(\"momentum\", momentum=0.9, ...)"
           for name in ("momentum", "dampening", "nesterov")},
)
