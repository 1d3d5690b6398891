"""wdchain: weight decay, placed where you mean it.

Every optimizer is an ``optax.chain`` of small transforms; L2 regularisation and
decoupled weight decay are the same term, ``λ·θ``, placed before or after the
preconditioner.
"""

from typing import TYPE_CHECKING, Any

# The registry first, then the preconditioners (importing each registers its entry).
from wdchain import registry as registry
from wdchain import preconditioners as preconditioners
from wdchain import decay as decay
from wdchain import types as types

# Transforms, in the order they sit in a chain.
from wdchain._learning_rate import maximize as maximize
from wdchain.decay import add_l2_to_grad as add_l2_to_grad
from wdchain.preconditioners.momentum import scale_by_momentum as scale_by_momentum
from wdchain.preconditioners.adagrad import scale_by_adagrad as scale_by_adagrad
from wdchain.preconditioners.rmsprop import scale_by_rms as scale_by_rms
from wdchain.preconditioners.adam import scale_by_adam as scale_by_adam
from wdchain.preconditioners.nadam import scale_by_nadam as scale_by_nadam
from wdchain.preconditioners.radam import scale_by_radam as scale_by_radam
from wdchain.preconditioners.adamax import scale_by_adamax as scale_by_adamax
from wdchain.preconditioners.adadelta import scale_by_adadelta as scale_by_adadelta
from wdchain.preconditioners.adafactor import scale_by_adafactor as scale_by_adafactor
from wdchain.preconditioners.lion import scale_by_lion as scale_by_lion
from wdchain.preconditioners.asgd import scale_by_asgd as scale_by_asgd
from wdchain.preconditioners.muon import scale_by_muon_momentum as scale_by_muon_momentum
from wdchain.preconditioners.muon import orthogonalize_newton_schulz as orthogonalize_newton_schulz
from wdchain.preconditioners.muon import scale_by_shape as scale_by_shape
from wdchain.decay import decoupled_weight_decay as decoupled_weight_decay
from wdchain._learning_rate import scale_by_learning_rate as scale_by_learning_rate
from wdchain.preconditioners.lamb import scale_by_trust_ratio as scale_by_trust_ratio
from wdchain.decay import independent_weight_decay as independent_weight_decay
from wdchain.preconditioners.asgd import average_iterates as average_iterates
from wdchain.preconditioners.adopt import scale_by_adopt as scale_by_adopt
from wdchain.preconditioners.ademamix import scale_by_ademamix as scale_by_ademamix
from wdchain.preconditioners.lars import scale_by_lars as scale_by_lars
from wdchain.preconditioners.adan import scale_by_adan as scale_by_adan
from wdchain.preconditioners.schedule_free import (
    scale_by_schedule_free_adam as scale_by_schedule_free_adam,
)
from wdchain.preconditioners.schedule_free import schedule_free as schedule_free

# Their states.
from wdchain.decay import WeightDecayState as WeightDecayState
from wdchain.preconditioners.momentum import ScaleByMomentumState as ScaleByMomentumState
from wdchain.preconditioners.adagrad import ScaleByAdagradState as ScaleByAdagradState
from wdchain.preconditioners.rmsprop import ScaleByRmsState as ScaleByRmsState
from wdchain.preconditioners.adam import ScaleByAdamState as ScaleByAdamState
from wdchain.preconditioners.nadam import ScaleByNadamState as ScaleByNadamState
from wdchain.preconditioners.radam import ScaleByRadamState as ScaleByRadamState
from wdchain.preconditioners.adamax import ScaleByAdamaxState as ScaleByAdamaxState
from wdchain._learning_rate import ScaleByLearningRateState as ScaleByLearningRateState
from wdchain.preconditioners.adadelta import ScaleByAdadeltaState as ScaleByAdadeltaState
from wdchain.preconditioners.adafactor import ScaleByAdafactorState as ScaleByAdafactorState
from wdchain.preconditioners.lion import ScaleByLionState as ScaleByLionState
from wdchain.preconditioners.muon import ScaleByMuonMomentumState as ScaleByMuonMomentumState
from wdchain.preconditioners.asgd import AverageIteratesState as AverageIteratesState
from wdchain.preconditioners.adopt import ScaleByAdoptState as ScaleByAdoptState
from wdchain.preconditioners.ademamix import ScaleByAdemamixState as ScaleByAdemamixState
from wdchain.preconditioners.adan import ScaleByAdanState as ScaleByAdanState
from wdchain.preconditioners.schedule_free import (
    ScaleByScheduleFreeAdamState as ScaleByScheduleFreeAdamState,
)
from wdchain.preconditioners.schedule_free import ScheduleFreeState as ScheduleFreeState

# Optimizers: torch.optim's names, argument order and defaults.
from wdchain.torch import sgd as sgd
from wdchain.torch import adagrad as adagrad
from wdchain.torch import rmsprop as rmsprop
from wdchain.torch import adam as adam
from wdchain.torch import adamw as adamw
from wdchain.torch import nadam as nadam
from wdchain.torch import radam as radam
from wdchain.torch import adamax as adamax
from wdchain.torch import adadelta as adadelta
from wdchain.torch import asgd as asgd
from wdchain.torch import adafactor as adafactor
from wdchain.torch import muon as muon
from wdchain.preconditioners.asgd import asgd_learning_rate as asgd_learning_rate
from wdchain.preconditioners.asgd import averaged_params as averaged_params
from wdchain.preconditioners.muon import muon_labels as muon_labels
from wdchain.preconditioners.schedule_free import (
    schedule_free_learning_rate as schedule_free_learning_rate,
)
from wdchain.preconditioners.schedule_free import (
    schedule_free_eval_params as schedule_free_eval_params,
)

