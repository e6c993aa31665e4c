"""Hashing and comparing run configurations: which settings define a run, and its hash.

A run's hash (:func:`config_hash`) leaves out where it writes and how it executes
(:data:`HASH_EXCLUDED_KEYS`), and the options added later when at the default that
reproduces older runs (:data:`ADDED_DEFAULTS`); ``resume=true`` and the results tables
rely on it. :func:`config_diff` names the settings two configurations differ in.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from tabb_torchrl.pipeline.config_base import to_container

__all__ = [
    "ADDED_DEFAULTS",
    "BOOKKEEPING_KEYS",
    "HASH_EXCLUDED_KEYS",
    "RUNTIME_KEYS",
    "config_diff",
    "flatten_config",
    "matches_key",
    "config_hash",
    "legacy_config_hashes",
    "without_added_defaults",
]

#: Where a run writes and how it is continued: not part of what it computes.
BOOKKEEPING_KEYS = ("resume", "run_dir", "runs_root", "hydra", "preset")

#: Runtime-only settings: how a run executes, not what it computes. Changing one
#: keeps the numbers comparable (threads, device and ``torch.compile`` may change
#: the last bits of floating-point sums, so a resume that changes one is no longer
#: bit-identical to an uninterrupted run); the recipe logs each one a resume changes.
#: Dotted keys name nested settings.
RUNTIME_KEYS = (
    "threads",
    "device",
    "compile",
    "progress",
    "logger",
    "checkpoint",
    "max_steps_this_session",
    "data.root",
    "data.storage",
    "data.scratch_dir",
    "eval.perturbations",
    "eval.perturbation_levels",
)

#: Keys left out of the config hash (:func:`config_hash`): a resumed session, or the
#: same run with another thread count, device, logger or checkpoint interval, finds
#: the same hash.
HASH_EXCLUDED_KEYS = BOOKKEEPING_KEYS + RUNTIME_KEYS

#: Settings added after runs had been made, with the default that reproduces what those runs
#: computed (the paper's equations). A key at this default is left out of the config hash
#: (:func:`config_hash`) and of the settings two runs must share (:func:`without_added_defaults`),
#: so a run made before the key existed and one made after, with the default, are the same
#: configuration (``resume=true`` finds the first; the results tables put both in one cell).
ADDED_DEFAULTS = {
    "loss.source_target": "aligned",
    "loss.gate_quantile": 0.9,
    "pretrain.stage2_reg": 0.0,
    "model.predictor": "mlp",
    "algo.source_in_value": False,
}


def without_added_defaults(data: Any) -> Any:
    """``data`` without the :data:`ADDED_DEFAULTS` keys that hold their default (a copy).

    Works on a nested configuration or on a flat ``{dotted key: value}`` mapping.

    Examples:
        >>> without_added_defaults({"loss": {"tau": 1.0, "source_target": "aligned"}})
        {'loss': {'tau': 1.0}}
        >>> without_added_defaults({"loss.tau": 1.0, "loss.source_target": "gated"})
        {'loss.tau': 1.0, 'loss.source_target': 'gated'}
    """
    data = to_container(data)
    if not isinstance(data, Mapping):
        return data
    out = {k: v for k, v in data.items() if not (k in ADDED_DEFAULTS and _is_default(v, ADDED_DEFAULTS[k]))}
    drop = tuple(k for k, default in ADDED_DEFAULTS.items() if _is_default(_get_exact(out, k), default))
    return _without(out, drop)


def _is_default(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return value is default
    if isinstance(default, (int, float)) and isinstance(value, (int, float)):
        return float(value) == float(default)
    return value == default


def _get_exact(cfg: Mapping, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


_MISSING = object()


# The keys left out by tabb-torchrl before runtime-only settings left the hash (up to
# commit 0f22a69): runs started then recorded hashes computed this way, and
# ``resume=true`` still finds them (legacy_config_hashes).
_LEGACY_HASH_EXCLUDED_KEYS = (
    "resume", "run_dir", "runs_root", "max_steps_this_session", "logger", "progress", "checkpoint", "hydra", "preset",
    "eval.perturbations", "eval.perturbation_levels",  # added later: absent from those runs' configs
)

# Settings added to the config after a run may have started: code of that time that read the new
# config files hashed them (legacy_config_hashes accepts that hash too).
_ADDED_RUNTIME_KEYS = ("eval.perturbations", "eval.perturbation_levels")


def _without(data: Mapping, keys: tuple[str, ...]) -> dict:
    """A copy of ``data`` without the (dotted) ``keys``."""
    out = dict(data)
    for key in keys:
        head, _, rest = key.partition(".")
        if head not in out:
            continue
        if not rest:
            del out[head]
        elif isinstance(out[head], Mapping):
            out[head] = _without(out[head], (rest,))
    return out


def _hash(data: Any, length: int) -> str:
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def config_hash(cfg: Any, length: int = 10) -> str:
    """A short, stable hash of everything in ``cfg`` that changes what a run computes.

    Keys listed in :data:`HASH_EXCLUDED_KEYS` (the bookkeeping keys -- resume, run
    directory -- and the runtime-only :data:`RUNTIME_KEYS` -- threads, device,
    ``torch.compile``, logger, checkpoint interval, ...) are ignored, so that a
    resumed session, or the same run on another thread count or logged elsewhere,
    has the same hash; so are the :data:`ADDED_DEFAULTS` keys at their default (a run
    made before such a key existed keeps its hash).

    Args:
        cfg: the run configuration.
        length: number of hex digits kept.

    Examples:
        >>> a = config_hash({"seed": 0, "resume": False, "threads": None})
        >>> a == config_hash({"seed": 0, "resume": True, "threads": 1})
        True
        >>> a == config_hash({"seed": 1})
        False
        >>> b = config_hash({"seed": 0, "loss": {"tau": 1.0}})
        >>> b == config_hash({"seed": 0, "loss": {"tau": 1.0, "source_target": "aligned"}})  # added key, default
        True
    """
    return _hash(_without(without_added_defaults(dict(to_container(cfg))), HASH_EXCLUDED_KEYS), length)


def legacy_config_hashes(cfg: Any, length: int = 10) -> list[str]:
    """The hashes older versions gave ``cfg`` (runtime-only settings included), for ``resume``.

    Runs started before :data:`RUNTIME_KEYS` left the hash recorded a hash that
    included ``threads``, ``device``, ``compile`` and the data storage settings.
    ``resume=true`` also looks for these, so those runs stay findable. ``threads``
    is tried as given and as ``null`` (the default then).

    Examples:
        >>> cfg = {"seed": 0, "threads": 1}
        >>> len(legacy_config_hashes(cfg)), config_hash(cfg) in legacy_config_hashes(cfg)
        (2, False)
    """
    data = without_added_defaults(dict(to_container(cfg)))
    out = []
    for threads in (data.get("threads"), None):
        h = _hash(_without({**data, "threads": threads}, _LEGACY_HASH_EXCLUDED_KEYS), length)
        if h not in out:
            out.append(h)
    before_added = _hash(_without(data, tuple(k for k in HASH_EXCLUDED_KEYS if k not in _ADDED_RUNTIME_KEYS)), length)
    if before_added not in out and before_added != config_hash(data, length):
        out.append(before_added)
    return out


def flatten_config(data: Any, prefix: str = "") -> dict[str, Any]:
    """A nested configuration as ``{dotted key: value}`` (empty mappings stay values).

    Examples:
        >>> flatten_config({"loss": {"tau": 1.0}, "seed": 0})
        {'loss.tau': 1.0, 'seed': 0}
    """
    if not isinstance(data, Mapping):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten_config(value, dotted))
        else:
            out[dotted] = value
    return out


def matches_key(key: str, prefixes: tuple[str, ...]) -> bool:
    """Whether a dotted ``key`` is one of ``prefixes`` or lies under one.

    Examples:
        >>> matches_key("loss.tau", ("loss",)), matches_key("lossy", ("loss",))
        (True, False)
    """
    return any(key == p or key.startswith(p + ".") for p in prefixes)


_ABSENT = "<absent>"


def config_diff(
    old: Any,
    new: Any,
    *,
    include: tuple[str, ...] | None = None,
    exclude: tuple[str, ...] = (),
) -> dict[str, tuple[Any, Any]]:
    """The settings that differ between two configurations, as ``{dotted key: (old, new)}``.

    Args:
        old: a configuration (mapping or omegaconf ``DictConfig``).
        new: another one.

    Keyword Args:
        include: keep only these (dotted) keys and the keys under them (``None``: all).
        exclude: leave out these keys and the keys under them.

    Returns:
        dict: sorted by key; a key missing on one side shows ``"<absent>"``.

    Examples:
        >>> config_diff({"seed": 0, "loss": {"tau": 1.0}, "threads": None},
        ...             {"seed": 1, "loss": {"tau": 1.0}, "threads": 1}, exclude=RUNTIME_KEYS)
        {'seed': (0, 1)}
        >>> config_diff({"threads": None}, {"threads": 1}, include=RUNTIME_KEYS)
        {'threads': (None, 1)}
    """
    a, b = flatten_config(to_container(old)), flatten_config(to_container(new))
    out = {}
    for key in sorted(set(a) | set(b)):
        if include is not None and not matches_key(key, include):
            continue
        if matches_key(key, exclude):
            continue
        va, vb = a.get(key, _ABSENT), b.get(key, _ABSENT)
        if va != vb:
            out[key] = (va, vb)
    return out
