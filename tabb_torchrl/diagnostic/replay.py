"""The oracle of the diagnostic: replay a source ``(s, a)`` in the target env, and the true Bellman error.

How the state is recovered from an observation (:func:`tabb_torchrl.envs.set_state_from_observation`):
gymnasium v5's MuJoCo locomotion observations are ``[qpos[1:], qvel]`` (Hopper, Walker2d,
HalfCheetah) and ``[qpos[2:], qvel, contact forces]`` (Ant-v5: the 78 contact forces are included
by default; they are outputs of the simulation, not state). The root x (and Ant's y) position is not
observed and is set to 0, which changes neither the dynamics (flat, uniform floor) nor the reward (it
uses the displacement during the step). Two limits, both measured in the tests:

* Hopper and Walker2d clip the observed velocities to ``[-10, 10]``: a state with a faster joint is
  not recovered (:func:`clipped_rows` finds those rows; the diagnostic leaves them out).
* Ant-v5 computes its forward reward from body positions MuJoCo last computed inside the *previous*
  step, which no observation carries: the replayed next state is exact but the reward differs from
  the env's own by up to ~0.05 (mean 0.003 on random Ant-v5 data).
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["REPLAYABLE_ENVS", "ReplayError", "check_replayable", "clipped_rows", "replay_transitions",
           "oracle_bellman_error"]

#: The gymnasium env classes whose state :func:`tabb_torchrl.envs.set_state_from_observation` recovers.
REPLAYABLE_ENVS = ("HopperEnv", "Walker2dEnv", "HalfCheetahEnv", "AntEnv")


class ReplayError(ValueError):
    """An env whose simulator state cannot be set from an observation (the oracle replay needs it).

    Examples:
        >>> issubclass(ReplayError, ValueError)
        True
    """


def _make(env: Any):
    from tabb_torchrl.envs import make_env

    return make_env(env) if isinstance(env, str) else env


def check_replayable(env: Any) -> None:
    """Raise :class:`ReplayError` unless ``env`` (or its id) is a MuJoCo locomotion env whose state an observation gives.

    Examples:
        >>> check_replayable("tabb/Hopper-morph-v0")
        >>> import gymnasium as gym
        >>> check_replayable(gym.make("CartPole-v1"))
        Traceback (most recent call last):
        ...
        tabb_torchrl.diagnostic.replay.ReplayError: CartPole-v1 (CartPoleEnv) has no simulator state that an observation sets: the oracle replay works on the MuJoCo locomotion envs (HopperEnv, Walker2dEnv, HalfCheetahEnv, AntEnv) and their tabb/ shifts. Fix: run the diagnostic on a run of one of those tasks.
    """
    made = _make(env)
    base = made.unwrapped
    name = type(base).__name__
    if name not in REPLAYABLE_ENVS or not hasattr(base, "set_state"):
        env_id = env if isinstance(env, str) else getattr(getattr(made, "spec", None), "id", name)
        raise ReplayError(
            f"{env_id} ({name}) has no simulator state that an observation sets: the oracle replay works on the "
            f"MuJoCo locomotion envs ({', '.join(REPLAYABLE_ENVS)}) and their tabb/ shifts. "
            "Fix: run the diagnostic on a run of one of those tasks."
        )


def clipped_rows(observations: Any, env: Any) -> np.ndarray:
    """Rows whose observed velocities sit on the ``[-10, 10]`` clip of Hopper / Walker2d (state not recoverable).

    Args:
        observations: ``[N, obs_dim]`` array-like.
        env: the env (or its id) that produced them.

    Returns:
        np.ndarray: ``[N]`` bool.

    Examples:
        >>> obs = np.zeros((2, 11)); obs[1, 7] = 10.0
        >>> clipped_rows(obs, "Hopper-v5").tolist()
        [False, True]
        >>> clipped_rows(np.zeros((1, 17)), "HalfCheetah-v5").tolist()   # no clip
        [False]
    """
    made = _make(env)
    base = made.unwrapped
    name = type(base).__name__
    clip = 10.0 if name in ("HopperEnv", "Walker2dEnv") else None
    observations = np.asarray(observations)
    if clip is None:
        return np.zeros(observations.shape[0], dtype=bool)
    n_pos = base.model.nq - 1
    vel = observations[:, n_pos : n_pos + base.model.nv]
    return (np.abs(vel) >= clip - 1e-6).any(1)


def replay_transitions(env: Any, observations: Any, actions: Any) -> dict[str, np.ndarray]:
    """Step ``env`` once from the state of each observation with the given action.

    For each row, the simulator state is set from the observation with
    :func:`tabb_torchrl.envs.set_state_from_observation` (unobserved root position = 0), then
    ``env.step(action)`` is called. Time-outs are ignored (each row is a single step).

    Args:
        env: a gymnasium MuJoCo locomotion env (or its id, made with
            :func:`tabb_torchrl.envs.make_env`). It is reset once first.
        observations: ``[N, obs_dim]`` array-like.
        actions: ``[N, act_dim]`` array-like.

    Returns:
        dict: ``"reward"`` ``[N]``, ``"next_observation"`` ``[N, obs_dim]``,
        ``"terminated"`` ``[N]`` (bool), as numpy arrays.

    Raises:
        ReplayError: an env whose state an observation does not set (:func:`check_replayable`).

    Examples:
        Replaying transitions in the env that produced them gives them back:

        >>> import numpy as np
        >>> from tabb_torchrl.envs import make_env
        >>> env = make_env("Hopper-v5")
        >>> obs, _ = env.reset(seed=0)
        >>> a = np.full(3, 0.5, dtype=np.float32)
        >>> next_obs, r, term, _, _ = env.step(a)
        >>> out = replay_transitions(env, obs[None], a[None])
        >>> bool(np.allclose(out["next_observation"][0], next_obs, atol=1e-6)), bool(np.isclose(out["reward"][0], r))
        (True, True)
    """
    from tabb_torchrl.envs import set_state_from_observation

    env = _make(env)
    check_replayable(env)
    observations = np.asarray(observations, dtype=np.float64)
    actions = np.asarray(actions, dtype=np.float32)
    if observations.shape[0] != actions.shape[0]:
        raise ValueError(
            f"replay_transitions: {observations.shape[0]} observations but {actions.shape[0]} actions."
        )
    env.reset(seed=0)
    n = observations.shape[0]
    rewards = np.empty(n, dtype=np.float64)
    terminated = np.empty(n, dtype=bool)
    next_obs = np.empty((n, env.observation_space.shape[0]), dtype=np.float64)
    for i in range(n):
        set_state_from_observation(env, observations[i])
        o, r, term, _trunc, _info = env.step(actions[i])
        next_obs[i], rewards[i], terminated[i] = o, r, term
    return {"reward": rewards, "next_observation": next_obs, "terminated": terminated}


def oracle_bellman_error(
    reward: Any,
    next_value: Any,
    terminated: Any,
    reward_target: Any,
    next_value_target: Any,
    terminated_target: Any,
    gamma: float = 0.99,
) -> np.ndarray:
    """Oracle target Bellman error of source transitions (arXiv 2605.22376, Sec. 5.5).

    ``|r + gamma (1 - d) V(f(s')) - (r_tar + gamma (1 - d_tar) V(f(s'_tar)))|``,
    where ``(r_tar, s'_tar, d_tar)`` come from replaying ``(s, a)`` in the
    target env (the paper's formula has no ``(1 - d)``; each transition keeps its
    own terminal flag, as every Bellman target of the project does).

    Args:
        reward, next_value, terminated: the source transition's ``r``, ``V(f(s'))``, ``d``.
        reward_target, next_value_target, terminated_target: the same in the target env.
        gamma (float): discount. Defaults to ``0.99``.

    Returns:
        np.ndarray: the error per transition.

    Examples:
        >>> oracle_bellman_error([1.0, 1.0], [10.0, 10.0], [False, True],
        ...                      [0.5, 1.0], [8.0, 0.0], [False, True], gamma=0.5)
        array([1.5, 0. ])
    """
    def target(r, v, d):
        r, v = np.asarray(r, float).reshape(-1), np.asarray(v, float).reshape(-1)
        d = np.asarray(d, float).reshape(-1)
        return r + gamma * (1.0 - d) * v

    return np.abs(target(reward, next_value, terminated) - target(reward_target, next_value_target, terminated_target))
