"""Shared test settings.

Tests run with JAX's default float32. Tests that need float64 (parity with torch to
1e-12) enter ``jax.enable_x64(True)`` themselves, so the rest of the suite sees what a
user sees.
"""

import pytest


class _SweepCalled(Exception):
    pass


@pytest.fixture
def cli_sweep_arguments(monkeypatch):
    """``call(argv) -> dict``: what ``python -m wdchain.ablate argv`` hands to ``sweep`` (its
    keyword arguments, and the task as ``task``), without training."""
    from wdchain.ablate import _cli

    def call(argv: list[str]) -> dict:
        seen: dict = {}

        def record(task, **kwargs):
            seen.update(kwargs, task=task)
            raise _SweepCalled

        monkeypatch.setattr(_cli, "sweep", record)
        with pytest.raises(_SweepCalled):
            _cli.main(argv)
        return seen

    return call
