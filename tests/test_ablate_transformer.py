"""The built-in ``transformer`` task and the ``lm`` preset: data, a tiny sweep, the CLI."""

import dataclasses

import numpy as np
import pytest

from wdchain.ablate import sweep, warmup_cosine
from wdchain.ablate._builtin import TASKS
from wdchain.ablate._lm import VOCAB, encode, stdlib_text
from wdchain.ablate._presets import PRESETS


def test_the_transformer_task_cuts_its_50000_characters_80_10_10_into_shifted_windows():
    task = TASKS["transformer"]()
    codes = encode(stdlib_text())[:50_000]
    (x, y), (xv, yv), (xt, yt) = task.train, task.validation, task.test
    # Hand count: (characters − 1) // 32 windows of 40,000, 5,000 and 5,000 characters.
    assert (x.shape, xv.shape, xt.shape) == ((1249, 32), (156, 32), (156, 32))
    np.testing.assert_array_equal(x.ravel(), codes[:1249 * 32])
    np.testing.assert_array_equal(y.ravel(), codes[1:1249 * 32 + 1])  # the next character
    np.testing.assert_array_equal(xv[0], codes[40_000:40_032])  # validation after train
    np.testing.assert_array_equal(xt[0], codes[45_000:45_032])
    np.testing.assert_array_equal(yv[0], codes[40_001:40_033])
    np.testing.assert_array_equal(yt[-1], codes[45_000 + 155 * 32 + 1:45_000 + 156 * 32 + 1])
    assert x.max() < VOCAB and task.name == "transformer" and task.epochs == 12
    assert task.clip_norm == 1.0 and task.schedule == warmup_cosine(0.05)


@pytest.mark.slow  # compiling the transformer's programs: about 40 s on a quiet 2-core CPU
def test_the_builtin_transformer_sweeps_and_its_decay_reaches_the_matrices():
    task = TASKS["transformer"](epochs=1, width=8, batch_size=16)
    x, y = task.train
    task = dataclasses.replace(task, train=(x[:48], y[:48]))  # 3 steps
    rows = sweep(task, arms=["adamw", "adam-l2"], lrs=[1e-2], weight_decays=[0.0, 1.0],
                 seeds=(0,), layout="vmap", log=lambda line: None)
    assert len(rows) == 4 and not any(row["diverged"] for row in rows)
    for row in rows:  # validation is one evaluation chunk: exp(mean loss) exactly
        assert row["validation_perplexity"] == pytest.approx(np.exp(row["validation_loss"]),
                                                             rel=1e-5)
    loss = {(row["arm"], row["weight_decay"]): row["train_loss"] for row in rows}
    assert loss["adamw", 0.0] == pytest.approx(loss["adam-l2", 0.0], rel=1e-6)  # both Adam
    assert loss["adamw", 1.0] != loss["adamw", 0.0] and loss["adam-l2", 1.0] != loss["adamw", 1.0]


def test_cli_takes_task_transformer_and_the_lm_preset(cli_sweep_arguments, tmp_path):
    seen = cli_sweep_arguments(["--task", "transformer", "--arms", "adamw", "--epochs", "2",
                                "--out", str(tmp_path / "a")])
    assert seen["task"].name == "transformer" and seen["task"].epochs == 2
    assert seen["arms"] == ["adamw"] and seen["layout"] is None  # the default preset measures
    seen = cli_sweep_arguments(["--preset", "lm", "--out", str(tmp_path / "b")])
    preset = PRESETS["lm"]
    assert seen["task"].name == "transformer" and seen["task"].epochs == preset.epochs
    assert seen["arms"] == list(preset.arms) and seen["seeds"] == (0,)
    assert len(seen["lrs"]) == 6 and all(len(v) == 6 for v in seen["weight_decays"].values())
    assert seen["layout"] == "loop" and seen["cells_per_program"] is None  # the preset's
    seen = cli_sweep_arguments(["--preset", "lm", "--cells-per-program", "4",
                                "--out", str(tmp_path / "c")])
    assert seen["layout"] is None and seen["cells_per_program"] == 4  # the user's, alone
    seen = cli_sweep_arguments(["--preset", "lm", "--layout", "vmap",
                                "--out", str(tmp_path / "d")])
    assert seen["layout"] == "vmap"
    for preset_args in ([], ["--preset", "paper"], ["--preset", "scaling"]):
        seen = cli_sweep_arguments([*preset_args, "--out", str(tmp_path / "e")])
        assert seen["layout"] == "vmap"
