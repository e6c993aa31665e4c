"""Losses and equation-level functions of the cross-domain core (TABB: Liu & Long, arXiv 2605.22376).

* :mod:`tabb_torchrl.objectives.functional` -- one function per equation
  (Eq. 5 :func:`target_aligned_backup`, Eq. 7 :func:`tbm_weights`, Eq. 8
  :func:`critic_loss`, Eq. 9 :func:`value_loss`, Eq. 10 :func:`awr_actor_loss`, ...).
* :func:`cross_domain_losses` -- one cross-domain IQL step on plain tensors: the
  method's edit of the source rows, then Eqs. 8-10; every path calls it.
* :class:`CrossDomainIQLLoss` -- the composable TorchRL ``LossModule`` of that step;
  :class:`TABBLoss` -- it, with the TABB method.
* :class:`FastCrossDomainUpdate` -- the same step, optimiser and Polyak update on
  flat tensors (the recipe's default update).
* :class:`LatentModelLoss` -- Eq. 6 (latent-model pre-training, stages 1 and 2).
"""

from tabb_torchrl.objectives.functional import (
    AlignedTargets,
    awr_actor_loss,
    bellman_target,
    critic_loss,
    effective_sample_size,
    expectile_loss,
    gaussian_log_prob,
    huber_loss,
    masked_mean,
    split_mean,
    target_aligned_backup,
    target_bellman_mismatch,
    tbm_weights,
    value_loss,
    weight_entropy,
)
from tabb_torchrl.objectives.cross_domain import (
    CrossDomainNetworks,
    CrossDomainRows,
    IQLSettings,
    cross_domain_losses,
)
from tabb_torchrl.objectives.fast import FastCrossDomainUpdate
from tabb_torchrl.objectives.iql_loss import CrossDomainIQLLoss
from tabb_torchrl.objectives.latent_model import LatentModelLoss, effective_rank
from tabb_torchrl.objectives.tabb import TABBLoss

__all__ = [
    "AlignedTargets",
    "CrossDomainIQLLoss",
    "CrossDomainNetworks",
    "CrossDomainRows",
    "FastCrossDomainUpdate",
    "IQLSettings",
    "LatentModelLoss",
    "TABBLoss",
    "awr_actor_loss",
    "bellman_target",
    "critic_loss",
    "cross_domain_losses",
    "effective_rank",
    "effective_sample_size",
    "expectile_loss",
    "gaussian_log_prob",
    "huber_loss",
    "masked_mean",
    "split_mean",
    "target_aligned_backup",
    "target_bellman_mismatch",
    "tbm_weights",
    "value_loss",
    "weight_entropy",
]
