"""Offline datasets as flat transition TensorDicts: Minari and D4RL-style HDF5.

Every loader returns the project's transition schema (batch_size ``[N]``)::

    "observation"              float32 [N, obs_dim]
    "action"                   float32 [N, act_dim]
    ("next", "observation")    float32 [N, obs_dim]
    ("next", "reward")         float32 [N, 1]
    ("next", "terminated")     bool    [N, 1]   true terminal: used in (1 - d)
    ("next", "truncated")      bool    [N, 1]   time-out: never a terminal
    ("next", "done")           bool    [N, 1]   terminated | truncated

The ``"domain"`` column is not set here: :func:`~tabb_torchrl.data.make_source_target_buffer`
writes it. ``minari`` and ``h5py`` are imported inside the functions that need them.

TorchRL's own ``MinariExperienceReplay`` is not used: in TorchRL 0.14.1 it returns
all-zero data and keeps float64 (see the project's STACK notes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase, is_tensor_collection

from tabb_torchrl.io import atomic_path

__all__ = [
    "DatasetError",
    "TRANSITION_KEYS",
    "ACTION_TOLERANCE",
    "make_transitions",
    "load_minari_dataset",
    "load_d4rl_hdf5",
    "write_d4rl_hdf5",
    "validate_transitions",
    "check_action_bounds",
]

#: Default slack of the action-bounds check, as a fraction of each action dimension's
#: range: actions may exceed ``[low, high]`` by ``ACTION_TOLERANCE * (high - low)``.
ACTION_TOLERANCE = 0.01

TRANSITION_KEYS: tuple = (
    "observation",
    "action",
    ("next", "observation"),
    ("next", "reward"),
    ("next", "terminated"),
    ("next", "truncated"),
    ("next", "done"),
)
"""The keys every transition TensorDict holds (see the module docstring)."""

_FLOAT_KEYS = ("observation", "action", ("next", "observation"), ("next", "reward"))
_FLAG_KEYS = (("next", "terminated"), ("next", "truncated"), ("next", "done"))


def _binary_flags(values, key: str, name: str) -> np.ndarray:
    """``values`` as a bool array, refusing anything but 0 / 1 (a 0.5 or a NaN is not a flag)."""
    arr = np.asarray(values)
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind not in "biuf":
        raise DatasetError(f"{name}: {key!r} has dtype {arr.dtype}; expected 0 / 1 flags (bool). "
                           "Fix: write the flags as booleans.")
    bad = ~((arr == 0) | (arr == 1))
    if bad.any():
        flat = np.nonzero(bad.reshape(-1))[0]
        first = int(flat[0])
        raise DatasetError(
            f"{name}: {key!r} holds {flat.size} value(s) that are not 0 / 1 flags, first {arr.reshape(-1)[first].item()!r} "
            f"at row {first}. A terminal or time-out is true or false, never a fraction or NaN (they would silently "
            f"become True). Fix: write 0 / 1 (or booleans) in {key!r}, or regenerate / re-download the dataset."
        )
    return arr.astype(bool)


class DatasetError(ValueError):
    """A dataset is missing, unreadable, or does not fit the environment.

    The message names the dataset (file or id), what was expected, what was found,
    and how to fix it.

    Examples:
        >>> from tabb_torchrl.data import DatasetError
        >>> issubclass(DatasetError, ValueError)
        True
    """


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def make_transitions(
    observations,
    actions,
    next_observations,
    rewards,
    terminated,
    truncated=None,
) -> TensorDict:
    """Builds a transition TensorDict (the project schema) from arrays.

    Args:
        observations (array-like): ``[N, obs_dim]``.
        actions (array-like): ``[N, act_dim]``.
        next_observations (array-like): ``[N, obs_dim]``.
        rewards (array-like): ``[N]`` or ``[N, 1]``.
        terminated (array-like): ``[N]`` or ``[N, 1]``, true terminals.
        truncated (array-like, optional): ``[N]`` or ``[N, 1]``, time-outs. All
            ``False`` when ``None``.

    Returns:
        TensorDict: float32 observations / actions / rewards, bool flags of shape
        ``[N, 1]``, ``("next", "done") = terminated | truncated``.

    Raises:
        DatasetError: a flag that is not 0 / 1 (``0.5``, NaN), naming its row.

    Examples:
        >>> import numpy as np
        >>> td = make_transitions(np.zeros((2, 3)), np.zeros((2, 1)), np.ones((2, 3)),
        ...                       [1.0, 2.0], [False, True])
        >>> td["next", "reward"].shape, td["next", "done"].squeeze(-1).tolist()
        (torch.Size([2, 1]), [False, True])
    """
    obs = torch.as_tensor(np.asarray(observations), dtype=torch.float32)
    n = obs.shape[0]
    act = torch.as_tensor(np.asarray(actions), dtype=torch.float32)
    next_obs = torch.as_tensor(np.asarray(next_observations), dtype=torch.float32)
    reward = torch.as_tensor(np.asarray(rewards), dtype=torch.float32).reshape(n, 1)
    term = torch.as_tensor(_binary_flags(_numpy(terminated), "terminated", "transitions")).reshape(n, 1)
    if truncated is None:
        trunc = torch.zeros(n, 1, dtype=torch.bool)
    else:
        trunc = torch.as_tensor(_binary_flags(_numpy(truncated), "truncated", "transitions")).reshape(n, 1)
    if obs.ndim == 1:
        obs, next_obs = obs.unsqueeze(-1), next_obs.unsqueeze(-1)
    if act.ndim == 1:
        act = act.unsqueeze(-1)
    return TensorDict(
        {
            "observation": obs,
            "action": act,
            "next": {
                "observation": next_obs,
                "reward": reward,
                "terminated": term,
                "truncated": trunc,
                "done": term | trunc,
            },
        },
        batch_size=[n],
    )


# --------------------------------------------------------------------------- Minari
def load_minari_dataset(
    dataset_id: str | None,
    download: bool = False,
    data_path: str | os.PathLike | None = None,
    *,
    validate: bool = True,
    env_id: str | None = None,
    obs_dim: int | None = None,
    act_dim: int | None = None,
    action_tolerance: float | None = ACTION_TOLERANCE,
) -> TensorDict:
    """Loads a Minari dataset into a transition TensorDict.

    Reads every episode with ``minari.load_dataset(dataset_id).iterate_episodes()``
    and turns it into transitions ``(obs[t], action[t], obs[t + 1])``:
    ``observations[:-1]`` / ``observations[1:]`` per episode, with Minari's
    ``terminations`` and ``truncations`` kept apart (a truncation is never a
    terminal). Everything is float32 / bool.

    Local datasets live under ``$MINARI_DATASETS_PATH`` (default
    ``~/.minari/datasets``); our own collected datasets have ids such as
    ``tabb/Hopper-morph/medium-v0``.

    Args:
        dataset_id (str or None): Minari id, e.g. ``"mujoco/hopper/medium-v0"``.
            May be ``None`` when ``data_path`` is given.
        download (bool, optional): fetch the dataset from the Minari remote
            (Hugging Face) when it is not local. Needs internet access and
            ``huggingface_hub`` (``pip install "tabb-torchrl[remote]"``).
            Defaults to ``False``.
        data_path (str or PathLike, optional): read the dataset at this path
            instead of looking the id up (the dataset directory or its ``data``
            sub-directory).

    Keyword Args:
        validate (bool, optional): run :func:`validate_transitions` on the result.
            A NaN / inf is reported by its episode id, step within the episode
            and Minari key (``'observations'``, ``'actions'``, ``'rewards'``).
            Defaults to ``True``.
        env_id (str, optional): the env the dataset is meant for. Its
            observation / action sizes are checked against the dataset's (the env
            is made once to read them, unless ``obs_dim`` and ``act_dim`` are
            both given), also when ``validate=False``.
        obs_dim (int, optional): the expected observation size.
        act_dim (int, optional): the expected action size.
        action_tolerance (float, optional): with ``env_id`` and ``validate``, refuse
            actions outside the env's action bounds by more than this fraction of
            their range (:func:`check_action_bounds`); ``None`` accepts any action.
            Defaults to :data:`ACTION_TOLERANCE`.

    Returns:
        TensorDict: transitions in the project schema (no ``"domain"`` column).

    Raises:
        DatasetError: ``dataset_id`` names a file, not an id (D4RL files are read
            by :func:`load_d4rl_hdf5`); the dataset is not local and
            ``download=False`` (the message says to pass ``download=True``); the
            download failed; the files are unreadable; observations or actions are
            not flat boxes; the data contain NaN / inf, flags that are not 0 / 1,
            or no transitions; the observation or action size differs from
            ``env_id``'s (or ``obs_dim`` / ``act_dim``); actions outside
            ``env_id``'s bounds.

    Examples:
        >>> import tempfile, os
        >>> from tabb_torchrl.data import load_minari_dataset, DatasetError
        >>> with tempfile.TemporaryDirectory() as d:
        ...     os.environ["MINARI_DATASETS_PATH"] = d
        ...     try:
        ...         load_minari_dataset("tabb/Nothing/here-v0")
        ...     except DatasetError as err:
        ...         print("download=True" in str(err))
        ...     finally:
        ...         del os.environ["MINARI_DATASETS_PATH"]
        True
    """
    try:
        import minari
        from minari.dataset.minari_dataset import MinariDataset
    except ImportError as err:  # pragma: no cover - minari is a dependency
        raise DatasetError(
            "Reading Minari datasets needs minari: pip install 'minari[hdf5]'."
        ) from err

    name = dataset_id if dataset_id is not None else str(data_path)
    if dataset_id is not None and data_path is None and (
        os.path.isfile(dataset_id) or str(dataset_id).lower().endswith(_FILE_SUFFIXES)
    ):
        raise DatasetError(
            f"{dataset_id!r} is a file name, not a Minari dataset id (ids look like 'mujoco/hopper/medium-v0'). "
            "D4RL-style HDF5 files are read by load_d4rl_hdf5; the recipe reads data.<source|target>.path as one "
            "when it ends with .hdf5 or .h5. Fix: rename the file to .hdf5 (or load it with load_d4rl_hdf5)."
        )
    obs_dim, act_dim = _resolve_dims(env_id, obs_dim, act_dim)
    if data_path is not None:
        path = Path(data_path)
        if (path / "data").is_dir():
            path = path / "data"
        if not path.is_dir():
            raise DatasetError(
                f"Minari dataset {name!r}: {path} is not a directory. Pass the "
                f"dataset directory (the one holding 'data/') as data_path."
            )
        try:
            dataset = MinariDataset(str(path))
        except Exception as err:
            raise DatasetError(
                f"Minari dataset at {path} cannot be read ({type(err).__name__}: "
                f"{err}). The files may be corrupt or truncated: regenerate or "
                f"re-download the dataset."
            ) from err
    else:
        if dataset_id is None:
            raise DatasetError("load_minari_dataset needs a dataset_id or a data_path.")
        from minari.storage.datasets_root_dir import get_dataset_path

        local_dir = get_dataset_path(dataset_id)
        if not (local_dir / "data").exists():
            if not download:
                hint = (
                    " Datasets of the tabb/ namespace are generated locally: "
                    "python -m tabb_torchrl.behavior.collect."
                    if dataset_id.startswith("tabb/")
                    else ""
                )
                raise DatasetError(
                    f"Minari dataset {dataset_id!r} is not available locally (looked "
                    f"in {local_dir}; set MINARI_DATASETS_PATH to change the root). "
                    f"Pass download=True to fetch it from the Minari remote (needs "
                    f"internet and huggingface_hub: pip install 'tabb-torchrl[remote]')."
                    + hint
                )
            try:
                import huggingface_hub  # noqa: F401
            except ImportError as err:
                raise DatasetError(
                    f"Downloading Minari dataset {dataset_id!r} needs huggingface_hub: "
                    f"pip install 'tabb-torchrl[remote]' (or pip install huggingface_hub)."
                ) from err
        try:
            dataset = minari.load_dataset(dataset_id, download=download)
        except DatasetError:
            raise
        except Exception as err:
            action = "download" if download else "read"
            raise DatasetError(
                f"Could not {action} Minari dataset {dataset_id!r} "
                f"({type(err).__name__}: {err}). "
                + (
                    "Check the id (minari list remote) and the internet connection."
                    if download
                    else "The local files may be corrupt or truncated: delete "
                    f"{local_dir} and regenerate or re-download the dataset."
                )
            ) from err

    try:
        td, origin = _episodes_to_transitions(dataset.iterate_episodes(), name)
    except DatasetError:
        raise
    except (OSError, KeyError, RuntimeError) as err:
        raise DatasetError(
            f"Minari dataset {name!r}: reading the episodes failed "
            f"({type(err).__name__}: {err}). The files may be corrupt or truncated: "
            f"regenerate or re-download the dataset."
        ) from err
    return _checked(td, f"Minari dataset {name!r}", validate, obs_dim, act_dim, env_id, origin, action_tolerance)


def _episodes_to_transitions(episodes: Iterable, name: str) -> tuple[TensorDict, "_Origin"]:
    obs, next_obs, act, rew, term, trunc = [], [], [], [], [], []
    episode_ids, steps_in_episode = [], []
    for episode in episodes:
        o, a = episode.observations, episode.actions
        if not isinstance(o, np.ndarray) or not isinstance(a, np.ndarray):
            raise DatasetError(
                f"Minari dataset {name!r}: episode {episode.id} has "
                f"{type(o).__name__} observations / {type(a).__name__} actions; "
                f"only flat Box observation and action spaces are supported."
            )
        steps = len(episode.rewards)
        if steps == 0:
            continue
        if o.shape[0] != steps + 1:
            raise DatasetError(
                f"Minari dataset {name!r}: episode {episode.id} has {steps} steps but "
                f"{o.shape[0]} observations (expected {steps + 1}). The dataset is "
                f"malformed: regenerate it."
            )
        o = o.reshape(steps + 1, -1)
        obs.append(o[:-1])
        next_obs.append(o[1:])
        act.append(a.reshape(steps, -1))
        rew.append(np.asarray(episode.rewards).reshape(steps))
        where = f"Minari dataset {name!r}, episode {episode.id}"
        term.append(_binary_flags(np.asarray(episode.terminations).reshape(steps), "terminations", where))
        trunc.append(_binary_flags(np.asarray(episode.truncations).reshape(steps), "truncations", where))
        episode_ids.append(np.full(steps, int(episode.id), dtype=np.int64))
        steps_in_episode.append(np.arange(steps, dtype=np.int64))
    if not obs:
        raise DatasetError(
            f"Minari dataset {name!r} holds no transitions (no episode with a step): "
            f"regenerate it."
        )
    td = make_transitions(
        np.concatenate(obs),
        np.concatenate(act),
        np.concatenate(next_obs),
        np.concatenate(rew),
        np.concatenate(term),
        np.concatenate(trunc),
    )
    origin = _Origin(
        {"observation": ("observations", 0), "action": ("actions", 0),
         ("next", "observation"): ("observations", 1), ("next", "reward"): ("rewards", 0)},
        np.concatenate(steps_in_episode),
        np.concatenate(episode_ids),
    )
    return td, origin


# --------------------------------------------------------------------------- HDF5
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


# --------------------------------------------------------------------------- checks
def _key_str(key) -> str:
    return key if isinstance(key, str) else ".".join(key)


def _check_keys(td, name: str) -> None:
    if not is_tensor_collection(td):
        raise DatasetError(f"{name}: expected a TensorDict of transitions, got {type(td).__name__}.")
    present = set(td.keys(True, True))
    missing = [_key_str(k) for k in TRANSITION_KEYS if k not in present]
    if missing:
        raise DatasetError(
            f"{name} lacks the transition keys {missing} (keys present: "
            f"{sorted(_key_str(k) for k in present)}). Load datasets with "
            f"tabb_torchrl.data loaders (load_minari_dataset / load_d4rl_hdf5) or "
            f"build them with make_transitions()."
        )
    if td.batch_dims != 1:
        raise DatasetError(
            f"{name}: expected flat transitions with batch_size [N], got "
            f"{list(td.batch_size)}; flatten with td.reshape(-1)."
        )


class _Origin:
    """Where each transition row of a loaded dataset came from, to name it in messages.

    Args:
        keys: transition key -> ``(source key, step offset)``: the dataset's own key
            (e.g. the file's ``"observations"``) and ``1`` where the value is the
            source's next row (a next observation read from ``observations``).
        rows: ``[N]`` source row (HDF5) or step within the episode (Minari) of each
            transition.
        episodes: ``[N]`` Minari episode id of each transition; ``None`` for a flat file.
    """

    def __init__(self, keys: dict, rows: np.ndarray, episodes: np.ndarray | None = None):
        self.keys, self.rows, self.episodes = keys, np.asarray(rows), episodes

    def locate(self, key, bad: np.ndarray) -> tuple[str, set]:
        source_key, offset = self.keys[key]
        steps = self.rows[bad] + offset
        if self.episodes is None:
            return source_key, {(int(r),) for r in steps}
        return source_key, {(int(e), int(t)) for e, t in zip(self.episodes[bad], steps)}

    def describe(self, source_key: str, locations: set) -> str:
        first = min(locations)
        if self.episodes is None:
            return (f"key {source_key!r} holds NaN or inf in {len(locations)} row(s) of the "
                    f"file, first at row {first[0]}")
        return (f"{source_key!r} holds NaN or inf in {len(locations)} step(s), first at "
                f"episode {first[0]}, step {first[1]}")


def _space_size(space) -> int | None:
    shape = getattr(space, "shape", None)
    return int(np.prod(shape)) if shape else None


def _resolve_dims(env_id: str | None, obs_dim: int | None, act_dim: int | None) -> tuple:
    """``(obs_dim, act_dim)``, each taken from ``env_id``'s spaces when not given."""
    if env_id is None or (obs_dim is not None and act_dim is not None):
        return obs_dim, act_dim
    from tabb_torchrl.envs import make_env  # gym.make, tabb/ ids registered

    env = make_env(env_id)
    try:
        env_obs, env_act = _space_size(env.observation_space), _space_size(env.action_space)
    finally:
        env.close()
    return (env_obs if obs_dim is None else obs_dim), (env_act if act_dim is None else act_dim)


def _check_sizes(td, name: str, obs_dim, act_dim, env_id) -> None:
    found_obs, found_act = td.get("observation").shape[-1], td.get("action").shape[-1]
    wrong = [
        f"{label} size {found} but the env has {expected}"
        for label, found, expected in (("observation", found_obs, obs_dim), ("action", found_act, act_dim))
        if expected is not None and found != expected
    ]
    if not wrong:
        return
    if env_id:
        raise DatasetError(
            f"{name} does not fit env {env_id}: {', '.join(wrong)}. The dataset was "
            f"collected in another env: load the dataset collected in {env_id}, or use "
            f"the env it was collected in."
        )
    raise DatasetError(
        f"{name} does not fit the env: {', '.join(wrong)}. The dataset was collected in "
        f"another env: load the dataset collected in this env, or pass the sizes of the "
        f"env it was collected in (obs_dim= / act_dim=, or env_id=)."
    )


def _checked(td, name: str, validate: bool, obs_dim, act_dim, env_id, origin: _Origin,
             action_tolerance: float | None = None) -> TensorDict:
    """The loaders' last step: full validation (and the action bounds of ``env_id``), or the size check alone."""
    if validate:
        _validate(td, obs_dim, act_dim, name, env_id, origin)
        if env_id is not None and action_tolerance is not None:
            check_action_bounds(td, env_id, tolerance=action_tolerance, name=name, _origin=origin)
    elif td.shape[0]:
        _check_sizes(td, name, obs_dim, act_dim, env_id)
    return td


_FILE_SUFFIXES = (".hdf5", ".hdf", ".h5", ".he5", ".hdf4", ".h4", ".npz", ".pkl", ".pt")


def _env_action_bounds(env_id: str) -> tuple[np.ndarray, np.ndarray]:
    from tabb_torchrl.envs import make_env

    env = make_env(env_id)
    try:
        space = env.action_space
        return np.asarray(space.low, dtype=np.float64).reshape(-1), np.asarray(space.high, dtype=np.float64).reshape(-1)
    finally:
        env.close()


def check_action_bounds(
    td: TensorDictBase,
    env_id: str | None = None,
    *,
    low=None,
    high=None,
    tolerance: float | None = ACTION_TOLERANCE,
    name: str = "dataset",
    _origin: "_Origin | None" = None,
) -> TensorDictBase:
    """Checks that the actions lie in the env's action bounds, up to a tolerance.

    An action may exceed ``[low, high]`` by ``tolerance * (high - low)`` per
    dimension (rounding, a slightly wider clip); beyond that the dataset was
    recorded with another action scale (e.g. not normalised to ``[-1, 1]``) or
    in another env, and training on it would be silently wrong. Unbounded
    dimensions are not checked.

    Args:
        td (TensorDictBase): transitions (``"action"`` ``[N, act_dim]``).
        env_id (str, optional): the env whose ``action_space`` gives the bounds
            (made once), unless ``low`` and ``high`` are given.

    Keyword Args:
        low, high (array-like, optional): the bounds (per dimension, or scalars).
        tolerance (float, optional): the slack as a fraction of the range;
            ``None`` skips the check (the explicit opt-out). Defaults to
            :data:`ACTION_TOLERANCE`.
        name (str): how the dataset is named in messages.

    Returns:
        TensorDictBase: ``td`` itself.

    Raises:
        DatasetError: naming the row, the dimension, the value and the bounds.

    Examples:
        >>> import torch
        >>> td = make_transitions(torch.zeros(3, 2), torch.tensor([[0.5, -1.0], [1.005, 0.0], [80.0, 0.0]]),
        ...                       torch.zeros(3, 2), torch.zeros(3), [False] * 3)
        >>> _ = check_action_bounds(td[:2], low=-1.0, high=1.0)  # 1.005: within 1 % of the range
        >>> check_action_bounds(td, low=-1.0, high=1.0, name="my.hdf5")
        Traceback (most recent call last):
        ...
        tabb_torchrl.data.datasets.DatasetError: my.hdf5: 'action' holds values outside the action bounds [-1, 1] ... first at row 2 (dimension 0: 80)...
        >>> _ = check_action_bounds(td, low=-1.0, high=1.0, tolerance=None)  # the opt-out
    """
    if tolerance is None or td.shape[0] == 0:
        return td
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0 or None, got {tolerance}.")
    if low is None or high is None:
        if env_id is None:
            raise ValueError("check_action_bounds needs env_id, or low and high.")
        low, high = _env_action_bounds(env_id)
    act = td.get("action").detach().cpu().double().reshape(td.shape[0], -1).numpy()
    low = np.broadcast_to(np.asarray(low, dtype=np.float64).reshape(-1), act.shape[1:])
    high = np.broadcast_to(np.asarray(high, dtype=np.float64).reshape(-1), act.shape[1:])
    width = high - low
    slack = np.where(np.isfinite(width), tolerance * np.where(np.isfinite(width), width, 0.0), np.inf)
    bad = (act < low - slack) | (act > high + slack)
    if not bad.any():
        return td
    rows = np.nonzero(bad.any(1))[0]
    row = int(rows[0])
    dim = int(np.nonzero(bad[row])[0][0])
    where = f"row {row}"
    if _origin is not None:
        _, locations = _origin.locate("action", rows[:1])
        loc = min(locations)
        where = f"file row {loc[0]}" if len(loc) == 1 else f"episode {loc[0]}, step {loc[1]}"
    if np.all(low == low[0]) and np.all(high == high[0]):
        bounds = f"[{low[0]:g}, {high[0]:g}]"
    else:
        bounds = f"[{low[dim]:g}, {high[dim]:g}] (dimension {dim})"
    env = f" of {env_id}" if env_id else ""
    raise DatasetError(
        f"{name}: 'action' holds values outside the action bounds{env} {bounds} (tolerance {tolerance:g} of the "
        f"range) in {rows.size} row(s), first at {where} (dimension {dim}: {act[row, dim]:g}); largest |action| "
        f"{np.abs(act).max():g}. The actions were recorded with another scale (not normalised to the env's "
        "bounds) or in another env. Fix: rescale the actions to the bounds, or accept them as they are "
        "(action_tolerance=None; in the recipe +data.action_tolerance=null)."
    )


def validate_transitions(
    td: TensorDictBase,
    obs_dim: int | None = None,
    act_dim: int | None = None,
    name: str = "dataset",
    *,
    env_id: str | None = None,
    action_tolerance: float | None = None,
) -> TensorDictBase:
    """Checks that a transition TensorDict is usable, with errors that say the fix.

    Checks, in order: it is a flat TensorDict with all :data:`TRANSITION_KEYS`; it
    holds at least one transition; per-row shapes (``[obs_dim]`` observations and
    next observations, ``[act_dim]`` actions, ``[1]`` reward and flags); dtypes
    (float32 data, bool flags); the observation / action sizes match the env's
    (when given); ``done == terminated | truncated``; no NaN or inf (the first bad
    row and key are reported).

    Args:
        td (TensorDictBase): transitions.
        obs_dim (int, optional): the env's observation size.
        act_dim (int, optional): the env's action size.
        name (str, optional): how the dataset is named in messages. Defaults to
            ``"dataset"``.

    Keyword Args:
        env_id (str, optional): the env the dataset is meant for: named in the
            size-mismatch message, and made once to read ``obs_dim`` / ``act_dim``
            from its spaces when they are not given.
        action_tolerance (float, optional): also check the actions against
            ``env_id``'s action bounds with this tolerance
            (:func:`check_action_bounds`). Defaults to ``None`` (not checked here;
            the loaders check by default).

    Returns:
        TensorDictBase: ``td`` itself, for chaining.

    Raises:
        DatasetError: the first problem found.

    Examples:
        >>> import torch
        >>> from tabb_torchrl.data import DatasetError, make_transitions, validate_transitions
        >>> td = make_transitions(torch.zeros(5, 11), torch.zeros(5, 3), torch.zeros(5, 11),
        ...                       torch.zeros(5), [False] * 5)
        >>> _ = validate_transitions(td, obs_dim=11, act_dim=3)
        >>> try:
        ...     validate_transitions(td, name="hopper-medium", env_id="HalfCheetah-v5")
        ... except DatasetError as err:
        ...     print(err)
        hopper-medium does not fit env HalfCheetah-v5: observation size 11 but the env has 17, action size 3 but the env has 6. The dataset was collected in another env: load the dataset collected in HalfCheetah-v5, or use the env it was collected in.
    """
    obs_dim, act_dim = _resolve_dims(env_id, obs_dim, act_dim)
    _validate(td, obs_dim, act_dim, name, env_id)
    if env_id is not None and action_tolerance is not None:
        check_action_bounds(td, env_id, tolerance=action_tolerance, name=name)
    return td


def _validate(td, obs_dim, act_dim, name: str, env_id, origin: _Origin | None = None) -> TensorDictBase:
    _check_keys(td, name)
    n = td.shape[0]
    if n == 0:
        raise DatasetError(
            f"{name} is empty (0 transitions): regenerate or re-download it."
        )
    for key in _FLOAT_KEYS + _FLAG_KEYS:
        value = td.get(key)
        per_row = tuple(value.shape[1:])
        if key in _FLOAT_KEYS[:3]:
            ok = len(per_row) == 1
            expected = "[N, dim]"
        else:
            ok = per_row == (1,)
            expected = "[N, 1]"
        if not ok:
            raise DatasetError(
                f"{name}: {_key_str(key)!r} has shape {list(value.shape)}, expected "
                f"{expected}. Build transitions with make_transitions()."
            )
        want = torch.float32 if key in _FLOAT_KEYS else torch.bool
        if value.dtype != want:
            raise DatasetError(
                f"{name}: {_key_str(key)!r} has dtype {value.dtype}, expected {want}. "
                f"Load datasets with the tabb_torchrl.data loaders, which cast."
            )
    found_obs = td.get("observation").shape[-1]
    if td.get(("next", "observation")).shape[-1] != found_obs:
        raise DatasetError(
            f"{name}: observation size {found_obs} but next observation size "
            f"{td.get(('next', 'observation')).shape[-1]}: the dataset is malformed."
        )
    _check_sizes(td, name, obs_dim, act_dim, env_id)
    done = td.get(("next", "done"))
    expected_done = td.get(("next", "terminated")) | td.get(("next", "truncated"))
    if not torch.equal(done, expected_done):
        bad = (done != expected_done).reshape(n).nonzero()[0].item()
        raise DatasetError(
            f"{name}: ('next', 'done') must equal terminated | truncated; row {bad} "
            f"differs. Rebuild the flags with make_transitions()."
        )
    bad_sources: dict = {}  # source key -> bad locations, in the order the keys are checked
    for key in _FLOAT_KEYS:
        finite = torch.isfinite(td.get(key)).reshape(n, -1).all(-1)
        if bool(finite.all()):
            continue
        bad_rows = (~finite).nonzero().reshape(-1)
        if origin is None:
            raise DatasetError(
                f"{name}: {_key_str(key)!r} holds NaN or inf in {bad_rows.numel()} "
                f"row(s), first at row {bad_rows[0].item()}. Drop those rows "
                f"(td[mask]) or regenerate the dataset."
            )
        source_key, locations = origin.locate(key, bad_rows.cpu().numpy())
        bad_sources.setdefault(source_key, set()).update(locations)
    if bad_sources:
        source_key, locations = next(iter(bad_sources.items()))
        raise DatasetError(
            f"{name}: {origin.describe(source_key, locations)}. Regenerate or "
            f"re-download the dataset, or load it with validate=False and drop those "
            f"rows (td[mask])."
        )
    return td
