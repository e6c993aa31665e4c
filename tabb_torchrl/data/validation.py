"""Checks that a transition TensorDict fits its env: keys, shapes, dtypes, sizes, finite values, action bounds.

The loaders (:func:`~tabb_torchrl.data.load_minari_dataset`,
:func:`~tabb_torchrl.data.load_d4rl_hdf5`) end with these checks and name a bad
value by where it sits in the source (file row, or Minari episode and step).
"""

from __future__ import annotations

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from tabb_torchrl.data.transitions import (
    _FLAG_KEYS,
    _FLOAT_KEYS,
    DatasetError,
    _check_keys,
    _key_str,
)

__all__ = [
    "ACTION_TOLERANCE",
    "validate_transitions",
    "check_action_bounds",
]

#: Default slack of the action-bounds check, as a fraction of each action dimension's
#: range: actions may exceed ``[low, high]`` by ``ACTION_TOLERANCE * (high - low)``.
ACTION_TOLERANCE = 0.01


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
        >>> from tabb_torchrl.data import make_transitions
        >>> from tabb_torchrl.data.validation import check_action_bounds
        >>> td = make_transitions(torch.zeros(3, 2), torch.tensor([[0.5, -1.0], [1.005, 0.0], [80.0, 0.0]]),
        ...                       torch.zeros(3, 2), torch.zeros(3), [False] * 3)
        >>> _ = check_action_bounds(td[:2], low=-1.0, high=1.0)  # 1.005: within 1 % of the range
        >>> check_action_bounds(td, low=-1.0, high=1.0, name="my.hdf5")
        Traceback (most recent call last):
        ...
        tabb_torchrl.data.transitions.DatasetError: my.hdf5: 'action' holds values outside the action bounds [-1, 1] ... first at row 2 (dimension 0: 80)...
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
