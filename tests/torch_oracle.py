"""torch.optim as an oracle: run a wdchain transformation and a torch optimizer side by side.

Shared by the parity tests and ``benchmarks/parity_table.py``:

* ``make_params`` / ``make_grads``: a badly scaled nested pytree (dict, list and tuple
  nodes) and a deterministic gradient sequence with magnitudes 1e-3..10 and about 10%
  exact zeros, as NumPy float64 so both frameworks start from the same numbers.
* ``run_wdchain`` / ``run_torch``: N steps of each framework on those gradients.
* ``torch_param_groups``: a wdchain ``mask`` as torch param groups (masked-out leaves in
  a group with ``weight_decay=0``).
* ``relative_error`` and ``compare``: the max error relative to each leaf's scale.
* ``Case`` and ``PARITY_CASES``: the optimizer × option grid, with torch's keyword
  arguments used verbatim on both sides (wdchain takes torch's names).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

import wdchain

STEPS = 100
LR = 0.05

# Leaf shapes and scales (dict, list and tuple nodes): four orders of magnitude apart.
_SHAPES = {"dense": {"w": (3, 4), "b": (5,)}, "conv": [(2, 3, 2)], "head": ((6,),)}
_SCALES = {"dense": {"w": 3.0, "b": 1e-3}, "conv": [1.0], "head": (30.0,)}

TORCH_DTYPES = {np.float32: torch.float32, np.float64: torch.float64}


def make_params(seed: int = 0) -> Any:
    """The badly scaled nested pytree of parameters, as NumPy float64 arrays."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda shape, scale: scale * rng.standard_normal(shape),
        _SHAPES,
        _SCALES,
        is_leaf=lambda x: isinstance(x, tuple) and all(isinstance(n, int) for n in x),
    )


_MATRIX_SHAPES = {"a": (4, 3), "b": [(3, 5)], "c": ((6, 6),)}
_MATRIX_SCALES = {"a": 1.0, "b": [0.1], "c": (10.0,)}


def make_matrix_params(seed: int = 0) -> Any:
    """2-D leaves only (Muon's domain): wide, tall and square, scales 0.1..10."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda shape, scale: scale * rng.standard_normal(shape),
        _MATRIX_SHAPES,
        _MATRIX_SCALES,
        is_leaf=lambda x: isinstance(x, tuple) and all(isinstance(n, int) for n in x),
    )


def make_grads(params: Any, steps: int = STEPS, seed: int = 1) -> Any:
    """Gradients stacked over steps (leading axis), NumPy float64.

    Each element is ±10**U(-3, 1), and about 10% are exactly zero.
    """
    rng = np.random.default_rng(seed)

    def leaf(p: np.ndarray) -> np.ndarray:
        shape = (steps, *p.shape)
        magnitude = 10.0 ** rng.uniform(-3.0, 1.0, shape)
        sign = rng.choice([-1.0, 1.0], shape)
        return np.where(rng.random(shape) < 0.1, 0.0, sign * magnitude)

    return jax.tree.map(leaf, params)


@contextlib.contextmanager
def torch_default_dtype(dtype: Any) -> Iterator[None]:
    """torch's default dtype set for the block (its scalar state follows it)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(TORCH_DTYPES[dtype])
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def mask_leaves(mask: Any, params: Any) -> list[bool]:
    """A wdchain mask (None, a bool tree that is a prefix of params, or a callable of
    the params) as one bool per params leaf, in ``jax.tree.leaves`` order."""
    if mask is None:
        return [True] * len(jax.tree.leaves(params))
    tree = mask(params) if callable(mask) else mask
    full = jax.tree.map(lambda m, sub: jax.tree.map(lambda _: bool(m), sub), tree, params)
    return jax.tree.leaves(full)


