"""Behaviour policies and the offline datasets they generate (the data protocol).

The datasets of TABB's data protocol (D4RL / ODRL / OTDF practice) are rollouts
of SAC agents trained online in each environment. This package holds everything
that makes them; :mod:`tabb_torchrl.data` loads and samples them.

* :mod:`~tabb_torchrl.behavior.sac` -- :class:`FusedSACUpdate`, the SAC-v2 step of
  the behaviour-policy recipe (``recipes/train_behavior.py``) in flat tensors;
* :mod:`~tabb_torchrl.behavior.policies` -- the actor network, the batched
  :class:`BehaviorPolicy` and the shipped checkpoints
  (``python -m tabb_torchrl.behavior.policies list|ship``);
* :mod:`~tabb_torchrl.behavior.episodes` -- rolling policies out into
  :class:`~tabb_torchrl.behavior.episodes.Episode` objects;
* :mod:`~tabb_torchrl.behavior.minari_writer` -- dataset ids, paths and the atomic
  Minari writer;
* :mod:`~tabb_torchrl.behavior.collect` -- :func:`get_or_create_dataset`, the
  dataset cache (``python -m tabb_torchrl.behavior.collect``);
* :mod:`~tabb_torchrl.behavior.stats` -- episode-return statistics of a dataset
  and the shipped record of them;
* :mod:`~tabb_torchrl.behavior.catalogue` -- every dataset a user can ask for
  (``python -m tabb_torchrl.behavior.catalogue``);
* :mod:`~tabb_torchrl.behavior.compute_references` -- our reference returns
  (``python -m tabb_torchrl.behavior.compute_references``).

Importing this package is light (torch only): the command-line modules are
imported on first use of one of their names, so that ``python -m
tabb_torchrl.behavior.collect`` does not find its module already imported.

Examples:
    >>> import tabb_torchrl.behavior as behavior
    >>> behavior.dataset_id_for("tabb/Hopper-morph-v0", "medium")
    'tabb/Hopper-morph/medium-v0'
    >>> "medium-expert" in behavior.DATASET_QUALITIES
    True
"""

from __future__ import annotations

import importlib

from tabb_torchrl.behavior.sac import FusedSACUpdate, tanh_normal_sample

# name -> module of this package (imported on first use, see the module docstring)
_LAZY = {
    "BehaviorPolicy": "policies",
    "PolicyNotFoundError": "policies",
    "SquashedGaussianActor": "policies",
    "canonical_env_id": "policies",
    "list_behavior_policies": "policies",
    "load_behavior_policy": "policies",
    "load_policy_returns": "policies",
    "policy_from_checkpoint": "policies",
    "save_behavior_policy": "policies",
    "ship_run_snapshots": "policies",
    "Episode": "episodes",
    "collect_episodes": "episodes",
    "DATASET_QUALITIES": "minari_writer",
    "dataset_id_for": "minari_writer",
    "dataset_path": "minari_writer",
    "write_minari_dataset": "minari_writer",
    "create_dataset": "collect",
    "default_size": "collect",
    "get_or_create_dataset": "collect",
    "dataset_record": "stats",
    "dataset_stats": "stats",
    "record_dataset_stats": "stats",
    "build_catalogue": "catalogue",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["FusedSACUpdate", "tanh_normal_sample", *_LAZY]
