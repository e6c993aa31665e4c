"""Reading and writing D4RL-style HDF5 files as transition TensorDicts.

``h5py`` is imported inside the functions that need it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tensordict import TensorDict, TensorDictBase

from tabb_torchrl.data.transitions import DatasetError, _binary_flags, _check_keys, make_transitions
from tabb_torchrl.data.validation import ACTION_TOLERANCE, _checked, _Origin, _resolve_dims
from tabb_torchrl.io import atomic_path

__all__ = ["load_d4rl_hdf5", "write_d4rl_hdf5"]

def _corrupt(path, err) -> DatasetError:
    return DatasetError(
        f"{path} is not a readable HDF5 dataset ({type(err).__name__}: {err}). The "
        f"file is corrupt, truncated or empty: delete it and regenerate or "
        f"re-download it."
    )


def load_d4rl_hdf5(
    path: str | os.PathLike,
    *,
    max_episode_steps: int | None = None,
    validate: bool = True,
    env_id: str | None = None,
    obs_dim: int | None = None,
    act_dim: int | None = None,
    action_tolerance: float | None = ACTION_TOLERANCE,
) -> TensorDict:
    """Loads a D4RL-style HDF5 file into a transition TensorDict.

    Reads the keys ``observations``, ``actions``, ``rewards``, ``terminals`` and,
    when present, ``timeouts`` and ``next_observations``.

    * With ``next_observations``: every row is kept; ``terminals`` →
      ``("next", "terminated")`` and ``timeouts`` → ``("next", "truncated")``.
    * Without ``next_observations`` (older D4RL files), next observations are
      derived as D4RL's ``qlearning_dataset`` does: the next observation of row
      ``i`` is ``observations[i + 1]``; rows where ``timeouts`` is set (the last
      step of a time-limited episode, whose next observation was not recorded) and
      the file's last row are dropped. Terminal rows are kept (their next
      observation is the next episode's first one, which ``(1 - terminated)``
      masks out of the Bellman target, but which a dynamics model must not fit).
      Without ``timeouts`` either, pass ``max_episode_steps`` to mark time-outs
      every ``max_episode_steps`` steps after each terminal (D4RL's fallback);
      otherwise only terminals end episodes.

    Args:
        path (str or PathLike): the ``.hdf5`` file.

    Keyword Args:
        max_episode_steps (int, optional): time limit used to infer time-outs when
            the file has neither ``timeouts`` nor ``next_observations``.
        validate (bool, optional): run :func:`validate_transitions`. A NaN / inf is
            reported by the file's key and its row in the file (not the row of the
            returned TensorDict, which lacks the dropped rows). Defaults to ``True``.
        env_id (str, optional): the env the dataset is meant for. Its
            observation / action sizes are checked against the file's (the env is
            made once to read them, unless ``obs_dim`` and ``act_dim`` are both
            given), also when ``validate=False``.
        obs_dim (int, optional): the expected observation size.
        act_dim (int, optional): the expected action size.
        action_tolerance (float, optional): with ``env_id`` and ``validate``, refuse
            actions outside the env's action bounds by more than this fraction of
            their range (:func:`check_action_bounds`); ``None`` accepts any action.
            Defaults to :data:`ACTION_TOLERANCE`.

    Returns:
        TensorDict: transitions in the project schema (float32 / bool).

    Raises:
        DatasetError: missing file; corrupt, truncated or empty file; missing keys
            (the message lists the keys present); a key that is not a numeric
            array, or whose shape is wrong (``observations`` ``[N, obs_dim]``,
            ``actions`` ``[N, act_dim]``, ``next_observations`` the shape of
            ``observations``, ``rewards`` / ``terminals`` / ``timeouts`` ``[N]`` or
            ``[N, 1]``); NaN / inf; ``terminals`` / ``timeouts`` that are not 0 / 1
            (``0.5``, NaN: never cast to True); no transitions; an observation or
            action size that differs from ``env_id``'s (or ``obs_dim`` /
            ``act_dim``); actions outside ``env_id``'s bounds.

    Examples:
        >>> import os, tempfile, torch
        >>> from tabb_torchrl.data import load_d4rl_hdf5, make_transitions, write_d4rl_hdf5
        >>> td = make_transitions(torch.randn(4, 3), torch.rand(4, 2), torch.randn(4, 3),
        ...                       torch.randn(4), [False, False, False, True])
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = write_d4rl_hdf5(td, os.path.join(d, "toy.hdf5"))
        ...     back = load_d4rl_hdf5(os.path.join(d, "toy.hdf5"))
        >>> bool((back == td).all())
        True

        A dataset of another env (Pendulum-v1: observation 3, action 1):

        >>> from tabb_torchrl.data import DatasetError
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = write_d4rl_hdf5(td, os.path.join(d, "toy.hdf5"))
        ...     try:
        ...         load_d4rl_hdf5(p, env_id="Pendulum-v1")
        ...     except DatasetError as err:
        ...         print(str(err).replace(d, "<dir>"))
        <dir>/toy.hdf5 does not fit env Pendulum-v1: action size 2 but the env has 1. The dataset was collected in another env: load the dataset collected in Pendulum-v1, or use the env it was collected in.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"D4RL HDF5 file {path} does not exist. Check the path, or regenerate / "
            f"re-download the dataset."
        )
    try:
        import h5py
    except ImportError as err:  # pragma: no cover - h5py is a dependency
        raise DatasetError("Reading HDF5 datasets needs h5py: pip install h5py.") from err

    obs_dim, act_dim = _resolve_dims(env_id, obs_dim, act_dim)
    required = ("observations", "actions", "rewards", "terminals")
    try:
        with h5py.File(path, "r") as f:
            present = sorted(f.keys())
            missing = [k for k in required if k not in f]
            if missing:
                raise DatasetError(
                    f"{path} lacks the D4RL keys {missing} (keys present: {present}). "
                    f"A D4RL-style file needs {list(required)}, optionally 'timeouts' "
                    f"and 'next_observations'."
                )
            keys = [k for k in (*required, "timeouts", "next_observations") if k in f]
            _check_hdf5_layout(path, {k: f[k] for k in keys}, h5py.Dataset)
            arrays = {k: f[k][()] for k in keys}
    except DatasetError:
        raise
    except (OSError, RuntimeError, ValueError, KeyError) as err:
        raise _corrupt(path, err) from err

    n = len(arrays["observations"])
    observations = arrays["observations"]
    terminals = _binary_flags(arrays["terminals"].reshape(n), "terminals", str(path))
    timeouts = arrays.get("timeouts")
    timeouts = None if timeouts is None else _binary_flags(timeouts.reshape(n), "timeouts", str(path))
    file_keys = {"observation": "observations", "action": "actions", ("next", "reward"): "rewards"}

    if "next_observations" in arrays:
        td = make_transitions(
            observations,
            arrays["actions"],
            arrays["next_observations"],
            arrays["rewards"].reshape(n),
            terminals,
            timeouts,
        )
        origin = _Origin(
            {**{k: (v, 0) for k, v in file_keys.items()}, ("next", "observation"): ("next_observations", 0)},
            np.arange(n),
        )
        return _checked(td, str(path), validate, obs_dim, act_dim, env_id, origin, action_tolerance)

    if timeouts is None:
        timeouts = np.zeros(n, dtype=bool)
        if max_episode_steps is not None and n:
            # position since the last terminal; a time-out every max_episode_steps
            start = np.zeros(n, dtype=np.int64)
            start[1:] = np.where(terminals[:-1], np.arange(1, n), 0)
            start = np.maximum.accumulate(start)
            pos = np.arange(n) - start
            timeouts = (pos % int(max_episode_steps)) == int(max_episode_steps) - 1
            timeouts &= ~terminals
    keep = ~timeouts
    if n:
        keep[-1] = False  # no observation after the last row
    rows = np.nonzero(keep)[0]  # transition i comes from file row rows[i]
    td = make_transitions(
        observations[rows],
        arrays["actions"][rows],
        observations[rows + 1] if len(rows) else observations[:0],
        arrays["rewards"].reshape(n)[rows],
        terminals[rows],
        np.zeros(len(rows), dtype=bool),
    )
    # the next observation of file row r is the file's observations[r + 1]
    origin = _Origin(
        {**{k: (v, 0) for k, v in file_keys.items()}, ("next", "observation"): ("observations", 1)},
        rows,
    )
    return _checked(td, str(path), validate, obs_dim, act_dim, env_id, origin, action_tolerance)


