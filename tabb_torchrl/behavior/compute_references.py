"""Our own reference returns for the normalised score, per env with a shipped policy.

``python -m tabb_torchrl.behavior.compute_references``

The published tables normalise with ODRL's references, measured with old
gym / mujoco-py envs.  This script measures, in our envs, ``min`` = the mean
return of uniform random actions and ``max`` = the best mean return among the
shipped behaviour policies of that env (deterministic actions), and writes them
to ``tabb_torchrl/assets/references_ours.json``::

    {env_id: {"min": float, "max": float,
              "min_source": "random policy, N episodes",
              "max_source": "<quality> policy ..."}}

which :func:`tabb_torchrl.data.references.reference_returns` reads with
``reference="ours"``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

import numpy as np

from tabb_torchrl.behavior.policies import list_behavior_policies, load_behavior_policy
from tabb_torchrl.io import write_text_atomic

__all__ = ["evaluate_returns", "compute_references", "default_output_path", "main"]


def default_output_path() -> Path:
    """``tabb_torchrl/assets/references_ours.json`` (in the source tree / installed package).

    Examples:
        >>> default_output_path().name
        'references_ours.json'
    """
    return Path(str(files("tabb_torchrl") / "assets" / "references_ours.json"))


def evaluate_returns(
    env_id: str,
    policy: Callable[[np.ndarray], np.ndarray] | None,
    n_episodes: int = 10,
    *,
    seed: int = 0,
    max_envs: int = 16,
) -> np.ndarray:
    """Undiscounted returns of ``n_episodes`` full episodes (vectorised, seeded).

    Args:
        env_id: Env id.
        policy: Batched policy (observations -> actions), or ``None`` for
            uniform random actions.
        n_episodes: Number of episodes.
        seed: Episode ``k`` starts from reset seed ``seed + k``.
        max_envs: Envs stepped together.

    Returns:
        Array of ``n_episodes`` returns.

    Examples:
        >>> r = evaluate_returns("Pendulum-v1", None, 3, seed=0)
        >>> r.shape
        (3,)
    """
    import gymnasium as gym

    from tabb_torchrl.behavior.episodes import _make_env

    rng = np.random.default_rng(seed)
    out: list[float] = []
    for start in range(0, n_episodes, max_envs):
        n = min(max_envs, n_episodes - start)
        envs = gym.vector.SyncVectorEnv([lambda: _make_env(env_id) for _ in range(n)],
                                        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        try:
            obs, _ = envs.reset(seed=[seed + start + i for i in range(n)])
            ret = np.zeros(n)
            alive = np.ones(n, bool)
            space = envs.single_action_space
            while alive.any():
                if policy is None:
                    a = rng.uniform(space.low, space.high, size=(n, *space.shape)).astype(np.float32)
                else:
                    a = np.asarray(policy(obs), dtype=np.float32)
                obs, r, te, tr, _ = envs.step(a)
                ret += np.where(alive, r, 0.0)
                alive &= ~(te | tr)
        finally:
            envs.close()
        out.extend(ret.tolist())
    return np.asarray(out)


def compute_references(
    env_ids: list[str] | None = None,
    *,
    random_episodes: int = 100,
    policy_episodes: int = 50,
    seed: int = 0,
    policy_root: str | os.PathLike | None = None,
) -> dict[str, dict]:
    """Reference returns (random and best shipped behaviour policy) per env.

    Args:
        env_ids: Envs to measure (default: every env with a shipped policy).
        random_episodes: Episodes of uniform random actions.
        policy_episodes: Episodes per behaviour policy (deterministic actions).
        seed: First reset seed.
        policy_root: Behaviour-policy folder (default: shipped assets).

    Examples:
        >>> compute_references([], random_episodes=1)
        {}
    """
    pairs = list_behavior_policies(policy_root)
    if env_ids is None:
        env_ids = sorted({e for e, _ in pairs})
    refs: dict[str, dict] = {}
    for env_id in env_ids:
        rand = evaluate_returns(env_id, None, random_episodes, seed=seed)
        best = None
        for e, q in pairs:
            if e != env_id:
                continue
            pol = load_behavior_policy(env_id, q, deterministic=True, root=policy_root)
            r = evaluate_returns(env_id, pol, policy_episodes, seed=seed)
            if best is None or r.mean() > best[1].mean():
                best = (q, r, pol.metadata)
        entry = {
            "min": float(rand.mean()),
            "min_source": f"random policy, {random_episodes} episodes",
        }
        if best is not None:
            q, r, meta = best
            entry["max"] = float(r.mean())
            entry["max_source"] = (
                f"{q} policy (SAC, {meta.get('env_steps')} env steps, sha256 {meta.get('sha256')}), "
                f"deterministic actions, {policy_episodes} episodes"
            )
        refs[env_id] = entry
    return refs


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(prog="python -m tabb_torchrl.behavior.compute_references", description=__doc__.split("\n")[0])
    p.add_argument("--env", action="append", default=None, help="env id (repeatable; default: all with a policy)")
    p.add_argument("--random-episodes", type=int, default=100)
    p.add_argument("--policy-episodes", type=int, default=50,
                   help="episodes per policy, deterministic actions (default 50: a medium policy's "
                        "returns spread widely; with 10 episodes the Hopper-morph reference was 426, "
                        "with 50 it is 486)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--policy-root", default=None)
    p.add_argument("--output", default=None, help="JSON file (default: the package's references_ours.json)")
    args = p.parse_args(argv)
    out = Path(args.output) if args.output else default_output_path()
    refs = compute_references(args.env, random_episodes=args.random_episodes, policy_episodes=args.policy_episodes,
                              seed=args.seed, policy_root=args.policy_root)
    current = json.loads(out.read_text()) if out.is_file() else {}
    current.update(refs)
    write_text_atomic(out, json.dumps(dict(sorted(current.items())), indent=2) + "\n")
    for env_id, e in refs.items():
        print(f"{env_id}: min {e['min']:.1f} max {e.get('max', float('nan')):.1f}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
