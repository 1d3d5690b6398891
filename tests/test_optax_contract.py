"""The checks optax runs on every optimizer of its own, run on every wdchain optimizer.

A port (own code) of the properties optax's tests assert, in
``optax/_src/alias_test.py``, ``optax/schedules/_inject_test.py``,
``optax/tree_utils/_state_utils_test.py``, ``optax/_src/sharding_test.py``,
``optax/_src/float64_test.py`` and ``optax/transforms/_accumulation_test.py``, over
every public optimizer: each torch-style alias and one ``build`` arm per
preconditioner (the placements rotate over the arms). Each test names the optax test
it ports. Deliberate departures: complex parameters are refused by wdchain (a
``TypeError``, see the README), so optax's complex64 cases are replaced by a check
that they are refused; Muon orthogonalises matrices only, so its problems are the
same ones laid out as 1×n matrices.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import wdchain


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """``factory(*args, **kwargs)``, with what the tests need to know about it."""

    id: str
    factory: Callable[..., optax.GradientTransformation]
    kwargs: dict[str, Any]
    args: tuple[Any, ...] = ()
    matrices_only: bool = False  # Muon: 2-D leaves only
    static: tuple[str, ...] = ()  # arguments optax.inject_hyperparams must not inject
    factored: bool = False  # Adafactor: some statistics are not shaped like the params

    def make(self) -> optax.GradientTransformation:
        return self.factory(*self.args, **self.kwargs)

    def shaped(self, x: jax.Array) -> jax.Array:
        """A 1-D problem vector as the optimizer takes it (a 1×n matrix for Muon)."""
        return x.reshape(1, -1) if self.matrices_only else x


_MUON_STATIC = ("ns_steps", "ns_dtype")  # an int and a dtype: not hyperparameters
ALIASES = [
    Optimizer("sgd-momentum", wdchain.sgd, {"lr": 1e-3, "momentum": 0.9}),
    Optimizer("sgd-nesterov", wdchain.sgd, {"lr": 1e-3, "momentum": 0.9, "nesterov": True}),
    Optimizer("adagrad", wdchain.adagrad, {"lr": 1.0}),
    Optimizer("rmsprop", wdchain.rmsprop, {"lr": 5e-3}),
    Optimizer("rmsprop-momentum", wdchain.rmsprop, {"lr": 5e-3, "momentum": 0.9}),
    Optimizer("adam", wdchain.adam, {"lr": 0.1}),
    Optimizer("adam-amsgrad", wdchain.adam, {"lr": 0.1, "amsgrad": True}),
    Optimizer("adamw", wdchain.adamw, {"lr": 0.1, "weight_decay": 1e-4}),
    Optimizer("nadam", wdchain.nadam, {"lr": 1e-2}),
    Optimizer("radam", wdchain.radam, {"lr": 5e-3}),
    Optimizer("adamax", wdchain.adamax, {"lr": 0.1}),
]
if hasattr(wdchain, "adadelta"):  # issue 12's aliases, where present
    ALIASES += [
        Optimizer("adadelta", wdchain.adadelta, {"lr": 0.1}),
        Optimizer("adafactor", wdchain.adafactor, {"lr": 5e-3}, factored=True),
        Optimizer("asgd", wdchain.asgd, {"lr": 1e-3}),
        Optimizer("muon", wdchain.muon, {"lr": 1e-2, "weight_decay": 1e-4},
                  matrices_only=True, static=_MUON_STATIC),
    ]

ARM_LARS_LR = 1.0  # LARS steps lr·c·‖θ‖
# One build arm per preconditioner: (lr, placement); λ = 1e-4 (1e-5 after the lr step).
_ARMS = {
    "sgd": (1e-3, "l2"), "momentum": (1e-3, "decoupled"), "adagrad": (1.0, "independent"),
    "rmsprop": (5e-3, "constant"), "adam": (0.1, "none"), "nadam": (1e-2, "l2"),
    "radam": (5e-3, "decoupled"), "adamax": (0.1, "independent"), "lion": (1e-2, "decoupled"),
    "lamb": (1e-3, "constant"), "adadelta": (0.1, "none"), "asgd": (1e-3, "l2"),
    "adafactor": (5e-3, "decoupled"), "muon": (1e-2, "independent"),
    "adopt": (1e-2, "l2"), "ademamix": (1e-2, "decoupled"), "lars": (ARM_LARS_LR, "decoupled"),
    "adan": (1e-2, "independent"), "schedule_free_adam": (1e-2, "constant"),
}


def _arm(preconditioner: str) -> Optimizer:
    lr, decay = _ARMS[preconditioner]
    weight_decay = 1e-5 if decay in ("independent", "constant") else 1e-4
    return Optimizer(
        f"build-{preconditioner}-{decay}", wdchain.build,
        {"decay": decay, "lr": lr, "weight_decay": weight_decay}, args=(preconditioner,),
        matrices_only=preconditioner == "muon", factored=preconditioner == "adafactor",
    )


ARMS = [_arm(p) for p in wdchain.PRECONDITIONERS if p in _ARMS]
OPTIMIZERS = ALIASES + ARMS
every_optimizer = pytest.mark.parametrize("opt", OPTIMIZERS, ids=lambda o: o.id)


def test_every_public_optimizer_is_under_test():
    """A new alias or preconditioner must join the tables above."""
    def is_alias(obj: Any) -> bool:  # an optimizer with torch's lr first and a decay
        if not inspect.isfunction(obj):
            return False
        signature = inspect.signature(obj)
        return ("GradientTransformation" in str(signature.return_annotation)
                and list(signature.parameters)[:1] == ["lr"]
                and "weight_decay" in signature.parameters)

    aliases = {name for name in wdchain.__all__ if is_alias(getattr(wdchain, name))}
    assert {o.factory.__name__ for o in ALIASES} == aliases
    assert set(_ARMS) == set(wdchain.PRECONDITIONERS)
    assert {o.kwargs["decay"] for o in ARMS} == set(wdchain.PLACEMENTS)


# --------------------------------------------------------------------------------------
# alias_test.py


def _parabola(opt: Optimizer) -> tuple[jax.Array, jax.Array, Callable[[jax.Array], Any]]:
    start = opt.shaped(jnp.array([-1.0, 10.0, 1.0]))
    final = opt.shaped(jnp.array([1.0, -1.0, 1.0]))
    return start, final, lambda p: jnp.sum((p - final) ** 2)


def _rosenbrock(opt: Optimizer) -> tuple[jax.Array, jax.Array, Callable[[jax.Array], Any]]:
    a, b = 1.0, 100.0

    def f(p: jax.Array) -> Any:
        x, y = p.reshape(-1)
        return (a - x) ** 2 + b * (y - x**2) ** 2

    return opt.shaped(jnp.zeros(2)), opt.shaped(jnp.array([a, a**2])), f


STEPS = 10_000  # as optax


@every_optimizer
def test_optimization_of_a_parabola_and_rosenbrock_without_recompiling(opt):
    """alias_test.test_optimization: tree_map_params works, 10,000 steps reach the
    minimum to 3e-2, and the second jitted update does not compile again."""
    tx = opt.make()
    targets = (_parabola(opt), _rosenbrock(opt))
    traces = []

    def step(carry: Any, objective: Callable[[jax.Array], Any]) -> Any:
        traces.append(None)  # once per trace
        p, s = carry
        updates, s = tx.update(jax.grad(objective)(p), s, p)
        return optax.apply_updates(p, updates), s

    starts = []
    for params, _, _objective in targets:
        state = tx.init(params)
        mapped = optax.tree.map_params(tx, lambda v: v, state)  # a no-op map
        assert jax.tree.structure(mapped) == jax.tree.structure(state)
        starts.append((params, mapped))
    jitted = jax.jit(functools.partial(step, objective=targets[0][2]))
    starts[0] = jitted(jitted(starts[0]))
    assert len(traces) == 1, "the optimizer recompiles on the second update"

    def solve(carries):
        return [jax.lax.scan(lambda c, _, f=f: (step(c, f), None), c, None,
                             length=STEPS - 2)[0][0]
                for c, (_, _, f) in zip(carries, targets)]

    for found, (_, final, objective) in zip(jax.jit(solve)(starts), targets):
        np.testing.assert_allclose(found, final, rtol=3e-2, atol=3e-2,
                                   err_msg=f"{opt.id} on {objective.__qualname__}")


@every_optimizer
def test_complex_parameters_are_refused_not_skipped(opt):
    """alias_test runs complex64 problems; wdchain refuses complex leaves (README)."""
    with pytest.raises(TypeError, match="complex"):
        opt.make().init(opt.shaped(jnp.ones(2, jnp.complex64)))


@every_optimizer
def test_update_accepts_extra_args(opt):
    """alias_test.test_optimizers_accept_extra_args (no with_extra_args_support)."""
    tx = opt.make()
    params, _, objective = _rosenbrock(opt)

    def step(p, s):
        updates, s = tx.update(jax.grad(objective)(p), s, p,
                               unexpected_extra_args_your_optimizer_doesnt_expect=1)
        return optax.apply_updates(p, updates), s

    carry = (params, jax.eval_shape(tx.init, params))
    for _ in range(2):
        carry = jax.eval_shape(step, *carry)  # traced as jit traces it
    assert carry[0].shape == params.shape


INJECTORS = {"optax": optax.inject_hyperparams, "wdchain": wdchain.inject_hyperparams}


@every_optimizer
def test_inject_hyperparams_gives_the_plain_updates_and_state(opt):
    """alias_test.test_optimizers_can_be_wrapped_in_inject_hyperparams, with optax's and
    wdchain's injector: equal updates (rtol 1e-3) and inner states (1e-4), the state's
    structure included."""
    tx = opt.make()
    injected = [inject(opt.factory, static_args=opt.static)(*opt.args, **opt.kwargs)
                for inject in INJECTORS.values()]
    params = [-jnp.ones((2, 3)), jnp.ones((5, 2))]
    grads = [jnp.ones((2, 3)), -jnp.ones((5, 2))]

    @jax.jit
    def run(grads, params):  # init traced too: injected hyperparameters are tracers there
        return [t.update(grads, t.init(params), params) for t in (tx, *injected)]

    (updates, state), *results = run(grads, params)
    for (got, got_state), wrapped in zip(results, injected):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3), got, updates)
        assert jax.tree.structure(got_state.inner_state) == jax.tree.structure(state)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4),
                     got_state.inner_state, state)
        assert jax.tree.structure(jax.eval_shape(wrapped.init, params)) == (
            jax.tree.structure(got_state))


@pytest.mark.parametrize("params_dtype", [jnp.bfloat16, jnp.float32])
@pytest.mark.parametrize("state_dtype", [jnp.bfloat16, jnp.float32, None])
@pytest.mark.parametrize("make", [
    lambda **kw: wdchain.adam(0.1, **kw), lambda **kw: wdchain.adamw(0.1, **kw),
    lambda **kw: wdchain.build("adam", lr=0.1, **kw),
], ids=["adam", "adamw", "build-adam"])
def test_explicit_moment_dtype(make, state_dtype, params_dtype):
    """alias_test.test_explicit_dtype: mu (and nu) in the dtype asked for, else the
    params' dtype."""
    state = make(mu_dtype=state_dtype, nu_dtype=state_dtype).init(jnp.zeros(2, params_dtype))
    for moment in ("mu", "nu"):
        assert optax.tree.get(state, moment).dtype == (state_dtype or params_dtype)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
