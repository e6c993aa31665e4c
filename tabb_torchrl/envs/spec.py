"""The shift catalogue: YAML specs in ``envs/`` -> :class:`ShiftSpec` objects.

Each YAML file of the catalogue (the top-level ``envs/`` folder, shipped as the
package ``tabb_torchrl._catalogue``) describes one environment: its source
gymnasium id, the base MJCF file shared by source and targets, and a list of
shifts. A shift with ``levels`` expands into one env id per level; ``$name``
placeholders in its edits are filled from the level's parameters. Ids follow
``tabb/<Env>-<shift>[-<variant>][-<level>]-v0``; a shift with a
``default_level`` is also registered without the level (an alias).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import importlib.resources
from collections.abc import Mapping
from typing import Any

import yaml

from tabb_torchrl.envs.mjcf import format_vector

__all__ = [
    "NAMESPACE",
    "VERSION_SUFFIX",
    "ShiftSpec",
    "UnknownEnvError",
    "get_shift",
    "list_env_ids",
    "list_families",
    "catalogue",
]

NAMESPACE = "tabb/"
VERSION_SUFFIX = "-v0"
_CATALOGUE_PACKAGE = "tabb_torchrl._catalogue"


class UnknownEnvError(ValueError):
    """An env id that is not in the catalogue; the message lists valid ids.

    For a known shift with an unknown level (``tabb/Hopper-kinematic-legjnt-extreme-v0``)
    the message lists the valid levels of that shift.

    Example:
        >>> from tabb_torchrl.envs import get_shift
        >>> try:
        ...     get_shift("tabb/Hopper-kinematic-legjnt-extreme-v0")
        ... except UnknownEnvError as err:
        ...     print("easy, medium, hard" in str(err))
        True
    """


@dataclasses.dataclass(frozen=True)
class ShiftSpec:
    """One registered target environment: a source env plus one shift.

    Attributes:
        env_id: the registered id, e.g. ``"tabb/Hopper-morph-v0"``.
        env_name: the environment family, e.g. ``"Hopper"``.
        source_id: the gymnasium id of the source env, e.g. ``"Hopper-v5"``.
        shift: the shift kind, e.g. ``"morph"``, ``"friction"``, ``"broken-joint"``.
        variant: the ODRL variant (``"legjnt"``, ``"floor"``...) or ``None``.
        level: the level (``"easy"``, ``"0.5"``...) or ``None``.
        description: one line saying what changes, with the level's numbers.
        base_xml: ``"<package>:<path>"`` of the MJCF file shared by source and target.
        edits: the resolved edit list applied to the base XML (see :mod:`tabb_torchrl.envs.mjcf`).
        reference: where the numbers come from.
        caveat: a known issue of this shift (empty if none).
        alias_of: for an alias id (no level), the id it equals; else ``None``.
        max_episode_steps: the time limit, as for the source env.
        requires: an optional extra package (``"gymnasium_robotics"``) or ``None``.

    Example:
        >>> from tabb_torchrl.envs import get_shift
        >>> spec = get_shift("tabb/Hopper-morph-v0")
        >>> spec.source_id, spec.shift, spec.level
        ('Hopper-v5', 'morph', None)
    """

    env_id: str
    env_name: str
    source_id: str
    shift: str
    variant: str | None
    level: str | None
    description: str
    base_xml: str
    edits: tuple[Mapping[str, Any], ...]
    reference: str = ""
    caveat: str = ""
    alias_of: str | None = None
    max_episode_steps: int = 1000
    requires: str | None = None

    @property
    def family(self) -> str:
        """``<Env>-<shift>[-<variant>]``, the id without level and version.

        Example:
            >>> from tabb_torchrl.envs import get_shift
            >>> get_shift("tabb/Walker2d-kinematic-footjnt-medium-v0").family
            'Walker2d-kinematic-footjnt'
        """
        return "-".join(p for p in (self.env_name, self.shift, self.variant) if p)


def _substitute(value: Any, params: Mapping[str, Any]) -> Any:
    if isinstance(value, str) and value.startswith("$"):
        key = value[1:]
        if key not in params:
            raise KeyError(f"placeholder {value!r} has no value among level parameters {sorted(params)}")
        return copy.deepcopy(params[key])
    if isinstance(value, Mapping):
        return {k: _substitute(v, params) for k, v in value.items()}
    if isinstance(value, list):
        out: list[Any] = []
        for item in value:
            sub = _substitute(item, params)
            if isinstance(item, str) and item.startswith("$") and isinstance(sub, list):
                out.extend(sub)  # splice: [0, 0, 0, $end] -> 6 numbers
            else:
                out.append(sub)
        return out
    return value


def _describe(template: str, params: Mapping[str, Any]) -> str:
    shown = {k: format_vector(v) if isinstance(v, list) else v for k, v in params.items()}
    return template.format_map(shown) if params else template


def _make_id(*parts: str | None) -> str:
    return NAMESPACE + "-".join(p for p in parts if p) + VERSION_SUFFIX


def _catalogue_files() -> list[tuple[str, str]]:
    root = importlib.resources.files(_CATALOGUE_PACKAGE)
    out = []

    def walk(node, prefix=""):
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            if child.is_dir():
                walk(child, prefix + child.name + "/")
            elif child.name.endswith((".yaml", ".yml")):
                out.append((prefix + child.name, child.read_text(encoding="utf-8")))

    walk(root)
    return out


@functools.lru_cache(maxsize=1)
def catalogue() -> dict[str, ShiftSpec]:
    """All registered shifts, by env id (read once from the YAML catalogue).

    Returns:
        An ordered mapping ``env_id -> ShiftSpec``.

    Example:
        >>> "tabb/HalfCheetah-friction-0.5-v0" in catalogue()
        True
    """
    specs: dict[str, ShiftSpec] = {}
    docs = [(fname, yaml.safe_load(text)) for fname, text in _catalogue_files()]
    # files without a ``shifts`` list (empty, notes) are not env specs
    docs = [(fname, doc) for fname, doc in docs if isinstance(doc, dict) and doc.get("shifts")]
    if not docs:
        raise RuntimeError(
            f"the shift catalogue is empty: no YAML spec with a 'shifts' list in the package "
            f"{_CATALOGUE_PACKAGE!r} ({importlib.resources.files(_CATALOGUE_PACKAGE)}). The install is incomplete "
            "(the wheel was built without its package data). Fix: reinstall with `pip install .` from a checkout "
            "whose pyproject.toml lists the YAML files under [tool.setuptools.package-data]."
        )
    docs.sort(key=lambda item: (item[1].get("order", 1000), item[0]))
    for fname, doc in docs:
        base = doc["base_xml"]
        base_xml = f"{base['package']}:{base['path']}"
        common = dict(
            env_name=doc["env"],
            source_id=doc["source_id"],
            base_xml=base_xml,
            max_episode_steps=int(doc.get("max_episode_steps", 1000)),
            requires=doc.get("requires"),
        )
        for entry in doc["shifts"]:
            shift, variant = entry["shift"], entry.get("variant")
            levels = entry.get("levels") or {None: {}}
            for level, params in levels.items():
                level = None if level is None else str(level)
                params = params or {}
                env_id = _make_id(doc["env"], shift, variant, level)
                if env_id in specs:
                    raise ValueError(f"{fname}: duplicate env id {env_id}")
                spec = ShiftSpec(
                    env_id=env_id,
                    shift=shift,
                    variant=variant,
                    level=level,
                    description=_describe(entry["description"], params),
                    edits=tuple(_substitute(e, params) for e in entry["edits"]),
                    reference=str(entry.get("reference", "")).strip(),
                    caveat=" ".join(str(entry.get("caveat", "")).split()),
                    **common,
                )
                specs[env_id] = spec
            default = entry.get("default_level")
            if default is not None:
                target = specs[_make_id(doc["env"], shift, variant, str(default))]
                alias = _make_id(doc["env"], shift, variant)
                specs[alias] = dataclasses.replace(
                    target,
                    env_id=alias,
                    alias_of=target.env_id,
                    description=f"{target.description} (alias of level {default}, the default [reconstructed])",
                )
    return specs


def list_env_ids(family: str | None = None) -> list[str]:
    """Registered target env ids, in catalogue order.

    Args:
        family: keep only ids of this env (``"Hopper"``), shift (``"friction"``)
            or family (``"Hopper-kinematic-legjnt"``); ``None`` keeps all.

    Returns:
        A list of ids.

    Example:
        >>> list_env_ids("Hopper-kinematic-legjnt")
        ['tabb/Hopper-kinematic-legjnt-easy-v0', 'tabb/Hopper-kinematic-legjnt-medium-v0', 'tabb/Hopper-kinematic-legjnt-hard-v0']
    """
    specs = catalogue().values()
    if family is None:
        return [s.env_id for s in specs]
    return [
        s.env_id
        for s in specs
        if family in (s.env_name, s.shift, s.family) or s.family.startswith(family + "-")
    ]


def list_families() -> dict[str, list[str | None]]:
    """Each ``<Env>-<shift>[-<variant>]`` family and its levels (``[None]`` if none).

    Example:
        >>> list_families()["Hopper-kinematic-legjnt"]
        ['easy', 'medium', 'hard']
    """
    fams: dict[str, list[str | None]] = {}
    for s in catalogue().values():
        if s.alias_of is None:
            fams.setdefault(s.family, []).append(s.level)
    return fams


def get_shift(env_id: str) -> ShiftSpec:
    """The spec of a registered target env id.

    Args:
        env_id: a ``tabb/...-v0`` id.

    Returns:
        Its :class:`ShiftSpec`.

    Raises:
        UnknownEnvError: the id is not registered; the message lists the valid
            levels of a known shift, or the valid ids.

    Example:
        >>> get_shift("tabb/Ant-morph-halflegs-hard-v0").description
        'two front ankle capsules (+-0.4, 0.4) x0.2'
    """
    specs = catalogue()
    if env_id in specs:
        return specs[env_id]
    raise UnknownEnvError(_unknown_message(env_id))


def _unknown_message(env_id: str) -> str:
    specs = catalogue()
    body = env_id
    if body.startswith(NAMESPACE):
        body = body[len(NAMESPACE):]
    if body.endswith(VERSION_SUFFIX):
        body = body[: -len(VERSION_SUFFIX)]
    families = list_families()
    for fam in sorted(families, key=len, reverse=True):
        if body.startswith(fam + "-") and families[fam] != [None]:
            level = body[len(fam) + 1:]
            valid = ", ".join(str(lv) for lv in families[fam])
            return (
                f"unknown level {level!r} for shift {fam!r} in env id {env_id!r}; "
                f"valid levels: {valid} (ids {NAMESPACE}{fam}-<level>{VERSION_SUFFIX})"
            )
    close = difflib.get_close_matches(env_id, list(specs), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    env_names = sorted({s.env_name for s in specs.values()})
    same_env = [i for i in specs if any(body.startswith(n + "-") and specs[i].env_name == n for n in env_names)]
    valid = same_env or list(specs)
    return (
        f"unknown env id {env_id!r}.{hint} Valid ids ({len(valid)}): {', '.join(valid)}"
    )
