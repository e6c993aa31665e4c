"""Losses and equation-level functions of TABB (Liu & Long, arXiv 2605.22376).

* :class:`LatentModelLoss` -- Eq. 6 (latent-model pre-training, stages 1 and 2).
* :class:`TABBLoss` -- Eqs. 8-10 (target-aligned critic, value and actor).
* :class:`FusedTABBUpdate` -- the whole RL step (Eqs. 5, 7-10, Adam, Polyak) in flat
  tensors, on the parameters of a :class:`TABBLoss` (the recipe's default update).
* :class:`FusedSACUpdate` -- a SAC-v2 step in flat tensors on the parameters of a TorchRL
  ``SACLoss`` (the behaviour-policy recipe's default update).
* :mod:`tabb_torchrl.objectives.functional` -- one function per equation
  (Eq. 5 :func:`target_bellman_mismatch`, Eq. 7 :func:`tbm_weights`, ...).
"""

from tabb_torchrl.objectives.functional import (
    bellman_target,
    effective_sample_size,
    expectile_loss,
    huber_loss,
    masked_mean,
    target_bellman_mismatch,
    tbm_weights,
    weight_entropy,
)
from tabb_torchrl.objectives.fused import FusedTABBUpdate
from tabb_torchrl.objectives.latent_model import LatentModelLoss, effective_rank
from tabb_torchrl.objectives.sac import FusedSACUpdate
from tabb_torchrl.objectives.tabb import TABBLoss

__all__ = [
    "FusedSACUpdate",
    "FusedTABBUpdate",
    "LatentModelLoss",
    "TABBLoss",
    "bellman_target",
    "effective_rank",
    "effective_sample_size",
    "expectile_loss",
    "huber_loss",
    "masked_mean",
    "target_bellman_mismatch",
    "tbm_weights",
    "weight_entropy",
]
