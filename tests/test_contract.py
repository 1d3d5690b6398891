"""The contract every public factory keeps, checked over one table.

Each row of ``CASES`` builds one transformation from a public factory of
``wdchain.__all__`` with some options switched on. Each property below is one test,
parametrized over the table:

* a second jitted update does not retrace;
* the state's tree structure, shapes and dtypes do not change across updates;
* it runs inside ``lax.scan`` and gives what a Python loop gives;
* bfloat16 params give bfloat16 updates, and the state keeps its dtypes;
* ``optax.inject_hyperparams`` (and ``wdchain.inject_hyperparams``) gives what the
  plain factory gives;
* a transformation that decays raises a clear ``ValueError`` without params;
* it minimises a badly scaled quadratic (wrapped in a learning-rate step if it is
  only a part of an optimizer).

``test_every_public_factory_is_in_the_table`` fails when a public function that returns
a ``GradientTransformation`` has no row, so a new factory cannot skip the contract.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import wdchain

LR = 0.05  # the default learning rate that makes a part of an optimizer an optimizer
LARS_LR = 1.0  # LARS steps lr·c·‖θ‖: its lr is large


def _decay_mask(params: Any) -> Any:
    """Decay the matrices only (a callable mask)."""
    return jax.tree.map(lambda p: jnp.ndim(p) > 1, params)


_TREE_MASK = {"dense": {"w": True, "b": False}, "seq": (True,)}
_LR_SCHEDULE = optax.linear_schedule(0.1, 0.02, transition_steps=50)
_WD_SCHEDULE = optax.exponential_decay(0.01, transition_steps=10, decay_rate=0.5)


@dataclasses.dataclass(frozen=True)
class Case:
    """One row: ``factory(*args, **kwargs)``.

    role: "optimizer" (a full optimizer, or a wrapper of one given in args), "part"
      (sits before the learning rate) or "after_lr" (sits after it).
    needs_params: its update refuses to run without params.
    static: keyword arguments that ``inject_hyperparams`` must not treat as schedules.
    lr: the learning rate that makes a "part" or "after_lr" row an optimizer.
    """

    id: str
    factory: str
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    role: str = "optimizer"
    needs_params: bool = False
    args: tuple[Any, ...] = ()
    static: tuple[str, ...] = ()
    lr: float = LR

    def make(self) -> optax.GradientTransformation:
        return getattr(wdchain, self.factory)(*self.args, **self.kwargs)

    @property
    def sign(self) -> float:
        """-1 when the transformation climbs (maximize): it is fed the gradient of -f."""
        return -1.0 if self.factory == "maximize" or self.kwargs.get("maximize") else 1.0

    def descent(self) -> optax.GradientTransformation:
        """An optimizer made of this case, for the convergence test."""
        tx = self.make()
        if self.role == "part":
            return optax.chain(tx, wdchain.scale_by_learning_rate(self.lr))
        if self.role == "after_lr":
            return optax.chain(wdchain.scale_by_learning_rate(self.lr), tx)
        return tx


@dataclasses.dataclass(frozen=True)
class MatricesOnly(Case):
    """A row for a factory that takes 2-D leaves only (Muon): in one ``optax.partition``
    it gets the matrices and Adam (AdamW for an optimizer row) the other leaves.
    ``inject_hyperparams`` of it is checked on matrices in tests/test_muon.py."""

    def make(self) -> optax.GradientTransformation:
        others = wdchain.adamw(lr=self.lr) if self.role == "optimizer" else wdchain.scale_by_adam()
        return optax.partition({"muon": super().make(), "adamw": others}, wdchain.muon_labels)


CASES = [
    # Transforms, in the order they sit in a chain.
    Case("maximize", "maximize", role="part"),
    Case("add_l2_to_grad", "add_l2_to_grad", dict(weight_decay=0.01), "part", True),
    Case(
        "add_l2_to_grad-schedule-tree_mask",
        "add_l2_to_grad",
        dict(weight_decay=_WD_SCHEDULE, mask=_TREE_MASK),
        "part",
        True,
    ),
    Case("scale_by_momentum", "scale_by_momentum", dict(momentum=0.9), "part"),
    Case(
        "scale_by_momentum-dampening",
        "scale_by_momentum",
        dict(momentum=0.5, dampening=0.3),
        "part",
    ),
    Case(
        "scale_by_momentum-nesterov", "scale_by_momentum", dict(momentum=0.9, nesterov=True), "part"
    ),
    Case("scale_by_adagrad", "scale_by_adagrad", role="part", lr=0.5),
    Case(
        "scale_by_adagrad-initial_accumulator",
        "scale_by_adagrad",
        dict(eps=1e-6, initial_accumulator_value=0.1),
        "part",
        lr=0.5,
    ),
    Case("scale_by_rms", "scale_by_rms", dict(alpha=0.9), "part"),
    Case("scale_by_rms-centered", "scale_by_rms", dict(alpha=0.9, centered=True), "part"),
    Case("scale_by_adam", "scale_by_adam", role="part"),
    Case("scale_by_adam-amsgrad", "scale_by_adam", dict(amsgrad=True, eps=1e-6), "part"),
    Case(
        "scale_by_adam-f32_moments",
        "scale_by_adam",
        dict(mu_dtype=jnp.float32, nu_dtype=jnp.float32),
        "part",
        static=("mu_dtype", "nu_dtype"),  # dtypes are callables: not schedules
    ),
    Case("scale_by_nadam", "scale_by_nadam", role="part"),
    Case("scale_by_nadam-momentum_decay", "scale_by_nadam", dict(momentum_decay=0.1), "part"),
    Case("scale_by_radam", "scale_by_radam", role="part", lr=0.1),
    Case("scale_by_adamax", "scale_by_adamax", dict(betas=(0.8, 0.99)), "part"),
    Case(
        "decoupled_weight_decay-callable_mask",
        "decoupled_weight_decay",
        dict(weight_decay=0.01, mask=_decay_mask),
        "part",
        True,
        static=("mask",),
    ),
    Case("scale_by_learning_rate", "scale_by_learning_rate", dict(learning_rate=LR)),
    Case(
        "scale_by_learning_rate-schedule",
        "scale_by_learning_rate",
        dict(learning_rate=_LR_SCHEDULE),
    ),
    Case(
        "independent_weight_decay",
        "independent_weight_decay",
        dict(weight_decay=1e-3),
        "after_lr",
        True,
    ),
    Case("scale_by_adadelta", "scale_by_adadelta", {"rho": 0.5, "eps": 1e-2}, "part", lr=1.0),
    Case("scale_by_adafactor", "scale_by_adafactor", {"lr": 0.1, "d": 2.0}, "part", True,
         lr=0.1),
    Case("scale_by_adafactor-eps-schedule", "scale_by_adafactor",
         {"lr": _LR_SCHEDULE, "eps": (1e-6, 1e-2), "beta2_decay": -0.5}, "part", True, lr=0.1),
    Case("scale_by_lion", "scale_by_lion", {"betas": (0.8, 0.95)}, "part", lr=0.05),
    Case("scale_by_asgd", "scale_by_asgd", {"lambd": 0.01}, "part", True),
    Case("average_iterates", "average_iterates", {"t0": 2.0}, "after_lr", True),
    Case("scale_by_trust_ratio", "scale_by_trust_ratio", {"trust_coefficient": 0.01}, "part",
         True, lr=1.0),
    Case("scale_by_muon_momentum", "scale_by_muon_momentum", {"momentum": 0.9}, "part"),
    Case("scale_by_muon_momentum-no_nesterov", "scale_by_muon_momentum",
         {"momentum": 0.5, "nesterov": False}, "part"),
    MatricesOnly("orthogonalize_newton_schulz", "orthogonalize_newton_schulz",
                 {"ns_steps": 5, "ns_dtype": jnp.float32}, "part", lr=0.05,
                 static=("ns_dtype",)),
    Case("scale_by_shape", "scale_by_shape", {"adjust_lr_fn": "match_rms_adamw"}, "part"),
    # Optimizers: torch's defaults, then every option switched on in some row.
    Case("sgd", "sgd", dict(lr=0.1)),
    Case(
        "sgd-momentum-dampening-l2-tree_mask",
        "sgd",
        dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01, mask=_TREE_MASK),
        needs_params=True,
    ),
    Case(
        "sgd-nesterov-maximize-lr_schedule",
        "sgd",
        dict(lr=_LR_SCHEDULE, momentum=0.9, nesterov=True, maximize=True),
    ),
    Case("adagrad", "adagrad", dict(lr=0.5)),
    Case(
        "adagrad-lr_decay-initial_accumulator-eps-l2-tree_mask-maximize",
        "adagrad",
        dict(
            lr=0.5,
            lr_decay=0.01,
            initial_accumulator_value=0.1,
            eps=1e-6,
            weight_decay=0.01,
            mask=_TREE_MASK,
            maximize=True,
        ),
        needs_params=True,
    ),
    Case("rmsprop", "rmsprop", dict(lr=0.05)),
    Case(
        "rmsprop-alpha-eps-centered-momentum-l2-callable_mask-maximize",
        "rmsprop",
        dict(
            lr=0.01,
            alpha=0.9,
            eps=1e-6,
            momentum=0.5,
            centered=True,
            weight_decay=0.01,
            mask=_decay_mask,
            maximize=True,
        ),
        needs_params=True,
        static=("mask",),
    ),
    Case("adam", "adam", dict(lr=0.1)),
    Case(
        "adam-amsgrad-l2-lr_schedule-tree_mask",
        "adam",
        dict(
            lr=_LR_SCHEDULE,
            betas=(0.8, 0.99),
            eps=1e-6,
            weight_decay=0.01,
            amsgrad=True,
            mask=_TREE_MASK,
        ),
        needs_params=True,
    ),
    Case(
        "adam-decoupled-maximize",
        "adam",
        dict(lr=0.1, weight_decay=0.01, decoupled_weight_decay=True, maximize=True),
        needs_params=True,
    ),
    Case("adamw", "adamw", dict(lr=0.1), needs_params=True),
    Case(
        "adamw-bf16_mu-f32_nu",
        "adamw",
        dict(lr=0.1, mu_dtype=jnp.bfloat16, nu_dtype=jnp.float32),
        needs_params=True,
        static=("mu_dtype", "nu_dtype"),
    ),
    Case(
        "adam-bf16_mu-f32_nu",
        "adam",
        dict(lr=0.1, weight_decay=0.01, mu_dtype=jnp.bfloat16, nu_dtype=jnp.float32),
        needs_params=True,
        static=("mu_dtype", "nu_dtype"),
    ),
    Case(
        "adamw-amsgrad-callable_mask-wd_schedule-maximize",
        "adamw",
        dict(
            lr=0.1,
            betas=(0.8, 0.99),
            eps=1e-6,
            weight_decay=_WD_SCHEDULE,
            amsgrad=True,
            mask=_decay_mask,
            maximize=True,
        ),
        needs_params=True,
        static=("mask",),
    ),
    Case("nadam", "nadam", dict(lr=0.1)),
    Case(
        "nadam-decoupled-momentum_decay-tree_mask-maximize",
        "nadam",
        dict(
            lr=0.1,
            betas=(0.8, 0.99),
            eps=1e-6,
            weight_decay=0.01,
            momentum_decay=0.01,
            decoupled_weight_decay=True,
            mask=_TREE_MASK,
            maximize=True,
        ),
        needs_params=True,
    ),
    Case("radam", "radam", dict(lr=0.1)),
    Case(
        "radam-decoupled-tree_mask-maximize",
        "radam",
        dict(
            lr=0.1,
            betas=(0.8, 0.99),
            eps=1e-6,
            weight_decay=0.01,
            decoupled_weight_decay=True,
            mask=_TREE_MASK,
            maximize=True,
        ),
        needs_params=True,
    ),
    Case("adamax", "adamax", dict(lr=0.1)),
    Case(
        "adamax-l2-tree_mask-maximize",
        "adamax",
        dict(
            lr=0.1,
            betas=(0.8, 0.99),
            eps=1e-6,
            weight_decay=0.01,
            mask=_TREE_MASK,
            maximize=True,
        ),
        needs_params=True,
    ),
    Case("adadelta", "adadelta", {"lr": 1.0, "eps": 1e-2}),
    Case("adadelta-rho-l2-tree_mask-maximize", "adadelta",
         {"lr": 1.0, "rho": 0.5, "eps": 1e-2, "weight_decay": 0.01, "mask": _TREE_MASK,
          "maximize": True}, needs_params=True),
    Case("asgd", "asgd", {"lr": 0.1}, needs_params=True),
    Case("asgd-averaging-l2-tree_mask-maximize", "asgd",
         {"lr": 0.05, "lambd": 1e-3, "alpha": 0.5, "t0": 2.0, "weight_decay": 0.01,
          "mask": _TREE_MASK, "maximize": True}, needs_params=True),
    Case("adafactor", "adafactor", {"lr": 0.1}, needs_params=True),
    Case("adafactor-options-decoupled-callable_mask-maximize", "adafactor",
         {"lr": 0.1, "beta2_decay": -0.5, "eps": (1e-6, 1e-2), "d": 2.0, "weight_decay": 0.01,
          "mask": _decay_mask, "maximize": True}, needs_params=True, static=("mask",)),
    MatricesOnly("muon", "muon", {"lr": 0.02}, needs_params=True, static=("ns_dtype",)),
    MatricesOnly("muon-options-tree_mask", "muon",
                 {"lr": 0.1, "weight_decay": 0.01, "momentum": 0.9, "nesterov": False,
                  "ns_coefficients": (3.0, -3.2, 1.2), "eps": 1e-6, "ns_steps": 4,
                  "adjust_lr_fn": "match_rms_adamw", "mask": _TREE_MASK,
                  "ns_dtype": jnp.float32}, needs_params=True, static=("ns_dtype",)),
    # The builder: placements the aliases do not have.
    Case(
        "build-adam-independent",
        "build",
        dict(decay="independent", lr=0.1, weight_decay=1e-3),
        args=("adam",),
        needs_params=True,
    ),
    Case(
        "build-momentum-constant-mask",
        "build",
        dict(decay="constant", lr=0.05, weight_decay=1e-3, mask=_TREE_MASK, momentum=0.9),
        args=("momentum",),
        needs_params=True,
    ),
    Case(
        "build-rmsprop-decoupled-centered",
        "build",
        dict(decay="decoupled", lr=0.01, weight_decay=0.01, centered=True, momentum=0.5),
        args=("rmsprop",),
        needs_params=True,
    ),
    # The builder's newer preconditioners, each with a placement torch has not.
    Case("build-lion-independent", "build",
         {"decay": "independent", "lr": 0.05, "weight_decay": 1e-3, "betas": (0.9, 0.95)},
         args=("lion",), needs_params=True),
    Case("build-lamb-decoupled", "build",
         {"decay": "decoupled", "lr": 0.05, "weight_decay": 0.01}, args=("lamb",),
         needs_params=True),
    Case("build-lamb-constant-mask", "build",
         {"decay": "constant", "lr": 0.05, "weight_decay": 1e-3, "mask": _TREE_MASK},
         args=("lamb",), needs_params=True),
    Case("build-adadelta-decoupled", "build",
         {"decay": "decoupled", "lr": 1.0, "weight_decay": 0.01, "eps": 1e-2},
         args=("adadelta",), needs_params=True),
    Case("build-asgd-constant", "build",
         {"decay": "constant", "lr": 0.1, "weight_decay": 1e-3, "t0": 2.0}, args=("asgd",),
         needs_params=True),
    Case("build-adafactor-l2", "build",
         {"decay": "l2", "lr": 0.1, "weight_decay": 1e-3}, args=("adafactor",),
         needs_params=True),
    MatricesOnly("build-muon-independent", "build",
                 {"decay": "independent", "lr": 0.02, "weight_decay": 1e-3,
                  "ns_dtype": jnp.float32}, args=("muon",), needs_params=True),
    Case("build-sgd-decoupled", "build", {"decay": "decoupled", "lr": 0.1, "weight_decay": 1e-3},
         args=("sgd",), needs_params=True),
    Case("build-adagrad-independent-lr_decay", "build",
         {"decay": "independent", "lr": 0.5, "weight_decay": 1e-3, "lr_decay": 0.01},
         args=("adagrad",), needs_params=True),
    Case("build-nadam-constant", "build", {"decay": "constant", "lr": 0.1, "weight_decay": 1e-3},
         args=("nadam",), needs_params=True),
    Case("build-radam-independent", "build",
         {"decay": "independent", "lr": 0.1, "weight_decay": 1e-3}, args=("radam",),
         needs_params=True),
    Case("build-adamax-decoupled", "build",
         {"decay": "decoupled", "lr": 0.1, "weight_decay": 1e-2}, args=("adamax",),
         needs_params=True),
    Case("build-adam-stable-cautious-toward_init", "build",
         {"decay": "stable", "lr": 0.1, "weight_decay": 1e-2, "gate": "cautious",
          "toward": "init"}, args=("adam",), needs_params=True),
    Case("build-radam-corrected-lr_peak", "build",
         {"decay": "corrected", "lr": 0.1, "lr_peak": 0.2, "weight_decay": 1e-2},
         args=("radam",), needs_params=True),
    Case("build-muon-decoupled-others_adam-tree_mask", "build",
         {"decay": "decoupled", "lr": 0.05, "weight_decay": 0.01, "others": "adam",
          "mask": _TREE_MASK, "ns_dtype": jnp.float32}, args=("muon",), needs_params=True,
         static=("ns_dtype",)),
    # Issue 20's modern preconditioners: their transforms and build arms.
    Case("scale_by_adopt", "scale_by_adopt", role="part"),
    Case("scale_by_adopt-betas-eps-unclipped", "scale_by_adopt",
         dict(betas=(0.8, 0.99), eps=1e-4, clip_exponent=None), "part"),
    Case("scale_by_ademamix-alpha-warmups", "scale_by_ademamix",
         dict(betas=(0.9, 0.99, 0.999), alpha=2.0, alpha_warmup=5, beta3_warmup=5), "part"),
    Case("scale_by_lars-nesterov", "scale_by_lars",
         dict(trust_coefficient=0.05, momentum=0.5, nesterov=True), "part", True, lr=LARS_LR),
    Case("scale_by_adan-diff_weight", "scale_by_adan",
         dict(betas=(0.9, 0.9, 0.99), eps=1e-6, diff_weight=0.08), "part"),
    Case("scale_by_schedule_free_adam-moment", "scale_by_schedule_free_adam",
         dict(b2=0.99, eps=1e-6, bias_correction="moment"), "part"),
    Case("schedule_free-adamw-z", "schedule_free",
         dict(learning_rate=0.05, b1=0.8, weight_lr_power=1.0, r=0.5, decay_at="z"),
         args=(wdchain.adamw(lr=0.05, betas=(0.0, 0.999)),), needs_params=True),
    Case("build-adopt-l2", "build", {"decay": "l2", "lr": 0.05, "weight_decay": 0.01},
         args=("adopt",), needs_params=True),
    Case("build-ademamix-decoupled-warmups", "build",
         {"decay": "decoupled", "lr": 0.05, "weight_decay": 0.01, "alpha_warmup": 10,
          "beta3_warmup": 10}, args=("ademamix",), needs_params=True),
    Case("build-lars-decoupled", "build",
         {"decay": "decoupled", "lr": LARS_LR, "weight_decay": 1e-3,
          "trust_coefficient": 0.05}, args=("lars",), needs_params=True),
    Case("build-adan-independent", "build",
         {"decay": "independent", "lr": 0.05, "weight_decay": 1e-3}, args=("adan",),
         needs_params=True),
    Case("build-schedule_free_adam-decoupled-x-cautious", "build",
         {"decay": "decoupled", "lr": 0.05, "weight_decay": 0.01, "decay_at": "x",
          "gate": "cautious"}, args=("schedule_free_adam",), needs_params=True),
    # Composition and wrappers.
    Case(
        "chain-adam-decoupled",
        "chain",
        args=(
            wdchain.scale_by_adam(),
            wdchain.decoupled_weight_decay(0.01),
            wdchain.scale_by_learning_rate(0.1),
        ),
        needs_params=True,
    ),
    Case(
        "compensate_rounding-adamw",
        "compensate_rounding",
        args=(wdchain.adamw(lr=0.1),),
        needs_params=True,
    ),
    Case(
        "skip_nonfinite-adamw",
        "skip_nonfinite",
        args=(wdchain.adamw(lr=0.1),),
        needs_params=True,
    ),
]


def cases_for(keep: Callable[[Case], bool] = lambda case: True) -> Any:
    """Parametrizes a test over the rows that ``keep`` selects."""
    return pytest.mark.parametrize("case", [c for c in CASES if keep(c)], ids=lambda c: c.id)


# --------------------------------------------------------------------------------------
# Problem: a nested tree, badly scaled, and a quadratic on it.

PARAMS = {
    "dense": {
        "w": jnp.array([[1.0, -2.0, 0.5], [3.0, 0.25, -1.0]]),
        "b": jnp.array(1.5, jnp.float32),  # a scalar leaf, not weakly typed
    },
    "seq": (jnp.array([4.0, -3.0]),),
}
# Curvatures from 0.5 to 2 and minimisers off the origin: f = ½ Σ a·(θ − c)².
CURVATURE = jax.tree.map(lambda p: jnp.linspace(0.5, 2.0, p.size).reshape(p.shape), PARAMS)
TARGET = jax.tree.map(lambda p: jnp.linspace(-1.0, 1.0, p.size).reshape(p.shape), PARAMS)


def loss(params: Any) -> jax.Array:
    terms = jax.tree.map(
        lambda p, a, c: 0.5 * jnp.sum(a * (p.astype(jnp.float32) - c) ** 2),
        params,
        CURVATURE,
        TARGET,
    )
    return sum(jax.tree.leaves(terms))


@functools.cache
def grad_sequence(n: int, dtype: Any = jnp.float32) -> Any:
    """n steps of gradients with scales from 1e-3 to 1e2, stacked on axis 0."""
    keys = jax.random.split(jax.random.key(0), len(jax.tree.leaves(PARAMS)))
    leaves, treedef = jax.tree.flatten(PARAMS)
    scales = np.logspace(-3, 2, n)[:, None]
    grads = [
        (jax.random.normal(k, (n, *p.shape)) * scales.reshape((n,) + (1,) * p.ndim)).astype(dtype)
        for k, p in zip(keys, leaves)
    ]
    return jax.tree.unflatten(treedef, grads)


def step_of(sequence: Any, i: int) -> Any:
    return jax.tree.map(lambda g: g[i], sequence)


def shapes_and_dtypes(tree: Any) -> Any:
    return jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), tree)


# --------------------------------------------------------------------------------------
# Coverage of the public API.


def returns_transformation(fn: Callable[..., Any]) -> bool:
    """True for a factory: annotated to return an optax.GradientTransformation."""
    annotation = inspect.signature(fn).return_annotation
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return re.fullmatch(r"(optax\.)?GradientTransformation(ExtraArgs)?", name) is not None


def public_factories() -> set[str]:
    return {
        name
        for name in wdchain.__all__
        if inspect.isfunction(getattr(wdchain, name))
        and returns_transformation(getattr(wdchain, name))
    }


def test_every_public_factory_is_in_the_table():
    public = public_factories()
    assert {"sgd", "adamw", "scale_by_adam", "chain"} <= public  # the discovery works
    in_table = {case.factory for case in CASES}
    assert public - in_table == set(), "public factories with no row in CASES"
    assert in_table - public == set(), "rows whose factory is not public"


def test_every_preconditioner_of_the_registry_has_a_build_row():
    built = {case.args[0] for case in CASES if case.factory == "build"}
    assert set(wdchain.PRECONDITIONERS) - built == set(), "preconditioners with no build row"


def test_table_switches_every_option_of_every_alias_on():
    """Each argument of each alias is given a non-default value in some row."""
    for alias in ("sgd", "adagrad", "rmsprop", "adam", "adamw", "nadam", "radam", "adamax",
                  "adadelta", "asgd", "adafactor", "muon"):
        used = {key for case in CASES if case.factory == alias for key in case.kwargs}
        missing = set(inspect.signature(getattr(wdchain, alias)).parameters) - used
        assert not missing, f"{alias}: no row sets {sorted(missing)}"


# --------------------------------------------------------------------------------------
# The properties.

STEPS = 5


@dataclasses.dataclass
class Run:
    """A case run for STEPS jitted updates in a Python loop."""

    traces: int  # how often the jitted update was traced
    updates: list[Any]
    states: list[Any]  # the state before each update, and the last one
    params: Any  # the params after the last update


_RUNS: dict[str, Run] = {}


def python_loop(case: Case) -> Run:
    """The reference run of a case, shared by the tests (one compilation per case)."""
    if case.id not in _RUNS:
        tx = case.make()
        traces = []

        @jax.jit
        def update(grads, state, params):
            traces.append(None)  # runs once per trace, not per call
            return tx.update(grads, state, params)

        grads = grad_sequence(STEPS)
        params, states, all_updates = PARAMS, [tx.init(PARAMS)], []
        for i in range(STEPS):
            updates, state = update(step_of(grads, i), states[-1], params)
            params = optax.apply_updates(params, updates)
            all_updates.append(updates)
            states.append(state)
        _RUNS[case.id] = Run(len(traces), all_updates, states, params)
    return _RUNS[case.id]


def assert_trees_close(a: Any, b: Any, rtol: float, atol: float) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a, b)


@cases_for()
def test_second_jitted_update_does_not_retrace(case):
    assert python_loop(case).traces == 1


@cases_for()
def test_state_structure_shapes_and_dtypes_are_stable(case):
    tx = case.make()
    expected = shapes_and_dtypes(jax.eval_shape(tx.init, PARAMS))
    grads = grad_sequence(2)
    state = jax.eval_shape(tx.init, PARAMS)
    for i in range(2):  # abstract updates: shapes and dtypes only
        updates, state = jax.eval_shape(tx.update, step_of(grads, i), state, PARAMS)
        assert shapes_and_dtypes(state) == expected
        assert shapes_and_dtypes(updates) == shapes_and_dtypes(PARAMS)
    for state in python_loop(case).states:  # concrete updates
        assert shapes_and_dtypes(state) == expected


@cases_for()
def test_runs_inside_lax_scan_as_a_python_loop(case):
    tx = case.make()

    def body(carry, grads):
        params, state = carry
        updates, state = tx.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None

    run = jax.jit(lambda carry, grads: jax.lax.scan(body, carry, grads)[0])
    params, state = run((PARAMS, tx.init(PARAMS)), grad_sequence(STEPS))
    reference = python_loop(case)
    assert_trees_close(params, reference.params, rtol=2e-6, atol=1e-6)
    assert_trees_close(state, reference.states[-1], rtol=2e-6, atol=1e-6)


@cases_for()
def test_bfloat16_params_give_bfloat16_updates(case):
    tx = case.make()
    params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), PARAMS)
    grads = grad_sequence(3, jnp.bfloat16)
    state = tx.init(params)
    init_dtypes = shapes_and_dtypes(state)
    update = jax.jit(tx.update)
    for i in range(3):
        updates, state = update(step_of(grads, i), state, params)
        for u in jax.tree.leaves(updates):
            assert u.dtype == jnp.bfloat16
            assert bool(jnp.all(jnp.isfinite(u)))
        params = optax.apply_updates(params, updates)
        assert shapes_and_dtypes(state) == init_dtypes
    for p in jax.tree.leaves(params):
        assert p.dtype == jnp.bfloat16


INJECTORS = {
    "optax.inject_hyperparams": optax.inject_hyperparams,
    "wdchain.inject_hyperparams": wdchain.inject_hyperparams,  # float32 or wider
}


def _inject_rows() -> list[Any]:
    rows = []
    for injector in INJECTORS:
        for case in CASES:
            if case.args and case.factory != "build" or isinstance(case, MatricesOnly):
                continue  # wrappers and chain: their parts are injected, not them
            rows.append(pytest.param(injector, case, id=f"{injector}-{case.id}"))
    return rows


@pytest.mark.parametrize("injector, case", _inject_rows())
def test_inject_hyperparams_gives_the_plain_result(injector, case):
    factory = getattr(wdchain, case.factory)
    if case.args:  # build's preconditioner is positional: bind it
        factory = _bind_positional(factory, case.args, case.kwargs)
    tx = INJECTORS[injector](factory, static_args=case.static)(**case.kwargs)
    update = jax.jit(tx.update)
    reference = python_loop(case)
    grads = grad_sequence(STEPS)
    params, state = PARAMS, tx.init(PARAMS)
    for i in range(STEPS):
        updates, state = update(step_of(grads, i), state, params)
        params = optax.apply_updates(params, updates)
        # Injected values are float32 arrays; the plain factory keeps Python doubles.
        assert_trees_close(updates, reference.updates[i], rtol=1e-5, atol=1e-7)
        # The plain optimizer's state, structure included (an injected momentum of 0
        # keeps no buffer, as a static one).
        assert_trees_close(state.inner_state, reference.states[i + 1], rtol=1e-5, atol=1e-7)


def _bind_positional(
    factory: Callable[..., Any], args: tuple[Any, ...], names: Any
) -> Callable[..., Any]:
    """``factory`` with ``args`` bound and keyword arguments ``names``, for
    inject_hyperparams (which reads the signature: ``**options`` would hide them)."""

    def bound(**kwargs: Any) -> Any:
        return factory(*args, **kwargs)

    keyword = inspect.Parameter.KEYWORD_ONLY
    bound.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(name, keyword) for name in names]
    )
    return bound


NO_PARAMS = r"needs the current parameters.*Call tx\.update\(updates, state, params\)"


@cases_for(lambda case: case.needs_params)
def test_decay_without_params_raises_a_clear_error(case):
    tx = case.make()
    state = tx.init(PARAMS)
    with pytest.raises(ValueError, match=NO_PARAMS):  # raised while tracing
        jax.jit(tx.update)(step_of(grad_sequence(1), 0), state)


@cases_for(lambda case: not case.needs_params)
def test_no_decay_runs_without_params(case):
    """The rows not marked needs_params really do run without params."""
    tx = case.make()
    updates, _ = jax.eval_shape(tx.update, step_of(grad_sequence(1), 0), tx.init(PARAMS))
    assert jax.tree.structure(updates) == jax.tree.structure(PARAMS)


@cases_for()
def test_converges_on_a_quadratic(case):
    tx = case.descent()
    steps = 300

    def body(carry, _):
        params, state = carry
        grads = jax.grad(lambda p: case.sign * loss(p))(params)
        updates, state = tx.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None

    run = jax.jit(lambda carry: jax.lax.scan(body, carry, None, length=steps)[0])
    params, _ = run((PARAMS, tx.init(PARAMS)))
    start, end = float(loss(PARAMS)), float(loss(params))
    assert np.isfinite(end)
    assert end < 0.02 * start, f"loss {start:.3g} -> {end:.3g} in {steps} steps"
