"""The TBM diagnostic (tabb_torchrl.diagnostic): grouping, Spearman, replay, oracle error, OT scores."""


import numpy as np
import pytest

from tabb_torchrl.diagnostic import (
    group_means,
    oracle_bellman_error,
    ot_transition_scores,
    percentile_groups,
    rankdata,
    replay_transitions,
    score_curve,
    spearman,
)


def test_percentile_groups_by_hand():
    scores = [0.7, 0.1, 0.5, 0.3, 0.9, 0.2]
    # sorted: 0.1(1) 0.2(5) 0.3(3) | 0.5(2) 0.7(0) 0.9(4)
    assert percentile_groups(scores, 2).tolist() == [1, 0, 1, 0, 1, 0]
    # thirds: {0.1, 0.2}, {0.3, 0.5}, {0.7, 0.9}
    assert percentile_groups(scores, 3).tolist() == [2, 0, 1, 1, 2, 0]
    g = percentile_groups(np.random.default_rng(0).normal(size=10_000), 10)
    assert np.bincount(g).tolist() == [1000] * 10
    with pytest.raises(ValueError):
        percentile_groups([1.0, 2.0], 3)


def test_group_means_by_hand():
    means, counts = group_means([0.7, 0.1, 0.5, 0.3, 0.9, 0.2], [7, 1, 5, 3, 9, 2], n_groups=3)
    assert counts.tolist() == [2, 2, 2]
    assert means.tolist() == [1.5, 4.0, 8.0]


def test_rankdata_and_spearman_by_hand():
    assert rankdata([3.0, 1.0, 2.0]).tolist() == [3.0, 1.0, 2.0]
    assert rankdata([1.0, 1.0, 5.0]).tolist() == [1.5, 1.5, 3.0]
    # 1 - 6 sum d^2 / (n (n^2 - 1)) without ties: ranks y = 2 1 4 3 5 -> d^2 = 1 1 1 1 0
    assert spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(1 - 6 * 4 / (5 * 24))
    # with ties: Pearson correlation of average ranks, by hand
    x, y = [1, 2, 2, 3], [1, 3, 2, 4]
    rx, ry = np.array([1, 2.5, 2.5, 4]), np.array([1, 3, 2, 4])
    expected = np.corrcoef(rx, ry)[0, 1]
    assert spearman(x, y) == pytest.approx(expected)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))
    # monotone transform invariance
    z = np.random.default_rng(1).normal(size=50)
    assert spearman(z, np.exp(z)) == pytest.approx(1.0)


def test_score_curve_monotone():
    scores = np.arange(100.0)
    c = score_curve("s", scores, scores * 2, n_groups=10)
    assert c.rho == pytest.approx(1.0) and c.rho_items == pytest.approx(1.0)
    assert c.means.tolist() == [2 * (10 * k + 4.5) for k in range(10)]


def test_oracle_error_by_hand():
    err = oracle_bellman_error([1.0, 2.0], [10.0, 4.0], [False, False], [1.0, 1.0], [8.0, 4.0], [False, True], gamma=0.9)
    # |1 + 9 - (1 + 7.2)| = 1.8 ; |2 + 3.6 - 1| = 4.6
    assert err == pytest.approx([1.8, 4.6])