def _check_hdf5_layout(path, datasets: dict, dataset_type) -> None:
    """Checks the kind, dtype and shape of every D4RL key before anything is read."""
    fix = (
        "Fix: rewrite the file with that key in the expected shape (write_d4rl_hdf5 "
        "writes valid files), or regenerate / re-download the dataset."
    )
    for key, ds in datasets.items():
        if not isinstance(ds, dataset_type):
            raise DatasetError(
                f"{path}: key {key!r} is an HDF5 {type(ds).__name__}, expected an array "
                f"(dataset). {fix}"
            )
        if ds.dtype.kind not in "biuf":
            raise DatasetError(
                f"{path}: key {key!r} has dtype {ds.dtype}, expected a numeric array (float, "
                f"int or bool). {fix}"
            )
    obs_shape = tuple(datasets["observations"].shape)
    if len(obs_shape) != 2:
        raise DatasetError(
            f"{path}: key 'observations' has shape {list(obs_shape)}, expected "
            f"[N, obs_dim] (one flat observation per row). {fix}"
        )
    n = obs_shape[0]
    for key, ds in datasets.items():
        shape = tuple(ds.shape)
        if key == "observations":
            continue
        if key == "next_observations":
            ok, expected = shape == obs_shape, str(list(obs_shape))
        elif key == "actions":
            ok, expected = len(shape) == 2 and shape[0] == n, f"[{n}, act_dim]"
        else:  # rewards, terminals, timeouts: one value per row
            ok, expected = shape in ((n,), (n, 1)), f"[{n}] or [{n}, 1]"
        if not ok:
            raise DatasetError(
                f"{path}: key {key!r} has shape {list(shape)}, expected {expected} "
                f"('observations' has shape {list(obs_shape)}). {fix}"
            )