def torch_param_groups(tensors: list[torch.Tensor], decayed: list[bool]) -> list[dict]:
    """Param groups: the decayed tensors with the optimizer's weight decay, the
    others in a group with ``weight_decay=0``. Empty groups are left out."""
    groups = [
        {"params": [t for t, d in zip(tensors, decayed) if d]},
        {"params": [t for t, d in zip(tensors, decayed) if not d], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def run_wdchain(
    txs: list[optax.GradientTransformation], params: Any, grads: Any, dtype: Any
) -> list[Any]:
    """Final params of each transformation, from one jitted ``lax.scan`` over the
    stacked gradients that steps all of them (one compilation for the whole list)."""
    with jax.enable_x64(dtype == np.float64):
        p0 = jax.tree.map(lambda x: jnp.asarray(x, dtype), params)
        g_seq = jax.tree.map(lambda x: jnp.asarray(x, dtype), grads)

        @jax.jit
        def run(p0: Any, g_seq: Any) -> list[Any]:
            def body(carry: tuple, g: Any) -> tuple:
                ps, states = carry
                steps = [tx.update(g, s, p) for tx, p, s in zip(txs, ps, states)]
                ps = [optax.apply_updates(p, u) for p, (u, _) in zip(ps, steps)]
                return (ps, [s for _, s in steps]), None

            init = ([p0] * len(txs), [tx.init(p0) for tx in txs])
            (ps, _), _ = jax.lax.scan(body, init, g_seq)
            return ps

        return [jax.tree.map(np.asarray, p) for p in run(p0, g_seq)]


def run_torch(
    make_optimizer: Callable[[Any], torch.optim.Optimizer],
    params: Any,
    grads: Any,
    dtype: Any,
    *,
    mask: Any = None,
    scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
) -> Any:
    """Final params after ``optimizer.step()`` (then ``scheduler.step()``) per gradient.

    ``make_optimizer`` receives the param groups of :func:`torch_param_groups`.
    """
    leaves, treedef = jax.tree.flatten(params)
    grad_leaves = jax.tree.leaves(grads)
    torch_dtype = TORCH_DTYPES[dtype]
    with torch_default_dtype(dtype):
        tensors = [torch.tensor(x, dtype=torch_dtype, requires_grad=True) for x in leaves]
        optimizer = make_optimizer(torch_param_groups(tensors, mask_leaves(mask, params)))
        lr_scheduler = scheduler(optimizer) if scheduler is not None else None
        for step in range(grad_leaves[0].shape[0]):
            for tensor, g in zip(tensors, grad_leaves):
                tensor.grad = torch.tensor(g[step], dtype=torch_dtype)
            optimizer.step()
            if lr_scheduler is not None:
                lr_scheduler.step()
        return treedef.unflatten([t.detach().numpy().copy() for t in tensors])


def assert_vmapped_grid_matches(final: Callable[[Any, Any], Any], lrs: Any, wds: Any) -> None:
    """``final(lr, λ)`` vmapped over the grid equals each (lr, λ) run with Python floats."""
    grid = jax.jit(jax.vmap(final))(lrs, wds)
    for i in range(len(lrs)):
        expected = jax.jit(final)(float(lrs[i]), float(wds[i]))
        jax.tree.map(
            lambda g, e, i=i: np.testing.assert_allclose(g[i], e, rtol=1e-6, atol=1e-7),
            grid, expected,
        )


def relative_error(actual: Any, expected: Any) -> float:
    """max over leaves of max|actual − expected| / max|expected| (the leaf's scale);
    NaN if either side has a NaN."""
    errors = jax.tree.map(
        lambda a, e: float(np.max(np.abs(a.astype(np.float64) - e.astype(np.float64))))
        / max(float(np.max(np.abs(e))), np.finfo(np.float64).tiny),
        actual,
        expected,
    )
    return float(np.max(jax.tree.leaves(errors)))


# --------------------------------------------------------------------------------------
# The grid: optimizer × option.


def warmup_cosine(count: Any) -> Any:
    """lr factor: linear warmup over 10 steps, then a cosine over 100 (JAX)."""
    t = jnp.asarray(count, jnp.result_type(float))
    return jnp.minimum(1.0, (t + 1) / 10) * 0.5 * (1 + jnp.cos(jnp.pi * t / 100))


def warmup_cosine_torch(epoch: int) -> float:
    """:func:`warmup_cosine` for ``torch.optim.lr_scheduler.LambdaLR``."""
    return min(1.0, (epoch + 1) / 10) * 0.5 * (1 + math.cos(math.pi * epoch / 100))


def weight_decay_ramp(count: Any) -> Any:
    """A weight-decay schedule: 0.3·t/100 (JAX)."""
    return 0.3 * jnp.asarray(count, jnp.result_type(float)) / 100


class TorchWeightDecayRamp:
    """Sets ``weight_decay = 0.3·t/100`` on every decayed group, as a scheduler would."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.groups = [g for g in optimizer.param_groups if g["weight_decay"] != 0]
        self.count = 0
        self._apply()

    def _apply(self) -> None:
        for group in self.groups:
            group["weight_decay"] = 0.3 * self.count / 100

    def step(self) -> None:
        self.count += 1
        self._apply()


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A wdchain/optax schedule and the torch scheduler that does the same."""

    name: str
    wdchain_lr: Callable[[float], Any] | None  # base lr -> lr argument for wdchain
    torch_scheduler: Callable[[torch.optim.Optimizer], Any]
    wdchain_weight_decay: Callable[[Any], Any] | None = None


def exponential(lr: float) -> Callable[[Any], Any]:
    """lr·0.97^t in the default float dtype (``optax.exponential_decay`` returns
    float32 even under x64, 1e-6 off torch's double lr after 50 steps)."""
    return lambda count: lr * 0.97 ** jnp.asarray(count, jnp.result_type(float))


EXPONENTIAL = Schedule(
    "ExponentialLR",
    exponential,
    lambda opt: torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.97),
)
WARMUP_COSINE = Schedule(
    "LambdaLR",
    lambda lr: lambda count: lr * warmup_cosine(count),
    lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine_torch),
)
WEIGHT_DECAY_RAMP = Schedule("wd ramp", None, TorchWeightDecayRamp, weight_decay_ramp)

