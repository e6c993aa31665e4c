"""Offline data for cross-domain RL: source/target replay buffers, dataset loaders
and reference returns.

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

# ``policies`` and ``collect`` are command-line modules too (``python -m
# tabb_torchrl.data.collect``): importing them here would make runpy warn that the
# module is already in ``sys.modules``, so their names are resolved on first use.
_LAZY = {
    "BehaviorPolicy": "policies",
    "PolicyNotFoundError": "policies",
    "SquashedGaussianActor": "policies",
    "list_behavior_policies": "policies",
    "load_behavior_policy": "policies",
    "DATASET_QUALITIES": "collect",
    "create_dataset": "collect",
    "dataset_id_for": "collect",
    "get_or_create_dataset": "collect",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"tabb_torchrl.data.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tabb_torchrl.data' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


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
    # policies.py
    "BehaviorPolicy",
    "PolicyNotFoundError",
    "SquashedGaussianActor",
    "list_behavior_policies",
    "load_behavior_policy",
    # collect.py
    "DATASET_QUALITIES",
    "create_dataset",
    "dataset_id_for",
    "get_or_create_dataset",
]
