"""The transition schema of offline datasets, and building transitions from arrays.

Every loader of :mod:`tabb_torchrl.data` returns flat transitions (batch_size ``[N]``)::

    "observation"              float32 [N, obs_dim]
    "action"                   float32 [N, act_dim]
    ("next", "observation")    float32 [N, obs_dim]
    ("next", "reward")         float32 [N, 1]
    ("next", "terminated")     bool    [N, 1]   true terminal: used in (1 - d)
    ("next", "truncated")      bool    [N, 1]   time-out: never a terminal
    ("next", "done")           bool    [N, 1]   terminated | truncated

The ``"domain"`` column is not set here: :func:`~tabb_torchrl.data.make_source_target_buffer`
writes it. :class:`DatasetError` is the error of every loader and check.
"""

from __future__ import annotations

import numpy as np
import torch
from tensordict import TensorDict, is_tensor_collection

__all__ = [
    "DatasetError",
    "TRANSITION_KEYS",
    "make_transitions",
]

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

