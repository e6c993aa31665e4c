"""Tests of the shifted-environment catalogue (tabb_torchrl.envs)."""

from __future__ import annotations

import hashlib
import importlib
import importlib.resources
import os
import subprocess
import sys

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import tabb_torchrl.envs as tenvs
from tabb_torchrl.envs import (
    UnknownEnvError,
    base_xml_path,
    build_xml,
    get_shift,
    list_env_ids,
    make_env,
    set_state_from_observation,
    source_env_id,
)

try:
    import gymnasium_robotics  # noqa: F401

    HAS_ROBOTICS = True
except ImportError:  # pragma: no cover
    HAS_ROBOTICS = False

ALL_IDS = list_env_ids()
TARGET_IDS = [i for i in ALL_IDS if get_shift(i).alias_of is None]


def _params(ids):
    return [
        pytest.param(
            i,
            marks=pytest.mark.skipif(
                get_shift(i).requires == "gymnasium_robotics" and not HAS_ROBOTICS,
                reason="gymnasium-robotics not installed",
            ),
        )
        for i in ids
    ]


# --------------------------------------------------------------------------- catalogue


def test_catalogue_counts_and_naming():
    fams = {}
    for i in ALL_IDS:
        assert i.startswith("tabb/") and i.endswith("-v0")
        fams.setdefault(get_shift(i).env_name, 0)
        fams[get_shift(i).env_name] += 1
    # per locomotion env: morph, kinematic, 4 friction (+alias), 4 gravity, 4 ODRL families x 3 levels
    for env in ("HalfCheetah", "Walker2d", "Ant"):
        assert fams[env] == 2 + 5 + 4 + 12
    assert fams["Hopper"] == 2 + 5 + 4 + 4 + 12  # + friction-floor
    assert fams["AdroitHandPen"] == fams["AdroitHandDoor"] == 6
    for must in (
        "tabb/Hopper-morph-v0",
        "tabb/HalfCheetah-friction-0.5-v0",
        "tabb/Walker2d-kinematic-footjnt-medium-v0",
        "tabb/AdroitHandPen-broken-joint-hard-v0",
        "tabb/Hopper-gravity-2.0-v0",
        "tabb/Hopper-friction-floor-0.1-v0",
    ):
        assert must in ALL_IDS


def test_catalogue_is_package_data():
    files = [f.name for f in importlib.resources.files("tabb_torchrl._catalogue").iterdir()]
    assert {"hopper.yaml", "half_cheetah.yaml", "walker2d.yaml", "ant.yaml"} <= set(files)


def test_get_shift_fields_and_alias():
    spec = get_shift("tabb/Walker2d-kinematic-footjnt-medium-v0")
    assert (spec.env_name, spec.source_id, spec.shift, spec.variant, spec.level) == (
        "Walker2d", "Walker2d-v5", "kinematic", "footjnt", "medium")
    assert spec.base_xml.endswith("walker2d_v5.xml")
    alias = get_shift("tabb/Hopper-friction-v0")
    assert alias.alias_of == "tabb/Hopper-friction-0.5-v0"
    assert alias.edits == get_shift("tabb/Hopper-friction-0.5-v0").edits
    assert "k=0.1 and k=0.5" in alias.caveat
    assert source_env_id("tabb/Ant-morph-v0") == "Ant-v5"
    assert source_env_id("Ant-v5") == "Ant-v5"
    assert list_env_ids("Hopper-morph") == [
        "tabb/Hopper-morph-v0", "tabb/Hopper-morph-torso-easy-v0", "tabb/Hopper-morph-torso-medium-v0",
        "tabb/Hopper-morph-torso-hard-v0", "tabb/Hopper-morph-foot-easy-v0",
        "tabb/Hopper-morph-foot-medium-v0", "tabb/Hopper-morph-foot-hard-v0"]
    assert all(get_shift(i).shift == "gravity" for i in list_env_ids("gravity"))


