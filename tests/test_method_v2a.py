"""V2A (Qiao et al., ICML 2026): the mixed score, the min-max normalisation, the filter and the
weights by hand; trajectories cut from the stored rows; the Sparse-QL value loss; pre-training
trains every part and separates two dynamics modalities on a toy problem; the method changes only
the source rows' weights and filter; the recipe runs and resumes bit-identically."""
from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict

from tabb_torchrl import make_actor, make_latent_qvalue, make_latent_value
from tabb_torchrl.methods import METHODS, V2A, CrossDomainMethod, SourceEdit, SourceRows, make_method
from tabb_torchrl.methods.v2a import (
    episode_segments,
    min_max_normalise,
    mixed_score,
    segment_batch,
    sparse_ql_value_loss,
)
from tabb_torchrl.objectives import CrossDomainIQLLoss
from recipe_helpers import (assert_logged, assert_same_states, kill_and_resume,  # noqa: E402
                            load_checkpoint, smoke_run_fixture)

TINY = dict(repr_dim=4, hidden_sizes=(8,), z_dim=2, traj_hidden=8, decoder_hidden_sizes=(8,),
            value_hidden_sizes=(8,))


def _rows(h, adv):
    n = h.shape[0]
    return SourceRows(torch.zeros(n), torch.zeros(n), torch.zeros(n), torch.zeros(n, 2),
                      {"igdf_score": h, "v2a_advantage": adv}, value=lambda z: z.sum(-1), gamma=0.99)


# ---------------------------------------------------------------- the score by hand
def test_min_max_normalisation_and_mixed_score_by_hand():
    adv = torch.tensor([2.0, -2.0, 0.0, 6.0])
    norm = min_max_normalise(adv)  # (A + 2) / (8 + 1e-8)
    torch.testing.assert_close(norm, torch.tensor([0.5, 0.0, 0.25, 1.0]))
    h = torch.tensor([0.5, 1.0, -1.0, 0.0])
    # f = 0.6 h + 0.4 norm = [0.3 + 0.2, 0.6 + 0, -0.6 + 0.1, 0 + 0.4]
    torch.testing.assert_close(mixed_score(h, adv, 0.6), torch.tensor([0.5, 0.6, -0.5, 0.4]))
    torch.testing.assert_close(mixed_score(h, adv, 1.0), h)                  # lambda = 1: IGDF's score
    # a constant advantage normalises to 0 (eps keeps it finite)
    assert min_max_normalise(torch.full((3,), 7.0)).tolist() == [0.0, 0.0, 0.0]


def test_filter_and_weights_by_hand():
    h = torch.tensor([0.5, 1.0, -1.0, 0.0])
    adv = torch.tensor([2.0, -2.0, 0.0, 6.0])      # f = [0.5, 0.6, -0.5, 0.4]: top half rows 0 and 1
    m = V2A(3, 2, xi=0.5, source_mean="kept", **TINY)
    edit = m.edit_source(_rows(h, adv))
    assert edit.keep.tolist() == [True, True, False, False]
    torch.testing.assert_close(edit.weight, torch.exp(h))                   # authors' code: exp(h)
    assert edit.reward is None and edit.target is None
    assert edit.metrics["v2a_kept_score"].item() == pytest.approx(0.55)
    mixed = V2A(3, 2, xi=0.5, source_mean="kept", weight_score="mixed", **TINY).edit_source(_rows(h, adv))
    torch.testing.assert_close(mixed.weight, torch.exp(torch.tensor([0.5, 0.6, -0.5, 0.4])))
    # the advantage changes the filter: IGDF's score alone would keep rows 0 and 1 too, but not with lambda=0.2
    low = V2A(3, 2, xi=0.5, tradeoff=0.2, **TINY).edit_source(_rows(h, adv))  # f = [0.5, 0.2, -0.1, 0.8]
    assert low.keep.tolist() == [True, False, False, True]
    # xi = 0.75 keeps three rows; source_mean="batch" scales the weights by k / n_s
    three = V2A(3, 2, xi=0.75, **TINY).edit_source(_rows(h, adv))
    assert three.keep.tolist() == [True, True, False, True]
    torch.testing.assert_close(three.weight, torch.exp(h) * 0.75)