# Masks, each decaying the leaves with two or more axes (dense.w and conv[0]).
MASK_TREE = {"dense": {"w": True, "b": False}, "conv": [True], "head": (False,)}
MASK_PREFIX = {"dense": {"w": True, "b": False}, "conv": True, "head": False}


def mask_matrices(params: Any) -> Any:
    """A callable mask: decay the leaves with two or more axes."""
    return jax.tree.map(lambda p: np.ndim(p) >= 2, params)


TORCH_OPTIMIZERS = {
    "sgd": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "nadam": torch.optim.NAdam,
    "radam": torch.optim.RAdam,
    "adamax": torch.optim.Adamax,
    "adadelta": torch.optim.Adadelta,
    "asgd": torch.optim.ASGD,
    "adafactor": torch.optim.Adafactor,
    "muon": torch.optim.Muon,
}


def _newton_schulz_in(dtype: Any) -> Callable:
    """torch's ``_zeropower_via_newtonschulz`` with its iteration run in ``dtype``
    instead of bfloat16 (torch has no option for it)."""

    def zeropower(grad: torch.Tensor, ns_coefficients: tuple, ns_steps: int,
                  eps: float) -> torch.Tensor:
        a, b, c = ns_coefficients
        x = grad.to(dtype)
        tall = grad.size(0) > grad.size(1)
        if tall:
            x = x.T
        x = x / x.norm().clamp(min=eps)
        for _ in range(ns_steps):
            gram = x @ x.T
            x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
        return x.T if tall else x

    return zeropower


@contextlib.contextmanager
def torch_newton_schulz_dtype(dtype: Any) -> Iterator[None]:
    """torch's Muon with its Newton–Schulz iteration in ``dtype`` (None: bfloat16, torch's)."""
    import torch.optim._muon as torch_muon

    original = torch_muon._zeropower_via_newtonschulz
    if dtype is not None:
        torch_muon._zeropower_via_newtonschulz = _newton_schulz_in(dtype)
    try:
        yield
    finally:
        torch_muon._zeropower_via_newtonschulz = original