def test_unknown_level_lists_levels():
    with pytest.raises(UnknownEnvError, match="easy, medium, hard"):
        get_shift("tabb/Hopper-kinematic-legjnt-extreme-v0")
    with pytest.raises(UnknownEnvError, match=r"0\.1, 0\.5, 2\.0, 5\.0"):
        make_env("tabb/Hopper-friction-0.3-v0")


def test_unknown_id_lists_ids():
    with pytest.raises(ValueError) as err:
        make_env("tabb/Hopper-wings-v0")
    assert isinstance(err.value, UnknownEnvError)
    assert "tabb/Hopper-morph-v0" in str(err.value)
    with pytest.raises(UnknownEnvError, match="tabb/Ant-morph-v0"):
        get_shift("tabb/Octopus-morph-v0")


def test_make_env_plain_ids():
    env = make_env("Hopper-v5")
    assert env.spec.id == "Hopper-v5"
    env.close()


# --------------------------------------------------------------------------- every id works


@pytest.mark.parametrize("env_id", _params(ALL_IDS))
def test_make_and_step(env_id):
    env = gym.make(env_id)
    src = make_env(source_env_id(env_id))
    obs, _ = env.reset(seed=0)
    assert obs.shape == src.observation_space.shape
    assert env.action_space.shape == src.action_space.shape
    assert env.spec.max_episode_steps == src.spec.max_episode_steps
    out = env.step(env.action_space.sample())
    assert np.all(np.isfinite(out[0]))
    assert os.path.dirname(env.unwrapped.fullpath) == tenvs.cache_dir()
    env.close()
    src.close()


# --------------------------------------------------------------------------- compiled models


def _named(spec, element):
    names = set()
    for e in spec.edits:
        if e.get("element") == element:
            names.update([e["name"]] if "name" in e else e.get("names", []))
        if element == "joint" and e["op"] == "scale_range":
            names.update([e["joint"]] if "joint" in e else e["joints"])
    return names


def _mask(model, objtype, count, names):
    return np.array([mujoco.mj_id2name(model, objtype, i) in names for i in range(count)], dtype=bool)


def _kinematics(model):
    data = mujoco.MjData(model)
    mujoco.mj_kinematics(model, data)
    return data


def _capsule_ends(model, data, gid, frame):
    """fromto endpoints of a capsule, in its body frame or in the world frame."""
    if frame == "world":
        pos, mat = data.geom_xpos[gid], data.geom_xmat[gid].reshape(3, 3)
    else:
        pos = model.geom_pos[gid]
        mat = np.zeros(9)
        mujoco.mju_quat2Mat(mat, model.geom_quat[gid])
        mat = mat.reshape(3, 3)
    half = model.geom_size[gid, 1] * mat[:, 2]
    return np.concatenate([pos - half, pos + half])


def _same_segment(a, b, atol=1e-6):
    return np.allclose(a, b, atol=atol) or np.allclose(a, np.concatenate([b[3:], b[:3]]), atol=atol)


