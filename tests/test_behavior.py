"""SAC behaviour-policy recipe: tiny real runs, checkpoint/resume, shipped-policy format."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tabb_torchrl.behavior.policies import (
    BehaviorPolicy,
    PolicyNotFoundError,
    SquashedGaussianActor,
    list_behavior_policies,
    load_behavior_policy,
    load_policy_returns,
    policy_from_checkpoint,
    save_behavior_policy,
    ship_run_snapshots,
)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "recipes" / "train_behavior.py"
TINY = [
    "env=Hopper-v5",
    "init_random_steps=50",
    "batch_size=16",
    "hidden_sizes=[16,16]",
    "eval_every=100",
    "eval_episodes=1",
    "checkpoint_every=100",
    "log_every=100",
    "buffer_size=1000",
    "medium_return=-1000",
]


def _train(run_dir: Path, total: int, *extra: str) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="1")
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *TINY, f"total_steps={total}", f"run_dir={run_dir}", *extra],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out.stdout


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("full")
    _train(run_dir, 200)
    return run_dir


def test_tiny_run_writes_checkpoint_and_snapshots(full_run):
    for name in ("checkpoint.pt", "medium.pt", "medium_replay.pt", "expert.pt", "final.pt", "eval_history.json"):
        assert (full_run / name).is_file(), name
    ck = torch.load(full_run / "checkpoint.pt", weights_only=False)
    assert ck["step"] == 200 and ck["replay"]["len"] == 200
    assert ck["updates"] == 200 - 50 + 1
    # medium snapshot at the first evaluation (threshold -1000), with the replay up to it
    rep = torch.load(full_run / "medium_replay.pt", weights_only=False)
    assert rep["step"] == 100 and rep["data"].batch_size[0] == 100
    # shipped format: small, loads as a BehaviorPolicy
    assert (full_run / "medium.pt").stat().st_size < 1_000_000
    pol = policy_from_checkpoint(full_run / "medium.pt", seed=0)
    assert pol.metadata["env_id"] == "Hopper-v5" and pol.metadata["env_steps"] == 100
    a = pol(np.zeros((5, 11), np.float32))
    assert a.shape == (5, 3) and np.abs(a).max() <= 1


def test_resume_continues_and_is_bit_exact(full_run, tmp_path):
    _train(tmp_path, 100)
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ck["step"] == 100 and ck["replay"]["len"] == 100
    out2 = _train(tmp_path, 200)
    assert "[resume] Hopper-v5 from step 100 (buffer 100" in out2, out2
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ck["step"] == 200 and ck["replay"]["len"] == 200
    a = torch.load(full_run / "final.pt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "final.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run differs from the uninterrupted one"
    ca = torch.load(full_run / "checkpoint.pt", weights_only=False)
    assert torch.equal(ca["replay"]["data"]["observation"], ck["replay"]["data"]["observation"])


def test_policy_save_load_roundtrip(tmp_path):
    actor = SquashedGaussianActor(4, 2, (8, 8))
    save_behavior_policy(tmp_path / "Foo-v0" / "medium.pt", actor, env_id="Foo-v0", quality="medium",
                         eval_return=12.0, action_low=-2.0, action_high=2.0)
    pol = load_behavior_policy("Foo-v0", "medium", root=tmp_path, deterministic=True)
    obs = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    with torch.no_grad():
        loc, _ = actor(torch.as_tensor(obs))
    np.testing.assert_allclose(pol(obs), 2.0 * np.tanh(loc.numpy()), rtol=1e-6, atol=1e-6)
    assert list_behavior_policies(tmp_path) == [("Foo-v0", "medium")]
    # stochastic sampling is seeded and independent of torch's global RNG
    s1 = load_behavior_policy("Foo-v0", "medium", root=tmp_path, seed=3)(obs)
    torch.manual_seed(123)
    s2 = load_behavior_policy("Foo-v0", "medium", root=tmp_path, seed=3)(obs)
    np.testing.assert_array_equal(s1, s2)
    assert not np.allclose(s1, pol(obs))


def test_missing_policy_error_lists_available(tmp_path):
    save_behavior_policy(tmp_path / "tabb__Foo-x-v0" / "medium.pt", SquashedGaussianActor(4, 2, (8,)),
                         env_id="tabb/Foo-x-v0", quality="medium", eval_return=1.0)
    with pytest.raises(PolicyNotFoundError) as err:
        load_behavior_policy("tabb/Foo-x-v0", "expert", root=tmp_path)
    msg = str(err.value)
    assert "'tabb/Foo-x-v0'" in msg and "'expert'" in msg and "tabb/Foo-x-v0 / medium" in msg
    assert isinstance(err.value, FileNotFoundError)


def test_behavior_policy_single_observation():
    pol = BehaviorPolicy(SquashedGaussianActor(3, 1, (8,)), seed=0, action_low=-2.0, action_high=2.0)
    a = pol(np.zeros(3))
    assert a.shape == (1,) and abs(a[0]) <= 2


def test_checkpoints_interchangeable_between_update_paths(tmp_path):
    """A run trained with TorchRL's SACLoss resumes with the fused update (same parameters and optimisers)."""
    _train(tmp_path, 100, "sac_update=torchrl")
    ck100 = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    out = _train(tmp_path, 150, "sac_update=fused")
    assert "[resume] Hopper-v5 from step 100" in out, out
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ck["step"] == 150 and ck["updates"] == 150 - 50 + 1
    assert sorted(ck["loss"]) == sorted(ck100["loss"])
    for key in ("actor_network_params.module.0.module.head.weight", "qvalue_network_params.module.0.weight",
                "target_qvalue_network_params.module.0.weight", "log_alpha"):
        assert not torch.equal(ck["loss"][key], ck100["loss"][key]), key  # the fused steps trained them
    assert ck["optims"]["qvalue"]["state"][0]["step"] == ck100["optims"]["qvalue"]["state"][0]["step"] + 50


