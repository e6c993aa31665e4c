"""MOBODY (Guo et al. 2025) on the TD3 backbone as ``algo=mobody``: the relabelling of source and target
states into model rows by hand, the source-reward corrections (DARA, PAR), the actor loss (-2.5 Q/|Q| +
Q-weighted behaviour cloning) through the loss module, the dynamics model on a known toy system with
domain-specific action effects, the model-row buffer, and the recipe's smoke run with an exact
kill-and-resume across a refresh of the model rows."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from tensordict import TensorDict

from tabb_torchrl.keys import SOURCE, TARGET
from tabb_torchrl.methods import MOBODY
from tabb_torchrl.methods.mobody import (
    EnvTermination,
    MOBODYDynamics,
    ModelRowBuffer,
    ensemble_disagreement,
    q_weighted_bc_loss,
    train_mobody_dynamics,
)
from tabb_torchrl.pipeline.backbones import make_mobody
from tabb_torchrl.pipeline.config import ConfigError
from tabb_torchrl.pipeline.td3 import MODEL_ROWS, TD3Batch
from recipe_helpers import (assert_logged, assert_same_loss_modules, assert_same_states,  # noqa: E402
                            flatten_state, kill_and_resume, load_actor, load_checkpoint,
                            smoke_run_fixture)

ENV = "tabb/Hopper-morph-v0"
ALGO = OmegaConf.to_container(OmegaConf.load(Path(__file__).resolve().parents[1] / "recipes/config/algo/mobody.yaml"))


def _cfg(td3=None, **mobody):
    """The recipe's algo=mobody settings (recipes/config/algo/mobody.yaml), small networks."""
    return {"model": {"actor_hidden": [16, 16], "qvalue_hidden": [16, 16], "activation": "relu"},
            "loss": {"gamma": 0.99}, "optim": {"target_update_tau": 0.005, "lr_actor": 3e-4, "lr_qvalue": 3e-4,
                                               "weight_decay": 0.0},
            "algo": {"name": "mobody", "td3": {**ALGO["td3"], **(td3 or {})},
                     "mobody": {**ALGO["mobody"], "hidden": 16, **mobody}}}


def _pool(method, s_src, a_src, s_tgt, a_tgt):
    """Give the method its stored rows as the recipe's buffer does (add_columns on source-then-target rows)."""
    n_s, n_t = s_src.shape[0], s_tgt.shape[0]
    td = TensorDict({"observation": torch.cat([s_src, s_tgt]), "action": torch.cat([a_src, a_tgt]),
                     ("next", "observation"): torch.cat([s_src, s_tgt]),
                     "domain": torch.tensor([SOURCE] * n_s + [TARGET] * n_t)}, [n_s + n_t])
    method.add_columns(td)
    return td