@pytest.mark.parametrize("env_id", _params(TARGET_IDS))
def test_shift_changes_model_as_specified(env_id):
    spec = get_shift(env_id)
    src = mujoco.MjModel.from_xml_path(base_xml_path(env_id))
    tgt = mujoco.MjModel.from_xml_path(build_xml(env_id))
    assert (src.nbody, src.ngeom, src.njnt, src.nsite, src.nq, src.nu) == (
        tgt.nbody, tgt.ngeom, tgt.njnt, tgt.nsite, tgt.nq, tgt.nu)
    ops = {e["op"] for e in spec.edits}
    gmask = _mask(src, mujoco.mjtObj.mjOBJ_GEOM, src.ngeom, _named(spec, "geom"))
    bmask = _mask(src, mujoco.mjtObj.mjOBJ_BODY, src.nbody, _named(spec, "body"))
    jmask = _mask(src, mujoco.mjtObj.mjOBJ_JOINT, src.njnt, _named(spec, "joint"))
    smask = _mask(src, mujoco.mjtObj.mjOBJ_SITE, src.nsite, _named(spec, "site"))
    assert gmask.any() or bmask.any() or jmask.any() or smask.any() or ops & {"scale_friction", "scale_gravity"}

    # nothing else changes
    for field in ("geom_size", "geom_pos", "geom_quat"):
        np.testing.assert_array_equal(getattr(tgt, field)[~gmask], getattr(src, field)[~gmask], err_msg=field)
    np.testing.assert_array_equal(tgt.body_pos[~bmask], src.body_pos[~bmask])
    np.testing.assert_array_equal(tgt.body_quat, src.body_quat)
    np.testing.assert_array_equal(tgt.jnt_range[~jmask], src.jnt_range[~jmask])
    np.testing.assert_array_equal(tgt.jnt_pos[~jmask], src.jnt_pos[~jmask])
    np.testing.assert_array_equal(tgt.site_pos[~smask], src.site_pos[~smask])
    np.testing.assert_array_equal(tgt.actuator_gear, src.actuator_gear)
    for field in ("jnt_type", "jnt_axis", "jnt_limited", "dof_damping", "dof_armature", "dof_frictionloss",
                  "actuator_ctrlrange", "actuator_trntype", "actuator_trnid", "geom_type", "geom_contype",
                  "geom_conaffinity", "geom_condim", "body_parentid", "jnt_bodyid", "geom_bodyid"):
        np.testing.assert_array_equal(getattr(tgt, field), getattr(src, field), err_msg=field)
    for field in ("timestep", "integrator", "cone", "impratio", "wind", "magnetic", "density", "viscosity"):
        np.testing.assert_array_equal(getattr(tgt.opt, field), getattr(src.opt, field), err_msg=f"opt.{field}")
    if not gmask.any():  # masses move only with geometry (settotalmass is baked to densities: rounding)
        np.testing.assert_allclose(tgt.body_mass, src.body_mass, rtol=1e-12)
        np.testing.assert_allclose(tgt.body_inertia, src.body_inertia, rtol=1e-12)
    if "scale_friction" not in ops:
        np.testing.assert_array_equal(tgt.geom_friction, src.geom_friction)
    if "scale_gravity" not in ops:
        np.testing.assert_array_equal(tgt.opt.gravity, src.opt.gravity)

    # the named things change to the spec values
    sdata, tdata = _kinematics(src), _kinematics(tgt)
    for e in spec.edits:
        op = e["op"]
        names = [e["name"]] if "name" in e else e.get("names", [])
        if op == "scale_gravity":
            np.testing.assert_allclose(tgt.opt.gravity, src.opt.gravity * e["factor"])
        elif op == "scale_friction":
            floor = set(e.get("unset_geoms", []))
            for g in range(src.ngeom):
                name = mujoco.mj_id2name(src, mujoco.mjtObj.mjOBJ_GEOM, g)
                inherited_builtin = name == "floor" and spec.env_name == "Hopper"
                factor = 1.0 if inherited_builtin and name not in floor else e["factor"]
                np.testing.assert_allclose(tgt.geom_friction[g, 0], src.geom_friction[g, 0] * factor, err_msg=name)
        elif op == "scale_range":
            for j in [e["joint"]] if "joint" in e else e["joints"]:
                lo, hi = src.joint(j).range
                k = e["factor"]
                if e.get("anchor", "zero") == "zero":
                    want = [lo * k, hi * k]
                elif lo >= 0:
                    want = [lo, lo + (hi - lo) * k]
                else:
                    want = [hi - (hi - lo) * k, hi]
                np.testing.assert_allclose(tgt.joint(j).range, want, rtol=1e-6, err_msg=j)
        elif op == "set_attr":
            frame = e.get("frame", "body")
            for n in names:
                if e["element"] == "geom" and e["attr"] == "fromto":
                    gid = tgt.geom(n).id
                    assert _same_segment(_capsule_ends(tgt, tdata, gid, frame), np.asarray(e["value"], float)), n
                elif e["element"] == "geom" and e["attr"] == "size":
                    vals = [e["value"]] if "index" in e else e["value"]
                    idx = [e["index"]] if "index" in e else range(len(vals))
                    got = tgt.geom(n).size[list(idx)]
                    if tgt.geom(n).type != mujoco.mjtGeom.mjGEOM_CAPSULE or "index" in e or len(vals) > 1:
                        np.testing.assert_allclose(got, vals, err_msg=n)
                    else:  # radius of a fromto capsule
                        np.testing.assert_allclose(got[:1], vals[:1], err_msg=n)
                elif e["element"] == "geom" and e["attr"] == "pos":
                    np.testing.assert_allclose(tgt.geom(n).pos[e["index"]], e["value"], err_msg=n)
                elif e["element"] == "body" and e["attr"] == "pos":
                    bid = tgt.body(n).id
                    if frame == "world":
                        np.testing.assert_allclose(tdata.xpos[bid], e["value"], atol=1e-9, err_msg=n)
                    elif "index" in e:
                        np.testing.assert_allclose(tgt.body_pos[bid, e["index"]], e["value"], err_msg=n)
                    else:
                        np.testing.assert_allclose(tgt.body_pos[bid], e["value"], err_msg=n)
                elif e["element"] == "joint" and e["attr"] == "pos":
                    jid = tgt.joint(n).id
                    got = tdata.xanchor[jid] if frame == "world" else tgt.jnt_pos[jid]
                    np.testing.assert_allclose(got, e["value"], atol=1e-9, err_msg=n)
                else:  # pragma: no cover - a new edit kind needs a check here
                    raise AssertionError(f"no check for {e}")
        elif op == "scale_attr":
            k = e["factor"]
            for n in names:
                if e["element"] == "geom" and e["attr"] == "fromto":
                    gid = tgt.geom(n).id
                    want = _capsule_ends(src, sdata, gid, "body") * k
                    assert _same_segment(_capsule_ends(tgt, tdata, gid, "body"), want, atol=1e-5), n
                    continue
                obj = {"geom": tgt.geom, "body": tgt.body, "site": tgt.site}[e["element"]](n)
                ref = {"geom": src.geom, "body": src.body, "site": src.site}[e["element"]](n)
                attr = e["attr"]
                got, base = np.asarray(getattr(obj, attr)), np.asarray(getattr(ref, attr))
                if "index" in e:
                    i = e["index"]
                    np.testing.assert_allclose(got[i], base[i] * k, err_msg=n)
                    np.testing.assert_array_equal(np.delete(got, i), np.delete(base, i))
                else:
                    np.testing.assert_allclose(got, base * k, err_msg=n)
        else:  # pragma: no cover
            raise AssertionError(f"no check for op {op}")


