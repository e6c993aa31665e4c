"""Apply declarative shift edits to an MJCF model (``xml.etree``).

A shift is a list of *edits*, each a small mapping with an ``op`` key. The
edits are read from the YAML catalogue (``envs/*.yaml``) and applied, in order,
to a parsed copy of the base MJCF file; the base file itself is never written.

Supported operations (all numbers are in the units the base XML uses, e.g.
degrees for joint ranges when the XML sets ``<compiler angle="degree">``):

``set_attr``
    ``{op: set_attr, element: geom, name: torso_geom, attr: size, value: [...],
    index: 0, frame: body|world}``. Sets an attribute of the named element(s)
    (``name`` or ``names``). With ``index`` only that component of a vector
    attribute is replaced. With ``frame: world`` (``pos`` and ``fromto`` only)
    the value is given in world coordinates of the model at rest and is
    converted here to the frame the XML uses (the parent body's frame for a
    ``body``, the own body's frame for a ``geom``/``joint``/``site``), which
    requires that the ancestor bodies carry no rotation. Setting ``fromto``
    removes the element's ``pos`` and orientation attributes (MuJoCo derives
    both from ``fromto``).
``scale_attr``
    ``{op: scale_attr, element: geom, names: [...], attr: fromto, factor: k,
    index: 1}``: multiplies a numeric attribute (or one component of it).
``scale_range``
    ``{op: scale_range, joints: [...], factor: k, anchor: zero|inner}``:
    ``zero`` multiplies both bounds (``[-150, 0] -> [-120, 0]`` for k=0.8);
    ``inner`` keeps the bound closest to zero and scales the span
    (``[30, 70] -> [30, 62]``, ``[-70, -30] -> [-62, -30]``).
``scale_friction``
    ``{op: scale_friction, factor: k, unset_geoms: [floor]}``: multiplies the
    ``friction`` attribute of every ``<geom>`` that sets it, inside
    ``<default>`` classes included (the components the XML writes; those it
    leaves out keep MuJoCo's defaults). Geoms listed in ``unset_geoms`` that set
    no friction and inherit none get sliding friction ``k * 1.0`` (MuJoCo's
    built-in default).
``scale_gravity``
    ``{op: scale_gravity, factor: k}``: ``<option gravity>`` (MuJoCo's default
    ``0 0 -9.81`` if unset) times k.

Example:
    >>> import xml.etree.ElementTree as ET
    >>> root = ET.fromstring('<mujoco><worldbody><body name="b" pos="0 0 1">'
    ...     '<joint name="j" range="-150 0"/></body></worldbody></mujoco>')
    >>> apply_edits(root, [{"op": "scale_range", "joint": "j", "factor": 0.8}])
    >>> root.find(".//joint").get("range")
    '-120 0'
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["MJCFEditError", "apply_edits", "bake_total_mass", "load_mjcf", "format_vector"]

_ORIENTATION_ATTRS = ("quat", "axisangle", "euler", "xyaxes", "zaxis")
_MUJOCO_DEFAULT_GRAVITY = (0.0, 0.0, -9.81)
_MUJOCO_DEFAULT_SLIDING_FRICTION = 1.0


class MJCFEditError(ValueError):
    """An edit does not fit the model (unknown element, bad operation...).

    Example:
        >>> issubclass(MJCFEditError, ValueError)
        True
    """


def format_vector(values: Iterable[float]) -> str:
    """Format numbers as an MJCF vector attribute (shortest exact repr).

    Args:
        values: the numbers.

    Returns:
        A space-separated string.

    Example:
        >>> format_vector([0.1 * 3, -0.0, 2.0])
        '0.30000000000000004 0 2'
    """
    out = []
    for v in values:
        v = float(v)
        if v == 0.0:
            out.append("0")
        elif v.is_integer() and abs(v) < 1e15:
            out.append(str(int(v)))
        else:
            out.append(repr(v))
    return " ".join(out)


def _parse_vector(text: str) -> list[float]:
    return [float(x) for x in text.split()]


def load_mjcf(path: str | os.PathLike) -> ET.Element:
    """Parse an MJCF file into a self-contained element tree.

    ``<include file=...>`` elements are replaced, recursively, by the children
    of the included ``<mujocoinclude>`` root, and relative ``meshdir`` /
    ``texturedir`` / ``assetdir`` of ``<compiler>`` are made absolute, so the
    returned tree can be written anywhere (e.g. into the XML cache) and still
    compiles. The file on disk is only read.

    Args:
        path: the MJCF file.

    Returns:
        The root ``<mujoco>`` element.

    Example:
        >>> import gymnasium, os
        >>> xml = os.path.join(os.path.dirname(gymnasium.__file__),
        ...                    "envs/mujoco/assets/hopper.xml")
        >>> load_mjcf(xml).tag
        'mujoco'
    """
    path = os.path.abspath(os.fspath(path))
    root = ET.parse(path).getroot()
    _inline_includes(root, os.path.dirname(path))
    return root


def _inline_includes(elem: ET.Element, base_dir: str) -> None:
    for i, child in enumerate(list(elem)):
        if child.tag == "include":
            inc_path = os.path.join(base_dir, child.get("file", ""))
            inc_root = ET.parse(inc_path).getroot()
            _inline_includes(inc_root, os.path.dirname(inc_path))
            pos = list(elem).index(child)
            elem.remove(child)
            for j, sub in enumerate(list(inc_root)):
                elem.insert(pos + j, sub)
        else:
            if child.tag == "compiler":
                for attr in ("meshdir", "texturedir", "assetdir"):
                    val = child.get(attr)
                    if val is not None and not os.path.isabs(val):
                        child.set(attr, os.path.join(base_dir, val) + os.sep)
            _inline_includes(child, base_dir)


def _parent_map(root: ET.Element) -> dict[ET.Element, ET.Element]:
    return {c: p for p in root.iter() for c in p}


def _find(root: ET.Element, element: str, name: str) -> ET.Element:
    matches = [e for e in root.iter(element) if e.get("name") == name]
    if len(matches) != 1:
        known = sorted({e.get("name") for e in root.iter(element) if e.get("name")})
        raise MJCFEditError(
            f"expected exactly one <{element} name={name!r}>, found {len(matches)}; "
            f"named <{element}> elements: {known}"
        )
    return matches[0]


def _names(edit: Mapping[str, Any], key: str = "name") -> list[str]:
    plural = key + "s"
    if key in edit and plural in edit:
        raise MJCFEditError(f"edit {dict(edit)} sets both {key!r} and {plural!r}")
    if key in edit:
        return [str(edit[key])]
    if plural in edit:
        return [str(n) for n in edit[plural]]
    raise MJCFEditError(f"edit {dict(edit)} names no element ({key!r} or {plural!r})")


def _angle_is_degree(root: ET.Element) -> bool:
    for comp in root.iter("compiler"):
        if comp.get("angle") is not None:
            return comp.get("angle") == "degree"
    return True  # MuJoCo's default


def _body_world_pos(root: ET.Element, body: ET.Element | None) -> list[float]:
    """World position of a body frame at rest (translations only)."""
    parents = _parent_map(root)
    total = [0.0, 0.0, 0.0]
    node = body
    while node is not None and node.tag == "body":
        if any(node.get(a) is not None for a in _ORIENTATION_ATTRS):
            raise MJCFEditError(
                f"frame: world needs translation-only ancestors; body "
                f"{node.get('name')!r} is rotated"
            )
        pos = _parse_vector(node.get("pos", "0 0 0"))
        total = [t + p for t, p in zip(total, pos)]
        node = parents.get(node)
    for comp in root.iter("compiler"):
        if comp.get("coordinate", "local") == "global":
            raise MJCFEditError("frame: world is not supported for coordinate='global'")
    return total


def _to_local(root: ET.Element, elem: ET.Element, attr: str, value: list[float]) -> list[float]:
    parents = _parent_map(root)
    # A body's pos is in its parent body's frame; a geom/joint/site's in its own body's:
    # in both cases the frame is the element's parent in the tree (worldbody = origin).
    parent = parents.get(elem)
    origin = _body_world_pos(root, parent if parent is not None and parent.tag == "body" else None)
    if attr == "pos" and len(value) == 3:
        return [v - o for v, o in zip(value, origin)]
    if attr == "fromto" and len(value) == 6:
        return [v - origin[i % 3] for i, v in enumerate(value)]
    raise MJCFEditError(f"frame: world supports pos (3 numbers) and fromto (6 numbers), got {attr}={value}")


def _as_list(value: Any) -> list[float]:
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, str):
        return _parse_vector(value)
    return [float(v) for v in value]


def _op_set_attr(root: ET.Element, edit: Mapping[str, Any]) -> None:
    element, attr = edit["element"], edit["attr"]
    frame = edit.get("frame", "body")
    for name in _names(edit):
        elem = _find(root, element, name)
        value = _as_list(edit["value"])
        if "index" in edit:
            if len(value) != 1:
                raise MJCFEditError(f"index edits take one number, got {value}")
            current = elem.get(attr)
            if current is None:
                raise MJCFEditError(f"<{element} name={name!r}> has no {attr!r} to index")
            vec = _parse_vector(current)
            vec[int(edit["index"])] = value[0]
            value = vec
        if frame == "world":
            value = _to_local(root, elem, attr, value)
        elif frame != "body":
            raise MJCFEditError(f"frame must be 'body' or 'world', got {frame!r}")
        if attr == "fromto":
            for a in ("pos",) + _ORIENTATION_ATTRS:
                elem.attrib.pop(a, None)
        elem.set(attr, format_vector(value))


def _op_scale_attr(root: ET.Element, edit: Mapping[str, Any]) -> None:
    element, attr, factor = edit["element"], edit["attr"], float(edit["factor"])
    for name in _names(edit):
        elem = _find(root, element, name)
        current = elem.get(attr)
        if current is None:
            raise MJCFEditError(f"<{element} name={name!r}> has no {attr!r} to scale")
        vec = _parse_vector(current)
        if "index" in edit:
            vec[int(edit["index"])] *= factor
        else:
            vec = [v * factor for v in vec]
        elem.set(attr, format_vector(vec))


def _op_scale_range(root: ET.Element, edit: Mapping[str, Any]) -> None:
    factor = float(edit["factor"])
    anchor = edit.get("anchor", "zero")
    for name in _names(edit, "joint"):
        joint = _find(root, "joint", name)
        if joint.get("range") is None:
            raise MJCFEditError(f"joint {name!r} sets no range")
        lo, hi = _parse_vector(joint.get("range"))
        if anchor == "zero":
            new = [lo * factor, hi * factor]
        elif anchor == "inner":
            if lo >= 0:
                new = [lo, lo + (hi - lo) * factor]
            elif hi <= 0:
                new = [hi - (hi - lo) * factor, hi]
            else:
                raise MJCFEditError(f"anchor 'inner' needs a range on one side of 0, joint {name!r} has {[lo, hi]}")
        else:
            raise MJCFEditError(f"anchor must be 'zero' or 'inner', got {anchor!r}")
        joint.set("range", format_vector(new))


def _inherits_friction(root: ET.Element, geom: ET.Element) -> bool:
    """Whether the geom gets a friction from its default class chain."""
    classes: dict[str, ET.Element] = {}
    parents = _parent_map(root)
    for d in root.iter("default"):
        classes[d.get("class", "main")] = d

    def chain(cls_name: str | None) -> Iterable[ET.Element]:
        node = classes.get(cls_name or "main")
        while node is not None and node.tag == "default":
            yield node
            node = parents.get(node)

    cls = geom.get("class")
    if cls is None:  # childclass of an ancestor body
        node = parents.get(geom)
        while node is not None and cls is None:
            cls = node.get("childclass")
            node = parents.get(node)
    for d in chain(cls):
        g = d.find("geom")
        if g is not None and g.get("friction") is not None:
            return True
    return False


def _op_scale_friction(root: ET.Element, edit: Mapping[str, Any]) -> None:
    factor = float(edit["factor"])
    for geom in root.iter("geom"):
        if geom.get("friction") is not None:
            geom.set("friction", format_vector(v * factor for v in _parse_vector(geom.get("friction"))))
    for name in edit.get("unset_geoms", []) or []:
        geom = _find(root, "geom", name)
        if geom.get("friction") is None and not _inherits_friction(root, geom):
            geom.set("friction", format_vector([_MUJOCO_DEFAULT_SLIDING_FRICTION * factor]))


def _op_scale_gravity(root: ET.Element, edit: Mapping[str, Any]) -> None:
    factor = float(edit["factor"])
    option = root.find("option")
    if option is None:
        option = ET.Element("option")
        root.insert(0, option)
    gravity = _parse_vector(option.get("gravity", format_vector(_MUJOCO_DEFAULT_GRAVITY)))
    option.set("gravity", format_vector(g * factor for g in gravity))


_OPS = {
    "set_attr": _op_set_attr,
    "scale_attr": _op_scale_attr,
    "scale_range": _op_scale_range,
    "scale_friction": _op_scale_friction,
    "scale_gravity": _op_scale_gravity,
}


def apply_edits(root: ET.Element, edits: Sequence[Mapping[str, Any]]) -> None:
    """Apply edits, in order, to an MJCF tree (in place).

    Args:
        root: the ``<mujoco>`` element (from :func:`load_mjcf`).
        edits: the edit mappings (see the module docstring for the operations).

    Raises:
        MJCFEditError: unknown operation, missing element, malformed edit.

    Example:
        >>> import xml.etree.ElementTree as ET
        >>> root = ET.fromstring('<mujoco><worldbody/></mujoco>')
        >>> apply_edits(root, [{"op": "scale_gravity", "factor": 0.5}])
        >>> root.find("option").get("gravity")
        '0 0 -4.905'
    """
    for edit in edits:
        op = edit.get("op")
        if op not in _OPS:
            raise MJCFEditError(f"unknown edit op {op!r}; valid ops: {sorted(_OPS)}")
        try:
            _OPS[op](root, edit)
        except KeyError as exc:
            raise MJCFEditError(f"edit {dict(edit)} misses key {exc}") from None


_MUJOCO_DEFAULT_DENSITY = 1000.0


def bake_total_mass(root: ET.Element) -> float | None:
    """Replace ``<compiler settotalmass>`` by the densities and masses it implies (in place).

    MuJoCo deprecates the compiler attribute ``settotalmass`` (it warns, and will
    drop it). ``settotalmass=M`` scales every body mass and inertia by one factor
    ``k = M / m`` after compiling, ``m`` being the total mass of the bodies as the
    XML writes them. Density and explicit masses enter mass and inertia linearly, so
    multiplying every geom ``density`` (MuJoCo's default 1000 included, via the
    top-level ``<default>``), every geom ``mass`` and every ``<inertial>`` mass and
    inertia by ``k`` compiles to the same masses and inertias, up to rounding, without
    the attribute. Geometry edits made before this call redistribute the total mass
    exactly as ``settotalmass`` would (HalfCheetah-morph keeps its 14 kg).

    Args:
        root: the ``<mujoco>`` element (edits already applied).

    Returns:
        The factor ``k``, or ``None`` when the model sets no positive ``settotalmass``
        (the tree is then left as it is).

    Raises:
        MJCFEditError: the rewritten model does not compile to the requested total
            mass (a mass attribute this function does not scale).

    Example:
        >>> import xml.etree.ElementTree as ET
        >>> root = ET.fromstring('<mujoco><compiler settotalmass="2"/><worldbody><body>'
        ...     '<freejoint/><geom type="box" size=".05 .05 .05"/></body></worldbody></mujoco>')
        >>> round(bake_total_mass(root), 6)  # the 10 cm cube weighs 1 kg at density 1000
        2.0
        >>> root.find("compiler").get("settotalmass") is None
        True
        >>> round(float(root.find("default/geom").get("density")), 6)
        2000.0
    """
    import mujoco  # local: parsing and editing do not need the simulator

    total = None
    for comp in root.iter("compiler"):
        if comp.get("settotalmass") is not None:
            total = float(comp.attrib.pop("settotalmass"))
    if total is None or total <= 0:  # MuJoCo's default -1 disables it
        return None
    current = float(mujoco.MjModel.from_xml_string(ET.tostring(root, encoding="unicode")).body_mass.sum())
    if current <= 0:
        raise MJCFEditError(f"settotalmass={total:g} on a model without mass; nothing to scale")
    k = total / current

    def scale(elem: ET.Element, attr: str) -> None:
        if elem.get(attr) is not None:
            elem.set(attr, format_vector(v * k for v in _parse_vector(elem.get(attr))))

    top = root.find("default")
    if top is None:
        top = ET.Element("default")
        root.insert(next((i for i, c in enumerate(root) if c.tag not in ("compiler", "option", "size")),
                         len(root)), top)
    top_geom = top.find("geom")
    if top_geom is None:
        top_geom = ET.SubElement(top, "geom")
    if top_geom.get("density") is None:
        top_geom.set("density", repr(_MUJOCO_DEFAULT_DENSITY * k))
        done = {id(top_geom)}
    else:
        done = set()
    for geom in root.iter("geom"):
        if id(geom) not in done:
            scale(geom, "density")
            scale(geom, "mass")
    for inertial in root.iter("inertial"):
        for attr in ("mass", "diaginertia", "fullinertia"):
            scale(inertial, attr)
    got = float(mujoco.MjModel.from_xml_string(ET.tostring(root, encoding="unicode")).body_mass.sum())
    if abs(got - total) > 1e-9 * total:
        raise MJCFEditError(
            f"baking settotalmass={total:g} into densities gave a total mass of {got:g}; the model "
            "sets masses this function does not scale"
        )
    return k