# ---------------------------------------------------------------------------- the relabelling by hand
def test_relabelling_of_source_and_target_states_by_hand(monkeypatch):
    m = MOBODY(2, 1, hidden=8, termination="none", source_penalty="none", rollout_source=2, rollout_target=1,
               uncertainty_coef=0.1, max_uncertainty=10.0, seed=0)
    s_src, a_src = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.25]])
    s_tgt = torch.tensor([[-3.0, 4.0]])
    _pool(m, s_src, a_src, s_tgt, torch.zeros(1, 1))

    def fake_step(obs, act, generator=None):   # s' = 2 s + a; r = s_0; disagreement 20 where a = 0.9 (dropped)
        u = torch.where(act[:, 0] == 0.9, torch.tensor(20.0), torch.tensor(3.0))
        return 2 * obs + act, obs[:, 0], u

    monkeypatch.setattr(m.dynamics, "sample_step", fake_step)
    policy = lambda s: torch.where(s[:, :1] > 0, torch.tensor(0.9), torch.tensor(-0.5))   # noqa: E731
    info = m.refresh_model_rows(policy)
    # rows: pi at the 2 source draws (a = 0.9: dropped), pi at the target draw, the 2 source (s, a) relabelled
    b = m.buffer
    assert len(b) == 3 and info["mobody_model_rows_added"] == 3.0 and info["mobody_model_rows_kept"] == pytest.approx(0.6)
    assert b.observation.tolist() == [[-3.0, 4.0], [1.0, 2.0], [1.0, 2.0]]
    assert b.action.squeeze(-1).tolist() == [-0.5, 0.25, 0.25]
    assert b.next_observation.tolist() == [[-6.5, 7.5], [2.25, 4.25], [2.25, 4.25]]
    assert b.reward.tolist() == pytest.approx([-3.0 - 0.3, 1.0 - 0.3, 1.0 - 0.3])   # r_hat - 0.1 u
    assert b.terminated.tolist() == [0.0, 0.0, 0.0]
    # each batch gets 64 of them, marked as model rows, after the 128 + 128 dataset rows
    batch = TD3Batch(torch.zeros(4, 2), torch.zeros(4, 1), torch.zeros(4), torch.zeros(4, 2), torch.zeros(4),
                     torch.tensor([0, 0, 1, 1]))
    out, metrics = m.edit_batch(batch, step=1, policy=policy)           # step 1: no refresh
    assert len(out) == 4 + 64 and out.domain[4:].eq(MODEL_ROWS).all() and len(m.buffer) == 3
    assert metrics["mobody_model_buffer"] == 3.0 and metrics["mobody_model_rows_added"] == 3.0
    m.edit_batch(batch, step=5000, policy=policy)                       # every rollout_every steps: more rows
    assert len(m.buffer) == 6
    m2 = MOBODY(2, 1, hidden=8, termination="none", source_penalty="none", relabel_source=False,
                rollout_source=2, rollout_target=1)
    _pool(m2, s_src, a_src, s_tgt, torch.zeros(1, 1))
    monkeypatch.setattr(m2.dynamics, "sample_step", fake_step)
    m2.refresh_model_rows(policy)
    assert m2.buffer.observation.tolist() == [[-3.0, 4.0]]              # only the policy's rows


def test_the_model_step_samples_an_elite_and_penalises_disagreement():
    dyn = MOBODYDynamics(2, 1, ensemble_size=3, num_elites=2, hidden=8)
    with torch.no_grad():   # every member identical: no spread, so the sample is the mean and u = 0
        for p in dyn.parameters():
            p.copy_(p[:1].expand_as(p))
    s, a = torch.randn(5, 2), torch.randn(5, 1)
    nxt, r, u = dyn.sample_step(s, a, torch.Generator().manual_seed(0))
    torch.testing.assert_close(nxt, dyn.predict(s, a, "target")[0])
    torch.testing.assert_close(r, dyn.reward(s, a, nxt)[0])
    assert float(u.abs().max()) < 1e-6
    assert ensemble_disagreement(torch.tensor([[[3.0, 4.0]], [[-3.0, -4.0]]])).tolist() == [5.0]


def test_termination_of_model_rows_reads_the_target_env():
    term = EnvTermination(ENV)
    obs = np.zeros((3, 11))
    obs[:, 0] = [1.25, 0.5, 1.25]
    obs[2, 1] = 0.5                                                     # torso angle beyond Hopper's 0.2
    assert term(obs).tolist() == [False, True, True]
    with pytest.raises(ValueError, match="termination='env' needs the target env id"):
        MOBODY(11, 3)


# ---------------------------------------------------------------------------- source-reward corrections
def test_dara_correction_on_source_rows_only():
    m = MOBODY(2, 1, hidden=8, termination="none", source_penalty="dara", penalty_coef=0.1)
    b = TD3Batch(torch.zeros(3, 2), torch.zeros(3, 1), torch.ones(3), torch.zeros(3, 2), torch.zeros(3),
                 torch.tensor([0, 0, 1]), {"dara_log_ratio": torch.tensor([2.0, -50.0, 4.0])})
    assert m.source_reward(b).tolist() == pytest.approx([1.2, 0.0, 1.0])   # 1 + 0.1 clip(., -10, 10); target as is
    assert m.columns == ("dara_log_ratio",)