def test_world_frame_conversion_walker_morph():
    """Walker2d-morph: SHIFTS.md world heights end up where they should."""
    m = mujoco.MjModel.from_xml_path(build_xml("tabb/Walker2d-morph-v0"))
    d = _kinematics(m)
    assert np.isclose(d.xanchor[m.joint("leg_joint").id][2], 1.045)
    assert np.isclose(d.xanchor[m.joint("foot_joint").id][2], 0.3)
    assert np.isclose(d.geom_xpos[m.geom("foot_geom").id][2], 0.3)
    ends = _capsule_ends(m, d, m.geom("leg_geom").id, "world")
    assert np.allclose(sorted([ends[2], ends[5]]), [0.3, 1.045])
    # the left leg keeps the base geometry
    assert np.isclose(d.xanchor[m.joint("leg_left_joint").id][2], 0.6)
    assert np.isclose(d.xanchor[m.joint("foot_left_joint").id][2], 0.1)


def test_spec_numbers_hopper_and_cheetah():
    h = mujoco.MjModel.from_xml_path(build_xml("tabb/Hopper-kinematic-v0"))
    np.testing.assert_allclose(np.degrees(h.joint("thigh_joint").range), [-0.15, 0], atol=1e-9)
    np.testing.assert_allclose(np.degrees(h.joint("foot_joint").range), [-18, 18], atol=1e-9)
    c = mujoco.MjModel.from_xml_path(build_xml("tabb/HalfCheetah-kinematic-v0"))
    np.testing.assert_allclose(c.joint("bthigh").range, [-0.0052, 0.0105])
    a = mujoco.MjModel.from_xml_path(build_xml("tabb/Ant-kinematic-anklejnt-easy-v0"))
    np.testing.assert_allclose(np.degrees(a.joint("ankle_1").range), [30, 62])
    np.testing.assert_allclose(np.degrees(a.joint("ankle_2").range), [-62, -30])
    w = mujoco.MjModel.from_xml_path(build_xml("tabb/Walker2d-friction-0.1-v0"))
    np.testing.assert_allclose(w.geom("foot_geom").friction[0], 0.19)
    np.testing.assert_allclose(w.geom("floor").friction, [0.07, 0.01, 0.01])


