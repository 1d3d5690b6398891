"""Prints the parity table: max error vs torch.optim after 100 steps, per optimizer
and option, in float64 (JAX x64) and float32.

Each error is max |θ_wdchain − θ_torch| over a leaf, divided by the leaf's max |θ_torch|,
maximised over the leaves of a badly scaled nested pytree (gradients 1e-3..10, 10%
exact zeros). The grid is the one ``tests/test_parity_torch.py`` checks (1e-12 in
float64, 1e-5 in float32).

    python benchmarks/parity_table.py
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))

import torch_oracle as oracle  # noqa: E402


def main() -> None:
    print(f"Max relative error vs torch.optim after {oracle.STEPS} steps (lr={oracle.LR}).\n")
    print("| optimizer | option | float64 | float32 |")
    print("|---|---|---|---|")
    dtypes = (np.float64, np.float32)
    errors = {dtype: oracle.compare(oracle.PARITY_CASES, dtype) for dtype in dtypes}
    for case in oracle.PARITY_CASES:
        e64, e32 = errors[np.float64][case.id], errors[np.float32][case.id]
        print(f"| {case.optimizer} | {case.option} | {e64:.1e} | {e32:.1e} |")
    worst = {dtype: max(errors[dtype].values()) for dtype in errors}
    print(
        f"\n{len(oracle.PARITY_CASES)} cases; worst: {worst[np.float64]:.1e} (float64), "
        f"{worst[np.float32]:.1e} (float32)."
    )
    print("\nWorst per optimizer:\n\n| optimizer | float64 | float32 |\n|---|---|---|")
    for name in oracle.OPTIMIZERS:
        ids = [case.id for case in oracle.cases_of(name)]
        e64 = max(errors[np.float64][i] for i in ids)
        e32 = max(errors[np.float32][i] for i in ids)
        print(f"| {name} | {e64:.1e} | {e32:.1e} |")
    bf16 = {dtype: oracle.compare(oracle.MUON_BF16_CASES, dtype) for dtype in dtypes}
    print("\nMuon with torch's bfloat16 Newton–Schulz iteration on both sides:\n")
    print("| option | float64 params | float32 params |\n|---|---|---|")
    for case in oracle.MUON_BF16_CASES:
        print(f"| {case.option} | {bf16[np.float64][case.id]:.1e} | "
              f"{bf16[np.float32][case.id]:.1e} |")


if __name__ == "__main__":
    main()