def test_par_correction_by_hand(monkeypatch):
    m = MOBODY(2, 1, hidden=8, termination="none", source_penalty="par", penalty_coef=0.1)
    pred = torch.tensor([[1.0, 1.0], [0.0, 3.0]])
    monkeypatch.setattr(m.dynamics, "sample_step", lambda s, a, g=None: (pred, None, None))
    b = TD3Batch(torch.zeros(3, 2), torch.zeros(3, 1), torch.ones(3), torch.tensor([[1.0, 3.0], [2.0, 3.0], [9.0, 9.0]]),
                 torch.zeros(3), torch.tensor([0, 0, 1]))
    # mean_j (s' - s'_hat)^2 = [(0 + 4) / 2, (4 + 0) / 2] = [2, 2]
    assert m.source_reward(b).tolist() == pytest.approx([1 - 0.2, 1 - 0.2, 1.0])


# ---------------------------------------------------------------------------- the actor loss
def test_actor_loss_is_scaled_q_plus_q_weighted_behaviour_cloning():
    _, loss, _, _ = make_mobody(_cfg(source_penalty="none"), ENV)
    g = torch.Generator().manual_seed(0)
    b = TD3Batch(torch.randn(6, 11, generator=g), torch.rand(6, 3, generator=g) * 2 - 1, torch.zeros(6),
                 torch.randn(6, 11, generator=g), torch.zeros(6), torch.tensor([0, 0, 1, 1, MODEL_ROWS, MODEL_ROWS]))
    out, metrics = loss.actor_loss(b)
    with torch.no_grad():
        a = loss.policy(b.observation)
        q_pi = loss.qvalues(b.observation, a).amin(0)                   # min of the twins (actor_q: min)
        q_data = loss.qvalues(b.observation[:4], b.action[:4]).amin(0)  # the dataset rows only
        w = torch.exp(3 * q_data / q_data.abs().mean()).clamp(max=100)
        bc = (w.unsqueeze(-1) * (a[:4] - b.action[:4]) ** 2).mean()
        expected = -2.5 * q_pi.mean() / q_pi.abs().mean() + 1.0 * bc
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(q_weighted_bc_loss(a[:4], b.action[:4], q_data)[0], bc)
    assert loss.target_actor is None and loss.policy_noise == 0.0       # a' = pi(s'), no smoothing (authors)


# ---------------------------------------------------------------------------- the dynamics model
def _toy(n, g, effect):
    """s' = 0.9 s + effect * [a, -a]; r = s'_0. The two domains differ only in the action's effect."""
    s = torch.randn(n, 2, generator=g)
    a = torch.rand(n, 1, generator=g) * 2 - 1
    nxt = 0.9 * s + effect * torch.cat([a, -a], -1)
    return s, a, nxt, nxt[:, 0].clone()


