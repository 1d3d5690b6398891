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

pytestmark = pytest.mark.slow  # the benchmark scripts, run end to end: `pytest -m slow`, run in CI

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def scripts():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import compile_order
        import end_to_end
        import step

        yield step, end_to_end, compile_order
    finally:
        sys.path.remove(str(BENCHMARKS))
        for name in ("step", "end_to_end", "compile_order"):
            sys.modules.pop(name, None)


def test_step_benchmark_reports_every_implementation_on_every_tree(scripts, tmp_path):
    step, _, _ = scripts
    step.main(["--size", "smoke", "--optimizers", "adamw,sgd_momentum", "--rounds", "3",
               "--steps", "1", "--torch", "on", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "step.json").read_text())
    assert results["environment"]["rounds_run"] == 4  # 3 rounds over 2 orders: 2 each
    assert set(results["trees"]) == {"huge", "gpt2", "tiny"}
    assert results["trees"]["gpt2"]["leaves"] == 148
    for tree in results["trees"].values():
        for name, rows in tree["optimizers"].items():
            assert {"optax", "wdchain", "wdchain packed", "torch foreach"} <= set(rows), name
            for row in rows.values():
                assert len(row["time_vs_optax_per_round"]) == 4  # both orders pooled
                assert row["median_ms"] > 0 and math.isfinite(row["time_vs_optax"])
            for label in ("wdchain", "wdchain packed"):
                # Donated params and state: no buffer beyond params + grads + state.
                assert rows[label]["peak_vs_arrays"] <= 1.05, (name, label, rows[label])
    assert "| gpt2 (" in (tmp_path / "step.md").read_text()


@pytest.mark.parametrize("argv", [["--optimizers", "adamx"], ["--orders", "0"],
                                  ["--rounds", "0"]])
def test_step_benchmark_refuses_bad_arguments(scripts, argv, capsys):
    step, _, _ = scripts
    with pytest.raises(SystemExit):
        step.main(["--size", "smoke", *argv])
    assert argv[0] in capsys.readouterr().err


def test_construction_orders_put_each_implementation_first_and_last_alike(scripts):
    step, _, _ = scripts
    assert step.construction_orders(["a", "b", "c"], 2) == [["a", "b", "c"], ["c", "b", "a"]]
    orders = step.construction_orders(["a", "b", "c"], 6)
    assert len({tuple(o) for o in orders}) == 6
    for name in "abc":
        assert sum(o[0] == name for o in orders) == sum(o[-1] == name for o in orders) == 2
    assert step.rounds_per_order(5, 2) == 3 and step.rounds_per_order(1, 4) == 1


def test_compile_order_script_runs(scripts, capsys):
    _, _, compile_order = scripts
    compile_order.main(["--copies", "2", "--leaves", "3", "--rounds", "2", "--steps", "1"])
    assert "compiled #2" in capsys.readouterr().out


def test_end_to_end_packed_and_tree_train_alike(scripts, tmp_path):
    _, end_to_end, _ = scripts

    def losses(weight_decay):
        end_to_end.main(["--layers", "3", "--width", "16", "--batch", "8", "--rounds", "2",
                         "--steps", "2", "--lr", "0.05", "--weight-decay", str(weight_decay),
                         "--out", str(tmp_path)])
        rows = json.loads((tmp_path / "end_to_end.json").read_text())["rows"]
        assert set(rows) == {"tree", "optax tree", "packed"}
        assert all(row["rounds"] == 2 for row in rows.values())
        return {name: row["loss"] for name, row in rows.items()}

    # Every implementation ran the same 7 steps from the same init, at a learning rate
    # and decay large enough that another mask or decay would show.
    decayed, undecayed = losses(5.0), losses(0.0)
    assert decayed["packed"] == pytest.approx(decayed["tree"], rel=1e-5)
    assert decayed["optax tree"] == pytest.approx(decayed["tree"], rel=1e-5)
    assert abs(decayed["tree"] - undecayed["tree"]) > 1e-3 * abs(undecayed["tree"])


def test_sweep_benchmark_counts_the_models_matmul_flops():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import sweep
    finally:
        sys.path.remove(str(BENCHMARKS))
        sys.modules.pop("sweep", None)
    figures = sweep.main(["--cells", "4", "--epochs", "1", "--rounds", "1"])
    # The MNIST-1D LayerNorm MLP, batch 100, per cell and step: forward 40·100 + 100·100 +
    # 100·10 multiply-adds per example, the weight gradients as many, the input gradients
    # of the two upper layers 100·100 + 100·10 (the data's gradient is never formed).
    per_cell = 2 * 100 * (15_000 + 15_000 + 11_000)
    assert figures["matmul_gflop_per_step"] == pytest.approx(4 * per_cell / 1e9)
    assert figures["steps"] == 32  # one epoch of 3,200 examples
    assert 0 < figures["share_of_matmul_rate"] and figures["sweep_gflops"] > 0
    assert figures["batch"] == "per cell" and figures["per_cell_over_shared"] > 0
    with pytest.raises(SystemExit):
        sweep.main(["--rounds", "0"])


def test_sweep_benchmark_times_seeds_joined_against_one_seed_per_program():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import sweep
    finally:
        sys.path.remove(str(BENCHMARKS))
        sys.modules.pop("sweep", None)
    figures = sweep.main(["--joined-seeds", "2", "--cells", "4", "--epochs", "1", "--rounds",
                          "1", "--parallel", "2"])
    assert (figures["cells"], figures["seeds"], figures["steps"]) == (4, 2, 32)
    assert set(figures["us_per_cell_step"]) == {"apart", "joined", "apart_at_once",
                                                 "joined_at_once"}
    assert figures["joined_over_apart"] > 0 and figures["joined_over_apart_at_once"] > 0
    with pytest.raises(SystemExit):
        sweep.main(["--joined-seeds", "1"])
