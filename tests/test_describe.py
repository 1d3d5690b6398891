"""``wdchain.describe``: the recipe and the weight-decay rule, read from positions."""

from __future__ import annotations

import optax
import pytest

import wdchain


def test_adam_with_l2() -> None:
    assert wdchain.describe(wdchain.adam(weight_decay=0.01)) == (
        "l2(λ=0.01) → adam(β=(0.9, 0.999), ε=1e-08) → lr(α=0.001)\n"
        "θ ← θ − lr_t·adam(g + λθ)\n"
        "decay l2(λ=0.01): enters the optimizer's statistics (adam); multiplied by lr_t"
    )


def test_adamw() -> None:
    assert wdchain.describe(wdchain.adamw(lr=0.1, weight_decay=0.05)) == (
        "adam(β=(0.9, 0.999), ε=1e-08) → decoupled(λ=0.05) → lr(α=0.1)\n"
        "θ ← θ − lr_t·(adam(g) + λθ)\n"
        "decay decoupled(λ=0.05): bypasses the optimizer's statistics (placed after adam); "
        "multiplied by lr_t"
    )


def test_independent_and_constant_are_told_apart() -> None:
    def build(decay: str) -> str:
        return wdchain.describe(wdchain.build(
            "adam", decay=decay, lr=1e-3, weight_decay=0.1, schedule=lambda c: 1.0
        ))

    independent, constant = build("independent"), build("constant")
    assert independent.splitlines()[0].endswith(
        "lr(α=0.001·η(t)) → independent(λ=0.1, ×η_t)"
    )
    assert independent.splitlines()[1] == "θ ← θ − lr_t·adam(g) − η_t·λθ"
    assert "multiplied by η_t = lr_t / lr_peak, not by lr_t" in independent
    assert constant.splitlines()[0].endswith("→ independent(λ=0.1)")
    assert constant.splitlines()[1] == "θ ← θ − lr_t·adam(g) − λθ"
    assert "multiplied by 1, neither by lr_t nor by η_t" in constant


def test_every_arm_has_its_own_label() -> None:
    for preconditioner in wdchain.PRECONDITIONERS:
        labels = {
            wdchain.describe(wdchain.build(preconditioner, decay=d, weight_decay=0.1))
            for d in wdchain.PLACEMENTS
        }
        expected = 4 if preconditioner == "sgd" else 5  # sgd: l2 ≡ decoupled, but named
        assert len({label.splitlines()[1] for label in labels}) == expected
        assert len(labels) == 5


def test_zero_decay_vanishes() -> None:
    text = wdchain.describe(wdchain.build("adam", decay="l2", weight_decay=0.0))
    assert text.splitlines() == [
        "adam(β=(0.9, 0.999), ε=1e-08) → lr(α=0.001)",
        "θ ← θ − lr_t·adam(g)",
        "no weight decay",
    ]


def test_sgd_has_no_statistics_and_momentum_has() -> None:
    sgd = wdchain.describe(wdchain.sgd(lr=0.1, weight_decay=0.1))
    assert "no preconditioner, so L2 and decoupled decay are the same update" in sgd
    momentum = wdchain.describe(wdchain.sgd(lr=0.1, momentum=0.9, weight_decay=0.1))
    assert "enters the optimizer's statistics (momentum)" in momentum
    assert "θ ← θ − lr_t·momentum(g + λθ)" in momentum


def test_rule_comes_from_position_not_name() -> None:
    """An "l2" transform placed after the preconditioner is decoupled decay, and a
    "decoupled" one placed before it is L2: describe follows the position."""
    moved_l2 = wdchain.chain(
        wdchain.scale_by_adam(), wdchain.add_l2_to_grad(0.1), wdchain.scale_by_learning_rate(0.1)
    )
    text = wdchain.describe(moved_l2)
    assert "θ ← θ − lr_t·(adam(g) + λθ)" in text
    assert "decay l2(λ=0.1): bypasses the optimizer's statistics" in text
    moved_decoupled = wdchain.chain(
        wdchain.decoupled_weight_decay(0.1), wdchain.scale_by_rms(),
        wdchain.scale_by_learning_rate(0.1),
    )
    text = wdchain.describe(moved_decoupled)
    assert "θ ← θ − lr_t·rmsprop(g + λθ)" in text
    assert "decay decoupled(λ=0.1): enters the optimizer's statistics (rmsprop)" in text


def test_maximize_masks_schedules_and_foreign_parts() -> None:
    tx = wdchain.chain(
        optax.clip_by_global_norm(1.0),
        wdchain.build("rmsprop", decay="l2", weight_decay=0.1, momentum=0.9, maximize=True,
                      mask={"w": True}),
    )
    lines = wdchain.describe(tx).splitlines()
    assert lines[0] == (
        "clip_by_global_norm → maximize → l2(λ=0.1, mask=tree) → rmsprop(α=0.99, ε=1e-08) "
        "→ momentum(μ=0.9) → lr(α=0.001)"
    )
    assert lines[1] == "θ ← θ − lr_t·momentum(rmsprop(−clip_by_global_norm(g) + λθ))"
    assert "enters the optimizer's statistics (rmsprop, momentum)" in lines[2]
    assert lines[3] == (
        "not built by wdchain: clip_by_global_norm; what it does with weight decay is unknown"
    )
    foreign_only = wdchain.describe(wdchain.chain(optax.adamw(1e-3))).splitlines()
    assert foreign_only[-1].startswith("not built by wdchain") and "no weight decay" not in foreign_only
    scheduled = wdchain.describe(wdchain.adagrad(lr=0.1, lr_decay=0.01))
    assert "lr(α=lr/(1 + t·lr_decay))" in scheduled


@pytest.mark.parametrize("name", ["sgd", "adagrad", "rmsprop", "adam", "adamw", "nadam",
                                  "radam", "adamax"])
def test_every_alias_is_described(name: str) -> None:
    text = wdchain.describe(getattr(wdchain, name)(weight_decay=0.1))
    assert text.count("\n") == 2 and "decay " in text


def test_foreign_transformations_are_a_type_error() -> None:
    with pytest.raises(TypeError, match="was not built by wdchain"):
        wdchain.describe(optax.adam(1e-3))
    with pytest.raises(TypeError, match="this str was not built by wdchain"):
        wdchain.describe("adam")