@every_optimizer
def test_updates_keep_the_gradients_dtype(opt, dtype):
    """alias_test.test_preserve_dtype."""
    tx = opt.make()
    params = opt.shaped(jnp.array([1.0, 2.0], dtype))
    grads = jax.grad(lambda x: jnp.sum(x**2))(params)
    updates, _ = jax.eval_shape(tx.update, grads, jax.eval_shape(tx.init, params), params)
    assert updates.dtype == grads.dtype == dtype  # what jit compiles (traced, not run)


@every_optimizer
def test_state_is_shape_and_dtype_stable_under_jit_and_cond(opt):
    """alias_test.test_state_shape_dtype_shard_stability, for float16, bfloat16,
    float32 and float64: an update and its state can be the branches of lax.cond."""
    for dtype in (jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64):
        with jax.enable_x64(dtype == jnp.float64):
            tx = opt.make()
            params, _, objective = _parabola(opt)
            params = params.astype(dtype)

            def step(p, s, objective=objective, tx=tx):
                g = jax.grad(objective)(p)
                pick = jax.random.randint(jax.random.key(0), (), 0, 2) == 0
                updates, s = jax.lax.cond(pick, lambda: tx.update(g, s, p), lambda: (p, s))
                return optax.apply_updates(p, updates), s

            # Traced as jit traces it (lax.cond refuses branches of other types).
            state = jax.eval_shape(tx.init, params)
            for _ in range(2):
                params, new_state = jax.eval_shape(step, params, state)
                assert params.dtype == dtype
                state = jax.eval_shape(
                    lambda a, b: jax.lax.cond(True, lambda: a, lambda: b), state, new_state)