def test_exp_weight_clip_at_100_binds():
    h = torch.tensor([0.9, 0.1, 0.6, 0.2])
    adv = torch.tensor([1.0, 0.0, 1.0, 0.0])
    edit = V2A(3, 2, xi=0.5, alpha=10.0, source_mean="kept", **TINY).edit_source(_rows(h, adv))
    assert edit.keep.tolist() == [True, False, True, False]
    assert math.exp(9.0) > 100 and edit.weight[0].item() == 100.0
    assert edit.weight[2].item() == 100.0 and math.exp(6.0) > 100
    torch.testing.assert_close(edit.weight[[1, 3]], torch.exp(torch.tensor([1.0, 2.0])))


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="xi"):
        V2A(3, 2, xi=1.5, **TINY)
    with pytest.raises(ValueError, match="tradeoff"):
        V2A(3, 2, tradeoff=-0.1, **TINY)
    with pytest.raises(ValueError, match="weight_score"):
        V2A(3, 2, weight_score="advantage", **TINY)
    with pytest.raises(KeyError, match="v2a_advantage"):
        V2A(3, 2, **TINY).edit_source(SourceRows(torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(2, 1),
                                                 {"igdf_score": torch.zeros(2)}, value=lambda z: z, gamma=0.9))


# ---------------------------------------------------------------- pieces of the pre-training by hand
def test_trajectories_cut_from_the_stored_rows():
    s = torch.arange(8.0)[:, None]
    s_next = s + 1
    s_next[4] = -1.0                                # row 5 does not continue row 4: a new trajectory
    done = torch.tensor([0, 0, 1, 0, 0, 0, 0, 0], dtype=torch.bool)
    starts, lengths = episode_segments(done, s, s_next, max_len=1000)
    assert starts.tolist() == [0, 3, 5] and lengths.tolist() == [3, 2, 3]
    starts, lengths = episode_segments(done, s, s_next, max_len=2)   # at most max_len steps
    assert starts.tolist() == [0, 2, 3, 5, 7] and lengths.tolist() == [2, 1, 2, 2, 1]
    idx, mask = segment_batch(torch.tensor([3, 7]), torch.tensor([2, 1]), 3)
    assert idx.tolist() == [[3, 4, 3], [7, 7, 7]] and mask.tolist() == [[True, True, False], [True, False, False]]


def test_sparse_ql_value_loss_by_hand():
    q, v = torch.tensor([0.4, -2.0, 1.0]), torch.tensor([0.0, 0.0, 0.5])
    alpha = 0.2
    u = (q - v) / 0.4 + 1.0                          # [2, -4, 2.25]: the second row is cut
    expected = ((2.0 ** 2 + 0.0 + 2.25 ** 2) + (0.0 + 0.0 + 0.5) / alpha) / 3
    torch.testing.assert_close(sparse_ql_value_loss(q, v, alpha), torch.tensor(expected))


# ---------------------------------------------------------------- pre-training on a toy problem
def _trajectories(n_traj, horizon, signs, generator):
    """Continuous trajectories s_{t+1} = s_t + sign * 0.3 (a, -a), one sign per trajectory."""
    s = torch.randn(n_traj, 2, generator=generator)
    obs, act, nxt = [], [], []
    for _ in range(horizon):
        a = torch.rand(n_traj, 1, generator=generator) * 2 - 1
        s_next = s + signs[:, None] * 0.3 * torch.cat([a, -a], -1)
        obs.append(s), act.append(a), nxt.append(s_next)
        s = s_next
    obs, act, nxt = (torch.stack(x, 1).reshape(n_traj * horizon, -1) for x in (obs, act, nxt))
    n = obs.shape[0]
    done = torch.zeros(n_traj, horizon, dtype=torch.bool)
    done[:, -1] = True
    return TensorDict({"observation": obs, "action": act, ("next", "observation"): nxt,
                       ("next", "reward"): -nxt.norm(dim=-1, keepdim=True),
                       ("next", "terminated"): torch.zeros(n, 1, dtype=torch.bool),
                       ("next", "done"): done.reshape(n, 1)}, [n])


def _toy_method(**kw):
    args = dict(xi=0.5, repr_dim=8, hidden_sizes=(32,), contrastive_steps=100, contrastive_batch_size=32,
                contrastive_lr=1e-3, z_dim=2, traj_hidden=16, decoder_hidden_sizes=(32,), decoder_ensemble=2,
                repr_steps=400, repr_batch_size=16, repr_max_len=10, repr_lr=1e-2, max_episode_steps=1000,
                value_steps=200, value_batch_size=64, value_hidden_sizes=(32,), seed=0)
    args.update(kw)
    return V2A(2, 1, **args)


