"""Bad input gets a clear error: one table row per validation rule.

``CONSTRUCTION`` lists bad hyperparameters given to a public factory; ``AT_UPDATE``
lists trees that do not fit together (grads, params, state, mask). Each row gives the
error type and a regex of its message: the message names the function and the
argument (or the first path that differs) and shows the value and the valid range.
Count the rows with ``pytest tests/test_bad_input.py --collect-only -q``.

torch lets some of these through (NaN learning rates for SGD, ``alpha > 1`` for
RMSprop, ``momentum_decay=inf`` for NAdam, infinite weight decay...): wdchain refuses
them, and the rows say so.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import wdchain

NAN, INF = float("nan"), float("inf")


def row(id: str, factory: str, kwargs: dict[str, Any], error: Any, match: str, *args: Any):
    """``factory(*args, **kwargs)`` raises ``error`` with a message matching ``match``."""
    return pytest.param(factory, args, kwargs, error, match, id=id)


NONNEG = r"must be in \[0, inf\)"
FINITE_NONNEG = r"must be a finite number in \[0, inf\)"
BETA = r"must be in \[0, 1\)"
FLAG = r"must be True or False"

CONSTRUCTION = [
    # SGD
    row("sgd-lr-negative", "sgd", dict(lr=-0.1), ValueError, rf"sgd: lr {NONNEG}, got -0\.1"),
    row("sgd-lr-nan(torch accepts)", "sgd", dict(lr=NAN), ValueError,
        rf"sgd: lr {FINITE_NONNEG}, got nan"),
    row("sgd-lr-inf", "sgd", dict(lr=INF), ValueError, rf"sgd: lr {FINITE_NONNEG}, got inf"),
    row("sgd-lr-None", "sgd", dict(lr=None), ValueError,
        r"sgd: lr must be a number, a JAX scalar or a schedule, got None"),
    row("sgd-lr-bool", "sgd", dict(lr=True), ValueError,
        r"sgd: lr must be a number, a JAX scalar or a schedule, got True"),
    row("sgd-lr-vector", "sgd", dict(lr=jnp.ones(2)), ValueError,
        r"sgd: lr must be a scalar, got an array of shape \(2,\)"),
    row("sgd-lr-negative-numpy_0d", "sgd", dict(lr=np.array(-1.0)), ValueError,
        rf"sgd: lr {NONNEG}, got array\(-1\.\)"),
    row("sgd-momentum-negative", "sgd", dict(momentum=-0.5), ValueError,
        rf"sgd: momentum {NONNEG}, got -0\.5"),
    row("sgd-momentum-nan", "sgd", dict(momentum=NAN), ValueError,
        rf"sgd: momentum {FINITE_NONNEG}, got nan"),
    row("sgd-momentum-inf(torch accepts)", "sgd", dict(momentum=INF), ValueError,
        rf"sgd: momentum {FINITE_NONNEG}, got inf"),
    row("sgd-dampening-inf(torch accepts)", "sgd", dict(momentum=0.9, dampening=INF), ValueError,
        r"sgd: dampening must be a finite number in \[-inf, inf\), got inf"),
    row("sgd-weight_decay-negative", "sgd", dict(weight_decay=-1e-4), ValueError,
        rf"sgd: weight_decay {NONNEG}, got -0\.0001"),
    row("sgd-weight_decay-inf(torch accepts)", "sgd", dict(weight_decay=INF), ValueError,
        rf"sgd: weight_decay {FINITE_NONNEG}, got inf"),
    row("sgd-nesterov-zero_momentum", "sgd", dict(nesterov=True), ValueError,
        r"sgd: nesterov=True needs momentum > 0 and dampening = 0, got momentum=0\.0, "
        r"dampening=0\.0"),
    row("sgd-nesterov-dampening", "sgd", dict(momentum=0.9, dampening=0.1, nesterov=True),
        ValueError, r"sgd: nesterov=True needs .*got momentum=0\.9, dampening=0\.1"),
    row("sgd-nesterov-not_bool", "sgd", dict(momentum=0.9, nesterov=1), ValueError,
        rf"sgd: nesterov {FLAG}, got 1"),
    row("sgd-maximize-not_bool", "sgd", dict(maximize="yes"), ValueError,
        rf"sgd: maximize {FLAG}, got 'yes'"),
    # Adagrad
    row("adagrad-lr_decay-negative", "adagrad", dict(lr_decay=-0.1), ValueError,
        rf"adagrad: lr_decay {NONNEG}, got -0\.1"),
    row("adagrad-lr_decay-inf(torch accepts)", "adagrad", dict(lr_decay=INF), ValueError,
        rf"adagrad: lr_decay {FINITE_NONNEG}, got inf"),
    row("adagrad-initial_accumulator_value-negative", "adagrad",
        dict(initial_accumulator_value=-1), ValueError,
        rf"adagrad: initial_accumulator_value {NONNEG}, got -1"),
    row("adagrad-eps-negative", "adagrad", dict(eps=-1e-10), ValueError,
        rf"adagrad: eps {NONNEG}, got -1e-10"),
    row("adagrad-weight_decay-nan", "adagrad", dict(weight_decay=NAN), ValueError,
        rf"adagrad: weight_decay {FINITE_NONNEG}, got nan"),
    # RMSprop
    row("rmsprop-alpha-above_1(torch accepts)", "rmsprop", dict(alpha=1.5), ValueError,
        r"rmsprop: alpha must be in \[0, 1\], got 1\.5"),
    row("rmsprop-alpha-negative", "rmsprop", dict(alpha=-0.1), ValueError,
        r"rmsprop: alpha must be in \[0, 1\], got -0\.1"),
    row("rmsprop-eps-nan", "rmsprop", dict(eps=NAN), ValueError,
        rf"rmsprop: eps {FINITE_NONNEG}, got nan"),
    row("rmsprop-momentum-negative", "rmsprop", dict(momentum=-0.9), ValueError,
        rf"rmsprop: momentum {NONNEG}, got -0\.9"),
    row("rmsprop-centered-not_bool", "rmsprop", dict(centered=1), ValueError,
        rf"centered {FLAG}, got 1"),
    row("rmsprop-weight_decay-vector", "rmsprop", dict(weight_decay=np.ones(3)), ValueError,
        r"rmsprop: weight_decay must be a scalar, got an array of shape \(3,\)"),
    # Adam
    row("adam-betas0-is_1", "adam", dict(betas=(1.0, 0.999)), ValueError,
        rf"adam: betas\[0\] {BETA}, got 1\.0"),
    row("adam-betas0-negative", "adam", dict(betas=(-0.1, 0.999)), ValueError,
        rf"adam: betas\[0\] {BETA}, got -0\.1"),
    row("adam-betas1-is_1", "adam", dict(betas=(0.9, 1.0)), ValueError,
        rf"adam: betas\[1\] {BETA}, got 1\.0"),
    row("adam-betas1-nan", "adam", dict(betas=(0.9, NAN)), ValueError,
        r"adam: betas\[1\] must be a finite number in \[0, 1\), got nan"),
    row("adam-betas-scalar", "adam", dict(betas=0.9), ValueError,
        r"adam: betas must be a pair \(beta1, beta2\), each in \[0, 1\), got 0\.9"),
    row("adam-betas-triple", "adam", dict(betas=(0.9, 0.99, 0.9)), ValueError,
        r"adam: betas must be a pair .*got \(0\.9, 0\.99, 0\.9\)"),
    row("adam-eps-negative", "adam", dict(eps=-1e-8), ValueError,
        rf"adam: eps {NONNEG}, got -1e-08"),
    row("adam-lr-inf", "adam", dict(lr=INF), ValueError, rf"adam: lr {FINITE_NONNEG}, got inf"),
    row("adam-lr-nan-numpy_scalar", "adam", dict(lr=np.float32(NAN)), ValueError,
        rf"adam: lr {FINITE_NONNEG}, got np\.float32\(nan\)"),
    row("adam-lr-nan-jax_scalar", "adam", dict(lr=jnp.array(NAN)), ValueError,
        rf"adam: lr {FINITE_NONNEG}, got Array\(nan"),
    row("adam-weight_decay-negative", "adam", dict(weight_decay=-0.01), ValueError,
        rf"adam: weight_decay {NONNEG}, got -0\.01"),
    row("adam-amsgrad-not_bool", "adam", dict(amsgrad="no"), ValueError,
        rf"amsgrad {FLAG}, got 'no'"),
    row("adam-decoupled_weight_decay-not_bool", "adam", dict(decoupled_weight_decay=0),
        ValueError, rf"adam: decoupled_weight_decay {FLAG}, got 0"),
    # AdamW
    row("adamw-weight_decay-negative", "adamw", dict(weight_decay=-1e-2), ValueError,
        rf"adamw: weight_decay {NONNEG}, got -0\.01"),
    row("adamw-weight_decay-nan", "adamw", dict(weight_decay=NAN), ValueError,
        rf"adamw: weight_decay {FINITE_NONNEG}, got nan"),
    row("adamw-decoupled_weight_decay-keyword(as torch)", "adamw",
        dict(decoupled_weight_decay=True), TypeError,
        r"unexpected keyword argument 'decoupled_weight_decay'"),
    row("adamw-mask-int_leaf", "adamw", dict(mask={"w": 1}), ValueError,
        r"adamw: mask leaves must be booleans \(True = decay this leaf\), got 1"),
    row("adamw-mask-float_array_leaf", "adamw", dict(mask={"w": jnp.ones(2)}), ValueError,
        r"adamw: mask leaves must be booleans .*got Array\(\[1\., 1\.\]"),
    row("adamw-mask-string", "adamw", dict(mask="w"), ValueError,
        r"adamw: mask leaves must be booleans .*got 'w'"),
    # NAdam
    row("nadam-momentum_decay-negative", "nadam", dict(momentum_decay=-4e-3), ValueError,
        rf"nadam: momentum_decay {NONNEG}, got -0\.004"),
    row("nadam-momentum_decay-inf(torch accepts)", "nadam", dict(momentum_decay=INF), ValueError,
        rf"nadam: momentum_decay {FINITE_NONNEG}, got inf"),
    row("nadam-betas1-above_1", "nadam", dict(betas=(0.9, 1.5)), ValueError,
        rf"nadam: betas\[1\] {BETA}, got 1\.5"),
    row("nadam-decoupled_weight_decay-not_bool", "nadam", dict(decoupled_weight_decay="yes"),
        ValueError, rf"nadam: decoupled_weight_decay {FLAG}, got 'yes'"),
    # RAdam
    row("radam-eps-inf", "radam", dict(eps=INF), ValueError,
        rf"radam: eps {FINITE_NONNEG}, got inf"),
    row("radam-betas0-is_1", "radam", dict(betas=(1.0, 0.9)), ValueError,
        rf"radam: betas\[0\] {BETA}, got 1\.0"),
    row("radam-decoupled_weight_decay-None", "radam", dict(decoupled_weight_decay=None),
        ValueError, rf"radam: decoupled_weight_decay {FLAG}, got None"),
    # Adamax
    row("adamax-betas0-negative", "adamax", dict(betas=(-0.5, 0.9)), ValueError,
        rf"adamax: betas\[0\] {BETA}, got -0\.5"),
    row("adamax-lr-nan", "adamax", dict(lr=NAN), ValueError,
        rf"adamax: lr {FINITE_NONNEG}, got nan"),
    row("adamax-weight_decay-negative", "adamax", dict(weight_decay=-1), ValueError,
        rf"adamax: weight_decay {NONNEG}, got -1"),
    # Transforms
    row("add_l2_to_grad-negative", "add_l2_to_grad", dict(weight_decay=-0.1), ValueError,
        rf"add_l2_to_grad: weight_decay {NONNEG}, got -0\.1"),
    row("add_l2_to_grad-None", "add_l2_to_grad", dict(weight_decay=None), ValueError,
        r"add_l2_to_grad: weight_decay must be a number, a JAX scalar or a schedule, got None"),
    row("decoupled_weight_decay-bool", "decoupled_weight_decay", dict(weight_decay=True),
        ValueError, r"decoupled_weight_decay: weight_decay must be a number, .*got True"),
    row("decoupled_weight_decay-mask-float_leaf", "decoupled_weight_decay",
        dict(weight_decay=0.1, mask=[1.0]), ValueError,
        r"decoupled_weight_decay: mask leaves must be booleans .*got 1\.0"),
    row("independent_weight_decay-vector", "independent_weight_decay",
        dict(weight_decay=jnp.ones(3)), ValueError,
        r"independent_weight_decay: weight_decay must be a scalar, got an array of shape \(3,\)"),
    row("scale_by_momentum-negative", "scale_by_momentum", dict(momentum=-0.1), ValueError,
        rf"scale_by_momentum: momentum {NONNEG}, got -0\.1"),
    row("scale_by_momentum-nesterov-dampening", "scale_by_momentum",
        dict(momentum=0.9, dampening=0.5, nesterov=True), ValueError,
        r"scale_by_momentum: nesterov=True needs momentum > 0 and dampening = 0"),
    row("scale_by_momentum-nesterov-zero_momentum", "scale_by_momentum",
        dict(momentum=0.0, nesterov=True), ValueError,
        r"scale_by_momentum: nesterov=True needs .*got momentum=0\.0"),
    row("scale_by_adagrad-eps-negative", "scale_by_adagrad", dict(eps=-1.0), ValueError,
        rf"scale_by_adagrad: eps {NONNEG}, got -1\.0"),
    row("scale_by_adagrad-initial_accumulator_value-nan", "scale_by_adagrad",
        dict(initial_accumulator_value=NAN), ValueError,
        rf"scale_by_adagrad: initial_accumulator_value {FINITE_NONNEG}, got nan"),
    row("scale_by_rms-alpha-above_1", "scale_by_rms", dict(alpha=2.0), ValueError,
        r"scale_by_rms: alpha must be in \[0, 1\], got 2\.0"),
    row("scale_by_rms-centered-not_bool", "scale_by_rms", dict(centered="yes"), ValueError,
        rf"scale_by_rms: centered {FLAG}, got 'yes'"),
    row("scale_by_adam-betas0-is_1", "scale_by_adam", dict(betas=(1.0, 0.999)), ValueError,
        rf"scale_by_adam: betas\[0\] {BETA}, got 1\.0"),
    row("scale_by_adam-amsgrad-None", "scale_by_adam", dict(amsgrad=None), ValueError,
        rf"scale_by_adam: amsgrad {FLAG}, got None"),
    row("scale_by_nadam-momentum_decay-negative", "scale_by_nadam", dict(momentum_decay=-1),
        ValueError, rf"scale_by_nadam: momentum_decay {NONNEG}, got -1"),
    row("scale_by_radam-eps-nan", "scale_by_radam", dict(eps=NAN), ValueError,
        rf"scale_by_radam: eps {FINITE_NONNEG}, got nan"),
    row("scale_by_adamax-betas-single", "scale_by_adamax", dict(betas=(0.9,)), ValueError,
        r"scale_by_adamax: betas must be a pair \(beta1, beta2\), .*got \(0\.9,\)"),
    row("scale_by_learning_rate-negative", "scale_by_learning_rate", dict(learning_rate=-1.0),
        ValueError, rf"scale_by_learning_rate: learning_rate {NONNEG}, got -1\.0"),
    row("scale_by_learning_rate-inf", "scale_by_learning_rate", dict(learning_rate=INF),
        ValueError, rf"scale_by_learning_rate: learning_rate {FINITE_NONNEG}, got inf"),
    row("scale_by_learning_rate-vector", "scale_by_learning_rate",
        dict(learning_rate=np.array([0.1, 0.2])), ValueError,
        r"scale_by_learning_rate: learning_rate must be a scalar, got an array of shape \(2,\)"),
    # The five modern preconditioners
    row("scale_by_adan-beta2-above-one", "scale_by_adan", dict(betas=(0.98, 1.5, 0.99)),
        ValueError, rf"scale_by_adan: betas\[1\] {BETA}, got 1\.5"),
    row("scale_by_ademamix-alpha-negative", "scale_by_ademamix", dict(alpha=-1.0), ValueError,
        rf"scale_by_ademamix: alpha {NONNEG}, got -1\.0"),
    row("scale_by_adopt-eps-negative", "scale_by_adopt", dict(eps=-1.0), ValueError,
        rf"scale_by_adopt: eps {NONNEG}, got -1\.0"),
    row("scale_by_lars-momentum-negative", "scale_by_lars", dict(momentum=-1.0), ValueError,
        rf"scale_by_lars: momentum {NONNEG}, got -1\.0"),
    row("scale_by_schedule_free_adam-bias_correction", "scale_by_schedule_free_adam",
        dict(bias_correction="both"), ValueError,
        r"scale_by_schedule_free_adam: bias_correction must be 'lr' .* or 'moment' .*got 'both'"),
    row("schedule_free-decay_at", "schedule_free", dict(decay_at="w"), ValueError,
        r"schedule_free: decay_at must be 'y' .*'z' .*or 'x' .*got 'w'",
        wdchain.scale_by_adam(), 0.1),
    # Wrappers
    row("skip_nonfinite-max_consecutive_errors-negative", "skip_nonfinite",
        dict(max_consecutive_errors=-1), ValueError,
        r"skip_nonfinite: max_consecutive_errors must be in \[0, 2\.14748e\+09\], got -1",
        wdchain.sgd()),
    row("skip_nonfinite-max_consecutive_errors-float", "skip_nonfinite",
        dict(max_consecutive_errors=1.5), ValueError,
        r"skip_nonfinite: max_consecutive_errors must be None or an int .*got 1\.5",
        wdchain.sgd()),
    # The builder
    row("build-unknown_preconditioner", "build", {}, ValueError,
        r"build: unknown preconditioner 'sophia'; use one of sgd, momentum", "sophia"),
    row("build-unknown_decay", "build", dict(decay="l1"), ValueError,
        r"build: unknown decay 'l1'; use one of none, l2, decoupled", "adam"),
    row("build-unknown_option", "build", dict(momentum=0.9), ValueError,
        r"build: unknown option\(s\) momentum for preconditioner 'adam'", "adam"),
    row("build-unknown_gate", "build", dict(decay="decoupled", gate="caution"), ValueError,
        r"build: unknown gate 'caution'; use None .* or 'cautious'", "adam"),
    row("build-toward-unknown_string", "build", dict(toward="zero"), ValueError,
        r"build: toward must be None \(decay toward 0\), 'init'", "adam"),
    row("build-toward-not_arrays", "build", dict(toward={"w": "x"}), ValueError,
        r"build: toward must be None, 'init' or a pytree of arrays", "adam"),
    row("build-corrected_mask-without_corrected", "build",
        dict(decay="decoupled", corrected_mask={"w": True}), ValueError,
        r"build: corrected_mask selects the leaves of decay='corrected'", "adam"),
    row("build-corrected-lr_schedule-no_lr_peak", "build",
        dict(decay="corrected", lr=lambda count: 0.1), ValueError,
        r"build: decay='corrected' scales the decay by η_t = lr_t / lr_peak", "adam"),
    row("build-stable-sgd", "build", dict(decay="stable"), ValueError,
        r"build: decay='stable' divides the decay by √v̄_t.*'sgd' has none; use one of adagrad",
        "sgd"),
    row("timescale-lr-zero", "ema_timescale", dict(), ValueError,
        r"ema_timescale: learning_rate must be > 0, got 0\.0", 0.0, 0.1),
    row("weight_decay_for_timescale-both", "weight_decay_for_timescale",
        dict(tau_iter=10.0, tau_epoch=1.0), ValueError,
        r"give exactly one of tau_iter and tau_epoch", 1e-3),
    row("integrated_decay-l2", "integrated_decay", dict(decay="l2"), ValueError,
        r"integrated_decay: unknown decay 'l2'; use one of decoupled", 1e-3, 0.1, 10),
    row("build-lr-negative", "build", dict(lr=-1e-3), ValueError,
        rf"build: lr {NONNEG}, got -0\.001", "adam"),
    row("build-option-betas0-is_1", "build", dict(betas=(1.0, 0.9)), ValueError,
        rf"betas\[0\] {BETA}, got 1\.0", "adam"),
    row("build-sgd-momentum-hint", "build", {"momentum": 0.9}, ValueError,
        r"build: unknown option\(s\) momentum for preconditioner 'sgd'.*"
        r"use build\(\"momentum\", momentum=0\.9", "sgd"),
    row("build-lion-betas1-is_1", "build", {"betas": (0.9, 1.0)}, ValueError,
        rf"build: betas\[1\] {BETA}, got 1\.0", "lion"),
    row("build-lamb-eps-negative", "build", {"eps": -1e-6}, ValueError,
        rf"build: eps {NONNEG}, got -1e-06", "lamb"),
    row("build-asgd-lambd-negative", "build", {"lambd": -1.0}, ValueError,
        rf"build: lambd {NONNEG}, got -1\.0", "asgd"),
    row("build-adafactor-d-below_1", "build", {"d": 0.5}, ValueError,
        r"build: d must be in \[1, inf\), got 0\.5", "adafactor"),
    row("build-muon-ns_steps-100", "build", {"ns_steps": 100}, ValueError,
        r"build: ns_steps must be a Python int in \[0, 100\), got 100", "muon"),
    row("build-adadelta-rho-above_1", "build", {"rho": 1.5}, ValueError,
        r"build: rho must be in \[0, 1\], got 1\.5", "adadelta"),
    # Adadelta
    row("adadelta-lr-negative", "adadelta", {"lr": -1.0}, ValueError,
        rf"adadelta: lr {NONNEG}, got -1\.0"),
    row("adadelta-rho-above_1", "adadelta", {"rho": 1.1}, ValueError,
        r"adadelta: rho must be in \[0, 1\], got 1\.1"),
    row("adadelta-rho-negative", "adadelta", {"rho": -0.1}, ValueError,
        r"adadelta: rho must be in \[0, 1\], got -0\.1"),
    row("adadelta-eps-negative", "adadelta", {"eps": -1e-6}, ValueError,
        rf"adadelta: eps {NONNEG}, got -1e-06"),
    row("adadelta-weight_decay-negative", "adadelta", {"weight_decay": -0.1}, ValueError,
        rf"adadelta: weight_decay {NONNEG}, got -0\.1"),
    row("adadelta-maximize-int", "adadelta", {"maximize": 1}, ValueError,
        rf"adadelta: maximize {FLAG}, got 1"),
    row("scale_by_adadelta-eps-nan", "scale_by_adadelta", {"eps": NAN}, ValueError,
        rf"scale_by_adadelta: eps {FINITE_NONNEG}, got nan"),
    # ASGD (torch checks lr and weight_decay only)
    row("asgd-lr-negative", "asgd", {"lr": -0.1}, ValueError, rf"asgd: lr {NONNEG}, got -0\.1"),
    row("asgd-lambd-negative(torch accepts)", "asgd", {"lambd": -1e-4}, ValueError,
        rf"asgd: lambd {NONNEG}, got -0\.0001"),
    row("asgd-alpha-inf(torch accepts)", "asgd", {"alpha": INF}, ValueError,
        r"asgd: alpha must be a finite number in \[-inf, inf\), got inf"),
    row("asgd-t0-nan(torch accepts)", "asgd", {"t0": NAN}, ValueError,
        r"asgd: t0 must be a finite number in \[-inf, inf\), got nan"),
    row("asgd-weight_decay-negative", "asgd", {"weight_decay": -0.1}, ValueError,
        rf"asgd: weight_decay {NONNEG}, got -0\.1"),
    row("asgd-mask-not_bools", "asgd", {"mask": {"w": 1}}, ValueError,
        r"asgd: mask leaves must be booleans"),
    row("scale_by_asgd-lambd-inf", "scale_by_asgd", {"lambd": INF}, ValueError,
        rf"scale_by_asgd: lambd {FINITE_NONNEG}, got inf"),
    row("average_iterates-t0-string", "average_iterates", {"t0": "10"}, ValueError,
        r"average_iterates: t0 must be a real number or a scalar JAX array, got '10'"),
    # Adafactor
    row("adafactor-lr-negative", "adafactor", {"lr": -0.01}, ValueError,
        rf"adafactor: lr {NONNEG}, got -0\.01"),
    row("adafactor-beta2_decay-positive", "adafactor", {"beta2_decay": 0.5}, ValueError,
        r"adafactor: beta2_decay must be in \[-inf, 0\], got 0\.5"),
    row("adafactor-eps-not_a_pair", "adafactor", {"eps": 1e-3}, ValueError,
        r"adafactor: eps must be a pair \(eps1, eps2\) .*got 0\.001"),
    row("adafactor-eps0-negative", "adafactor", {"eps": (-1.0, 1e-3)}, ValueError,
        rf"adafactor: eps\[0\] {NONNEG}, got -1\.0"),
    row("adafactor-eps1-negative", "adafactor", {"eps": (None, -1e-3)}, ValueError,
        rf"adafactor: eps\[1\] {NONNEG}, got -0\.001"),
    row("adafactor-d-below_1", "adafactor", {"d": 0.9}, ValueError,
        r"adafactor: d must be in \[1, inf\), got 0\.9"),
    row("adafactor-weight_decay-negative", "adafactor", {"weight_decay": -0.1}, ValueError,
        rf"adafactor: weight_decay {NONNEG}, got -0\.1"),
    row("adafactor-maximize-string", "adafactor", {"maximize": "no"}, ValueError,
        rf"adafactor: maximize {FLAG}, got 'no'"),
    row("scale_by_adafactor-d-inf", "scale_by_adafactor", {"d": INF}, ValueError,
        r"scale_by_adafactor: d must be a finite number in \[1, inf\), got inf"),
    # Muon
    row("muon-lr-negative", "muon", {"lr": -1e-3}, ValueError, rf"muon: lr {NONNEG}, got -0\.001"),
    row("muon-weight_decay-negative", "muon", {"weight_decay": -0.1}, ValueError,
        rf"muon: weight_decay {NONNEG}, got -0\.1"),
    row("muon-momentum-negative", "muon", {"momentum": -0.95}, ValueError,
        rf"muon: momentum {NONNEG}, got -0\.95"),
    row("muon-nesterov-int", "muon", {"nesterov": 1}, ValueError,
        rf"muon: nesterov {FLAG}, got 1"),
    row("muon-ns_coefficients-two", "muon", {"ns_coefficients": (3.0, -4.0)}, ValueError,
        r"muon: ns_coefficients must be three numbers \(a, b, c\), got \(3\.0, -4\.0\)"),
    row("muon-ns_coefficients-nan", "muon", {"ns_coefficients": (3.0, NAN, 2.0)}, ValueError,
        r"muon: ns_coefficients\[1\] must be a finite number"),
    row("muon-eps-negative", "muon", {"eps": -1e-7}, ValueError,
        rf"muon: eps {NONNEG}, got -1e-07"),
    row("muon-ns_steps-100", "muon", {"ns_steps": 100}, ValueError,
        r"muon: ns_steps must be a Python int in \[0, 100\), got 100"),
    row("muon-ns_steps-float", "muon", {"ns_steps": 5.0}, ValueError,
        r"muon: ns_steps must be a Python int in \[0, 100\), got 5\.0"),
    row("muon-adjust_lr_fn-unknown", "muon", {"adjust_lr_fn": "rms_to_rms"}, ValueError,
        r"muon: adjust_lr_fn must be None, 'original' or 'match_rms_adamw', got 'rms_to_rms'"),
    row("muon-ns_dtype-int", "muon", {"ns_dtype": jnp.int32}, ValueError,
        r"muon: ns_dtype must be a floating dtype"),
    row("muon-ns_dtype-None", "muon", {"ns_dtype": None}, ValueError,
        r"muon: ns_dtype must be a floating dtype \(e\.g\. jnp\.bfloat16\), got None"),
    row("scale_by_muon_momentum-momentum-nan", "scale_by_muon_momentum", {"momentum": NAN},
        ValueError, rf"scale_by_muon_momentum: momentum {FINITE_NONNEG}, got nan"),
    row("orthogonalize_newton_schulz-ns_steps-negative", "orthogonalize_newton_schulz",
        {"ns_steps": -1}, ValueError,
        r"orthogonalize_newton_schulz: ns_steps must be a Python int in \[0, 100\), got -1"),
    row("scale_by_shape-adjust_lr_fn-unknown", "scale_by_shape", {"adjust_lr_fn": "none"},
        ValueError, r"scale_by_shape: adjust_lr_fn must be None, 'original' or "),
    # Lion and LAMB's trust ratio
    row("scale_by_lion-betas-single", "scale_by_lion", {"betas": (0.9,)}, ValueError,
        r"scale_by_lion: betas must be a pair \(beta1, beta2\), .*got \(0\.9,\)"),
    row("scale_by_lion-mu_dtype-int", "scale_by_lion", {"mu_dtype": jnp.int8}, ValueError,
        r"scale_by_lion: mu_dtype must be a floating dtype"),
    row("scale_by_trust_ratio-trust_coefficient-negative", "scale_by_trust_ratio",
        {"trust_coefficient": -1.0}, ValueError,
        rf"scale_by_trust_ratio: trust_coefficient {NONNEG}, got -1\.0"),
]

# Values that are not real scalars at all, and a moment dtype that is not a float.
NOT_NUMBERS = [
    row("sgd-lr-string", "sgd", dict(lr="0.1"), ValueError, r"sgd: lr must be .*got '0\.1'"),
    row("sgd-momentum-vector", "sgd", dict(momentum=jnp.ones(2)), ValueError,
        r"sgd: momentum must be a real number or a scalar JAX array"),
    row("sgd-momentum-bool", "sgd", dict(momentum=True), ValueError,
        r"sgd: momentum must be .*got True"),
    row("adam-eps-vector", "adam", dict(eps=jnp.ones(2)), ValueError,
        r"adam: eps must be a real number or a scalar JAX array"),
    row("adam-betas0-vector", "adam", dict(betas=(jnp.ones(2), 0.999)), ValueError,
        r"adam: betas\[0\] must be a real number or a scalar JAX array"),
    row("adam-lr-complex", "adam", dict(lr=1j), ValueError, r"adam: lr must be .*got 1j"),
    row("scale_by_adam-mu_dtype-int", "scale_by_adam", dict(mu_dtype=jnp.int32), ValueError,
        r"scale_by_adam: mu_dtype must be a floating dtype"),
    row("adamw-nu_dtype-string", "adamw", dict(nu_dtype="foo"), ValueError,
        r"adamw: nu_dtype must be a floating dtype .*got 'foo'"),
    row("rmsprop-centered-int", "rmsprop", dict(centered=1), ValueError,
        r"rmsprop: centered must be True or False, got 1"),
    row("adam-amsgrad-string", "adam", dict(amsgrad="yes"), ValueError,
        r"adam: amsgrad must be True or False, got 'yes'"),
]


@pytest.mark.parametrize("make", [
    lambda: wdchain.sgd(0.1), lambda: wdchain.sgd(0.1, momentum=0.9, weight_decay=0.1),
    lambda: wdchain.build("momentum", lr=0.1), lambda: wdchain.scale_by_learning_rate(0.1),
    lambda: wdchain.decoupled_weight_decay(0.1),
], ids=["sgd", "sgd-momentum-wd", "build-momentum", "scale_by_learning_rate", "decoupled"])
def test_complex_params_are_refused_not_skipped(make):
    params = jnp.array([1 + 2j, 3 - 1j], jnp.complex64)
    with pytest.raises(TypeError, match=r"the leaf at .* is complex.*split_real_and_imaginary"):
        make().init(params)


@pytest.mark.parametrize("factory, args, kwargs, error, match", CONSTRUCTION + NOT_NUMBERS)
def test_bad_hyperparameter_is_refused_at_construction(factory, args, kwargs, error, match):
    with pytest.raises(error, match=match):
        getattr(wdchain, factory)(*args, **kwargs)


def test_the_table_has_at_least_30_rows_and_covers_every_factory():
    """Every public factory with a hyperparameter to check has a row."""
    assert len(CONSTRUCTION) + len(AT_UPDATE) >= 30
    in_table = {p.values[0] for p in CONSTRUCTION}
    factories = {
        name
        for name in wdchain.__all__
        if inspect.isfunction(getattr(wdchain, name))
        and _is_transformation(inspect.signature(getattr(wdchain, name)).return_annotation)
    }
    assert {"sgd", "scale_by_adam", "chain"} <= factories  # the discovery works
    checked = {name for name in factories if _has_hyperparameters(getattr(wdchain, name))}
    assert "maximize" not in checked and "chain" not in checked
    assert not checked - in_table, f"no bad-input row for {sorted(checked - in_table)}"


def _is_transformation(annotation: Any) -> bool:
    pattern = r"(optax\.)?GradientTransformation(ExtraArgs)?"
    return re.fullmatch(pattern, str(annotation)) is not None


def _has_hyperparameters(factory: Any) -> bool:
    """False for maximize() and for wrappers whose only arguments are transformations."""
    return any(
        "GradientTransformation" not in str(parameter.annotation)
        for parameter in inspect.signature(factory).parameters.values()
    )


# --------------------------------------------------------------------------------------
# Trees that do not fit together, found at update time: the error names the first
# path that differs.

PARAMS = {"a": jnp.ones(2), "b": {"c": jnp.ones(3)}}
OTHER_KEYS = {"a": jnp.ones(2), "x": {"c": jnp.ones(3)}}
OTHER_SHAPE = {"a": jnp.ones(2), "b": {"c": jnp.ones(4)}}
EXTRA_LEAF = {"a": jnp.ones(2), "b": {"c": jnp.ones(3), "d": jnp.ones(1)}}
ANOTHER_MODEL = {"a": jnp.ones(2), "z": jnp.ones(3)}


def update_row(id: str, tx: Any, grads: Any, state_of: Any, params: Any, match: str):
    """``tx.update(grads, tx.init(state_of), params)`` raises a ValueError matching ``match``."""
    return pytest.param(tx, grads, state_of, params, match, id=id)


AT_UPDATE = [
    # grads vs params (the decay transforms compare them)
    update_row("adam_l2-grads_vs_params-other_keys", wdchain.adam(weight_decay=0.1), OTHER_KEYS,
               PARAMS, PARAMS,
               r"add_l2_to_grad: updates does not have the structure of params: "
               r"params has \['b'\]\['c'\] where updates has \['x'\]\['c'\]"),
    update_row("adam_l2-grads_vs_params-other_shape", wdchain.adam(weight_decay=0.1), OTHER_SHAPE,
               PARAMS, PARAMS,
               r"add_l2_to_grad: updates\['b'\]\['c'\] has shape \(4,\), but params has "
               r"shape \(3,\) there"),
    update_row("adamw-params_vs_grads-another_model", wdchain.adamw(), PARAMS, PARAMS,
               ANOTHER_MODEL,
               r"decoupled_weight_decay: updates does not have the structure of params: "
               r"params has \['z'\]"),
    update_row("independent_weight_decay-grads_extra_leaf",
               wdchain.independent_weight_decay(0.1), EXTRA_LEAF, PARAMS, PARAMS,
               r"independent_weight_decay: .*updates has an extra leaf at \['b'\]\['d'\]"),
    update_row("sgd_l2-list_vs_tuple", wdchain.sgd(weight_decay=0.1), [jnp.ones(1)],
               (jnp.ones(1),), (jnp.ones(1),),
               r"add_l2_to_grad: updates does not have the structure of params: "
               r"same leaf paths but different node types"),
    # grads vs state (a state made for another tree)
    update_row("adamw-grads_vs_state-other_keys", wdchain.adamw(), OTHER_KEYS, PARAMS, OTHER_KEYS,
               r"scale_by_adam: updates does not have the structure of state\.mu: "
               r"state\.mu has \['b'\]\['c'\] where updates has \['x'\]\['c'\]"),
    update_row("adamw-grads_vs_state-other_shape", wdchain.adamw(), OTHER_SHAPE, PARAMS,
               OTHER_SHAPE,
               r"scale_by_adam: updates\['b'\]\['c'\] has shape \(4,\), but state\.mu has "
               r"shape \(3,\) there"),
    update_row("sgd_momentum-state_of_another_model", wdchain.sgd(momentum=0.9), PARAMS,
               ANOTHER_MODEL, PARAMS,
               r"scale_by_momentum: updates does not have the structure of "
               r"state\.trace: state\.trace has \['z'\]"),
    update_row("adagrad-state_of_another_model", wdchain.adagrad(), PARAMS, ANOTHER_MODEL, PARAMS,
               r"scale_by_adagrad: updates does not have the structure of state: state has \['z'\]"),
    update_row("rmsprop-state_other_shape", wdchain.rmsprop(), PARAMS, OTHER_SHAPE, PARAMS,
               r"scale_by_rms: updates\['b'\]\['c'\] has shape \(3,\), but state\.nu has "
               r"shape \(4,\) there"),
    update_row("nadam-state_of_another_model", wdchain.nadam(), PARAMS, ANOTHER_MODEL, PARAMS,
               r"scale_by_nadam: updates does not have the structure of state\.mu: state\.mu has \['z'\]"),
    update_row("radam-state_extra_leaf", wdchain.radam(), PARAMS, EXTRA_LEAF, PARAMS,
               r"scale_by_radam: updates does not have the structure of state\.mu: .*"
               r"state\.mu has an extra leaf at \['b'\]\['d'\]"),
    update_row("adamax-state_of_another_model", wdchain.adamax(), PARAMS, ANOTHER_MODEL, PARAMS,
               r"scale_by_adamax: updates does not have the structure of state\.mu: "
               r"state\.mu has \['z'\]"),
    update_row("adamw-callable_mask-int_leaf", wdchain.adamw(mask=lambda p: {"a": 1, "b": True}),
               PARAMS, PARAMS, PARAMS,
               r"decoupled_weight_decay: mask leaves must be booleans .*got 1"),
]

# A tree mask is checked against the params at init (a callable one at update).
MASK_AT_INIT = [
    update_row("adamw-mask_not_a_prefix-extra_key",
               wdchain.adamw(mask={"a": True, "q": False}), PARAMS, PARAMS, PARAMS,
               r"decoupled_weight_decay: the mask is not a prefix of the params tree: "
               r"the mask has \['q'\], the params do not"),
    update_row("sgd-mask_not_a_prefix-deeper",
               wdchain.sgd(weight_decay=0.1, mask={"a": True, "b": {"c": True, "d": False}}),
               PARAMS, PARAMS, PARAMS,
               r"add_l2_to_grad: the mask is not a prefix of the params tree: "
               r"the mask has \['b'\]\['d'\], the params do not"),
    update_row("adamw-mask_not_a_prefix-missing_key", wdchain.adamw(mask={"a": True}),
               PARAMS, PARAMS, PARAMS,
               r"decoupled_weight_decay: the mask is not a prefix .*\['b'\]"),
    update_row("adamw-dict_mask-nnx_state_params",
               wdchain.adamw(mask={"a": True, "b": {"c": False}}),
               PARAMS, nnx.State(PARAMS), PARAMS,
               r"^decoupled_weight_decay: the mask is a dict but the params are an nnx\.State "
               r"\(as nnx\.Optimizer passes them\), .* Pass mask=wdchain\.decay_mask"),
]


@pytest.mark.parametrize("tx, grads, state_of, params, match", MASK_AT_INIT)
def test_a_tree_mask_that_does_not_fit_is_refused_at_init(tx, grads, state_of, params, match):
    del grads, params
    with pytest.raises(ValueError, match=match) as caught:
        tx.init(state_of)
    assert len(str(caught.value)) < 400  # no dump of two tree structures
    with pytest.raises(ValueError, match=match):
        jax.jit(tx.init)(state_of)


@pytest.mark.parametrize("tx, grads, state_of, params, match", AT_UPDATE)
def test_trees_that_do_not_fit_are_refused_at_update(tx, grads, state_of, params, match):
    state = tx.init(state_of)
    with pytest.raises(ValueError, match=match):
        tx.update(grads, state, params)
    with pytest.raises(ValueError, match=match):  # the same error while tracing under jit
        jax.jit(tx.update)(grads, state, params)
