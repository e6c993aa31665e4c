"""The recipe's hydra configuration, composed in Python: what ``python recipes/tabb_offline.py <overrides>``
gets from ``@hydra.main``, for the Python API (:mod:`tabb_torchrl.api`) and for scripts.

The configuration is ``recipes/config``, shipped in the wheel as the package ``tabb_torchrl._config``
(:func:`config_dir`). :func:`compose_config` applies hydra override strings and keyword settings
(:func:`overrides_from_settings`); :func:`hydra_run_dir` is the run directory hydra would choose.

Examples:
    >>> cfg = compose_config("iql_target", ["+preset=smoke"], seed=3)
    >>> cfg.algo.name, cfg.seed, cfg.optim.steps
    ('iql_target', 3, 200)
"""
from __future__ import annotations

import importlib.resources
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tabb_torchrl.pipeline.config import ALGOS, ConfigError

__all__ = [
    "CONFIG_PACKAGE",
    "algo_variants",
    "compose_config",
    "config_dir",
    "config_overrides",
    "hydra_run_dir",
    "overrides_from_settings",
]

#: The package holding the recipe's hydra configuration (``recipes/config`` in a checkout).
CONFIG_PACKAGE = "tabb_torchrl._config"

#: The config groups of ``config.yaml`` (a setting with one of these names picks a file of the group).
_GROUPS = ("env", "data", "model", "pretrain", "loss", "optim", "eval", "logger", "compile", "algo", "preset")


def config_dir() -> Path:
    """The folder of the recipe's configuration (``config.yaml`` and its groups).

    Examples:
        >>> (config_dir() / "config.yaml").is_file()
        True
    """
    path = Path(str(importlib.resources.files(CONFIG_PACKAGE)))
    if not (path / "config.yaml").is_file():  # pragma: no cover - a broken install
        raise ConfigError(
            f"the recipe configuration is missing from the install ({path} has no config.yaml). "
            "Fix: reinstall tabb-torchrl (`pip install .` from a checkout) so the package tabb_torchrl._config ships."
        )
    return path


def _format_value(value: Any) -> str:
    """A python value in hydra's override grammar (``None`` -> ``null``, lists, quoted strings)."""
    import re

    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        plain = re.fullmatch(r"[A-Za-z_/.~][\w./:~+-]*", value) and value.lower() not in ("null", "true", "false")
        if plain:
            return value
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_format_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_format_value(v) for v in value) + "]"
    raise ConfigError(f"the setting value {value!r} ({type(value).__name__}) cannot be written in a config. "
                      "Fix: pass a number, a string, a bool, None, or a list / dict of them.")


def overrides_from_settings(settings: Mapping[str, Any]) -> list[str]:
    """Hydra override strings from keyword settings.

    A key is a dotted config key, with ``__`` accepted for ``.`` (so it can be a Python keyword
    argument); a leading ``+`` adds a key the config does not have. A config group
    (``env``, ``algo``, ``preset``, ...) takes the name of one of its files; ``env`` also takes
    an env id (the group file of that id, else ``env.id=<id>``).

    Examples:
        >>> overrides_from_settings({"env": "walker2d_friction", "optim__steps": 1000,
        ...                          "model.actor_hidden": [64, 64], "eval.max_episode_steps": None})
        ['env=walker2d_friction', 'optim.steps=1000', 'model.actor_hidden=[64,64]', 'eval.max_episode_steps=null']
        >>> overrides_from_settings({"preset": "smoke", "env": "tabb/Walker2d-friction-v0"})
        ['+preset=smoke', 'env=walker2d_friction']
    """
    out = []
    for key, value in settings.items():
        key = str(key).replace("__", ".")
        if key == "preset" and value is not None:
            key = "+preset"
        if key == "env" and isinstance(value, str) and "/" in value:  # an env id rather than a file of the group
            out.append(_env_id_override(value))
            continue
        out.append(f"{key}={_format_value(value)}")
    return out


def _env_id_override(env_id: str) -> str:
    """``env=<file>`` for the file of the ``env`` group whose ``id`` is ``env_id``, else ``env.id=<env_id>``."""
    from omegaconf import OmegaConf

    for path in sorted((config_dir() / "env").glob("*.yaml")):
        if OmegaConf.load(path).get("id") == env_id:
            return f"env={path.stem}"
    return f"env.id={_format_value(env_id)}"


def algo_variants() -> list[str]:
    """The named variants of the recipe's ``algo`` group: its files that are not in ``ALGOS`` (``tabb_plus``, ...).

    A named variant (``algo.variant_of``, e.g. ``recipes/config/algo/tabb_plus.yaml``) runs its base
    algorithm's code with other settings; :func:`compose_config` and the recipe accept it as ``algo``.

    Examples:
        >>> "tabb_realised" in algo_variants(), "tabb" in algo_variants()
        (True, False)
    """
    return sorted(p.stem for p in (config_dir() / "algo").glob("*.yaml") if p.stem not in ALGOS)


