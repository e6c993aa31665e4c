"""Loading Minari datasets into transition TensorDicts.

``minari`` is imported inside :func:`load_minari_dataset`. TorchRL's own
``MinariExperienceReplay`` is not used: in TorchRL 0.14.1 it returns all-zero data
and keeps float64 (see the project's STACK notes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
from tensordict import TensorDict

from tabb_torchrl.data.transitions import DatasetError, _binary_flags, make_transitions
from tabb_torchrl.data.validation import ACTION_TOLERANCE, _checked, _Origin, _resolve_dims

__all__ = ["load_minari_dataset"]

_FILE_SUFFIXES = (".hdf5", ".hdf", ".h5", ".he5", ".hdf4", ".h4", ".npz", ".pkl", ".pt")


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

