"""The runner's extra axes (training-set size, width) and the λ*-against-N analysis."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from wdchain.ablate import _cli, _report, _scaling, sweep
from wdchain.ablate._axes import Variant, nested_subset, task_for
from wdchain.ablate._builtin import digits, mnist1d_scaling
from wdchain.ablate._presets import PRESETS
from wdchain.ablate._task import Task


def quiet(line: str) -> None:
    del line


# -- the subsets ------------------------------------------------------------------------

def test_nested_subsets_keep_each_class_share_and_the_smaller_inside_the_larger():
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)  # shares 6 : 3 : 1
    subsets = {n: nested_subset(labels, n) for n in (10, 20, 50, 100)}
    # Hand count: each prefix of the interleaved order holds the classes in proportion.
    assert np.bincount(labels[subsets[10]], minlength=3).tolist() == [6, 3, 1]
    assert np.bincount(labels[subsets[20]], minlength=3).tolist() == [12, 6, 2]
    assert np.bincount(labels[subsets[50]], minlength=3).tolist() == [30, 15, 5]
    assert subsets[100].tolist() == list(range(100))
    for small, large in ((10, 20), (20, 50), (50, 100)):
        assert set(subsets[small]) < set(subsets[large])
    assert len(set(subsets[50])) == 50


def test_a_sized_task_trains_on_the_same_subset_in_every_seed_and_keeps_validation():
    task = dataclasses.replace(mnist1d_scaling(), epochs=1)
    small = task_for(task, Variant(train_size=1000), seeds=(0, 1))
    large = task_for(task, Variant(train_size=2000), seeds=(0, 1))
    first, second = small.for_seed(0), small.for_seed(1)
    np.testing.assert_array_equal(first.train[0], second.train[0])  # type: ignore[index]
    assert len(first.train[0]) == 1000 and len(large.for_seed(0).train[0]) == 2000  # type: ignore[index]
    # The smaller set is inside the larger one (rows of x compared as bytes).
    rows = {row.tobytes() for row in large.for_seed(1).train[0]}  # type: ignore[index]
    assert all(row.tobytes() in rows for row in first.train[0])  # type: ignore[index]
    np.testing.assert_array_equal(first.validation[0], task.for_seed(0).validation[0])  # type: ignore[index]
    assert np.bincount(first.train[1]).min() >= 95  # type: ignore[index]  # 10 classes, ~100 each


def test_a_width_builds_the_model_at_that_width_and_a_model_without_one_is_refused():
    task = digits()
    wide = task_for(task, Variant(width=32), seeds=(0,))
    from flax import nnx

    assert wide.model(nnx.Rngs(0)).hidden1.kernel.value.shape == (64, 32)
    assert "width 32" in wide.label
    plain = dataclasses.replace(task, model=lambda rngs: task.model(rngs))
    with pytest.raises(ValueError, match="model\\(rngs, width=w\\)"):
        task_for(plain, Variant(width=32), seeds=(0,))


@pytest.mark.parametrize(("bad", "message"), [
    ({"train_sizes": [0]}, "train_sizes must be integers ≥ 1"),
    ({"train_sizes": [5000]}, "more than the 1078 training examples of seed 0"),
    ({"train_sizes": [10]}, "fewer examples than one batch"),
    ({"widths": [1.5]}, "widths must be integers ≥ 1"),
])
def test_sweep_refuses_bad_axes_naming_them(bad, message):
    with pytest.raises(ValueError, match=message):
        sweep(digits(), arms=["adamw"], lrs=[1e-2], weight_decays=[1e-3], log=quiet, **bad)


def test_a_batch_function_task_has_no_train_sizes():
    train, validation, test = (digits().for_seed(0).train, digits().for_seed(0).validation,
                               digits().for_seed(0).test)
    del train
    task = Task(digits().model, lambda seed, epoch: [], test, validation=validation,
                steps_per_epoch=1)
    with pytest.raises(ValueError, match="not a batch function"):
        task_for(task, Variant(train_size=200), seeds=(0,))


# -- the analysis on a grid with a known answer -------------------------------------------

def synthetic_rows(star: dict[tuple[str, float, int], list[float]]) -> list[dict]:
    """Rows whose validation error is a parabola in log10 λ with its vertex at log λ*.

    ``star[(arm, lr, N)]`` gives log10 λ* per seed; the grid's λ are 10^-3 … 10^2 in
    steps of 0.5, so the vertices lie between grid points and only the refinement finds them.
    """
    wds = np.logspace(-3, 2, 11)
    rows = []
    for (arm, lr, size), per_seed in star.items():
        for seed, log_star in enumerate(per_seed):
            for wd in wds:
                error = 0.2 + 0.01 * (math.log10(wd) - log_star) ** 2
                rows.append({"arm": arm, "preconditioner": "adam",
                             "decay": "decoupled" if arm == "adamw" else "l2", "lr": lr,
                             "weight_decay": float(wd), "seed": seed, "train_size": size,
                             "validation_error": error, "test_error": error,
                             "diverged": False})
    return rows


def test_lambda_star_is_refined_between_grid_points_and_its_slope_against_n_is_found():
    # adamw: λ* = 10^0.8 · (1000/N) in seed 0 (slope −1); seed 1 has slope −0.5.
    sizes = (1000, 2000, 4000, 8000)
    star = {("adamw", 1e-2, n): [0.8 - math.log10(n / 1000), 0.3 - 0.5 * math.log10(n / 1000)]
            for n in sizes}
    grids = [grid for grid, _ in _report.analyse(synthetic_rows(star))]
    (trend,) = _scaling.trends(grids, {"batch_size": 100, "epochs": 10})
    mean_star = [(0.8 + 0.3) / 2 - 0.75 * math.log10(n / 1000) for n in sizes]
    # The seed-mean error is a parabola with its vertex at the mean of the two vertices.
    np.testing.assert_allclose([o.log_lambda for o in trend.optima], mean_star, atol=1e-9)
    assert all(o.interior for o in trend.optima)
    assert trend.slope == pytest.approx(-0.75)
    assert trend.per_seed_slopes == pytest.approx((-1.0, -0.5))
    assert trend.slope_mean == pytest.approx(-0.75)
    assert trend.slope_std == pytest.approx(math.sqrt(0.125))
    np.testing.assert_allclose(trend.optima[0].per_seed, (0.8, 0.3), atol=1e-9)


def test_an_optimum_at_the_grids_edge_is_flagged_and_left_out_of_the_slope():
    star = {("adamw", 1e-2, n): [1.0 - math.log10(n / 1000)] for n in (2000, 4000, 8000)}
    star["adamw", 1e-2, 1000] = [3.0]  # beyond the grid's largest λ, 10^2
    grids = [grid for grid, _ in _report.analyse(synthetic_rows(star))]
    (trend,) = _scaling.trends(grids, {"batch_size": 100, "epochs": 10})
    assert trend.edges == (1000,) and trend.optima[0].log_lambda == 2.0
    assert trend.slope_points == 3
    assert trend.slope == pytest.approx(-1.0)
    text = "\n".join(_scaling.findings([trend]))
    assert "edge at N = 1000: extend the λ grid" in text


def test_tau_epoch_at_the_optimum_against_a_hand_computation():
    # Cosine over T steps: Σ_t η_t = T/2 + 1/2 (cos(πt/T) and cos(π(T−t)/T) cancel).
    # N = 1000, B = 100, 40 epochs: T = 400, Σ η = 200.5.
    # Paper's decay, λ = 0.01: Σ c_t λ = 2.005, τ_iter = 400/2.005, τ_epoch = τ_iter/10.
    expected = 400 / 2.005 / 10
    assert _scaling.tau_epoch("independent", 1e-2, 0.01, train_size=1000, batch_size=100,
                              epochs=40) == pytest.approx(expected, rel=1e-6)
    # torch's decay at lr 0.01, λ = 1 decays at the same rate: α_t·λ = 0.01·η_t.
    assert _scaling.tau_epoch("decoupled", 1e-2, 1.0, train_size=1000, batch_size=100,
                              epochs=40) == pytest.approx(expected, rel=1e-6)
    # Twice the N, same epochs and λ: T doubles, τ_iter ≈ doubles, τ_epoch stays.
    assert _scaling.tau_epoch("independent", 1e-2, 0.01, train_size=2000, batch_size=100,
                              epochs=40) == pytest.approx(800 / 4.005 / 20, rel=1e-6)
    assert math.isnan(_scaling.tau_epoch("l2", 1e-2, 0.01, train_size=1000, batch_size=100,
                                         epochs=40))


def test_summary_says_whether_the_optimum_timescale_stays_constant():
    sizes = (1000, 2000, 4000, 8000)
    constant = {("adamw", 1e-2, n): [0.5 - math.log10(n / 1000)] for n in sizes}
    fixed = {("adamw", 1e-2, n): [0.5] for n in sizes}
    info = {"batch_size": 100, "epochs": 40, "test_examples": 1000, "command": "x"}
    text = _report.summary_markdown(synthetic_rows(constant), info)
    assert "## The best λ against the training-set size N" in text
    assert "roughly constant, as the rule says" in text and "slope -1.00" in text
    text = _report.summary_markdown(synthetic_rows(fixed), info)
    assert "not constant: it falls with N" in text and "slope +0.00" in text


# -- the command line and the preset --------------------------------------------------------

def test_cli_parses_train_sizes_and_widths_and_refuses_bad_ones(monkeypatch, capsys, tmp_path):
    args = _cli.parser().parse_args(["--train-sizes", "2000,1000,2000", "--widths", "64"])
    assert args.train_sizes == (1000, 2000) and args.widths == (64,)
    monkeypatch.setattr(_cli, "sweep", None)
    for bad in (["--train-sizes", "0"], ["--widths", "wide"], ["--train-sizes", ","]):
        with pytest.raises(SystemExit):
            _cli.main([*bad, "--out", str(tmp_path)])
        assert "--" + bad[0].lstrip("-") in capsys.readouterr().err


def test_cli_hands_the_axes_and_the_scaling_presets_grids_to_sweep(cli_sweep_arguments,
                                                                   tmp_path):
    seen = cli_sweep_arguments(["--preset", "scaling", "--out", str(tmp_path)])
    preset = PRESETS["scaling"]
    assert seen["train_sizes"] == (1000, 2000, 4000, 8000) and seen["lrs"] == (3e-3, 1e-2)
    assert seen["weight_decays"]["adamw"][0] == pytest.approx(1e-2)
    assert len(seen["weight_decays"]["adamw-independent"]) == 13
    assert seen["arms"] == list(preset.arms) and seen["task"].epochs == 40
    assert seen["task"].name == "mnist1d-scaling"
    seen = cli_sweep_arguments(["--task", "digits", "--train-sizes", "300,600", "--widths",
                                "16,32", "--arms", "adamw", "--out", str(tmp_path / "b")])
    assert seen["train_sizes"] == (300, 600) and seen["widths"] == (16, 32)
    assert seen["lrs"] is None


@pytest.mark.slow
def test_a_train_size_and_width_sweep_writes_the_columns_and_the_scaling_report(tmp_path):
    _cli.main(["--task", "digits", "--arms", "adamw", "--lrs", "1e-2", "--wds",
               "1e-3,1e-1,10", "--epochs", "1", "--seeds", "0", "--train-sizes", "200,400",
               "--widths", "8,16", "--out", str(tmp_path)])
    rows = _report.read_csv(tmp_path / "results.csv")
    assert len(rows) == 3 * 2 * 2
    assert list(rows[0])[5:8] == ["seed", "train_size", "width"]
    assert {(r["train_size"], r["width"]) for r in rows} == {(200, 8), (200, 16), (400, 8),
                                                            (400, 16)}
    # Two widths train differently from the same seed.
    by = {(r["train_size"], r["width"], r["weight_decay"]): r["train_loss"] for r in rows}
    assert by[200, 8, 1e-3] != by[200, 16, 1e-3]
    summary = (tmp_path / "summary.md").read_text()
    assert "## The best λ against the training-set size N" in summary
    assert "## The best λ against the model's width" in summary
    assert "| adamw, N=200, width=8 |" in summary
    for name in ("scaling_train_size.png", "scaling_width.png", "heatmap_adamw_N200_width8.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_a_size_missing_a_seed_counts_as_no_optimum_in_that_seed():
    sizes = (1000, 2000, 4000)
    star = {("adamw", 1e-2, n): [0.5 - math.log10(n / 1000)] * 2 for n in sizes}
    rows = [r for r in synthetic_rows(star) if not (r["train_size"] == 4000 and r["seed"] == 1)]
    grids = [grid for grid, _ in _report.analyse(rows)]
    (trend,) = _scaling.trends(grids, {"batch_size": 100, "epochs": 10})
    assert math.isnan(trend.optima[2].per_seed[1]) and trend.slope == pytest.approx(-1.0)
    assert trend.per_seed_slopes == pytest.approx((-1.0, -1.0))  # seed 1 from two sizes


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_presets_grids_name_every_arm_so_the_runner_takes_them(name):
    """The runner refuses a grid mapping that lacks an arm; a preset must never be refused
    (the default preset's command is the README's main job)."""
    from wdchain.ablate._checks import check_grid_mapping

    preset = PRESETS[name]
    check_grid_mapping("lrs", preset.lrs, preset.arms)
    check_grid_mapping("weight_decays", preset.weight_decays, preset.arms)


def test_the_default_presets_adamw_grid_is_the_arms_default():
    from wdchain.ablate._arms import parse_arm

    grids = PRESETS["default"].weight_decays
    assert isinstance(grids, dict)
    np.testing.assert_allclose(grids["adamw-independent"],
                               parse_arm("adamw-independent").default_weight_decays(8))
    assert max(grids["adam-l2"]) == pytest.approx(10.0)  # one decade past the default's 1


def test_tau_epoch_follows_the_runs_recorded_schedule_and_is_undefined_for_an_unknown_one():
    """τ_epoch is computed under the schedule the run trained with (run.json's recipe):
    constant gives 1/(η·λ)·B/N, cosine twice that; a user's callable, known only by its
    name, leaves τ_epoch NaN rather than assume cosine."""
    star = {("adamw", 1e-2, n): [0.0 - math.log10(n / 1000)] for n in (1000, 2000)}
    grids = [grid for grid, _ in _report.analyse(synthetic_rows(star))]
    info = {"batch_size": 100, "epochs": 10}

    def taus(schedule_name):
        (trend,) = _scaling.trends(grids, {**info, "recipe": {"schedule": schedule_name}})
        return [o.tau_epoch for o in trend.optima]

    constant, cosine = taus("constant"), taus("cosine")
    n, lam = 1000, 10.0 ** _scaling.trends(grids, info)[0].optima[0].log_lambda
    # AdamW (torch-scaled): per-step rate lr·λ·η_t; τ_iter = 1/(lr·λ); τ_epoch = τ_iter·B/N.
    assert constant[0] == pytest.approx(1 / (1e-2 * lam) * 100 / n, rel=0.05)
    assert cosine[0] == pytest.approx(2 * constant[0], rel=0.1)
    assert taus("cosine") == pytest.approx(_scaling.trends(grids, info)[0].optima and
                                           [o.tau_epoch for o in
                                            _scaling.trends(grids, info)[0].optima])
    assert all(math.isnan(t) for t in taus("my_schedule"))
