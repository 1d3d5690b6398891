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


TINY = {"width": 16, "layers": 1, "context": 8, "batch_size": 16, "characters": 6000}


def test_transformer_lm_is_causal_and_decays_only_its_matrices():
    from flax import nnx

    example = load("transformer_lm")
    model = example.TransformerLM(nnx.Rngs(0), width=16, layers=2, context=8)
    codes = np.arange(16).reshape(2, 8) % example.VOCAB
    changed = codes.copy()
    changed[:, 5:] = (changed[:, 5:] + 7) % example.VOCAB  # only the future of position 4
    before, after = np.asarray(model(codes)), np.asarray(model(changed))
    np.testing.assert_array_equal(before[:, :5], after[:, :5])  # the past never sees it
    assert not np.allclose(before[:, 5:], after[:, 5:])
    mask = example.DECAY_MASK(nnx.state(model, nnx.Param))
    decayed = {"/".join(map(str, path)) for path, keep in nnx.to_flat_state(mask) if keep}
    assert decayed and all(path.endswith("kernel") for path in decayed)
    assert "tokens/embedding" not in decayed and "blocks/0/attention/query/kernel" in decayed


def test_transformer_lm_sweeps_with_warmup_clipping_and_keeps_its_perplexity(tmp_path):
    import json

    example = load("transformer_lm")
    rows = example.main(epochs=1, grid=2, out=tmp_path, **TINY)
    assert len(rows) == 2 * 2 * 2 and not any(row["diverged"] for row in rows)
    for row in rows:  # validation has < 1,000 windows: one chunk, so exp(mean loss) exactly
        assert row["validation_perplexity"] == pytest.approx(np.exp(row["validation_loss"]),
                                                             rel=1e-5)
    assert min(row["validation_perplexity"] for row in rows) < example.VOCAB  # beats uniform
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["recipe"]["schedule"] == "warmup_cosine:0.05" and run["recipe"]["clip_norm"] == 1.0
    summary = (tmp_path / "summary.md").read_text()
    assert "schedule warmup_cosine:0.05 · clip 1" in summary
    assert "validation_perplexity, test_perplexity" in summary