def config_overrides(algo: str | None = None, overrides: Sequence[str] = (), **settings: Any) -> list[str]:
    """The hydra overrides :func:`compose_config` applies: ``algo=<algo>``, ``overrides``, then ``settings``.

    Raises:
        ConfigError: an unknown algorithm, or ``overrides`` given as one string.

    Examples:
        >>> config_overrides("cql", ["+preset=smoke"], seed=1)
        ['algo=cql', '+preset=smoke', 'seed=1']
    """
    if isinstance(overrides, str):
        raise ConfigError(f"overrides={overrides!r} must be a list of strings, not one string. "
                          f"Fix: overrides=[{overrides!r}].")
    items = [str(o) for o in overrides]
    if algo is not None:
        variants = [] if algo in ALGOS else algo_variants()
        if algo not in ALGOS and algo not in variants:
            raise ConfigError(f"algo={algo!r} is unknown; valid: {', '.join(ALGOS)}, or a named variant "
                              f"({', '.join(variants)}). Fix: pass one of them.")
        items.insert(0, f"algo={algo}")
    return items + overrides_from_settings(settings)


def compose_config(algo: str | None = None, overrides: Sequence[str] = (), **settings: Any):
    """The recipe's configuration with overrides, as ``python recipes/tabb_offline.py <overrides>`` gets it.

    Args:
        algo: ``algo=<algo>`` (one of :data:`~tabb_torchrl.pipeline.config.ALGOS` or of :func:`algo_variants`);
            ``None``: the default (tabb).
        overrides: hydra override strings (``"+preset=smoke"``, ``"optim.steps=500"``, ``"env=walker2d_friction"``).
        **settings: more overrides as keyword arguments (see :func:`overrides_from_settings`), applied
            after ``overrides``: ``preset="smoke"``, ``env="walker2d_friction"``, ``optim__steps=500``.

    Returns:
        omegaconf.DictConfig: the composed configuration (without the ``hydra`` node, as ``@hydra.main``
        gives it to the recipe).

    Raises:
        ConfigError: an unknown algorithm, group option or key (the message names it and the fix).

    Examples:
        >>> cfg = compose_config("tabb", preset="smoke", env="walker2d_friction", optim__steps=50)
        >>> cfg.env.id, cfg.optim.steps, cfg.data.n_source
        ('tabb/Walker2d-friction-v0', 50, 32)
        >>> compose_config("tabbb")
        Traceback (most recent call last):
        ...
        tabb_torchrl.pipeline.config.ConfigError: algo='tabbb' is unknown; valid: tabb, ... Fix: ...
        >>> compose_config(optim__stepz=5)
        Traceback (most recent call last):
        ...
        tabb_torchrl.pipeline.config.ConfigError: the setting optim.stepz=5 cannot be applied: ...
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from hydra.initialize import get_gh_backup, restore_gh_from_backup
    from omegaconf.errors import OmegaConfBaseException

    items = config_overrides(algo, overrides, **settings)
    backup = get_gh_backup()  # the API may run inside a hydra app: leave its state as it was
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            try:
                return compose(config_name="config", overrides=items)
            except (HydraException, OmegaConfBaseException) as err:
                raise ConfigError(_override_error(items, err)) from err
    finally:
        restore_gh_from_backup(backup)


def hydra_run_dir(cfg: Any) -> str:
    """The run directory hydra would give ``cfg`` now (``hydra.run.dir`` of ``config.yaml``, resolved).

    ``python recipes/tabb_offline.py`` writes there by default
    (``outputs/<date>/<time>_<algo>_<env>_seed<seed>``); the Python API does too, so ``resume=true``
    finds the runs of both.

    Examples:
        >>> hydra_run_dir(compose_config("iql_target", seed=2)).endswith("_iql_target_Hopper-morph_seed2")
        True
    """
    from hydra.core.utils import setup_globals
    from omegaconf import OmegaConf

    setup_globals()  # hydra's ${now:...} resolver
    pattern = OmegaConf.load(config_dir() / "config.yaml").hydra.run
    pattern = OmegaConf.to_container(pattern, resolve=False)["dir"]
    return str(OmegaConf.create({**OmegaConf.to_container(cfg, resolve=False), "_hydra_run_dir": pattern})
               ["_hydra_run_dir"])


def _override_error(items: list[str], err: Exception) -> str:
    """Hydra's message (without its search path), the override it is about, and the fix."""
    text = " ".join(str(err).split()).split(" Config search path:")[0].rstrip(".")

    def about(override: str) -> bool:
        key, _, value = override.lstrip("+~").partition("=")
        return f"'{key}'" in text or f"'{key}/{value}'" in text or (bool(value) and f"'{value}'" in text)

    culprit = next((o for o in items if about(o)), None)
    head = f"the setting {culprit} cannot be applied" if culprit else f"the overrides {items} cannot be applied"
    return (f"{head}: {text}. Fix: check the key against recipes/config (shipped as tabb_torchrl._config; "
            "`python recipes/tabb_offline.py --cfg job` prints the whole config), prefix a key the config does not "
            f"have with '+', or pick a file of the group (groups: {', '.join(_GROUPS)}).")