def write_d4rl_hdf5(
    td: TensorDictBase, path: str | os.PathLike, *, compression: str | None = None
) -> Path:
    """Writes transitions to a D4RL-style HDF5 file, atomically.

    Keys written: ``observations``, ``actions``, ``next_observations`` (float32),
    ``rewards`` (float32 ``[N]``), ``terminals`` and ``timeouts`` (bool ``[N]``,
    from ``("next", "terminated")`` / ``("next", "truncated")``). The file is
    written to a temporary file in the same directory and moved into place
    (:func:`tabb_torchrl.io.atomic_path`), so a reader never sees a half-written file.

    Args:
        td (TensorDictBase): transitions in the project schema.
        path (str or PathLike): destination; parent directories are created.

    Keyword Args:
        compression (str, optional): h5py compression, e.g. ``"gzip"``.

    Returns:
        Path: the written file.

    Raises:
        DatasetError: ``td`` does not hold the transition keys.

    Examples:
        >>> import os, tempfile, torch, h5py
        >>> from tabb_torchrl.data import make_transitions, write_d4rl_hdf5
        >>> td = make_transitions(torch.zeros(3, 2), torch.zeros(3, 1), torch.ones(3, 2),
        ...                       torch.ones(3), [False] * 3, [False, False, True])
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = write_d4rl_hdf5(td, os.path.join(d, "out.hdf5"))
        ...     with h5py.File(p) as f:
        ...         print(sorted(f.keys()), f["timeouts"][()].tolist())
        ['actions', 'next_observations', 'observations', 'rewards', 'terminals', 'timeouts'] [False, False, True]
    """
    import h5py

    _check_keys(td, "transitions to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = td.shape[0]
    arrays = {
        "observations": td.get("observation").float().reshape(n, -1),
        "actions": td.get("action").float().reshape(n, -1),
        "next_observations": td.get(("next", "observation")).float().reshape(n, -1),
        "rewards": td.get(("next", "reward")).float().reshape(n),
        "terminals": td.get(("next", "terminated")).bool().reshape(n),
        "timeouts": td.get(("next", "truncated")).bool().reshape(n),
    }
    with atomic_path(path) as tmp:  # h5py needs a file name
        with h5py.File(tmp, "w") as f:
            for key, value in arrays.items():
                f.create_dataset(key, data=value.cpu().numpy(), compression=compression)
    return path

