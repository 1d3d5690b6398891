"""Shared test settings.

Tests run with JAX's default float32. Tests that need float64 (parity with torch to
1e-12) enter ``jax.enable_x64(True)`` themselves, so the rest of the suite sees what a
user sees.
"""