# The open registry of build's preconditioners.
from wdchain.registry import register_preconditioner as register_preconditioner
from wdchain.registry import Preconditioner as Preconditioner

# Composition and inspection.
from wdchain._recipe import chain as chain

# Placement as an ablation axis: the builder, recipes, conventions, masks.
from wdchain.build import build as build
from wdchain.build import PLACEMENTS as PLACEMENTS
from wdchain.build import DECAYS as DECAYS
from wdchain.build import GATES as GATES

if TYPE_CHECKING:
    PRECONDITIONERS: tuple[str, ...]
from wdchain._describe import describe as describe
from wdchain._conventions import paper_to_torch as paper_to_torch
from wdchain._conventions import torch_to_paper as torch_to_paper
from wdchain._conventions import normalized_weight_decay as normalized_weight_decay
from wdchain._masks import decay_mask as decay_mask
from wdchain._masks import decay_mask_with as decay_mask_with
from wdchain._masks import mask_report as mask_report

# Decay at work: timescales, equilibria, per-leaf diagnostics.
from wdchain._timescales import ema_timescale as ema_timescale
from wdchain._timescales import timescale_in_epochs as timescale_in_epochs
from wdchain._timescales import weight_decay_for_timescale as weight_decay_for_timescale
from wdchain._timescales import integrated_decay as integrated_decay
from wdchain._timescales import equilibrium_norm as equilibrium_norm
from wdchain._timescales import equilibrium_angular_update as equilibrium_angular_update
from wdchain._diagnostics import decay_diagnostics as decay_diagnostics

# Many small leaves: one flat buffer per dtype and mask group.
from wdchain._packed import PackedLayout as PackedLayout

# Reliability: non-finite gradients, precision, checkpoints.
from wdchain._guard import skip_nonfinite as skip_nonfinite
from wdchain._guard import skipped_steps as skipped_steps
from wdchain._steps import step_count as step_count
from wdchain._checkpoint import restore_state as restore_state
from wdchain._checkpoint import state_signature as state_signature
from wdchain._precision import inject_hyperparams as inject_hyperparams
from wdchain._precision import check_decay_precision as check_decay_precision
from wdchain._precision import DecayPrecisionWarning as DecayPrecisionWarning
from wdchain._precision import compensate_rounding as compensate_rounding
from wdchain._precision import CompensateRoundingState as CompensateRoundingState

__version__ = "0.4.0"

__all__ = [
    "maximize", "add_l2_to_grad", "scale_by_momentum", "scale_by_adagrad", "scale_by_rms",
    "scale_by_adam", "scale_by_nadam", "scale_by_radam", "scale_by_adamax",
    "scale_by_adadelta", "scale_by_adafactor", "scale_by_lion", "scale_by_asgd",
    "scale_by_muon_momentum", "orthogonalize_newton_schulz", "scale_by_shape",
    "decoupled_weight_decay", "scale_by_learning_rate", "scale_by_trust_ratio",
    "independent_weight_decay", "average_iterates", "scale_by_adopt", "scale_by_ademamix",
    "scale_by_lars", "scale_by_adan", "scale_by_schedule_free_adam", "schedule_free", "WeightDecayState", "ScaleByMomentumState",
    "ScaleByAdagradState", "ScaleByRmsState", "ScaleByAdamState", "ScaleByNadamState",
    "ScaleByRadamState", "ScaleByAdamaxState", "ScaleByLearningRateState",
    "ScaleByAdadeltaState", "ScaleByAdafactorState", "ScaleByLionState",
    "ScaleByMuonMomentumState", "AverageIteratesState", "ScaleByAdoptState", "ScaleByAdemamixState",
    "ScaleByAdanState", "ScaleByScheduleFreeAdamState", "ScheduleFreeState", "sgd", "adagrad", "rmsprop", "adam",
    "adamw", "nadam", "radam", "adamax", "adadelta", "asgd", "adafactor", "muon",
    "asgd_learning_rate", "averaged_params", "muon_labels", "schedule_free_learning_rate", "schedule_free_eval_params", "register_preconditioner",
    "Preconditioner", "chain", "build", "PLACEMENTS", "DECAYS", "GATES", "PRECONDITIONERS",
    "describe", "paper_to_torch", "torch_to_paper", "normalized_weight_decay", "decay_mask",
    "decay_mask_with", "mask_report", "ema_timescale", "timescale_in_epochs",
    "weight_decay_for_timescale", "integrated_decay", "equilibrium_norm",
    "equilibrium_angular_update", "decay_diagnostics", "PackedLayout", "skip_nonfinite",
    "skipped_steps", "step_count", "restore_state", "state_signature", "inject_hyperparams",
    "check_decay_precision", "DecayPrecisionWarning", "compensate_rounding",
    "CompensateRoundingState",
]


def __getattr__(name: str) -> Any:
    """``PRECONDITIONERS``: the registry's names, read at each access (so a preconditioner
    registered later is in it)."""
    if name == "PRECONDITIONERS":
        return registry.names()
    raise AttributeError(f"module 'wdchain' has no attribute {name!r}")

