"""Networks of TABB (Liu & Long, "Target-Aligned Bellman Backup for Cross-domain
Offline Reinforcement Learning", arXiv 2605.22376).

The latent model (state encoder ``f``, state-action encoder ``g`` and
target-domain predictor ``h``) is pre-trained with Eq. 6
(:class:`~tabb_torchrl.objectives.LatentModelLoss`) and then frozen; the RL
networks (twin critic ``Q`` on ``z_sa``, value ``V`` on ``z_s``, actor on the raw
observation) are trained with Eqs. 8-10 (:class:`~tabb_torchrl.objectives.TABBLoss`).

Every size is an argument. The defaults (MLPs of two hidden layers of 256 with
ReLU, ``z_s`` and ``z_sa`` of 128 dimensions, AvgL1Norm on the encoder outputs)
are **[reconstructed]**: the values of the paper's table 5 were lost in
extraction, see ``shared/method/TABB.md``.
"""

from tabb_torchrl.modules.latent import (
    AvgL1Norm,
    LatentModel,
    Latents,
    StateActionEncoder,
    StateEncoder,
    PREDICTORS,
    ResidualPredictor,
    TargetDomainPredictor,
)
from tabb_torchrl.modules.rl import GaussianPolicyHead, evaluate_value, make_actor, make_latent_qvalue, make_latent_value

__all__ = [
    "AvgL1Norm",
    "StateEncoder",
    "StateActionEncoder",
    "TargetDomainPredictor",
    "ResidualPredictor",
    "PREDICTORS",
    "LatentModel",
    "Latents",
    "GaussianPolicyHead",
    "evaluate_value",
    "make_latent_qvalue",
    "make_latent_value",
    "make_actor",
]