# --------------------------------------------------------------------------- settotalmass


def _compile_legacy(root):
    """Compile a tree that still sets <compiler settotalmass> (skip once MuJoCo drops it)."""
    import xml.etree.ElementTree as ET

    try:
        return mujoco.MjModel.from_xml_string(ET.tostring(root, encoding="unicode"))
    except ValueError as exc:  # pragma: no cover - future MuJoCo
        if "settotalmass" in str(exc):
            pytest.skip(f"this MuJoCo no longer reads settotalmass: {exc}")
        raise


@pytest.mark.parametrize("env_id", [i for i in TARGET_IDS if get_shift(i).env_name == "HalfCheetah"])
def test_settotalmass_baked_into_densities(env_id):
    """HalfCheetah targets: no deprecated attribute, and the masses settotalmass="14" gives."""
    from tabb_torchrl.envs.mjcf import apply_edits, load_mjcf

    text = open(build_xml(env_id)).read()
    assert "settotalmass" not in text
    baked = mujoco.MjModel.from_xml_string(text)
    legacy_root = load_mjcf(base_xml_path(env_id))
    apply_edits(legacy_root, get_shift(env_id).edits)
    legacy = _compile_legacy(legacy_root)
    np.testing.assert_allclose(baked.body_mass, legacy.body_mass, rtol=1e-12)
    np.testing.assert_allclose(baked.body_inertia, legacy.body_inertia, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(baked.body_mass.sum(), 14.0, rtol=1e-12)


def test_halfcheetah_morph_masses_pinned():
    """The morph moves mass from the thighs to the torso (values of MuJoCo 4.0's settotalmass)."""
    m = mujoco.MjModel.from_xml_path(build_xml("tabb/HalfCheetah-morph-v0"))
    names = ["torso", "bthigh", "bshin", "bfoot", "fthigh", "fshin", "ffoot"]
    got = [m.body(n).mass[0] for n in names]
    np.testing.assert_allclose(got, [8.1973, 0.3542, 1.4971, 1.1601, 0.3542, 1.2771, 1.1601], atol=1e-4)


def test_bake_total_mass_scales_every_mass_attribute():
    """Explicit geom masses, per-class and per-geom densities and <inertial> all follow settotalmass."""
    import xml.etree.ElementTree as ET

    from tabb_torchrl.envs.mjcf import bake_total_mass

    xml = (
        '<mujoco><compiler settotalmass="7" inertiafromgeom="auto"/>'
        '<default><default class="heavy"><geom density="3000"/></default></default><worldbody>'
        '<body name="a"><freejoint/><geom type="box" size=".1 .1 .1"/></body>'
        '<body name="b" pos="1 0 0"><freejoint/><geom class="heavy" type="sphere" size=".1"/></body>'
        '<body name="c" pos="2 0 0"><freejoint/><geom type="capsule" size=".05 .2" mass="2"/></body>'
        '<body name="d" pos="3 0 0"><freejoint/><geom type="sphere" size=".1" density="500"/></body>'
        '<body name="e" pos="4 0 0"><freejoint/><inertial pos="0 0 0" mass="1.5" diaginertia=".1 .2 .3"/>'
        '<site name="s"/></body>'
        "</worldbody></mujoco>"
    )
    legacy = _compile_legacy(ET.fromstring(xml))
    root = ET.fromstring(xml)
    plain = mujoco.MjModel.from_xml_string(xml.replace(' settotalmass="7"', ""))
    k = bake_total_mass(root)
    np.testing.assert_allclose(k, 7.0 / plain.body_mass.sum())
    baked = mujoco.MjModel.from_xml_string(ET.tostring(root, encoding="unicode"))
    np.testing.assert_allclose(baked.body_mass, legacy.body_mass, rtol=1e-12)
    np.testing.assert_allclose(baked.body_inertia, legacy.body_inertia, rtol=1e-12)
    np.testing.assert_allclose(baked.body_mass, plain.body_mass * k, rtol=1e-12)  # one factor for all
    assert bake_total_mass(root) is None  # nothing left to bake


# --------------------------------------------------------------------------- source untouched


def test_building_leaves_source_untouched(tmp_path, monkeypatch):
    monkeypatch.setenv("TABB_TORCHRL_CACHE", str(tmp_path))
    path = base_xml_path("tabb/Hopper-morph-v0")
    before = hashlib.sha256(open(path, "rb").read()).hexdigest(), os.stat(path).st_mtime_ns
    built = build_xml("tabb/Hopper-morph-v0")
    assert built.startswith(str(tmp_path))
    assert build_xml("tabb/Hopper-morph-v0") == built  # cached, same key
    target = make_env("tabb/Hopper-morph-v0")
    source = make_env("Hopper-v5")
    after = hashlib.sha256(open(path, "rb").read()).hexdigest(), os.stat(path).st_mtime_ns
    assert before == after
    assert source.unwrapped.fullpath == path
    assert np.isclose(source.unwrapped.model.geom("torso_geom").size[0], 0.05)
    assert np.isclose(target.unwrapped.model.geom("torso_geom").size[0], 0.125)
    assert not [f for f in os.listdir(os.path.dirname(built)) if f.startswith(".")]  # no temporary file left
    assert os.stat(built).st_mode & 0o077 != 0  # not mkstemp's private 0600


# --------------------------------------------------------------------------- dynamics


def _rollout(env_id, n_steps=200, seed=0, hold=10):
    """Bang-bang actions held for ``hold`` steps (they drive joints to their limits)."""
    kwargs = {}
    env_name = get_shift(env_id).env_name if env_id.startswith("tabb/") else env_id.split("-")[0]
    if env_name in ("Hopper", "Walker2d", "Ant"):
        kwargs["terminate_when_unhealthy"] = False
    env = make_env(env_id, **kwargs)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    out = [obs]
    for t in range(n_steps):
        if t % hold == 0:
            act = rng.choice([-1.0, 1.0], size=env.action_space.shape).astype(np.float32)
        obs, _, term, trunc, _ = env.step(act)
        out.append(obs)
        if term or trunc:
            break
    env.close()
    return np.asarray(out)


_SOURCE_ROLLOUTS: dict[str, np.ndarray] = {}


@pytest.mark.parametrize("env_id", _params(TARGET_IDS))
def test_shifted_rollout_diverges_from_source(env_id):
    source = source_env_id(env_id)
    if source not in _SOURCE_ROLLOUTS:
        _SOURCE_ROLLOUTS[source] = _rollout(source)
    a, b = _SOURCE_ROLLOUTS[source], _rollout(env_id)
    assert np.all(np.isfinite(b))
    n = min(len(a), len(b))
    np.testing.assert_array_equal(a[0], b[0])  # same reset
    assert np.abs(a[:n] - b[:n]).max() > 1e-3 or len(a) != len(b)


def test_hopper_friction_floor_quirk():
    """ODRL quirk: the floor (1.0) dominates, so k=0.1 and k=0.5 are the same env."""
    np.testing.assert_array_equal(_rollout("tabb/Hopper-friction-0.1-v0"), _rollout("tabb/Hopper-friction-0.5-v0"))
    a, b = _rollout("tabb/Hopper-friction-floor-0.1-v0"), _rollout("tabb/Hopper-friction-floor-0.5-v0")
    n = min(len(a), len(b))
    assert np.abs(a[:n] - b[:n]).max() > 1e-3


@pytest.mark.parametrize("env_id", ["Hopper-v5", "tabb/Hopper-morph-v0", "HalfCheetah-v5", "Ant-v5"])
def test_set_state_from_observation_reproduces_step(env_id):
    env = make_env(env_id)
    obs, _ = env.reset(seed=3)
    rng = np.random.default_rng(3)
    observations, actions = [obs], []
    for _ in range(30):
        act = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        obs, _, term, _, _ = env.step(act)
        observations.append(obs)
        actions.append(act)
        if term:
            break
    n_state = 27 if env_id.startswith("Ant") else observations[0].shape[0]
    other = make_env(env_id)  # not reset: set_state_from_observation resets it
    for t in range(0, len(actions), 3):
        assert set_state_from_observation(other, observations[t]) is other
        nxt = other.step(actions[t])[0]
        np.testing.assert_allclose(nxt[:n_state], observations[t + 1][:n_state], rtol=0, atol=1e-8)
    with pytest.raises(ValueError, match="expected at least"):
        set_state_from_observation(other, observations[0][:3])


# --------------------------------------------------------------------------- CLI and docs


def test_cli_lists_ids():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "tabb_torchrl.envs"], capture_output=True, text=True, env=env, check=True)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == len(ALL_IDS)
    assert lines[0].split()[0] == ALL_IDS[0]