@every_optimizer
def test_multisteps_first_updates_are_zero_and_keep_the_dtype(opt):
    """alias_test.test_gradient_accumulation."""
    tx = optax.MultiSteps(opt.make(), every_k_schedule=4)
    for dtype in (jnp.bfloat16, jnp.float32):
        params = opt.shaped(jnp.array([1.0, 2.0], dtype))
        grads = jax.grad(lambda x: jnp.sum(x**2))(params)
        traced, _ = jax.eval_shape(tx.update, grads, jax.eval_shape(tx.init, params), params)
        assert traced.dtype == dtype
    updates, _ = jax.jit(lambda g, p: tx.update(g, tx.init(p), p))(grads, params)
    np.testing.assert_array_equal(updates, jnp.zeros_like(grads))


# --------------------------------------------------------------------------------------
# _inject_test.py


@every_optimizer
def test_injected_lr_starts_at_count_zero_and_can_be_overridden(opt):
    """_inject_test: test_inject_hyperparams_starts_with_step_count_zero,
    test_hyperparams_state, test_overriding_hyperparam; optax's and wdchain's injector."""
    lr = opt.kwargs["lr"]
    # ADOPT's first update only fills its second moment: it moves from the second on.
    k = 1 if opt.args == ("adopt",) else 0
    kwargs = {**opt.kwargs, "lr": lambda count: lr * (count == k), "weight_decay": 0.0}
    if "decay" in kwargs:
        kwargs["decay"] = "l2"  # λ = 0 in every slot: the update is lr_t·(...)
    pairs = [(inject(opt.factory, static_args=opt.static)(*opt.args, **kwargs),
              inject(opt.factory, static_args=opt.static)(*opt.args, **{**kwargs, "lr": lr}))
             for inject in INJECTORS.values()]
    params = opt.shaped(jnp.array([1.0, -2.0]))
    grads = opt.shaped(jnp.array([0.5, 0.25]))
    states = [(tx.init(params), constant.init(params)) for tx, constant in pairs]
    for state, _ in states:
        assert int(state.count) == 0 and float(state.hyperparams["lr"]) == pytest.approx(
            lr * (k == 0))

    @jax.jit
    def run(states):
        out = []
        for (tx, constant), (state, constant_state) in zip(pairs, states):
            for _ in range(k):
                _, state = tx.update(grads, state, params)
            first, state = tx.update(grads, state, params)
            second, _ = tx.update(grads, state, params)
            constant_state.hyperparams["lr"] = jnp.zeros_like(constant_state.hyperparams["lr"])
            overridden, _ = constant.update(grads, constant_state, params)
            out.append((first, second, overridden))
        return out

    # Schedule-free's update also averages (y moves toward x once lr is 0): only the
    # first update is checked for it.
    averages = opt.args == ("schedule_free_adam",)
    for first, second, overridden in run(states):
        assert bool(jnp.any(first != 0))
        assert averages or not bool(jnp.any(second != 0))  # lr(k + 1) = 0
        assert not bool(jnp.any(overridden != 0))


