"""Unit tests of tabb_torchrl.pipeline (fast, in-process) and its documented examples."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tabb_torchrl.pipeline import (
    ConfigError,
    build_summary,
    config_hash,
    find_latest_run,
    format_summary_table,
    make_logger,
    resolve_run_dir,
    run_name,
    spawn_seeds,
    split_holdout,
    validate_config,
    validate_datasets,
    write_run_state,
)

@pytest.fixture(scope="module")
def cfg():
    """The recipe's composed default configuration (+ smoke preset), as a plain dict."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from pathlib import Path

    config_dir = str(Path(__file__).resolve().parents[1] / "recipes" / "config")
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        composed = compose(config_name="config", overrides=["+preset=smoke"])
    return OmegaConf.to_container(composed, resolve=False)


def _with(cfg, **dotted):
    import copy

    out = copy.deepcopy(cfg)
    for key, value in dotted.items():
        node = out
        parts = key.split("__")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = value
    return out


def test_default_config_is_valid(cfg):
    validate_config(cfg)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"algo__name": "nope"}, "algo.name='nope' is unknown"),
        ({"env__id": "tabb/Nope-v0"}, "Valid ids"),
        ({"data__n_target": 10_000}, "data.n_target=10000 target rows per batch is larger"),
        ({"data__n_source": 10_000}, "data.n_source=10000 source rows per batch is larger"),
        ({"pretrain__stage2_batch_size": 590}, "pretrain.stage2_batch_size=590 is larger"),
        ({"loss__scaling": "weird"}, "loss.scaling='weird' is not a valid choice"),
        ({"loss__expectile": 1.5}, "loss.expectile=1.5 must lie in (0, 1)"),
        ({"optim__steps": -1}, "optim.steps=-1 must be an integer >= 0"),
        ({"pretrain__holdout_fraction": 0.0}, "pretrain.holdout_fraction=0.0 must lie strictly"),
        ({"loss__use_predicted_termination": True}, "needs a termination head"),
        # no shipped 'ours' reference for this target (gravity: outside the paper grid, never trained):
        # refused before any data or training
        ({"env__id": "tabb/Walker2d-gravity-2.0-v0", "env__name": "Walker2d", "env__shift": "gravity",
          "env__level": 2.0, "eval__reference": "ours"},
         "eval.reference='ours' has no reference returns for env.id='tabb/Walker2d-gravity-2.0-v0'"),
    ],
)
def test_validate_config_errors(cfg, override, message):
    with pytest.raises(ConfigError) as err:
        validate_config(_with(cfg, **override))
    assert message in str(err.value)
    assert "Fix" in str(err.value)


def test_validate_datasets(cfg):
    from tensordict import TensorDict

    target = TensorDict({}, batch_size=[100])
    source = TensorDict({}, batch_size=[20])
    with pytest.raises(ConfigError, match="data.n_source=32 source rows per batch is larger than the source dataset"):
        validate_datasets(cfg, source, target)
    validate_datasets(_with(cfg, algo__use_source=False), None, target)


def test_config_hash_ignores_run_bookkeeping(cfg):
    h = config_hash(cfg)
    assert h == config_hash(_with(cfg, resume=True, run_dir="/x", max_steps_this_session=5, checkpoint__every=7))
    assert h != config_hash(_with(cfg, seed=1))
    assert h != config_hash(_with(cfg, loss__tau=2.0))


def test_run_name_and_seeds():
    assert run_name("iql_target", "tabb/Walker2d-kinematic-v0", 4) == "iql_target_tabb-Walker2d-kinematic-v0_seed4"
    assert spawn_seeds(3, 4) == spawn_seeds(3, 4) and spawn_seeds(3, 4) != spawn_seeds(4, 4)
    train, hold = split_holdout(5000, 0.1, seed=0)
    assert len(hold) == 500 and len(train) == 4500 and not set(train.tolist()) & set(hold.tolist())