def test_cli_markdown(capsys):
    from tabb_torchrl.envs.__main__ import main

    assert main(["--markdown", "Hopper"]) == 0
    md = capsys.readouterr().out.splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in md]  # tabulate's "github" markdown
    assert cells[0] == ["id", "source env", "what it changes"] and set(md[1]) == {"|", "-"}
    assert len(md) == 2 + len(list_env_ids("Hopper"))
    assert any(row[:2] == ["`tabb/Hopper-friction-0.1-v0`", "`Hopper-v5`"] and "k=0.1 and k=0.5" in row[2]
               for row in cells)


def test_cli_unknown_filter_lists_valid_names(capsys):
    from tabb_torchrl.envs.__main__ import main

    with pytest.raises(SystemExit) as exc:
        main(["Hoper"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "no env id matches 'Hoper'" in err
    assert "Hopper" in err and "broken-joint" in err and "Walker2d-kinematic-footjnt" in err


def test_cli_closed_pipe_is_quiet():
    # `python -m tabb_torchrl.envs | head -1`: the reader is gone before the CLI writes
    # (its read end is closed at once; the CLI needs seconds to import), so every write
    # fails with EPIPE -- exit quietly, with no BrokenPipeError traceback.
    env = dict(os.environ, OMP_NUM_THREADS="1")
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "tabb_torchrl.envs"], stdout=write_end,
                              stderr=subprocess.PIPE, env=env, timeout=300)
    finally:
        os.close(write_end)
    err = proc.stderr.decode()
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_base_xml_recorded_in_metadata_of_source_and_target():
    target = make_env("tabb/Walker2d-morph-v0")
    source = make_env("Walker2d-v5")
    meta_t, meta_s = target.unwrapped.metadata, source.unwrapped.metadata
    assert meta_t["tabb_base_xml"] == meta_s["tabb_base_xml"] == get_shift("tabb/Walker2d-morph-v0").base_xml
    assert meta_t["tabb_env_id"] == "tabb/Walker2d-morph-v0" and "tabb_env_id" not in meta_s
    assert meta_t["render_fps"] == meta_s["render_fps"]  # gymnasium's own keys kept
    # the class attribute is not mutated: a plain gymnasium env made afterwards has no tabb keys
    plain = gym.make("Walker2d-v5")
    assert "tabb_base_xml" not in plain.unwrapped.metadata
    for e in (target, source, plain):
        e.close()


def test_empty_catalogue_is_a_broken_install_error(monkeypatch):
    from tabb_torchrl.envs import spec as S

    monkeypatch.setattr(S, "_catalogue_files", lambda: [])
    S.catalogue.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="shift catalogue is empty.*package-data"):
            S.catalogue()
    finally:
        monkeypatch.undo()
        S.catalogue.cache_clear()
    assert "tabb/Hopper-morph-v0" in S.catalogue()
