"""Collect D4RL-style offline datasets with the shipped behaviour policies, and cache them.

``python -m tabb_torchrl.behavior.collect --env Hopper-v5 --quality medium --size 1000000 --seed 0``

Qualities (the *Data protocol* of the method card; D4RL / ODRL / OTDF):

* ``random`` -- uniform random actions;
* ``medium`` / ``expert`` -- **stochastic** samples of the shipped SAC actor of
  that quality (D4RL collects with samples, not the mean);
* ``medium-replay`` -- the SAC replay buffer of the training run up to the
  medium snapshot (``<run_dir>/medium_replay.pt`` written by
  ``recipes/train_behavior.py``); when ``size`` is smaller than the buffer, a
  seeded random subset of whole episodes is kept (the last one cut);
* ``medium-expert`` -- ``medium`` followed by ``expert`` (``size`` each, so
  ``2 * size`` transitions, as D4RL).

The episodes are rolled out by :mod:`tabb_torchrl.behavior.episodes` and written
atomically in Minari format by :mod:`tabb_torchrl.behavior.minari_writer`.  Ids:
``tabb/<env>[-<shift>...]/<quality>-v0`` at the default size (1,000,000 in a
source env, 5,000 in a ``tabb/`` target env) and seed 0,
``tabb/<env>/<quality>-<size>-s<seed>-v0`` otherwise
(:func:`~tabb_torchrl.behavior.minari_writer.dataset_id_for`), so a request for
another size or seed never replaces a dataset in place.  :func:`get_or_create_dataset`
reuses a cached dataset when its metadata (env, size, seed, policy hash, protocol
version, digest of the env's MJCF, mujoco and gymnasium versions) match; a
dataset of a non-default size that an earlier version stored under the plain id
(``tabb/Hopper/medium-v0`` holding 200,000 transitions) is still found by the
requests it matches, and a request under an id that holds another size or seed
is refused (:class:`DatasetIdConflictError`, with the fix) instead of replacing
it.  One process at a time collects a given dataset (a
:class:`filelock.FileLock`, :func:`~tabb_torchrl.behavior.minari_writer.collection_lock`):
a second one asking for it waits, says so, and then reads it.

Each dataset's Minari metadata carry ``ref_min_score`` / ``ref_max_score``: ODRL's
reference returns of its env (:func:`tabb_torchrl.data.reference_returns` with
``reference="odrl"``, the default ``eval.reference`` of the recipe; none for an
env without an ODRL entry), so ``minari.get_normalized_score(dataset, returns)``
gives ``(R - R_min) / (R_max - R_min)`` -- our normalised score divided by 100.

A default-level env id and its alias (``tabb/Walker2d-friction-0.5-v0`` and
``tabb/Walker2d-friction-v0``) are one env: both give the dataset of the
canonical id (:func:`~tabb_torchrl.behavior.policies.canonical_env_id`, the alias).

``--record PATH`` merges the dataset's episode-return statistics
(:mod:`tabb_torchrl.behavior.stats`) into a JSON file (the shipped
``tabb_torchrl/assets/dataset_returns.json`` read by
:mod:`tabb_torchrl.behavior.catalogue`).  The collection throughput benchmark is
the script ``benchmarks/collect.py``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tabb_torchrl.behavior.episodes import (
    DEFAULT_N_ENVS,
    _collect_parallel,
    _episodes_from_replay,
    _make_env,
    _max_episode_steps,
)
from tabb_torchrl.behavior.minari_writer import (
    DATASET_QUALITIES,
    SOURCE_SIZE,
    TARGET_SIZE,
    Timeout,
    _datasets_root,
    _ensure_namespaces,
    _read_metadata,
    clean_stale_temp,
    collection_lock,
    dataset_id_for,
    dataset_path,
    default_size,
    write_minari_dataset,
)
from tabb_torchrl.behavior.policies import (
    PolicyNotFoundError,
    canonical_env_id,
    checkpoint_hash,
    env_id_to_dirname,
    policy_path,
)
from tabb_torchrl.behavior.stats import dataset_record, record_dataset_stats
from tabb_torchrl.data.datasets import DatasetError
from tabb_torchrl.data.references import MissingReferenceError, reference_returns

__all__ = [
    "COLLECT_VERSION",
    "REFERENCE_SCORES",
    "SOURCE_SIZE",
    "TARGET_SIZE",
    "DatasetIdConflictError",
    "create_dataset",
    "default_size",
    "get_or_create_dataset",
    "main",
]

#: Bumped whenever the collection protocol changes (invalidates caches).
COLLECT_VERSION = 1

#: Datasets at least this large are split over two worker processes by default.
PARALLEL_THRESHOLD = 100_000

#: The reference table whose returns are written as Minari's ``ref_min_score`` / ``ref_max_score``.
REFERENCE_SCORES = "odrl"

_LOG = logging.getLogger(__name__)


class DatasetIdConflictError(DatasetError):
    """The dataset under a requested id holds another size or seed; it is kept, not regenerated in place.

    Only a dataset written by an earlier version (which stored every size and
    seed under ``tabb/<env>/<quality>-v0``) can be in that state. A
    :class:`~tabb_torchrl.data.DatasetError` (the recipe reports it as a data
    error); the message gives the fix.

    Examples:
        >>> from tabb_torchrl.data import DatasetError
        >>> issubclass(DatasetIdConflictError, DatasetError)
        True
    """


def _default_run_dir(env_id: str, seed: int = 0) -> Path:
    """``behavior_runs/<env>_s<seed>``: an existing one of the env's spellings, else that of ``env_id``."""
    from tabb_torchrl.behavior.policies import env_id_spellings

    base = Path(os.environ.get("TABB_BEHAVIOR_RUNS", "behavior_runs"))
    for spelling in dict.fromkeys([env_id, *env_id_spellings(env_id)]):
        d = base / f"{env_id_to_dirname(spelling)}_s{seed}"
        if d.is_dir():
            return d
    return base / f"{env_id_to_dirname(env_id)}_s{seed}"