def test_unknown_update_path_is_rejected(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="1")
    out = subprocess.run([sys.executable, str(SCRIPT), *TINY, "total_steps=10", f"run_dir={tmp_path}",
                          "sac_update=jax"], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert out.returncode != 0 and "sac_update must be 'fused' or 'torchrl'" in out.stderr


def test_expert_plateau_is_detected_recorded_and_stops_the_run(tmp_path):
    # tolerance 1e9: no later evaluation counts as an improvement, so the plateau starts at the first one
    out = _train(tmp_path, 1000, "eval_every=50", "checkpoint_every=50", "plateau_window=100",
                 "plateau_tolerance=1e9", "stop_at_plateau=true")
    assert "[plateau: best within" in out and "[stop] expert snapshot plateaued at step 150" in out, out
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ck["step"] == 150 and ck["plateau_step"] == 150 and ck["plateau_ref"][0] == 50
    expert = torch.load(tmp_path / "expert.pt", weights_only=False)
    assert expert["extra"]["plateaued"] is True and expert["extra"]["plateau_step"] == 150
    # resuming a plateaued run with stop_at_plateau does nothing
    out = _train(tmp_path, 1000, "eval_every=50", "checkpoint_every=50", "plateau_window=100",
                 "plateau_tolerance=1e9", "stop_at_plateau=true")
    assert "[stop] expert snapshot plateaued at step 150" in out
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["step"] == 150


def test_expert_not_plateaued_while_improving(full_run):
    expert = torch.load(full_run / "expert.pt", weights_only=False)
    assert expert["extra"]["plateaued"] is False and expert["extra"]["plateau_window"] == 150000


def test_shipping_records_plateau_and_unplateaued_expert_warns(tmp_path):
    actor = SquashedGaussianActor(11, 3, (8, 8))
    run = tmp_path / "run"
    for plateaued, env_id in ((False, "Hopper-v5"), (True, "Walker2d-v5")):
        save_behavior_policy(run / "expert.pt", actor, env_id=env_id, quality="expert", eval_return=2000.0,
                             env_steps=300_000, extra={"plateaued": plateaued, "seed": 0})
        ship_run_snapshots(run, ["expert"], root=tmp_path / "assets")
    assert load_policy_returns("Hopper-v5", tmp_path / "assets")["expert"]["plateaued"] is False
    with pytest.warns(UserWarning, match="had not plateaued"):
        load_behavior_policy("Hopper-v5", "expert", root=tmp_path / "assets")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_behavior_policy("Walker2d-v5", "expert", root=tmp_path / "assets")


def test_time_budget_pauses_with_checkpoint_and_resume_is_bit_exact(full_run, tmp_path):
    out = _train(tmp_path, 200, "max_minutes=0")  # budget already spent after the first step
    assert "[pause] step 1: max_minutes=0 reached" in out, out
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["step"] == 1
    assert not (tmp_path / "final.pt").exists()
    out = _train(tmp_path, 200, "max_minutes=0")
    assert "[resume] Hopper-v5 from step 1" in out and "[pause] step 2:" in out, out
    _train(tmp_path, 200)
    a = torch.load(full_run / "final.pt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "final.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a), "paused and resumed run differs from the uninterrupted one"


def test_shipped_policies_are_small_recorded_and_fit_their_env():
    """Every shipped checkpoint: < 1 MB, its returns.json entry matches the file, sizes match the env."""
    from tabb_torchrl.behavior.policies import _policies_root, checkpoint_hash, env_id_to_dirname
    from tabb_torchrl.envs import make_env

    pairs = list_behavior_policies()
    # the four source envs have at least a medium policy
    for env_id in ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5"):
        assert (env_id, "medium") in pairs, env_id
    for env_id, quality in pairs:
        f = _policies_root(None) / env_id_to_dirname(env_id) / f"{quality}.pt"
        assert f.stat().st_size < 1_000_000, f
        rec = load_policy_returns(env_id)[quality]
        assert rec["sha256"] == checkpoint_hash(f), f"{f}: returns.json does not describe this file"
        assert rec["env_steps"] > 0 and rec["eval_episodes"] >= 10 and np.isfinite(rec["eval_return"])
        if quality == "expert":
            assert isinstance(rec["plateaued"], bool)
        with open(f, "rb") as fh:
            ck = torch.load(fh, map_location="cpu", weights_only=False)
        assert ck["env_id"] == env_id and ck["quality"] == quality
        assert ck["eval_return"] == pytest.approx(rec["eval_return"])
        env = make_env(env_id)
        try:
            assert ck["architecture"]["obs_dim"] == env.observation_space.shape[0]
            assert ck["architecture"]["action_dim"] == env.action_space.shape[0]
            np.testing.assert_allclose(ck["action_low"], env.action_space.low)
            np.testing.assert_allclose(ck["action_high"], env.action_space.high)
        finally:
            env.close()


def test_policies_readme_tables_every_shipped_policy_with_its_return():
    """The table of assets/policies/README.md (shown in the docs) lists each shipped file's recorded return."""
    import re

    from tabb_torchrl.behavior.policies import _policies_root

    text = (_policies_root(None) / "README.md").read_text()
    rows = {}
    for m in re.finditer(r"^\| `([^`]+)` \([a-z]+\) \| ([a-z-]+) \| (-?[0-9.]+) ± ([0-9.]+) \|", text, re.M):
        rows[(m.group(1), m.group(2))] = (float(m.group(3)), float(m.group(4)))
    pairs = list_behavior_policies()
    assert sorted(rows) == sorted(pairs), "README table rows != shipped checkpoints"
    for env_id, quality in pairs:
        rec = load_policy_returns(env_id)[quality]
        assert rows[(env_id, quality)] == (round(rec["eval_return"], 1), round(rec["eval_return_std"], 1)), (
            env_id, quality)


def test_target_env_run_is_named_after_the_env_and_trains_in_it(tmp_path):
    """A tabb/ id: the default run dir replaces '/' (hydra resolver), and the snapshot is of the shifted env."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="1")
    cfg = subprocess.run([sys.executable, str(SCRIPT), "env=tabb/Hopper-morph-v0", "seed=3", "--cfg", "job",
                          "--resolve"], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert cfg.returncode == 0, cfg.stderr[-2000:]
    assert "run_dir: behavior_runs/tabb__Hopper-morph-v0_s3" in cfg.stdout
    run_dir = tmp_path / "morph"
    _train(run_dir, 100, "env=tabb/Hopper-morph-v0", "stop_after_medium=true")
    pol = policy_from_checkpoint(run_dir / "medium.pt", seed=0)
    assert pol.metadata["env_id"] == "tabb/Hopper-morph-v0" and pol.metadata["env_steps"] == 100
    assert pol.metadata["extra"]["config"]["env"] == "tabb/Hopper-morph-v0"
