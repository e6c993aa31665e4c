"""Test-time robustness (DROCO's evaluation): the drop by hand, composed envs (the target's shift plus a
perturbation, in the compiled MuJoCo model), the choice of perturbation families, the evaluation loop,
and ``recipes/evaluate_robustness.py`` end to end on a smoke run directory."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
import pytest
import torch
from tensordict.nn import TensorDictModule

from tabb_torchrl.envs import build_xml
from tabb_torchrl.envs.compose import (
    CompositionError,
    build_composed_xml,
    composed_env_id,
    composed_spec,
    edit_conflicts,
    make_composed_env,
    register_composed_env,
)
from tabb_torchrl.pipeline.evaluation import PolicyEvaluator, normalized_scores
from tabb_torchrl.robustness import (
    PerturbationResult,
    RobustnessReport,
    evaluate_robustness,
    performance_drop,
    perturbation_families,
    perturbed_envs,
)

ROOT = Path(__file__).resolve().parents[1]


def test_performance_drop_by_hand():
    assert performance_drop(80.0, 60.0) == pytest.approx(25.0)
    assert performance_drop(40.0, 10.0) == pytest.approx(75.0)
    assert performance_drop(50.0, 55.0) == pytest.approx(-10.0)      # better under the perturbation
    assert performance_drop(20.0, 0.0) == pytest.approx(100.0)
    assert math.isnan(performance_drop(0.0, 5.0)) and math.isnan(performance_drop(-3.0, 5.0))


def test_report_drops_table_and_json():
    nominal = PerturbationResult("none", None, None, "tabb/Hopper-morph-v0", [100.0], 100.0, 0.0, 80.0, 2.0)
    rows = [PerturbationResult("kinematic", "K", "easy", "a", [90.0], 90.0, 0.0, 72.0, 1.0, performance_drop(80, 72)),
            PerturbationResult("kinematic", "K", "hard", "b", [50.0], 50.0, 0.0, 40.0, 1.0, performance_drop(80, 40)),
            PerturbationResult("morph", "M", "easy", "c", [1.0], 1.0, 0.0, 0.0, 0.0, float("nan"))]
    report = RobustnessReport("tabb/Hopper-morph-v0", "odrl", 1, 0, nominal, rows)
    assert report.drops() == {"kinematic": {"easy": pytest.approx(10.0), "hard": pytest.approx(50.0)},
                              "morph": {"easy": pytest.approx(float("nan"), nan_ok=True)}}
    data = json.loads(json.dumps(report.to_dict()))                 # JSON-ready: nan -> null
    assert data["drops"]["morph"]["easy"] is None and data["levels"] == ["easy", "hard"]
    assert data["nominal"]["normalized_score"] == 80.0
    table = report.table()
    assert "kinematic hard (K)" in table and "50.0" in table and "n/a" in table


def _model(path):
    return mujoco.MjModel.from_xml_path(path)


def test_composed_env_has_both_shifts():
    target, pert = "tabb/Hopper-morph-v0", "tabb/Hopper-kinematic-legjnt-hard-v0"
    composed = _model(build_composed_xml(target, pert))
    only_target, only_pert = _model(build_xml(target)), _model(build_xml(pert))
    # the target's bigger head and thinner thigh ...
    assert composed.geom("torso_geom").size[0] == pytest.approx(0.125)
    assert composed.geom("thigh_geom").size[0] == pytest.approx(0.04)
    np.testing.assert_allclose(composed.geom_size, only_target.geom_size)
    # ... and the perturbation's narrower knee, [-150, 0] deg x 0.2
    np.testing.assert_allclose(composed.jnt_range[composed.joint("leg_joint").id], [math.radians(-30), 0], atol=1e-6)
    np.testing.assert_allclose(composed.jnt_range, only_pert.jnt_range)
    # scale edits compose: Hopper-kinematic's foot [-18, 18] deg, then kinematic-footjnt easy x0.8
    stacked = _model(build_composed_xml("tabb/Hopper-kinematic-v0", "tabb/Hopper-kinematic-footjnt-easy-v0"))
    np.testing.assert_allclose(stacked.jnt_range[stacked.joint("foot_joint").id],
                               [math.radians(-14.4), math.radians(14.4)], atol=1e-6)
    # the masses follow the geometry (HalfCheetah keeps settotalmass 14 through the composition)
    cheetah = _model(build_composed_xml("tabb/HalfCheetah-morph-v0", "tabb/HalfCheetah-kinematic-footjnt-hard-v0"))
    assert float(cheetah.body_mass.sum()) == pytest.approx(14.0)


def test_composition_refuses_a_perturbation_that_replaces_the_target_shift():
    with pytest.raises(CompositionError, match="torso_geom size"):
        composed_spec("tabb/Hopper-morph-v0", "tabb/Hopper-morph-torso-hard-v0")
    spec = composed_spec("tabb/Hopper-morph-v0", "tabb/Hopper-morph-torso-hard-v0", allow_override=True)
    assert spec.edits[-1]["value"] == 0.125 and len(spec.edits) == 4
    with pytest.raises(CompositionError, match="base"):
        composed_spec("tabb/Hopper-morph-v0", "tabb/Walker2d-kinematic-footjnt-easy-v0")
    assert edit_conflicts([{"op": "scale_range", "joint": "j", "factor": 0.5}],
                          [{"op": "scale_range", "joint": "j", "factor": 0.5}]) == []


def test_composed_envs_are_registered_and_built_by_id():
    env_id = register_composed_env("tabb/Walker2d-morph-v0", "tabb/Walker2d-kinematic-footjnt-hard-v0")
    assert env_id == composed_env_id("tabb/Walker2d-morph-v0", "tabb/Walker2d-kinematic-footjnt-hard-v0")
    assert register_composed_env("tabb/Walker2d-morph-v0", "tabb/Walker2d-kinematic-footjnt-hard-v0") == env_id
    assert gym.spec(env_id).max_episode_steps == 1000
    env = gym.make(env_id)
    try:
        meta = env.unwrapped.metadata
        assert meta["tabb_env_id"] == "tabb/Walker2d-morph-v0"
        assert meta["tabb_perturbation_id"] == "tabb/Walker2d-kinematic-footjnt-hard-v0"
        assert env.reset(seed=0)[0].shape == (17,)
    finally:
        env.close()
    make_composed_env("tabb/Ant-morph-v0", "tabb/Ant-morph-alllegs-easy-v0").close()


def test_perturbation_families_avoid_the_target_shift():
    assert perturbation_families("tabb/Hopper-morph-v0") == {"kinematic": "Hopper-kinematic-legjnt",
                                                            "morph": "Hopper-morph-foot"}   # not morph-torso
    walker = perturbation_families("tabb/Walker2d-morph-v0")
    assert walker["morph"] == "Walker2d-morph-torso"                                        # morph-leg would undo it
    assert perturbation_families("tabb/HalfCheetah-kinematic-v0")["kinematic"] == "HalfCheetah-kinematic-footjnt"
    assert perturbation_families("tabb/AdroitHandPen-shrink-finger-easy-v0", ["kinematic"]) == {
        "kinematic": "AdroitHandPen-broken-joint"}
    envs = perturbed_envs("tabb/Hopper-morph-v0", ["kinematic", "morph"], ["easy", "hard"],
                          families={"kinematic": "Hopper-kinematic-footjnt"})
    assert [(e["kind"], e["family"], e["level"]) for e in envs] == [
        ("kinematic", "Hopper-kinematic-footjnt", "easy"), ("kinematic", "Hopper-kinematic-footjnt", "hard"),
        ("morph", "Hopper-morph-foot", "easy"), ("morph", "Hopper-morph-foot", "hard")]
    with pytest.raises(ValueError, match="kind"):
        perturbation_families("tabb/Hopper-morph-v0", ["gravity"])


def test_evaluation_loop_scores_and_drops():
    # a constant action that bends the knee past the hard level's -30 deg limit: the level changes the returns
    actor = TensorDictModule(lambda obs: torch.tensor([1.0, -1.0, 1.0]).expand(obs.shape[0], 3),
                             in_keys=["observation"], out_keys=["action"])
    report = evaluate_robustness(actor, "tabb/Hopper-morph-v0", kinds=["kinematic"], levels=["easy", "hard"],
                                 episodes=2, seed=7, max_episode_steps=60)
    ev = PolicyEvaluator("tabb/Hopper-morph-v0", 2, seed=7, max_episode_steps=60)
    returns = ev.evaluate(actor)
    ev.close()
    assert report.nominal.returns == pytest.approx(list(returns))   # same seeds as the recipe's evaluator
    for r in report.results:
        scores = normalized_scores("tabb/Hopper-morph-v0", r.returns, "odrl")
        assert r.normalized_score == pytest.approx(float(scores.mean()))
        assert r.drop_percent == pytest.approx(performance_drop(report.nominal.normalized_score, r.normalized_score))
    assert report.results[1].returns != report.results[0].returns   # the level changes the dynamics


def test_recipe_end_to_end_on_a_smoke_run(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    run_dir = tmp_path / "run"
    train = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "tabb_offline.py"), "+preset=smoke", f"data.root={tmp_path / 'data'}",
         "progress=false", "pretrain.stage1_steps=20", "pretrain.stage2_steps=10", "optim.steps=20", "eval.every=20",
         "eval.episodes=1", "eval.max_episode_steps=20", "checkpoint.every=20", f"run_dir={run_dir}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr[-3000:]
    script = ROOT / "recipes" / "evaluate_robustness.py"
    proc = subprocess.run([sys.executable, str(script), f"run_dir={run_dir}", "episodes=2", "levels=easy,hard"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((run_dir / "robustness.json").read_text())
    assert (run_dir / "robustness.png").stat().st_size > 0
    assert data["env_id"] == "tabb/Hopper-morph-v0" and data["episodes"] == 2 and data["levels"] == ["easy", "hard"]
    assert data["seed"] == 100000 and data["info"]["max_episode_steps"] == 20          # the run's own evaluation
    assert sorted(data["drops"]) == ["kinematic", "morph"] and len(data["results"]) == 4
    assert data["info"]["algo"] == "tabb" and data["info"]["checkpoint"]["rl_step"] == 20
    for r in data["results"]:
        if data["nominal"]["normalized_score"] > 0:
            assert r["drop_percent"] == pytest.approx(
                performance_drop(data["nominal"]["normalized_score"], r["normalized_score"]))
    assert "kinematic hard (Hopper-kinematic-legjnt)" in proc.stdout
    missing = subprocess.run([sys.executable, str(script), f"run_dir={tmp_path / 'nope'}"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "config.yaml" in missing.stderr