def _policy_file(env_id: str, quality: str, policy_root) -> Path:
    p = policy_path(env_id, quality, policy_root)
    if not Path(str(p)).is_file():
        from tabb_torchrl.behavior.policies import load_behavior_policy

        load_behavior_policy(env_id, quality, root=policy_root)  # raises with the listing
    return Path(str(p))


#: Stored as ``xml_sha256`` for an env not built from an MJCF file (not a MuJoCo env).
_NO_MJCF = "no-mjcf"


def _xml_digest(env_id: str) -> str:
    """SHA-256 (first 16 hex digits) of the MJCF an env is built from: its dynamics.

    The file is the one the env loads (``env.unwrapped.fullpath``: the XML
    generated by :func:`tabb_torchrl.envs.build_xml` for a shifted ``tabb/`` env,
    gymnasium's asset for a source env), parsed with includes inlined; comments
    and the asset folders of ``<compiler>`` (absolute, machine-dependent paths)
    are left out, so the digest depends on the model only.  ``"no-mjcf"`` for an
    env without an MJCF file.

    Examples:
        >>> _xml_digest("tabb/Hopper-morph-v0") != _xml_digest("Hopper-v5")
        True
        >>> _xml_digest("Pendulum-v1")
        'no-mjcf'
    """
    path = _mjcf_path(env_id)
    if not path or not os.path.isfile(path):
        return _NO_MJCF
    import xml.etree.ElementTree as ET

    from tabb_torchrl.envs.mjcf import load_mjcf

    root = load_mjcf(path)  # the default parser drops comments (the generated file's header)
    for compiler in root.iter("compiler"):
        for attr in ("meshdir", "texturedir", "assetdir"):
            compiler.attrib.pop(attr, None)
    return hashlib.sha256(ET.tostring(root, encoding="unicode").encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def _mjcf_path(env_id: str) -> str | None:
    """The MJCF file an env loads (made once per id and process: making a source
    HalfCheetah prints MuJoCo's settotalmass warning each time)."""
    env = _make_env(env_id)
    try:
        return getattr(env.unwrapped, "fullpath", None)
    finally:
        env.close()


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _dynamics(env_id: str) -> dict[str, str]:
    """The cache-key fields that pin the simulated dynamics: MJCF digest, mujoco and gymnasium versions."""
    return {
        "xml_sha256": _xml_digest(env_id),
        "mujoco_version": _package_version("mujoco"),
        "gymnasium_version": _package_version("gymnasium"),
    }


def _effective_n_envs(env_id: str, size: int, n_envs: int, n_workers: int) -> int:
    """At most one env per full episode of each worker's share.

    A 5,000-transition target set with 1,000-step episodes is then about five
    full episodes (as the published target sets), not 16 truncated starts.
    """
    horizon = _max_episode_steps(env_id)
    per_worker = max(1, int(size) // max(1, int(n_workers)))
    return int(max(1, min(int(n_envs), per_worker // int(horizon))))


def _default_workers(size: int) -> int:
    return 2 if size >= PARALLEL_THRESHOLD else 1


def _check_request(size: Any, seed: Any, n_envs: Any = 1, n_workers: Any = None) -> None:
    """Refuse sizes, seeds and counts that cannot give a dataset, before the cache is touched."""
    for name, value, low in (("size", size, 1), ("seed", seed, 0), ("n_envs", n_envs, 1), ("n_workers", n_workers, 1)):
        if name == "n_workers" and value is None:
            continue
        ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and int(value) >= low
        if not ok:
            raise ValueError(
                f"{name}={value!r} must be an integer >= {low}; nothing was collected and the cached dataset, if "
                f"any, is kept. Fix: pass {name}=<int >= {low}> (--{name.replace('_', '-')} on the command line)."
            )


def _plan(env_id: str, quality: str, size: int, seed: int, n_envs: int, n_workers: int | None,
          policy_root, run_dir) -> dict[str, Any]:
    """Everything that determines the dataset's content (the cache key).

    The request (canonical env id, quality, size, seed), the protocol version,
    the policy checkpoint hash(es) (or the replay file and its hash), the
    vectorisation, and the dynamics (:func:`_dynamics`: digest of the env's MJCF,
    mujoco and gymnasium versions), so that a fixed shift spec or an upgrade
    regenerates the dataset.  Every key is stored with a ``tabb_`` prefix in the
    dataset's metadata; a cached dataset is reused only if all of them match.
    A size below 1 (or a negative seed) is refused first (``ValueError``).
    """
    _check_request(size, seed, n_envs, n_workers)
    env_id = canonical_env_id(env_id)
    plan: dict[str, Any] = {
        "env_id": env_id,
        "quality": quality,
        "size": int(size),
        "seed": int(seed),
        "collect_version": COLLECT_VERSION,
        **_dynamics(env_id),
    }
    if quality == "medium-replay":
        rd = Path(run_dir) if run_dir is not None else _default_run_dir(env_id)
        f = rd / "medium_replay.pt"
        if not f.is_file():
            raise FileNotFoundError(
                f"medium-replay data for {env_id!r} come from the SAC run that produced the medium policy: "
                f"{f} is missing (replay buffers do not ship with the package: 10-240 MB). Make it with "
                f"`python recipes/train_behavior.py env={env_id} stop_after_medium=true` (it writes "
                f"{f} when it takes the medium snapshot), or pass run_dir= (--run-dir) for a run elsewhere."
            )
        plan["replay_file"] = str(f.resolve())
        plan["policy_sha256"] = checkpoint_hash(f)
        return plan
    plan["n_workers"] = int(n_workers if n_workers is not None else _default_workers(size))
    plan["n_envs"] = _effective_n_envs(env_id, size, n_envs, plan["n_workers"])
    if quality == "random":
        plan["policy_sha256"] = "uniform-random"
    elif quality == "medium-expert":
        plan["policy_sha256"] = (
            checkpoint_hash(_policy_file(env_id, "medium", policy_root))
            + "+"
            + checkpoint_hash(_policy_file(env_id, "expert", policy_root))
        )
    else:
        plan["policy_sha256"] = checkpoint_hash(_policy_file(env_id, quality, policy_root))
    return plan


def _reference_scores(env_id: str) -> tuple[float, float] | None:
    """ODRL's ``(R_min, R_max)`` of an env (:data:`REFERENCE_SCORES`), ``None`` where it has none."""
    try:
        with warnings.catch_warnings():  # HalfCheetah friction 0.1's anomalous R_max: warned at evaluation
            warnings.simplefilter("ignore")
            return reference_returns(env_id, REFERENCE_SCORES)
    except MissingReferenceError:
        return None


def create_dataset(
    env_id: str,
    quality: str,
    size: int,
    seed: int = 0,
    *,
    dataset_root: str | os.PathLike | None = None,
    n_envs: int = DEFAULT_N_ENVS,
    n_workers: int | None = None,
    policy_root: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    show_progress: bool = True,
    _plan_override: dict | None = None,
    _fail_after_episodes: int | None = None,
) -> Path:
    """Collect and write one dataset (always regenerates, replacing the one under its id); returns its directory.

    The id is :func:`~tabb_torchrl.behavior.minari_writer.dataset_id_for` of
    ``(env_id, quality, size, seed)``: ``tabb/Hopper/random-v0`` at the default
    size and seed 0, ``tabb/Hopper/random-200-s0-v0`` below.  The metadata carry
    Minari's ``ref_min_score`` / ``ref_max_score`` (ODRL's reference returns of
    the env, see the module docstring) when the env has them.

    Args:
        env_id: Env to collect in (source ``Hopper-v5`` or a target ``tabb/...-v0``).
        quality: One of :data:`~tabb_torchrl.behavior.minari_writer.DATASET_QUALITIES`.
        size: Transitions (per component for ``medium-expert``; at most the
            replay size for ``medium-replay``).
        seed: Main seed (worker, env and policy seeds are derived from it).
        dataset_root: Minari root (default ``$MINARI_DATASETS_PATH`` / ``~/.minari/datasets``).
        n_envs: Most envs stepped together per worker (fewer for small sets: at
            most one per full episode of the worker's share, so 5,000 transitions
            of 1,000-step episodes are collected by 5 envs).
        n_workers: Worker processes (default 2 for ``size >= 100_000``, else 1).
        policy_root: Folder of behaviour-policy checkpoints (default: shipped assets).
        run_dir: SAC run directory holding ``medium_replay.pt`` (``medium-replay`` only).
        show_progress: Show a tqdm bar.

    Raises:
        ValueError: ``size < 1``, a negative seed, ``n_envs`` or ``n_workers`` below
            1 (before anything is collected or written: the cached dataset is kept).

    Before collecting it removes the temporary folders that killed collections
    left in the dataset's namespace folder
    (:func:`~tabb_torchrl.behavior.minari_writer.clean_stale_temp`; a
    concurrent writer's folder is locked and kept).

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = create_dataset("Hopper-v5", "random", 200, 0, dataset_root=d, n_envs=4,
        ...                        show_progress=False)
        ...     p.name
        'random-200-s0-v0'
        >>> create_dataset("Hopper-v5", "random", 0)
        Traceback (most recent call last):
        ...
        ValueError: size=0 must be an integer >= 1; nothing was collected and the cached dataset, if any, is kept. Fix: ...
    """
    _check_request(size, seed, n_envs, n_workers)
    env_id = canonical_env_id(env_id)  # the level id of a default level is collected as its alias
    plan = _plan_override or _plan(env_id, quality, size, seed, n_envs, n_workers, policy_root, run_dir)
    dataset_id = dataset_id_for(env_id, quality, size, seed)
    clean_stale_temp(dataset_path(env_id, quality, dataset_root, size=size, seed=seed).parent)
    t0 = time.perf_counter()
    desc = dataset_id
    if quality == "medium-replay":
        rep = torch.load(plan["replay_file"], map_location="cpu", weights_only=False)
        if canonical_env_id(str(rep.get("env_id"))) != env_id:
            raise ValueError(f"{plan['replay_file']} holds data of {rep.get('env_id')!r}, not {env_id!r}")
        episodes = _episodes_from_replay(rep["data"], size, seed)
        plan["replay_medium_step"] = int(rep["step"])
    elif quality == "medium-expert":
        episodes = []
        for k, q in enumerate(("medium", "expert")):
            f = str(_policy_file(env_id, q, policy_root))
            episodes += _collect_parallel(env_id, f, size, n_envs=plan["n_envs"], n_workers=plan["n_workers"],
                                          seed=seed + k, desc=f"{desc} ({q})", show_progress=show_progress)
    else:
        f = None if quality == "random" else str(_policy_file(env_id, quality, policy_root))
        episodes = _collect_parallel(env_id, f, size, n_envs=plan["n_envs"], n_workers=plan["n_workers"],
                                     seed=seed, desc=desc, show_progress=show_progress)
    t_collect = time.perf_counter() - t0
    returns = [round(e.episode_return, 4) for e in episodes]
    complete = [e.episode_return for e in episodes if e.complete]
    meta = dict(plan)
    meta.update(
        {
            "episode_returns": returns,
            "episode_lengths": [len(e) for e in episodes],
            "return_mean_complete_episodes": float(np.mean(complete)) if complete else None,
            "collect_seconds": round(t_collect, 2),
            "behavior_protocol": "stochastic policy samples (D4RL)" if quality in ("medium", "expert",
                                                                                   "medium-expert") else quality,
        }
    )
    refs = _reference_scores(env_id)
    if refs is not None:
        meta["reference_scores"] = REFERENCE_SCORES
    return write_minari_dataset(
        dataset_id, episodes, env_id=env_id, metadata=meta, dataset_root=dataset_root,
        ref_min_score=None if refs is None else refs[0], ref_max_score=None if refs is None else refs[1],
        algorithm_name="uniform random actions" if quality == "random" else "SAC behaviour policy (tabb-torchrl)",
        description=f"{quality} data of {env_id} ({sum(len(e) for e in episodes)} transitions, seed {seed}); "
                    f"tabb-torchrl data protocol",
        _fail_after_episodes=_fail_after_episodes,
    )


def _cache_matches(meta: dict | None, plan: dict) -> bool:
    if meta is None:
        return False
    return all(meta.get(f"tabb_{k}") == v for k, v in plan.items())


def _find_cached(env_id: str, quality: str, plan: dict, dataset_root) -> Path | None:
    """The cached dataset matching ``plan``: under its id, else (non-default size or seed) under the plain id.

    An earlier version stored every size and seed under ``tabb/<env>/<quality>-v0``;
    such a dataset is still used by the requests it matches (it is never moved).
    """
    path = dataset_path(env_id, quality, dataset_root, size=plan["size"], seed=plan["seed"])
    if _cache_matches(_read_metadata(path), plan):
        return path
    legacy = dataset_path(env_id, quality, dataset_root)
    if legacy != path and _cache_matches(_read_metadata(legacy), plan):
        return legacy
    return None


def _check_not_another_request(path: Path, meta: dict | None, plan: dict) -> None:
    """Refuse to regenerate in place a dataset of another size or seed (:class:`DatasetIdConflictError`)."""
    if meta is None or (meta.get("tabb_size"), meta.get("tabb_seed")) == (plan["size"], plan["seed"]):
        return
    env_id, quality, size, seed = plan["env_id"], plan["quality"], plan["size"], plan["seed"]
    dataset_id = dataset_id_for(env_id, quality, size, seed)
    held = meta.get("tabb_size")
    held = f"{held:,}" if isinstance(held, int) else repr(held)
    raise DatasetIdConflictError(
        f"{dataset_id} at {path} holds a dataset of size {held}, seed {meta.get('tabb_seed')!r} (an earlier "
        f"version stored every size and seed under this id); this request is for size {size:,}, seed {seed}. "
        "It is not regenerated in place: that dataset is kept, and requests for its own size and seed still find "
        f"it. Fix: use it as it is by its id (load_minari_dataset({dataset_id!r}); in the recipe "
        f"data.<source|target>.path={dataset_id}, with .size capping the rows), or replace it with "
        f"`python -m tabb_torchrl.behavior.collect --env {env_id} --quality {quality} --size {size} --seed {seed} "
        f"--force`, or delete {path}."
    )


def _differences(meta: dict, plan: dict) -> str:
    keys = [k for k, v in plan.items() if meta.get(f"tabb_{k}") != v]
    return ", ".join(f"{k} {meta.get(f'tabb_{k}')!r} -> {plan[k]!r}" for k in keys)


def _acquire(lock, dataset_id: str, report: Callable[[str], None]) -> None:
    """Take a dataset's collection lock, saying so when another process holds it."""
    try:
        lock.acquire(timeout=0)
    except Timeout:
        report(f"{dataset_id}: another process is collecting it (lock {lock.lock_file}); waiting for it to finish")
        lock.acquire()


def _obtain(env_id: str, quality: str, plan: dict, dataset_root, *, force: bool = False,
            report: Callable[[str], None] = _LOG.warning, **create_kwargs) -> tuple[Path, bool]:
    """The directory of the dataset of ``plan`` and whether it was collected now.

    A cached match is returned as it is (unless ``force``); otherwise the dataset
    is collected under its collection lock (another process collecting it is
    waited for, then its dataset used), after refusing to replace a dataset of
    another size or seed under the same id (:func:`_check_not_another_request`,
    skipped with ``force``).  Replacing a stale dataset (another policy, dynamics
    or protocol) is reported with what changed.
    """
    if not force:
        found = _find_cached(env_id, quality, plan, dataset_root)
        if found is not None:
            return found, False
    path = dataset_path(env_id, quality, dataset_root, size=plan["size"], seed=plan["seed"])
    dataset_id = dataset_id_for(env_id, quality, plan["size"], plan["seed"])
    _ensure_namespaces(_datasets_root(dataset_root), dataset_id)  # the folder of the lock, as Minari lays it out
    lock = collection_lock(path)
    _acquire(lock, dataset_id, report)
    try:
        if not force:
            found = _find_cached(env_id, quality, plan, dataset_root)  # made by the process waited for
            if found is not None:
                return found, False
        meta = _read_metadata(path)
        if not force:
            _check_not_another_request(path, meta, plan)
        if meta is not None:
            what = _differences(meta, plan) if not force else "--force"
            report(f"{dataset_id}: replacing the cached dataset at {path} ({meta.get('total_steps')} transitions, "
                   f"seed {meta.get('tabb_seed')}; {what or 'same request'}) once the new one is complete")
        path = create_dataset(env_id, quality, plan["size"], plan["seed"], dataset_root=dataset_root,
                              _plan_override=plan, **create_kwargs)
        return path, True
    finally:
        lock.release()


def get_or_create_dataset(
    env_id: str,
    quality: str,
    size: int,
    seed: int = 0,
    dataset_root: str | os.PathLike | None = None,
    *,
    n_envs: int = DEFAULT_N_ENVS,
    n_workers: int | None = None,
    policy_root: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    show_progress: bool = True,
):
    """The dataset as a transition TensorDict, collected only if not cached.

    The dataset's id holds its size and seed unless they are the defaults
    (:func:`~tabb_torchrl.behavior.minari_writer.dataset_id_for`:
    ``tabb/Hopper/medium-v0`` for 1,000,000 transitions of seed 0,
    ``tabb/Hopper/medium-200k-s0-v0`` for 200,000).  A cached dataset is reused
    when its stored metadata match the request (env id, quality, size, seed,
    policy checkpoint hash, vectorisation, protocol version, digest of the env's
    MJCF, mujoco and gymnasium versions); a dataset stored under the plain id by
    an earlier version is reused by the request it matches.  Otherwise the
    dataset is collected (atomically, one process at a time) and read back with
    :func:`tabb_torchrl.data.load_minari_dataset`; a stale dataset under the same
    id (another policy, dynamics or protocol) is replaced, and the replacement
    logged.  A default-level id and its alias give the same dataset.

    Args:
        env_id: Env id.
        quality: One of :data:`~tabb_torchrl.behavior.minari_writer.DATASET_QUALITIES`.
        size: Transitions (see :func:`create_dataset`).
        seed: Collection seed.
        dataset_root: Minari root (default ``$MINARI_DATASETS_PATH``).
        n_envs: Vectorised envs per worker.
        n_workers: Worker processes.
        policy_root: Behaviour-policy folder (default: shipped assets).
        run_dir: SAC run directory (``medium-replay`` only).
        show_progress: Show a tqdm bar.

    Returns:
        TensorDict: transitions in the project schema (no ``"domain"`` column).

    Raises:
        DatasetIdConflictError: the dataset under the requested id holds another
            size or seed (an earlier version's); it is kept, and the message says
            how to use or replace it.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     td = get_or_create_dataset("Hopper-v5", "random", 100, 0, d, n_envs=2, show_progress=False)
        ...     td.batch_size
        torch.Size([100])
    """
    from tabb_torchrl.data.datasets import load_minari_dataset

    env_id = canonical_env_id(env_id)
    plan = _plan(env_id, quality, size, seed, n_envs, n_workers, policy_root, run_dir)
    path, _ = _obtain(env_id, quality, plan, dataset_root, n_envs=n_envs, n_workers=n_workers,
                      policy_root=policy_root, run_dir=run_dir, show_progress=show_progress)
    return load_minari_dataset(None, data_path=path)


def _env_error(env_id: str) -> str | None:
    """``None`` when ``env_id`` can be made, else the one-line error the command line prints."""
    import gymnasium as gym

    from tabb_torchrl.envs import UnknownEnvError

    try:
        _make_env(env_id).close()
    except UnknownEnvError as err:
        return f"error: --env {env_id}: {err}"
    except gym.error.Error as err:
        return (f"error: --env {env_id}: {err} (source envs are gymnasium ids such as Hopper-v5; list the shifted "
                "ones with `python -m tabb_torchrl.envs`)")
    return None


def _int_at_least(low: int):
    """An argparse type: an integer >= ``low`` (the error names the value and the bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(
                f"{value} is below {low}: pass an integer >= {low} (nothing was collected; the cached dataset is kept)")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``python -m tabb_torchrl.behavior.collect --help``).

    Every argument is checked before the cache is touched (``--size 0`` exits
    with status 2 and keeps the cached dataset); status 2 also for an unknown
    env or a missing behaviour policy.
    """
    p = argparse.ArgumentParser(prog="python -m tabb_torchrl.behavior.collect", description=__doc__.split("\n")[0])
    p.add_argument("--env", required=True, help="env id, e.g. Hopper-v5 or tabb/Hopper-morph-v0")
    p.add_argument("--quality", default="medium", choices=DATASET_QUALITIES)
    p.add_argument("--size", type=_int_at_least(1), default=None,
                   help=f"transitions (default {SOURCE_SIZE} in a source env, {TARGET_SIZE} in a tabb/ target env; "
                        "per half for medium-expert)")
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.add_argument("--n-envs", type=_int_at_least(1), default=DEFAULT_N_ENVS)
    p.add_argument("--workers", type=_int_at_least(1), default=None, help="processes (default 2 if size >= 100k)")
    p.add_argument("--dataset-root", default=None, help="Minari root (default $MINARI_DATASETS_PATH)")
    p.add_argument("--policy-root", default=None, help="behaviour-policy folder (default: shipped assets)")
    p.add_argument("--run-dir", default=None, help="SAC run dir with medium_replay.pt (medium-replay)")
    p.add_argument("--force", action="store_true", help="regenerate even if a matching dataset is cached")
    p.add_argument("--record", default=None, metavar="PATH",
                   help="merge the dataset's return statistics into this JSON file (e.g. "
                        "tabb_torchrl/assets/dataset_returns.json), atomically")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    error = _env_error(args.env)
    if error is not None:
        print(error, file=sys.stderr)
        return 2
    args.env = canonical_env_id(args.env)  # a default level's id and its alias are one env (the alias)
    if args.size is None:
        args.size = default_size(args.env)
    try:
        plan = _plan(args.env, args.quality, args.size, args.seed, args.n_envs, args.workers, args.policy_root,
                     args.run_dir)
    except (PolicyNotFoundError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        path, created = _obtain(args.env, args.quality, plan, args.dataset_root, force=args.force, report=print,
                                n_envs=args.n_envs, n_workers=args.workers, policy_root=args.policy_root,
                                run_dir=args.run_dir)
    except DatasetIdConflictError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    meta = _read_metadata(path) or {}
    name = meta.get("dataset_id") or dataset_id_for(args.env, args.quality, args.size, args.seed)
    if created:
        print(f"{name}: wrote {meta.get('total_steps')} transitions, {meta.get('total_episodes')} episodes to {path}")
    else:
        print(f"{name}: cached at {path}")
    if args.record:
        rec = dataset_record(path)
        record_dataset_stats(args.record, rec)
        ret = "no complete episode" if rec["episodes"] == 0 else (
            f"return {rec['return_mean']:.1f} +- {rec['return_std']:.1f} over {rec['episodes']} episodes")
        print(f"{name}: {ret} ({rec['cut_episodes']} cut at the end); recorded in {args.record}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