def test_prepare_trains_every_part_and_separates_two_modalities():
    g = torch.Generator().manual_seed(0)
    signs = torch.tensor([1.0, -1.0]).repeat(20)                     # two source dynamics, alternating
    source = _trajectories(40, 20, signs, g)
    target = _trajectories(10, 20, torch.ones(10), g)
    m = _toy_method()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    m.prepare(source, target)
    changed = {k.split(".")[0] for k, v in m.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"encoders", "traj_encoder", "dynamics", "q_z", "q_z_target", "v_z"}
    # TC-ELBO learns the dynamics: the M-step's reconstruction error falls
    assert m.repr_losses[-50:, 1].median() < 0.8 * m.repr_losses[:5, 1].mean()
    assert torch.isfinite(m.value_losses).all() and torch.isfinite(m.contrastive_losses).all()
    # one z per trajectory, and the two modalities land apart
    s, a, sn = source["observation"], source["action"], source["next", "observation"]
    starts, lengths = episode_segments(source["next", "done"].reshape(-1), s, sn, 1000)
    assert lengths.tolist() == [20] * 40
    z = m.infer_z(s, a, sn, starts, lengths)
    z_plus, z_minus = z[signs > 0], z[signs < 0]
    centres = torch.stack([z_plus.mean(0), z_minus.mean(0)])
    nearest = torch.cdist(z, centres).argmin(-1)                    # 0: the "+" centre
    assert (nearest == (signs < 0).long()).float().mean() >= 0.9


def test_add_columns_caches_the_score_and_the_modality_advantage():
    g = torch.Generator().manual_seed(1)
    signs = torch.tensor([1.0, -1.0]).repeat(5)
    source, target = _trajectories(10, 8, signs, g), _trajectories(3, 8, torch.ones(3), g)
    m = _toy_method(contrastive_steps=5, repr_steps=5, value_steps=5)
    m.prepare(source, target)
    data = torch.cat([source, target])
    data.set("domain", torch.tensor([0] * 80 + [1] * 24))
    m.add_columns(data)
    adv, h = data["v2a_advantage"], data["igdf_score"]
    assert adv.shape == (104,) and h.shape == (104,)
    assert (adv[80:] == 0).all()
    starts, lengths = episode_segments(source["next", "done"].reshape(-1), source["observation"],
                                       source["next", "observation"], 1000)
    z = m.infer_z(source["observation"], source["action"], source["next", "observation"], starts, lengths)
    z_rows = z.repeat_interleave(8, 0)                              # every row of a trajectory shares its z
    torch.testing.assert_close(adv[:80], m.advantage(source["observation"], source["action"], z_rows))
    torch.testing.assert_close(h, m.encoders.score_rows(data["observation"], data["action"],
                                                        data["next", "observation"]))
    again = data.clone()
    m.add_columns(again)                                            # a resume writes the same columns
    assert torch.equal(again["v2a_advantage"], adv) and torch.equal(again["igdf_score"], h)
    # a resumed run: a method of other initial weights loads the checkpointed state, writes the same columns
    torch.manual_seed(1)
    fresh = _toy_method(contrastive_steps=5, repr_steps=5, value_steps=5)
    fresh.load_state_dict(m.state_dict())
    resumed = data.exclude("v2a_advantage", "igdf_score")
    fresh.add_columns(resumed)
    assert torch.equal(resumed["v2a_advantage"], adv) and torch.equal(resumed["igdf_score"], h)


# ---------------------------------------------------------------- through the core
def _loss(method):
    torch.manual_seed(0)
    return CrossDomainIQLLoss(make_actor(3, 2, hidden_sizes=(8,)), make_latent_qvalue(5, hidden_sizes=(8,)),
                              make_latent_value(3, hidden_sizes=(8,)), method=method, features="raw")


def _batch():
    g = torch.Generator().manual_seed(5)
    n = 7
    return TensorDict({
        "observation": torch.randn(n, 3, generator=g), "action": torch.rand(n, 2, generator=g) - 0.5,
        "domain": torch.tensor([0, 0, 0, 0, 1, 1, 1]), ("next", "observation"): torch.randn(n, 3, generator=g),
        ("next", "reward"): torch.randn(n, 1, generator=g), ("next", "terminated"): torch.zeros(n, 1, dtype=torch.bool),
        "igdf_score": torch.tensor([0.5, 1.0, -1.0, 0.0, 0.3, 0.3, 0.3]),
        "v2a_advantage": torch.tensor([2.0, -2.0, 0.0, 6.0, 0.0, 0.0, 0.0]),
    }, [n])


