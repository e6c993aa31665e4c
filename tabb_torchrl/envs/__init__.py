"""Shifted target environments for cross-domain offline RL.

Importing this package registers every shift of the catalogue (``envs/*.yaml``)
with gymnasium under ``tabb/<Env>-<shift>[-<variant>][-<level>]-v0``. The source
env of each target is gymnasium's ``<Env>-v5`` (Adroit: gymnasium-robotics'
``AdroitHand<Task>-v1``) with its default XML; the target applies the shift's
edits to that same XML file (recorded as ``ShiftSpec.base_xml``).

Example:
    >>> import gymnasium as gym
    >>> import tabb_torchrl.envs
    >>> env = gym.make("tabb/Hopper-morph-v0")
    >>> env.reset(seed=0)[0].shape
    (11,)
    >>> env.close()

Run ``python -m tabb_torchrl.envs`` to list the ids (``--markdown`` for a table).

``gym.make`` answers an unknown ``tabb/`` id with gymnasium's ``NameNotFound``;
:func:`make_env` (or :func:`get_shift`) raises :class:`UnknownEnvError`, which
lists the valid ids or levels:

    >>> make_env("tabb/Hopper-morph-extreme-v0")
    Traceback (most recent call last):
    ...
    tabb_torchrl.envs.spec.UnknownEnvError: ...
"""

from tabb_torchrl.envs.mjcf import MJCFEditError, apply_edits, bake_total_mass, load_mjcf
from tabb_torchrl.envs.registry import (
    EnvSpaces,
    env_spaces,
    base_xml_path,
    build_xml,
    cache_dir,
    make_env,
    register_envs,
    source_env_id,
)
from tabb_torchrl.envs.spec import (
    ShiftSpec,
    UnknownEnvError,
    get_shift,
    list_env_ids,
    list_families,
)
from tabb_torchrl.envs.state import set_state_from_observation

register_envs()

__all__ = [
    "EnvSpaces",
    "MJCFEditError",
    "env_spaces",
    "ShiftSpec",
    "UnknownEnvError",
    "apply_edits",
    "bake_total_mass",
    "base_xml_path",
    "build_xml",
    "cache_dir",
    "get_shift",
    "list_env_ids",
    "list_families",
    "load_mjcf",
    "make_env",
    "register_envs",
    "set_state_from_observation",
    "source_env_id",
]
