"""The ablation runner: outputs, measures, errors before training, reproducibility."""

import csv
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from wdchain.ablate import _cli, _report
from wdchain.ablate._arms import parse_arm
from wdchain.ablate._grid import GridProgram
from wdchain.ablate._task import Conv3x3, load_digits

TINY = ["--lrs", "1e-3,1e-2", "--wds", "1e-4,1e-2", "--epochs", "1"]


def read_csv(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_runner_writes_csv_heatmaps_and_summary(tmp_path, capsys):
    _cli.main(["--arms", "adam-l2,adamw,sgdw", *TINY, "--out", str(tmp_path)])
    rows = read_csv(tmp_path / "results.csv")
    assert list(rows[0]) == list(_report.CSV_COLUMNS)
    assert len(rows) == 3 * 2 * 2  # one row per arm × lr × λ
    assert {(r["arm"], float(r["lr"]), float(r["weight_decay"])) for r in rows} == {
        (arm, lr, wd) for arm in ("adam-l2", "adamw", "sgdw")
        for lr in (1e-3, 1e-2) for wd in (1e-4, 1e-2)
    }
    for row in rows:
        assert 0 <= float(row["test_accuracy"]) <= 1
        assert 0 < float(row["train_loss"]) < 10 and 0 < float(row["test_loss"]) < 10
    # One epoch of Adam at lr 1e-2 beats chance (10 classes) by far.
    assert max(float(r["test_accuracy"]) for r in rows if r["arm"] == "adamw") > 0.5
    for arm in ("adam-l2", "adamw", "sgdw"):
        png = (tmp_path / f"heatmap_{arm}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    summary = (tmp_path / "summary.md").read_text()
    for arm in ("adam-l2", "adamw", "sgdw"):
        assert f"| {arm} |" in summary
    assert "vs adam-l2" in summary  # AdamW's improvement over Adam + L2
    assert "| adamw |" in capsys.readouterr().out


def test_same_seed_same_csv_other_seed_other_csv(tmp_path):
    args = ["--arms", "adamw", "--lrs", "1e-2", "--wds", "1e-3,1e-1", "--epochs", "1"]
    for folder, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        _cli.main([*args, "--seed", seed, "--out", str(tmp_path / folder)])
    first, again, other = ((tmp_path / f / "results.csv").read_text() for f in "abc")
    assert first == again
    assert first != other


def test_each_cell_of_the_vmapped_grid_equals_its_own_run():
    """Cells do not mix: a grid's cells equal each cell trained alone (CNN, one epoch)."""
    program = GridProgram(parse_arm("adam-l2"), "cnn", load_digits(0), epochs=1, seed=0)
    lrs, wds = np.array([1e-3, 1e-2]), np.array([1e-1, 1e-4])
    together = program.run(lrs, wds)
    assert program._epoch._cache_size() == 1  # λ and lr are traced: one compile for the grid
    for i in range(len(lrs)):
        alone = program.run(lrs[i : i + 1], wds[i : i + 1])
        for field_together, field_alone in zip(together, alone):
            np.testing.assert_allclose(field_together[i], field_alone[0], rtol=1e-5, atol=1e-6)
    assert program._epoch._cache_size() == 2  # one more for one cell, not one per cell
    assert together.test_loss[0] != together.test_loss[1]  # and the cells do differ


def test_conv3x3_equals_nnx_conv():
    conv = Conv3x3(4, 5, nnx.Rngs(0))
    conv.bias[...] = jnp.arange(5.0)
    reference = nnx.Conv(4, 5, (3, 3), rngs=nnx.Rngs(1))
    reference.kernel[...] = conv.kernel[...]
    reference.bias[...] = conv.bias[...]
    x = jax.random.normal(jax.random.key(2), (2, 8, 8, 4))
    np.testing.assert_allclose(conv(x), reference(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--arms", "adam-l3"], "unknown arm 'adam-l3'"),
        (["--arms", ","], "at least one arm"),
        (["--lrs", ""], "the grid is empty"),
        (["--lrs=-1e-3,1e-2"], "> 0"),
        (["--wds", "0,1e-3"], "> 0"),
        (["--wds", "abc"], "comma-separated numbers"),
        (["--epochs", "0"], "integer ≥ 1"),
        (["--seed=-1"], "integer ≥ 0"),
        (["--model", "resnet"], "invalid choice"),
    ],
)
def test_bad_arguments_fail_before_training(args, message, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(_cli, "GridProgram", None)  # training would crash differently
    with pytest.raises(SystemExit) as exit_info:
        _cli.main([*args, "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_unwritable_output_folder_fails_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(_cli, "GridProgram", None)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(SystemExit):
        _cli.main(["--out", str(blocker / "results")])
    assert "cannot write to output folder" in capsys.readouterr().err


def test_module_entry_point_reports_an_unknown_arm(tmp_path):
    run = subprocess.run([sys.executable, "-m", "wdchain.ablate", "--arms", "adamv"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 2
    assert "unknown arm 'adamv'" in run.stderr and "adamw" in run.stderr
    assert not list(tmp_path.iterdir())  # not even the default output folder


def _result(accuracy, lrs, wds):
    accuracy = np.asarray(accuracy, float)
    return _report.ArmResult(parse_arm("adamw"), np.asarray(lrs), np.asarray(wds),
                             accuracy, 1 - accuracy, accuracy, recipe="")


def test_separability_slope_on_a_diagonal_and_on_an_axis_aligned_optimum():
    lrs = wds = np.logspace(-4, -1, 4)
    diagonal = 0.9 - 0.01 * np.abs(np.add.outer(np.arange(4), np.arange(4)) - 3)
    assert _report.separability(_result(diagonal, lrs, wds)) == pytest.approx(-1.0)
    aligned = 0.9 - 0.01 * np.abs(np.arange(4) - 2)[None, :] - 0.001 * np.arange(4)[:, None]
    assert _report.separability(_result(aligned, lrs, wds)) == pytest.approx(0.0, abs=1e-12)


def test_best_cell_breaks_ties_by_test_loss_and_basin_counts_half_a_point():
    result = _result([[0.95, 0.98], [0.98, 0.976]], [1e-3, 1e-2], [1e-4, 1e-3])
    result = result._replace(test_loss=np.array([[0.3, 0.2], [0.1, 0.5]]))
    assert _report.best_cell(result) == (1, 0)
    assert _report.basin_width(result.test_accuracy) == 3
