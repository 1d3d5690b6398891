"""The weight-decay ablation runner: ``python -m wdchain.ablate`` or ``wdchain-ablate``.

Trains a Flax NNX model (an MLP, or a small CNN with ``--model cnn``) on
scikit-learn's 8×8 digits with a cosine learning-rate schedule, for every learning
rate × weight decay of each arm, and compares the arms as in Loshchilov & Hutter's
Fig. 2. Each arm's whole grid runs as one vmapped, jitted program. Writes
``results.csv``, ``heatmap_<arm>.png`` per arm and ``summary.md`` to ``--out``.

Needs the ``examples`` extra (scikit-learn, matplotlib, tqdm).
"""

from wdchain.ablate._cli import main as main

__all__ = ["main"]
