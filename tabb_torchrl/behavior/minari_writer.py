"""Store behaviour datasets in Minari format: dataset ids, paths, locks and the atomic writer.

Datasets are written in Minari format (``data_format="hdf5"``) with ids
``tabb/<env>[-<shift>...]/<quality>-v0`` at their default size and seed
(``tabb/Hopper/medium-v0`` for ``Hopper-v5``, ``tabb/Hopper-morph/medium-v0`` for
``tabb/Hopper-morph-v0``: 1,000,000 transitions in a source env, 5,000 in a
``tabb/`` target env, seed 0), and ``tabb/<env>/<quality>-<size>-s<seed>-v0`` at
any other size or seed (``tabb/Hopper/medium-200k-s0-v0``), so that a request
for another size or seed never replaces a dataset in place
(:func:`dataset_id_for`).

Each dataset is written into a hidden temporary directory first and moved into
place only when complete, so a killed run never leaves a loadable partial
dataset. The locks are :class:`filelock.FileLock` s (``flock`` on Linux: a killed
process leaves no stale lock): a writer holds the lock of its temporary directory
while it writes, and that of the namespace folder while it swaps the new dataset
in (:func:`dir_lock`); :func:`clean_stale_temp` (run at the start of every
collection) removes the temporary folders of killed writers and never those of a
writer at work; the collector holds one lock per dataset while it collects
(:func:`collection_lock`), so two processes asking for the same missing dataset
collect it once. An empty dataset is never written.

The metadata carry Minari's ``ref_min_score`` / ``ref_max_score`` when the
collector passes them (it passes ODRL's reference returns, see
:func:`tabb_torchrl.behavior.collect.create_dataset`), so that
``minari.get_normalized_score(dataset, returns)`` works on our datasets.

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
from filelock import FileLock, Timeout

from tabb_torchrl.behavior.episodes import Episode, _make_env
from tabb_torchrl.behavior.policies import canonical_env_id

__all__ = [
    "DATASET_QUALITIES",
    "LOCK_FILE",
    "SOURCE_SIZE",
    "TARGET_SIZE",
    "clean_stale_temp",
    "collection_lock",
    "dataset_id_for",
    "dataset_path",
    "default_size",
    "dir_lock",
    "write_minari_dataset",
]

#: Dataset qualities, in D4RL's naming.
DATASET_QUALITIES = ("random", "medium", "medium-replay", "expert", "medium-expert")

#: Default size of a source dataset (transitions), D4RL's.
SOURCE_SIZE = 1_000_000

#: Default size of a target dataset (transitions), ODRL / OTDF's.
TARGET_SIZE = 5_000

#: The lock file of a directory (:func:`dir_lock`).
LOCK_FILE = ".tabb.lock"


def _env_name(env_id: str) -> str:
    """``'Hopper-v5'`` -> ``'Hopper'``; ``'tabb/Hopper-morph-v0'`` -> ``'Hopper-morph'``."""
    name = env_id.split("/")[-1]
    head, sep, ver = name.rpartition("-v")
    return head if sep and ver.isdigit() else name


def default_size(env_id: str) -> int:
    """Default dataset size of an env: 5,000 in a shifted ``tabb/`` target env, else 1,000,000.

    Shifted envs are the ``tabb/...`` ids of :mod:`tabb_torchrl.envs`; every
    other id is a source env.  For ``medium-expert`` this is the size of each
    half, as D4RL's.

    Examples:
        >>> default_size("Hopper-v5"), default_size("tabb/Hopper-morph-v0")
        (1000000, 5000)
    """
    return TARGET_SIZE if env_id.startswith("tabb/") else SOURCE_SIZE


def _size_tag(size: int) -> str:
    """``1000000`` -> ``'1m'``, ``200000`` -> ``'200k'``, ``600`` -> ``'600'`` (the largest unit that divides)."""
    size = int(size)
    for unit, tag in ((1_000_000, "m"), (1_000, "k")):
        if size % unit == 0:
            return f"{size // unit}{tag}"
    return str(size)


def dataset_id_for(env_id: str, quality: str, size: int | None = None, seed: int = 0) -> str:
    """Minari id of a dataset: ``tabb/<env>[-<shift>...]/<quality>[-<size>-s<seed>]-v0``.

    At the env's default size (:func:`default_size`; ``size=None``) and seed 0
    the id is ``tabb/<env>/<quality>-v0``; any other size or seed is part of the
    id (``medium-200k-s0``, ``random-600-s1``, ``expert-1m-s3``: the size exact,
    in thousands ``k`` or millions ``m`` when it is a whole number of them), so
    datasets of different sizes or seeds never share an id.  For
    ``medium-expert`` the size is that of each half (the ``size`` argument of
    the collector).

    The id is that of the canonical env id
    (:func:`~tabb_torchrl.behavior.policies.canonical_env_id`): a default-level id
    and its alias give the same dataset.

    Examples:
        >>> dataset_id_for("Hopper-v5", "medium")
        'tabb/Hopper/medium-v0'
        >>> dataset_id_for("Hopper-v5", "medium", size=1_000_000, seed=0)
        'tabb/Hopper/medium-v0'
        >>> dataset_id_for("Hopper-v5", "medium", size=200_000)
        'tabb/Hopper/medium-200k-s0-v0'
        >>> dataset_id_for("tabb/Hopper-morph-v0", "random", size=5000, seed=1)
        'tabb/Hopper-morph/random-5k-s1-v0'
        >>> dataset_id_for("tabb/Hopper-morph-v0", "medium-replay")
        'tabb/Hopper-morph/medium-replay-v0'
        >>> dataset_id_for("tabb/Walker2d-friction-0.5-v0", "medium")
        'tabb/Walker2d-friction/medium-v0'
    """
    if quality not in DATASET_QUALITIES:
        raise ValueError(f"quality must be one of {DATASET_QUALITIES}, got {quality!r}")
    env_id = canonical_env_id(env_id)
    name = quality
    if size is not None and (int(size) != default_size(env_id) or int(seed) != 0):
        name = f"{quality}-{_size_tag(size)}-s{int(seed)}"
    return f"tabb/{_env_name(env_id)}/{name}-v0"


def _datasets_root(dataset_root: str | os.PathLike | None) -> Path:
    if dataset_root is not None:
        # absolute: minari joins a relative root onto its own paths (the root got doubled)
        return Path(dataset_root).expanduser().resolve()
    from minari.storage.datasets_root_dir import get_dataset_path

    return Path(get_dataset_path())


def dataset_path(
    env_id: str,
    quality: str,
    dataset_root: str | os.PathLike | None = None,
    *,
    size: int | None = None,
    seed: int = 0,
) -> Path:
    """Directory of a dataset in the Minari root (``$MINARI_DATASETS_PATH`` by default).

    ``size`` and ``seed`` as in :func:`dataset_id_for`.

    Examples:
        >>> str(dataset_path("Hopper-v5", "random", "/data"))
        '/data/tabb/Hopper/random-v0'
        >>> str(dataset_path("Hopper-v5", "random", "/data", size=300, seed=2))
        '/data/tabb/Hopper/random-300-s2-v0'
    """
    return _datasets_root(dataset_root) / dataset_id_for(env_id, quality, size, seed)


def dir_lock(directory: str | os.PathLike) -> FileLock:
    """The lock of a directory: a :class:`filelock.FileLock` on ``<directory>/.tabb.lock``.

    Not acquired yet: ``with dir_lock(d): ...`` holds it (waiting for another
    holder), ``dir_lock(d).acquire(timeout=0)`` raises :class:`filelock.Timeout`
    when another process (or another lock object of this one) holds it.

    Examples:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> with dir_lock(d):
        ...     try:
        ...         dir_lock(d).acquire(timeout=0)
        ...     except Timeout:
        ...         print("held")
        held
    """
    return FileLock(str(Path(directory) / LOCK_FILE))


#: The name :func:`dir_lock` had (a class then).
_Lock = dir_lock


def collection_lock(dataset_dir: str | os.PathLike) -> FileLock:
    """The lock a collector holds while it makes one dataset: ``<namespace>/.<name>.collect.lock``.

    Examples:
        >>> collection_lock("/data/tabb/Hopper/medium-v0").lock_file
        '/data/tabb/Hopper/.medium-v0.collect.lock'
    """
    dataset_dir = Path(dataset_dir)
    return FileLock(str(dataset_dir.parent / f".{dataset_dir.name}.collect.lock"))


#: A temporary folder whose lock is free is left alone this long after its creation (its writer
#: may not have locked it yet) unless the process named in it is gone.
_TMP_GRACE_S = 60.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def clean_stale_temp(folder: str | os.PathLike) -> list[Path]:
    """Remove the leftovers of killed dataset writers in one namespace folder.

    * ``.<name>.tmp-<pid>-<id>`` -- a temporary dataset folder: removed when no
      writer holds its lock (and its process is gone, or it is older than a
      minute); a concurrent writer's folder is locked and kept.
    * ``.<name>.old-<id>`` -- a dataset moved aside during a swap: removed when
      ``<name>`` exists, moved back into place when it does not (the swap was cut
      between its two renames).

    It holds the folder's lock (:func:`dir_lock`), which writers take to swap a
    dataset in. Lock files (``.tabb.lock``, ``.<name>.collect.lock``) are left in
    place: removing a lock file another process may be waiting on would break
    the lock.

    Args:
        folder: the namespace folder (``<root>/tabb/Hopper``), the parent of the datasets.

    Returns:
        list of Path: the folders removed or restored.

    Examples:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> (d / ".random-v0.tmp-999999999-abcd").mkdir()
        >>> [p.name for p in clean_stale_temp(d)], sorted(p.name for p in d.iterdir())  # the lock file stays
        (['.random-v0.tmp-999999999-abcd'], ['.tabb.lock'])
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    import time

    done = []
    with dir_lock(folder):
        for entry in sorted(folder.iterdir()):
            name = entry.name
            if not (name.startswith(".") and entry.is_dir()):
                continue
            if ".tmp-" in name:
                pid_text = name.rsplit(".tmp-", 1)[1].split("-", 1)[0]
                pid = int(pid_text) if pid_text.isdigit() else None
                try:
                    young = time.time() - entry.stat().st_mtime < _TMP_GRACE_S
                except OSError:
                    continue  # removed meanwhile
                if young and (pid is None or _pid_alive(pid)):
                    continue  # perhaps created a moment ago, not locked yet
                lock = dir_lock(entry)
                try:
                    lock.acquire(timeout=0)
                except (Timeout, OSError):
                    continue  # a writer at work (or the folder went away)
                try:
                    shutil.rmtree(entry, ignore_errors=True)
                    done.append(entry)
                finally:
                    lock.release()
            elif ".old-" in name:
                final = folder / name[1:].rsplit(".old-", 1)[0]
                if final.exists():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    os.replace(entry, final)
                done.append(entry)
    return done


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
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
    _fail_after_episodes: int | None = None,
) -> Path:
    """Write episodes as a Minari (hdf5) dataset, atomically.

    The dataset is written into a hidden temporary directory next to its final
    place (locked while it is written) and renamed into place once complete,
    under the namespace folder's lock (an existing dataset with the same id is
    replaced). No episode, or no transition, is refused before anything is
    touched: a good dataset is never replaced by an empty one.

    Args:
        dataset_id: Minari id (``tabb/<env>/<quality>-v0``).
        episodes: The episodes.
        env_id: Env the data come from (its spaces and spec are stored).
        metadata: Extra metadata (JSON-serialisable), stored with a ``tabb_`` prefix.
        dataset_root: Minari datasets root (default ``$MINARI_DATASETS_PATH``).
        description: Human-readable description.
        algorithm_name: Stored as Minari's ``algorithm_name``.
        ref_min_score, ref_max_score: Minari's reference returns (random / expert),
            read by ``minari.get_normalized_score``; stored when both are given.

    Returns:
        The dataset directory.

    Raises:
        ValueError: no episode or no transition to write, or only one of
            ``ref_min_score`` / ``ref_max_score``.

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

    n_transitions = sum(len(e.rewards) for e in episodes)
    if not episodes or n_transitions == 0:
        raise ValueError(
            f"{dataset_id}: nothing to write ({len(episodes)} episodes, {n_transitions} transitions); the cached "
            "dataset, if any, is kept. Fix: collect at least one transition (size >= 1)."
        )
    if (ref_min_score is None) != (ref_max_score is None):
        raise ValueError(f"{dataset_id}: pass both ref_min_score and ref_max_score, or neither "
                         f"(got {ref_min_score!r} / {ref_max_score!r}).")
    refs = {} if ref_min_score is None else {"ref_min_score": float(ref_min_score),
                                             "ref_max_score": float(ref_max_score)}
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
    tmp_lock = None
    try:
        tmp.mkdir(parents=True)
        lock = dir_lock(tmp)
        lock.acquire()  # held until the swap: clean_stale_temp leaves a writer at work alone
        tmp_lock = lock
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
                **refs,
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
        written = int(storage.total_steps)
        if written != n_transitions:
            raise RuntimeError(f"{dataset_id}: wrote {written} of {n_transitions} transitions; the cached dataset, "
                               "if any, is kept")
        # A directory swap (not a file write: tabb_torchrl.io does not apply), under the folder's lock.
        # The old dataset is moved aside, the new one into place, and put back if that fails.
        with dir_lock(final.parent):
            # the namespace lock keeps clean_stale_temp away: the temporary folder's lock file can go now
            tmp_lock.release()
            tmp_lock = None
            (tmp / LOCK_FILE).unlink(missing_ok=True)
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
        if tmp_lock is not None:
            tmp_lock.release()
    return final


def _read_metadata(path: Path) -> dict[str, Any] | None:
    f = path / "data" / "metadata.json"
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError):
        return None
