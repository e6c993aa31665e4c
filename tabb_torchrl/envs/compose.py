"""Two shifts of the catalogue on one env: a target env with an extra (deployment) perturbation.

The catalogue registers one shift per env id. Test-time robustness (DROCO's evaluation,
:mod:`tabb_torchrl.robustness`) needs the *target* env with a further shift on top, e.g.
Hopper-morph (the target's bigger head) with the ODRL ``kinematic-legjnt`` range at level
``hard``. :func:`composed_spec` builds that env as data: the target's edits, then the
perturbation's edits, applied in that order to the one base XML they share.

Composition rules (checked by :func:`edit_conflicts`):

* ``scale_*`` operations compose: a perturbation that scales what the target set or scaled
  multiplies it (``scale_range`` of a joint the target already narrowed narrows it further);
* a perturbation's ``set_attr`` of an attribute the target edits would *replace* the target's
  shift there, not add to it; such pairs are refused (:class:`CompositionError`) unless
  ``allow_override=True``.

Composed envs are registered with gymnasium under ``tabb-composed/<target>__<perturbation>-v0``
(:func:`register_composed_env`), so ``gym.make`` (hence
:class:`~tabb_torchrl.pipeline.PolicyEvaluator`) builds them by id; their XML is generated on
first use and cached like the catalogue's (:func:`build_composed_xml`).

Example:
    >>> env_id = register_composed_env("tabb/Hopper-morph-v0", "tabb/Hopper-kinematic-legjnt-hard-v0")
    >>> env_id
    'tabb-composed/Hopper-morph__kinematic-legjnt-hard-v0'
    >>> import mujoco
    >>> model = mujoco.MjModel.from_xml_path(build_composed_xml("tabb/Hopper-morph-v0",
    ...                                                        "tabb/Hopper-kinematic-legjnt-hard-v0"))
    >>> round(float(model.geom("torso_geom").size[0]), 3), [round(float(x), 2) for x in model.jnt_range[model.joint("leg_joint").id]]
    (0.125, [-0.52, 0.0])
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import gymnasium as gym

from tabb_torchrl.envs.mjcf import apply_edits, bake_total_mass, load_mjcf
from tabb_torchrl.envs.registry import base_xml_path, cache_dir
from tabb_torchrl.envs.spec import NAMESPACE, VERSION_SUFFIX, ShiftSpec, get_shift
from tabb_torchrl.io import write_text_atomic

__all__ = [
    "COMPOSED_NAMESPACE",
    "CompositionError",
    "edit_keys",
    "edit_conflicts",
    "composed_env_id",
    "composed_spec",
    "build_composed_xml",
    "register_composed_env",
    "make_composed_env",
]

#: gymnasium namespace of composed envs.
COMPOSED_NAMESPACE = "tabb-composed/"

_SCALE_OPS = ("scale_attr", "scale_range", "scale_friction", "scale_gravity")


class CompositionError(ValueError):
    """Two shifts that cannot be composed (another base XML, or an edit that would replace the target's).

    Example:
        >>> issubclass(CompositionError, ValueError)
        True
    """


def _names(edit: Mapping[str, Any], key: str) -> list[str]:
    if key in edit:
        return [str(edit[key])]
    return [str(n) for n in edit.get(key + "s", [])]


def edit_keys(edit: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """What one edit changes, as ``(element, name, attribute)`` keys (``("friction",)``, ``("option", "gravity")``).

    Examples:
        >>> edit_keys({"op": "scale_range", "joints": ["hip_1", "hip_2"], "factor": 0.5})
        [('joint', 'hip_1', 'range'), ('joint', 'hip_2', 'range')]
        >>> edit_keys({"op": "set_attr", "element": "geom", "name": "torso_geom", "attr": "size", "value": 0.1})
        [('geom', 'torso_geom', 'size')]
    """
    op = edit.get("op")
    if op in ("set_attr", "scale_attr"):
        return [(str(edit["element"]), n, str(edit["attr"])) for n in _names(edit, "name")]
    if op == "scale_range":
        return [("joint", n, "range") for n in _names(edit, "joint")]
    if op == "scale_friction":
        return [("friction",)]
    if op == "scale_gravity":
        return [("option", "gravity")]
    raise CompositionError(f"unknown edit op {op!r} in {dict(edit)}")


def _touched(edits: Iterable[Mapping[str, Any]]) -> set[tuple[str, ...]]:
    return {key for edit in edits for key in edit_keys(edit)}


def edit_conflicts(first: Sequence[Mapping[str, Any]], second: Sequence[Mapping[str, Any]]) -> list[tuple[str, ...]]:
    """Keys the ``second`` edits *set* (``set_attr``) that the ``first`` edits also change.

    Applied after ``first``, such a ``set_attr`` replaces the first shift's value there instead of
    adding a shift to it; ``scale_*`` edits compose and are never conflicts.

    Examples:
        >>> target = [{"op": "set_attr", "element": "geom", "name": "torso_geom", "attr": "size", "index": 0, "value": 0.125}]
        >>> edit_conflicts(target, [{"op": "set_attr", "element": "geom", "name": "torso_geom", "attr": "size", "value": 0.1}])
        [('geom', 'torso_geom', 'size')]
        >>> edit_conflicts(target, [{"op": "scale_attr", "element": "geom", "name": "torso_geom", "attr": "size", "factor": 0.5}])
        []
    """
    touched = _touched(first)
    out: list[tuple[str, ...]] = []
    for edit in second:
        if edit.get("op") in _SCALE_OPS:
            continue
        out += [key for key in edit_keys(edit) if key in touched and key not in out]
    return out


def _body(env_id: str) -> str:
    body = env_id[len(NAMESPACE):] if env_id.startswith(NAMESPACE) else env_id
    return body[: -len(VERSION_SUFFIX)] if body.endswith(VERSION_SUFFIX) else body


def composed_env_id(target_id: str, perturbation_id: str) -> str:
    """The gymnasium id of ``target_id`` with ``perturbation_id`` on top.

    Examples:
        >>> composed_env_id("tabb/Walker2d-morph-v0", "tabb/Walker2d-kinematic-footjnt-easy-v0")
        'tabb-composed/Walker2d-morph__kinematic-footjnt-easy-v0'
    """
    target, perturbation = get_shift(target_id), get_shift(perturbation_id)
    pert = _body(perturbation.env_id)
    prefix = perturbation.env_name + "-"
    pert = pert[len(prefix):] if pert.startswith(prefix) else pert
    return f"{COMPOSED_NAMESPACE}{_body(target.env_id)}__{pert}{VERSION_SUFFIX}"


def composed_spec(target_id: str, perturbation_id: str, *, allow_override: bool = False) -> ShiftSpec:
    """The :class:`~tabb_torchrl.envs.ShiftSpec` of the target env with the perturbation's edits after its own.

    Args:
        target_id (str): the target env (a catalogue id).
        perturbation_id (str): the extra shift (a catalogue id of the same env).

    Keyword Args:
        allow_override (bool): accept perturbation edits that replace the target's (see
            :func:`edit_conflicts`). Defaults to ``False``.

    Raises:
        CompositionError: the two ids use different base XMLs, or a conflict without ``allow_override``.

    Examples:
        >>> spec = composed_spec("tabb/Hopper-morph-v0", "tabb/Hopper-morph-foot-medium-v0")
        >>> spec.env_id, spec.shift, spec.level, len(spec.edits)
        ('tabb-composed/Hopper-morph__morph-foot-medium-v0', 'morph+morph', 'medium', 3)
        >>> composed_spec("tabb/Hopper-morph-v0", "tabb/Hopper-morph-torso-easy-v0")
        Traceback (most recent call last):
        ...
        tabb_torchrl.envs.compose.CompositionError: tabb/Hopper-morph-torso-easy-v0 sets geom torso_geom size, which the target tabb/Hopper-morph-v0 shifts: the perturbation would replace the target's shift there instead of adding to it. Fix: choose a perturbation that changes other elements (or pass allow_override=True).
    """
    target, perturbation = get_shift(target_id), get_shift(perturbation_id)
    if target.base_xml != perturbation.base_xml:
        raise CompositionError(
            f"{perturbation_id} ({perturbation.base_xml}) and {target_id} ({target.base_xml}) do not share a base "
            "XML. Fix: pick a perturbation of the same env."
        )
    conflicts = edit_conflicts(target.edits, perturbation.edits)
    if conflicts and not allow_override:
        shown = ", ".join(" ".join(k) for k in conflicts)
        raise CompositionError(
            f"{perturbation_id} sets {shown}, which the target {target_id} shifts: the perturbation would replace "
            "the target's shift there instead of adding to it. Fix: choose a perturbation that changes other "
            "elements (or pass allow_override=True)."
        )
    return dataclasses.replace(
        target,
        env_id=composed_env_id(target_id, perturbation_id),
        shift=f"{target.shift}+{perturbation.shift}",
        variant=perturbation.variant,
        level=perturbation.level,
        description=f"{target.description}; then {perturbation.description}",
        edits=tuple(target.edits) + tuple(perturbation.edits),
        reference=f"{target.env_id} + {perturbation.env_id}",
        caveat=" ".join(c for c in (target.caveat, perturbation.caveat) if c),
        alias_of=None,
    )


def build_composed_xml(target_id: str, perturbation_id: str, *, allow_override: bool = False) -> str:
    """Generate (or reuse) the MJCF file of the composed env, as :func:`~tabb_torchrl.envs.build_xml` does.

    Returns:
        str: the path of the cached file (keyed by the base XML's content and both edit lists).
    """
    spec = composed_spec(target_id, perturbation_id, allow_override=allow_override)
    root = load_mjcf(base_xml_path(target_id))
    base_text = ET.tostring(root, encoding="unicode")
    key = json.dumps({"base": base_text, "edits": list(spec.edits), "format": 2, "composed": True},
                     sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    safe = spec.env_id[len(COMPOSED_NAMESPACE):].replace("/", "_")
    path = os.path.join(cache_dir(), f"composed-{safe}-{digest}.xml")
    if os.path.exists(path):
        return path
    apply_edits(root, spec.edits)
    bake_total_mass(root)
    root.insert(0, ET.Comment(f" generated by tabb_torchrl.envs.compose for {spec.env_id} from {spec.base_xml}: "
                              f"{spec.description.replace('--', '- -')} "))
    write_text_atomic(path, ET.tostring(root, encoding="unicode"))
    return path


def _create_composed_env(target_id: str, perturbation_id: str, allow_override: bool = False, **kwargs: Any) -> gym.Env:
    """gymnasium entry point of a composed id (the target's env class on the composed XML)."""
    from tabb_torchrl.envs.registry import _ADROIT_PREFIX, _adroit_subclass, _ensure_robotics, _record_base_xml

    spec = composed_spec(target_id, perturbation_id, allow_override=allow_override)
    path = build_composed_xml(target_id, perturbation_id, allow_override=allow_override)
    if spec.requires == "gymnasium_robotics":
        _ensure_robotics()
    source = gym.spec(spec.source_id)
    creator = (gym.envs.registration.load_env_creator(source.entry_point) if isinstance(source.entry_point, str)
               else source.entry_point)
    merged = {**source.kwargs, **kwargs}
    if spec.env_name.startswith(_ADROIT_PREFIX):
        env = _adroit_subclass(creator)(xml_file=path, **merged)
    else:
        env = creator(xml_file=path, **merged)
    env = _record_base_xml(env, spec.base_xml, target_id)
    env.unwrapped.metadata = {**env.unwrapped.metadata, "tabb_perturbation_id": perturbation_id,
                              "tabb_composed_env_id": spec.env_id}
    return env


def register_composed_env(target_id: str, perturbation_id: str, *, allow_override: bool = False) -> str:
    """Register the composed env with gymnasium (idempotent) and return its id.

    The id's env has the target's time limit; ``env.unwrapped.metadata`` records the target
    (``"tabb_env_id"``), the perturbation (``"tabb_perturbation_id"``) and the base XML.

    Raises:
        CompositionError: see :func:`composed_spec`.
    """
    spec = composed_spec(target_id, perturbation_id, allow_override=allow_override)
    if spec.env_id not in gym.registry:
        gym.register(
            id=spec.env_id,
            entry_point="tabb_torchrl.envs.compose:_create_composed_env",
            max_episode_steps=spec.max_episode_steps,
            kwargs={"target_id": target_id, "perturbation_id": perturbation_id, "allow_override": allow_override},
        )
    return spec.env_id


def make_composed_env(target_id: str, perturbation_id: str, *, allow_override: bool = False, **kwargs: Any) -> gym.Env:
    """``gym.make`` of the composed env (registered first).

    Example:
        >>> env = make_composed_env("tabb/Hopper-morph-v0", "tabb/Hopper-morph-foot-hard-v0")
        >>> env.reset(seed=0)[0].shape, env.unwrapped.metadata["tabb_perturbation_id"]
        ((11,), 'tabb/Hopper-morph-foot-hard-v0')
        >>> env.close()
    """
    return gym.make(register_composed_env(target_id, perturbation_id, allow_override=allow_override), **kwargs)