def test_resolve_run_dir(tmp_path):
    cfg = {"resume": False, "run_dir": None, "runs_root": str(tmp_path), "checkpoint": {"filename": "checkpoint.pt"}}
    run_dir, ckpt = resolve_run_dir(cfg, tmp_path / "a", "h1")
    assert run_dir == tmp_path / "a" and ckpt is None
    # two runs of config h1, one of h2: resume=true picks the latest of h1
    for name, h in (("a", "h1"), ("b", "h1"), ("c", "h2")):
        write_run_state(tmp_path / name, {"config_hash": h})
        (tmp_path / name / "checkpoint.pt").write_bytes(b"x")
    import os
    import time

    now = time.time()
    os.utime(tmp_path / "a" / "checkpoint.pt", (now - 100, now - 100))
    assert find_latest_run(tmp_path, "h1", "checkpoint.pt") == tmp_path / "b"
    run_dir, ckpt = resolve_run_dir({**cfg, "resume": True}, tmp_path / "new", "h1")
    assert run_dir == tmp_path / "b" and ckpt == tmp_path / "b" / "checkpoint.pt"
    run_dir, ckpt = resolve_run_dir({**cfg, "resume": True}, tmp_path / "new", "h3")
    assert run_dir == tmp_path / "new" and ckpt is None  # nothing to resume: fresh run
    run_dir, ckpt = resolve_run_dir({**cfg, "resume": str(tmp_path / "c")}, tmp_path / "new", "h2")
    assert ckpt == tmp_path / "c" / "checkpoint.pt"
    with pytest.raises(ConfigError, match="already holds a checkpoint"):
        resolve_run_dir({**cfg, "run_dir": str(tmp_path / "a")}, tmp_path / "x", "h1")
    with pytest.raises(ConfigError, match="no checkpoint at"):
        resolve_run_dir({**cfg, "resume": str(tmp_path / "missing")}, tmp_path / "x", "h1")


def test_resume_true_continues_the_run_in_its_own_output_dir(tmp_path):
    """A sweep run again over its sweep folder: each job continues in the folder hydra gives it."""
    cfg = {"resume": True, "run_dir": None, "runs_root": str(tmp_path / "elsewhere"),
           "checkpoint": {"filename": "checkpoint.pt"}}
    job = tmp_path / "sweep" / "0_tabb_Hopper-morph_seed0"
    assert resolve_run_dir(cfg, job, "h1") == (job, None)  # first time: a fresh run there
    write_run_state(job, {"config_hash": "h1"})
    (job / "checkpoint.pt").write_bytes(b"x")
    assert resolve_run_dir(cfg, job, "h1") == (job, job / "checkpoint.pt")
    assert resolve_run_dir(cfg, job, "h0", ("h1",)) == (job, job / "checkpoint.pt")  # legacy hash
    with pytest.raises(ConfigError, match="checkpoint of another configuration .*Fix"):
        resolve_run_dir(cfg, job, "h2")  # the grid changed: never overwrite the other run


def test_resume_finds_a_run_recorded_under_an_older_hash_definition(tmp_path):
    """A run whose recorded hash came from an older hash definition is found through its config.yaml."""
    from omegaconf import OmegaConf

    from tabb_torchrl.pipeline.runs import check_resume
    from tabb_torchrl.pipeline.trainer import CHECKPOINT_VERSION

    run_cfg = {"seed": 0, "loss": {"tau": 0.7}, "resume": True, "run_dir": None,
               "runs_root": str(tmp_path / "elsewhere"), "checkpoint": {"filename": "checkpoint.pt"}}
    job = tmp_path / "sweep" / "1_iql_target_Hopper-morph_seed0"
    write_run_state(job, {"config_hash": "recorded-by-an-older-version"})
    (job / "checkpoint.pt").write_bytes(b"x")
    OmegaConf.save(OmegaConf.create(run_cfg), job / "config.yaml")
    h = config_hash(run_cfg)
    assert resolve_run_dir(run_cfg, job, h) == (job, job / "checkpoint.pt")
    assert find_latest_run(tmp_path, h, "checkpoint.pt") == job
    ckpt = {"version": CHECKPOINT_VERSION, "config_hash": "recorded-by-an-older-version"}
    assert check_resume(ckpt, run_cfg, h, run_dir=job) == []
    other = {**run_cfg, "loss": {"tau": 0.9}}  # another configuration still never overwrites the run
    with pytest.raises(ConfigError, match="checkpoint of another configuration"):
        resolve_run_dir(other, job, config_hash(other))
    assert find_latest_run(tmp_path, config_hash(other), "checkpoint.pt") is None
    with pytest.raises(ConfigError, match="another configuration .*loss.tau 0.7 -> 0.9"):
        check_resume(ckpt, other, config_hash(other), run_dir=job)


def test_summary_table_and_json(tmp_path):
    history = [
        {"step": 5, "normalized_score": 1.0, "normalized_score_std": 0.5, "return_mean": 10.0, "return_std": 1.0},
        {"step": 10, "normalized_score": 3.0, "normalized_score_std": 0.5, "return_mean": 70.0, "return_std": 2.0},
    ]
    s = build_summary(history=history, algo="tabb", env="tabb/Hopper-morph-v0", source_env="Hopper-v5", seed=1,
                      eval_episodes=10, reference="odrl", steps=10, pretrain_steps={"stage1": 1, "stage2": 2},
                      wall_time_s=3.0, updates_per_s=float("nan"), device="cpu", config_hash="h",
                      run_name="n", run_dir=str(tmp_path))
    assert s["best_step"] == 10 and s["raw_return"] == 70.0 and s["updates_per_s"] is None
    json.dumps(s)  # serialisable
    table = format_summary_table(s)
    assert "3.00 ± 0.50" in table and "tabb/Hopper-morph-v0" in table


