"""Each example runs with a tiny step count, and its claims hold."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # the examples, run end to end: `pytest -m slow`, run in CI

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seed_experiment_adamw_without_decay_is_adam_then_l2_differs():
    example = load("seed_experiment")
    losses = example.main(num_steps=4)
    adam, adamw_0, adam_l2, adamw = (np.asarray(v) for v in losses.values())
    assert adam.shape == (4,)
    np.testing.assert_array_equal(adam, adamw_0)  # bit for bit, every step
    assert adam_l2[0] == adamw[0]  # same initial weights: same first loss
    assert np.all(adam_l2[1:] != adamw[1:])  # then L2 and decoupled decay part ways


def test_outliers_decay_damps_the_outlier_pull(tmp_path):
    example = load("outliers")
    rows = example.main(num_steps=100, out=tmp_path / "outliers.png")
    assert (tmp_path / "outliers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert rows["no decay"]["damped"] == 0
    for name in ("L2 (adam)", "decoupled (adamw)"):
        assert 0 < rows[name]["damped"] < 1
        assert rows[name]["norm"] < rows["no decay"]["norm"]


@pytest.mark.parametrize("name", ["flax_nnx", "flax_linen"])
def test_flax_mask_leaves_biases_and_norm_scales_undecayed(name):
    example = load(name)
    result = example.main(num_steps=3)
    decayed = 1 - example.LEARNING_RATE * example.WEIGHT_DECAY  # AdamW's step on zero grads
    shrink = result["shrink"]
    assert len(shrink) == 6
    for path, value in shrink.items():
        expected = decayed if "kernel" in path else 1.0
        assert value == pytest.approx(expected, abs=1e-5), path  # float32
    assert 0 <= result["test_accuracy"] <= 1


def test_own_model_example_sweeps_a_batchnorm_dropout_model(tmp_path):
    example = load("own_model")
    rows = example.main(epochs=1, out=tmp_path)
    assert len(rows) == 2 * 4 * 5 * 2  # arms × lrs × λ × seeds
    assert {row["weight_decay"] for row in rows} >= {0.0}
    assert all(0 <= row["test_error"] <= 1 for row in rows if not row["diverged"])
    assert (tmp_path / "figure2.png").exists() and (tmp_path / "summary.md").exists()
