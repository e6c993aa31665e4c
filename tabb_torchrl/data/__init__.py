"""Offline data for cross-domain RL: source/target replay buffers, dataset loaders
and reference returns.

The behaviour policies and the collection of the datasets live in
:mod:`tabb_torchrl.behavior` (:func:`tabb_torchrl.behavior.get_or_create_dataset`, ...).

Importing this package is light: ``minari`` and ``h5py`` are imported lazily inside
the loaders that need them.

Domain flags written in the ``"domain"`` column of every transition:

* :data:`SOURCE` (``0``): transitions from the source environment (large dataset).
* :data:`TARGET` (``1``): transitions from the target environment (a few thousand).
"""

from tabb_torchrl.keys import SOURCE, TARGET  # noqa: E402  (re-exported)

from tabb_torchrl.data.sampler import (  # noqa: E402
    SourceTargetSampler,
    make_source_target_buffer,
    split_by_domain,
)
from tabb_torchrl.data.datasets import (  # noqa: E402
    TRANSITION_KEYS,
    DatasetError,
    load_d4rl_hdf5,
    load_minari_dataset,
    make_transitions,
    validate_transitions,
    write_d4rl_hdf5,
)
from tabb_torchrl.data.references import (  # noqa: E402
    MissingReferenceError,
    medium_return_threshold,
    normalized_score,
    reference_returns,
)

__all__ = [
    "SOURCE",
    "TARGET",
    # sampler.py
    "SourceTargetSampler",
    "make_source_target_buffer",
    "split_by_domain",
    # datasets.py
    "TRANSITION_KEYS",
    "DatasetError",
    "load_d4rl_hdf5",
    "load_minari_dataset",
    "make_transitions",
    "validate_transitions",
    "write_d4rl_hdf5",
    # references.py
    "MissingReferenceError",
    "medium_return_threshold",
    "normalized_score",
    "reference_returns",
]
