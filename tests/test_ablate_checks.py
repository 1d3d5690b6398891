"""The runner's input checks (issue 17): no silent wrong result from stale resumes, bad
labels or data, bfloat16 decay, metrics, grids, and the deep errors they replace.

Each test rebuilds a probe of the issue: before, the run trained and gave a plausible but
wrong number (or a deep error); now it is refused before training, naming what to fix.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from ablate_tiny import ARGS, TinyNet, quiet, splits, tiny_task

import wdchain
from wdchain.ablate import _cli, _figures, _report, _trajectories, parse_arm, sweep
from wdchain.ablate._checks import lost_decay

# -- 1. the resume key fingerprints the model, the loss and the data ---------------------------


class TinyTanh(TinyNet):
    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x)))


def _other_init(rngs):
    model = TinyNet(rngs)
    model.hidden.kernel.value = model.hidden.kernel.value * 0.5
    return model


def _error_loss(model, batch):
    x, y = batch
    logits = model(x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean() * 2.0
    return loss, {"error": jnp.mean(jnp.argmax(logits, -1) != y)}


@pytest.mark.parametrize(("change", "named"), [
    ({"model": functools.partial(TinyNet, width=24)}, "params (the model's parameters"),
    ({"model": _other_init}, "init (the model's initial values"),
    ({"model": TinyTanh}, "computation (the computation of the model and loss"),
    ({"loss": _error_loss}, "loss (the loss function"),
])
def test_a_changed_model_or_loss_is_refused_naming_what_changed(tmp_path, change, named):
    rows = sweep(tiny_task(), out=tmp_path, **ARGS)  # before: the old rows came back
    with pytest.raises(ValueError, match=r"holds another run \(it differs in: .*") as error:
        sweep(tiny_task(**change), out=tmp_path, **ARGS)
    assert named in str(error.value)
    assert sweep(tiny_task(), out=tmp_path, **ARGS) == rows  # unchanged: resumed as before


def _stop_after_first_chunk(arm, seed, epochs):
    raise RuntimeError("stop")


def test_checkpoints_and_rows_carry_their_configuration(tmp_path):
    # A checkpoint is left by a run stopped after its first chunk (3 epochs: 3 chunks).
    with pytest.raises(RuntimeError, match="stop"):
        sweep(tiny_task(epochs=3), out=tmp_path, on_chunk=_stop_after_first_chunk, **ARGS)
    (tmp_path / "run.json").unlink()
    other = {**ARGS, "weight_decays": [1e-1]}  # before: resumed the old grid's checkpoint
    with pytest.raises(ValueError, match="written under another configuration"):
        sweep(tiny_task(epochs=3), out=tmp_path, **other)
    # Finished rows too.
    finished = tmp_path / "finished"
    sweep(tiny_task(), out=finished, report=False, **ARGS)  # only results.csv beside the rows
    (finished / "run.json").unlink()
    (finished / "results.csv").unlink()
    with pytest.raises(ValueError, match=r"rows-adamw-seed0.json holds the rows of adamw seed 0 "
                                         r"under another configuration"):
        sweep(tiny_task(), out=finished, **other)


# -- 2. labels and data ----------------------------------------------------------------------


def _with(split: str, x=None, y=None):
    train, validation, test = splits()
    pairs = {"train": train, "validation": validation, "test": test}
    old_x, old_y = pairs[split]
    pairs[split] = (old_x if x is None else x(old_x.copy()), old_y if y is None else y(old_y.copy()))
    return dataclasses.replace(tiny_task(), train=pairs["train"], validation=pairs["validation"],
                               test=pairs["test"])


def _set(index, value):
    def change(array):
        array[index] = value
        return array
    return change


@pytest.mark.parametrize(("task", "message"), [
    (_with("train", y=_set(17, -1)),
     r"the train labels \(seed 0\) hold 1 label\(s\) outside \[0, 3\).*first is -1 at index 17"),
    (_with("validation", y=_set(5, 3)), r"validation labels .* first is 3 at index 5"),
    (tiny_task(model=functools.partial(TinyNet, outputs=2)),
     r"outside \[0, 2\) \(the model has 2 outputs\)"),
    (_with("train", x=_set((4, 2), np.nan)), r"train split \(seed 0\) holds 1 non-finite.*x\[4, 2\] = nan"),
    (_with("test", x=_set((0, 0), np.inf)), r"test split .* x\[0, 0\] = inf"),
    (_with("train", y=lambda y: y.astype(np.float32)),
     r"train labels .* are float32, but the default loss .* y.astype\(np.int32\)"),
    (_with("train", y=lambda y: np.eye(3, dtype=np.int32)[y]),
     r"shape \(96, 3\) \(one-hot or soft labels\?\).*y.argmax\(-1\).*pass your own loss="),
    (_with("train", y=lambda y: y[:, None]), r"shape \(96, 1\).*y\[:, 0\]"),
])
def test_bad_labels_and_inputs_are_refused_naming_split_value_and_index(task, message):
    with pytest.raises(ValueError, match=message):
        sweep(task, **ARGS)


def test_labels_are_not_checked_against_a_custom_loss():
    train, validation, test = splits()

    def regression(model, batch):
        x, y = batch
        return jnp.mean((model(x)[:, 0] - y) ** 2), {}

    task = dataclasses.replace(tiny_task(), loss=regression,
                               train=(train[0], train[1].astype(np.float32)),
                               validation=(validation[0], validation[1].astype(np.float32)),
                               test=(test[0], test[1].astype(np.float32)))
    rows = sweep(task, **ARGS)
    # 4. no "error" metric: the error columns hold the loss, and the summary says so.
    assert rows[0]["validation_error"] == rows[0]["validation_loss"]
    info = {"selection": "loss", "command": "x"}
    text = _report.summary_markdown(rows, info)
    assert "val. loss (%)" in text and "seed-mean **loss**" in text
    assert "val. error" not in text.split("## What")[0]
    assert _figures.colour_label(info).startswith("validation loss × 100")


# -- 3. bfloat16 params ---------------------------------------------------------------------


def test_decay_below_bfloat16_resolution_is_flagged_before_training_and_in_the_summary():
    task = tiny_task(model=functools.partial(TinyNet, dtype=jnp.bfloat16))
    with pytest.warns(wdchain.DecayPrecisionWarning) as caught:
        rows = sweep(task, arms=["adamw"], lrs=[1e-2], weight_decays=[0.0, 1e-3, 1.0],
                     log=quiet)
    message = str(caught[0].message)
    assert "bfloat16" in message and "1 of 3 cells of adamw" in message
    assert "λ up to 0.001" in message and "compensate_rounding" in message
    assert "float32" in message
    # The cell the warning names trained exactly as λ = 0 (what it warns about).
    by_wd = {row["weight_decay"]: row for row in rows}
    assert by_wd[1e-3]["test_loss"] == by_wd[0.0]["test_loss"]
    text = _report.summary_markdown(rows, {"decay_dtype": "bfloat16", "command": "x"})
    assert "**adamw: decay lost to bfloat16 rounding** in 1 of 3 cells" in text


def test_lost_decay_follows_the_resolution_rule():
    params = [jax.ShapeDtypeStruct((2, 2), jnp.bfloat16)]
    half = 2.0**-8  # half of bfloat16's resolution ε = 2⁻⁷
    lrs, wds = [1e-2, 1e-2, 1.0, 1.0], [1e-3, 1.0, 0.5 * half, 2 * half]
    # decoupled: lr·λ against ε/2: 1e-5 lost, 1e-2 kept; lr = 1: λ itself
    assert lost_decay(parse_arm("adamw"), lrs, wds, params) == [(1e-2, 1e-3), (1.0, 0.5 * half)]
    # independent: λ alone, whatever lr
    assert lost_decay(parse_arm("adamw-independent"), lrs, wds, params) == [
        (1e-2, 1e-3), (1.0, 0.5 * half)]
    assert lost_decay(parse_arm("adamw"), lrs, wds, [jax.ShapeDtypeStruct((2,), jnp.float32)]) == []


# -- 4. metrics -----------------------------------------------------------------------------


def _percent_loss(model, batch):
    loss, metrics = wdchain.ablate.classification_loss(model, batch)
    return loss, {"error": 100 * metrics["error"]}


def _per_example_error(model, batch):
    x, y = batch
    logits = model(x)
    return (optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(),
            {"error": (jnp.argmax(logits, -1) != y).astype(jnp.float32)})


def _bare_scalar(model, batch):
    return wdchain.ablate.classification_loss(model, batch)[0]


class _TupleNet(TinyNet):
    def __call__(self, x):
        return super().__call__(x), x


@pytest.mark.parametrize(("change", "error", "message"), [
    ({"loss": _percent_loss}, ValueError, r"'error' metric must be a fraction in \[0, 1\].*"
                                          r"Divide a percentage by 100"),
    ({"loss": _per_example_error}, ValueError, r"metric 'error' has shape \(8,\).*scalars"),
    ({"loss": _bare_scalar}, TypeError, r"loss must return a pair \(loss, metrics\).*returned "
                                        r"ArrayImpl of shape \(\)"),
    ({"model": _TupleNet}, TypeError, r"the model returns a tuple.*return the logits only"),
    ({"test": None}, ValueError, r"test is None \(seed 0\)"),
])
def test_faulty_losses_and_models_are_refused_before_training(change, error, message,
                                                              monkeypatch):
    monkeypatch.setattr("wdchain.ablate._sweep.GridProgram", None)  # training would crash
    task = dataclasses.replace(tiny_task(), **change)
    with pytest.raises(error, match=message):
        sweep(task, **ARGS)


# -- 5. grids, 11. arguments ----------------------------------------------------------------


@pytest.mark.parametrize(("bad", "error", "message"), [
    ({"arms": ["adamw", "adam-l2"], "lrs": {"adamw": [1e-2]}}, ValueError,
     r"lrs as a mapping lacks the arm\(s\) 'adam-l2'"),
    ({"weight_decays": {"adamw": [0.0], "sgdw": [1e-3]}}, ValueError,
     r"names arm\(s\) not in the sweep: 'sgdw'"),
    ({"grid_size": 0, "lrs": None}, ValueError, r"grid_size must be an integer ≥ 1"),
    ({"devices": ["cpu"]}, TypeError, r"devices must be a sequence of jax devices.*got 'cpu'"),
    ({"fresh": "yes"}, ValueError, r"fresh must be False, True or 'all'"),
    ({"out": ""}, ValueError, r"out is empty"),
])
def test_bad_sweep_arguments_are_refused_naming_them(bad, error, message, monkeypatch):
    monkeypatch.setattr("wdchain.ablate._sweep.GridProgram", None)
    with pytest.raises(error, match=message):
        sweep(tiny_task(), **{**ARGS, **bad})


def test_a_batch_function_yielding_another_batch_size_is_refused():
    train, _, _ = splits()

    def batches(seed, epoch):
        for start in range(0, 91, 7):  # 7 examples, batch_size 16
            yield train[0][start:start + 7], train[1][start:start + 7]

    task = tiny_task(train=batches, steps_per_epoch=13)
    with pytest.raises(ValueError, match=r"yielded a batch of \[7\] example\(s\) at batch 0, "
                                         r"but batch_size is 16"):
        sweep(task, **ARGS)


# -- 12. file names from data stay inside out -------------------------------------------------


def test_arm_names_from_rows_cannot_write_outside_out(tmp_path):
    out = tmp_path / "deep" / "out"
    out.mkdir(parents=True)
    rows = [{"arm": "x/../../ESCAPED", "preconditioner": "adam", "decay": "decoupled",
             "lr": lr, "weight_decay": wd, "seed": 0, "train_loss": 1.0, "validation_loss": 1.0,
             "validation_error": 0.5, "test_loss": 1.0, "test_error": 0.5, "diverged": False}
            for lr in (1e-3, 1e-2) for wd in (1e-4, 1e-3)]
    _report.write_report(rows, out, {"command": "x"})
    written = [p for p in tmp_path.rglob("*.png")]
    assert written and all(p.parent == out for p in written)
    assert not list(tmp_path.rglob("ESCAPED*"))


# -- 10. trajectories.csv, 14. command-line habits --------------------------------------------


def test_trajectories_csv_holds_plain_numbers(tmp_path):
    traces = {"adamw": {"param_norm": np.array([15.71, 15.5], np.float64)}}
    _trajectories.write_trajectories(traces, {"command": "x"}, tmp_path)
    lines = (tmp_path / "trajectories.csv").read_text().splitlines()
    assert lines[1:] == ["adamw,1,param_norm,15.71", "adamw,2,param_norm,15.5"]


class _Captured(Exception):
    pass


@pytest.fixture
def captured_sweep(monkeypatch):
    seen = {}

    def fake(task, **kwargs):
        seen.update(kwargs)
        raise _Captured

    monkeypatch.setattr(_cli, "sweep", fake)
    return seen


def test_cli_takes_space_separated_seeds(captured_sweep, tmp_path):
    with pytest.raises(_Captured):  # before: unrecognized arguments: 1 2
        _cli.main(["--seeds", "0", "1", "2", "--arms", "adamw", "--out", str(tmp_path)])
    assert captured_sweep["seeds"] == (0, 1, 2)
    with pytest.raises(_Captured):
        _cli.main(["--seeds", "0,1", "3", "--out", str(tmp_path)])
    assert captured_sweep["seeds"] == (0, 1, 3)


@pytest.mark.parametrize(("args", "message"), [
    (["--lrs", "-1e-3"], "grid values must be finite and > 0 (the grid is log-spaced), got -0.001"),
    (["--wds", "-1e-3,0"], "grid values must be finite and ≥ 0"),
    (["--arms", "adam"], "arm 'adam' needs a decay placement: adam-l2 is torch's adam"),
    (["--out", ""], "the output folder is empty"),
    (["--fresh", "some"], "invalid choice: 'some'"),
])
def test_cli_explains_common_slips(args, message, captured_sweep, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _cli.main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_fresh_all_and_fresh(captured_sweep, tmp_path):
    with pytest.raises(_Captured):
        _cli.main(["--fresh", "--out", str(tmp_path)])
    assert captured_sweep["fresh"] is True
    with pytest.raises(_Captured):
        _cli.main(["--fresh", "all", "--out", str(tmp_path)])
    assert captured_sweep["fresh"] == "all"


def test_run_json_records_the_fingerprint(tmp_path):
    sweep(tiny_task(), out=tmp_path, **ARGS)
    config = json.loads((tmp_path / "run.json").read_text())
    assert {"data", "params", "init", "graph", "loss", "computation"} <= set(config)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sweep(tiny_task(), out=tmp_path, **ARGS)  # the same fingerprint again
