"""An ``nnx.Optimizer`` saved with orbax and restored in a fresh process continues bit
for bit, with the recipe of docs/reliability.md (its code block is run here); a
checkpoint that does not fit names the container and the slot.

Run as a script (``python tests/test_nnx_checkpoint.py DIR``), this file is the fresh
process: it restores the checkpoint in DIR and finishes the run.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

import wdchain

DOC = Path(__file__).parent.parent / "docs" / "reliability.md"
SAVE_AT, NUM_STEPS = 3, 6


def recipe() -> dict:
    """The documented save/restore functions, executed from the page."""
    block = re.search(r"```python\n# nnx-checkpoint\n(.*?)```", DOC.read_text(), re.S).group(1)
    namespace: dict = {}
    exec(block, namespace)
    return namespace


class Model(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.dense = nnx.Linear(4, 8, rngs=rngs)
        self.norm = nnx.LayerNorm(8, rngs=rngs)
        self.out = nnx.Linear(8, 2, rngs=rngs)

    def __call__(self, x):
        return self.out(jax.nn.relu(self.norm(self.dense(x))))


def make_tx():
    return wdchain.skip_nonfinite(wdchain.adamw(
        lr=optax.cosine_decay_schedule(1e-2, NUM_STEPS), weight_decay=0.1,
        mask=wdchain.decay_mask))


def build():
    model = Model(nnx.Rngs(0))
    return model, nnx.Optimizer(model, make_tx(), wrt=nnx.Param)


@nnx.jit
def train_step(model, optimizer, t):
    x = jax.random.normal(jax.random.fold_in(jax.random.key(1), t), (16, 4))
    grads = nnx.grad(lambda m: jnp.mean((m(x) - 1.0) ** 2))(model)
    optimizer.update(model, grads)


def run(model, optimizer, start, stop):
    for t in range(start, stop):
        train_step(model, optimizer, t)


def leaves(model, optimizer):
    return [np.asarray(x) for x in jax.tree.leaves((nnx.state(model), nnx.state(optimizer)))]


def resume(directory: str) -> None:
    """The fresh process: restore with the documented recipe, finish, save."""
    model, optimizer = build()
    recipe()["restore"](Path(directory), model, optimizer)
    run(model, optimizer, SAVE_AT, NUM_STEPS)
    np.savez(Path(directory) / "resumed.npz", *leaves(model, optimizer))


@pytest.mark.slow
def test_an_nnx_optimizer_resumes_bit_for_bit_in_a_fresh_process(tmp_path):
    model, optimizer = build()
    run(model, optimizer, 0, SAVE_AT)
    recipe()["save"](tmp_path, model, optimizer)
    run(model, optimizer, SAVE_AT, NUM_STEPS)
    want = leaves(model, optimizer)
    subprocess.run([sys.executable, __file__, str(tmp_path)], check=True, timeout=300)
    with np.load(tmp_path / "resumed.npz") as got:
        assert len(got.files) == len(want)
        for i, leaf in enumerate(want):
            assert got[f"arr_{i}"].dtype == leaf.dtype and np.array_equal(got[f"arr_{i}"], leaf), i
    assert int(wdchain.step_count(optimizer)) == NUM_STEPS


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("nnx")
    model = Model(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, wdchain.adamw(1e-2), wrt=nnx.Param)
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(path / "optimizer", nnx.state(optimizer))
        return ckpt.restore(path / "optimizer")


def test_another_optimizer_is_refused_naming_the_container_and_the_slot(checkpoint):
    model = Model(nnx.Rngs(0))
    sgd = nnx.Optimizer(model, wdchain.sgd(momentum=0.9), wrt=nnx.Param)
    with pytest.raises(ValueError, match=(
            r"restore_state: the checkpoint has no slot state\[2\]\.trace\.dense\.bias "
            r"\(slot 2 of the chain, a ScaleByMomentumState\), which the nnx\.Optimizer's "
            r"opt_state needs: .* \(its slot 2 holds step\)")):
        wdchain.restore_state(sgd, model, checkpoint)


def test_another_model_is_refused_naming_the_leaf(checkpoint):
    class Wider(Model):
        def __init__(self, rngs):
            super().__init__(rngs)
            self.out = nnx.Linear(8, 3, rngs=rngs)

    model = Wider(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, wdchain.adamw(1e-2), wrt=nnx.Param)
    with pytest.raises(ValueError, match=(
            r"state\[1\]\.mu\.out\.bias \(slot 1 of the chain, a ScaleByAdamState\) is "
            r"float32\[2\] in the checkpoint, but the nnx\.Optimizer's opt_state needs "
            r"float32\[3\] there")):
        wdchain.restore_state(optimizer, model, checkpoint)


def test_an_nnx_checkpoint_given_with_tx_and_params_says_what_to_pass(checkpoint):
    model = Model(nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"the state of an nnx\.Optimizer .* "
                                         r"restore_state\(optimizer, model, loaded\)"):
        wdchain.restore_state(wdchain.adamw(1e-2), nnx.state(model, nnx.Param), checkpoint)
    state = wdchain.restore_state(wdchain.adamw(1e-2), nnx.state(model, nnx.Param),
                                  checkpoint["opt_state"])  # the optax state alone works
    assert int(wdchain.step_count(state)) == 0


if __name__ == "__main__":
    resume(sys.argv[1])