def test_the_dynamics_model_learns_the_target_dynamics_of_a_toy_system():
    g = torch.Generator().manual_seed(0)
    source, target = _toy(1000, g, 0.2), _toy(600, g, 1.0)              # target: a five times stronger action
    dyn = MOBODYDynamics(2, 1, ensemble_size=7, num_elites=5, hidden=32)
    info = train_mobody_dynamics(dyn, source, target, max_epochs=60, patience=60,
                                 generator=torch.Generator().manual_seed(1),
                                 noise_generator=torch.Generator().manual_seed(2))
    assert info["epochs"] == 60 and sorted(info["elites"]) == sorted(set(info["elites"])) and len(info["elites"]) == 5
    s, a, _, _ = _toy(500, g, 0.0)
    true_target = 0.9 * s + 1.0 * torch.cat([a, -a], -1)
    true_source = 0.9 * s + 0.2 * torch.cat([a, -a], -1)
    with torch.no_grad():
        pred = dyn.predict(s, a, "target")[dyn.elites].mean(0)          # the relabelling's model: target actions
        pred_src = dyn.predict(s, a, "source")[dyn.elites].mean(0)
        r = dyn.reward(s, a, true_target).mean(0)
    err_t = float(((pred - true_target) ** 2).mean())
    assert err_t < 0.02                                                 # the target dynamics
    assert err_t < 0.25 * float(((pred - true_source) ** 2).mean())     # not the source's
    assert float(((pred_src - true_source) ** 2).mean()) < 0.02         # the source action encoder: the source's
    assert float(((r - true_target[:, 0]) ** 2).mean()) < 0.02          # the reward model
    assert float(info["holdout_mse"][dyn.elites].mean()) < 0.02


def test_the_dynamics_model_is_one_batched_module():
    dyn = MOBODYDynamics(3, 2, ensemble_size=7, hidden=8)
    assert all(p.shape[0] == 7 for p in dyn.parameters())              # every layer: stacked members
    assert {type(m).__name__ for m in dyn.children()} == {"EnsembleMLP", "ModuleDict"}


# ---------------------------------------------------------------------------- the buffer and the state
def test_model_row_buffer_keeps_the_newest_rows_and_round_trips():
    buf = ModelRowBuffer(4)
    for start in range(0, 10, 3):
        x = torch.arange(start, start + 3, dtype=torch.float32)
        buf.add(x.unsqueeze(-1), x.unsqueeze(-1), x, x.unsqueeze(-1), torch.zeros(3))
    assert len(buf) == 4 and sorted(buf.reward.tolist()) == [8.0, 9.0, 10.0, 11.0]
    other = ModelRowBuffer(1)
    other.load_state_dict(buf.state_dict())
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(buf.sample(5, g1).reward, other.sample(5, g2).reward)
    with pytest.raises(RuntimeError, match="empty"):
        ModelRowBuffer(2).sample(1)


def test_the_model_rows_and_the_generator_are_in_the_state_dict():
    m = MOBODY(2, 1, hidden=8, termination="none", source_penalty="none", rollout_source=3, rollout_target=2, seed=1)
    _pool(m, torch.randn(5, 2), torch.randn(5, 1), torch.randn(4, 2), torch.randn(4, 1))
    m.refresh_model_rows(lambda s: torch.zeros(s.shape[0], 1))
    state = m.state_dict()
    m2 = MOBODY(2, 1, hidden=8, termination="none", source_penalty="none")
    m2.load_state_dict(state)
    assert len(m2.buffer) == len(m.buffer) > 0 and torch.equal(m2.buffer.observation, m.buffer.observation)
    assert torch.equal(m.buffer.sample(4, m._generator).reward, m2.buffer.sample(4, m2._generator).reward)