@dataclasses.dataclass(frozen=True)
class Case:
    """One parity case: ``wdchain.<optimizer>(**kwargs)`` vs ``torch.optim.X(**kwargs)``."""

    optimizer: str
    option: str
    kwargs: dict = dataclasses.field(default_factory=dict)
    mask: Any = None
    schedule: Schedule | None = None
    matrices: bool = False  # Muon: 2-D leaves only (make_matrix_params)
    ns_dtype: str | None = None  # Muon's iteration dtype: None = the run's dtype

    @property
    def id(self) -> str:
        return f"{self.optimizer}-{self.option}"

    def wdchain_tx(self, dtype: Any = np.float64) -> optax.GradientTransformation:
        kwargs = {"lr": LR, **self.kwargs}
        if self.schedule is not None and self.schedule.wdchain_lr is not None:
            kwargs["lr"] = self.schedule.wdchain_lr(kwargs["lr"])
        if self.schedule is not None and self.schedule.wdchain_weight_decay is not None:
            kwargs["weight_decay"] = self.schedule.wdchain_weight_decay
        if self.mask is not None:
            kwargs["mask"] = self.mask
        if self.optimizer == "muon":
            kwargs["ns_dtype"] = self.ns_dtype or dtype
        return getattr(wdchain, self.optimizer)(**kwargs)

    def torch_optimizer(self, groups: list[dict]) -> torch.optim.Optimizer:
        kwargs = {"lr": LR, **self.kwargs}
        if self.schedule is not None and self.schedule.wdchain_weight_decay is not None:
            kwargs["weight_decay"] = 1.0  # any non-zero value; the ramp sets it per step
        return TORCH_OPTIMIZERS[self.optimizer](groups, **kwargs)

    def torch_scheduler(self) -> Callable[[torch.optim.Optimizer], Any] | None:
        return None if self.schedule is None else self.schedule.torch_scheduler


def compare(cases: list[Case], dtype: Any, steps: int = STEPS) -> dict[str, float]:
    """Max relative error of wdchain vs torch after ``steps`` steps, per case id.

    The wdchain side of all the cases is compiled once (:func:`run_wdchain`).
    """
    errors = {}
    for matrices in (False, True):
        group = [case for case in cases if case.matrices == matrices]
        if not group:
            continue
        params = make_matrix_params() if matrices else make_params()
        grads = make_grads(params, steps)
        ours = run_wdchain([case.wdchain_tx(dtype) for case in group], params, grads, dtype)
        for case, final in zip(group, ours):
            ns_dtype = getattr(torch, case.ns_dtype) if case.ns_dtype else TORCH_DTYPES[dtype]
            with torch_newton_schulz_dtype(None if case.ns_dtype == "bfloat16" else ns_dtype):
                theirs = run_torch(
                    case.torch_optimizer,
                    params,
                    grads,
                    dtype,
                    mask=case.mask,
                    scheduler=case.torch_scheduler(),
                )
            errors[case.id] = relative_error(final, theirs)
    return errors


WD = 0.1
M = 0.9

