"""Offline datasets as flat transition TensorDicts: Minari and D4RL-style HDF5.

Every loader returns the project's transition schema (batch_size ``[N]``), described
in :mod:`tabb_torchrl.data.transitions`. This module gathers the dataset API of
its concerns, each in its own module:

* :mod:`tabb_torchrl.data.transitions`: the schema (:data:`TRANSITION_KEYS`),
  :func:`make_transitions` and :class:`DatasetError`;
* :mod:`tabb_torchrl.data.validation`: :func:`validate_transitions`,
  :func:`check_action_bounds` and :data:`ACTION_TOLERANCE`;
* :mod:`tabb_torchrl.data.minari_loader`: :func:`load_minari_dataset`;
* :mod:`tabb_torchrl.data.d4rl_hdf5`: :func:`load_d4rl_hdf5` and :func:`write_d4rl_hdf5`.

``minari`` and ``h5py`` are imported inside the functions that need them.
"""

from __future__ import annotations

from tabb_torchrl.data.d4rl_hdf5 import load_d4rl_hdf5, write_d4rl_hdf5
from tabb_torchrl.data.minari_loader import load_minari_dataset
from tabb_torchrl.data.transitions import TRANSITION_KEYS, DatasetError, make_transitions
from tabb_torchrl.data.validation import ACTION_TOLERANCE, check_action_bounds, validate_transitions

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