def test_only_the_source_rows_weights_and_filter_change():
    class Fixed(CrossDomainMethod):     # the edit of test_filter_and_weights_by_hand, written out
        source_in_value = source_in_actor = True

        def edit_source(self, rows):
            return SourceEdit(weight=torch.exp(torch.tensor([0.5, 1.0, -1.0, 0.0])) * 0.5,
                              keep=torch.tensor([True, True, False, False]))

    td = _batch()
    out = _loss(V2A(3, 2, xi=0.5, squared_critic=False, **TINY))(td)
    ref = _loss(Fixed())(td)
    for key in ("loss_qvalue", "loss_value", "loss_actor", "mean_target_value", "mean_weight", "ess"):
        torch.testing.assert_close(out[key], ref[key])
    # dropped source rows and the target rows' columns leave every loss unchanged
    td2 = td.clone()
    td2["next", "reward"][[2, 3]] -= 50.0
    td2["action"][[2, 3]] = 0.4
    td2["igdf_score"][4:] = torch.tensor([9.0, -9.0, 0.0])
    td2["v2a_advantage"][4:] = torch.tensor([-7.0, 100.0, 3.0])
    out2 = _loss(V2A(3, 2, xi=0.5, squared_critic=False, **TINY))(td2)
    for key in ("loss_qvalue", "loss_value", "loss_actor"):
        torch.testing.assert_close(out2[key], out[key])
    # without the value / actor flags, those losses are the plain core's (target rows only)
    off = _loss(V2A(3, 2, xi=0.5, source_in_value=False, source_in_actor=False, squared_critic=False, **TINY))(td)
    base = _loss(CrossDomainMethod())(td)
    torch.testing.assert_close(off["loss_value"], base["loss_value"])
    torch.testing.assert_close(off["loss_actor"], base["loss_actor"])


def test_registry_and_the_recipe_factory():
    assert METHODS["v2a"] is V2A
    assert isinstance(make_method("v2a", obs_dim=3, action_dim=2, **TINY), V2A)
    from tabb_torchrl.pipeline import ALGOS
    from tabb_torchrl.pipeline import make_method as from_cfg

    assert "v2a" in ALGOS
    cfg = {"algo": {"method": "v2a", "method_kwargs": dict(TINY, xi=0.75)}, "env": {"id": "tabb/Ant-morph-v0"},
           "loss": {"gamma": 0.9}}
    built = from_cfg(cfg, obs_dim=3, action_dim=2)
    assert built.gamma == 0.9 and built.xi == 0.75 and built.critic_deltas == (None, None)  # the authors' squared error
    assert V2A(3, 2, squared_critic=False, **TINY).critic_deltas is None   # the recipe's Huber critic
    keys = "".join(_loss(built).state_dict())
    for part in ("method.encoders.", "method.traj_encoder.", "method.dynamics.", "method.q_z.", "method.v_z."):
        assert part in keys   # checkpointed with the loss module


# ---------------------------------------------------------------- the recipe
_KW = "algo.method_kwargs."
smoke_run = smoke_run_fixture("v2a", f"{_KW}contrastive_steps=20", f"{_KW}repr_steps=5", f"{_KW}value_steps=20",
                              f"{_KW}z_dim=8", f"{_KW}traj_hidden=32", f"{_KW}repr_max_len=20", checkpoint_every=30)


def test_recipe_smoke_run(smoke_run):
    assert "method v2a prepared" in smoke_run.output
    a = load_checkpoint(smoke_run.run_dir)
    assert a["progress"]["rl_step"] == 100
    assert any(k.startswith("method.traj_encoder.") for k in a["loss_module"])   # checkpointed with the loss
    assert_logged(smoke_run.run_dir, "v2a_score", "kept")


@pytest.mark.slow
def test_recipe_kill_and_resume_matches_the_smoke_run(smoke_run):
    run = kill_and_resume(smoke_run, stop_at=70)             # killed after step 70, checkpoint at 60
    assert "method v2a prepared" not in run.resumed_output   # prepare() ran once per run
    a, b = load_checkpoint(smoke_run.run_dir), load_checkpoint(run.run_dir)
    assert a["progress"]["rl_step"] == b["progress"]["rl_step"] == 100
    assert_same_states(a["loss_module"], b["loss_module"])