# --------------------------------------------------------------------------------------
# _state_utils_test.py


@every_optimizer
def test_tree_map_params_reaches_the_statistics_and_leaves_the_rest(opt):
    """_state_utils_test: test_map_params_to_none, test_map_non_params_to_none,
    test_inject_hparams (the inner state is mapped through inject_hyperparams)."""
    tx = opt.make()
    params = {"a": opt.shaped(jnp.arange(3.0) + 1), "b": jnp.ones((2, 2))}
    state = jax.eval_shape(lambda p: tx.update(p, tx.init(p), p)[1], params)
    to_none = optax.tree.map_params(tx, lambda _: None, state)
    kept = jax.tree.leaves(to_none)
    if not opt.factored:  # every statistic is shaped like the params: only scalars stay
        assert all(leaf.shape == () for leaf in kept), kept
    marked = optax.tree.map_params(tx, lambda _: "param", state,
                                   transform_non_params=lambda _: "other")
    labels = jax.tree.leaves(marked)
    assert "other" in labels  # the step counts
    assert labels.count("param") == len(jax.tree.leaves(state)) - len(kept)
    injected = wdchain.inject_hyperparams(opt.factory, static_args=opt.static)(
        *opt.args, **opt.kwargs)
    inner = jax.eval_shape(injected.init, params)
    relabelled = optax.tree.map_params(injected, lambda _: "param", inner,
                                       transform_non_params=lambda _: "other")
    assert relabelled.hyperparams["lr"] == "other"
    assert jax.tree.leaves(relabelled.inner_state).count("param") == labels.count("param")


