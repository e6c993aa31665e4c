"""Store behaviour datasets in Minari format: dataset ids, paths and the atomic writer.

Datasets are written in Minari format (``data_format="hdf5"``) with ids
``tabb/<env>[-<shift>...]/<quality>-v0`` (``tabb/Hopper/medium-v0`` for
``Hopper-v5``, ``tabb/Hopper-morph/medium-v0`` for ``tabb/Hopper-morph-v0``),
into a hidden temporary directory first, moved into place only when complete,
so a killed run never leaves a loadable partial dataset.

A default-level env id and its alias (``tabb/Walker2d-friction-0.5-v0`` and
``tabb/Walker2d-friction-v0``) are one env: both give the dataset id of the
canonical id (:func:`~tabb_torchrl.behavior.policies.canonical_env_id`, the alias).

:func:`tabb_torchrl.data.load_minari_dataset` reads them back as transitions.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from tabb_torchrl.behavior.episodes import Episode, _make_env
from tabb_torchrl.behavior.policies import canonical_env_id

__all__ = ["DATASET_QUALITIES", "dataset_id_for", "dataset_path", "write_minari_dataset"]

#: Dataset qualities, in D4RL's naming.
DATASET_QUALITIES = ("random", "medium", "medium-replay", "expert", "medium-expert")


def _env_name(env_id: str) -> str:
    """``'Hopper-v5'`` -> ``'Hopper'``; ``'tabb/Hopper-morph-v0'`` -> ``'Hopper-morph'``."""
    name = env_id.split("/")[-1]
    head, sep, ver = name.rpartition("-v")
    return head if sep and ver.isdigit() else name


def dataset_id_for(env_id: str, quality: str) -> str:
    """Minari id of a dataset: ``tabb/<env>[-<shift>...]/<quality>-v0``.

    The id is that of the canonical env id
    (:func:`~tabb_torchrl.behavior.policies.canonical_env_id`): a default-level id
    and its alias give the same dataset.

    Examples:
        >>> dataset_id_for("Hopper-v5", "medium")
        'tabb/Hopper/medium-v0'
        >>> dataset_id_for("tabb/Hopper-morph-v0", "medium-replay")
        'tabb/Hopper-morph/medium-replay-v0'
        >>> dataset_id_for("tabb/Walker2d-friction-0.5-v0", "medium")
        'tabb/Walker2d-friction/medium-v0'
    """
    if quality not in DATASET_QUALITIES:
        raise ValueError(f"quality must be one of {DATASET_QUALITIES}, got {quality!r}")
    return f"tabb/{_env_name(canonical_env_id(env_id))}/{quality}-v0"


def _datasets_root(dataset_root: str | os.PathLike | None) -> Path:
    if dataset_root is not None:
        # absolute: minari joins a relative root onto its own paths (the root got doubled)
        return Path(dataset_root).expanduser().resolve()
    from minari.storage.datasets_root_dir import get_dataset_path

    return Path(get_dataset_path())


def dataset_path(env_id: str, quality: str, dataset_root: str | os.PathLike | None = None) -> Path:
    """Directory of a dataset in the Minari root (``$MINARI_DATASETS_PATH`` by default).

    Examples:
        >>> str(dataset_path("Hopper-v5", "random", "/data"))
        '/data/tabb/Hopper/random-v0'
    """
    return _datasets_root(dataset_root) / dataset_id_for(env_id, quality)


def _ensure_namespaces(root: Path, dataset_id: str) -> None:
    from minari.namespace import NAMESPACE_METADATA_FILENAME

    parts = dataset_id.split("/")[:-1]
    for k in range(1, len(parts) + 1):
        d = root.joinpath(*parts[:k])
        d.mkdir(parents=True, exist_ok=True)
        f = d / NAMESPACE_METADATA_FILENAME
        if not f.exists():
            f.write_text("{}")


def write_minari_dataset(
    dataset_id: str,
    episodes: list[Episode],
    *,
    env_id: str,
    metadata: dict[str, Any],
    dataset_root: str | os.PathLike | None = None,
    description: str | None = None,
    algorithm_name: str = "SAC behaviour policy (tabb-torchrl)",
    _fail_after_episodes: int | None = None,
) -> Path:
    """Write episodes as a Minari (hdf5) dataset, atomically.

    The dataset is written into a hidden temporary directory next to its final
    place and renamed into place once complete (an existing dataset with the
    same id is replaced).

    Args:
        dataset_id: Minari id (``tabb/<env>/<quality>-v0``).
        episodes: The episodes.
        env_id: Env the data come from (its spaces and spec are stored).
        metadata: Extra metadata (JSON-serialisable), stored with a ``tabb_`` prefix.
        dataset_root: Minari datasets root (default ``$MINARI_DATASETS_PATH``).
        description: Human-readable description.
        algorithm_name: Stored as Minari's ``algorithm_name``.

    Returns:
        The dataset directory.

    Examples:
        >>> import tempfile
        >>> from tabb_torchrl.behavior.episodes import collect_episodes
        >>> eps = collect_episodes("Hopper-v5", None, 50, n_envs=2, seed=0)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = write_minari_dataset("tabb/Hopper/random-v0", eps, env_id="Hopper-v5",
        ...                              metadata={"seed": 0}, dataset_root=d)
        ...     (p / "data" / "metadata.json").is_file()
        True
    """
    import gymnasium as gym
    from minari import __version__ as minari_version
    from minari.data_collector import EpisodeBuffer
    from minari.dataset.minari_storage import MinariStorage

    root = _datasets_root(dataset_root)
    final = root / dataset_id
    _ensure_namespaces(root, dataset_id)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    env = _make_env(env_id)
    try:
        obs_space = gym.spaces.Box(-np.inf, np.inf, env.observation_space.shape, np.float32)
        act_space = gym.spaces.Box(
            env.action_space.low.astype(np.float32), env.action_space.high.astype(np.float32),
            env.action_space.shape, np.float32,
        )
        env_spec = env.spec
        try:
            env_spec.to_json()
        except Exception:  # non-serialisable kwargs / entry point
            env_spec = None
    finally:
        env.close()
    try:
        tmp.mkdir(parents=True)
        storage = MinariStorage.new(
            tmp / "data", observation_space=obs_space, action_space=act_space, env_spec=env_spec,
            data_format="hdf5",
        )
        storage.update_metadata(
            {
                "dataset_id": dataset_id,
                "algorithm_name": algorithm_name,
                "author": {"tabb-torchrl"},
                "code_permalink": "https://github.com/tabb-torchrl/tabb-torchrl",
                "description": description or f"{dataset_id} collected in {env_id}",
                "minari_version": minari_version,
                **{f"tabb_{k}": v for k, v in metadata.items()},
            }
        )
        chunk = 2000
        for start in range(0, len(episodes), chunk):
            if _fail_after_episodes is not None and start >= _fail_after_episodes:
                raise RuntimeError("simulated failure while writing (test hook)")
            storage.update_episodes(
                EpisodeBuffer(
                    observations=e.observations,
                    actions=e.actions,
                    rewards=e.rewards,
                    terminations=e.terminations,
                    truncations=e.truncations,
                )
                for e in episodes[start : start + chunk]
            )
        # A directory swap (not a file write: tabb_torchrl.io does not apply). The old dataset is
        # moved aside, the new one into place, and put back if that fails.
        if final.exists():
            old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
            try:
                os.replace(tmp, final)
            except BaseException:
                os.replace(old, final)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():  # a failed or interrupted write leaves no temporary folder behind
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _read_metadata(path: Path) -> dict[str, Any] | None:
    f = path / "data" / "metadata.json"
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError):
        return None