def _rollout(env_id, n, seed=0):
    from tabb_torchrl.envs import make_env

    env = make_env(env_id)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    rows = []
    while len(rows) < n:
        a = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        nxt, r, term, trunc, _ = env.step(a)
        rows.append((obs, a, r, nxt, term))
        obs = nxt
        if term or trunc:
            obs, _ = env.reset()
    env.close()
    o, a, r, n2, d = map(np.array, zip(*rows))
    return o, a, r, n2, d


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Walker2d-v5"])
def test_replay_in_source_env_reproduces_transitions(env_id):
    obs, act, rew, nxt, term = _rollout(env_id, 150)
    # Hopper / Walker2d clip the observed velocities to [-10, 10]: such states are not recoverable
    nq_obs = {"Hopper-v5": 5, "Walker2d-v5": 8}[env_id]
    ok = (np.abs(obs[:, nq_obs:]) < 10).all(1)
    assert ok.sum() >= 10
    obs, act, rew, nxt, term = obs[ok], act[ok], rew[ok], nxt[ok], term[ok]
    out = replay_transitions(env_id, obs, act)
    assert np.allclose(out["next_observation"], nxt, atol=1e-5)
    assert np.allclose(out["reward"], rew, atol=1e-6)
    assert (out["terminated"] == term).all()
    # so the oracle error is ~0 when the target env is the source env
    v = lambda o: o.sum(-1)  # any value function of the state
    err = oracle_bellman_error(rew, v(nxt), term, out["reward"], v(out["next_observation"]), out["terminated"])
    assert err.max() < 1e-4


def test_replay_in_shifted_env_differs():
    obs, act, rew, nxt, term = _rollout("Hopper-v5", 40)
    out = replay_transitions("tabb/Hopper-morph-v0", obs, act)
    assert not np.allclose(out["next_observation"], nxt, atol=1e-3)


def test_ot_scores_vs_pot_by_hand():
    import ot

    rng = np.random.default_rng(0)
    src, tgt = rng.normal(size=(6, 3)), rng.normal(size=(4, 3))
    scores = ot_transition_scores(src, tgt, method="emd", cost="cosine")
    # hand: cosine cost, exact plan with uniform marginals, row cost / row mass
    sn = src / np.linalg.norm(src, axis=1, keepdims=True)
    tn = tgt / np.linalg.norm(tgt, axis=1, keepdims=True)
    c = 1 - sn @ tn.T
    plan = ot.emd(np.full(6, 1 / 6), np.full(4, 1 / 4), c)
    assert scores == pytest.approx((c * plan).sum(1) * 6, abs=1e-9)
    # the mean score is the OT cost
    assert scores.mean() == pytest.approx(ot.emd2(np.full(6, 1 / 6), np.full(4, 1 / 4), c), abs=1e-9)
    # sinkhorn with a small regularisation approaches the exact scores
    sk = ot_transition_scores(src, tgt, method="sinkhorn", reg=1e-3)
    assert np.abs(sk - scores).max() < 0.05
    # squared-euclidean cost: a source point equal to the only target point scores 0
    assert ot_transition_scores(np.array([[1.0, 2.0]]), np.array([[1.0, 2.0]]), cost="sqeuclidean")[0] == pytest.approx(0)


def test_ot_scores_chunks_cover_every_row():
    rng = np.random.default_rng(0)
    src, tgt = rng.normal(size=(25, 3)), rng.normal(size=(8, 3))
    s = ot_transition_scores(src, tgt, chunk_size=10, max_target=5)
    assert s.shape == (25,) and np.isfinite(s).all() and (s >= 0).all()
    with pytest.raises(ValueError):
        ot_transition_scores(src, tgt[:, :2])


def test_replay_in_ant_gives_the_next_state_and_the_reward_up_to_its_forward_lag():
    """Ant-v5 (contact forces in the observation): the next state replays exactly; the reward differs by the
    forward-reward lag the module docstring describes (body positions of the previous step)."""
    obs, act, rew, nxt, term = _rollout("Ant-v5", 120)
    assert obs.shape[1] == 105  # gymnasium v5's default Ant observation includes the 78 contact forces
    out = replay_transitions("Ant-v5", obs, act)
    assert np.allclose(out["next_observation"], nxt, atol=1e-6)
    assert (out["terminated"] == term).all()
    assert np.abs(out["reward"] - rew).max() < 0.1


