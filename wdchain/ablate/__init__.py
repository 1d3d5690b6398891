"""The weight-decay ablation runner: ``python -m wdchain.ablate`` or ``wdchain-ablate``.

Trains a Flax NNX model (an MLP, or a small CNN with ``--model cnn``) on
scikit-learn's 8×8 digits with a cosine learning-rate schedule, for every learning
rate × weight decay of each arm, and compares the arms as in Loshchilov & Hutter's
Fig. 2. Each arm's whole grid runs as one vmapped, jitted program. Writes
``results.csv``, ``heatmap_<arm>.png`` per arm and ``summary.md`` to ``--out``.

The default run (MLP, five arms × 6 × 6 cells × 60 epochs) takes about a minute on a
2-core CPU; the CNN costs 15–20 times more per epoch (about 3.5 s per arm and epoch
there, some 20 minutes for the default arms and epochs: use ``--epochs``, ``--arms`` or
a GPU).
JAX picks the device: the same command runs on a GPU or TPU when one is present.
Needs the ``examples`` extra (scikit-learn, matplotlib, tqdm).
"""

from wdchain.ablate._cli import main as main

__all__ = ["main"]
