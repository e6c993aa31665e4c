"""The base of the configuration helpers: the error every check raises and how settings are read.

Examples:
    >>> _get({"loss": {"tau": 2.0}}, "loss.tau")
    2.0
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["ConfigError", "to_container"]


class ConfigError(ValueError):
    """A bad configuration value, raised at start with the key, the problem and the fix.

    Examples:
        >>> err = ConfigError("algo.name='foo' is unknown. Fix: use algo=tabb.")
        >>> isinstance(err, ValueError)
        True
    """


ConfigError.__module__ = "tabb_torchrl.pipeline.config"  # its public home (tracebacks, docs)


def to_container(cfg: Any) -> Any:
    """Return ``cfg`` as plain python containers (resolving omegaconf interpolations).

    Args:
        cfg: an omegaconf ``DictConfig`` / ``ListConfig`` or plain python data.

    Examples:
        >>> to_container({"a": [1, 2]})
        {'a': [1, 2]}
    """
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - hydra is a dependency
        return cfg
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def _get(cfg: Any, dotted: str, default: Any = None) -> Any:
    node = cfg
    for part in dotted.split("."):
        if node is None:
            return default
        if isinstance(node, Mapping) or hasattr(node, "get"):
            node = node.get(part, None)
        else:
            return default
    return default if node is None else node
