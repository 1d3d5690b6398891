"""The weight-decay ablation runner: sweep any Flax NNX model over lr × λ × seeds.

``python -m wdchain.ablate`` (or ``wdchain-ablate``) runs the default preset: MNIST-1D
(generated locally by the ``mnist1d`` package) with a LayerNorm MLP, Adam + L2 against
AdamW with torch's and with the paper's scaling of the decay. ``--preset paper`` runs
Loshchilov & Hutter's Fig. 2 (Adam and SGD-momentum, three placements, three seeds).

From Python, :func:`sweep` trains any :class:`Task`::

    from wdchain.ablate import Task, sweep
    rows = sweep(Task(MyModel, (x_train, y_train), (x_test, y_test)),
                 arms=["adam-l2", "adamw-independent"], seeds=(0, 1, 2), out="results")

Each arm's grid runs as one vmapped, jitted program (lr and λ are traced values), its
cells spread over the devices of a 1-D mesh; hyperparameters are selected on the
validation split and reported on the test split. An interrupted sweep resumes from
its last checkpoint in ``out``. Needs the ``examples`` extra (mnist1d, scikit-learn,
matplotlib, tqdm, orbax-checkpoint).
"""

from wdchain.ablate._arms import Arm as Arm
from wdchain.ablate._arms import parse_arm as parse_arm
from wdchain.ablate._builtin import TASKS as TASKS
from wdchain.ablate._builtin import LayerNormMLP as LayerNormMLP
from wdchain.ablate._cli import main as main
from wdchain.ablate._linen import from_linen as from_linen
from wdchain.ablate._presets import PRESETS as PRESETS
from wdchain.ablate._report import CSV_COLUMNS as CSV_COLUMNS
from wdchain.ablate._report import analyse as analyse
from wdchain.ablate._report import read_csv as read_csv
from wdchain.ablate._report import write_report as write_report
from wdchain.ablate._schedules import constant as constant
from wdchain.ablate._schedules import cosine as cosine
from wdchain.ablate._schedules import linear as linear
from wdchain.ablate._schedules import parse_schedule as parse_schedule
from wdchain.ablate._schedules import warmup_cosine as warmup_cosine
from wdchain.ablate._schedules import wsd as wsd
from wdchain.ablate._sweep import run_info as run_info
from wdchain.ablate._sweep import sweep as sweep
from wdchain.ablate._task import VALIDATION_FRACTION as VALIDATION_FRACTION
from wdchain.ablate._task import Task as Task
from wdchain.ablate._task import classification_loss as classification_loss
from wdchain.ablate._trajectories import trace as trace

__all__ = [
    "CSV_COLUMNS",
    "PRESETS",
    "TASKS",
    "VALIDATION_FRACTION",
    "Arm",
    "LayerNormMLP",
    "Task",
    "analyse",
    "classification_loss",
    "constant",
    "cosine",
    "from_linen",
    "linear",
    "main",
    "parse_arm",
    "parse_schedule",
    "read_csv",
    "run_info",
    "sweep",
    "trace",
    "warmup_cosine",
    "write_report",
    "wsd",
]