PARITY_CASES = [
    # SGD
    Case("sgd", "plain"),
    Case("sgd", "momentum", {"momentum": M}),
    Case("sgd", "dampening", {"momentum": M, "dampening": 0.3}),
    Case("sgd", "nesterov", {"momentum": M, "nesterov": True}),
    Case("sgd", "weight_decay", {"weight_decay": WD}),
    Case("sgd", "momentum+dampening+wd", {"momentum": M, "dampening": 0.3, "weight_decay": WD}),
    Case("sgd", "nesterov+wd+maximize",
         {"momentum": M, "nesterov": True, "weight_decay": WD, "maximize": True}),
    Case("sgd", "maximize", {"maximize": True}),
    Case("sgd", "mask(prefix)+momentum", {"momentum": M, "weight_decay": WD}, mask=MASK_PREFIX),
    Case("sgd", "momentum+ExponentialLR", {"momentum": M}, schedule=EXPONENTIAL),
    # Adagrad
    Case("adagrad", "defaults"),
    Case("adagrad", "lr_decay", {"lr_decay": 0.1}),
    Case("adagrad", "weight_decay", {"weight_decay": WD}),
    Case("adagrad", "initial_accumulator_value", {"initial_accumulator_value": 0.2}),
    Case("adagrad", "eps=1e-3", {"eps": 1e-3}),
    Case("adagrad", "maximize+wd", {"maximize": True, "weight_decay": WD}),
    Case("adagrad", "mask", {"weight_decay": WD}, mask=MASK_TREE),
    Case("adagrad", "lr_decay+LambdaLR", {"lr_decay": 0.1}, schedule=WARMUP_COSINE),
    Case("adagrad", "all",
         {"lr_decay": 0.1, "weight_decay": WD, "initial_accumulator_value": 0.2, "eps": 1e-6}),
    # RMSprop
    Case("rmsprop", "defaults"),
    Case("rmsprop", "alpha=0.9", {"alpha": 0.9}),
    Case("rmsprop", "eps=1e-3", {"eps": 1e-3}),
    Case("rmsprop", "centered", {"centered": True}),
    Case("rmsprop", "momentum", {"momentum": M}),
    Case("rmsprop", "momentum+centered", {"momentum": M, "centered": True}),
    Case("rmsprop", "weight_decay", {"weight_decay": WD}),
    Case("rmsprop", "maximize+wd", {"maximize": True, "weight_decay": WD}),
    Case("rmsprop", "mask", {"weight_decay": WD}, mask=MASK_TREE),
    Case("rmsprop", "momentum+ExponentialLR", {"momentum": M}, schedule=EXPONENTIAL),
    Case("rmsprop", "momentum+centered+wd+LambdaLR",
         {"momentum": M, "centered": True, "weight_decay": WD}, schedule=WARMUP_COSINE),
    # Adam
    Case("adam", "defaults"),
    Case("adam", "betas", {"betas": (0.8, 0.99)}),
    Case("adam", "eps=1e-3", {"eps": 1e-3}),
    Case("adam", "weight_decay(L2)", {"weight_decay": WD}),
    Case("adam", "amsgrad", {"amsgrad": True}),
    Case("adam", "amsgrad+wd", {"amsgrad": True, "weight_decay": WD}),
    Case("adam", "decoupled_weight_decay", {"weight_decay": WD, "decoupled_weight_decay": True}),
    Case("adam", "maximize+wd", {"maximize": True, "weight_decay": WD}),
    Case("adam", "mask", {"weight_decay": WD}, mask=MASK_TREE),
    Case("adam", "LambdaLR", {}, schedule=WARMUP_COSINE),
    Case("adam", "decoupled+amsgrad+ExponentialLR",
         {"weight_decay": WD, "decoupled_weight_decay": True, "amsgrad": True},
         schedule=EXPONENTIAL),
    # AdamW
    Case("adamw", "defaults"),
    Case("adamw", "weight_decay=0", {"weight_decay": 0.0}),
    Case("adamw", "weight_decay", {"weight_decay": WD}),
    Case("adamw", "betas+eps", {"betas": (0.8, 0.99), "eps": 1e-3}),
    Case("adamw", "amsgrad+wd", {"amsgrad": True, "weight_decay": WD}),
    Case("adamw", "maximize+wd", {"maximize": True, "weight_decay": WD}),
    Case("adamw", "mask(callable)", {"weight_decay": WD}, mask=mask_matrices),
    Case("adamw", "wd+ExponentialLR", {"weight_decay": WD}, schedule=EXPONENTIAL),
    Case("adamw", "wd schedule", {}, schedule=WEIGHT_DECAY_RAMP),
    # NAdam
    Case("nadam", "defaults"),
    Case("nadam", "momentum_decay=0.05", {"momentum_decay": 0.05}),
    Case("nadam", "betas+eps", {"betas": (0.8, 0.99), "eps": 1e-3}),
    Case("nadam", "weight_decay(L2)", {"weight_decay": WD}),
    Case("nadam", "decoupled_weight_decay", {"weight_decay": WD, "decoupled_weight_decay": True}),
    Case("nadam", "maximize+wd", {"maximize": True, "weight_decay": WD}),
    Case("nadam", "mask", {"weight_decay": WD}, mask=MASK_TREE),
    Case("nadam", "LambdaLR", {}, schedule=WARMUP_COSINE),
    # RAdam
    Case("radam", "defaults"),
    Case("radam", "eps=1e-3", {"eps": 1e-3}),
    Case("radam", "betas", {"betas": (0.8, 0.99)}),
    Case("radam", "weight_decay(L2)", {"weight_decay": WD}),
    Case("radam", "decoupled_weight_decay", {"weight_decay": WD, "decoupled_weight_decay": True}),
    Case("radam", "maximize+wd", {"maximize": True, "weight_decay": WD}),
    Case("radam", "mask", {"weight_decay": WD, "decoupled_weight_decay": True}, mask=MASK_TREE),
    Case("radam", "ExponentialLR", {}, schedule=EXPONENTIAL),
    # Adamax
    Case("adamax", "defaults"),
    Case("adamax", "betas+eps", {"betas": (0.8, 0.99), "eps": 1e-3}),
    Case("adamax", "weight_decay(L2)", {"weight_decay": WD}),
    Case("adamax", "maximize+wd", {"maximize": True, "weight_decay": WD}),
    Case("adamax", "mask", {"weight_decay": WD}, mask=MASK_TREE),
    Case("adamax", "LambdaLR", {}, schedule=WARMUP_COSINE),
]