def test_logger_rewind_drops_rows_after_the_checkpoint(tmp_path):
    logger = make_logger("csv", tmp_path, "exp")
    for step in (1, 2):
        logger.log_scalar("train/a", float(step), step=step)
    import copy

    state = copy.deepcopy(logger.state_dict())  # a checkpoint holds a copy (torch.save)
    logger.log_scalar("train/a", 3.0, step=3)
    logger.log_scalar("train/b", 3.0, step=3)  # a metric born after the checkpoint
    resumed = make_logger("csv", tmp_path, "exp", state_dict=state)
    resumed.log_scalar("train/a", 30.0, step=3)
    scalars = tmp_path / "logs" / "exp" / "scalars"
    assert (scalars / "train" / "a.csv").read_text() == "1,1.0\n2,2.0\n3,30.0\n"
    assert not (scalars / "train" / "b.csv").exists()


def test_evaluator_is_deterministic_and_respects_time_limit():
    from tensordict.nn import TensorDictModule

    from tabb_torchrl.pipeline import PolicyEvaluator

    policy = TensorDictModule(lambda obs: torch.tanh(obs[..., :3]), in_keys=["observation"], out_keys=["action"])
    ev = PolicyEvaluator("tabb/Hopper-morph-v0", episodes=3, seed=5, max_episode_steps=15)
    a, b = ev.evaluate(policy), ev.evaluate(policy)
    ev.close()
    assert a.shape == (3,) and np.array_equal(a, b)
    assert len(set(a.tolist())) > 1  # different seeds per episode


def test_optim_update_choice_is_validated(cfg):
    validate_config(_with(cfg, optim__update="modular"))
    validate_config(_with(cfg, env__id="tabb/Hopper-morph-v0", eval__reference="ours"))  # shipped: accepted
    with pytest.raises(ConfigError, match="optim.update"):
        validate_config(_with(cfg, optim__update="turbo"))
    with pytest.raises(ConfigError, match="data.reward_scale"):
        validate_config(_with(cfg, data__reward_scale="d4rl"))


def _episodes(returns_per_episode, lengths):
    from tensordict import TensorDict

    rewards, done = [], []
    for ret, n in zip(returns_per_episode, lengths):
        rewards += [ret / n] * n
        done += [False] * (n - 1) + [True]
    n = len(rewards)
    return TensorDict({"observation": torch.zeros(n, 2), ("next", "reward"): torch.tensor(rewards).unsqueeze(-1),
                       ("next", "done"): torch.tensor(done).unsqueeze(-1),
                       ("next", "terminated"): torch.zeros(n, 1, dtype=torch.bool)}, [n])


def test_reward_scale_iql_locomotion(cfg, monkeypatch):
    from tabb_torchrl.pipeline import factories
    from tabb_torchrl.pipeline import episode_returns, reward_scale_factor, scale_rewards

    source = _episodes([10.0, 50.0], [4, 5])
    target = _episodes([30.0, 210.0, 90.0], [3, 3, 2])
    torch.testing.assert_close(episode_returns(target), torch.tensor([30.0, 210.0, 90.0]))
    # an unfinished last episode counts (IQL's split_into_trajectories)
    target["next", "done"][-1] = False
    assert episode_returns(target).tolist() == pytest.approx([30.0, 210.0, 90.0])
    assert reward_scale_factor(_with(cfg, data__reward_scale="none"), source, target) == 1.0
    factor = reward_scale_factor(_with(cfg, data__reward_scale="iql_locomotion"), source, target)
    assert factor == pytest.approx(1000.0 / (210.0 - 10.0))  # source + target episodes
    assert reward_scale_factor(_with(cfg, data__reward_scale="iql_locomotion"), None, target) == pytest.approx(
        1000.0 / (210.0 - 30.0))
    scaled = scale_rewards(target, factor)
    torch.testing.assert_close(scaled["next", "reward"], target["next", "reward"] * factor)
    assert target["next", "reward"][0, 0] == pytest.approx(10.0)  # the input is left unchanged
    with pytest.raises(ConfigError, match="max - min"):
        reward_scale_factor(_with(cfg, data__reward_scale="iql_locomotion"), None, _episodes([5.0, 5.0], [2, 2]))

    # make_datasets applies it to both datasets
    loaded = {"source": source, "target": target}
    monkeypatch.setattr(factories, "load_dataset", lambda spec, env_id, name, **kw: loaded[name])
    src, tgt = factories.make_datasets(_with(cfg, data__reward_scale="iql_locomotion"), 2, 1)
    torch.testing.assert_close(src["next", "reward"], source["next", "reward"] * factor)
    torch.testing.assert_close(tgt["next", "reward"], target["next", "reward"] * factor)
    src, tgt = factories.make_datasets(cfg, 2, 1)
    assert src is source and tgt is target  # default: none
