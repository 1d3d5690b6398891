"""Weight decay on a small transformer: a character-level language model, swept over lr × λ.

The text is made here, never downloaded: the docstrings of modules of Python's standard
library (``inspect.getdoc`` of each module and its public functions and classes), as
printable ASCII. It therefore depends on the Python version; the sweep's ``run.json``
records a fingerprint of the data.

The model is a causal transformer in Flax NNX, pre-norm: token and position embeddings,
``layers`` blocks of (LayerNorm → causal self-attention → residual, LayerNorm → MLP →
residual), a final LayerNorm and a linear head; 2 layers of width 64 over 32 characters by
default. The loss is the next-token cross entropy over every position; its metrics are the
next-token error rate (``error``, what the runner selects on) and the perplexity
``exp(loss)``, which the sweep keeps as the columns ``validation_perplexity`` and
``test_perplexity``.

The recipe is the usual one for transformers: a linear warmup over the first 5 % of the
steps then a cosine (``warmup_cosine(0.05)``), gradients clipped to global norm 1
(before the optimizer: an ``l2`` arm adds λθ after the clip). **What is decayed** is the
mask ``wdchain.decay_mask_with(embeddings=False)``: every matrix of the attention, the MLP
and the head; not the biases, not the LayerNorm scales, and not the token and position
embedding tables (their rows are updated only when their token or position occurs, so a
decay would shrink rare tokens' rows most).

Run: ``python examples/transformer_lm.py`` (a 3 × 3 grid for 2 arms, 1 seed; see
``--help``), or through the runner's command line, with any of its options::

    PYTHONPATH=examples python -m wdchain.ablate --task transformer_lm:make_task \\
        --arms adamw,adamw-independent --grid-size 6 --seeds 0 --out results/lm

The text, model, loss and mask are the package's (``wdchain/ablate/_lm.py``); at width 32
on the first 50,000 characters they are the runner's built-in task, ``--task transformer``
(``--preset lm``: AdamW against Adam + L2, 6 × 6, one seed, in minutes on a 2-core CPU).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from wdchain.ablate import sweep
from wdchain.ablate._lm import (  # the built-in ``transformer`` task's code, reused
    DECAY_MASK,
    MODULES,
    VOCAB,
    Block,
    TransformerLM,
    encode,
    make_task,
    next_token_loss,
    sequences,
    stdlib_text,
)

__all__ = ["DECAY_MASK", "MODULES", "VOCAB", "Block", "TransformerLM", "encode", "main",
           "make_task", "next_token_loss", "sequences", "stdlib_text"]


def main(epochs: int = 3, grid: int = 3, out: str | Path = "results/transformer_lm",
         **size: int) -> list[dict]:
    """Sweeps AdamW with torch's and with the paper's scaling over a grid × grid of lr × λ."""
    task = make_task(epochs, **size)
    lrs = np.logspace(-3.5, -2, grid)
    rows = sweep(task, arms=["adamw", "adamw-independent"], lrs=lrs,
                 weight_decays={"adamw": np.logspace(-2, 1, grid),
                                "adamw-independent": np.logspace(-5, -2, grid)},
                 seeds=(0,), out=out, fresh=True, trajectories=False)
    print((Path(out) / "summary.md").read_text())
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--grid", type=int, default=3, help="points per axis")
    parser.add_argument("--out", default="results/transformer_lm")
    args = parser.parse_args()
    main(args.epochs, args.grid, args.out)
