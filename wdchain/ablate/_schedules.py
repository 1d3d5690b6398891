"""The learning-rate multiplier η(t) of a run: cosine, warmup, warmup–stable–decay…

A schedule here is a callable ``total_steps -> (step -> multiplier)``: given the run's
length it returns η(t), the factor of the peak learning rate at step t (lr_t = lr·η_t).
η_t is also what the paper's ``independent`` decay (λ·η_t) and ``corrected`` decay
follow, so a schedule is part of what an arm means. Fractions (``warmup``, ``decay``) are
fractions of the run's steps, so one schedule fits any number of epochs.

The built-in ones are named, so reports, ``run.json`` and figures can state them:
``cosine()`` (the runner's default), ``warmup_cosine(warmup)``, ``wsd(warmup, decay)``,
``linear(warmup)`` and ``constant()``; :func:`parse_schedule` reads the command line's
``cosine | warmup_cosine:0.05 | wsd:0.05:0.2 | linear:0.05 | constant``. A user's own
callable of the same form works too; it is named by its ``__name__``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Multiplier = Callable[[Any], jax.Array]
Schedule = Callable[[int], Multiplier]


class NamedSchedule:
    """A built-in schedule: ``schedule(total_steps)`` is η(t); ``name`` reads it back."""

    def __init__(self, name: str, shape: Callable[[jax.Array, int], jax.Array]):
        self.name = name
        self._shape = shape

    def __call__(self, total_steps: int) -> Multiplier:
        def eta(count: Any) -> jax.Array:
            step = jnp.minimum(jnp.asarray(count, jnp.float32), total_steps)
            return self._shape(step, total_steps)

        eta.wdchain_name = f"{self.name}(T={total_steps})"  # type: ignore[attr-defined]
        return eta

    def __repr__(self) -> str:
        return self.name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NamedSchedule) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


def _fraction(where: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            math.isfinite(value) and 0 <= value < 1):
        raise ValueError(f"{where}: {name} must be a fraction of the run in [0, 1), got "
                         f"{value!r}")
    return float(value)


def _warmup_steps(warmup: float, total: int) -> float:
    return warmup * total


def _ramp(step: jax.Array, warmup: float) -> jax.Array:
    """(t + 1) / W during the warmup (never 0 at the first step), then 1."""
    if warmup <= 0:
        return jnp.ones_like(step)
    return jnp.minimum(1.0, (step + 1.0) / warmup)


def cosine() -> NamedSchedule:
    """η(t) = (1 + cos(π·t/T)) / 2: 1 at the first step, 0 at the end (the default).

    Example:
      >>> eta = cosine()(10)
      >>> float(eta(0)), float(eta(5)), float(eta(10))
      (1.0, 0.5, 0.0)
    """
    return NamedSchedule("cosine", lambda t, total: 0.5 * (1.0 + jnp.cos(jnp.pi * (t / total))))


def warmup_cosine(warmup: float) -> NamedSchedule:
    """A linear warmup over the first ``warmup`` of the run, then a cosine to 0.

    η(t) = (t + 1)/W for t < W = warmup·T (so the first step is not wasted), then
    (1 + cos(π·(t − W)/(T − W))) / 2.

    Example:
      >>> eta = warmup_cosine(0.2)(10)   # W = 2 steps
      >>> [round(float(eta(t)), 3) for t in (0, 1, 2, 6, 10)]
      [0.5, 1.0, 1.0, 0.5, 0.0]
    """
    warmup = _fraction("warmup_cosine", "warmup", warmup)

    def shape(t: jax.Array, total: int) -> jax.Array:
        w = _warmup_steps(warmup, total)
        progress = jnp.clip((t - w) / max(total - w, 1.0), 0.0, 1.0)
        return jnp.where(t < w, _ramp(t, w), 0.5 * (1.0 + jnp.cos(jnp.pi * progress)))

    return NamedSchedule(f"warmup_cosine:{warmup:g}", shape)


def wsd(warmup: float, decay: float) -> NamedSchedule:
    """Warmup–stable–decay: a linear warmup, η = 1, then a linear decay to 0 over the last
    ``decay`` of the run (as used for LLM pre-training).

    Example:
      >>> eta = wsd(0.1, 0.5)(10)   # warmup 1 step, stable to step 5, then down to 0
      >>> [round(float(eta(t)), 3) for t in (0, 1, 4, 5, 7, 10)]
      [1.0, 1.0, 1.0, 1.0, 0.6, 0.0]
    """
    warmup = _fraction("wsd", "warmup", warmup)
    decay = _fraction("wsd", "decay", decay)
    if warmup + decay > 1:
        raise ValueError(f"wsd: warmup + decay must be at most 1 (the whole run), got "
                         f"{warmup!r} + {decay!r}")

    def shape(t: jax.Array, total: int) -> jax.Array:
        w = _warmup_steps(warmup, total)
        start = total * (1.0 - decay)
        down = jnp.clip((total - t) / max(total - start, 1e-12), 0.0, 1.0)
        return jnp.where(t < w, _ramp(t, w), jnp.where(t < start, 1.0, down))

    return NamedSchedule(f"wsd:{warmup:g}:{decay:g}", shape)


def linear(warmup: float) -> NamedSchedule:
    """A linear warmup over the first ``warmup`` of the run, then linear to 0 at the end.

    Example:
      >>> eta = linear(0.0)(10)
      >>> [round(float(eta(t)), 3) for t in (0, 5, 10)]
      [1.0, 0.5, 0.0]
    """
    warmup = _fraction("linear", "warmup", warmup)

    def shape(t: jax.Array, total: int) -> jax.Array:
        w = _warmup_steps(warmup, total)
        down = jnp.clip((total - t) / max(total - w, 1.0), 0.0, 1.0)
        return jnp.where(t < w, _ramp(t, w), down)

    return NamedSchedule(f"linear:{warmup:g}", shape)


def constant() -> NamedSchedule:
    """η(t) = 1: the peak learning rate throughout.

    Example:
      >>> float(constant()(10)(7))
      1.0
    """
    return NamedSchedule("constant", lambda t, total: jnp.ones_like(t))


SCHEDULES: dict[str, Callable[..., NamedSchedule]] = {
    "cosine": cosine, "warmup_cosine": warmup_cosine, "wsd": wsd, "linear": linear,
    "constant": constant,
}
_USAGE = "cosine | warmup_cosine:0.05 | wsd:0.05:0.2 | linear:0.05 | constant"


def parse_schedule(text: str) -> NamedSchedule:
    """A built-in schedule from its name and fractions, e.g. ``"wsd:0.05:0.2"``.

    Example:
      >>> parse_schedule("warmup_cosine:0.05")
      warmup_cosine:0.05
    """
    name, *arguments = text.strip().split(":")
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {text!r}: use {_USAGE}")
    try:
        values = [float(a) for a in arguments]
        return SCHEDULES[name](*values)
    except TypeError:
        raise ValueError(f"schedule {text!r} has {len(arguments)} argument(s); use "
                         f"{_USAGE}") from None
    except ValueError as error:
        if "must" in str(error):
            raise
        raise ValueError(f"schedule {text!r}: its arguments must be numbers; use "
                         f"{_USAGE}") from None


def schedule_name(schedule: Any) -> str:
    """How reports name ``schedule``: a built-in's name, else the callable's ``__name__``."""
    if isinstance(schedule, NamedSchedule):
        return schedule.name
    return str(getattr(schedule, "__name__", type(schedule).__name__))


def check_schedule(schedule: Any) -> None:
    """Refuses what is not ``total_steps -> (step -> multiplier)``, naming the fix."""
    usage = ("Task: schedule must be a callable total_steps -> (step -> multiplier), e.g. "
             "wdchain.ablate.warmup_cosine(0.05)")
    if not callable(schedule):
        raise TypeError(f"{usage}; got {schedule!r}")
    try:
        eta = schedule(10)
    except Exception as error:  # any failure is the user's schedule's
        raise TypeError(f"{usage}; calling it with total_steps=10 failed: {error!r}") from None
    if not callable(eta):
        raise TypeError(f"{usage}; schedule(10) returned {eta!r}, not a function of the step")
    value = jnp.asarray(eta(jnp.asarray(0)))
    if value.shape != () or not jnp.issubdtype(value.dtype, jnp.number):
        raise TypeError(f"{usage}; schedule(10)(0) returned {value!r}, not a scalar")
