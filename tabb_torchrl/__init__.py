"""tabb-torchrl: cross-domain offline RL (TABB) as TorchRL components.

TABB is "Target-Aligned Bellman Backup for Cross-domain Offline Reinforcement
Learning" (Wei Liu, Ting Long, arXiv 2605.22376).

Importing this package imports torch, tensordict and torchrl, and registers the
shifted target envs with gymnasium (``gym.make("tabb/Hopper-morph-v0")`` works
after ``import tabb_torchrl``): registering reads the catalogue's YAML files and
imports gymnasium; no env is built and no MuJoCo model is compiled. It never
imports minari or hydra. The Python API -- :class:`~tabb_torchrl.api.TABB`,
:func:`~tabb_torchrl.api.make_agent`, :class:`~tabb_torchrl.api.Agent`,
:func:`~tabb_torchrl.api.load_policy` -- is imported on first use.

Example:
    >>> import gymnasium as gym
    >>> import tabb_torchrl
    >>> "tabb/Hopper-morph-v0" in gym.registry
    True
    >>> tabb_torchrl.make_agent  # doctest: +ELLIPSIS
    <function make_agent at ...>
"""

__version__ = "0.1.0"

from tabb_torchrl.modules import (
    AvgL1Norm,
    LatentModel,
    StateActionEncoder,
    StateEncoder,
    TargetDomainPredictor,
    make_actor,
    make_latent_qvalue,
    make_latent_value,
)
from tabb_torchrl.objectives import (
    LatentModelLoss,
    TABBLoss,
    effective_sample_size,
    target_bellman_mismatch,
    tbm_weights,
    weight_entropy,
)
from tabb_torchrl.transforms import TargetBellmanMismatch

from tabb_torchrl.data import (
    SOURCE,
    TARGET,
    SourceTargetSampler,
    make_source_target_buffer,
)

from tabb_torchrl.envs import register_envs as _register_envs  # noqa: E402

_register_envs()  # the tabb/ env ids, for gym.make (cheap: no env is built)

#: Names of :mod:`tabb_torchrl.api`, imported on first use (it imports hydra).
_API = ("Agent", "Policy", "TABB", "load_policy", "make_agent")


def __getattr__(name: str):
    if name in _API:
        from tabb_torchrl import api

        return getattr(api, name)
    raise AttributeError(f"module 'tabb_torchrl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_API))


__all__ = [
    "Agent",
    "AvgL1Norm",
    "LatentModel",
    "LatentModelLoss",
    "Policy",
    "SOURCE",
    "SourceTargetSampler",
    "StateActionEncoder",
    "StateEncoder",
    "TABB",
    "TABBLoss",
    "TARGET",
    "TargetBellmanMismatch",
    "TargetDomainPredictor",
    "effective_sample_size",
    "load_policy",
    "make_actor",
    "make_agent",
    "make_latent_qvalue",
    "make_latent_value",
    "make_source_target_buffer",
    "target_bellman_mismatch",
    "tbm_weights",
    "weight_entropy",
]
