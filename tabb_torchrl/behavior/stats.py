"""Episode-return statistics of behaviour datasets, and the shipped record of them.

:func:`dataset_stats` gives the episode-return statistics of a dataset (a list of
:class:`~tabb_torchrl.behavior.episodes.Episode` or a transition TensorDict);
:func:`dataset_record` adds the machine-independent metadata of a dataset written
by :mod:`tabb_torchrl.behavior.collect`, and :func:`record_dataset_stats` merges
such a record into a JSON file (``python -m tabb_torchrl.behavior.collect
--record PATH``; the shipped ``tabb_torchrl/assets/dataset_returns.json`` read by
:mod:`tabb_torchrl.behavior.catalogue`).
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tabb_torchrl.behavior.episodes import Episode, _max_episode_steps
from tabb_torchrl.behavior.minari_writer import _read_metadata, dataset_id_for
from tabb_torchrl.io import write_text_atomic

__all__ = ["RETURNS_FILE_FORMAT", "dataset_stats", "dataset_record", "record_dataset_stats"]

#: Format of the ``--record`` JSON file (``{"format_version": 1, "datasets": {<dataset id>: record}}``).
RETURNS_FILE_FORMAT = 1

#: Metadata fields copied into a record (all machine-independent: no paths, timings or versions).
_RECORD_FIELDS = ("env_id", "quality", "size", "seed", "policy_sha256", "collect_version", "n_envs", "n_workers",
                  "replay_medium_step")


def _next_field(data, key: str) -> np.ndarray:
    """``data["next", key]`` of a TensorDict (or ``data["next"][key]`` of nested dicts) as a flat array."""
    try:
        value = data["next", key]
    except (KeyError, TypeError):
        value = data["next"][key]
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value).reshape(-1)


def _episode_summaries(data, max_episode_steps: int | None) -> list[tuple[float, int, bool]]:
    """``(return, length, complete)`` of every episode of a dataset, in order."""
    if isinstance(data, (list, tuple)):
        bad = [type(e).__name__ for e in data if not isinstance(e, Episode)]
        if bad:
            raise TypeError(f"dataset_stats takes a list of Episode or a transition TensorDict, got a list of {bad[0]}")
        return [(float(np.sum(e.rewards, dtype=np.float64)), len(e), bool(e.complete)) for e in data]
    rew = _next_field(data, "reward").astype(np.float64)
    term = _next_field(data, "terminated").astype(bool)
    trunc = _next_field(data, "truncated").astype(bool)
    ends = list(np.flatnonzero(term | trunc) + 1)
    if not ends or ends[-1] != len(rew):
        ends.append(len(rew))  # a last episode without a done flag: cut by the end of the data
    out, start = [], 0
    for stop in ends:
        n = int(stop - start)
        if term[stop - 1]:
            complete = True
        elif trunc[stop - 1]:
            complete = max_episode_steps is None or n >= int(max_episode_steps)
        else:
            complete = False
        out.append((float(rew[start:stop].sum()), n, complete))
        start = stop
    return out


def dataset_stats(data, *, max_episode_steps: int | None = None) -> dict[str, Any]:
    """Episode-return statistics of a dataset.

    The return statistics are over the *complete* episodes: those ended by a
    termination or by the env's time limit.  Episodes cut by the end of the
    dataset (the unfinished episode of each collection env, the last episode of
    a ``medium-replay`` subset) are shorter than a real episode and are counted
    apart (``cut_episodes``, ``cut_transitions``).

    Args:
        data: A list of :class:`~tabb_torchrl.behavior.episodes.Episode` (their ``complete`` flag says which were
            cut), or a transition TensorDict in the project schema (e.g. from
            :func:`~tabb_torchrl.behavior.collect.get_or_create_dataset`), split
            into episodes at ``("next", "done")``.
        max_episode_steps: For a TensorDict only: the env's time limit.  A
            truncated episode shorter than this was cut by the end of the data
            (collection stores such cuts as truncations); without it every
            truncated episode counts as complete, and only a last episode with no
            done flag as cut.

    Returns:
        ``transitions`` (all of them), ``episodes`` (complete ones),
        ``cut_episodes``, ``cut_transitions``, and over the complete episodes
        ``return_mean``, ``return_std`` (population standard deviation),
        ``return_min``, ``return_max`` and ``length_mean`` (``None`` when no
        episode is complete).

    Examples:
        >>> import numpy as np
        >>> def ep(rewards, terminal, complete=True):
        ...     n = len(rewards)
        ...     done = np.arange(n) == n - 1
        ...     return Episode(np.zeros((n + 1, 1), np.float32), np.zeros((n, 1), np.float32),
        ...                    np.asarray(rewards, np.float32), done & terminal, done & (not terminal), complete)
        >>> s = dataset_stats([ep([1, 2], True), ep([3, 3], False), ep([5], False, complete=False)])
        >>> s["episodes"], s["cut_episodes"], s["transitions"], s["return_mean"], s["return_std"]
        (2, 1, 5, 4.5, 1.5)
    """
    summaries = _episode_summaries(data, max_episode_steps)
    full = [(r, n) for r, n, c in summaries if c]
    cut = [n for _, n, c in summaries if not c]
    returns = np.asarray([r for r, _ in full], dtype=np.float64)
    have = len(returns) > 0
    return {
        "transitions": int(sum(n for _, n, _ in summaries)),
        "episodes": len(full),
        "cut_episodes": len(cut),
        "cut_transitions": int(sum(cut)),
        "return_mean": float(returns.mean()) if have else None,
        "return_std": float(returns.std()) if have else None,
        "return_min": float(returns.min()) if have else None,
        "return_max": float(returns.max()) if have else None,
        "length_mean": float(np.mean([n for _, n in full])) if have else None,
    }


def dataset_record(path: str | os.PathLike) -> dict[str, Any]:
    """What ``--record`` stores for the dataset written at ``path``.

    The dataset's statistics (:func:`dataset_stats`, with the env's time limit)
    and the machine-independent fields of its metadata (dataset and env id,
    quality, requested size, seed, policy hash, protocol version,
    vectorisation), plus today's date (UTC).

    Examples:
        >>> import tempfile
        >>> from tabb_torchrl.behavior.collect import create_dataset
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = create_dataset("Hopper-v5", "random", 100, 0, dataset_root=d, show_progress=False)
        ...     r = dataset_record(p)
        >>> r["dataset_id"], r["quality"], r["size"], r["transitions"]
        ('tabb/Hopper/random-100-s0-v0', 'random', 100, 100)
    """
    from tabb_torchrl.data.datasets import load_minari_dataset

    path = Path(path)
    meta = _read_metadata(path)
    if meta is None or "tabb_env_id" not in meta:
        raise FileNotFoundError(f"{path} is not a dataset written by tabb_torchrl.behavior.collect (no metadata)")
    env_id = meta["tabb_env_id"]
    td = load_minari_dataset(None, data_path=path)
    record: dict[str, Any] = {"dataset_id": meta.get("dataset_id") or dataset_id_for(env_id, meta["tabb_quality"])}
    record.update({k: meta[f"tabb_{k}"] for k in _RECORD_FIELDS if f"tabb_{k}" in meta})
    record["date"] = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    record.update(dataset_stats(td, max_episode_steps=_max_episode_steps(env_id)))
    return record


class _DirLock:
    """An exclusive ``flock`` on a directory (no-op where ``fcntl`` is missing)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.fd: int | None = None

    def __enter__(self) -> _DirLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        self.fd = os.open(self.directory, os.O_RDONLY)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            import fcntl

            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _read_returns_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"format_version": RETURNS_FILE_FORMAT, "datasets": {}}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable dataset-returns JSON file ({err}); fix or remove it") from err
    if not isinstance(data, dict) or not isinstance(data.get("datasets"), dict):
        raise ValueError(f"{path} is not a dataset-returns file (expected {{'format_version': "
                         f"{RETURNS_FILE_FORMAT}, 'datasets': {{<dataset id>: record}}}})")
    return data


