"""The selection behind the runner's verdicts: smoothed, seed-pooled, the same cell in every seed."""

from __future__ import annotations

import numpy as np
import pytest

from wdchain.ablate import _analysis


def rows(errors, lrs, wds, arm="adam-l2", test=None):
    errors = np.asarray(errors, float)
    test = errors if test is None else np.asarray(test, float)
    return [{"arm": arm, "preconditioner": "adam", "decay": arm.split("-")[-1], "lr": lr,
             "weight_decay": wd, "seed": s, "validation_error": float(errors[s, i, j]),
             "test_error": float(test[s, i, j]), "diverged": False}
            for s in range(errors.shape[0]) for i, lr in enumerate(lrs)
            for j, wd in enumerate(wds)]


def test_smoothing_is_two_thirds_the_cell_and_a_third_its_neighbours_mean():
    error = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, np.nan]])
    out = _analysis.smoothed(error)
    # Hand computation: (0, 0) has neighbours 0.2 (λ) and 0.4 (lr).
    assert out[0, 0] == pytest.approx(2 / 3 * 0.1 + 1 / 3 * 0.3)
    # (0, 2)'s lr neighbour diverged: only 0.2 counts.
    assert out[0, 2] == pytest.approx(2 / 3 * 0.3 + 1 / 3 * 0.2)
    assert out[1, 1] == pytest.approx(2 / 3 * 0.5 + 1 / 3 * np.mean([0.2, 0.4]))
    assert np.isnan(out[1, 2])


def test_a_lone_lucky_cell_is_not_selected_over_a_good_region():
    lrs, wds = [1e-3, 1e-2, 1e-1], [1e-4, 1e-3, 1e-2, 1e-1]
    # Seed-mean errors: a lone 0.30 at (lr 1e-3, λ 1e-1) amid 0.60 / 0.45, and a region of
    # 0.32 around (lr 1e-2, λ 1e-3).
    grid = np.array([[0.40, 0.40, 0.45, 0.30],
                     [0.33, 0.32, 0.33, 0.60],
                     [0.40, 0.33, 0.40, 0.60]])
    m = _analysis.measure(_analysis.ArmGrid.from_rows(rows([grid, grid], lrs, wds), "adam-l2"))
    assert (m.selected_lr, m.selected_weight_decay) == (1e-2, 1e-3)
    assert m.selected == (1, 1) and m.edge == ""
    assert m.selected_validation_error == pytest.approx(0.32)  # the raw error, not smoothed


def test_the_paired_gap_compares_each_seed_at_the_cells_selected_on_all_seeds():
    lrs, wds = [1e-3, 1e-2, 1e-1], [1e-4, 1e-3, 1e-2]
    base = np.array([[0.40, 0.40, 0.40], [0.40, 0.30, 0.40], [0.40, 0.40, 0.40]])
    # Seed 1 has a lucky corner cell (0.22) that its own argmin would pick; pooled over
    # the seeds the centre wins, and seed 1's gap is read at the centre.
    seed1 = base.copy()
    seed1[0, 0] = 0.22
    l2 = _analysis.measure(_analysis.ArmGrid.from_rows(rows([base, seed1], lrs, wds), "adam-l2"))
    other = _analysis.measure(_analysis.ArmGrid.from_rows(
        rows([base - 0.05, base - 0.05], lrs, wds, arm="adam-independent"), "adam-independent"))
    assert l2.selected == (1, 1) and l2.per_seed_test_error == pytest.approx((0.30, 0.30))
    mean, _, gaps = _analysis.paired_gap(other, l2)
    assert gaps == pytest.approx((-0.05, -0.05)) and mean == pytest.approx(-0.05)


def test_verdicts_name_the_shape_the_edge_and_the_gap_in_words():
    from wdchain.ablate import _report

    lrs, wds = np.logspace(-4, -1, 4), np.logspace(-6, 0, 7)
    diagonal = np.array([[abs(j - (5 - i)) / 100 + 0.3 for j in range(7)] for i in range(4)])
    aligned = np.array([[abs(j - 3) / 100 + 0.2 + abs(i - 2) / 100 for j in range(7)]
                        for i in range(4)])
    both = (rows([diagonal, diagonal + 0.01], lrs, wds, "adam-l2")
            + rows([aligned, aligned], lrs, wds, "adam-independent"))
    words = _report.verdicts(_report.analyse(both), test_size=1000)
    # The diagonal valley is flat: its first cell (smallest lr) wins the tie, on an edge.
    assert words == {"adam-l2 shape": "diagonal", "adam-l2 selected cell": "smallest lr",
                     "adam-independent shape": "axis-aligned",
                     "adam-independent selected cell": "interior",
                     "adam-independent vs adam-l2": "better"}
    # A gap of one point either way in two seeds is below one SE (1.4 points): no verdict.
    close = (rows([aligned, aligned], lrs, wds, "adam-l2")
             + rows([aligned - 0.01, aligned + 0.01], lrs, wds, "adam-independent"))
    words = _report.verdicts(_report.analyse(close), test_size=1000)
    assert words["adam-independent vs adam-l2"] == "no consistent difference"