MATRIX_MASK = {"a": True, "b": [False], "c": (True,)}

PARITY_CASES += [
    # Adadelta
    Case("adadelta", "defaults", {"lr": 1.0}),
    Case("adadelta", "rho+eps", {"rho": 0.5, "eps": 1e-3}),
    Case("adadelta", "weight_decay(L2)", {"weight_decay": WD}),
    Case("adadelta", "maximize+wd", {"maximize": True, "weight_decay": WD}),
    Case("adadelta", "mask", {"weight_decay": WD}, mask=MASK_TREE),
    Case("adadelta", "LambdaLR", {"rho": 0.95}, schedule=WARMUP_COSINE),
    # ASGD
    Case("asgd", "defaults"),
    Case("asgd", "lambd+alpha", {"lambd": 0.05, "alpha": 0.5}),
    Case("asgd", "t0=10 (averaging)", {"t0": 10.0, "lambd": 1e-3}),
    Case("asgd", "weight_decay(L2)", {"weight_decay": WD, "lambd": 1e-2}),
    Case("asgd", "maximize+wd", {"maximize": True, "weight_decay": WD}),
    Case("asgd", "mask", {"weight_decay": WD, "lambd": 1e-2}, mask=MASK_TREE),
    Case("asgd", "LambdaLR", {"lambd": 0.1, "t0": 5.0}, schedule=WARMUP_COSINE),
    Case("asgd", "ExponentialLR", {"lambd": 0.1}, schedule=EXPONENTIAL),
    # Adafactor
    Case("adafactor", "defaults"),
    Case("adafactor", "beta2_decay", {"beta2_decay": -0.5}),
    Case("adafactor", "eps", {"eps": (1e-3, 1e-2)}),
    Case("adafactor", "d=2", {"d": 2.0}),
    Case("adafactor", "relative step (lr=1)", {"lr": 1.0}),
    Case("adafactor", "weight_decay", {"weight_decay": WD}),
    Case("adafactor", "maximize+wd", {"maximize": True, "weight_decay": WD}),
    Case("adafactor", "mask", {"weight_decay": WD}, mask=MASK_TREE),
    Case("adafactor", "wd+LambdaLR", {"weight_decay": WD}, schedule=WARMUP_COSINE),
    # Muon (2-D leaves; the iteration in the run's dtype: see MUON_BF16_CASES for torch's)
    Case("muon", "defaults", matrices=True),
    Case("muon", "momentum", {"momentum": 0.8}, matrices=True),
    Case("muon", "no nesterov", {"nesterov": False}, matrices=True),
    Case("muon", "ns_coefficients+steps",
         {"ns_coefficients": (2.0, -1.5, 0.5), "ns_steps": 3}, matrices=True),
    Case("muon", "eps", {"eps": 1e-3}, matrices=True),
    Case("muon", "match_rms_adamw", {"adjust_lr_fn": "match_rms_adamw"}, matrices=True),
    Case("muon", "original+wd=0", {"adjust_lr_fn": "original", "weight_decay": 0.0},
         matrices=True),
    Case("muon", "weight_decay", {"weight_decay": 0.5}, matrices=True),
    Case("muon", "mask", {"weight_decay": 0.5}, mask=MATRIX_MASK, matrices=True),
    Case("muon", "ExponentialLR", {}, schedule=EXPONENTIAL, matrices=True),
]

# Muon with torch's own bfloat16 iteration on both sides.
MUON_BF16_CASES = [
    Case("muon", "bf16 defaults", matrices=True, ns_dtype="bfloat16"),
    Case("muon", "bf16 no nesterov+match_rms_adamw",
         {"nesterov": False, "adjust_lr_fn": "match_rms_adamw"}, matrices=True,
         ns_dtype="bfloat16"),
]

OPTIMIZERS = list(TORCH_OPTIMIZERS)


def cases_of(optimizer: str) -> list[Case]:
    """The grid's cases for one optimizer."""
    return [case for case in PARITY_CASES if case.optimizer == optimizer]