def record_dataset_stats(path: str | os.PathLike, record: dict[str, Any]) -> dict[str, Any]:
    """Merge one dataset's record into the JSON file at ``path``, atomically.

    The file holds ``{"format_version": 1, "datasets": {<dataset id>: record}}``
    (one record per Minari id, as the Minari root holds one dataset per id); a
    record replaces the previous one of its dataset id, the others are kept.  The
    new content is written with :func:`tabb_torchrl.io.write_text_atomic`
    (readers never see a partial file), under an exclusive lock on the folder so
    that concurrent records are not lost.

    Args:
        path: The JSON file (created with its folder when missing).
        record: A record with a ``"dataset_id"`` (see :func:`dataset_record`).

    Returns:
        The merged file content.

    Examples:
        >>> import json, os, tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     f = os.path.join(d, "returns.json")
        ...     _ = record_dataset_stats(f, {"dataset_id": "tabb/A/random-v0", "return_mean": 1.0})
        ...     merged = record_dataset_stats(f, {"dataset_id": "tabb/B/random-v0", "return_mean": 2.0})
        ...     sorted(json.load(open(f))["datasets"]) == sorted(merged["datasets"])
        True
        >>> sorted(merged["datasets"])
        ['tabb/A/random-v0', 'tabb/B/random-v0']
    """
    if not record.get("dataset_id"):
        raise ValueError("a dataset-returns record needs a 'dataset_id'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _DirLock(path.parent):
        data = _read_returns_file(path)
        data["format_version"] = RETURNS_FILE_FORMAT
        data["datasets"][record["dataset_id"]] = dict(record)
        data["datasets"] = dict(sorted(data["datasets"].items()))
        write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
    return data