def test_an_update_resumed_across_a_refresh_equals_the_uninterrupted_one():
    """What a kill-and-resume of ``algo=mobody`` restores, in-process: the loss module (networks, model rows,
    the method's generator and last refresh numbers), the optimisers and the update's step count. Refreshes
    every 3 steps; stopped after step 4, the resumed update refreshes at step 6 as the uninterrupted one."""
    from types import SimpleNamespace

    from tabb_torchrl.pipeline.td3 import make_td3_update

    cfg = _cfg(termination="none", source_penalty="none", rollout_every=3, rollout_source=6, rollout_target=3,
               model_rows=4, max_uncertainty=1e9)
    g = torch.Generator().manual_seed(0)
    pool = (torch.randn(20, 11, generator=g), torch.rand(20, 3, generator=g) * 2 - 1,
            torch.randn(10, 11, generator=g), torch.rand(10, 3, generator=g) * 2 - 1)
    batches = [TensorDict({"observation": torch.randn(8, 11, generator=g), "action": torch.rand(8, 3, generator=g) - 0.5,
                           ("next", "observation"): torch.randn(8, 11, generator=g),
                           ("next", "reward"): torch.randn(8, 1, generator=g),
                           ("next", "terminated"): torch.zeros(8, 1, dtype=torch.bool),
                           "domain": torch.tensor([SOURCE] * 4 + [TARGET] * 4)}, [8]) for _ in range(8)]

    def session(init_seed, first_batch, step, saved=None):
        torch.manual_seed(init_seed)
        _, loss, updater, opts = make_mobody(cfg, ENV)
        _pool(loss.method, *pool)                      # the recipe rebuilds the buffer: add_columns again
        if saved is not None:                          # what the checkpoint holds
            loss.load_state_dict(saved[0])
            for name, opt in opts.items():
                opt.load_state_dict(saved[1][name])
        rb = SimpleNamespace(sample=iter(batches[first_batch:]).__next__)
        return loss, opts, make_td3_update(cfg, loss, rb, opts, updater, step=step)

    full, full_opts, update = session(0, 0, 0)
    for _ in range(4):
        update()
    saved = (copy.deepcopy(full.state_dict()), {k: copy.deepcopy(o.state_dict()) for k, o in full_opts.items()})
    for _ in range(4):
        update()
    rows_per_refresh = 6 + 3 + 6                       # policy actions at source, target; relabelled source (s, a)
    assert len(full.method.buffer) == 3 * rows_per_refresh   # refreshes at steps 0, 3, 6
    resumed, resumed_opts, update = session(1, 4, 4, saved)
    for _ in range(4):
        update()
    # bit for bit (nan where nothing was fitted: no prepare() here)
    state = assert_same_states(full.state_dict(), resumed.state_dict(), nan_equal=True)
    assert "method._extra_state/refresh/mobody_model_rows_added/" in state
    for name, opt in full_opts.items():
        assert_same_states(opt.state_dict(), resumed_opts[name].state_dict(), nan_equal=True)
    # the comparison can fail: an update that restarts its count at 0 refreshes at its first step (4 refreshes)
    restarted, _, update = session(1, 4, 0, saved)
    for _ in range(4):
        update()
    assert len(restarted.method.buffer) == 4 * rows_per_refresh


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"algo.mobody has keys that MOBODY does not take: \['rollout_length'\]"):
        make_mobody(_cfg(rollout_length=2), ENV)
    with pytest.raises(ConfigError, match="algo.mobody: MOBODY: source_penalty must be one of"):
        make_mobody(_cfg(source_penalty="bonus"), ENV)


# ---------------------------------------------------------------------------- the recipe
# +preset=smoke refreshes the model rows every 100 steps: the kill at 70 resumes across the refresh at 100
smoke_run = smoke_run_fixture("mobody", steps=150)


def test_recipe_smoke_run_and_the_actor_loads(smoke_run):
    assert "normalized_score" in smoke_run.stdout and "| mobody" in smoke_run.stdout
    ca = load_checkpoint(smoke_run.run_dir)
    assert sorted(ca["optimizers"]) == ["actor", "qvalue"]
    state = flatten_state(ca["loss_module"])
    assert state["method._extra_state/buffer/observation/"].shape[0] > 0   # the model rows are checkpointed
    assert_logged(smoke_run.run_dir, "mobody_bc", "mobody_model_rows_added")
    load_actor(smoke_run.run_dir, "mobody", 150)


@pytest.mark.slow
def test_recipe_kill_and_resume_across_a_refresh_matches_the_smoke_run(smoke_run):
    run = kill_and_resume(smoke_run, stop_at=70)
    a = assert_same_loss_modules(smoke_run.run_dir, run.run_dir)
    assert "method._extra_state/buffer/observation/" in a