# --------------------------------------------------------------------------------------
# sharding_test.py


@every_optimizer
def test_init_with_abstract_input(opt):
    """sharding_test.test_init_with_abstract_input."""
    shape = (8, 4) if opt.matrices_only else (2, 4, 8)
    state = opt.make().init(jax.ShapeDtypeStruct(shape, jnp.float32))
    assert jax.tree.leaves(state)


_SHARDING_SCRIPT = """
import json, sys
import jax, jax.numpy as jnp
sys.path.insert(0, {tests!r})
import test_optax_contract as contract

mesh = jax.make_mesh((8,), ("x",), axis_types=(jax.sharding.AxisType.Explicit,))
sharding = jax.sharding.NamedSharding(mesh, jax.P(None, "x"))
failures = {{}}


def types(tree):  # e.g. float16[4,8@x]: shape, dtype and sharding
    return jax.tree.map(lambda x: str(jax.typeof(x)), tree)


with jax.set_mesh(mesh):
    params = jnp.zeros((4, 8), dtype=jnp.float16, out_sharding=sharding)
    for opt in contract.OPTIMIZERS:
        tx = opt.make()
        try:
            state0 = tx.init(params)
            _, state1 = tx.update(params, state0, params)
            assert types(state0) == types(state1), "init and update differ"
            # jit's types, traced (the sharding is part of the type): not compiled.
            assert types(jax.eval_shape(tx.init, params)) == types(state0), "jit changes init"
            _, state3 = jax.eval_shape(tx.update, params, state0, params)
            assert types(state3) == types(state1), "jit changes update"
        except Exception as error:  # reported by the test, with the optimizer's id
            failures[opt.id] = f"{{type(error).__name__}}: {{error}}"[:300]
print(json.dumps({{"tested": len(contract.OPTIMIZERS), "failures": failures}}))
"""


