"""wdchain: weight decay, placed where you mean it.

Every optimizer is an ``optax.chain`` of small transforms; L2 regularisation and
decoupled weight decay are the same term, ``λ·θ``, placed before or after the
preconditioner.
"""

# Transforms, in the order they sit in a chain.
from wdchain._learning_rate import maximize as maximize
from wdchain._decay import add_l2_to_grad as add_l2_to_grad
from wdchain._momentum import scale_by_momentum as scale_by_momentum
from wdchain._adaptive import scale_by_adagrad as scale_by_adagrad
from wdchain._adaptive import scale_by_rms as scale_by_rms
from wdchain._adaptive import scale_by_adam as scale_by_adam
from wdchain._adam_variants import scale_by_nadam as scale_by_nadam
from wdchain._adam_variants import scale_by_radam as scale_by_radam
from wdchain._adam_variants import scale_by_adamax as scale_by_adamax
from wdchain._adadelta import scale_by_adadelta as scale_by_adadelta
from wdchain._adafactor import scale_by_adafactor as scale_by_adafactor
from wdchain._lion import scale_by_lion as scale_by_lion
from wdchain._asgd import scale_by_asgd as scale_by_asgd
from wdchain._muon import scale_by_muon_momentum as scale_by_muon_momentum
from wdchain._muon import orthogonalize_newton_schulz as orthogonalize_newton_schulz
from wdchain._muon import scale_by_shape as scale_by_shape
from wdchain._decay import decoupled_weight_decay as decoupled_weight_decay
from wdchain._learning_rate import scale_by_learning_rate as scale_by_learning_rate
from wdchain._lamb import scale_by_trust_ratio as scale_by_trust_ratio
from wdchain._decay import independent_weight_decay as independent_weight_decay
from wdchain._asgd import average_iterates as average_iterates

# Their states.
from wdchain._decay import WeightDecayState as WeightDecayState
from wdchain._momentum import ScaleByMomentumState as ScaleByMomentumState
from wdchain._adaptive import ScaleByAdagradState as ScaleByAdagradState
from wdchain._adaptive import ScaleByRmsState as ScaleByRmsState
from wdchain._adaptive import ScaleByAdamState as ScaleByAdamState
from wdchain._adam_variants import ScaleByNadamState as ScaleByNadamState
from wdchain._adam_variants import ScaleByRadamState as ScaleByRadamState
from wdchain._adam_variants import ScaleByAdamaxState as ScaleByAdamaxState
from wdchain._learning_rate import ScaleByLearningRateState as ScaleByLearningRateState
from wdchain._adadelta import ScaleByAdadeltaState as ScaleByAdadeltaState
from wdchain._adafactor import ScaleByAdafactorState as ScaleByAdafactorState
from wdchain._lion import ScaleByLionState as ScaleByLionState
from wdchain._muon import ScaleByMuonMomentumState as ScaleByMuonMomentumState
from wdchain._asgd import AverageIteratesState as AverageIteratesState

# Optimizers: torch.optim's names, argument order and defaults.
from wdchain._aliases import sgd as sgd
from wdchain._aliases import adagrad as adagrad
from wdchain._aliases import rmsprop as rmsprop
from wdchain._aliases import adam as adam
from wdchain._aliases import adamw as adamw
from wdchain._aliases import nadam as nadam
from wdchain._aliases import radam as radam
from wdchain._aliases import adamax as adamax
from wdchain._aliases_more import adadelta as adadelta
from wdchain._aliases_more import asgd as asgd
from wdchain._aliases_more import adafactor as adafactor
from wdchain._aliases_more import muon as muon
from wdchain._asgd import asgd_learning_rate as asgd_learning_rate
from wdchain._asgd import averaged_params as averaged_params
from wdchain._muon import muon_labels as muon_labels

# Composition and inspection.
from wdchain._recipe import chain as chain

# Placement as an ablation axis: the builder, recipes, conventions, masks.
from wdchain._builder import build as build
from wdchain._builder import PLACEMENTS as PLACEMENTS
from wdchain._builder import DECAYS as DECAYS
from wdchain._builder import GATES as GATES
from wdchain._builder import PRECONDITIONERS as PRECONDITIONERS
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

__version__ = "0.2.0"

__all__ = [name for name in dir() if not name.startswith("_")]
