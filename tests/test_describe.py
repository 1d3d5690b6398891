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
        # sgd, lars: nothing before the decoupled slot, so l2 ≡ decoupled (but named)
        expected = 4 if preconditioner in ("sgd", "lars") else 5
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


ADAMW_LINES = [
    "adam(β=(0.9, 0.999), ε=1e-08) → decoupled(λ=0.01) → lr(α=0.001)",
    "θ ← θ − lr_t·(adam(g) + λθ)",
    "decay decoupled(λ=0.01): bypasses the optimizer's statistics (placed after adam); "
    "multiplied by lr_t",
]


def test_an_optax_chain_names_its_foreign_parts() -> None:
    lines = wdchain.describe(
        optax.chain(optax.clip_by_global_norm(1.0), wdchain.adamw())).splitlines()
    assert lines[0] == ("clip_by_global_norm → adam(β=(0.9, 0.999), ε=1e-08) → "
                        "decoupled(λ=0.01) → lr(α=0.001)")
    assert lines[1] == "θ ← θ − lr_t·(adam(clip_by_global_norm(g)) + λθ)"
    assert lines[-1] == ("not built by wdchain: clip_by_global_norm; what it does with "
                         "weight decay is unknown")


@pytest.mark.parametrize("wrap, header", [
    (lambda tx: optax.MultiSteps(tx, 4),
     "optax.MultiSteps(every_k_schedule=4): the gradients of k calls are accumulated "
     "(averaged), then one step of:"),
    (lambda tx: optax.MultiSteps(tx, 2, use_grad_mean=False).gradient_transformation(),
     "optax.MultiSteps(every_k_schedule=2): the gradients of k calls are accumulated "
     "(summed), then one step of:"),
    (lambda tx: optax.masked(tx, {"w": True}),
     "optax.masked (mask=tree): the leaves the mask selects get the updates of what "
     "follows; the others pass through unchanged:"),
    (lambda tx: optax.apply_if_finite(tx, 3),
     "optax.apply_if_finite: steps with non-finite gradients are skipped; otherwise:"),
], ids=["MultiSteps", "MultiSteps-transformation", "masked", "apply_if_finite"])
def test_optax_wrappers_get_a_header_and_the_wdchain_part_below(wrap, header) -> None:
    lines = wdchain.describe(wrap(wdchain.adamw())).splitlines()
    assert lines == [header] + ["  " + line for line in ADAMW_LINES]


def test_optax_inject_hyperparams_is_described_with_what_it_injects() -> None:
    schedule = optax.linear_schedule(1e-3, 0.0, 10)
    lines = wdchain.describe(
        optax.inject_hyperparams(wdchain.adamw)(lr=schedule, weight_decay=0.01)).splitlines()
    assert lines[0] == ("optax.inject_hyperparams: eps, lr, weight_decay held in the state "
                        "(lr scheduled); values as given:")
    assert lines[1] == "  adam(β=(0.9, 0.999), ε=1e-08) → decoupled(λ=0.01) → lr(α=schedule)"


def test_optax_partition_describes_each_label_and_names_foreign_ones() -> None:
    tx = optax.partition({"decayed": wdchain.adamw(), "plain": optax.sgd(0.1)},
                         {"w": "decayed", "b": "plain"})
    lines = wdchain.describe(tx).splitlines()
    assert lines[0] == "optax.partition: each leaf gets the updates of its label's transformation:"
    assert lines[1:5] == ["  'decayed':"] + ["    " + line for line in ADAMW_LINES]
    assert lines[5] == "  'plain':"
    assert lines[-1] == ("    not built by wdchain: identity, scale; what it does with weight "
                         "decay is unknown")


def test_nested_wrappers_are_indented_in_turn() -> None:
    tx = optax.MultiSteps(optax.chain(optax.masked(wdchain.adamw(), {"w": True}),
                                      optax.clip(1.0)), 2)
    lines = wdchain.describe(tx).splitlines()
    assert lines[1] == "  optax.chain of 2 parts, in order:"
    assert lines[2:4] == ["    part 0", "      optax.masked (mask=tree): the leaves the mask "
                          "selects get the updates of what follows; the others pass through "
                          "unchanged:"]
    assert lines[4] == "        " + ADAMW_LINES[0]
    assert lines[-1].startswith("      not built by wdchain: clip;")


def test_a_composition_with_no_wdchain_part_is_still_a_type_error() -> None:
    for tx in (optax.MultiSteps(optax.adam(1e-3), 2), optax.masked(optax.sgd(0.1), {"w": True})):
        with pytest.raises(TypeError, match=r"not built by wdchain \(nor any part of it\)"):
            wdchain.describe(tx)