@pytest.fixture(scope="module")
def sharding_report() -> dict[str, Any]:
    """The sharding checks of every optimizer, on 8 simulated devices with explicit
    sharding (a subprocess: the device count is fixed when JAX starts)."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
           "JAX_PLATFORMS": "cpu"}
    script = _SHARDING_SCRIPT.format(tests=os.path.dirname(__file__))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["tested"] == len(OPTIMIZERS)
    return report["failures"]


# Whole-leaf norms are jnp.sqrt(jnp.sum(x * x)) (explicit sharding refuses to flatten a
# sharded leaf), so LAMB passes; Adafactor's factored state is made at init with the type
# of the means the update stores in it. Still open under explicit sharding: Muon's
# Newton–Schulz matmuls contract a sharded dimension (they need an out_sharding).
_OPEN = {"muon": "Newton–Schulz contracts a sharded dimension (needs out_sharding)"}
_SHARDING_CASES = [
    pytest.param(o, id=o.id, marks=[pytest.mark.xfail(reason=reason)
                                    for name, reason in _OPEN.items() if name in o.id])
    for o in OPTIMIZERS
]


@pytest.mark.slow
@pytest.mark.parametrize("opt", _SHARDING_CASES)
def test_state_sharding_types_match_between_init_update_and_jit(opt, sharding_report):
    """sharding_test.test_state_sharding_type_init_match_update and
    test_state_sharding_type_preserved_with_jit."""
    assert opt.id not in sharding_report, sharding_report.get(opt.id)


# --------------------------------------------------------------------------------------
# float64_test.py


@every_optimizer
def test_mixed_float32_and_float64_leaves_keep_their_dtypes(opt):
    """float64_test.test_mixed_dtype_input_outputs."""
    with jax.enable_x64(True):
        tx = opt.make()
        params = (opt.shaped(jnp.array([1.0, 2.0], jnp.float32)),
                  opt.shaped(jnp.array([3.0, 4.0], jnp.float64)))
        grads = (opt.shaped(jnp.array([10.0, 21.0], jnp.float32)),
                 opt.shaped(jnp.array([33.0, 42.0], jnp.float64)))
        state = jax.eval_shape(tx.init, params)  # traced as jit traces it
        updates, new_state = jax.eval_shape(tx.update, grads, state, params)
        dtypes = functools.partial(jax.tree.map, lambda x: x.dtype)
        assert dtypes(new_state) == dtypes(state)
        assert dtypes(jax.eval_shape(optax.apply_updates, params, updates)) == dtypes(params)


# --------------------------------------------------------------------------------------
# _accumulation_test.py


def _mlp_params(dtype: Any = jnp.float32) -> dict[str, Any]:
    """A 3→4→1 MLP's parameters (optax's test uses a flax.linen one)."""
    k1, k2 = jax.random.split(jax.random.key(0))
    return {"dense_0": {"kernel": (jax.random.normal(k1, (3, 4)) / 2).astype(dtype),
                        "bias": jnp.zeros(4, dtype)},
            "dense_1": {"kernel": (jax.random.normal(k2, (4, 1)) / 2).astype(dtype),
                        "bias": jnp.zeros(1, dtype)}}


def _mlp_loss(params: Any, x: jax.Array) -> jax.Array:
    hidden = jnp.tanh(x @ params["dense_0"]["kernel"] + params["dense_0"]["bias"])
    y = hidden @ params["dense_1"]["kernel"] + params["dense_1"]["bias"]
    return jnp.mean((y - 1.0) ** 2).astype(jnp.float32)


@pytest.mark.parametrize("name", ["adamw", "sgd", "build-adam-none"])
def test_multisteps_updates_every_k_steps_and_the_loss_falls(name):
    """_accumulation_test.test_multi_steps, with a wdchain optimizer inside."""
    k = 4
    inner = {"adamw": wdchain.adamw(1e-2), "sgd": wdchain.sgd(0.01, momentum=0.9),
             "build-adam-none": wdchain.build("adam", decay="none", lr=1e-2)}[name]
    tx = optax.MultiSteps(inner, k)
    data = jnp.ones((8, 3))
    params = _mlp_params()
    apply = jax.jit(lambda p: _mlp_loss(p, data))

    @jax.jit
    def step(state, params):
        return tx.update(jax.grad(apply)(params), state, params)

    state, previous = tx.init(params), apply(params)
    for i in range(3 * k):
        updates, state = step(state, params)
        new_params = optax.apply_updates(params, updates)
        if i % k < k - 1:
            jax.tree.map(np.testing.assert_array_equal, new_params, params)
            assert not bool(tx.has_updated(state))
        else:
            assert float(apply(new_params)) < float(previous)
            assert bool(tx.has_updated(state))
            previous = apply(new_params)
        params = new_params
    assert int(wdchain.step_count(state)) == 3


def test_multisteps_scan_keeps_the_accumulator_dtype():
    """_accumulation_test.test_multi_steps_scan_dtype_stability."""
    tx = optax.MultiSteps(wdchain.adamw(1e-3), 2, accumulator_dtype=jnp.float32)
    params = {"a": jnp.zeros([], jnp.bfloat16)}

    def body(state, _):
        updates, state = tx.update({"a": jnp.ones([], jnp.bfloat16)}, state, params)
        return state, updates

    final, _ = jax.lax.scan(body, tx.init(params), jnp.arange(4))
    assert final.acc_grads["a"].dtype == jnp.float32


def test_multisteps_skips_non_finite_micro_batches():
    """_accumulation_test.test_multi_steps_skip_not_finite, with wdchain.sgd."""
    tx = optax.MultiSteps(wdchain.sgd(1.0), 2, should_skip_update_fn=optax.skip_not_finite)
    update = jax.jit(tx.update)
    params = {"a": jnp.zeros([])}
    state = jax.jit(tx.init)(params)
    for grad, mini_step in ((1.0, 1), (1.0, 0), (float("inf"), 0), (float("nan"), 0),
                            (1.0, 1), (1.0, 0)):
        updates, state = update({"a": jnp.asarray(grad)}, state, params)
        params = optax.apply_updates(params, updates)
        assert int(state.mini_step) == mini_step
    np.testing.assert_array_equal(params["a"], -2.0)
    assert int(wdchain.step_count(state)) == 2


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_multisteps_with_mixed_precision_matches_the_inner_dtypes(name):
    """_accumulation_test.test_multi_steps_mixed_precision."""
    k = 2
    make = {"adam": lambda: wdchain.adam(1e-3), "adamw": lambda: wdchain.adamw(1e-3),
            "sgd": lambda: wdchain.sgd(1e-2, momentum=0.9),
            "rmsprop": lambda: wdchain.rmsprop(1e-3)}[name]
    floats = (jnp.float32, jnp.float16, jnp.bfloat16)
    for update_dtype in floats:
        for param_dtype in floats:
            data = jnp.ones((8, 3), param_dtype)
            params = jax.eval_shape(functools.partial(_mlp_params, param_dtype))
            tx, multi = make(), optax.MultiSteps(make(), k)
            state = jax.eval_shape(tx.init, params)
            multi_state = jax.eval_shape(multi.init, params)

            def grads(p, data=data, update_dtype=update_dtype):
                g = jax.grad(_mlp_loss)(p, data)
                return jax.tree.map(lambda x: x.astype(update_dtype), g)

            dtypes = functools.partial(jax.tree.map, lambda x: x.dtype)
            for _ in range(k + 1):  # traced, as jit traces it: dtypes only
                g = jax.eval_shape(grads, params)
                updates, state = jax.eval_shape(tx.update, g, state, params)
                multi_updates, multi_state = jax.eval_shape(multi.update, g, multi_state, params)
                assert dtypes(updates) == dtypes(multi_updates)
                new_params = jax.eval_shape(optax.apply_updates, params, multi_updates)
                assert dtypes(new_params) == dtypes(params)
                params = new_params