def test_clear_error_for_an_env_without_a_state_setter():
    from tabb_torchrl.diagnostic import ReplayError, check_replayable

    with pytest.raises(ReplayError, match="CartPole-v1 .*Fix:"):
        replay_transitions("CartPole-v1", np.zeros((1, 4)), np.zeros((1, 1)))
    check_replayable("tabb/Ant-friction-v0")  # the catalogue's shifts are replayable


def test_spearman_per_row_and_over_deciles_on_a_synthetic_case():
    """A weak trend under row noise: the ten group means rise perfectly (rho 1) while single rows barely
    follow the score -- the gap between the docs' 0.96 over deciles and 0.04 per row."""
    from scipy.stats import spearmanr

    scores = np.arange(100.0)
    noise = (np.arange(100) * 37) % 10  # each run of ten rows holds every residue 0..9 once: the same group mean
    errors = 0.1 * (scores // 10) + noise
    c = score_curve("TBM", scores, errors, n_groups=10)
    np.testing.assert_allclose(c.means, 0.1 * np.arange(10) + 4.5)
    assert c.rho == pytest.approx(1.0)
    assert c.rho_items == pytest.approx(spearmanr(scores, errors).statistic)
    assert abs(c.rho_items) < 0.3


def test_fit_bc_actor_learns_the_target_actions():
    import torch
    from omegaconf import OmegaConf
    from tensordict import TensorDict

    from tabb_torchrl.diagnostic import fit_bc_actor
    from tabb_torchrl.diagnostic.source import _mean_action

    cfg = OmegaConf.create({"model": {"actor_hidden": [32, 32], "activation": "relu", "actor_log_std_init": 0.0,
                                      "actor_log_std_min": -5.0, "actor_log_std_max": 2.0},
                            "optim": {"lr_actor": 3e-3}})

    class Run:  # what fit_bc_actor reads of a LoadedRun
        obs_dim, action_dim = 3, 2

    Run.cfg = cfg
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(512, 3, generator=gen)
    act = torch.tanh(obs[:, :2] - 0.5 * obs[:, 2:])  # a smooth behaviour policy
    data = TensorDict({"observation": obs, "action": act}, [512])
    before = (_mean_action(fit_bc_actor(Run, data, steps=0), obs) - act).norm(dim=-1).mean()
    after = (_mean_action(fit_bc_actor(Run, data, steps=400), obs) - act).norm(dim=-1).mean()
    assert after < 0.3 * before


# ---------------------------------------------------------------- the source diagnostic on tiny smoke runs
@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """Two seeds of TABB on Hopper-morph whose source data come from the target env itself (source == target)."""
    from recipe_helpers import run_recipe

    work = tmp_path_factory.mktemp("diag")
    runs = []
    for seed in (0, 1):
        run_dir = work / f"tabb_seed{seed}"
        run_recipe(["+preset=smoke", f"data.root={work / 'data'}", "progress=false", "env.source_id=tabb/Hopper-morph-v0",
                    "pretrain.stage1_steps=40", "pretrain.stage2_steps=20", "optim.steps=60", "eval.every=60",
                    "eval.episodes=1", f"seed={seed}", f"run_dir={run_dir}"], cwd=work)
        runs.append(run_dir)
    return work, runs


def _run_cli(args, cwd):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "recipes" / "tbm_diagnostic.py"
    env = dict(__import__("os").environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_source_diagnostic_report_when_source_is_the_target_env(smoke_runs):
    """Replaying the source (s, a) in the env that produced them gives them back: the realised target's true
    error is 0, the source's own next state is the true one; the report has every section."""
    import json

    work, (run0, run1) = smoke_runs
    proc = _run_cli([f"run_dir={run0}", f"compare_run_dirs=[{run0},{run1}]", "rows=300", "bc_steps=100",
                     "episodes=1", f"out_dir={work / 'report'}"], cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((work / "report" / "tbm_diagnostic.json").read_text())
    assert (work / "report" / "tbm_diagnostic.md").read_text().startswith("# Source diagnostic")
    assert (work / "report" / "tbm_diagnostic.png").stat().st_size > 0
    assert set(report) >= {"env", "source_env", "run_dir", "algo", "seed", "checkpoint_phase", "rl_step", "n",
                           "reward_scale", "mean_oracle_error", "source_targets", "tbm", "curves", "predictor",
                           "advantages", "awr_vs_bc", "seconds", "files"}
    assert report["source_env"] == report["env"] == "tabb/Hopper-morph-v0"
    st = report["source_targets"]
    assert set(st) == {"run_kind", "aligned", "realised", "gated", "run"}
    assert st["run_kind"] == "aligned"
    assert st["realised"]["mean_error"] < 1e-4 and report["mean_oracle_error"] < 1e-4
    assert st["run"] == st["aligned"]  # paper-faithful TABB: its own target is the aligned one
    assert st["aligned"]["mean_error"] > 1e-3
    p = report["predictor"]
    assert p["latent_mse"]["source_own_vs_true"] < 1e-8 and p["reward_abs_error"]["source_own_vs_true"] < 1e-5
    assert set(p["latent_mse"]) == {"target_holdout", "target_train", "source_prediction_vs_true", "source_own_vs_true"}
    assert set(report["curves"]) == {"TBM", "TBM vs aligned error", "OT cost"}
    compare = report["advantages"]["compare"]
    assert compare[0]["spearman_advantage"] == pytest.approx(1.0) and compare[0]["config_changes"] == {}
    assert compare[1]["label"] == "tabb seed 1" and compare[1]["spearman_advantage"] < 1.0
    b = report["awr_vs_bc"]
    assert set(b) == {"bc_steps", "episodes", "run", "bc", "action_distance"} and b["bc_steps"] == 100


def test_source_target_errors_match_the_method_and_the_actor_is_the_trained_one(smoke_runs):
    import torch

    from tabb_torchrl.diagnostic import load_run, load_run_data, sample_source_rows, source_target_errors

    _, (run0, _) = smoke_runs
    run = load_run(run0)
    for p_actor, p_loss in zip(run.actor.parameters(), run.loss.actor_network_params.flatten_keys().values()):
        assert p_actor.data_ptr() == p_loss.data_ptr()  # the evaluated actor is the loss's (trained) actor
    source, target, factor = load_run_data(run)
    assert factor == 1.0
    idx, _ = sample_source_rows(source, run.source_id, 200, seed=0)
    td = source[torch.as_tensor(idx)]
    rep = replay_transitions(run.env_id, td["observation"].numpy(), td["action"].numpy())
    st = source_target_errors(run, td, rep, target)
    np.testing.assert_allclose(st.tbm, np.abs(st.realised - st.aligned), atol=1e-5)
    np.testing.assert_allclose(st.run, st.aligned)
    assert st.weight.mean() == pytest.approx(1.0, abs=1e-4)  # Eq. 7: mean weight 1 per batch
    gated = source_target_errors(run, td, rep, target, gate_quantile=1.0)
    assert ((gated.gated == st.realised) | (gated.gated == st.aligned)).all()


def test_clear_errors_for_runs_the_diagnostic_cannot_read(smoke_runs, tmp_path):
    import shutil

    from tabb_torchrl.diagnostic import DiagnosticError, source_diagnostic

    work, (run0, _) = smoke_runs
    proc = _run_cli([f"run_dir={tmp_path}"], cwd=work)
    assert proc.returncode == 2 and "has no config.yaml, checkpoint.pt" in proc.stderr and "Fix:" in proc.stderr
    target_only = tmp_path / "target_only"
    shutil.copytree(run0, target_only)
    text = (target_only / "config.yaml").read_text().replace("use_source: true", "use_source: false")
    (target_only / "config.yaml").write_text(text)
    with pytest.raises(DiagnosticError, match="without source data.*Fix:"):
        source_diagnostic(target_only, awr_vs_bc_check=False)
