"""The benchmark scripts still run, on toy trees, and what they report is consistent.

They are not timed here (timings are the scripts' job, on a quiet machine): these
tests keep ``benchmarks/step.py`` and ``benchmarks/end_to_end.py`` runnable for the
session that has a GPU, with torch.optim joining on CPU (``--torch on``).
"""

from __future__ import annotations

import json
import math
import pathlib
import sys

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def scripts():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import end_to_end
        import step

        yield step, end_to_end
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_step_benchmark_reports_every_implementation_on_every_tree(scripts, tmp_path):
    step, _ = scripts
    step.main(["--size", "smoke", "--optimizers", "adamw,sgd_momentum", "--rounds", "2",
               "--steps", "1", "--torch", "on", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "step.json").read_text())
    assert set(results["trees"]) == {"huge", "gpt2", "tiny"}
    assert results["trees"]["gpt2"]["leaves"] == 148
    for tree in results["trees"].values():
        for name, rows in tree["optimizers"].items():
            assert {"optax", "wdchain", "wdchain packed", "torch foreach"} <= set(rows), name
            assert rows["optax"]["time_vs_optax"] == 1.0
            for row in rows.values():
                assert row["median_ms"] > 0 and math.isfinite(row["time_vs_optax"])
            for label in ("wdchain", "wdchain packed"):
                # Donated params and state: no buffer beyond params + grads + state.
                assert rows[label]["peak_vs_arrays"] <= 1.05, (name, label, rows[label])
    assert "| gpt2 (" in (tmp_path / "step.md").read_text()


def test_step_benchmark_refuses_an_unknown_optimizer(scripts):
    step, _ = scripts
    with pytest.raises(SystemExit):
        step.main(["--size", "smoke", "--optimizers", "adamx"])


def test_end_to_end_packed_and_tree_train_alike(scripts, tmp_path):
    _, end_to_end = scripts
    end_to_end.main(["--layers", "3", "--width", "16", "--batch", "8", "--rounds", "2",
                     "--steps", "2", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "end_to_end.json").read_text())["rows"]
    assert set(rows) == {"tree", "optax tree", "packed"}
    # Every implementation ran the same number of steps from the same init.
    assert rows["packed"]["loss"] == pytest.approx(rows["tree"]["loss"], rel=1e-5)
    assert rows["optax tree"]["loss"] == pytest.approx(rows["tree"]["loss"], rel=1e-5)
    assert rows["tree"]["loss"] != pytest.approx(0.0)
